// Tests of the command line (client/cli.h): fit flags into the SubmitFitRequest (unset stays
// unset), --help of every command, the input files of upload and predict, and whole commands run
// through RunCli against the in-process fake server: the watched fit (with a dropped
// connection), JSON output, exit statuses and the server's messages, upload chunks, predict CSV
// and batching, the dimension check, plots, export and health.
#include "client/cli.h"

#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/payload.h"
#include "client/render.h"
#include "gtest/gtest.h"
#include "tests/client/fake_server.h"
#include "tests/text_util.h"

namespace drfm::client {
namespace {

using testing::FakeServer;
using testing::MakeScriptedJob;

std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(::testing::TempDir(), "drfm_cli_test_", info->name(), "_", name);
}

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

// A version 1.0 .npy file of `payload` with the given dtype and shape.
std::string Npy(const std::string& descr, const std::string& shape, const std::string& payload) {
  std::string header =
      absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + payload;
}

absl::StatusOr<v1::SubmitFitRequest> ParseFit(const std::vector<std::string>& args) {
  CLI::App app;
  FitFlags flags;
  AddFitFlags(&app, &flags, /*with_watch_options=*/true);
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return BuildSubmitFitRequest(flags);
}

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

CliRun RunDrfm(FakeServer& server, const std::vector<std::string>& args, bool terminal = false) {
  std::ostringstream out, err;
  CliEnv env;
  env.out = &out;
  env.err = &err;
  env.out_is_terminal = terminal;
  env.connect =
      [&server](const ConnectionOptions& options) -> absl::StatusOr<std::unique_ptr<Client>> {
    return server.NewClient(options);
  };
  env.watch_initial_backoff = absl::Milliseconds(1);
  const int code = RunCli(args, env);
  return {code, out.str(), err.str()};
}

template <typename Message>
Message FromJson(const std::string& json) {
  Message message;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status.message() << "\n" << json;
  return message;
}

void ScriptJob(FakeServer& server, int layers, v1::Job::State state) {
  v1::Job job;
  std::vector<v1::JobEvent> events;
  MakeScriptedJob(layers, state, &job, &events);
  server.jobs.SetJob(job, events);
}

TEST(FitFlagsTest, UnsetFlagsStayUnsetInTheRequest) {
  auto request = ParseFit({"--train", "fashion-mnist:train"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->train().dataset(), "fashion-mnist:train");
  EXPECT_EQ(request->train().limit(), 0);
  EXPECT_FALSE(request->has_test());
  const v1::FitConfig& c = request->config();
  EXPECT_FALSE(c.has_layers());
  EXPECT_EQ(c.kernel(), v1::FitConfig::KERNEL_UNSPECIFIED);
  EXPECT_FALSE(c.has_bandwidth());
  EXPECT_FALSE(c.has_ridge());
  EXPECT_FALSE(c.has_rfm_iterations());
  EXPECT_EQ(c.feature_map(), v1::FitConfig::FEATURE_MAP_UNSPECIFIED);
  EXPECT_FALSE(c.has_width());
  EXPECT_FALSE(c.has_rff_scale());
  EXPECT_FALSE(c.has_agop_power());
  EXPECT_EQ(c.agop_samples(), 0);
  EXPECT_EQ(c.precision(), v1::FitConfig::PRECISION_UNSPECIFIED);
  EXPECT_FALSE(c.has_standardize());
  EXPECT_FALSE(c.has_seed());
  EXPECT_FALSE(c.has_top_eigenvalues());
  EXPECT_EQ(c.ByteSizeLong(), 0u);  // nothing at all on the wire
  EXPECT_TRUE(request->model_name().empty());
  EXPECT_TRUE(request->labels().empty());
}

TEST(FitFlagsTest, GivenFlagsFillTheRequest) {
  auto request = ParseFit({"--train",
                           "ds-1",
                           "--train-limit",
                           "2000",
                           "--train-offset",
                           "10",
                           "--test",
                           "t",
                           "--test-limit",
                           "500",
                           "--layers",
                           "0",
                           "--kernel",
                           "GAUSSIAN",
                           "--bandwidth",
                           "1.5",
                           "--ridge",
                           "0",
                           "--width",
                           "256",
                           "--feature-map",
                           "cosine",
                           "--rfm-iterations",
                           "2",
                           "--precision",
                           "float64",
                           "--seed",
                           "18446744073709551615",
                           "--agop-samples",
                           "100",
                           "--agop-power",
                           "1",
                           "--agop-normalize",
                           "none",
                           "--agop-method",
                           "gram",
                           "--rff-scale",
                           "0.25",
                           "--no-standardize",
                           "--label-encoding",
                           "one_hot",
                           "--top-eigenvalues",
                           "0",
                           "--model",
                           "fm",
                           "--priority",
                           "-5",
                           "--request-id",
                           "r1",
                           "--label",
                           "team=a",
                           "--label",
                           "note=x=y",
                           "--detach",
                           "--plot",
                           "out.svg"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->train().limit(), 2000);
  EXPECT_EQ(request->train().offset(), 10);
  EXPECT_EQ(request->test().dataset(), "t");
  EXPECT_EQ(request->test().limit(), 500);
  const v1::FitConfig& c = request->config();
  ASSERT_TRUE(c.has_layers());  // 0 is a value, not "unset"
  EXPECT_EQ(c.layers(), 0);
  EXPECT_EQ(c.kernel(), v1::FitConfig::GAUSSIAN);
  EXPECT_EQ(c.bandwidth(), 1.5);
  ASSERT_TRUE(c.has_ridge());
  EXPECT_EQ(c.ridge(), 0);
  EXPECT_EQ(c.width(), 256);
  EXPECT_EQ(c.feature_map(), v1::FitConfig::COSINE);
  EXPECT_EQ(c.rfm_iterations(), 2);
  EXPECT_EQ(c.precision(), v1::FitConfig::FLOAT64);
  EXPECT_EQ(c.seed(), 18446744073709551615ull);
  EXPECT_EQ(c.agop_samples(), 100);
  EXPECT_EQ(c.agop_power(), 1);
  EXPECT_EQ(c.agop_normalize(), v1::FitConfig::NONE);
  EXPECT_EQ(c.agop_method(), v1::FitConfig::GRAM);
  EXPECT_EQ(c.rff_scale(), 0.25);
  ASSERT_TRUE(c.has_standardize());
  EXPECT_FALSE(c.standardize());
  EXPECT_EQ(c.label_encoding(), v1::FitConfig::ONE_HOT);
  ASSERT_TRUE(c.has_top_eigenvalues());
  EXPECT_EQ(c.top_eigenvalues(), 0);
  EXPECT_EQ(request->model_name(), "fm");
  EXPECT_EQ(request->priority(), -5);
  EXPECT_EQ(request->request_id(), "r1");
  EXPECT_EQ(request->labels().at("team"), "a");
  EXPECT_EQ(request->labels().at("note"), "x=y");
}

TEST(FitFlagsTest, StandardizeCanBeAskedForExplicitly) {
  auto request = ParseFit({"--train", "x", "--standardize"});
  ASSERT_TRUE(request.ok());
  ASSERT_TRUE(request->config().has_standardize());
  EXPECT_TRUE(request->config().standardize());
}

TEST(FitFlagsTest, RejectsBadValues) {
  EXPECT_FALSE(ParseFit({}).ok());  // --train is required
  EXPECT_FALSE(ParseFit({"--train", "x", "--kernel", "cubic"}).ok());
  EXPECT_FALSE(ParseFit({"--train", "x", "--layers", "three"}).ok());
  EXPECT_FALSE(ParseFit({"--train", "x", "--seed", "-1"}).ok());
  auto label = ParseFit({"--train", "x", "--label", "novalue"});
  EXPECT_EQ(label.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(label.status().message(), "key=value"));
  EXPECT_FALSE(ParseFit({"--train", "x", "--label", "=v"}).ok());
  auto limit = ParseFit({"--train", "x", "--test-limit", "5"});
  EXPECT_TRUE(absl::StrContains(limit.status().message(), "--test"));
}

absl::StatusOr<v1::SubmitMlpFitRequest> ParseMlp(const std::vector<std::string>& args) {
  CLI::App app;
  MlpFlags flags;
  AddMlpFlags(&app, &flags);
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return BuildSubmitMlpFitRequest(flags);
}

absl::StatusOr<v1::SubmitAnalysisRequest> ParseAnalyze(const std::vector<std::string>& args) {
  CLI::App app;
  AnalyzeFlags flags;
  AddAnalyzeFlags(&app, &flags);
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return BuildSubmitAnalysisRequest(flags);
}

TEST(MlpFlagsTest, UnsetFlagsStayUnsetInTheRequest) {
  auto request = ParseMlp({"--train", "fashion-mnist:train"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->train().dataset(), "fashion-mnist:train");
  EXPECT_FALSE(request->has_test());
  EXPECT_EQ(request->config().ByteSizeLong(), 0u);  // every MlpConfig field: the server's default
  EXPECT_TRUE(request->model_name().empty());
  EXPECT_TRUE(request->labels().empty());
}

TEST(MlpFlagsTest, GivenFlagsFillTheRequest) {
  auto request = ParseMlp({"--train",
                           "ds-1",
                           "--train-limit",
                           "300",
                           "--train-offset",
                           "5",
                           "--test",
                           "fashion-mnist:test",
                           "--test-limit",
                           "100",
                           "--depth",
                           "2",
                           "--width",
                           "64",
                           "--init-gain",
                           "0.05",
                           "--lr",
                           "1e-3",
                           "--epochs",
                           "0",
                           "--batch-size",
                           "32",
                           "--measure-every",
                           "0",
                           "--seed",
                           "7",
                           "--weight-decay",
                           "0",
                           "--no-standardize",
                           "--no-row-normalize",
                           "--model",
                           "net",
                           "--priority",
                           "3",
                           "--request-id",
                           "r9",
                           "--label",
                           "exp=nc",
                           "--detach",
                           "--plot",
                           "p.svg"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->train().limit(), 300);
  EXPECT_EQ(request->train().offset(), 5);
  EXPECT_EQ(request->test().dataset(), "fashion-mnist:test");
  EXPECT_EQ(request->test().limit(), 100);
  const v1::MlpConfig& c = request->config();
  EXPECT_EQ(c.depth(), 2);
  EXPECT_EQ(c.width(), 64);
  EXPECT_EQ(c.init_gain(), 0.05);
  EXPECT_EQ(c.learning_rate(), 1e-3);
  ASSERT_TRUE(c.has_epochs());  // 0 is a value: measure the initialization only
  EXPECT_EQ(c.epochs(), 0);
  EXPECT_EQ(c.batch_size(), 32);
  ASSERT_TRUE(c.has_measure_every());
  EXPECT_EQ(c.measure_every(), 0);
  EXPECT_EQ(c.seed(), 7u);
  ASSERT_TRUE(c.has_weight_decay());
  ASSERT_TRUE(c.has_standardize());
  EXPECT_FALSE(c.standardize());
  ASSERT_TRUE(c.has_row_normalize());
  EXPECT_FALSE(c.row_normalize());
  EXPECT_EQ(request->model_name(), "net");
  EXPECT_EQ(request->priority(), 3);
  EXPECT_EQ(request->request_id(), "r9");
  EXPECT_EQ(request->labels().at("exp"), "nc");
  // The long name of --lr.
  auto long_name = ParseMlp({"--train", "x", "--learning-rate", "0.5"});
  ASSERT_TRUE(long_name.ok());
  EXPECT_EQ(long_name->config().learning_rate(), 0.5);
}

TEST(MlpFlagsTest, RejectsValuesOutsideTheDocumentedRanges) {
  EXPECT_FALSE(ParseMlp({}).ok());  // --train is required
  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"--depth", "0"},
                                             {"--depth", "33"},
                                             {"--width", "0"},
                                             {"--width", "16385"},
                                             {"--init-gain", "0"},
                                             {"--lr", "-1e-3"},
                                             {"--lr", "fast"},
                                             {"--epochs", "-1"},
                                             {"--batch-size", "0"},
                                             {"--measure-every", "-2"},
                                             {"--seed", "-1"},
                                             {"--weight-decay", "-0.1"},
                                             {"--kernel", "laplace"}}) {  // a fit flag
    std::vector<std::string> args = {"--train", "x"};
    args.insert(args.end(), bad.begin(), bad.end());
    EXPECT_FALSE(ParseMlp(args).ok()) << absl::StrJoin(bad, " ");
  }
  auto label = ParseMlp({"--train", "x", "--label", "novalue"});
  EXPECT_TRUE(absl::StrContains(label.status().message(), "key=value")) << label.status();
  auto limit = ParseMlp({"--train", "x", "--test-offset", "5"});
  EXPECT_TRUE(absl::StrContains(limit.status().message(), "need --test DATASET")) << limit.status();
}

TEST(AnalyzeFlagsTest, FillsTheRequest) {
  auto request = ParseAnalyze({"net", "--data", "fashion-mnist:test", "--data-limit", "200",
                               "--data-offset", "10", "--version", "3", "--label", "a=b"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model(), "net");
  ASSERT_TRUE(request->has_version());
  EXPECT_EQ(request->version(), 3);
  EXPECT_EQ(request->data().dataset(), "fashion-mnist:test");
  EXPECT_EQ(request->data().limit(), 200);
  EXPECT_EQ(request->data().offset(), 10);
  EXPECT_EQ(request->labels().at("a"), "b");
  auto latest = ParseAnalyze({"net", "--data", "d"});
  ASSERT_TRUE(latest.ok());
  EXPECT_FALSE(latest->has_version());               // the server resolves the latest
  EXPECT_FALSE(ParseAnalyze({"net"}).ok());          // --data is required
  EXPECT_FALSE(ParseAnalyze({"--data", "d"}).ok());  // MODEL is required
  EXPECT_FALSE(ParseAnalyze({"net", "--data", "d", "--version", "0"}).ok());  // versions >= 1
}

TEST(CliTest, EveryCommandHasHelpWithDefaults) {
  FakeServer server;
  const std::vector<std::vector<std::string>> commands = {{},
                                                          {"fit"},
                                                          {"estimate"},
                                                          {"jobs"},
                                                          {"jobs", "list"},
                                                          {"jobs", "get"},
                                                          {"jobs", "watch"},
                                                          {"jobs", "cancel"},
                                                          {"jobs", "rm"},
                                                          {"models"},
                                                          {"models", "list"},
                                                          {"models", "get"},
                                                          {"models", "rm"},
                                                          {"models", "export"},
                                                          {"models", "import"},
                                                          {"mlp"},
                                                          {"analyze"},
                                                          {"datasets"},
                                                          {"datasets", "list"},
                                                          {"datasets", "get"},
                                                          {"datasets", "rm"},
                                                          {"datasets", "upload"},
                                                          {"predict"},
                                                          {"health"}};
  for (std::vector<std::string> command : commands) {
    command.push_back("--help");
    const CliRun run = RunDrfm(server, command);
    EXPECT_EQ(run.code, kExitOk) << absl::StrJoin(command, " ");
    EXPECT_TRUE(absl::StrContains(run.out, "Usage: ")) << run.out;
  }
  const std::string fit = RunDrfm(server, {"fit", "--help"}).out;
  for (const char* shown :
       {"--layers INT=3", "--bandwidth FLOAT=2.0", "--ridge FLOAT=1e-3", "--width INT=512",
        "--kernel TEXT:{laplace,gaussian}=laplace", "--detach", "--plot"}) {
    EXPECT_TRUE(absl::StrContains(fit, shown)) << shown << "\n" << fit;
  }
  const std::string mlp = RunDrfm(server, {"mlp", "--help"}).out;
  for (const char* shown :
       {"--depth INT:INT in [1 - 32]=3", "--width INT:INT in [1 - 16384]=512",
        "--init-gain FLOAT:POSITIVE=0.1", "--lr,--learning-rate FLOAT:POSITIVE=5e-5",
        "--epochs INT:INT in [0 - 100000]=250", "--batch-size", "--measure-every", "--seed",
        "--detach", "--plot", "--model"}) {
    EXPECT_TRUE(absl::StrContains(mlp, shown)) << shown << "\n" << mlp;
  }
  const std::string top = RunDrfm(server, {"--help"}).out;
  EXPECT_TRUE(absl::StrContains(top, "--server TEXT=localhost:50051")) << top;
  EXPECT_TRUE(absl::StrContains(top, "DRFM_SERVER")) << top;
}

TEST(CliTest, UsageErrorsExitWithTwo) {
  FakeServer server;
  EXPECT_EQ(RunDrfm(server, {}).code, kExitUsage);
  EXPECT_EQ(RunDrfm(server, {"frobnicate"}).code, kExitUsage);
  EXPECT_EQ(RunDrfm(server, {"jobs", "get"}).code, kExitUsage);
  EXPECT_EQ(RunDrfm(server, {"--output", "yaml", "health"}).code, kExitUsage);
}

TEST(CliTest, FitWatchesUntilTheEndThroughADroppedConnection) {
  FakeServer server;
  ScriptJob(server, 2, v1::Job::SUCCEEDED);
  server.jobs.DropStreams(1, 5);
  const std::string svg = TempPath("fit.svg");
  const CliRun run = RunDrfm(
      server, {"fit", "--train", "fashion-mnist:train", "--train-limit", "100", "--plot", svg});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(server.jobs.last_submit().train().limit(), 100);
  EXPECT_FALSE(server.jobs.last_submit().config().has_layers());
  EXPECT_EQ(server.jobs.watch_after_sequences(), (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(absl::StrContains(run.out, "connection lost")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, LayerTableHeader())) << run.out;
  // One table row per layer, in order, none twice despite the re-attach.
  std::vector<std::string> rows;
  for (absl::string_view line : absl::StrSplit(run.out, '\n')) {
    if (absl::StartsWith(line, "1 ") || absl::StartsWith(line, "2 ") ||
        absl::StartsWith(line, "readout ")) {
      rows.emplace_back(std::string(line.substr(0, 1)));
    }
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"1", "2", "r"}));
  EXPECT_TRUE(absl::StrContains(run.out, "job job1 SUCCEEDED")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "wrote the collapse plot to " + svg));
  const std::string plot = ReadFile(svg);
  EXPECT_TRUE(absl::StartsWith(plot, "<?xml"));
  size_t curves = 0;
  for (size_t at = plot.find("<polyline"); at != std::string::npos;
       at = plot.find("<polyline", at + 1)) {
    ++curves;
  }
  EXPECT_EQ(curves, 6u);
}

TEST(CliTest, FitWithJsonOutputPrintsTheFinalJob) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"--output", "json", "fit", "--train", "x"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  const v1::Job job = FromJson<v1::Job>(run.out);
  EXPECT_EQ(job.id(), "job1");
  EXPECT_EQ(job.state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(job.reports_size(), 2);
  EXPECT_TRUE(absl::StrContains(run.out, "\"layers_done\""));  // proto field names
  EXPECT_TRUE(absl::StrContains(run.out, "\"state\": \"SUCCEEDED\""));
}

TEST(CliTest, AFailedJobExitsNonZeroWithItsError) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::FAILED);
  const CliRun run = RunDrfm(server, {"fit", "--train", "x"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "job job1 FAILED: the kernel solve diverged")) << run.err;
  const CliRun json = RunDrfm(server, {"fit", "--train", "x", "-o", "json"});
  EXPECT_EQ(json.code, kExitError);
  EXPECT_EQ(FromJson<v1::Job>(json.out).state(), v1::Job::FAILED);
}

