// Tests of JobManager against a real SqliteStore in a fresh temporary directory per test, with
// small synthetic datasets and small fits: the lifecycle to a stored model, event streams (order,
// resumption, several watchers, a watcher that never reads), cancellation, admission (queue
// bound, memory budget, idempotency, validation), priorities, runtime limits, shutdown and
// recovery after a restart; the same for MLP fits and analyses (DNN.md). Waits are on events or
// conditions with deadlines, never fixed sleeps.
#include "server/job_manager.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/mlp_model.h"
#include "core/model.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace drfm::server {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::MessageDifferencer;

constexpr char kSmallTrain[] = "synthetic:rows=200,cols=10,classes=3";
constexpr char kSmallTest[] = "synthetic:rows=60,cols=10,classes=3,seed=1";
// A fit that runs for many seconds on two cores, to keep a worker busy until it is cancelled.
constexpr char kLongTrain[] = "synthetic:rows=3000,cols=200,classes=10";
// Generous bound for anything that should finish; failures show up as timeouts, not hangs.
constexpr absl::Duration kDeadline = absl::Seconds(180);

v1::SubmitFitRequest SmallFit(int layers = 1) {
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset(kSmallTrain);
  request.mutable_test()->set_dataset(kSmallTest);
  request.mutable_config()->set_layers(layers);
  request.mutable_config()->set_width(32);
  return request;
}

v1::SubmitFitRequest LongFit() {
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset(kLongTrain);
  request.mutable_config()->set_layers(8);
  request.mutable_config()->set_width(1024);
  return request;
}

// A small MLP fit: 3 measurements (epochs 0, 10, 20), a fraction of a second.
v1::SubmitMlpFitRequest SmallMlp() {
  v1::SubmitMlpFitRequest request;
  request.mutable_train()->set_dataset(kSmallTrain);
  request.mutable_test()->set_dataset(kSmallTest);
  v1::MlpConfig* config = request.mutable_config();
  config->set_depth(2);
  config->set_width(32);
  config->set_epochs(20);
  config->set_batch_size(32);
  config->set_measure_every(10);
  config->set_learning_rate(1e-3);
  config->set_init_gain(0.5);
  return request;
}

// An MLP fit that trains for minutes, to keep a worker busy until it is cancelled.
v1::SubmitMlpFitRequest LongMlp() {
  v1::SubmitMlpFitRequest request;
  request.mutable_train()->set_dataset(kLongTrain);
  request.mutable_config()->set_depth(4);
  request.mutable_config()->set_width(512);
  request.mutable_config()->set_epochs(10000);
  request.mutable_config()->set_measure_every(0);
  return request;
}

bool IsStateChange(const v1::JobEvent& event, v1::Job::State state) {
  return event.has_state_change() && event.state_change().state() == state;
}

// Every event of `watch` until it is done (or the deadline passes, which fails the test).
std::vector<v1::JobEvent> CollectUntilDone(JobWatch& watch, absl::Duration within = kDeadline) {
  std::vector<v1::JobEvent> events;
  const absl::Time deadline = absl::Now() + within;
  while (!watch.done() && absl::Now() < deadline) {
    absl::StatusOr<std::optional<v1::JobEvent>> next = watch.Next(absl::Milliseconds(200));
    if (!next.ok()) {
      ADD_FAILURE() << next.status();
      break;
    }
    if (next->has_value()) events.push_back(**next);
  }
  EXPECT_TRUE(watch.done()) << "the watch did not end in time";
  return events;
}

// The first event of `watch` matching `match`, or nullopt (and a test failure) at the deadline
// or the end of the stream.
std::optional<v1::JobEvent> WaitForEvent(JobWatch& watch,
                                         const std::function<bool(const v1::JobEvent&)>& match,
                                         absl::Duration within = kDeadline) {
  const absl::Time deadline = absl::Now() + within;
  while (!watch.done() && absl::Now() < deadline) {
    absl::StatusOr<std::optional<v1::JobEvent>> next = watch.Next(absl::Milliseconds(200));
    if (!next.ok()) {
      ADD_FAILURE() << next.status();
      return std::nullopt;
    }
    if (next->has_value() && match(**next)) return **next;
  }
  ADD_FAILURE() << "no matching event in time";
  return std::nullopt;
}

void ExpectContiguousFromOne(const std::vector<v1::JobEvent>& events) {
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1)) << "at index " << i;
  }
}

bool SameEvents(const std::vector<v1::JobEvent>& a, const std::vector<v1::JobEvent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!MessageDifferencer::Equals(a[i], b[i])) return false;
  }
  return true;
}

// Counts what the manager reports, as a metrics exporter would.
class CountingListener : public JobManagerListener {
 public:
  void OnSubmitted(v1::Job::Kind kind) override { ++submitted; }
  void OnStarted(v1::Job::Kind kind, double queued_seconds) override { ++started; }
  void OnFinished(v1::Job::Kind kind, v1::Job::State state, double total_seconds,
                  double run_seconds) override {
    absl::MutexLock lock(&mu);
    ++finished[state];
    EXPECT_GE(total_seconds, run_seconds);
    EXPECT_GE(run_seconds, 0);
  }
  void OnPhaseSeconds(v1::Progress::Phase phase, double seconds) override { ++phase_samples; }
  void OnQueueDepth(int64_t depth) override { last_depth = depth; }

