// DrfmServer: the whole service assembled from its parts (store, dataset resolver, job manager,
// model registry, metrics, security) and served over gRPC with health checking and reflection.
// main.cc only parses flags, starts one and waits for a signal; tests start one on port 0.
#ifndef DRFM_SERVER_SERVER_H_
#define DRFM_SERVER_SERVER_H_

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/dataset_service.h"
#include "server/datasets.h"
#include "server/job_manager.h"
#include "server/job_service.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/model_service.h"
#include "server/options.h"
#include "server/store.h"

namespace drfm::server {

// The version reported by drfm_build_info and the health of the binary.
inline constexpr char kDrfmVersion[] = "0.1.0";

// Thread-safe: Shutdown may be called from any thread, once or more.
class DrfmServer {
 public:
  // Opens the store, recovers its jobs, starts the workers, the gRPC server and the metrics
  // exporter. Errors: the options' (InvalidArgument), the store's (FailedPrecondition when the
  // data dir is in use), Unavailable when an address cannot be bound.
  static absl::StatusOr<std::unique_ptr<DrfmServer>> Start(const ServerOptions& options);
  ~DrfmServer();

  int port() const { return port_; }                 // the bound gRPC port
  int metrics_port() const;                          // 0 when metrics are off
  const ServerOptions& options() const { return options_; }

  // Stops taking work (health NOT_SERVING, submissions UNAVAILABLE), lets running fits finish for
  // up to `drain` and re-queues the others (stored, they run after a restart), then stops the
  // gRPC server (open streams end) and the exporter.
  void Shutdown(absl::Duration drain);

 private:
  explicit DrfmServer(ServerOptions options);

  ServerOptions options_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<JobManagerListener> listener_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DatasetResolver> resolver_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<DatasetServiceImpl> dataset_service_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<ModelServiceImpl> model_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsExporter> exporter_;
  int port_ = 0;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_SERVER_H_
