// The job engine of the drfm server: admission of submitted jobs (validation, dataset and model
// resolution, a memory estimate against a budget, a bounded priority queue), worker threads that
// run them (DEEP_RFM with core::FitDeepRfm, MLP with core::FitMlp, ANALYSIS with
// core::AnalyzeMlp), durable job state and events in the Store, live event fan-out to watchers,
// cancellation, per-job runtime limits, crash recovery and graceful shutdown. The
// RPC service classes are thin wrappers over JobManager: every method returns absl::Status /
// absl::StatusOr with the API's status codes, which the caller converts to grpc::Status in one
// place.
//
// Job lifecycle (jobs.proto): QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, or QUEUED ->
// CANCELLED. Every state change is stored atomically with its JobStateChange event
// (Store::UpdateJob); each LayerReport (DEEP_RFM) or NetworkReport (MLP, ANALYSIS) is stored (in
// Job.reports / Job.network_reports and as an event) the moment the run reports it; Progress events are throttled (JobManagerOptions::progress_interval) because
// every stored event is an fsync. Events carry contiguous per-job sequences starting at 1.
#ifndef DRFM_SERVER_JOB_MANAGER_H_
#define DRFM_SERVER_JOB_MANAGER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "drfm/v1/jobs.pb.h"
#include "server/convert.h"
#include "server/datasets.h"
#include "server/store.h"

namespace drfm::server {

namespace internal {
struct JobRecord;
struct WatchState;
}  // namespace internal

// Lifecycle notifications, so that a metrics exporter can count jobs without the JobManager
// depending on it. Called on the JobManager's threads (submitting RPC threads and workers),
// possibly concurrently, never while a JobManager lock is held; implementations must be
// thread-safe and fast (no I/O: a worker calls them between steps of a fit). Every method
// defaults to doing nothing. Notifications from different threads may arrive slightly out of
// order: a gauge that must be exact can read JobManager::queued_jobs() when scraped.
class JobManagerListener {
 public:
  virtual ~JobManagerListener() = default;
  // A new job was queued (not called for an idempotent repeat of a request).
  virtual void OnSubmitted(v1::Job::Kind kind) {}
  // A worker started a job that had been queued for `queued_seconds`.
  virtual void OnStarted(v1::Job::Kind kind, double queued_seconds) {}
  // A job reached the terminal `state`, `total_seconds` after its submission, having run for
  // `run_seconds` of them (0 when it was cancelled before it started).
  virtual void OnFinished(v1::Job::Kind kind, v1::Job::State state, double total_seconds,
                          double run_seconds) {}
  // One phase of one Deep RFM layer took `seconds` (from the layer's report), or, for MLP and
  // ANALYSIS jobs, one measurement took `seconds` (MEASURE) or a fit's training epochs took
  // `seconds` in all (TRAIN); v1::Progress::Phase_Name(phase) gives its name ("KERNEL").
  virtual void OnPhaseSeconds(v1::Progress::Phase phase, double seconds) {}
  // The number of queued (not yet running) jobs changed to `depth`.
  virtual void OnQueueDepth(int64_t depth) {}
};

struct JobManagerOptions {
  // Worker threads, i.e. fits running at the same time. >= 1.
  int workers = 1;
  // OpenMP threads of each fit (core::FitOptions::threads); 0 = the OpenMP default. >= 0.
  int threads_per_fit = 0;
  // Queued (not yet running) jobs beyond which SubmitFit fails with RESOURCE_EXHAUSTED. >= 1.
  // Jobs recovered by Start() are re-queued even beyond it, so nothing accepted is lost.
  int max_queued_jobs = 100;
  // Memory one fit may need (core::EstimateFit's peak plus its loaded rows), in bytes; larger
  // fits are refused with RESOURCE_EXHAUSTED. 0 = unlimited. >= 0.
  int64_t memory_budget_bytes = 0;
  // A job running longer (from its start, loading its data included) is stopped and FAILED.
  // InfiniteDuration() = no limit. > 0.
  absl::Duration max_job_runtime = absl::InfiniteDuration();
  // At most one Progress event per this interval within a phase; a new (layer, phase) is
  // reported once at least phase_change_interval has passed since the previous event. > 0.
  absl::Duration progress_interval = absl::Milliseconds(500);
  absl::Duration phase_change_interval = absl::Milliseconds(100);
  // Live events buffered per watcher; a watcher that falls further behind continues from the
  // Store instead (it never loses events and never slows the fit). >= 1.
  size_t watch_buffer_events = 256;
  // What a single fit may ask for.
  ServiceLimits limits;
  // Lifecycle notifications; not owned, may be null. Must outlive the JobManager.
  JobManagerListener* listener = nullptr;

