// Tests of the client library (client/client.h) against the in-process fake server: status
// conversion, the bearer token, WatchJob's re-attach from the last sequence, the upload stream,
// PredictStream, the verified export, and the generic health check against gRPC's own service.
#include "client/client.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/dataset.h"
#include "gtest/gtest.h"
#include "tests/client/fake_server.h"

namespace drfm::client {
namespace {

using testing::FakeServer;
using testing::MakeScriptedJob;

std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(::testing::TempDir(), "drfm_client_test_", info->name(), "_", name);
}

WatchOptions FastWatch() {
  WatchOptions options;
  options.initial_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(4);
  return options;
}

TEST(ClientTest, ServerErrorsKeepTheirCodeAndMessage) {
  FakeServer server;
  auto client = server.NewClient();
  absl::StatusOr<v1::Job> job = client->GetJob("nope");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(job.status().message(), "no job with id \"nope\"");
  absl::Status deleted = client->DeleteJob("job1");
  EXPECT_EQ(deleted.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(deleted.message(), "cancel it first"));
}

TEST(ClientTest, FromGrpcStatusMapsEveryCanonicalCode) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status status =
        FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "why"));
    EXPECT_EQ(static_cast<int>(status.code()), code);
    if (code != 0) {
      EXPECT_EQ(status.message(), "why");
    }
  }
}

TEST(ClientTest, SendsTheBearerTokenWithEveryCall) {
  FakeServer server;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(1, v1::Job::SUCCEEDED, &job, &events);
  server.jobs.SetJob(job, events);
  ConnectionOptions options;
  options.token = "s3cret";
  auto client = server.NewClient(options);
  ASSERT_TRUE(client->GetJob("job1").ok());
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset("x");
  ASSERT_TRUE(client->SubmitFit(request).ok());
  EXPECT_EQ(server.jobs.authorizations(),
            (std::vector<std::string>{"Bearer s3cret", "Bearer s3cret"}));
}

