// The harness of the end-to-end tests that run the real drfm-server binary (crash_test,
// fault_test, disk_fault_test): the server as a child process on a loopback port and a data dir
// of the test's (optionally with a file size limit, without root's permission override, or in a
// mount namespace that holds a small file system), channels that reconnect quickly after a
// kill, and the listings and checks those tests share.
#ifndef DRFM_TESTS_E2E_SERVER_PROCESS_H_
#define DRFM_TESTS_E2E_SERVER_PROCESS_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/hash.h"
#include "tests/e2e/e2e_util.h"

namespace drfm::e2e {

inline constexpr char kServerBinary[] = DRFM_BINARY_DIR "/bin/drfm-server";
inline constexpr char kTempPrefix[] = ".tmp-";  // store.cc: files being written

inline bool IsTerminal(v1::Job::State s) {
  return s == v1::Job::SUCCEEDED || s == v1::Job::FAILED || s == v1::Job::CANCELLED;
}

// A port on 127.0.0.1 that nothing listens on now (the kernel's choice for port 0).
inline int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// A channel to the server that reconnects quickly once it comes back after a kill (gRPC's default
// reconnect backoff grows to minutes), with its own subchannels.
inline std::shared_ptr<grpc::Channel> MakeChannel(int port) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

inline void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

inline absl::Status ToAbsl(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

inline std::string Bytes(const void* data, size_t size) {
  return std::string(static_cast<const char*>(data), size);
}

// Temporary files anywhere under `dir`.
inline std::vector<std::string> TempFiles(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().filename().string().rfind(kTempPrefix, 0) == 0) found.push_back(it->path());
  }
  return found;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// How the server process is started.
struct ServerLaunch {
  int workers = 2;
  int threads_per_fit = 1;
  // How long running fits may finish after SIGTERM.
  double drain_seconds = 5;
  // RLIMIT_FSIZE of the server, with SIGXFSZ ignored: a write beyond it fails with EFBIG, which
  // is how a file system without room behaves to the writer. Raised later with RaiseFileSizeLimit.
  rlim_t file_size_limit = RLIM_INFINITY;
  // Runs the server without the capabilities that let root write where the permissions forbid it
  // (removed from its bounding set, so exec does not give them back): a directory without write
  // permission is then read-only to it, also when the test runs as root.
  bool without_permission_override = false;
  // An open /proc/<pid>/ns/mnt: the server runs in that mount namespace.
  int mount_namespace_fd = -1;
};

// drfm-server as a child process. Not thread-safe: the test's main thread drives it (it also forks
// from there: PR_SET_PDEATHSIG follows the forking thread).
class ServerProcess {
 public:
  ServerProcess(std::string data_dir, std::string log_path)
      : data_dir_(std::move(data_dir)), log_path_(std::move(log_path)) {}
  ~ServerProcess() { Kill(); }

  // Starts drfm-server on 127.0.0.1:`port` and waits until gRPC health reports
  // drfm.v1.JobService SERVING. An error with the log's tail when the process exits first or is
  // not ready within `timeout`.
  absl::Status Start(int port, absl::Duration timeout, const ServerLaunch& launch = {}) {
    const absl::Time started = absl::Now();
    absl::Status spawned = Spawn(port, launch);
    if (!spawned.ok()) return spawned;
    absl::Status ready = WaitReady(port, started + timeout);
    last_start_seconds_ = absl::ToDoubleSeconds(absl::Now() - started);
    return ready;
  }

  // Starts drfm-server and expects it to exit before it is ready (it refuses to start): returns
  // its exit code. FailedPrecondition when it became ready instead (it is killed then),
  // DeadlineExceeded when it neither exits nor becomes ready within `timeout`.
  absl::StatusOr<int> StartExpectingExit(int port, absl::Duration timeout,
                                         const ServerLaunch& launch = {}) {
    const absl::Time deadline = absl::Now() + timeout;
    absl::Status spawned = Spawn(port, launch);
    if (!spawned.ok()) return spawned;
    absl::Status ready = WaitReady(port, deadline);
    if (ready.ok()) {
      Kill();
      return absl::FailedPreconditionError("drfm-server started although it should have refused");
    }
    if (pid_ > 0) {
      Kill();
      return ready;
    }
    if (WIFEXITED(exit_status_)) return WEXITSTATUS(exit_status_);
    return absl::InternalError(absl::StrCat("drfm-server died of signal ", WTERMSIG(exit_status_)));
  }