  // InvalidArgument naming the first option out of range.
  absl::Status Validate() const;
};

// One watcher's view of a job's events (what WatchJob streams): first the stored events after
// the requested sequence, then live ones as they happen, in sequence order with no gap and no
// repeat, ending with the terminal state change. Obtained from JobManager::Watch.
//
// Typical use by the WatchJob RPC, polling the client's cancellation between waits:
//   while (!watch->done()) {
//     if (context->IsCancelled()) return grpc::Status::CANCELLED;
//     absl::StatusOr<std::optional<v1::JobEvent>> event = watch->Next(absl::Milliseconds(200));
//     if (!event.ok()) return ToGrpcStatus(event.status());
//     if (event->has_value() && !writer->Write(**event)) return grpc::Status::CANCELLED;
//   }
//   return grpc::Status::OK;
//
// Thread-compatible: one thread at a time calls Next. Never blocks the job it watches: live
// events reach it through a bounded buffer, and when that overflows it silently switches to
// reading the Store until it has caught up. The Store must outlive the watch; the JobManager
// need not.
class JobWatch {
 public:
  ~JobWatch();
  JobWatch(const JobWatch&) = delete;
  JobWatch& operator=(const JobWatch&) = delete;

  // The next event, or std::nullopt when `timeout` passed without one (call again) or the stream
  // has ended (done()). Errors: UNAVAILABLE when the job will have no more events from this
  // server (it is shutting down, or was not started): watch again later with after_sequence =
  // last_sequence(); NOT_FOUND when the job was deleted; the Store's errors (DATA_LOSS...).
  absl::StatusOr<std::optional<v1::JobEvent>> Next(absl::Duration timeout);

  // True once the terminal state change has been returned (or, for a job that was already
  // terminal, when after_sequence was at or past its last event): the stream is complete.
  bool done() const { return done_; }

  // Sequence of the last event returned (initially the after_sequence asked for).
  int64_t last_sequence() const { return last_; }

 private:
  friend class JobManager;
  JobWatch(Store* store, std::string job_id, int64_t after_sequence,
           std::shared_ptr<internal::JobRecord> record,
           std::shared_ptr<internal::WatchState> state);

  std::optional<v1::JobEvent> Deliver(v1::JobEvent event);

