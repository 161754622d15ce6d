#include "server/auth.h"

#include <fcntl.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "server/grpc_status.h"
#include "server/hash.h"

namespace drfm::server {
namespace {

constexpr size_t kMaxSecurityFileBytes = 1 << 20;
constexpr std::string_view kAuthorizationKey = "authorization";
constexpr std::string_view kPathKey = ":path";

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view StdView(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// The contents of the small file `path` (a token file, a PEM file); `what` names it in errors.
absl::StatusOr<std::string> ReadSmallFile(std::string_view what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(AbslView(what), " ", path, " does not exist"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open ", AbslView(what), " ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(what), " ", path, " is not a regular file"));
  }
  std::string data;
  char buffer[8192];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", AbslView(what), " ", path, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    data.append(buffer, static_cast<size_t>(n));
    if (data.size() > kMaxSecurityFileBytes) {
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(AbslView(what), " ", path, " is larger than 1 MiB; is it the right file?"));
    }
  }
  ::close(fd);
  return data;
}

// RFC 6750 b64token alphabet (we also accept '=' anywhere; padding only matters for decoding).
bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~' || c == '+' || c == '/' || c == '=';
}

// OK when `token` can be a bearer token; `where` ("token file X line 3") starts the message.
absl::Status ValidateToken(std::string_view where, std::string_view token) {
  for (char c : token) {
    if (!IsTokenChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          AbslView(where),
          ": the token has a character outside [A-Za-z0-9-._~+/=] (RFC 6750 bearer tokens)"));
    }
  }
  if (token.size() < kMinTokenLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(where), ": the token has ", token.size(), " characters; at least ",
                     kMinTokenLength, " are required (generate one with `openssl rand -hex 32`)"));
  }
  return absl::OkStatus();
}

// Parses "Bearer <token>": the token, or nullopt when the value is not of that form.
std::optional<std::string_view> ParseBearer(std::string_view value) {
  constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(AbslView(value.substr(0, kScheme.size())), AbslView(kScheme))) {
    return std::nullopt;
  }
  std::string_view rest = value.substr(kScheme.size());
  if (rest.front() != ' ') return std::nullopt;
  rest = StdView(absl::StripAsciiWhitespace(AbslView(rest)));
  if (rest.empty()) return std::nullopt;
  return rest;
}

// The token check for one call, shared by both ways it is plugged into gRPC. `authorization` and
// `path` come from the call's initial metadata. Sets *consume when the authorization metadata
// should be removed from the call.
absl::Status CheckCall(const BearerTokenAuthenticator& authenticator,
                       const AuthRejectObserver& on_reject, std::string_view path,
                       std::optional<std::string_view> authorization, bool* consume) {
  absl::Status status = authenticator.Authorize(path, authorization);
  if (!status.ok() && on_reject) on_reject(ToGrpcStatus(status).error_code());
  *consume = status.ok() && authorization.has_value();
  return status;
}

// The AuthMetadataProcessor for TLS server credentials (gRPC's own adapter runs it; non-blocking:
// it runs inline on the transport thread, the check being a few SHA-256 compares).
class BearerTokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  BearerTokenProcessor(std::shared_ptr<const BearerTokenAuthenticator> authenticator,
                       AuthRejectObserver on_reject)
      : authenticator_(std::move(authenticator)), on_reject_(std::move(on_reject)) {}

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* /*context*/,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* /*response_metadata*/) override {
    std::string_view path;
    std::optional<std::string_view> authorization;
    if (auto it = auth_metadata.find(std::string(kPathKey)); it != auth_metadata.end()) {
      path = std::string_view(it->second.data(), it->second.size());
    }
    if (auto it = auth_metadata.find(std::string(kAuthorizationKey)); it != auth_metadata.end()) {
      authorization = std::string_view(it->second.data(), it->second.size());
    }
    bool consume = false;
    const absl::Status status =
        CheckCall(*authenticator_, on_reject_, path, authorization, &consume);
    if (!status.ok()) return ToGrpcStatus(status);
    if (consume) {
      consumed_auth_metadata->emplace(std::string(kAuthorizationKey), std::string(*authorization));
    }
    return grpc::Status::OK;
  }

 private:
  std::shared_ptr<const BearerTokenAuthenticator> authenticator_;
  AuthRejectObserver on_reject_;
};

