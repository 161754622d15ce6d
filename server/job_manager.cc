#include "server/job_manager.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <iterator>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/estimate.h"
#include "core/fit.h"
#include "core/mlp.h"
#include "core/mlp_model.h"
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

// PublishLocked for a state change that must not be lost while a worker holds the job (the start
// and the end of a run). When the Store fails in a way that can heal (a full disk, a data dir an
// operator made read-only, a database another process locked, an I/O error) it is retried with
// backoff, record.mu released while waiting, until it succeeds or `give_up()` (called without
// record.mu) says the manager is stopping: a job is never left RUNNING in the Store with no
// worker to finish it. Returns the last error when it gives up.
absl::Status PublishPatientlyLocked(Store* store, JobRecord& record, const v1::Job& job,
                                    const std::vector<v1::JobEvent>& events,
                                    const std::function<bool()>& give_up)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(record.mu) {
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    absl::Status status = PublishLocked(store, record, job, events);
    if (status.ok()) return status;
    if (!absl::IsResourceExhausted(status) && !absl::IsUnavailable(status) &&
        !absl::IsInternal(status) && !absl::IsAborted(status)) {
      return status;
    }
    LogError(status, absl::StrCat("cannot record the state of job ", record.id, "; retrying"));
    record.mu.Unlock();
    const bool stop = give_up();
    if (!stop) absl::SleepFor(backoff);
    record.mu.Lock();
    if (stop) return status;
    backoff = std::min(2 * backoff, absl::Seconds(5));
  }
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