  std::atomic<int> submitted{0};
  std::atomic<int> started{0};
  std::atomic<int> phase_samples{0};
  std::atomic<int64_t> last_depth{-1};
  absl::Mutex mu;
  std::map<v1::Job::State, int> finished ABSL_GUARDED_BY(mu);
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("drfm_job_manager_") + info->name() + "_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    OpenStore();
  }

  void TearDown() override {
    manager_.reset();
    resolver_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void OpenStore() {
    SqliteStoreOptions options;
    options.data_dir = dir_.string();
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    resolver_ = std::make_unique<DatasetResolver>(store_.get());
  }

  static JobManagerOptions DefaultOptions() {
    JobManagerOptions options;
    options.workers = 1;
    options.threads_per_fit = 2;
    return options;
  }

  void StartManager(JobManagerOptions options = DefaultOptions()) {
    manager_ = std::make_unique<JobManager>(store_.get(), resolver_.get(), options);
    const absl::Status status = manager_->Start();
    ASSERT_TRUE(status.ok()) << status;
  }

  v1::Job Submit(const v1::SubmitFitRequest& request) {
    absl::StatusOr<v1::Job> job = manager_->SubmitFit(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  std::unique_ptr<JobWatch> Watch(const std::string& job_id, int64_t after = 0) {
    absl::StatusOr<std::unique_ptr<JobWatch>> watch = manager_->Watch(job_id, after);
    EXPECT_TRUE(watch.ok()) << watch.status();
    return watch.ok() ? *std::move(watch) : nullptr;
  }

  // Waits for the job's terminal state and returns the job.
  v1::Job WaitForEnd(const std::string& job_id) {
    std::unique_ptr<JobWatch> watch = Watch(job_id);
    if (watch == nullptr) return v1::Job();
    CollectUntilDone(*watch);
    absl::StatusOr<v1::Job> job = manager_->GetJob(job_id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  // Submits LongFit and returns once it is RUNNING.
  v1::Job StartBlocker() {
    v1::Job blocker = Submit(LongFit());
    std::unique_ptr<JobWatch> watch = Watch(blocker.id());
    if (watch != nullptr) {
      WaitForEvent(*watch, [](const v1::JobEvent& e) { return IsStateChange(e, v1::Job::RUNNING); });
    }
    return blocker;
  }

  fs::path dir_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<DatasetResolver> resolver_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, SubmittedFitRunsToSuccessWithReportsAndAStoredModel) {
  StartManager();
  const v1::Job queued = Submit(SmallFit(2));
  EXPECT_EQ(queued.state(), v1::Job::QUEUED);
  EXPECT_EQ(queued.kind(), v1::Job::DEEP_RFM);
  EXPECT_EQ(queued.id().size(), 16u);
  EXPECT_EQ(queued.layers_total(), 3);
  EXPECT_EQ(queued.last_event_sequence(), 1);
  // The resolved config shows every value, the drawn seed included.
  EXPECT_TRUE(queued.config().has_seed());
  EXPECT_EQ(queued.config().kernel(), v1::FitConfig::LAPLACE);
  EXPECT_EQ(queued.config().bandwidth(), 2.0);
  EXPECT_EQ(queued.estimate().train_rows(), 200);
  EXPECT_EQ(queued.estimate().test_rows(), 60);
  EXPECT_GT(queued.estimate().memory_bytes(), 0);

  const v1::Job job = WaitForEnd(queued.id());
  ASSERT_EQ(job.state(), v1::Job::SUCCEEDED) << job.error();
  EXPECT_TRUE(job.error().empty());
  EXPECT_EQ(job.layers_done(), 3);
  ASSERT_EQ(job.reports_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(job.reports(i).layer(), i + 1);
  EXPECT_TRUE(job.reports(2).readout());
  EXPECT_TRUE(job.reports(0).has_test_accuracy());
  EXPECT_EQ(job.reports(0).output_dim(), 32);
  EXPECT_TRUE(job.has_start_time());
  EXPECT_TRUE(job.has_end_time());
  // Unnamed: the model is stored under the job id.
  EXPECT_EQ(job.model().name(), job.id());
  EXPECT_EQ(job.model().version(), 1);

  absl::StatusOr<v1::Model> model = store_->GetModel(job.model().name(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->kind(), v1::Model::DEEP_RFM);
  EXPECT_EQ(model->input_dim(), 10);
  EXPECT_EQ(model->classes(), 3);
  EXPECT_EQ(model->layers(), 2);
  EXPECT_EQ(model->job_id(), job.id());
  EXPECT_EQ(model->layer_dims_size(), 2);
  EXPECT_TRUE(MessageDifferencer::Equals(model->config(), job.config()));

  absl::StatusOr<std::string> blob = store_->ReadModelBlob(job.model().name(), 1);
  ASSERT_TRUE(blob.ok()) << blob.status();
  absl::StatusOr<core::DeepRfmModel> fitted = core::DeepRfmModel::Deserialize(*blob);
  ASSERT_TRUE(fitted.ok()) << fitted.status();
  absl::StatusOr<core::Dataset> data = core::MakeSynthetic(*core::ParseSyntheticName(kSmallTrain));
  ASSERT_TRUE(data.ok()) << data.status();
  absl::StatusOr<core::Prediction> prediction = fitted->Predict(data->features);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  ASSERT_EQ(prediction->labels.size(), 200u);
  int correct = 0;
  for (size_t i = 0; i < prediction->labels.size(); ++i) {
    correct += prediction->labels[i] == data->labels[i];
  }
  // The training accuracy the fit reported for the readout is what the model predicts.
  EXPECT_NEAR(correct / 200.0, job.reports(2).train_accuracy(), 1e-9);
}

TEST_F(JobManagerTest, NamedModelsGetANewVersionPerFit) {
  StartManager();
  v1::SubmitFitRequest request = SmallFit();
  request.set_model_name("my-model");
  const v1::Job first = WaitForEnd(Submit(request).id());
  const v1::Job second = WaitForEnd(Submit(request).id());
  ASSERT_EQ(first.state(), v1::Job::SUCCEEDED) << first.error();
  ASSERT_EQ(second.state(), v1::Job::SUCCEEDED) << second.error();
  EXPECT_EQ(first.model().name(), "my-model");
  EXPECT_EQ(first.model().version(), 1);
  EXPECT_EQ(second.model().version(), 2);
}

TEST_F(JobManagerTest, WatchFromZeroSeesContiguousSequencesEndingWithTheTerminalState) {
  StartManager();
  const v1::Job job = Submit(SmallFit(2));
  std::unique_ptr<JobWatch> watch = Watch(job.id());
  ASSERT_NE(watch, nullptr);
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ASSERT_GE(events.size(), 5u);
  ExpectContiguousFromOne(events);
  EXPECT_TRUE(IsStateChange(events.front(), v1::Job::QUEUED));
  EXPECT_EQ(events.front().state_change().previous_state(), v1::Job::STATE_UNSPECIFIED);
  EXPECT_TRUE(IsStateChange(events[1], v1::Job::RUNNING));
  EXPECT_TRUE(IsStateChange(events.back(), v1::Job::SUCCEEDED));
  EXPECT_EQ(events.back().state_change().model().name(), job.id());
  int layer_reports = 0;
  for (const v1::JobEvent& event : events) {
    EXPECT_TRUE(event.has_time());
    if (event.has_layer_report()) {
      EXPECT_EQ(event.layer_report().layer(), ++layer_reports);
    }
  }
  EXPECT_EQ(layer_reports, 3);
  absl::StatusOr<v1::Job> done = manager_->GetJob(job.id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->last_event_sequence(), static_cast<int64_t>(events.size()));
  // After the end the watch stays done.
  absl::StatusOr<std::optional<v1::JobEvent>> after = watch->Next(absl::Milliseconds(10));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
}

TEST_F(JobManagerTest, WatchWithAfterSequenceResumesExactly) {
  StartManager();
  const v1::Job job = Submit(SmallFit(2));
  // Resume live: read three events, drop the watch, continue from the last one seen.
  std::vector<v1::JobEvent> resumed;
  {
    std::unique_ptr<JobWatch> first = Watch(job.id());
    ASSERT_NE(first, nullptr);
    while (resumed.size() < 3) {
      absl::StatusOr<std::optional<v1::JobEvent>> next = first->Next(kDeadline);
      ASSERT_TRUE(next.ok()) << next.status();
      ASSERT_TRUE(next->has_value());
      resumed.push_back(**next);
    }
    EXPECT_EQ(first->last_sequence(), 3);
  }
  std::unique_ptr<JobWatch> second = Watch(job.id(), 3);
  ASSERT_NE(second, nullptr);
  for (v1::JobEvent& event : CollectUntilDone(*second)) resumed.push_back(std::move(event));

  std::unique_ptr<JobWatch> full_watch = Watch(job.id());
  const std::vector<v1::JobEvent> full = CollectUntilDone(*full_watch);
  EXPECT_TRUE(SameEvents(resumed, full));
  // Resuming from the stored history at every point gives exactly the rest.
  for (size_t k = 0; k <= full.size(); ++k) {
    std::unique_ptr<JobWatch> watch = Watch(job.id(), static_cast<int64_t>(k));
    ASSERT_NE(watch, nullptr);
    const std::vector<v1::JobEvent> rest = CollectUntilDone(*watch);
    EXPECT_TRUE(SameEvents(rest, std::vector<v1::JobEvent>(full.begin() + k, full.end())))
        << "after_sequence " << k;
  }
}

TEST_F(JobManagerTest, TwoWatchersSeeIdenticalStreams) {
  StartManager();
  const v1::Job job = Submit(SmallFit(2));
  std::unique_ptr<JobWatch> a = Watch(job.id());
  std::unique_ptr<JobWatch> b = Watch(job.id());
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<v1::JobEvent> events_a;
  std::thread reader([&] { events_a = CollectUntilDone(*a); });
  const std::vector<v1::JobEvent> events_b = CollectUntilDone(*b);
  reader.join();
  ExpectContiguousFromOne(events_a);
  EXPECT_TRUE(SameEvents(events_a, events_b));
  EXPECT_TRUE(IsStateChange(events_a.back(), v1::Job::SUCCEEDED));
}

TEST_F(JobManagerTest, AWatcherThatNeverReadsDoesNotHoldUpTheFitAndLaterReadsEverything) {
  JobManagerOptions options = DefaultOptions();
  options.watch_buffer_events = 2;  // Overflows after two events.
  StartManager(options);
  const v1::Job job = Submit(SmallFit(2));
  std::unique_ptr<JobWatch> idle = Watch(job.id());
  ASSERT_NE(idle, nullptr);
  const v1::Job done = WaitForEnd(job.id());
  ASSERT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  // The idle watcher fell behind and catches up from the Store: nothing lost, nothing repeated.
  const std::vector<v1::JobEvent> events = CollectUntilDone(*idle);
  ExpectContiguousFromOne(events);
  EXPECT_EQ(static_cast<int64_t>(events.size()), done.last_event_sequence());
  EXPECT_TRUE(IsStateChange(events.back(), v1::Job::SUCCEEDED));
}

TEST_F(JobManagerTest, AWatcherThatFallsBehindMidStreamSwitchesToTheStoreWithoutGaps) {
  JobManagerOptions options = DefaultOptions();
  options.watch_buffer_events = 1;
  StartManager(options);
  const v1::Job job = Submit(SmallFit(2));
  std::unique_ptr<JobWatch> slow = Watch(job.id());
  ASSERT_NE(slow, nullptr);
  // Read one event at a time while the fit produces many: the watch alternates between the live
  // buffer and the Store.
  std::vector<v1::JobEvent> events = CollectUntilDone(*slow);
  ExpectContiguousFromOne(events);
  EXPECT_TRUE(IsStateChange(events.back(), v1::Job::SUCCEEDED));
}

TEST_F(JobManagerTest, CancellingAQueuedJobCancelsItAtOnce) {
  StartManager();
  const v1::Job blocker = StartBlocker();
  const v1::Job queued = Submit(SmallFit());
  EXPECT_EQ(manager_->queued_jobs(), 1);
  absl::StatusOr<v1::Job> cancelled = manager_->CancelJob(queued.id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::Job::CANCELLED);
  EXPECT_FALSE(cancelled->error().empty());
  EXPECT_TRUE(cancelled->has_end_time());
  EXPECT_EQ(manager_->queued_jobs(), 0);
  std::unique_ptr<JobWatch> watch = Watch(queued.id());
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(IsStateChange(events[0], v1::Job::QUEUED));
  EXPECT_TRUE(IsStateChange(events[1], v1::Job::CANCELLED));
  EXPECT_EQ(events[1].state_change().previous_state(), v1::Job::QUEUED);
  // Cancelling a terminal job returns it unchanged.
  absl::StatusOr<v1::Job> again = manager_->CancelJob(queued.id());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*again, *manager_->GetJob(queued.id())));
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
  EXPECT_EQ(WaitForEnd(blocker.id()).state(), v1::Job::CANCELLED);
}

TEST_F(JobManagerTest, CancellingARunningFashionMnistFitStopsItWithinOneSecond) {
  StartManager();
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset(kFashionMnistTrain);
  request.mutable_train()->set_limit(3000);
  const v1::Job job = Submit(request);
  std::unique_ptr<JobWatch> watch = Watch(job.id());
  ASSERT_NE(watch, nullptr);
  // Progress means the data is loaded and the fit is computing.
  ASSERT_TRUE(WaitForEvent(*watch, [](const v1::JobEvent& e) { return e.has_progress(); }));
  const absl::Time cancelled_at = absl::Now();
  absl::StatusOr<v1::Job> running = manager_->CancelJob(job.id());
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->state(), v1::Job::RUNNING);
  std::optional<v1::JobEvent> end = WaitForEvent(
      *watch, [](const v1::JobEvent& e) { return IsStateChange(e, v1::Job::CANCELLED); });
  const absl::Duration took = absl::Now() - cancelled_at;
  ASSERT_TRUE(end.has_value());
  EXPECT_LT(took, absl::Seconds(1));
  RecordProperty("cancel_latency_ms", static_cast<int>(absl::ToInt64Milliseconds(took)));
  EXPECT_EQ(end->state_change().previous_state(), v1::Job::RUNNING);
  EXPECT_NE(end->state_change().error().find("cancelled"), std::string::npos);
  const v1::Job cancelled = *manager_->GetJob(job.id());
  EXPECT_EQ(cancelled.state(), v1::Job::CANCELLED);
  EXPECT_FALSE(cancelled.has_model());
}

TEST_F(JobManagerTest, AFullQueueRefusesNewJobsButNotRepeatsOfQueuedOnes) {
  JobManagerOptions options = DefaultOptions();
  options.max_queued_jobs = 1;
  StartManager(options);
  const v1::Job blocker = StartBlocker();
  v1::SubmitFitRequest first = SmallFit();
  first.set_request_id("first");
  const v1::Job queued = Submit(first);
  absl::StatusOr<v1::Job> refused = manager_->SubmitFit(SmallFit());
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(refused.status().message(), "queue is full (1 queued jobs, limit 1); retry later");
  absl::StatusOr<v1::Job> repeat = manager_->SubmitFit(first);
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->id(), queued.id());
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
}

TEST_F(JobManagerTest, AFitOverTheMemoryBudgetIsRefusedWithBothNumbers) {
  JobManagerOptions options = DefaultOptions();
  options.memory_budget_bytes = 1000000;  // 1 MB
  StartManager(options);
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset("synthetic:rows=2000,cols=10,classes=3");
  absl::StatusOr<v1::Job> refused = manager_->SubmitFit(request);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  const std::string message(refused.status().message());
  EXPECT_NE(message.find("budget of 0.001 GB"), std::string::npos) << message;
  EXPECT_NE(message.find("needs an estimated 0.0"), std::string::npos) << message;
  EXPECT_NE(message.find("train.limit"), std::string::npos) << message;
  EXPECT_NE(message.find("agop_samples"), std::string::npos) << message;

  absl::StatusOr<v1::FitEstimate> estimate = manager_->EstimateFit(request);
  ASSERT_TRUE(estimate.ok()) << estimate.status();
  EXPECT_FALSE(estimate->within_budget());
  EXPECT_EQ(estimate->memory_budget_bytes(), 1000000);
  EXPECT_GT(estimate->memory_bytes(), 2000 * 2000 * 4);
  EXPECT_EQ(estimate->kernel_bytes(), 2000 * 2000 * 4);
  EXPECT_EQ(estimate->train_rows(), 2000);
  EXPECT_EQ(estimate->cols(), 10);
  EXPECT_EQ(estimate->num_classes(), 3);
  EXPECT_GT(estimate->flops(), 0);

  v1::ListJobsRequest list;
  EXPECT_EQ(manager_->ListJobs(list)->jobs_size(), 0);  // Estimates create no jobs.
}

TEST_F(JobManagerTest, RequestIdMakesSubmissionIdempotent) {
  StartManager();
  v1::SubmitFitRequest request = SmallFit();
  request.set_request_id("req-1");
  const v1::Job first = Submit(request);
  const v1::Job again = Submit(request);
  EXPECT_EQ(first.id(), again.id());
  request.mutable_config()->set_layers(2);
  absl::StatusOr<v1::Job> clash = manager_->SubmitFit(request);
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists) << clash.status();
  WaitForEnd(first.id());
  v1::ListJobsRequest list;
  EXPECT_EQ(manager_->ListJobs(list)->jobs_size(), 1);
}

TEST_F(JobManagerTest, HigherPriorityRunsFirstAndEqualPrioritiesInSubmissionOrder) {
  StartManager();
  const v1::Job blocker = StartBlocker();
  std::vector<std::string> ids;
  for (int priority : {0, 0, 5, -3, 5}) {
    v1::SubmitFitRequest request = SmallFit();
    request.set_priority(priority);
    ids.push_back(Submit(request).id());
  }
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
  std::vector<std::pair<absl::Time, std::string>> starts;
  for (const std::string& id : ids) {
    const v1::Job job = WaitForEnd(id);
    ASSERT_EQ(job.state(), v1::Job::SUCCEEDED) << job.error();
    starts.emplace_back(FromProtoTime(job.start_time()), id);
  }
  std::sort(starts.begin(), starts.end());
  const std::vector<std::string> expected = {ids[2], ids[4], ids[0], ids[1], ids[3]};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(starts[i].second, expected[i]) << i;
}

TEST_F(JobManagerTest, AJobDestroyedMidFitRunsAgainAfterARestartAndItsStreamHasNoGapsOrRepeats) {
  StartManager();
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset("synthetic:rows=1500,cols=30,classes=4");
  request.mutable_config()->set_layers(3);
  request.mutable_config()->set_width(256);
  const v1::Job job = Submit(request);
  {
    std::unique_ptr<JobWatch> watch = Watch(job.id());
    ASSERT_NE(watch, nullptr);
    ASSERT_TRUE(WaitForEvent(*watch, [](const v1::JobEvent& e) { return e.has_layer_report(); }));
  }
  // Stop without draining, and drop everything in memory, as a restart of the process would.
  manager_.reset();
  resolver_.reset();
  store_.reset();
  OpenStore();
  absl::StatusOr<v1::Job> requeued = store_->GetJob(job.id());
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  EXPECT_EQ(requeued->state(), v1::Job::QUEUED);
  EXPECT_EQ(requeued->reports_size(), 0);
  StartManager();
  const v1::Job done = WaitForEnd(job.id());
  ASSERT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  EXPECT_EQ(done.reports_size(), 4);
  EXPECT_EQ(done.layers_done(), 4);

  std::unique_ptr<JobWatch> watch = Watch(job.id());
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ExpectContiguousFromOne(events);
  std::vector<v1::Job::State> states;
  for (const v1::JobEvent& event : events) {
    if (event.has_state_change()) states.push_back(event.state_change().state());
  }
  EXPECT_EQ(states, (std::vector<v1::Job::State>{v1::Job::QUEUED, v1::Job::RUNNING,
                                                 v1::Job::QUEUED, v1::Job::RUNNING,
                                                 v1::Job::SUCCEEDED}));
  EXPECT_EQ(static_cast<int64_t>(events.size()), done.last_event_sequence());
}

TEST_F(JobManagerTest, AJobLeftRunningByACrashIsRequeuedWithItsReportsClearedAndCompletes) {
  // The Store as a crash mid-fit leaves it: RUNNING with one layer reported.
  core::FitConfig config;
  config.layers = 1;
  config.width = 32;
  config.seed = 7;
  v1::Job job;
  job.set_kind(v1::Job::DEEP_RFM);
  job.set_state(v1::Job::QUEUED);
  *job.mutable_config() = FitConfigToProto(config);
  job.mutable_train()->set_dataset(kSmallTrain);
  job.set_layers_total(2);
  v1::JobEvent queued_event;
  queued_event.mutable_state_change()->set_state(v1::Job::QUEUED);
  v1::SubmitFitRequest request;
  absl::StatusOr<CreateJobResult> created = store_->CreateJob(job, request, {queued_event});
  ASSERT_TRUE(created.ok()) << created.status();
  job = created->job;
  job.set_state(v1::Job::RUNNING);
  *job.mutable_start_time() = ToProtoTime(absl::Now());
  v1::JobEvent running_event;
  running_event.mutable_state_change()->set_state(v1::Job::RUNNING);
  running_event.mutable_state_change()->set_previous_state(v1::Job::QUEUED);
  v1::JobEvent layer_event;
  layer_event.mutable_layer_report()->set_layer(1);
  *job.add_reports() = layer_event.layer_report();
  job.set_layers_done(1);
  ASSERT_TRUE(store_->UpdateJob(job, {running_event, layer_event}).ok());

  StartManager();
  const v1::Job done = WaitForEnd(job.id());
  ASSERT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  EXPECT_EQ(done.reports_size(), 2);

  std::unique_ptr<JobWatch> watch = Watch(job.id());
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ExpectContiguousFromOne(events);
  ASSERT_GE(events.size(), 4u);
  EXPECT_TRUE(events[2].has_layer_report());
  ASSERT_TRUE(IsStateChange(events[3], v1::Job::QUEUED));
  EXPECT_EQ(events[3].state_change().previous_state(), v1::Job::RUNNING);
  EXPECT_NE(events[3].state_change().error().find("queued again"), std::string::npos);
  EXPECT_TRUE(IsStateChange(events[4], v1::Job::RUNNING));
  EXPECT_TRUE(IsStateChange(events.back(), v1::Job::SUCCEEDED));
}

TEST_F(JobManagerTest, TheJobsARestartEndsAreCountedByTheListener) {
  // As a crash leaves them: a RUNNING job whose model was stored, a RUNNING job and a QUEUED job
  // whose cancel was acknowledged, and a RUNNING job with neither (it runs again).
  const auto create = [&](v1::Job::State state) {
    v1::Job job;
    job.set_kind(v1::Job::DEEP_RFM);
    job.set_state(v1::Job::QUEUED);
    core::FitConfig config;
    config.layers = 1;
    config.width = 32;
    *job.mutable_config() = FitConfigToProto(config);
    job.mutable_train()->set_dataset(kSmallTrain);
    job.set_layers_total(2);
    v1::JobEvent queued;
    queued.mutable_state_change()->set_state(v1::Job::QUEUED);
    absl::StatusOr<CreateJobResult> created = store_->CreateJob(job, v1::SubmitFitRequest(), {queued});
    EXPECT_TRUE(created.ok()) << created.status();
    job = created->job;
    if (state == v1::Job::RUNNING) {
      job.set_state(v1::Job::RUNNING);
      *job.mutable_start_time() = ToProtoTime(absl::Now());
      v1::JobEvent running;
      running.mutable_state_change()->set_state(v1::Job::RUNNING);
      running.mutable_state_change()->set_previous_state(v1::Job::QUEUED);
      EXPECT_TRUE(store_->UpdateJob(job, {running}).ok());
    }
    return job.id();
  };
  const std::string stored = create(v1::Job::RUNNING);
  v1::Model model;
  model.set_name("recovered");
  model.set_kind(v1::Model::DEEP_RFM);
  model.set_job_id(stored);
  ASSERT_TRUE(store_->PutModel(model, "blob").ok());
  const std::string running_cancelled = create(v1::Job::RUNNING);
  ASSERT_TRUE(store_->MarkCancelRequested(running_cancelled).ok());
  const std::string queued_cancelled = create(v1::Job::QUEUED);
  ASSERT_TRUE(store_->MarkCancelRequested(queued_cancelled).ok());
  const std::string requeued = create(v1::Job::RUNNING);

  CountingListener listener;
  JobManagerOptions options = DefaultOptions();
  options.listener = &listener;
  StartManager(options);
  EXPECT_EQ(WaitForEnd(stored).state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(WaitForEnd(running_cancelled).state(), v1::Job::CANCELLED);
  EXPECT_EQ(WaitForEnd(queued_cancelled).state(), v1::Job::CANCELLED);
  EXPECT_EQ(WaitForEnd(requeued).state(), v1::Job::SUCCEEDED);
  manager_.reset();
  absl::MutexLock lock(&listener.mu);
  EXPECT_EQ(listener.finished[v1::Job::SUCCEEDED], 2);
  EXPECT_EQ(listener.finished[v1::Job::CANCELLED], 2);
  EXPECT_EQ(listener.submitted, 0);
  EXPECT_EQ(listener.started, 1);
}

TEST_F(JobManagerTest, QueuedJobsSurviveARestartInTheirOrder) {
  StartManager();
  const v1::Job blocker = StartBlocker();
  const v1::Job a = Submit(SmallFit());
  const v1::Job b = Submit(SmallFit());
  manager_->Shutdown(absl::Now());
  EXPECT_EQ(manager_->SubmitFit(SmallFit()).status().code(), absl::StatusCode::kUnavailable);
  manager_.reset();
  EXPECT_EQ(store_->GetJob(blocker.id())->state(), v1::Job::QUEUED);  // Re-queued, not lost.
  StartManager();
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
  const v1::Job done_a = WaitForEnd(a.id());
  const v1::Job done_b = WaitForEnd(b.id());
  ASSERT_EQ(done_a.state(), v1::Job::SUCCEEDED) << done_a.error();
  ASSERT_EQ(done_b.state(), v1::Job::SUCCEEDED) << done_b.error();
  EXPECT_LT(FromProtoTime(done_a.start_time()), FromProtoTime(done_b.start_time()));
}

TEST_F(JobManagerTest, ShutdownLetsARunningFitFinishBeforeTheDeadline) {
  StartManager();
  const v1::Job job = Submit(SmallFit(2));
  std::unique_ptr<JobWatch> watch = Watch(job.id());
  ASSERT_TRUE(WaitForEvent(*watch, [](const v1::JobEvent& e) {
    return IsStateChange(e, v1::Job::RUNNING);
  }));
  manager_->Shutdown(absl::Now() + kDeadline);
  EXPECT_FALSE(manager_->accepting());
  EXPECT_EQ(store_->GetJob(job.id())->state(), v1::Job::SUCCEEDED);
  const std::vector<v1::JobEvent> rest = CollectUntilDone(*watch);
  ASSERT_FALSE(rest.empty());
  EXPECT_TRUE(IsStateChange(rest.back(), v1::Job::SUCCEEDED));
}

TEST_F(JobManagerTest, WatchersOfUnfinishedJobsGetUnavailableAtShutdown) {
  StartManager();
  const v1::Job blocker = StartBlocker();
  std::unique_ptr<JobWatch> watch = Watch(blocker.id());
  manager_->Shutdown(absl::Now());
  absl::Status status;
  const absl::Time deadline = absl::Now() + kDeadline;
  while (status.ok() && absl::Now() < deadline) {
    status = watch->Next(absl::Milliseconds(200)).status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("after_sequence"), std::string::npos) << status;

  // A watch that starts after the shutdown gets the stored history, then UNAVAILABLE.
  std::unique_ptr<JobWatch> late = Watch(blocker.id());
  ASSERT_NE(late, nullptr);
  std::vector<v1::JobEvent> history;
  for (;;) {
    absl::StatusOr<std::optional<v1::JobEvent>> next = late->Next(absl::Milliseconds(200));
    if (!next.ok()) {
      status = next.status();
      break;
    }
    ASSERT_TRUE(next->has_value()) << "a watch without live events should not wait";
    history.push_back(**next);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  ExpectContiguousFromOne(history);
  ASSERT_FALSE(history.empty());
  EXPECT_TRUE(IsStateChange(history.back(), v1::Job::QUEUED));  // The re-queue at shutdown.
  EXPECT_EQ(late->last_sequence(), static_cast<int64_t>(history.size()));
}

TEST_F(JobManagerTest, AFitOverTheRuntimeLimitFailsWithAClearError) {
  JobManagerOptions options = DefaultOptions();
  options.max_job_runtime = absl::Milliseconds(300);
  StartManager(options);
  const v1::Job job = WaitForEnd(Submit(LongFit()).id());
  EXPECT_EQ(job.state(), v1::Job::FAILED);
  EXPECT_NE(job.error().find("limit of 300ms"), std::string::npos) << job.error();
}

TEST_F(JobManagerTest, UnknownDatasetsAreNotFoundListingWhatExists) {
  StartManager();
  v1::SubmitFitRequest request = SmallFit();
  request.mutable_train()->set_dataset("no-such-data");
  absl::StatusOr<v1::Job> job = manager_->SubmitFit(request);
  ASSERT_EQ(job.status().code(), absl::StatusCode::kNotFound) << job.status();
  const std::string message(job.status().message());
  EXPECT_NE(message.find("train.dataset"), std::string::npos) << message;
  EXPECT_NE(message.find("fashion-mnist:train"), std::string::npos) << message;
  EXPECT_NE(message.find("fashion-mnist:test"), std::string::npos) << message;
  EXPECT_NE(message.find("synthetic:rows="), std::string::npos) << message;

  request = SmallFit();
  request.mutable_test()->set_dataset("fashion-mnist:validation");
  EXPECT_EQ(manager_->SubmitFit(request).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, UploadedDatasetsAreFoundByNameListedAndFitted) {
  absl::StatusOr<core::Dataset> data =
      core::MakeSynthetic(*core::ParseSyntheticName("synthetic:rows=120,cols=6,classes=3"));
  ASSERT_TRUE(data.ok());
  DatasetInfo info;
  info.name = "uploaded";
  info.rows = data->rows();
  info.cols = data->cols();
  info.num_classes = data->num_classes;
  const std::string features(reinterpret_cast<const char*>(data->features.data()),
                             4 * data->features.size());
  const std::string labels(reinterpret_cast<const char*>(data->labels.data()),
                           4 * data->labels.size());
  ASSERT_TRUE(store_->PutDataset(info, features, labels).ok());
  StartManager();

  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset("missing");
  const absl::Status status = manager_->SubmitFit(request).status();
  EXPECT_NE(status.message().find("uploaded"), std::string::npos) << status;

  request.mutable_train()->set_dataset("uploaded");
  request.mutable_train()->set_limit(90);
  request.mutable_test()->set_dataset("uploaded");
  request.mutable_test()->set_offset(90);
  request.mutable_config()->set_layers(1);
  request.mutable_config()->set_width(16);
  const v1::Job job = WaitForEnd(Submit(request).id());
  ASSERT_EQ(job.state(), v1::Job::SUCCEEDED) << job.error();
  EXPECT_EQ(job.estimate().train_rows(), 90);
  EXPECT_EQ(job.estimate().test_rows(), 30);
}

TEST_F(JobManagerTest, InvalidRequestsAreRejectedAtSubmission) {
  StartManager();
  struct Case {
    void (*change)(v1::SubmitFitRequest*);
    const char* needle;
  };
  const Case cases[] = {
      {[](v1::SubmitFitRequest* r) { r->mutable_config()->set_layers(100); }, "config.layers"},
      {[](v1::SubmitFitRequest* r) { r->mutable_config()->set_bandwidth(-1); },
       "config.bandwidth"},
      {[](v1::SubmitFitRequest* r) {
         r->mutable_config()->set_kernel(static_cast<v1::FitConfig::Kernel>(9));
       },
       "LAPLACE or GAUSSIAN"},
      {[](v1::SubmitFitRequest* r) { r->mutable_config()->set_agop_samples(1000); },
       "agop_samples"},
      {[](v1::SubmitFitRequest* r) {
         r->mutable_test()->set_dataset("synthetic:rows=60,cols=5,classes=3");
       },
       "columns"},
      {[](v1::SubmitFitRequest* r) {
         r->mutable_test()->set_dataset("synthetic:rows=60,cols=10,classes=4");
       },
       "classes"},
      {[](v1::SubmitFitRequest* r) { r->mutable_train()->set_offset(200); }, "train.offset"},
      {[](v1::SubmitFitRequest* r) { r->mutable_train()->set_limit(2); }, "raise train.limit"},
      {[](v1::SubmitFitRequest* r) { r->set_model_name("../escape"); }, "model_name"},
      {[](v1::SubmitFitRequest* r) { r->mutable_train()->set_dataset("synthetic:rows=x"); },
       "rows"},
  };
  for (const Case& c : cases) {
    v1::SubmitFitRequest request = SmallFit();
    c.change(&request);
    const absl::Status status = manager_->SubmitFit(request).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.needle << ": " << status;
    EXPECT_NE(status.message().find(c.needle), std::string::npos) << status;
  }
  v1::ListJobsRequest list;
  EXPECT_EQ(manager_->ListJobs(list)->jobs_size(), 0);
}

TEST_F(JobManagerTest, ServiceLimitsAreEnforcedAtSubmission) {
  JobManagerOptions options = DefaultOptions();
  options.limits.max_layers = 2;
  options.limits.max_train_rows = 100;
  StartManager(options);
  absl::Status status = manager_->SubmitFit(SmallFit(3)).status();
  EXPECT_NE(status.message().find("limit of 2 layers"), std::string::npos) << status;
  status = manager_->SubmitFit(SmallFit(1)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("at most 100 training rows"), std::string::npos) << status;
}

TEST_F(JobManagerTest, DeletingAQueuedOrRunningJobFailsAndATerminalOneSucceeds) {
  StartManager();
  const v1::Job blocker = StartBlocker();
  const v1::Job queued = Submit(SmallFit());
  EXPECT_EQ(manager_->DeleteJob(blocker.id()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->DeleteJob(queued.id()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
  ASSERT_EQ(WaitForEnd(queued.id()).state(), v1::Job::SUCCEEDED);
  EXPECT_TRUE(manager_->DeleteJob(queued.id()).ok());
  EXPECT_EQ(manager_->GetJob(queued.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->DeleteJob(queued.id()).code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, ListJobsFiltersPagesAndLeavesOutReportsUnlessAsked) {
  StartManager();
  const std::string first = WaitForEnd(Submit(SmallFit()).id()).id();
  const std::string second = WaitForEnd(Submit(SmallFit()).id()).id();
  v1::ListJobsRequest request;
  request.set_page_size(1);
  absl::StatusOr<v1::ListJobsResponse> page = manager_->ListJobs(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).id(), second);  // Newest first.
  EXPECT_EQ(page->jobs(0).reports_size(), 0);
  request.set_page_token(page->next_page_token());
  request.set_include_reports(true);
  page = manager_->ListJobs(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).id(), first);
  EXPECT_EQ(page->jobs(0).reports_size(), 2);
  EXPECT_TRUE(page->next_page_token().empty());

  v1::ListJobsRequest failed;
  failed.set_state(v1::Job::FAILED);
  EXPECT_EQ(manager_->ListJobs(failed)->jobs_size(), 0);
  failed.set_state(static_cast<v1::Job::State>(17));
  EXPECT_EQ(manager_->ListJobs(failed).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, LookupsOfUnknownJobsAndBadArgumentsFail) {
  StartManager();
  EXPECT_EQ(manager_->GetJob("0123456789abcdef").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->GetJob("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->CancelJob("0123456789abcdef").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->Watch("0123456789abcdef", 0).status().code(), absl::StatusCode::kNotFound);
  const v1::Job job = WaitForEnd(Submit(SmallFit()).id());
  EXPECT_EQ(manager_->Watch(job.id(), -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, AnMlpFitRunsToSuccessWithNetworkReportsAndAStoredMlpModel) {
  StartManager();
  v1::SubmitMlpFitRequest request = SmallMlp();
  request.set_model_name("small-mlp");
  absl::StatusOr<v1::Job> queued = manager_->SubmitMlpFit(request);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->kind(), v1::Job::MLP);
  EXPECT_EQ(queued->state(), v1::Job::QUEUED);
  EXPECT_EQ(queued->layers_total(), 3);  // epochs 0, 10, 20
  // The resolved config shows every value, the drawn seed and the defaults included.
  EXPECT_TRUE(queued->mlp_config().has_seed());
  EXPECT_EQ(queued->mlp_config().depth(), 2);
  EXPECT_EQ(queued->mlp_config().weight_decay(), 0.0);
  EXPECT_TRUE(queued->mlp_config().standardize());
  EXPECT_FALSE(queued->has_config());
  EXPECT_EQ(queued->estimate().train_rows(), 200);
  EXPECT_EQ(queued->estimate().test_rows(), 60);
  EXPECT_GT(queued->estimate().memory_bytes(), 0);
  EXPECT_GT(queued->estimate().flops(), 0);

  std::unique_ptr<JobWatch> watch = Watch(queued->id());
  ASSERT_NE(watch, nullptr);
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ExpectContiguousFromOne(events);
  std::vector<v1::NetworkReport> streamed;
  for (const v1::JobEvent& event : events) {
    EXPECT_FALSE(event.has_layer_report());
    if (event.has_network_report()) streamed.push_back(event.network_report());
    if (event.has_progress()) {
      EXPECT_TRUE(event.progress().phase() == v1::Progress::TRAIN ||
                  event.progress().phase() == v1::Progress::MEASURE)
          << event.DebugString();
    }
  }
  ASSERT_TRUE(IsStateChange(events.back(), v1::Job::SUCCEEDED))
      << events.back().state_change().error();

  const v1::Job job = *manager_->GetJob(queued->id());
  EXPECT_EQ(job.layers_done(), 3);
  ASSERT_EQ(job.network_reports_size(), 3);
  ASSERT_EQ(streamed.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const v1::NetworkReport& report = job.network_reports(i);
    EXPECT_TRUE(MessageDifferencer::Equals(report, streamed[i])) << i;
    EXPECT_EQ(report.epoch(), 10 * i);
    EXPECT_TRUE(report.has_test_accuracy());
    EXPECT_TRUE(report.has_test_loss());
    EXPECT_GE(report.train_loss(), 0);
    ASSERT_EQ(report.layers_size(), 3);  // two hidden layers and the output layer
    for (int l = 0; l < 3; ++l) {
      const v1::NetworkLayerReport& layer = report.layers(l);
      EXPECT_EQ(layer.layer(), l + 1);
      EXPECT_EQ(layer.output(), l == 2);
      EXPECT_EQ(layer.has_left(), l < 2);
      EXPECT_TRUE(layer.has_none());
      EXPECT_TRUE(layer.has_right());
      EXPECT_GE(layer.nfa_correlation(), -1.0);
      EXPECT_LE(layer.nfa_correlation(), 1.0);
      EXPECT_GE(layer.top_singular_values_size(), 1);
    }
  }
  // The network learned something: the last measurement fits the training rows better.
  EXPECT_LT(job.network_reports(2).train_loss(), job.network_reports(0).train_loss());
  EXPECT_EQ(job.model().name(), "small-mlp");
  EXPECT_EQ(job.model().version(), 1);

  absl::StatusOr<v1::Model> model = store_->GetModel("small-mlp", 1);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->kind(), v1::Model::MLP);
  EXPECT_EQ(model->input_dim(), 10);
  EXPECT_EQ(model->classes(), 3);
  EXPECT_EQ(model->layers(), 2);
  EXPECT_EQ(std::vector<int64_t>(model->layer_dims().begin(), model->layer_dims().end()),
            (std::vector<int64_t>{32, 32}));
  EXPECT_TRUE(model->standardize());
  EXPECT_EQ(model->job_id(), job.id());
  EXPECT_TRUE(MessageDifferencer::Equals(model->mlp_config(), job.mlp_config()));

  absl::StatusOr<std::string> blob = store_->ReadModelBlob("small-mlp", 1);
  ASSERT_TRUE(blob.ok()) << blob.status();
  absl::StatusOr<core::MlpModel> trained = core::MlpModel::Deserialize(*blob);
  ASSERT_TRUE(trained.ok()) << trained.status();
  absl::StatusOr<core::Dataset> data = core::MakeSynthetic(*core::ParseSyntheticName(kSmallTrain));
  ASSERT_TRUE(data.ok()) << data.status();
  absl::StatusOr<core::Prediction> prediction = trained->Predict(data->features);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  int correct = 0;
  for (size_t i = 0; i < prediction->labels.size(); ++i) {
    correct += prediction->labels[i] == data->labels[i];
  }
  // The stored weights are those of the last measurement.
  EXPECT_NEAR(correct / 200.0, job.network_reports(2).train_accuracy(), 1e-9);
}

TEST_F(JobManagerTest, AnAnalysisMeasuresAStoredMlpOnceAndStoresNoModel) {
  StartManager();
  v1::SubmitMlpFitRequest fit = SmallMlp();
  fit.set_model_name("measured");
  const v1::Job trained = WaitForEnd(manager_->SubmitMlpFit(fit)->id());
  ASSERT_EQ(trained.state(), v1::Job::SUCCEEDED) << trained.error();

  v1::SubmitAnalysisRequest request;
  request.set_model("measured");
  request.mutable_data()->set_dataset(kSmallTest);
  absl::StatusOr<v1::Job> queued = manager_->SubmitAnalysis(request);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->kind(), v1::Job::ANALYSIS);
  EXPECT_EQ(queued->analyzed_model().name(), "measured");
  EXPECT_EQ(queued->analyzed_model().version(), 1);  // resolved at submission
  EXPECT_EQ(queued->layers_total(), 1);
  EXPECT_EQ(queued->estimate().train_rows(), 60);
  const v1::Job job = WaitForEnd(queued->id());
  ASSERT_EQ(job.state(), v1::Job::SUCCEEDED) << job.error();
  EXPECT_FALSE(job.has_model());
  ASSERT_EQ(job.network_reports_size(), 1);
  const v1::NetworkReport& report = job.network_reports(0);
  EXPECT_EQ(report.epoch(), 0);
  EXPECT_FALSE(report.has_test_accuracy());
  EXPECT_EQ(report.layers_size(), 3);
  // Measured on the fit's test rows, the analysis sees what the fit's last test measurement saw.
  const v1::NetworkReport& last = trained.network_reports(2);
  EXPECT_NEAR(report.train_accuracy(), last.test_accuracy(), 1e-9);
  EXPECT_NEAR(report.train_loss(), last.test_loss(), 1e-5 * last.test_loss());

  std::unique_ptr<JobWatch> watch = Watch(job.id());
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ExpectContiguousFromOne(events);
  int reports = 0;
  for (const v1::JobEvent& event : events) reports += event.has_network_report();
  EXPECT_EQ(reports, 1);
  absl::StatusOr<Page<v1::Model>> models = store_->ListModels("", 0, "");
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(models->items.size(), 1u);
}

TEST_F(JobManagerTest, AnalysesOfUnknownOrNonMlpModelsOrMismatchedDataAreRefused) {
  StartManager();
  v1::SubmitFitRequest rfm = SmallFit();
  rfm.set_model_name("an-rfm");
  ASSERT_EQ(WaitForEnd(Submit(rfm).id()).state(), v1::Job::SUCCEEDED);
  v1::SubmitMlpFitRequest mlp = SmallMlp();
  mlp.set_model_name("an-mlp");
  ASSERT_EQ(WaitForEnd(manager_->SubmitMlpFit(mlp)->id()).state(), v1::Job::SUCCEEDED);

  auto analyze = [&](const std::string& model, const std::string& data,
                     std::optional<int64_t> version = std::nullopt) {
    v1::SubmitAnalysisRequest request;
    request.set_model(model);
    request.mutable_data()->set_dataset(data);
    if (version.has_value()) request.set_version(*version);
    return manager_->SubmitAnalysis(request).status();
  };
  absl::Status status = analyze("an-rfm", kSmallTest);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("is a DEEP_RFM model"), std::string::npos) << status;
  EXPECT_NE(status.message().find("MLPs only"), std::string::npos) << status;
  status = analyze("no-such-model", kSmallTest);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  status = analyze("an-mlp", kSmallTest, 7);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find("no version 7"), std::string::npos) << status;
  status = analyze("an-mlp", kSmallTest, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  status = analyze("an-mlp", "synthetic:rows=60,cols=11,classes=3");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("11 columns"), std::string::npos) << status;
  status = analyze("an-mlp", "synthetic:rows=60,cols=10,classes=4");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("classes"), std::string::npos) << status;
  status = analyze("an-mlp", "no-such-data");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  status = analyze("", kSmallTest);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  status = analyze("an-mlp", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  v1::ListJobsRequest list;
  list.set_kind(v1::Job::ANALYSIS);
  EXPECT_EQ(manager_->ListJobs(list)->jobs_size(), 0);
}

TEST_F(JobManagerTest, InvalidMlpRequestsAreRejectedAtSubmissionNamingTheField) {
  StartManager();
  struct Case {
    void (*change)(v1::SubmitMlpFitRequest*);
    const char* needle;
  };
  const Case cases[] = {
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_depth(0); }, "config.depth"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_depth(1000); }, "config.depth"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_width(0); }, "config.width"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_width(1 << 20); },
       "config.width"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_epochs(-1); }, "config.epochs"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_epochs(1 << 30); },
       "config.epochs"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_batch_size(0); },
       "config.batch_size"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_learning_rate(-1); },
       "config.learning_rate"},
      {[](v1::SubmitMlpFitRequest* r) {
         r->mutable_config()->set_init_gain(std::numeric_limits<double>::infinity());
       },
       "config.init_gain"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_config()->set_measure_every(-3); },
       "config.measure_every"},
      {[](v1::SubmitMlpFitRequest* r) {
         r->mutable_config()->set_epochs(100000);
         r->mutable_config()->set_measure_every(1);
       },
       "at most 1000"},
      {[](v1::SubmitMlpFitRequest* r) { r->clear_train(); }, "train is required"},
      {[](v1::SubmitMlpFitRequest* r) {
         r->mutable_test()->set_dataset("synthetic:rows=60,cols=5,classes=3");
       },
       "columns"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_train()->set_limit(2); }, "raise train.limit"},
      {[](v1::SubmitMlpFitRequest* r) { r->set_model_name("../escape"); }, "model_name"},
      {[](v1::SubmitMlpFitRequest* r) { r->set_priority(5000); }, "priority"},
  };
  for (const Case& c : cases) {
    v1::SubmitMlpFitRequest request = SmallMlp();
    c.change(&request);
    const absl::Status status = manager_->SubmitMlpFit(request).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.needle << ": " << status;
    EXPECT_NE(status.message().find(c.needle), std::string::npos) << status;
  }
  v1::SubmitMlpFitRequest unknown = SmallMlp();
  unknown.mutable_train()->set_dataset("no-such-data");
  EXPECT_EQ(manager_->SubmitMlpFit(unknown).status().code(), absl::StatusCode::kNotFound);
  v1::ListJobsRequest list;
  EXPECT_EQ(manager_->ListJobs(list)->jobs_size(), 0);
}

