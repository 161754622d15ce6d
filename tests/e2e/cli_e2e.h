// What the end-to-end tests of the `drfm` command line share (tests/e2e/cli_test.cc and
// cli_mlp_test.cc): a fixture that starts a DrfmServer in-process on 127.0.0.1:0 with a temporary
// data dir and runs RunCli against it over loopback TCP with stdout and stderr captured, and
// helpers for files, JSON output and SVG plots.
#ifndef DRFM_TESTS_E2E_CLI_E2E_H_
#define DRFM_TESTS_E2E_CLI_E2E_H_

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/cli.h"
#include "core/types.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/server.h"

namespace drfm::e2e {

// EXPECT that `text` contains `needle`, printing both when it does not.
#define EXPECT_HAS(text, needle) \
  EXPECT_TRUE(absl::StrContains(text, needle)) << "expected \"" << (needle) << "\" in:\n" << (text)

inline std::string NewTempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/drfm_e2e_cli_", name, "_", getpid(), "_", counter++);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << bytes;
  ASSERT_TRUE(file.good()) << path;
}

inline std::string Bytes(const void* data, size_t size) {
  return std::string(static_cast<const char*>(data), size);
}

// True when `svg` is well-formed XML (tags nest and close; attribute values quoted) with an <svg>
// root element. Enough of XML for the renderer's output: declarations, comments and CDATA-free
// text.
inline bool IsWellFormedSvg(const std::string& svg, std::string* why) {
  std::vector<std::string> stack;
  bool saw_root = false;
  size_t i = 0;
  while ((i = svg.find('<', i)) != std::string::npos) {
    if (svg.compare(i, 4, "<!--") == 0) {
      const size_t end = svg.find("-->", i);
      if (end == std::string::npos) return *why = "unclosed comment", false;
      i = end + 3;
      continue;
    }
    if (svg.compare(i, 2, "<?") == 0 || svg.compare(i, 2, "<!") == 0) {
      const size_t end = svg.find('>', i);
      if (end == std::string::npos) return *why = "unclosed declaration", false;
      i = end + 1;
      continue;
    }
    // Find the end of the tag, skipping quoted attribute values.
    size_t j = i + 1;
    char quote = 0;
    for (; j < svg.size(); ++j) {
      if (quote != 0) {
        if (svg[j] == quote) quote = 0;
      } else if (svg[j] == '"' || svg[j] == '\'') {
        quote = svg[j];
      } else if (svg[j] == '<') {
        return *why = absl::StrCat("'<' inside a tag at ", i), false;
      } else if (svg[j] == '>') {
        break;
      }
    }
    if (j >= svg.size()) return *why = absl::StrCat("unclosed tag at ", i), false;
    const std::string tag = svg.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty()) return *why = "empty tag", false;
    if (tag[0] == '/') {
      const std::string name(absl::StripAsciiWhitespace(tag.substr(1)));
      if (stack.empty() || stack.back() != name) {
        return *why =
                   absl::StrCat("</", name, "> closes <", stack.empty() ? "" : stack.back(), ">"),
               false;
      }
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\r\n/"));
    if (stack.empty()) {
      if (saw_root) return *why = "a second root element", false;
      if (name != "svg") return *why = absl::StrCat("root element <", name, ">"), false;
      saw_root = true;
    }
    if (tag.back() != '/') stack.push_back(name);
  }
  if (!stack.empty()) return *why = absl::StrCat("<", stack.back(), "> never closed"), false;
  if (!saw_root) return *why = "no <svg> element", false;
  return true;
}

template <typename Message>
Message ParseJson(const std::string& json) {
  Message message;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // every key must be a field of the message
  const auto status = google::protobuf::util::JsonStringToMessage(json, &message, options);
  EXPECT_TRUE(status.ok()) << status.message() << "\n" << json;
  return message;
}

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

inline std::ostream& operator<<(std::ostream& os, const CliRun& run) {
  return os << "exit " << run.code << "\n--- stdout\n" << run.out << "--- stderr\n" << run.err;
}

// A DrfmServer on 127.0.0.1:0 with a temporary data dir (one worker, one thread per fit), and
// `drfm` command lines run against it through RunCli with the default Client::Connect.
class CliE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    options_.listen = "127.0.0.1:0";
    options_.metrics_listen = "";
    options_.data_dir = dir_ + "/data";
    options_.workers = 1;
    options_.threads_per_fit = 1;
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(2));
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer() {
    auto server = server::DrfmServer::Start(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  }

  // `drfm --server ADDRESS args...` with the process's streams captured.
  CliRun Drfm(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", address_});
    std::ostringstream out, err;
    client::CliEnv env;
    env.out = &out;
    env.err = &err;
    env.watch_initial_backoff = absl::Milliseconds(50);
    CliRun run;
    run.code = client::RunCli(args, env);
    run.out = out.str();
    run.err = err.str();
    return run;
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Fit flags of the small fit.
  static std::vector<std::string> SmallFit(const std::string& train,
                                           std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"fit",          "--train", train,      "--test", train,
                                     "--test-limit", "50",      "--layers", "2",      "--width",
                                     "32",           "--seed",  "3"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }

  // The job id in "submitted job ID (QUEUED)".
  static std::string SubmittedId(const CliRun& run) {
    const std::string marker = "submitted job ";
    const size_t at = run.out.find(marker);
    if (at == std::string::npos) return "";
    const size_t start = at + marker.size();
    return run.out.substr(start, run.out.find(' ', start) - start);
  }

  // Predict through the API directly, for comparison with the CLI.
  v1::PredictResponse ServerPredict(const std::string& model, const core::RowMatrixF& x,
                                    bool scores) {
    auto stub = v1::ModelService::NewStub(channel_);
    v1::PredictRequest request;
    request.set_model(model);
    request.set_rows(x.rows());
    request.set_cols(x.cols());
    request.set_features(Bytes(x.data(), static_cast<size_t>(x.size()) * 4));
    request.set_return_scores(scores);
    grpc::ClientContext context;
    v1::PredictResponse response;
    const grpc::Status status = stub->Predict(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Waits until the job is RUNNING (fails the test after 60 s).
  void AwaitRunning(const std::string& job_id) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const CliRun run = Drfm({"--output", "json", "jobs", "get", job_id});
      ASSERT_EQ(run.code, 0) << run;
      const v1::Job job = ParseJson<v1::Job>(run.out);
      if (job.state() == v1::Job::RUNNING) return;
      ASSERT_EQ(job.state(), v1::Job::QUEUED) << run;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "job " << job_id << " did not start within 60 s";
  }

  std::string dir_;
  server::ServerOptions options_;
  std::unique_ptr<server::DrfmServer> server_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace drfm::e2e

#endif  // DRFM_TESTS_E2E_CLI_E2E_H_
