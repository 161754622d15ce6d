#include "server/job_manager.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/estimate.h"
#include "core/fit.h"
#include "core/model.h"
#include "core/status.h"

namespace drfm::server {
namespace internal {

// Why a running fit was asked to stop; the first reason wins.
enum class StopReason : int { kNone = 0, kCancel, kShutdown, kTimeout, kStoreError };

// Live events of one job for one watcher. Written by the job's publisher, read by its JobWatch.
struct WatchState {
  explicit WatchState(size_t capacity) : capacity(capacity) {}

  const size_t capacity;
  absl::Mutex mu;
  std::deque<v1::JobEvent> buffer ABSL_GUARDED_BY(mu);
  // The buffer was full: events were dropped (they are in the Store) until the watcher resets it.
  bool overflowed ABSL_GUARDED_BY(mu) = false;
  // No more live events will come (the job ended or the manager stopped running it).
  bool closed ABSL_GUARDED_BY(mu) = false;
};

// A job the manager runs (QUEUED or RUNNING). `mu` serializes the job's writes: each write goes
// to the Store and then, in sequence order, to the watchers.
struct JobRecord {
  explicit JobRecord(v1::Job stored)
      : id(stored.id()),
        kind(stored.kind()),
        request_id(stored.request_id()),
        job(std::move(stored)) {}

  // Asks a running fit to stop; the first reason sticks.
  void RequestStop(StopReason reason) {
    int expected = static_cast<int>(StopReason::kNone);
    stop.compare_exchange_strong(expected, static_cast<int>(reason));
  }
  StopReason stop_reason() const { return static_cast<StopReason>(stop.load()); }

  const std::string id;
  const v1::Job::Kind kind;
  const std::string request_id;
  std::atomic<int> stop{static_cast<int>(StopReason::kNone)};

  absl::Mutex mu;
  v1::Job job ABSL_GUARDED_BY(mu);  // As last stored, with last_event_sequence.
  std::vector<std::shared_ptr<WatchState>> watchers ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;