TEST(CliTest, DetachedFitPrintsTheJobWithoutWatching) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"fit", "--train", "x", "--detach"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_TRUE(absl::StrContains(run.out, "submitted job job1 (QUEUED)"));
  EXPECT_TRUE(absl::StrContains(run.out, "drfm jobs watch job1"));
  EXPECT_TRUE(server.jobs.watch_after_sequences().empty());
  const CliRun json = RunDrfm(server, {"fit", "--train", "x", "--detach", "--output", "json"});
  EXPECT_EQ(FromJson<v1::Job>(json.out).state(), v1::Job::QUEUED);
}

TEST(CliTest, ServerErrorsArePrintedWithTheirCode) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  CliRun run = RunDrfm(server, {"fit", "--train", "missing"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_EQ(run.err, "error: NOT_FOUND: no dataset named \"missing\"\n");
  run = RunDrfm(server, {"jobs", "rm", "job1"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "FAILED_PRECONDITION: job is RUNNING; cancel it first"));
  run = RunDrfm(server, {"jobs", "watch", "nope"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "no job with id \"nope\""));
}

TEST(CliTest, GlobalFlagsWorkAfterTheSubcommand) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"jobs", "get", "job1", "--output", "json"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_EQ(FromJson<v1::Job>(run.out).id(), "job1");
}

