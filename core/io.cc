// Dataset file readers (IDX, .npy, CSV, gzip), format sniffing, the Fashion-MNIST loader and the
// synthetic Gaussian-mixture generator (core/io.h). Every parser bounds its work and allocations
// by the input length and reports malformed input as a Status, never by throwing or aborting.
#include "core/io.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "core/status.h"

namespace drfm::core {
namespace {

// absl::string_view is not std::string_view in Debian's abseil build.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// `status` with its message prefixed by `context`, keeping the code; OK stays OK.
absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(AV(context), ": ", status.message()));
}

template <typename T>
absl::StatusOr<T> Annotate(absl::StatusOr<T> result, std::string_view context) {
  if (result.ok()) return result;
  return Annotate(result.status(), context);
}

template <size_t N>
struct UnsignedOfSize;
template <>
struct UnsignedOfSize<1> {
  using Type = uint8_t;
};
template <>
struct UnsignedOfSize<2> {
  using Type = uint16_t;
};
template <>
struct UnsignedOfSize<4> {
  using Type = uint32_t;
};
template <>
struct UnsignedOfSize<8> {
  using Type = uint64_t;
};

// The T stored at `p` in the given byte order (no alignment requirement).
template <typename T>
T LoadScalar(const unsigned char* p, bool big_endian) {
  using U = typename UnsignedOfSize<sizeof(T)>::Type;
  U u = 0;
  if (big_endian) {
    for (size_t i = 0; i < sizeof(T); ++i) u = static_cast<U>((u << 8) | p[i]);
  } else {
    for (size_t i = sizeof(T); i-- > 0;) u = static_cast<U>((u << 8) | p[i]);
  }
  T value;
  std::memcpy(&value, &u, sizeof(T));
  return value;
}

// `value` as float; values beyond the float range become +-infinity (a plain conversion would be
// undefined behaviour) so the finiteness check reports them.
template <typename T>
float ToFloat(T value) {
  if constexpr (std::is_same_v<T, double>) {
    if (std::isfinite(value) && std::fabs(value) > static_cast<double>(FLT_MAX)) {
      return value > 0 ? std::numeric_limits<float>::infinity()
                       : -std::numeric_limits<float>::infinity();
    }
  }
  return static_cast<float>(value);
}

// Decodes `count` elements of type T starting at `payload` into `out` (row-major). With
// `fortran_order` the elements are stored column-major for `shape` and are transposed. With
// `scale_bytes` (uint8 only) values are divided by 255.
template <typename T>
void DecodeFeatures(const unsigned char* payload, const std::vector<uint64_t>& shape,
                    uint64_t count, bool big_endian, bool fortran_order, bool scale_bytes,
                    float* out) {
  auto load = [&](uint64_t index) {
    const T value = LoadScalar<T>(payload + index * sizeof(T), big_endian);
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (scale_bytes) return static_cast<float>(value) / 255.0f;
    }
    return ToFloat(value);
  };
  if (!fortran_order || shape.size() < 2) {
    for (uint64_t i = 0; i < count; ++i) out[i] = load(i);
    return;
  }
  // Walk the C-order (row-major) index, tracking the matching Fortran-order offset.
  const size_t ndim = shape.size();
  std::vector<uint64_t> stride(ndim, 1);
  for (size_t k = 1; k < ndim; ++k) stride[k] = stride[k - 1] * shape[k - 1];
  std::vector<uint64_t> index(ndim, 0);
  uint64_t source = 0;
  for (uint64_t i = 0; i < count; ++i) {
    out[i] = load(source);
    for (size_t k = ndim; k-- > 0;) {
      if (++index[k] < shape[k]) {
        source += stride[k];
        break;
      }
      source -= stride[k] * (shape[k] - 1);
      index[k] = 0;
    }
  }
}

// Decodes `count` integer labels of type T; InvalidArgument naming the row of the first label
// that is negative or exceeds int32.
template <typename T>
absl::Status DecodeLabels(const unsigned char* payload, uint64_t count, bool big_endian,
                          std::vector<int32_t>* out) {
  out->resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    const T value = LoadScalar<T>(payload + i * sizeof(T), big_endian);
    if constexpr (std::is_signed_v<T>) {
      if (value < 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "label of row %d (0-based) is %d; class labels must be non-negative integers", i,
            static_cast<int64_t>(value)));
      }
    }
    if (static_cast<uint64_t>(value) > static_cast<uint64_t>(INT32_MAX)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "label of row %d (0-based) is %d, which does not fit in int32 (at most %d)", i,
          static_cast<uint64_t>(value), INT32_MAX));
    }
    (*out)[i] = static_cast<int32_t>(value);
  }
  return absl::OkStatus();
}

// OK when every element of `m` is finite; InvalidArgument naming the first that is not.
absl::Status CheckFinite(const RowMatrixF& m) {
  const float* data = m.data();
  const int64_t size = m.size();
  for (int64_t k = 0; k < size; ++k) {
    if (!std::isfinite(data[k])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("feature at row %d, column %d (0-based) is %f; features must be finite",
                          k / m.cols(), k % m.cols(), data[k]));
    }
  }
  return absl::OkStatus();
}

// "2 x 3 x 4".
std::string ShapeString(const std::vector<uint64_t>& shape) {
  return shape.empty() ? std::string("()") : absl::StrJoin(shape, " x ");
}

