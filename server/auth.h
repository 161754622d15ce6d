// Transport security and caller authentication of the drfm service: optional bearer tokens
// (`authorization: Bearer <token>` metadata, checked against a token file) and optional TLS or
// mutual TLS, on the server (MakeServerCredentials) and, matching it, on the client
// (CreateClientChannel, used by the CLI and the tests).
//
// Token file format (server --token-file; the client's --token-file uses the first token):
//   # comment                    lines whose first non-blank character is '#' are ignored
//   <token>                      one allowed token per line ...
//   <token> <name words...>      ... optionally followed by a name for it (logs, audits)
// Blank lines are ignored; leading and trailing white space is trimmed. A token is at least
// kMinTokenLength characters from the RFC 6750 token alphabet [A-Za-z0-9-._~+/=] (e.g.
// `openssl rand -hex 32`); tokens must be distinct. A file without any token is an error (an
// empty token file would otherwise lock everyone out, or be mistaken for "auth off").
//
// What is enforced: with a token file, every RPC needs a listed token except the health service
// (grpc.health.v1.Health/*: load balancers and kubelet probes carry no token). Server reflection
// needs one too: it tells an anonymous caller which services and methods this deployment exposes
// (grpcurl passes the token with -H 'authorization: Bearer ...'). A call without `authorization`
// metadata fails with UNAUTHENTICATED; with one that is not `Bearer <token>` UNAUTHENTICATED as
// well; with a token that is not listed PERMISSION_DENIED. The check runs in gRPC's server auth
// filter (an AuthMetadataProcessor), before interceptors and services, and it removes the
// `authorization` metadata so no service can log it. Tokens are compared by their SHA-256 digests
// with CRYPTO_memcmp against every listed token, so timing reveals neither the token nor which
// one matched. Tokens without TLS travel in clear text: use that only on loopback or inside a
// network that encrypts (a service mesh).
#ifndef DRFM_SERVER_AUTH_H_
#define DRFM_SERVER_AUTH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_interceptor.h"
#include "grpcpp/support/status.h"

namespace drfm::server {

// Shortest token accepted (16 characters: 96 bits of entropy for base64, 64 for hex).
inline constexpr size_t kMinTokenLength = 16;

// One line of a token file.
struct TokenEntry {
  std::string token;
  std::string name;  // From the file, or "line N" when the line names none.
};

// The entries of the token file at `path` (format above). NotFound when the file does not exist;
// InvalidArgument when it cannot be read, is larger than 1 MiB, holds no token, a malformed or
// short token, or the same token twice; the message names the file and the line.
absl::StatusOr<std::vector<TokenEntry>> LoadTokenFile(const std::string& path);

// RPCs that need no token: "/grpc.health.v1.Health/..." only.
bool IsAuthExempt(std::string_view full_method);

// Decides whether a call may proceed, from its method and its `authorization` metadata.
// Thread safety: immutable after construction; Authorize may be called concurrently.
class BearerTokenAuthenticator {
 public:
  // InvalidArgument when `entries` is empty or a token is malformed, short or repeated.
  static absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> Create(
      const std::vector<TokenEntry>& entries);
  // LoadTokenFile + Create.
  static absl::StatusOr<std::shared_ptr<const BearerTokenAuthenticator>> FromFile(
      const std::string& path);

  // OK when `full_method` ("/drfm.v1.JobService/SubmitFit") is exempt or `authorization` (the
  // first value of the `authorization` metadata; nullopt when absent) is "Bearer <token>" (scheme
  // case-insensitive) with a listed token; then *token_name (if given) is that token's name, or
  // empty for an exempt call. Unauthenticated when the metadata is missing or malformed;
  // PermissionDenied when the token is not listed. The messages never echo the token.
  absl::Status Authorize(std::string_view full_method,
                         std::optional<std::string_view> authorization,
                         std::string* token_name = nullptr) const;

  size_t size() const { return digests_.size(); }

