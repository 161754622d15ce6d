// What the in-process end-to-end tests (server_test.cc, mlp_service_test.cc) share: a fresh
// scratch directory, a plain HTTP GET for the Prometheus endpoint, and a fixture running a
// DrfmServer in this process on 127.0.0.1 ports with stubs of its three services.
#ifndef DRFM_TESTS_E2E_E2E_UTIL_H_
#define DRFM_TESTS_E2E_E2E_UTIL_H_

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/dataset.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/server.h"

namespace drfm::e2e {

// A path under the test temp dir that does not exist yet (removed if it did): `prefix`, `name`,
// the pid and a counter, so concurrent tests and processes never share one.
inline std::string ScratchPath(const std::string& prefix, const std::string& name) {
  static std::atomic<int> counter{0};
  std::string dir =
      absl::StrCat(::testing::TempDir(), "/", prefix, "_", name, "_", getpid(), "_", counter++);
  std::filesystem::remove_all(dir);
  return dir;
}

// A seeded Gaussian-mixture dataset (core::MakeSynthetic).
inline core::Dataset Synthetic(int64_t rows, int64_t cols, int classes, uint64_t seed) {
  core::SyntheticSpec spec;
  spec.rows = rows;
  spec.cols = cols;
  spec.classes = classes;
  spec.seed = seed;
  return *core::MakeSynthetic(spec);
}

// Plain HTTP/1.0 GET on 127.0.0.1:port; returns the body ("" on failure).
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// A DrfmServer in this process (TearDown shuts it down and removes its data dir).
class InProcessServerTest : public ::testing::Test {
 protected:
  // Starts a server on 127.0.0.1 ports with a fresh data dir (ScratchPath(prefix, "server")),
  // `workers` job workers and one thread per fit.
  void StartFresh(const std::string& prefix, int workers) {
    options_.listen = "127.0.0.1:0";
    options_.metrics_listen = "127.0.0.1:0";
    options_.data_dir = ScratchPath(prefix, "server");
    options_.workers = workers;
    options_.threads_per_fit = 1;
    StartServer();
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(5));
    server_.reset();
    std::filesystem::remove_all(options_.data_dir);
  }
  // Starts a server with options_ and connects the stubs to it.
  void StartServer() {
    absl::StatusOr<std::unique_ptr<server::DrfmServer>> server = server::DrfmServer::Start(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server_->port()),
                                         grpc::InsecureChannelCredentials(), args);
    datasets_ = v1::DatasetService::NewStub(channel_);
    jobs_ = v1::JobService::NewStub(channel_);
    models_ = v1::ModelService::NewStub(channel_);
  }
  // Shuts the server down (draining for up to `drain`) and starts it again on the same data dir.
  void RestartServer(absl::Duration drain) {
    server_->Shutdown(drain);
    server_.reset();
    StartServer();
  }

  server::ServerOptions options_;
  std::unique_ptr<server::DrfmServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::ModelService::Stub> models_;
};

}  // namespace drfm::e2e

#endif  // DRFM_TESTS_E2E_E2E_UTIL_H_