// The element count of `shape` when `payload_bytes` holds exactly that many elements of
// `item_size` bytes; InvalidArgument (a zero dimension, truncated or trailing bytes) otherwise.
// The size arithmetic is overflow-checked.
absl::StatusOr<uint64_t> CheckPayload(const std::vector<uint64_t>& shape, uint64_t item_size,
                                      uint64_t payload_bytes, std::string_view format) {
  for (size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s dimension %d (0-based) of shape %s is 0; the data must not be empty",
                          format, k, ShapeString(shape)));
    }
  }
  uint64_t count = 1;
  uint64_t expected = 0;
  bool overflow = false;
  for (uint64_t dim : shape) overflow = overflow || __builtin_mul_overflow(count, dim, &count);
  overflow = overflow || __builtin_mul_overflow(count, item_size, &expected);
  if (overflow) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s payload is truncated: shape %s needs more than 2^64 bytes, found %d",
                        format, ShapeString(shape), payload_bytes));
  }
  if (payload_bytes < expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s payload is truncated: shape %s needs %d bytes, found %d", format,
                        ShapeString(shape), expected, payload_bytes));
  }
  if (payload_bytes > expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s payload has %d trailing bytes: shape %s needs %d bytes, found %d", format,
        payload_bytes - expected, ShapeString(shape), expected, payload_bytes));
  }
  return count;
}

enum IdxType : uint8_t {
  kIdxUbyte = 0x08,
  kIdxSbyte = 0x09,
  kIdxShort = 0x0B,
  kIdxInt = 0x0C,
  kIdxFloat = 0x0D,
  kIdxDouble = 0x0E,
};

// Bytes per element of an IDX type; 0 for an unknown type.
int IdxItemSize(uint8_t type) {
  switch (type) {
    case kIdxUbyte:
    case kIdxSbyte:
      return 1;
    case kIdxShort:
      return 2;
    case kIdxInt:
    case kIdxFloat:
      return 4;
    case kIdxDouble:
      return 8;
    default:
      return 0;
  }
}

struct IdxArray {
  uint8_t type = 0;
  std::vector<uint64_t> shape;
  uint64_t count = 0;
  std::string_view payload;
};

absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes) {
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IDX data is %d bytes, shorter than the 4-byte magic number", bytes.size()));
  }
  const unsigned char* b = Bytes(bytes);
  if (b[0] != 0 || b[1] != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad IDX magic number: the first two bytes are 0x%02x 0x%02x, they must be 0", b[0], b[1]));
  }
  IdxArray array;
  array.type = b[2];
  const int item_size = IdxItemSize(array.type);
  if (item_size == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown IDX element type 0x%02x; known types are 0x08 (ubyte), 0x09 (sbyte), 0x0B "
        "(int16), 0x0C (int32), 0x0D (float32) and 0x0E (float64)",
        b[2]));
  }
  const int ndims = b[3];
  if (ndims == 0) {
    return absl::InvalidArgumentError("IDX header declares 0 dimensions; at least 1 is required");
  }
  const size_t header_size = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IDX header is truncated: %d dimensions need a %d-byte header, the data has %d bytes",
        ndims, header_size, bytes.size()));
  }
  for (int k = 0; k < ndims; ++k) {
    array.shape.push_back(LoadScalar<uint32_t>(b + 4 + 4 * k, /*big_endian=*/true));
  }
  array.payload = bytes.substr(header_size);
  DRFM_ASSIGN_OR_RETURN(array.count,
                        CheckPayload(array.shape, item_size, array.payload.size(), "IDX"));
  return array;
}

struct NpyArray {
  std::string descr;
  char kind = 0;      // 'f', 'i' or 'u'
  int item_size = 0;  // bytes
  bool big_endian = false;
  bool fortran_order = false;
  std::vector<uint64_t> shape;
  uint64_t count = 0;
  std::string_view payload;
};

// A cursor over the Python dict literal of an .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
class NpyHeaderParser {
 public:
  explicit NpyHeaderParser(std::string_view text) : text_(text) {}

  // Fills descr, fortran_order and shape of `array`.
  absl::Status Parse(NpyArray* array) {
    bool has_descr = false, has_fortran = false, has_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{' at the start of the header dict");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      DRFM_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Consume(':')) return Error(absl::StrCat("expected ':' after key '", key, "'"));
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '[') {
          return absl::InvalidArgumentError(
              "the .npy array has a structured dtype (a list 'descr'); only plain numeric "
              "arrays are supported");
        }
        DRFM_ASSIGN_OR_RETURN(array->descr, ParseString());
        has_descr = true;
      } else if (key == "fortran_order") {
        DRFM_ASSIGN_OR_RETURN(array->fortran_order, ParseBool());
        has_fortran = true;
      } else if (key == "shape") {
        DRFM_ASSIGN_OR_RETURN(array->shape, ParseShape());
        has_shape = true;
      } else {
        return Error(absl::StrCat("unexpected key '", key,
                                  "'; the header dict must have exactly the keys 'descr', "
                                  "'fortran_order' and 'shape'"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume('}')) break;
      return Error("expected ',' or '}' after a value");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the header dict");
    if (!has_descr || !has_fortran || !has_shape) {
      return absl::InvalidArgumentError(absl::StrFormat(
          ".npy header misses the key%s%s%s; it must have 'descr', 'fortran_order' and 'shape'",
          has_descr ? "" : " 'descr'", has_fortran ? "" : " 'fortran_order'",
          has_shape ? "" : " 'shape'"));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("malformed .npy header at character %d: %s (header: %s)", pos_, what,
                        absl::CHexEscape(AV(text_.substr(0, 200)))));
  }

  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  bool Consume(char c) {
    if (Peek() != c || pos_ >= text_.size()) return false;
    ++pos_;
    return true;
  }

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }

