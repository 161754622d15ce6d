// End-to-end tests of drfm-server: a real DrfmServer on a loopback port with a real SQLite data
// dir, driven by real gRPC clients; metrics scraped over real HTTP.
#include "server/server.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "core/io.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "client/client.h"
#include "server/hash.h"
#include "tests/e2e/e2e_util.h"

namespace drfm::server {
namespace {

using e2e::HttpGet;

class ServerTest : public e2e::InProcessServerTest {
 protected:
  void SetUp() override { StartFresh("drfm_e2e", 2); }

  // Uploads `data` in chunks of `chunk` bytes; returns the status and the dataset.
  grpc::Status Upload(const core::Dataset& data, const std::string& name, size_t chunk, v1::Dataset* out,
                      bool with_hash = true) {
    grpc::ClientContext context;
    auto writer = datasets_->UploadDataset(&context, out);
    const std::string features(reinterpret_cast<const char*>(data.features.data()), data.features.size() * 4);
    const std::string labels(reinterpret_cast<const char*>(data.labels.data()), data.labels.size() * 4);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->set_rows(data.rows());
    header.mutable_header()->set_cols(data.cols());
    header.mutable_header()->set_num_classes(data.num_classes);
    if (with_hash) header.mutable_header()->set_sha256(Sha256Hex(features + labels));
    writer->Write(header);
    for (size_t off = 0; off < features.size(); off += chunk) {
      v1::UploadDatasetRequest m;
      m.mutable_chunk()->set_features(features.substr(off, chunk));
      writer->Write(m);
    }
    v1::UploadDatasetRequest m;
    m.mutable_chunk()->set_labels(labels);
    writer->Write(m);
    writer->WritesDone();
    return writer->Finish();
  }

  // Watches a job to its end; returns the events.
  std::vector<v1::JobEvent> Watch(const std::string& job_id, int64_t after = 0) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_sequence(after);
    auto reader = jobs_->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) events.push_back(event);
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return events;
  }

  v1::SubmitFitRequest SmallFit(const std::string& dataset) {
    v1::SubmitFitRequest request;
    request.mutable_train()->set_dataset(dataset);
    request.mutable_test()->set_dataset(dataset);
    request.mutable_test()->set_limit(50);
    request.mutable_config()->set_layers(2);
    request.mutable_config()->set_width(32);
    request.mutable_config()->set_seed(3);
    return request;
  }
};


TEST_F(ServerTest, UploadFitWatchAndPredictEndToEnd) {
  const core::Dataset data = e2e::Synthetic(300, 12, 3, 1);
  v1::Dataset stored;
  ASSERT_TRUE(Upload(data, "blobs", 1000, &stored).ok());  // chunks split float values
  EXPECT_EQ(stored.rows(), 300);
  EXPECT_EQ(stored.num_classes(), 3);

  v1::SubmitFitRequest request = SmallFit("blobs");
  request.set_model_name("blobs-model");
  grpc::ClientContext submit_context;
  v1::Job job;
  ASSERT_TRUE(jobs_->SubmitFit(&submit_context, request, &job).ok());
  EXPECT_FALSE(job.id().empty());

  const std::vector<v1::JobEvent> events = Watch(job.id());
  ASSERT_FALSE(events.empty());
  int layer_reports = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    layer_reports += events[i].has_layer_report();
  }
  EXPECT_EQ(layer_reports, 3);  // 2 layers + readout
  ASSERT_TRUE(events.back().has_state_change());
  EXPECT_EQ(events.back().state_change().state(), v1::Job::SUCCEEDED) << events.back().state_change().error();

  grpc::ClientContext get_context;
  v1::GetJobRequest get;
  get.set_job_id(job.id());
  v1::Job done;
  ASSERT_TRUE(jobs_->GetJob(&get_context, get, &done).ok());
  EXPECT_EQ(done.state(), v1::Job::SUCCEEDED);
  ASSERT_EQ(done.reports_size(), 3);
  EXPECT_EQ(done.model().name(), "blobs-model");

  // Predict the test rows: the labels reproduce the reported readout test accuracy.
  v1::PredictRequest predict;
  predict.set_model("blobs-model");
  predict.set_rows(50);
  predict.set_cols(12);
  predict.set_features(std::string(reinterpret_cast<const char*>(data.features.data()), 50 * 12 * 4));
  predict.set_return_scores(true);
  grpc::ClientContext predict_context;
  v1::PredictResponse response;
  grpc::Status status = models_->Predict(&predict_context, predict, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.labels_size(), 50);
  EXPECT_EQ(response.scores_size(), 150);
  int correct = 0;
  for (int i = 0; i < 50; ++i) correct += response.labels(i) == data.labels[i];
  EXPECT_DOUBLE_EQ(correct / 50.0, done.reports(2).test_accuracy());
  EXPECT_EQ(response.model().version(), 1);

  // The metrics endpoint saw all of it.
  const std::string metrics = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("drfm_jobs_submitted_total 1"), std::string::npos);
  EXPECT_NE(metrics.find("drfm_predict_rows_total 50"), std::string::npos);
  EXPECT_NE(metrics.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"SubmitFit\""), std::string::npos)
      << metrics.substr(0, 2000);
}

