// What the CLI sends and receives as bytes: the wire encoding of features (float32 little-endian,
// row-major) and labels (int32 little-endian), the SHA-256 content hash of a dataset, the
// chunking of a dataset into an UploadDataset stream and of a safetensors file into an
// ImportModel stream, the batching of rows into Predict requests, and the CSV form of predictions.
// Pure functions and value types, no I/O and no RPCs, so each is unit-tested on its own.
#ifndef DRFM_CLIENT_PAYLOAD_H_
#define DRFM_CLIENT_PAYLOAD_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/types.h"
#include "drfm/v1/datasets.pb.h"
#include "drfm/v1/models.pb.h"

struct evp_md_ctx_st;

namespace drfm::client {

// Payload bytes per UploadDataset chunk and per Predict request: 1 MiB, well under gRPC's default
// 4 MiB message limit with room for the protobuf framing.
inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;

// Incremental SHA-256 (OpenSSL EVP). Not thread-safe. OpenSSL fails here only when out of memory,
// which aborts.
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Lowercase hex digest. The object is spent afterwards.
  std::string HexDigest();

 private:
  struct Free {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> ctx_;
};

// Rows [begin, begin + count) of `features` as float32 little-endian, row-major bytes.
// Precondition: the range lies inside the matrix.
std::string EncodeFeatureRows(const core::RowMatrixF& features, int64_t begin, int64_t count);

// `labels` as int32 little-endian bytes.
std::string EncodeLabels(const std::vector<int32_t>& labels);

// Lowercase hex SHA-256 of the dataset's wire payload: the feature bytes, then the label bytes
// (the content hash DatasetService deduplicates by; datasets.proto).
std::string DatasetSha256(const core::Dataset& data);

// The messages of one UploadDataset stream for `data`: a header (name, rows, cols, num_classes
// and the SHA-256 of the payload), then chunks of at most `chunk_bytes` payload bytes each: the
// feature bytes in order, then the label bytes, a chunk carrying the end of one and the start of
// the other where they meet. `data` is borrowed and must outlive the object; the payload is
// encoded one chunk at a time, so a large dataset is never copied whole. Not thread-safe.
class DatasetUpload {
 public:
  // Precondition: chunk_bytes >= 1.
  DatasetUpload(std::string name, const core::Dataset& data,
                size_t chunk_bytes = kDefaultChunkBytes);

  // The first message of the stream.
  const v1::UploadDatasetRequest& header() const { return header_; }

  // Sets `*request` to the next chunk and returns true, or returns false after the last one.
  bool NextChunk(v1::UploadDatasetRequest* request);

  // Payload bytes in total (4 * rows * (cols + 1)) and sent so far by NextChunk.
  int64_t total_bytes() const { return feature_bytes_ + label_bytes_; }
  int64_t sent_bytes() const { return sent_; }

  // Rewinds to the first chunk (for a retried upload).
  void Rewind() { sent_ = 0; }

 private:
  const core::Dataset& data_;
  size_t chunk_bytes_;
  v1::UploadDatasetRequest header_;
  int64_t feature_bytes_;
  int64_t label_bytes_;
  int64_t sent_ = 0;
};

// The framing of a safetensors file: 8 bytes of little-endian header length n, then n bytes of
// JSON header (an object), then the tensor data. OK when `bytes` has that framing; InvalidArgument
// naming `path` otherwise (a file given by mistake: a CSV, a pickle, a truncated download). Only
// the framing is checked here: the server validates the header and the tensors (DNN.md).
absl::Status CheckSafetensorsFraming(std::string_view bytes, const std::string& path);

// The messages of one ImportModel stream for the safetensors file `bytes`: a header (name, size
// and SHA-256 of the file), then chunks of at most `chunk_bytes` bytes in order. `bytes` is
// borrowed and must outlive the object. Not thread-safe.
class ModelImport {
 public:
  // Precondition: chunk_bytes >= 1.
  ModelImport(std::string name, std::string_view bytes, size_t chunk_bytes = kDefaultChunkBytes);

  // The first message of the stream.
  const v1::ImportModelRequest& header() const { return header_; }

  // Sets `*request` to the next chunk and returns true, or returns false after the last one.
  bool NextChunk(v1::ImportModelRequest* request);

  // Bytes of the file and sent so far by NextChunk.
  int64_t total_bytes() const { return static_cast<int64_t>(bytes_.size()); }
  int64_t sent_bytes() const { return sent_; }

  // Rewinds to the first chunk (for a retried import).
  void Rewind() { sent_ = 0; }

 private:
  std::string_view bytes_;
  size_t chunk_bytes_;
  v1::ImportModelRequest header_;
  int64_t sent_ = 0;
};

// Rows per Predict request so that one request's features stay within `max_bytes` (at least 1).
int64_t PredictBatchRows(int64_t cols, size_t max_bytes = kDefaultChunkBytes);

// What the caller of Predict asks for, the same for every batch of a file.
struct PredictTarget {
  std::string model;
  std::optional<int64_t> version;
  bool return_scores = false;
  int32_t layer = 0;
};

// The Predict request for rows [begin, begin + count) of `features`. Precondition: the range lies
// inside the matrix and count >= 1.
v1::PredictRequest MakePredictRequest(const PredictTarget& target, const core::RowMatrixF& features,
                                      int64_t begin, int64_t count);

// Shortest text that reads back as exactly `value` (std::to_chars), "nan"/"inf"/"-inf" for the
// non-finite values.
std::string FormatFloat(float value);

// Accumulates Predict responses, batch after batch, into CSV text: a header line, then one line
// per input row in order. Layer 0 without scores: "label" and one label per line; with scores:
// "label,score_0,...,score_{C-1}"; layer >= 1: "x_0,...,x_{D-1}", the representation of the row.
// Not thread-safe.
class PredictionCsv {
 public:
  PredictionCsv(bool scores, int32_t layer) : scores_(scores), layer_(layer) {}

  // Appends the rows of `response`. InvalidArgument when the response disagrees with itself or
  // with earlier ones (labels or scores not rows long, a change in the number of classes or
  // representation columns): the server's reply would be misread otherwise.
  absl::Status Add(const v1::PredictResponse& response);

  // The CSV so far (the header once the first response has been added).
  const std::string& text() const { return text_; }
  // Rows added so far.
  int64_t rows() const { return rows_; }
  // The labels added so far (layer 0 only), for a summary or an accuracy.
  const std::vector<int32_t>& labels() const { return labels_; }

 private:
  bool scores_;
  int32_t layer_;
  int64_t columns_ = -1;  // classes or representation width, fixed by the first response
  int64_t rows_ = 0;
  std::string text_;
  std::vector<int32_t> labels_;
};

}  // namespace drfm::client

#endif  // DRFM_CLIENT_PAYLOAD_H_