TEST_F(JobManagerTest, AnMlpOverTheMemoryBudgetIsRefusedWithBothNumbers) {
  JobManagerOptions options = DefaultOptions();
  options.memory_budget_bytes = 1000000;  // 1 MB
  StartManager(options);
  v1::SubmitMlpFitRequest request = SmallMlp();
  request.mutable_config()->set_width(2048);
  const absl::Status status = manager_->SubmitMlpFit(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("budget of 0.001 GB"), std::string::npos) << status;
  EXPECT_NE(status.message().find("config.width"), std::string::npos) << status;
}

TEST_F(JobManagerTest, RequestIdsAreIdempotentForMlpJobsAndNotSharedAcrossKinds) {
  StartManager();
  v1::SubmitMlpFitRequest request = SmallMlp();
  request.set_request_id("mlp-1");
  const absl::StatusOr<v1::Job> first = manager_->SubmitMlpFit(request);
  ASSERT_TRUE(first.ok()) << first.status();
  const absl::StatusOr<v1::Job> again = manager_->SubmitMlpFit(request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), first->id());
  request.mutable_config()->set_epochs(21);
  EXPECT_EQ(manager_->SubmitMlpFit(request).status().code(), absl::StatusCode::kAlreadyExists);

  // A Deep RFM request and an MLP request that set the same fields serialize alike; the
  // request_id still belongs to the first job's kind.
  v1::SubmitFitRequest rfm;
  rfm.mutable_train()->set_dataset(kSmallTrain);
  rfm.set_request_id("shared");
  ASSERT_TRUE(manager_->SubmitFit(rfm).ok());
  v1::SubmitMlpFitRequest mlp;
  mlp.mutable_train()->set_dataset(kSmallTrain);
  mlp.set_request_id("shared");
  const absl::Status clash = manager_->SubmitMlpFit(mlp).status();
  EXPECT_EQ(clash.code(), absl::StatusCode::kAlreadyExists) << clash;
  EXPECT_NE(clash.message().find("DEEP_RFM"), std::string::npos) << clash;
  WaitForEnd(first->id());
}

