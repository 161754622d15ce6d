// Prometheus metrics of the drfm server (names in API.md, "Prometheus"): `ServerMetrics` owns the
// registry and the metric families and is what the job engine and the services report to;
// `ServerMetrics::NewInterceptorFactory()` counts and times every RPC (grpc_server_* metrics, as
// in go-grpc-prometheus); `MetricsExporter` serves the registry over HTTP at /metrics. Names carry
// the `drfm_` prefix and base units (seconds, bytes); no label ever holds a job id, dataset or
// model name, so the number of series is bounded by the code, not by the traffic.
#ifndef DRFM_SERVER_METRICS_H_
#define DRFM_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "drfm/v1/jobs.pb.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace google::protobuf {
class ServiceDescriptor;
}  // namespace google::protobuf

namespace prometheus {
class Collectable;
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace drfm::server {

// Bucket upper bounds (seconds) of the histograms, chosen for what each one times:
// Jobs run from about a second (a small synthetic fit) to hours (full Fashion-MNIST, deep MLPs).
inline constexpr std::array<double, 15> kJobDurationBuckets = {
    1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800};
// One phase of one layer: milliseconds (metrics on a few hundred rows) to an hour (an n x n kernel
// solve at n = 60000 in float64).
inline constexpr std::array<double, 17> kPhaseBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600};
// Predict: sub-millisecond (one row, small model) to tens of seconds (a large batch through a
// kernel readout against a large training set).
inline constexpr std::array<double, 15> kPredictLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
// Any RPC: Prometheus' default buckets (0.005..10 s, as go-grpc-prometheus uses), widened at the
// bottom for sub-millisecond unary calls and at the top for streams (UploadDataset, WatchJob),
// which last minutes to hours.
inline constexpr std::array<double, 18> kRpcHandlingBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
    0.5,    1,     2.5,    5,     10,   60,    300,  1800, 3600};

// Label value of a layer phase for drfm_layer_phase_seconds: Deep RFM "kernel", "solve", "agop",
// "project", "features", "metrics" (core::PhaseName), MLP jobs "train", "measure".
inline constexpr std::array<std::string_view, 8> kPhaseNames = {
    "kernel", "solve", "agop", "project", "features", "metrics", "train", "measure"};

// Every metric the server exports, as one object the job engine, the services and the gRPC
// interceptor report to. Status codes are labelled with gRPC's canonical names (GrpcCodeName in
// server/grpc_status.h: "OK", "INVALID_ARGUMENT", ...). Series with a bounded label set (job
// states, phases, the OK predict code) are created up front with value 0, so rate() and absent()
// work from the first scrape.
//
// Thread safety: every method may be called from any thread concurrently.
// Lifetime: must outlive every grpc::Server built with its interceptor factory and every
// MetricsExporter serving its registry.
class ServerMetrics {
 public:
  // `version` is the server's version, the `version` label of drfm_build_info (value 1).
  explicit ServerMetrics(std::string_view version);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The registry all families live in (for tests, or to add more families).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // What MetricsExporter serves: the registry, collected after running the scrape hooks.
  std::shared_ptr<prometheus::Collectable> collectable() const;
  // Registers `hook` to run at the start of every collection of collectable() (every scrape),
  // to refresh gauges from their source of truth just in time: e.g. SetJobsByState from the job
  // manager, SetQueueDepth, SetStoreStats from the store. Hooks run on the exporter's HTTP
  // thread, in registration order, possibly concurrently with the rest of the server: they must
  // be thread-safe, fast (they delay the scrape) and must not throw; what they use must outlive
  // the MetricsExporter.
  void AddScrapeHook(std::function<void()> hook);

