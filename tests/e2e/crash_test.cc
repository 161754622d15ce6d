// Crash consistency of the real drfm-server binary: what API.md and the store promise ("nothing
// half-written is ever listed", a watcher "misses nothing and sees nothing twice, also across a
// server restart") and job_manager.h's recovery policy, checked against SIGKILL. The test runs
// build/bin/drfm-server as a child process on a loopback port and a temporary data dir, kills it
// in the middle of dataset uploads, running and queued fits, predictions, deletes and its own
// recovery, restarts it on the same data dir each time and checks after every restart:
//   - every job whose SubmitFit returned OK is there (until a DeleteJob returned OK), keeps its
//     terminal state once it had one, and in the end every job runs to completion;
//   - a SubmitFit that failed in the crash, retried with its request_id, gives exactly one job;
//   - each job's events (WatchJob from 0) are sequences 1..N without gap or repeat, a consistent
//     history of state changes (QUEUED, RUNNING, re-queued after a crash, terminal last), and a
//     watcher that was attached across the crashes (client::Client::WatchJob) saw exactly them;
//   - every model a job reported stored still predicts, with the labels it gave the first time;
//   - an upload that failed before its last byte was sent is never listed; one that was cut off
//     after it (the outcome unknown to the client) is either absent or complete; every listed
//     dataset and model file is complete (its size and SHA-256 match the listing);
//   - no temporary file that the killed process was writing survives the restart, and none at
//     all is left after a clean SIGTERM, which exits 0.
// Outcomes that a crash makes unknowable to the client (an acknowledgement lost in flight) are
// tracked as "either", checked for integrity when present and then pinned down for later rounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "core/io.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/hash.h"
#include "tests/e2e/server_process.h"