  // Guarded by JobManager::mu_.
  bool queued = false;
  std::pair<int, int64_t> queue_key;
  bool running = false;
};

}  // namespace internal

namespace {

using internal::JobRecord;
using internal::StopReason;
using internal::WatchState;

// Debian's abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Events a watch reads from the Store at a time.
constexpr int kWatchPageSize = 128;

void LogError(const absl::Status& status, std::string_view what) {
  std::fprintf(stderr, "drfm job manager: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
               status.ToString().c_str());
}

v1::JobEvent StateChangeEvent(v1::Job::State state, v1::Job::State previous, absl::Time time) {
  v1::JobEvent event;
  *event.mutable_time() = ToProtoTime(time);
  v1::JobStateChange* change = event.mutable_state_change();
  change->set_state(state);
  change->set_previous_state(previous);
  return event;
}

// Hands `events` (already stored, with sequences) to every watcher of the record, dropping them
// for a watcher whose buffer is full (it will read them from the Store).
void FanOutLocked(JobRecord& record, const std::vector<v1::JobEvent>& events)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(record.mu) {
  for (const std::shared_ptr<WatchState>& watcher : record.watchers) {
    absl::MutexLock lock(&watcher->mu);
    for (const v1::JobEvent& event : events) {
      if (watcher->overflowed) break;
      if (watcher->buffer.size() >= watcher->capacity) {
        watcher->overflowed = true;
        watcher->buffer.clear();
        break;
      }
      watcher->buffer.push_back(event);
    }
  }
}

// Stores `job` with `events` appended to its log, then publishes the events. On success the
// record's job is `job` with its new last_event_sequence.
absl::Status PublishLocked(Store* store, JobRecord& record, v1::Job job,
                           std::vector<v1::JobEvent> events)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(record.mu) {
  const absl::Time now = absl::Now();
  for (v1::JobEvent& event : events) {
    if (!event.has_time()) *event.mutable_time() = ToProtoTime(now);
  }
  DRFM_ASSIGN_OR_RETURN(const std::vector<int64_t> sequences, store->UpdateJob(job, events));
  for (size_t i = 0; i < events.size(); ++i) events[i].set_sequence(sequences[i]);
  if (!sequences.empty()) job.set_last_event_sequence(sequences.back());
  record.job = std::move(job);
  FanOutLocked(record, events);
  return absl::OkStatus();
}

// Appends one event without changing the stored job (Progress), then publishes it.
absl::Status AppendLocked(Store* store, JobRecord& record, v1::JobEvent event)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(record.mu) {
  if (!event.has_time()) *event.mutable_time() = ToProtoTime(absl::Now());
  DRFM_ASSIGN_OR_RETURN(const int64_t sequence, store->AppendEvent(record.id, event));
  event.set_sequence(sequence);
  record.job.set_last_event_sequence(sequence);
  FanOutLocked(record, {event});
  return absl::OkStatus();
}

// No more live events: current and future watchers read the rest from the Store.
void CloseLocked(JobRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(record.mu) {
  record.closed = true;
  for (const std::shared_ptr<WatchState>& watcher : record.watchers) {
    absl::MutexLock lock(&watcher->mu);
    watcher->closed = true;
  }
}

// The job as it goes back to the queue after an interrupted run: its partial results cleared.
void ResetForRequeue(v1::Job& job) {
  job.set_state(v1::Job::QUEUED);
  job.clear_reports();
  job.clear_network_reports();
  job.set_layers_done(0);
  job.clear_start_time();
  job.clear_end_time();
  job.clear_error();
  job.clear_model();
}

absl::Status RequireJobId(std::string_view job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  return absl::OkStatus();
}

// Every job in `state`, oldest first.
absl::StatusOr<std::vector<v1::Job>> ListAllJobs(Store* store, v1::Job::State state) {
  JobFilter filter;
  filter.state = state;
  std::vector<v1::Job> jobs;
  std::string token;
  do {
    DRFM_ASSIGN_OR_RETURN(Page<v1::Job> page,
                          store->ListJobs(filter, Store::kMaxPageSize, token));
    std::move(page.items.begin(), page.items.end(), std::back_inserter(jobs));
    token = std::move(page.next_page_token);
  } while (!token.empty());
  std::reverse(jobs.begin(), jobs.end());
  return jobs;
}

}  // namespace

absl::Status JobManagerOptions::Validate() const {
  if (workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("workers = ", workers, " must be >= 1"));
  }
  if (threads_per_fit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads_per_fit = ", threads_per_fit, " must be >= 0 (0 = OpenMP default)"));
  }
  if (max_queued_jobs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queued_jobs = ", max_queued_jobs, " must be >= 1"));
  }
  if (memory_budget_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory_budget_bytes = ", memory_budget_bytes, " must be >= 0 (0 = unlimited)"));
  }
  if (max_job_runtime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_job_runtime must be > 0 (infinite = no limit)");
  }
  if (progress_interval <= absl::ZeroDuration() || phase_change_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("progress_interval and phase_change_interval must be > 0");
  }
  if (watch_buffer_events < 1) {
    return absl::InvalidArgumentError("watch_buffer_events must be >= 1");
  }
  return limits.Validate();
}

// JobWatch.

JobWatch::JobWatch(Store* store, std::string job_id, int64_t after_sequence,
                   std::shared_ptr<internal::JobRecord> record,
                   std::shared_ptr<internal::WatchState> state)
    : store_(store),
      job_id_(std::move(job_id)),
      record_(std::move(record)),
      state_(std::move(state)),
      last_(after_sequence),
      live_closed_(state_ == nullptr) {}

JobWatch::~JobWatch() {
  if (record_ == nullptr) return;
  absl::MutexLock lock(&record_->mu);
  auto& watchers = record_->watchers;
  watchers.erase(std::remove(watchers.begin(), watchers.end(), state_), watchers.end());
}

std::optional<v1::JobEvent> JobWatch::Deliver(v1::JobEvent event) {
  last_ = event.sequence();
  if (event.has_state_change() && IsTerminal(event.state_change().state())) done_ = true;
  return event;
}

absl::StatusOr<std::optional<v1::JobEvent>> JobWatch::Next(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done_) return std::nullopt;
    while (!history_.empty()) {
      v1::JobEvent event = std::move(history_.front());
      history_.pop_front();
      if (event.sequence() > last_) return Deliver(std::move(event));
    }
    if (read_store_ || live_closed_) {
      DRFM_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events,
                            store_->ListEvents(job_id_, last_, kWatchPageSize));
      read_store_ = events.size() == static_cast<size_t>(kWatchPageSize);
      if (!events.empty()) {
        history_.assign(std::make_move_iterator(events.begin()),
                        std::make_move_iterator(events.end()));
        continue;
      }
      if (live_closed_) {
        // Nothing will come live: the Store has everything there is.
        DRFM_ASSIGN_OR_RETURN(const v1::Job job, store_->GetJob(job_id_));
        if (job.last_event_sequence() > last_) {
          read_store_ = true;  // Stored after our read.
          continue;
        }
        if (IsTerminal(job.state())) {
          done_ = true;
          return std::nullopt;
        }
        return absl::UnavailableError(absl::StrCat(
            "server is shutting down; job ", job_id_, " is ", v1::Job::State_Name(job.state()),
            " and continues after a restart: watch again with after_sequence = ", last_));
      }
    }
    absl::MutexLock lock(&state_->mu);
    if (state_->overflowed) {
      // Fell behind: take live events again from now on and read what was missed from the Store
      // (whatever was dropped was stored before it was dropped).
      state_->overflowed = false;
      state_->buffer.clear();
      read_store_ = true;
      continue;
    }
    if (!state_->buffer.empty()) {
      v1::JobEvent event = std::move(state_->buffer.front());
      state_->buffer.pop_front();
      if (event.sequence() <= last_) continue;  // Already read from the Store.
      if (event.sequence() > last_ + 1) {
        read_store_ = true;  // Not expected; the Store fills any gap.
        continue;
      }
      return Deliver(std::move(event));
    }
    if (state_->closed) {
      live_closed_ = true;
      read_store_ = true;
      continue;
    }
    auto ready = [](WatchState* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
      return !s->buffer.empty() || s->overflowed || s->closed;
    };
    if (!state_->mu.AwaitWithDeadline(absl::Condition(+ready, state_.get()), deadline)) {
      return std::nullopt;
    }
  }
}