  absl::StatusOr<std::string> ParseString() {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++pos_;
    std::string value;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) break;
      }
      value.push_back(text_[pos_++]);
    }
    if (!Consume(quote)) return Error("unterminated string");
    return value;
  }

  absl::StatusOr<bool> ParseBool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return Error("expected True or False for 'fortran_order'");
  }

  absl::StatusOr<std::vector<uint64_t>> ParseShape() {
    if (!Consume('(')) return Error("expected a tuple for 'shape'");
    std::vector<uint64_t> shape;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (!absl::ascii_isdigit(static_cast<unsigned char>(Peek()))) {
        return Error("expected a non-negative integer in 'shape'");
      }
      uint64_t dim = 0;
      while (absl::ascii_isdigit(static_cast<unsigned char>(Peek()))) {
        const uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
        if (dim > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
          return Error("dimension in 'shape' is too large");
        }
        dim = dim * 10 + digit;
        ++pos_;
      }
      Consume('L');  // Python 2 long literals, e.g. (3L, 4L)
      shape.push_back(dim);
      if (shape.size() > 64) return Error("'shape' has more than 64 dimensions");
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume(')')) break;
      return Error("expected ',' or ')' in 'shape'");
    }
    return shape;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// Fills kind, item_size and big_endian from array->descr; InvalidArgument for dtypes we do not
// read (the message names the descr).
absl::Status DecodeDescr(NpyArray* array) {
  std::string_view descr = array->descr;
  char order = '=';
  if (!descr.empty() &&
      (descr[0] == '<' || descr[0] == '>' || descr[0] == '|' || descr[0] == '=')) {
    order = descr[0];
    descr.remove_prefix(1);
  }
  int size = 0;
  const bool parsed =
      descr.size() >= 2 && descr.size() <= 3 && absl::SimpleAtoi(AV(descr.substr(1)), &size);
  const char kind = descr.empty() ? '\0' : descr[0];
  const bool supported =
      parsed &&
      ((kind == 'f' && (size == 4 || size == 8)) ||
       ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)));
  if (!supported) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported .npy dtype '%s'; supported are float32, float64, int8/16/32/64 and "
        "uint8/16/32/64 (e.g. '<f4', '|u1', '<i8'); convert with numpy's astype",
        array->descr));
  }
  array->kind = kind;
  array->item_size = size;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  constexpr bool kNativeBigEndian = true;
#else
  constexpr bool kNativeBigEndian = false;
#endif
  array->big_endian = order == '>' || ((order == '=' || order == '|') && kNativeBigEndian);
  return absl::OkStatus();
}

absl::StatusOr<NpyArray> ParseNpy(std::string_view bytes) {
  static constexpr std::string_view kMagic("\x93NUMPY", 6);
  if (bytes.size() < 10) {
    return absl::InvalidArgumentError(absl::StrFormat(
        ".npy data is %d bytes; the magic, version and header length alone need 10", bytes.size()));
  }
  if (bytes.substr(0, 6) != kMagic) {
    return absl::InvalidArgumentError(".npy data does not start with the magic \"\\x93NUMPY\"");
  }
  const unsigned char* b = Bytes(bytes);
  const int major = b[6], minor = b[7];
  size_t header_start = 0;
  uint64_t header_len = 0;
  if (major == 1 && minor == 0) {
    header_start = 10;
    header_len = LoadScalar<uint16_t>(b + 8, /*big_endian=*/false);
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (bytes.size() < 12) {
      return absl::InvalidArgumentError(absl::StrFormat(
          ".npy data is %d bytes; a version %d.0 preamble needs 12", bytes.size(), major));
    }
    header_start = 12;
    header_len = LoadScalar<uint32_t>(b + 8, /*big_endian=*/false);
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported .npy format version %d.%d; supported are 1.0, 2.0 and 3.0", major, minor));
  }
  if (header_len > bytes.size() - header_start) {
    return absl::InvalidArgumentError(
        absl::StrFormat(".npy header is truncated: it declares %d bytes, only %d follow",
                        header_len, bytes.size() - header_start));
  }
  NpyArray array;
  NpyHeaderParser parser(bytes.substr(header_start, header_len));
  DRFM_RETURN_IF_ERROR(parser.Parse(&array));
  DRFM_RETURN_IF_ERROR(DecodeDescr(&array));
  array.payload = bytes.substr(header_start + header_len);
  DRFM_ASSIGN_OR_RETURN(array.count,
                        CheckPayload(array.shape, array.item_size, array.payload.size(), ".npy"));
  return array;
}

// Features of shape rows x product(rest) from a decoded array of one of the supported types.
template <typename T>
RowMatrixF FeaturesFrom(const std::vector<uint64_t>& shape, uint64_t count,
                        std::string_view payload, bool big_endian, bool fortran_order,
                        bool scale_bytes) {
  const int64_t rows = static_cast<int64_t>(shape[0]);
  const int64_t cols = static_cast<int64_t>(count / shape[0]);
  RowMatrixF m(rows, cols);
  DecodeFeatures<T>(Bytes(payload), shape, count, big_endian, fortran_order, scale_bytes, m.data());
  return m;
}

// Splits CSV bytes into non-blank lines of trimmed, unquoted fields.
class CsvScanner {
 public:
  explicit CsvScanner(std::string_view bytes) : rest_(bytes) {
    static constexpr std::string_view kBom("\xEF\xBB\xBF", 3);
    if (rest_.substr(0, 3) == kBom) rest_.remove_prefix(3);
  }

  // Advances to the next non-blank line; false at the end of the data.
  bool Next() {
    while (!rest_.empty()) {
      const size_t end = rest_.find('\n');
      std::string_view line = rest_.substr(0, end);
      rest_.remove_prefix(end == std::string_view::npos ? rest_.size() : end + 1);
      ++line_number_;
      line = Trim(line);
      if (line.empty()) continue;
      fields_.clear();
      while (true) {
        const size_t comma = line.find(',');
        fields_.push_back(Unquote(Trim(line.substr(0, comma))));
        if (comma == std::string_view::npos) break;
        line.remove_prefix(comma + 1);
      }
      return true;
    }
    return false;
  }

