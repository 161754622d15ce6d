#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "core/status.h"
#include "server/auth.h"

namespace drfm::server {
namespace {

constexpr const char* kServiceNames[] = {"drfm.v1.DatasetService", "drfm.v1.JobService",
                                         "drfm.v1.ModelService"};

// Feeds the job engine's events into the Prometheus metrics.
class MetricsListener final : public JobManagerListener {
 public:
  explicit MetricsListener(ServerMetrics* metrics) : metrics_(metrics) {}
  void OnSubmitted(v1::Job::Kind) override { metrics_->OnJobSubmitted(); }
  void OnFinished(v1::Job::Kind, v1::Job::State state, double total_seconds, double) override {
    metrics_->OnJobFinished(state, total_seconds);
  }
  void OnPhaseSeconds(v1::Progress::Phase phase, double seconds) override {
    metrics_->ObservePhase(v1::Progress::Phase_Name(phase), seconds);
  }
  void OnQueueDepth(int64_t depth) override { metrics_->SetQueueDepth(depth); }

 private:
  ServerMetrics* metrics_;
};

int64_t DefaultMemoryBudget() {
  const double bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  return static_cast<int64_t>(0.8 * bytes);
}

}  // namespace

DrfmServer::DrfmServer(ServerOptions options) : options_(std::move(options)) {}

DrfmServer::~DrfmServer() { Shutdown(absl::ZeroDuration()); }

int DrfmServer::metrics_port() const { return exporter_ ? exporter_->port() : 0; }

absl::StatusOr<std::unique_ptr<DrfmServer>> DrfmServer::Start(const ServerOptions& options) {
  DRFM_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<DrfmServer> s(new DrfmServer(options));
  s->metrics_ = std::make_unique<ServerMetrics>(kDrfmVersion);
  s->listener_ = std::make_unique<MetricsListener>(s->metrics_.get());
  SqliteStoreOptions store_options;
  store_options.data_dir = options.data_dir;
  DRFM_ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::Open(store_options));
  s->store_ = std::move(store);
  s->resolver_ = std::make_unique<DatasetResolver>(s->store_.get(), options.builtin_dir);

  JobManagerOptions jobs;
  jobs.workers = options.workers;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  jobs.threads_per_fit = options.threads_per_fit > 0 ? options.threads_per_fit : std::max(1, cores / options.workers);
  jobs.max_queued_jobs = options.queue_bound;
  jobs.memory_budget_bytes = options.memory_budget_gb > 0 ? static_cast<int64_t>(options.memory_budget_gb * 1e9)
                                                          : DefaultMemoryBudget();
  if (options.max_job_seconds > 0) jobs.max_job_runtime = absl::Seconds(options.max_job_seconds);
  jobs.listener = s->listener_.get();
  DRFM_RETURN_IF_ERROR(jobs.Validate());
  s->jobs_ = std::make_unique<JobManager>(s->store_.get(), s->resolver_.get(), jobs);
  DRFM_RETURN_IF_ERROR(s->jobs_->Start());

  ModelRegistryOptions registry;
  registry.max_rows_per_request = options.max_predict_rows;
  s->models_ = std::make_unique<ModelRegistry>(s->store_.get(), registry);
  s->dataset_service_ = std::make_unique<DatasetServiceImpl>(s->store_.get(), s->resolver_.get());
  s->job_service_ = std::make_unique<JobServiceImpl>(s->jobs_.get());
  s->model_service_ = std::make_unique<ModelServiceImpl>(s->store_.get(), s->models_.get(), s->metrics_.get());

  ServerSecurityOptions security;
  security.token_file = options.token_file;
  security.tls_cert_file = options.tls_cert;
  security.tls_key_file = options.tls_key;
  security.tls_client_ca_file = options.tls_client_ca;
  ServerMetrics* metrics = s->metrics_.get();
  DRFM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeServerCredentials(security, [metrics](grpc::StatusCode code) { metrics->OnAuthRejected(code); }));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &s->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(s->dataset_service_.get());
  builder.RegisterService(s->job_service_.get());
  builder.RegisterService(s->model_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(s->metrics_->NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  for (const char* name : kServiceNames) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    if (service != nullptr) s->metrics_->InitializeRpcMethods(*service);
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               ": the address is in use or invalid (--listen HOST:PORT)"));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  for (const char* name : kServiceNames) health->SetServingStatus(name, true);

  if (!options.metrics_listen.empty()) {
    DRFM_ASSIGN_OR_RETURN(s->exporter_, MetricsExporter::Start(options.metrics_listen, s->metrics_->collectable()));
    Store* store_ptr = s->store_.get();
    s->metrics_->AddScrapeHook([store_ptr, metrics]() {
      absl::StatusOr<StoreStats> stats = store_ptr->Stats();
      if (!stats.ok()) return;
      metrics->SetJobsByState(stats->jobs_by_state);
      metrics->SetStoreStats(stats->models, stats->dataset_bytes + stats->model_bytes + stats->database_bytes);
    });
  }
  return s;
}

void DrfmServer::Shutdown(absl::Duration drain) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    health->SetServingStatus("", false);
    for (const char* name : kServiceNames) health->SetServingStatus(name, false);
  }
  if (jobs_ != nullptr) jobs_->Shutdown(absl::Now() + drain);
  // Open streams (WatchJob) are cancelled after a short grace period.
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  exporter_.reset();
}

}  // namespace drfm::server
