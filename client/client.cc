#include "client/client.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <cctype>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/io.h"
#include "core/status.h"

namespace drfm::client {
namespace {

// PEM files and tokens are small; anything larger is a mistake (e.g. a dataset named by accident).
constexpr uint64_t kMaxSmallFileBytes = uint64_t{1} << 20;

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, std::string_view what) {
  absl::StatusOr<std::string> bytes = core::ReadFileBytes(path, kMaxSmallFileBytes);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(), absl::StrCat("reading the ", std::string(what), ": ",
                                                            bytes.status().message()));
  }
  return bytes;
}

// Codes after which a watch re-attaches: the connection or the server went away, not the request.
bool IsRetryable(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kInternal:  // e.g. "Received RST_STREAM" when a proxy drops the stream
    case absl::StatusCode::kUnknown:   // e.g. "Stream removed"
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

// grpc.health.v1 messages on the wire (health.proto: HealthCheckRequest{string service = 1},
// HealthCheckResponse{ServingStatus status = 1}). Debian ships no generated health stubs, and a
// second C++ definition of grpc.health.v1 messages could clash with one linked into the same
// binary, so the two tiny messages are encoded by hand.
std::string EncodeHealthCheckRequest(const std::string& service) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    if (!service.empty()) {
      coded.WriteTag(1 << 3 | 2);  // field 1, length-delimited
      coded.WriteVarint32(static_cast<uint32_t>(service.size()));
      coded.WriteString(service);
    }
  }
  return out;
}

absl::StatusOr<ServingStatus> DecodeHealthCheckResponse(const std::string& bytes) {
  google::protobuf::io::CodedInputStream coded(reinterpret_cast<const uint8_t*>(bytes.data()),
                                               static_cast<int>(bytes.size()));
  uint32_t status = 0;
  while (uint32_t tag = coded.ReadTag()) {
    if (tag == (1 << 3 | 0)) {
      if (!coded.ReadVarint32(&status)) break;
    } else if (!google::protobuf::internal::WireFormatLite::SkipField(&coded, tag)) {
      return absl::InternalError("the server's HealthCheckResponse is malformed");
    }
  }
  if (status > 3) status = 0;
  return static_cast<ServingStatus>(status);
}

}  // namespace

absl::Status ConnectionOptions::Validate() const {
  if (server.empty()) return absl::InvalidArgumentError("--server must name HOST:PORT");
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: a client certificate needs its private key");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(path, "token file"));
  std::string token(absl::StripAsciiWhitespace(bytes));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  }
  for (char c : token) {
    if (std::isspace(static_cast<unsigned char>(c)) ||
        std::iscntrl(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the token file ", path, " must hold one token (no spaces or line breaks inside)"));
    }
  }
  return token;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(const ConnectionOptions& options) {
  DRFM_RETURN_IF_ERROR(options.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.UsesTls()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      DRFM_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                            ReadSmallFile(options.tls_ca_file, "TLS CA file (--tls-ca)"));
    }
    if (!options.tls_cert_file.empty()) {
      DRFM_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                            ReadSmallFile(options.tls_cert_file, "TLS certificate (--tls-cert)"));
      DRFM_ASSIGN_OR_RETURN(ssl.pem_private_key,
                            ReadSmallFile(options.tls_key_file, "TLS key (--tls-key)"));
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

void Canceller::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  // Under the lock: Detach() waits for it, so the context cannot be destroyed meanwhile.
  if (active_ != nullptr) active_->TryCancel();
}

bool Canceller::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool Canceller::WaitForCancel(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&cancelled_), timeout);
}

bool Canceller::Attach(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  active_ = context;
  return true;
}

void Canceller::Detach() {
  absl::MutexLock lock(&mu_);
  active_ = nullptr;
}

bool IsTerminal(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED || state == v1::Job::CANCELLED;
}

std::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

Client::Client(std::shared_ptr<grpc::ChannelInterface> channel, ConnectionOptions options)
    : channel_(std::move(channel)),
      options_(std::move(options)),
      jobs_(v1::JobService::NewStub(channel_)),
      datasets_(v1::DatasetService::NewStub(channel_)),
      models_(v1::ModelService::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ConnectionOptions& options) {
  DRFM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, CreateChannel(options));
  return std::make_unique<Client>(std::move(channel), options);
}

void Client::Prepare(grpc::ClientContext* context, bool unary) const {
  if (!options_.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  }
  if (unary && options_.timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Client::Unary(Stub* stub,
                                       grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                    const Request&, Response*),
                                       const Request& request) const {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/true);
  Response response;
  const grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::Job> Client::SubmitFit(const v1::SubmitFitRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::SubmitFit, request);
}

absl::StatusOr<v1::FitEstimate> Client::EstimateFit(const v1::SubmitFitRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::EstimateFit, request);
}

absl::StatusOr<v1::Job> Client::SubmitMlpFit(const v1::SubmitMlpFitRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::SubmitMlpFit, request);
}