  // 1-based line number of the current line.
  int64_t line_number() const { return line_number_; }
  const std::vector<std::string_view>& fields() const { return fields_; }

 private:
  static std::string_view Trim(std::string_view s) {
    while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
    while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
    return s;
  }
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
  }
  static std::string_view Unquote(std::string_view s) {
    if (s.size() < 2 || s.front() != '"' || s.back() != '"') return s;
    return Trim(s.substr(1, s.size() - 2));
  }

  std::string_view rest_;
  int64_t line_number_ = 0;
  std::vector<std::string_view> fields_;
};

bool IsNumber(std::string_view field) {
  double unused;
  return absl::SimpleAtod(AV(field), &unused);
}

// A header row has a field that is non-empty and not a number.
bool IsHeader(const std::vector<std::string_view>& fields) {
  return std::any_of(fields.begin(), fields.end(),
                     [](std::string_view f) { return !f.empty() && !IsNumber(f); });
}

// Calls on_first(num_fields) once with the field count of the first non-blank line, then
// on_row(line_number, fields) for every data row (after the header, if there is one).
// InvalidArgument when there is no data row or a row's field count differs from the first's.
template <typename FirstFn, typename RowFn>
absl::Status ForEachCsvRow(std::string_view bytes, FirstFn on_first, RowFn on_row) {
  CsvScanner scanner(bytes);
  if (!scanner.Next()) return absl::InvalidArgumentError("CSV data has no rows");
  const size_t num_fields = scanner.fields().size();
  const int64_t first_line = scanner.line_number();
  DRFM_RETURN_IF_ERROR(on_first(num_fields));
  bool have_row = IsHeader(scanner.fields()) ? scanner.Next() : true;
  int64_t rows = 0;
  while (have_row) {
    if (scanner.fields().size() != num_fields) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CSV line %d has %d fields but line %d has %d; every row must have the same number "
          "of fields",
          scanner.line_number(), scanner.fields().size(), first_line, num_fields));
    }
    DRFM_RETURN_IF_ERROR(on_row(scanner.line_number(), scanner.fields()));
    ++rows;
    have_row = scanner.Next();
  }
  if (rows == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CSV data has a header (line %d) but no data rows", first_line));
  }
  return absl::OkStatus();
}

// Appends the feature in `field` (line `line`, column `column`) to `out`.
absl::Status AppendFeature(std::string_view field, int64_t line, size_t column,
                           std::vector<float>* out) {
  double value;
  if (!absl::SimpleAtod(AV(field), &value)) {
    if (field.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CSV line %d, column %d (0-based) is empty; every feature must be a number", line,
          column));
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("CSV line %d, column %d (0-based): '%s' is not a number", line, column,
                        absl::CHexEscape(AV(field.substr(0, 64)))));
  }
  const float f = ToFloat(value);
  if (!std::isfinite(f)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CSV line %d, column %d (0-based): '%s' is not a finite float32; features must be finite",
        line, column, absl::CHexEscape(AV(field.substr(0, 64)))));
  }
  out->push_back(f);
  return absl::OkStatus();
}

// Appends the label in `field` (line `line`): an integer in [0, INT32_MAX], also written with a
// zero fraction ("3.0"), as spreadsheet and pandas exports often do.
absl::Status AppendLabel(std::string_view field, int64_t line, size_t column,
                         std::vector<int32_t>* out) {
  int64_t value = 0;
  bool ok = absl::SimpleAtoi(AV(field), &value);
  if (!ok) {
    double d;
    if (absl::SimpleAtod(AV(field), &d) && std::isfinite(d) && d == std::floor(d) &&
        std::fabs(d) <= 4294967296.0) {
      value = static_cast<int64_t>(d);
      ok = true;
    }
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CSV line %d, column %d (0-based): label '%s' is not an integer; labels must be class "
        "indices 0, 1, 2, ...",
        line, column, absl::CHexEscape(AV(field.substr(0, 64)))));
  }
  if (value < 0 || value > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CSV line %d, column %d (0-based): label %d is out of range; labels must be in [0, %d]",
        line, column, value, INT32_MAX));
  }
  out->push_back(static_cast<int32_t>(value));
  return absl::OkStatus();
}

RowMatrixF ToMatrix(const std::vector<float>& values, int64_t rows, int64_t cols) {
  return Eigen::Map<const RowMatrixF>(values.data(), rows, cols);
}

// Standard normal deviates from a std::mt19937_64 by the Box-Muller transform (both outputs of
// each pair are used), independent of the standard library's distribution implementations.
class NormalSource {
 public:
  static constexpr double kTwoPi = 6.283185307179586476925286766559;

  explicit NormalSource(uint64_t seed) : engine_(seed) {}

  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    // u1 in (0, 1] so log(u1) is finite; u2 in [0, 1). 53 random bits each.
    const double u1 = (static_cast<double>(engine_() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = kTwoPi * u2;
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  std::mt19937_64 engine_;
  double spare_ = 0;
  bool has_spare_ = false;
};

// The shortest "%g" rendering of `value` that parses back to it exactly.
std::string FormatDouble(double value) {
  for (int precision = 1; precision < 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, value);
    double back;
    if (absl::SimpleAtod(s, &back) && back == value) return s;
  }
  return absl::StrFormat("%.17g", value);
}

}  // namespace

bool IsGzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

