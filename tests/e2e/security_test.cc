// Security end to end: a real DrfmServer on 127.0.0.1:0 with a real data dir, reached over
// loopback TCP.
//   - Auth: every RPC of every service the server registers (found through the proto descriptors
//     and cross-checked with the server's own reflection listing) refuses a missing, malformed or
//     wrong bearer token before its handler runs; health stays open; the right token works; a
//     refused mutation leaves no trace.
//   - TLS and mutual TLS through the `drfm` CLI (RunCli with its own connection code and its TLS
//     flags): the right CA / client certificate work; a wrong CA, a wrong server name, plaintext,
//     a missing or foreign client certificate fail with a message saying so.
//   - Names: dataset and model names, dataset references and job ids with "..", '/', '\', NUL
//     bytes, leading dots, control characters or too many characters are INVALID_ARGUMENT on
//     every RPC that takes one, and after all of them nothing exists outside the data dir.
//   - Limits: message size, Predict rows, Deep RFM layers / width / iterations, the memory budget,
//     MLP depth / width, upload shapes, request ids and labels, and the queue bound hold, each
//     with a message naming the limit.
// Certificates come from tests/server/test_pki.h (OpenSSL at test time).
#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/payload.h"
#include "core/io.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/server.h"
#include "tests/server/test_pki.h"

namespace drfm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kToken[] = "security-e2e-token-0123456789abcdef";
constexpr char kWrongToken[] = "security-e2e-wrong-0123456789abcdef";
// Small enough to fit in well under a second on one thread.
constexpr char kTinyData[] = "synthetic:rows=120,cols=8,classes=3,seed=5";
// A fit that runs for many seconds on one thread (cancelled long before it would finish).
constexpr char kSlowData[] = "synthetic:rows=6000,cols=64,classes=4";
constexpr auto kRpcDeadline = std::chrono::seconds(30);

// "CODE: message" of a status, for failure output.
std::string Describe(const grpc::Status& status) {
  return absl::StrCat(status.error_code(), ": ", status.error_message());
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << bytes;
  ASSERT_TRUE(file.good()) << path;
}

// Every path under `root` (relative, sorted), skipping the subtree `skip` (relative; "" = none).
std::set<std::string> ListTree(const std::string& root, const std::string& skip) {
  std::set<std::string> paths;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string relative = fs::relative(it->path(), root).string();
    if (!skip.empty() && (relative == skip || absl::StartsWith(relative, skip + "/"))) {
      if (relative == skip) it.disable_recursion_pending();
      continue;
    }
    paths.insert(relative);
  }
  return paths;
}

// The outcome of one raw call: its status and the first response message, if any.
struct RawResult {
  grpc::Status status;
  std::optional<std::string> response;
};

// One call of `method` ("/pkg.Service/Method") sending the single request message `request` (the
// serialized bytes; "" = every field at its default) whatever the method's streaming kind: at the
// HTTP/2 level a generic bidirectional call carries unary and streaming RPCs alike. With
// `authorization`, that metadata value is sent. Reads at most one response; a server stream that
// would go on (`server_streaming`) is cancelled after it.
RawResult RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  const std::optional<std::string>& authorization, bool server_streaming,
                  const std::string& request = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  if (authorization.has_value()) context.AddMetadata("authorization", *authorization);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &cq);
  // Each operation below queues exactly one completion; they are awaited one at a time.
  auto await = [&cq]() {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return ok;
  };
  int tag = 0;
  auto next_tag = [&tag]() { return reinterpret_cast<void*>(static_cast<intptr_t>(++tag)); };
  call->StartCall(next_tag());
  await();
  grpc::Slice slice(request);
  grpc::ByteBuffer message(&slice, 1);
  call->Write(message, next_tag());
  await();
  call->WritesDone(next_tag());
  await();
  RawResult result;
  grpc::ByteBuffer response;
  call->Read(&response, next_tag());
  if (await()) {
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    result.response = std::move(bytes);
    if (server_streaming) context.TryCancel();
  }
  call->Finish(&result.status, next_tag());
  await();
  cq.Shutdown();
  void* ignored_tag;
  bool ignored_ok;
  while (cq.Next(&ignored_tag, &ignored_ok)) {
  }
  return result;
}

