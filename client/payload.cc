#include "client/payload.h"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace drfm::client {
namespace {

// Appends the 4-byte values [values, values + count) in little-endian order.
void AppendLittleEndian32(const void* values, size_t count, std::string* out) {
  const size_t old_size = out->size();
  out->resize(old_size + 4 * count);
  char* dst = out->data() + old_size;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(dst, values, 4 * count);
#else
  const auto* src = static_cast<const unsigned char*>(values);
  for (size_t i = 0; i < count; ++i) {
    for (int b = 0; b < 4; ++b) dst[4 * i + b] = static_cast<char>(src[4 * i + 3 - b]);
  }
#endif
}

float ReadLittleEndianFloat(const char* p) {
  uint32_t bits = 0;
  for (int b = 3; b >= 0; --b) bits = (bits << 8) | static_cast<unsigned char>(p[b]);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  DRFM_CHECK(ctx_ != nullptr);
  DRFM_CHECK(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1);
}

void Sha256::Free::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

void Sha256::Update(const void* data, size_t size) {
  if (size > 0) DRFM_CHECK(EVP_DigestUpdate(ctx_.get(), data, size) == 1);
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  DRFM_CHECK(EVP_DigestFinal_ex(ctx_.get(), digest, &length) == 1);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(2 * length, '0');
  for (unsigned int i = 0; i < length; ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 15];
  }
  return hex;
}

std::string EncodeFeatureRows(const core::RowMatrixF& features, int64_t begin, int64_t count) {
  DRFM_CHECK(begin >= 0 && count >= 0 && begin + count <= features.rows());
  std::string out;
  AppendLittleEndian32(features.data() + begin * features.cols(),
                       static_cast<size_t>(count * features.cols()), &out);
  return out;
}

std::string EncodeLabels(const std::vector<int32_t>& labels) {
  std::string out;
  AppendLittleEndian32(labels.data(), labels.size(), &out);
  return out;
}

std::string DatasetSha256(const core::Dataset& data) {
  Sha256 sha;
  // In blocks of rows, so a large dataset is hashed without a second copy of it.
  const int64_t block = PredictBatchRows(data.cols(), size_t{8} << 20);
  for (int64_t row = 0; row < data.rows(); row += block) {
    sha.Update(EncodeFeatureRows(data.features, row, std::min(block, data.rows() - row)));
  }
  sha.Update(EncodeLabels(data.labels));
  return sha.HexDigest();
}

DatasetUpload::DatasetUpload(std::string name, const core::Dataset& data, size_t chunk_bytes)
    : data_(data),
      chunk_bytes_(chunk_bytes),
      feature_bytes_(4 * data.rows() * data.cols()),
      label_bytes_(4 * static_cast<int64_t>(data.labels.size())) {
  DRFM_CHECK(chunk_bytes >= 1);
  v1::DatasetHeader* header = header_.mutable_header();
  header->set_name(std::move(name));
  header->set_rows(data.rows());
  header->set_cols(data.cols());
  if (data.num_classes > 0) header->set_num_classes(data.num_classes);
  header->set_sha256(DatasetSha256(data));
}

bool DatasetUpload::NextChunk(v1::UploadDatasetRequest* request) {
  if (sent_ >= total_bytes()) return false;
  request->Clear();
  v1::DatasetChunk* chunk = request->mutable_chunk();
  int64_t budget = static_cast<int64_t>(chunk_bytes_);
  const int64_t cols = data_.cols();
  // Features: whole float values from byte offset sent_; a chunk boundary may fall inside a row
  // (and, with a chunk size that is not a multiple of 4, inside a value).
  if (sent_ < feature_bytes_) {
    const int64_t end = std::min(feature_bytes_, sent_ + budget);
    const int64_t first_row = (sent_ / 4) / cols;
    const int64_t last_row = ((end + 3) / 4 - 1) / cols;  // row of the last byte's value
    const std::string rows = EncodeFeatureRows(data_.features, first_row, last_row - first_row + 1);
    const int64_t skip = sent_ - first_row * cols * 4;
    chunk->set_features(rows.substr(static_cast<size_t>(skip), static_cast<size_t>(end - sent_)));
    budget -= end - sent_;
    sent_ = end;
  }
  if (budget > 0 && sent_ >= feature_bytes_ && sent_ < total_bytes()) {
    const int64_t label_offset = sent_ - feature_bytes_;
    const int64_t end = std::min(label_bytes_, label_offset + budget);
    const int64_t first = label_offset / 4;
    const int64_t last = (end + 3) / 4;  // one past the last label touched
    std::string bytes;
    AppendLittleEndian32(data_.labels.data() + first, static_cast<size_t>(last - first), &bytes);
    chunk->set_labels(bytes.substr(static_cast<size_t>(label_offset - 4 * first),
                                   static_cast<size_t>(end - label_offset)));
    sent_ += end - label_offset;
  }
  return true;
}

