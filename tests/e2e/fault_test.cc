// Faults with nothing lost: the real drfm-server binary is SIGKILLed at random moments of a
// seeded random workload, many times over, and restarted on the same data dir each time. The
// workload runs concurrent clients: chunked dataset uploads (some abandoned mid-stream, by
// cancelling the stream or by ending it early), small fits on synthetic and uploaded data (some
// sharing a model name, so versions pile up), predictions, watchers following jobs, job cancels
// and deletes, model version and dataset deletes. Most kills come at a random time; some right
// after a restart, and some in the windows that matter, found with inotify and the workload's
// own answers: just after a dataset or model file was renamed into place (its row, or its job's
// success, not yet committed) and just after a running job's cancel was acknowledged. The client
// keeps a ledger of what the server acknowledged and of what the kill left unknown (an answer
// lost in flight: "either", pinned down at the next check). After every kill, on a copy of the
// database the dead server left:
//   - SQLite's integrity_check and foreign_key_check pass;
//   - every job's events have sequences 1..N, N = the job's last sequence, none missing or
//     repeated; its state is the state of its last state change; a terminal job has exactly one
//     terminal state change, its last event; no event outlives its job;
//   - no job has more than one model version;
// and after every restart, through the API (and the files behind it):
//   - every acknowledged job exists (until its DeleteJob was acknowledged), with the id it was
//     given, and one job per request_id; a retried or repeated SubmitFit gives that same job;
//     a refused SubmitFit left no job;
//   - a terminal state, once seen, never changes, nor does the number of events of the job; the
//     history of each terminal job is consistent (see ExpectConsistentHistory);
//   - every event a watcher received before a kill is still in the job's log, unchanged;
//   - a job stays in the terminal state a CancelJob answered (CANCELLED for a QUEUED job); a job
//     whose cancel was acknowledged while it ran is never run again after a restart;
//   - every acknowledged dataset is listed with its SHA-256 and a complete file; an abandoned or
//     refused upload never is; every model version is listed with a complete file whose SHA-256
//     never changes, predicts, names a job of the ledger, and a SUCCEEDED job's model is the
//     version that names it;
//   - no temporary file of the killed process survives the restart, and no blob file that no
//     row refers to (the dead server's orphans) stays visible in the data dir;
// and at the end, once every job has finished (each acknowledged job in exactly one terminal
// state), the server stops cleanly on SIGTERM (exit 0) leaving no temporary file and a database
// that passes integrity_check.
//
// The seed is printed; DRFM_FAULT_SEED=<n> repeats a run's choices (the timing differs) and
// DRFM_FAULT_ROUNDS=<n> runs more (or fewer) kill rounds than the default 24.
#include <gtest/gtest.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/inotify.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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
using e2e::MakeChannel;
using e2e::PickFreePort;
using e2e::ServerProcess;
using e2e::SetDeadline;
using e2e::TempFiles;

// Every dataset and model of the test has kCols features and kClasses classes; a fit on a few
// hundred rows takes ~0.1 s (idle) to ~1 s (busy machine) on one thread.
constexpr int64_t kCols = 16;
constexpr int kClasses = 3;
constexpr int kProbeRows = 4;
constexpr size_t kChunkBytes = 4 << 10;  // several messages per upload
constexpr int kDefaultRounds = 24;

// What the client knows about a write.
enum class Expect { kPresent, kAbsent, kEither };

// The keys of a ledger (a map to entries with an `expect`) whose entries are kPresent.
template <typename Ledger>
std::vector<typename Ledger::key_type> Present(const Ledger& ledger) {
  std::vector<typename Ledger::key_type> keys;
  for (const auto& [key, entry] : ledger) {
    if (entry.expect == Expect::kPresent) keys.push_back(key);
  }
  return keys;
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  uint64_t parsed = 0;
  if (value != nullptr && absl::SimpleAtoi(value, &parsed)) return parsed;
  return fallback;
}

// Codes a call gets when the server dies under it (or is not back yet).
bool IsTransportFailure(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

struct DatasetEntry {
  std::string sha256;  // of the payload sent (features, then labels)
  Expect expect = Expect::kAbsent;
};

struct JobEntry {
  v1::SubmitFitRequest request;
  std::string id;                    // empty until a SubmitFit with this request_id returned OK
  bool refused = false;              // SubmitFit answered with a validation error: no job
  Expect expect = Expect::kPresent;  // once acknowledged: kEither/kAbsent around a DeleteJob
  v1::Job::State terminal = v1::Job::STATE_UNSPECIFIED;  // once seen
  int64_t terminal_events = 0;                           // its last sequence then
  v1::ModelRef model;                                    // of a SUCCEEDED job
  // A CancelJob answered with this terminal state (e.g. CANCELLED for a QUEUED job): final.
  v1::Job::State cancel_answered = v1::Job::STATE_UNSPECIFIED;
  int64_t cancel_acked_at = 0;  // > 0: a CancelJob answered (job not yet terminal) at this sequence
};

struct ModelEntry {
  std::string job_id;
  std::string sha256;
  Expect expect = Expect::kPresent;
};

// What one watcher received before its stream ended (normally or by a kill).
struct WatchRecord {
  std::string job_id;
  std::vector<v1::JobEvent> events;
};

// Runs `sql` on `db`, handing each row to `row`; the error message, or "" when it ran.
std::string Query(sqlite3* db, const std::string& sql,
                  const std::function<void(sqlite3_stmt*)>& row) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    return sqlite3_errmsg(db);
  }
  int rc = SQLITE_OK;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
  std::string error = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  return error;
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  return text == nullptr ? "" : reinterpret_cast<const char*>(text);
}

std::string ColumnBlob(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  return data == nullptr ? "" : Bytes(data, sqlite3_column_bytes(stmt, column));
}