// One RPC of the server's surface.
struct Method {
  std::string path;  // "/drfm.v1.JobService/SubmitFit"
  bool server_streaming = false;
  bool exempt = false;  // needs no token (health)
};

// The services the server registers, by the reflection service's own listing (asked with
// `authorization`): their names, or the status of a failed call.
absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& authorization) {
  namespace pb = google::protobuf;
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  const pb::Descriptor* request_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
  const pb::Descriptor* response_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  if (request_type == nullptr || response_type == nullptr) {
    return absl::NotFoundError("the reflection protos are not linked in");
  }
  pb::DynamicMessageFactory factory(pool);
  std::unique_ptr<pb::Message> request(factory.GetPrototype(request_type)->New());
  if (!pb::TextFormat::ParseFromString("list_services: \"*\"", request.get())) {
    return absl::InternalError("cannot build a ServerReflectionRequest");
  }
  const RawResult result =
      RawCall(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              authorization, /*server_streaming=*/true, request->SerializeAsString());
  if (!result.response.has_value()) {
    return absl::Status(static_cast<absl::StatusCode>(result.status.error_code()),
                        result.status.error_message());
  }
  std::unique_ptr<pb::Message> response(factory.GetPrototype(response_type)->New());
  if (!response->ParseFromString(*result.response)) {
    return absl::DataLossError("unparsable ServerReflectionResponse");
  }
  const pb::FieldDescriptor* list_field = response_type->FindFieldByName("list_services_response");
  const pb::Message& list = response->GetReflection()->GetMessage(*response, list_field);
  const pb::FieldDescriptor* service_field = list.GetDescriptor()->FindFieldByName("service");
  std::vector<std::string> names;
  for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field); ++i) {
    const pb::Message& service = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
    names.push_back(service.GetReflection()->GetString(
        service, service.GetDescriptor()->FindFieldByName("name")));
  }
  return names;
}

