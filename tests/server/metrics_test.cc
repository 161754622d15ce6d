// Tests of server/metrics: the metric names and labels of API.md, the gRPC interceptor on a real
// loopback server, and the /metrics endpoint scraped over real HTTP and checked by promtool.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "drfm/v1/datasets.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/stub_options.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/auth.h"

namespace drfm::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using RpcType = grpc::experimental::ServerRpcInfo::Type;

constexpr auto kRpcDeadline = std::chrono::seconds(20);

// One sample line of the text exposition format: name{labels} value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text format written by prometheus-cpp (no escaped quotes in our label values).
std::vector<Sample> ParseSamples(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample sample;
    size_t pos = line.find_first_of("{ ");
    sample.name = line.substr(0, pos);
    if (line[pos] == '{') {
      const size_t close = line.find('}', pos);
      std::string body = line.substr(pos + 1, close - pos - 1);
      size_t at = 0;
      while (at < body.size()) {
        const size_t eq = body.find('=', at);
        const size_t end_quote = body.find('"', eq + 2);
        sample.labels[body.substr(at, eq - at)] = body.substr(eq + 2, end_quote - eq - 2);
        at = end_quote + 2;  // Skip `",`.
      }
      pos = close + 1;
    }
    sample.value = std::stod(line.substr(pos + 1));
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The value of the one sample named `name` whose labels include `labels`; nullopt when there is
// none (and a test failure when there are several).
std::optional<double> Value(const std::vector<Sample>& samples, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  std::optional<double> found;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (!match) continue;
    EXPECT_FALSE(found.has_value()) << "several samples of " << name << " match";
    found = s.value;
  }
  return found;
}

std::string Scrape(const ServerMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

struct HttpResponse {
  int status = 0;
  std::string body;
};

// A minimal HTTP/1.0 GET on 127.0.0.1:port (the server closes the connection after the body).
HttpResponse HttpGet(int port, const std::string& path) {
  HttpResponse response;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket failed";
    return response;
  }
  timeval timeout{10, 0};  // Bounds a hung server; a healthy one answers in milliseconds.
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect to 127.0.0.1:" << port << " failed";
    ::close(fd);
    return response;
  }
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, 0);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    raw.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t header_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || header_end == std::string::npos) {
    ADD_FAILURE() << "not an HTTP response: " << raw.substr(0, 200);
    return response;
  }
  response.status = std::stoi(raw.substr(raw.find(' ') + 1, 3));
  response.body = raw.substr(header_end + 4);
  return response;
}

