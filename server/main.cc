// drfm-server: parses flags, starts the service and waits for SIGTERM or SIGINT, then drains and
// exits 0 (API.md "Server").
#include <csignal>
#include <cstdio>

#include "server/server.h"

int main(int argc, char** argv) {
  int exit_code = 0;
  absl::StatusOr<drfm::server::ServerOptions> options = drfm::server::ParseServerOptions(argc, argv, &exit_code);
  if (!options.ok()) {
    std::fprintf(exit_code == 0 ? stdout : stderr, "%s\n", std::string(options.status().message()).c_str());
    return exit_code;
  }
  // Block the shutdown signals in every thread (threads inherit the mask) and take them here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<drfm::server::DrfmServer>> server = drfm::server::DrfmServer::Start(*options);
  if (!server.ok()) {
    std::fprintf(stderr, "drfm-server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("drfm-server %s listening on port %d (data dir %s)", drfm::server::kDrfmVersion, (*server)->port(),
              options->data_dir.c_str());
  if ((*server)->metrics_port() != 0) std::printf(", metrics on port %d at /metrics", (*server)->metrics_port());
  std::printf("\n");
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  std::printf("drfm-server: %s received, draining for up to %.0f s\n", signal == SIGTERM ? "SIGTERM" : "SIGINT",
              options->drain_seconds);
  std::fflush(stdout);
  (*server)->Shutdown(absl::Seconds(options->drain_seconds));
  server->reset();
  std::printf("drfm-server: stopped\n");
  return 0;
}
