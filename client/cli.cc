#include "client/cli.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "client/payload.h"
#include "client/render.h"
#include "core/io.h"
#include "core/status.h"

namespace drfm::client {
namespace {

// Protobuf's JSON with the proto field names, every field printed (so scripts find each key).
std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return absl::StrCat("{\"error\": \"", std::string(status.message()), "\"}\n");
  while (!json.empty() && (json.back() == '\n' || json.back() == ' ')) json.pop_back();
  return json + "\n";
}

std::string Lower(std::string_view s) { return absl::AsciiStrToLower(std::string(s)); }

// "fashion-mnist:train" plus " [offset 10, limit 2000]" when set.
std::string SliceText(const v1::DatasetSlice& slice) {
  if (slice.dataset().empty()) return "-";
  std::string text = slice.dataset();
  std::vector<std::string> parts;
  if (slice.offset() > 0) parts.push_back(absl::StrCat("offset ", slice.offset()));
  if (slice.limit() > 0) parts.push_back(absl::StrCat("limit ", slice.limit()));
  if (!parts.empty()) absl::StrAppend(&text, " [", absl::StrJoin(parts, ", "), "]");
  return text;
}

std::string ModelRefText(const v1::ModelRef& model) {
  if (model.name().empty()) return "-";
  return absl::StrCat(model.name(), " v", model.version());
}

// The FitConfig fields that are set, as "name=value" pairs in proto order.
std::string ConfigText(const v1::FitConfig& c) {
  std::vector<std::string> parts;
  if (c.has_layers()) parts.push_back(absl::StrCat("layers=", c.layers()));
  if (c.kernel() != 0) parts.push_back("kernel=" + Lower(v1::FitConfig::Kernel_Name(c.kernel())));
  if (c.has_bandwidth()) parts.push_back(absl::StrCat("bandwidth=", c.bandwidth()));
  if (c.has_ridge()) parts.push_back(absl::StrCat("ridge=", c.ridge()));
  if (c.has_rfm_iterations()) parts.push_back(absl::StrCat("rfm_iterations=", c.rfm_iterations()));
  if (c.feature_map() != 0) {
    parts.push_back("feature_map=" + Lower(v1::FitConfig::FeatureMap_Name(c.feature_map())));
  }
  if (c.has_width()) parts.push_back(absl::StrCat("width=", c.width()));
  if (c.has_rff_scale()) parts.push_back(absl::StrCat("rff_scale=", c.rff_scale()));
  if (c.has_agop_power()) parts.push_back(absl::StrCat("agop_power=", c.agop_power()));
  if (c.agop_samples() != 0) parts.push_back(absl::StrCat("agop_samples=", c.agop_samples()));
  if (c.agop_normalize() != 0) {
    parts.push_back("agop_normalize=" +
                    Lower(v1::FitConfig::AgopNormalize_Name(c.agop_normalize())));
  }
  if (c.precision() != 0) {
    parts.push_back("precision=" + Lower(v1::FitConfig::Precision_Name(c.precision())));
  }
  if (c.has_standardize()) {
    parts.push_back(absl::StrCat("standardize=", c.standardize() ? "true" : "false"));
  }
  if (c.label_encoding() != 0) {
    parts.push_back("label_encoding=" +
                    Lower(v1::FitConfig::LabelEncoding_Name(c.label_encoding())));
  }
  if (c.has_seed()) parts.push_back(absl::StrCat("seed=", c.seed()));
  if (c.agop_method() != 0) {
    parts.push_back("agop_method=" + Lower(v1::FitConfig::AgopMethod_Name(c.agop_method())));
  }
  if (c.has_top_eigenvalues()) {
    parts.push_back(absl::StrCat("top_eigenvalues=", c.top_eigenvalues()));
  }
  return parts.empty() ? "(server defaults)" : absl::StrJoin(parts, " ");
}

// The MlpConfig fields that are set, as "name=value" pairs in proto order.
std::string MlpConfigText(const v1::MlpConfig& c) {
  std::vector<std::string> parts;
  if (c.has_depth()) parts.push_back(absl::StrCat("depth=", c.depth()));
  if (c.has_width()) parts.push_back(absl::StrCat("width=", c.width()));
  if (c.has_init_gain()) parts.push_back(absl::StrCat("init_gain=", c.init_gain()));
  if (c.has_learning_rate()) parts.push_back(absl::StrCat("learning_rate=", c.learning_rate()));
  if (c.has_epochs()) parts.push_back(absl::StrCat("epochs=", c.epochs()));
  if (c.has_batch_size()) parts.push_back(absl::StrCat("batch_size=", c.batch_size()));
  if (c.has_measure_every()) parts.push_back(absl::StrCat("measure_every=", c.measure_every()));
  if (c.has_seed()) parts.push_back(absl::StrCat("seed=", c.seed()));
  if (c.has_weight_decay()) parts.push_back(absl::StrCat("weight_decay=", c.weight_decay()));
  if (c.has_standardize()) {
    parts.push_back(absl::StrCat("standardize=", c.standardize() ? "true" : "false"));
  }
  if (c.has_row_normalize()) {
    parts.push_back(absl::StrCat("row_normalize=", c.row_normalize() ? "true" : "false"));
  }
  return parts.empty() ? "(server defaults)" : absl::StrJoin(parts, " ");
}

// The DatasetSlice of the --X, --X-limit and --X-offset flags (`name` is "--X"); nullopt when
// --X is not given and not `required`.
absl::StatusOr<std::optional<v1::DatasetSlice>> MakeSlice(const std::string& dataset,
                                                          std::optional<int64_t> limit,
                                                          std::optional<int64_t> offset,
                                                          std::string_view name, bool required) {
  const std::string flag(name);
  if (dataset.empty()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(flag, " names the dataset"));
    if (limit || offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, "-limit and ", flag, "-offset need ", flag, " DATASET"));
    }
    return std::nullopt;
  }
  v1::DatasetSlice slice;
  slice.set_dataset(dataset);
  if (limit) slice.set_limit(*limit);
  if (offset) slice.set_offset(*offset);
  return slice;
}

// --label key=value flags into the request's labels.
absl::Status SetLabels(const std::vector<std::string>& labels,
                       google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& label : labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label takes key=value with a non-empty key; got \"", label, "\""));
    }
    (*out)[label.substr(0, eq)] = label.substr(eq + 1);
  }
  return absl::OkStatus();
}

// "key:   value" lines, keys padded to the longest.
std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, ":", std::string(width - key.size() + 2, ' '), value, "\n");
  }
  return out;
}

template <typename Enum>
absl::StatusOr<Enum> ParseEnum(std::string_view flag, std::string_view value,
                               const std::vector<std::pair<std::string, Enum>>& names) {
  const std::string v = Lower(value);
  std::vector<std::string> allowed;
  for (const auto& [name, e] : names) {
    if (v == name) return e;
    allowed.push_back(name);
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " must be one of ",
                                                 absl::StrJoin(allowed, ", "), "; got \"",
                                                 std::string(value), "\""));
}

// When the optional flag was given, parses it (see ParseEnum) and passes the value to `set`.
template <typename Enum, typename Set>
absl::Status ApplyEnumFlag(std::string_view flag, const std::optional<std::string>& value,
                           const std::vector<std::pair<std::string, Enum>>& names, Set set) {
  if (!value) return absl::OkStatus();
  DRFM_ASSIGN_OR_RETURN(const Enum e, ParseEnum<Enum>(flag, *value, names));
  set(e);
  return absl::OkStatus();
}

// The file name of `path` without directories.
std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

absl::Status WithPath(const absl::Status& status, const std::string& path) {
  if (status.ok() || absl::StrContains(status.message(), path)) return status;
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}

std::string PlotTitle(const v1::Job& job) {
  return absl::StrCat("Deep RFM: neural collapse by layer (job ", job.id(), ")");
}

std::string PlotSubtitle(const v1::Job& job) {
  std::vector<std::string> parts;
  parts.push_back(absl::StrCat("train ", SliceText(job.train())));
  if (!job.test().dataset().empty()) parts.push_back(absl::StrCat("test ", SliceText(job.test())));
  if (job.config().has_layers()) parts.push_back(absl::StrCat("L = ", job.config().layers()));
  if (job.config().kernel() != 0) {
    parts.push_back(Lower(v1::FitConfig::Kernel_Name(job.config().kernel())));
  }
  if (job.config().feature_map() != 0) {
    std::string map = Lower(v1::FitConfig::FeatureMap_Name(job.config().feature_map()));
    if (job.config().has_width()) absl::StrAppend(&map, " width ", job.config().width());
    parts.push_back(map);
  }
  if (!job.reports().empty() && job.reports().rbegin()->has_test_accuracy()) {
    parts.push_back(absl::StrFormat("test accuracy %.4f", job.reports().rbegin()->test_accuracy()));
  }
  return absl::StrJoin(parts, "  \u00B7  ");
}

std::string NetworkPlotTitle(const v1::Job& job) {
  if (job.kind() == v1::Job::ANALYSIS) {
    return absl::StrCat("MLP analysis of ", ModelRefText(job.analyzed_model()), " (job ", job.id(),
                        ")");
  }
  return absl::StrCat("MLP: neural collapse and the NFA by layer (job ", job.id(), ")");
}