// Plaintext server credentials with the token check. gRPC's C++ InsecureServerCredentials cannot
// take an AuthMetadataProcessor (it asserts), but the core's insecure credentials run the same
// server auth filter as TLS ones, so this binds the port through the core API with a processor.
class PlaintextTokenServerCredentials : public grpc::ServerCredentials {
 public:
  struct State {
    std::shared_ptr<const BearerTokenAuthenticator> authenticator;
    AuthRejectObserver on_reject;
  };

  explicit PlaintextTokenServerCredentials(State state) : state_(std::move(state)) {}

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    // The processor is the token check; another one would silently replace it. Never called by
    // gRPC itself.
    std::fprintf(stderr, "drfm: SetAuthMetadataProcessor is not supported on these credentials\n");
    std::abort();
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    grpc_server_credentials* creds = grpc_insecure_server_credentials_create();
    grpc_auth_metadata_processor processor;
    processor.process = &Process;
    processor.destroy = [](void* state) { delete static_cast<State*>(state); };
    processor.state = new State(state_);
    grpc_server_credentials_set_auth_metadata_processor(creds, processor);
    const int port = grpc_server_add_http2_port(server, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    return port;
  }

  static std::string_view SliceView(const grpc_slice& slice) {
    return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                            GRPC_SLICE_LENGTH(slice));
  }

  // grpc_auth_metadata_processor::process: decides synchronously and reports through `cb`.
  static void Process(void* raw_state, grpc_auth_context* /*context*/, const grpc_metadata* md,
                      size_t num_md, grpc_process_auth_metadata_done_cb cb, void* user_data) {
    const State& state = *static_cast<const State*>(raw_state);
    std::string_view path;
    std::optional<std::string_view> authorization;
    const grpc_metadata* authorization_md = nullptr;
    for (size_t i = 0; i < num_md; ++i) {
      const std::string_view key = SliceView(md[i].key);
      if (key == kPathKey) {
        path = SliceView(md[i].value);
      } else if (key == kAuthorizationKey && authorization_md == nullptr) {
        authorization_md = &md[i];
        authorization = SliceView(md[i].value);
      }
    }
    bool consume = false;
    const absl::Status status =
        CheckCall(*state.authenticator, state.on_reject, path, authorization, &consume);
    if (!status.ok()) {
      const grpc::Status grpc_status = ToGrpcStatus(status);
      cb(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(grpc_status.error_code()),
         grpc_status.error_message().c_str());
      return;
    }
    cb(user_data, consume ? authorization_md : nullptr, consume ? 1 : 0, nullptr, 0, GRPC_STATUS_OK,
       nullptr);
  }

  State state_;
};

// The first OpenSSL error, for messages.
std::string OpenSslError() {
  const unsigned long err = ERR_get_error();
  ERR_clear_error();
  if (err == 0) return "no details";
  char buffer[256];
  ERR_error_string_n(err, buffer, sizeof(buffer));
  return buffer;
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }
};

std::unique_ptr<BIO, BioDeleter> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Reads the PEM certificate file `path` and checks that it holds at least one certificate; the
// first one is returned through *first (if given).
absl::StatusOr<std::string> ReadCertificates(std::string_view what, const std::string& path,
                                             std::unique_ptr<X509, X509Deleter>* first = nullptr) {
  absl::StatusOr<std::string> pem = ReadSmallFile(what, path);
  if (!pem.ok()) return pem.status();
  auto bio = MemoryBio(*pem);
  std::unique_ptr<X509, X509Deleter> cert(
      bio == nullptr ? nullptr : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        AbslView(what), " ", path, " holds no PEM certificate (", OpenSslError(), ")"));
  }
  if (first != nullptr) *first = std::move(cert);
  return pem;
}

// Reads a PEM certificate chain and its private key and checks that they belong together.
absl::StatusOr<std::pair<std::string, std::string>> ReadKeyPair(std::string_view who,
                                                                const std::string& cert_path,
                                                                const std::string& key_path) {
  std::unique_ptr<X509, X509Deleter> cert;
  absl::StatusOr<std::string> cert_pem =
      ReadCertificates(absl::StrCat(AbslView(who), " certificate file"), cert_path, &cert);
  if (!cert_pem.ok()) return cert_pem.status();
  const std::string key_what = absl::StrCat(AbslView(who), " key file");
  absl::StatusOr<std::string> key_pem = ReadSmallFile(key_what, key_path);
  if (!key_pem.ok()) return key_pem.status();
  auto bio = MemoryBio(*key_pem);
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key(
      bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_what, " ", key_path, " holds no unencrypted PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_what, " ", key_path, " does not match the certificate in ", cert_path));
  }
  return std::make_pair(*std::move(cert_pem), *std::move(key_pem));
}

