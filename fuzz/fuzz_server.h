// What the fuzz targets that drive a real gRPC service over a client stream share
// (upload_fuzz.cc, import_fuzz.cc): an empty SqliteStore in a temporary directory, the service
// served on a 127.0.0.1 port of this process, and one client-streaming call.
#ifndef DRFM_FUZZ_FUZZ_SERVER_H_
#define DRFM_FUZZ_FUZZ_SERVER_H_

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "server/store.h"

namespace drfm::fuzz {

// A fresh store in a new temporary directory named after `prefix` (its path in `*data_dir` when
// not null). Also silences protobuf's log: unparsable strings (invalid UTF-8) are an expected
// outcome of these targets.
inline std::unique_ptr<server::SqliteStore> OpenTempStore(const char* prefix,
                                                          std::string* data_dir = nullptr) {
  google::protobuf::SetLogHandler(nullptr);
  server::SqliteStoreOptions options;
  options.data_dir = MakeTempDir(prefix);
  if (data_dir != nullptr) *data_dir = options.data_dir;
  absl::StatusOr<std::unique_ptr<server::SqliteStore>> store = server::SqliteStore::Open(options);
  FUZZ_CHECK(store.ok());
  return *std::move(store);
}

// Serves `service` on a new 127.0.0.1 port and returns a channel to it. A loopback port rather
// than an in-process channel: gRPC's in-process transport keeps every call the server ends before
// reading the whole client stream (about 10 KB each), which would exhaust the fuzzer's memory
// limit within minutes.
inline std::shared_ptr<grpc::Channel> ServeOnLoopback(grpc::Service* service,
                                                      std::unique_ptr<grpc::Server>* server) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  *server = builder.BuildAndStart();
  FUZZ_CHECK(*server != nullptr && port > 0);
  return grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureChannelCredentials());
}

// Sends `messages` on a client stream opened by `writer` (until the server answers) and returns
// the call's status.
template <typename Request>
grpc::Status SendAll(grpc::ClientWriter<Request>& writer, const std::vector<Request>& messages) {
  for (const Request& m : messages) {
    if (!writer.Write(m)) break;  // the server has already answered
  }
  writer.WritesDone();
  return writer.Finish();
}

}  // namespace drfm::fuzz

#endif  // DRFM_FUZZ_FUZZ_SERVER_H_
