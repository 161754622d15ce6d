// Readers for the dataset file formats drfm accepts (NumPy .npy, IDX as used by MNIST and
// Fashion-MNIST, and CSV; each optionally gzip-compressed), format sniffing, the built-in
// Fashion-MNIST loader and the seeded synthetic Gaussian-mixture generator. Every function returns
// absl::Status / absl::StatusOr and never throws or aborts on malformed input: the Parse*
// functions work on in-memory bytes and are safe to fuzz; the Read* functions read a file, gunzip
// it when it starts with the gzip magic (at most kMaxDecompressedBytes), and prefix errors with
// the path. Features come back as float32 row-major matrices (one sample per row), labels as int32.
// All functions are thread-compatible and keep no state.
#ifndef DRFM_CORE_IO_H_
#define DRFM_CORE_IO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/types.h"

namespace drfm::core {

// Largest decompressed (or, for uncompressed files, raw) size the readers accept: 4 GiB.
inline constexpr uint64_t kMaxDecompressedBytes = uint64_t{4} << 30;

// True when `bytes` starts with the gzip magic (0x1f 0x8b).
bool IsGzip(std::string_view bytes);

// The decompressed contents of the gzip stream `bytes` (concatenated gzip members are joined, as
// gunzip does). InvalidArgument when the stream is corrupt, truncated, followed by non-gzip
// bytes, or decompresses to more than `max_bytes`; ResourceExhausted when zlib runs out of memory.
absl::StatusOr<std::string> Gunzip(std::string_view bytes,
                                   uint64_t max_bytes = kMaxDecompressedBytes);

// The contents of the file at `path`, gunzipped when it starts with the gzip magic. NotFound when
// the file does not exist, PermissionDenied when it cannot be opened for reading, InvalidArgument
// when it is a directory, larger than `max_bytes` or (for gzip) corrupt or larger than `max_bytes`
// once decompressed; other I/O failures map from errno. Messages name the path.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path,
                                          uint64_t max_bytes = kMaxDecompressedBytes);

// Layout: bytes 0-1 are 0, byte 2 the element type (0x08 ubyte, 0x09 sbyte, 0x0B int16,
// 0x0C int32, 0x0D float32, 0x0E float64), byte 3 the number of dimensions, then each dimension as
// a big-endian uint32, then the elements in row-major order, big-endian.

// Features from IDX bytes: rows = the first dimension, cols = the product of the others (1 for a
// 1-D file). ubyte elements are scaled to [0, 1] (divided by 255); other types are converted to
// float as they are. InvalidArgument when the header is malformed (bad magic, unknown type, no
// dimensions, a zero dimension), when the payload is shorter or longer than the dimensions
// require, or when an element is NaN or infinite (naming its row and column).
absl::StatusOr<RowMatrixF> ParseIdxFeatures(std::string_view bytes);

// Labels from a 1-D integer IDX file (ubyte, sbyte, int16 or int32). InvalidArgument when the
// header is malformed, the file is not 1-D, the type is floating point, the payload length
// disagrees with the dimension, or a label is negative (naming its row).
absl::StatusOr<std::vector<int32_t>> ParseIdxLabels(std::string_view bytes);

// ParseIdxFeatures / ParseIdxLabels of the (possibly gzipped) file at `path`; the errors of
// ReadFileBytes as well.
absl::StatusOr<RowMatrixF> ReadIdxFeatures(const std::string& path);
absl::StatusOr<std::vector<int32_t>> ReadIdxLabels(const std::string& path);

// Format versions 1.0, 2.0 and 3.0. Little- and big-endian descrs ('<', '>', '=' native, '|')
// are accepted; fortran_order True is transposed into row-major order. Structured and object
// dtypes are rejected.

// Features from .npy bytes: a 1-D array of n elements becomes n x 1; an N-D array becomes
// shape[0] x product(shape[1:]). Accepted dtypes: float32, float64, uint8 (scaled to [0, 1] like
// image bytes), int8/16/32/64 and uint16/32/64 (converted to float as they are). InvalidArgument
// for a bad magic or version, a malformed header dict, an unsupported dtype, a 0-D array or a zero
// dimension, a payload whose length is not exactly the shape's, or a NaN/infinite element
// (naming its row and column).
absl::StatusOr<RowMatrixF> ParseNpyFeatures(std::string_view bytes);

// Labels from .npy bytes: any integer dtype, shape (n,) or (n, 1). InvalidArgument for the header
// and payload errors of ParseNpyFeatures, a floating-point dtype, another shape, or a label that
// is negative or exceeds the int32 range (naming its row).
absl::StatusOr<std::vector<int32_t>> ParseNpyLabels(std::string_view bytes);

// ParseNpyFeatures / ParseNpyLabels of the (possibly gzipped) file at `path`.
absl::StatusOr<RowMatrixF> ReadNpyFeatures(const std::string& path);
absl::StatusOr<std::vector<int32_t>> ReadNpyLabels(const std::string& path);

// Comma-separated numbers, one sample per line; whitespace around fields, a UTF-8 byte-order
// mark, CRLF line ends, blank lines and a pair of double quotes around a field are tolerated
// (quoted fields may not contain commas). The first non-blank line is a header, and skipped, when
// one of its fields is non-empty and not a number. Every row must have the same number of fields.
// Line numbers in messages count from 1 (as editors do); columns count from 0.

// Label column value meaning "the last column".
inline constexpr int kLastColumn = -1;