// The answer to a repeated submission whose request_id and request bytes match `earlier`: that
// job, if it is of the submitted `kind`. Requests of different kinds can serialize to the same
// bytes (e.g. only `train` set), so a job of another kind is a request_id clash.
absl::StatusOr<v1::Job> RepeatOf(v1::Job earlier, v1::Job::Kind kind) {
  if (earlier.kind() == kind) return earlier;
  return absl::AlreadyExistsError(absl::StrCat(
      "request_id \"", absl::CHexEscape(earlier.request_id()), "\" was already used by job ",
      earlier.id(), " (a ", v1::Job::Kind_Name(earlier.kind()),
      " job) for a different request; use a new request_id"));
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

// RunMonitor: what the observers of every kind of run share. It publishes the run's report
// events and throttled progress, and tells the run to stop when the job is cancelled, runs out
// of time or cannot be recorded. Used on the running worker's thread only.
class JobManager::RunMonitor {
 public:
  RunMonitor(JobManager* manager, std::shared_ptr<JobRecord> record, absl::Time deadline)
      : manager_(manager), record_(std::move(record)), deadline_(deadline) {}

  // False when the run must stop (asked to, or past its deadline, which asks it to).
  bool Continue(absl::Time now) {
    if (now > deadline_) record_->RequestStop(StopReason::kTimeout);
    return record_->stop_reason() == StopReason::kNone;
  }

  // Stores `event` with the job as `update` changes it, and publishes it. False (and the run
  // asked to stop) when the Store fails.
  template <typename Update>
  bool Publish(v1::JobEvent event, absl::Time now, Update update) {
    absl::MutexLock lock(&record_->mu);
    v1::Job job = record_->job;
    update(job);
    absl::Status status = PublishLocked(manager_->store_, *record_, std::move(job), {event});
    if (!status.ok()) return Fail(std::move(status));
    last_event_ = now;
    return true;
  }

  // Appends a Progress event, unless one was sent less than progress_interval ago for the same
  // `step` (the same layer and phase), or less than phase_change_interval ago for a new one.
  // False (and the run asked to stop) when the Store fails.
  bool Progress(absl::Time now, std::pair<int, int> step, v1::Progress progress) {
    const bool changed = step != last_step_;
    const absl::Duration since = now - last_event_;
    const JobManagerOptions& options = manager_->options_;
    if (since < options.progress_interval &&
        !(changed && since >= options.phase_change_interval)) {
      return true;
    }
    last_event_ = now;
    last_step_ = step;
    v1::JobEvent event;
    *event.mutable_time() = ToProtoTime(now);
    *event.mutable_progress() = std::move(progress);
    absl::MutexLock lock(&record_->mu);
    absl::Status status = AppendLocked(manager_->store_, *record_, std::move(event));
    if (!status.ok()) return Fail(std::move(status));
    return true;
  }

  // The Store error that made the monitor stop the run; OK when there was none.
  const absl::Status& store_error() const { return store_error_; }
  JobManagerListener* listener() const { return manager_->options_.listener; }

 private:
  bool Fail(absl::Status status) {
    store_error_ = std::move(status);
    record_->RequestStop(StopReason::kStoreError);
    return false;
  }

  JobManager* const manager_;
  const std::shared_ptr<JobRecord> record_;
  const absl::Time deadline_;
  absl::Time last_event_ = absl::InfinitePast();
  std::pair<int, int> last_step_ = {-1, -1};
  absl::Status store_error_;
};

// FitRun: the observer of one running Deep RFM fit: its layer reports and progress.
class JobManager::FitRun final : public core::FitObserver {
 public:
  FitRun(JobManager* manager, std::shared_ptr<JobRecord> record, const core::FitConfig& config,
         int64_t input_cols, absl::Time deadline)
      : monitor_(manager, std::move(record), deadline), config_(config), input_cols_(input_cols) {}

  Action OnLayer(const core::LayerReport& report) override {
    const absl::Time now = absl::Now();
    v1::JobEvent event;
    *event.mutable_time() = ToProtoTime(now);
    *event.mutable_layer_report() =
        LayerReportToProto(report, LayerOutputDim(config_, input_cols_, report.layer));
    const bool stored = monitor_.Publish(event, now, [&](v1::Job& job) {
      *job.add_reports() = event.layer_report();
      job.set_layers_done(report.layer);
    });
    if (!stored) return Action::kStop;
    if (JobManagerListener* listener = monitor_.listener()) {
      for (int p = 0; p < core::kNumPhases; ++p) {
        listener->OnPhaseSeconds(PhaseToProto(static_cast<core::Phase>(p)),
                                 report.phase_seconds[p]);
      }
    }
    return monitor_.Continue(now) ? Action::kContinue : Action::kStop;
  }

  Action OnProgress(int layer, core::Phase phase, double fraction) override {
    const absl::Time now = absl::Now();
    if (!monitor_.Continue(now)) return Action::kStop;
    v1::Progress progress;
    progress.set_layer(layer);
    progress.set_phase(PhaseToProto(phase));
    progress.set_fraction(fraction);
    return monitor_.Progress(now, {layer, static_cast<int>(phase)}, std::move(progress))
               ? Action::kContinue
               : Action::kStop;
  }

  const absl::Status& store_error() const { return monitor_.store_error(); }

 private:
  RunMonitor monitor_;
  const core::FitConfig config_;
  const int64_t input_cols_;
};

// MlpRun: the observer of one running MLP fit or analysis: its NetworkReports (an analysis
// publishes its single report itself, through PublishReport) and progress.
class JobManager::MlpRun final : public core::MlpObserver {
 public:
  MlpRun(JobManager* manager, std::shared_ptr<JobRecord> record, absl::Time deadline)
      : monitor_(manager, std::move(record), deadline) {}

  Action OnReport(const core::NetworkReport& report) override {
    const absl::Time now = absl::Now();
    if (!PublishReport(report, now)) return Action::kStop;
    return monitor_.Continue(now) ? Action::kContinue : Action::kStop;
  }

  Action OnProgress(const core::MlpProgress& p) override {
    const absl::Time now = absl::Now();
    if (!monitor_.Continue(now)) return Action::kStop;
    v1::Progress progress;
    progress.set_layer(p.layer);
    progress.set_phase(MlpPhaseToProto(p.phase));
    progress.set_fraction(p.fraction);
    progress.set_epoch(p.epoch);
    return monitor_.Progress(now, {p.layer, static_cast<int>(p.phase)}, std::move(progress))
               ? Action::kContinue
               : Action::kStop;
  }

  // Stores `report` in Job.network_reports (layers_done counts them) and as an event. False when
  // the Store failed.
  bool PublishReport(const core::NetworkReport& report, absl::Time now) {
    v1::JobEvent event;
    *event.mutable_time() = ToProtoTime(now);
    *event.mutable_network_report() = NetworkReportToProto(report);
    const bool stored = monitor_.Publish(event, now, [&](v1::Job& job) {
      *job.add_network_reports() = event.network_report();
      job.set_layers_done(job.network_reports_size());
    });
    if (!stored) return false;
    measure_seconds_ += report.seconds;
    if (JobManagerListener* listener = monitor_.listener()) {
      listener->OnPhaseSeconds(v1::Progress::MEASURE, report.seconds);
    }
    return true;
  }

  const absl::Status& store_error() const { return monitor_.store_error(); }
  // Seconds spent in the measurements published so far.
  double measure_seconds() const { return measure_seconds_; }

 private:
  RunMonitor monitor_;
  double measure_seconds_ = 0;
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
  const absl::Time now = absl::Now();
  // Jobs this recovery brings to an end, for the listener (the metrics count them like any other).
  struct Finished {
    v1::Job::Kind kind;
    v1::Job::State state;
    double total_seconds;
    double run_seconds;
  };
  std::vector<Finished> finished;
  const auto seconds_since = [now](const google::protobuf::Timestamp& t) {
    return absl::ToDoubleSeconds(now - FromProtoTime(t));
  };
  for (const v1::Job& found : interrupted) {
    v1::Job job = found;
    v1::JobEvent event;
    // A job whose model is stored finished its work before the crash (the model is stored
    // last): it succeeded, and running it again would only repeat it. A job whose cancel was
    // acknowledged stays cancelled. Any other starts over.
    DRFM_ASSIGN_OR_RETURN(const std::optional<v1::Model> model, store_->FindModelOfJob(job.id()));
    DRFM_ASSIGN_OR_RETURN(const bool cancel_requested, store_->CancelRequested(job.id()));
    if (model.has_value()) {
      job.set_state(v1::Job::SUCCEEDED);
      *job.mutable_end_time() = ToProtoTime(now);
      job.mutable_model()->set_name(model->name());
      job.mutable_model()->set_version(model->version());
      event = StateChangeEvent(v1::Job::SUCCEEDED, v1::Job::RUNNING, now);
      *event.mutable_state_change()->mutable_model() = job.model();
    } else if (cancel_requested) {
      job.set_state(v1::Job::CANCELLED);
      *job.mutable_end_time() = ToProtoTime(now);
      job.set_error("cancelled by a CancelJob request; the server stopped before the job did");
      event = StateChangeEvent(v1::Job::CANCELLED, v1::Job::RUNNING, now);
      event.mutable_state_change()->set_error(job.error());
    } else {
      ResetForRequeue(job);
      event = StateChangeEvent(v1::Job::QUEUED, v1::Job::RUNNING, now);
      event.mutable_state_change()->set_error(
          "the server stopped while the job was running; it was queued again and starts over "
          "from the beginning (layer 1, or epoch 0 of an MLP)");
    }
    DRFM_RETURN_IF_ERROR(store_->UpdateJob(job, {event}).status());
    if (job.state() != v1::Job::QUEUED) {
      // Its run ended with the crash, at a time nobody recorded: counted up to now.
      finished.push_back({job.kind(), job.state(), seconds_since(job.create_time()),
                          seconds_since(job.start_time())});
    }
  }
  DRFM_ASSIGN_OR_RETURN(const std::vector<v1::Job> queued, ListAllJobs(store_, v1::Job::QUEUED));
  // Reported once the lock is released, as everywhere else.
  absl::Cleanup report_finished = [this, &finished] {
    if (options_.listener == nullptr) return;
    for (const Finished& f : finished) {
      options_.listener->OnFinished(f.kind, f.state, f.total_seconds, f.run_seconds);
    }
  };
  absl::MutexLock lock(&mu_);
  for (const v1::Job& job : queued) {
    // Cancelled as a worker took it, before it was recorded RUNNING.
    DRFM_ASSIGN_OR_RETURN(const bool cancel_requested, store_->CancelRequested(job.id()));
    if (cancel_requested) {
      v1::Job cancelled = job;
      cancelled.set_state(v1::Job::CANCELLED);
      *cancelled.mutable_end_time() = ToProtoTime(now);
      cancelled.set_error("cancelled by a CancelJob request before it started");
      v1::JobEvent event = StateChangeEvent(v1::Job::CANCELLED, v1::Job::QUEUED, now);
      event.mutable_state_change()->set_error(cancelled.error());
      DRFM_RETURN_IF_ERROR(store_->UpdateJob(cancelled, {event}).status());
      finished.push_back({job.kind(), v1::Job::CANCELLED, seconds_since(job.create_time()), 0});
      continue;
    }
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

absl::StatusOr<core::FitShape> JobManager::DescribeFitSlices(const v1::DatasetSlice& train_slice,
                                                             const v1::DatasetSlice* test_slice) {
  DRFM_ASSIGN_OR_RETURN(const SliceShape train, datasets_->DescribeSlice(train_slice, "train"));
  const bool has_test = test_slice != nullptr;
  SliceShape test;
  if (has_test) {
    DRFM_ASSIGN_OR_RETURN(test, datasets_->DescribeSlice(*test_slice, "test"));
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
  return shape;
}

template <typename Request>
JobManager::PreparedFit JobManager::QueuedFitJob(v1::Job::Kind kind, const Request& request,
                                                 bool has_test, v1::FitEstimate estimate,
                                                 int64_t layers_total) {
  JobManager::PreparedFit prepared;
  prepared.estimate = std::move(estimate);
  v1::Job& job = prepared.job;
  job.set_kind(kind);
  job.set_state(v1::Job::QUEUED);
  *job.mutable_train() = request.train();
  if (has_test) *job.mutable_test() = request.test();
  job.set_priority(request.priority());
  *job.mutable_labels() = request.labels();
  job.set_request_id(request.request_id());
  job.set_model_name(request.model_name());
  job.set_layers_total(layers_total);
  *job.mutable_estimate() = prepared.estimate;
  return prepared;
}

absl::StatusOr<JobManager::PreparedFit> JobManager::PrepareFit(
    const v1::SubmitFitRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateSubmitFitRequest(request));
  DRFM_ASSIGN_OR_RETURN(const core::FitConfig config,
                        FitConfigFromProto(request.config(), DrawSeed()));
  DRFM_RETURN_IF_ERROR(CheckServiceLimits(config, options_.limits));
  const bool has_test = HasTestSlice(request);
  DRFM_ASSIGN_OR_RETURN(const core::FitShape shape,
                        DescribeFitSlices(request.train(), has_test ? &request.test() : nullptr));
  DRFM_ASSIGN_OR_RETURN(const core::FitEstimate estimate, core::EstimateFit(config, shape));

  PreparedFit prepared = QueuedFitJob(
      v1::Job::DEEP_RFM, request, has_test,
      FitEstimateToProto(estimate, shape, options_.memory_budget_bytes), config.layers + 1);
  *prepared.job.mutable_config() = FitConfigToProto(config);
  return prepared;
}

absl::StatusOr<JobManager::PreparedFit> JobManager::PrepareMlpFit(
    const v1::SubmitMlpFitRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateSubmitMlpFitRequest(request));
  DRFM_ASSIGN_OR_RETURN(const core::MlpConfig config,
                        MlpConfigFromProto(request.config(), DrawSeed()));
  DRFM_RETURN_IF_ERROR(CheckMlpServiceLimits(config, options_.limits));
  const bool has_test = HasTestSlice(request);
  DRFM_ASSIGN_OR_RETURN(const core::FitShape shape,
                        DescribeFitSlices(request.train(), has_test ? &request.test() : nullptr));
  DRFM_ASSIGN_OR_RETURN(const core::MlpFitEstimate estimate, core::EstimateMlpFit(config, shape));

  PreparedFit prepared = QueuedFitJob(
      v1::Job::MLP, request, has_test,
      MlpEstimateToProto(estimate, shape, options_.memory_budget_bytes), estimate.measurements);
  *prepared.job.mutable_mlp_config() = MlpConfigToProto(config);
  return prepared;
}

absl::StatusOr<JobManager::PreparedFit> JobManager::PrepareAnalysis(
    const v1::SubmitAnalysisRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateSubmitAnalysisRequest(request));
  const int64_t version = request.has_version() ? request.version() : 0;
  absl::StatusOr<v1::Model> model = store_->GetModel(request.model(), version);
  if (!model.ok()) {
    if (!absl::IsNotFound(model.status())) return model.status();
    if (version > 0 && store_->GetModel(request.model(), 0).ok()) {
      return absl::NotFoundError(absl::StrCat("model ", request.model(), " has no version ",
                                              version, "; list its versions with ListModels"));
    }
    return absl::NotFoundError(absl::StrCat(
        "model ", request.model(), " does not exist; train one with SubmitMlpFit or import one "
        "with ImportModel (ListModels shows the stored models)"));
  }
  if (model->kind() != v1::Model::MLP) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model ", model->name(), " v", model->version(), " is a ",
        v1::Model::Kind_Name(model->kind()),
        " model; SubmitAnalysis measures MLPs only (Model.kind MLP, trained with SubmitMlpFit "
        "or imported with ImportModel)"));
  }
  DRFM_ASSIGN_OR_RETURN(const SliceShape data, datasets_->DescribeSlice(request.data(), "data"));
  if (data.cols != model->input_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset ", data.dataset.name(), " has ", data.cols, " columns but model ",
        model->name(), " v", model->version(), " takes ", model->input_dim(),
        " input features; measure it on data of its input dimension"));
  }
  if (data.num_classes != model->classes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset ", data.dataset.name(), " has ", data.num_classes, " classes but model ",
        model->name(), " v", model->version(), " has ", model->classes(),
        " outputs; the labels of the data must be the model's classes"));
  }
  if (data.rows > options_.limits.max_train_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data has ", data.rows, " rows; this server measures at most ",
        options_.limits.max_train_rows, " rows: set data.limit to at most ",
        options_.limits.max_train_rows));
  }
  if (data.rows < model->classes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data has ", data.rows, " rows but the model has ", model->classes(),
        " classes; the collapse metrics need every class present: raise data.limit"));
  }
  const std::vector<int64_t> layer_dims(model->layer_dims().begin(), model->layer_dims().end());
  DRFM_ASSIGN_OR_RETURN(
      const core::MlpFitEstimate estimate,
      core::EstimateMlpAnalysis(data.rows, data.cols, layer_dims, model->classes()));
  core::FitShape shape;
  shape.train_rows = data.rows;
  shape.cols = data.cols;
  shape.num_classes = model->classes();

  PreparedFit prepared;
  prepared.estimate = MlpEstimateToProto(estimate, shape, options_.memory_budget_bytes);
  v1::Job& job = prepared.job;
  job.set_kind(v1::Job::ANALYSIS);
  job.set_state(v1::Job::QUEUED);
  job.mutable_analyzed_model()->set_name(model->name());
  job.mutable_analyzed_model()->set_version(model->version());
  *job.mutable_data() = request.data();
  job.set_priority(request.priority());
  *job.mutable_labels() = request.labels();
  job.set_request_id(request.request_id());
  job.set_layers_total(1);
  *job.mutable_estimate() = prepared.estimate;
  return prepared;
}