TEST_F(JobManagerTest, CancellingARunningMlpFitStopsItPromptly) {
  StartManager();
  absl::StatusOr<v1::Job> job = manager_->SubmitMlpFit(LongMlp());
  ASSERT_TRUE(job.ok()) << job.status();
  std::unique_ptr<JobWatch> watch = Watch(job->id());
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(WaitForEvent(*watch, [](const v1::JobEvent& e) {
    return e.has_progress() && e.progress().phase() == v1::Progress::TRAIN;
  }));
  const absl::Time cancelled_at = absl::Now();
  absl::StatusOr<v1::Job> cancelling = manager_->CancelJob(job->id());
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  EXPECT_EQ(cancelling->state(), v1::Job::RUNNING);
  const std::vector<v1::JobEvent> rest = CollectUntilDone(*watch, absl::Seconds(30));
  ASSERT_FALSE(rest.empty());
  ASSERT_TRUE(IsStateChange(rest.back(), v1::Job::CANCELLED));
  // The fit checks between minibatches (~50 ms); a loaded machine gets a generous margin.
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(10));
  const v1::Job done = *manager_->GetJob(job->id());
  EXPECT_EQ(done.state(), v1::Job::CANCELLED);
  EXPECT_NE(done.error().find("while running"), std::string::npos) << done.error();
  EXPECT_FALSE(done.has_model());
  absl::StatusOr<Page<v1::Model>> models = store_->ListModels("", 0, "");
  ASSERT_TRUE(models.ok());
  EXPECT_TRUE(models->items.empty());
}

