// Tests of server/auth: the token file format, the bearer-token decision, and real loopback
// servers with tokens over plaintext and TLS, and with mutual TLS. Certificates are generated at
// test time with OpenSSL's C API (tests/server/test_pki.h: a throwaway CA, a server certificate
// for localhost / 127.0.0.1, client certificates) into a temporary directory.
#include "server/auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/support/stub_options.h"
#include "gtest/gtest.h"
#include "tests/server/test_pki.h"

namespace drfm::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kRpcDeadline = std::chrono::seconds(20);
constexpr char kAliceToken[] = "alice-0123456789abcdef0123456789abcdef";
constexpr char kBobToken[] = "bob-fedcba9876543210fedcba9876543210";
constexpr char kStrangerToken[] = "mallory-00000000000000000000000000000";

// A fresh directory under the test temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::path(testing::TempDir()) / "drfm_auth_test_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string Write(const std::string& name, const std::string& contents) const {
    const std::string file = (std::filesystem::path(path_) / name).string();
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }
  std::string path(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

 private:
  std::string path_;
};

// The PEM files of a test PKI in `dir` (tests/server/test_pki.h).
struct Pki : testing_pki::Pki {
  explicit Pki(const TempDir& dir) : testing_pki::Pki(dir.path("")) {}
};

// DatasetService stand-in: ListDatasets answers an empty list and remembers whether the
// `authorization` metadata reached it.
class StubDatasetService final : public v1::DatasetService::Service {
 public:
  grpc::Status ListDatasets(grpc::ServerContext* context, const v1::ListDatasetsRequest*,
                            v1::ListDatasetsResponse*) override {
    calls_.fetch_add(1);
    if (context->client_metadata().count("authorization") > 0) saw_token_.store(true);
    return grpc::Status::OK;
  }
  int calls() const { return calls_.load(); }
  bool saw_token() const { return saw_token_.load(); }

 private:
  std::atomic<int> calls_{0};
  std::atomic<bool> saw_token_{false};
};

// A real server on 127.0.0.1:<free port> with `credentials`, the health service and the stub.
class TestServer {
 public:
  explicit TestServer(std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TestServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + kRpcDeadline);
  }
  bool started() const { return server_ != nullptr && port_ > 0; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  const StubDatasetService& service() const { return service_; }

 private:
  StubDatasetService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

grpc::Status ListDatasets(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::DatasetService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  v1::ListDatasetsResponse response;
  return stub->ListDatasets(&context, v1::ListDatasetsRequest(), &response);
}

// grpc.health.v1.Health/Check for the whole server (an empty HealthCheckRequest), through the
// generic stub: the health protos are not installed as C++ stubs.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  return done.get_future().get();
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                       const ClientSecurityOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateClientChannel(target, options);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return channel.ok() ? *channel : nullptr;
}

// Token file format.

TEST(LoadTokenFileTest, ReadsTokensNamesAndSkipsCommentsAndBlankLines) {
  TempDir dir;
  const std::string file =
      dir.Write("tokens", absl::StrCat("# drfm tokens\n\n  ", kAliceToken, "   alice (laptop)  \n",
                                       "\t# indented comment\n", kBobToken, "\r\n"));
  absl::StatusOr<std::vector<TokenEntry>> entries = LoadTokenFile(file);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].token, kAliceToken);
  EXPECT_EQ((*entries)[0].name, "alice (laptop)");
  EXPECT_EQ((*entries)[1].token, kBobToken);
  EXPECT_EQ((*entries)[1].name, "line 5");
}

