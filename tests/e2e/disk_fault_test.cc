// A data directory that runs out of space or cannot be written, with the real drfm-server binary:
// clear errors, the server stays up, nothing partly written becomes visible, what was stored
// before stays intact, and once the fault is gone everything works again.
//   - Full file system: a 24 MB tmpfs mounted in a private mount namespace that the server is
//     started in (the test reaches its files through /proc/<holder>/root), filled up with a
//     filler file. Needs CAP_SYS_ADMIN (root in most CI containers and VMs, not in an
//     unprivileged container): the test is skipped, saying so, where mount(2) is refused.
//   - Writes that fail: the server's RLIMIT_FSIZE (SIGXFSZ ignored) makes every write beyond it
//     fail with EFBIG, the way a file system without room fails a writer, and prlimit(2) lifts it
//     again. Works everywhere.
//   - Read-only data dir: permissions removed from the data dir, with the server started without
//     root's permission override (CAP_DAC_OVERRIDE dropped from its bounding set), so it binds
//     root too; and, where mounts are allowed, a tmpfs remounted read-only (EROFS). At startup the
//     server refuses to run, saying why (the store is never opened read-only: see
//     SqliteStore::Open), and changes nothing; while it runs, writes fail with UNAVAILABLE.
// After each scenario the server stops cleanly and the database passes integrity_check.
#include <gtest/gtest.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/payload.h"
#include "core/io.h"
#include "server/hash.h"
#include "tests/e2e/server_process.h"