TEST_F(JobManagerTest, AnMlpJobInterruptedMidFitRunsAgainAfterARestartWithoutDuplicates) {
  StartManager();
  v1::SubmitMlpFitRequest request;
  // Hundreds of minibatches after the first measurement: the restart comes long before the end.
  request.mutable_train()->set_dataset("synthetic:rows=400,cols=20,classes=4");
  request.mutable_config()->set_depth(2);
  request.mutable_config()->set_width(64);
  request.mutable_config()->set_epochs(15);
  request.mutable_config()->set_batch_size(16);
  request.mutable_config()->set_measure_every(5);
  absl::StatusOr<v1::Job> job = manager_->SubmitMlpFit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  // Queued behind it, never started before the restart.
  absl::StatusOr<v1::Job> queued = manager_->SubmitMlpFit(SmallMlp());
  ASSERT_TRUE(queued.ok()) << queued.status();
  {
    std::unique_ptr<JobWatch> watch = Watch(job->id());
    ASSERT_NE(watch, nullptr);
    ASSERT_TRUE(WaitForEvent(*watch, [](const v1::JobEvent& e) { return e.has_network_report(); }));
  }
  manager_.reset();  // Stop without draining: the running fit is re-queued.
  resolver_.reset();
  store_.reset();
  OpenStore();
  absl::StatusOr<v1::Job> requeued = store_->GetJob(job->id());
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  EXPECT_EQ(requeued->state(), v1::Job::QUEUED);
  EXPECT_EQ(requeued->network_reports_size(), 0);
  EXPECT_EQ(store_->GetJob(queued->id())->state(), v1::Job::QUEUED);
  StartManager();
  const v1::Job done = WaitForEnd(job->id());
  ASSERT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  ASSERT_EQ(done.network_reports_size(), 4);  // epochs 0, 5, 10, 15 of the second run only
  for (int i = 0; i < 4; ++i) EXPECT_EQ(done.network_reports(i).epoch(), 5 * i);
  EXPECT_EQ(done.layers_done(), 4);
  const v1::Job other = WaitForEnd(queued->id());
  ASSERT_EQ(other.state(), v1::Job::SUCCEEDED) << other.error();

  std::unique_ptr<JobWatch> watch = Watch(job->id());
  const std::vector<v1::JobEvent> events = CollectUntilDone(*watch);
  ExpectContiguousFromOne(events);
  std::vector<v1::Job::State> states;
  int reports_after_restart = 0;
  for (const v1::JobEvent& event : events) {
    if (event.has_state_change()) states.push_back(event.state_change().state());
    if (event.has_network_report() && states.size() >= 4) ++reports_after_restart;
  }
  EXPECT_EQ(states, (std::vector<v1::Job::State>{v1::Job::QUEUED, v1::Job::RUNNING,
                                                 v1::Job::QUEUED, v1::Job::RUNNING,
                                                 v1::Job::SUCCEEDED}));
  EXPECT_EQ(reports_after_restart, 4);
  EXPECT_EQ(static_cast<int64_t>(events.size()), done.last_event_sequence());
  EXPECT_EQ(store_->GetModel(done.model().name(), 0)->version(), 1);
}