// A real server with its data dir at <root>/data, and <root>/outside holding a file, so that a
// write or read that escapes the data dir would show up under <root>.
class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    root_ = absl::StrCat(::testing::TempDir(), "/drfm_e2e_security_", getpid(), "_", counter++);
    fs::remove_all(root_);
    fs::create_directories(root_ + "/outside");
    WriteFile(root_ + "/outside/secret.txt", "not for drfm\n");
    options_.listen = "127.0.0.1:0";
    options_.metrics_listen = "";
    options_.data_dir = root_ + "/data";
    options_.workers = 1;
    options_.threads_per_fit = 1;
  }
  void TearDown() override {
    StopServer();
    fs::remove_all(root_);
  }

  void StartServer() {
    absl::StatusOr<std::unique_ptr<server::DrfmServer>> server =
        server::DrfmServer::Start(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  }
  void StopServer() {
    if (server_) server_->Shutdown(absl::ZeroDuration());
    server_.reset();
  }

  // A client of the plaintext server, with `token` (empty: none).
  std::unique_ptr<client::Client> Connect(const std::string& token = "") {
    client::ConnectionOptions options;
    options.server = address_;
    options.token = token;
    absl::StatusOr<std::unique_ptr<client::Client>> client = client::Client::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // `drfm --server ADDRESS args...` through RunCli and the CLI's own connection code.
  struct CliRun {
    int code = -1;
    std::string out, err;
  };
  CliRun Drfm(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", address_, "--timeout", "20"});
    std::ostringstream out, err;
    client::CliEnv env;
    env.out = &out;
    env.err = &err;
    CliRun run;
    run.code = client::RunCli(args, env);
    run.out = out.str();
    run.err = err.str();
    return run;
  }

  std::string Path(const std::string& name) const { return root_ + "/" + name; }

  // Fits a small model `name` and returns once it is stored.
  void FitModel(client::Client& client, const std::string& name) {
    v1::SubmitFitRequest request = TinyFit();
    request.set_model_name(name);
    absl::StatusOr<v1::Job> job = client.SubmitFit(request);
    ASSERT_TRUE(job.ok()) << job.status();
    absl::StatusOr<client::WatchResult> watched =
        client.WatchJob(job->id(), {}, [](const v1::JobEvent&) {});
    ASSERT_TRUE(watched.ok()) << watched.status();
    ASSERT_EQ(watched->final_state, v1::Job::SUCCEEDED);
  }

  static v1::SubmitFitRequest TinyFit() {
    v1::SubmitFitRequest request;
    request.mutable_train()->set_dataset(kTinyData);
    request.mutable_config()->set_layers(1);
    request.mutable_config()->set_width(16);
    return request;
  }

  std::string root_;
  server::ServerOptions options_;
  std::unique_ptr<server::DrfmServer> server_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
};

bool IsAuthError(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED;
}

TEST_F(SecurityTest, EveryRpcButHealthRefusesAMissingMalformedOrWrongToken) {
  WriteFile(Path("tokens"), absl::StrCat(kToken, " tester\n"));
  options_.token_file = Path("tokens");
  StartServer();
  const std::string bearer = absl::StrCat("Bearer ", kToken);

  // The surface: every method of every service in the descriptors of the protos the server
  // serves, plus grpc.health.v1 (the default health service is not built from a linked .proto).
  namespace pb = google::protobuf;
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  std::vector<Method> methods;
  std::set<std::string> covered;
  auto add_service = [&](const std::string& name) {
    const pb::ServiceDescriptor* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << "no descriptor for " << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* m = service->method(i);
      methods.push_back({absl::StrCat("/", name, "/", m->name()), m->server_streaming(), false});
    }
    covered.insert(name);
  };
  for (const char* name : {"drfm.v1.DatasetService", "drfm.v1.JobService", "drfm.v1.ModelService",
                           "grpc.reflection.v1alpha.ServerReflection"}) {
    add_service(name);
  }
  methods.push_back({"/grpc.health.v1.Health/Check", false, true});
  methods.push_back({"/grpc.health.v1.Health/Watch", true, true});
  covered.insert("grpc.health.v1.Health");

  // Nothing the server registers is left out: its reflection listing (which needs the token too)
  // names no service outside `covered`.
  absl::StatusOr<std::vector<std::string>> anonymous = ListServicesByReflection(channel_, "");
  EXPECT_FALSE(anonymous.ok());
  absl::StatusOr<std::vector<std::string>> listed = ListServicesByReflection(channel_, bearer);
  ASSERT_TRUE(listed.ok()) << listed.status();
  for (const std::string& name : *listed) {
    if (covered.count(name) == 0) add_service(name);  // A new service is enumerated too.
  }
  for (const char* name : {"drfm.v1.DatasetService", "drfm.v1.JobService", "drfm.v1.ModelService",
                           "grpc.health.v1.Health"}) {
    EXPECT_NE(std::find(listed->begin(), listed->end(), name), listed->end()) << name;
  }
  ASSERT_GE(methods.size(), 22u);

  for (const Method& m : methods) {
    SCOPED_TRACE(m.path);
    const RawResult none = RawCall(channel_, m.path, std::nullopt, m.server_streaming);
    const RawResult malformed =
        RawCall(channel_, m.path, absl::StrCat("Basic ", kToken), m.server_streaming);
    const RawResult wrong =
        RawCall(channel_, m.path, absl::StrCat("Bearer ", kWrongToken), m.server_streaming);
    const RawResult right = RawCall(channel_, m.path, bearer, m.server_streaming);
    if (m.exempt) {
      // Health answers everyone (SERVING) with or without a token.
      for (const RawResult* r : {&none, &malformed, &wrong, &right}) {
        EXPECT_TRUE(r->response.has_value()) << Describe(r->status);
        EXPECT_FALSE(IsAuthError(r->status.error_code())) << Describe(r->status);
      }
      continue;
    }
    EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(none.status);
    EXPECT_THAT(none.status.error_message(), HasSubstr("missing bearer token"));
    EXPECT_FALSE(none.response.has_value());
    EXPECT_EQ(malformed.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << Describe(malformed.status);
    EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << Describe(wrong.status);
    EXPECT_THAT(wrong.status.error_message(), HasSubstr("not allowed"));
    EXPECT_THAT(wrong.status.error_message(), ::testing::Not(HasSubstr(kWrongToken)));
    EXPECT_FALSE(wrong.response.has_value());
    // With the token the handler runs: the empty request gets the handler's own answer.
    EXPECT_FALSE(IsAuthError(right.status.error_code())) << Describe(right.status);
  }

  // Refused mutations leave no trace: a valid fit and a valid upload sent with the wrong token
  // create nothing.
  std::unique_ptr<client::Client> stranger = Connect(kWrongToken);
  std::unique_ptr<client::Client> tester = Connect(kToken);
  ASSERT_NE(stranger, nullptr);
  ASSERT_NE(tester, nullptr);
  v1::SubmitFitRequest fit = TinyFit();
  fit.set_model_name("sneaky");
  EXPECT_EQ(stranger->SubmitFit(fit).status().code(), absl::StatusCode::kPermissionDenied);
  core::SyntheticSpec spec;
  spec.rows = 20;
  spec.cols = 4;
  spec.classes = 2;
  const core::Dataset data = *core::MakeSynthetic(spec);
  client::DatasetUpload upload("sneaky", data);
  EXPECT_EQ(stranger->UploadDataset(upload).status().code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::ListJobsResponse> jobs = tester->ListJobs({});
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->jobs_size(), 0);
  absl::StatusOr<v1::ListDatasetsResponse> datasets = tester->ListDatasets({});
  ASSERT_TRUE(datasets.ok()) << datasets.status();
  for (const v1::Dataset& d : datasets->datasets()) EXPECT_TRUE(d.builtin()) << d.name();
  EXPECT_EQ(tester->GetModel("sneaky", std::nullopt).status().code(), absl::StatusCode::kNotFound);
  // And the right token does the same thing.
  ASSERT_TRUE(tester->UploadDataset(upload).ok());
}

TEST_F(SecurityTest, TlsAndMutualTlsWorkThroughTheCliAndFailClearlyOtherwise) {
  fs::create_directories(Path("pki"));
  const testing_pki::Pki pki(Path("pki"));
  WriteFile(Path("tokens"), absl::StrCat(kToken, "\n"));
  WriteFile(Path("token"), absl::StrCat(kToken, "\n"));
  options_.token_file = Path("tokens");
  options_.tls_cert = pki.server_cert_file;
  options_.tls_key = pki.server_key_file;
  StartServer();

  const std::vector<std::string> tls = {"--tls-ca", pki.ca_file, "--token-file", Path("token")};
  auto with = [](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  // The right CA (and the token, as call credentials over TLS): unary calls, a fit followed to
  // its end (a server stream) and a dataset upload (a client stream).
  CliRun run = Drfm(with(tls, {"health", "--service", "drfm.v1.JobService"}));
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("SERVING"));
  run = Drfm(with(
      tls, {"fit", "--train", kTinyData, "--layers", "1", "--width", "16", "--model", "over-tls"}));
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("SUCCEEDED"));
  WriteFile(Path("tiny.csv"), "a,b,label\n0.5,1.5,0\n1.0,-1.0,1\n2.0,0.0,0\n");
  run = Drfm(with(tls, {"datasets", "upload", Path("tiny.csv"), "--name", "tls-upload"}));
  EXPECT_EQ(run.code, 0) << run.err;
  run = Drfm(with(tls, {"--output", "json", "models", "get", "over-tls"}));
  EXPECT_EQ(run.code, 0) << run.err;
  // The certificate names localhost and 127.0.0.1; --tls-server-name checks another name.
  run = Drfm(with(tls, {"--tls-server-name", "localhost", "jobs", "list"}));
  EXPECT_EQ(run.code, 0) << run.err;

  // TLS without the token: the server's refusal, with the hint.
  run = Drfm({"--tls-ca", pki.ca_file, "jobs", "list"});
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(run.err, HasSubstr("--token-file"));
  // A CA that did not sign the server's certificate: the handshake fails.
  run = Drfm({"--tls-ca", pki.other_ca_file, "--token-file", Path("token"), "jobs", "list"});
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(run.err, HasSubstr("certificate verify failed"));
  // A name the certificate does not carry.
  run = Drfm(with(tls, {"--tls-server-name", "drfm.example.com", "jobs", "list"}));
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE"));
  // Plaintext to a TLS port: refused, and the CLI points at --tls-ca.
  run = Drfm({"--token-file", Path("token"), "jobs", "list"});
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(run.err, HasSubstr("--tls-ca"));
  // A CA file that does not exist or is not a certificate is the CLI's own error, named.
  run = Drfm({"--tls-ca", Path("missing.pem"), "jobs", "list"});
  EXPECT_NE(run.code, 0);
  EXPECT_THAT(run.err, HasSubstr("missing.pem"));
  StopServer();

  // Mutual TLS: the server also wants a client certificate signed by its client CA.
  options_.tls_client_ca = pki.ca_file;
  StartServer();
  const std::vector<std::string> mtls =
      with(tls, {"--tls-cert", pki.client_cert_file, "--tls-key", pki.client_key_file});
  run = Drfm(with(mtls, {"health"}));
  EXPECT_EQ(run.code, 0) << run.err;
  run = Drfm(with(mtls, {"fit", "--train", kTinyData, "--layers", "1", "--width", "16", "--model",
                         "over-mtls"}));
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("SUCCEEDED"));
  // No client certificate: the handshake fails (health too: mTLS guards the port itself).
  run = Drfm(with(tls, {"jobs", "list"}));
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(run.err, HasSubstr("--tls-cert FILE --tls-key FILE"));
  run = Drfm(with(tls, {"health"}));
  EXPECT_NE(run.code, 0);
  // A certificate from another CA.
  run = Drfm(with(tls, {"--tls-cert", pki.stranger_cert_file, "--tls-key", pki.stranger_key_file,
                        "jobs", "list"}));
  EXPECT_EQ(run.code, client::kExitError);
  EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE"));
  // Half a key pair is a usage error before any connection.
  run = Drfm(with(tls, {"--tls-cert", pki.client_cert_file, "jobs", "list"}));
  EXPECT_NE(run.code, 0);
  EXPECT_THAT(run.err, HasSubstr("key"));
  // A key that does not belong to the certificate.
  run = Drfm(with(tls, {"--tls-cert", pki.client_cert_file, "--tls-key", pki.stranger_key_file,
                        "jobs", "list"}));
  EXPECT_NE(run.code, 0);
}

