#include "server/dataset_service.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "server/grpc_status.h"

namespace drfm::server {
namespace {

absl::Status CheckHeader(const v1::DatasetHeader& h, const UploadLimits& limits) {
  if (h.name().empty()) return absl::InvalidArgumentError("header.name is required");
  DRFM_RETURN_IF_ERROR(ValidateName("dataset name", h.name()));
  if (h.rows() < 1 || h.rows() > limits.max_rows) {
    return absl::InvalidArgumentError(absl::StrFormat("header.rows = %d: use 1 to %d", h.rows(), limits.max_rows));
  }
  if (h.cols() < 1 || h.cols() > limits.max_cols) {
    return absl::InvalidArgumentError(absl::StrFormat("header.cols = %d: use 1 to %d", h.cols(), limits.max_cols));
  }
  if (h.rows() > limits.max_feature_bytes / 4 / h.cols()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "header.rows x header.cols = %d x %d float32 values exceed this server's upload limit of %d bytes",
        h.rows(), h.cols(), limits.max_feature_bytes));
  }
  if (h.has_num_classes() && (h.num_classes() < 1 || h.num_classes() > (1 << 20))) {
    return absl::InvalidArgumentError(absl::StrFormat("header.num_classes = %d: use 1 to %d, or leave it unset",
                                                      h.num_classes(), 1 << 20));
  }
  if (h.has_sha256()) {
    const std::string& s = h.sha256();
    bool hex = s.size() == 64;
    for (char c : s) hex = hex && absl::ascii_isxdigit(c);
    if (!hex) return absl::InvalidArgumentError("header.sha256 must be 64 hexadecimal digits");
  }
  return absl::OkStatus();
}

// Checks the float32 values in `bytes` (whose first value is value number `first`) are finite.
absl::Status CheckFinite(std::string_view bytes, int64_t first, int64_t cols) {
  const size_t count = bytes.size() / 4;
  for (size_t i = 0; i < count; ++i) {
    float v;
    std::memcpy(&v, bytes.data() + 4 * i, 4);
    if (!std::isfinite(v)) {
      const int64_t index = first + static_cast<int64_t>(i);
      return absl::InvalidArgumentError(absl::StrFormat(
          "features row %d column %d is not a finite number; remove or impute NaN/Inf first", index / cols,
          index % cols));
    }
  }
  return absl::OkStatus();
}

}  // namespace

DatasetServiceImpl::DatasetServiceImpl(Store* store, DatasetResolver* resolver, UploadLimits limits)
    : store_(store), resolver_(resolver), limits_(limits) {}