absl::StatusOr<v1::FitEstimate> JobManager::EstimateFit(const v1::SubmitFitRequest& request) {
  DRFM_ASSIGN_OR_RETURN(PreparedFit prepared, PrepareFit(request));
  return std::move(prepared.estimate);
}

absl::StatusOr<v1::Job> JobManager::SubmitFit(const v1::SubmitFitRequest& request) {
  DRFM_RETURN_IF_ERROR(CheckAccepting());
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::Job> earlier,
                        store_->FindJobByRequest(request.request_id(), request));
  // A repeat: whatever changed since (its dataset, the queue).
  if (earlier.has_value()) return RepeatOf(*std::move(earlier), v1::Job::DEEP_RFM);
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
  DRFM_RETURN_IF_ERROR(CheckAccepting());
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::Job> earlier,
                        store_->FindJobByRequest(request.request_id(), request));
  // A repeat: whatever changed since (its dataset, the queue).
  if (earlier.has_value()) return RepeatOf(*std::move(earlier), v1::Job::MLP);
  DRFM_ASSIGN_OR_RETURN(PreparedFit prepared, PrepareMlpFit(request));
  if (!prepared.estimate.within_budget()) {
    const v1::FitEstimate& e = prepared.estimate;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the MLP fit needs an estimated ", FormatGigabytes(static_cast<double>(e.memory_bytes())),
        " of memory, more than this server's budget of ",
        FormatGigabytes(static_cast<double>(e.memory_budget_bytes())),
        " per job; use fewer training rows (train.limit) or test rows, a smaller config.width "
        "or config.depth"));
  }
  return Enqueue(std::move(prepared.job), request);
}