std::string NetworkPlotSubtitle(const v1::Job& job) {
  std::vector<std::string> parts;
  const v1::NetworkReport* last =
      job.network_reports().empty() ? nullptr : &*job.network_reports().rbegin();
  if (job.kind() == v1::Job::ANALYSIS) {
    parts.push_back(absl::StrCat("data ", SliceText(job.data())));
    if (last != nullptr) {
      parts.push_back(absl::StrFormat("accuracy %.4f", last->train_accuracy()));
    }
    return absl::StrJoin(parts, "  \u00B7  ");
  }
  parts.push_back(absl::StrCat("train ", SliceText(job.train())));
  if (!job.test().dataset().empty()) parts.push_back(absl::StrCat("test ", SliceText(job.test())));
  const v1::MlpConfig& c = job.mlp_config();
  if (c.has_depth() && c.has_width()) {
    parts.push_back(absl::StrCat("depth ", c.depth(), ", width ", c.width()));
  }
  if (c.has_init_gain()) parts.push_back(absl::StrCat("init gain ", c.init_gain()));
  if (c.has_learning_rate()) parts.push_back(absl::StrCat("lr ", c.learning_rate()));
  if (c.has_epochs()) parts.push_back(absl::StrCat(c.epochs(), " epochs"));
  if (last != nullptr && last->has_test_accuracy()) {
    parts.push_back(absl::StrFormat("test accuracy %.4f", last->test_accuracy()));
  }
  return absl::StrJoin(parts, "  \u00B7  ");
}

bool IsNetworkJob(const v1::Job& job) {
  return job.kind() == v1::Job::MLP || job.kind() == v1::Job::ANALYSIS;
}

// Adds "--name" (an optional of T) whose absence leaves the optional unset; `server_default`
// (shown in brackets in --help) is what the server then uses.
template <typename T>
CLI::Option* AddOptional(CLI::App* command, const std::string& name, std::optional<T>* target,
                         const std::string& help, const std::string& server_default = "") {
  CLI::Option* option = command->add_option_function<T>(
      name, [target](const T& value) { *target = value; }, help);
  if (!server_default.empty()) option->default_str(server_default);
  return option;
}

// The write end of the pipe the SIGINT handler signals through (-1 when no scope is active). A
// signal handler can only reach process-wide state; this is the one such variable.
std::atomic<int> g_interrupt_fd{-1};

extern "C" void OnInterrupt(int) {
  const int fd = g_interrupt_fd.load();
  if (fd >= 0) {
    const char byte = 'i';
    (void)!write(fd, &byte, 1);
  }
  // A second Ctrl-C ends the process the usual way, should detaching hang.
  signal(SIGINT, SIG_DFL);
}

// While alive, Ctrl-C cancels `canceller` (the watch ends and the CLI detaches) instead of
// killing the process. The handler only writes to a pipe (async-signal-safe); a thread reads it
// and cancels.
class InterruptScope {
 public:
  explicit InterruptScope(Canceller* canceller) {
    if (pipe(fds_) != 0) return;
    fcntl(fds_[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds_[1], F_SETFD, FD_CLOEXEC);
    g_interrupt_fd.store(fds_[1]);
    struct sigaction action;
    std::memset(&action, 0, sizeof(action));
    action.sa_handler = OnInterrupt;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, &old_);
    thread_ = std::thread([this, canceller] {
      char byte = 0;
      while (true) {
        const ssize_t n = read(fds_[0], &byte, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || byte == 'q') return;
        canceller->Cancel();
      }
    });
  }
  ~InterruptScope() {
    if (!thread_.joinable()) return;
    sigaction(SIGINT, &old_, nullptr);
    g_interrupt_fd.store(-1);
    const char byte = 'q';
    (void)!write(fds_[1], &byte, 1);
    thread_.join();
    close(fds_[0]);
    close(fds_[1]);
  }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_;
  std::thread thread_;
};

// Redraws a JobDisplay's status line a few times a second so the elapsed times move between
// events.
class Ticker {
 public:
  Ticker(JobDisplay* display, bool enabled) {
    if (!enabled) return;
    thread_ = std::thread([this, display] {
      while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
        display->Tick(absl::Now());
      }
    });
  }
  ~Ticker() {
    stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification stop_;
  std::thread thread_;
};

struct GlobalFlags {
  std::string server = "localhost:50051";
  std::string token_file;
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  std::string output = "table";
  double timeout_seconds = 30;
};

struct ListFlags {
  int32_t page_size = 0;
  std::string page_token;
  bool all = false;
  std::string state;
  std::string kind;
  std::string name;
};

struct PredictFlags {
  std::string model;
  std::string file;
  std::string out;
  bool scores = false;
  std::optional<int64_t> version;
  int32_t layer = 0;
  std::optional<int> label_column;
  int64_t batch_rows = 0;
};

class Commands {
 public:
  Commands(const CliEnv& env, const GlobalFlags& globals)
      : env_(env), out_(*env.out), err_(*env.err), globals_(globals) {}

  bool json() const { return globals_.output == "json"; }

  int Fit(const FitFlags& flags);
  int Estimate(const FitFlags& flags);
  int Mlp(const MlpFlags& flags);
  int Analyze(const AnalyzeFlags& flags);
  int JobsList(const ListFlags& flags);
  int JobsGet(const std::string& id, const std::string& plot);
  int JobsWatch(const std::string& id, const std::string& plot);
  int JobsCancel(const std::string& id);
  int JobsRm(const std::string& id);
  int ModelsList(const ListFlags& flags);
  int ModelsGet(const std::string& name, std::optional<int64_t> version);
  int ModelsRm(const std::string& name, std::optional<int64_t> version);
  int ModelsExport(const std::string& name, std::optional<int64_t> version, std::string out);
  int ModelsImport(const std::string& path, const std::string& name);
  int DatasetsList(const ListFlags& flags);
  int DatasetsGet(const std::string& dataset);
  int DatasetsRm(const std::string& dataset);
  int DatasetsUpload(const UploadFiles& files, const std::string& name);
  int Predict(const PredictFlags& flags);
  int Health(const std::string& service, bool wait);

 private:
  // The connected client, created on first use.
  absl::StatusOr<Client*> client();
  // Prints the error (with a hint for an unreachable server) and returns kExitError.
  int Fail(const absl::Status& status);
  // After a submission: with `detach`, prints the job and how to follow it; otherwise watches it
  // (printing the final Job with --output json).
  int Submitted(const v1::Job& job, bool detach, const std::string& plot);
  // Follows a job until it ends (see Fit); `job` is what is known of it already.
  int Watch(const v1::Job& job, const std::string& plot, bool print_final_job, bool events_as_json);
  absl::Status WritePlot(const v1::Job& job, const std::string& path);
  void PrintJob(const v1::Job& job);

  const CliEnv& env_;
  std::ostream& out_;
  std::ostream& err_;
  GlobalFlags globals_;
  std::unique_ptr<Client> client_;
};

absl::StatusOr<Client*> Commands::client() {
  if (client_ != nullptr) return client_.get();
  ConnectionOptions options;
  options.server = globals_.server;
  options.tls = globals_.tls;
  options.tls_ca_file = globals_.tls_ca;
  options.tls_cert_file = globals_.tls_cert;
  options.tls_key_file = globals_.tls_key;
  options.tls_server_name = globals_.tls_server_name;
  options.timeout = absl::Seconds(globals_.timeout_seconds);
  if (!globals_.token_file.empty()) {
    DRFM_ASSIGN_OR_RETURN(options.token, ReadTokenFile(globals_.token_file));
  }
  DRFM_RETURN_IF_ERROR(options.Validate());
  auto connect = env_.connect ? env_.connect : &Client::Connect;
  DRFM_ASSIGN_OR_RETURN(client_, connect(options));
  return client_.get();
}

int Commands::Fail(const absl::Status& status) {
  err_ << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message();
  if (status.code() == absl::StatusCode::kUnavailable) {
    err_ << "\n(is drfm-server running at " << globals_.server
         << "? choose another with --server HOST:PORT or DRFM_SERVER";
    if (globals_.tls_ca.empty() && !globals_.tls) {
      err_ << "; a TLS server needs --tls-ca FILE";
    } else if (globals_.tls_cert.empty()) {
      // A server that requires client certificates closes the handshake without saying why.
      err_ << "; a server that requires mutual TLS also needs --tls-cert FILE --tls-key FILE";
    }
    err_ << ")";
  } else if (status.code() == absl::StatusCode::kUnauthenticated &&
             !absl::StrContains(status.message(), "--token-file")) {
    err_ << "\n(pass the server's token with --token-file FILE)";
  }
  err_ << "\n" << std::flush;
  return kExitError;
}

// Unwraps a StatusOr inside a command: on error, prints it and returns kExitError.
#define DRFM_CLI_ASSIGN_OR_FAIL(lhs, rexpr) \
  DRFM_CLI_ASSIGN_OR_FAIL_IMPL_(DRFM_STATUS_CONCAT_(drfm_cli_, __LINE__), lhs, rexpr)
#define DRFM_CLI_ASSIGN_OR_FAIL_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) return Fail(tmp.status());            \
  lhs = std::move(tmp).value()

#define DRFM_CLI_RETURN_IF_ERROR(expr)                         \
  do {                                                         \
    ::absl::Status drfm_cli_status_ = (expr);                  \
    if (!drfm_cli_status_.ok()) return Fail(drfm_cli_status_); \
  } while (0)

absl::Status Commands::WritePlot(const v1::Job& job, const std::string& path) {
  if (IsNetworkJob(job)) {
    std::vector<v1::NetworkReport> reports(job.network_reports().begin(),
                                           job.network_reports().end());
    return WriteTextFile(
        path, RenderSvg(NetworkChart(reports, NetworkPlotTitle(job), NetworkPlotSubtitle(job))));
  }
  std::vector<v1::LayerReport> reports(job.reports().begin(), job.reports().end());
  return WriteTextFile(path, RenderSvg(CollapseChart(reports, PlotTitle(job), PlotSubtitle(job))));
}