// Names no dataset, model or job can have: paths, separators, NUL bytes, hidden files, control
// characters, overlong names.
std::vector<std::string> BadNames(const std::string& root) {
  return {"..",
          ".",
          "../escape",
          "../outside/escape",
          "../../escape",
          "a/../../escape",
          "sub/escape",
          "/tmp/drfm-security-escape",
          absl::StrCat(root, "/outside/escape"),
          absl::StrCat(root, "/outside/secret.txt"),
          "a\\b",
          "..\\escape",
          std::string("escape\0.txt", 11),
          std::string("\0", 1),
          std::string("\0../escape", 10),
          ".hidden",
          "./escape",
          "-dash",
          "a..b",
          "~",
          "name with space",
          "tab\tname",
          "line\nbreak",
          "percent%2e%2e%2fescape",
          "caf\xc3\xa9",
          std::string(129, 'a'),
          std::string(100000, 'b')};
}

TEST_F(SecurityTest, PathLikeNamesAreRefusedAndNothingEscapesTheDataDir) {
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  FitModel(*client, "good-model");
  core::SyntheticSpec spec;
  spec.rows = 30;
  spec.cols = 4;
  spec.classes = 3;
  const core::Dataset data = *core::MakeSynthetic(spec);
  const std::set<std::string> outside_before = ListTree(root_, "data");
  auto stub = v1::ModelService::NewStub(channel_);

  for (const std::string& name : BadNames(root_)) {
    SCOPED_TRACE(absl::StrCat("name \"", absl::CHexEscape(name.substr(0, 80)), "\" (", name.size(),
                              " bytes)"));
    auto expect_invalid = [](const absl::Status& status, const char* rpc) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << rpc << ": " << status;
      EXPECT_FALSE(status.message().empty()) << rpc;
      EXPECT_EQ(status.message().find('\0'), absl::string_view::npos) << rpc << " echoes a NUL";
      EXPECT_LT(status.message().size(), 2000u) << rpc << " echoes the whole name";
    };
    // Datasets: the upload header, and references by name or id.
    client::DatasetUpload upload(name, data);
    expect_invalid(client->UploadDataset(upload).status(), "UploadDataset");
    expect_invalid(client->GetDataset(name).status(), "GetDataset");
    expect_invalid(client->DeleteDataset(name), "DeleteDataset");
    v1::SubmitFitRequest fit = TinyFit();
    fit.mutable_train()->set_dataset(name);
    expect_invalid(client->SubmitFit(fit).status(), "SubmitFit train.dataset");
    expect_invalid(client->EstimateFit(fit).status(), "EstimateFit train.dataset");
    fit = TinyFit();
    fit.mutable_test()->set_dataset(name);
    expect_invalid(client->SubmitFit(fit).status(), "SubmitFit test.dataset");
    // Models.
    fit = TinyFit();
    fit.set_model_name(name);
    expect_invalid(client->SubmitFit(fit).status(), "SubmitFit model_name");
    expect_invalid(client->GetModel(name, std::nullopt).status(), "GetModel");
    expect_invalid(client->DeleteModel(name, std::nullopt), "DeleteModel");
    v1::PredictRequest predict;
    predict.set_model(name);
    predict.set_rows(1);
    predict.set_cols(8);
    predict.set_features(std::string(32, '\0'));
    expect_invalid(client->Predict(predict).status(), "Predict");
    expect_invalid(
        client
            ->ExportModel(name, std::nullopt,
                          [](std::string_view, int64_t, int64_t) { return absl::OkStatus(); })
            .status(),
        "ExportModel");
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
      v1::Model imported;
      std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> writer =
          stub->ImportModel(&context, &imported);
      v1::ImportModelRequest header;
      header.mutable_header()->set_name(name);
      writer->Write(header);
      v1::ImportModelRequest chunk;
      chunk.set_chunk(std::string(64, '\0'));
      writer->Write(chunk);
      writer->WritesDone();
      const grpc::Status status = writer->Finish();
      expect_invalid(
          absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()),
          "ImportModel");
    }
    // The network side's jobs.
    v1::SubmitMlpFitRequest mlp;
    mlp.mutable_train()->set_dataset(kTinyData);
    mlp.set_model_name(name);
    expect_invalid(client->SubmitMlpFit(mlp).status(), "SubmitMlpFit model_name");
    mlp.set_model_name("");
    mlp.mutable_train()->set_dataset(name);
    expect_invalid(client->SubmitMlpFit(mlp).status(), "SubmitMlpFit train.dataset");
    v1::SubmitAnalysisRequest analysis;
    analysis.set_model(name);
    analysis.mutable_data()->set_dataset(kTinyData);
    expect_invalid(client->SubmitAnalysis(analysis).status(), "SubmitAnalysis model");
    // Jobs.
    expect_invalid(client->GetJob(name).status(), "GetJob");
    expect_invalid(client->CancelJob(name).status(), "CancelJob");
    expect_invalid(client->DeleteJob(name), "DeleteJob");
    client::WatchOptions watch;
    watch.max_reconnects = 0;
    expect_invalid(client->WatchJob(name, watch, [](const v1::JobEvent&) {}).status(), "WatchJob");
  }
  // Names in the reserved built-in namespaces are matched exactly and never become paths.
  // Their messages quote the name, cut short: an error must not grow with the request (a
  // grpc-message trailer over the client's metadata limit would replace the server's status with
  // RESOURCE_EXHAUSTED).
  for (const std::string& name :
       {std::string("fashion-mnist:../../../etc/passwd"), std::string("fashion-mnist:train/../x"),
        std::string("synthetic:../escape"), "fashion-mnist:" + std::string(100000, '/')}) {
    const absl::Status status = client->GetDataset(name).status();
    EXPECT_TRUE(status.code() == absl::StatusCode::kInvalidArgument ||
                status.code() == absl::StatusCode::kNotFound)
        << name.substr(0, 80) << ": " << status.ToString().substr(0, 300);
    EXPECT_LT(status.message().size(), 4096u);
  }

  // The refusals are not vacuous: good names work on the same server.
  client::DatasetUpload good("good-name.v1_x", data);
  ASSERT_TRUE(client->UploadDataset(good).ok());
  EXPECT_TRUE(client->GetDataset("good-name.v1_x").ok());
  EXPECT_TRUE(client->GetModel("good-model", std::nullopt).ok());

  // Nothing appeared outside the data dir, nothing anywhere under the test root or in /tmp is
  // called "escape", and the file outside is untouched.
  EXPECT_EQ(ListTree(root_, "data"), outside_before);
  for (const std::string& path : ListTree(root_, "")) {
    EXPECT_THAT(path, ::testing::Not(HasSubstr("escape"))) << path;
  }
  EXPECT_FALSE(fs::exists("/tmp/drfm-security-escape"));
  EXPECT_FALSE(fs::exists(fs::path(root_).parent_path() / "escape"));
  EXPECT_EQ(ReadFile(root_ + "/outside/secret.txt"), "not for drfm\n");
}

