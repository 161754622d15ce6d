// drfm-load: a bounded load test of drfm-server over loopback (not a unit test; CTest runs a short
// one). It starts its own drfm-server on a free 127.0.0.1 port with a fresh temporary data dir (or
// targets --server on loopback), fits one small model, and then for --warmup + --duration seconds
// runs at once
//   - watchers:   WatchJob streams on the newest job (queued or running) or on an older, finished
//                 one (history replay), each followed to its terminal state;
//   - submitters: small synthetic SubmitFit jobs (a few ms of work each, so the queue moves), with
//                 a short pause after RESOURCE_EXHAUSTED (a full queue: expected backpressure);
//   - predictors: Predict on the stored model, single rows and batches in turn, checking that every
//                 response has one label per row.
// It reports per-RPC throughput, p50 / p99 / max latency and the count of each status code over
// the measured window (after the warm-up), and the server's resident memory (VmRSS of
// /proc/<pid>/status) at start, after the warm-up, in the middle and at the end. Checks (exit 1
// when one fails): no unexpected error (anything but OK, and RESOURCE_EXHAUSTED on SubmitFit), no
// job FAILED, every kind of call made progress, end RSS <= warm RSS x --max-rss-growth +
// --rss-slack-mb, and a spawned server exits 0 on SIGTERM. Exit 2: bad flags or a failed setup.
//
// Loopback only by default: a load test aimed at someone else's server by mistake is an attack.
// The machine may be shared and busy: the figures are indicative of this machine at this time.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/stats.h"
#include "client/client.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/models.pb.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using drfm::client::Client;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct Flags {
  std::string server;         // empty: spawn one
  std::string server_binary;  // empty: drfm-server next to this executable
  int server_pid = 0;         // with --server: the process whose RSS to sample
  bool allow_remote = false;
  std::string token_file;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  double duration = 60;
  double warmup = 10;
  int watchers = 16;
  int submitters = 2;
  int predictors = 4;
  int64_t batch_rows = 256;
  int server_workers = 1;
  int queue_bound = 16;
  std::string fit_dataset = "synthetic:rows=120,cols=16,classes=3,seed=7";
  double max_rss_growth = 1.5;
  double rss_slack_mb = 64;
  std::string output = "table";
  bool keep_data_dir = false;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

using drfm::bench::Quantile;

// What happened to one kind of call during the measured window. One per thread and kind, merged
// at the end, so recording takes no lock.
struct OpStats {
  std::vector<double> latencies_ms;
  std::map<std::string, int64_t> codes;  // canonical code name -> calls
  int64_t backpressure = 0;              // RESOURCE_EXHAUSTED where it is expected
  int64_t unexpected = 0;
  int64_t items = 0;                 // rows predicted, events streamed
  std::vector<std::string> samples;  // first unexpected errors, for the report

  void Record(const absl::Status& status, double latency_ms, bool backpressure_ok) {
    latencies_ms.push_back(latency_ms);
    ++codes[absl::StatusCodeToString(status.code())];
    if (status.ok()) return;
    if (backpressure_ok && status.code() == absl::StatusCode::kResourceExhausted) {
      ++backpressure;
      return;
    }
    ++unexpected;
    if (samples.size() < 5) samples.push_back(status.ToString());
  }
  void Merge(const OpStats& other) {
    latencies_ms.insert(latencies_ms.end(), other.latencies_ms.begin(), other.latencies_ms.end());
    for (const auto& [code, n] : other.codes) codes[code] += n;
    backpressure += other.backpressure;
    unexpected += other.unexpected;
    items += other.items;
    for (const std::string& s : other.samples) {
      if (samples.size() < 5) samples.push_back(s);
    }
  }
};

// The kinds of call reported, in report order.
enum Op { kSubmitFit, kPredictOne, kPredictBatch, kWatchJob, kNumOps };

// Ids of submitted jobs, for the watchers. Thread-safe.
class JobIds {
 public:
  void Add(std::string id) {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.push_back(std::move(id));
    if (ids_.size() > 4096) ids_.pop_front();
  }
  // The newest id (usually queued or running) or, half of the time, a random older one (usually
  // finished: the watch replays its history). Empty when there is none.
  std::string Pick(std::mt19937_64& rng) {
    std::lock_guard<std::mutex> lock(mu_);
    if (ids_.empty()) return "";
    if (rng() % 2 == 0) return ids_.back();
    return ids_[rng() % ids_.size()];
  }