// DatasetService stand-in: ListDatasets answers an empty list; UploadDataset reads the whole
// stream and fails with INVALID_ARGUMENT when it was empty.
class StubDatasetService final : public v1::DatasetService::Service {
 public:
  grpc::Status ListDatasets(grpc::ServerContext*, const v1::ListDatasetsRequest*,
                            v1::ListDatasetsResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status UploadDataset(grpc::ServerContext*,
                             grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                             v1::Dataset*) override {
    v1::UploadDatasetRequest request;
    int messages = 0;
    while (reader->Read(&request)) ++messages;
    if (messages == 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header");
    return grpc::Status::OK;
  }
};

// A real server on 127.0.0.1:<free port> with the metrics interceptor, the standard health
// service and StubDatasetService.
class MetricsServer {
 public:
  explicit MetricsServer(
      ServerMetrics* metrics,
      std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials()) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port_);
    builder.RegisterService(&service_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(metrics->NewInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(creators));
    server_ = builder.BuildAndStart();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
  }
  ~MetricsServer() { server_->Shutdown(std::chrono::system_clock::now() + kRpcDeadline); }

  bool started() const { return server_ != nullptr && port_ > 0; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  StubDatasetService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// A unary call through the generic stub; `request` is the serialized request message.
grpc::Status GenericUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& request, std::string* response = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request_buffer, &response_buffer,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (status.ok() && response != nullptr) {
    std::vector<grpc::Slice> slices;
    (void)response_buffer.Dump(&slices);
    response->clear();
    for (const grpc::Slice& s : slices)
      response->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

// grpc.health.v1.Health/Check for `service` (HealthCheckRequest{service = 1}, encoded by hand:
// the health protos are not installed as C++ stubs).
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  return GenericUnary(channel, "/grpc.health.v1.Health/Check", request);
}

grpc::Status UploadMessages(const std::shared_ptr<grpc::Channel>& channel, int messages) {
  auto stub = v1::DatasetService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  v1::Dataset response;
  auto writer = stub->UploadDataset(&context, &response);
  v1::UploadDatasetRequest request;
  for (int i = 0; i < messages; ++i) writer->Write(request);
  writer->WritesDone();
  return writer->Finish();
}

TEST(ServerMetricsTest, ExportsEveryApiMetricBeforeAnythingHappens) {
  ServerMetrics metrics("1.2.3");
  const std::vector<Sample> samples = ParseSamples(Scrape(metrics));
  EXPECT_EQ(Value(samples, "drfm_build_info", {{"version", "1.2.3"}}), 1.0);
  EXPECT_EQ(Value(samples, "drfm_jobs_submitted_total"), 0.0);
  for (const char* state : {"succeeded", "failed", "cancelled"}) {
    EXPECT_EQ(Value(samples, "drfm_jobs_finished_total", {{"state", state}}), 0.0) << state;
  }
  for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) {
    EXPECT_EQ(Value(samples, "drfm_jobs", {{"state", state}}), 0.0) << state;
  }
  EXPECT_EQ(Value(samples, "drfm_job_queue_depth"), 0.0);
  EXPECT_EQ(Value(samples, "drfm_job_duration_seconds_count"), 0.0);
  for (std::string_view phase : kPhaseNames) {
    EXPECT_EQ(Value(samples, "drfm_layer_phase_seconds_count", {{"phase", std::string(phase)}}),
              0.0)
        << phase;
  }
  EXPECT_EQ(Value(samples, "drfm_predict_requests_total", {{"code", "OK"}}), 0.0);
  EXPECT_EQ(Value(samples, "drfm_predict_latency_seconds_count"), 0.0);
  EXPECT_EQ(Value(samples, "drfm_predict_rows_total"), 0.0);
  EXPECT_EQ(Value(samples, "drfm_models_stored"), 0.0);
  EXPECT_EQ(Value(samples, "drfm_store_bytes"), 0.0);
  // No job id, dataset or model name can appear: every label name is from a fixed set.
  const std::set<std::string> allowed_labels = {"version",     "state",     "phase",
                                                "code",        "le",        "grpc_service",
                                                "grpc_method", "grpc_type", "grpc_code"};
  for (const Sample& s : samples) {
    for (const auto& [label, value] : s.labels) {
      EXPECT_TRUE(allowed_labels.count(label)) << s.name << " has label " << label;
    }
  }
}

TEST(ServerMetricsTest, RecordsJobsPhasesPredictionsAndStore) {
  ServerMetrics metrics("test");
  metrics.OnJobSubmitted();
  metrics.OnJobSubmitted();
  metrics.OnJobSubmitted();
  metrics.OnJobFinished(v1::Job::SUCCEEDED, 12.5);
  metrics.OnJobFinished("FAILED", 0.5);
  metrics.OnJobFinished("cancelled", 2);
  metrics.SetJobsByState(
      std::map<v1::Job::State, int64_t>{{v1::Job::QUEUED, 4}, {v1::Job::RUNNING, 2}});
  metrics.SetQueueDepth(4);
  metrics.ObservePhase("kernel", 0.2);
  metrics.ObservePhase("KERNEL", 0.3);  // Proto enum spelling.
  metrics.ObservePhase("train", 40);
  metrics.ObservePhase("warp-drive", 1);
  metrics.ObservePredict(absl::StatusCode::kOk, 0.004, 100);
  metrics.ObservePredict(absl::StatusCode::kOk, 0.02, 28);
  metrics.ObservePredict(absl::StatusCode::kInvalidArgument, 0.0001, 5);
  metrics.SetStoreStats(3, 1 << 20);
  metrics.OnAuthRejected(grpc::StatusCode::PERMISSION_DENIED);

  const std::vector<Sample> s = ParseSamples(Scrape(metrics));
  EXPECT_EQ(Value(s, "drfm_jobs_submitted_total"), 3.0);
  EXPECT_EQ(Value(s, "drfm_jobs_finished_total", {{"state", "succeeded"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_jobs_finished_total", {{"state", "failed"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_jobs_finished_total", {{"state", "cancelled"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_job_duration_seconds_count"), 3.0);
  EXPECT_DOUBLE_EQ(*Value(s, "drfm_job_duration_seconds_sum"), 15.0);
  EXPECT_EQ(Value(s, "drfm_job_duration_seconds_bucket", {{"le", "1"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_job_duration_seconds_bucket", {{"le", "30"}}), 3.0);
  EXPECT_EQ(Value(s, "drfm_job_duration_seconds_bucket", {{"le", "+Inf"}}), 3.0);
  EXPECT_EQ(Value(s, "drfm_jobs", {{"state", "queued"}}), 4.0);
  EXPECT_EQ(Value(s, "drfm_jobs", {{"state", "running"}}), 2.0);
  EXPECT_EQ(Value(s, "drfm_jobs", {{"state", "succeeded"}}), 0.0);
  EXPECT_EQ(Value(s, "drfm_job_queue_depth"), 4.0);
  EXPECT_EQ(Value(s, "drfm_layer_phase_seconds_count", {{"phase", "kernel"}}), 2.0);
  EXPECT_DOUBLE_EQ(*Value(s, "drfm_layer_phase_seconds_sum", {{"phase", "kernel"}}), 0.5);
  EXPECT_EQ(Value(s, "drfm_layer_phase_seconds_count", {{"phase", "train"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_layer_phase_seconds_count", {{"phase", "other"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_predict_requests_total", {{"code", "OK"}}), 2.0);
  EXPECT_EQ(Value(s, "drfm_predict_requests_total", {{"code", "INVALID_ARGUMENT"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_predict_latency_seconds_count"), 3.0);
  EXPECT_EQ(Value(s, "drfm_predict_rows_total"), 128.0);  // Failed requests predict no rows.
  EXPECT_EQ(Value(s, "drfm_models_stored"), 3.0);
  EXPECT_EQ(Value(s, "drfm_store_bytes"), 1048576.0);
  EXPECT_EQ(Value(s, "drfm_auth_rejected_total", {{"grpc_code", "PERMISSION_DENIED"}}), 1.0);

  // A later snapshot of the job states replaces the earlier one, states left out included.
  metrics.SetJobsByState(std::map<std::string, int64_t>{{"SUCCEEDED", 7}});
  const std::vector<Sample> later = ParseSamples(Scrape(metrics));
  EXPECT_EQ(Value(later, "drfm_jobs", {{"state", "queued"}}), 0.0);
  EXPECT_EQ(Value(later, "drfm_jobs", {{"state", "succeeded"}}), 7.0);
}

TEST(ServerMetricsTest, BoundsTheNumberOfRpcMethodSeries) {
  ServerMetrics metrics("test");
  for (size_t i = 0; i < ServerMetrics::kMaxRpcMethods + 50; ++i) {
    metrics.ObserveRpc("/probe.Service/Method" + std::to_string(i), RpcType::UNARY,
                       grpc::StatusCode::UNIMPLEMENTED, 0.001);
  }
  metrics.ObserveRpc("not-a-method-path", RpcType::UNARY, grpc::StatusCode::UNIMPLEMENTED, 0.001);
  const std::vector<Sample> s = ParseSamples(Scrape(metrics));
  std::set<std::string> methods;
  for (const Sample& sample : s) {
    if (sample.name == "grpc_server_handled_total") methods.insert(sample.labels.at("grpc_method"));
  }
  EXPECT_EQ(methods.size(), ServerMetrics::kMaxRpcMethods + 1);  // + "unknown".
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "unknown"}, {"grpc_method", "unknown"}}),
            51.0);
}

TEST(ServerMetricsTest, InterceptorCountsUnaryAndStreamingRpcsByMethodAndCode) {
  ServerMetrics metrics("test");
  MetricsServer server(&metrics);
  ASSERT_TRUE(server.started());

  EXPECT_EQ(HealthCheck(server.channel(), "").error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(HealthCheck(server.channel(), "").error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(HealthCheck(server.channel(), "no.such.Service").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(UploadMessages(server.channel(), 3).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(UploadMessages(server.channel(), 0).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    auto stub = v1::DatasetService::NewStub(server.channel());
    grpc::ClientContext context;
    v1::ListDatasetsResponse response;
    EXPECT_TRUE(stub->ListDatasets(&context, v1::ListDatasetsRequest(), &response).ok());
  }
  EXPECT_EQ(GenericUnary(server.channel(), "/drfm.v1.NoSuchService/Nothing", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  // Each call was recorded before its status left the server, so no waiting is needed here.
  const std::vector<Sample> s = ParseSamples(Scrape(metrics));
  const std::map<std::string, std::string> check = {
      {"grpc_service", "grpc.health.v1.Health"}, {"grpc_method", "Check"}, {"grpc_type", "unary"}};
  auto with = [](std::map<std::string, std::string> labels, const char* key, const char* value) {
    labels[key] = value;
    return labels;
  };
  EXPECT_EQ(Value(s, "grpc_server_started_total", check), 3.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total", with(check, "grpc_code", "OK")), 2.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total", with(check, "grpc_code", "NOT_FOUND")), 1.0);
  EXPECT_EQ(Value(s, "grpc_server_handling_seconds_count", check), 3.0);
  EXPECT_EQ(Value(s, "grpc_server_handling_seconds_bucket", with(check, "le", "+Inf")), 3.0);
  EXPECT_EQ(Value(s, "grpc_server_msg_received_total", check), 3.0);
  EXPECT_EQ(Value(s, "grpc_server_msg_sent_total", check), 2.0);  // NOT_FOUND sends no message.

  const std::map<std::string, std::string> upload = {{"grpc_service", "drfm.v1.DatasetService"},
                                                     {"grpc_method", "UploadDataset"},
                                                     {"grpc_type", "client_stream"}};
  EXPECT_EQ(Value(s, "grpc_server_handled_total", with(upload, "grpc_code", "OK")), 1.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total", with(upload, "grpc_code", "INVALID_ARGUMENT")),
            1.0);
  EXPECT_EQ(Value(s, "grpc_server_msg_received_total", upload), 3.0);
  EXPECT_EQ(Value(s, "grpc_server_handling_seconds_count", upload), 2.0);

  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "drfm.v1.DatasetService"},
                   {"grpc_method", "ListDatasets"},
                   {"grpc_code", "OK"}}),
            1.0);
  // gRPC answers an unregistered method itself, and runs the interceptor for it too.
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "drfm.v1.NoSuchService"}, {"grpc_code", "UNIMPLEMENTED"}}),
            1.0);
}

TEST(ServerMetricsTest, InitializeRpcMethodsCreatesZeroSeriesOutsideTheCap) {
  ServerMetrics metrics("test");
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::DatasetService::service_full_name());
  ASSERT_NE(service, nullptr);
  metrics.InitializeRpcMethods(*service);
  for (size_t i = 0; i < ServerMetrics::kMaxRpcMethods + 1; ++i) {
    metrics.ObserveRpc("/probe.Service/Method" + std::to_string(i), RpcType::UNARY,
                       grpc::StatusCode::UNIMPLEMENTED, 0.001);
  }
  metrics.ObserveRpc("/drfm.v1.DatasetService/UploadDataset", RpcType::CLIENT_STREAMING,
                     grpc::StatusCode::OK, 0.5);
  const std::vector<Sample> s = ParseSamples(Scrape(metrics));
  const std::map<std::string, std::string> upload = {{"grpc_service", "drfm.v1.DatasetService"},
                                                     {"grpc_method", "UploadDataset"},
                                                     {"grpc_type", "client_stream"},
                                                     {"grpc_code", "OK"}};
  EXPECT_EQ(Value(s, "grpc_server_handled_total", upload), 1.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "drfm.v1.DatasetService"},
                   {"grpc_method", "ListDatasets"},
                   {"grpc_type", "unary"},
                   {"grpc_code", "OK"}}),
            0.0);
  EXPECT_EQ(Value(s, "grpc_server_started_total",
                  {{"grpc_service", "drfm.v1.DatasetService"}, {"grpc_method", "GetDataset"}}),
            0.0);
  EXPECT_EQ(Value(s, "grpc_server_handling_seconds_count",
                  {{"grpc_service", "drfm.v1.DatasetService"}, {"grpc_method", "DeleteDataset"}}),
            0.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "unknown"}, {"grpc_code", "UNIMPLEMENTED"}}),
            1.0);
}

TEST(ServerMetricsTest, CountsCallsRejectedByTokenAuthSeparately) {
  ServerMetrics metrics("test");
  const std::string token = "metrics-test-token-0123456789abcdef";
  const std::filesystem::path token_file =
      std::filesystem::path(testing::TempDir()) / ("tokens_" + std::to_string(::getpid()));
  std::ofstream(token_file) << token << " tester\n";
  ServerSecurityOptions options;
  options.token_file = token_file.string();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(
      options, [&metrics](grpc::StatusCode code) { metrics.OnAuthRejected(code); });
  std::filesystem::remove(token_file);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  MetricsServer server(&metrics, *credentials);
  ASSERT_TRUE(server.started());

  auto list = [](const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::DatasetService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
    v1::ListDatasetsResponse response;
    return stub->ListDatasets(&context, v1::ListDatasetsRequest(), &response).error_code();
  };
  EXPECT_EQ(list(server.channel()), grpc::StatusCode::UNAUTHENTICATED);
  ClientSecurityOptions wrong;
  wrong.token = "not-the-token-0123456789abcdef";
  EXPECT_EQ(list(*CreateClientChannel(server.target(), wrong)),
            grpc::StatusCode::PERMISSION_DENIED);
  ClientSecurityOptions right;
  right.token = token;
  EXPECT_EQ(list(*CreateClientChannel(server.target(), right)), grpc::StatusCode::OK);
  EXPECT_TRUE(HealthCheck(server.channel(), "").ok());

  const std::vector<Sample> s = ParseSamples(Scrape(metrics));
  EXPECT_EQ(Value(s, "drfm_auth_rejected_total", {{"grpc_code", "UNAUTHENTICATED"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_auth_rejected_total", {{"grpc_code", "PERMISSION_DENIED"}}), 1.0);
  // Rejected calls never reached gRPC's C++ layer, so only the accepted one was handled.
  EXPECT_EQ(Value(s, "grpc_server_started_total", {{"grpc_method", "ListDatasets"}}), 1.0);
  EXPECT_EQ(
      Value(s, "grpc_server_handled_total", {{"grpc_method", "ListDatasets"}, {"grpc_code", "OK"}}),
      1.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_method", "ListDatasets"}, {"grpc_code", "UNAUTHENTICATED"}}),
            std::nullopt);
  EXPECT_EQ(Value(s, "grpc_server_handled_total", {{"grpc_method", "Check"}, {"grpc_code", "OK"}}),
            1.0);
}

// promtool's exit status and output for `text`, or nullopt when promtool is not installed.
std::optional<std::pair<int, std::string>> PromtoolCheckMetrics(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) return std::nullopt;
  const std::filesystem::path file = std::filesystem::path(testing::TempDir()) /
                                     ("metrics_" + std::to_string(::getpid()) + ".txt");
  std::ofstream(file) << text;
  const std::string command = "promtool check metrics < '" + file.string() + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buffer[512];
  while (pipe != nullptr && std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pipe == nullptr ? -1 : ::pclose(pipe);
  std::filesystem::remove(file);
  return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, output);
}

TEST(MetricsExporterTest, ServesMetricsOverHttpThatPromtoolAccepts) {
  ServerMetrics metrics("0.1.0");
  MetricsServer server(&metrics);
  ASSERT_TRUE(server.started());
  absl::StatusOr<std::unique_ptr<MetricsExporter>> exporter =
      MetricsExporter::Start("127.0.0.1:0", metrics.collectable());
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  ASSERT_GT((*exporter)->port(), 0);
  // Gauges refreshed from their source at scrape time.
  std::atomic<int> scrapes{0};
  metrics.AddScrapeHook([&metrics, &scrapes] {
    const int n = ++scrapes;
    metrics.SetQueueDepth(n);
    metrics.SetJobsByState(std::map<v1::Job::State, int64_t>{{v1::Job::RUNNING, 2 * n}});
  });

  ASSERT_TRUE(HealthCheck(server.channel(), "").ok());
  ASSERT_EQ(HealthCheck(server.channel(), "no.such.Service").error_code(),
            grpc::StatusCode::NOT_FOUND);
  metrics.OnJobSubmitted();
  metrics.OnJobFinished(v1::Job::SUCCEEDED, 42);
  metrics.ObservePhase("solve", 1.5);
  metrics.ObservePredict(absl::StatusCode::kOk, 0.003, 10);
  metrics.SetStoreStats(1, 2048);

  const HttpResponse response = HttpGet((*exporter)->port(), "/metrics");
  ASSERT_EQ(response.status, 200);
  const std::vector<Sample> s = ParseSamples(response.body);
  EXPECT_EQ(Value(s, "drfm_build_info", {{"version", "0.1.0"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_jobs_submitted_total"), 1.0);
  EXPECT_EQ(Value(s, "drfm_jobs_finished_total", {{"state", "succeeded"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_job_duration_seconds_count"), 1.0);
  EXPECT_EQ(Value(s, "drfm_layer_phase_seconds_count", {{"phase", "solve"}}), 1.0);
  EXPECT_EQ(Value(s, "drfm_predict_rows_total"), 10.0);
  EXPECT_EQ(Value(s, "drfm_store_bytes"), 2048.0);
  EXPECT_EQ(Value(s, "drfm_job_queue_depth"), 1.0);
  EXPECT_EQ(Value(s, "drfm_jobs", {{"state", "running"}}), 2.0);
  EXPECT_EQ(Value(s, "grpc_server_handled_total",
                  {{"grpc_service", "grpc.health.v1.Health"},
                   {"grpc_method", "Check"},
                   {"grpc_code", "NOT_FOUND"}}),
            1.0);
  EXPECT_THAT(response.body, HasSubstr("# TYPE drfm_layer_phase_seconds histogram"));
  EXPECT_THAT(response.body, HasSubstr("# TYPE grpc_server_handling_seconds histogram"));
  EXPECT_THAT(response.body, HasSubstr("# TYPE drfm_jobs gauge"));

  EXPECT_EQ(HttpGet((*exporter)->port(), "/").status, 404);
  const std::vector<Sample> again = ParseSamples(HttpGet((*exporter)->port(), "/metrics").body);
  EXPECT_EQ(Value(again, "drfm_job_queue_depth"), 2.0);
  EXPECT_EQ(Value(again, "drfm_jobs", {{"state", "running"}}), 4.0);

  const auto promtool = PromtoolCheckMetrics(response.body);
  if (!promtool.has_value()) {
    GTEST_SKIP() << "promtool not found (Debian package `prometheus`); the exposition format "
                    "was not linted";
  }
  EXPECT_EQ(promtool->first, 0) << "promtool check metrics:\n" << promtool->second;
}

TEST(MetricsExporterTest, RejectsMalformedAndBusyAddresses) {
  ServerMetrics metrics("test");
  for (const char* bad : {"", "9090", "localhost", "127.0.0.1:http", "127.0.0.1:70000"}) {
    absl::StatusOr<std::unique_ptr<MetricsExporter>> exporter =
        MetricsExporter::Start(bad, metrics.collectable());
    EXPECT_EQ(exporter.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  absl::StatusOr<std::unique_ptr<MetricsExporter>> first =
      MetricsExporter::Start("127.0.0.1:0", metrics.registry());
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<MetricsExporter>> second =
      MetricsExporter::Start("127.0.0.1:" + std::to_string((*first)->port()), metrics.registry());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot serve metrics"));
}

}  // namespace
}  // namespace drfm::server
