// End-to-end tests of the `drfm` command line against a real server: a DrfmServer started
// in-process on 127.0.0.1:0 with a temporary data dir, reached over loopback TCP by the CLI's own
// connection code (client/cli.h RunCli with the default Client::Connect), with stdout and stderr
// captured. Every subcommand of API.md's command table: health, datasets upload (.npy, CSV with
// --label-column, IDX.gz) / list / get / rm with dedup and a name clash, fit (table, --output
// json, --plot, --detach), estimate, the server's refusals of bad submissions, jobs
// list / get / watch / cancel / rm (a cancelled and a failed job exit non-zero), models
// list / get / export / rm, predict (labels, --scores, --out, batches, the dimension refusal) and
// bearer-token auth. Small data throughout (synthetic 200 x 8, 3 classes; 2 layers of width 32).
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli.h"
#include "core/io.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/hash.h"
#include "server/server.h"
#include "tests/e2e/cli_e2e.h"
#include "tests/e2e/e2e_util.h"

namespace drfm {
namespace {

using e2e::Bytes;
using e2e::CliE2eTest;
using e2e::CliRun;
using e2e::IsWellFormedSvg;
using e2e::ParseJson;
using e2e::ReadFile;
using e2e::WriteFile;

constexpr char kSynthetic[] = "synthetic:rows=200,cols=8,classes=3";
// A Fit that takes long enough on one thread to still be running while the test queues, cancels
// and deletes around it (cancelled long before it would finish).
constexpr char kSlowSynthetic[] = "synthetic:rows=6000,cols=64,classes=4";

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

std::string NpyFeatures(const core::RowMatrixF& x) {
  return Npy("<f4", absl::StrCat("(", x.rows(), ", ", x.cols(), ")"),
             Bytes(x.data(), static_cast<size_t>(x.size()) * 4));
}

std::string NpyLabels(const std::vector<int32_t>& y) {
  return Npy("<i4", absl::StrCat("(", y.size(), ",)"), Bytes(y.data(), y.size() * 4));
}

// CSV with a header; the label in column `label_column`, features printed so that they parse back
// to the same float32 values.
std::string Csv(const core::Dataset& d, int label_column) {
  std::string out;
  const int64_t columns = d.cols() + 1;
  for (int64_t c = 0; c < columns; ++c) {
    absl::StrAppend(&out, c == 0 ? "" : ",", c == label_column ? "label" : absl::StrCat("f", c));
  }
  out += "\n";
  for (int64_t r = 0; r < d.rows(); ++r) {
    int64_t f = 0;
    for (int64_t c = 0; c < columns; ++c) {
      if (c > 0) out += ",";
      if (c == label_column) {
        absl::StrAppend(&out, d.labels[r]);
      } else {
        absl::StrAppend(&out, absl::StrFormat("%.9g", d.features(r, f++)));
      }
    }
    out += "\n";
  }
  return out;
}

uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A gzip member holding `data` in stored (uncompressed) deflate blocks: a valid .gz file without
// a compressor.
std::string Gzip(const std::string& data) {
  std::string out("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10);
  size_t offset = 0;
  do {
    const size_t n = std::min<size_t>(65535, data.size() - offset);
    const bool last = offset + n == data.size();
    out += static_cast<char>(last ? 1 : 0);
    out += static_cast<char>(n & 0xff);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(~n & 0xff);
    out += static_cast<char>((~n >> 8) & 0xff);
    out += data.substr(offset, n);
    offset += n;
  } while (offset < data.size());
  const uint32_t crc = Crc32(data);
  const uint32_t size = static_cast<uint32_t>(data.size());
  for (int i = 0; i < 4; ++i) out += static_cast<char>((crc >> (8 * i)) & 0xff);
  for (int i = 0; i < 4; ++i) out += static_cast<char>((size >> (8 * i)) & 0xff);
  return out;
}

void AppendBigEndian(std::string* out, uint32_t value) {
  for (int i = 3; i >= 0; --i) *out += static_cast<char>((value >> (8 * i)) & 0xff);
}

// IDX unsigned-byte files: images rows x h x w and labels rows.
std::string IdxImages(const std::vector<uint8_t>& pixels, uint32_t rows, uint32_t h, uint32_t w) {
  std::string out("\x00\x00\x08\x03", 4);
  AppendBigEndian(&out, rows);
  AppendBigEndian(&out, h);
  AppendBigEndian(&out, w);
  return out + Bytes(pixels.data(), pixels.size());
}

std::string IdxLabels(const std::vector<int32_t>& labels) {
  std::string out("\x00\x00\x08\x01", 4);
  AppendBigEndian(&out, static_cast<uint32_t>(labels.size()));
  for (int32_t label : labels) out += static_cast<char>(label);
  return out;
}

using e2e::Synthetic;

std::string ContentHash(const core::Dataset& d) {
  return server::Sha256Hex(Bytes(d.features.data(), static_cast<size_t>(d.features.size()) * 4) +
                           Bytes(d.labels.data(), d.labels.size() * 4));
}

TEST_F(CliE2eTest, HealthOfTheProcessAndOfAService) {
  StartServer();
  CliRun run = Drfm({"health"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, absl::StrCat("server at ", address_, ": SERVING\n"));

  run = Drfm({"health", "--service", "drfm.v1.JobService"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, absl::StrCat("drfm.v1.JobService at ", address_, ": SERVING\n"));
  for (const char* service : {"drfm.v1.DatasetService", "drfm.v1.ModelService"}) {
    EXPECT_EQ(Drfm({"health", "--service", service}).code, 0) << service;
  }

  run = Drfm({"--output", "json", "health", "--wait"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "\"status\": \"SERVING\"");

  run = Drfm({"health", "--service", "drfm.v1.NoSuchService"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");

  // A usage error is exit 2, not a server error.
  run = Drfm({"health", "--no-such-flag"});
  EXPECT_EQ(run.code, client::kExitUsage) << run;

  // Nothing listening: UNAVAILABLE with the hint.
  std::vector<std::string> args = {"--server", "127.0.0.1:1", "--timeout", "5", "health"};
  std::ostringstream out, err;
  client::CliEnv env;
  env.out = &out;
  env.err = &err;
  EXPECT_EQ(client::RunCli(args, env), client::kExitError);
  EXPECT_HAS(err.str(), "UNAVAILABLE");
  EXPECT_HAS(err.str(), "is drfm-server running at 127.0.0.1:1?");
}

TEST_F(CliE2eTest, DatasetsUploadListGetRmWithDedupAndNameClash) {
  StartServer();
  const core::Dataset data = Synthetic(200, 8, 3, 1);
  const std::string hash = ContentHash(data);

  // .npy features with .npy labels.
  WriteFile(Path("blobs.npy"), NpyFeatures(data.features));
  WriteFile(Path("blobs-labels.npy"), NpyLabels(data.labels));
  CliRun run = Drfm({"datasets", "upload", Path("blobs.npy"), "--labels", Path("blobs-labels.npy"), "--name",
                     "npy-blobs"});
  ASSERT_EQ(run.code, 0) << run;
  const std::string id = "ds-" + hash.substr(0, 16);
  EXPECT_HAS(run.out, absl::StrCat("uploaded npy-blobs as ", id, ": 200 rows x 8 features, 3 classes"));

  run = Drfm({"--output", "json", "datasets", "get", "npy-blobs"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Dataset stored = ParseJson<v1::Dataset>(run.out);
  EXPECT_EQ(stored.id(), id);
  EXPECT_EQ(stored.rows(), 200);
  EXPECT_EQ(stored.cols(), 8);
  EXPECT_EQ(stored.num_classes(), 3);
  EXPECT_EQ(stored.sha256(), hash);
  EXPECT_EQ(stored.size_bytes(), 4 * 200 * 9);
  EXPECT_FALSE(stored.builtin());
  EXPECT_HAS(run.out, "\"num_classes\"") << "proto field names, not lowerCamelCase";
  EXPECT_HAS(run.out, "\"size_bytes\"");

  // The same content from a CSV (labels in column 0): deduplicated to the stored dataset.
  WriteFile(Path("blobs.csv"), Csv(data, 0));
  run = Drfm({"datasets", "upload", Path("blobs.csv"), "--label-column", "0", "--name", "csv-blobs"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, absl::StrCat("as ", id, ":"));
  EXPECT_HAS(run.out, "(the same content was already stored as npy-blobs)");
  // And the same .npy once more under yet another name: still one dataset.
  run = Drfm({"--output", "json", "datasets", "upload", Path("blobs.npy"), "--labels", Path("blobs-labels.npy"),
              "--name", "npy-again"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::Dataset>(run.out).id(), id);
  // The CSV's label column counted from the end (-1 = last) reads the same data too.
  WriteFile(Path("blobs-last.csv"), Csv(data, 8));
  run = Drfm({"--output", "json", "datasets", "upload", Path("blobs-last.csv"), "--label-column", "-1"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::Dataset>(run.out).id(), id);

  // IDX (gzipped) images and labels, named after the file by default.
  const uint32_t rows = 60, h = 3, w = 4;
  std::vector<uint8_t> pixels(rows * h * w);
  std::vector<int32_t> idx_labels(rows);
  for (uint32_t r = 0; r < rows; ++r) {
    idx_labels[r] = static_cast<int32_t>(r % 4);
    for (uint32_t p = 0; p < h * w; ++p) pixels[r * h * w + p] = static_cast<uint8_t>((r * 37 + p * 11 + idx_labels[r] * 50) % 256);
  }
  WriteFile(Path("tiny-images-idx3-ubyte.gz"), Gzip(IdxImages(pixels, rows, h, w)));
  WriteFile(Path("tiny-labels-idx1-ubyte.gz"), Gzip(IdxLabels(idx_labels)));
  run = Drfm({"--output", "json", "datasets", "upload", Path("tiny-images-idx3-ubyte.gz"), "--labels",
              Path("tiny-labels-idx1-ubyte.gz")});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Dataset idx = ParseJson<v1::Dataset>(run.out);
  EXPECT_EQ(idx.name(), "tiny-images-idx3-ubyte");
  EXPECT_EQ(idx.rows(), 60);
  EXPECT_EQ(idx.cols(), 12);
  EXPECT_EQ(idx.num_classes(), 4);

  // A name clash: other content under a taken name is ALREADY_EXISTS with the server's message.
  const core::Dataset other = Synthetic(200, 8, 3, 2);
  WriteFile(Path("other.npy"), NpyFeatures(other.features));
  WriteFile(Path("other-labels.npy"), NpyLabels(other.labels));
  run = Drfm({"datasets", "upload", Path("other.npy"), "--labels", Path("other-labels.npy"), "--name", "npy-blobs"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "ALREADY_EXISTS");
  EXPECT_HAS(run.err, "dataset name \"npy-blobs\" is taken");
  EXPECT_TRUE(run.out.empty()) << run;

  // A file the CLI cannot use never reaches the server.
  run = Drfm({"datasets", "upload", Path("blobs.npy")});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "--labels");

  // list: both uploads, table and JSON.
  run = Drfm({"datasets", "list"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "npy-blobs");
  EXPECT_HAS(run.out, "tiny-images-idx3-ubyte");
  EXPECT_HAS(run.out, "ID");
  run = Drfm({"--output", "json", "datasets", "list", "--all"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::ListDatasetsResponse listed = ParseJson<v1::ListDatasetsResponse>(run.out);
  int uploaded = 0;
  for (const v1::Dataset& d : listed.datasets()) uploaded += !d.builtin();
  EXPECT_EQ(uploaded, 2) << run.out;  // the deduplicated uploads are one dataset

  // get in table form, rm, and the NOT_FOUND afterwards.
  run = Drfm({"datasets", "get", idx.id()});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "tiny-images-idx3-ubyte");
  EXPECT_HAS(run.out, idx.sha256());
  run = Drfm({"datasets", "rm", "tiny-images-idx3-ubyte"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, "deleted dataset tiny-images-idx3-ubyte\n");
  run = Drfm({"datasets", "get", idx.id()});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
  EXPECT_HAS(run.err, idx.id());
  run = Drfm({"datasets", "rm", "no-such-dataset"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
  // A built-in dataset cannot be deleted. (datasets.proto names INVALID_ARGUMENT for this; the
  // server answers FAILED_PRECONDITION, server/dataset_service.cc: either way the CLI exits 1 with
  // the server's sentence.)
  run = Drfm({"datasets", "rm", "fashion-mnist:train"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "built-in dataset fashion-mnist:train cannot be deleted");
}

TEST_F(CliE2eTest, FitToSucceededWithJsonAndPlotThenJobsCommands) {
  StartServer();
  // Table mode: the per-layer table and the outcome.
  CliRun run = Drfm(SmallFit(kSynthetic, {"--model", "blobs"}));
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "nc1_in");
  EXPECT_HAS(run.out, "readout");
  EXPECT_HAS(run.out, "SUCCEEDED");

  // JSON: the final Job, parsed with the proto field names; --plot writes a well-formed SVG.
  const std::string svg_path = Path("collapse.svg");
  run = Drfm({"--output", "json", "fit", "--train", kSynthetic, "--test", kSynthetic, "--test-limit", "50",
              "--layers", "2", "--width", "32", "--seed", "3", "--model", "blobs", "--label", "team=e2e",
              "--plot", svg_path});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Job job = ParseJson<v1::Job>(run.out);
  EXPECT_EQ(job.state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(job.kind(), v1::Job::DEEP_RFM);
  EXPECT_EQ(job.layers_done(), 3);
  EXPECT_EQ(job.layers_total(), 3);
  ASSERT_EQ(job.reports_size(), 3);
  for (int i = 0; i < 3; ++i) {
    const v1::LayerReport& r = job.reports(i);
    EXPECT_EQ(r.layer(), i + 1);
    EXPECT_EQ(r.readout(), i == 2);
    EXPECT_GE(r.train_accuracy(), 0.0);
    EXPECT_LE(r.train_accuracy(), 1.0);
    EXPECT_TRUE(r.has_test_accuracy());
    EXPECT_GT(r.input().nc1(), 0.0);
    if (!r.readout()) {
      EXPECT_GT(r.projected().nc1(), 0.0);
    }
  }
  EXPECT_EQ(job.model().name(), "blobs");
  EXPECT_EQ(job.model().version(), 2);  // the table-mode fit stored version 1
  EXPECT_EQ(job.config().layers(), 2);
  EXPECT_EQ(job.config().width(), 32);
  EXPECT_EQ(job.config().seed(), 3u);
  EXPECT_EQ(job.labels().at("team"), "e2e");
  for (const char* key : {"\"layers_done\"", "\"train_accuracy\"", "\"test_accuracy\"", "\"nc1_pinv\"",
                          "\"agop_top_eigenvalues\"", "\"state\": \"SUCCEEDED\""}) {
    EXPECT_HAS(run.out, key) << "protobuf's JSON with proto field names";
  }
  EXPECT_HAS(run.err, "wrote the collapse plot to " + svg_path);
  ASSERT_TRUE(std::filesystem::exists(svg_path));
  const std::string svg = ReadFile(svg_path);
  std::string why;
  EXPECT_TRUE(IsWellFormedSvg(svg, &why)) << why;
  EXPECT_HAS(svg, job.id());
  EXPECT_HAS(svg, "<polyline");

  // --detach: submitted, then watched to the end with `jobs watch` (table, then JSON events).
  run = Drfm(SmallFit(kSynthetic, {"--detach"}));
  ASSERT_EQ(run.code, 0) << run;
  const std::string detached = SubmittedId(run);
  ASSERT_EQ(detached.size(), 16u) << run;
  EXPECT_HAS(run.out, "drfm jobs watch " + detached);
  run = Drfm({"jobs", "watch", detached, "--plot", Path("watched.svg")});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "readout");
  EXPECT_TRUE(IsWellFormedSvg(ReadFile(Path("watched.svg")), &why)) << why;
  run = Drfm({"--output", "json", "jobs", "watch", detached});
  ASSERT_EQ(run.code, 0) << run;
  std::vector<v1::JobEvent> events;
  for (absl::string_view line : absl::StrSplit(run.out, '\n', absl::SkipEmpty())) {
    events.push_back(ParseJson<v1::JobEvent>(std::string(line)));
  }
  ASSERT_FALSE(events.empty());
  int layer_reports = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    layer_reports += events[i].has_layer_report();
  }
  EXPECT_EQ(layer_reports, 3);
  EXPECT_EQ(events.front().state_change().state(), v1::Job::QUEUED);
  EXPECT_EQ(events.back().state_change().state(), v1::Job::SUCCEEDED);
  // The model it stored under the job id.
  EXPECT_EQ(events.back().state_change().model().name(), detached);

  // jobs list (table, JSON, state filter) and jobs get (table, JSON, plot).
  run = Drfm({"jobs", "list"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, job.id());
  EXPECT_HAS(run.out, detached);
  run = Drfm({"--output", "json", "jobs", "list", "--state", "succeeded"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::ListJobsResponse>(run.out).jobs_size(), 3);
  run = Drfm({"--output", "json", "jobs", "list", "--state", "failed"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::ListJobsResponse>(run.out).jobs_size(), 0);
  run = Drfm({"jobs", "list", "--state", "exploded"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "--state must be one of");
  run = Drfm({"jobs", "get", job.id(), "--plot", Path("get.svg")});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "SUCCEEDED");
  EXPECT_HAS(run.out, "blobs v2");
  EXPECT_HAS(run.out, "nc1_in");
  EXPECT_TRUE(IsWellFormedSvg(ReadFile(Path("get.svg")), &why)) << why;
  run = Drfm({"--output", "json", "jobs", "get", job.id()});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::Job>(run.out).reports_size(), 3);

  // Cancelling a finished job is a no-op that says so; rm deletes it.
  run = Drfm({"jobs", "cancel", job.id()});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, absl::StrCat("job ", job.id(), " is SUCCEEDED\n"));
  run = Drfm({"jobs", "rm", job.id()});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, absl::StrCat("deleted job ", job.id(), "\n"));
  for (const char* command : {"get", "watch", "cancel", "rm"}) {
    run = Drfm({"jobs", command, job.id()});
    EXPECT_EQ(run.code, client::kExitError) << command << ": " << run;
    EXPECT_HAS(run.err, "NOT_FOUND") << command;
    EXPECT_HAS(run.err, job.id()) << command;
  }
  // Its model stays.
  EXPECT_EQ(Drfm({"models", "get", "blobs", "--version", "2"}).code, 0);
}

TEST_F(CliE2eTest, CancelledAndFailedJobsExitNonZeroAndRunningJobsCannotBeDeleted) {
  StartServer();
  const core::Dataset data = Synthetic(200, 8, 3, 4);
  WriteFile(Path("doomed.npy"), NpyFeatures(data.features));
  WriteFile(Path("doomed-labels.npy"), NpyLabels(data.labels));
  ASSERT_EQ(Drfm({"datasets", "upload", Path("doomed.npy"), "--labels", Path("doomed-labels.npy")}).code, 0);

  // One worker: a slow fit runs, two small ones wait behind it.
  CliRun run = Drfm({"fit", "--train", kSlowSynthetic, "--layers", "3", "--width", "512", "--detach"});
  ASSERT_EQ(run.code, 0) << run;
  const std::string slow = SubmittedId(run);
  AwaitRunning(slow);
  run = Drfm(SmallFit(kSynthetic, {"--detach"}));
  ASSERT_EQ(run.code, 0) << run;
  const std::string queued = SubmittedId(run);
  run = Drfm(SmallFit("doomed", {"--detach"}));
  ASSERT_EQ(run.code, 0) << run;
  const std::string failing = SubmittedId(run);

  // A queued or running job cannot be deleted.
  for (const std::string& id : {slow, queued}) {
    run = Drfm({"jobs", "rm", id});
    EXPECT_EQ(run.code, client::kExitError) << run;
    EXPECT_HAS(run.err, "FAILED_PRECONDITION") << run;
  }
  run = Drfm({"--output", "json", "jobs", "list", "--state", "queued"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::ListJobsResponse>(run.out).jobs_size(), 2) << run.out;
  run = Drfm({"jobs", "list", "--state", "running"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, slow);

  // Cancel the queued job: watching it then exits non-zero with CANCELLED.
  run = Drfm({"jobs", "cancel", queued});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, queued);
  run = Drfm({"jobs", "watch", queued});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, absl::StrCat("job ", queued, " CANCELLED"));

  // The dataset of the other queued job goes away: it fails when it starts, with NOT_FOUND's
  // sentence, and its watch exits non-zero with it.
  run = Drfm({"datasets", "rm", "doomed"});
  ASSERT_EQ(run.code, 0) << run;

  // Cancel the running job; `fit`'s watch of it (re-attached with jobs watch) exits non-zero.
  run = Drfm({"jobs", "cancel", slow});
  EXPECT_EQ(run.code, 0) << run;
  run = Drfm({"jobs", "watch", slow});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, absl::StrCat("job ", slow, " CANCELLED"));

  run = Drfm({"jobs", "watch", failing});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, absl::StrCat("job ", failing, " FAILED"));
  EXPECT_HAS(run.err, "doomed");
  run = Drfm({"--output", "json", "jobs", "get", failing});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Job failed = ParseJson<v1::Job>(run.out);
  EXPECT_EQ(failed.state(), v1::Job::FAILED);
  EXPECT_FALSE(failed.error().empty());

  // Terminal now: all three can be removed.
  for (const std::string& id : {slow, queued, failing}) {
    run = Drfm({"jobs", "rm", id});
    EXPECT_EQ(run.code, 0) << run;
  }
  run = Drfm({"--output", "json", "jobs", "list"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::ListJobsResponse>(run.out).jobs_size(), 0) << run.out;
}

TEST_F(CliE2eTest, EstimateAndSubmitErrorsCarryTheServersMessage) {
  StartServer();
  CliRun run = Drfm({"estimate", "--train", kSynthetic, "--layers", "2", "--width", "32"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "train rows:");
  EXPECT_HAS(run.out, "200");
  EXPECT_HAS(run.out, "peak memory:");
  run = Drfm({"--output", "json", "estimate", "--train", kSynthetic, "--test", kSynthetic, "--test-limit",
              "50", "--layers", "2", "--width", "32"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::FitEstimate estimate = ParseJson<v1::FitEstimate>(run.out);
  EXPECT_EQ(estimate.train_rows(), 200);
  EXPECT_EQ(estimate.test_rows(), 50);
  EXPECT_EQ(estimate.cols(), 8);
  EXPECT_EQ(estimate.num_classes(), 3);
  EXPECT_GT(estimate.memory_bytes(), 0);
  EXPECT_GT(estimate.flops(), 0.0);
  EXPECT_TRUE(estimate.within_budget());
  EXPECT_HAS(run.out, "\"memory_bytes\"");

  struct Case {
    std::vector<std::string> flags;
    std::string code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--train", "no-such-dataset"}, "NOT_FOUND", "no dataset has id or name \"no-such-dataset\""},
      {{"--train", kSynthetic, "--test", "missing-test-set"}, "NOT_FOUND", "\"missing-test-set\""},
      {{"--train", kSynthetic, "--layers", "-1"}, "INVALID_ARGUMENT", "config.layers = -1 is not allowed"},
      {{"--train", kSynthetic, "--width", "0"}, "INVALID_ARGUMENT", "config.width = 0 is not allowed"},
      {{"--train", kSynthetic, "--bandwidth", "-2"}, "INVALID_ARGUMENT", "bandwidth"},
      {{"--train", kSynthetic, "--rfm-iterations", "51"}, "INVALID_ARGUMENT", "rfm_iterations"},
      {{"--train", kSynthetic, "--train-limit", "-5"}, "INVALID_ARGUMENT", "limit"},
      {{"--train", "synthetic:rows=oops"}, "INVALID_ARGUMENT", "synthetic"},
  };
  for (const Case& c : cases) {
    for (const char* command : {"fit", "estimate"}) {
      std::vector<std::string> args = {command};
      args.insert(args.end(), c.flags.begin(), c.flags.end());
      run = Drfm(args);
      EXPECT_EQ(run.code, client::kExitError) << command << " " << absl::StrJoin(c.flags, " ") << "\n" << run;
      EXPECT_HAS(run.err, c.code) << command << " " << absl::StrJoin(c.flags, " ");
      EXPECT_HAS(run.err, c.message) << command << " " << absl::StrJoin(c.flags, " ");
    }
  }
  // A model name the server refuses.
  run = Drfm(SmallFit(kSynthetic, {"--model", "bad name!"}));
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "INVALID_ARGUMENT");
  // Idempotency: the same request id with another request is ALREADY_EXISTS.
  run = Drfm(SmallFit(kSynthetic, {"--detach", "--request-id", "r-1"}));
  ASSERT_EQ(run.code, 0) << run;
  const std::string first = SubmittedId(run);
  run = Drfm(SmallFit(kSynthetic, {"--detach", "--request-id", "r-1"}));
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(SubmittedId(run), first);
  run = Drfm({"fit", "--train", kSynthetic, "--layers", "1", "--detach", "--request-id", "r-1"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "ALREADY_EXISTS");
  EXPECT_HAS(run.err, "r-1");

  // No refused submission created a job.
  run = Drfm({"--output", "json", "jobs", "list"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::ListJobsResponse>(run.out).jobs_size(), 1) << run.out;
  EXPECT_EQ(Drfm({"jobs", "watch", first}).code, 0);
}

TEST_F(CliE2eTest, ModelsListGetExportRm) {
  StartServer();
  ASSERT_EQ(Drfm(SmallFit(kSynthetic, {"--model", "m"})).code, 0);
  CliRun second = Drfm({"fit", "--train", kSynthetic, "--layers", "2", "--width", "32", "--seed", "4", "--model", "m"});
  ASSERT_EQ(second.code, 0) << second;
  ASSERT_EQ(Drfm(SmallFit(kSynthetic, {"--model", "other"})).code, 0);

  CliRun run = Drfm({"models", "list"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "NAME");
  EXPECT_HAS(run.out, "other");
  EXPECT_HAS(run.out, "DEEP_RFM");
  run = Drfm({"--output", "json", "models", "list", "--name", "m"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::ListModelsResponse listed = ParseJson<v1::ListModelsResponse>(run.out);
  ASSERT_EQ(listed.models_size(), 2);
  EXPECT_EQ(listed.models(0).version(), 2);  // newest first
  EXPECT_EQ(listed.models(1).version(), 1);

  run = Drfm({"--output", "json", "models", "get", "m"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::Model latest = ParseJson<v1::Model>(run.out);
  EXPECT_EQ(latest.name(), "m");
  EXPECT_EQ(latest.version(), 2);
  EXPECT_EQ(latest.kind(), v1::Model::DEEP_RFM);
  EXPECT_EQ(latest.input_dim(), 8);
  EXPECT_EQ(latest.classes(), 3);
  EXPECT_EQ(latest.layers(), 2);
  EXPECT_EQ(latest.config().seed(), 4u);
  EXPECT_EQ(latest.sha256().size(), 64u);
  run = Drfm({"models", "get", "m", "--version", "1"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "version:");
  EXPECT_HAS(run.out, "seed=3");
  run = Drfm({"models", "get", "m", "--version", "9"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");

  // Export: the file the server announced, byte for byte (its SHA-256 checked by the client and
  // here against the first chunk's header).
  auto stub = v1::ModelService::NewStub(channel_);
  v1::ExportModelRequest request;
  request.set_name("m");
  request.set_version(1);
  grpc::ClientContext context;
  auto reader = stub->ExportModel(&context, request);
  v1::ExportModelChunk first_chunk;
  ASSERT_TRUE(reader->Read(&first_chunk));
  context.TryCancel();
  reader->Finish();

  const std::string out = Path("m1.safetensors");
  run = Drfm({"models", "export", "m", "--version", "1", "--out", out});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "wrote model m v1");
  const std::string file = ReadFile(out);
  EXPECT_EQ(static_cast<int64_t>(file.size()), first_chunk.total_bytes());
  EXPECT_EQ(server::Sha256Hex(file), first_chunk.sha256());
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
  ASSERT_GE(file.size(), 9u);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(file[i]);
  ASSERT_LE(8 + header_len, file.size());
  EXPECT_EQ(file[8], '{') << "a safetensors file starts with its JSON header";
  // JSON output, and the default file name NAME-vN.safetensors in the working directory.
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_);
  run = Drfm({"--output", "json", "models", "export", "m"});
  std::filesystem::current_path(cwd);
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParseJson<v1::Model>(run.out).version(), 2);
  EXPECT_TRUE(std::filesystem::exists(Path("m-v2.safetensors")));
  run = Drfm({"models", "export", "no-such-model", "--out", Path("none.safetensors")});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
  EXPECT_FALSE(std::filesystem::exists(Path("none.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(Path("none.safetensors.part")));

  // rm one version, then every version.
  run = Drfm({"models", "rm", "m", "--version", "1"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, "deleted model m v1\n");
  run = Drfm({"models", "get", "m", "--version", "1"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_EQ(Drfm({"models", "get", "m"}).code, 0);
  run = Drfm({"models", "rm", "m"});
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_EQ(run.out, "deleted every version of model m\n");
  run = Drfm({"models", "get", "m"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
  run = Drfm({"models", "rm", "m"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  run = Drfm({"--output", "json", "models", "list"});
  ASSERT_EQ(run.code, 0) << run;
  const v1::ListModelsResponse remaining = ParseJson<v1::ListModelsResponse>(run.out);
  ASSERT_EQ(remaining.models_size(), 1);
  EXPECT_EQ(remaining.models(0).name(), "other");
}

// The labels of the CSV `predict` writes (header "label[,score_0,...]"); scores into `scores`.
std::vector<int32_t> ParsePredictionCsv(const std::string& csv, int classes, std::vector<float>* scores) {
  std::vector<int32_t> labels;
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  EXPECT_FALSE(lines.empty());
  if (lines.empty()) return labels;
  EXPECT_EQ(lines[0].rfind("label", 0), 0u) << lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> cells = absl::StrSplit(lines[i], ',');
    int32_t label = -1;
    EXPECT_TRUE(absl::SimpleAtoi(cells[0], &label)) << lines[i];
    labels.push_back(label);
    if (scores != nullptr) {
      EXPECT_EQ(static_cast<int>(cells.size()), 1 + classes) << lines[i];
      for (size_t c = 1; c < cells.size(); ++c) {
        float value = 0;
        EXPECT_TRUE(absl::SimpleAtof(cells[c], &value)) << lines[i];
        scores->push_back(value);
      }
    }
  }
  return labels;
}

TEST_F(CliE2eTest, PredictMatchesTheServerAndRefusesTheWrongShape) {
  StartServer();
  const core::Dataset data = Synthetic(200, 8, 3, 6);
  WriteFile(Path("train.npy"), NpyFeatures(data.features));
  WriteFile(Path("train-labels.npy"), NpyLabels(data.labels));
  ASSERT_EQ(Drfm({"datasets", "upload", Path("train.npy"), "--labels", Path("train-labels.npy")}).code, 0);
  CliRun run = Drfm(SmallFit("train", {"--model", "p"}));
  ASSERT_EQ(run.code, 0) << run;

  const int64_t rows = 50;
  const core::RowMatrixF x = data.features.topRows(rows);
  WriteFile(Path("rows.npy"), NpyFeatures(x));
  const v1::PredictResponse expected = ServerPredict("p", x, /*scores=*/true);
  ASSERT_EQ(expected.labels_size(), rows);
  const std::vector<int32_t> expected_labels(expected.labels().begin(), expected.labels().end());

  // Labels on stdout, one per input row, in order.
  run = Drfm({"predict", "p", Path("rows.npy")});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParsePredictionCsv(run.out, 3, nullptr), expected_labels);
  EXPECT_EQ(run.out.substr(0, 6), "label\n");

  // --scores into --out: exactly the server's scores (printed to round-trip).
  run = Drfm({"predict", "p", Path("rows.npy"), "--scores", "--out", Path("pred.csv")});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, absl::StrCat("wrote ", rows, " predictions of model p v1 to ", Path("pred.csv")));
  std::vector<float> scores;
  EXPECT_EQ(ParsePredictionCsv(ReadFile(Path("pred.csv")), 3, &scores), expected_labels);
  EXPECT_EQ(scores, std::vector<float>(expected.scores().begin(), expected.scores().end()));
  // --batch-rows 7 goes through PredictStream in 8 requests: the same labels. (The scores agree to
  // float32 round-off only: the server's kernel products sum in an order that depends on the
  // batch's shape.)
  run = Drfm({"predict", "p", Path("rows.npy"), "--scores", "--batch-rows", "7"});
  ASSERT_EQ(run.code, 0) << run;
  std::vector<float> batched_scores;
  EXPECT_EQ(ParsePredictionCsv(run.out, 3, &batched_scores), expected_labels);
  ASSERT_EQ(batched_scores.size(), scores.size());
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_NEAR(batched_scores[i], scores[i], 1e-4) << i;
  EXPECT_HAS(ReadFile(Path("pred.csv")), "label,score_0,score_1,score_2\n");

  // JSON: a PredictResponse with every row.
  run = Drfm({"--output", "json", "predict", "p", Path("rows.npy")});
  ASSERT_EQ(run.code, 0) << run;
  const v1::PredictResponse json = ParseJson<v1::PredictResponse>(run.out);
  EXPECT_EQ(std::vector<int32_t>(json.labels().begin(), json.labels().end()), expected_labels);
  EXPECT_EQ(json.model().version(), 1);

  // A CSV with the label column: the same labels and the accuracy against the column.
  core::Dataset head;
  head.features = x;
  head.labels.assign(data.labels.begin(), data.labels.begin() + rows);
  head.num_classes = 3;
  WriteFile(Path("rows.csv"), Csv(head, 8));
  run = Drfm({"predict", "p", Path("rows.csv"), "--label-column", "8"});
  ASSERT_EQ(run.code, 0) << run;
  EXPECT_EQ(ParsePredictionCsv(run.out, 3, nullptr), expected_labels);
  int correct = 0;
  for (int64_t i = 0; i < rows; ++i) correct += expected_labels[i] == head.labels[i];
  EXPECT_HAS(run.err, absl::StrFormat("accuracy %.4f (%d of %d rows", correct / 50.0, correct, rows));

  // The representation after layer 1: 32 columns per row.
  run = Drfm({"predict", "p", Path("rows.npy"), "--layer", "1"});
  ASSERT_EQ(run.code, 0) << run;
  std::vector<std::string> lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(static_cast<int64_t>(lines.size()), rows + 1);
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(lines[1], ',')).size(), 32u);

  // The wrong number of columns: refused with the expected shape in the message.
  const core::RowMatrixF narrow = data.features.topLeftCorner(rows, 5);
  WriteFile(Path("narrow.npy"), NpyFeatures(narrow));
  run = Drfm({"predict", "p", Path("narrow.npy")});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "INVALID_ARGUMENT");
  EXPECT_HAS(run.err, "expects rows of 8 features (shape N x 8)");
  EXPECT_HAS(run.err, "(shape 50 x 5)");
  EXPECT_TRUE(run.out.empty()) << run;
  // An unknown model and a missing version.
  run = Drfm({"predict", "no-such-model", Path("rows.npy")});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "NOT_FOUND");
  run = Drfm({"predict", "p", Path("rows.npy"), "--version", "7"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "model p has no version 7") << run;
  // A layer beyond the model's.
  run = Drfm({"predict", "p", Path("rows.npy"), "--layer", "3"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "--layer must be in [0, 2]");
}

TEST_F(CliE2eTest, TokenAuth) {
  const std::string token = "e2e-cli-token-0123456789abcdef";
  WriteFile(Path("tokens"), token + "\n");
  WriteFile(Path("right"), token + "\n");
  WriteFile(Path("wrong"), "not-the-token-0123456789abcdef\n");
  options_.token_file = Path("tokens");
  StartServer();

  for (const std::vector<std::string>& command :
       std::vector<std::vector<std::string>>{{"jobs", "list"}, {"datasets", "list"}, {"models", "list"},
                                             {"estimate", "--train", kSynthetic}}) {
    CliRun run = Drfm(command);
    EXPECT_EQ(run.code, client::kExitError) << run;
    EXPECT_HAS(run.err, "UNAUTHENTICATED") << run;
    EXPECT_HAS(run.err, "--token-file") << run;
  }
  std::vector<std::string> args = {"--token-file", Path("wrong"), "jobs", "list"};
  CliRun run = Drfm(args);
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, "PERMISSION_DENIED") << run;

  // The right token: every kind of call works, the watch included.
  run = Drfm({"--token-file", Path("right"), "health", "--service", "drfm.v1.JobService"});
  EXPECT_EQ(run.code, 0) << run;
  std::vector<std::string> fit = SmallFit(kSynthetic, {"--model", "authed"});
  fit.insert(fit.begin(), {"--token-file", Path("right")});
  run = Drfm(fit);
  EXPECT_EQ(run.code, 0) << run;
  EXPECT_HAS(run.out, "SUCCEEDED");
  run = Drfm({"--token-file", Path("right"), "--output", "json", "models", "get", "authed"});
  EXPECT_EQ(run.code, 0) << run;
  // A token file that cannot be read is the CLI's error, before any call.
  run = Drfm({"--token-file", Path("missing"), "jobs", "list"});
  EXPECT_EQ(run.code, client::kExitError) << run;
  EXPECT_HAS(run.err, Path("missing"));
}

}  // namespace
}  // namespace drfm