int Commands::Fit(const FitFlags& flags) {
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::SubmitFitRequest request, BuildSubmitFitRequest(flags));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->SubmitFit(request));
  return Submitted(job, flags.detach, flags.plot);
}

int Commands::Mlp(const MlpFlags& flags) {
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::SubmitMlpFitRequest request, BuildSubmitMlpFitRequest(flags));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->SubmitMlpFit(request));
  return Submitted(job, flags.detach, flags.plot);
}

int Commands::Analyze(const AnalyzeFlags& flags) {
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::SubmitAnalysisRequest request,
                          BuildSubmitAnalysisRequest(flags));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->SubmitAnalysis(request));
  return Submitted(job, flags.detach, flags.plot);
}

int Commands::Submitted(const v1::Job& job, bool detach, const std::string& plot) {
  if (detach) {
    if (json()) {
      out_ << ToJson(job, true);
    } else {
      out_ << "submitted job " << job.id() << " (" << v1::Job::State_Name(job.state()) << ")\n"
           << "follow it with: drfm jobs watch " << job.id() << "\n";
    }
    return kExitOk;
  }
  return Watch(job, plot, /*print_final_job=*/json(), /*events_as_json=*/false);
}

int Commands::Watch(const v1::Job& job, const std::string& plot, bool print_final_job,
                    bool events_as_json) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  // The live display goes to stdout in table mode; with JSON on stdout, to stderr when that is
  // a terminal (and nowhere otherwise, so logs hold only the JSON).
  std::ostringstream discard;
  std::ostream* display_stream = &out_;
  bool interactive = env_.out_is_terminal;
  if (json()) {
    display_stream = env_.err_is_terminal ? &err_ : &discard;
    interactive = env_.err_is_terminal;
  }
  JobDisplay display(*display_stream, interactive, job.id());
  display.SetJob(job);
  Canceller canceller;
  WatchOptions options;
  options.canceller = &canceller;
  options.max_reconnects = env_.watch_max_reconnects;
  options.initial_backoff = env_.watch_initial_backoff;
  options.on_reconnect = [&display, this](int attempt, const absl::Status& cause,
                                          absl::Duration backoff) {
    display.Notice(absl::StrCat("connection lost (", cause.message(), "); re-attaching in ",
                                HumanDuration(backoff), " (attempt ", attempt, " of ",
                                env_.watch_max_reconnects, ")"));
  };
  absl::StatusOr<WatchResult> result;
  {
    std::optional<InterruptScope> interrupts;
    if (env_.handle_interrupts) interrupts.emplace(&canceller);
    Ticker ticker(&display, interactive);
    result = c->WatchJob(job.id(), options, [&](const v1::JobEvent& event) {
      display.OnEvent(event, absl::Now());
      if (events_as_json) out_ << ToJson(event, false) << std::flush;
    });
  }
  display.Finish();
  if (!result.ok()) {
    if (canceller.cancelled()) {
      err_ << "\ndetached from job " << job.id() << "; it keeps running on the server.\n"
           << "re-attach with: drfm jobs watch " << job.id() << "\n"
           << "cancel it with: drfm jobs cancel " << job.id() << "\n"
           << std::flush;
      return kExitDetached;
    }
    Fail(result.status());
    err_ << "the job may still be running; re-attach with: drfm jobs watch " << job.id() << "\n";
    return kExitError;
  }
  // The final Job: its reports for the plot, its error and model for the summary.
  v1::Job final_job;
  absl::StatusOr<v1::Job> fetched = c->GetJob(job.id());
  if (fetched.ok()) {
    final_job = *std::move(fetched);
  } else {
    err_ << "warning: could not fetch the finished job: " << fetched.status().message() << "\n";
    final_job = job;
    final_job.set_state(result->final_state);
    final_job.clear_reports();
    for (const v1::LayerReport& r : display.reports()) *final_job.add_reports() = r;
    final_job.clear_network_reports();
    for (const v1::NetworkReport& r : display.network_reports()) {
      *final_job.add_network_reports() = r;
    }
  }
  std::ostream& notes = json() ? err_ : out_;
  if (!plot.empty()) {
    const absl::Status written = WritePlot(final_job, plot);
    if (!written.ok()) return Fail(written);
    notes << "wrote the collapse plot to " << plot << "\n";
  }
  if (print_final_job) out_ << ToJson(final_job, true);
  const v1::Job::State state = result->final_state;
  if (state == v1::Job::SUCCEEDED) return kExitOk;
  err_ << "error: job " << job.id() << " " << v1::Job::State_Name(state);
  if (!final_job.error().empty()) err_ << ": " << final_job.error();
  err_ << "\n" << std::flush;
  return kExitError;
}

int Commands::Estimate(const FitFlags& flags) {
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::SubmitFitRequest request, BuildSubmitFitRequest(flags));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::FitEstimate e, c->EstimateFit(request));
  if (json()) {
    out_ << ToJson(e, true);
    return kExitOk;
  }
  const v1::PhaseValues& f = e.phase_flops();
  std::string budget = e.memory_budget_bytes() > 0
                           ? absl::StrCat(FormatBytes(static_cast<double>(e.memory_budget_bytes())),
                                          e.within_budget() ? " (within budget)"
                                                            : " (OVER BUDGET: SubmitFit would "
                                                              "fail with RESOURCE_EXHAUSTED)")
                           : "unlimited";
  out_ << KeyValues({
      {"train rows", absl::StrCat(e.train_rows())},
      {"test rows", absl::StrCat(e.test_rows())},
      {"columns", absl::StrCat(e.cols())},
      {"classes", absl::StrCat(e.num_classes())},
      {"peak memory", FormatBytes(static_cast<double>(e.memory_bytes()))},
      {"kernel matrix", FormatBytes(static_cast<double>(e.kernel_bytes()))},
      {"memory budget", budget},
      {"flops", FormatFlops(e.flops())},
      {"  kernel", FormatFlops(f.kernel())},
      {"  solve", FormatFlops(f.solve())},
      {"  agop", FormatFlops(f.agop())},
      {"  project", FormatFlops(f.project())},
      {"  features", FormatFlops(f.features())},
      {"  metrics", FormatFlops(f.metrics())},
  });
  return kExitOk;
}

int Commands::JobsList(const ListFlags& flags) {
  v1::ListJobsRequest request;
  request.set_page_size(flags.page_size);
  request.set_page_token(flags.page_token);
  if (!flags.state.empty()) {
    DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job::State state,
                            (ParseEnum<v1::Job::State>("--state", flags.state,
                                                       {{"queued", v1::Job::QUEUED},
                                                        {"running", v1::Job::RUNNING},
                                                        {"succeeded", v1::Job::SUCCEEDED},
                                                        {"failed", v1::Job::FAILED},
                                                        {"cancelled", v1::Job::CANCELLED}})));
    request.set_state(state);
  }
  if (!flags.kind.empty()) {
    DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job::Kind kind,
                            (ParseEnum<v1::Job::Kind>("--kind", flags.kind,
                                                      {{"deep_rfm", v1::Job::DEEP_RFM},
                                                       {"mlp", v1::Job::MLP},
                                                       {"analysis", v1::Job::ANALYSIS}})));
    request.set_kind(kind);
  }
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  v1::ListJobsResponse all;
  while (true) {
    DRFM_CLI_ASSIGN_OR_FAIL(v1::ListJobsResponse page, c->ListJobs(request));
    for (auto& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_next_page_token(page.next_page_token());
    if (!flags.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (json()) {
    out_ << ToJson(all, true);
    return kExitOk;
  }
  Table table(
      {"ID", "KIND", "STATE", "LAYERS", "MODEL", "TRAIN", "CREATED", "DURATION"},
      {Table::Align::kLeft, Table::Align::kLeft, Table::Align::kLeft, Table::Align::kRight});
  for (const v1::Job& job : all.jobs()) {
    std::string duration = "-";
    if (job.has_start_time()) {
      const absl::Time end = job.has_end_time() ? ToAbslTime(job.end_time()) : absl::Now();
      duration = HumanDuration(end - ToAbslTime(job.start_time()));
    }
    std::string model = ModelRefText(job.model());
    if (model == "-" && !job.model_name().empty()) model = job.model_name();
    table.AddRow({job.id(), v1::Job::Kind_Name(job.kind()), v1::Job::State_Name(job.state()),
                  absl::StrCat(job.layers_done(), "/", job.layers_total()), model,
                  SliceText(job.kind() == v1::Job::ANALYSIS ? job.data() : job.train()),
                  FormatTimestamp(job.create_time()), duration});
  }
  out_ << table.Render();
  if (!all.next_page_token().empty()) {
    err_ << "more jobs: --page-token " << all.next_page_token() << " (or --all)\n";
  }
  return kExitOk;
}

void Commands::PrintJob(const v1::Job& job) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", job.id()},
      {"kind", v1::Job::Kind_Name(job.kind())},
      {"state", v1::Job::State_Name(job.state())},
  };
  if (!job.error().empty()) rows.push_back({"error", job.error()});
  if (job.kind() == v1::Job::ANALYSIS) {
    rows.push_back({"analyzed model", ModelRefText(job.analyzed_model())});
    rows.push_back({"data", SliceText(job.data())});
  } else {
    rows.push_back({"train", SliceText(job.train())});
    rows.push_back({"test", SliceText(job.test())});
  }
  if (job.kind() == v1::Job::DEEP_RFM) rows.push_back({"config", ConfigText(job.config())});
  if (job.kind() == v1::Job::MLP) rows.push_back({"config", MlpConfigText(job.mlp_config())});
  rows.push_back({job.kind() == v1::Job::DEEP_RFM ? "progress" : "measurements",
                  absl::StrCat(job.layers_done(), "/", job.layers_total())});
  rows.push_back(
      {"model", job.model().name().empty()
                    ? (job.model_name().empty() ? "-" : job.model_name() + " (requested)")
                    : ModelRefText(job.model())});
  if (job.priority() != 0) rows.push_back({"priority", absl::StrCat(job.priority())});
  if (!job.request_id().empty()) rows.push_back({"request id", job.request_id()});
  if (!job.labels().empty()) {
    std::map<std::string, std::string> sorted(job.labels().begin(), job.labels().end());
    rows.push_back({"labels", absl::StrJoin(sorted, ", ", absl::PairFormatter("="))});
  }
  rows.push_back({"created", FormatTimestamp(job.create_time())});
  rows.push_back({"started", FormatTimestamp(job.start_time())});
  std::string ended = FormatTimestamp(job.end_time());
  if (job.has_start_time() && job.has_end_time()) {
    absl::StrAppend(&ended, " (ran ",
                    HumanDuration(ToAbslTime(job.end_time()) - ToAbslTime(job.start_time())), ")");
  }
  rows.push_back({"ended", ended});
  if (job.has_estimate()) {
    rows.push_back(
        {"estimate", absl::StrCat(FormatBytes(static_cast<double>(job.estimate().memory_bytes())),
                                  ", ", FormatFlops(job.estimate().flops()))});
  }
  out_ << KeyValues(rows);
  if (!job.reports().empty()) {
    out_ << "\n" << LayerTable({job.reports().begin(), job.reports().end()});
  }
  if (!job.network_reports().empty()) {
    // Every measurement's summary, then the layers of the last one (all of them: --output json).
    const v1::NetworkReport& last = *job.network_reports().rbegin();
    if (job.kind() == v1::Job::ANALYSIS) {
      out_ << "\n" << NetworkReportBlock(last, /*analysis=*/true);
    } else {
      out_ << "\n" << NetworkTableHeader();
      for (const v1::NetworkReport& r : job.network_reports()) out_ << NetworkTableRow(r);
      out_ << "\nlayers at epoch " << last.epoch() << ":\n" << NetworkLayerTable(last);
    }
  }
}