TEST_F(JobManagerTest, TheListenerHearsMlpJobsAndTheirTrainAndMeasurePhases) {
  class PhaseListener : public JobManagerListener {
   public:
    void OnSubmitted(v1::Job::Kind kind) override {
      absl::MutexLock lock(&mu);
      ++submitted[kind];
    }
    void OnFinished(v1::Job::Kind kind, v1::Job::State state, double, double) override {
      absl::MutexLock lock(&mu);
      ++finished[{kind, state}];
    }
    void OnPhaseSeconds(v1::Progress::Phase phase, double seconds) override {
      absl::MutexLock lock(&mu);
      ++phases[phase];
      EXPECT_GE(seconds, 0);
    }
    absl::Mutex mu;
    std::map<v1::Job::Kind, int> submitted ABSL_GUARDED_BY(mu);
    std::map<std::pair<v1::Job::Kind, v1::Job::State>, int> finished ABSL_GUARDED_BY(mu);
    std::map<v1::Progress::Phase, int> phases ABSL_GUARDED_BY(mu);
  } listener;
  JobManagerOptions options = DefaultOptions();
  options.listener = &listener;
  StartManager(options);
  v1::SubmitMlpFitRequest fit = SmallMlp();
  fit.set_model_name("heard");
  ASSERT_EQ(WaitForEnd(manager_->SubmitMlpFit(fit)->id()).state(), v1::Job::SUCCEEDED);
  v1::SubmitAnalysisRequest analysis;
  analysis.set_model("heard");
  analysis.mutable_data()->set_dataset(kSmallTest);
  ASSERT_EQ(WaitForEnd(manager_->SubmitAnalysis(analysis)->id()).state(), v1::Job::SUCCEEDED);
  manager_.reset();
  absl::MutexLock lock(&listener.mu);
  EXPECT_EQ(listener.submitted[v1::Job::MLP], 1);
  EXPECT_EQ(listener.submitted[v1::Job::ANALYSIS], 1);
  EXPECT_EQ((listener.finished[{v1::Job::MLP, v1::Job::SUCCEEDED}]), 1);
  EXPECT_EQ((listener.finished[{v1::Job::ANALYSIS, v1::Job::SUCCEEDED}]), 1);
  EXPECT_EQ(listener.phases[v1::Progress::TRAIN], 1);
  EXPECT_EQ(listener.phases[v1::Progress::MEASURE], 3 + 1);
}