  // SIGKILL, and reaps the process.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // SIGTERM; the exit code once it exits (SIGKILL and an error after `timeout`).
  absl::StatusOr<int> Terminate(absl::Duration timeout) {
    if (pid_ <= 0) return absl::FailedPreconditionError("not running");
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (absl::Now() > deadline) {
        Kill();
        return absl::DeadlineExceededError("drfm-server did not exit after SIGTERM");
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    pid_ = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return absl::InternalError(absl::StrCat("drfm-server died of signal ", WTERMSIG(status)));
  }

  // Gives the running server room again after ServerLaunch::file_size_limit (prlimit(2) on it).
  absl::Status RaiseFileSizeLimit(rlim_t bytes) {
    if (pid_ <= 0) return absl::FailedPreconditionError("not running");
    rlimit limit{};
    if (prlimit(pid_, RLIMIT_FSIZE, nullptr, &limit) != 0) {
      return absl::ErrnoToStatus(errno, "prlimit: read RLIMIT_FSIZE of drfm-server");
    }
    limit.rlim_cur = bytes;
    if (prlimit(pid_, RLIMIT_FSIZE, &limit, nullptr) != 0) {
      return absl::ErrnoToStatus(errno, "prlimit: set RLIMIT_FSIZE of drfm-server");
    }
    return absl::OkStatus();
  }

  // True while the process runs (reaps it when it has exited).
  bool Running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, &exit_status_, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  pid_t pid() const { return pid_; }
  std::string Log() const { return ReadFile(log_path_); }
  std::string LogTail() const {
    const std::string log = Log();
    return log.size() > 3000 ? log.substr(log.size() - 3000) : log;
  }
  int starts() const { return starts_; }
  double last_start_seconds() const { return last_start_seconds_; }

 private:
  absl::Status Spawn(int port, const ServerLaunch& launch) {
    std::vector<std::string> args = {kServerBinary,
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", port),
                                     "--metrics-listen",
                                     "",
                                     "--data-dir",
                                     data_dir_,
                                     "--workers",
                                     absl::StrCat(launch.workers),
                                     "--threads-per-fit",
                                     absl::StrCat(launch.threads_per_fit),
                                     "--drain-seconds",
                                     absl::StrCat(launch.drain_seconds)};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const char* log = log_path_.c_str();
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    if (pid == 0) {
      // Only async-signal-safe calls until exec: the parent has other threads.
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      if (getppid() != parent) _exit(127);
      const int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) _exit(127);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      // setns(CLONE_NEWNS) needs a file system context (cwd, root) this thread does not share;
      // unshare(CLONE_FS) first, since under ThreadSanitizer the forked child already runs the
      // sanitizer's background thread (CLONE_FS), which makes setns fail with EINVAL.
      if (launch.mount_namespace_fd >= 0 &&
          (unshare(CLONE_FS) != 0 || setns(launch.mount_namespace_fd, CLONE_NEWNS) != 0)) {
        _exit(126);
      }
      if (launch.file_size_limit != RLIM_INFINITY) {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigaction(SIGXFSZ, &ignore, nullptr);
        rlimit limit{};
        getrlimit(RLIMIT_FSIZE, &limit);
        limit.rlim_cur = launch.file_size_limit;
        if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(126);
      }
      if (launch.without_permission_override) {
        for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) {
          // EINVAL: the kernel does not know it; EPERM: not ours to drop, so not ours to use.
          prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
      }
      close_range(3, ~0U, 0);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pid_ = pid;
    ++starts_;
    return absl::OkStatus();
  }

  absl::Status WaitReady(int port, absl::Time deadline) {
    client::ConnectionOptions options;
    options.timeout = absl::Milliseconds(500);
    client::Client health(MakeChannel(port), options);
    absl::Duration backoff = absl::Milliseconds(10);
    for (;;) {
      if (!Running()) {
        return absl::FailedPreconditionError(
            absl::StrCat("drfm-server exited (status ", exit_status_,
                         ") before it was ready; log:\n", LogTail()));
      }
      // wait_for_ready: blocks until the port accepts or the 500 ms deadline passes.
      absl::StatusOr<client::ServingStatus> serving =
          health.CheckHealth("drfm.v1.JobService", true);
      if (serving.ok() && *serving == client::ServingStatus::kServing) return absl::OkStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("drfm-server not ready in time (last health check: ",
                         serving.ok() ? std::string(client::ServingStatusName(*serving))
                                      : serving.status().ToString(),
                         "); log:\n", LogTail()));
      }
      absl::SleepFor(backoff);
      backoff = std::min(2 * backoff, absl::Milliseconds(200));
    }
  }

  const std::string data_dir_;
  const std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
  int starts_ = 0;
  double last_start_seconds_ = 0;
};

// Every event of the job (WatchJob from 0 on a terminal job ends by itself).
inline absl::StatusOr<std::vector<v1::JobEvent>> AllEvents(v1::JobService::Stub* jobs,
                                                           const std::string& job_id) {
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = jobs->WatchJob(&context, request);
  std::vector<v1::JobEvent> events;
  v1::JobEvent event;
  while (reader->Read(&event)) events.push_back(event);
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return ToAbsl(status);
  return events;
}