int Commands::JobsGet(const std::string& id, const std::string& plot) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->GetJob(id));
  if (json()) {
    out_ << ToJson(job, true);
  } else {
    PrintJob(job);
  }
  if (!plot.empty()) {
    DRFM_CLI_RETURN_IF_ERROR(WritePlot(job, plot));
    (json() ? err_ : out_) << "wrote the collapse plot to " << plot << "\n";
  }
  return kExitOk;
}

int Commands::JobsWatch(const std::string& id, const std::string& plot) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->GetJob(id));
  // JSON: one JobEvent per line as they arrive (a stream a script can follow).
  return Watch(job, plot, /*print_final_job=*/false, /*events_as_json=*/json());
}

int Commands::JobsCancel(const std::string& id) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Job job, c->CancelJob(id));
  if (json()) {
    out_ << ToJson(job, true);
  } else if (IsTerminal(job.state())) {
    out_ << "job " << job.id() << " is " << v1::Job::State_Name(job.state()) << "\n";
  } else {
    out_ << "cancelling job " << job.id() << " (" << v1::Job::State_Name(job.state())
         << "); it stops at its next check\n";
  }
  return kExitOk;
}

int Commands::JobsRm(const std::string& id) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_RETURN_IF_ERROR(c->DeleteJob(id));
  out_ << (json() ? ToJson(v1::DeleteJobResponse(), true) : absl::StrCat("deleted job ", id, "\n"));
  return kExitOk;
}

int Commands::ModelsList(const ListFlags& flags) {
  v1::ListModelsRequest request;
  request.set_name(flags.name);
  request.set_page_size(flags.page_size);
  request.set_page_token(flags.page_token);
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  v1::ListModelsResponse all;
  while (true) {
    DRFM_CLI_ASSIGN_OR_FAIL(v1::ListModelsResponse page, c->ListModels(request));
    for (auto& model : *page.mutable_models()) *all.add_models() = std::move(model);
    all.set_next_page_token(page.next_page_token());
    if (!flags.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (json()) {
    out_ << ToJson(all, true);
    return kExitOk;
  }
  using A = Table::Align;
  Table table({"NAME", "VERSION", "KIND", "INPUT", "CLASSES", "LAYERS", "SIZE", "JOB", "CREATED"},
              {A::kLeft, A::kRight, A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight});
  for (const v1::Model& m : all.models()) {
    table.AddRow({m.name(), absl::StrCat(m.version()), v1::Model::Kind_Name(m.kind()),
                  absl::StrCat(m.input_dim()), absl::StrCat(m.classes()), absl::StrCat(m.layers()),
                  FormatBytes(static_cast<double>(m.size_bytes())),
                  m.job_id().empty() ? "-" : m.job_id(), FormatTimestamp(m.create_time())});
  }
  out_ << table.Render();
  if (!all.next_page_token().empty()) {
    err_ << "more models: --page-token " << all.next_page_token() << " (or --all)\n";
  }
  return kExitOk;
}

int Commands::ModelsGet(const std::string& name, std::optional<int64_t> version) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Model m, c->GetModel(name, version));
  if (json()) {
    out_ << ToJson(m, true);
    return kExitOk;
  }
  std::vector<std::pair<std::string, std::string>> rows = {
      {"name", m.name()},
      {"version", absl::StrCat(m.version())},
      {"kind", v1::Model::Kind_Name(m.kind())},
      {"input dim", absl::StrCat(m.input_dim())},
      {"classes", absl::StrCat(m.classes())},
      {"layers", absl::StrCat(m.layers())},
      {"layer dims", m.layer_dims().empty() ? "-" : absl::StrJoin(m.layer_dims(), " ")},
      {"standardize", m.standardize() ? "yes" : "no"},
  };
  if (m.kind() == v1::Model::DEEP_RFM) rows.push_back({"config", ConfigText(m.config())});
  if (m.kind() == v1::Model::MLP) {
    rows.push_back({"config", m.has_mlp_config() ? MlpConfigText(m.mlp_config()) : "(imported)"});
  }
  rows.push_back({"job", m.job_id().empty() ? "-" : m.job_id()});
  rows.push_back({"created", FormatTimestamp(m.create_time())});
  rows.push_back({"size", FormatBytes(static_cast<double>(m.size_bytes()))});
  rows.push_back({"sha256", m.sha256()});
  out_ << KeyValues(rows);
  return kExitOk;
}

int Commands::ModelsRm(const std::string& name, std::optional<int64_t> version) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_RETURN_IF_ERROR(c->DeleteModel(name, version));
  if (json()) {
    out_ << ToJson(v1::DeleteModelResponse(), true);
  } else if (version.has_value()) {
    out_ << "deleted model " << name << " v" << *version << "\n";
  } else {
    out_ << "deleted every version of model " << name << "\n";
  }
  return kExitOk;
}

int Commands::ModelsExport(const std::string& name, std::optional<int64_t> version,
                           std::string out) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  if (out.empty()) {
    // Name the file after the resolved version, and pin it so the file matches its name.
    DRFM_CLI_ASSIGN_OR_FAIL(const v1::Model m, c->GetModel(name, version));
    version = m.version();
    out = absl::StrCat(m.name(), "-v", m.version(), ".safetensors");
  }
  const std::string tmp = out + ".part";
  std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
  if (!file) {
    return Fail(absl::PermissionDeniedError(
        absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno))));
  }
  const bool progress = env_.err_is_terminal && !json();
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::Model> model =
      c->ExportModel(name, version, [&](std::string_view data, int64_t offset, int64_t total) {
        file.write(data.data(), static_cast<std::streamsize>(data.size()));
        if (!file) return absl::InternalError(absl::StrCat("writing ", tmp, " failed"));
        if (progress) {
          err_ << "\r\033[K"
               << TransferLine("export", offset + static_cast<int64_t>(data.size()), total,
                               absl::Now() - start)
               << std::flush;
        }
        return absl::OkStatus();
      });
  file.close();
  if (progress) err_ << "\n";
  if (model.ok() && !file) model = absl::InternalError(absl::StrCat("writing ", tmp, " failed"));
  if (!model.ok()) {
    std::remove(tmp.c_str());
    return Fail(model.status());
  }
  if (std::rename(tmp.c_str(), out.c_str()) != 0) {
    return Fail(absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", out, ": ", std::strerror(errno))));
  }
  if (json()) {
    out_ << ToJson(*model, true);
  } else {
    out_ << "wrote model " << model->name() << " v" << model->version() << " ("
         << FormatBytes(static_cast<double>(model->size_bytes())) << ") to " << out << "\n";
  }
  return kExitOk;
}