absl::StatusOr<v1::Job> JobManager::SubmitAnalysis(const v1::SubmitAnalysisRequest& request) {
  DRFM_RETURN_IF_ERROR(CheckAccepting());
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::Job> earlier,
                        store_->FindJobByRequest(request.request_id(), request));
  // A repeat: whatever changed since (its dataset, the queue).
  if (earlier.has_value()) return RepeatOf(*std::move(earlier), v1::Job::ANALYSIS);
  DRFM_ASSIGN_OR_RETURN(PreparedFit prepared, PrepareAnalysis(request));
  if (!prepared.estimate.within_budget()) {
    const v1::FitEstimate& e = prepared.estimate;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the analysis needs an estimated ", FormatGigabytes(static_cast<double>(e.memory_bytes())),
        " of memory, more than this server's budget of ",
        FormatGigabytes(static_cast<double>(e.memory_budget_bytes())),
        " per job; measure fewer rows (data.limit)"));
  }
  return Enqueue(std::move(prepared.job), request);
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
    if (!created.created) return RepeatOf(std::move(created.job), job.kind());
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
    absl::Status status = PublishPatientlyLocked(
        store_, *record, job, {StateChangeEvent(v1::Job::RUNNING, v1::Job::QUEUED, start)},
        [this] { return !accepting(); });
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
  switch (record->kind) {
    case v1::Job::DEEP_RFM:
      outcome = RunDeepRfm(record, job);
      break;
    case v1::Job::MLP:
      outcome = RunMlp(record, job);
      break;
    case v1::Job::ANALYSIS:
      outcome = RunAnalysis(record, job);
      break;
    default:
      outcome.error = absl::StrCat("this server cannot run jobs of kind ", record->kind,
                                   "; resubmit it to a server that supports them");
      break;
  }
  Finish(record, std::move(outcome));
}