// A labelled dataset from CSV bytes: column `label_column` (0-based, or kLastColumn) holds the
// labels and the other columns the features. num_classes is InferNumClasses(labels); the name is
// empty. InvalidArgument when `label_column` is below -1 or not less than the field count, when
// there are fewer than 2 fields per row, when there are no data rows, when a row has a different
// field count than the first (naming the line), when a feature is empty, not a number or not
// finite as a float (naming line and column), or when a label is not a non-negative integer
// within int32 ("3" and "3.0" are accepted; naming the line).
absl::StatusOr<Dataset> ParseCsvDataset(std::string_view bytes, int label_column);

// Features only (every column is a feature). The errors of ParseCsvDataset that concern features.
absl::StatusOr<RowMatrixF> ParseCsvFeatures(std::string_view bytes);

// Labels only: one integer per line, optionally under a header. InvalidArgument when a row has
// more than one field or a label is not a non-negative int32 integer (naming the line).
absl::StatusOr<std::vector<int32_t>> ParseCsvLabels(std::string_view bytes);

// The CSV parsers applied to the (possibly gzipped) file at `path`; ReadCsvDataset names the
// dataset after `path`.
absl::StatusOr<Dataset> ReadCsvDataset(const std::string& path, int label_column);
absl::StatusOr<RowMatrixF> ReadCsvFeatures(const std::string& path);
absl::StatusOr<std::vector<int32_t>> ReadCsvLabels(const std::string& path);

// The file formats the readers understand.
enum class DataFormat { kNpy, kIdx, kCsv };

// "npy", "idx" or "csv".
std::string_view DataFormatName(DataFormat format);

// The format of (already decompressed) `bytes`: kNpy when they start with "\x93NUMPY"; kIdx when
// the first two bytes are 0, the third is a known IDX type and the fourth a non-zero dimension
// count (whether the dimensions match the payload is left to the IDX parser, whose error says
// exactly what is wrong, rather than reporting a broken IDX file as bad CSV); kCsv otherwise.
DataFormat SniffFormat(std::string_view bytes);

// Features or labels from bytes of any supported format, gunzipped first when they start with the
// gzip magic; the errors of Gunzip and of the parser SniffFormat selects.
absl::StatusOr<RowMatrixF> ParseFeatures(std::string_view bytes);
absl::StatusOr<std::vector<int32_t>> ParseLabels(std::string_view bytes);

// ParseFeatures / ParseLabels of the file at `path`; the errors of ReadFileBytes as well.
absl::StatusOr<RowMatrixF> ReadFeatures(const std::string& path);
absl::StatusOr<std::vector<int32_t>> ReadLabels(const std::string& path);

// Where the Debian package dataset-fashion-mnist installs the files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// Fashion-MNIST split "train" (60000 rows, files train-*) or "test" (10000 rows, files t10k-*)
// from `dir`, each file gzipped (*.gz) or not: features n x 784 in [0, 1], num_classes 10, name
// "fashion-mnist:train" or "fashion-mnist:test". InvalidArgument for another split or malformed
// files (wrong image size, label count disagreeing with image count, a label outside 0..9);
// NotFound, naming the path and the Debian package to install, when a file is missing.
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split);

// Limits of SyntheticSpec: at most 2^31 elements (8 GiB of float32) and 10000 classes.
inline constexpr int64_t kMaxSyntheticElements = int64_t{1} << 31;
inline constexpr int kMaxSyntheticClasses = 10000;

// A Gaussian mixture: `classes` class means, each an independent uniformly random direction in
// R^cols scaled to Euclidean norm `separation` (so two means are about separation * sqrt(2)
// apart); each sample is its class mean plus i.i.d. N(0, noise^2) noise per coordinate. Labels
// are balanced round-robin (row i has class i mod classes). Everything is drawn from a
// std::mt19937_64 seeded with `seed` through our own transforms (Box-Muller), so the same spec
// gives the same data on every run of the same build.
struct SyntheticSpec {
  int64_t rows = 1000;      // 1 <= classes <= rows
  int64_t cols = 20;        // >= 1, and rows * cols <= kMaxSyntheticElements
  int classes = 3;          // 2 <= classes <= kMaxSyntheticClasses
  double separation = 3.0;  // finite, >= 0
  double noise = 1.0;       // finite, >= 0
  uint64_t seed = 0;

  // OK when every field is within the limits above; InvalidArgument naming the field otherwise.
  absl::Status Validate() const;
};

// The dataset `spec` describes, named SyntheticName(spec). InvalidArgument when spec.Validate()
// fails.
absl::StatusOr<Dataset> MakeSynthetic(const SyntheticSpec& spec);

// Parses "synthetic" or "synthetic:key=value,key=value,..." with keys rows, cols, classes,
// separation, noise and seed (each at most once; omitted keys keep the SyntheticSpec defaults:
// rows=1000, cols=20, classes=3, separation=3, noise=1, seed=0). Whitespace around keys and
// values is ignored. InvalidArgument for another prefix, an unknown or repeated key, a value that
// is not a number of the key's type, or a spec that fails Validate().
absl::StatusOr<SyntheticSpec> ParseSyntheticName(std::string_view name);

// The canonical name of `spec`, e.g. "synthetic:rows=1000,cols=20,classes=3,separation=3,
// noise=1,seed=0" (without the line break); ParseSyntheticName inverts it.
std::string SyntheticName(const SyntheticSpec& spec);

}  // namespace drfm::core

#endif  // DRFM_CORE_IO_H_
