// An in-process fake drfm server for the client tests: JobService, DatasetService and
// ModelService with scripted, recorded behaviour, plus gRPC's own health service. Fakes, not
// mocks: each method does the simplest thing a real server would, and records what it was sent.
#ifndef DRFM_TESTS_CLIENT_FAKE_SERVER_H_
#define DRFM_TESTS_CLIENT_FAKE_SERVER_H_

#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/payload.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"

namespace drfm::client::testing {

// The "authorization" metadata of a call ("" when absent).
inline std::string AuthorizationOf(const grpc::ServerContext* context) {
  auto it = context->client_metadata().find("authorization");
  if (it == context->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// A job whose events are scripted: WatchJob replays `events` after the requested sequence. The
// first `drop_streams` streams end with UNAVAILABLE after `drop_after` events each (a dropped
// connection).
class FakeJobService final : public v1::JobService::Service {
 public:
  void SetJob(v1::Job job, std::vector<v1::JobEvent> events) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
    events_ = std::move(events);
  }
  void DropStreams(int streams, int after_events) {
    absl::MutexLock lock(&mu_);
    drop_streams_ = streams;
    drop_after_ = after_events;
  }
  std::vector<int64_t> watch_after_sequences() const {
    absl::MutexLock lock(&mu_);
    return watch_after_sequences_;
  }
  v1::SubmitFitRequest last_submit() const {
    absl::MutexLock lock(&mu_);
    return last_submit_;
  }
  v1::SubmitMlpFitRequest last_mlp_submit() const {
    absl::MutexLock lock(&mu_);
    return last_mlp_submit_;
  }
  v1::SubmitAnalysisRequest last_analysis() const {
    absl::MutexLock lock(&mu_);
    return last_analysis_;
  }
  std::vector<std::string> authorizations() const {
    absl::MutexLock lock(&mu_);
    return authorizations_;
  }

  grpc::Status SubmitFit(grpc::ServerContext* context, const v1::SubmitFitRequest* request,
                         v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    authorizations_.push_back(AuthorizationOf(context));
    last_submit_ = *request;
    if (request->train().dataset() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no dataset named \"missing\"");
    }
    *response = job_;
    response->set_state(v1::Job::QUEUED);
    response->clear_reports();
    return grpc::Status::OK;
  }
  grpc::Status SubmitMlpFit(grpc::ServerContext*, const v1::SubmitMlpFitRequest* request,
                            v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    last_mlp_submit_ = *request;
    if (request->config().has_width() && request->config().width() == 7) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "config.width must be even in this fake; got 7");
    }
    *response = job_;
    response->set_state(v1::Job::QUEUED);
    response->clear_network_reports();
    return grpc::Status::OK;
  }
  grpc::Status SubmitAnalysis(grpc::ServerContext*, const v1::SubmitAnalysisRequest* request,
                              v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    last_analysis_ = *request;
    if (request->model() != "net") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("no model named \"", request->model(), "\""));
    }
    *response = job_;
    response->set_state(v1::Job::QUEUED);
    response->clear_network_reports();
    return grpc::Status::OK;
  }
  grpc::Status EstimateFit(grpc::ServerContext*, const v1::SubmitFitRequest* request,
                           v1::FitEstimate* response) override {
    response->set_train_rows(request->train().limit());
    response->set_memory_bytes(3 << 20);
    response->set_flops(1.5e9);
    response->set_within_budget(true);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    authorizations_.push_back(AuthorizationOf(context));
    if (request->job_id() != job_.id()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("no job with id \"", request->job_id(), "\""));
    }
    *response = job_;
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    absl::MutexLock lock(&mu_);
    // Two pages of the same job, to exercise --all.
    *response->add_jobs() = job_;
    if (request->page_token().empty()) response->set_next_page_token("page2");
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*,
                         v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    *response = job_;
    return grpc::Status::OK;
  }
  grpc::Status DeleteJob(grpc::ServerContext*, const v1::DeleteJobRequest*,
                         v1::DeleteJobResponse*) override {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "job is RUNNING; cancel it first (drfm jobs cancel)");
  }
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    std::vector<v1::JobEvent> events;
    int drop_after = -1;
    {
      absl::MutexLock lock(&mu_);
      watch_after_sequences_.push_back(request->after_sequence());
      if (request->job_id() != job_.id()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
      }
      events = events_;
      if (drop_streams_ > 0) {
        --drop_streams_;
        drop_after = drop_after_;
      }
    }
    int sent = 0;
    for (const v1::JobEvent& event : events) {
      if (event.sequence() <= request->after_sequence()) continue;
      if (sent == drop_after)
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
      writer->Write(event);
      ++sent;
    }
    return grpc::Status::OK;
  }

 private:
  mutable absl::Mutex mu_;
  v1::Job job_;
  std::vector<v1::JobEvent> events_;
  int drop_streams_ = 0;
  int drop_after_ = 0;
  std::vector<int64_t> watch_after_sequences_;
  v1::SubmitFitRequest last_submit_;
  v1::SubmitMlpFitRequest last_mlp_submit_;
  v1::SubmitAnalysisRequest last_analysis_;
  std::vector<std::string> authorizations_;
};