namespace drfm {
namespace {

namespace fs = std::filesystem;
using e2e::IsTerminal;
using e2e::ServerLaunch;
using e2e::ServerProcess;

constexpr int64_t kCols = 32;
constexpr int kClasses = 3;

core::Dataset Synthetic(int64_t rows, int64_t cols, uint64_t seed) {
  return e2e::Synthetic(rows, cols, kClasses, seed);
}

// A child process that holds a private mount namespace with a tmpfs of `bytes` mounted at `dir`.
// The namespace (and the file system) lives as long as the holder or a process started in it.
class TmpfsNamespace {
 public:
  // Unavailable (with the reason) when this process may not create mounts.
  static absl::StatusOr<std::unique_ptr<TmpfsNamespace>> Create(const std::string& dir,
                                                                int64_t bytes) {
    const std::string options = absl::StrCat("size=", bytes, ",mode=0755");
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
    const pid_t pid = fork();
    if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
    if (pid == 0) {
      // Only async-signal-safe calls: the parent has other threads.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int error = 0;
      if (unshare(CLONE_NEWNS) != 0 ||
          mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
        error = errno;
      }
      if (write(report[1], &error, sizeof(error)) != sizeof(error) || error != 0) _exit(1);
      for (;;) pause();
    }
    close(report[1]);
    int error = -1;
    const ssize_t n = read(report[0], &error, sizeof(error));
    close(report[0]);
    std::unique_ptr<TmpfsNamespace> holder(new TmpfsNamespace(pid, dir));
    if (n != sizeof(error) || error != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot mount a tmpfs in a private mount namespace (",
                       n == sizeof(error) ? std::strerror(error) : "the holder died",
                       "): this needs CAP_SYS_ADMIN, e.g. root in a VM or a privileged container"));
    }
    holder->ns_fd_ = open(absl::StrCat("/proc/", pid, "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
    if (holder->ns_fd_ < 0) return absl::ErrnoToStatus(errno, "open the mount namespace");
    return holder;
  }

  ~TmpfsNamespace() {
    if (ns_fd_ >= 0) close(ns_fd_);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  int ns_fd() const { return ns_fd_; }
  // How this process reaches `path` as the namespace sees it.
  std::string Outside(const std::string& path) const {
    return absl::StrCat("/proc/", pid_, "/root", path);
  }

  // Remounts the tmpfs read-only or read-write, from a child that joins the namespace.
  absl::Status Remount(bool read_only) {
    const pid_t pid = fork();
    if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
    if (pid == 0) {
      const unsigned long flags = MS_REMOUNT | MS_NOSUID | MS_NODEV | (read_only ? MS_RDONLY : 0);
      if (setns(ns_fd_, CLONE_NEWNS) != 0) _exit(2);
      _exit(mount("tmpfs", dir_.c_str(), "tmpfs", flags, nullptr) == 0 ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat("remount failed (status ", status, ")"));
    }
    return absl::OkStatus();
  }

 private:
  TmpfsNamespace(pid_t pid, std::string dir) : pid_(pid), dir_(std::move(dir)) {}

  const pid_t pid_;
  const std::string dir_;
  int ns_fd_ = -1;
};

// Every regular file under `dir` (by its path below `dir`) with the SHA-256 of its content. No
// path is resolved: `dir` may be a path through /proc/<pid>/root.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file()) {
      files[it->path().string().substr(dir.size() + 1)] =
          server::Sha256Hex(e2e::ReadFile(it->path()));
    }
  }
  return files;
}

// PRAGMA integrity_check of the database in `data_dir` (of a stopped server), run on a copy in
// `scratch` (SQLite resolves symbolic links, so it cannot open a path through /proc/<pid>/root).
std::string IntegrityCheck(const std::string& data_dir, const std::string& scratch) {
  std::error_code ec;
  fs::remove_all(scratch, ec);
  fs::create_directories(scratch);
  for (const char* file : {"store.db", "store.db-wal"}) {
    if (fs::exists(data_dir + "/" + file)) {
      fs::copy_file(data_dir + "/" + file, scratch + "/" + file, ec);
    }
  }
  sqlite3* db = nullptr;
  std::string result = "cannot open";
  if (sqlite3_open_v2((scratch + "/store.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return result;
}

class DiskFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(e2e::kServerBinary))
        << e2e::kServerBinary << " is missing: build drfm-server";
    dir_ = (fs::path(::testing::TempDir()) /
            absl::StrCat("drfm_disk_fault_", getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    data_dir_ = dir_ + "/data";
    // The test reaches the data dir here; the server may see it under another path (a mount
    // namespace): SetDataDir.
    files_dir_ = data_dir_;
  }

  void TearDown() override {
    server_.reset();
    tmpfs_.reset();
    if (!HasFailure()) {
      std::error_code ec;
      for (fs::recursive_directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
      }
      fs::remove_all(dir_, ec);
    }
  }

  // A server on `data_dir` (as it sees it); the test reads its files at `files_dir`.
  void NewServer(const std::string& data_dir, const std::string& files_dir) {
    server_ = std::make_unique<ServerProcess>(data_dir, dir_ + "/server.log");
    files_dir_ = files_dir;
  }

  // A tmpfs of `bytes` at MountPoint() in a private mount namespace (tmpfs_), and a server whose
  // data dir is on it; the launch options that start the server inside that namespace. The
  // status says why the tmpfs cannot be made here (the test skips).
  absl::StatusOr<ServerLaunch> NewServerOnTmpfs(int64_t bytes) {
    fs::create_directories(MountPoint());
    absl::StatusOr<std::unique_ptr<TmpfsNamespace>> tmpfs =
        TmpfsNamespace::Create(MountPoint(), bytes);
    if (!tmpfs.ok()) return tmpfs.status();
    tmpfs_ = *std::move(tmpfs);
    NewServer(MountPoint() + "/data", tmpfs_->Outside(MountPoint() + "/data"));
    ServerLaunch launch;
    launch.mount_namespace_fd = tmpfs_->ns_fd();
    return launch;
  }
  std::string MountPoint() const { return dir_ + "/fs"; }

  void Start(const ServerLaunch& launch = {}) {
    if (server_ == nullptr) NewServer(data_dir_, data_dir_);
    absl::Status started;
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = e2e::PickFreePort();
      started = server_->Start(port_, absl::Seconds(30), launch);
      if (started.ok()) break;
    }
    ASSERT_TRUE(started.ok()) << started;
    client::ConnectionOptions options;
    options.timeout = absl::Seconds(20);
    client_ = std::make_unique<client::Client>(e2e::MakeChannel(port_), options);
  }

  // SIGTERM, exit 0, no temporary file left, database intact.
  void StopCleanly() {
    absl::StatusOr<int> code = server_->Terminate(absl::Seconds(30));
    ASSERT_TRUE(code.ok()) << code.status() << "\n" << server_->LogTail();
    EXPECT_EQ(*code, 0) << server_->LogTail();
    EXPECT_TRUE(e2e::TempFiles(files_dir_).empty());
    EXPECT_EQ(IntegrityCheck(files_dir_, dir_ + "/db-copy"), "ok");
  }

  absl::StatusOr<v1::Dataset> Upload(const std::string& name, const core::Dataset& data) {
    client::DatasetUpload upload(name, data, 64 << 10);
    return client_->UploadDataset(upload);
  }

  // A fit on `train`, stored as model `model`; the request's id is `request_id`.
  absl::StatusOr<v1::Job> SubmitFit(const std::string& request_id, const std::string& train,
                                    const std::string& model, int width, int layers = 1) {
    v1::SubmitFitRequest request;
    request.set_request_id(request_id);
    request.set_model_name(model);
    request.mutable_train()->set_dataset(train);
    request.mutable_config()->set_layers(layers);
    request.mutable_config()->set_width(width);
    request.mutable_config()->set_seed(7);
    return client_->SubmitFit(request);
  }

  // The job once terminal (or as it is after `timeout`).
  v1::Job AwaitJob(const std::string& id, absl::Duration timeout = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Job job;
    do {
      absl::StatusOr<v1::Job> got = client_->GetJob(id);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok()) break;
      job = *got;
      if (IsTerminal(job.state())) break;
      absl::SleepFor(absl::Milliseconds(50));
    } while (absl::Now() < deadline);
    return job;
  }

  absl::Status Predict(const std::string& model, int64_t cols) {
    const core::Dataset probe = Synthetic(4, cols, 99);
    v1::PredictRequest request;
    request.set_model(model);
    request.set_rows(4);
    request.set_cols(cols);
    request.set_features(e2e::Bytes(probe.features.data(), probe.features.size() * 4));
    return client_->Predict(request).status();
  }

  void ExpectServing() {
    absl::StatusOr<client::ServingStatus> health =
        client_->CheckHealth("drfm.v1.JobService", false);
    ASSERT_TRUE(health.ok()) << health.status() << "\n" << server_->LogTail();
    EXPECT_EQ(*health, client::ServingStatus::kServing);
  }

  // Names of the uploaded datasets listed, and every listed dataset and model file complete.
  std::vector<std::string> CheckListings() {
    std::vector<std::string> names;
    absl::StatusOr<v1::ListDatasetsResponse> datasets =
        client_->ListDatasets(v1::ListDatasetsRequest());
    EXPECT_TRUE(datasets.ok()) << datasets.status();
    if (!datasets.ok()) return names;
    for (const v1::Dataset& d : datasets->datasets()) {
      if (d.builtin()) continue;
      names.push_back(d.name());
      e2e::ExpectCompleteFile(absl::StrCat(files_dir_, "/datasets/", d.sha256(), ".bin"),
                              d.size_bytes(), d.sha256());
    }
    absl::StatusOr<v1::ListModelsResponse> models = client_->ListModels(v1::ListModelsRequest());
    EXPECT_TRUE(models.ok()) << models.status();
    if (!models.ok()) return names;
    for (const v1::Model& m : models->models()) {
      e2e::ExpectCompleteFile(
          absl::StrCat(files_dir_, "/models/", m.name(), "/", m.version(), ".drfm"), m.size_bytes(),
          m.sha256());
    }
    return names;
  }

  // What is stored at the start of every scenario: a dataset and a model fitted on it.
  void StoreSomething() {
    ASSERT_TRUE(Upload("before", Synthetic(300, kCols, 1)).ok());
    absl::StatusOr<v1::Job> job = SubmitFit("fit-before", "before", "model-before", 64);
    ASSERT_TRUE(job.ok()) << job.status();
    const v1::Job done = AwaitJob(job->id());
    ASSERT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
    ASSERT_TRUE(Predict("model-before", kCols).ok());
  }

  // Fills the file system that holds `path` to the last byte with the file `path`.
  void FillUp(const std::string& path) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const std::string block(64 << 10, 'f');
    for (;;) {
      if (write(fd, block.data(), block.size()) <= 0) {
        EXPECT_EQ(errno, ENOSPC) << std::strerror(errno);
        break;
      }
    }
    // The last partial block: write(2) stops short of ENOSPC when fewer bytes fit.
    while (write(fd, block.data(), 1) == 1) {
    }
    close(fd);
  }