  Store* const store_;
  const std::string job_id_;
  // The live channel; null when the job had none (it was already terminal, or not managed).
  const std::shared_ptr<internal::JobRecord> record_;
  const std::shared_ptr<internal::WatchState> state_;
  int64_t last_;
  bool done_ = false;
  bool read_store_ = true;    // The Store may have events after last_ that we have not read.
  bool live_closed_ = false;  // No more live events will come.
  std::deque<v1::JobEvent> history_;  // Events read from the Store, not yet returned.
};

// Owns the job queue and the worker threads, and is the only writer of job state and events.
//
// Thread-safe: every public method may be called from any thread at any time (RPC handlers,
// signal handling), including concurrently with Shutdown. The Store, the DatasetResolver and the
// listener must outlive it.
//
// Recovery (Start): jobs found QUEUED in the Store are queued again in their original order.
// A job found RUNNING was interrupted by a crash: it is put back to QUEUED with its partial
// reports cleared (layers_done 0, no start_time) and a JobStateChange event RUNNING -> QUEUED
// whose `error` field notes the restart, and then starts over from layer 1 (a fit has no
// checkpoints). Its events so far stay in its log, so a watcher sees the first run's events, the
// restart event and then the new run's, each exactly once with contiguous sequences. Shutdown
// does the same to fits it has to interrupt. Two exceptions: a job whose model is already stored
// (the crash came between storing it and recording SUCCEEDED) becomes SUCCEEDED with that model
// (RUNNING -> SUCCEEDED), so one job never stores two versions; and a job whose CancelJob was
// acknowledged becomes CANCELLED instead of running again.
//
// Cancellation: a QUEUED job becomes CANCELLED at once. A RUNNING job is asked to stop (the
// request is stored first, so it survives a crash): the fit checks at its next progress callback
// (every ~50 ms of work) and the job becomes CANCELLED within about a second; CancelJob returns
// it still RUNNING. Cancelling a terminal job is a no-op that returns it unchanged (jobs.proto).
//
// Model names: a successful fit stores version N+1 of request.model_name, or of the job id when
// it is empty (a valid model name of 16 hex digits).
//
// Job kinds: DEEP_RFM (SubmitFit), MLP (SubmitMlpFit: trains an MLP, measures it every
// measure_every epochs and stores it as a model of kind MLP) and ANALYSIS (SubmitAnalysis: one
// measurement of a stored MLP on a data slice, no model). All share the queue, admission,
// cancellation, runtime limit, recovery and event streams; each has a Prepare* step (validation
// and conversion in convert.h) and a Run* step dispatched on Job.kind in RunJob. An MLP run that
// is interrupted starts over from epoch 0, like a Deep RFM fit from layer 1.
class JobManager {
 public:
  // Nothing runs until Start().
  JobManager(Store* store, DatasetResolver* datasets, JobManagerOptions options);
  // Shutdown(absl::Now()) unless Shutdown already ran: running fits are stopped and re-queued.
  ~JobManager();

  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Validates the options, recovers the Store's QUEUED and RUNNING jobs (see the class comment)
  // and starts the workers. InvalidArgument for bad options; FailedPrecondition when called
  // twice or after Shutdown; the Store's errors.
  absl::Status Start();

  // Stops taking work: new submissions fail with UNAVAILABLE ("server is shutting down") and
  // queued jobs stay QUEUED (in the Store, for the next Start). Running fits may finish until
  // `drain_deadline`; those still running then are stopped and re-queued (QUEUED with a note, to
  // start over after a restart), so nothing accepted is lost. Returns when every worker has
  // exited. Watchers of unfinished jobs get UNAVAILABLE. Later calls return at once.
  void Shutdown(absl::Time drain_deadline);

  // Validates `request` (INVALID_ARGUMENT naming the field; NOT_FOUND for an unknown dataset),
  // resolves its config (an unset seed is drawn and recorded), estimates its memory and flops,
  // and queues it as a DEEP_RFM job. Returns the QUEUED job, or, for a request_id used before
  // with an identical request, that earlier job (in whatever state it is now; looked up first,
  // so a retry gets its job even if its dataset was deleted or the queue filled up since, e.g.
  // across a server restart). ALREADY_EXISTS:
  // the request_id was used with a different request; RESOURCE_EXHAUSTED: the queue is full, or
  // the estimated memory exceeds the budget (the message gives both in GB and what to reduce);
  // UNAVAILABLE: not started or shutting down.
  absl::StatusOr<v1::Job> SubmitFit(const v1::SubmitFitRequest& request);