// Stores the last upload: header, feature bytes, label bytes; verifies the checksum as the real
// service does.
class FakeDatasetService final : public v1::DatasetService::Service {
 public:
  struct Upload {
    v1::DatasetHeader header;
    std::string features;
    std::string labels;
    int chunks = 0;
    size_t largest_chunk = 0;
  };
  Upload last_upload() const {
    absl::MutexLock lock(&mu_);
    return upload_;
  }

  grpc::Status UploadDataset(grpc::ServerContext*,
                             grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                             v1::Dataset* response) override {
    Upload upload;
    v1::UploadDatasetRequest request;
    bool first = true;
    while (reader->Read(&request)) {
      if (first != request.has_header()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the header must come first");
      }
      if (first) {
        upload.header = request.header();
        first = false;
        continue;
      }
      ++upload.chunks;
      upload.largest_chunk = std::max(upload.largest_chunk, request.chunk().features().size() +
                                                                request.chunk().labels().size());
      upload.features += request.chunk().features();
      upload.labels += request.chunk().labels();
    }
    Sha256 sha;
    sha.Update(upload.features);
    sha.Update(upload.labels);
    const std::string digest = sha.HexDigest();
    {
      absl::MutexLock lock(&mu_);
      upload_ = upload;
    }
    if (upload.header.has_sha256() && upload.header.sha256() != digest) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "sha256 mismatch");
    }
    response->set_id(absl::StrCat("ds-", digest.substr(0, 16)));
    response->set_name(upload.header.name());
    response->set_rows(upload.header.rows());
    response->set_cols(upload.header.cols());
    response->set_num_classes(upload.header.num_classes());
    response->set_sha256(digest);
    response->set_size_bytes(static_cast<int64_t>(upload.features.size() + upload.labels.size()));
    return grpc::Status::OK;
  }
  grpc::Status GetDataset(grpc::ServerContext*, const v1::GetDatasetRequest* request,
                          v1::Dataset* response) override {
    response->set_id(request->dataset());
    response->set_name("fashion-mnist:train");
    response->set_rows(60000);
    response->set_cols(784);
    response->set_num_classes(10);
    response->set_builtin(true);
    return grpc::Status::OK;
  }

 private:
  mutable absl::Mutex mu_;
  Upload upload_;
};

// One model "m" v2 with `input_dim` inputs and 3 classes. Predict labels each row with its first
// feature (so tests see the order) and scores it (label, 1 - label/10, ...); layer l >= 1 returns
// the row doubled as the representation.
class FakeModelService final : public v1::ModelService::Service {
 public:
  explicit FakeModelService(int64_t input_dim) : input_dim_(input_dim) {}
  int predict_calls() const {
    absl::MutexLock lock(&mu_);
    return predict_calls_;
  }
  int stream_requests() const {
    absl::MutexLock lock(&mu_);
    return stream_requests_;
  }

  // What the last ImportModel call sent.
  struct Import {
    v1::ImportModelHeader header;
    std::string bytes;
    int chunks = 0;
    size_t largest_chunk = 0;
  };
  Import last_import() const {
    absl::MutexLock lock(&mu_);
    return import_;
  }
  int imports() const {
    absl::MutexLock lock(&mu_);
    return imports_;
  }