absl::StatusOr<std::string> Gunzip(std::string_view bytes, uint64_t max_bytes) {
  if (!IsGzip(bytes)) {
    return absl::InvalidArgumentError("data is not gzip-compressed (no 1f 8b magic)");
  }
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  // 16 + MAX_WBITS: expect a gzip header and trailer, not a raw zlib stream.
  int rc = inflateInit2(&stream, 16 + MAX_WBITS);
  if (rc != Z_OK) {
    return rc == Z_MEM_ERROR ? absl::ResourceExhaustedError("out of memory starting zlib")
                             : absl::InternalError(absl::StrCat("inflateInit2 failed: ", rc));
  }
  const std::unique_ptr<z_stream, int (*)(z_stream*)> cleanup(&stream, inflateEnd);

  std::string out;
  // The gzip trailer's ISIZE (size mod 2^32) of a single-member stream is a good reservation
  // hint; bound it by deflate's maximum ratio (about 1032:1) so hostile input cannot make us
  // reserve memory out of proportion to its length.
  if (bytes.size() >= 18) {
    const uint64_t isize = LoadScalar<uint32_t>(Bytes(bytes) + bytes.size() - 4, false);
    out.reserve(std::min({isize, uint64_t{1032} * bytes.size(), max_bytes}));
  }
  std::vector<unsigned char> chunk(256 * 1024);
  const unsigned char* next = Bytes(bytes);
  uint64_t remaining = bytes.size();
  while (true) {
    if (stream.avail_in == 0 && remaining > 0) {
      const uInt feed = static_cast<uInt>(std::min<uint64_t>(remaining, UINT_MAX));
      stream.next_in = const_cast<Bytef*>(next);
      stream.avail_in = feed;
      next += feed;
      remaining -= feed;
    }
    stream.next_out = chunk.data();
    stream.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&stream, Z_NO_FLUSH);
    const uint64_t produced = chunk.size() - stream.avail_out;
    if (produced > max_bytes - out.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("gzip data decompresses to more than the limit of %d bytes", max_bytes));
    }
    out.append(reinterpret_cast<const char*>(chunk.data()), produced);
    if (rc == Z_STREAM_END) {
      const uint64_t consumed = bytes.size() - remaining - stream.avail_in;
      if (consumed == bytes.size()) break;
      // Another gzip member may follow (what `cat a.gz b.gz` produces); anything else is junk.
      if (!IsGzip(bytes.substr(consumed))) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%d trailing bytes after the end of the gzip stream", bytes.size() - consumed));
      }
      rc = inflateReset(&stream);
      if (rc != Z_OK) return absl::InternalError(absl::StrCat("inflateReset failed: ", rc));
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR) {
      if (stream.avail_in == 0 && remaining == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "gzip data is truncated: the stream ends after %d compressed bytes, before its "
            "trailer",
            bytes.size()));
      }
      return absl::InternalError("zlib made no progress decompressing gzip data");
    }
    if (rc == Z_MEM_ERROR) return absl::ResourceExhaustedError("out of memory in zlib");
    return absl::InvalidArgumentError(absl::StrCat(
        "gzip data is corrupt: ", stream.msg != nullptr ? stream.msg : "", " (zlib ", rc, ")"));
  }
  return out;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path, uint64_t max_bytes) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (file == nullptr) {
    const int error = errno;
    return absl::ErrnoToStatus(error, absl::StrCat("cannot open ", path));
  }
  struct stat info;
  if (fstat(fileno(file.get()), &info) == 0) {
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a data file"));
    }
    if (S_ISREG(info.st_mode)) {
      const uint64_t size = static_cast<uint64_t>(info.st_size);
      if (size > max_bytes) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s is %d bytes, more than the limit of %d bytes", path, size, max_bytes));
      }
      // Regular files are read in one go; others (pipes) grow the buffer below.
    }
  }
  std::string raw;
  std::vector<char> chunk(1 << 20);
  while (true) {
    const size_t n = std::fread(chunk.data(), 1, chunk.size(), file.get());
    if (n > max_bytes - std::min<uint64_t>(raw.size(), max_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is more than the limit of %d bytes", path, max_bytes));
    }
    raw.append(chunk.data(), n);
    if (n < chunk.size()) {
      if (std::ferror(file.get())) {
        const int error = errno;
        return absl::ErrnoToStatus(error, absl::StrCat("error reading ", path));
      }
      break;
    }
  }
  if (!IsGzip(raw)) return raw;
  return Annotate(Gunzip(raw, max_bytes), path);
}

absl::StatusOr<RowMatrixF> ParseIdxFeatures(std::string_view bytes) {
  DRFM_ASSIGN_OR_RETURN(IdxArray array, ParseIdx(bytes));
  RowMatrixF m;
  switch (array.type) {
    case kIdxUbyte:
      m = FeaturesFrom<uint8_t>(array.shape, array.count, array.payload, true, false, true);
      break;
    case kIdxSbyte:
      m = FeaturesFrom<int8_t>(array.shape, array.count, array.payload, true, false, false);
      break;
    case kIdxShort:
      m = FeaturesFrom<int16_t>(array.shape, array.count, array.payload, true, false, false);
      break;
    case kIdxInt:
      m = FeaturesFrom<int32_t>(array.shape, array.count, array.payload, true, false, false);
      break;
    case kIdxFloat:
      m = FeaturesFrom<float>(array.shape, array.count, array.payload, true, false, false);
      break;
    case kIdxDouble:
      m = FeaturesFrom<double>(array.shape, array.count, array.payload, true, false, false);
      break;
  }
  DRFM_RETURN_IF_ERROR(CheckFinite(m));
  return m;
}

