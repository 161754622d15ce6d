// End-to-end tests of the network side of drfm-server (DNN.md): a real DrfmServer on a loopback
// port with a real SQLite data dir, driven by real gRPC stubs. An MLP is trained as a job whose
// NetworkReports stream live and replay to a late watcher, stored as a versioned model, served by
// Predict / PredictStream (labels, scores, h_l), exported as safetensors and imported back bit for
// bit, and measured by an ANALYSIS job; MLP jobs are cancelled, survive a restart mid-queue, and
// every bad submission or import file gets its API status code with a precise message while the
// server stays up. Data are small synthetic datasets so that each test takes seconds.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/io.h"
#include "core/mlp_model.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/hash.h"
#include "tests/e2e/e2e_util.h"
#include "server/server.h"

namespace drfm::server {
namespace {

using google::protobuf::util::MessageDifferencer;

constexpr char kTrain[] = "synthetic:rows=300,cols=12,classes=3,seed=1";
constexpr char kTest[] = "synthetic:rows=90,cols=12,classes=3,seed=2";

using e2e::HttpGet;

// /metrics once it contains `needle` (the job engine counts a job just after publishing its
// terminal state, so a scrape right after a watch ends may be early); the last scrape after 30 s.
std::string ScrapeWhenItShows(int port, const std::string& needle) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string metrics = HttpGet(port, "/metrics");
  while (metrics.find(needle) == std::string::npos && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    metrics = HttpGet(port, "/metrics");
  }
  return metrics;
}

core::Dataset Synthetic(const char* name) {
  return *core::MakeSynthetic(*core::ParseSyntheticName(name));
}

std::string Bytes(const core::RowMatrixF& m) {
  return std::string(reinterpret_cast<const char*>(m.data()), m.size() * sizeof(float));
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// A small MLP fit on kTrain with kTest: 4 measurements (epochs 0, 20, 40, 60).
v1::SubmitMlpFitRequest SmallMlp(const std::string& model_name) {
  v1::SubmitMlpFitRequest request;
  request.mutable_train()->set_dataset(kTrain);
  request.mutable_test()->set_dataset(kTest);
  request.set_model_name(model_name);
  v1::MlpConfig* config = request.mutable_config();
  config->set_depth(2);
  config->set_width(32);
  config->set_epochs(60);
  config->set_batch_size(32);
  config->set_measure_every(20);
  config->set_learning_rate(1e-3);
  config->set_init_gain(0.5);
  config->set_seed(5);
  return request;
}

// A safetensors file: the 8-byte little-endian header length, the header, the data.
std::string Safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// Float values 0.1, 0.2, ... (count of them), a valid weight payload.
std::string Weights(int count, float scale = 0.1f) {
  std::vector<float> values;
  for (int i = 0; i < count; ++i) values.push_back(scale * static_cast<float>(i % 7 - 3));
  return Floats(values);
}

class MlpServiceTest : public e2e::InProcessServerTest {
 protected:
  void SetUp() override { StartFresh("drfm_mlp_e2e", 1); }

  grpc::Status SubmitMlp(const v1::SubmitMlpFitRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    return jobs_->SubmitMlpFit(&context, request, job);
  }
  grpc::Status SubmitAnalysis(const v1::SubmitAnalysisRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    return jobs_->SubmitAnalysis(&context, request, job);
  }
  v1::Job GetJob(const std::string& id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    const grpc::Status status = jobs_->GetJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }
  grpc::Status Predict(const v1::PredictRequest& request, v1::PredictResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    return models_->Predict(&context, request, response);
  }
  v1::PredictRequest PredictRows(const std::string& model, const core::RowMatrixF& x,
                                 int layer = 0) {
    v1::PredictRequest request;
    request.set_model(model);
    request.set_rows(x.rows());
    request.set_cols(x.cols());
    request.set_features(Bytes(x));
    request.set_return_scores(layer == 0);
    request.set_layer(layer);
    return request;
  }

  // Every event of the job after `after`, to its end; `received` (optional) gets the client's
  // clock at each event.
  std::vector<v1::JobEvent> Watch(const std::string& job_id, int64_t after = 0,
                                  std::vector<absl::Time>* received = nullptr) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Minutes(3));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_sequence(after);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = jobs_->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) {
      events.push_back(event);
      if (received != nullptr) received->push_back(absl::Now());
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return events;
  }