int Commands::ModelsImport(const std::string& path, const std::string& name) {
  DRFM_CLI_ASSIGN_OR_FAIL(const std::string bytes, core::ReadFileBytes(path));
  DRFM_CLI_RETURN_IF_ERROR(CheckSafetensorsFraming(bytes, path));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  const bool progress = env_.err_is_terminal && !json();
  ModelImport import(name, bytes);
  const absl::Time start = absl::Now();
  absl::Time last_draw = absl::InfinitePast();
  DRFM_CLI_ASSIGN_OR_FAIL(
      const v1::Model model, c->ImportModel(import, [&](int64_t sent, int64_t total) {
        const absl::Time now = absl::Now();
        if (!progress || (now - last_draw < absl::Milliseconds(100) && sent < total)) return;
        last_draw = now;
        err_ << "\r\033[K" << TransferLine("import", sent, total, now - start) << std::flush;
      }));
  if (progress) err_ << "\n";
  if (json()) {
    out_ << ToJson(model, true);
    return kExitOk;
  }
  out_ << "imported " << path << " as model " << model.name() << " v" << model.version() << ": "
       << v1::Model::Kind_Name(model.kind()) << ", " << model.input_dim() << " inputs, "
       << model.layers() << " hidden layers";
  if (!model.layer_dims().empty()) out_ << " (" << absl::StrJoin(model.layer_dims(), ", ") << ")";
  out_ << ", " << model.classes() << " classes, "
       << FormatBytes(static_cast<double>(model.size_bytes())) << "\n";
  return kExitOk;
}

int Commands::DatasetsList(const ListFlags& flags) {
  v1::ListDatasetsRequest request;
  request.set_page_size(flags.page_size);
  request.set_page_token(flags.page_token);
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  v1::ListDatasetsResponse all;
  while (true) {
    DRFM_CLI_ASSIGN_OR_FAIL(v1::ListDatasetsResponse page, c->ListDatasets(request));
    for (auto& d : *page.mutable_datasets()) *all.add_datasets() = std::move(d);
    all.set_next_page_token(page.next_page_token());
    if (!flags.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (json()) {
    out_ << ToJson(all, true);
    return kExitOk;
  }
  using A = Table::Align;
  Table table({"ID", "NAME", "ROWS", "COLS", "CLASSES", "SIZE", "BUILTIN", "CREATED"},
              {A::kLeft, A::kLeft, A::kRight, A::kRight, A::kRight, A::kRight});
  for (const v1::Dataset& d : all.datasets()) {
    table.AddRow({d.id(), d.name(), absl::StrCat(d.rows()), absl::StrCat(d.cols()),
                  absl::StrCat(d.num_classes()), FormatBytes(static_cast<double>(d.size_bytes())),
                  d.builtin() ? "yes" : "", FormatTimestamp(d.create_time())});
  }
  out_ << table.Render();
  if (!all.next_page_token().empty()) {
    err_ << "more datasets: --page-token " << all.next_page_token() << " (or --all)\n";
  }
  return kExitOk;
}

int Commands::DatasetsGet(const std::string& dataset) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Dataset d, c->GetDataset(dataset));
  if (json()) {
    out_ << ToJson(d, true);
    return kExitOk;
  }
  out_ << KeyValues({{"id", d.id()},
                     {"name", d.name()},
                     {"rows", absl::StrCat(d.rows())},
                     {"cols", absl::StrCat(d.cols())},
                     {"classes", absl::StrCat(d.num_classes())},
                     {"size", FormatBytes(static_cast<double>(d.size_bytes()))},
                     {"sha256", d.sha256()},
                     {"builtin", d.builtin() ? "yes" : "no"},
                     {"created", FormatTimestamp(d.create_time())}});
  return kExitOk;
}

int Commands::DatasetsRm(const std::string& dataset) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_RETURN_IF_ERROR(c->DeleteDataset(dataset));
  out_ << (json() ? ToJson(v1::DeleteDatasetResponse(), true)
                  : absl::StrCat("deleted dataset ", dataset, "\n"));
  return kExitOk;
}

int Commands::DatasetsUpload(const UploadFiles& files, const std::string& name) {
  const bool progress = env_.err_is_terminal && !json();
  // Reading, decompressing and hashing a large file takes a moment: say what is happening.
  if (progress) err_ << "reading " << files.features << " ..." << std::flush;
  absl::StatusOr<core::Dataset> read = ReadUploadDataset(files);
  if (progress) err_ << "\r\033[K" << std::flush;
  DRFM_CLI_ASSIGN_OR_FAIL(const core::Dataset data, std::move(read));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  if (progress) err_ << "hashing " << data.rows() << " x " << data.cols() << " ..." << std::flush;
  DatasetUpload upload(name.empty() ? DatasetNameFromPath(files.features) : name, data);
  if (progress) err_ << "\r\033[K" << std::flush;
  const absl::Time start = absl::Now();
  absl::Time last_draw = absl::InfinitePast();
  DRFM_CLI_ASSIGN_OR_FAIL(
      const v1::Dataset stored, c->UploadDataset(upload, [&](int64_t sent, int64_t total) {
        const absl::Time now = absl::Now();
        if (!progress || (now - last_draw < absl::Milliseconds(100) && sent < total)) return;
        last_draw = now;
        err_ << "\r\033[K" << TransferLine("upload", sent, total, now - start) << std::flush;
      }));
  if (progress) err_ << "\n";
  if (json()) {
    out_ << ToJson(stored, true);
    return kExitOk;
  }
  const std::string& requested = upload.header().header().name();
  out_ << "uploaded " << stored.name() << " as " << stored.id() << ": " << stored.rows()
       << " rows x " << stored.cols() << " features, " << stored.num_classes() << " classes, "
       << FormatBytes(static_cast<double>(stored.size_bytes())) << "\n";
  if (stored.name() != requested) {
    out_ << "(the same content was already stored as " << stored.name() << ")\n";
  }
  return kExitOk;
}

int Commands::Predict(const PredictFlags& flags) {
  std::vector<int32_t> truth;
  DRFM_CLI_ASSIGN_OR_FAIL(const core::RowMatrixF features,
                          ReadPredictFeatures(flags.file, flags.label_column, &truth));
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  DRFM_CLI_ASSIGN_OR_FAIL(const v1::Model model, c->GetModel(flags.model, flags.version));
  if (features.cols() != model.input_dim()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "model ", model.name(), " v", model.version(), " expects rows of ", model.input_dim(),
        " features (shape N x ", model.input_dim(), "), but ", flags.file, " has ", features.cols(),
        " columns (shape ", features.rows(), " x ", features.cols(), ")")));
  }
  if (flags.layer < 0 || flags.layer > model.layers()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--layer must be in [0, ", model.layers(), "] for model ", model.name(), " v",
                     model.version(), " (0 = labels from the readout); got ", flags.layer)));
  }
  PredictTarget target;
  target.model = model.name();
  target.version = model.version();  // every batch from the same version
  target.return_scores = flags.scores;
  target.layer = flags.layer;
  const int64_t rows = features.rows();
  const int64_t batch = flags.batch_rows > 0 ? flags.batch_rows : PredictBatchRows(features.cols());
  PredictionCsv csv(flags.scores, flags.layer);
  v1::PredictResponse merged;
  auto add = [&](const v1::PredictResponse& response) -> absl::Status {
    DRFM_RETURN_IF_ERROR(csv.Add(response));
    if (json()) {
      merged.mutable_labels()->MergeFrom(response.labels());
      merged.mutable_scores()->MergeFrom(response.scores());
      merged.mutable_representation()->append(response.representation());
      *merged.mutable_model() = response.model();
      merged.set_rows(merged.rows() + response.rows());
      merged.set_classes(response.classes());
      merged.set_representation_cols(response.representation_cols());
    }
    return absl::OkStatus();
  };
  const bool progress = env_.err_is_terminal && rows > batch;
  const absl::Time start = absl::Now();
  if (rows <= batch) {
    DRFM_CLI_ASSIGN_OR_FAIL(const v1::PredictResponse response,
                            c->Predict(MakePredictRequest(target, features, 0, rows)));
    DRFM_CLI_RETURN_IF_ERROR(add(response));
  } else {
    int64_t next = 0;
    DRFM_CLI_RETURN_IF_ERROR(c->PredictStream(
        [&](v1::PredictRequest* request) {
          if (next >= rows) return false;
          const int64_t count = std::min(batch, rows - next);
          *request = MakePredictRequest(target, features, next, count);
          next += count;
          return true;
        },
        [&](const v1::PredictResponse& response) {
          DRFM_RETURN_IF_ERROR(add(response));
          if (progress) {
            err_ << "\r\033[K"
                 << TransferLine("predict", csv.rows() * features.cols() * 4,
                                 rows * features.cols() * 4, absl::Now() - start)
                 << std::flush;
          }
          return absl::OkStatus();
        }));
    if (progress) err_ << "\n";
  }
  if (csv.rows() != rows) {
    return Fail(absl::InternalError(
        absl::StrCat("the server answered ", csv.rows(), " of ", rows, " rows")));
  }
  if (!flags.out.empty()) DRFM_CLI_RETURN_IF_ERROR(WriteTextFile(flags.out, csv.text()));
  if (json()) {
    out_ << ToJson(merged, true);
  } else if (flags.out.empty()) {
    out_ << csv.text();
  } else {
    out_ << "wrote " << rows << (flags.layer == 0 ? " predictions" : " representations")
         << " of model " << model.name() << " v" << model.version() << " to " << flags.out << "\n";
  }
  if (!truth.empty() && flags.layer == 0) {
    int64_t correct = 0;
    for (size_t i = 0; i < truth.size(); ++i) correct += csv.labels()[i] == truth[i];
    err_ << absl::StrFormat("accuracy %.4f (%d of %d rows match column %d of %s)\n",
                            static_cast<double>(correct) / static_cast<double>(rows), correct, rows,
                            *flags.label_column, flags.file);
  }
  return kExitOk;
}

