// Fuzzes request validation and conversion of the server from arbitrary proto messages: the
// first input byte picks a request type, the rest is parsed as that message's wire format (what
// any client can send), and the message goes to the RPC methods and the functions behind them
// (server/convert.h, server/job_manager.h, server/model_registry.h, server/datasets.h) directly,
// without a network: a started JobManager whose memory budget is 1 byte (so every request is
// validated, resolved and estimated in full, and none is ever queued to run), a ModelRegistry
// holding a tiny real model "m" and a corrupt one "bad", and an uploaded dataset "up", all in a
// SqliteStore in a temporary directory.
// Properties: no crash, leak, hang or undefined behaviour; a config FitConfigFromProto or
// MlpConfigFromProto accepts passes core Validate and survives the conversion back unchanged;
// no Submit* ever queues a job here, and SubmitFit fails exactly as EstimateFit does (or, when the
// estimate succeeds, with RESOURCE_EXHAUSTED); an accepted Predict returns one label per row (or
// rows x cols of representation).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/fit.h"
#include "core/io.h"
#include "core/mlp_config.h"
#include "drfm/v1/datasets.pb.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/models.pb.h"
#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "server/convert.h"
#include "server/dataset_service.h"
#include "server/datasets.h"
#include "server/job_manager.h"
#include "server/job_service.h"
#include "server/model_registry.h"
#include "server/model_service.h"
#include "server/store.h"