grpc::Status DatasetServiceImpl::UploadDataset(grpc::ServerContext* context,
                                               grpc::ServerReader<v1::UploadDatasetRequest>* reader,
                                               v1::Dataset* response) {
  v1::UploadDatasetRequest message;
  if (!reader->Read(&message)) return ToGrpcStatus(absl::InvalidArgumentError("the upload stream was empty"));
  if (!message.has_header()) {
    return ToGrpcStatus(absl::InvalidArgumentError("the first message of an upload must be the header"));
  }
  const v1::DatasetHeader header = message.header();
  absl::Status status = CheckHeader(header, limits_);
  if (!status.ok()) return ToGrpcStatus(status);
  const int64_t feature_bytes = header.rows() * header.cols() * 4;
  const int64_t label_bytes = header.rows() * 4;

  absl::StatusOr<std::unique_ptr<DatasetUpload>> upload = store_->StartDatasetUpload();
  if (!upload.ok()) return ToGrpcStatus(upload.status());
  std::string carry;           // feature bytes of a value split across chunks
  std::string labels;          // all label bytes, checked at the end
  int64_t values_checked = 0;  // float values already checked for finiteness
  while (reader->Read(&message)) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    if (!message.has_chunk()) {
      return ToGrpcStatus(absl::InvalidArgumentError("only the first message of an upload may be a header"));
    }
    const v1::DatasetChunk& chunk = message.chunk();
    if ((*upload)->feature_bytes() + static_cast<int64_t>(chunk.features().size()) > feature_bytes) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
          "more feature bytes than the header's rows x cols x 4 = %d", feature_bytes)));
    }
    if (static_cast<int64_t>(labels.size() + chunk.labels().size()) > label_bytes) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
          "more label bytes than the header's rows x 4 = %d", label_bytes)));
    }
    if (!chunk.features().empty()) {
      carry += chunk.features();
      const size_t whole = carry.size() / 4 * 4;
      status = CheckFinite(std::string_view(carry).substr(0, whole), values_checked, header.cols());
      if (!status.ok()) return ToGrpcStatus(status);
      values_checked += static_cast<int64_t>(whole / 4);
      carry.erase(0, whole);
      status = (*upload)->AppendFeatures(chunk.features());
      if (!status.ok()) return ToGrpcStatus(status);
    }
    if (!chunk.labels().empty()) {
      labels += chunk.labels();
      status = (*upload)->AppendLabels(chunk.labels());
      if (!status.ok()) return ToGrpcStatus(status);
    }
  }
  if ((*upload)->feature_bytes() != feature_bytes || static_cast<int64_t>(labels.size()) != label_bytes) {
    return ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
        "the upload ended early: %d of %d feature bytes and %d of %d label bytes arrived",
        (*upload)->feature_bytes(), feature_bytes, labels.size(), label_bytes)));
  }
  int32_t max_label = -1;
  // Without num_classes the labels imply it (max + 1), within the same bound as a given one (and
  // max + 1 cannot overflow).
  const int32_t class_limit = header.has_num_classes() ? header.num_classes() : (1 << 20);
  for (int64_t i = 0; i < header.rows(); ++i) {
    int32_t y;
    std::memcpy(&y, labels.data() + 4 * i, 4);
    if (y < 0 || y >= class_limit) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
          "label of row %d is %d: labels must be in [0, %d)", i, y, class_limit)));
    }
    max_label = std::max(max_label, y);
  }
  DatasetInfo info;
  info.name = header.name();
  info.rows = header.rows();
  info.cols = header.cols();
  info.num_classes = header.has_num_classes() ? header.num_classes() : max_label + 1;
  if (header.has_sha256()) info.expected_sha256 = absl::AsciiStrToLower(header.sha256());
  absl::StatusOr<PutDatasetResult> result = (*upload)->Commit(info);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = result->dataset;
  return grpc::Status::OK;
}

grpc::Status DatasetServiceImpl::GetDataset(grpc::ServerContext*, const v1::GetDatasetRequest* request,
                                            v1::Dataset* response) {
  if (request->dataset().empty()) return ToGrpcStatus(absl::InvalidArgumentError("dataset is required"));
  absl::StatusOr<v1::Dataset> dataset = resolver_->Describe(request->dataset());
  if (!dataset.ok()) return ToGrpcStatus(dataset.status());
  *response = *std::move(dataset);
  return grpc::Status::OK;
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext*, const v1::ListDatasetsRequest* request,
                                              v1::ListDatasetsResponse* response) {
  absl::StatusOr<Page<v1::Dataset>> page = store_->ListDatasets(request->page_size(), request->page_token());
  if (!page.ok()) return ToGrpcStatus(page.status());
  if (request->page_token().empty()) {
    for (v1::Dataset& d : resolver_->InstalledBuiltins()) *response->add_datasets() = std::move(d);
  }
  for (v1::Dataset& d : page->items) *response->add_datasets() = std::move(d);
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status DatasetServiceImpl::DeleteDataset(grpc::ServerContext*, const v1::DeleteDatasetRequest* request,
                                               v1::DeleteDatasetResponse*) {
  if (request->dataset().empty()) return ToGrpcStatus(absl::InvalidArgumentError("dataset is required"));
  if (DatasetResolver::IsBuiltinName(request->dataset())) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("built-in dataset ", request->dataset(), " cannot be deleted; only uploaded datasets can")));
  }
  absl::Status valid = ValidateName("dataset", request->dataset());
  if (!valid.ok()) return ToGrpcStatus(valid);
  return ToGrpcStatus(store_->DeleteDataset(request->dataset()));
}

}  // namespace drfm::server