// FitRun: the observer of one running Deep RFM fit. Publishes its layer reports and throttled
// progress, and tells the fit to stop when the job is cancelled, runs out of time or cannot be
// recorded.
class JobManager::FitRun final : public core::FitObserver {
 public:
  FitRun(JobManager* manager, std::shared_ptr<JobRecord> record, const core::FitConfig& config,
         int64_t input_cols, absl::Time deadline)
      : manager_(manager),
        record_(std::move(record)),
        config_(config),
        input_cols_(input_cols),
        deadline_(deadline) {}

  Action OnLayer(const core::LayerReport& report) override {
    const absl::Time now = absl::Now();
    v1::JobEvent event;
    *event.mutable_time() = ToProtoTime(now);
    *event.mutable_layer_report() =
        LayerReportToProto(report, LayerOutputDim(config_, input_cols_, report.layer));
    {
      absl::MutexLock lock(&record_->mu);
      v1::Job job = record_->job;
      *job.add_reports() = event.layer_report();
      job.set_layers_done(report.layer);
      absl::Status status = PublishLocked(manager_->store_, *record_, std::move(job), {event});
      if (!status.ok()) return Fail(std::move(status));
    }
    if (JobManagerListener* listener = manager_->options_.listener) {
      for (int p = 0; p < core::kNumPhases; ++p) {
        listener->OnPhaseSeconds(PhaseToProto(static_cast<core::Phase>(p)),
                                 report.phase_seconds[p]);
      }
    }
    last_event_ = now;
    return Check(now);
  }

  Action OnProgress(int layer, core::Phase phase, double fraction) override {
    const absl::Time now = absl::Now();
    if (Check(now) == Action::kStop) return Action::kStop;
    const bool changed = layer != last_layer_ || phase != last_phase_;
    const absl::Duration since = now - last_event_;
    if (since < manager_->options_.progress_interval &&
        !(changed && since >= manager_->options_.phase_change_interval)) {
      return Action::kContinue;
    }
    last_event_ = now;
    last_layer_ = layer;
    last_phase_ = phase;
    v1::JobEvent event;
    *event.mutable_time() = ToProtoTime(now);
    v1::Progress* progress = event.mutable_progress();
    progress->set_layer(layer);
    progress->set_phase(PhaseToProto(phase));
    progress->set_fraction(fraction);
    absl::MutexLock lock(&record_->mu);
    absl::Status status = AppendLocked(manager_->store_, *record_, std::move(event));
    if (!status.ok()) return Fail(std::move(status));
    return Action::kContinue;
  }

  // The Store error that made the observer stop the fit; OK when there was none.
  const absl::Status& store_error() const { return store_error_; }

 private:
  Action Check(absl::Time now) {
    if (now > deadline_) record_->RequestStop(StopReason::kTimeout);
    return record_->stop_reason() == StopReason::kNone ? Action::kContinue : Action::kStop;
  }

  Action Fail(absl::Status status) {
    store_error_ = std::move(status);
    record_->RequestStop(StopReason::kStoreError);
    return Action::kStop;
  }

  JobManager* const manager_;
  const std::shared_ptr<JobRecord> record_;
  const core::FitConfig config_;
  const int64_t input_cols_;
  const absl::Time deadline_;
  absl::Time last_event_ = absl::InfinitePast();
  int last_layer_ = -1;
  core::Phase last_phase_ = core::Phase::kKernel;
  absl::Status store_error_;
};

// JobManager.

JobManager::JobManager(Store* store, DatasetResolver* datasets, JobManagerOptions options)
    : store_(store), datasets_(datasets), options_(std::move(options)) {}