TEST_F(ServerTest, WatchResumesAfterASequenceWithoutGapsOrRepeats) {
  v1::SubmitFitRequest request = SmallFit("synthetic:rows=200,cols=8,classes=3,seed=2");
  grpc::ClientContext context;
  v1::Job job;
  ASSERT_TRUE(jobs_->SubmitFit(&context, request, &job).ok());
  const std::vector<v1::JobEvent> all = Watch(job.id());
  ASSERT_GT(all.size(), 3u);
  const int64_t cut = all.size() / 2;
  const std::vector<v1::JobEvent> rest = Watch(job.id(), cut);
  ASSERT_EQ(rest.size(), all.size() - cut);
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i].SerializeAsString(), all[cut + i].SerializeAsString());
}

TEST_F(ServerTest, EveryBadInputGetsItsStatusCodeAndTheServerStaysUp) {
  struct Case {
    const char* what;
    grpc::StatusCode expected;
    std::function<grpc::Status()> call;
  };
  auto fit = [this](std::function<void(v1::SubmitFitRequest*)> edit) {
    return [this, edit]() {
      v1::SubmitFitRequest r = SmallFit("synthetic:rows=100,cols=4,classes=2");
      edit(&r);
      grpc::ClientContext c;
      v1::Job j;
      return jobs_->SubmitFit(&c, r, &j);
    };
  };
  auto predict = [this](std::function<void(v1::PredictRequest*)> edit) {
    return [this, edit]() {
      v1::PredictRequest r;
      r.set_model("nope");
      r.set_rows(1);
      r.set_cols(2);
      r.set_features(std::string(8, '\0'));
      edit(&r);
      grpc::ClientContext c;
      v1::PredictResponse p;
      return models_->Predict(&c, r, &p);
    };
  };
  std::vector<Case> cases = {
      {"missing train dataset", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_train()->clear_dataset(); })},
      {"unknown dataset", grpc::StatusCode::NOT_FOUND, fit([](auto* r) { r->mutable_train()->set_dataset("nothing"); })},
      {"negative bandwidth", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_config()->set_bandwidth(-1); })},
      {"NaN ridge", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_config()->set_ridge(std::nan("")); })},
      {"unknown kernel enum", grpc::StatusCode::INVALID_ARGUMENT,
       fit([](auto* r) { r->mutable_config()->set_kernel(static_cast<v1::FitConfig::Kernel>(77)); })},
      {"absurd layers", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_config()->set_layers(100000); })},
      {"absurd width", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_config()->set_width(1 << 30); })},
      {"negative limit", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->mutable_train()->set_limit(-5); })},
      {"bad model name", grpc::StatusCode::INVALID_ARGUMENT, fit([](auto* r) { r->set_model_name("../etc/passwd"); })},
      {"memory over budget", grpc::StatusCode::RESOURCE_EXHAUSTED,
       fit([](auto* r) { r->mutable_train()->set_dataset("synthetic:rows=100000,cols=4,classes=2"); })},
      {"unknown model", grpc::StatusCode::NOT_FOUND, predict([](auto*) {})},
      {"model name with slash", grpc::StatusCode::INVALID_ARGUMENT, predict([](auto* r) { r->set_model("a/b"); })},
      {"payload size mismatch", grpc::StatusCode::INVALID_ARGUMENT, predict([](auto* r) { r->set_features("abc"); })},
      {"zero rows", grpc::StatusCode::INVALID_ARGUMENT, predict([](auto* r) { r->set_rows(0); })},
      {"unknown job", grpc::StatusCode::NOT_FOUND,
       [this]() {
         grpc::ClientContext c;
         v1::GetJobRequest r;
         r.set_job_id("0123456789abcdef");
         v1::Job j;
         return jobs_->GetJob(&c, r, &j);
       }},
      {"delete builtin dataset", grpc::StatusCode::INVALID_ARGUMENT,
       [this]() {
         grpc::ClientContext c;
         v1::DeleteDatasetRequest r;
         r.set_dataset("fashion-mnist:train");
         v1::DeleteDatasetResponse p;
         return datasets_->DeleteDataset(&c, r, &p);
       }},
      {"upload without header", grpc::StatusCode::INVALID_ARGUMENT,
       [this]() {
         grpc::ClientContext c;
         v1::Dataset d;
         auto w = datasets_->UploadDataset(&c, &d);
         v1::UploadDatasetRequest m;
         m.mutable_chunk()->set_features("abcd");
         w->Write(m);
         w->WritesDone();
         return w->Finish();
       }},
  };
  options_.memory_budget_gb = 1;  // applies on restart below
  RestartServer(absl::Seconds(1));
  for (const Case& c : cases) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.expected) << c.what << ": " << s.error_message();
    EXPECT_FALSE(s.error_message().empty()) << c.what;
  }
  // Still serving.
  grpc::ClientContext c;
  v1::ListDatasetsResponse list;
  EXPECT_TRUE(datasets_->ListDatasets(&c, v1::ListDatasetsRequest(), &list).ok());
}

