// Small helpers the in-process end-to-end tests (server_test.cc, mlp_service_test.cc) share: a
// fresh scratch directory and a plain HTTP GET for the Prometheus endpoint.
#ifndef DRFM_TESTS_E2E_E2E_UTIL_H_
#define DRFM_TESTS_E2E_E2E_UTIL_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"

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

}  // namespace drfm::e2e

#endif  // DRFM_TESTS_E2E_E2E_UTIL_H_