JobManager::~JobManager() { Shutdown(absl::Now()); }

absl::Status JobManager::Start() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (started_ || shut_down_) {
      return absl::FailedPreconditionError(
          started_ ? "the job manager is already started" : "the job manager was shut down");
    }
  }
  DRFM_RETURN_IF_ERROR(options_.Validate());
  DRFM_RETURN_IF_ERROR(RecoverJobs());
  int64_t depth = 0;
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
    accepting_ = true;
    depth = static_cast<int64_t>(queue_.size());
  }
  NotifyQueueDepth(depth);
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  return absl::OkStatus();
}

absl::Status JobManager::RecoverJobs() {
  DRFM_ASSIGN_OR_RETURN(const std::vector<v1::Job> interrupted,
                        ListAllJobs(store_, v1::Job::RUNNING));
  for (const v1::Job& found : interrupted) {
    v1::Job job = found;
    ResetForRequeue(job);
    v1::JobEvent event = StateChangeEvent(v1::Job::QUEUED, v1::Job::RUNNING, absl::Now());
    event.mutable_state_change()->set_error(
        "the server stopped while the job was running; it was queued again and starts over "
        "from layer 1");
    DRFM_RETURN_IF_ERROR(store_->UpdateJob(job, {event}).status());
  }
  DRFM_ASSIGN_OR_RETURN(const std::vector<v1::Job> queued, ListAllJobs(store_, v1::Job::QUEUED));
  absl::MutexLock lock(&mu_);
  for (const v1::Job& job : queued) {
    auto record = std::make_shared<JobRecord>(job);
    records_[record->id] = record;
    EnqueueLocked(record);
  }
  return absl::OkStatus();
}

void JobManager::Shutdown(absl::Time drain_deadline) {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    accepting_ = false;
    stopping_ = true;
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
    mu_.AwaitWithDeadline(absl::Condition(&idle), drain_deadline);
    for (auto& [id, record] : records_) {
      if (record->running) record->RequestStop(StopReason::kShutdown);
    }
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  absl::MutexLock lock(&mu_);
  for (auto& [id, record] : records_) {
    absl::MutexLock record_lock(&record->mu);
    CloseLocked(*record);
  }
  records_.clear();
  queue_.clear();
  shut_down_ = true;
}

absl::Status JobManager::CheckAcceptingLocked() const {
  if (accepting_) return absl::OkStatus();
  return absl::UnavailableError(started_ || shut_down_
                                    ? "server is shutting down"
                                    : "server is starting; retry shortly");
}

absl::Status JobManager::CheckAccepting() const {
  absl::MutexLock lock(&mu_);
  return CheckAcceptingLocked();
}

bool JobManager::accepting() const {
  absl::MutexLock lock(&mu_);
  return accepting_;
}

int64_t JobManager::queued_jobs() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

int JobManager::running_jobs() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

void JobManager::NotifyQueueDepth(int64_t depth) {
  if (options_.listener != nullptr) options_.listener->OnQueueDepth(depth);
}

void JobManager::EnqueueLocked(const std::shared_ptr<JobRecord>& record) {
  int priority = 0;
  {
    absl::MutexLock lock(&record->mu);
    priority = record->job.priority();
  }
  record->queue_key = {-priority, next_ticket_++};
  record->queued = true;
  queue_[record->queue_key] = record;
}

bool JobManager::HasActiveRequestIdLocked(const std::string& request_id) const {
  if (request_id.empty()) return false;
  for (const auto& [id, record] : records_) {
    if (record->request_id == request_id) return true;
  }
  return false;
}

// Submission.