JobManager::Outcome JobManager::FailedRun(JobRecord& record, const v1::Job& job,
                                          const absl::Status& status,
                                          const absl::Status& store_error, std::string_view steps,
                                          std::string_view what, std::string_view reduce) const {
  Outcome outcome;
  if (!store_error.ok()) {
    outcome.error =
        absl::StrCat("recording the job's progress failed: ", store_error.message());
    return outcome;
  }
  if (absl::IsCancelled(status) && record.stop_reason() != StopReason::kNone) {
    if (steps.empty()) return Stopped(record, "while measuring", reduce);
    int64_t done = 0;
    {
      absl::MutexLock lock(&record.mu);
      done = record.job.layers_done();
    }
    return Stopped(record,
                   absl::StrCat("while running (after ", done, " of ", job.layers_total(), " ",
                                AsAbsl(steps), ")"),
                   reduce);
  }
  outcome.error = absl::StrCat(AsAbsl(what), " failed: ", status.message());
  return outcome;
}

JobManager::Outcome JobManager::Stopped(const JobRecord& record, std::string_view during,
                                        std::string_view reduce) const {
  Outcome stop;
  switch (record.stop_reason()) {
    case StopReason::kCancel:
      stop.state = v1::Job::CANCELLED;
      stop.error = absl::StrCat("cancelled by a CancelJob request ", AsAbsl(during));
      break;
    case StopReason::kShutdown:
      stop.requeue = true;
      break;
    case StopReason::kTimeout:
      stop.error = absl::StrCat("the job ran longer than this server's limit of ",
                                absl::FormatDuration(options_.max_job_runtime),
                                " per job and was stopped; ", AsAbsl(reduce));
      break;
    case StopReason::kStoreError:
    case StopReason::kNone:
      stop.error = absl::StrCat("the job stopped ", AsAbsl(during));
      break;
  }
  return stop;
}

