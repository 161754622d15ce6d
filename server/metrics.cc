#include "server/metrics.h"

#include <cctype>
#include <chrono>
#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/grpc_status.h"

namespace drfm::server {
namespace {

using RpcType = grpc::experimental::ServerRpcInfo::Type;

// grpc::StatusCode runs from OK (0) to UNAUTHENTICATED (16).
constexpr int kNumStatusCodes = 17;

// Job states with the label value each one gets.
constexpr std::array<std::pair<v1::Job::State, std::string_view>, 5> kJobStates = {{
    {v1::Job::QUEUED, "queued"},
    {v1::Job::RUNNING, "running"},
    {v1::Job::SUCCEEDED, "succeeded"},
    {v1::Job::FAILED, "failed"},
    {v1::Job::CANCELLED, "cancelled"},
}};
constexpr std::array<v1::Job::State, 3> kTerminalStates = {v1::Job::SUCCEEDED, v1::Job::FAILED,
                                                           v1::Job::CANCELLED};

std::string_view JobStateLabel(v1::Job::State state) {
  for (const auto& [s, label] : kJobStates) {
    if (s == state) return label;
  }
  return "unknown";
}

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The state named by a proto enum name ("SUCCEEDED") or a label ("succeeded");
// STATE_UNSPECIFIED when it names none.
v1::Job::State ParseJobState(std::string_view name) {
  const std::string lower = AsciiLower(name);
  for (const auto& [s, label] : kJobStates) {
    if (lower == label) return s;
  }
  return v1::Job::STATE_UNSPECIFIED;
}

std::string_view RpcTypeLabel(RpcType type) {
  switch (type) {
    case RpcType::UNARY:
      return "unary";
    case RpcType::CLIENT_STREAMING:
      return "client_stream";
    case RpcType::SERVER_STREAMING:
      return "server_stream";
    case RpcType::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

template <size_t N>
prometheus::Histogram::BucketBoundaries Buckets(const std::array<double, N>& bounds) {
  return prometheus::Histogram::BucketBoundaries(bounds.begin(), bounds.end());
}

// Splits "/package.Service/Method" into its service and method; false when it is not of that form.
bool SplitFullMethod(std::string_view full_method, std::string_view* service,
                     std::string_view* method) {
  if (full_method.size() < 4 || full_method.front() != '/') return false;
  const size_t slash = full_method.rfind('/');
  if (slash == 0 || slash + 1 == full_method.size()) return false;
  *service = full_method.substr(1, slash - 1);
  *method = full_method.substr(slash + 1);
  return true;
}

}  // namespace

struct ServerMetrics::RpcSeries {
  prometheus::Labels labels;  // grpc_service, grpc_method, grpc_type.
  prometheus::Counter* started = nullptr;
  prometheus::Counter* msg_received = nullptr;
  prometheus::Counter* msg_sent = nullptr;
  prometheus::Histogram* handling = nullptr;
  // grpc_server_handled_total per code, created on first use (Family::Add is idempotent and
  // thread-safe, so two threads racing to create one store the same pointer).
  std::array<std::atomic<prometheus::Counter*>, kNumStatusCodes> handled{};
};

// The registry behind the scrape hooks.
class ServerMetrics::HookedCollectable : public prometheus::Collectable {
 public:
  explicit HookedCollectable(std::shared_ptr<prometheus::Registry> registry)
      : registry_(std::move(registry)) {}

  void AddHook(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    hooks_.push_back(std::make_shared<std::function<void()>>(std::move(hook)));
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<std::shared_ptr<std::function<void()>>> hooks;
    {
      absl::MutexLock lock(&mu_);
      hooks = hooks_;
    }
    for (const auto& hook : hooks) (*hook)();
    return registry_->Collect();
  }

 private:
  const std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<std::function<void()>>> hooks_ ABSL_GUARDED_BY(mu_);
};

ServerMetrics::ServerMetrics(std::string_view version)
    : registry_(std::make_shared<prometheus::Registry>()),
      collectable_(std::make_shared<HookedCollectable>(registry_)) {
  prometheus::Registry& r = *registry_;
  build_info_ = &prometheus::BuildGauge()
                     .Name("drfm_build_info")
                     .Help("Always 1; the labels describe the running drfm server build.")
                     .Register(r);
  build_info_->Add({{"version", std::string(version)}}).Set(1);

  jobs_submitted_ = &prometheus::BuildCounter()
                         .Name("drfm_jobs_submitted_total")
                         .Help("Jobs accepted by SubmitFit, SubmitMlpFit and SubmitAnalysis.")
                         .Register(r)
                         .Add({});
  jobs_finished_ = &prometheus::BuildCounter()
                        .Name("drfm_jobs_finished_total")
                        .Help("Jobs that reached a terminal state, by that state.")
                        .Register(r);
  for (v1::Job::State state : kTerminalStates) {
    jobs_finished_->Add({{"state", std::string(JobStateLabel(state))}});
  }
  jobs_ = &prometheus::BuildGauge()
               .Name("drfm_jobs")
               .Help("Jobs known to the server, by state.")
               .Register(r);
  for (const auto& [state, label] : kJobStates) jobs_->Add({{"state", std::string(label)}});
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("drfm_job_queue_depth")
                      .Help("Jobs waiting for a worker.")
                      .Register(r)
                      .Add({});
  job_duration_ = &prometheus::BuildHistogram()
                       .Name("drfm_job_duration_seconds")
                       .Help("Time from submission to the terminal state of finished jobs.")
                       .Register(r)
                       .Add({}, Buckets(kJobDurationBuckets));
  phase_seconds_ = &prometheus::BuildHistogram()
                        .Name("drfm_layer_phase_seconds")
                        .Help(
                            "Time spent in one phase of one layer (Deep RFM) or one training / "
                            "measurement step (MLP).")
                        .Register(r);
  for (size_t i = 0; i < kPhaseNames.size(); ++i) {
    phase_histograms_[i] =
        &phase_seconds_->Add({{"phase", std::string(kPhaseNames[i])}}, Buckets(kPhaseBuckets));
  }
  other_phase_histogram_ = &phase_seconds_->Add({{"phase", "other"}}, Buckets(kPhaseBuckets));

  predict_requests_ = &prometheus::BuildCounter()
                           .Name("drfm_predict_requests_total")
                           .Help("Predict requests (PredictStream: messages), by status code.")
                           .Register(r);
  predict_requests_->Add({{"code", "OK"}});
  predict_latency_ = &prometheus::BuildHistogram()
                          .Name("drfm_predict_latency_seconds")
                          .Help("Time to answer one Predict request or PredictStream message.")
                          .Register(r)
                          .Add({}, Buckets(kPredictLatencyBuckets));
  predict_rows_ = &prometheus::BuildCounter()
                       .Name("drfm_predict_rows_total")
                       .Help("Rows predicted by successful Predict requests.")
                       .Register(r)
                       .Add({});
  models_stored_ = &prometheus::BuildGauge()
                        .Name("drfm_models_stored")
                        .Help("Stored models, counting every version.")
                        .Register(r)
                        .Add({});
  store_bytes_ = &prometheus::BuildGauge()
                      .Name("drfm_store_bytes")
                      .Help("Bytes used by the store: datasets, models and the database.")
                      .Register(r)
                      .Add({});
  auth_rejected_ = &prometheus::BuildCounter()
                        .Name("drfm_auth_rejected_total")
                        .Help("RPCs rejected by bearer-token auth before reaching a service.")
                        .Register(r);

  rpc_started_ = &prometheus::BuildCounter()
                      .Name("grpc_server_started_total")
                      .Help("RPCs started on the server.")
                      .Register(r);
  rpc_handled_ = &prometheus::BuildCounter()
                      .Name("grpc_server_handled_total")
                      .Help("RPCs completed on the server, regardless of success or failure.")
                      .Register(r);
  rpc_handling_ = &prometheus::BuildHistogram()
                       .Name("grpc_server_handling_seconds")
                       .Help("Time from the start of an RPC to its status being sent.")
                       .Register(r);
  rpc_msg_received_ = &prometheus::BuildCounter()
                           .Name("grpc_server_msg_received_total")
                           .Help("Request messages received by the server.")
                           .Register(r);
  rpc_msg_sent_ = &prometheus::BuildCounter()
                       .Name("grpc_server_msg_sent_total")
                       .Help("Response messages sent by the server.")
                       .Register(r);
}

ServerMetrics::~ServerMetrics() = default;

std::shared_ptr<prometheus::Collectable> ServerMetrics::collectable() const { return collectable_; }

void ServerMetrics::AddScrapeHook(std::function<void()> hook) {
  collectable_->AddHook(std::move(hook));
}

void ServerMetrics::OnJobSubmitted() { jobs_submitted_->Increment(); }

void ServerMetrics::OnJobFinished(v1::Job::State state, double seconds) {
  jobs_finished_->Add({{"state", std::string(JobStateLabel(state))}}).Increment();
  job_duration_->Observe(seconds);
}

void ServerMetrics::OnJobFinished(std::string_view state, double seconds) {
  OnJobFinished(ParseJobState(state), seconds);
}

void ServerMetrics::SetJobsByState(const std::map<v1::Job::State, int64_t>& counts) {
  for (const auto& [state, label] : kJobStates) {
    const auto it = counts.find(state);
    jobs_->Add({{"state", std::string(label)}})
        .Set(it == counts.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void ServerMetrics::SetJobsByState(const std::map<std::string, int64_t>& counts) {
  std::map<v1::Job::State, int64_t> by_state;
  for (const auto& [name, count] : counts) by_state[ParseJobState(name)] += count;
  SetJobsByState(by_state);
}

void ServerMetrics::SetQueueDepth(int64_t depth) { queue_depth_->Set(static_cast<double>(depth)); }

void ServerMetrics::ObservePhase(std::string_view phase, double seconds) {
  const std::string lower = AsciiLower(phase);
  for (size_t i = 0; i < kPhaseNames.size(); ++i) {
    if (lower == kPhaseNames[i]) {
      phase_histograms_[i]->Observe(seconds);
      return;
    }
  }
  other_phase_histogram_->Observe(seconds);
}

void ServerMetrics::ObservePredict(absl::StatusCode code, double seconds, int64_t rows) {
  predict_requests_->Add({{"code", GrpcCodeName(static_cast<grpc::StatusCode>(code))}}).Increment();
  predict_latency_->Observe(seconds);
  if (code == absl::StatusCode::kOk && rows > 0)
    predict_rows_->Increment(static_cast<double>(rows));
}

void ServerMetrics::SetStoreStats(int64_t models, int64_t bytes) {
  models_stored_->Set(static_cast<double>(models));
  store_bytes_->Set(static_cast<double>(bytes));
}

void ServerMetrics::OnAuthRejected(grpc::StatusCode code) {
  auth_rejected_->Add({{"grpc_code", GrpcCodeName(code)}}).Increment();
}

ServerMetrics::RpcSeries* ServerMetrics::GetRpcSeries(std::string_view full_method, RpcType type,
                                                      bool reserved) {
  std::string key = absl::StrCat(static_cast<int>(type), std::string(full_method));
  absl::MutexLock lock(&rpc_mu_);
  auto it = rpc_series_.find(key);
  if (it != rpc_series_.end()) return it->second.get();
  std::string_view service, method;
  if ((!reserved && unreserved_rpc_series_ >= kMaxRpcMethods) ||
      !SplitFullMethod(full_method, &service, &method)) {
    service = "unknown";
    method = "unknown";
    key = absl::StrCat(static_cast<int>(type), "unknown");
    it = rpc_series_.find(key);
    if (it != rpc_series_.end()) return it->second.get();
  }
  auto series = std::make_unique<RpcSeries>();
  series->labels = {{"grpc_service", std::string(service)},
                    {"grpc_method", std::string(method)},
                    {"grpc_type", std::string(RpcTypeLabel(type))}};
  series->started = &rpc_started_->Add(series->labels);
  series->msg_received = &rpc_msg_received_->Add(series->labels);
  series->msg_sent = &rpc_msg_sent_->Add(series->labels);
  series->handling = &rpc_handling_->Add(series->labels, Buckets(kRpcHandlingBuckets));
  RpcSeries* result = series.get();
  if (!reserved) ++unreserved_rpc_series_;
  rpc_series_.emplace(std::move(key), std::move(series));
  return result;
}

void ServerMetrics::InitializeRpcMethods(const google::protobuf::ServiceDescriptor& service) {
  for (int i = 0; i < service.method_count(); ++i) {
    const google::protobuf::MethodDescriptor& method = *service.method(i);
    RpcType type = RpcType::UNARY;
    if (method.client_streaming() && method.server_streaming()) {
      type = RpcType::BIDI_STREAMING;
    } else if (method.client_streaming()) {
      type = RpcType::CLIENT_STREAMING;
    } else if (method.server_streaming()) {
      type = RpcType::SERVER_STREAMING;
    }
    RpcSeries* series =
        GetRpcSeries(absl::StrCat("/", service.full_name(), "/", method.name()), type, true);
    HandledCounter(*series, grpc::StatusCode::OK);
  }
}

prometheus::Counter& ServerMetrics::HandledCounter(RpcSeries& series, grpc::StatusCode code) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(series.handled.size())) {
    index = static_cast<int>(grpc::StatusCode::UNKNOWN);
  }
  prometheus::Counter* handled = series.handled[index].load(std::memory_order_acquire);
  if (handled == nullptr) {
    prometheus::Labels labels = series.labels;
    labels.emplace("grpc_code", GrpcCodeName(static_cast<grpc::StatusCode>(index)));
    handled = &rpc_handled_->Add(labels);
    series.handled[index].store(handled, std::memory_order_release);
  }
  return *handled;
}

void ServerMetrics::ObserveRpc(RpcSeries& series, grpc::StatusCode code, double seconds) {
  HandledCounter(series, code).Increment();
  series.handling->Observe(seconds);
}

void ServerMetrics::ObserveRpc(std::string_view full_method, RpcType type, grpc::StatusCode code,
                               double seconds) {
  ObserveRpc(*GetRpcSeries(full_method, type), code, seconds);
}

// One per RPC (gRPC creates it through the factory when the call starts and destroys it with the
// call). The server side has no POST_SEND_STATUS hook; the status is final at PRE_SEND_STATUS
// unless a later interceptor rewrites it (none does in this server), so that is where the RPC is
// recorded, before the status leaves the server. A call that ends without a status being sent is
// recorded as CANCELLED when the interceptor is destroyed.
class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  static grpc::experimental::Interceptor* Create(ServerMetrics* metrics,
                                                 grpc::experimental::ServerRpcInfo* info) {
    const char* method = info->method();
    return new RpcMetricsInterceptor(
        metrics, metrics->GetRpcSeries(method == nullptr ? "" : method, info->type()));
  }

  ~RpcMetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {  // nullptr: the read found the end of the stream.
      series_->msg_received->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      series_->msg_sent->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        !recorded_) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  RpcMetricsInterceptor(ServerMetrics* metrics, ServerMetrics::RpcSeries* series)
      : metrics_(metrics), series_(series), start_(std::chrono::steady_clock::now()) {
    series_->started->Increment();
  }

  void Record(grpc::StatusCode code) {
    recorded_ = true;
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
    metrics_->ObserveRpc(*series_, code, elapsed.count());
  }

  ServerMetrics* metrics_;
  ServerMetrics::RpcSeries* series_;
  const std::chrono::steady_clock::time_point start_;
  // The hook batches of one call are delivered one at a time, never concurrently.
  bool recorded_ = false;
};

namespace {

class RpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(ServerMetrics* metrics) : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return RpcMetricsInterceptor::Create(metrics_, info);
  }

 private:
  ServerMetrics* metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::NewInterceptorFactory() {
  return std::make_unique<RpcMetricsInterceptorFactory>(this);
}

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& address, std::shared_ptr<prometheus::Collectable> collectable) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", address,
        "\" is not HOST:PORT (e.g. 127.0.0.1:9090, 0.0.0.0:9090; port 0 picks a free port)"));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads: a scrape and a concurrent health probe (or a second Prometheus) at most.
    exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address,
                     ": the address is in use or not local to this host (", e.what(), ")"));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address,
                                               ": the HTTP server reports no listening port"));
  }
  exposer->RegisterCollectable(collectable, "/metrics");
  return std::unique_ptr<MetricsExporter>(
      new MetricsExporter(std::move(exposer), std::move(collectable), ports.front()));
}

MetricsExporter::MetricsExporter(std::unique_ptr<prometheus::Exposer> exposer,
                                 std::shared_ptr<prometheus::Collectable> collectable, int port)
    : exposer_(std::move(exposer)), collectable_(std::move(collectable)), port_(port) {}

MetricsExporter::~MetricsExporter() = default;

}  // namespace drfm::server