absl::StatusOr<std::vector<int32_t>> ParseIdxLabels(std::string_view bytes) {
  DRFM_ASSIGN_OR_RETURN(IdxArray array, ParseIdx(bytes));
  if (array.shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IDX labels must be 1-dimensional, got shape %s", ShapeString(array.shape)));
  }
  std::vector<int32_t> labels;
  const unsigned char* p = Bytes(array.payload);
  switch (array.type) {
    case kIdxUbyte:
      DRFM_RETURN_IF_ERROR(DecodeLabels<uint8_t>(p, array.count, true, &labels));
      break;
    case kIdxSbyte:
      DRFM_RETURN_IF_ERROR(DecodeLabels<int8_t>(p, array.count, true, &labels));
      break;
    case kIdxShort:
      DRFM_RETURN_IF_ERROR(DecodeLabels<int16_t>(p, array.count, true, &labels));
      break;
    case kIdxInt:
      DRFM_RETURN_IF_ERROR(DecodeLabels<int32_t>(p, array.count, true, &labels));
      break;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "IDX labels must have an integer type (0x08, 0x09, 0x0B or 0x0C), got 0x%02x",
          array.type));
  }
  return labels;
}

absl::StatusOr<RowMatrixF> ReadIdxFeatures(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseIdxFeatures(bytes), path);
}

absl::StatusOr<std::vector<int32_t>> ReadIdxLabels(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseIdxLabels(bytes), path);
}

absl::StatusOr<RowMatrixF> ParseNpyFeatures(std::string_view bytes) {
  DRFM_ASSIGN_OR_RETURN(NpyArray a, ParseNpy(bytes));
  if (a.shape.empty()) {
    return absl::InvalidArgumentError(
        ".npy features must have at least 1 dimension (rows), got a 0-d scalar");
  }
  const bool be = a.big_endian, fo = a.fortran_order;
  RowMatrixF m;
  if (a.kind == 'f') {
    m = a.item_size == 4 ? FeaturesFrom<float>(a.shape, a.count, a.payload, be, fo, false)
                         : FeaturesFrom<double>(a.shape, a.count, a.payload, be, fo, false);
  } else if (a.kind == 'i') {
    switch (a.item_size) {
      case 1:
        m = FeaturesFrom<int8_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
      case 2:
        m = FeaturesFrom<int16_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
      case 4:
        m = FeaturesFrom<int32_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
      default:
        m = FeaturesFrom<int64_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
    }
  } else {
    switch (a.item_size) {
      case 1:
        m = FeaturesFrom<uint8_t>(a.shape, a.count, a.payload, be, fo, true);
        break;
      case 2:
        m = FeaturesFrom<uint16_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
      case 4:
        m = FeaturesFrom<uint32_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
      default:
        m = FeaturesFrom<uint64_t>(a.shape, a.count, a.payload, be, fo, false);
        break;
    }
  }
  DRFM_RETURN_IF_ERROR(CheckFinite(m));
  return m;
}

absl::StatusOr<std::vector<int32_t>> ParseNpyLabels(std::string_view bytes) {
  DRFM_ASSIGN_OR_RETURN(NpyArray a, ParseNpy(bytes));
  if (a.kind == 'f') {
    return absl::InvalidArgumentError(absl::StrFormat(
        ".npy labels must have an integer dtype, got '%s'; convert with y.astype(np.int32)",
        a.descr));
  }
  if (!(a.shape.size() == 1 || (a.shape.size() == 2 && a.shape[1] == 1))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        ".npy labels must have shape (n,) or (n, 1), got %s", ShapeString(a.shape)));
  }
  std::vector<int32_t> labels;
  const unsigned char* p = Bytes(a.payload);
  const bool be = a.big_endian;
  absl::Status status;
  if (a.kind == 'i') {
    switch (a.item_size) {
      case 1:
        status = DecodeLabels<int8_t>(p, a.count, be, &labels);
        break;
      case 2:
        status = DecodeLabels<int16_t>(p, a.count, be, &labels);
        break;
      case 4:
        status = DecodeLabels<int32_t>(p, a.count, be, &labels);
        break;
      default:
        status = DecodeLabels<int64_t>(p, a.count, be, &labels);
        break;
    }
  } else {
    switch (a.item_size) {
      case 1:
        status = DecodeLabels<uint8_t>(p, a.count, be, &labels);
        break;
      case 2:
        status = DecodeLabels<uint16_t>(p, a.count, be, &labels);
        break;
      case 4:
        status = DecodeLabels<uint32_t>(p, a.count, be, &labels);
        break;
      default:
        status = DecodeLabels<uint64_t>(p, a.count, be, &labels);
        break;
    }
  }
  DRFM_RETURN_IF_ERROR(status);
  return labels;
}

absl::StatusOr<RowMatrixF> ReadNpyFeatures(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseNpyFeatures(bytes), path);
}

absl::StatusOr<std::vector<int32_t>> ReadNpyLabels(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseNpyLabels(bytes), path);
}

absl::StatusOr<Dataset> ParseCsvDataset(std::string_view bytes, int label_column) {
  if (label_column < kLastColumn) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "label column %d is invalid; use a 0-based column index or -1 for the last column",
        label_column));
  }
  size_t label_index = 0;
  size_t num_fields = 0;
  auto on_first = [&](size_t n) {
    num_fields = n;
    if (n < 2) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CSV rows have %d field; a labelled CSV needs a label column and at least one feature "
          "column",
          n));
    }
    if (label_column != kLastColumn && static_cast<size_t>(label_column) >= n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "label column %d is out of range: CSV rows have %d fields (columns 0..%d, or -1 for "
          "the last)",
          label_column, n, n - 1));
    }
    label_index = label_column == kLastColumn ? n - 1 : static_cast<size_t>(label_column);
    return absl::OkStatus();
  };
  std::vector<float> features;
  std::vector<int32_t> labels;
  auto on_row = [&](int64_t line, const std::vector<std::string_view>& fields) {
    for (size_t j = 0; j < fields.size(); ++j) {
      if (j == label_index) {
        DRFM_RETURN_IF_ERROR(AppendLabel(fields[j], line, j, &labels));
      } else {
        DRFM_RETURN_IF_ERROR(AppendFeature(fields[j], line, j, &features));
      }
    }
    return absl::OkStatus();
  };
  DRFM_RETURN_IF_ERROR(ForEachCsvRow(bytes, on_first, on_row));
  Dataset data;
  const int64_t rows = static_cast<int64_t>(labels.size());
  data.features = ToMatrix(features, rows, static_cast<int64_t>(num_fields) - 1);
  data.labels = std::move(labels);
  data.num_classes = InferNumClasses(data.labels);
  return data;
}