TEST(CliTest, JobsGetShowsTheTableAndWritesThePlot) {
  FakeServer server;
  ScriptJob(server, 2, v1::Job::SUCCEEDED);
  const std::string svg = TempPath("job.svg");
  const CliRun run = RunDrfm(server, {"jobs", "get", "job1", "--plot", svg});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_TRUE(absl::StrContains(run.out, "state:     SUCCEEDED")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "model:     m v1")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, LayerTableHeader()));
  EXPECT_TRUE(absl::StrContains(ReadFile(svg), "class=\"series\""));
}

TEST(CliTest, JobsWatchWithJsonStreamsOneEventPerLine) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"jobs", "watch", "job1", "-o", "json"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  const std::vector<std::string> lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  // QUEUED, RUNNING; layer 1: 4 phases and its report; the readout: 3 phases and its report; done.
  ASSERT_EQ(lines.size(), 2u + 5 + 4 + 1);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(FromJson<v1::JobEvent>(lines[i]).sequence(), static_cast<int64_t>(i + 1));
  }
}

TEST(CliTest, JobsListFollowsPagesWithAll) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  CliRun run = RunDrfm(server, {"jobs", "list"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_TRUE(absl::StartsWith(run.out, "ID    KIND      STATE      LAYERS  MODEL")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.err, "--page-token page2"));
  run = RunDrfm(server, {"jobs", "list", "--all", "-o", "json"});
  const auto list = FromJson<v1::ListJobsResponse>(run.out);
  EXPECT_EQ(list.jobs_size(), 2);
  EXPECT_TRUE(list.next_page_token().empty());
  EXPECT_EQ(RunDrfm(server, {"jobs", "list", "--state", "sleeping"}).code, kExitError);
}