  static std::string ExportBytes() {
    std::string bytes;
    for (int i = 0; i < 5000; ++i) bytes += static_cast<char>(i * 7);
    return bytes;
  }

  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                        v1::Model* response) override {
    if (request->name() != "m") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("no model named \"", request->name(), "\""));
    }
    *response = Model();
    return grpc::Status::OK;
  }
  grpc::Status Predict(grpc::ServerContext*, const v1::PredictRequest* request,
                       v1::PredictResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      ++predict_calls_;
    }
    return Answer(*request, response);
  }
  grpc::Status PredictStream(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::PredictResponse, v1::PredictRequest>* stream) override {
    v1::PredictRequest request;
    while (stream->Read(&request)) {
      {
        absl::MutexLock lock(&mu_);
        ++stream_requests_;
      }
      v1::PredictResponse response;
      grpc::Status status = Answer(request, &response);
      if (!status.ok()) return status;
      stream->Write(response);
    }
    return grpc::Status::OK;
  }
  // Verifies the header comes first and the size and SHA-256 as the real service does; answers
  // with an MLP "NAME" v1 of 4 inputs, 2 hidden layers of 8 and 3 classes.
  grpc::Status ImportModel(grpc::ServerContext*, grpc::ServerReader<v1::ImportModelRequest>* reader,
                           v1::Model* response) override {
    Import import;
    v1::ImportModelRequest request;
    bool first = true;
    while (reader->Read(&request)) {
      if (first != request.has_header()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the header must come first");
      }
      if (first) {
        import.header = request.header();
        first = false;
        continue;
      }
      ++import.chunks;
      import.largest_chunk = std::max(import.largest_chunk, request.chunk().size());
      import.bytes += request.chunk();
    }
    {
      absl::MutexLock lock(&mu_);
      import_ = import;
      ++imports_;
    }
    Sha256 sha;
    sha.Update(import.bytes);
    if (import.header.has_sha256() && import.header.sha256() != sha.HexDigest()) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "sha256 mismatch");
    }
    if (import.header.size_bytes() != static_cast<int64_t>(import.bytes.size())) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "size mismatch");
    }
    if (import.bytes.find("\"bad\"") != std::string::npos) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "layers.1.weight has 9 columns but layers.0.weight has 8 rows; the "
                          "shapes must chain");
    }
    response->set_name(import.header.name());
    response->set_version(1);
    response->set_kind(v1::Model::MLP);
    response->set_input_dim(4);
    response->set_classes(3);
    response->set_layers(2);
    response->add_layer_dims(8);
    response->add_layer_dims(8);
    response->set_size_bytes(static_cast<int64_t>(import.bytes.size()));
    return grpc::Status::OK;
  }
  grpc::Status ExportModel(grpc::ServerContext*, const v1::ExportModelRequest*,
                           grpc::ServerWriter<v1::ExportModelChunk>* writer) override {
    const std::string bytes = ExportBytes();
    Sha256 sha;
    sha.Update(bytes);
    const std::string digest = sha.HexDigest();
    for (size_t offset = 0; offset < bytes.size(); offset += 1024) {
      v1::ExportModelChunk chunk;
      chunk.set_offset(static_cast<int64_t>(offset));
      chunk.set_data(bytes.substr(offset, 1024));
      if (offset == 0) {
        chunk.set_total_bytes(static_cast<int64_t>(bytes.size()));
        chunk.set_sha256(digest);
        *chunk.mutable_model() = Model();
      }
      writer->Write(chunk);
    }
    return grpc::Status::OK;
  }

 private:
  v1::Model Model() const {
    v1::Model model;
    model.set_name("m");
    model.set_version(2);
    model.set_kind(v1::Model::DEEP_RFM);
    model.set_input_dim(input_dim_);
    model.set_classes(3);
    model.set_layers(2);
    model.set_size_bytes(5000);
    return model;
  }

  grpc::Status Answer(const v1::PredictRequest& request, v1::PredictResponse* response) const {
    if (request.cols() != input_dim_ ||
        static_cast<int64_t>(request.features().size()) != 4 * request.rows() * request.cols()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad shape");
    }
    response->set_rows(request.rows());
    response->mutable_model()->set_name("m");
    response->mutable_model()->set_version(request.has_version() ? request.version() : 2);
    for (int64_t r = 0; r < request.rows(); ++r) {
      float first;
      std::memcpy(&first, request.features().data() + 4 * r * request.cols(), 4);
      if (request.layer() == 0) {
        response->add_labels(static_cast<int32_t>(first));
        if (request.return_scores()) {
          for (int c = 0; c < 3; ++c) response->add_scores(c == 0 ? first : 1.0f - first / 10);
        }
      } else {
        for (int64_t c = 0; c < request.cols(); ++c) {
          float v;
          std::memcpy(&v, request.features().data() + 4 * (r * request.cols() + c), 4);
          v *= 2;
          response->mutable_representation()->append(reinterpret_cast<const char*>(&v), 4);
        }
      }
    }
    if (request.layer() == 0) {
      response->set_classes(3);
    } else {
      response->set_representation_cols(request.cols());
    }
    return grpc::Status::OK;
  }

  const int64_t input_dim_;
  mutable absl::Mutex mu_;
  int predict_calls_ = 0;
  int stream_requests_ = 0;
  Import import_;
  int imports_ = 0;
};