// Checks the database in `dir` (store.db and its WAL, as a killed server left them) with SQLite
// and against the store's invariants; fills `jobs` with the number of jobs it holds.
void CheckDatabase(const std::string& dir, int* jobs) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((dir + "/store.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
            SQLITE_OK);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> closer(db, &sqlite3_close);
  std::vector<std::string> integrity;
  ASSERT_EQ(Query(db, "PRAGMA integrity_check",
                  [&](sqlite3_stmt* s) { integrity.push_back(ColumnText(s, 0)); }),
            "");
  EXPECT_EQ(integrity, std::vector<std::string>{"ok"});
  int violations = 0;
  ASSERT_EQ(Query(db, "PRAGMA foreign_key_check", [&](sqlite3_stmt*) { ++violations; }), "");
  EXPECT_EQ(violations, 0) << "foreign key violations";

  // Events: 1..last_sequence, each once, consistent with the job's state.
  struct JobRow {
    int state = 0;
    int64_t last_sequence = 0;
    std::vector<v1::JobEvent> events;
  };
  std::map<std::string, JobRow> rows;
  ASSERT_EQ(Query(db, "SELECT id, state, last_sequence FROM jobs",
                  [&](sqlite3_stmt* s) {
                    JobRow& row = rows[ColumnText(s, 0)];
                    row.state = sqlite3_column_int(s, 1);
                    row.last_sequence = sqlite3_column_int64(s, 2);
                  }),
            "");
  int orphan_events = 0;
  ASSERT_EQ(Query(db, "SELECT job_id, sequence, event FROM events ORDER BY job_id, sequence",
                  [&](sqlite3_stmt* s) {
                    auto it = rows.find(ColumnText(s, 0));
                    if (it == rows.end()) {
                      ++orphan_events;
                      return;
                    }
                    v1::JobEvent event;
                    EXPECT_TRUE(event.ParseFromString(ColumnBlob(s, 2)));
                    EXPECT_EQ(event.sequence(), sqlite3_column_int64(s, 1));
                    it->second.events.push_back(std::move(event));
                  }),
            "");
  EXPECT_EQ(orphan_events, 0) << "events of jobs that do not exist";
  for (const auto& [id, row] : rows) {
    SCOPED_TRACE(absl::StrCat("job ", id, " in the database"));
    ASSERT_EQ(static_cast<int64_t>(row.events.size()), row.last_sequence);
    int terminal_changes = 0;
    v1::Job::State last_state = v1::Job::STATE_UNSPECIFIED;
    for (size_t i = 0; i < row.events.size(); ++i) {
      const v1::JobEvent& e = row.events[i];
      ASSERT_EQ(e.sequence(), static_cast<int64_t>(i + 1)) << "gap or repeat";
      if (e.has_state_change()) {
        last_state = e.state_change().state();
        if (IsTerminal(last_state)) {
          ++terminal_changes;
          EXPECT_EQ(i + 1, row.events.size()) << "events after the terminal state";
        }
      }
    }
    EXPECT_EQ(static_cast<int>(last_state), row.state) << "state and events disagree";
    EXPECT_EQ(terminal_changes, IsTerminal(static_cast<v1::Job::State>(row.state)) ? 1 : 0);
  }
  *jobs = static_cast<int>(rows.size());

  // One job, at most one model version.
  ASSERT_EQ(Query(db,
                  "SELECT job_id, COUNT(*), GROUP_CONCAT(name || ' v' || version) FROM models "
                  "WHERE job_id != '' GROUP BY job_id HAVING COUNT(*) > 1",
                  [&](sqlite3_stmt* s) {
                    ADD_FAILURE() << "job " << ColumnText(s, 0) << " stored "
                                  << sqlite3_column_int(s, 1)
                                  << " model versions: " << ColumnText(s, 2);
                  }),
            "");
}

// Copies what a killed server left of its database to `scratch` (the server's own WAL recovery
// must not be disturbed) and checks the copy.
void CheckDatabaseCopy(const std::string& data_dir, const std::string& scratch, int* jobs) {
  std::error_code ec;
  fs::remove_all(scratch, ec);
  fs::create_directories(scratch);
  for (const char* file : {"store.db", "store.db-wal"}) {
    if (fs::exists(data_dir + "/" + file)) {
      fs::copy_file(data_dir + "/" + file, scratch + "/" + file);
    }
  }
  CheckDatabase(scratch, jobs);
}

