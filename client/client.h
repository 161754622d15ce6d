// The drfm client library: a channel to a drfm server (plaintext or TLS, optionally with a client
// certificate, and an optional bearer token) and the calls of DatasetService, JobService,
// ModelService and grpc.health.v1.Health, each returning absl::Status / absl::StatusOr with the
// server's code and message. WatchJob follows a job's events and, when the connection drops,
// re-attaches by itself from the last sequence it saw (WatchJobRequest.after_sequence), so the
// caller sees every event exactly once.
#ifndef DRFM_CLIENT_CLIENT_H_
#define DRFM_CLIENT_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/payload.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "drfm/v1/jobs.grpc.pb.h"
#include "drfm/v1/models.grpc.pb.h"

namespace drfm::client {

// Where and how to connect. Defaults: plaintext to localhost:50051, no token, 30 s per unary call.
struct ConnectionOptions {
  // HOST:PORT (any gRPC target, e.g. "dns:///host:50051" or "unix:/path").
  std::string server = "localhost:50051";
  // Bearer token sent with every call as "authorization: Bearer <token>". Empty: none.
  std::string token;
  // TLS with the system's root certificates. Implied by tls_ca_file, tls_cert_file, tls_key_file.
  bool tls = false;
  // PEM root certificates that verify the server (enables TLS).
  std::string tls_ca_file;
  // PEM client certificate chain and private key for mutual TLS: both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Name to check the server certificate against instead of the host of `server` (for a
  // certificate issued to a name other than the address used). Empty: the host.
  std::string tls_server_name;
  // Deadline of each unary call. absl::InfiniteDuration(): none. Streaming calls (watch, upload,
  // predict stream, export) have no deadline: they last as long as their data.
  absl::Duration timeout = absl::Seconds(30);
  // Largest response accepted, in bytes (Predict scores of a large batch can exceed gRPC's 4 MiB).
  int max_receive_message_bytes = 256 << 20;

  // InvalidArgument when the server is empty, the timeout is not positive, or only one of
  // tls_cert_file / tls_key_file is set.
  absl::Status Validate() const;
  bool UsesTls() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty();
  }
};

// The token in the file at `path`, surrounding whitespace removed. NotFound / PermissionDenied
// naming the path when it cannot be read; InvalidArgument when it is empty or holds whitespace or
// control characters inside (it would not survive as a header value).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The same code and message (gRPC's canonical codes have absl's numbers).
absl::Status FromGrpcStatus(const grpc::Status& status);

// A channel for `options` (TLS credentials read from the named files). The channel connects
// lazily: an unreachable server shows up as UNAVAILABLE on the first call. InvalidArgument from
// Validate(); NotFound / PermissionDenied when a TLS file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(const ConnectionOptions& options);

// Lets another thread stop a blocking call (WatchJob and its waits between reconnects): a Ctrl-C
// handler, a timeout, a test. Once cancelled it stays cancelled. Thread-safe.
class Canceller {
 public:
  Canceller() = default;
  Canceller(const Canceller&) = delete;
  Canceller& operator=(const Canceller&) = delete;

  // Cancels the call in flight (if any) and every later one.
  void Cancel();
  bool cancelled() const;
  // Waits up to `timeout` for Cancel(); true when cancelled.
  bool WaitForCancel(absl::Duration timeout) const;

 private:
  friend class Client;
  // Makes `context` the call Cancel() stops; false (and nothing registered) when already
  // cancelled. Detach before the context is destroyed.
  bool Attach(grpc::ClientContext* context);
  void Detach();

  mutable absl::Mutex mu_;
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// How WatchJob follows a job.
struct WatchOptions {
  // Deliver events with a larger sequence only (0 = the whole history).
  int64_t after_sequence = 0;
  // Re-attach at most this many times in a row without receiving an event (an attempt that
  // delivers events resets the count); then the watch fails with the last error.
  int max_reconnects = 12;
  // Wait before the first re-attach, doubled after each failed attempt up to max_backoff. With the
  // defaults, a server that stays away is given about 45 s.
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(5);
  // Stops the watch (WatchJob then returns Cancelled). Optional; not owned.
  Canceller* canceller = nullptr;
  // Called before each re-attach with the attempt number (1-based), why the stream ended and the
  // wait before the attempt. Optional.
  std::function<void(int attempt, const absl::Status& cause, absl::Duration backoff)> on_reconnect;
};

// How a watch ended.
struct WatchResult {
  // Sequence of the last event delivered (after_sequence when none was).
  int64_t last_sequence = 0;
  // The terminal state seen: SUCCEEDED, FAILED or CANCELLED.
  v1::Job::State final_state = v1::Job::STATE_UNSPECIFIED;
  // Times the stream was re-attached.
  int reconnects = 0;
};

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::Job::State state);

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
// "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" (the proto enum names).
std::string_view ServingStatusName(ServingStatus status);