absl::Time JobManager::RunDeadline(const v1::Job& job) const {
  return options_.max_job_runtime == absl::InfiniteDuration()
             ? absl::InfiniteFuture()
             : FromProtoTime(job.start_time()) + options_.max_job_runtime;
}

absl::Status JobManager::LoadFitSlices(const v1::Job& job, core::Dataset* train,
                                       std::optional<core::Dataset>* test) {
  absl::StatusOr<core::Dataset> loaded = datasets_->Load(job.train(), "train");
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat("loading the training rows failed: ",
                                     loaded.status().message()));
  }
  *train = *std::move(loaded);
  if (!job.test().dataset().empty()) {
    loaded = datasets_->Load(job.test(), "test");
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(),
                          absl::StrCat("loading the test rows failed: ",
                                       loaded.status().message()));
    }
    *test = *std::move(loaded);
  }
  return absl::OkStatus();
}

JobManager::Outcome JobManager::RunDeepRfm(const std::shared_ptr<JobRecord>& record,
                                           const v1::Job& job) {
  constexpr std::string_view kReduce =
      "use fewer training rows (train.limit), fewer layers or a smaller width";
  Outcome outcome;
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }
  core::Dataset train;
  std::optional<core::Dataset> test;
  if (absl::Status loaded = LoadFitSlices(job, &train, &test); !loaded.ok()) {
    outcome.error = std::string(loaded.message());
    return outcome;
  }
  // The config was resolved at submission, seed included.
  absl::StatusOr<core::FitConfig> config = FitConfigFromProto(job.config(), job.config().seed());
  if (!config.ok()) {
    outcome.error = absl::StrCat("the job's stored config is invalid: ", config.status().message());
    return outcome;
  }
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }

  FitRun observer(this, record, *config, train.cols(), RunDeadline(job));
  core::FitOptions fit_options;
  fit_options.threads = options_.threads_per_fit;
  absl::StatusOr<core::FitResult> result = core::FitDeepRfm(
      train, test.has_value() ? &*test : nullptr, *config, &observer, fit_options);
  if (!result.ok()) {
    return FailedRun(*record, job, result.status(), observer.store_error(), "layers", "the fit",
                     kReduce);
  }

  v1::Model model;
  model.set_name(job.model_name().empty() ? job.id() : job.model_name());
  model.set_kind(v1::Model::DEEP_RFM);
  model.set_input_dim(result->model.input_dim());
  model.set_classes(result->model.num_classes());
  model.set_layers(result->model.num_layers());
  *model.mutable_config() = job.config();
  model.set_job_id(job.id());
  for (int64_t dim : LayerDims(*config, train.cols())) model.add_layer_dims(dim);
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

