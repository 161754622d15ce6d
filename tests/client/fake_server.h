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
  int64_t sequence = 0;
  auto add = [&](v1::JobEvent event) {
    event.set_sequence(++sequence);
    event.mutable_time()->set_seconds(1700000000 + sequence);
    events->push_back(event);
  };
  v1::JobEvent queued;
  queued.mutable_state_change()->set_state(v1::Job::QUEUED);
  add(queued);
  v1::JobEvent running;
  running.mutable_state_change()->set_state(v1::Job::RUNNING);
  running.mutable_state_change()->set_previous_state(v1::Job::QUEUED);
  add(running);
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
  v1::JobEvent done;
  done.mutable_state_change()->set_state(final_state);
  done.mutable_state_change()->set_previous_state(v1::Job::RUNNING);
  if (final_state == v1::Job::SUCCEEDED) {
    done.mutable_state_change()->mutable_model()->set_name("m");
    done.mutable_state_change()->mutable_model()->set_version(1);
    job->mutable_model()->set_name("m");
    job->mutable_model()->set_version(1);
  } else {
    done.mutable_state_change()->set_error("the kernel solve diverged; raise --ridge");
    job->set_error("the kernel solve diverged; raise --ridge");
  }
  add(done);
  job->set_state(final_state);
  job->set_layers_done(layers + 1);
  job->set_last_event_sequence(sequence);
}

}  // namespace drfm::client::testing

#endif  // DRFM_TESTS_CLIENT_FAKE_SERVER_H_