// The three fakes and gRPC's health service on one in-process server.
class FakeServer {
 public:
  explicit FakeServer(int64_t model_input_dim = 4) : models(model_input_dim) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.RegisterService(&jobs);
    builder.RegisterService(&datasets);
    builder.RegisterService(&models);
    server_ = builder.BuildAndStart();
    server_->GetHealthCheckService()->SetServingStatus("drfm.v1.JobService", true);
    server_->GetHealthCheckService()->SetServingStatus("drfm.v1.Unready", false);
  }
  ~FakeServer() { server_->Shutdown(); }

  std::unique_ptr<Client> NewClient(const ConnectionOptions& options = ConnectionOptions()) {
    return std::make_unique<Client>(server_->InProcessChannel(grpc::ChannelArguments()), options);
  }

  FakeJobService jobs;
  FakeDatasetService datasets;
  FakeModelService models;

 private:
  std::unique_ptr<grpc::Server> server_;
};

// The events of a scripted job: sequences from 1, one second apart, starting with QUEUED and
// RUNNING; Finish adds the terminal state change (model `model_name` v1 on success unless the
// name is empty, `error` otherwise) and sets the job's final fields.
class EventScript {
 public:
  EventScript(v1::Job* job, std::vector<v1::JobEvent>* events) : job_(job), events_(events) {
    v1::JobEvent queued;
    queued.mutable_state_change()->set_state(v1::Job::QUEUED);
    Add(queued);
    v1::JobEvent running;
    running.mutable_state_change()->set_state(v1::Job::RUNNING);
    running.mutable_state_change()->set_previous_state(v1::Job::QUEUED);
    Add(running);
  }

  void Add(v1::JobEvent event) {
    event.set_sequence(++sequence_);
    event.mutable_time()->set_seconds(1700000000 + sequence_);
    events_->push_back(std::move(event));
  }

  void Finish(v1::Job::State state, const std::string& model_name, const std::string& error,
              int64_t layers_done) {
    v1::JobEvent done;
    done.mutable_state_change()->set_state(state);
    done.mutable_state_change()->set_previous_state(v1::Job::RUNNING);
    if (state != v1::Job::SUCCEEDED) {
      done.mutable_state_change()->set_error(error);
      job_->set_error(error);
    } else if (!model_name.empty()) {
      v1::ModelRef* model = done.mutable_state_change()->mutable_model();
      model->set_name(model_name);
      model->set_version(1);
      *job_->mutable_model() = *model;
    }
    Add(done);
    job_->set_state(state);
    job_->set_layers_done(layers_done);
    job_->set_last_event_sequence(sequence_);
  }

 private:
  v1::Job* job_;
  std::vector<v1::JobEvent>* events_;
  int64_t sequence_ = 0;
};

// A Deep RFM job "job1" with `layers` feature layers, and its events: QUEUED, RUNNING, then per
// layer (and the readout) progress through the phases and a LayerReport, then SUCCEEDED (or
// `final_state` with an error). Sequences from 1.
inline void MakeScriptedJob(int layers, v1::Job::State final_state, v1::Job* job,
                            std::vector<v1::JobEvent>* events) {
  job->set_id("job1");
  job->set_kind(v1::Job::DEEP_RFM);
  job->set_layers_total(layers + 1);
  job->mutable_config()->set_layers(layers);
  job->mutable_train()->set_dataset("fashion-mnist:train");
  job->mutable_train()->set_limit(100);
  EventScript script(job, events);
  auto add = [&](const v1::JobEvent& event) { script.Add(event); };
  for (int layer = 1; layer <= layers + 1; ++layer) {
    const bool readout = layer == layers + 1;
    for (v1::Progress::Phase phase :
         {v1::Progress::KERNEL, v1::Progress::SOLVE, v1::Progress::AGOP, v1::Progress::METRICS}) {
      if (readout && phase == v1::Progress::AGOP) continue;
      v1::JobEvent progress;
      progress.mutable_progress()->set_layer(layer);
      progress.mutable_progress()->set_phase(phase);
      progress.mutable_progress()->set_fraction(0.5);
      add(progress);
    }
    v1::JobEvent report;
    v1::LayerReport* r = report.mutable_layer_report();
    r->set_layer(layer);
    r->set_readout(readout);
    r->set_train_accuracy(0.9 + 0.01 * layer);
    r->set_test_accuracy(0.8 + 0.01 * layer);
    r->mutable_input()->set_nc1(2.0 / layer);
    r->mutable_input()->set_nc2(0.2 / layer);
    if (!readout) {
      r->mutable_projected()->set_nc1(1.0 / layer);
      r->mutable_projected()->set_nc2(0.1 / layer);
      r->mutable_features()->set_nc1(1.5 / layer);
      r->mutable_features()->set_nc2(0.15 / layer);
    }
    r->mutable_phase_seconds()->set_kernel(0.25);
    r->mutable_phase_seconds()->set_solve(0.5);
    *job->add_reports() = *r;
    add(report);
  }
  script.Finish(final_state, "m", "the kernel solve diverged; raise --ridge", layers + 1);
}