TEST(CliTest, SendsTheTokenFromTheTokenFile) {
  FakeServer server;
  ScriptJob(server, 1, v1::Job::SUCCEEDED);
  const std::string token = WriteFile("token", "tok-123\n");
  EXPECT_EQ(RunDrfm(server, {"--token-file", token, "jobs", "get", "job1"}).code, kExitOk);
  EXPECT_EQ(server.jobs.authorizations().back(), "Bearer tok-123");
  const CliRun missing = RunDrfm(server, {"--token-file", TempPath("none"), "jobs", "get", "job1"});
  EXPECT_EQ(missing.code, kExitError);
  EXPECT_TRUE(absl::StrContains(missing.err, "token file")) << missing.err;
}

TEST(CliTest, EstimatePrintsTheCost) {
  FakeServer server;
  CliRun run = RunDrfm(server, {"estimate", "--train", "x", "--train-limit", "77"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_TRUE(absl::StrContains(run.out, "peak memory:")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "3.0 MiB")) << run.out;
  run = RunDrfm(server, {"estimate", "--train", "x", "--train-limit", "77", "-o", "json"});
  EXPECT_EQ(FromJson<v1::FitEstimate>(run.out).train_rows(), 77);
}

TEST(UploadTest, ReadsACsvWithItsLabelColumn) {
  const std::string csv = WriteFile("toy.csv", "label,a,b\n1,0.5,2\n0,1.5,-1\n2,3,4\n");
  auto data = ReadUploadDataset({csv, "", 0, std::nullopt});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->rows(), 3);
  EXPECT_EQ(data->cols(), 2);
  EXPECT_EQ(data->labels, (std::vector<int32_t>{1, 0, 2}));
  EXPECT_EQ(data->num_classes, 3);
  EXPECT_EQ(data->features(1, 0), 1.5f);
  // Default: the last column.
  auto last = ReadUploadDataset(
      {WriteFile("last.csv", "0.5,2,1\n1.5,-1,0\n"), "", std::nullopt, std::nullopt});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->labels, (std::vector<int32_t>{1, 0}));
}