TEST(ClientTest, ReadTokenFileTrimsAndRejectsEmptyOrSplitTokens) {
  const std::string path = TempPath("token");
  std::ofstream(path) << "  abc123\n";
  EXPECT_EQ(ReadTokenFile(path).value_or(""), "abc123");
  std::ofstream(path) << "\n\n";
  EXPECT_EQ(ReadTokenFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  std::ofstream(path) << "two tokens\n";
  EXPECT_EQ(ReadTokenFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenFile(TempPath("absent")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientTest, ConnectionOptionsNeedCertificateAndKeyTogether) {
  ConnectionOptions options;
  EXPECT_TRUE(options.Validate().ok());
  EXPECT_FALSE(options.UsesTls());
  options.tls_cert_file = "client.pem";
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options.tls_key_file = "client.key";
  EXPECT_TRUE(options.Validate().ok());
  EXPECT_TRUE(options.UsesTls());
  options.timeout = absl::ZeroDuration();
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClientTest, CreateChannelNamesAMissingCaFile) {
  ConnectionOptions options;
  options.tls_ca_file = TempPath("no-such-ca.pem");
  auto channel = CreateChannel(options);
  ASSERT_FALSE(channel.ok());
  EXPECT_TRUE(absl::StrContains(channel.status().message(), "--tls-ca"));
}

TEST(ClientTest, WatchDeliversEveryEventInOrderUntilTheTerminalState) {
  FakeServer server;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(2, v1::Job::SUCCEEDED, &job, &events);
  server.jobs.SetJob(job, events);
  auto client = server.NewClient();
  std::vector<int64_t> seen;
  auto result = client->WatchJob("job1", FastWatch(),
                                 [&](const v1::JobEvent& e) { seen.push_back(e.sequence()); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->final_state, v1::Job::SUCCEEDED);
  EXPECT_EQ(result->last_sequence, static_cast<int64_t>(events.size()));
  EXPECT_EQ(result->reconnects, 0);
  ASSERT_EQ(seen.size(), events.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], static_cast<int64_t>(i + 1));
}

TEST(ClientTest, WatchReattachesFromTheLastSequenceAfterADroppedConnection) {
  FakeServer server;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(2, v1::Job::SUCCEEDED, &job, &events);
  server.jobs.SetJob(job, events);
  server.jobs.DropStreams(/*streams=*/3, /*after_events=*/4);
  auto client = server.NewClient();
  std::vector<int64_t> seen;
  std::vector<int> attempts;
  WatchOptions options = FastWatch();
  options.on_reconnect = [&](int attempt, const absl::Status& cause, absl::Duration) {
    attempts.push_back(attempt);
    EXPECT_EQ(cause.code(), absl::StatusCode::kUnavailable);
  };
  auto result = client->WatchJob("job1", options,
                                 [&](const v1::JobEvent& e) { seen.push_back(e.sequence()); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->reconnects, 3);
  // Each attempt delivered events, so the count of failures in a row restarts every time.
  EXPECT_EQ(attempts, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(server.jobs.watch_after_sequences(), (std::vector<int64_t>{0, 4, 8, 12}));
  ASSERT_EQ(seen.size(), events.size());  // nothing missed, nothing twice
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], static_cast<int64_t>(i + 1));
}

TEST(ClientTest, WatchGivesUpAfterBoundedAttemptsWithoutEvents) {
  FakeServer server;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(1, v1::Job::SUCCEEDED, &job, &events);
  server.jobs.SetJob(job, events);
  server.jobs.DropStreams(/*streams=*/100, /*after_events=*/0);
  auto client = server.NewClient();
  WatchOptions options = FastWatch();
  options.max_reconnects = 3;
  auto result = client->WatchJob("job1", options, [](const v1::JobEvent&) {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "after 3 attempts"));
  EXPECT_EQ(server.jobs.watch_after_sequences().size(), 4u);
}

TEST(ClientTest, WatchOfAnUnknownJobFailsAtOnce) {
  FakeServer server;
  auto client = server.NewClient();
  auto result = client->WatchJob("nope", FastWatch(), [](const v1::JobEvent&) {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(server.jobs.watch_after_sequences().size(), 1u);
}

TEST(ClientTest, CancellerStopsAWatchWaitingToReattach) {
  FakeServer server;
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(1, v1::Job::SUCCEEDED, &job, &events);
  server.jobs.SetJob(job, events);
  server.jobs.DropStreams(/*streams=*/100, /*after_events=*/0);
  auto client = server.NewClient();
  Canceller canceller;
  WatchOptions options;
  options.canceller = &canceller;
  options.initial_backoff = absl::Hours(1);  // only Cancel can end the wait
  options.on_reconnect = [&](int, const absl::Status&, absl::Duration) { canceller.Cancel(); };
  auto result = client->WatchJob("job1", options, [](const v1::JobEvent&) {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(canceller.cancelled());
}

TEST(ClientTest, UploadSendsHeaderThenChunksThatTheServerVerifies) {
  FakeServer server;
  auto client = server.NewClient();
  core::Dataset data;
  data.features = core::RowMatrixF::Random(300, 7);
  for (int i = 0; i < 300; ++i) data.labels.push_back(i % 4);
  data.num_classes = 4;
  DatasetUpload upload("blobs", data, /*chunk_bytes=*/1000);
  std::vector<int64_t> progress;
  auto stored = client->UploadDataset(upload, [&](int64_t sent, int64_t total) {
    EXPECT_EQ(total, 4 * 300 * 8);
    progress.push_back(sent);
  });
  ASSERT_TRUE(stored.ok()) << stored.status();
  const auto received = server.datasets.last_upload();
  EXPECT_EQ(received.header.name(), "blobs");
  EXPECT_EQ(received.header.rows(), 300);
  EXPECT_EQ(received.header.cols(), 7);
  EXPECT_EQ(received.header.num_classes(), 4);
  EXPECT_EQ(received.features, EncodeFeatureRows(data.features, 0, 300));
  EXPECT_EQ(received.labels, EncodeLabels(data.labels));
  EXPECT_EQ(received.chunks, (4 * 300 * 8 + 999) / 1000);
  EXPECT_LE(received.largest_chunk, 1000u);
  EXPECT_EQ(stored->sha256(), received.header.sha256());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), 4 * 300 * 8);
}

TEST(ClientTest, PredictStreamAnswersEveryBatchInOrder) {
  FakeServer server(/*model_input_dim=*/3);
  auto client = server.NewClient();
  core::RowMatrixF x(50, 3);
  for (int r = 0; r < 50; ++r) x.row(r) << static_cast<float>(r % 3), 0.5f, 1.0f;
  PredictTarget target;
  target.model = "m";
  int64_t next = 0;
  std::vector<int32_t> labels;
  absl::Status status = client->PredictStream(
      [&](v1::PredictRequest* request) {
        if (next >= 50) return false;
        const int64_t count = std::min<int64_t>(7, 50 - next);
        *request = MakePredictRequest(target, x, next, count);
        next += count;
        return true;
      },
      [&](const v1::PredictResponse& response) {
        labels.insert(labels.end(), response.labels().begin(), response.labels().end());
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(server.models.stream_requests(), 8);
  ASSERT_EQ(labels.size(), 50u);
  for (int r = 0; r < 50; ++r) EXPECT_EQ(labels[r], r % 3);
}

TEST(ClientTest, PredictStreamReturnsTheServersErrorAndTheCallbacksError) {
  FakeServer server(/*model_input_dim=*/3);
  auto client = server.NewClient();
  core::RowMatrixF wrong = core::RowMatrixF::Zero(4, 2);
  PredictTarget target;
  target.model = "m";
  bool sent = false;
  absl::Status status = client->PredictStream(
      [&](v1::PredictRequest* request) {
        if (sent) return false;
        *request = MakePredictRequest(target, wrong, 0, 4);
        sent = true;
        return true;
      },
      [](const v1::PredictResponse&) { return absl::OkStatus(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  core::RowMatrixF x = core::RowMatrixF::Zero(40, 3);
  int64_t next = 0;
  status = client->PredictStream(
      [&](v1::PredictRequest* request) {
        if (next >= 40) return false;
        *request = MakePredictRequest(target, x, next, 4);
        next += 4;
        return true;
      },
      [](const v1::PredictResponse&) { return absl::DataLossError("stop here"); });
  EXPECT_EQ(status, absl::DataLossError("stop here"));
}

TEST(ClientTest, ExportVerifiesOffsetsSizeAndChecksum) {
  FakeServer server;
  auto client = server.NewClient();
  std::string file;
  auto model = client->ExportModel("m", std::nullopt,
                                   [&](std::string_view data, int64_t offset, int64_t total) {
                                     EXPECT_EQ(offset, static_cast<int64_t>(file.size()));
                                     EXPECT_EQ(total, 5000);
                                     file.append(data.data(), data.size());
                                     return absl::OkStatus();
                                   });
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name(), "m");
  EXPECT_EQ(file, testing::FakeModelService::ExportBytes());
}

TEST(ClientTest, HealthCheckSpeaksTheStandardHealthProtocol) {
  FakeServer server;
  auto client = server.NewClient();
  EXPECT_EQ(client->CheckHealth("", false).value_or(ServingStatus::kUnknown),
            ServingStatus::kServing);
  EXPECT_EQ(client->CheckHealth("drfm.v1.JobService", false).value_or(ServingStatus::kUnknown),
            ServingStatus::kServing);
  EXPECT_EQ(client->CheckHealth("drfm.v1.Unready", false).value_or(ServingStatus::kUnknown),
            ServingStatus::kNotServing);
  EXPECT_EQ(client->CheckHealth("no.such.Service", false).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ServingStatusName(ServingStatus::kNotServing), "NOT_SERVING");
}

TEST(ClientTest, UnreachableServerIsUnavailable) {
  ConnectionOptions options;
  options.server = "127.0.0.1:1";  // nothing listens on port 1
  options.timeout = absl::Seconds(20);
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->GetJob("x").status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace drfm::client