absl::StatusOr<JobManager::PreparedFit> JobManager::PrepareFit(
    const v1::SubmitFitRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateSubmitFitRequest(request));
  DRFM_ASSIGN_OR_RETURN(const core::FitConfig config,
                        FitConfigFromProto(request.config(), DrawSeed()));
  DRFM_RETURN_IF_ERROR(CheckServiceLimits(config, options_.limits));
  DRFM_ASSIGN_OR_RETURN(const SliceShape train, datasets_->DescribeSlice(request.train(), "train"));
  const bool has_test = HasTestSlice(request);
  SliceShape test;
  if (has_test) {
    DRFM_ASSIGN_OR_RETURN(test, datasets_->DescribeSlice(request.test(), "test"));
  }
  const ServiceLimits& limits = options_.limits;
  if (train.rows > limits.max_train_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train has ", train.rows, " rows; this server fits at most ", limits.max_train_rows,
        " training rows: set train.limit to at most ", limits.max_train_rows));
  }
  if (test.rows > limits.max_test_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "test has ", test.rows, " rows; this server measures at most ", limits.max_test_rows,
        " test rows: set test.limit to at most ", limits.max_test_rows));
  }
  if (train.num_classes < 2 || train.rows < train.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train has ", train.rows, " rows of ", train.dataset.name(), ", which has ",
        train.num_classes, " classes; a training set needs at least 2 classes, each present at "
        "least once: raise train.limit"));
  }
  if (has_test && test.cols != train.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "test.dataset ", test.dataset.name(), " has ", test.cols, " columns but train.dataset ",
        train.dataset.name(), " has ", train.cols, "; the test rows must have the training "
        "set's columns"));
  }
  if (has_test && test.num_classes > train.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "test.dataset ", test.dataset.name(), " has ", test.num_classes,
        " classes but train.dataset ", train.dataset.name(), " has ", train.num_classes,
        "; test labels must be classes of the training set"));
  }
  core::FitShape shape;
  shape.train_rows = train.rows;
  shape.test_rows = has_test ? test.rows : 0;
  shape.cols = train.cols;
  shape.num_classes = train.num_classes;
  DRFM_ASSIGN_OR_RETURN(const core::FitEstimate estimate, core::EstimateFit(config, shape));

  PreparedFit prepared;
  prepared.estimate = FitEstimateToProto(estimate, shape, options_.memory_budget_bytes);
  v1::Job& job = prepared.job;
  job.set_kind(v1::Job::DEEP_RFM);
  job.set_state(v1::Job::QUEUED);
  *job.mutable_config() = FitConfigToProto(config);
  *job.mutable_train() = request.train();
  if (has_test) *job.mutable_test() = request.test();
  job.set_priority(request.priority());
  *job.mutable_labels() = request.labels();
  job.set_request_id(request.request_id());
  job.set_model_name(request.model_name());
  job.set_layers_total(config.layers + 1);
  *job.mutable_estimate() = prepared.estimate;
  return prepared;
}

absl::StatusOr<v1::FitEstimate> JobManager::EstimateFit(const v1::SubmitFitRequest& request) {
  DRFM_ASSIGN_OR_RETURN(PreparedFit prepared, PrepareFit(request));
  return std::move(prepared.estimate);
}

absl::StatusOr<v1::Job> JobManager::SubmitFit(const v1::SubmitFitRequest& request) {
  DRFM_RETURN_IF_ERROR(CheckAccepting());
  DRFM_ASSIGN_OR_RETURN(PreparedFit prepared, PrepareFit(request));
  if (!prepared.estimate.within_budget()) {
    const v1::FitEstimate& e = prepared.estimate;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the fit needs an estimated ", FormatGigabytes(static_cast<double>(e.memory_bytes())),
        " of memory (the ", e.train_rows(), " x ", e.train_rows(), " kernel alone takes ",
        FormatGigabytes(static_cast<double>(e.kernel_bytes())),
        "), more than this server's budget of ",
        FormatGigabytes(static_cast<double>(e.memory_budget_bytes())),
        " per job; use fewer training rows (train.limit; memory grows with their square), a "
        "smaller config.agop_samples or config.width, fewer test rows, or FLOAT32 precision"));
  }
  return Enqueue(std::move(prepared.job), request);
}

absl::StatusOr<v1::Job> JobManager::SubmitMlpFit(const v1::SubmitMlpFitRequest& request) {
  return absl::UnimplementedError(
      "MLP fits are not available on this server yet; use SubmitFit for a Deep RFM");
}

absl::StatusOr<v1::Job> JobManager::SubmitAnalysis(const v1::SubmitAnalysisRequest& request) {
  return absl::UnimplementedError("MLP analyses are not available on this server yet");
}

absl::StatusOr<v1::Job> JobManager::Enqueue(v1::Job job, const google::protobuf::Message& request) {
  std::shared_ptr<JobRecord> record;
  v1::Job result;
  int64_t depth = 0;
  {
    absl::MutexLock lock(&mu_);
    DRFM_RETURN_IF_ERROR(CheckAcceptingLocked());
    const int64_t queued = static_cast<int64_t>(queue_.size());
    // A repeat of a queued request is not a new job: let the Store return the existing one.
    if (queued >= options_.max_queued_jobs && !HasActiveRequestIdLocked(job.request_id())) {
      return absl::ResourceExhaustedError(absl::StrCat("queue is full (", queued,
                                                       " queued jobs, limit ",
                                                       options_.max_queued_jobs,
                                                       "); retry later"));
    }
    const absl::Time now = absl::Now();
    *job.mutable_create_time() = ToProtoTime(now);
    const v1::JobEvent event = StateChangeEvent(v1::Job::QUEUED, v1::Job::STATE_UNSPECIFIED, now);
    // Under mu_, so that a job is never in the Store as QUEUED without being in the queue while
    // the manager runs (Watch and CancelJob rely on it).
    DRFM_ASSIGN_OR_RETURN(CreateJobResult created, store_->CreateJob(job, request, {event}));
    if (!created.created) return std::move(created.job);
    result = created.job;
    record = std::make_shared<JobRecord>(std::move(created.job));
    records_[record->id] = record;
    EnqueueLocked(record);
    depth = static_cast<int64_t>(queue_.size());
  }
  if (options_.listener != nullptr) options_.listener->OnSubmitted(record->kind);
  NotifyQueueDepth(depth);
  return result;  // As created: a worker may have started it already.
}