TEST(UploadTest, ReadsNpyFeaturesWithALabelsFile) {
  core::RowMatrixF x(2, 3);
  x << 1, 2, 3, 4, 5, 6;
  const std::string features = WriteFile("x.npy", Npy("<f4", "(2, 3)", EncodeFeatureRows(x, 0, 2)));
  const std::string labels = WriteFile("y.npy", Npy("<i4", "(2,)", EncodeLabels({4, 1})));
  auto data = ReadUploadDataset({features, labels, std::nullopt, 7});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->features, x);
  EXPECT_EQ(data->labels, (std::vector<int32_t>{4, 1}));
  EXPECT_EQ(data->num_classes, 7);
}

TEST(UploadTest, RefusesInputsThatDoNotMakeADataset) {
  core::RowMatrixF x = core::RowMatrixF::Ones(2, 3);
  const std::string features = WriteFile("x.npy", Npy("<f4", "(2, 3)", EncodeFeatureRows(x, 0, 2)));
  auto no_labels = ReadUploadDataset({features, "", std::nullopt, std::nullopt});
  EXPECT_TRUE(absl::StrContains(no_labels.status().message(), "--labels")) << no_labels.status();
  const std::string three = WriteFile("y.npy", Npy("<i4", "(3,)", EncodeLabels({0, 1, 1})));
  auto mismatch = ReadUploadDataset({features, three, std::nullopt, std::nullopt});
  EXPECT_TRUE(absl::StrContains(mismatch.status().message(), "2 rows but")) << mismatch.status();
  auto both = ReadUploadDataset({features, three, 0, std::nullopt});
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  auto column = ReadUploadDataset({features, "", 0, std::nullopt});
  EXPECT_TRUE(absl::StrContains(column.status().message(), "CSV")) << column.status();
  const std::string two = WriteFile("y2.npy", Npy("<i4", "(2,)", EncodeLabels({0, 5})));
  auto classes = ReadUploadDataset({features, two, std::nullopt, 3});
  EXPECT_EQ(classes.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_csv =
      ReadUploadDataset({WriteFile("bad.csv", "1,2\n3,x\n"), "", std::nullopt, std::nullopt});
  EXPECT_TRUE(absl::StrContains(bad_csv.status().message(), "bad.csv")) << bad_csv.status();
  EXPECT_EQ(
      ReadUploadDataset({TempPath("absent.csv"), "", std::nullopt, std::nullopt}).status().code(),
      absl::StatusCode::kNotFound);
}

TEST(UploadTest, NamesTheDatasetAfterTheFile) {
  EXPECT_EQ(DatasetNameFromPath("data/train-images-idx3-ubyte.gz"), "train-images-idx3-ubyte");
  EXPECT_EQ(DatasetNameFromPath("/tmp/My Data.csv.gz"), "My_Data");
  EXPECT_EQ(DatasetNameFromPath("x.npy"), "x");
  EXPECT_EQ(DatasetNameFromPath("__.csv"), "dataset");
  EXPECT_EQ(DatasetNameFromPath("_a.csv"), "a");
}

TEST(CliTest, DatasetsUploadStreamsTheFileAndPrintsTheDataset) {
  FakeServer server;
  std::string csv = "a,b,label\n";
  for (int i = 0; i < 50; ++i) absl::StrAppend(&csv, i, ",", i * 0.5, ",", i % 3, "\n");
  const std::string path = WriteFile("points.csv", csv);
  CliRun run = RunDrfm(server, {"datasets", "upload", path});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  const auto upload = server.datasets.last_upload();
  // Named after the file: TempPath's prefix and the test's name, then "points".
  EXPECT_EQ(upload.header.name(),
            "drfm_cli_test_DatasetsUploadStreamsTheFileAndPrintsTheDataset_points");
  EXPECT_EQ(upload.header.rows(), 50);
  EXPECT_EQ(upload.header.cols(), 2);
  EXPECT_EQ(upload.header.num_classes(), 3);
  EXPECT_EQ(upload.features.size(), 4u * 50 * 2);
  EXPECT_EQ(upload.labels, EncodeLabels([] {
              std::vector<int32_t> l;
              for (int i = 0; i < 50; ++i) l.push_back(i % 3);
              return l;
            }()));
  EXPECT_TRUE(absl::StrContains(run.out, "50 rows x 2 features, 3 classes")) << run.out;
  run = RunDrfm(server, {"datasets", "upload", path, "--name", "pts", "-o", "json"});
  const v1::Dataset stored = FromJson<v1::Dataset>(run.out);
  EXPECT_EQ(stored.name(), "pts");
  EXPECT_EQ(stored.sha256(), upload.header.sha256());
  run = RunDrfm(server, {"datasets", "upload",
                         WriteFile("x.npy", Npy("<f4", "(1, 1)", std::string(4, '\0')))});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "--labels")) << run.err;
}

// A CSV of `rows` rows of `cols` features; the first feature of row r is r % 3, which the fake
// model returns as the label.
std::string PredictCsv(int rows, int cols, bool with_label_column = false) {
  std::string csv;
  for (int r = 0; r < rows; ++r) {
    absl::StrAppend(&csv, r % 3);
    for (int c = 1; c < cols; ++c) absl::StrAppend(&csv, ",", 0.25 * c);
    if (with_label_column) absl::StrAppend(&csv, ",", r % 2 == 0 ? r % 3 : 9);
    csv += "\n";
  }
  return csv;
}

TEST(CliTest, PredictPrintsOneLabelPerRowInOrder) {
  FakeServer server(/*model_input_dim=*/4);
  const CliRun run = RunDrfm(server, {"predict", "m", WriteFile("x.csv", PredictCsv(5, 4))});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(run.out, "label\n0\n1\n2\n0\n1\n");
  EXPECT_EQ(server.models.predict_calls(), 1);
  EXPECT_EQ(server.models.stream_requests(), 0);
}

