// The one place where absl::Status becomes grpc::Status: RPC methods compute absl results and
// convert at their boundary. The canonical codes have the same numbers in both libraries.
#ifndef DRFM_SERVER_GRPC_STATUS_H_
#define DRFM_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"

namespace drfm::server {

// Longest status message sent. A message travels as the grpc-message trailer, percent-encoded
// (up to 3 bytes per byte), and clients refuse metadata over 8 KiB by default (gRPC then reports
// RESOURCE_EXHAUSTED "received initial metadata size exceeds limit" instead of the server's
// status); a message that quotes a client's oversized input must not get there.
inline constexpr size_t kMaxStatusMessageBytes = 2048;

// Same code and message, the message cut to kMaxStatusMessageBytes (and marked as truncated).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical name of a gRPC code ("OK", "INVALID_ARGUMENT", ...), as Prometheus labels use it.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace drfm::server

#endif  // DRFM_SERVER_GRPC_STATUS_H_