// Running.

void JobManager::WorkerLoop() {
  for (;;) {
    std::shared_ptr<JobRecord> record;
    int64_t depth = 0;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      auto first = queue_.begin();
      record = std::move(first->second);
      queue_.erase(first);
      record->queued = false;
      record->running = true;
      ++running_;
      depth = static_cast<int64_t>(queue_.size());
    }
    NotifyQueueDepth(depth);
    RunJob(record);
    absl::MutexLock lock(&mu_);
    record->running = false;
    --running_;
    records_.erase(record->id);
  }
}

void JobManager::RunJob(const std::shared_ptr<JobRecord>& record) {
  const absl::Time start = absl::Now();
  v1::Job job;
  {
    absl::MutexLock lock(&record->mu);
    job = record->job;
    job.set_state(v1::Job::RUNNING);
    *job.mutable_start_time() = ToProtoTime(start);
    absl::Status status =
        PublishLocked(store_, *record, job,
                      {StateChangeEvent(v1::Job::RUNNING, v1::Job::QUEUED, start)});
    if (!status.ok()) {
      // Still QUEUED in the Store: the next Start runs it.
      LogError(status, absl::StrCat("cannot start job ", record->id));
      CloseLocked(*record);
      return;
    }
    job = record->job;
  }
  if (options_.listener != nullptr) {
    options_.listener->OnStarted(
        record->kind, absl::ToDoubleSeconds(start - FromProtoTime(job.create_time())));
  }
  Outcome outcome;
  if (record->kind == v1::Job::DEEP_RFM) {
    outcome = RunDeepRfm(record, job);
  } else {
    // Extension point: MLP and ANALYSIS runners go here.
    outcome.error = absl::StrCat("this server cannot run ", v1::Job::Kind_Name(record->kind),
                                 " jobs yet; resubmit it to a server that supports them");
  }
  Finish(record, std::move(outcome));
}

JobManager::Outcome JobManager::RunDeepRfm(const std::shared_ptr<JobRecord>& record,
                                           const v1::Job& job) {
  Outcome outcome;
  auto stopped = [&](std::string_view during) {
    Outcome stop;
    switch (record->stop_reason()) {
      case StopReason::kCancel:
        stop.state = v1::Job::CANCELLED;
        stop.error = absl::StrCat("cancelled by a CancelJob request ", AsAbsl(during));
        break;
      case StopReason::kShutdown:
        stop.requeue = true;
        break;
      case StopReason::kTimeout:
        stop.error = absl::StrCat(
            "the fit ran longer than this server's limit of ",
            absl::FormatDuration(options_.max_job_runtime),
            " per job and was stopped; use fewer training rows (train.limit), fewer layers or a "
            "smaller width");
        break;
      case StopReason::kStoreError:
      case StopReason::kNone:
        stop.error = absl::StrCat("the job stopped ", AsAbsl(during));
        break;
    }
    return stop;
  };
  if (record->stop_reason() != StopReason::kNone) return stopped("before it started");

  absl::StatusOr<core::Dataset> train = datasets_->Load(job.train(), "train");
  if (!train.ok()) {
    outcome.error = absl::StrCat("loading the training rows failed: ", train.status().message());
    return outcome;
  }
  std::optional<core::Dataset> test;
  if (!job.test().dataset().empty()) {
    absl::StatusOr<core::Dataset> loaded = datasets_->Load(job.test(), "test");
    if (!loaded.ok()) {
      outcome.error = absl::StrCat("loading the test rows failed: ", loaded.status().message());
      return outcome;
    }
    test = *std::move(loaded);
  }
  // The config was resolved at submission, seed included.
  absl::StatusOr<core::FitConfig> config = FitConfigFromProto(job.config(), job.config().seed());
  if (!config.ok()) {
    outcome.error = absl::StrCat("the job's stored config is invalid: ", config.status().message());
    return outcome;
  }
  if (record->stop_reason() != StopReason::kNone) return stopped("before it started");

  const absl::Time deadline = options_.max_job_runtime == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : FromProtoTime(job.start_time()) + options_.max_job_runtime;
  FitRun observer(this, record, *config, train->cols(), deadline);
  core::FitOptions fit_options;
  fit_options.threads = options_.threads_per_fit;
  absl::StatusOr<core::FitResult> result = core::FitDeepRfm(
      *train, test.has_value() ? &*test : nullptr, *config, &observer, fit_options);
  if (!result.ok()) {
    if (!observer.store_error().ok()) {
      outcome.error = absl::StrCat("recording the job's progress failed: ",
                                   observer.store_error().message());
      return outcome;
    }
    if (absl::IsCancelled(result.status()) && record->stop_reason() != StopReason::kNone) {
      int layers_done = 0;
      {
        absl::MutexLock lock(&record->mu);
        layers_done = record->job.layers_done();
      }
      return stopped(absl::StrCat("while running (after ", layers_done, " of ",
                                  job.layers_total(), " layers)"));
    }
    outcome.error = absl::StrCat("the fit failed: ", result.status().message());
    return outcome;
  }

  v1::Model model;
  model.set_name(job.model_name().empty() ? job.id() : job.model_name());
  model.set_kind(v1::Model::DEEP_RFM);
  model.set_input_dim(result->model.input_dim());
  model.set_classes(result->model.num_classes());
  model.set_layers(result->model.num_layers());
  *model.mutable_config() = job.config();
  model.set_job_id(job.id());
  for (int64_t dim : LayerDims(*config, train->cols())) model.add_layer_dims(dim);
  model.set_standardize(config->standardize);
  absl::StatusOr<v1::Model> stored = store_->PutModel(model, result->model.Serialize());
  if (!stored.ok()) {
    outcome.error = absl::StrCat("storing the fitted model failed: ", stored.status().message());
    return outcome;
  }
  outcome.state = v1::Job::SUCCEEDED;
  v1::ModelRef ref;
  ref.set_name(stored->name());
  ref.set_version(stored->version());
  outcome.model = ref;
  return outcome;
}