TEST_F(JobManagerTest, SubmissionsBeforeStartAreUnavailableAndStartTwiceFails) {
  manager_ = std::make_unique<JobManager>(store_.get(), resolver_.get(), DefaultOptions());
  EXPECT_EQ(manager_->SubmitFit(SmallFit()).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(manager_->Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, BadOptionsAreRejectedByStart) {
  JobManagerOptions options = DefaultOptions();
  options.workers = 0;
  manager_ = std::make_unique<JobManager>(store_.get(), resolver_.get(), options);
  EXPECT_EQ(manager_->Start().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, TheListenerHearsTheLifecycle) {
  CountingListener listener;
  JobManagerOptions options = DefaultOptions();
  options.listener = &listener;
  StartManager(options);
  const v1::Job done = WaitForEnd(Submit(SmallFit(1)).id());
  ASSERT_EQ(done.state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(listener.phase_samples, 2 * core::kNumPhases);  // One layer and the readout.
  const v1::Job blocker = StartBlocker();
  const v1::Job queued = Submit(SmallFit());
  ASSERT_TRUE(manager_->CancelJob(queued.id()).ok());
  ASSERT_TRUE(manager_->CancelJob(blocker.id()).ok());
  WaitForEnd(blocker.id());
  manager_.reset();  // Joins the workers, so every notification has been made.
  EXPECT_EQ(listener.submitted, 3);
  EXPECT_EQ(listener.started, 2);
  EXPECT_EQ(listener.last_depth, 0);
  absl::MutexLock lock(&listener.mu);
  EXPECT_EQ(listener.finished[v1::Job::SUCCEEDED], 1);
  EXPECT_EQ(listener.finished[v1::Job::CANCELLED], 2);
}

}  // namespace
}  // namespace drfm::server