JobManager::Outcome JobManager::RunMlp(const std::shared_ptr<JobRecord>& record,
                                       const v1::Job& job) {
  constexpr std::string_view kReduce =
      "use fewer epochs (config.epochs), fewer training rows (train.limit) or a smaller "
      "config.width";
  Outcome outcome;
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }
  core::Dataset train;
  std::optional<core::Dataset> test;
  if (absl::Status loaded = LoadFitSlices(job, &train, &test); !loaded.ok()) {
    outcome.error = std::string(loaded.message());
    return outcome;
  }
  // The config was resolved at submission, seed included.
  absl::StatusOr<core::MlpConfig> config =
      MlpConfigFromProto(job.mlp_config(), job.mlp_config().seed());
  if (!config.ok()) {
    outcome.error = absl::StrCat("the job's stored config is invalid: ", config.status().message());
    return outcome;
  }
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }

  MlpRun observer(this, record, RunDeadline(job));
  core::FitOptions fit_options;
  fit_options.threads = options_.threads_per_fit;
  absl::StatusOr<core::MlpFitResult> result = core::FitMlp(
      train, test.has_value() ? &*test : nullptr, *config, &observer, fit_options);
  if (!result.ok()) {
    return FailedRun(*record, job, result.status(), observer.store_error(), "measurements",
                     "the MLP fit", kReduce);
  }
  if (JobManagerListener* listener = options_.listener) {
    listener->OnPhaseSeconds(v1::Progress::TRAIN,
                             std::max(0.0, result->seconds - observer.measure_seconds()));
  }

  const core::MlpModel& trained = result->model;
  v1::Model model;
  model.set_name(job.model_name().empty() ? job.id() : job.model_name());
  model.set_kind(v1::Model::MLP);
  model.set_input_dim(trained.input_dim());
  model.set_classes(trained.num_classes());
  model.set_layers(trained.depth());
  *model.mutable_mlp_config() = job.mlp_config();
  model.set_job_id(job.id());
  for (int64_t dim : trained.layer_dims()) model.add_layer_dims(dim);
  model.set_standardize(trained.params().standardize);
  absl::StatusOr<v1::Model> stored = store_->PutModel(model, trained.Serialize());
  if (!stored.ok()) {
    outcome.error = absl::StrCat("storing the trained MLP failed: ", stored.status().message());
    return outcome;
  }
  outcome.state = v1::Job::SUCCEEDED;
  v1::ModelRef ref;
  ref.set_name(stored->name());
  ref.set_version(stored->version());
  outcome.model = ref;
  return outcome;
}