int Commands::Health(const std::string& service, bool wait) {
  DRFM_CLI_ASSIGN_OR_FAIL(Client * c, client());
  absl::StatusOr<ServingStatus> checked = c->CheckHealth(service, wait);
  if (wait && checked.status().code() == absl::StatusCode::kDeadlineExceeded) {
    checked = absl::UnavailableError(absl::StrCat("no server answered at ", globals_.server,
                                                  " within ", globals_.timeout_seconds, " s"));
  }
  DRFM_CLI_ASSIGN_OR_FAIL(const ServingStatus status, std::move(checked));
  const std::string name(ServingStatusName(status));
  if (json()) {
    out_ << "{\n  \"status\": \"" << name << "\"\n}\n";
  } else {
    out_ << (service.empty() ? std::string("server") : service) << " at " << globals_.server << ": "
         << name << "\n";
  }
  return status == ServingStatus::kServing ? kExitOk : kExitError;
}

#undef DRFM_CLI_ASSIGN_OR_FAIL
#undef DRFM_CLI_ASSIGN_OR_FAIL_IMPL_
#undef DRFM_CLI_RETURN_IF_ERROR

void AddListFlags(CLI::App* command, ListFlags* flags, std::string_view what) {
  command
      ->add_option("--page-size", flags->page_size,
                   absl::StrCat(std::string(what), " per page (0 = the server's default, 50)"))
      ->capture_default_str();
  command->add_option("--page-token", flags->page_token,
                      "continue after a previous page (its next_page_token)");
  command->add_flag("--all", flags->all, "follow every page");
}

}  // namespace

namespace {

// --train, --test and their limits and offsets (SubmitFlags).
void AddSliceFlags(CLI::App* command, SubmitFlags* f) {
  command
      ->add_option("--train", f->train,
                   "training dataset: id, name, fashion-mnist:train or synthetic:...")
      ->required();
  AddOptional(command, "--train-limit", &f->train_limit, "use the first N training rows (0 = all)",
              "0");
  AddOptional(command, "--train-offset", &f->train_offset, "skip this many training rows first",
              "0");
  command->add_option("--test", f->test, "test dataset (reported test accuracies use it)");
  AddOptional(command, "--test-limit", &f->test_limit, "use the first N test rows (0 = all)", "0");
  AddOptional(command, "--test-offset", &f->test_offset, "skip this many test rows first", "0");
}

// --model, --priority, --request-id and --label (SubmitFlags).
void AddBookkeepingFlags(CLI::App* command, SubmitFlags* f) {
  command->add_option("--model", f->model, "store the model as the next version of NAME")
      ->default_str("the job id");
  AddOptional(command, "--priority", &f->priority, "scheduling priority in [-1000, 1000]", "0");
  command->add_option("--request-id", f->request_id,
                      "idempotency key: resubmitting it returns the same job");
  command->add_option("--label", f->labels, "a key=value label for bookkeeping (repeatable)")
      ->allow_extra_args(false);
}

// The SubmitFlags fields of a SubmitFitRequest or SubmitMlpFitRequest.
template <typename Request>
absl::Status SetSubmission(const SubmitFlags& f, Request* request) {
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::DatasetSlice> train,
                        MakeSlice(f.train, f.train_limit, f.train_offset, "--train", true));
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::DatasetSlice> test,
                        MakeSlice(f.test, f.test_limit, f.test_offset, "--test", false));
  *request->mutable_train() = *std::move(train);
  if (test) *request->mutable_test() = *std::move(test);
  request->set_model_name(f.model);
  if (f.priority) request->set_priority(*f.priority);
  request->set_request_id(f.request_id);
  return SetLabels(f.labels, request->mutable_labels());
}

}  // namespace

void AddFitFlags(CLI::App* command, FitFlags* f, bool with_watch_options) {
  AddSliceFlags(command, f);
  AddOptional(command, "--layers", &f->layers, "feature layers L (the readout is layer L+1)", "3");
  AddOptional(command, "--kernel", &f->kernel, "kernel: laplace|gaussian", "laplace")
      ->check(CLI::IsMember({"laplace", "gaussian"}, CLI::ignore_case));
  AddOptional(command, "--bandwidth", &f->bandwidth, "kernel bandwidth L", "2.0");
  AddOptional(command, "--ridge", &f->ridge, "ridge lambda", "1e-3");
  AddOptional(command, "--width", &f->width, "random feature width D", "512");
  AddOptional(command, "--feature-map", &f->feature_map, "random feature map: relu|cosine", "relu")
      ->check(CLI::IsMember({"relu", "cosine"}, CLI::ignore_case));
  AddOptional(command, "--rfm-iterations", &f->rfm_iterations, "RFM iterations T per layer", "1");
  AddOptional(command, "--precision", &f->precision, "float32|float64", "float32")
      ->check(CLI::IsMember({"float32", "float64"}, CLI::ignore_case));
  AddOptional(command, "--seed", &f->seed, "seed of every random draw", "drawn by the server")
      ->check(CLI::NonNegativeNumber);
  AddOptional(command, "--agop-samples", &f->agop_samples,
              "training rows the AGOP gradients are taken at (0 = all)", "0");
  AddOptional(command, "--agop-power", &f->agop_power, "power p of the projection M^p", "0.5");
  AddOptional(command, "--agop-normalize", &f->agop_normalize, "AGOP scaling: max|none", "max")
      ->check(CLI::IsMember({"max", "none"}, CLI::ignore_case));
  AddOptional(command, "--agop-method", &f->agop_method, "AGOP formula: auto|direct|gram", "auto")
      ->check(CLI::IsMember({"auto", "direct", "gram"}, CLI::ignore_case));
  AddOptional(command, "--rff-scale", &f->rff_scale, "Cauchy scale of the cosine map", "0.5");
  command
      ->add_flag_function(
          "--standardize,!--no-standardize", [f](int64_t count) { f->standardize = count > 0; },
          "standardize features with the training statistics")
      ->default_str("true");
  AddOptional(command, "--label-encoding", &f->label_encoding, "targets: plus_minus_one|one_hot",
              "plus_minus_one")
      ->check(CLI::IsMember({"plus_minus_one", "one_hot"}, CLI::ignore_case));
  AddOptional(command, "--top-eigenvalues", &f->top_eigenvalues,
              "AGOP eigenvalues per layer report", "10");
  AddBookkeepingFlags(command, f);
  if (with_watch_options) {
    command->add_flag("--detach", f->detach, "submit and exit without watching");
    command->add_option("--plot", f->plot,
                        "when the job ends, write the collapse curves to FILE.svg");
  }
  command->footer(
      "Options not given stay unset in the request and the server applies its defaults, shown "
      "after '=' (DEEP_RFM.md). Global options (--server, --output, --token-file, TLS): see "
      "drfm --help.");
}

absl::StatusOr<v1::SubmitFitRequest> BuildSubmitFitRequest(const FitFlags& f) {
  v1::SubmitFitRequest request;
  DRFM_RETURN_IF_ERROR(SetSubmission(f, &request));
  v1::FitConfig* c = request.mutable_config();
  if (f.layers) c->set_layers(*f.layers);
  using Config = v1::FitConfig;
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::Kernel>(
      "--kernel", f.kernel, {{"laplace", Config::LAPLACE}, {"gaussian", Config::GAUSSIAN}},
      [c](Config::Kernel v) { c->set_kernel(v); }));
  if (f.bandwidth) c->set_bandwidth(*f.bandwidth);
  if (f.ridge) c->set_ridge(*f.ridge);
  if (f.width) c->set_width(*f.width);
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::FeatureMap>(
      "--feature-map", f.feature_map, {{"relu", Config::RELU}, {"cosine", Config::COSINE}},
      [c](Config::FeatureMap v) { c->set_feature_map(v); }));
  if (f.rfm_iterations) c->set_rfm_iterations(*f.rfm_iterations);
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::Precision>(
      "--precision", f.precision, {{"float32", Config::FLOAT32}, {"float64", Config::FLOAT64}},
      [c](Config::Precision v) { c->set_precision(v); }));
  if (f.seed) c->set_seed(*f.seed);
  if (f.agop_samples) c->set_agop_samples(*f.agop_samples);
  if (f.agop_power) c->set_agop_power(*f.agop_power);
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::AgopNormalize>(
      "--agop-normalize", f.agop_normalize, {{"max", Config::MAX}, {"none", Config::NONE}},
      [c](Config::AgopNormalize v) { c->set_agop_normalize(v); }));
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::AgopMethod>(
      "--agop-method", f.agop_method,
      {{"auto", Config::AUTO}, {"direct", Config::DIRECT}, {"gram", Config::GRAM}},
      [c](Config::AgopMethod v) { c->set_agop_method(v); }));
  if (f.rff_scale) c->set_rff_scale(*f.rff_scale);
  if (f.standardize) c->set_standardize(*f.standardize);
  DRFM_RETURN_IF_ERROR(ApplyEnumFlag<Config::LabelEncoding>(
      "--label-encoding", f.label_encoding,
      {{"plus_minus_one", Config::PLUS_MINUS_ONE}, {"one_hot", Config::ONE_HOT}},
      [c](Config::LabelEncoding v) { c->set_label_encoding(v); }));
  if (f.top_eigenvalues) c->set_top_eigenvalues(*f.top_eigenvalues);
  return request;
}