  // What StoreSomething stored is intact.
  void ExpectStoredIntact() {
    absl::StatusOr<v1::Dataset> before = client_->GetDataset("before");
    EXPECT_TRUE(before.ok()) << before.status();
    absl::Status predicted = Predict("model-before", kCols);
    EXPECT_TRUE(predicted.ok()) << predicted;
  }

  std::string dir_, data_dir_, files_dir_;
  int port_ = 0;
  std::unique_ptr<TmpfsNamespace> tmpfs_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
};

// Shows what a client was told (the point of these tests is that it reads well).
void Show(const std::string& what, const std::string& message) {
  std::printf("[disk] %s: %s\n", what.c_str(), message.c_str());
  std::fflush(stdout);
}

std::string LastLine(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t at = text.rfind('\n');
  return at == std::string::npos ? text : text.substr(at + 1);
}

// Checks a refused write: RESOURCE_EXHAUSTED saying the data directory is out of space.
void ExpectOutOfSpace(const absl::Status& status) {
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "out of space")) << status;
}

TEST_F(DiskFaultTest, FullFileSystemRefusesWritesClearlyAndWorksAgainOnceSpaceIsFreed) {
  absl::StatusOr<ServerLaunch> on_tmpfs = NewServerOnTmpfs(24 << 20);
  if (!on_tmpfs.ok()) GTEST_SKIP() << on_tmpfs.status().message();
  const ServerLaunch launch = *on_tmpfs;
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ASSERT_NO_FATAL_FAILURE(StoreSomething());

  const std::string filler = tmpfs_->Outside(MountPoint() + "/filler");
  ASSERT_NO_FATAL_FAILURE(FillUp(filler));
  const std::map<std::string, std::string> files_before = Snapshot(files_dir_);

  // An upload that cannot be written: RESOURCE_EXHAUSTED, nothing listed, nothing left over.
  const core::Dataset big = Synthetic(4000, kCols, 2);  // 0.5 MB
  absl::StatusOr<v1::Dataset> refused = Upload("big", big);
  Show("upload to a full file system", refused.status().ToString());
  ExpectOutOfSpace(refused.status());
  ExpectServing();
  EXPECT_EQ(client_->GetDataset("big").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e2e::TempFiles(files_dir_).empty());
  ExpectStoredIntact();

  // A fit: refused at submission if its job cannot be recorded, else it runs and fails, saying
  // why, when its model cannot be stored; never stuck, never half-stored.
  absl::StatusOr<v1::Job> fit = SubmitFit("fit-full", "before", "model-full", 256);
  if (fit.ok()) {
    const v1::Job done = AwaitJob(fit->id());
    Show("fit on a full file system",
         absl::StrCat(v1::Job::State_Name(done.state()), ": ", done.error()));
    EXPECT_EQ(done.state(), v1::Job::FAILED) << v1::Job::State_Name(done.state());
    EXPECT_TRUE(absl::StrContains(done.error(), "out of space")) << done.error();
    EXPECT_EQ(client_->GetModel("model-full", std::nullopt).status().code(),
              absl::StatusCode::kNotFound);
  } else {
    Show("fit submitted to a full file system", fit.status().ToString());
    ExpectOutOfSpace(fit.status());
  }
  ExpectServing();
  EXPECT_TRUE(e2e::TempFiles(files_dir_).empty());
  std::map<std::string, std::string> files_now = Snapshot(files_dir_);
  for (const auto& [file, sha] : files_before) {
    if (absl::StartsWith(file, "datasets/") || absl::StartsWith(file, "models/")) {
      EXPECT_EQ(files_now[file], sha) << file << " changed while the disk was full";
    }
  }
  EXPECT_EQ(CheckListings(), std::vector<std::string>{"before"});

  // Space again: the same writes succeed.
  ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
  absl::StatusOr<v1::Dataset> stored = Upload("big", big);
  ASSERT_TRUE(stored.ok()) << stored.status();
  absl::StatusOr<v1::Job> again = SubmitFit("fit-after", "big", "model-after", 256);
  ASSERT_TRUE(again.ok()) << again.status();
  const v1::Job done = AwaitJob(again->id());
  EXPECT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  EXPECT_TRUE(Predict("model-after", kCols).ok());
  ExpectStoredIntact();

  // The file system fills up under a running fit. Once there is room again the job ends (FAILED,
  // saying why) instead of staying RUNNING with nobody running it.
  absl::StatusOr<v1::Job> running =
      SubmitFit("fit-filled", absl::StrCat("synthetic:rows=4000,cols=", kCols, ",classes=3"),
                "model-filled", 512, /*layers=*/3);
  ASSERT_TRUE(running.ok()) << running.status();
  {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::StatusOr<v1::Job> job;
    do {
      job = client_->GetJob(running->id());
    } while (job.ok() && job->state() == v1::Job::QUEUED && absl::Now() < deadline);
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), v1::Job::RUNNING);
  }
  ASSERT_NO_FATAL_FAILURE(FillUp(filler));
  {
    // Until the job ends or the server reports that it cannot record it.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline && !IsTerminal(client_->GetJob(running->id())->state()) &&
           !absl::StrContains(server_->Log(), "drfm job manager")) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
  const v1::Job filled = AwaitJob(running->id(), absl::Seconds(60));
  Show("fit running while the file system filled up",
       absl::StrCat(v1::Job::State_Name(filled.state()), ": ", filled.error()));
  EXPECT_TRUE(IsTerminal(filled.state())) << v1::Job::State_Name(filled.state()) << "\n"
                                          << server_->LogTail();
  if (filled.state() == v1::Job::FAILED) {
    EXPECT_TRUE(absl::StrContains(filled.error(), "out of space")) << filled.error();
  }
  ExpectServing();
  ExpectStoredIntact();
  ASSERT_NO_FATAL_FAILURE(StopCleanly());

  // And after a restart everything listed is complete.
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ExpectStoredIntact();
  std::vector<std::string> names = CheckListings();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"before", "big"}));
  ASSERT_NO_FATAL_FAILURE(StopCleanly());
}