  // What SubmitFit would admit, without creating a job: the estimate, with within_budget false
  // (and no error) when it exceeds the memory budget. The validation errors of SubmitFit.
  absl::StatusOr<v1::FitEstimate> EstimateFit(const v1::SubmitFitRequest& request);

  // Validates `request` like SubmitFit (INVALID_ARGUMENT naming the field, config.* ranges from
  // core::MlpConfig::Validate and at most limits.max_mlp_measurements measurements; NOT_FOUND
  // for an unknown dataset), resolves its config (an unset seed is drawn and recorded),
  // estimates its memory and flops (core::EstimateMlpFit, in Job.estimate) and queues it as an
  // MLP job whose layers_total is the number of measurements. On success the job stores the
  // trained MLP as version N+1 of model_name (or of the job id). Idempotency, RESOURCE_EXHAUSTED
  // and UNAVAILABLE as SubmitFit.
  absl::StatusOr<v1::Job> SubmitMlpFit(const v1::SubmitMlpFitRequest& request);

  // Validates `request` (INVALID_ARGUMENT: missing model or data, bad name or version, a model
  // that is not an MLP (e.g. a DEEP_RFM model: "measures MLPs only"), data whose columns differ
  // from the model's input_dim or whose dataset has another number of classes than the model's
  // outputs, too many rows; NOT_FOUND: unknown model, model version or dataset), resolves the
  // model version (the latest when unset; kept in Job.analyzed_model) and queues an ANALYSIS
  // job: one NetworkReport of the model on the data slice, no model stored. Idempotency,
  // RESOURCE_EXHAUSTED and UNAVAILABLE as SubmitFit. A model deleted before the job runs makes
  // it FAILED.
  absl::StatusOr<v1::Job> SubmitAnalysis(const v1::SubmitAnalysisRequest& request);

  // The job, with last_event_sequence. INVALID_ARGUMENT for an empty id; NOT_FOUND.
  absl::StatusOr<v1::Job> GetJob(std::string_view job_id);

  // Jobs newest first, filtered by state and kind, paged (page_size 0 = 50, capped at 1000).
  // Reports are left out unless include_reports. INVALID_ARGUMENT for an unknown state or kind,
  // a negative page_size or a foreign page_token.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);

  // Cancels the job (see the class comment) and returns it. INVALID_ARGUMENT for an empty id;
  // NOT_FOUND; UNAVAILABLE for a QUEUED or RUNNING job this manager does not run (before Start
  // or after Shutdown); the Store's error (e.g. RESOURCE_EXHAUSTED on a full disk) when the
  // cancellation cannot be recorded, and then nothing was cancelled.
  absl::StatusOr<v1::Job> CancelJob(std::string_view job_id);

  // Deletes a terminal job and its events (not its model). FAILED_PRECONDITION when it is
  // QUEUED or RUNNING; NOT_FOUND; INVALID_ARGUMENT for an empty id.
  absl::Status DeleteJob(std::string_view job_id);

  // A watch of the job's events with sequence > after_sequence (see JobWatch). INVALID_ARGUMENT
  // for an empty id or a negative after_sequence; NOT_FOUND.
  absl::StatusOr<std::unique_ptr<JobWatch>> Watch(std::string_view job_id, int64_t after_sequence);

  // Jobs waiting in the queue and jobs running now.
  int64_t queued_jobs() const;
  int running_jobs() const;
  // True between Start and Shutdown (what a readiness check reports).
  bool accepting() const;

 private:
  class RunMonitor;
  class FitRun;
  class MlpRun;
  // Queue order: higher priority first, then submission order.
  using QueueKey = std::pair<int, int64_t>;  // (-priority, ticket)

  // How a run ended: the state to record and its error sentence, the stored model, or a re-queue.
  struct Outcome {
    v1::Job::State state = v1::Job::FAILED;
    std::string error;
    std::optional<v1::ModelRef> model;
    bool requeue = false;
  };