TEST(CliTest, PredictBatchesALargeFileOverTheStream) {
  FakeServer server(/*model_input_dim=*/4);
  const std::string out = TempPath("labels.csv");
  const CliRun run = RunDrfm(server, {"predict", "m", WriteFile("x.csv", PredictCsv(10, 4)),
                                      "--batch-rows", "3", "--out", out});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(server.models.stream_requests(), 4);
  EXPECT_EQ(server.models.predict_calls(), 0);
  EXPECT_EQ(ReadFile(out), "label\n0\n1\n2\n0\n1\n2\n0\n1\n2\n0\n");
  EXPECT_TRUE(absl::StrContains(run.out, "wrote 10 predictions of model m v2 to " + out));
}

TEST(CliTest, PredictWritesScores) {
  FakeServer server(/*model_input_dim=*/4);
  const CliRun run =
      RunDrfm(server, {"predict", "m", WriteFile("x.csv", PredictCsv(2, 4)), "--scores"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(run.out, "label,score_0,score_1,score_2\n0,0,1,1\n1,1,0.9,0.9\n");
}

TEST(CliTest, PredictRefusesMismatchedDimensionsBeforeSendingRows) {
  FakeServer server(/*model_input_dim=*/4);
  const CliRun run = RunDrfm(server, {"predict", "m", WriteFile("x.csv", PredictCsv(5, 3))});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "model m v2 expects rows of 4 features")) << run.err;
  EXPECT_TRUE(absl::StrContains(run.err, "has 3 columns (shape 5 x 3)")) << run.err;
  EXPECT_EQ(server.models.predict_calls(), 0);
  const CliRun layer =
      RunDrfm(server, {"predict", "m", WriteFile("y.csv", PredictCsv(5, 4)), "--layer", "3"});
  EXPECT_EQ(layer.code, kExitError);
  EXPECT_TRUE(absl::StrContains(layer.err, "--layer must be in [0, 2]")) << layer.err;
  const CliRun unknown = RunDrfm(server, {"predict", "nope", WriteFile("z.csv", PredictCsv(1, 4))});
  EXPECT_EQ(unknown.err, "error: NOT_FOUND: no model named \"nope\"\n");
}

TEST(CliTest, PredictReportsAccuracyAgainstALabelColumn) {
  FakeServer server(/*model_input_dim=*/4);
  const CliRun run = RunDrfm(
      server, {"predict", "m", WriteFile("x.csv", PredictCsv(4, 4, true)), "--label-column", "-1"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(run.out, "label\n0\n1\n2\n0\n");
  EXPECT_TRUE(absl::StrContains(run.err, "accuracy 0.5000 (2 of 4 rows")) << run.err;
}

TEST(CliTest, PredictRepresentationAndJson) {
  FakeServer server(/*model_input_dim=*/2);
  const std::string x = WriteFile("x.csv", "1,0.5\n2,-1\n");
  CliRun run = RunDrfm(server, {"predict", "m", x, "--layer", "1"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(run.out, "x_0,x_1\n2,1\n4,-2\n");
  run = RunDrfm(server, {"predict", "m", x, "-o", "json"});
  const v1::PredictResponse response = FromJson<v1::PredictResponse>(run.out);
  EXPECT_EQ(response.rows(), 2);
  EXPECT_EQ(std::vector<int32_t>(response.labels().begin(), response.labels().end()),
            (std::vector<int32_t>{1, 2}));
}

TEST(CliTest, ModelsExportWritesTheVerifiedFile) {
  FakeServer server;
  const std::string out = TempPath("m.safetensors");
  const CliRun run = RunDrfm(server, {"models", "export", "m", "--out", out});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(ReadFile(out), testing::FakeModelService::ExportBytes());
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
  EXPECT_TRUE(absl::StrContains(run.out, "wrote model m v2"));
}

TEST(CliTest, ModelsGetAndDatasetsGet) {
  FakeServer server;
  CliRun run = RunDrfm(server, {"models", "get", "m"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  EXPECT_TRUE(absl::StrContains(run.out, "input dim:    4")) << run.out;
  run = RunDrfm(server, {"datasets", "get", "fashion-mnist:train", "-o", "json"});
  EXPECT_EQ(FromJson<v1::Dataset>(run.out).rows(), 60000);
}

void ScriptNetworkJob(FakeServer& server, int depth, int measurements, bool analysis,
                      v1::Job::State state) {
  v1::Job job;
  std::vector<v1::JobEvent> events;
  testing::MakeScriptedNetworkJob(depth, measurements, analysis, state, &job, &events);
  server.jobs.SetJob(job, events);
}

using test::Count;
using test::LinesStartingWith;

TEST(CliTest, MlpWatchesEveryMeasurementAndWritesThePlot) {
  FakeServer server;
  ScriptNetworkJob(server, /*depth=*/2, /*measurements=*/3, /*analysis=*/false, v1::Job::SUCCEEDED);
  server.jobs.DropStreams(1, 9);  // a dropped connection in the middle of a measurement
  const std::string svg = TempPath("mlp.svg");
  const CliRun run = RunDrfm(server, {"mlp", "--train", "fashion-mnist:train", "--train-limit",
                                      "300", "--depth", "2", "--epochs", "20", "--plot", svg});
  ASSERT_EQ(run.code, kExitOk) << run.err << run.out;
  EXPECT_EQ(server.jobs.last_mlp_submit().train().limit(), 300);
  EXPECT_EQ(server.jobs.last_mlp_submit().config().depth(), 2);
  EXPECT_EQ(server.jobs.last_mlp_submit().config().epochs(), 20);
  EXPECT_FALSE(server.jobs.last_mlp_submit().config().has_width());
  // Each measurement once, in order, despite the re-attach: its summary, then its layer table.
  EXPECT_EQ(LinesStartingWith(run.out, "epoch "),
            (std::vector<std::string>{
                "epoch 0: train loss 1.0000 accuracy 0.5000  test loss 2.0000 accuracy 0.4000  "
                "(250ms)",
                "epoch 10: train loss 0.0909 accuracy 0.6000  test loss 0.1818 accuracy 0.5000  "
                "(250ms)",
                "epoch 20: train loss 0.0476 accuracy 0.7000  test loss 0.0952 accuracy 0.6000  "
                "(250ms)"}));
  EXPECT_EQ(Count(run.out, "  layer    nc1_none nc1_right  nc1_left     nfa nfa_raw  sigma_1\n"),
            3u)
      << run.out;
  // Epoch 10, layer 1: none = 4 / 11, right half of it, left 0.8 of it; NFA 0.7 and 0.6.
  EXPECT_TRUE(absl::StrContains(
      run.out, "  1          0.3636    0.1818    0.2909  0.7000  0.6000   2.5000\n"))
      << run.out;
  // The output layer has no `left`.
  EXPECT_TRUE(absl::StrContains(
      run.out, "  3 out      0.0635    0.0317         -  0.9000  0.8000   2.5000\n"))
      << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "training, epoch 10 of 20")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "measuring at epoch 20")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "connection lost")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "job mlp1 SUCCEEDED")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "model net v1")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "wrote the collapse plot to " + svg)) << run.out;
  // The plot: a panel per layer with none / right / left (no left for the output) and the NFA
  // panel with a curve per layer, 3 epochs each.
  const std::string plot = ReadFile(svg);
  EXPECT_TRUE(absl::StartsWith(plot, "<?xml"));
  EXPECT_EQ(Count(plot, "<g class=\"panel\">"), 4u);
  for (const char* series :
       {"data-series=\"layer 1: none (input)\"", "data-series=\"layer 1: right (W h)\"",
        "data-series=\"layer 1: left (ReLU(W h))\"", "data-series=\"layer 2: left (ReLU(W h))\"",
        "data-series=\"layer 3 (output): right (W h)\"",
        "data-series=\"NFA: corr(W^T W, AGOP^1/2): layer 3 (output)\""}) {
    EXPECT_TRUE(absl::StrContains(plot, series)) << series;
  }
  EXPECT_FALSE(absl::StrContains(plot, "layer 3 (output): left"));
  EXPECT_EQ(Count(plot, "<polyline"), 3u + 3 + 2 + 3);
  EXPECT_TRUE(absl::StrContains(plot, "MLP: neural collapse and the NFA by layer (job mlp1)"));
}

