#include "server/model_service.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/hash.h"
#include "server/metrics.h"

namespace drfm::server {
namespace {

// Bytes per ExportModel chunk: well below gRPC's default 4 MiB message limit.
constexpr size_t kExportChunkBytes = 1 << 20;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ModelServiceImpl::ModelServiceImpl(Store* store, ModelRegistry* registry, ServerMetrics* metrics)
    : store_(store), registry_(registry), metrics_(metrics) {}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                                        v1::Model* response) {
  if (request->name().empty()) return ToGrpcStatus(absl::InvalidArgumentError("name is required"));
  absl::Status valid = ValidateName("model name", request->name());
  if (!valid.ok()) return ToGrpcStatus(valid);
  absl::StatusOr<v1::Model> model = store_->GetModel(request->name(), request->has_version() ? request->version() : 0);
  if (!model.ok()) return ToGrpcStatus(model.status());
  *response = *std::move(model);
  return grpc::Status::OK;
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext*, const v1::ListModelsRequest* request,
                                          v1::ListModelsResponse* response) {
  if (!request->name().empty()) {
    absl::Status valid = ValidateName("model name", request->name());
    if (!valid.ok()) return ToGrpcStatus(valid);
  }
  absl::StatusOr<Page<v1::Model>> page = store_->ListModels(request->name(), request->page_size(), request->page_token());
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (v1::Model& m : page->items) *response->add_models() = std::move(m);
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ModelServiceImpl::DeleteModel(grpc::ServerContext*, const v1::DeleteModelRequest* request,
                                           v1::DeleteModelResponse*) {
  if (request->name().empty()) return ToGrpcStatus(absl::InvalidArgumentError("name is required"));
  absl::Status valid = ValidateName("model name", request->name());
  if (!valid.ok()) return ToGrpcStatus(valid);
  if (request->has_version() && request->version() < 1) {
    return ToGrpcStatus(absl::InvalidArgumentError("version must be 1 or more (leave it unset to delete every version)"));
  }
  absl::Status s = store_->DeleteModel(request->name(), request->has_version() ? request->version() : 0);
  registry_->Evict(request->name());
  // drfm_models_stored and drfm_store_bytes are read from the store at every scrape (server.cc).
  return ToGrpcStatus(s);
}

absl::StatusOr<v1::PredictResponse> ModelServiceImpl::PredictOne(const v1::PredictRequest& request) {
  const double start = Now();
  absl::StatusOr<v1::PredictResponse> response = registry_->Predict(request);
  if (metrics_ != nullptr) {
    metrics_->ObservePredict(response.status().code(), Now() - start, request.rows());
  }
  return response;
}

grpc::Status ModelServiceImpl::Predict(grpc::ServerContext*, const v1::PredictRequest* request,
                                       v1::PredictResponse* response) {
  absl::StatusOr<v1::PredictResponse> result = PredictOne(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status ModelServiceImpl::PredictStream(
    grpc::ServerContext* context, grpc::ServerReaderWriter<v1::PredictResponse, v1::PredictRequest>* stream) {
  v1::PredictRequest request;
  int64_t index = 0;
  while (stream->Read(&request)) {
    absl::StatusOr<v1::PredictResponse> result = PredictOne(request);
    if (!result.ok()) {
      return ToGrpcStatus(absl::Status(result.status().code(),
                                       absl::StrCat("request ", index, " of the stream: ", result.status().message())));
    }
    if (!stream->Write(*result)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    ++index;
  }
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the stream");
  return grpc::Status::OK;
}

grpc::Status ModelServiceImpl::ExportModel(grpc::ServerContext* context, const v1::ExportModelRequest* request,
                                           grpc::ServerWriter<v1::ExportModelChunk>* writer) {
  absl::StatusOr<std::pair<v1::Model, std::string>> exported =
      registry_->Export(request->name(), request->has_version() ? request->version() : 0);
  if (!exported.ok()) return ToGrpcStatus(exported.status());
  const std::string& bytes = exported->second;
  const std::string sha256 = Sha256Hex(bytes);
  size_t offset = 0;
  do {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    v1::ExportModelChunk chunk;
    const size_t size = std::min(kExportChunkBytes, bytes.size() - offset);
    chunk.set_data(bytes.substr(offset, size));
    chunk.set_offset(static_cast<int64_t>(offset));
    chunk.set_total_bytes(static_cast<int64_t>(bytes.size()));
    if (offset == 0) {
      chunk.set_sha256(sha256);
      *chunk.mutable_model() = exported->first;
    }
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    offset += size;
  } while (offset < bytes.size());
  return grpc::Status::OK;
}

grpc::Status ModelServiceImpl::ImportModel(grpc::ServerContext* context,
                                           grpc::ServerReader<v1::ImportModelRequest>* reader,
                                           v1::Model* response) {
  v1::ImportModelRequest message;
  if (!reader->Read(&message)) {
    return ToGrpcStatus(absl::InvalidArgumentError("the import stream was empty: send a header first"));
  }
  if (!message.has_header()) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        "the first message of an import must be the header (name, size_bytes, sha256)"));
  }
  const v1::ImportModelHeader header = message.header();
  absl::Status status = registry_->ValidateImportHeader(header);
  if (!status.ok()) return ToGrpcStatus(status);
  // The whole file is needed before anything can be checked (the safetensors header points
  // anywhere into it); it is bounded by the declared size, or else by the import limit.
  const int64_t limit = header.size_bytes() > 0 ? header.size_bytes() : registry_->options().max_import_bytes;
  std::string bytes;
  int64_t index = 1;
  while (reader->Read(&message)) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    if (message.has_header()) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "message ", index, " of the import is a header; only the first message may be one, the rest are chunks")));
    }
    if (message.part_case() != v1::ImportModelRequest::kChunk) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "message ", index, " of the import has neither a header nor a chunk")));
    }
    if (static_cast<int64_t>(bytes.size() + message.chunk().size()) > limit) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          header.size_bytes() > 0
              ? absl::StrCat("more bytes than header.size_bytes = ", header.size_bytes(), " arrived")
              : absl::StrCat("the file exceeds this server's import limit of ", limit, " bytes")));
    }
    bytes += message.chunk();
    ++index;
  }
  absl::StatusOr<v1::Model> model = registry_->Import(header, bytes);
  if (!model.ok()) return ToGrpcStatus(model.status());
  *response = *std::move(model);
  return grpc::Status::OK;
}

}  // namespace drfm::server