absl::StatusOr<v1::Job> Client::SubmitAnalysis(const v1::SubmitAnalysisRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::SubmitAnalysis, request);
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  return Unary(jobs_.get(), &v1::JobService::Stub::GetJob, request);
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(const v1::ListJobsRequest& request) {
  return Unary(jobs_.get(), &v1::JobService::Stub::ListJobs, request);
}

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& job_id) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  return Unary(jobs_.get(), &v1::JobService::Stub::CancelJob, request);
}

absl::Status Client::DeleteJob(const std::string& job_id) {
  v1::DeleteJobRequest request;
  request.set_job_id(job_id);
  return Unary(jobs_.get(), &v1::JobService::Stub::DeleteJob, request).status();
}

absl::StatusOr<v1::Dataset> Client::GetDataset(const std::string& dataset) {
  v1::GetDatasetRequest request;
  request.set_dataset(dataset);
  return Unary(datasets_.get(), &v1::DatasetService::Stub::GetDataset, request);
}

absl::StatusOr<v1::ListDatasetsResponse> Client::ListDatasets(
    const v1::ListDatasetsRequest& request) {
  return Unary(datasets_.get(), &v1::DatasetService::Stub::ListDatasets, request);
}

absl::Status Client::DeleteDataset(const std::string& dataset) {
  v1::DeleteDatasetRequest request;
  request.set_dataset(dataset);
  return Unary(datasets_.get(), &v1::DatasetService::Stub::DeleteDataset, request).status();
}

absl::StatusOr<v1::Model> Client::GetModel(const std::string& name,
                                           std::optional<int64_t> version) {
  v1::GetModelRequest request;
  request.set_name(name);
  if (version.has_value()) request.set_version(*version);
  return Unary(models_.get(), &v1::ModelService::Stub::GetModel, request);
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels(const v1::ListModelsRequest& request) {
  return Unary(models_.get(), &v1::ModelService::Stub::ListModels, request);
}

absl::Status Client::DeleteModel(const std::string& name, std::optional<int64_t> version) {
  v1::DeleteModelRequest request;
  request.set_name(name);
  if (version.has_value()) request.set_version(*version);
  return Unary(models_.get(), &v1::ModelService::Stub::DeleteModel, request).status();
}

absl::StatusOr<v1::PredictResponse> Client::Predict(const v1::PredictRequest& request) {
  return Unary(models_.get(), &v1::ModelService::Stub::Predict, request);
}

absl::StatusOr<WatchResult> Client::WatchJob(
    const std::string& job_id, const WatchOptions& options,
    const std::function<void(const v1::JobEvent&)>& on_event) {
  WatchResult result;
  result.last_sequence = options.after_sequence;
  int failures = 0;
  absl::Duration backoff = options.initial_backoff;
  while (true) {
    grpc::ClientContext context;
    Prepare(&context, /*unary=*/false);
    if (options.canceller != nullptr && !options.canceller->Attach(&context)) {
      return absl::CancelledError("the watch was interrupted");
    }
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_sequence(result.last_sequence);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = jobs_->WatchJob(&context, request);
    v1::JobEvent event;
    bool delivered = false;
    bool terminal = false;
    while (reader->Read(&event)) {
      // A server must not repeat events; should one do so after a re-attach, drop them here so
      // the caller's display never counts a layer twice.
      if (event.sequence() <= result.last_sequence) continue;
      result.last_sequence = event.sequence();
      delivered = true;
      if (event.has_state_change() && IsTerminal(event.state_change().state())) {
        result.final_state = event.state_change().state();
        terminal = true;
      }
      on_event(event);
    }
    const grpc::Status status = reader->Finish();
    if (options.canceller != nullptr) options.canceller->Detach();
    if (terminal) return result;
    if (options.canceller != nullptr && options.canceller->cancelled()) {
      return absl::CancelledError("the watch was interrupted");
    }
    absl::Status cause = FromGrpcStatus(status);
    if (cause.ok()) {
      cause = absl::UnavailableError("the event stream ended before the job finished");
    } else if (!IsRetryable(cause.code())) {
      return cause;
    }
    if (delivered) {
      failures = 0;
      backoff = options.initial_backoff;
    }
    if (++failures > options.max_reconnects) {
      return absl::Status(cause.code(), absl::StrCat("lost the event stream of job ", job_id,
                                                     " after ", options.max_reconnects,
                                                     " attempts to re-attach: ", cause.message()));
    }
    if (options.on_reconnect) options.on_reconnect(failures, cause, backoff);
    if (options.canceller != nullptr) {
      if (options.canceller->WaitForCancel(backoff)) {
        return absl::CancelledError("the watch was interrupted");
      }
    } else {
      absl::SleepFor(backoff);
    }
    backoff = std::min(2 * backoff, options.max_backoff);
    ++result.reconnects;
  }
}

namespace {

// Writes the header and then every chunk of `source` (a DatasetUpload or a ModelImport) to a
// client-streaming call, and finishes it. A failed Write means the server has ended the call (e.g.
// rejected the header); Finish then carries its reason, so writing stops and asks for it.
template <typename Request, typename Source>
grpc::Status WriteStream(grpc::ClientWriter<Request>* writer, Source& source,
                         const std::function<void(int64_t, int64_t)>& on_progress) {
  source.Rewind();
  bool open = writer->Write(source.header());
  Request chunk;
  while (open && source.NextChunk(&chunk)) {
    open = writer->Write(chunk);
    if (open && on_progress) on_progress(source.sent_bytes(), source.total_bytes());
  }
  if (open) writer->WritesDone();
  return writer->Finish();
}

}  // namespace

absl::StatusOr<v1::Dataset> Client::UploadDataset(
    DatasetUpload& upload, const std::function<void(int64_t, int64_t)>& on_progress) {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/false);
  v1::Dataset dataset;
  std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
      datasets_->UploadDataset(&context, &dataset);
  const grpc::Status status = WriteStream(writer.get(), upload, on_progress);
  if (!status.ok()) return FromGrpcStatus(status);
  return dataset;
}