absl::StatusOr<RowMatrixF> ParseCsvFeatures(std::string_view bytes) {
  size_t num_fields = 0;
  int64_t rows = 0;
  std::vector<float> features;
  auto on_first = [&](size_t n) {
    num_fields = n;
    return absl::OkStatus();
  };
  auto on_row = [&](int64_t line, const std::vector<std::string_view>& fields) {
    for (size_t j = 0; j < fields.size(); ++j) {
      DRFM_RETURN_IF_ERROR(AppendFeature(fields[j], line, j, &features));
    }
    ++rows;
    return absl::OkStatus();
  };
  DRFM_RETURN_IF_ERROR(ForEachCsvRow(bytes, on_first, on_row));
  return ToMatrix(features, rows, static_cast<int64_t>(num_fields));
}

absl::StatusOr<std::vector<int32_t>> ParseCsvLabels(std::string_view bytes) {
  std::vector<int32_t> labels;
  auto on_first = [&](size_t n) {
    if (n != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "a CSV label file must have one label per line, but its rows have %d fields", n));
    }
    return absl::OkStatus();
  };
  auto on_row = [&](int64_t line, const std::vector<std::string_view>& fields) {
    return AppendLabel(fields[0], line, 0, &labels);
  };
  DRFM_RETURN_IF_ERROR(ForEachCsvRow(bytes, on_first, on_row));
  return labels;
}

absl::StatusOr<Dataset> ReadCsvDataset(const std::string& path, int label_column) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  DRFM_ASSIGN_OR_RETURN(Dataset data, Annotate(ParseCsvDataset(bytes, label_column), path));
  data.name = path;
  return data;
}

absl::StatusOr<RowMatrixF> ReadCsvFeatures(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseCsvFeatures(bytes), path);
}

absl::StatusOr<std::vector<int32_t>> ReadCsvLabels(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseCsvLabels(bytes), path);
}

std::string_view DataFormatName(DataFormat format) {
  switch (format) {
    case DataFormat::kNpy:
      return "npy";
    case DataFormat::kIdx:
      return "idx";
    case DataFormat::kCsv:
      return "csv";
  }
  return "unknown";
}

DataFormat SniffFormat(std::string_view bytes) {
  if (bytes.substr(0, 6) == std::string_view("\x93NUMPY", 6)) return DataFormat::kNpy;
  const unsigned char* b = Bytes(bytes);
  if (bytes.size() >= 4 && b[0] == 0 && b[1] == 0 && IdxItemSize(b[2]) != 0 && b[3] != 0) {
    return DataFormat::kIdx;
  }
  return DataFormat::kCsv;
}

absl::StatusOr<RowMatrixF> ParseFeatures(std::string_view bytes) {
  std::string decompressed;
  if (IsGzip(bytes)) {
    DRFM_ASSIGN_OR_RETURN(decompressed, Gunzip(bytes));
    bytes = decompressed;
  }
  switch (SniffFormat(bytes)) {
    case DataFormat::kNpy:
      return ParseNpyFeatures(bytes);
    case DataFormat::kIdx:
      return ParseIdxFeatures(bytes);
    case DataFormat::kCsv:
      return ParseCsvFeatures(bytes);
  }
  return absl::InternalError("unknown data format");
}

absl::StatusOr<std::vector<int32_t>> ParseLabels(std::string_view bytes) {
  std::string decompressed;
  if (IsGzip(bytes)) {
    DRFM_ASSIGN_OR_RETURN(decompressed, Gunzip(bytes));
    bytes = decompressed;
  }
  switch (SniffFormat(bytes)) {
    case DataFormat::kNpy:
      return ParseNpyLabels(bytes);
    case DataFormat::kIdx:
      return ParseIdxLabels(bytes);
    case DataFormat::kCsv:
      return ParseCsvLabels(bytes);
  }
  return absl::InternalError("unknown data format");
}

absl::StatusOr<RowMatrixF> ReadFeatures(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseFeatures(bytes), path);
}

absl::StatusOr<std::vector<int32_t>> ReadLabels(const std::string& path) {
  DRFM_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  return Annotate(ParseLabels(bytes), path);
}

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split) {
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test") {
    prefix = "t10k";
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("Fashion-MNIST split '%s' is unknown; use \"train\" or \"test\"", split));
  }
  // The file `stem` in `dir`, gzipped or not.
  auto find = [&](std::string_view stem) -> absl::StatusOr<std::string> {
    const std::string plain = (std::filesystem::path(dir) / std::string(stem)).string();
    const std::string gz = plain + ".gz";
    std::error_code error;
    if (std::filesystem::exists(gz, error)) return gz;
    if (std::filesystem::exists(plain, error)) return plain;
    return absl::NotFoundError(absl::StrFormat(
        "Fashion-MNIST %s file not found: neither %s nor %s exists; install the Debian package "
        "dataset-fashion-mnist (it provides %s) or point to the directory that holds the files",
        split, gz, plain, kFashionMnistDir));
  };
  DRFM_ASSIGN_OR_RETURN(const std::string images_path,
                        find(absl::StrCat(prefix, "-images-idx3-ubyte")));
  DRFM_ASSIGN_OR_RETURN(const std::string labels_path,
                        find(absl::StrCat(prefix, "-labels-idx1-ubyte")));
  Dataset data;
  data.name = absl::StrCat("fashion-mnist:", AV(split));
  data.num_classes = 10;
  DRFM_ASSIGN_OR_RETURN(data.features, ReadIdxFeatures(images_path));
  DRFM_ASSIGN_OR_RETURN(data.labels, ReadIdxLabels(labels_path));
  if (data.cols() != 28 * 28) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s holds images of %d pixels; Fashion-MNIST images have 28 x 28 = 784",
                        images_path, data.cols()));
  }
  if (static_cast<int64_t>(data.labels.size()) != data.rows()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s has %d images but %s has %d labels",
                                                      images_path, data.rows(), labels_path,
                                                      data.labels.size()));
  }
  DRFM_RETURN_IF_ERROR(ValidateDataset(data));
  return data;
}