namespace drfm {
namespace {

namespace fs = std::filesystem;
using e2e::Bytes;
using e2e::ExpectCompleteFile;
using e2e::ExpectConsistentHistory;
using e2e::IsTerminal;
using e2e::kServerBinary;
using e2e::MakeChannel;
using e2e::PickFreePort;
using e2e::ServerLaunch;
using e2e::ServerProcess;
using e2e::SetDeadline;
using e2e::TempFiles;

// Every dataset of the test: kRows x kCols float32, kClasses classes. A 1-layer fit on it takes
// 0.4 s (idle) to 2 s (busy machine) on one thread.
constexpr int64_t kRows = 2000;
constexpr int64_t kCols = 196;
constexpr int kClasses = 5;
constexpr int kProbeRows = 8;
constexpr size_t kChunkBytes = 64 << 10;

// What a crash leaves the client knowing about a write.
enum class Expect { kPresent, kAbsent, kEither };

// What the test knows about one uploaded dataset.
struct DatasetEntry {
  std::string sha256;  // of the payload sent (features, then labels)
  Expect expect = Expect::kAbsent;
  bool deletable = false;  // no fit uses it
};

// What the test knows about one SubmitFit request (by request_id).
struct JobEntry {
  v1::SubmitFitRequest request;
  std::string id;                    // empty until a SubmitFit with this request_id returned OK
  Expect expect = Expect::kPresent;  // kEither / kAbsent after an unacknowledged / acked DeleteJob
  v1::Job::State terminal = v1::Job::STATE_UNSPECIFIED;  // once seen
  v1::ModelRef model;
  bool watched = false;  // a live watcher follows it: not deleted
};

// What the test knows about one stored model version.
struct ModelEntry {
  std::string name;
  int64_t version = 0;
  std::vector<int32_t> labels;  // the probe's labels when first seen
  std::vector<bool> decisive;   // rows whose top-2 score margin leaves no room for round-off
  Expect expect = Expect::kPresent;
};

// A watcher attached with the client library, left running across kills and restarts.
struct LiveWatch {
  std::string job_id;
  std::thread thread;
  std::vector<v1::JobEvent> events;  // written by `thread` only
  absl::Status status;
  int reconnects = 0;
  std::atomic<bool> done{false};
};

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kServerBinary)) << kServerBinary << " is missing: build drfm-server";
    dir_ = (fs::path(::testing::TempDir()) / absl::StrCat("drfm_crash_", getpid())).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_dir_ = dir_ + "/data";
    server_ = std::make_unique<ServerProcess>(data_dir_, dir_ + "/server.log");
    // Probe rows for predictions: from a mixture the models never saw, so labels are whatever
    // each model says; rows near a decision boundary are compared loosely (ModelEntry::decisive).
    const core::Dataset probe = e2e::Synthetic(kProbeRows, kCols, kClasses, 999);
    probe_ = Bytes(probe.features.data(), probe.features.size() * 4);
    watch_canceller_ = std::make_unique<client::Canceller>();
  }

  void TearDown() override {
    watch_canceller_->Cancel();
    for (auto& w : watches_) {
      if (w->thread.joinable()) w->thread.join();
    }
    server_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Server lifecycle.

  void StartServer(double drain_seconds = 5) {
    ServerLaunch launch;
    launch.drain_seconds = drain_seconds;
    const absl::Status started = server_->Start(port_, absl::Seconds(30), launch);
    ASSERT_TRUE(started.ok()) << started;
    channel_ = MakeChannel(port_);
    datasets_ = v1::DatasetService::NewStub(channel_);
    jobs_ = v1::JobService::NewStub(channel_);
    models_ = v1::ModelService::NewStub(channel_);
  }

  // SIGKILL; remembers the temporary files the dead process left (they must be gone after the
  // restart).
  void KillServer() {
    server_->Kill();
    leftovers_ = TempFiles(data_dir_);
    leftovers_total_ += static_cast<int>(leftovers_.size());
    ++kills_;
  }

  // Calls, usable from any thread.

  struct UploadOutcome {
    grpc::Status status;
    bool all_sent = false;
  };

  // Uploads a fresh dataset (content from `seed`) as `name`, recording what the outcome lets the
  // test expect. `corrupt_hash` announces a wrong SHA-256 (the server must refuse it);
  // `stop_after_bytes` > 0 stops sending after that many payload bytes and calls `midway` (which
  // kills the server), then tries to send the rest.
  UploadOutcome Upload(const std::string& name, uint64_t seed, bool deletable,
                       bool corrupt_hash = false, size_t stop_after_bytes = 0,
                       const std::function<void()>& midway = nullptr) {
    const core::Dataset data = e2e::Synthetic(kRows, kCols, kClasses, seed);
    const std::string payload = Bytes(data.features.data(), data.features.size() * 4) +
                                Bytes(data.labels.data(), data.labels.size() * 4);
    const size_t feature_bytes = data.features.size() * 4;
    const std::string sha = server::Sha256Hex(payload);
    {
      absl::MutexLock lock(&mu_);
      DatasetEntry& entry = datasets_known_[name];
      entry.sha256 = sha;
      entry.expect = Expect::kAbsent;
      entry.deletable = deletable;
    }
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    v1::Dataset stored;
    std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
        datasets_stub()->UploadDataset(&context, &stored);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->set_rows(kRows);
    header.mutable_header()->set_cols(kCols);
    header.mutable_header()->set_num_classes(kClasses);
    header.mutable_header()->set_sha256(corrupt_hash ? std::string(64, '0') : sha);
    bool open = writer->Write(header);
    for (size_t off = 0; open && off < payload.size(); off += kChunkBytes) {
      if (stop_after_bytes > 0 && off >= stop_after_bytes && midway) {
        midway();
        stop_after_bytes = 0;
      }
      v1::UploadDatasetRequest chunk;
      // Feature bytes, then label bytes; the chunk where they meet carries both.
      const size_t end = std::min(off + kChunkBytes, payload.size());
      if (off < feature_bytes) {
        chunk.mutable_chunk()->set_features(
            payload.substr(off, std::min(end, feature_bytes) - off));
        if (end > feature_bytes)
          chunk.mutable_chunk()->set_labels(payload.substr(feature_bytes, end - feature_bytes));
      } else {
        chunk.mutable_chunk()->set_labels(payload.substr(off, end - off));
      }
      open = writer->Write(chunk);
    }
    UploadOutcome outcome;
    outcome.all_sent = open && writer->WritesDone();
    outcome.status = writer->Finish();
    absl::MutexLock lock(&mu_);
    DatasetEntry& entry = datasets_known_[name];
    if (outcome.status.ok()) {
      EXPECT_FALSE(corrupt_hash) << name << ": an upload with a wrong SHA-256 was accepted";
      EXPECT_EQ(stored.sha256(), sha);
      entry.expect = corrupt_hash ? Expect::kEither : Expect::kPresent;
    } else if (outcome.all_sent && !corrupt_hash &&
               (outcome.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                outcome.status.error_code() == grpc::StatusCode::CANCELLED ||
                outcome.status.error_code() == grpc::StatusCode::UNKNOWN ||
                outcome.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
      entry.expect = Expect::kEither;  // the server may have committed it before it died
    } else {
      entry.expect = Expect::kAbsent;
    }
    return outcome;
  }

  v1::SubmitFitRequest FitRequest(const std::string& request_id, const std::string& train,
                                  int priority, uint64_t seed) {
    v1::SubmitFitRequest r;
    r.set_request_id(request_id);
    r.set_model_name("m-" + request_id);
    r.mutable_train()->set_dataset(train);
    r.mutable_test()->set_dataset(train);
    r.mutable_test()->set_limit(100);
    r.set_priority(priority);
    r.mutable_config()->set_layers(1);
    r.mutable_config()->set_width(256);
    r.mutable_config()->set_seed(seed);
    return r;
  }

  std::string SyntheticTrain(uint64_t seed, int64_t rows = kRows) {
    return absl::StrCat("synthetic:rows=", rows, ",cols=", kCols, ",classes=", kClasses,
                        ",seed=", seed);
  }

  // SubmitFit, recorded by request_id: acknowledged jobs must survive every crash.
  grpc::Status Submit(const v1::SubmitFitRequest& request, std::string* job_id = nullptr) {
    {
      absl::MutexLock lock(&mu_);
      jobs_known_[request.request_id()].request = request;
    }
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::Job job;
    const grpc::Status status = jobs_stub()->SubmitFit(&context, request, &job);
    absl::MutexLock lock(&mu_);
    JobEntry& entry = jobs_known_[request.request_id()];
    if (status.ok()) {
      EXPECT_TRUE(entry.id.empty() || entry.id == job.id())
          << "request_id " << request.request_id() << " gave jobs " << entry.id << " and "
          << job.id();
      entry.id = job.id();
      if (job_id != nullptr) *job_id = job.id();
    }
    return status;
  }

  // The probe's prediction by a model version.
  absl::StatusOr<v1::PredictResponse> Predict(const std::string& name, int64_t version) {
    v1::PredictRequest request;
    request.set_model(name);
    request.set_version(version);
    request.set_rows(kProbeRows);
    request.set_cols(kCols);
    request.set_features(probe_);
    request.set_return_scores(true);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::PredictResponse response;
    const grpc::Status status = models_stub()->Predict(&context, request, &response);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return response;
  }

  // Checks a prediction against the model's first one.
  void ExpectSamePrediction(const ModelEntry& model, const v1::PredictResponse& response) {
    ASSERT_EQ(response.labels_size(), kProbeRows);
    for (int i = 0; i < kProbeRows; ++i) {
      if (model.decisive[i]) {
        EXPECT_EQ(response.labels(i), model.labels[i])
            << model.name << " v" << model.version << " row " << i;
      }
    }
  }

  // Listings (every page).

  std::map<std::string, v1::Dataset> ListUploadedDatasets() {
    std::map<std::string, v1::Dataset> all;
    for (const v1::Dataset& d : e2e::ListAllDatasets(datasets_stub())) {
      EXPECT_EQ(all.count(d.name()), 0u) << "dataset " << d.name() << " listed twice";
      all[d.name()] = d;
    }
    return all;
  }
  std::vector<v1::Job> ListAllJobs() { return e2e::ListAllJobs(jobs_stub()); }
  std::vector<v1::Model> ListAllModels() { return e2e::ListAllModels(models_stub()); }
  absl::StatusOr<std::vector<v1::JobEvent>> AllEvents(const std::string& job_id) {
    return e2e::AllEvents(jobs_stub(), job_id);
  }

  // The invariants, checked against a freshly restarted server while no workload runs (fits
  // recovered by the restart may be running). Unknown outcomes found resolved are pinned down.
  void Verify(const std::string& when) {
    SCOPED_TRACE(when);
    for (const std::string& path : leftovers_) {
      EXPECT_FALSE(fs::exists(path)) << "temporary file " << path << " survived the restart";
    }
    absl::MutexLock lock(&mu_);

    // Datasets: acknowledged ones listed and complete; failed ones never listed.
    const std::map<std::string, v1::Dataset> listed = ListUploadedDatasets();
    for (auto& [name, entry] : datasets_known_) {
      auto it = listed.find(name);
      const bool present = it != listed.end();
      if (entry.expect == Expect::kPresent) {
        EXPECT_TRUE(present) << "acknowledged dataset " << name << " is gone";
      }
      if (entry.expect == Expect::kAbsent) {
        EXPECT_FALSE(present)
            << "dataset " << name
            << " is listed though its upload failed or its deletion was acknowledged";
      }
      if (present) {
        EXPECT_EQ(it->second.sha256(), entry.sha256) << name;
      }
      if (entry.expect == Expect::kEither)
        entry.expect = present ? Expect::kPresent : Expect::kAbsent;
    }
    for (const auto& [name, d] : listed) {
      EXPECT_EQ(datasets_known_.count(name), 1u) << "unknown dataset " << name;
      EXPECT_EQ(d.rows(), kRows);
      ExpectCompleteFile(absl::StrCat(data_dir_, "/datasets/", d.sha256(), ".bin"), d.size_bytes(),
                         d.sha256());
    }

    // Jobs: one per request_id; every acknowledged one there; terminal states final.
    std::map<std::string, std::string> by_request;  // request_id -> job id
    for (const v1::Job& job : ListAllJobs()) {
      EXPECT_TRUE(by_request.emplace(job.request_id(), job.id()).second)
          << "two jobs for request_id " << job.request_id();
      EXPECT_EQ(jobs_known_.count(job.request_id()), 1u) << "unknown job " << job.id();
    }
    for (auto& [request_id, entry] : jobs_known_) {
      auto listed_job = by_request.find(request_id);
      if (entry.id.empty()) continue;  // not acknowledged yet: ResubmitPending settles it
      EXPECT_TRUE(listed_job == by_request.end() || listed_job->second == entry.id) << request_id;
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(10));
      v1::GetJobRequest get;
      get.set_job_id(entry.id);
      v1::Job job;
      const grpc::Status status = jobs_stub()->GetJob(&context, get, &job);
      if (entry.expect == Expect::kAbsent || (entry.expect == Expect::kEither && !status.ok())) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << "deleted job " << entry.id;
        entry.expect = Expect::kAbsent;
        continue;
      }
      ASSERT_TRUE(status.ok()) << "acknowledged job " << entry.id << " (" << request_id
                               << "): " << status.error_message();
      entry.expect = Expect::kPresent;
      if (entry.terminal != v1::Job::STATE_UNSPECIFIED) {
        EXPECT_EQ(job.state(), entry.terminal) << "job " << entry.id << " left its terminal state";
        EXPECT_EQ(job.model().SerializeAsString(), entry.model.SerializeAsString());
      }
      if (!IsTerminal(job.state())) continue;
      absl::StatusOr<std::vector<v1::JobEvent>> events = AllEvents(entry.id);
      ASSERT_TRUE(events.ok()) << events.status();
      ExpectConsistentHistory(job, *events);
      int requeues = 0;
      for (const v1::JobEvent& e : *events) {
        requeues += e.has_state_change() && e.state_change().state() == v1::Job::QUEUED &&
                    e.state_change().previous_state() == v1::Job::RUNNING;
      }
      requeues_[entry.id] = requeues;
      if (entry.terminal == v1::Job::STATE_UNSPECIFIED) {
        entry.terminal = job.state();
        entry.model = job.model();
        if (job.state() == v1::Job::SUCCEEDED) {
          models_known_.push_back(
              {job.model().name(), job.model().version(), {}, {}, Expect::kPresent});
        }
      }
    }

    // Models: every one reported stored predicts as it did the first time.
    for (ModelEntry& model : models_known_) {
      absl::StatusOr<v1::PredictResponse> response = Predict(model.name, model.version);
      if (model.expect == Expect::kAbsent || (model.expect == Expect::kEither && !response.ok())) {
        EXPECT_TRUE(absl::IsNotFound(response.status()) ||
                    absl::IsFailedPrecondition(response.status()))
            << "deleted model " << model.name << " v" << model.version << ": " << response.status();
        model.expect = Expect::kAbsent;
        continue;
      }
      ASSERT_TRUE(response.ok()) << "model " << model.name << " v" << model.version
                                 << " was reported stored: " << response.status();
      model.expect = Expect::kPresent;
      if (model.labels.empty()) {
        ASSERT_EQ(response->labels_size(), kProbeRows);
        ASSERT_EQ(response->scores_size(), kProbeRows * kClasses);
        model.labels.assign(response->labels().begin(), response->labels().end());
        for (int i = 0; i < kProbeRows; ++i) {
          std::vector<float> s(response->scores().begin() + i * kClasses,
                               response->scores().begin() + (i + 1) * kClasses);
          std::sort(s.rbegin(), s.rend());
          model.decisive.push_back(s[0] - s[1] > 1e-3f * std::max(1.0f, std::abs(s[0])));
        }
      } else {
        ExpectSamePrediction(model, *response);
      }
    }
    for (const v1::Model& m : ListAllModels()) {
      ExpectCompleteFile(absl::StrCat(data_dir_, "/models/", m.name(), "/", m.version(), ".drfm"),
                         m.size_bytes(), m.sha256());
    }
  }

  // Retries, with the same request_id, every SubmitFit the crash left unanswered: it yields the
  // job the dead server created, or a new one, never two.
  void ResubmitPending() {
    std::vector<v1::SubmitFitRequest> pending;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [request_id, entry] : jobs_known_) {
        if (entry.id.empty()) pending.push_back(entry.request);
      }
    }
    for (const v1::SubmitFitRequest& request : pending) {
      const grpc::Status status = Submit(request);
      EXPECT_TRUE(status.ok()) << request.request_id() << ": " << status.error_message();
    }
    resubmitted_ += static_cast<int>(pending.size());
  }

  // Follows `job_id` with the client library over its own channel, through every kill.
  void StartLiveWatch(const std::string& job_id) {
    {
      absl::MutexLock lock(&mu_);
      for (auto& [request_id, entry] : jobs_known_) {
        if (entry.id == job_id) entry.watched = true;
      }
    }
    auto watch = std::make_unique<LiveWatch>();
    watch->job_id = job_id;
    LiveWatch* w = watch.get();
    std::shared_ptr<grpc::Channel> channel = MakeChannel(port_);
    client::Canceller* canceller = watch_canceller_.get();
    w->thread = std::thread([w, channel, canceller] {
      client::Client client(channel, client::ConnectionOptions());
      client::WatchOptions options;
      options.max_reconnects = 200;  // with 250 ms backoffs: ~50 s without an event
      options.initial_backoff = absl::Milliseconds(50);
      options.max_backoff = absl::Milliseconds(250);
      options.canceller = canceller;
      absl::StatusOr<client::WatchResult> result = client.WatchJob(
          w->job_id, options, [w](const v1::JobEvent& e) { w->events.push_back(e); });
      w->status = result.status();
      if (result.ok()) w->reconnects = result->reconnects;
      w->done = true;
    });
    watches_.push_back(std::move(watch));
  }

  // Polls GetJob until `done(job)` holds for one of `ids` or the deadline passes.
  bool WaitForJob(const std::vector<std::string>& ids,
                  const std::function<bool(const v1::Job&)>& done, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      for (const std::string& id : ids) {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(5));
        v1::GetJobRequest get;
        get.set_job_id(id);
        v1::Job job;
        if (jobs_stub()->GetJob(&context, get, &job).ok() && done(job)) return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // Ids of present jobs, filtered.
  std::vector<std::string> JobIds(const std::function<bool(const JobEntry&)>& keep) {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> ids;
    for (const auto& [request_id, entry] : jobs_known_) {
      if (!entry.id.empty() && entry.expect == Expect::kPresent && keep(entry))
        ids.push_back(entry.id);
    }
    return ids;
  }

  // Waits until `count` acknowledged jobs have succeeded (as seen by GetJob).
  bool WaitForSucceeded(size_t count, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      size_t succeeded = 0;
      for (const std::string& id : JobIds([](const JobEntry&) { return true; })) {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(5));
        v1::GetJobRequest get;
        get.set_job_id(id);
        v1::Job job;
        if (jobs_stub()->GetJob(&context, get, &job).ok() && job.state() == v1::Job::SUCCEEDED)
          ++succeeded;
      }
      if (succeeded >= count) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  // Predicts with every present model until `stop`; checks each answer. Returns OK answers.
  int PredictLoop(const std::atomic<bool>& stop, uint64_t seed) {
    std::vector<ModelEntry> models;
    {
      absl::MutexLock lock(&mu_);
      for (const ModelEntry& m : models_known_) {
        if (m.expect == Expect::kPresent && !m.labels.empty()) models.push_back(m);
      }
    }
    if (models.empty()) return 0;
    std::mt19937_64 rng(seed);
    int ok = 0;
    while (!stop.load()) {
      const ModelEntry& m = models[rng() % models.size()];
      absl::StatusOr<v1::PredictResponse> response = Predict(m.name, m.version);
      if (!response.ok()) break;  // the server was killed
      ExpectSamePrediction(m, *response);
      predictions_ok_.fetch_add(1);
      ++ok;
    }
    return ok;
  }

  // Deletes what is in `ops` (in order) until the first failure; each acknowledged delete must
  // hold after every restart, the one in flight at the kill may have happened or not.
  struct DeleteOp {
    enum Kind { kDataset, kModel, kJob } kind;
    std::string key;  // dataset name, request_id, or index into models_known_
  };
  void DeleteLoop(const std::vector<DeleteOp>& ops) {
    for (const DeleteOp& op : ops) {
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(10));
      grpc::Status status;
      if (op.kind == DeleteOp::kDataset) {
        {
          absl::MutexLock lock(&mu_);
          datasets_known_[op.key].expect = Expect::kEither;
        }
        v1::DeleteDatasetRequest request;
        request.set_dataset(op.key);
        v1::DeleteDatasetResponse response;
        status = datasets_stub()->DeleteDataset(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) datasets_known_[op.key].expect = Expect::kAbsent;
      } else if (op.kind == DeleteOp::kModel) {
        const size_t index = std::stoul(op.key);
        v1::DeleteModelRequest request;
        {
          absl::MutexLock lock(&mu_);
          models_known_[index].expect = Expect::kEither;
          request.set_name(models_known_[index].name);
          request.set_version(models_known_[index].version);
        }
        v1::DeleteModelResponse response;
        status = models_stub()->DeleteModel(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) models_known_[index].expect = Expect::kAbsent;
      } else {
        v1::DeleteJobRequest request;
        {
          absl::MutexLock lock(&mu_);
          JobEntry& entry = jobs_known_[op.key];
          entry.expect = Expect::kEither;
          request.set_job_id(entry.id);
        }
        v1::DeleteJobResponse response;
        status = jobs_stub()->DeleteJob(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) jobs_known_[op.key].expect = Expect::kAbsent;
      }
      if (!status.ok()) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
        return;
      }
      deletes_ok_.fetch_add(1);
    }
  }

  // What can be deleted without touching a fit's data, a watched job or a non-terminal one.
  std::vector<DeleteOp> PlanDeletes(int datasets, int models, int jobs, std::mt19937_64& rng) {
    absl::MutexLock lock(&mu_);
    std::vector<DeleteOp> ops;
    for (const auto& [name, entry] : datasets_known_) {
      if (datasets > 0 && entry.deletable && entry.expect == Expect::kPresent) {
        ops.push_back({DeleteOp::kDataset, name});
        --datasets;
      }
    }
    for (size_t i = 0; i < models_known_.size() && models > 0; ++i) {
      if (models_known_[i].expect == Expect::kPresent && i % 2 == 1) {
        ops.push_back({DeleteOp::kModel, std::to_string(i)});
        --models;
      }
    }
    for (const auto& [request_id, entry] : jobs_known_) {
      if (jobs > 0 && !entry.id.empty() && !entry.watched && entry.expect == Expect::kPresent &&
          IsTerminal(entry.terminal)) {
        ops.push_back({DeleteOp::kJob, request_id});
        --jobs;
      }
    }
    std::shuffle(ops.begin(), ops.end(), rng);
    return ops;
  }

  // Uploads "bg-<round>-<k>" until `stop` or the first failure.
  void UploadLoop(int round, const std::atomic<bool>& stop) {
    for (int k = 0; !stop.load(); ++k) {
      const UploadOutcome outcome =
          Upload(absl::StrCat("bg-", round, "-", k), 1000 * round + k + 100,
                 /*deletable=*/true);
      if (!outcome.status.ok()) return;
      uploads_ok_.fetch_add(1);
    }
  }

  v1::DatasetService::Stub* datasets_stub() { return datasets_.get(); }
  v1::JobService::Stub* jobs_stub() { return jobs_.get(); }
  v1::ModelService::Stub* models_stub() { return models_.get(); }

  std::string dir_, data_dir_;
  int port_ = 0;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::string probe_;

  absl::Mutex mu_;
  std::map<std::string, DatasetEntry> datasets_known_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, JobEntry> jobs_known_ ABSL_GUARDED_BY(mu_);
  std::vector<ModelEntry> models_known_ ABSL_GUARDED_BY(mu_);

  std::unique_ptr<client::Canceller> watch_canceller_;
  std::vector<std::unique_ptr<LiveWatch>> watches_;
  std::vector<std::string> leftovers_;
  int leftovers_total_ = 0;
  int kills_ = 0;
  int resubmitted_ = 0;
  std::map<std::string, int> requeues_;  // job id -> runs a kill interrupted (RUNNING -> QUEUED)
  std::atomic<int> uploads_ok_{0}, predictions_ok_{0}, deletes_ok_{0};
};