void AddMlpFlags(CLI::App* command, MlpFlags* f) {
  AddSliceFlags(command, f);
  AddOptional(command, "--depth", &f->depth, "hidden layers L (the output layer is L+1)", "3")
      ->check(CLI::Range(1, 32));
  AddOptional(command, "--width", &f->width, "hidden width k", "512")->check(CLI::Range(1, 16384));
  AddOptional(command, "--init-gain", &f->init_gain,
              "gain g of the Xavier-uniform init of the hidden weights (small: feature learning)",
              "0.1")
      ->check(CLI::PositiveNumber);
  AddOptional(command, "--lr,--learning-rate", &f->learning_rate, "Adam learning rate", "5e-5")
      ->check(CLI::PositiveNumber);
  AddOptional(command, "--epochs", &f->epochs, "training epochs (0: measure the init only)", "250")
      ->check(CLI::Range(0, 100000));
  AddOptional(command, "--batch-size", &f->batch_size, "mini-batch rows", "128")
      ->check(CLI::Range(1, 1048576));
  AddOptional(command, "--measure-every", &f->measure_every,
              "measure every N epochs and after the last (0: only after the last)", "10")
      ->check(CLI::NonNegativeNumber);
  AddOptional(command, "--seed", &f->seed, "seed of the init and the shuffling",
              "drawn by the server")
      ->check(CLI::NonNegativeNumber);
  AddOptional(command, "--weight-decay", &f->weight_decay, "Adam weight decay (L2)", "0")
      ->check(CLI::NonNegativeNumber);
  command
      ->add_flag_function(
          "--standardize,!--no-standardize", [f](int64_t count) { f->standardize = count > 0; },
          "standardize inputs with the training statistics")
      ->default_str("true");
  command
      ->add_flag_function(
          "--row-normalize,!--no-row-normalize",
          [f](int64_t count) { f->row_normalize = count > 0; },
          "scale every input row to unit norm")
      ->default_str("true");
  AddBookkeepingFlags(command, f);
  command->add_flag("--detach", f->detach, "submit and exit without watching");
  command->add_option("--plot", f->plot,
                      "when the job ends, write per-layer nc1 (none/right/left) and NFA curves "
                      "across epochs to FILE.svg");
  command->footer(
      "Options not given stay unset in the request and the server applies its defaults, shown "
      "after '=' (DNN.md). Global options (--server, --output, --token-file, TLS): see "
      "drfm --help.");
}

absl::StatusOr<v1::SubmitMlpFitRequest> BuildSubmitMlpFitRequest(const MlpFlags& f) {
  v1::SubmitMlpFitRequest request;
  DRFM_RETURN_IF_ERROR(SetSubmission(f, &request));
  v1::MlpConfig* c = request.mutable_config();
  if (f.depth) c->set_depth(*f.depth);
  if (f.width) c->set_width(*f.width);
  if (f.init_gain) c->set_init_gain(*f.init_gain);
  if (f.learning_rate) c->set_learning_rate(*f.learning_rate);
  if (f.epochs) c->set_epochs(*f.epochs);
  if (f.batch_size) c->set_batch_size(*f.batch_size);
  if (f.measure_every) c->set_measure_every(*f.measure_every);
  if (f.seed) c->set_seed(*f.seed);
  if (f.weight_decay) c->set_weight_decay(*f.weight_decay);
  if (f.standardize) c->set_standardize(*f.standardize);
  if (f.row_normalize) c->set_row_normalize(*f.row_normalize);
  return request;
}

void AddAnalyzeFlags(CLI::App* command, AnalyzeFlags* f) {
  command->add_option("MODEL", f->model, "name of a stored MLP (trained or imported)")->required();
  AddOptional(command, "--version", &f->version, "model version", "latest")
      ->check(CLI::PositiveNumber);
  command
      ->add_option("--data", f->data,
                   "dataset to measure on (its labels define the classes): id, name, "
                   "fashion-mnist:test or synthetic:...")
      ->required();
  AddOptional(command, "--data-limit", &f->data_limit, "use the first N rows (0 = all)", "0");
  AddOptional(command, "--data-offset", &f->data_offset, "skip this many rows first", "0");
  AddOptional(command, "--priority", &f->priority, "scheduling priority in [-1000, 1000]", "0");
  command->add_option("--request-id", f->request_id,
                      "idempotency key: resubmitting it returns the same job");
  command->add_option("--label", f->labels, "a key=value label for bookkeeping (repeatable)")
      ->allow_extra_args(false);
  command->add_flag("--detach", f->detach, "submit and exit without watching");
  command->add_option("--plot", f->plot,
                      "when the job ends, write nc1 (none/right/left) and NFA by layer to "
                      "FILE.svg");
}

absl::StatusOr<v1::SubmitAnalysisRequest> BuildSubmitAnalysisRequest(const AnalyzeFlags& f) {
  v1::SubmitAnalysisRequest request;
  if (f.model.empty()) return absl::InvalidArgumentError("MODEL names the MLP to analyze");
  request.set_model(f.model);
  if (f.version) request.set_version(*f.version);
  DRFM_ASSIGN_OR_RETURN(std::optional<v1::DatasetSlice> data,
                        MakeSlice(f.data, f.data_limit, f.data_offset, "--data", true));
  *request.mutable_data() = *std::move(data);
  if (f.priority) request.set_priority(*f.priority);
  request.set_request_id(f.request_id);
  DRFM_RETURN_IF_ERROR(SetLabels(f.labels, request.mutable_labels()));
  return request;
}

absl::StatusOr<core::Dataset> ReadUploadDataset(const UploadFiles& files) {
  if (files.label_column.has_value() && !files.labels.empty()) {
    return absl::InvalidArgumentError(
        "--label-column and --labels are alternatives: labels come from a CSV column or from a "
        "second file");
  }
  DRFM_ASSIGN_OR_RETURN(const std::string bytes, core::ReadFileBytes(files.features));
  const core::DataFormat format = core::SniffFormat(bytes);
  if (files.label_column.has_value() && format != core::DataFormat::kCsv) {
    return absl::InvalidArgumentError(absl::StrCat("--label-column applies to CSV files; ",
                                                   files.features, " is ",
                                                   std::string(core::DataFormatName(format))));
  }
  core::Dataset data;
  if (!files.labels.empty()) {
    absl::StatusOr<core::RowMatrixF> features = core::ParseFeatures(bytes);
    if (!features.ok()) return WithPath(features.status(), files.features);
    data.features = *std::move(features);
    DRFM_ASSIGN_OR_RETURN(data.labels, core::ReadLabels(files.labels));
    if (static_cast<int64_t>(data.labels.size()) != data.rows()) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.features, " has ", data.rows(), " rows but ", files.labels, " has ",
                       data.labels.size(), " labels; they must match one to one"));
    }
  } else if (format == core::DataFormat::kCsv) {
    absl::StatusOr<core::Dataset> parsed =
        core::ParseCsvDataset(bytes, files.label_column.value_or(core::kLastColumn));
    if (!parsed.ok()) return WithPath(parsed.status(), files.features);
    data = *std::move(parsed);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(files.features, " is a ", std::string(core::DataFormatName(format)),
                     " file of features only: give the labels with --labels FILE"));
  }
  data.num_classes = files.num_classes.value_or(core::InferNumClasses(data.labels));
  data.name = DatasetNameFromPath(files.features);
  const absl::Status valid = core::ValidateDataset(data);
  if (!valid.ok()) return WithPath(valid, files.features);
  return data;
}

std::string DatasetNameFromPath(const std::string& path) {
  std::string name = BaseName(path);
  for (bool stripped = true; stripped;) {
    stripped = false;
    for (const char* ext : {".gz", ".csv", ".npy", ".idx", ".tsv", ".txt"}) {
      if (absl::EndsWithIgnoreCase(name, ext) && name.size() > std::strlen(ext)) {
        name.resize(name.size() - std::strlen(ext));
        stripped = true;
      }
    }
  }
  std::string clean;
  for (char ch : name) {
    const bool ok =
        absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-';
    clean += ok ? ch : '_';
  }
  while (!clean.empty() && !absl::ascii_isalnum(static_cast<unsigned char>(clean.front()))) {
    clean.erase(0, 1);
  }
  if (clean.size() > 128) clean.resize(128);
  return clean.empty() ? "dataset" : clean;
}

absl::StatusOr<core::RowMatrixF> ReadPredictFeatures(const std::string& path,
                                                     std::optional<int> label_column,
                                                     std::vector<int32_t>* labels) {
  if (!label_column.has_value()) return core::ReadFeatures(path);
  DRFM_ASSIGN_OR_RETURN(const std::string bytes, core::ReadFileBytes(path));
  if (core::SniffFormat(bytes) != core::DataFormat::kCsv) {
    return absl::InvalidArgumentError(
        absl::StrCat("--label-column applies to CSV files; ", path, " is ",
                     std::string(core::DataFormatName(core::SniffFormat(bytes)))));
  }
  absl::StatusOr<core::Dataset> data = core::ParseCsvDataset(bytes, *label_column);
  if (!data.ok()) return WithPath(data.status(), path);
  *labels = std::move(data->labels);
  return std::move(data->features);
}