absl::Status SyntheticSpec::Validate() const {
  if (rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic rows is %d; it must be at least 1", rows));
  }
  if (cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic cols is %d; it must be at least 1", cols));
  }
  if (rows > kMaxSyntheticElements / cols) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic rows x cols = %d x %d is more than the limit of %d elements",
                        rows, cols, kMaxSyntheticElements));
  }
  if (classes < 2 || classes > kMaxSyntheticClasses) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "synthetic classes is %d; it must be in [2, %d]", classes, kMaxSyntheticClasses));
  }
  if (rows < classes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "synthetic rows (%d) is less than classes (%d); every class needs at least one row", rows,
        classes));
  }
  if (!std::isfinite(separation) || separation < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic separation is %f; it must be a finite number >= 0", separation));
  }
  if (!std::isfinite(noise) || noise < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic noise is %f; it must be a finite number >= 0", noise));
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> MakeSynthetic(const SyntheticSpec& spec) {
  DRFM_RETURN_IF_ERROR(spec.Validate());
  NormalSource normal(spec.seed);
  // Class means: Gaussian directions (uniform on the sphere) scaled to norm `separation`. Plain
  // sequential loops, not Eigen reductions, so the sums do not depend on vectorization.
  RowMatrixD means(spec.classes, spec.cols);
  for (int c = 0; c < spec.classes; ++c) {
    double squared_norm = 0;
    for (int64_t j = 0; j < spec.cols; ++j) {
      means(c, j) = normal.Next();
      squared_norm += means(c, j) * means(c, j);
    }
    const double norm = std::sqrt(squared_norm);
    for (int64_t j = 0; j < spec.cols; ++j) {
      if (norm > 0) {
        means(c, j) *= spec.separation / norm;
      } else {
        means(c, j) = j == 0 ? spec.separation : 0.0;
      }
    }
  }
  Dataset data;
  data.name = SyntheticName(spec);
  data.num_classes = spec.classes;
  data.features.resize(spec.rows, spec.cols);
  data.labels.resize(spec.rows);
  for (int64_t i = 0; i < spec.rows; ++i) {
    const int label = static_cast<int>(i % spec.classes);
    data.labels[i] = label;
    for (int64_t j = 0; j < spec.cols; ++j) {
      data.features(i, j) = static_cast<float>(means(label, j) + spec.noise * normal.Next());
    }
  }
  return data;
}

absl::StatusOr<SyntheticSpec> ParseSyntheticName(std::string_view name) {
  static constexpr char kUsage[] =
      "synthetic dataset names look like "
      "\"synthetic:rows=1000,cols=20,classes=3,separation=3,noise=1,seed=0\" (every key "
      "optional)";
  absl::string_view rest = absl::StripAsciiWhitespace(AV(name));
  SyntheticSpec spec;
  if (rest == "synthetic") return spec;
  if (!absl::ConsumePrefix(&rest, "synthetic:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", AV(name), "' is not a synthetic dataset name; ", kUsage));
  }
  rest = absl::StripAsciiWhitespace(rest);
  std::vector<std::string> seen;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const absl::string_view item = absl::StripAsciiWhitespace(rest.substr(0, comma));
    rest = comma == absl::string_view::npos ? absl::string_view() : rest.substr(comma + 1);
    const size_t equals = item.find('=');
    if (equals == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected key=value in synthetic dataset name, got '", item, "'; ", kUsage));
    }
    const std::string key(absl::StripAsciiWhitespace(item.substr(0, equals)));
    const absl::string_view value = absl::StripAsciiWhitespace(item.substr(equals + 1));
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("key '", key, "' is repeated in synthetic dataset name '", AV(name), "'"));
    }
    seen.push_back(key);
    bool ok = false;
    const char* type = "an integer";
    if (key == "rows") {
      ok = absl::SimpleAtoi(value, &spec.rows);
    } else if (key == "cols") {
      ok = absl::SimpleAtoi(value, &spec.cols);
    } else if (key == "classes") {
      ok = absl::SimpleAtoi(value, &spec.classes);
    } else if (key == "seed") {
      type = "a non-negative 64-bit integer";
      ok = absl::SimpleAtoi(value, &spec.seed);
    } else if (key == "separation" || key == "noise") {
      type = "a finite number";
      double* field = key == "separation" ? &spec.separation : &spec.noise;
      ok = absl::SimpleAtod(value, field) && std::isfinite(*field);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown key '", key,
          "' in synthetic dataset name; known keys are rows, cols, classes, separation, noise "
          "and seed"));
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "synthetic dataset key '", key, "' has value '", value, "'; it must be ", type));
    }
  }
  DRFM_RETURN_IF_ERROR(spec.Validate());
  return spec;
}

std::string SyntheticName(const SyntheticSpec& spec) {
  return absl::StrCat("synthetic:rows=", spec.rows, ",cols=", spec.cols, ",classes=", spec.classes,
                      ",separation=", FormatDouble(spec.separation),
                      ",noise=", FormatDouble(spec.noise), ",seed=", spec.seed);
}

}  // namespace drfm::core