TEST_F(CrashTest, SigkillAtAnyPointLosesNoAcknowledgedWriteAndLeavesNothingHalfWritten) {
  const absl::Time test_start = absl::Now();
  std::mt19937_64 rng(20240611);
  auto log = [&](int round, const std::string& what) {
    std::printf("[crash %d] %6.1f s  %s (restart took %.2f s)\n", round,
                absl::ToDoubleSeconds(absl::Now() - test_start), what.c_str(),
                server_->last_start_seconds());
    std::fflush(stdout);
  };

  // Round 0: kill during dataset uploads: a background uploader, and one upload stopped halfway
  // whose temporary file the kill leaves behind.
  {
    // Every restart reuses the port (the live watchers re-attach to it); the first start retries
    // with another one should the chosen port be taken in between.
    absl::Status started;
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = PickFreePort();
      started = server_->Start(port_, absl::Seconds(30));
      if (started.ok()) break;
    }
    ASSERT_TRUE(started.ok()) << started;
    channel_ = MakeChannel(port_);
    datasets_ = v1::DatasetService::NewStub(channel_);
    jobs_ = v1::JobService::NewStub(channel_);
    models_ = v1::ModelService::NewStub(channel_);
    ASSERT_TRUE(Upload("up-0", 1, false).status.ok());
    ASSERT_TRUE(Upload("up-1", 2, false).status.ok());
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(Upload(absl::StrCat("del-", k), 10 + k, true).status.ok());
    }
    const UploadOutcome corrupt = Upload("corrupt", 3, true, /*corrupt_hash=*/true);
    EXPECT_EQ(corrupt.status.error_code(), grpc::StatusCode::DATA_LOSS)
        << corrupt.status.error_message();
    std::atomic<bool> stop{false};
    std::thread background([&] { UploadLoop(0, stop); });
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (uploads_ok_.load() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    const UploadOutcome half = Upload("half", 4, true, false, kRows * kCols * 2, [&] {
      // Wait (bounded) until the server has written part of this upload to a temporary file.
      const absl::Time give_up = absl::Now() + absl::Seconds(5);
      while (absl::Now() < give_up && TempFiles(data_dir_ + "/datasets").empty()) {
        absl::SleepFor(absl::Milliseconds(5));
      }
      KillServer();
    });
    EXPECT_FALSE(half.status.ok());
    EXPECT_FALSE(half.all_sent);
    stop = true;
    background.join();
    log(0, absl::StrCat("killed during uploads: ", uploads_ok_.load(), " background uploads done, ",
                        leftovers_.size(), " temporary files left"));
    EXPECT_GE(leftovers_.size(), 1u) << "the half upload should have left a temporary file";
  }

  // Round 1: kill while fits run (each at least one event into its run), others queued; two
  // jobs get watchers that stay attached through every later kill.
  {
    StartServer();
    ASSERT_NO_FATAL_FAILURE(Verify("after round 0"));
    std::vector<std::string> ids(4);
    ASSERT_TRUE(Submit(FitRequest("fit-1-0", "up-0", 0, 1), &ids[0]).ok());
    ASSERT_TRUE(Submit(FitRequest("fit-1-1", SyntheticTrain(7), 0, 2), &ids[1]).ok());
    ASSERT_TRUE(Submit(FitRequest("fit-1-2", "up-1", 0, 3), &ids[2]).ok());
    ASSERT_TRUE(Submit(FitRequest("fit-1-3", SyntheticTrain(8), 0, 4), &ids[3]).ok());
    StartLiveWatch(ids[0]);
    StartLiveWatch(ids[2]);
    EXPECT_TRUE(WaitForJob(
        ids,
        [](const v1::Job& j) {
          return j.state() == v1::Job::RUNNING && j.last_event_sequence() >= 3;
        },
        absl::Seconds(30)));
    KillServer();
    log(1, "killed with fits running and queued");
  }

  // Round 2: kill right after submissions (queued behind the recovered fits); first a repeat of
  // an acknowledged request must return its job, across the restart.
  {
    StartServer();
    ASSERT_NO_FATAL_FAILURE(Verify("after round 1"));
    ASSERT_TRUE(Submit(FitRequest("fit-1-3", SyntheticTrain(8), 0, 4)).ok());  // same job id
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(
          Submit(FitRequest(absl::StrCat("fit-2-", k), SyntheticTrain(20 + k), k, 20 + k)).ok());
    }
    KillServer();
    log(2, "killed with fits just queued");
  }

  // Round 3: kill during predictions (3 threads), once models exist.
  {
    StartServer();
    ASSERT_NO_FATAL_FAILURE(Verify("after round 2"));
    ResubmitPending();
    EXPECT_TRUE(WaitForSucceeded(2, absl::Seconds(40))) << "no fit finished";
    ASSERT_NO_FATAL_FAILURE(Verify("before the predictions of round 3"));
    std::atomic<bool> stop{false};
    predictions_ok_ = 0;
    std::vector<std::thread> predictors;
    for (int t = 0; t < 3; ++t) predictors.emplace_back([&, t] { PredictLoop(stop, 30 + t); });
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (predictions_ok_.load() < 30 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    KillServer();
    stop = true;
    for (std::thread& t : predictors) t.join();
    log(3, absl::StrCat("killed during predictions after ", predictions_ok_.load(), " answers"));
    EXPECT_GT(predictions_ok_.load(), 0);
  }

  // Round 4: kill during deletes of datasets, model versions and finished jobs.
  {
    StartServer();
    ASSERT_NO_FATAL_FAILURE(Verify("after round 3"));
    EXPECT_TRUE(WaitForSucceeded(3, absl::Seconds(40)));
    ASSERT_NO_FATAL_FAILURE(Verify("before the deletes of round 4"));
    const std::vector<DeleteOp> ops = PlanDeletes(3, 2, 2, rng);
    deletes_ok_ = 0;
    std::thread deleter([&] { DeleteLoop(ops); });
    const int kill_after = ops.empty() ? 0 : static_cast<int>(rng() % ops.size());
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (deletes_ok_.load() < kill_after && absl::Now() < deadline) {
      absl::SleepFor(absl::Microseconds(200));
    }
    KillServer();
    deleter.join();
    log(4, absl::StrCat("killed during deletes: ", deletes_ok_.load(), " of ", ops.size(),
                        " acknowledged"));
  }

  // Rounds 5..8: everything at once, killed at a random moment; round 7 kills the server while it
  // is recovering (right after it became ready).
  for (int round = 5; round <= 8; ++round) {
    StartServer();
    if (round == 7) {
      KillServer();
      log(round, "killed right after the restart, during recovery");
      continue;
    }
    ASSERT_NO_FATAL_FAILURE(Verify(absl::StrCat("after round ", round - 1)));
    ResubmitPending();
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    threads.emplace_back([&] { UploadLoop(round, stop); });
    threads.emplace_back([&, round] {
      // Small fits (~0.1 s), submitted back to back so that the kill may catch one in flight.
      for (int k = 0; !stop.load(); ++k) {
        const uint64_t seed = 100 * round + k;
        if (!Submit(FitRequest(absl::StrCat("fit-", round, "-", k), SyntheticTrain(seed, 300), 0,
                               seed))
                 .ok()) {
          return;
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
    });
    threads.emplace_back([&, round] { PredictLoop(stop, 60 + round); });
    const std::vector<DeleteOp> ops = PlanDeletes(1, 1, 1, rng);
    threads.emplace_back([&, ops] { DeleteLoop(ops); });
    absl::SleepFor(absl::Milliseconds(150 + static_cast<int>(rng() % 500)));  // the kill point
    KillServer();
    stop = true;
    for (std::thread& t : threads) t.join();
    log(round, absl::StrCat("killed during a mixed workload; ", leftovers_.size(),
                            " temporary files left"));
  }

  // Round 9: SIGTERM, not SIGKILL, while fits run, with no drain time: the server exits 0, leaves
  // no temporary file, and re-queues the fits it stopped instead of losing them.
  std::vector<std::string> drained(2);
  {
    StartServer(/*drain_seconds=*/0);
    ASSERT_NO_FATAL_FAILURE(Verify("after round 8"));
    ResubmitPending();
    std::vector<std::string>& ids = drained;
    ASSERT_TRUE(Submit(FitRequest("fit-9-0", SyntheticTrain(90), 0, 90), &ids[0]).ok());
    ASSERT_TRUE(Submit(FitRequest("fit-9-1", SyntheticTrain(91), 0, 91), &ids[1]).ok());
    EXPECT_TRUE(WaitForJob(
        ids,
        [](const v1::Job& j) {
          return j.state() == v1::Job::RUNNING && j.last_event_sequence() >= 3;
        },
        // Generous: under AddressSanitizer (scripts/sanitize.sh), next to another test, the
        // queue ahead of these fits took longer than 30 s.
        absl::Seconds(120)));
    absl::StatusOr<int> exit_code = server_->Terminate(absl::Seconds(30));
    ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server_->LogTail();
    EXPECT_EQ(*exit_code, 0) << server_->LogTail();
    leftovers_ = TempFiles(data_dir_);
    EXPECT_TRUE(leftovers_.empty())
        << leftovers_.size() << " temporary files after SIGTERM, e.g. " << leftovers_[0];
    log(9, "stopped by SIGTERM with fits running (no drain), exit 0");
  }

  // Final: restart, settle every request, let every job finish, check everything, stop cleanly.
  StartServer();
  ASSERT_NO_FATAL_FAILURE(Verify("after round 9"));
  ResubmitPending();
  {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    std::vector<std::string> unfinished;
    do {
      unfinished.clear();
      for (const v1::Job& job : ListAllJobs()) {
        if (!IsTerminal(job.state())) unfinished.push_back(job.id());
      }
      if (!unfinished.empty()) absl::SleepFor(absl::Milliseconds(100));
    } while (!unfinished.empty() && absl::Now() < deadline);
    ASSERT_TRUE(unfinished.empty())
        << unfinished.size() << " jobs still unfinished, e.g. " << unfinished[0];
  }
  ASSERT_NO_FATAL_FAILURE(Verify("at the end"));
  int drained_runs = 0;
  for (const std::string& id : drained) {
    absl::StatusOr<std::vector<v1::JobEvent>> events = AllEvents(id);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const v1::JobEvent& e : *events) {
      drained_runs += e.state_change().previous_state() == v1::Job::RUNNING &&
                      e.state_change().state() == v1::Job::QUEUED &&
                      e.state_change().error().find("shut down") != std::string::npos;
    }
  }
  EXPECT_GE(drained_runs, 1) << "SIGTERM without drain time should have re-queued the running fit";
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [request_id, entry] : jobs_known_) {
      ASSERT_FALSE(entry.id.empty()) << request_id;
      if (entry.expect == Expect::kPresent) {
        EXPECT_EQ(entry.terminal, v1::Job::SUCCEEDED)
            << "job " << entry.id << " (" << request_id << ")";
      }
    }
  }
  // The watchers attached since round 1 saw each event exactly once, across every kill.
  int watch_reconnects = 0;
  const absl::Time watch_deadline = absl::Now() + absl::Seconds(30);
  for (auto& w : watches_) {
    while (!w->done.load() && absl::Now() < watch_deadline) absl::SleepFor(absl::Milliseconds(20));
  }
  watch_canceller_->Cancel();  // a watch still running by now has failed (it returns CANCELLED)
  for (auto& w : watches_) {
    w->thread.join();
    ASSERT_TRUE(w->status.ok()) << "watch of " << w->job_id << ": " << w->status;
    absl::StatusOr<std::vector<v1::JobEvent>> all = AllEvents(w->job_id);
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(w->events.size(), all->size()) << "watch of " << w->job_id;
    for (size_t i = 0; i < all->size(); ++i) {
      EXPECT_EQ(w->events[i].SerializeAsString(), (*all)[i].SerializeAsString())
          << w->job_id << " event " << i;
    }
    watch_reconnects += w->reconnects;
  }
  absl::StatusOr<int> exit_code = server_->Terminate(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server_->LogTail();
  EXPECT_EQ(*exit_code, 0) << server_->LogTail();
  const std::vector<std::string> temp = TempFiles(data_dir_);
  EXPECT_TRUE(temp.empty()) << temp.size() << " temporary files after a clean stop, e.g. "
                            << temp[0];

  size_t jobs = 0, models = 0, datasets = 0;
  int interrupted_jobs = 0, interrupted_runs = 0;
  {
    absl::MutexLock lock(&mu_);
    jobs = jobs_known_.size();
    models = models_known_.size();
    datasets = datasets_known_.size();
    for (const auto& [id, count] : requeues_) {
      interrupted_jobs += count > 0;
      interrupted_runs += count;
    }
  }
  std::printf(
      "[crash] %d kills, %d starts, %zu jobs (%d interrupted while running, %d interrupted runs; "
      "%d "
      "SubmitFits retried after a crash), %zu models checked, %zu uploads tried, %d temporary "
      "files left by kills (all removed), watchers re-attached %d times; %.1f s\n",
      kills_, server_->starts(), jobs, interrupted_jobs, interrupted_runs, resubmitted_, models,
      datasets, leftovers_total_, watch_reconnects,
      absl::ToDoubleSeconds(absl::Now() - test_start));
}

}  // namespace
}  // namespace drfm