TEST_F(DiskFaultTest, WritesBeyondTheFileSizeLimitFailCleanlyAndWorkAgainOnceItIsRaised) {
  ServerLaunch launch;
  launch.file_size_limit = 2 << 20;
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ASSERT_NO_FATAL_FAILURE(StoreSomething());
  const std::map<std::string, std::string> files_before = Snapshot(files_dir_);

  const core::Dataset huge = Synthetic(20000, kCols, 3);  // 2.6 MB: over the limit
  absl::StatusOr<v1::Dataset> refused = Upload("huge", huge);
  Show("upload over the file size limit", refused.status().ToString());
  ExpectOutOfSpace(refused.status());
  ExpectServing();
  EXPECT_EQ(client_->GetDataset("huge").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e2e::TempFiles(files_dir_).empty());

  // A fit whose model (its training features after the first layer, 3000 x 256 float32 = 3 MB)
  // cannot be stored fails with the reason, and stores nothing.
  absl::StatusOr<v1::Job> fit = SubmitFit(
      "fit-limited", absl::StrCat("synthetic:rows=3000,cols=", kCols, ",classes=3,seed=5"),
      "model-limited", 256);
  ASSERT_TRUE(fit.ok()) << fit.status();
  const v1::Job failed = AwaitJob(fit->id());
  Show("fit over the file size limit",
       absl::StrCat(v1::Job::State_Name(failed.state()), ": ", failed.error()));
  EXPECT_EQ(failed.state(), v1::Job::FAILED) << v1::Job::State_Name(failed.state());
  EXPECT_TRUE(absl::StrContains(failed.error(), "out of space")) << failed.error();
  EXPECT_EQ(client_->GetModel("model-limited", std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
  ExpectServing();
  ExpectStoredIntact();
  EXPECT_TRUE(e2e::TempFiles(files_dir_).empty());
  EXPECT_EQ(CheckListings(), std::vector<std::string>{"before"});
  for (const auto& [file, sha] : Snapshot(files_dir_)) {
    if (absl::StartsWith(file, "datasets/") || absl::StartsWith(file, "models/")) {
      EXPECT_EQ(files_before.count(file), 1u) << file << " appeared";
    }
  }

  // Room again (the limit lifted in the running server): the same writes succeed.
  ASSERT_TRUE(server_->RaiseFileSizeLimit(RLIM_INFINITY).ok());
  absl::StatusOr<v1::Dataset> stored = Upload("huge", huge);
  ASSERT_TRUE(stored.ok()) << stored.status();
  absl::StatusOr<v1::Job> again = SubmitFit(
      "fit-unlimited", absl::StrCat("synthetic:rows=3000,cols=", kCols, ",classes=3,seed=5"),
      "model-limited", 256);
  ASSERT_TRUE(again.ok()) << again.status();
  const v1::Job done = AwaitJob(again->id());
  EXPECT_EQ(done.state(), v1::Job::SUCCEEDED) << done.error();
  EXPECT_TRUE(Predict("model-limited", kCols).ok());
  ASSERT_NO_FATAL_FAILURE(StopCleanly());
}

// Removes (or gives back) the owner's write permission on everything under `dir`.
void SetWritable(const std::string& dir, bool writable) {
  const fs::perm_options how = writable ? fs::perm_options::add : fs::perm_options::remove;
  const fs::perms write = fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write;
  std::error_code ec;
  fs::permissions(dir, writable ? fs::perms::owner_write : write, how, ec);
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    fs::permissions(it->path(), writable ? fs::perms::owner_write : write, how, ec);
  }
}

// The effective capabilities of process `pid` (a mask of 1 << CAP_*), from /proc.
uint64_t EffectiveCapabilities(pid_t pid) {
  std::istringstream status(e2e::ReadFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "CapEff:")) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

TEST_F(DiskFaultTest, ReadOnlyDataDirIsRefusedAtStartupAndWritesFailWhileRunning) {
  ServerLaunch launch;
  launch.without_permission_override = true;
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  if (EffectiveCapabilities(server_->pid()) & (uint64_t{1} << CAP_DAC_OVERRIDE)) {
    GTEST_SKIP() << "drfm-server could not be started without CAP_DAC_OVERRIDE (dropping it from "
                    "the bounding set needs CAP_SETPCAP), so permissions cannot make its data "
                    "directory read-only to it";
  }
  ASSERT_NO_FATAL_FAILURE(StoreSomething());

  // While it runs: the datasets directory becomes read-only. Uploads fail with UNAVAILABLE
  // saying the data directory cannot be written; the rest keeps working.
  fs::permissions(files_dir_ + "/datasets",
                  fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  absl::StatusOr<v1::Dataset> refused = Upload("later", Synthetic(300, kCols, 4));
  Show("upload to a read-only datasets directory", refused.status().ToString());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "cannot write its data directory"))
      << refused.status();
  ExpectServing();
  ExpectStoredIntact();
  fs::permissions(files_dir_ + "/datasets", fs::perms::owner_write, fs::perm_options::add);
  absl::StatusOr<v1::Dataset> stored = Upload("later", Synthetic(300, kCols, 4));
  EXPECT_TRUE(stored.ok()) << stored.status();
  ASSERT_NO_FATAL_FAILURE(StopCleanly());

  // At startup: the whole data dir read-only. The server refuses to start, says why and what to
  // do, and changes nothing.
  const std::map<std::string, std::string> files = Snapshot(files_dir_);
  SetWritable(files_dir_, false);
  absl::StatusOr<int> exit_code = server_->StartExpectingExit(port_, absl::Seconds(30), launch);
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_NE(*exit_code, 0);
  const std::string log = server_->LogTail();
  Show(absl::StrCat("start on a read-only data dir: exit ", *exit_code), LastLine(log));
  EXPECT_TRUE(absl::StrContains(log, "is not writable")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--data-dir")) << log;
  SetWritable(files_dir_, true);
  EXPECT_EQ(Snapshot(files_dir_), files);

  // Writable again: everything is there.
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ExpectStoredIntact();
  EXPECT_TRUE(client_->GetDataset("later").ok());
  ASSERT_NO_FATAL_FAILURE(StopCleanly());
}

TEST_F(DiskFaultTest, ReadOnlyMountIsRefusedAtStartup) {
  absl::StatusOr<ServerLaunch> on_tmpfs = NewServerOnTmpfs(16 << 20);
  if (!on_tmpfs.ok()) GTEST_SKIP() << on_tmpfs.status().message();
  const ServerLaunch launch = *on_tmpfs;
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ASSERT_NO_FATAL_FAILURE(StoreSomething());
  ASSERT_NO_FATAL_FAILURE(StopCleanly());

  const std::map<std::string, std::string> files = Snapshot(files_dir_);
  ASSERT_TRUE(tmpfs_->Remount(/*read_only=*/true).ok());
  absl::StatusOr<int> exit_code = server_->StartExpectingExit(port_, absl::Seconds(30), launch);
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_NE(*exit_code, 0);
  const std::string log = server_->LogTail();
  Show(absl::StrCat("start on a read-only mount: exit ", *exit_code), LastLine(log));
  EXPECT_TRUE(absl::StrContains(log, "Read-only file system")) << log;
  EXPECT_TRUE(absl::StrContains(log, "is not writable")) << log;
  EXPECT_EQ(Snapshot(files_dir_), files);

  ASSERT_TRUE(tmpfs_->Remount(/*read_only=*/false).ok());
  ASSERT_NO_FATAL_FAILURE(Start(launch));
  ExpectStoredIntact();
  ASSERT_NO_FATAL_FAILURE(StopCleanly());
}

}  // namespace
}  // namespace drfm