namespace {

namespace v1 = drfm::v1;
namespace server = drfm::server;
namespace core = drfm::core;

struct Env {
  std::unique_ptr<server::SqliteStore> store;
  std::unique_ptr<server::DatasetResolver> resolver;
  std::unique_ptr<server::JobManager> jobs;
  std::unique_ptr<server::ModelRegistry> registry;
  std::unique_ptr<server::JobServiceImpl> job_service;
  std::unique_ptr<server::ModelServiceImpl> model_service;
  std::unique_ptr<server::DatasetServiceImpl> dataset_service;
};

Env* env = nullptr;

// Stores the synthetic rows `spec` names as the uploaded dataset `name`.
void PutDataset(const std::string& name, const std::string& spec) {
  absl::StatusOr<core::Dataset> data = core::MakeSynthetic(*core::ParseSyntheticName(spec));
  FUZZ_CHECK(data.ok());
  absl::StatusOr<std::unique_ptr<server::DatasetUpload>> upload = env->store->StartDatasetUpload();
  FUZZ_CHECK(upload.ok());
  FUZZ_CHECK(
      (*upload)
          ->AppendFeatures(std::string_view(reinterpret_cast<const char*>(data->features.data()),
                                            data->features.size() * sizeof(float)))
          .ok());
  FUZZ_CHECK((*upload)
                 ->AppendLabels(std::string_view(reinterpret_cast<const char*>(data->labels.data()),
                                                 data->labels.size() * sizeof(int32_t)))
                 .ok());
  server::DatasetInfo info;
  info.name = name;
  info.rows = data->rows();
  info.cols = data->cols();
  info.num_classes = data->num_classes;
  FUZZ_CHECK((*upload)->Commit(info).ok());
}

// Fits a tiny Deep RFM and stores it as model `name`; stores `corrupt_name` with a bad blob.
void PutModels(const std::string& name, const std::string& corrupt_name) {
  absl::StatusOr<core::Dataset> data =
      core::MakeSynthetic(*core::ParseSyntheticName("synthetic:rows=24,cols=4,classes=3,seed=5"));
  FUZZ_CHECK(data.ok());
  core::FitConfig config;
  config.layers = 1;
  config.width = 8;
  absl::StatusOr<core::FitResult> fit = core::FitDeepRfm(*data, nullptr, config, nullptr, {1});
  FUZZ_CHECK(fit.ok());
  v1::Model meta;
  meta.set_name(name);
  meta.set_kind(v1::Model::DEEP_RFM);
  meta.set_input_dim(fit->model.input_dim());
  meta.set_classes(fit->model.num_classes());
  meta.set_layers(fit->model.num_layers());
  FUZZ_CHECK(env->store->PutModel(meta, fit->model.Serialize()).ok());
  meta.set_name(corrupt_name);
  FUZZ_CHECK(env->store->PutModel(meta, "not a model").ok());
}

bool IsOneOf(grpc::StatusCode code, std::initializer_list<grpc::StatusCode> codes) {
  for (grpc::StatusCode c : codes) {
    if (code == c) return true;
  }
  return false;
}

void FuzzSubmitFit(const v1::SubmitFitRequest& request) {
  (void)server::ValidateSubmitFitRequest(request);
  const absl::StatusOr<core::FitConfig> config = server::FitConfigFromProto(request.config(), 7);
  if (config.ok()) {
    FUZZ_CHECK(config->Validate().ok());
    const v1::FitConfig resolved = server::FitConfigToProto(*config);
    const absl::StatusOr<core::FitConfig> again = server::FitConfigFromProto(resolved, 8);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(server::FitConfigToProto(*again).SerializeAsString() ==
               resolved.SerializeAsString());
    (void)server::CheckServiceLimits(*config, server::ServiceLimits());
  }
  v1::FitEstimate estimate;
  const grpc::Status estimated = env->job_service->EstimateFit(nullptr, &request, &estimate);
  v1::Job job;
  const grpc::Status submitted = env->job_service->SubmitFit(nullptr, &request, &job);
  FUZZ_CHECK(!submitted.ok());  // the 1-byte budget admits nothing
  if (estimated.ok()) {
    FUZZ_CHECK(config.ok());
    FUZZ_CHECK(estimate.memory_bytes() > 0 && !estimate.within_budget());
    FUZZ_CHECK(submitted.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  } else {
    FUZZ_CHECK(submitted.error_code() == estimated.error_code());
    FUZZ_CHECK(IsOneOf(estimated.error_code(),
                       {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::NOT_FOUND}));
  }
}

void FuzzSubmitMlpFit(const v1::SubmitMlpFitRequest& request) {
  (void)server::ValidateSubmitMlpFitRequest(request);
  const absl::StatusOr<core::MlpConfig> config = server::MlpConfigFromProto(request.config(), 7);
  if (config.ok()) {
    FUZZ_CHECK(config->Validate().ok());
    const v1::MlpConfig resolved = server::MlpConfigToProto(*config);
    const absl::StatusOr<core::MlpConfig> again = server::MlpConfigFromProto(resolved, 8);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(server::MlpConfigToProto(*again).SerializeAsString() ==
               resolved.SerializeAsString());
    (void)server::CheckMlpServiceLimits(*config, server::ServiceLimits());
  }
  v1::Job job;
  const grpc::Status status = env->job_service->SubmitMlpFit(nullptr, &request, &job);
  FUZZ_CHECK(!status.ok());  // the 1-byte budget admits nothing
  FUZZ_CHECK(IsOneOf(status.error_code(),
                     {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::NOT_FOUND,
                      grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::ALREADY_EXISTS}));
}

void FuzzPredict(const v1::PredictRequest& request) {
  v1::PredictResponse response;
  const grpc::Status status = env->model_service->Predict(nullptr, &request, &response);
  if (!status.ok()) {
    FUZZ_CHECK(IsOneOf(status.error_code(),
                       {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::NOT_FOUND,
                        grpc::StatusCode::FAILED_PRECONDITION, grpc::StatusCode::DATA_LOSS}));
    return;
  }
  FUZZ_CHECK(request.rows() >= 1);
  if (request.layer() == 0) {
    FUZZ_CHECK(response.labels_size() == request.rows());
    for (int32_t label : response.labels()) FUZZ_CHECK(label >= 0 && label < response.classes());
    if (request.return_scores()) {
      FUZZ_CHECK(response.scores_size() == request.rows() * response.classes());
    }
  } else {
    FUZZ_CHECK(static_cast<int64_t>(response.representation().size()) ==
               request.rows() * response.representation_cols() * 4);
  }
}

template <typename Message>
bool Parse(std::string_view bytes, Message* message) {
  return message->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  env = new Env;
  // Unparsable strings (invalid UTF-8) are an expected outcome here, not worth a log line each.
  google::protobuf::SetLogHandler(nullptr);
  server::SqliteStoreOptions store_options;
  store_options.data_dir = drfm::fuzz::MakeTempDir("drfm-request-fuzz-");
  absl::StatusOr<std::unique_ptr<server::SqliteStore>> store =
      server::SqliteStore::Open(store_options);
  FUZZ_CHECK(store.ok());
  env->store = *std::move(store);
  // No Fashion-MNIST here: its names resolve to NotFound instead of loading 190 MB.
  env->resolver =
      std::make_unique<server::DatasetResolver>(env->store.get(), store_options.data_dir + "/none");
  server::JobManagerOptions options;
  options.workers = 1;
  options.threads_per_fit = 1;
  options.memory_budget_bytes = 1;
  env->jobs = std::make_unique<server::JobManager>(env->store.get(), env->resolver.get(), options);
  FUZZ_CHECK(env->jobs->Start().ok());
  env->registry =
      std::make_unique<server::ModelRegistry>(env->store.get(), server::ModelRegistryOptions());
  env->job_service = std::make_unique<server::JobServiceImpl>(env->jobs.get());
  env->model_service =
      std::make_unique<server::ModelServiceImpl>(env->store.get(), env->registry.get(), nullptr);
  env->dataset_service =
      std::make_unique<server::DatasetServiceImpl>(env->store.get(), env->resolver.get());
  PutDataset("up", "synthetic:rows=12,cols=4,classes=3,seed=1");
  PutModels("m", "bad");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view bytes = drfm::fuzz::AsView(data + 1, size - 1);
  switch (data[0] % 10) {
    case 0: {
      v1::SubmitFitRequest request;
      if (Parse(bytes, &request)) FuzzSubmitFit(request);
      break;
    }
    case 1: {
      v1::SubmitMlpFitRequest request;
      if (Parse(bytes, &request)) FuzzSubmitMlpFit(request);
      break;
    }
    case 2: {
      v1::SubmitAnalysisRequest request;
      v1::Job job;
      if (Parse(bytes, &request)) {
        (void)server::ValidateSubmitAnalysisRequest(request);
        const grpc::Status status = env->job_service->SubmitAnalysis(nullptr, &request, &job);
        FUZZ_CHECK(!status.ok());  // the 1-byte budget admits nothing
      }
      break;
    }
    case 3: {
      v1::PredictRequest request;
      if (Parse(bytes, &request)) FuzzPredict(request);
      break;
    }
    case 4: {
      v1::ListJobsRequest request;
      v1::ListJobsResponse response;
      if (Parse(bytes, &request)) (void)env->job_service->ListJobs(nullptr, &request, &response);
      break;
    }
    case 5: {
      v1::GetJobRequest get;
      v1::CancelJobRequest cancel;
      v1::DeleteJobRequest remove;
      v1::Job job;
      v1::DeleteJobResponse removed;
      if (Parse(bytes, &get)) (void)env->job_service->GetJob(nullptr, &get, &job);
      if (Parse(bytes, &cancel)) (void)env->job_service->CancelJob(nullptr, &cancel, &job);
      if (Parse(bytes, &remove)) (void)env->job_service->DeleteJob(nullptr, &remove, &removed);
      break;
    }
    case 6: {
      v1::WatchJobRequest request;
      if (Parse(bytes, &request)) {
        absl::StatusOr<std::unique_ptr<server::JobWatch>> watch =
            env->jobs->Watch(request.job_id(), request.after_sequence());
        if (watch.ok()) (void)(*watch)->Next(absl::ZeroDuration());
      }
      break;
    }
    case 7: {
      v1::GetDatasetRequest get;
      v1::ListDatasetsRequest list;
      v1::Dataset dataset;
      v1::ListDatasetsResponse listed;
      if (Parse(bytes, &get)) (void)env->dataset_service->GetDataset(nullptr, &get, &dataset);
      if (Parse(bytes, &list)) (void)env->dataset_service->ListDatasets(nullptr, &list, &listed);
      break;
    }
    case 8: {
      v1::DatasetSlice slice;
      if (Parse(bytes, &slice)) {
        const absl::StatusOr<server::SliceShape> shape =
            env->resolver->DescribeSlice(slice, "train");
        if (shape.ok()) FUZZ_CHECK(shape->rows >= 1 && shape->cols >= 1);
      }
      break;
    }
    default: {
      v1::GetModelRequest get;
      v1::ListModelsRequest list;
      v1::Model model;
      v1::ListModelsResponse listed;
      if (Parse(bytes, &get)) (void)env->model_service->GetModel(nullptr, &get, &model);
      if (Parse(bytes, &list)) (void)env->model_service->ListModels(nullptr, &list, &listed);
      break;
    }
  }
  return 0;
}