 private:
  BearerTokenAuthenticator(std::vector<std::string> digests, std::vector<std::string> names);

  std::vector<std::string> digests_;  // Hex SHA-256 of each token (all the same length).
  std::vector<std::string> names_;
};

// Called with UNAUTHENTICATED or PERMISSION_DENIED for each rejected call (e.g. to feed
// ServerMetrics::OnAuthRejected). Runs on a gRPC thread: must be fast and must not block.
using AuthRejectObserver = std::function<void(grpc::StatusCode code)>;

// How the server's listening port is secured. Defaults: plaintext, no tokens.
struct ServerSecurityOptions {
  std::string token_file;          // Non-empty: require bearer tokens from this file.
  std::string tls_cert_file;       // PEM certificate chain; with tls_key_file turns TLS on.
  std::string tls_key_file;        // PEM private key of the first certificate.
  std::string tls_client_ca_file;  // PEM CA bundle; non-empty: require and verify client
                                   // certificates signed by it (mutual TLS). Needs TLS.

  bool tls_enabled() const { return !tls_cert_file.empty(); }
  // InvalidArgument when only one of cert / key is given, or a client CA without TLS.
  absl::Status Validate() const;
};

// Server credentials for `options`: plaintext or TLS (mTLS with a client CA), with the bearer-token
// check when a token file is given. The files are read and checked now (the PEM parses, the key
// matches the certificate), so a bad file fails at startup with a message naming it: NotFound for
// a missing file, InvalidArgument for an unreadable or malformed one or invalid options.
// `on_reject` (may be empty) is told about every call the token check rejects.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options, AuthRejectObserver on_reject = nullptr);

// The same with an authenticator built by the caller (nullptr = no token check); the token file
// in `options` is ignored.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurityOptions& options,
    std::shared_ptr<const BearerTokenAuthenticator> authenticator,
    AuthRejectObserver on_reject = nullptr);

// Client side. These depend only on gRPC and OpenSSL (and LoadTokenFile), so they can move to the
// client library unchanged.

// How a client connects. Defaults: plaintext, no token.
struct ClientSecurityOptions {
  std::string token_file;       // Non-empty: send the first token of this file (format above).
  std::string token;            // Or the token itself (token_file wins when both are set).
  bool tls = false;             // Use TLS; implied by any tls_* file below.
  std::string tls_ca_file;      // PEM roots to verify the server with; empty: the system roots.
  std::string tls_cert_file;    // PEM client certificate chain for mutual TLS (with the key).
  std::string tls_key_file;     // PEM private key of the client certificate.
  std::string tls_server_name;  // Name to verify the server certificate against instead of the
                                // host in the target (e.g. when connecting by IP address).

  bool tls_enabled() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty();
  }
  // InvalidArgument when only one of client cert / key is given, or tls_server_name without TLS.
  absl::Status Validate() const;
};

// Call credentials that add `authorization: Bearer <token>` to every call. gRPC sends call
// credentials over TLS channels only; CreateClientChannel uses an interceptor on plaintext ones.
std::shared_ptr<grpc::CallCredentials> BearerTokenCallCredentials(std::string token);

// A client interceptor factory that adds `authorization: Bearer <token>` to every call, for
// plaintext channels (see BearerTokenCallCredentials).
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
NewBearerTokenInterceptorFactory(std::string token);

// Channel credentials for `options` without the token: TLS (with a client certificate when
// given) or plaintext. NotFound / InvalidArgument for a missing / unreadable or malformed file.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientSecurityOptions& options);

// A channel to `target` ("host:port") secured as `options` say, sending the token (if any) with
// every call: as call credentials over TLS, by an interceptor over plaintext. Errors as
// MakeChannelCredentials, and LoadTokenFile's for the token file. `args` are passed to the
// channel (tls_server_name is added to them).
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ClientSecurityOptions& options,
    grpc::ChannelArguments args = grpc::ChannelArguments());

}  // namespace drfm::server

#endif  // DRFM_SERVER_AUTH_H_