void JobManager::Finish(const std::shared_ptr<JobRecord>& record, Outcome outcome) {
  const absl::Time now = absl::Now();
  double run_seconds = 0;
  double total_seconds = 0;
  v1::Job::State final_state = v1::Job::STATE_UNSPECIFIED;
  {
    absl::MutexLock lock(&record->mu);
    v1::Job job = record->job;
    run_seconds = absl::ToDoubleSeconds(now - FromProtoTime(job.start_time()));
    total_seconds = absl::ToDoubleSeconds(now - FromProtoTime(job.create_time()));
    v1::JobEvent event;
    if (outcome.requeue) {
      ResetForRequeue(job);
      event = StateChangeEvent(v1::Job::QUEUED, v1::Job::RUNNING, now);
      event.mutable_state_change()->set_error(
          "the server shut down before the job finished; it was queued again and starts over "
          "from layer 1 when the server restarts");
    } else {
      job.set_state(outcome.state);
      *job.mutable_end_time() = ToProtoTime(now);
      job.set_error(outcome.error);
      event = StateChangeEvent(outcome.state, v1::Job::RUNNING, now);
      event.mutable_state_change()->set_error(outcome.error);
      if (outcome.model.has_value()) {
        *job.mutable_model() = *outcome.model;
        *event.mutable_state_change()->mutable_model() = *outcome.model;
      }
      final_state = outcome.state;
    }
    absl::Status status = PublishLocked(store_, *record, std::move(job), {event});
    if (!status.ok()) {
      // Still RUNNING in the Store: the next Start re-queues it.
      LogError(status, absl::StrCat("cannot record the end of job ", record->id));
      final_state = v1::Job::STATE_UNSPECIFIED;
    }
    CloseLocked(*record);
  }
  if (final_state != v1::Job::STATE_UNSPECIFIED && options_.listener != nullptr) {
    options_.listener->OnFinished(record->kind, final_state, total_seconds, run_seconds);
  }
}

// Queries and control.

absl::StatusOr<v1::Job> JobManager::GetJob(std::string_view job_id) {
  DRFM_RETURN_IF_ERROR(RequireJobId(job_id));
  return store_->GetJob(job_id);
}

absl::StatusOr<v1::ListJobsResponse> JobManager::ListJobs(const v1::ListJobsRequest& request) {
  if (!v1::Job::State_IsValid(request.state())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state = ", request.state(),
        " is not a known state; use QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or unset "
        "(every state)"));
  }
  if (!v1::Job::Kind_IsValid(request.kind())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kind = ", request.kind(),
        " is not a known kind; use DEEP_RFM, MLP, ANALYSIS or unset (every kind)"));
  }
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size = ", request.page_size(), " must be >= 0 (0 = the default of 50)"));
  }
  JobFilter filter;
  filter.state = request.state();
  filter.kind = request.kind();
  DRFM_ASSIGN_OR_RETURN(Page<v1::Job> page,
                        store_->ListJobs(filter, request.page_size(), request.page_token()));
  v1::ListJobsResponse response;
  for (v1::Job& job : page.items) {
    if (!request.include_reports()) {
      job.clear_reports();
      job.clear_network_reports();
    }
    *response.add_jobs() = std::move(job);
  }
  response.set_next_page_token(std::move(page.next_page_token));
  return response;
}