// Client side: adds the bearer token as call credentials (TLS channels).
class BearerTokenPlugin : public grpc::MetadataCredentialsPlugin {
 public:
  explicit BearerTokenPlugin(std::string token) : value_(absl::StrCat("Bearer ", token)) {}
  bool IsBlocking() const override { return false; }
  const char* GetType() const override { return "drfm.bearer_token"; }
  grpc::Status GetMetadata(grpc::string_ref /*service_url*/, grpc::string_ref /*method_name*/,
                           const grpc::AuthContext& /*channel_auth_context*/,
                           std::multimap<grpc::string, grpc::string>* metadata) override {
    metadata->emplace(std::string(kAuthorizationKey), value_);
    return grpc::Status::OK;
  }

 private:
  const std::string value_;
};

// Client side: adds the bearer token to the initial metadata (plaintext channels).
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(std::string(kAuthorizationKey), *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;  // Owned by the factory, which outlives the channel's calls.
};

class BearerTokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token)
      : value_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(&value_);
  }

 private:
  const std::string value_;
};

}  // namespace

absl::StatusOr<std::vector<TokenEntry>> LoadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadSmallFile("token file", path);
  if (!contents.ok()) return contents.status();
  std::vector<TokenEntry> entries;
  std::set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*contents, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const std::string where = absl::StrCat("token file ", path, " line ", line_number);
    const size_t space = line.find_first_of(" \t");
    TokenEntry entry;
    entry.token = std::string(line.substr(0, space));
    if (space != absl::string_view::npos) {
      entry.name = std::string(absl::StripAsciiWhitespace(line.substr(space)));
    }
    if (entry.name.empty()) entry.name = absl::StrCat("line ", line_number);
    absl::Status valid = ValidateToken(where, entry.token);
    if (!valid.ok()) return valid;
    if (!seen.insert(entry.token).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the token is listed twice; list each token once"));
    }
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token file ", path,
        " holds no token; list one token per line (\"<token> [name]\"; # starts a comment)"));
  }
  return entries;
}

bool IsAuthExempt(std::string_view full_method) {
  constexpr std::string_view kHealthPrefix = "/grpc.health.v1.Health/";
  return full_method.substr(0, kHealthPrefix.size()) == kHealthPrefix;
}

BearerTokenAuthenticator::BearerTokenAuthenticator(std::vector<std::string> digests,
                                                   std::vector<std::string> names)
    : digests_(std::move(digests)), names_(std::move(names)) {}

absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> BearerTokenAuthenticator::Create(
    const std::vector<TokenEntry>& entries) {
  if (entries.empty()) {
    return absl::InvalidArgumentError("no bearer tokens given; list at least one");
  }
  std::vector<std::string> digests;
  std::vector<std::string> names;
  std::set<std::string_view> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string where = absl::StrCat("token ", i + 1, " (", entries[i].name, ")");
    absl::Status valid = ValidateToken(where, entries[i].token);
    if (!valid.ok()) return valid;
    if (!seen.insert(entries[i].token).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the token is listed twice"));
    }
    digests.push_back(Sha256Hex(entries[i].token));
    names.push_back(entries[i].name);
  }
  return std::shared_ptr<const BearerTokenAuthenticator>(
      new BearerTokenAuthenticator(std::move(digests), std::move(names)));
}

absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> BearerTokenAuthenticator::FromFile(
    const std::string& path) {
  absl::StatusOr<std::vector<TokenEntry>> entries = LoadTokenFile(path);
  if (!entries.ok()) return entries.status();
  return Create(*entries);
}

absl::Status BearerTokenAuthenticator::Authorize(std::string_view full_method,
                                                 std::optional<std::string_view> authorization,
                                                 std::string* token_name) const {
  if (token_name != nullptr) token_name->clear();
  if (IsAuthExempt(full_method)) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "missing bearer token: this server requires `authorization: Bearer <token>` metadata "
        "(drfm CLI: pass --token-file)");
  }
  const std::optional<std::string_view> token = ParseBearer(*authorization);
  if (!token.has_value()) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected `Bearer <token>` (drfm CLI: pass "
        "--token-file)");
  }
  const std::string digest = Sha256Hex(*token);
  // Compare with every listed token, without stopping at a match, so the time taken does not
  // depend on which token (if any) matched.
  size_t match = digests_.size();
  for (size_t i = 0; i < digests_.size(); ++i) {
    const bool equal = CRYPTO_memcmp(digest.data(), digests_[i].data(), digest.size()) == 0;
    match = equal ? i : match;
  }
  if (match == digests_.size()) {
    return absl::PermissionDeniedError(
        "bearer token not allowed: it is not in this server's token file");
  }
  if (token_name != nullptr) *token_name = names_[match];
  return absl::OkStatus();
}

