#include "server/options.h"

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"

namespace drfm::server {

absl::Status ServerOptions::Validate() const {
  auto bad = [](const std::string& flag, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", what));
  };
  if (listen.empty() || listen.find(':') == std::string::npos) return bad("listen", "use HOST:PORT, e.g. 127.0.0.1:50051");
  if (!metrics_listen.empty() && metrics_listen.find(':') == std::string::npos) {
    return bad("metrics-listen", "use HOST:PORT, e.g. 127.0.0.1:9464, or \"\" to turn metrics off");
  }
  if (data_dir.empty()) return bad("data-dir", "a directory is required");
  if (workers < 1 || workers > 64) return bad("workers", "use 1 to 64");
  if (threads_per_fit < 0 || threads_per_fit > 1024) return bad("threads-per-fit", "use 0 (automatic) to 1024");
  if (queue_bound < 1 || queue_bound > 100000) return bad("queue-bound", "use 1 to 100000");
  if (memory_budget_gb < 0) return bad("memory-budget-gb", "use 0 (80% of RAM) or a positive size");
  if (max_job_seconds < 0) return bad("max-job-seconds", "use 0 (no limit) or a positive duration");
  if (max_message_bytes < 1024 || max_message_bytes > (int64_t{1} << 31) - 1) {
    return bad("max-message-bytes", "use 1024 to 2147483647");
  }
  if (max_predict_rows < 1) return bad("max-predict-rows", "use 1 or more");
  if (drain_seconds < 0) return bad("drain-seconds", "use 0 or more");
  if (tls_cert.empty() != tls_key.empty()) return bad("tls-cert", "--tls-cert and --tls-key go together");
  if (!tls_client_ca.empty() && tls_cert.empty()) return bad("tls-client-ca", "mTLS needs --tls-cert and --tls-key too");
  return absl::OkStatus();
}

absl::StatusOr<ServerOptions> ParseServerOptions(int argc, char** argv, int* exit_code) {
  ServerOptions o;
  CLI::App app{"drfm-server: Deep RFM experiments over gRPC (API: proto/drfm/v1)"};
  app.add_option("--listen", o.listen, "gRPC address HOST:PORT")->capture_default_str();
  app.add_option("--metrics-listen", o.metrics_listen, "Prometheus /metrics address HOST:PORT (\"\" = off)")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "directory of the embedded store")->capture_default_str();
  app.add_option("--builtin-dir", o.builtin_dir, "Fashion-MNIST directory for fashion-mnist:train|test")
      ->capture_default_str();
  app.add_option("--workers", o.workers, "fits running at once")->capture_default_str();
  app.add_option("--threads-per-fit", o.threads_per_fit, "OpenMP threads per fit (0 = cores / workers)")
      ->capture_default_str();
  app.add_option("--queue-bound", o.queue_bound, "queued jobs accepted before RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--memory-budget-gb", o.memory_budget_gb, "largest estimated fit memory (0 = 80% of RAM)")
      ->capture_default_str();
  app.add_option("--max-job-seconds", o.max_job_seconds, "fail fits running longer (0 = no limit)")
      ->capture_default_str();
  app.add_option("--max-message-bytes", o.max_message_bytes, "largest gRPC message")->capture_default_str();
  app.add_option("--max-predict-rows", o.max_predict_rows, "rows per Predict request")->capture_default_str();
  app.add_option("--drain-seconds", o.drain_seconds, "on SIGTERM, how long running fits may finish")
      ->capture_default_str();
  app.add_option("--token-file", o.token_file, "bearer tokens, one per line (enables auth)");
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain (enables TLS)");
  app.add_option("--tls-key", o.tls_key, "PEM private key");
  app.add_option("--tls-client-ca", o.tls_client_ca, "PEM CA for client certificates (enables mTLS)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = e.get_exit_code();
    if (e.get_exit_code() == 0) return absl::CancelledError(app.help());
    return absl::InvalidArgumentError(e.what());
  }
  absl::Status valid = o.Validate();
  if (!valid.ok()) {
    *exit_code = 2;
    return valid;
  }
  *exit_code = 0;
  return o;
}

}  // namespace drfm::server
