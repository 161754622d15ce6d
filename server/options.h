// drfm-server's command-line options (API.md "Server") with their defaults, parsed with CLI11 and
// checked once by Validate().
#ifndef DRFM_SERVER_OPTIONS_H_
#define DRFM_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace drfm::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";          // gRPC address (host:port; port 0 = any free)
  std::string metrics_listen = "127.0.0.1:9464";   // Prometheus /metrics address; "" = off
  std::string data_dir = "./drfm-data";             // embedded store (SQLite + files)
  std::string builtin_dir = "/usr/share/datasets/fashion-mnist";  // fashion-mnist:train|test
  int workers = 1;                  // fits running at once
  int threads_per_fit = 0;          // OpenMP threads per fit; 0 = all cores / workers
  int queue_bound = 64;             // queued jobs accepted before RESOURCE_EXHAUSTED
  double memory_budget_gb = 0;      // per-fit estimated peak memory allowed; 0 = 80% of RAM
  double max_job_seconds = 0;       // a fit running longer fails; 0 = no limit
  int64_t max_message_bytes = 64 << 20;  // largest gRPC message received or sent
  int64_t max_predict_rows = 1 << 20;    // rows per Predict request
  double drain_seconds = 30;        // SIGTERM: how long running fits may finish
  std::string token_file;           // bearer tokens, one per line; "" = no auth
  std::string tls_cert;             // PEM server certificate chain; "" = plaintext
  std::string tls_key;              // PEM private key of tls_cert
  std::string tls_client_ca;        // PEM CA; when set, clients must present a certificate it signed

  // InvalidArgument naming the flag and what is allowed.
  absl::Status Validate() const;
};

// Parses argv. Returns the options, or an error whose message is the usage or the parse error;
// `exit_code` receives what main should return when the result is not OK (0 for --help).
absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv, int* exit_code);

}  // namespace drfm::server

#endif  // DRFM_SERVER_OPTIONS_H_