TEST(CliTest, MlpWithJsonOutputPrintsTheFinalJobWithItsReports) {
  FakeServer server;
  ScriptNetworkJob(server, 1, 2, false, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"mlp", "--train", "x", "-o", "json"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  const v1::Job job = FromJson<v1::Job>(run.out);
  EXPECT_EQ(job.kind(), v1::Job::MLP);
  EXPECT_EQ(job.state(), v1::Job::SUCCEEDED);
  ASSERT_EQ(job.network_reports_size(), 2);
  EXPECT_EQ(job.network_reports(1).layers_size(), 2);
  EXPECT_TRUE(absl::StrContains(run.out, "\"network_reports\""));  // proto field names
  EXPECT_TRUE(absl::StrContains(run.out, "\"nfa_correlation\""));
  EXPECT_FALSE(absl::StrContains(run.out, "nc1_none"));  // no table on stdout
}

TEST(CliTest, AFailedMlpExitsNonZeroWithItsError) {
  FakeServer server;
  ScriptNetworkJob(server, 1, 2, false, v1::Job::FAILED);
  const CliRun run = RunDrfm(server, {"mlp", "--train", "x"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "job mlp1 FAILED: training diverged")) << run.err;
  // A submission the server refuses: its code and message.
  const CliRun refused = RunDrfm(server, {"mlp", "--train", "x", "--width", "7"});
  EXPECT_EQ(refused.code, kExitError);
  EXPECT_EQ(refused.err,
            "error: INVALID_ARGUMENT: config.width must be even in this fake; got 7\n");
  // A flag out of its documented range never reaches the server.
  const CliRun usage = RunDrfm(server, {"mlp", "--train", "x", "--depth", "0"});
  EXPECT_EQ(usage.code, kExitUsage);
  EXPECT_TRUE(absl::StrContains(usage.err, "--depth")) << usage.err;
}

TEST(CliTest, DetachedMlpPrintsTheJob) {
  FakeServer server;
  ScriptNetworkJob(server, 1, 2, false, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"mlp", "--train", "x", "--detach"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_TRUE(absl::StrContains(run.out, "submitted job mlp1 (QUEUED)"));
  EXPECT_TRUE(server.jobs.watch_after_sequences().empty());
}

TEST(CliTest, AnalyzePrintsTheLayerTableAndItsPlot) {
  FakeServer server;
  ScriptNetworkJob(server, 2, 1, /*analysis=*/true, v1::Job::SUCCEEDED);
  const std::string svg = TempPath("analysis.svg");
  CliRun run = RunDrfm(server, {"analyze", "net", "--data", "fashion-mnist:test", "--data-limit",
                                "200", "--plot", svg});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  EXPECT_EQ(server.jobs.last_analysis().model(), "net");
  EXPECT_EQ(server.jobs.last_analysis().data().limit(), 200);
  EXPECT_TRUE(absl::StrContains(run.out,
                                "measured: loss 1.0000  accuracy 0.5000  (250ms)\n"
                                "  layer    nc1_none"))
      << run.out;
  EXPECT_EQ(LinesStartingWith(run.out, "  1 ").size(), 1u) << run.out;
  EXPECT_EQ(LinesStartingWith(run.out, "  3 out ").size(), 1u) << run.out;
  const std::string plot = ReadFile(svg);
  EXPECT_TRUE(absl::StrContains(plot, "MLP analysis of net v3 (job an1)"));
  EXPECT_EQ(Count(plot, "<g class=\"panel\">"), 2u);  // one measurement: across layers
  run = RunDrfm(server, {"analyze", "nope", "--data", "d"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_EQ(run.err, "error: NOT_FOUND: no model named \"nope\"\n");
  run = RunDrfm(server, {"analyze", "net", "--data", "d", "-o", "json"});
  EXPECT_EQ(run.code, kExitOk);
  const v1::Job job = FromJson<v1::Job>(run.out);
  EXPECT_EQ(job.kind(), v1::Job::ANALYSIS);
  EXPECT_EQ(job.network_reports_size(), 1);
}

TEST(CliTest, JobsGetOfAnMlpShowsEveryMeasurementAndTheLastLayers) {
  FakeServer server;
  ScriptNetworkJob(server, 1, 3, false, v1::Job::SUCCEEDED);
  const std::string svg = TempPath("job.svg");
  const CliRun run = RunDrfm(server, {"jobs", "get", "mlp1", "--plot", svg});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  EXPECT_TRUE(absl::StrContains(run.out, "kind:          MLP")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "config:        depth=1 width=16 epochs=20")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "measurements:  3/3")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, NetworkTableHeader())) << run.out;
  EXPECT_EQ(LinesStartingWith(run.out, "0 ").size() + LinesStartingWith(run.out, "10 ").size() +
                LinesStartingWith(run.out, "20 ").size(),
            3u)
      << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "layers at epoch 20:\nlayer    nc1_none")) << run.out;
  EXPECT_EQ(Count(ReadFile(svg), "<g class=\"panel\">"), 3u);
}