TEST(LoadTokenFileTest, RejectsMissingUnreadableEmptyAndMalformedFiles) {
  TempDir dir;
  EXPECT_EQ(LoadTokenFile(dir.path("nope")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadTokenFile(dir.path("")).status().code(), absl::StatusCode::kInvalidArgument)
      << "a directory";

  const absl::Status empty = LoadTokenFile(dir.Write("empty", "")).status();
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.message()), HasSubstr("holds no token"));
  EXPECT_EQ(LoadTokenFile(dir.Write("comments", "# only\n\n   \n# comments\n")).status().code(),
            absl::StatusCode::kInvalidArgument);

  const absl::Status short_token = LoadTokenFile(dir.Write("short", "# x\nsecret\n")).status();
  EXPECT_EQ(short_token.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(short_token.message()), HasSubstr("line 2"));
  EXPECT_THAT(std::string(short_token.message()), HasSubstr("at least 16"));

  EXPECT_EQ(LoadTokenFile(dir.Write("bad_char", "abcdefghijklmnop\"qrstuvwxyz\n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status twice =
      LoadTokenFile(dir.Write("twice", absl::StrCat(kAliceToken, " a\n", kAliceToken, " b\n")))
          .status();
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(twice.message()), HasSubstr("twice"));

  if (::geteuid() != 0) {  // root reads anything.
    const std::string locked = dir.Write("locked", kAliceToken);
    ::chmod(locked.c_str(), 0);
    EXPECT_EQ(LoadTokenFile(locked).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// The decision.

TEST(BearerTokenAuthenticatorTest, DecidesByMethodAndToken) {
  absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> auth =
      BearerTokenAuthenticator::Create({{kAliceToken, "alice"}, {kBobToken, "bob"}});
  ASSERT_TRUE(auth.ok()) << auth.status();
  const BearerTokenAuthenticator& a = **auth;
  const std::string method = "/drfm.v1.JobService/SubmitFit";
  std::string name;

  EXPECT_TRUE(a.Authorize(method, absl::StrCat("Bearer ", kAliceToken), &name).ok());
  EXPECT_EQ(name, "alice");
  EXPECT_TRUE(a.Authorize(method, absl::StrCat("bearer  ", kBobToken), &name).ok());
  EXPECT_EQ(name, "bob");

  const absl::Status missing = a.Authorize(method, std::nullopt);
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("missing bearer token"));
  EXPECT_THAT(std::string(missing.message()), HasSubstr("--token-file"));
  for (const std::string& malformed :
       {std::string(""), std::string("Bearer"), std::string("Bearer "),
        absl::StrCat("Basic ", kAliceToken), std::string(kAliceToken)}) {
    EXPECT_EQ(a.Authorize(method, malformed).code(), absl::StatusCode::kUnauthenticated)
        << malformed;
  }
  const absl::Status wrong = a.Authorize(method, absl::StrCat("Bearer ", kStrangerToken));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(wrong.message()), Not(HasSubstr(kStrangerToken)));
  // A prefix or an extension of a listed token is another token.
  EXPECT_EQ(a.Authorize(method, absl::StrCat("Bearer ", kAliceToken, "x")).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      a.Authorize(method, std::string("Bearer ") + std::string(kAliceToken).substr(0, 20)).code(),
      absl::StatusCode::kPermissionDenied);

  for (const char* exempt : {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}) {
    EXPECT_TRUE(a.Authorize(exempt, std::nullopt).ok()) << exempt;
    EXPECT_TRUE(IsAuthExempt(exempt)) << exempt;
  }
  // Reflection describes the whole API surface of this deployment: it needs a token too.
  for (const char* reflection : {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    EXPECT_FALSE(IsAuthExempt(reflection)) << reflection;
    EXPECT_EQ(a.Authorize(reflection, std::nullopt).code(), absl::StatusCode::kUnauthenticated);
    EXPECT_TRUE(a.Authorize(reflection, absl::StrCat("Bearer ", kAliceToken)).ok());
  }
  EXPECT_FALSE(IsAuthExempt("/grpc.health.v1.HealthX/Check"));
  EXPECT_FALSE(IsAuthExempt("/drfm.v1.grpc.health.v1.Health/Check"));
  EXPECT_EQ(a.Authorize("", std::nullopt).code(), absl::StatusCode::kUnauthenticated);
}

TEST(BearerTokenAuthenticatorTest, RejectsNoTokensAndBadTokens) {
  EXPECT_EQ(BearerTokenAuthenticator::Create({}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BearerTokenAuthenticator::Create({{"short", "x"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      BearerTokenAuthenticator::Create({{kAliceToken, "a"}, {kAliceToken, "b"}}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// Options and file errors.

TEST(SecurityOptionsTest, ValidateRejectsHalfConfiguredTls) {
  EXPECT_TRUE(ServerSecurityOptions{}.Validate().ok());
  EXPECT_EQ((ServerSecurityOptions{"", "cert.pem", "", ""}).Validate().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((ServerSecurityOptions{"", "", "key.pem", ""}).Validate().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((ServerSecurityOptions{"", "", "", "ca.pem"}).Validate().code(),
            absl::StatusCode::kInvalidArgument);

  ClientSecurityOptions client;
  EXPECT_TRUE(client.Validate().ok());
  EXPECT_FALSE(client.tls_enabled());
  client.tls_cert_file = "client.pem";
  EXPECT_TRUE(client.tls_enabled());
  EXPECT_EQ(client.Validate().code(), absl::StatusCode::kInvalidArgument);
  ClientSecurityOptions name_only;
  name_only.tls_server_name = "localhost";
  EXPECT_EQ(name_only.Validate().code(), absl::StatusCode::kInvalidArgument);
  ClientSecurityOptions short_token;
  short_token.token = "short";
  EXPECT_EQ(short_token.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SecurityOptionsTest, CredentialsReportMissingMalformedAndMismatchedFiles) {
  TempDir dir;
  Pki pki(dir);
  ServerSecurityOptions options;
  options.tls_cert_file = dir.path("missing.pem");
  options.tls_key_file = pki.server_key_file;
  absl::Status status = MakeServerCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing.pem"));

  options.tls_cert_file = dir.Write("garbage.pem", "not a certificate\n");
  status = MakeServerCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("no PEM certificate"));

  options.tls_cert_file = pki.server_cert_file;
  options.tls_key_file = pki.client_key_file;  // Another certificate's key.
  status = MakeServerCredentials(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("does not match"));

  options.tls_key_file = pki.server_key_file;
  options.token_file = dir.path("no-tokens");
  EXPECT_EQ(MakeServerCredentials(options).status().code(), absl::StatusCode::kNotFound);
  options.token_file = dir.Write("empty-tokens", "# nothing\n");
  EXPECT_EQ(MakeServerCredentials(options).status().code(), absl::StatusCode::kInvalidArgument);

  options.token_file.clear();
  options.tls_client_ca_file = dir.path("missing-ca.pem");
  EXPECT_EQ(MakeServerCredentials(options).status().code(), absl::StatusCode::kNotFound);

  ClientSecurityOptions client;
  client.tls_ca_file = dir.path("missing-ca.pem");
  EXPECT_EQ(MakeChannelCredentials(client).status().code(), absl::StatusCode::kNotFound);
  client.tls_ca_file = pki.ca_file;
  client.tls_cert_file = pki.client_cert_file;
  client.tls_key_file = pki.server_key_file;
  EXPECT_EQ(MakeChannelCredentials(client).status().code(), absl::StatusCode::kInvalidArgument);
  ClientSecurityOptions token_client;
  token_client.token_file = dir.path("missing-token");
  EXPECT_EQ(CreateClientChannel("127.0.0.1:1", token_client).status().code(),
            absl::StatusCode::kNotFound);
}

// Real servers.

TEST(AuthServerTest, PlaintextServerEnforcesBearerTokensExceptForHealth) {
  TempDir dir;
  ServerSecurityOptions options;
  options.token_file =
      dir.Write("tokens", absl::StrCat(kAliceToken, " alice\n", kBobToken, " bob\n"));
  std::atomic<int> unauthenticated{0}, denied{0};
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options, [&](grpc::StatusCode code) {
        if (code == grpc::StatusCode::UNAUTHENTICATED) ++unauthenticated;
        if (code == grpc::StatusCode::PERMISSION_DENIED) ++denied;
      });
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  TestServer server(*credentials);
  ASSERT_TRUE(server.started());

  const grpc::Status no_token = ListDatasets(Channel(server.target(), {}));
  EXPECT_EQ(no_token.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(no_token.error_message(), HasSubstr("missing bearer token"));
  EXPECT_THAT(no_token.error_message(), HasSubstr("--token-file"));

  ClientSecurityOptions stranger;
  stranger.token = kStrangerToken;
  const grpc::Status wrong = ListDatasets(Channel(server.target(), stranger));
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("not allowed"));
  EXPECT_EQ(server.service().calls(), 0) << "rejected calls must not reach the service";

  ClientSecurityOptions bob;
  bob.token_file = dir.Write("bob-token", absl::StrCat("# mine\n", kBobToken, "\n"));
  EXPECT_TRUE(ListDatasets(Channel(server.target(), bob)).ok());
  ClientSecurityOptions alice;
  alice.token = kAliceToken;
  EXPECT_TRUE(ListDatasets(Channel(server.target(), alice)).ok());
  EXPECT_EQ(server.service().calls(), 2);
  EXPECT_FALSE(server.service().saw_token()) << "the token must be consumed by the auth filter";

  EXPECT_TRUE(HealthCheck(Channel(server.target(), {})).ok());
  EXPECT_TRUE(HealthCheck(Channel(server.target(), stranger)).ok());

  // The observer runs before the status leaves the server.
  EXPECT_EQ(unauthenticated.load(), 1);
  EXPECT_EQ(denied.load(), 1);
}

TEST(AuthServerTest, ServerWithoutTokenFileAcceptsEveryone) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(ServerSecurityOptions{});
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  TestServer server(*credentials);
  ASSERT_TRUE(server.started());
  EXPECT_TRUE(ListDatasets(Channel(server.target(), {})).ok());
  ClientSecurityOptions alice;
  alice.token = kAliceToken;
  EXPECT_TRUE(ListDatasets(Channel(server.target(), alice)).ok());
}

TEST(AuthServerTest, TlsServerIsReachableWithItsCaOnly) {
  TempDir dir;
  Pki pki(dir);
  ServerSecurityOptions options;
  options.tls_cert_file = pki.server_cert_file;
  options.tls_key_file = pki.server_key_file;
  options.token_file = dir.Write("tokens", absl::StrCat(kAliceToken, "\n"));
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  TestServer server(*credentials);
  ASSERT_TRUE(server.started());

  ClientSecurityOptions trusted;
  trusted.tls_ca_file = pki.ca_file;
  EXPECT_TRUE(HealthCheck(Channel(server.target(), trusted)).ok());
  EXPECT_EQ(ListDatasets(Channel(server.target(), trusted)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  trusted.token = kAliceToken;  // Sent as call credentials over TLS.
  EXPECT_TRUE(ListDatasets(Channel(server.target(), trusted)).ok());
  ClientSecurityOptions by_name = trusted;  // The certificate's DNS name instead of its IP.
  by_name.tls_server_name = "localhost";
  EXPECT_TRUE(ListDatasets(Channel(server.target(), by_name)).ok());
  EXPECT_FALSE(server.service().saw_token());

  ClientSecurityOptions wrong_ca;
  wrong_ca.tls_ca_file = pki.other_ca_file;
  wrong_ca.token = kAliceToken;
  EXPECT_EQ(HealthCheck(Channel(server.target(), wrong_ca)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ClientSecurityOptions wrong_name = trusted;
  wrong_name.tls_server_name = "drfm.example.com";
  EXPECT_EQ(HealthCheck(Channel(server.target(), wrong_name)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ClientSecurityOptions plaintext;
  plaintext.token = kAliceToken;
  EXPECT_EQ(ListDatasets(Channel(server.target(), plaintext)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.service().calls(), 2);
}

TEST(AuthServerTest, MutualTlsServerRequiresAClientCertificateFromItsCa) {
  TempDir dir;
  Pki pki(dir);
  ServerSecurityOptions options;
  options.tls_cert_file = pki.server_cert_file;
  options.tls_key_file = pki.server_key_file;
  options.tls_client_ca_file = pki.ca_file;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  TestServer server(*credentials);
  ASSERT_TRUE(server.started());

  ClientSecurityOptions no_cert;
  no_cert.tls_ca_file = pki.ca_file;
  EXPECT_EQ(ListDatasets(Channel(server.target(), no_cert)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(HealthCheck(Channel(server.target(), no_cert)).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  ClientSecurityOptions stranger = no_cert;
  stranger.tls_cert_file = pki.stranger_cert_file;
  stranger.tls_key_file = pki.stranger_key_file;
  EXPECT_EQ(ListDatasets(Channel(server.target(), stranger)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.service().calls(), 0);

  ClientSecurityOptions client = no_cert;
  client.tls_cert_file = pki.client_cert_file;
  client.tls_key_file = pki.client_key_file;
  EXPECT_TRUE(ListDatasets(Channel(server.target(), client)).ok());
  EXPECT_TRUE(HealthCheck(Channel(server.target(), client)).ok());
  EXPECT_EQ(server.service().calls(), 1);
}

}  // namespace
}  // namespace drfm::server