  // Events of the job until `stop` matches one (included); the stream is then cancelled.
  std::vector<v1::JobEvent> WatchUntil(const std::string& job_id,
                                       const std::function<bool(const v1::JobEvent&)>& stop) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Minutes(3));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = jobs_->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) {
      events.push_back(event);
      if (stop(event)) break;
    }
    context.TryCancel();
    reader->Finish();
    EXPECT_FALSE(events.empty() || !stop(events.back())) << "the awaited event never came";
    return events;
  }

  // The exported safetensors file of `name` (0 = latest version), checked chunk by chunk.
  std::string Export(const std::string& name, int64_t version = 0, v1::Model* model = nullptr) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    v1::ExportModelRequest request;
    request.set_name(name);
    if (version > 0) request.set_version(version);
    std::unique_ptr<grpc::ClientReader<v1::ExportModelChunk>> reader =
        models_->ExportModel(&context, request);
    std::string bytes;
    std::string sha256;
    int64_t total = -1;
    v1::ExportModelChunk chunk;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), static_cast<int64_t>(bytes.size()));
      if (bytes.empty()) {
        sha256 = chunk.sha256();
        total = chunk.total_bytes();
        if (model != nullptr) *model = chunk.model();
      }
      bytes += chunk.data();
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), total);
    EXPECT_EQ(Sha256Hex(bytes), sha256);
    return bytes;
  }

  // Streams `file` as an import of `name` in chunks of `chunk` bytes after the header.
  grpc::Status Import(const std::string& name, const std::string& file, v1::Model* model,
                      std::optional<int64_t> size_bytes = std::nullopt,
                      std::optional<std::string> sha256 = std::nullopt, size_t chunk = 1000) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> writer =
        models_->ImportModel(&context, model);
    v1::ImportModelRequest header;
    header.mutable_header()->set_name(name);
    if (size_bytes.has_value()) header.mutable_header()->set_size_bytes(*size_bytes);
    if (sha256.has_value()) header.mutable_header()->set_sha256(*sha256);
    writer->Write(header);
    for (size_t offset = 0; offset < file.size(); offset += chunk) {
      v1::ImportModelRequest message;
      message.set_chunk(file.substr(offset, chunk));
      if (!writer->Write(message)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  int ModelCount(const std::string& name = "") {
    grpc::ClientContext context;
    v1::ListModelsRequest request;
    request.set_name(name);
    request.set_page_size(1000);
    v1::ListModelsResponse response;
    const grpc::Status status = models_->ListModels(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.models_size();
  }
};

TEST_F(MlpServiceTest, TrainWatchPredictExportImportAndAnalyzeEndToEnd) {
  v1::Job job;
  ASSERT_TRUE(SubmitMlp(SmallMlp("e2e-mlp"), &job).ok());
  EXPECT_EQ(job.kind(), v1::Job::MLP);
  EXPECT_EQ(job.layers_total(), 4);

  // Watched live from submission: the first NetworkReport arrives before the job has ended.
  std::vector<absl::Time> received;
  const std::vector<v1::JobEvent> events = Watch(job.id(), 0, &received);
  std::vector<v1::NetworkReport> streamed;
  std::optional<absl::Time> first_report_received;
  bool saw_progress = false;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    if (events[i].has_network_report()) {
      streamed.push_back(events[i].network_report());
      if (!first_report_received) first_report_received = received[i];
    }
    saw_progress |= events[i].has_progress();
  }
  ASSERT_TRUE(events.back().has_state_change());
  ASSERT_EQ(events.back().state_change().state(), v1::Job::SUCCEEDED)
      << events.back().state_change().error();
  EXPECT_EQ(events.back().state_change().model().name(), "e2e-mlp");
  ASSERT_EQ(streamed.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(streamed[i].epoch(), 20 * i);
  const v1::Job done = GetJob(job.id());
  ASSERT_TRUE(first_report_received.has_value());
  EXPECT_LT(*first_report_received, FromProtoTime(done.end_time()));
  EXPECT_TRUE(saw_progress);  // throttled, but the first one of a run always goes out

  // A late watcher replays the same stored stream, NetworkReports included.
  const std::vector<v1::JobEvent> replay = Watch(job.id());
  ASSERT_EQ(replay.size(), events.size());
  for (size_t i = 0; i < replay.size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(replay[i], events[i])) << i;
  }
  ASSERT_EQ(done.network_reports_size(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(done.network_reports(i), streamed[i])) << i;
  }
  EXPECT_EQ(done.model().version(), 1);

  // The stored model.
  v1::Model model;
  {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name("e2e-mlp");
    ASSERT_TRUE(models_->GetModel(&context, request, &model).ok());
  }
  EXPECT_EQ(model.kind(), v1::Model::MLP);
  EXPECT_EQ(model.input_dim(), 12);
  EXPECT_EQ(model.classes(), 3);
  EXPECT_EQ(model.layers(), 2);
  EXPECT_EQ(model.layer_dims_size(), 2);
  EXPECT_EQ(model.job_id(), job.id());
  EXPECT_EQ(model.mlp_config().seed(), 5u);

  // Predict the training rows: the labels give the accuracy of the last measurement.
  const core::Dataset train = Synthetic(kTrain);
  const core::Dataset test = Synthetic(kTest);
  v1::PredictResponse labels;
  ASSERT_TRUE(Predict(PredictRows("e2e-mlp", train.features), &labels).ok());
  ASSERT_EQ(labels.labels_size(), 300);
  ASSERT_EQ(labels.scores_size(), 300 * 3);
  EXPECT_EQ(labels.classes(), 3);
  int correct = 0;
  for (int i = 0; i < 300; ++i) {
    correct += labels.labels(i) == train.labels[i];
    int best = 0;
    for (int c = 1; c < 3; ++c) {
      if (labels.scores(3 * i + c) > labels.scores(3 * i + best)) best = c;
    }
    EXPECT_EQ(labels.labels(i), best) << "row " << i;
  }
  EXPECT_NEAR(correct / 300.0, done.network_reports(3).train_accuracy(), 1e-9);
  EXPECT_GT(correct / 300.0, 0.5);  // three separated blobs: far better than chance

  // h_1 and h_2 are the network's ReLU activations, exactly as core computes them from the
  // exported weights; layer 3 does not exist.
  const std::string exported = Export("e2e-mlp");
  absl::StatusOr<core::MlpModel> local = core::MlpModel::ImportSafetensors(exported);
  ASSERT_TRUE(local.ok()) << local.status();
  std::map<int, std::string> representations;
  for (int layer = 1; layer <= 2; ++layer) {
    v1::PredictResponse h;
    ASSERT_TRUE(Predict(PredictRows("e2e-mlp", train.features, layer), &h).ok());
    EXPECT_EQ(h.labels_size(), 0);
    EXPECT_EQ(h.representation_cols(), 32);
    ASSERT_EQ(h.representation().size(), 300u * 32 * 4);
    absl::StatusOr<core::RowMatrixF> expected = local->Representation(train.features, layer);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_EQ(h.representation(), Bytes(*expected)) << "layer " << layer;
    representations[layer] = h.representation();
  }
  v1::PredictResponse ignored;
  grpc::Status status = Predict(PredictRows("e2e-mlp", train.features, 3), &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("2 layers"), std::string::npos) << status.error_message();

  // PredictStream answers batch by batch with what Predict answers.
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    auto stream = models_->PredictStream(&context);
    const core::RowMatrixF first = train.features.topRows(100);
    const core::RowMatrixF second = train.features.bottomRows(200);
    ASSERT_TRUE(stream->Write(PredictRows("e2e-mlp", first)));
    ASSERT_TRUE(stream->Write(PredictRows("e2e-mlp", second, 2)));
    stream->WritesDone();
    v1::PredictResponse a, b;
    ASSERT_TRUE(stream->Read(&a));
    ASSERT_TRUE(stream->Read(&b));
    ASSERT_TRUE(stream->Finish().ok());
    ASSERT_EQ(a.labels_size(), 100);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(a.labels(i), labels.labels(i));
    EXPECT_EQ(b.representation(), representations[2].substr(100 * 32 * 4));
  }

  // Import the exported file: a new model whose tensors, predictions and export are identical.
  v1::Model imported;
  status = Import("e2e-imported", exported, &imported, static_cast<int64_t>(exported.size()),
                  Sha256Hex(exported), 777);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(imported.name(), "e2e-imported");
  EXPECT_EQ(imported.version(), 1);
  EXPECT_EQ(imported.kind(), v1::Model::MLP);
  EXPECT_EQ(imported.input_dim(), 12);
  EXPECT_EQ(imported.classes(), 3);
  EXPECT_EQ(imported.layers(), 2);
  EXPECT_TRUE(imported.standardize());
  EXPECT_EQ(std::vector<int64_t>(imported.layer_dims().begin(), imported.layer_dims().end()),
            std::vector<int64_t>(model.layer_dims().begin(), model.layer_dims().end()));
  EXPECT_TRUE(imported.job_id().empty());
  EXPECT_FALSE(imported.has_mlp_config());
  EXPECT_EQ(Export("e2e-imported"), exported);
  absl::StatusOr<core::MlpModel> reread = core::MlpModel::ImportSafetensors(Export("e2e-imported"));
  ASSERT_TRUE(reread.ok()) << reread.status();
  ASSERT_EQ(reread->params().weights.size(), local->params().weights.size());
  for (size_t l = 0; l < local->params().weights.size(); ++l) {
    EXPECT_EQ(Bytes(reread->params().weights[l]), Bytes(local->params().weights[l])) << l;
  }
  v1::PredictResponse imported_labels;
  ASSERT_TRUE(Predict(PredictRows("e2e-imported", train.features), &imported_labels).ok());
  ASSERT_EQ(imported_labels.labels_size(), labels.labels_size());
  for (int i = 0; i < labels.labels_size(); ++i) {
    EXPECT_EQ(imported_labels.labels(i), labels.labels(i));
  }
  for (int i = 0; i < labels.scores_size(); ++i) {
    EXPECT_EQ(imported_labels.scores(i), labels.scores(i)) << i;  // bit-exact, not approximately
  }
  v1::PredictResponse imported_h1;
  ASSERT_TRUE(Predict(PredictRows("e2e-imported", train.features, 1), &imported_h1).ok());
  EXPECT_EQ(imported_h1.representation(), representations[1]);
  // Importing again stores the next version.
  v1::Model again;
  ASSERT_TRUE(Import("e2e-imported", exported, &again).ok());
  EXPECT_EQ(again.version(), 2);

  // An analysis of the imported model on the test rows sees what the fit's last test
  // measurement saw.
  v1::SubmitAnalysisRequest analysis;
  analysis.set_model("e2e-imported");
  analysis.set_version(1);
  analysis.mutable_data()->set_dataset(kTest);
  v1::Job analysis_job;
  ASSERT_TRUE(SubmitAnalysis(analysis, &analysis_job).ok());
  EXPECT_EQ(analysis_job.kind(), v1::Job::ANALYSIS);
  const std::vector<v1::JobEvent> analysis_events = Watch(analysis_job.id());
  ASSERT_EQ(analysis_events.back().state_change().state(), v1::Job::SUCCEEDED)
      << analysis_events.back().state_change().error();
  const v1::Job analyzed = GetJob(analysis_job.id());
  ASSERT_EQ(analyzed.network_reports_size(), 1);
  const v1::NetworkReport& measured = analyzed.network_reports(0);
  EXPECT_EQ(measured.layers_size(), 3);
  EXPECT_NEAR(measured.train_accuracy(), done.network_reports(3).test_accuracy(), 1e-9);
  EXPECT_FALSE(analyzed.has_model());
  EXPECT_EQ(ModelCount(), 3);  // e2e-mlp v1, e2e-imported v1 and v2: the analysis stored none

  // The job metrics count the MLP and the analysis; phases have train and measure samples.
  const std::string metrics =
      ScrapeWhenItShows(server_->metrics_port(), "drfm_jobs_finished_total{state=\"succeeded\"} 2");
  EXPECT_NE(metrics.find("drfm_jobs_submitted_total 2"), std::string::npos)
      << metrics.substr(0, 3000);
  EXPECT_NE(metrics.find("drfm_jobs_finished_total{state=\"succeeded\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("drfm_layer_phase_seconds_count{phase=\"train\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("drfm_layer_phase_seconds_count{phase=\"measure\"} 5"), std::string::npos);
  EXPECT_NE(metrics.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"ImportModel\""),
            std::string::npos);
  EXPECT_EQ(metrics.find(job.id()), std::string::npos);  // no job ids as labels
  EXPECT_EQ(metrics.find(analysis_job.id()), std::string::npos);
}

TEST_F(MlpServiceTest, CancellingARunningMlpJobStopsItAndStoresNoModel) {
  v1::SubmitMlpFitRequest request;
  request.mutable_train()->set_dataset("synthetic:rows=3000,cols=100,classes=10");
  request.set_model_name("never");
  request.mutable_config()->set_depth(3);
  request.mutable_config()->set_width(256);
  request.mutable_config()->set_epochs(100000);
  request.mutable_config()->set_measure_every(0);
  v1::Job job;
  ASSERT_TRUE(SubmitMlp(request, &job).ok());
  WatchUntil(job.id(), [](const v1::JobEvent& e) {
    return e.has_progress() && e.progress().phase() == v1::Progress::TRAIN;
  });
  const absl::Time cancelled_at = absl::Now();
  {
    grpc::ClientContext context;
    v1::CancelJobRequest cancel;
    cancel.set_job_id(job.id());
    v1::Job running;
    ASSERT_TRUE(jobs_->CancelJob(&context, cancel, &running).ok());
    EXPECT_EQ(running.state(), v1::Job::RUNNING);
  }
  const std::vector<v1::JobEvent> events = Watch(job.id());
  ASSERT_EQ(events.back().state_change().state(), v1::Job::CANCELLED);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(10));
  const v1::Job cancelled = GetJob(job.id());
  EXPECT_NE(cancelled.error().find("cancelled by a CancelJob request while running"),
            std::string::npos)
      << cancelled.error();
  EXPECT_EQ(ModelCount("never"), 0);
}