int RunCli(const std::vector<std::string>& args, const CliEnv& env) {
  std::ostream& out = *env.out;
  std::ostream& err = *env.err;
  CLI::App app{
      "drfm: fit Deep Recursive Feature Machines and MLPs on a drfm server, follow them and "
      "measure their neural collapse",
      "drfm"};
  app.require_subcommand(1);
  app.fallthrough();
  app.get_formatter()->column_width(36);

  GlobalFlags g;
  app.add_option("--server", g.server, "server address HOST:PORT")
      ->envname("DRFM_SERVER")
      ->capture_default_str();
  app.add_option("--token-file", g.token_file,
                 "file holding the bearer token (sent as \"authorization: Bearer TOKEN\")")
      ->envname("DRFM_TOKEN_FILE");
  app.add_flag("--tls", g.tls, "use TLS, verifying the server with the system's CAs");
  app.add_option("--tls-ca", g.tls_ca, "PEM CA certificates that verify the server (enables TLS)");
  app.add_option("--tls-cert", g.tls_cert, "PEM client certificate for mutual TLS");
  app.add_option("--tls-key", g.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-server-name", g.tls_server_name,
                 "name to verify in the server's certificate instead of the host");
  app.add_option("-o,--output", g.output, "table|json (protobuf's JSON, proto field names)")
      ->check(CLI::IsMember({"table", "json"}, CLI::ignore_case))
      ->capture_default_str();
  app.add_option("--timeout", g.timeout_seconds, "deadline of each unary call, in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  FitFlags fit_flags;
  CLI::App* fit = app.add_subcommand(
      "fit", "submit a Deep RFM fit and watch it: a progress bar per layer and a growing table");
  AddFitFlags(fit, &fit_flags, /*with_watch_options=*/true);

  FitFlags estimate_flags;
  CLI::App* estimate =
      app.add_subcommand("estimate", "memory and flops a fit would need (no job is created)");
  AddFitFlags(estimate, &estimate_flags, /*with_watch_options=*/false);

  MlpFlags mlp_flags;
  CLI::App* mlp = app.add_subcommand(
      "mlp",
      "train an MLP and watch it: loss, accuracies and per-layer nc1 (none/right/left) and NFA "
      "at each measurement");
  AddMlpFlags(mlp, &mlp_flags);

  AnalyzeFlags analyze_flags;
  CLI::App* analyze = app.add_subcommand(
      "analyze", "measure a stored MLP on a dataset: per-layer nc1 (none/right/left) and NFA");
  AddAnalyzeFlags(analyze, &analyze_flags);

  CLI::App* jobs = app.add_subcommand("jobs", "list, inspect, watch, cancel and delete jobs");
  jobs->require_subcommand(1);
  ListFlags jobs_list_flags;
  CLI::App* jobs_list = jobs->add_subcommand("list", "jobs, newest first");
  AddListFlags(jobs_list, &jobs_list_flags, "jobs");
  jobs_list->add_option("--state", jobs_list_flags.state,
                        "only jobs in this state: queued|running|succeeded|failed|cancelled");
  jobs_list->add_option("--kind", jobs_list_flags.kind,
                        "only jobs of this kind: deep_rfm|mlp|analysis");
  std::string job_id, plot;
  CLI::App* jobs_get = jobs->add_subcommand("get", "a job with its per-layer table");
  jobs_get->add_option("ID", job_id, "job id")->required();
  jobs_get->add_option("--plot", plot, "write the collapse curves to FILE.svg");
  CLI::App* jobs_watch =
      jobs->add_subcommand("watch", "follow a job until it ends (Ctrl-C detaches)");
  jobs_watch->add_option("ID", job_id, "job id")->required();
  jobs_watch->add_option("--plot", plot,
                         "when the job ends, write the collapse curves to FILE.svg");
  CLI::App* jobs_cancel = jobs->add_subcommand("cancel", "ask a queued or running job to stop");
  jobs_cancel->add_option("ID", job_id, "job id")->required();
  CLI::App* jobs_rm = jobs->add_subcommand("rm", "delete a finished job and its events");
  jobs_rm->add_option("ID", job_id, "job id")->required();

  CLI::App* models =
      app.add_subcommand("models", "list, inspect, delete, export and import models");
  models->require_subcommand(1);
  ListFlags models_list_flags;
  CLI::App* models_list = models->add_subcommand("list", "model versions, newest first");
  AddListFlags(models_list, &models_list_flags, "models");
  models_list->add_option("--name", models_list_flags.name, "only versions of this name");
  std::string model_name, export_out;
  std::optional<int64_t> model_version;
  CLI::App* models_get = models->add_subcommand("get", "one model version");
  models_get->add_option("NAME", model_name, "model name")->required();
  AddOptional(models_get, "--version", &model_version, "model version", "latest");
  CLI::App* models_rm = models->add_subcommand("rm", "delete a version, or every version");
  models_rm->add_option("NAME", model_name, "model name")->required();
  AddOptional(models_rm, "--version", &model_version, "the version to delete", "every version");
  CLI::App* models_export =
      models->add_subcommand("export", "download a model as a safetensors file");
  models_export->add_option("NAME", model_name, "model name")->required();
  AddOptional(models_export, "--version", &model_version, "model version", "latest");
  models_export->add_option("--out", export_out, "output file")->default_str("NAME-vN.safetensors");
  std::string import_file, import_name;
  CLI::App* models_import = models->add_subcommand(
      "import", "store an MLP given as a safetensors file (layers.0.weight, ...; DNN.md)");
  models_import->add_option("FILE", import_file, "the .safetensors file (optionally .gz)")
      ->required();
  models_import->add_option("--name", import_name, "store it as the next version of NAME")
      ->required();

  CLI::App* datasets = app.add_subcommand("datasets", "list, inspect, delete and upload datasets");
  datasets->require_subcommand(1);
  ListFlags datasets_list_flags;
  CLI::App* datasets_list = datasets->add_subcommand("list", "datasets, built-in ones included");
  AddListFlags(datasets_list, &datasets_list_flags, "datasets");
  std::string dataset_ref, upload_name;
  CLI::App* datasets_get = datasets->add_subcommand("get", "one dataset");
  datasets_get->add_option("DATASET", dataset_ref, "dataset id or name")->required();
  CLI::App* datasets_rm = datasets->add_subcommand("rm", "delete an uploaded dataset");
  datasets_rm->add_option("DATASET", dataset_ref, "dataset id or name")->required();
  UploadFiles upload_files;
  CLI::App* datasets_upload = datasets->add_subcommand(
      "upload", "upload features (.npy, IDX or CSV, optionally .gz) with their labels");
  datasets_upload->add_option("FILE", upload_files.features, "features file")->required();
  datasets_upload->add_option("--labels", upload_files.labels,
                              "labels file (.npy, IDX or CSV, one integer per row)");
  AddOptional(datasets_upload, "--label-column", &upload_files.label_column,
              "CSV: the column holding the labels, from 0 (-1 = last)", "-1");
  datasets_upload->add_option("--name", upload_name, "dataset name")
      ->default_str("the file name without extensions");
  AddOptional(datasets_upload, "--num-classes", &upload_files.num_classes, "number of classes",
              "max label + 1");

  PredictFlags predict_flags;
  CLI::App* predict = app.add_subcommand(
      "predict", "predict the labels of the rows of a file (CSV: one label per row, in order)");
  predict->add_option("MODEL", predict_flags.model, "model name")->required();
  predict->add_option("FILE", predict_flags.file, "features: .npy, IDX or CSV, optionally .gz")
      ->required();
  predict->add_option("--out", predict_flags.out, "write the CSV to FILE.csv")
      ->default_str("stdout");
  predict->add_flag("--scores", predict_flags.scores, "also write the class scores");
  AddOptional(predict, "--version", &predict_flags.version, "model version", "latest");
  predict
      ->add_option("--layer", predict_flags.layer,
                   "0: labels; L >= 1: the representation after layer L")
      ->capture_default_str();
  AddOptional(predict, "--label-column", &predict_flags.label_column,
              "CSV: drop this label column and report the accuracy against it");
  predict->add_option("--batch-rows", predict_flags.batch_rows, "rows per request")
      ->default_str("about 1 MiB of features");

  std::string health_service;
  bool health_wait = false;
  CLI::App* health = app.add_subcommand("health", "is the server up and serving?");
  health->add_option("--service", health_service,
                     "service to check, e.g. drfm.v1.JobService (empty = the process)");
  health->add_flag("--wait", health_wait, "wait up to --timeout for the server to come up");

  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e, out, err);
    return code == 0 ? kExitOk : kExitUsage;
  }
  g.output = Lower(g.output);

  Commands commands(env, g);
  if (fit->parsed()) return commands.Fit(fit_flags);
  if (estimate->parsed()) return commands.Estimate(estimate_flags);
  if (mlp->parsed()) return commands.Mlp(mlp_flags);
  if (analyze->parsed()) return commands.Analyze(analyze_flags);
  if (jobs_list->parsed()) return commands.JobsList(jobs_list_flags);
  if (jobs_get->parsed()) return commands.JobsGet(job_id, plot);
  if (jobs_watch->parsed()) return commands.JobsWatch(job_id, plot);
  if (jobs_cancel->parsed()) return commands.JobsCancel(job_id);
  if (jobs_rm->parsed()) return commands.JobsRm(job_id);
  if (models_list->parsed()) return commands.ModelsList(models_list_flags);
  if (models_get->parsed()) return commands.ModelsGet(model_name, model_version);
  if (models_rm->parsed()) return commands.ModelsRm(model_name, model_version);
  if (models_export->parsed()) return commands.ModelsExport(model_name, model_version, export_out);
  if (models_import->parsed()) return commands.ModelsImport(import_file, import_name);
  if (datasets_list->parsed()) return commands.DatasetsList(datasets_list_flags);
  if (datasets_get->parsed()) return commands.DatasetsGet(dataset_ref);
  if (datasets_rm->parsed()) return commands.DatasetsRm(dataset_ref);
  if (datasets_upload->parsed()) return commands.DatasetsUpload(upload_files, upload_name);
  if (predict->parsed()) return commands.Predict(predict_flags);
  if (health->parsed()) return commands.Health(health_service, health_wait);
  err << app.help();
  return kExitUsage;
}

}  // namespace drfm::client