  // A validated job ready to be queued, and its estimate.
  struct PreparedFit {
    v1::Job job;
    v1::FitEstimate estimate;
  };
  // The QUEUED job of a SubmitFit or SubmitMlpFit request (all but its config), with its estimate.
  template <typename Request>
  static PreparedFit QueuedFitJob(v1::Job::Kind kind, const Request& request, bool has_test,
                                  v1::FitEstimate estimate, int64_t layers_total);

  // UNAVAILABLE unless the manager takes new jobs.
  absl::Status CheckAccepting() const;
  absl::Status CheckAcceptingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<PreparedFit> PrepareFit(const v1::SubmitFitRequest& request);
  absl::StatusOr<PreparedFit> PrepareMlpFit(const v1::SubmitMlpFitRequest& request);
  absl::StatusOr<PreparedFit> PrepareAnalysis(const v1::SubmitAnalysisRequest& request);
  // The shape of a fit's training and (optional) test slices, checked against the service
  // limits: row bounds, >= 2 classes, matching columns, test classes within the training ones.
  absl::StatusOr<core::FitShape> DescribeFitSlices(const v1::DatasetSlice& train,
                                                   const v1::DatasetSlice* test);
  // Stores `job` (QUEUED) with its first event and queues it, or returns the earlier job of the
  // same request_id.
  absl::StatusOr<v1::Job> Enqueue(v1::Job job, const google::protobuf::Message& request);
  absl::Status RecoverJobs();
  void EnqueueLocked(const std::shared_ptr<internal::JobRecord>& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasActiveRequestIdLocked(const std::string& request_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();
  void RunJob(const std::shared_ptr<internal::JobRecord>& record);
  Outcome RunDeepRfm(const std::shared_ptr<internal::JobRecord>& record, const v1::Job& job);
  Outcome RunMlp(const std::shared_ptr<internal::JobRecord>& record, const v1::Job& job);
  Outcome RunAnalysis(const std::shared_ptr<internal::JobRecord>& record, const v1::Job& job);
  // The outcome of a run that stopped because it was asked to (cancel, shutdown, runtime limit,
  // store error); `during` says when ("before it started"), `reduce` what to make smaller when
  // the runtime limit was hit.
  // The outcome of a run whose fit returned the error `status`: a failure to record its progress
  // (`store_error`), a stop the manager asked for (see Stopped; `steps` names what
  // layers_done counts, "layers" or "measurements", or is empty for a single measurement), or
  // the fit's own error, prefixed by `what` ("the fit").
  Outcome FailedRun(internal::JobRecord& record, const v1::Job& job, const absl::Status& status,
                    const absl::Status& store_error, std::string_view steps, std::string_view what,
                    std::string_view reduce) const;
  Outcome Stopped(const internal::JobRecord& record, std::string_view during,
                  std::string_view reduce) const;
  // When a run that started at job.start_time() passes the runtime limit.
  absl::Time RunDeadline(const v1::Job& job) const;
  // The job's train and (when it has one) test rows; an error sentence for Outcome.error.
  absl::Status LoadFitSlices(const v1::Job& job, core::Dataset* train,
                             std::optional<core::Dataset>* test);
  void Finish(const std::shared_ptr<internal::JobRecord>& record, Outcome outcome);
  void NotifyQueueDepth(int64_t depth);

  Store* const store_;
  DatasetResolver* const datasets_;
  const JobManagerOptions options_;

  absl::Mutex shutdown_mu_;  // Serializes Shutdown calls; taken before mu_.
  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool accepting_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // Workers take no new jobs.
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<QueueKey, std::shared_ptr<internal::JobRecord>> queue_ ABSL_GUARDED_BY(mu_);
  // Every QUEUED or RUNNING job this manager runs, by id.
  std::map<std::string, std::shared_ptr<internal::JobRecord>, std::less<>> records_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // Written by Start, joined by Shutdown (under shutdown_mu_).
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_JOB_MANAGER_H_