TEST_F(SecurityTest, MessageSizeLimitHolds) {
  options_.max_message_bytes = 64 << 10;
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::PredictRequest predict;
  predict.set_model("any");
  predict.set_rows(1);
  predict.set_cols(32 << 10);
  predict.set_features(std::string(128 << 10, '\0'));
  const absl::Status status = client->Predict(predict).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("larger than max"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat(64 << 10)));
  // An upload chunk over the limit fails the same way.
  core::SyntheticSpec spec;
  spec.rows = 2000;
  spec.cols = 16;
  spec.classes = 2;
  const core::Dataset data = *core::MakeSynthetic(spec);
  client::DatasetUpload upload("big-chunks", data, /*chunk_bytes=*/100 << 10);
  const absl::Status upload_status = client->UploadDataset(upload).status();
  EXPECT_EQ(upload_status.code(), absl::StatusCode::kResourceExhausted) << upload_status;
  // The same upload in chunks under the limit works.
  client::DatasetUpload small("small-chunks", data, /*chunk_bytes=*/32 << 10);
  EXPECT_TRUE(client->UploadDataset(small).ok());
}

TEST_F(SecurityTest, PredictRowLimitHolds) {
  options_.max_predict_rows = 64;
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  FitModel(*client, "rows-model");
  v1::PredictRequest predict;
  predict.set_model("rows-model");
  predict.set_cols(8);
  predict.set_rows(64);
  predict.set_features(std::string(64 * 8 * 4, '\0'));
  absl::StatusOr<v1::PredictResponse> ok = client->Predict(predict);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->labels_size(), 64);
  predict.set_rows(65);
  predict.set_features(std::string(65 * 8 * 4, '\0'));
  absl::Status status = client->Predict(predict).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("1 to 64 rows"));
  // Each message of a PredictStream is held to the same limit.
  int sent = 0;
  status = client->PredictStream(
      [&](v1::PredictRequest* request) {
        if (sent++ > 0) return false;
        *request = predict;
        return true;
      },
      [](const v1::PredictResponse&) { return absl::OkStatus(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("1 to 64 rows"));
  // Claimed shapes that disagree with the payload, or absurd ones, are refused too.
  predict.set_rows(int64_t{1} << 40);
  EXPECT_EQ(client->Predict(predict).status().code(), absl::StatusCode::kInvalidArgument);
  predict.set_rows(1);
  predict.set_cols(-8);
  EXPECT_EQ(client->Predict(predict).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SecurityTest, FitConfigMemoryAndRequestLimitsHoldWithMessagesNamingThem) {
  options_.memory_budget_gb = 0.2;
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  struct Case {
    std::string what;
    std::function<void(v1::SubmitFitRequest*)> change;
    std::vector<std::string> message;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"65 layers",
       [](v1::SubmitFitRequest* r) { r->mutable_config()->set_layers(65); },
       {"layers", "64"}},
      {"negative layers",
       [](v1::SubmitFitRequest* r) { r->mutable_config()->set_layers(-1); },
       {"layers"}},
      {"width 65537",
       [](v1::SubmitFitRequest* r) { r->mutable_config()->set_width(65537); },
       {"width", "65536"}},
      {"negative width",
       [](v1::SubmitFitRequest* r) { r->mutable_config()->set_width(-5); },
       {"width"}},
      {"51 RFM iterations",
       [](v1::SubmitFitRequest* r) { r->mutable_config()->set_rfm_iterations(51); },
       {"rfm_iterations", "50"}},
      {"request_id of 129 bytes",
       [](v1::SubmitFitRequest* r) { r->set_request_id(std::string(129, 'r')); },
       {"128"}},
      {"65 labels",
       [](v1::SubmitFitRequest* r) {
         for (int i = 0; i < 65; ++i) (*r->mutable_labels())[absl::StrCat("k", i)] = "v";
       },
       {"64"}},
      {"priority 1001", [](v1::SubmitFitRequest* r) { r->set_priority(1001); }, {"1000"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::SubmitFitRequest request = TinyFit();
    c.change(&request);
    for (const absl::Status& status :
         {client->SubmitFit(request).status(), client->EstimateFit(request).status()}) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      for (const std::string& part : c.message) {
        EXPECT_THAT(std::string(status.message()), HasSubstr(part)) << status;
      }
    }
  }
  // Within the config limits but over the memory budget (a 30000 x 30000 kernel alone is 3.6 GB
  // in float32): RESOURCE_EXHAUSTED naming the budget; the estimate says the same without a job.
  v1::SubmitFitRequest big = TinyFit();
  big.mutable_train()->set_dataset("synthetic:rows=30000,cols=8,classes=3");
  const absl::Status over = client->SubmitFit(big).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(std::string(over.message()), HasSubstr("budget"));
  absl::StatusOr<v1::FitEstimate> estimate = client->EstimateFit(big);
  ASSERT_TRUE(estimate.ok()) << estimate.status();
  EXPECT_FALSE(estimate->within_budget());
  // Upload shapes.
  grpc::ClientContext context;
  v1::Dataset stored;
  auto datasets = v1::DatasetService::NewStub(channel_);
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
      datasets->UploadDataset(&context, &stored);
  v1::UploadDatasetRequest header;
  header.mutable_header()->set_name("huge");
  header.mutable_header()->set_rows(int64_t{1} << 40);
  header.mutable_header()->set_cols(1 << 20);
  writer->Write(header);
  writer->WritesDone();
  const grpc::Status upload = writer->Finish();
  EXPECT_EQ(upload.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << Describe(upload);
  EXPECT_THAT(upload.error_message(), HasSubstr("header.rows"));
  // Nothing of it was queued.
  absl::StatusOr<v1::ListJobsResponse> jobs = client->ListJobs({});
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs_size(), 0);
}

TEST_F(SecurityTest, MlpDepthAndWidthLimitsHold) {
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  struct Case {
    std::string what;
    std::function<void(v1::MlpConfig*)> change;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {"depth 33", [](v1::MlpConfig* c) { c->set_depth(33); }, {"depth", "32"}},
      {"depth 0", [](v1::MlpConfig* c) { c->set_depth(0); }, {"depth"}},
      {"width 16385", [](v1::MlpConfig* c) { c->set_width(16385); }, {"width", "16384"}},
      {"width 0", [](v1::MlpConfig* c) { c->set_width(0); }, {"width"}},
      {"epochs 100001", [](v1::MlpConfig* c) { c->set_epochs(100001); }, {"epochs", "100000"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::SubmitMlpFitRequest request;
    request.mutable_train()->set_dataset(kTinyData);
    c.change(request.mutable_config());
    const absl::Status status = client->SubmitMlpFit(request).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    for (const std::string& part : c.message) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(part)) << status;
    }
  }
}

TEST_F(SecurityTest, QueueBoundHoldsWithAMessageNamingIt) {
  options_.queue_bound = 2;
  StartServer();
  std::unique_ptr<client::Client> client = Connect();
  ASSERT_NE(client, nullptr);
  v1::SubmitFitRequest slow;
  slow.mutable_train()->set_dataset(kSlowData);
  slow.mutable_config()->set_layers(3);
  std::vector<std::string> accepted;
  absl::Status refused;
  // One worker: at most one job runs, so the bound is reached by the 3rd or 4th submission.
  for (int i = 0; i < 6 && refused.ok(); ++i) {
    absl::StatusOr<v1::Job> job = client->SubmitFit(slow);
    if (job.ok()) {
      accepted.push_back(job->id());
    } else {
      refused = job.status();
    }
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("queue is full"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("limit 2"));
  EXPECT_GE(accepted.size(), 2u);
  EXPECT_LE(accepted.size(), 3u);
  // Queued jobs never exceed the bound.
  v1::ListJobsRequest queued;
  queued.set_state(v1::Job::QUEUED);
  absl::StatusOr<v1::ListJobsResponse> listed = client->ListJobs(queued);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_LE(listed->jobs_size(), 2);
  for (const std::string& id : accepted) EXPECT_TRUE(client->CancelJob(id).ok()) << id;
  // Once the queue drains, submissions are accepted again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  absl::Status again = absl::UnknownError("not tried");
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<v1::Job> job = client->SubmitFit(TinyFit());
    again = job.status();
    if (again.code() != absl::StatusCode::kResourceExhausted) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(again.ok()) << again;
}

}  // namespace
}  // namespace drfm