TEST_F(MlpServiceTest, JobsQueuedOrRunningAcrossARestartCompleteWithoutDuplicateEvents) {
  v1::Job base_job;
  ASSERT_TRUE(SubmitMlp(SmallMlp("base"), &base_job).ok());
  ASSERT_EQ(Watch(base_job.id()).back().state_change().state(), v1::Job::SUCCEEDED);

  // One worker: the fit runs, the analysis waits behind it.
  v1::SubmitMlpFitRequest fit;
  fit.mutable_train()->set_dataset("synthetic:rows=400,cols=20,classes=4");
  fit.set_model_name("interrupted");
  fit.mutable_config()->set_depth(2);
  fit.mutable_config()->set_width(64);
  fit.mutable_config()->set_epochs(15);
  fit.mutable_config()->set_batch_size(16);
  fit.mutable_config()->set_measure_every(5);
  fit.set_request_id("restart-fit");
  v1::Job running;
  ASSERT_TRUE(SubmitMlp(fit, &running).ok());
  v1::SubmitAnalysisRequest analysis;
  analysis.set_model("base");
  analysis.mutable_data()->set_dataset(kTest);
  v1::Job queued;
  ASSERT_TRUE(SubmitAnalysis(analysis, &queued).ok());
  const std::vector<v1::JobEvent> before =
      WatchUntil(running.id(), [](const v1::JobEvent& e) { return e.has_network_report(); });
  ASSERT_TRUE(before.back().has_network_report());
  const int64_t seen = before.back().sequence();

  // No drain: the fit is re-queued and starts over, the analysis stays queued.
  RestartServer(absl::ZeroDuration());
  // The client retries its submission after the restart: the same job, not a second one.
  v1::Job retried;
  ASSERT_TRUE(SubmitMlp(fit, &retried).ok());
  EXPECT_EQ(retried.id(), running.id());

  // A watcher resuming from the last sequence it saw gets the rest exactly once.
  const std::vector<v1::JobEvent> after = Watch(running.id(), seen);
  ASSERT_FALSE(after.empty());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].sequence(), seen + 1 + static_cast<int64_t>(i));
  }
  ASSERT_EQ(after.back().state_change().state(), v1::Job::SUCCEEDED)
      << after.back().state_change().error();
  const std::vector<v1::JobEvent> all = Watch(running.id());
  ASSERT_EQ(all.size(), static_cast<size_t>(seen) + after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(all[i], before[i])) << i;
  }
  std::vector<v1::Job::State> states;
  for (const v1::JobEvent& event : all) {
    if (event.has_state_change()) states.push_back(event.state_change().state());
  }
  EXPECT_EQ(states, (std::vector<v1::Job::State>{v1::Job::QUEUED, v1::Job::RUNNING, v1::Job::QUEUED,
                                                 v1::Job::RUNNING, v1::Job::SUCCEEDED}));
  const v1::Job done = GetJob(running.id());
  ASSERT_EQ(done.network_reports_size(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(done.network_reports(i).epoch(), 5 * i);
  EXPECT_EQ(done.model().version(), 1);
  EXPECT_EQ(ModelCount("interrupted"), 1);

  const std::vector<v1::JobEvent> analysis_events = Watch(queued.id());
  ASSERT_EQ(analysis_events.back().state_change().state(), v1::Job::SUCCEEDED)
      << analysis_events.back().state_change().error();
  int reports = 0;
  for (const v1::JobEvent& event : analysis_events) reports += event.has_network_report();
  EXPECT_EQ(reports, 1);
  EXPECT_EQ(GetJob(queued.id()).network_reports_size(), 1);
}

TEST_F(MlpServiceTest, EveryBadImportIsRefusedPreciselyAndNothingIsStored) {
  // A valid file to start from: W_1 4 x 3, W_2 2 x 4, no standardization.
  const std::string good_header =
      R"({"layers.0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},)"
      R"("layers.1.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[48,80]}})";
  const std::string good_data = Weights(12) + Weights(8);
  const std::string good = Safetensors(good_header, good_data);
  std::string nan_data = good_data;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&nan_data[4 * 5], &nan, 4);
  std::string exported;
  {
    v1::Model ok;
    ASSERT_TRUE(Import("valid", good, &ok).ok());
    exported = Export("valid");
  }

  struct Case {
    const char* what;
    grpc::StatusCode code;
    const char* needle;
    std::function<grpc::Status(v1::Model*)> call;
  };
  auto file = [this](std::string bytes, std::optional<int64_t> size = std::nullopt,
                     std::optional<std::string> sha = std::nullopt) {
    return [this, bytes, size, sha](v1::Model* m) {
      return Import("bad-import", bytes, m, size, sha);
    };
  };
  const std::vector<Case> cases = {
      {"shapes that do not chain", grpc::StatusCode::INVALID_ARGUMENT, "shapes must chain",
       file(
           Safetensors(R"({"layers.0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},)"
                       R"("layers.1.weight":{"dtype":"F32","shape":[2,5],"data_offsets":[48,88]}})",
                       Weights(12) + Weights(10)))},
      {"a NaN weight", grpc::StatusCode::INVALID_ARGUMENT, "non-finite",
       file(Safetensors(good_header, nan_data))},
      {"an F64 tensor", grpc::StatusCode::INVALID_ARGUMENT, "dtype F64",
       file(Safetensors(
           R"({"layers.0.weight":{"dtype":"F64","shape":[4,3],"data_offsets":[0,96]},)"
           R"("layers.1.weight":{"dtype":"F64","shape":[2,4],"data_offsets":[96,160]}})",
           std::string(160, '\0')))},
      {"truncated data", grpc::StatusCode::INVALID_ARGUMENT, "outside the",
       file(exported.substr(0, exported.size() - 16))},
      {"truncated data with its size declared", grpc::StatusCode::INVALID_ARGUMENT, "cut short",
       file(exported.substr(0, exported.size() - 16), static_cast<int64_t>(exported.size()))},
      {"offsets past the data", grpc::StatusCode::INVALID_ARGUMENT, "outside the",
       file(Safetensors(
           R"({"layers.0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},)"
           R"("layers.1.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[48,800]}})",
           good_data))},
      {"overlapping offsets", grpc::StatusCode::INVALID_ARGUMENT, "overlap",
       file(
           Safetensors(R"({"layers.0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},)"
                       R"("layers.1.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[40,72]}})",
                       good_data))},
      {"offsets that disagree with the shape", grpc::StatusCode::INVALID_ARGUMENT, "span",
       file(
           Safetensors(R"({"layers.0.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,40]},)"
                       R"("layers.1.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[40,80]}})",
                       good_data))},
      {"a header length past the file", grpc::StatusCode::INVALID_ARGUMENT, "runs past the end",
       file(std::string("\x40\x42\x0f\0\0\0\0\0", 8) + good_header)},
      {"a header that is not JSON", grpc::StatusCode::INVALID_ARGUMENT, "not valid JSON",
       file(Safetensors("{not json", ""))},
      {"a file shorter than 8 bytes", grpc::StatusCode::INVALID_ARGUMENT, "8-byte", file("abc")},
      {"a wrong sha256", grpc::StatusCode::DATA_LOSS, "SHA-256",
       file(good, std::nullopt, std::string(64, 'a'))},
      {"a sha256 that is not hex", grpc::StatusCode::INVALID_ARGUMENT, "header.sha256",
       file(good, std::nullopt, std::string("xyz"))},
      {"a negative size", grpc::StatusCode::INVALID_ARGUMENT, "header.size_bytes", file(good, -1)},
      {"more bytes than declared", grpc::StatusCode::INVALID_ARGUMENT, "more bytes",
       file(good, 10)},
      {"a bad name", grpc::StatusCode::INVALID_ARGUMENT, "header.name",
       [this, good](v1::Model* m) { return Import("../etc", good, m); }},
      {"no name", grpc::StatusCode::INVALID_ARGUMENT, "header.name is required",
       [this, good](v1::Model* m) { return Import("", good, m); }},
      {"an empty stream", grpc::StatusCode::INVALID_ARGUMENT, "empty",
       [this](v1::Model* m) {
         grpc::ClientContext context;
         auto writer = models_->ImportModel(&context, m);
         writer->WritesDone();
         return writer->Finish();
       }},
      {"a chunk before the header", grpc::StatusCode::INVALID_ARGUMENT, "must be the header",
       [this, good](v1::Model* m) {
         grpc::ClientContext context;
         auto writer = models_->ImportModel(&context, m);
         v1::ImportModelRequest chunk;
         chunk.set_chunk(good);
         writer->Write(chunk);
         writer->WritesDone();
         return writer->Finish();
       }},
      {"a second header", grpc::StatusCode::INVALID_ARGUMENT, "only the first message",
       [this](v1::Model* m) {
         grpc::ClientContext context;
         auto writer = models_->ImportModel(&context, m);
         v1::ImportModelRequest header;
         header.mutable_header()->set_name("bad-import");
         writer->Write(header);
         writer->Write(header);
         writer->WritesDone();
         return writer->Finish();
       }},
  };
  for (const Case& c : cases) {
    v1::Model model;
    const grpc::Status status = c.call(&model);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.needle), std::string::npos)
        << c.what << ": " << status.error_message();
  }
  // Nothing half-imported is visible, and the server still imports and serves.
  EXPECT_EQ(ModelCount("bad-import"), 0);
  EXPECT_EQ(ModelCount(), 1);
  v1::Model model;
  ASSERT_TRUE(
      Import("bad-import", good, &model, static_cast<int64_t>(good.size()), Sha256Hex(good), 7)
          .ok());
  EXPECT_EQ(model.version(), 1);
  EXPECT_EQ(model.layers(), 1);
  EXPECT_FALSE(model.standardize());
  core::RowMatrixF x(2, 3);
  x << 1, 2, 3, -1, 0.5, 2;
  v1::PredictResponse response;
  ASSERT_TRUE(Predict(PredictRows("bad-import", x), &response).ok());
  EXPECT_EQ(response.labels_size(), 2);
}