// The history of a terminal job: sequences 1..N, state changes that follow the lifecycle
// (QUEUED first; RUNNING -> QUEUED only with a restart note; terminal last, exactly once), layer
// reports 1, 2, ... within each run and nothing but a state change outside a run.
inline void ExpectConsistentHistory(const v1::Job& job, const std::vector<v1::JobEvent>& events) {
  SCOPED_TRACE(absl::StrCat("job ", job.id()));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(static_cast<int64_t>(events.size()), job.last_event_sequence());
  v1::Job::State state = v1::Job::STATE_UNSPECIFIED;
  int next_layer = 1;
  for (size_t i = 0; i < events.size(); ++i) {
    const v1::JobEvent& e = events[i];
    ASSERT_EQ(e.sequence(), static_cast<int64_t>(i + 1)) << "gap or repeat at event " << i;
    ASSERT_FALSE(IsTerminal(state)) << "event " << e.sequence() << " after the terminal state";
    if (e.has_state_change()) {
      const v1::JobStateChange& c = e.state_change();
      EXPECT_EQ(c.previous_state(), state) << "event " << e.sequence();
      const bool allowed =
          (state == v1::Job::STATE_UNSPECIFIED && c.state() == v1::Job::QUEUED) ||
          (state == v1::Job::QUEUED && c.state() == v1::Job::RUNNING) ||
          (state == v1::Job::QUEUED && c.state() == v1::Job::CANCELLED) ||
          (state == v1::Job::RUNNING && c.state() == v1::Job::QUEUED && !c.error().empty()) ||
          (state == v1::Job::RUNNING && IsTerminal(c.state()));
      EXPECT_TRUE(allowed) << "event " << e.sequence() << ": " << v1::Job::State_Name(state)
                           << " -> " << v1::Job::State_Name(c.state());
      if (c.state() == v1::Job::RUNNING) next_layer = 1;
      state = c.state();
    } else {
      EXPECT_EQ(state, v1::Job::RUNNING) << "event " << e.sequence() << " outside a run";
      if (e.has_layer_report()) {
        EXPECT_EQ(e.layer_report().layer(), next_layer) << "event " << e.sequence();
        ++next_layer;
      }
    }
  }
  EXPECT_TRUE(IsTerminal(state)) << "the history does not end with a terminal state";
  EXPECT_EQ(state, job.state());
  if (job.state() == v1::Job::SUCCEEDED) {
    EXPECT_EQ(events.back().state_change().model().SerializeAsString(),
              job.model().SerializeAsString());
    EXPECT_EQ(next_layer, job.layers_total() + 1) << "a successful last run reports every layer";
  }
}

// Listings, every page (a failed call fails the test and ends the listing).

inline std::vector<v1::Dataset> ListAllDatasets(v1::DatasetService::Stub* datasets) {
  std::vector<v1::Dataset> all;
  std::string token;
  do {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ListDatasetsRequest request;
    request.set_page_size(100);
    request.set_page_token(token);
    v1::ListDatasetsResponse response;
    const grpc::Status status = datasets->ListDatasets(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) break;
    for (const v1::Dataset& d : response.datasets()) {
      if (!d.builtin()) all.push_back(d);
    }
    token = response.next_page_token();
  } while (!token.empty());
  return all;
}

inline std::vector<v1::Job> ListAllJobs(v1::JobService::Stub* jobs) {
  std::vector<v1::Job> all;
  std::string token;
  do {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ListJobsRequest request;
    request.set_page_size(100);
    request.set_page_token(token);
    v1::ListJobsResponse response;
    const grpc::Status status = jobs->ListJobs(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) break;
    all.insert(all.end(), response.jobs().begin(), response.jobs().end());
    token = response.next_page_token();
  } while (!token.empty());
  return all;
}

inline std::vector<v1::Model> ListAllModels(v1::ModelService::Stub* models) {
  std::vector<v1::Model> all;
  std::string token;
  do {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ListModelsRequest request;
    request.set_page_size(100);
    request.set_page_token(token);
    v1::ListModelsResponse response;
    const grpc::Status status = models->ListModels(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) break;
    all.insert(all.end(), response.models().begin(), response.models().end());
    token = response.next_page_token();
  } while (!token.empty());
  return all;
}

// A stored file is complete: its size and SHA-256 are the listing's.
inline void ExpectCompleteFile(const std::string& path, int64_t size, const std::string& sha256) {
  std::error_code ec;
  ASSERT_TRUE(std::filesystem::exists(path, ec)) << path << " is listed but missing";
  EXPECT_EQ(static_cast<int64_t>(std::filesystem::file_size(path, ec)), size) << path;
  EXPECT_EQ(server::Sha256Hex(ReadFile(path)), sha256) << path;
}

}  // namespace drfm::e2e

#endif  // DRFM_TESTS_E2E_SERVER_PROCESS_H_