// The calls of a drfm server, over one channel. Every method blocks until its call ends. Unary
// calls carry the configured deadline; every call carries the bearer token. Thread-safe (as gRPC
// stubs are): calls may run concurrently from several threads.
class Client {
 public:
  // Over `channel` (e.g. an in-process channel in tests); `options` supply the token and the
  // timeout, its connection fields are not used.
  Client(std::shared_ptr<grpc::ChannelInterface> channel, ConnectionOptions options);

  // A client on CreateChannel(options).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ConnectionOptions& options);

  // JobService. Errors: the server's (jobs.proto lists them), UNAVAILABLE when it cannot be
  // reached, DEADLINE_EXCEEDED after the timeout.
  absl::StatusOr<v1::Job> SubmitFit(const v1::SubmitFitRequest& request);
  absl::StatusOr<v1::FitEstimate> EstimateFit(const v1::SubmitFitRequest& request);
  absl::StatusOr<v1::Job> SubmitMlpFit(const v1::SubmitMlpFitRequest& request);
  absl::StatusOr<v1::Job> SubmitAnalysis(const v1::SubmitAnalysisRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id);
  absl::Status DeleteJob(const std::string& job_id);

  // Follows the events of `job_id` after options.after_sequence, calling `on_event` for each in
  // sequence order, until the job's terminal state change has been delivered. A stream that ends
  // early (UNAVAILABLE, a reset, or a clean end before the terminal event, as when the server
  // restarts) is re-attached after a backoff from the last sequence delivered, so no event is
  // missed or delivered twice. Errors: the server's (NOT_FOUND for an unknown job, ...) at once;
  // the last stream error after max_reconnects failed attempts; CANCELLED when the canceller
  // fired. `on_event` runs on the calling thread.
  absl::StatusOr<WatchResult> WatchJob(const std::string& job_id, const WatchOptions& options,
                                       const std::function<void(const v1::JobEvent&)>& on_event);

  // DatasetService. UploadDataset sends upload.header() and then every chunk, calling
  // `on_progress(sent_bytes, total_bytes)` after each (optional).
  absl::StatusOr<v1::Dataset> UploadDataset(
      DatasetUpload& upload, const std::function<void(int64_t, int64_t)>& on_progress = nullptr);
  absl::StatusOr<v1::Dataset> GetDataset(const std::string& dataset);
  absl::StatusOr<v1::ListDatasetsResponse> ListDatasets(const v1::ListDatasetsRequest& request);
  absl::Status DeleteDataset(const std::string& dataset);

  // ModelService. `version` unset: the latest (GetModel, ExportModel) or every version
  // (DeleteModel).
  absl::StatusOr<v1::Model> GetModel(const std::string& name, std::optional<int64_t> version);
  absl::StatusOr<v1::ListModelsResponse> ListModels(const v1::ListModelsRequest& request);
  absl::Status DeleteModel(const std::string& name, std::optional<int64_t> version);
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);
  // One PredictStream call: requests come from `next_request` (return false when there are no
  // more) on a writer thread while responses are handed to `on_response` on the calling thread,
  // so neither side waits for the other's flow-control window. An error from `on_response`
  // cancels the call and is returned; otherwise the server's status.
  absl::Status PredictStream(
      const std::function<bool(v1::PredictRequest*)>& next_request,
      const std::function<absl::Status(const v1::PredictResponse&)>& on_response);
  // Stores the safetensors file of `import` as an MLP: sends import.header() and then every
  // chunk, calling `on_progress(sent_bytes, total_bytes)` after each (optional). Errors: the
  // server's (INVALID_ARGUMENT for a file that is not a valid MLP, DATA_LOSS for a checksum
  // mismatch, ...).
  absl::StatusOr<v1::Model> ImportModel(
      ModelImport& import, const std::function<void(int64_t, int64_t)>& on_progress = nullptr);
  // Streams the model's safetensors file into `on_data(bytes)` in order and returns the model
  // (from the first chunk). DataLoss when the chunks' offsets, the total size or the SHA-256
  // disagree with the first chunk's header; an error from `on_data` cancels and is returned.
  absl::StatusOr<v1::Model> ExportModel(
      const std::string& name, std::optional<int64_t> version,
      const std::function<absl::Status(std::string_view data, int64_t offset, int64_t total)>&
          on_data);

  // grpc.health.v1.Health/Check of `service` ("" = the process). With `wait_for_ready`, waits
  // (up to the timeout) for the server to come up instead of failing at once with UNAVAILABLE.
  // NOT_FOUND when the server does not know the service.
  absl::StatusOr<ServingStatus> CheckHealth(const std::string& service, bool wait_for_ready);

 private:
  // Token metadata, and the deadline when `unary`.
  void Prepare(grpc::ClientContext* context, bool unary) const;
  // One unary call of `method` with a fresh context.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(Stub* stub,
                                 grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                                 const Request& request) const;

  std::shared_ptr<grpc::ChannelInterface> channel_;
  ConnectionOptions options_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::DatasetService::Stub> datasets_;
  std::unique_ptr<v1::ModelService::Stub> models_;
};

}  // namespace drfm::client

#endif  // DRFM_CLIENT_CLIENT_H_