// Sees blob files being renamed into place under a data dir (inotify): the moment a dataset or
// model file is complete but its row may not be committed yet, or the job that stored a model not
// yet recorded as SUCCEEDED. Used from one thread.
class BlobPlacementWatch {
 public:
  // Watches data_dir/models and its name directories, and data_dir/datasets unless models_only.
  BlobPlacementWatch(const std::string& data_dir, bool models_only)
      : fd_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)), models_(data_dir + "/models") {
    if (!models_only) Add(data_dir + "/datasets", IN_MOVED_TO);
    Add(models_, IN_MOVED_TO | IN_CREATE);
    std::error_code ec;
    for (fs::directory_iterator it(models_, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_directory()) Add(it->path().string(), IN_MOVED_TO);
    }
  }
  ~BlobPlacementWatch() {
    if (fd_ >= 0) close(fd_);
  }

  // Waits until a .bin or .drfm file is moved into a watched directory; false after `timeout`.
  bool Wait(absl::Duration timeout) {
    if (fd_ < 0) return false;
    const absl::Time deadline = absl::Now() + timeout;
    alignas(inotify_event) char buffer[16 << 10];
    while (absl::Now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())) + 1);
      const ssize_t n = read(fd_, buffer, sizeof(buffer));
      for (ssize_t at = 0; n > 0 && at < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        const std::string name = event->len > 0 ? event->name : "";
        auto dir = dirs_.find(event->wd);
        if (dir == dirs_.end()) continue;
        if ((event->mask & IN_CREATE) && (event->mask & IN_ISDIR)) {
          Add(dir->second + "/" + name, IN_MOVED_TO);
        } else if ((event->mask & IN_MOVED_TO) &&
                   (absl::EndsWith(name, ".bin") || absl::EndsWith(name, ".drfm"))) {
          return true;
        }
      }
    }
    return false;
  }

 private:
  void Add(const std::string& dir, uint32_t mask) {
    const int wd = inotify_add_watch(fd_, dir.c_str(), mask);
    if (wd >= 0) dirs_[wd] = dir;
  }

  const int fd_;
  const std::string models_;
  std::map<int, std::string> dirs_;  // watch descriptor -> directory
};

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(e2e::kServerBinary))
        << e2e::kServerBinary << " is missing: build drfm-server";
    dir_ = (fs::path(::testing::TempDir()) / absl::StrCat("drfm_fault_", getpid())).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_dir_ = dir_ + "/data";
    server_ = std::make_unique<ServerProcess>(data_dir_, dir_ + "/server.log");
    const core::Dataset probe = e2e::Synthetic(kProbeRows, kCols, kClasses, 4242);
    probe_ = Bytes(probe.features.data(), probe.features.size() * 4);
  }

  void TearDown() override {
    server_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Server lifecycle.

  void StartServer() {
    absl::Status started;
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (port_ == 0 || attempt > 0) port_ = PickFreePort();
      started = server_->Start(port_, absl::Seconds(30));
      if (started.ok()) break;
    }
    ASSERT_TRUE(started.ok()) << started;
    channel_ = MakeChannel(port_);
    datasets_ = v1::DatasetService::NewStub(channel_);
    jobs_ = v1::JobService::NewStub(channel_);
    models_ = v1::ModelService::NewStub(channel_);
  }

  // SIGKILL. Remembers the temporary files the dead process left and the blob files no committed
  // row refers to (both must be gone after the restart), and checks its database.
  void KillServer() {
    server_->Kill();
    ++kills_;
    leftovers_ = TempFiles(data_dir_);
    leftovers_total_ += static_cast<int>(leftovers_.size());
    int jobs = 0;
    CheckDatabaseCopy(data_dir_, dir_ + "/db-copy", &jobs);
    orphans_ = OrphanFiles(dir_ + "/db-copy");
    orphans_total_ += static_cast<int>(orphans_.size());
  }

  // Dataset and model files under the data dir that no row of the database in `db_dir` names.
  std::map<std::string, std::string> OrphanFiles(const std::string& db_dir) {
    std::set<std::string> referenced;
    sqlite3* db = nullptr;
    if (sqlite3_open_v2((db_dir + "/store.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) ==
        SQLITE_OK) {
      Query(db, "SELECT sha256 FROM datasets", [&](sqlite3_stmt* s) {
        referenced.insert(absl::StrCat(data_dir_, "/datasets/", ColumnText(s, 0), ".bin"));
      });
      Query(db, "SELECT name, version FROM models", [&](sqlite3_stmt* s) {
        referenced.insert(absl::StrCat(data_dir_, "/models/", ColumnText(s, 0), "/",
                                       sqlite3_column_int64(s, 1), ".drfm"));
      });
    }
    sqlite3_close(db);
    std::map<std::string, std::string> orphans;  // path -> SHA-256 of its content
    std::error_code ec;
    for (fs::recursive_directory_iterator it(data_dir_, ec), end; !ec && it != end;
         it.increment(ec)) {
      const std::string path = it->path().string();
      const std::string ext = it->path().extension().string();
      if (it->is_regular_file() && (ext == ".bin" || ext == ".drfm") &&
          referenced.count(path) == 0) {
        orphans[path] = server::Sha256Hex(e2e::ReadFile(path));
      }
    }
    return orphans;
  }

  // Calls, usable from any thread (they read the stubs of the current round).

  // Uploads a fresh rows x kCols dataset (content from `seed`) as `name`. `abandon` 1: cancels
  // the stream after half of it; 2: ends the stream early (the server refuses the upload).
  // Returns false when the server is gone.
  bool Upload(v1::DatasetService::Stub* stub, const std::string& name, uint64_t seed, int64_t rows,
              int abandon) {
    const core::Dataset data = e2e::Synthetic(rows, kCols, kClasses, seed);
    const size_t feature_bytes = data.features.size() * 4;
    const std::string payload = Bytes(data.features.data(), feature_bytes) +
                                Bytes(data.labels.data(), data.labels.size() * 4);
    const std::string sha = server::Sha256Hex(payload);
    {
      absl::MutexLock lock(&mu_);
      datasets_known_[name] = {sha, abandon != 0 ? Expect::kAbsent : Expect::kEither};
    }
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::Dataset stored;
    std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
        stub->UploadDataset(&context, &stored);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->set_rows(rows);
    header.mutable_header()->set_cols(kCols);
    header.mutable_header()->set_num_classes(kClasses);
    header.mutable_header()->set_sha256(sha);
    bool open = writer->Write(header);
    // An abandoned upload sends only its first half (never the whole of a one-chunk payload).
    const size_t stop_at = abandon != 0 ? payload.size() / 2 : payload.size();
    for (size_t off = 0; open && off < stop_at; off += kChunkBytes) {
      v1::UploadDatasetRequest chunk;
      const size_t end = std::min(off + kChunkBytes, stop_at);
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
    if (abandon == 1) context.TryCancel();
    const bool all_sent = open && writer->WritesDone();
    const grpc::Status status = writer->Finish();
    absl::MutexLock lock(&mu_);
    DatasetEntry& entry = datasets_known_[name];
    if (abandon != 0) {
      EXPECT_FALSE(status.ok()) << name << ": an abandoned upload was accepted";
      if (abandon == 2 && !IsTransportFailure(status.error_code())) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
            << status.error_message();
      }
      ++uploads_abandoned_;
      return status.error_code() != grpc::StatusCode::UNAVAILABLE;
    }
    if (status.ok()) {
      EXPECT_EQ(stored.sha256(), sha);
      EXPECT_EQ(stored.name(), name);
      entry.expect = Expect::kPresent;
      ++uploads_ok_;
      return true;
    }
    EXPECT_TRUE(IsTransportFailure(status.error_code()))
        << "upload " << name << ": " << status.error_message();
    // Sent in full: the server may have committed it before it died.
    entry.expect = all_sent ? Expect::kEither : Expect::kAbsent;
    return false;
  }

  v1::SubmitFitRequest FitRequest(const std::string& request_id, std::mt19937_64& rng) {
    v1::SubmitFitRequest r;
    r.set_request_id(request_id);
    r.set_model_name(rng() % 4 == 0 ? absl::StrCat("shared-", rng() % 3) : "m-" + request_id);
    std::string train;
    {
      absl::MutexLock lock(&mu_);
      std::vector<std::string> uploaded;
      for (const auto& [name, entry] : datasets_known_) {
        if (entry.expect == Expect::kPresent) uploaded.push_back(name);
      }
      if (!uploaded.empty() && rng() % 3 == 0) train = uploaded[rng() % uploaded.size()];
    }
    if (train.empty()) {
      train = absl::StrCat("synthetic:rows=", 200 + rng() % 500, ",cols=", kCols,
                           ",classes=", kClasses, ",seed=", rng() % 1000);
    }
    r.mutable_train()->set_dataset(train);
    r.mutable_test()->set_dataset(train);
    r.mutable_test()->set_limit(40);
    r.set_priority(static_cast<int>(rng() % 3));
    r.mutable_config()->set_layers(rng() % 5 == 0 ? 2 : 1);
    r.mutable_config()->set_width(32 << (rng() % 3));
    r.mutable_config()->set_seed(rng() % 100000);
    return r;
  }

  // SubmitFit, recorded by request_id. Returns false when the server is gone.
  bool Submit(v1::JobService::Stub* stub, const v1::SubmitFitRequest& request) {
    {
      absl::MutexLock lock(&mu_);
      jobs_known_[request.request_id()].request = request;
    }
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::Job job;
    const grpc::Status status = stub->SubmitFit(&context, request, &job);
    absl::MutexLock lock(&mu_);
    JobEntry& entry = jobs_known_[request.request_id()];
    if (status.ok()) {
      EXPECT_TRUE(entry.id.empty() || entry.id == job.id())
          << "request_id " << request.request_id() << " gave jobs " << entry.id << " and "
          << job.id();
      EXPECT_FALSE(entry.refused) << request.request_id() << " was refused before";
      entry.id = job.id();
      return true;
    }
    if (IsTransportFailure(status.error_code())) return false;
    // Refused (e.g. its dataset was deleted meanwhile, or the queue is full): no job. A request
    // acknowledged before must not be refused now.
    EXPECT_TRUE(entry.id.empty()) << "SubmitFit repeated for job " << entry.id << " ("
                                  << request.request_id() << ") failed: " << status.error_code()
                                  << " " << status.error_message();
    if (entry.id.empty()) entry.refused = true;
    ++submits_refused_;
    return true;
  }

  // Predicts the probe with a model version; checks the answer against the ledger. Returns false
  // when the server is gone.
  bool Predict(v1::ModelService::Stub* stub, const std::string& name, int64_t version) {
    v1::PredictRequest request;
    request.set_model(name);
    request.set_version(version);
    request.set_rows(kProbeRows);
    request.set_cols(kCols);
    request.set_features(probe_);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::PredictResponse response;
    const grpc::Status status = stub->Predict(&context, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.labels_size(), kProbeRows);
      predictions_ok_.fetch_add(1);
      return true;
    }
    if (IsTransportFailure(status.error_code())) return false;
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::NOT_FOUND ||
                status.error_code() == grpc::StatusCode::FAILED_PRECONDITION)
        << name << " v" << version << ": " << status.error_message();
    absl::MutexLock lock(&mu_);
    EXPECT_NE(models_known_[std::make_pair(name, version)].expect, Expect::kPresent)
        << "model " << name << " v" << version
        << " is gone though no delete was sent: " << status.error_message();
    return true;
  }

  // Workload threads of one round; each returns when `stop` is set or the server is gone.

  void UploadLoop(int round, uint64_t seed, const std::atomic<bool>& stop) {
    v1::DatasetService::Stub* stub = datasets_.get();
    std::mt19937_64 rng(seed);
    for (int k = 0; !stop.load(); ++k) {
      const int abandon = rng() % 5 == 0 ? 1 + static_cast<int>(rng() % 2) : 0;
      if (!Upload(stub, absl::StrCat("d", round, "-", k), next_content_.fetch_add(1),
                  60 + static_cast<int64_t>(rng() % 200), abandon)) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(rng() % 150));
    }
  }

  void FitLoop(int round, uint64_t seed, const std::atomic<bool>& stop) {
    v1::JobService::Stub* stub = jobs_.get();
    std::mt19937_64 rng(seed);
    for (int k = 0; !stop.load() && k < 8; ++k) {
      if (!Submit(stub, FitRequest(absl::StrCat("f", round, "-", k), rng))) return;
      absl::SleepFor(absl::Milliseconds(50 + rng() % 200));
    }
  }

  void PredictLoop(uint64_t seed, const std::atomic<bool>& stop) {
    v1::ModelService::Stub* stub = models_.get();
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      std::pair<std::string, int64_t> pick;
      {
        absl::MutexLock lock(&mu_);
        const auto present = Present(models_known_);
        if (present.empty()) return;
        pick = present[rng() % present.size()];
      }
      if (!Predict(stub, pick.first, pick.second)) return;
      absl::SleepFor(absl::Milliseconds(rng() % 30));
    }
  }

  // Follows jobs with WatchJob from their first event, one after the other, recording what each
  // stream delivered.
  void WatchLoop(uint64_t seed, const std::atomic<bool>& stop) {
    v1::JobService::Stub* stub = jobs_.get();
    std::mt19937_64 rng(seed);
    std::set<std::string> finished;  // watched to the end
    while (!stop.load()) {
      std::string job_id;
      {
        absl::MutexLock lock(&mu_);
        std::vector<std::string> ids;
        for (const auto& [request_id, entry] : jobs_known_) {
          if (!entry.id.empty() && entry.terminal == v1::Job::STATE_UNSPECIFIED &&
              finished.count(entry.id) == 0) {
            ids.push_back(entry.id);
          }
        }
        if (!ids.empty()) job_id = ids[rng() % ids.size()];
      }
      if (job_id.empty()) {
        absl::SleepFor(absl::Milliseconds(50));
        continue;
      }
      WatchRecord record{job_id, {}};
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(20));
      v1::WatchJobRequest request;
      request.set_job_id(job_id);
      std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub->WatchJob(&context, request);
      v1::JobEvent event;
      while (reader->Read(&event)) record.events.push_back(event);
      const grpc::Status status = reader->Finish();
      for (size_t i = 0; i < record.events.size(); ++i) {
        EXPECT_EQ(record.events[i].sequence(), static_cast<int64_t>(i + 1))
            << "watch of " << job_id << " skipped or repeated an event";
      }
      if (status.ok()) finished.insert(job_id);
      absl::MutexLock lock(&mu_);
      if (!record.events.empty()) watches_.push_back(std::move(record));
      if (!status.ok()) {
        EXPECT_TRUE(IsTransportFailure(status.error_code()) ||
                    status.error_code() == grpc::StatusCode::NOT_FOUND)
            << "watch of " << job_id << ": " << status.error_message();
        if (status.error_code() != grpc::StatusCode::NOT_FOUND) return;
      }
    }
  }

  // Cancels, deletes jobs, model versions and datasets at random.
  void ControlLoop(uint64_t seed, const std::atomic<bool>& stop) {
    v1::DatasetService::Stub* datasets = datasets_.get();
    v1::JobService::Stub* jobs = jobs_.get();
    v1::ModelService::Stub* models = models_.get();
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      absl::SleepFor(absl::Milliseconds(60 + rng() % 200));
      const int action = static_cast<int>(rng() % 10);
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(10));
      grpc::Status status;
      if (action < 4) {  // cancel a job not known to be finished
        std::string request_id, job_id;
        {
          absl::MutexLock lock(&mu_);
          std::vector<std::pair<std::string, std::string>> open;
          for (const auto& [rid, entry] : jobs_known_) {
            if (!entry.id.empty() && entry.terminal == v1::Job::STATE_UNSPECIFIED &&
                entry.expect == Expect::kPresent) {
              open.emplace_back(rid, entry.id);
            }
          }
          if (open.empty()) continue;
          std::tie(request_id, job_id) = open[rng() % open.size()];
        }
        v1::CancelJobRequest request;
        request.set_job_id(job_id);
        v1::Job job;
        status = jobs->CancelJob(&context, request, &job);
        if (status.ok()) {
          absl::MutexLock lock(&mu_);
          JobEntry& entry = jobs_known_[request_id];
          if (IsTerminal(job.state())) {
            EXPECT_TRUE(entry.cancel_answered == v1::Job::STATE_UNSPECIFIED ||
                        entry.cancel_answered == job.state())
                << "job " << job_id << " answered two terminal states";
            entry.cancel_answered = job.state();
          } else if (!IsTerminal(job.state()) && entry.cancel_acked_at == 0) {
            entry.cancel_acked_at = job.last_event_sequence();
          }
          if (!IsTerminal(job.state())) running_cancelled_ = true;
          ++cancels_ok_;
        }
      } else if (action < 6) {  // delete a finished job
        std::string request_id, job_id;
        {
          absl::MutexLock lock(&mu_);
          std::vector<std::pair<std::string, std::string>> done;
          for (const auto& [rid, entry] : jobs_known_) {
            if (!entry.id.empty() && IsTerminal(entry.terminal) &&
                entry.expect == Expect::kPresent) {
              done.emplace_back(rid, entry.id);
            }
          }
          if (done.empty()) continue;
          std::tie(request_id, job_id) = done[rng() % done.size()];
          jobs_known_[request_id].expect = Expect::kEither;
        }
        v1::DeleteJobRequest request;
        request.set_job_id(job_id);
        v1::DeleteJobResponse response;
        status = jobs->DeleteJob(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) jobs_known_[request_id].expect = Expect::kAbsent;
      } else if (action < 8) {  // delete a model version
        std::pair<std::string, int64_t> key;
        {
          absl::MutexLock lock(&mu_);
          const auto present = Present(models_known_);
          if (present.empty()) continue;
          key = present[rng() % present.size()];
          models_known_[key].expect = Expect::kEither;
        }
        v1::DeleteModelRequest request;
        request.set_name(key.first);
        request.set_version(key.second);
        v1::DeleteModelResponse response;
        status = models->DeleteModel(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) models_known_[key].expect = Expect::kAbsent;
      } else {  // delete an uploaded dataset (fits on it that have not loaded it fail)
        std::string name;
        {
          absl::MutexLock lock(&mu_);
          const auto present = Present(datasets_known_);
          if (present.size() < 3) continue;  // keep some for fits
          name = present[rng() % present.size()];
          datasets_known_[name].expect = Expect::kEither;
        }
        v1::DeleteDatasetRequest request;
        request.set_dataset(name);
        v1::DeleteDatasetResponse response;
        status = datasets->DeleteDataset(&context, request, &response);
        absl::MutexLock lock(&mu_);
        if (status.ok()) datasets_known_[name].expect = Expect::kAbsent;
      }
      if (status.ok()) {
        deletes_ok_ += action >= 4;
        continue;
      }
      if (IsTransportFailure(status.error_code())) return;
      ADD_FAILURE() << "control action " << action << ": " << status.error_code() << " "
                    << status.error_message();
    }
  }

  // Retries, with the same request_id, every SubmitFit whose answer a kill swallowed, and repeats
  // a few acknowledged ones: each gives the job the first call created, or a new one, never two.
  void ResubmitPending(std::mt19937_64& rng) {
    std::vector<v1::SubmitFitRequest> again;
    {
      absl::MutexLock lock(&mu_);
      std::vector<v1::SubmitFitRequest> acked, data_gone;
      for (const auto& [request_id, entry] : jobs_known_) {
        if (entry.id.empty() && !entry.refused) again.push_back(entry.request);
        if (entry.id.empty() || entry.expect != Expect::kPresent) continue;
        acked.push_back(entry.request);
        auto dataset = datasets_known_.find(entry.request.train().dataset());
        if (dataset != datasets_known_.end() && dataset->second.expect == Expect::kAbsent) {
          data_gone.push_back(entry.request);
        }
      }
      resubmitted_ += static_cast<int>(again.size());
      // Repeats of acknowledged requests, one whose training data has been deleted since if
      // there is one: the same request_id and request is the same job, whatever changed since.
      if (!acked.empty()) again.push_back(acked[rng() % acked.size()]);
      if (!data_gone.empty()) again.push_back(data_gone[rng() % data_gone.size()]);
      repeated_ += static_cast<int>(!acked.empty()) + static_cast<int>(!data_gone.empty());
    }
    for (const v1::SubmitFitRequest& request : again) {
      EXPECT_TRUE(Submit(jobs_.get(), request)) << request.request_id() << ": server gone";
    }
  }

  // The invariants, against a freshly restarted server while no workload runs (jobs it recovered
  // may be running). Outcomes left unknown by the kill are pinned down.
  void Verify(const std::string& when, bool final_check = false) {
    SCOPED_TRACE(when);
    for (const std::string& path : leftovers_) {
      EXPECT_FALSE(fs::exists(path)) << "temporary file " << path << " survived the restart";
    }
    absl::MutexLock lock(&mu_);

    // Datasets.
    std::map<std::string, v1::Dataset> listed_datasets;
    for (const v1::Dataset& d : e2e::ListAllDatasets(datasets_.get())) {
      EXPECT_TRUE(listed_datasets.emplace(d.name(), d).second) << d.name() << " listed twice";
    }
    for (auto& [name, entry] : datasets_known_) {
      auto it = listed_datasets.find(name);
      const bool present = it != listed_datasets.end();
      if (entry.expect == Expect::kPresent) {
        EXPECT_TRUE(present) << "acknowledged dataset " << name << " is gone";
      } else if (entry.expect == Expect::kAbsent) {
        EXPECT_FALSE(present) << "dataset " << name
                              << " is listed though its upload was abandoned or failed, or its "
                                 "deletion was acknowledged";
      } else {
        entry.expect = present ? Expect::kPresent : Expect::kAbsent;
      }
      if (present) {
        EXPECT_EQ(it->second.sha256(), entry.sha256) << name;
      }
    }
    std::set<std::string> dataset_files;
    for (const auto& [name, d] : listed_datasets) {
      EXPECT_EQ(datasets_known_.count(name), 1u) << "unknown dataset " << name;
      const std::string path = absl::StrCat(data_dir_, "/datasets/", d.sha256(), ".bin");
      dataset_files.insert(path);
      ExpectCompleteFile(path, d.size_bytes(), d.sha256());
    }

    // Jobs.
    std::map<std::string, v1::Job> by_request;  // request_id -> job
    std::map<std::string, v1::Job> by_id;
    for (const v1::Job& job : e2e::ListAllJobs(jobs_.get())) {
      EXPECT_TRUE(by_request.emplace(job.request_id(), job).second)
          << "two jobs for request_id " << job.request_id();
      by_id[job.id()] = job;
      auto known = jobs_known_.find(job.request_id());
      ASSERT_NE(known, jobs_known_.end()) << "job " << job.id() << " of an unknown request";
      EXPECT_FALSE(known->second.refused)
          << "job " << job.id() << " exists though its SubmitFit was refused";
      // A job whose acknowledgement the kill swallowed; the retry must give the same one.
      if (known->second.id.empty()) known->second.id = job.id();
    }
    for (auto& [request_id, entry] : jobs_known_) {
      if (entry.id.empty()) continue;  // never acknowledged: ResubmitPending settles it
      auto it = by_request.find(request_id);
      const bool present = it != by_request.end();
      if (present) {
        EXPECT_EQ(it->second.id(), entry.id) << request_id;
      }
      if (entry.expect == Expect::kAbsent || (entry.expect == Expect::kEither && !present)) {
        EXPECT_FALSE(present) << "deleted job " << entry.id << " is back";
        entry.expect = Expect::kAbsent;
        continue;
      }
      ASSERT_TRUE(present) << "acknowledged job " << entry.id << " (" << request_id << ") is gone";
      entry.expect = Expect::kPresent;
      const v1::Job& job = it->second;
      if (entry.terminal != v1::Job::STATE_UNSPECIFIED) {
        EXPECT_EQ(job.state(), entry.terminal) << "job " << entry.id << " left its terminal state";
        EXPECT_EQ(job.last_event_sequence(), entry.terminal_events)
            << "job " << entry.id << " got events after its terminal state";
        EXPECT_EQ(job.model().SerializeAsString(), entry.model.SerializeAsString());
        if (!final_check) continue;
      }
      if (!IsTerminal(job.state())) continue;
      absl::StatusOr<std::vector<v1::JobEvent>> events = e2e::AllEvents(jobs_.get(), entry.id);
      ASSERT_TRUE(events.ok()) << events.status();
      ExpectConsistentHistory(job, *events);
      if (entry.cancel_answered != v1::Job::STATE_UNSPECIFIED) {
        EXPECT_EQ(job.state(), entry.cancel_answered)
            << "job " << entry.id << " is not in the state its CancelJob answered";
      }
      if (entry.cancel_acked_at > 0) {
        // Cancelled while it ran (or was about to): it may still have finished by itself, but a
        // restart must not run it again.
        bool requeued = false;
        for (const v1::JobEvent& e : *events) {
          if (e.sequence() <= entry.cancel_acked_at || !e.has_state_change()) continue;
          if (e.state_change().state() == v1::Job::QUEUED) requeued = true;
          EXPECT_FALSE(requeued && e.state_change().state() == v1::Job::RUNNING)
              << "job " << entry.id << " ran again after its cancel was acknowledged (at event "
              << entry.cancel_acked_at << ")";
        }
      }
      int runs = 0;
      for (const v1::JobEvent& e : *events) {
        runs += e.has_state_change() && e.state_change().state() == v1::Job::RUNNING;
      }
      interrupted_runs_[entry.id] = std::max(0, runs - 1);
      if (entry.terminal == v1::Job::STATE_UNSPECIFIED) {
        entry.terminal = job.state();
        entry.terminal_events = job.last_event_sequence();
        entry.model = job.model();
        if (job.state() == v1::Job::SUCCEEDED) {
          models_known_.emplace(std::make_pair(job.model().name(), job.model().version()),
                                ModelEntry{entry.id, "", Expect::kPresent});
        }
      }
    }
    // Watchers saw stored events only, and each unchanged.
    for (const WatchRecord& watch : watches_) {
      auto job = by_id.find(watch.job_id);
      if (job == by_id.end()) continue;  // deleted since
      std::vector<v1::JobEvent> stored;
      StoredEventsUpTo(watch.job_id, watch.events.size(), &stored);
      ASSERT_GE(stored.size(), watch.events.size())
          << "events a watcher of " << watch.job_id << " received are gone";
      for (size_t i = 0; i < watch.events.size(); ++i) {
        EXPECT_EQ(stored[i].SerializeAsString(), watch.events[i].SerializeAsString())
            << "job " << watch.job_id << " event " << i + 1 << " changed";
      }
    }
    watches_checked_ += static_cast<int>(watches_.size());
    watches_.clear();

    // Models.
    std::set<std::string> model_files;
    std::map<std::string, std::string> model_of_job;  // job id -> "name vN"
    for (const v1::Model& m : e2e::ListAllModels(models_.get())) {
      const std::string label = absl::StrCat(m.name(), " v", m.version());
      const std::string path =
          absl::StrCat(data_dir_, "/models/", m.name(), "/", m.version(), ".drfm");
      model_files.insert(path);
      ExpectCompleteFile(path, m.size_bytes(), m.sha256());
      auto [other, fresh] = model_of_job.emplace(m.job_id(), label);
      EXPECT_TRUE(fresh) << "job " << m.job_id() << " has two model versions: " << other->second
                         << " and " << label;
      bool job_known = false;
      for (const auto& [request_id, entry] : jobs_known_) job_known |= entry.id == m.job_id();
      EXPECT_TRUE(job_known) << "model " << label << " names unknown job " << m.job_id();
      auto job = by_id.find(m.job_id());
      if (job != by_id.end() && job->second.state() == v1::Job::SUCCEEDED) {
        EXPECT_EQ(job->second.model().name(), m.name()) << label;
        EXPECT_EQ(job->second.model().version(), m.version()) << label;
      }
      ModelEntry& entry = models_known_[{m.name(), m.version()}];
      if (entry.sha256.empty()) {
        entry.sha256 = m.sha256();
        entry.job_id = m.job_id();
      }
      EXPECT_EQ(entry.sha256, m.sha256()) << "model " << label << " changed";
      EXPECT_EQ(entry.job_id, m.job_id()) << "model " << label << " changed its job";
      EXPECT_NE(entry.expect, Expect::kAbsent) << "deleted model " << label << " is back";
      entry.expect = Expect::kPresent;
    }
    for (auto& [key, entry] : models_known_) {
      const std::string path =
          absl::StrCat(data_dir_, "/models/", key.first, "/", key.second, ".drfm");
      if (model_files.count(path) != 0) continue;
      EXPECT_NE(entry.expect, Expect::kPresent)
          << "model " << key.first << " v" << key.second << " is gone though no delete was sent";
      entry.expect = Expect::kAbsent;
    }

    // Files: nothing that no row names (what the killed server left of that kind is gone, unless
    // a recovered job has since stored that very file).
    // A job recovered by the restart may be storing its model right now: a model file nobody
    // lists yet counts once a listing names it within a second (or it is gone by then).
    const auto listed_soon = [&](const std::string& path) {
      for (int attempt = 0; attempt < 20 && fs::exists(path); ++attempt) {
        absl::SleepFor(absl::Milliseconds(50));
        for (const v1::Model& m : e2e::ListAllModels(models_.get())) {
          if (path == absl::StrCat(data_dir_, "/models/", m.name(), "/", m.version(), ".drfm")) {
            return true;
          }
        }
      }
      return !fs::exists(path);
    };
    for (const auto& [path, sha] : orphans_) {
      if (!fs::exists(path)) continue;
      const bool referenced = dataset_files.count(path) != 0 || model_files.count(path) != 0 ||
                              (absl::EndsWith(path, ".drfm") && listed_soon(path));
      EXPECT_TRUE(referenced) << "unreferenced file " << path << " survived the restart";
    }
    std::error_code ec;
    for (fs::recursive_directory_iterator it(data_dir_, ec), end; !ec && it != end;
         it.increment(ec)) {
      const std::string path = it->path().string();
      const std::string ext = it->path().extension().string();
      if (ext == ".bin") {
        EXPECT_EQ(dataset_files.count(path), 1u) << "file " << path << " is no listed dataset's";
      } else if (ext == ".drfm" && model_files.count(path) == 0) {
        EXPECT_TRUE(listed_soon(path)) << "file " << path << " is no listed model's";
      }
    }
  }

  // The stored events 1..count of a job that may still be running (its watch stream would not
  // end), read in one WatchJob that stops after `count` events.
  void StoredEventsUpTo(const std::string& job_id, size_t count, std::vector<v1::JobEvent>* out) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = jobs_->WatchJob(&context, request);
    v1::JobEvent event;
    while (out->size() < count && reader->Read(&event)) out->push_back(event);
    context.TryCancel();
    reader->Finish();
  }

  // Predicts with every model the ledger has as present.
  void PredictAll() {
    std::vector<std::pair<std::string, int64_t>> present;
    {
      absl::MutexLock lock(&mu_);
      present = Present(models_known_);
    }
    for (const auto& [name, version] : present) {
      EXPECT_TRUE(Predict(models_.get(), name, version)) << name << " v" << version;
    }
  }

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
  std::map<std::pair<std::string, int64_t>, ModelEntry> models_known_ ABSL_GUARDED_BY(mu_);
  std::vector<WatchRecord> watches_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> interrupted_runs_ ABSL_GUARDED_BY(mu_);  // job id -> runs restarted
  int uploads_ok_ ABSL_GUARDED_BY(mu_) = 0;
  int uploads_abandoned_ ABSL_GUARDED_BY(mu_) = 0;
  int submits_refused_ ABSL_GUARDED_BY(mu_) = 0;
  int resubmitted_ ABSL_GUARDED_BY(mu_) = 0;
  int repeated_ ABSL_GUARDED_BY(mu_) = 0;
  int watches_checked_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<uint64_t> next_content_{1};
  std::atomic<bool> running_cancelled_{false};  // a CancelJob answered with an unfinished job
  std::atomic<int> predictions_ok_{0}, cancels_ok_{0}, deletes_ok_{0};
  std::vector<std::string> leftovers_;
  std::map<std::string, std::string> orphans_;
  int leftovers_total_ = 0, orphans_total_ = 0, kills_ = 0;
};

