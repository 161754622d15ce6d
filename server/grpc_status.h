// The one place where absl::Status becomes grpc::Status: RPC methods compute absl results and
// convert at their boundary. The canonical codes have the same numbers in both libraries.
#ifndef DRFM_SERVER_GRPC_STATUS_H_
#define DRFM_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace drfm::server {

// Same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical name of a gRPC code ("OK", "INVALID_ARGUMENT", ...), as Prometheus labels use it.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace drfm::server

#endif  // DRFM_SERVER_GRPC_STATUS_H_