absl::Status ServerSecurityOptions::Validate() const {
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate file and a key file (--tls-cert and --tls-key); only one "
        "was given");
  }
  if (!tls_client_ca_file.empty() && tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "a client CA file (mutual TLS) needs TLS: also give a certificate and a key file");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options, AuthRejectObserver on_reject) {
  std::shared_ptr<const BearerTokenAuthenticator> authenticator;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> loaded =
        BearerTokenAuthenticator::FromFile(options.token_file);
    if (!loaded.ok()) return loaded.status();
    authenticator = *std::move(loaded);
  }
  return MakeServerCredentials(options, std::move(authenticator), std::move(on_reject));
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options,
    std::shared_ptr<const BearerTokenAuthenticator> authenticator, AuthRejectObserver on_reject) {
  absl::Status valid = options.Validate();
  if (!valid.ok()) return valid;
  if (!options.tls_enabled()) {
    if (authenticator == nullptr) return grpc::InsecureServerCredentials();
    return std::shared_ptr<grpc::ServerCredentials>(
        std::make_shared<PlaintextTokenServerCredentials>(PlaintextTokenServerCredentials::State{
            std::move(authenticator), std::move(on_reject)}));
  }
  absl::StatusOr<std::pair<std::string, std::string>> key_pair =
      ReadKeyPair("TLS", options.tls_cert_file, options.tls_key_file);
  if (!key_pair.ok()) return key_pair.status();
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({key_pair->second, key_pair->first});
  if (!options.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadCertificates("TLS client CA file", options.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(ssl);
  if (creds == nullptr) {
    return absl::InvalidArgumentError("gRPC rejected the TLS certificate or key");
  }
  if (authenticator != nullptr) {
    creds->SetAuthMetadataProcessor(
        std::make_shared<BearerTokenProcessor>(std::move(authenticator), std::move(on_reject)));
  }
  return creds;
}

absl::Status ClientSecurityOptions::Validate() const {
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate (mutual TLS) needs both a certificate file and a key file; only "
        "one was given");
  }
  if (!tls_server_name.empty() && !tls_enabled()) {
    return absl::InvalidArgumentError("a TLS server name override needs TLS");
  }
  if (token_file.empty() && !token.empty()) {
    return ValidateToken("the bearer token", token);
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::CallCredentials> BearerTokenCallCredentials(std::string token) {
  return grpc::MetadataCredentialsFromPlugin(std::make_unique<BearerTokenPlugin>(std::move(token)));
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
NewBearerTokenInterceptorFactory(std::string token) {
  return std::make_unique<BearerTokenInterceptorFactory>(std::move(token));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientSecurityOptions& options) {
  absl::Status valid = options.Validate();
  if (!valid.ok()) return valid;
  if (!options.tls_enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadCertificates("TLS CA file", options.tls_ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::pair<std::string, std::string>> key_pair =
        ReadKeyPair("TLS client", options.tls_cert_file, options.tls_key_file);
    if (!key_pair.ok()) return key_pair.status();
    ssl.pem_cert_chain = std::move(key_pair->first);
    ssl.pem_private_key = std::move(key_pair->second);
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ClientSecurityOptions& options, grpc::ChannelArguments args) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = MakeChannelCredentials(options);
  if (!creds.ok()) return creds.status();
  std::string token = options.token;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::vector<TokenEntry>> entries = LoadTokenFile(options.token_file);
    if (!entries.ok()) return entries.status();
    token = entries->front().token;
  }
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!token.empty()) {
    if (options.tls_enabled()) {
      *creds = grpc::CompositeChannelCredentials(*creds, BearerTokenCallCredentials(token));
    } else {
      interceptors.push_back(NewBearerTokenInterceptorFactory(token));
    }
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, *creds, args,
                                                                 std::move(interceptors));
}

}  // namespace drfm::server
