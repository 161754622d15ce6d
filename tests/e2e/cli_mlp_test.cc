// End-to-end tests of the network side of the `drfm` command line (DNN.md; API.md `mlp`,
// `models import`, `analyze`) against a real DrfmServer in-process on 127.0.0.1:0, reached over
// loopback TCP by RunCli's own connection code (tests/e2e/cli_e2e.h). An MLP trained and watched
// live (a block per measurement with the per-layer nc1 of none / right / left and the NFA
// correlation), its --plot (a well-formed SVG with a panel per layer holding the three curves, and
// the NFA panel), --output json parsed back into a Job, `jobs get / watch / list` of MLP jobs, a
// cancelled MLP's exit status, the export -> import round trip (the copy predicts the same scores
// and measures the same), `analyze` of the imported model, and the refusals of bad flags, bad
// files and bad references with the server's messages. Small synthetic data (300 x 12, 3
// classes; depth 2, width 32, a few dozen epochs), so that each test takes seconds.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli.h"
#include "core/io.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/models.pb.h"
#include "tests/e2e/cli_e2e.h"
#include "tests/text_util.h"

namespace drfm {
namespace {

using e2e::CliRun;
using e2e::IsWellFormedSvg;
using e2e::ParseJson;
using e2e::ReadFile;
using e2e::WriteFile;

constexpr char kTrain[] = "synthetic:rows=300,cols=12,classes=3,seed=1";
constexpr char kTest[] = "synthetic:rows=90,cols=12,classes=3,seed=2";

class CliMlpE2eTest : public e2e::CliE2eTest {
 protected:
  // `mlp` flags of the small network: depth 2, width 32, 40 epochs measured at 0, 20 and 40.
  static std::vector<std::string> SmallMlp(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {
        "mlp",  "--train",         kTrain, "--test",   kTest, "--depth",
        "2",    "--width",         "32",   "--epochs", "40",  "--lr",
        "1e-3", "--measure-every", "20",   "--seed",   "5"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }

  // Trains the small network as model `name` (version 1) and returns the CLI's output.
  CliRun TrainModel(const std::string& name) {
    CliRun run = Drfm(SmallMlp({"--model", name}));
    EXPECT_EQ(run.code, 0) << run;
    return run;
  }
};

using test::Count;
using test::LinesStartingWith;

// The values of the polyline whose data-series is `series` (as "x,y" pixel pairs).
std::vector<std::string> SeriesPoints(const std::string& svg, const std::string& series) {
  const std::string marker = absl::StrCat("data-series=\"", series, "\" points=\"");
  const size_t at = svg.find(marker);
  if (at == std::string::npos) return {};
  const size_t start = at + marker.size();
  return absl::StrSplit(svg.substr(start, svg.find('"', start) - start), ' ', absl::SkipEmpty());
}

// A features-only CSV of the rows of the synthetic dataset `name`.
std::string FeaturesCsv(const std::string& name) {
  const core::Dataset data = *core::MakeSynthetic(*core::ParseSyntheticName(name));
  std::string csv;
  for (int64_t r = 0; r < data.rows(); ++r) {
    for (int64_t c = 0; c < data.cols(); ++c) {
      absl::StrAppend(&csv, c == 0 ? "" : ",", absl::StrFormat("%.9g", data.features(r, c)));
    }
    csv += "\n";
  }
  return csv;
}

TEST_F(CliMlpE2eTest, MlpShowsEveryMeasurementLiveAndPlotsEachLayer) {
  StartServer();
  const std::string svg = Path("mlp.svg");
  const CliRun run = Drfm(SmallMlp({"--model", "net", "--plot", svg}));
  ASSERT_EQ(run.code, 0) << run;
  // A summary line per measurement, at 0, 20 and 40 epochs, with train and test figures.
  const std::vector<std::string> summaries = LinesStartingWith(run.out, "epoch ");
  ASSERT_EQ(summaries.size(), 3u) << run;
  EXPECT_TRUE(absl::StartsWith(summaries[0], "epoch 0: train loss ")) << run;
  EXPECT_TRUE(absl::StartsWith(summaries[1], "epoch 20: train loss ")) << run;
  EXPECT_TRUE(absl::StartsWith(summaries[2], "epoch 40: train loss ")) << run;
  for (const std::string& line : summaries) {
    EXPECT_HAS(line, " accuracy ");
    EXPECT_HAS(line, "  test loss ");
  }
  // Under each, the table of layers 1, 2 and the output layer 3 (which has no `left`).
  EXPECT_EQ(Count(run.out, "  layer    nc1_none nc1_right  nc1_left     nfa nfa_raw  sigma_1\n"),
            3u)
      << run;
  EXPECT_EQ(LinesStartingWith(run.out, "  1 ").size(), 3u) << run;
  EXPECT_EQ(LinesStartingWith(run.out, "  2 ").size(), 3u) << run;
  const std::vector<std::string> output_rows = LinesStartingWith(run.out, "  3 out ");
  ASSERT_EQ(output_rows.size(), 3u) << run;
  for (const std::string& row : output_rows) {
    const std::vector<std::string> cells = absl::StrSplit(row, ' ', absl::SkipEmpty());
    ASSERT_EQ(cells.size(), 8u) << row;  // 3, out, none, right, left, nfa, nfa_raw, sigma_1
    EXPECT_EQ(cells[4], "-") << row;
    double nfa;
    ASSERT_TRUE(absl::SimpleAtod(cells[5], &nfa)) << row;
    EXPECT_GE(nfa, -1);
    EXPECT_LE(nfa, 1);
  }
  // (Progress lines depend on how often the server reports progress; the fake-server tests in
  // tests/client check them.)
  EXPECT_HAS(run.out, "SUCCEEDED");
  EXPECT_HAS(run.out, "model net v1");
  EXPECT_HAS(run.out, "wrote the collapse plot to " + svg);

  // The plot: a well-formed SVG; a panel per layer with none / right / left across the three
  // epochs (no left for the output layer), and the NFA panel with a curve per layer.
  const std::string plot = ReadFile(svg);
  std::string why;
  ASSERT_TRUE(IsWellFormedSvg(plot, &why)) << why;
  EXPECT_EQ(Count(plot, "<g class=\"panel\">"), 4u);
  for (const char* layer : {"layer 1", "layer 2"}) {
    for (const char* curve : {"none (input)", "right (W h)", "left (ReLU(W h))"}) {
      EXPECT_EQ(SeriesPoints(plot, absl::StrCat(layer, ": ", curve)).size(), 3u)
          << layer << ": " << curve;
    }
  }
  EXPECT_EQ(SeriesPoints(plot, "layer 3 (output): none (input)").size(), 3u);
  EXPECT_EQ(SeriesPoints(plot, "layer 3 (output): right (W h)").size(), 3u);
  EXPECT_TRUE(SeriesPoints(plot, "layer 3 (output): left (ReLU(W h))").empty());
  for (const char* layer : {"layer 1", "layer 2", "layer 3 (output)"}) {
    EXPECT_EQ(SeriesPoints(plot, absl::StrCat("NFA: corr(W^T W, AGOP^1/2): ", layer)).size(), 3u)
        << layer;
  }
  EXPECT_HAS(plot, "nc1 (log scale)");
  EXPECT_HAS(plot, "Pearson correlation");
  EXPECT_HAS(plot, ">epoch<");
}

TEST_F(CliMlpE2eTest, MlpWithJsonOutputPrintsTheFinalJob) {
  StartServer();
  const CliRun run =
      Drfm({"--output", "json", "mlp", "--train", kTrain, "--depth", "1", "--width", "16",
            "--epochs", "6", "--measure-every", "3", "--seed", "2", "--model", "tiny"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Job job = ParseJson<v1::Job>(run.out);  // every key a field of Job
  EXPECT_EQ(job.kind(), v1::Job::MLP);
  EXPECT_EQ(job.state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(job.model().name(), "tiny");
  EXPECT_EQ(job.model().version(), 1);
  EXPECT_EQ(job.mlp_config().depth(), 1);
  EXPECT_EQ(job.mlp_config().width(), 16);
  EXPECT_EQ(job.mlp_config().seed(), 2u);
  ASSERT_EQ(job.network_reports_size(), 3);  // epochs 0, 3, 6
  for (int m = 0; m < 3; ++m) {
    const v1::NetworkReport& r = job.network_reports(m);
    EXPECT_EQ(r.epoch(), 3 * m);
    ASSERT_EQ(r.layers_size(), 2);
    EXPECT_TRUE(r.layers(1).output());
    EXPECT_GT(r.layers(0).none().nc1(), 0);
    EXPECT_FALSE(r.has_test_accuracy());  // no --test
  }
  EXPECT_HAS(run.out, "\"network_reports\"");  // proto field names
  EXPECT_HAS(run.out, "\"nfa_correlation\"");
  EXPECT_FALSE(absl::StrContains(run.out, "nc1_none")) << "no table on stdout with JSON";
}

TEST_F(CliMlpE2eTest, JobsGetWatchAndListShowMlpJobs) {
  StartServer();
  CliRun run = Drfm(SmallMlp({"--detach", "--model", "net"}));
  ASSERT_EQ(run.code, 0) << run;
  const std::string id = SubmittedId(run);
  ASSERT_FALSE(id.empty()) << run;

  run = Drfm({"jobs", "watch", id});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(LinesStartingWith(run.out, "epoch ").size(), 3u) << run;
  EXPECT_EQ(LinesStartingWith(run.out, "  3 out ").size(), 3u) << run;

  // jobs get: the config, every measurement's summary, the layers of the last.
  const std::string svg = Path("job.svg");
  run = Drfm({"jobs", "get", id, "--plot", svg});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "MLP");
  EXPECT_HAS(run.out, "depth=2 width=32");
  EXPECT_HAS(run.out, "measurements:  3/3");
  EXPECT_HAS(run.out, "epoch   train_loss  test_loss   train    test     sec\n");
  EXPECT_EQ(LinesStartingWith(run.out, "40 ").size(), 1u) << run;
  EXPECT_HAS(run.out, "layers at epoch 40:\nlayer    nc1_none");
  EXPECT_EQ(LinesStartingWith(run.out, "3 out ").size(), 1u) << run;
  std::string why;
  EXPECT_TRUE(IsWellFormedSvg(ReadFile(svg), &why)) << why;

  // jobs watch with JSON: one event per line, three of them NetworkReports.
  run = Drfm({"--output", "json", "jobs", "watch", id});
  ASSERT_EQ(run.code, 0) << run;
  int reports = 0;
  for (absl::string_view line : absl::StrSplit(run.out, '\n', absl::SkipEmpty())) {
    reports += ParseJson<v1::JobEvent>(std::string(line)).has_network_report();
  }
  EXPECT_EQ(reports, 3);

  run = Drfm({"jobs", "list", "--kind", "mlp"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, id);
  EXPECT_HAS(run.out, "MLP");
  EXPECT_HAS(run.out, "3/3");
}

TEST_F(CliMlpE2eTest, ACancelledMlpExitsNonZeroWithTheServersMessage) {
  StartServer();
  CliRun run = Drfm({"mlp", "--train", "synthetic:rows=3000,cols=100,classes=10", "--depth", "3",
                     "--width", "256", "--epochs", "100000", "--measure-every", "0", "--detach"});
  ASSERT_EQ(run.code, 0) << run;
  const std::string id = SubmittedId(run);
  ASSERT_FALSE(id.empty()) << run;
  AwaitRunning(id);
  run = Drfm({"jobs", "cancel", id});
  ASSERT_EQ(run.code, 0) << run;
  run = Drfm({"jobs", "watch", id});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, absl::StrCat("error: job ", id, " CANCELLED"));
  run = Drfm({"--output", "json", "jobs", "get", id});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Job job = ParseJson<v1::Job>(run.out);
  EXPECT_EQ(job.state(), v1::Job::CANCELLED);
  EXPECT_FALSE(job.has_model());
}

TEST_F(CliMlpE2eTest, ExportImportRoundTripThenAnalyzeTheImportedModel) {
  StartServer();
  TrainModel("net");
  const std::string file = Path("net.safetensors");
  CliRun run = Drfm({"models", "export", "net", "--out", file});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "wrote model net v1");

  run = Drfm({"models", "import", file, "--name", "net-copy"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, absl::StrCat("imported ", file,
                                   " as model net-copy v1: MLP, 12 inputs, "
                                   "2 hidden layers (32, 32), 3 classes"));
  // A second import is the next version; JSON is the stored Model.
  run = Drfm({"--output", "json", "models", "import", file, "--name", "net-copy"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Model imported = ParseJson<v1::Model>(run.out);
  EXPECT_EQ(imported.name(), "net-copy");
  EXPECT_EQ(imported.version(), 2);
  EXPECT_EQ(imported.kind(), v1::Model::MLP);
  EXPECT_EQ(imported.input_dim(), 12);
  EXPECT_EQ(imported.classes(), 3);
  EXPECT_EQ(imported.layers(), 2);
  EXPECT_TRUE(imported.job_id().empty());

  run = Drfm({"models", "get", "net-copy"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "config:");
  EXPECT_HAS(run.out, "(imported)");

  // The copy predicts exactly what the original does, scores included.
  const std::string rows = Path("test.csv");
  WriteFile(rows, FeaturesCsv(kTest));
  const CliRun original = Drfm({"predict", "net", rows, "--scores"});
  ASSERT_EQ(original.code, 0) << original;
  const CliRun copy = Drfm({"predict", "net-copy", rows, "--scores", "--version", "1"});
  ASSERT_EQ(copy.code, 0) << copy;
  EXPECT_EQ(Count(original.out, "\n"), 91u);  // header and 90 rows
  EXPECT_EQ(copy.out, original.out);

  // analyze of the imported model: the per-layer table of one measurement on the test rows.
  const std::string svg = Path("analysis.svg");
  run = Drfm({"analyze", "net-copy", "--version", "1", "--data", kTest, "--plot", svg});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "measured: loss ");
  EXPECT_HAS(run.out, "  layer    nc1_none nc1_right  nc1_left     nfa nfa_raw  sigma_1\n");
  EXPECT_EQ(LinesStartingWith(run.out, "  1 ").size(), 1u) << run;
  EXPECT_EQ(LinesStartingWith(run.out, "  2 ").size(), 1u) << run;
  EXPECT_EQ(LinesStartingWith(run.out, "  3 out ").size(), 1u) << run;
  EXPECT_HAS(run.out, "SUCCEEDED");
  std::string why;
  const std::string plot = ReadFile(svg);
  ASSERT_TRUE(IsWellFormedSvg(plot, &why)) << why;
  EXPECT_EQ(Count(plot, "<g class=\"panel\">"), 2u);  // one measurement: across layers
  EXPECT_EQ(SeriesPoints(plot, "nc1 by layer: none (input)").size(), 3u);
  EXPECT_EQ(SeriesPoints(plot, "nc1 by layer: left (ReLU(W h))").size(), 2u);

  // The same analysis of the original and of the copy, as JSON: the same measurement.
  auto analyze = [&](const std::string& model) {
    const CliRun r = Drfm({"--output", "json", "analyze", model, "--data", kTest});
    EXPECT_EQ(r.code, 0) << r;
    return ParseJson<v1::Job>(r.out);
  };
  const v1::Job of_original = analyze("net");
  const v1::Job of_copy = analyze("net-copy");
  EXPECT_EQ(of_copy.kind(), v1::Job::ANALYSIS);
  EXPECT_EQ(of_copy.analyzed_model().name(), "net-copy");
  EXPECT_EQ(of_copy.analyzed_model().version(), 2);  // the latest
  ASSERT_EQ(of_original.network_reports_size(), 1);
  ASSERT_EQ(of_copy.network_reports_size(), 1);
  const v1::NetworkReport& a = of_original.network_reports(0);
  const v1::NetworkReport& b = of_copy.network_reports(0);
  EXPECT_EQ(a.train_accuracy(), b.train_accuracy());
  ASSERT_EQ(a.layers_size(), 3);
  ASSERT_EQ(b.layers_size(), 3);
  for (int l = 0; l < 3; ++l) {
    // One thread per fit: the same model on the same rows measures the same, up to round-off.
    EXPECT_NEAR(a.layers(l).none().nc1(), b.layers(l).none().nc1(),
                1e-9 * std::fabs(a.layers(l).none().nc1()));
    EXPECT_NEAR(a.layers(l).right().nc1(), b.layers(l).right().nc1(),
                1e-9 * std::fabs(a.layers(l).right().nc1()));
    EXPECT_NEAR(a.layers(l).nfa_correlation(), b.layers(l).nfa_correlation(), 1e-9);
  }
}

TEST_F(CliMlpE2eTest, BadFlagsFilesAndReferencesAreRefusedWithAMessage) {
  StartServer();
  // Out of the documented range: refused while parsing, nothing sent (exit 2).
  CliRun run = Drfm({"mlp", "--train", kTrain, "--depth", "0"});
  EXPECT_EQ(run.code, client::kExitUsage) << run;
  EXPECT_HAS(run.err, "--depth");
  run = Drfm({"mlp", "--train", kTrain, "--lr", "-1"});
  EXPECT_EQ(run.code, client::kExitUsage) << run;
  run = Drfm({"mlp", "--train", kTrain, "--bandwidth", "2"});  // a Deep RFM flag
  EXPECT_EQ(run.code, client::kExitUsage) << run;
  run = Drfm({"mlp", "--train", kTrain, "--test-limit", "5"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "--test-limit and --test-offset need --test DATASET");
  run = Drfm({"analyze", "net"});
  EXPECT_EQ(run.code, client::kExitUsage) << run;
  EXPECT_HAS(run.err, "--data");

  // The server's judgement, with its code and message (exit 1).
  run = Drfm({"mlp", "--train", kTrain, "--lr", "nan"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: INVALID_ARGUMENT: ");
  EXPECT_HAS(run.err, "learning_rate");
  run = Drfm({"mlp", "--train", "no-such-dataset"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: NOT_FOUND: ");
  EXPECT_HAS(run.err, "no-such-dataset");
  run = Drfm({"analyze", "no-such-model", "--data", kTest});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: NOT_FOUND: ");
  EXPECT_HAS(run.err, "no-such-model");

  TrainModel("net");
  // Data of another width than the model's input.
  run = Drfm({"analyze", "net", "--data", "synthetic:rows=60,cols=5,classes=3"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: INVALID_ARGUMENT: ");
  // A version that does not exist.
  run = Drfm({"analyze", "net", "--version", "7", "--data", kTest});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_TRUE(absl::StrContains(run.err, "NOT_FOUND") ||
              absl::StrContains(run.err, "FAILED_PRECONDITION"))
      << run;
  // A Deep RFM model is not an MLP.
  run = Drfm({"fit", "--train", kTrain, "--layers", "1", "--width", "16", "--model", "rfm"});
  ASSERT_EQ(run.code, 0) << run;
  run = Drfm({"analyze", "rfm", "--data", kTest});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: INVALID_ARGUMENT: ");
  EXPECT_HAS(run.err, "MLP");

  // Files: not a safetensors file (refused before it is sent), missing, and a well-framed file
  // whose tensors the server refuses.
  WriteFile(Path("weights.csv"), "1,2,3\n4,5,6\n");
  run = Drfm({"models", "import", Path("weights.csv"), "--name", "x"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, Path("weights.csv") + " is not a safetensors file");
  run = Drfm({"models", "import", Path("absent.safetensors"), "--name", "x"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: NOT_FOUND: ");
  const std::string exported = Path("net.safetensors");
  ASSERT_EQ(Drfm({"models", "export", "net", "--out", exported}).code, 0);
  std::string truncated = ReadFile(exported);
  truncated.resize(truncated.size() - 4);  // the last weight loses a value
  WriteFile(Path("truncated.safetensors"), truncated);
  run = Drfm({"models", "import", Path("truncated.safetensors"), "--name", "x"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: INVALID_ARGUMENT: ");
  // A name the server does not allow.
  run = Drfm({"models", "import", exported, "--name", "bad name!"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "error: INVALID_ARGUMENT: ");
  EXPECT_HAS(run.err, "name");
  // Nothing was stored under "x".
  run = Drfm({"models", "get", "x"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
}

}  // namespace
}  // namespace drfm