  // Jobs.
  // A job was accepted (drfm_jobs_submitted_total). Not called for an idempotent resubmission
  // that returned an existing job.
  void OnJobSubmitted();
  // A job reached the terminal `state` (SUCCEEDED, FAILED or CANCELLED) after `seconds` from
  // submission (drfm_jobs_finished_total{state}, drfm_job_duration_seconds). Any other state is a
  // programming error and counts as state="unknown".
  void OnJobFinished(v1::Job::State state, double seconds);
  // The same with the state's proto name ("SUCCEEDED") or its label ("succeeded").
  void OnJobFinished(std::string_view state, double seconds);
  // Current number of jobs per state (drfm_jobs{state}); states missing from `counts` are set
  // to 0. Label values are lower case: queued, running, succeeded, failed, cancelled.
  void SetJobsByState(const std::map<v1::Job::State, int64_t>& counts);
  void SetJobsByState(const std::map<std::string, int64_t>& counts);
  // Jobs waiting for a worker (drfm_job_queue_depth).
  void SetQueueDepth(int64_t depth);
  // One layer phase took `seconds` (drfm_layer_phase_seconds{phase}); `phase` is one of
  // kPhaseNames, case-insensitive (so core::PhaseName and proto enum names both work); anything
  // else is recorded as phase="other".
  void ObservePhase(std::string_view phase, double seconds);

  // Models and the store.
  // One Predict request (or one PredictStream message) ended with `code` after `seconds`
  // (drfm_predict_requests_total{code}, drfm_predict_latency_seconds, whatever the code) and, when
  // OK, predicted `rows` rows (drfm_predict_rows_total).
  void ObservePredict(absl::StatusCode code, double seconds, int64_t rows);
  // Stored models (all versions) and bytes used by the store (drfm_models_stored,
  // drfm_store_bytes).
  void SetStoreStats(int64_t models, int64_t bytes);

  // RPCs.
  // An RPC was rejected with `code` (UNAUTHENTICATED / PERMISSION_DENIED) by bearer-token auth
  // before it reached a service (drfm_auth_rejected_total{grpc_code}). Such RPCs are not in
  // grpc_server_handled_total: gRPC ends them before any interceptor runs.
  void OnAuthRejected(grpc::StatusCode code);
  // Creates the interceptor factory for grpc::ServerBuilder::experimental()
  // .SetInterceptorCreators(): per RPC it counts grpc_server_started_total when the call starts,
  // grpc_server_msg_received_total / grpc_server_msg_sent_total per message, and when the
  // server sends the status grpc_server_handled_total{grpc_code} and grpc_server_handling_seconds
  // (from the start of the call). Labels: grpc_service ("drfm.v1.JobService"), grpc_method
  // ("SubmitFit"), grpc_type (unary | client_stream | server_stream | bidi_stream), grpc_code.
  // The recording happens before the status leaves the server, so a client that saw the status
  // finds it counted. Server interceptors see PRE_SEND_STATUS in list order: if another
  // interceptor ever rewrites statuses, put this factory after it. The factory keeps a pointer to
  // *this.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();
  // Creates the grpc_server_* series of every method of `service` (started, handled with code OK,
  // handling time) at 0, as go-grpc-prometheus' InitializeMetrics does, so dashboards and rate()
  // see them before the first call; these methods also do not count against kMaxRpcMethods.
  // The descriptor comes from the generated code, e.g. `*google::protobuf::DescriptorPool::
  // generated_pool()->FindServiceByName(v1::JobService::service_full_name())`.
  void InitializeRpcMethods(const google::protobuf::ServiceDescriptor& service);
  // What the interceptor records when an RPC ends; public for tests and for code paths that
  // bypass interceptors. `full_method` is "/package.Service/Method". At most kMaxRpcMethods
  // distinct methods get their own series; further ones (a client probing random paths) share
  // grpc_service="unknown", grpc_method="unknown". (gRPC runs interceptors for unregistered
  // methods too, which it answers with UNIMPLEMENTED, so without auth the paths are the client's
  // choice.)
  void ObserveRpc(std::string_view full_method, grpc::experimental::ServerRpcInfo::Type type,
                  grpc::StatusCode code, double seconds);
  static constexpr size_t kMaxRpcMethods = 256;