 private:
  std::mutex mu_;
  std::deque<std::string> ids_;
};

// The resident set size of process `pid` in bytes (VmRSS), or nullopt when it cannot be read.
std::optional<int64_t> ReadRssBytes(int pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    std::istringstream fields(line.substr(6));
    int64_t kb = 0;
    if (fields >> kb) return kb * 1024;
  }
  return std::nullopt;
}

// True when `target` (HOST:PORT, [V6]:PORT, unix:PATH) names this machine: localhost, 127/8, ::1.
bool IsLoopbackTarget(const std::string& target) {
  if (absl::StartsWith(target, "unix:") || absl::StartsWith(target, "unix-abstract:")) return true;
  std::string host = target;
  if (absl::StartsWith(host, "ipv4:") || absl::StartsWith(host, "ipv6:")) host = host.substr(5);
  if (absl::StartsWith(host, "dns:///")) host = host.substr(7);
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string::npos) return false;
    host = host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

// A drfm-server child process on 127.0.0.1:<free port> with a fresh data dir under a temporary
// directory, its output in <dir>/server.log. Stopped with SIGTERM by Stop() or the destructor.
class SpawnedServer {
 public:
  static absl::StatusOr<std::unique_ptr<SpawnedServer>> Start(const Flags& flags) {
    std::string binary = flags.server_binary;
    if (binary.empty()) {
      std::error_code ec;
      binary = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "drfm-server").string();
    }
    if (::access(binary.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat("no drfm-server executable at ", binary,
                                              " (build it, or pass --server-binary PATH)"));
    }
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/drfm-load-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
    }
    auto server = std::unique_ptr<SpawnedServer>(new SpawnedServer(pattern, flags.keep_data_dir));
    server->log_ = absl::StrCat(server->dir_, "/server.log");
    std::vector<std::string> args = {binary,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--metrics-listen",
                                     "",  // off
                                     "--data-dir",
                                     absl::StrCat(server->dir_, "/data"),
                                     "--workers",
                                     absl::StrCat(flags.server_workers),
                                     "--threads-per-fit",
                                     "1",
                                     "--queue-bound",
                                     absl::StrCat(flags.queue_bound),
                                     "--drain-seconds",
                                     "10"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, server->log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc =
        posix_spawn(&server->pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      server->pid_ = 0;
      return absl::InternalError(absl::StrCat("cannot start ", binary, ": ", std::strerror(rc)));
    }
    // The server prints "... listening on port N ..." once it serves.
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      std::ifstream in(server->log_);
      std::stringstream text;
      text << in.rdbuf();
      const std::string log = text.str();
      const size_t at = log.find("listening on port ");
      if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
        server->port_ = std::atoi(log.c_str() + at + std::strlen("listening on port "));
        if (server->port_ > 0) return server;
      }
      int status = 0;
      if (::waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
        server->pid_ = 0;
        return absl::InternalError(absl::StrCat("drfm-server exited during startup: ", log));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return absl::DeadlineExceededError("drfm-server did not start listening within 60 s");
  }

  ~SpawnedServer() {
    Stop();
    if (!keep_) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    }
  }

  // SIGTERM, then up to 30 s for a clean exit (SIGKILL after). The exit status, or -1 when it
  // had to be killed or was not running.
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = 0;
        return exit_status_ = -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = 0;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return exit_status_;
  }

  // Leaves the temporary directory (data dir and server.log) in place for a post-mortem.
  void Keep() { keep_ = true; }

  int pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& log() const { return log_; }

 private:
  SpawnedServer(std::string dir, bool keep) : dir_(std::move(dir)), keep_(keep) {}

  std::string dir_;
  bool keep_;
  std::string log_;
  pid_t pid_ = 0;
  int port_ = 0;
  int exit_status_ = -1;
};