absl::StatusOr<v1::Model> Client::ImportModel(
    ModelImport& import, const std::function<void(int64_t, int64_t)>& on_progress) {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/false);
  v1::Model model;
  std::unique_ptr<grpc::ClientWriter<v1::ImportModelRequest>> writer =
      models_->ImportModel(&context, &model);
  const grpc::Status status = WriteStream(writer.get(), import, on_progress);
  if (!status.ok()) return FromGrpcStatus(status);
  return model;
}

absl::Status Client::PredictStream(
    const std::function<bool(v1::PredictRequest*)>& next_request,
    const std::function<absl::Status(const v1::PredictResponse&)>& on_response) {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/false);
  std::shared_ptr<grpc::ClientReaderWriter<v1::PredictRequest, v1::PredictResponse>> stream =
      models_->PredictStream(&context);
  std::thread writer([&stream, &next_request] {
    v1::PredictRequest request;
    while (next_request(&request)) {
      if (!stream->Write(request)) return;  // the call has ended; Finish says why
    }
    stream->WritesDone();
  });
  absl::Status callback_status;
  v1::PredictResponse response;
  while (stream->Read(&response)) {
    callback_status = on_response(response);
    if (!callback_status.ok()) {
      context.TryCancel();
      break;
    }
  }
  if (!callback_status.ok()) {
    // Drain so the writer's pending Write can fail and the thread end.
    while (stream->Read(&response)) {
    }
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  if (!callback_status.ok()) return callback_status;
  return FromGrpcStatus(status);
}

absl::StatusOr<v1::Model> Client::ExportModel(
    const std::string& name, std::optional<int64_t> version,
    const std::function<absl::Status(std::string_view, int64_t, int64_t)>& on_data) {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/false);
  v1::ExportModelRequest request;
  request.set_name(name);
  if (version.has_value()) request.set_version(*version);
  std::unique_ptr<grpc::ClientReader<v1::ExportModelChunk>> reader =
      models_->ExportModel(&context, request);
  v1::ExportModelChunk chunk;
  v1::Model model;
  std::string expected_sha;
  int64_t total = -1;
  int64_t received = 0;
  Sha256 sha;
  absl::Status error;
  while (error.ok() && reader->Read(&chunk)) {
    if (total < 0) {
      total = chunk.total_bytes();
      expected_sha = chunk.sha256();
      model = chunk.model();
    }
    if (chunk.offset() != received) {
      error = absl::DataLossError(
          absl::StrCat("the export skipped from byte ", received, " to ", chunk.offset()));
      break;
    }
    sha.Update(chunk.data());
    received += static_cast<int64_t>(chunk.data().size());
    error = on_data(chunk.data(), chunk.offset(), total);
  }
  if (!error.ok()) {
    context.TryCancel();
    while (reader->Read(&chunk)) {
    }
    reader->Finish();
    return error;
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  if (total < 0) return absl::DataLossError("the export ended without any data");
  if (received != total) {
    return absl::DataLossError(
        absl::StrCat("the export ended after ", received, " of ", total, " bytes"));
  }
  const std::string digest = sha.HexDigest();
  if (!expected_sha.empty() && digest != expected_sha) {
    return absl::DataLossError(absl::StrCat("the exported file's SHA-256 is ", digest,
                                            ", the server announced ", expected_sha));
  }
  return model;
}

absl::StatusOr<ServingStatus> Client::CheckHealth(const std::string& service, bool wait_for_ready) {
  grpc::ClientContext context;
  Prepare(&context, /*unary=*/true);
  context.set_wait_for_ready(wait_for_ready);
  grpc::GenericStub stub(channel_);
  grpc::Slice slice(EncodeHealthCheckRequest(service));
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&status, &done](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return FromGrpcStatus(status);
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) {
    return absl::InternalError("could not read the server's HealthCheckResponse");
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return DecodeHealthCheckResponse(bytes);
}

}  // namespace drfm::client