TEST_F(FaultTest, SigkillAtRandomPointsOfARandomWorkloadLosesAndDuplicatesNothing) {
  const uint64_t seed = EnvOr("DRFM_FAULT_SEED", std::random_device()());
  const int rounds = static_cast<int>(EnvOr("DRFM_FAULT_ROUNDS", kDefaultRounds));
  std::printf(
      "[fault] seed %llu, %d rounds (DRFM_FAULT_SEED=%llu DRFM_FAULT_ROUNDS=%d to repeat)\n",
      static_cast<unsigned long long>(seed), rounds, static_cast<unsigned long long>(seed), rounds);
  std::fflush(stdout);
  SCOPED_TRACE(absl::StrCat("DRFM_FAULT_SEED=", seed));
  std::mt19937_64 rng(seed);
  const absl::Time test_start = absl::Now();

  for (int round = 0; round < rounds; ++round) {
    ASSERT_NO_FATAL_FAILURE(StartServer());
    ASSERT_NO_FATAL_FAILURE(Verify(absl::StrCat("after kill ", round)));
    if (HasFailure()) break;
    ResubmitPending(rng);
    // The kill point: mostly at a random time in the thick of the workload, sometimes right after
    // the restart (recovered jobs starting over) or after a longer run; and sometimes right in
    // the windows that matter: just after a dataset or model file was placed (its row, or the
    // job's success, not yet recorded), or just after a running job's cancel was acknowledged.
    const int pick = static_cast<int>(rng() % 20);
    enum class Trigger { kTime, kBlob, kCancel } trigger = Trigger::kTime;
    absl::Duration kill_after = absl::Milliseconds(100 + rng() % 900);
    if (pick < 2) kill_after = absl::Milliseconds(rng() % 30);
    if (pick >= 11 && pick < 13) kill_after = absl::Milliseconds(1000 + rng() % 1500);
    if (pick >= 13 && pick < 17) trigger = Trigger::kBlob;
    if (pick >= 17) trigger = Trigger::kCancel;
    const absl::Duration trigger_delay = absl::Microseconds(rng() % 3000);
    std::unique_ptr<BlobPlacementWatch> placements;
    if (trigger == Trigger::kBlob) {
      placements = std::make_unique<BlobPlacementWatch>(data_dir_, /*models_only=*/rng() % 2 == 0);
    }
    running_cancelled_ = false;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    const uint64_t round_seed = rng();
    threads.emplace_back([&, round] { UploadLoop(round, round_seed + 1, stop); });
    threads.emplace_back([&, round] { FitLoop(round, round_seed + 2, stop); });
    threads.emplace_back([&] { PredictLoop(round_seed + 3, stop); });
    threads.emplace_back([&] { WatchLoop(round_seed + 4, stop); });
    threads.emplace_back([&] { ControlLoop(round_seed + 5, stop); });
    const absl::Time workload_start = absl::Now();
    std::string how;
    if (trigger == Trigger::kTime) {
      absl::SleepFor(kill_after);
      how = "at a random time";
    } else if (trigger == Trigger::kBlob) {
      const bool seen = placements->Wait(absl::Seconds(3));
      absl::SleepFor(trigger_delay);
      how = seen ? absl::StrCat(absl::ToInt64Microseconds(trigger_delay),
                                " us after a blob file was placed")
                 : "(no blob file placed)";
    } else {
      const absl::Time give_up = absl::Now() + absl::Seconds(3);
      while (!running_cancelled_.load() && absl::Now() < give_up) {
        absl::SleepFor(absl::Microseconds(200));
      }
      absl::SleepFor(trigger_delay);
      how = running_cancelled_.load()
                ? absl::StrCat(absl::ToInt64Microseconds(trigger_delay),
                               " us after a running job's cancel was acknowledged")
                : "(no running job cancelled)";
    }
    kill_after = absl::Now() - workload_start;
    KillServer();
    stop = true;
    for (std::thread& t : threads) t.join();
    std::printf(
        "[fault %2d] %6.1f s  killed after %4lld ms %s; %zu temporary and %zu "
        "unreferenced files left (restart took %.2f s)\n",
        round, absl::ToDoubleSeconds(absl::Now() - test_start),
        static_cast<long long>(absl::ToInt64Milliseconds(kill_after)), how.c_str(),
        leftovers_.size(), orphans_.size(), server_->last_start_seconds());
    std::fflush(stdout);
    if (HasFailure()) break;
  }
  ASSERT_FALSE(HasFailure()) << "server log tail:\n" << server_->LogTail();

  // Final: restart, settle every request, let every job finish, check everything, stop cleanly.
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Verify("after the last kill"));
  ResubmitPending(rng);
  {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    std::vector<std::string> unfinished;
    do {
      unfinished.clear();
      for (const v1::Job& job : e2e::ListAllJobs(jobs_.get())) {
        if (!IsTerminal(job.state())) unfinished.push_back(job.id());
      }
      if (!unfinished.empty()) absl::SleepFor(absl::Milliseconds(100));
    } while (!unfinished.empty() && absl::Now() < deadline);
    ASSERT_TRUE(unfinished.empty())
        << unfinished.size() << " jobs still unfinished, e.g. " << unfinished[0];
  }
  ASSERT_NO_FATAL_FAILURE(Verify("at the end", /*final_check=*/true));
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [request_id, entry] : jobs_known_) {
      EXPECT_TRUE(!entry.id.empty() || entry.refused) << request_id << " never settled";
      if (!entry.id.empty() && entry.expect == Expect::kPresent) {
        EXPECT_TRUE(IsTerminal(entry.terminal)) << "job " << entry.id << " (" << request_id << ")";
      }
    }
  }
  PredictAll();
  absl::StatusOr<int> exit_code = server_->Terminate(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server_->LogTail();
  EXPECT_EQ(*exit_code, 0) << server_->LogTail();
  const std::vector<std::string> temp = TempFiles(data_dir_);
  EXPECT_TRUE(temp.empty()) << temp.size() << " temporary files after a clean stop, e.g. "
                            << temp[0];
  int jobs_in_db = 0;
  ASSERT_NO_FATAL_FAILURE(CheckDatabase(data_dir_, &jobs_in_db));

  absl::MutexLock lock(&mu_);
  int succeeded = 0, failed = 0, cancelled = 0, interrupted_jobs = 0, interrupted_runs = 0;
  for (const auto& [request_id, entry] : jobs_known_) {
    succeeded += entry.terminal == v1::Job::SUCCEEDED;
    failed += entry.terminal == v1::Job::FAILED;
    cancelled += entry.terminal == v1::Job::CANCELLED;
  }
  for (const auto& [id, runs] : interrupted_runs_) {
    interrupted_jobs += runs > 0;
    interrupted_runs += runs;
  }
  std::printf(
      "[fault] seed %llu: %d kills, %d starts; %zu fit requests (%d SubmitFits retried after a "
      "kill, %d repeated, %d refused), %d jobs in the end (%d succeeded, %d failed, %d cancelled; "
      "%d "
      "interrupted while running, %d runs restarted); %zu model versions seen; %d uploads "
      "acknowledged, %d abandoned; %d predictions, %d cancels, %d deletes acknowledged; %d watch "
      "streams checked; %d temporary and %d unreferenced files left by kills, all removed; "
      "%.1f s\n",
      static_cast<unsigned long long>(seed), kills_, server_->starts(), jobs_known_.size(),
      resubmitted_, repeated_, submits_refused_, jobs_in_db, succeeded, failed, cancelled,
      interrupted_jobs, interrupted_runs, models_known_.size(), uploads_ok_, uploads_abandoned_,
      predictions_ok_.load(), cancels_ok_.load(), deletes_ok_.load(), watches_checked_,
      leftovers_total_, orphans_total_, absl::ToDoubleSeconds(absl::Now() - test_start));
}

}  // namespace
}  // namespace drfm