 private:
  friend class RpcMetricsInterceptor;
  // The series of one RPC method: created on first use, never moved or freed before *this, so
  // interceptors keep raw pointers and update them without locks.
  struct RpcSeries;
  // `reserved`: create it even beyond kMaxRpcMethods (InitializeRpcMethods).
  RpcSeries* GetRpcSeries(std::string_view full_method,
                          grpc::experimental::ServerRpcInfo::Type type, bool reserved = false);
  void ObserveRpc(RpcSeries& series, grpc::StatusCode code, double seconds);
  // grpc_server_handled_total of `series` and `code`, created on first use.
  prometheus::Counter& HandledCounter(RpcSeries& series, grpc::StatusCode code);

  class HookedCollectable;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<HookedCollectable> collectable_;

  prometheus::Family<prometheus::Gauge>* build_info_;
  prometheus::Counter* jobs_submitted_;
  prometheus::Family<prometheus::Counter>* jobs_finished_;
  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Gauge* queue_depth_;
  prometheus::Histogram* job_duration_;
  prometheus::Family<prometheus::Histogram>* phase_seconds_;
  std::array<prometheus::Histogram*, kPhaseNames.size()> phase_histograms_;
  prometheus::Histogram* other_phase_histogram_;
  prometheus::Family<prometheus::Counter>* predict_requests_;
  prometheus::Histogram* predict_latency_;
  prometheus::Counter* predict_rows_;
  prometheus::Gauge* models_stored_;
  prometheus::Gauge* store_bytes_;
  prometheus::Family<prometheus::Counter>* auth_rejected_;

  prometheus::Family<prometheus::Counter>* rpc_started_;
  prometheus::Family<prometheus::Counter>* rpc_handled_;
  prometheus::Family<prometheus::Histogram>* rpc_handling_;
  prometheus::Family<prometheus::Counter>* rpc_msg_received_;
  prometheus::Family<prometheus::Counter>* rpc_msg_sent_;

  absl::Mutex rpc_mu_;
  // Key: full method and type; values never move (the interceptor keeps raw pointers).
  absl::flat_hash_map<std::string, std::unique_ptr<RpcSeries>> rpc_series_ ABSL_GUARDED_BY(rpc_mu_);
  // Series created by calls rather than by InitializeRpcMethods; capped at kMaxRpcMethods.
  size_t unreserved_rpc_series_ ABSL_GUARDED_BY(rpc_mu_) = 0;
};

// Serves metrics in the Prometheus text format at http://ADDRESS/metrics (prometheus-cpp's
// Exposer, an embedded civetweb server with its own threads). Other paths answer 404.
//
// Thread safety: immutable after Start. Destroying it stops serving; after it has served a request
// that takes up to 2 s (civetweb 1.15 polls its listening socket in 2 s quanta).
class MetricsExporter {
 public:
  // Starts serving `collectable` (ServerMetrics::collectable(), or any prometheus::Registry) on
  // `address`, "HOST:PORT" ("127.0.0.1:9090", "0.0.0.0:9090"; port 0 picks a free port, see
  // port()). InvalidArgument when `address` is not HOST:PORT, Unavailable when it cannot be bound
  // (in use, no such interface).
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(
      const std::string& address, std::shared_ptr<prometheus::Collectable> collectable);
  ~MetricsExporter();
  MetricsExporter(const MetricsExporter&) = delete;
  MetricsExporter& operator=(const MetricsExporter&) = delete;

  // The bound TCP port (the real one when the address asked for port 0).
  int port() const { return port_; }

 private:
  MetricsExporter(std::unique_ptr<prometheus::Exposer> exposer,
                  std::shared_ptr<prometheus::Collectable> collectable, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> collectable_;  // Kept alive while served.
  int port_;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_METRICS_H_