TEST_F(ServerTest, UploadRejectsCorruptPayloadsAndDeduplicates) {
  core::Dataset data = e2e::Synthetic(40, 5, 2, 4);
  v1::Dataset first, second;
  ASSERT_TRUE(Upload(data, "twice", 64, &first).ok());
  ASSERT_TRUE(Upload(data, "twice", 17, &second).ok());
  EXPECT_EQ(first.id(), second.id());

  core::Dataset nan = data;
  nan.features(3, 2) = std::nanf("");
  v1::Dataset out;
  grpc::Status s = Upload(nan, "nan", 64, &out, /*with_hash=*/false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("row 3 column 2"), std::string::npos) << s.error_message();

  // A header hash that does not match the payload: DATA_LOSS, and nothing becomes visible.
  grpc::ClientContext context;
  auto writer = datasets_->UploadDataset(&context, &out);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_name("lying");
  header.mutable_header()->set_rows(1);
  header.mutable_header()->set_cols(1);
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  writer->Write(header);
  v1::UploadDatasetRequest chunk;
  chunk.mutable_chunk()->set_features(std::string(4, '\0'));
  chunk.mutable_chunk()->set_labels(std::string(4, '\0'));
  writer->Write(chunk);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
  grpc::ClientContext get_context;
  v1::GetDatasetRequest get;
  get.set_dataset("lying");
  EXPECT_EQ(datasets_->GetDataset(&get_context, get, &out).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, EightConcurrentClientsSubmitWatchAndPredict) {
  const core::Dataset data = e2e::Synthetic(120, 6, 3, 5);
  v1::Dataset stored;
  ASSERT_TRUE(Upload(data, "shared", 4096, &stored).ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c]() {
      auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials());
      auto jobs = v1::JobService::NewStub(channel);
      auto models = v1::ModelService::NewStub(channel);
      v1::SubmitFitRequest request = SmallFit("shared");
      request.mutable_config()->set_layers(1);
      request.mutable_config()->set_seed(c);
      request.set_model_name("client-" + std::to_string(c));
      grpc::ClientContext submit;
      v1::Job job;
      if (!jobs->SubmitFit(&submit, request, &job).ok()) return void(++failures);
      grpc::ClientContext watch_context;
      v1::WatchJobRequest watch;
      watch.set_job_id(job.id());
      auto reader = jobs->WatchJob(&watch_context, watch);
      v1::JobEvent event, last;
      int64_t expected = 1;
      while (reader->Read(&event)) {
        if (event.sequence() != expected++) ++failures;
        last = event;
      }
      if (!reader->Finish().ok() || last.state_change().state() != v1::Job::SUCCEEDED) return void(++failures);
      for (int i = 0; i < 5; ++i) {
        v1::PredictRequest predict;
        predict.set_model("client-" + std::to_string(c));
        predict.set_rows(10);
        predict.set_cols(6);
        predict.set_features(std::string(reinterpret_cast<const char*>(data.features.data()), 10 * 6 * 4));
        grpc::ClientContext pc;
        v1::PredictResponse response;
        if (!models->Predict(&pc, predict, &response).ok() || response.labels_size() != 10) ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ServerTest, RestartKeepsJobsEventsAndModels) {
  v1::SubmitFitRequest request = SmallFit("synthetic:rows=150,cols=6,classes=3,seed=9");
  request.set_model_name("kept");
  grpc::ClientContext context;
  v1::Job job;
  ASSERT_TRUE(jobs_->SubmitFit(&context, request, &job).ok());
  const std::vector<v1::JobEvent> before = Watch(job.id());
  RestartServer(absl::Seconds(1));
  const std::vector<v1::JobEvent> after = Watch(job.id());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].SerializeAsString(), before[i].SerializeAsString());
  v1::PredictRequest predict;
  predict.set_model("kept");
  predict.set_rows(1);
  predict.set_cols(6);
  predict.set_features(std::string(24, '\0'));
  grpc::ClientContext pc;
  v1::PredictResponse response;
  EXPECT_TRUE(models_->Predict(&pc, predict, &response).ok());
}