absl::StatusOr<v1::Job> JobManager::CancelJob(std::string_view job_id) {
  DRFM_RETURN_IF_ERROR(RequireJobId(job_id));
  std::shared_ptr<JobRecord> cancelled;
  v1::Job result;
  int64_t depth = 0;
  double total_seconds = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(job_id);
    if (it != records_.end()) {
      std::shared_ptr<JobRecord> record = it->second;
      if (record->running) {
        record->RequestStop(StopReason::kCancel);
        absl::MutexLock record_lock(&record->mu);
        return record->job;
      }
      if (record->queued) {
        const absl::Time now = absl::Now();
        absl::MutexLock record_lock(&record->mu);
        v1::Job job = record->job;
        job.set_state(v1::Job::CANCELLED);
        *job.mutable_end_time() = ToProtoTime(now);
        job.set_error("cancelled by a CancelJob request before it started");
        v1::JobEvent event = StateChangeEvent(v1::Job::CANCELLED, v1::Job::QUEUED, now);
        event.mutable_state_change()->set_error(job.error());
        DRFM_RETURN_IF_ERROR(PublishLocked(store_, *record, std::move(job), {event}));
        CloseLocked(*record);
        queue_.erase(record->queue_key);
        record->queued = false;
        records_.erase(it);
        depth = static_cast<int64_t>(queue_.size());
        result = record->job;
        cancelled = record;
        total_seconds = absl::ToDoubleSeconds(now - FromProtoTime(result.create_time()));
      }
    }
  }
  if (cancelled != nullptr) {
    if (options_.listener != nullptr) {
      options_.listener->OnFinished(cancelled->kind, v1::Job::CANCELLED, total_seconds, 0);
    }
    NotifyQueueDepth(depth);
    return result;
  }
  DRFM_ASSIGN_OR_RETURN(v1::Job job, store_->GetJob(job_id));
  if (IsTerminal(job.state())) return job;
  return absl::UnavailableError(absl::StrCat("job ", AsAbsl(job_id), " is ",
                                             v1::Job::State_Name(job.state()),
                                             " but the server is not running jobs (shutting down "
                                             "or starting); retry later"));
}

absl::Status JobManager::DeleteJob(std::string_view job_id) {
  DRFM_RETURN_IF_ERROR(RequireJobId(job_id));
  std::shared_ptr<JobRecord> record;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(job_id);
    if (it != records_.end()) record = it->second;
  }
  if (record != nullptr) {
    absl::MutexLock lock(&record->mu);
    const v1::Job::State state = record->job.state();
    if (!IsTerminal(state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", AsAbsl(job_id), " is ", v1::Job::State_Name(state),
          "; cancel it and delete it once it has stopped"));
    }
  }
  return store_->DeleteJob(job_id);
}

absl::StatusOr<std::unique_ptr<JobWatch>> JobManager::Watch(std::string_view job_id,
                                                            int64_t after_sequence) {
  DRFM_RETURN_IF_ERROR(RequireJobId(job_id));
  if (after_sequence < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "after_sequence = ", after_sequence,
        " must be >= 0 (0 = from the first event, else the last sequence seen)"));
  }
  DRFM_ASSIGN_OR_RETURN(const v1::Job job, store_->GetJob(job_id));
  std::shared_ptr<JobRecord> record;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(job_id);
    if (it != records_.end()) record = it->second;
  }
  std::shared_ptr<WatchState> state;
  if (record != nullptr) {
    // Subscribe before reading the history: every event stored from now on also arrives live,
    // and the watch skips live events it has already read from the Store.
    state = std::make_shared<WatchState>(options_.watch_buffer_events);
    bool closed = false;
    {
      absl::MutexLock lock(&record->mu);
      closed = record->closed;
      if (!closed) record->watchers.push_back(state);
    }
    if (closed) {  // It just ended: the Store has all its events.
      state = nullptr;
      record = nullptr;
    }
  }
  std::unique_ptr<JobWatch> watch(
      new JobWatch(store_, std::string(job_id), after_sequence, record, state));
  if (IsTerminal(job.state()) && after_sequence >= job.last_event_sequence()) watch->done_ = true;
  return watch;
}

}  // namespace drfm::server