TEST(CliTest, JobsWatchOfAnMlpWithJsonStreamsItsEvents) {
  FakeServer server;
  ScriptNetworkJob(server, 1, 2, false, v1::Job::SUCCEEDED);
  const CliRun run = RunDrfm(server, {"jobs", "watch", "mlp1", "-o", "json"});
  EXPECT_EQ(run.code, kExitOk) << run.err;
  int reports = 0;
  for (absl::string_view line : absl::StrSplit(run.out, '\n', absl::SkipEmpty())) {
    reports += FromJson<v1::JobEvent>(std::string(line)).has_network_report();
  }
  EXPECT_EQ(reports, 2);
}

// A minimal safetensors file: the header length, `header` padded to 8 bytes, `data`.
std::string Safetensors(const std::string& header, const std::string& data) {
  std::string h = header;
  h.resize((h.size() + 7) / 8 * 8, ' ');
  std::string out;
  for (int b = 0; b < 8; ++b) out += static_cast<char>((h.size() >> (8 * b)) & 0xff);
  return out + h + data;
}

TEST(CliTest, ModelsImportStreamsTheFileWithItsChecksum) {
  FakeServer server;
  // More than one 1 MiB chunk of tensor data.
  std::string data(3 * 1024 * 1024 + 100, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 % 251);
  const std::string file = Safetensors(
      R"({"layers.0.weight":{"dtype":"F32","shape":[8,4],"data_offsets":[0,128]}})", data);
  const std::string path = WriteFile("net.safetensors", file);
  CliRun run = RunDrfm(server, {"models", "import", path, "--name", "net"});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  const auto import = server.models.last_import();
  EXPECT_EQ(import.header.name(), "net");
  EXPECT_EQ(import.header.size_bytes(), static_cast<int64_t>(file.size()));
  Sha256 sha;
  sha.Update(file);
  EXPECT_EQ(import.header.sha256(), sha.HexDigest());
  EXPECT_EQ(import.bytes, file);
  EXPECT_EQ(import.chunks, 4);
  EXPECT_EQ(import.largest_chunk, kDefaultChunkBytes);
  EXPECT_EQ(run.out, absl::StrCat("imported ", path,
                                  " as model net v1: MLP, 4 inputs, 2 hidden layers (8, 8), 3 "
                                  "classes, 3.0 MiB\n"));
  run = RunDrfm(server, {"models", "import", path, "--name", "net", "-o", "json"});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  const v1::Model model = FromJson<v1::Model>(run.out);
  EXPECT_EQ(model.kind(), v1::Model::MLP);
  EXPECT_EQ(model.size_bytes(), static_cast<int64_t>(file.size()));
  EXPECT_TRUE(absl::StrContains(run.out, "\"input_dim\""));
}

TEST(CliTest, ModelsImportRefusesWhatIsNotASafetensorsFileBeforeSendingIt) {
  FakeServer server;
  const std::string csv = WriteFile("weights.csv", "1,2,3\n4,5,6\n");
  CliRun run = RunDrfm(server, {"models", "import", csv, "--name", "net"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "INVALID_ARGUMENT: " + csv + " is not a safetensors file"))
      << run.err;
  run = RunDrfm(server, {"models", "import", WriteFile("short", "abc"), "--name", "net"});
  EXPECT_TRUE(absl::StrContains(run.err, "it has only 3 bytes")) << run.err;
  run = RunDrfm(server, {"models", "import", TempPath("absent.safetensors"), "--name", "net"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StartsWith(run.err, "error: NOT_FOUND: ")) << run.err;
  EXPECT_EQ(server.models.imports(), 0);
  // The server's refusal of a well-framed file is shown as it is.
  run = RunDrfm(server,
                {"models", "import", WriteFile("bad.safetensors", Safetensors(R"({"bad":{}})", "")),
                 "--name", "net"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.err, "INVALID_ARGUMENT: layers.1.weight has 9 columns"))
      << run.err;
  EXPECT_EQ(server.models.imports(), 1);
  // --name is required.
  EXPECT_EQ(RunDrfm(server, {"models", "import", csv}).code, kExitUsage);
}

TEST(CliTest, HealthSaysWhetherTheServerServes) {
  FakeServer server;
  CliRun run = RunDrfm(server, {"health"});
  EXPECT_EQ(run.code, kExitOk);
  EXPECT_EQ(run.out, "server at localhost:50051: SERVING\n");
  run = RunDrfm(server, {"health", "--service", "drfm.v1.Unready"});
  EXPECT_EQ(run.code, kExitError);
  EXPECT_TRUE(absl::StrContains(run.out, "NOT_SERVING"));
  run = RunDrfm(server, {"health", "-o", "json"});
  EXPECT_EQ(run.out, "{\n  \"status\": \"SERVING\"\n}\n");
}

}  // namespace
}  // namespace drfm::client