// A small fit that finishes in a few milliseconds: 1 layer of width 16 on 120 x 16 rows.
drfm::v1::SubmitFitRequest TinyFit(const Flags& flags) {
  drfm::v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset(flags.fit_dataset);
  request.mutable_test()->set_dataset(flags.fit_dataset);
  request.mutable_test()->set_limit(40);
  request.mutable_config()->set_layers(1);
  request.mutable_config()->set_width(16);
  request.mutable_config()->set_seed(1);
  request.set_model_name("load-fit");
  return request;
}

// Features for Predict: `rows` x `cols` standard normal float32 values.
std::string RandomFeatures(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::string bytes(static_cast<size_t>(rows * cols) * 4, '\0');
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = normal(rng);
    std::memcpy(bytes.data() + 4 * i, &v, 4);
  }
  return bytes;
}

struct RssSamples {
  std::optional<int64_t> start, warm, middle, end, peak;
};

std::string FormatMb(const std::optional<int64_t>& bytes) {
  return bytes ? absl::StrFormat("%.1f MB", static_cast<double>(*bytes) / 1e6) : "n/a";
}

Json MbJson(const std::optional<int64_t>& bytes) {
  return bytes ? Json(static_cast<double>(*bytes) / 1e6) : Json(nullptr);
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "drfm-load: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{
      "drfm-load: bounded load on a drfm-server over loopback (watchers, submitters, "
      "predictors); reports throughput, latency, status codes and server memory"};
  app.add_option("--server", flags.server,
                 "target this running server (HOST:PORT, loopback unless --allow-remote) instead "
                 "of starting one");
  app.add_option("--server-pid", flags.server_pid,
                 "with --server: the server's process id, to sample its memory (else not checked)");
  app.add_flag("--allow-remote", flags.allow_remote,
               "allow a --server that is not on this machine (be sure it is yours)");
  app.add_option("--server-binary", flags.server_binary,
                 "drfm-server to start (default: the one next to drfm-load)");
  app.add_option("--token-file", flags.token_file, "bearer token file for --server");
  app.add_option("--tls-ca", flags.tls_ca, "PEM CA of --server's certificate (enables TLS)");
  app.add_option("--tls-cert", flags.tls_cert, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", flags.tls_key, "PEM key of --tls-cert");
  app.add_option("--tls-server-name", flags.tls_server_name, "name in --server's certificate");
  app.add_option("--duration", flags.duration, "measured seconds (after the warm-up)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", flags.warmup, "seconds of load before measuring")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--watchers", flags.watchers, "WatchJob threads")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--submitters", flags.submitters, "SubmitFit threads")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--predictors", flags.predictors, "Predict threads")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--batch-rows", flags.batch_rows, "rows of a batched Predict")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--server-workers", flags.server_workers, "started server: --workers")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--queue-bound", flags.queue_bound, "started server: --queue-bound")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--fit-dataset", flags.fit_dataset, "training data of the submitted fits")
      ->capture_default_str();
  app.add_option("--max-rss-growth", flags.max_rss_growth,
                 "check: end RSS <= warm RSS x this + --rss-slack-mb")
      ->check(CLI::Range(1.0, 100.0))
      ->capture_default_str();
  app.add_option("--rss-slack-mb", flags.rss_slack_mb, "see --max-rss-growth")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("-o,--output", flags.output, "table|json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_flag("--keep-data-dir", flags.keep_data_dir,
               "keep the started server's temporary directory (data dir and server.log)");
  CLI11_PARSE(app, argc, argv);
  if (flags.watchers + flags.submitters + flags.predictors == 0) {
    return Usage("nothing to do: give --watchers, --submitters or --predictors");
  }
  if (!flags.server.empty() && !flags.allow_remote && !IsLoopbackTarget(flags.server)) {
    return Usage(absl::StrCat("--server ", flags.server,
                              " is not a loopback address (localhost, 127.0.0.0/8, ::1); pass "
                              "--allow-remote if you really mean to load that server"));
  }
  if (flags.server.empty() &&
      (!flags.token_file.empty() || !flags.tls_ca.empty() || flags.server_pid != 0)) {
    return Usage("--token-file, --tls-* and --server-pid go with --server");
  }
  std::string command;
  for (int i = 0; i < argc; ++i) absl::StrAppend(&command, i ? " " : "", argv[i]);

  // The server.
  std::unique_ptr<SpawnedServer> spawned;
  drfm::client::ConnectionOptions connection;
  int server_pid = flags.server_pid;
  if (flags.server.empty()) {
    absl::StatusOr<std::unique_ptr<SpawnedServer>> started = SpawnedServer::Start(flags);
    if (!started.ok()) return Usage(started.status().ToString());
    spawned = *std::move(started);
    server_pid = spawned->pid();
    connection.server = absl::StrCat("127.0.0.1:", spawned->port());
  } else {
    connection.server = flags.server;
    connection.tls_ca_file = flags.tls_ca;
    connection.tls_cert_file = flags.tls_cert;
    connection.tls_key_file = flags.tls_key;
    connection.tls_server_name = flags.tls_server_name;
    if (!flags.token_file.empty()) {
      absl::StatusOr<std::string> token = drfm::client::ReadTokenFile(flags.token_file);
      if (!token.ok()) return Usage(token.status().ToString());
      connection.token = *token;
    }
  }
  // A failed setup keeps the started server's directory (its log says why).
  auto setup_failed = [&spawned](const std::string& message) {
    if (!spawned) return Usage(message);
    spawned->Keep();
    return Usage(absl::StrCat(message, " (server log: ", spawned->log(), ")"));
  };
  absl::StatusOr<std::unique_ptr<Client>> connected = Client::Connect(connection);
  if (!connected.ok()) return setup_failed(connected.status().ToString());
  Client& client = **connected;
  absl::StatusOr<drfm::client::ServingStatus> health =
      client.CheckHealth("drfm.v1.JobService", /*wait_for_ready=*/true);
  if (!health.ok() || *health != drfm::client::ServingStatus::kServing) {
    return setup_failed(absl::StrCat("the server at ", connection.server, " is not serving: ",
                                     health.ok() ? "NOT_SERVING" : health.status().ToString()));
  }

  // Setup: one model to predict with (the first fit), which is also the first job to watch.
  JobIds job_ids;
  drfm::v1::SubmitFitRequest setup = TinyFit(flags);
  setup.set_model_name("load-model");
  absl::StatusOr<drfm::v1::Job> setup_job = client.SubmitFit(setup);
  if (!setup_job.ok())
    return setup_failed(absl::StrCat("setup fit: ", setup_job.status().ToString()));
  absl::StatusOr<drfm::client::WatchResult> setup_watch =
      client.WatchJob(setup_job->id(), {}, [](const drfm::v1::JobEvent&) {});
  if (!setup_watch.ok() || setup_watch->final_state != drfm::v1::Job::SUCCEEDED) {
    return setup_failed(absl::StrCat("setup fit ", setup_job->id(), " did not succeed: ",
                                     setup_watch.ok()
                                         ? drfm::v1::Job::State_Name(setup_watch->final_state)
                                         : setup_watch.status().ToString()));
  }
  job_ids.Add(setup_job->id());
  absl::StatusOr<drfm::v1::Model> model = client.GetModel("load-model", std::nullopt);
  if (!model.ok()) return setup_failed(absl::StrCat("setup model: ", model.status().ToString()));
  const int64_t cols = model->input_dim();

  // The load. phase: 0 warm-up, 1 measuring, 2 stopping. Calls that start while measuring are
  // recorded (also when they end after the window closes).
  std::atomic<int> phase{0};
  const int threads = flags.watchers + flags.submitters + flags.predictors;
  std::vector<std::array<OpStats, kNumOps>> stats(static_cast<size_t>(threads));
  std::vector<std::unique_ptr<drfm::client::Canceller>> cancellers;
  std::vector<std::thread> workers;
  std::atomic<int64_t> failed_jobs{0};
  std::atomic<int64_t> request_counter{0};
  const std::string run_id = absl::StrCat(::getpid(), "-", absl::ToUnixMillis(absl::Now()));
  int index = 0;
  for (int w = 0; w < flags.watchers; ++w, ++index) {
    cancellers.push_back(std::make_unique<drfm::client::Canceller>());
    drfm::client::Canceller* canceller = cancellers.back().get();
    OpStats* watch = &stats[static_cast<size_t>(index)][kWatchJob];
    workers.emplace_back([&, canceller, watch, w] {
      std::mt19937_64 rng(1000 + static_cast<uint64_t>(w));
      while (phase.load() < 2) {
        const std::string id = job_ids.Pick(rng);
        const bool measured = phase.load() == 1;
        const auto start = Clock::now();
        std::optional<double> first_event_ms;
        int64_t events = 0;
        drfm::client::WatchOptions options;
        options.max_reconnects = 0;  // A stream that breaks is an error here, not a retry.
        options.canceller = canceller;
        absl::StatusOr<drfm::client::WatchResult> result =
            client.WatchJob(id, options, [&](const drfm::v1::JobEvent&) {
              if (!first_event_ms) first_event_ms = Seconds(Clock::now() - start) * 1e3;
              ++events;
            });
        if (!result.ok() && result.status().code() == absl::StatusCode::kCancelled &&
            canceller->cancelled()) {
          break;  // Stopped by the end of the run.
        }
        if (result.ok() && result->final_state == drfm::v1::Job::FAILED) ++failed_jobs;
        if (!measured) continue;
        watch->items += events;
        watch->Record(result.status(), first_event_ms.value_or(Seconds(Clock::now() - start) * 1e3),
                      false);
      }
    });
  }
  for (int s = 0; s < flags.submitters; ++s, ++index) {
    OpStats* submit = &stats[static_cast<size_t>(index)][kSubmitFit];
    workers.emplace_back([&, submit] {
      drfm::v1::SubmitFitRequest request = TinyFit(flags);
      while (phase.load() < 2) {
        request.set_request_id(absl::StrCat("load-", run_id, "-", request_counter.fetch_add(1)));
        const bool measured = phase.load() == 1;
        const auto start = Clock::now();
        absl::StatusOr<drfm::v1::Job> job = client.SubmitFit(request);
        const double ms = Seconds(Clock::now() - start) * 1e3;
        if (job.ok()) job_ids.Add(job->id());
        if (measured) submit->Record(job.status(), ms, /*backpressure_ok=*/true);
        if (job.status().code() == absl::StatusCode::kResourceExhausted) {
          // A full queue: back off as a polite client would.
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    });
  }
  for (int p = 0; p < flags.predictors; ++p, ++index) {
    std::array<OpStats, kNumOps>* mine = &stats[static_cast<size_t>(index)];
    workers.emplace_back([&, mine, p] {
      drfm::v1::PredictRequest one, batch;
      one.set_model("load-model");
      one.set_rows(1);
      one.set_cols(cols);
      one.set_features(RandomFeatures(1, cols, 10 + static_cast<uint64_t>(p)));
      batch = one;
      batch.set_rows(flags.batch_rows);
      batch.set_features(RandomFeatures(flags.batch_rows, cols, 100 + static_cast<uint64_t>(p)));
      for (int64_t call = 0; phase.load() < 2; ++call) {
        const drfm::v1::PredictRequest& request = call % 2 == 0 ? one : batch;
        const bool measured = phase.load() == 1;
        const auto start = Clock::now();
        absl::StatusOr<drfm::v1::PredictResponse> response = client.Predict(request);
        const double ms = Seconds(Clock::now() - start) * 1e3;
        absl::Status status = response.status();
        if (status.ok() && response->labels_size() != request.rows()) {
          status = absl::InternalError(absl::StrCat("Predict returned ", response->labels_size(),
                                                    " labels for ", request.rows(), " rows"));
        }
        if (!measured) continue;
        OpStats& op = (*mine)[call % 2 == 0 ? kPredictOne : kPredictBatch];
        op.Record(status, ms, false);
        if (status.ok()) op.items += request.rows();
      }
    });
  }

  // Timeline and memory: sampled every 250 ms for the peak.
  RssSamples rss;
  auto sample = [&]() -> std::optional<int64_t> {
    if (server_pid <= 0) return std::nullopt;
    std::optional<int64_t> now = ReadRssBytes(server_pid);
    if (now && (!rss.peak || *now > *rss.peak)) rss.peak = now;
    return now;
  };
  auto run_for = [&](double seconds) {
    const Clock::time_point until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                       std::chrono::duration<double>(seconds));
    while (Clock::now() < until) {
      sample();
      std::this_thread::sleep_for(
          std::min<Clock::duration>(std::chrono::milliseconds(250), until - Clock::now()));
    }
  };
  rss.start = sample();
  run_for(flags.warmup);
  rss.warm = sample();
  phase.store(1);
  const auto measure_start = Clock::now();
  run_for(flags.duration / 2);
  rss.middle = sample();
  run_for(flags.duration / 2);
  rss.end = sample();
  const double window = Seconds(Clock::now() - measure_start);
  phase.store(2);
  for (auto& canceller : cancellers) canceller->Cancel();
  for (std::thread& t : workers) t.join();

  // Jobs that failed at any time of the run, whether or not a watcher saw them.
  drfm::v1::ListJobsRequest failed_request;
  failed_request.set_state(drfm::v1::Job::FAILED);
  failed_request.set_page_size(1000);
  absl::StatusOr<drfm::v1::ListJobsResponse> failed_list = client.ListJobs(failed_request);
  int64_t failed_stored = failed_list.ok() ? failed_list->jobs_size() : -1;
  std::string failed_example;
  if (failed_list.ok() && failed_list->jobs_size() > 0) {
    failed_example = failed_list->jobs(0).error();
  }

  int server_exit = 0;
  if (spawned) server_exit = spawned->Stop();

  // Results.
  std::array<OpStats, kNumOps> total;
  for (const auto& thread_stats : stats) {
    for (int op = 0; op < kNumOps; ++op) total[op].Merge(thread_stats[op]);
  }
  const std::array<std::string, kNumOps> names = {
      "SubmitFit", "Predict (1 row)", absl::StrCat("Predict (", flags.batch_rows, " rows)"),
      "WatchJob (to 1st event)"};
  const std::array<int, kNumOps> wanted = {flags.submitters, flags.predictors, flags.predictors,
                                           flags.watchers};
  Json report;
  report["command"] = command;
  report["server"] = connection.server;
  report["window_seconds"] = window;
  report["warmup_seconds"] = flags.warmup;
  report["threads"] = {{"watchers", flags.watchers},
                       {"submitters", flags.submitters},
                       {"predictors", flags.predictors}};
  struct Check {
    std::string name;
    bool passed;
    std::string detail;
  };
  std::vector<Check> checks;
  int64_t unexpected = 0;
  bool progress = true;
  std::string stalled;
  Json ops = Json::array();
  for (int op = 0; op < kNumOps; ++op) {
    OpStats& s = total[op];
    std::sort(s.latencies_ms.begin(), s.latencies_ms.end());
    const int64_t calls = static_cast<int64_t>(s.latencies_ms.size());
    unexpected += s.unexpected;
    const int64_t ok = s.codes.count("OK") ? s.codes.at("OK") : 0;
    if (wanted[op] > 0 && ok == 0) {
      progress = false;
      absl::StrAppend(&stalled, stalled.empty() ? "" : ", ", names[op]);
    }
    Json codes = Json::object();
    for (const auto& [code, n] : s.codes) codes[code] = n;
    ops.push_back({{"rpc", names[op]},
                   {"calls", calls},
                   {"per_second", static_cast<double>(calls) / window},
                   {"items", s.items},
                   {"items_per_second", static_cast<double>(s.items) / window},
                   {"p50_ms", Quantile(s.latencies_ms, 0.50)},
                   {"p99_ms", Quantile(s.latencies_ms, 0.99)},
                   {"max_ms", s.latencies_ms.empty() ? 0.0 : s.latencies_ms.back()},
                   {"codes", codes},
                   {"backpressure", s.backpressure},
                   {"unexpected", s.unexpected},
                   {"unexpected_examples", s.samples}});
  }
  report["rpcs"] = ops;
  report["server_rss_mb"] = {{"start", MbJson(rss.start)},
                             {"warm", MbJson(rss.warm)},
                             {"middle", MbJson(rss.middle)},
                             {"end", MbJson(rss.end)},
                             {"peak", MbJson(rss.peak)}};
  report["failed_jobs"] = failed_stored;

  checks.push_back({"no unexpected errors", unexpected == 0,
                    absl::StrCat(unexpected,
                                 " unexpected (RESOURCE_EXHAUSTED on a full queue is "
                                 "backpressure, counted apart)")});
  checks.push_back({"no failed jobs", failed_jobs.load() == 0 && failed_stored == 0,
                    failed_stored < 0
                        ? absl::StrCat("ListJobs failed: ", failed_list.status().ToString())
                        : absl::StrCat(failed_stored, " stored as FAILED",
                                       failed_example.empty() ? "" : ", e.g. ", failed_example)});
  checks.push_back({"every kind of call succeeded at least once", progress,
                    progress ? "yes" : absl::StrCat("no successful call of ", stalled)});
  if (rss.warm && rss.end) {
    const double bound =
        static_cast<double>(*rss.warm) * flags.max_rss_growth + flags.rss_slack_mb * 1e6;
    checks.push_back(
        {"bounded memory growth", static_cast<double>(*rss.end) <= bound,
         absl::StrFormat("end %.1f MB <= warm %.1f MB x %.2f + %.0f MB = %.1f MB",
                         static_cast<double>(*rss.end) / 1e6, static_cast<double>(*rss.warm) / 1e6,
                         flags.max_rss_growth, flags.rss_slack_mb, bound / 1e6)});
  } else {
    checks.push_back({"bounded memory growth", true,
                      "not checked: the server's memory cannot be read (give --server-pid)"});
  }
  if (spawned) {
    checks.push_back(
        {"server exits 0 on SIGTERM", server_exit == 0, absl::StrCat("exit status ", server_exit)});
  }
  bool all_passed = true;
  Json checks_json = Json::array();
  for (const Check& c : checks) {
    all_passed = all_passed && c.passed;
    checks_json.push_back({{"check", c.name}, {"passed", c.passed}, {"detail", c.detail}});
  }
  if (spawned && (!all_passed || flags.keep_data_dir)) {
    spawned->Keep();
    report["server_log"] = spawned->log();
  }
  report["checks"] = checks_json;
  report["passed"] = all_passed;

  if (flags.output == "json") {
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf(
        "drfm-load against %s: %.1f s measured after %.1f s warm-up; %d watchers, %d "
        "submitters, %d predictors\n\n",
        connection.server.c_str(), window, flags.warmup, flags.watchers, flags.submitters,
        flags.predictors);
    std::printf("%-26s %8s %9s %9s %9s %9s  %s\n", "rpc", "calls", "req/s", "p50 ms", "p99 ms",
                "max ms", "status codes");
    for (const Json& op : ops) {
      std::string codes;
      for (const auto& [code, n] : op["codes"].items()) {
        absl::StrAppend(&codes, codes.empty() ? "" : " ", code, "=", n.get<int64_t>());
      }
      std::printf("%-26s %8lld %9.1f %9.2f %9.2f %9.2f  %s\n", op["rpc"].get<std::string>().c_str(),
                  static_cast<long long>(op["calls"].get<int64_t>()),
                  op["per_second"].get<double>(), op["p50_ms"].get<double>(),
                  op["p99_ms"].get<double>(), op["max_ms"].get<double>(), codes.c_str());
      for (const Json& example : op["unexpected_examples"]) {
        std::printf("    unexpected: %s\n", example.get<std::string>().c_str());
      }
    }
    std::printf("\nrows predicted: %.0f/s; job events streamed: %.0f/s\n",
                (total[kPredictOne].items + total[kPredictBatch].items) / window,
                static_cast<double>(total[kWatchJob].items) / window);
    std::printf("server RSS: start %s, warm %s, middle %s, end %s, peak %s\n\n",
                FormatMb(rss.start).c_str(), FormatMb(rss.warm).c_str(),
                FormatMb(rss.middle).c_str(), FormatMb(rss.end).c_str(),
                FormatMb(rss.peak).c_str());
    for (const Check& c : checks) {
      std::printf("[%s] %s: %s\n", c.passed ? "PASS" : "FAIL", c.name.c_str(), c.detail.c_str());
    }
    if (report.contains("server_log")) {
      std::printf("server log and data dir kept: %s\n",
                  report["server_log"].get<std::string>().c_str());
    }
  }
  return all_passed ? 0 : 1;
}