absl::Status CheckSafetensorsFraming(std::string_view bytes, const std::string& path) {
  auto not_safetensors = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a safetensors file: ", why,
                     " (expected 8 bytes of little-endian header length, a JSON header and the "
                     "tensor data)"));
  };
  if (bytes.size() < 8) {
    return not_safetensors(absl::StrCat("it has only ", bytes.size(), " bytes"));
  }
  uint64_t header_length = 0;
  for (int b = 7; b >= 0; --b) {
    header_length = (header_length << 8) | static_cast<unsigned char>(bytes[b]);
  }
  if (header_length < 2 || header_length > bytes.size() - 8) {
    return not_safetensors(absl::StrCat("its header length field says ", header_length,
                                        " bytes but the file has ", bytes.size() - 8,
                                        " bytes after it"));
  }
  const size_t first = bytes.find_first_not_of(" \t\r\n", 8);
  if (first >= 8 + header_length || bytes[first] != '{') {
    return not_safetensors("its header is not a JSON object");
  }
  return absl::OkStatus();
}

ModelImport::ModelImport(std::string name, std::string_view bytes, size_t chunk_bytes)
    : bytes_(bytes), chunk_bytes_(chunk_bytes) {
  DRFM_CHECK(chunk_bytes >= 1);
  v1::ImportModelHeader* header = header_.mutable_header();
  header->set_name(std::move(name));
  header->set_size_bytes(static_cast<int64_t>(bytes.size()));
  Sha256 sha;
  sha.Update(bytes);
  header->set_sha256(sha.HexDigest());
}

bool ModelImport::NextChunk(v1::ImportModelRequest* request) {
  if (sent_ >= total_bytes()) return false;
  const size_t count = std::min(chunk_bytes_, bytes_.size() - static_cast<size_t>(sent_));
  request->set_chunk(std::string(bytes_.substr(static_cast<size_t>(sent_), count)));
  sent_ += static_cast<int64_t>(count);
  return true;
}

int64_t PredictBatchRows(int64_t cols, size_t max_bytes) {
  if (cols <= 0) return 1;
  return std::max<int64_t>(1, static_cast<int64_t>(max_bytes) / (4 * cols));
}

v1::PredictRequest MakePredictRequest(const PredictTarget& target, const core::RowMatrixF& features,
                                      int64_t begin, int64_t count) {
  v1::PredictRequest request;
  request.set_model(target.model);
  if (target.version.has_value()) request.set_version(*target.version);
  request.set_rows(count);
  request.set_cols(features.cols());
  request.set_features(EncodeFeatureRows(features, begin, count));
  request.set_return_scores(target.return_scores);
  request.set_layer(target.layer);
  return request;
}

std::string FormatFloat(float value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  DRFM_CHECK(ec == std::errc());
  return std::string(buffer, end);
}

absl::Status PredictionCsv::Add(const v1::PredictResponse& response) {
  const int64_t rows = response.rows() > 0 ? response.rows() : response.labels_size();
  int64_t columns;
  if (layer_ == 0) {
    if (response.labels_size() != rows) {
      return absl::InvalidArgumentError(absl::StrCat("the server answered ", rows, " rows with ",
                                                     response.labels_size(), " labels"));
    }
    columns = scores_ ? response.classes() : 0;
    if (scores_ && (columns <= 0 || response.scores_size() != rows * columns)) {
      return absl::InvalidArgumentError(absl::StrCat("the server answered ", rows, " rows of ",
                                                     columns, " classes with ",
                                                     response.scores_size(), " scores"));
    }
  } else {
    columns = response.representation_cols();
    if (columns <= 0 ||
        static_cast<int64_t>(response.representation().size()) != 4 * rows * columns) {
      return absl::InvalidArgumentError(
          absl::StrCat("the server answered ", rows, " rows of width ", columns, " with ",
                       response.representation().size(), " representation bytes"));
    }
  }
  if (columns_ < 0) {
    columns_ = columns;
    if (layer_ == 0) {
      text_ = "label";
      for (int64_t c = 0; scores_ && c < columns; ++c) absl::StrAppend(&text_, ",score_", c);
    } else {
      for (int64_t c = 0; c < columns; ++c) absl::StrAppend(&text_, c == 0 ? "" : ",", "x_", c);
    }
    text_ += '\n';
  } else if (columns != columns_) {
    return absl::InvalidArgumentError(absl::StrCat("the server changed the number of columns from ",
                                                   columns_, " to ", columns, " between batches"));
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (layer_ == 0) {
      const int32_t label = response.labels(static_cast<int>(r));
      labels_.push_back(label);
      absl::StrAppend(&text_, label);
      for (int64_t c = 0; scores_ && c < columns; ++c) {
        absl::StrAppend(&text_, ",",
                        FormatFloat(response.scores(static_cast<int>(r * columns + c))));
      }
    } else {
      const char* row = response.representation().data() + 4 * r * columns;
      for (int64_t c = 0; c < columns; ++c) {
        absl::StrAppend(&text_, c == 0 ? "" : ",", FormatFloat(ReadLittleEndianFloat(row + 4 * c)));
      }
    }
    text_ += '\n';
  }
  rows_ += rows;
  return absl::OkStatus();
}

}  // namespace drfm::client