// One measurement of an MLP with `depth` hidden layers: nc1 of none falls with the layer and
// with the epoch, right is half of none, left 0.8 of it; NFA correlations rise with the epoch.
inline v1::NetworkReport MakeNetworkReport(int depth, int epoch, bool with_test) {
  v1::NetworkReport r;
  r.set_epoch(epoch);
  r.set_train_loss(1.0 / (1 + epoch));
  r.set_train_accuracy(0.5 + 0.01 * epoch);
  if (with_test) {
    r.set_test_accuracy(0.4 + 0.01 * epoch);
    r.set_test_loss(2.0 / (1 + epoch));
  }
  r.set_seconds(0.25);
  for (int layer = 1; layer <= depth + 1; ++layer) {
    v1::NetworkLayerReport* l = r.add_layers();
    l->set_layer(layer);
    l->set_output(layer == depth + 1);
    const double none = 4.0 / layer / (1 + epoch);
    l->mutable_none()->set_nc1(none);
    l->mutable_right()->set_nc1(none / 2);
    if (!l->output()) l->mutable_left()->set_nc1(none * 0.8);
    l->set_nfa_correlation(0.5 + 0.02 * epoch);
    l->set_nfa_correlation_raw(0.4 + 0.02 * epoch);
    l->add_top_singular_values(2.5);
  }
  return r;
}

// An MLP job "mlp1" (or, with `analysis`, an analysis job "an1" of model "net" v3 with one
// measurement) and its events: QUEUED, RUNNING, then per measurement some TRAIN progress (MLP),
// a MEASURE progress per layer and the NetworkReport, then `final_state`. Measurements at epochs
// 0, 10, ..., 10 * (measurements - 1).
inline void MakeScriptedNetworkJob(int depth, int measurements, bool analysis,
                                   v1::Job::State final_state, v1::Job* job,
                                   std::vector<v1::JobEvent>* events) {
  job->set_id(analysis ? "an1" : "mlp1");
  job->set_kind(analysis ? v1::Job::ANALYSIS : v1::Job::MLP);
  job->set_layers_total(measurements);
  if (analysis) {
    job->mutable_analyzed_model()->set_name("net");
    job->mutable_analyzed_model()->set_version(3);
    job->mutable_data()->set_dataset("fashion-mnist:test");
    job->mutable_data()->set_limit(200);
  } else {
    job->mutable_mlp_config()->set_depth(depth);
    job->mutable_mlp_config()->set_width(16);
    job->mutable_mlp_config()->set_epochs(10 * (measurements - 1));
    job->mutable_train()->set_dataset("fashion-mnist:train");
    job->mutable_train()->set_limit(300);
    job->mutable_test()->set_dataset("fashion-mnist:test");
  }
  EventScript script(job, events);
  auto add = [&](const v1::JobEvent& event) { script.Add(event); };
  for (int m = 0; m < measurements; ++m) {
    const int epoch = analysis ? 0 : 10 * m;
    if (m > 0) {
      for (int e : {epoch - 10, epoch - 5}) {
        v1::JobEvent train;
        train.mutable_progress()->set_phase(v1::Progress::TRAIN);
        train.mutable_progress()->set_epoch(e);
        train.mutable_progress()->set_fraction(static_cast<double>(e) / (10 * (measurements - 1)));
        add(train);
      }
    }
    for (int layer = 1; layer <= depth + 1; ++layer) {
      v1::JobEvent measure;
      measure.mutable_progress()->set_phase(v1::Progress::MEASURE);
      measure.mutable_progress()->set_layer(layer);
      measure.mutable_progress()->set_epoch(epoch);
      measure.mutable_progress()->set_fraction(0.5);
      add(measure);
    }
    v1::JobEvent report;
    *report.mutable_network_report() = MakeNetworkReport(depth, epoch, !analysis);
    *job->add_network_reports() = report.network_report();
    add(report);
  }
  script.Finish(final_state, analysis ? "" : "net", "training diverged (loss is NaN); lower --lr",
                measurements);
}

}  // namespace drfm::client::testing

#endif  // DRFM_TESTS_CLIENT_FAKE_SERVER_H_