JobManager::Outcome JobManager::RunAnalysis(const std::shared_ptr<JobRecord>& record,
                                            const v1::Job& job) {
  constexpr std::string_view kReduce = "measure fewer rows (data.limit)";
  Outcome outcome;
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }
  const v1::ModelRef& ref = job.analyzed_model();
  absl::StatusOr<std::string> blob = store_->ReadModelBlob(ref.name(), ref.version());
  if (!blob.ok()) {
    outcome.error =
        absl::IsNotFound(blob.status())
            ? absl::StrCat("model ", ref.name(), " v", ref.version(),
                           " was deleted before the analysis ran; submit it again for a stored "
                           "model")
            : absl::StrCat("reading model ", ref.name(), " v", ref.version(),
                           " failed: ", blob.status().message());
    return outcome;
  }
  absl::StatusOr<core::MlpModel> model = core::MlpModel::Deserialize(*blob);
  blob->clear();
  if (!model.ok()) {
    outcome.error = absl::StrCat("stored model ", ref.name(), " v", ref.version(),
                                 " cannot be read as an MLP: ", model.status().message());
    return outcome;
  }
  absl::StatusOr<core::Dataset> data = datasets_->Load(job.data(), "data");
  if (!data.ok()) {
    outcome.error = absl::StrCat("loading the data rows failed: ", data.status().message());
    return outcome;
  }
  if (record->stop_reason() != StopReason::kNone) {
    return Stopped(*record, "before it started", kReduce);
  }

  MlpRun observer(this, record, RunDeadline(job));
  core::FitOptions fit_options;
  fit_options.threads = options_.threads_per_fit;
  absl::StatusOr<core::NetworkReport> report =
      core::AnalyzeMlp(*model, *data, &observer, fit_options);
  if (!report.ok()) {
    return FailedRun(*record, job, report.status(), observer.store_error(), "", "the analysis",
                     kReduce);
  }
  if (!observer.PublishReport(*report, absl::Now())) {
    outcome.error = absl::StrCat("recording the job's report failed: ",
                                 observer.store_error().message());
    return outcome;
  }
  outcome.state = v1::Job::SUCCEEDED;
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
          "from the beginning (layer 1, or epoch 0 of an MLP) when the server restarts");
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
    absl::Status status =
        PublishPatientlyLocked(store_, *record, job, {event}, [this] { return !accepting(); });
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
        // Durable before it is acknowledged: a crash before the fit stops must not run the job
        // again (RecoverJobs cancels it).
        DRFM_RETURN_IF_ERROR(store_->MarkCancelRequested(record->id));
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