TEST_F(ServerTest, HealthTurnsNotServingWhileDrainingAndSubmissionsAreRefused) {
  client::Client health(channel_, client::ConnectionOptions{});
  ASSERT_EQ(*health.CheckHealth("drfm.v1.JobService", false), client::ServingStatus::kServing);
  // A fit long enough to be running while the server drains.
  v1::SubmitFitRequest request = SmallFit("fashion-mnist:train");
  request.mutable_train()->set_limit(2500);
  request.mutable_test()->set_dataset("fashion-mnist:test");
  request.mutable_config()->set_layers(3);
  grpc::ClientContext context;
  v1::Job job;
  ASSERT_TRUE(jobs_->SubmitFit(&context, request, &job).ok());
  for (auto deadline = absl::Now() + absl::Seconds(60); absl::Now() < deadline;) {
    grpc::ClientContext c;
    v1::GetJobRequest get;
    get.set_job_id(job.id());
    v1::Job now;
    ASSERT_TRUE(jobs_->GetJob(&c, get, &now).ok());
    if (now.state() == v1::Job::RUNNING) break;
    absl::SleepFor(absl::Milliseconds(20));  // polling with a deadline, not a fixed wait
  }
  std::thread drain([this]() { server_->Shutdown(absl::Seconds(60)); });
  bool saw_not_serving = false, saw_refusal = false;
  for (auto deadline = absl::Now() + absl::Seconds(30); absl::Now() < deadline && !(saw_not_serving && saw_refusal);) {
    absl::StatusOr<client::ServingStatus> status = health.CheckHealth("", false);
    saw_not_serving |= status.ok() && *status == client::ServingStatus::kNotServing;
    grpc::ClientContext c;
    v1::Job refused;
    grpc::Status s = jobs_->SubmitFit(&c, SmallFit("synthetic:rows=100,cols=4,classes=2"), &refused);
    saw_refusal |= s.error_code() == grpc::StatusCode::UNAVAILABLE;
    absl::SleepFor(absl::Milliseconds(10));
  }
  drain.join();
  EXPECT_TRUE(saw_not_serving) << "health never reported NOT_SERVING while draining";
  EXPECT_TRUE(saw_refusal) << "submissions were not refused with UNAVAILABLE while draining";
  server_.reset();
  // The drained fit finished, or was re-queued and runs after a restart: it is not lost.
  StartServer();
  const std::vector<v1::JobEvent> events = Watch(job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state_change().state(), v1::Job::SUCCEEDED);
}

TEST_F(ServerTest, OversizedMessagesAndTooManyRowsAreRefused) {
  options_.max_message_bytes = 1 << 20;
  options_.max_predict_rows = 100;
  RestartServer(absl::Seconds(1));
  // A 2 MiB request against a 1 MiB limit: gRPC refuses it before any handler runs.
  v1::PredictRequest big;
  big.set_model("any");
  big.set_rows(1);
  big.set_cols(1);
  big.set_features(std::string(2 << 20, '\0'));
  grpc::ClientContext c1;
  v1::PredictResponse response;
  EXPECT_EQ(models_->Predict(&c1, big, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // More rows than --max-predict-rows: INVALID_ARGUMENT naming the limit.
  v1::PredictRequest rows;
  rows.set_model("any");
  rows.set_rows(101);
  rows.set_cols(1);
  rows.set_features(std::string(101 * 4, '\0'));
  grpc::ClientContext c2;
  grpc::Status s = models_->Predict(&c2, rows, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("100"), std::string::npos) << s.error_message();
  // The server is still up.
  grpc::ClientContext c3;
  v1::ListDatasetsResponse list;
  EXPECT_TRUE(datasets_->ListDatasets(&c3, v1::ListDatasetsRequest(), &list).ok());
}

}  // namespace
}  // namespace drfm::server