TEST_F(MlpServiceTest, EveryBadSubmissionGetsItsStatusCodeAndTheServerStaysUp) {
  options_.memory_budget_gb = 1;
  RestartServer(absl::ZeroDuration());
  // A Deep RFM model and an MLP to refer to.
  {
    v1::SubmitFitRequest rfm;
    rfm.mutable_train()->set_dataset("synthetic:rows=100,cols=12,classes=3");
    rfm.mutable_config()->set_layers(1);
    rfm.mutable_config()->set_width(16);
    rfm.set_model_name("an-rfm");
    grpc::ClientContext context;
    v1::Job job;
    ASSERT_TRUE(jobs_->SubmitFit(&context, rfm, &job).ok());
    ASSERT_EQ(Watch(job.id()).back().state_change().state(), v1::Job::SUCCEEDED);
    v1::SubmitMlpFitRequest mlp = SmallMlp("an-mlp");
    mlp.mutable_config()->set_epochs(1);
    ASSERT_TRUE(SubmitMlp(mlp, &job).ok());
    ASSERT_EQ(Watch(job.id()).back().state_change().state(), v1::Job::SUCCEEDED);
  }
  struct Case {
    const char* what;
    grpc::StatusCode code;
    const char* needle;
    std::function<grpc::Status()> call;
  };
  auto mlp = [this](std::function<void(v1::SubmitMlpFitRequest*)> edit) {
    return [this, edit]() {
      v1::SubmitMlpFitRequest request = SmallMlp("bad");
      edit(&request);
      v1::Job job;
      return SubmitMlp(request, &job);
    };
  };
  auto analyze = [this](std::function<void(v1::SubmitAnalysisRequest*)> edit) {
    return [this, edit]() {
      v1::SubmitAnalysisRequest request;
      request.set_model("an-mlp");
      request.mutable_data()->set_dataset(kTest);
      edit(&request);
      v1::Job job;
      return SubmitAnalysis(request, &job);
    };
  };
  using Mlp = v1::SubmitMlpFitRequest;
  using Analysis = v1::SubmitAnalysisRequest;
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const std::vector<Case> cases = {
      {"missing train", kInvalid, "train is required", mlp([](Mlp* r) { r->clear_train(); })},
      {"unknown dataset", grpc::StatusCode::NOT_FOUND, "no-such",
       mlp([](Mlp* r) { r->mutable_train()->set_dataset("no-such-data"); })},
      {"depth 0", kInvalid, "config.depth", mlp([](Mlp* r) { r->mutable_config()->set_depth(0); })},
      {"absurd depth", kInvalid, "config.depth",
       mlp([](Mlp* r) { r->mutable_config()->set_depth(1 << 20); })},
      {"absurd width", kInvalid, "config.width",
       mlp([](Mlp* r) { r->mutable_config()->set_width(1 << 30); })},
      {"negative epochs", kInvalid, "config.epochs",
       mlp([](Mlp* r) { r->mutable_config()->set_epochs(-5); })},
      {"absurd epochs", kInvalid, "config.epochs",
       mlp([](Mlp* r) { r->mutable_config()->set_epochs(2000000000); })},
      {"batch size 0", kInvalid, "config.batch_size",
       mlp([](Mlp* r) { r->mutable_config()->set_batch_size(0); })},
      {"absurd batch size", kInvalid, "config.batch_size",
       mlp([](Mlp* r) { r->mutable_config()->set_batch_size(1 << 30); })},
      {"NaN learning rate", kInvalid, "config.learning_rate",
       mlp([](Mlp* r) { r->mutable_config()->set_learning_rate(std::nan("")); })},
      {"negative measure_every", kInvalid, "config.measure_every",
       mlp([](Mlp* r) { r->mutable_config()->set_measure_every(-1); })},
      {"a measurement every epoch of 100000", kInvalid, "measurements", mlp([](Mlp* r) {
         r->mutable_config()->set_epochs(100000);
         r->mutable_config()->set_measure_every(1);
       })},
      {"test columns differ", kInvalid, "columns",
       mlp([](Mlp* r) { r->mutable_test()->set_dataset("synthetic:rows=50,cols=5,classes=3"); })},
      {"bad model name", kInvalid, "model_name", mlp([](Mlp* r) { r->set_model_name("a/b"); })},
      {"priority out of range", kInvalid, "priority", mlp([](Mlp* r) { r->set_priority(-5000); })},
      {"memory over the budget", grpc::StatusCode::RESOURCE_EXHAUSTED, "budget", mlp([](Mlp* r) {
         r->mutable_config()->set_width(16384);  // 32 x 16384^2 weights with Adam's moments
         r->mutable_config()->set_depth(32);
       })},
      {"missing model", kInvalid, "model is required",
       analyze([](Analysis* r) { r->clear_model(); })},
      {"unknown model", grpc::StatusCode::NOT_FOUND, "does not exist",
       analyze([](Analysis* r) { r->set_model("nobody"); })},
      {"unknown version", grpc::StatusCode::NOT_FOUND, "no version 9",
       analyze([](Analysis* r) { r->set_version(9); })},
      {"a Deep RFM model", kInvalid, "is a DEEP_RFM model",
       analyze([](Analysis* r) { r->set_model("an-rfm"); })},
      {"data columns differ", kInvalid, "columns", analyze([](Analysis* r) {
         r->mutable_data()->set_dataset("synthetic:rows=50,cols=5,classes=3");
       })},
      {"missing data", kInvalid, "data is required", analyze([](Analysis* r) { r->clear_data(); })},
      {"unknown data", grpc::StatusCode::NOT_FOUND, "no-such",
       analyze([](Analysis* r) { r->mutable_data()->set_dataset("no-such-data"); })},
      {"unknown kind filter", kInvalid, "kind",
       [this]() {
         grpc::ClientContext context;
         v1::ListJobsRequest request;
         request.set_kind(static_cast<v1::Job::Kind>(42));
         v1::ListJobsResponse response;
         return jobs_->ListJobs(&context, request, &response);
       }},
      {"predict with the wrong columns", kInvalid, "expects rows x 12",
       [this]() {
         v1::PredictResponse response;
         return Predict(PredictRows("an-mlp", core::RowMatrixF::Ones(2, 5)), &response);
       }},
      {"predict a NaN", kInvalid, "finite",
       [this]() {
         core::RowMatrixF x = core::RowMatrixF::Ones(2, 12);
         x(1, 3) = std::nanf("");
         v1::PredictResponse response;
         return Predict(PredictRows("an-mlp", x), &response);
       }},
      {"export of an unknown model", grpc::StatusCode::NOT_FOUND, "nobody",
       [this]() {
         grpc::ClientContext context;
         v1::ExportModelRequest request;
         request.set_name("nobody");
         auto reader = models_->ExportModel(&context, request);
         v1::ExportModelChunk chunk;
         while (reader->Read(&chunk)) {
         }
         return reader->Finish();
       }},
  };
  for (const Case& c : cases) {
    const grpc::Status status = c.call();
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.needle), std::string::npos)
        << c.what << ": " << status.error_message();
  }
  // A request_id reused with a different request is ALREADY_EXISTS; with the same, the same job.
  v1::SubmitMlpFitRequest request = SmallMlp("idempotent");
  request.mutable_config()->set_epochs(1);
  request.set_request_id("same-key");
  v1::Job first, second;
  ASSERT_TRUE(SubmitMlp(request, &first).ok());
  ASSERT_TRUE(SubmitMlp(request, &second).ok());
  EXPECT_EQ(first.id(), second.id());
  request.mutable_config()->set_epochs(2);
  EXPECT_EQ(SubmitMlp(request, &second).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // Only the valid jobs exist, and the server still runs them.
  grpc::ClientContext context;
  v1::ListJobsRequest list;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(jobs_->ListJobs(&context, list, &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 3);
  EXPECT_EQ(Watch(first.id()).back().state_change().state(), v1::Job::SUCCEEDED);
}

}  // namespace
}  // namespace drfm::server
