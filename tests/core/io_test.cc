// Tests of the dataset file readers (core/io.h): round trips through files written to a temp dir,
// gzip via zlib, every malformed-input error, the real Fashion-MNIST files, and the synthetic
// generator. Fixtures are built in the tests, byte by byte, from the format specifications.
#include "core/io.h"

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

// Success when `status` has `code` and its message contains every string of `parts`.
::testing::AssertionResult HasError(const absl::Status& status, absl::StatusCode code,
                                    std::initializer_list<const char*> parts) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected code " << absl::StatusCodeToString(code) << ", got " << status;
  }
  for (const char* part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure()
             << "message \"" << status.message() << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult IsInvalid(const absl::Status& status,
                                     std::initializer_list<const char*> parts = {}) {
  return HasError(status, absl::StatusCode::kInvalidArgument, parts);
}

template <typename T>
::testing::AssertionResult IsInvalid(const absl::StatusOr<T>& result,
                                     std::initializer_list<const char*> parts = {}) {
  return IsInvalid(result.status(), parts);
}

// A path in the test temp dir, unique to the running test.
std::string TempPath(std::string_view file) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(::testing::TempDir(), "drfm_io_test_", info->test_suite_name(), "_",
                      info->name(), "_", std::string(file));
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// `bytes` compressed as one gzip member.
std::string Gzip(std::string_view bytes) {
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  EXPECT_EQ(deflateInit2(&stream, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&stream, bytes.size()) + 64, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

void AppendBigEndian(std::string* out, uint64_t value, int size) {
  for (int i = size - 1; i >= 0; --i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void AppendLittleEndian(std::string* out, uint64_t value, int size) {
  for (int i = 0; i < size; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

template <typename T>
uint64_t BitsOf(T value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

// IDX bytes: the magic for `type`, `dims`, then `values` encoded big-endian as elements of the
// type's size.
std::string IdxBytes(uint8_t type, const std::vector<uint32_t>& dims, const std::string& payload) {
  std::string out = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) AppendBigEndian(&out, d, 4);
  return out + payload;
}

std::string UbytePayload(const std::vector<int>& values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

template <typename T>
std::string BigEndianPayload(const std::vector<T>& values) {
  std::string out;
  for (T v : values) AppendBigEndian(&out, BitsOf(v), sizeof(T));
  return out;
}

template <typename T>
std::string LittleEndianPayload(const std::vector<T>& values) {
  std::string out;
  for (T v : values) AppendLittleEndian(&out, BitsOf(v), sizeof(T));
  return out;
}

// .npy bytes as numpy writes them: magic, version, header length, `dict` padded with spaces and a
// newline to a multiple of 64 bytes, then the payload.
std::string NpyWithHeader(const std::string& dict, const std::string& payload,
                          int major_version = 1) {
  const size_t preamble = major_version == 1 ? 10 : 12;
  std::string header = dict;
  while ((preamble + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major_version));
  out.push_back('\0');
  AppendLittleEndian(&out, header.size(), major_version == 1 ? 2 : 4);
  return out + header + payload;
}

// .npy bytes with the header dict numpy writes for `descr`, `fortran_order` and `shape`.
std::string NpyBytes(std::string_view descr, bool fortran_order, std::string_view shape,
                     const std::string& payload, int major_version = 1) {
  std::string dict = absl::StrCat("{'descr': '", std::string(descr),
                                  "', 'fortran_order': ", fortran_order ? "True" : "False",
                                  ", 'shape': ", std::string(shape), ", }");
  return NpyWithHeader(dict, payload, major_version);
}

RowMatrixF Matrix(int rows, int cols, std::initializer_list<float> values) {
  RowMatrixF m(rows, cols);
  auto it = values.begin();
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) m(i, j) = *it++;
  }
  return m;
}

TEST(GzipTest, RoundTripsDataCompressedByZlib) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data += static_cast<char>(i * 7 % 251);
  absl::StatusOr<std::string> out = Gunzip(Gzip(data));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, data);
}

TEST(GzipTest, JoinsConcatenatedMembersAsGunzipDoes) {
  absl::StatusOr<std::string> out = Gunzip(Gzip("hello, ") + Gzip("world"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "hello, world");
}

TEST(GzipTest, RejectsTruncatedStream) {
  const std::string gz = Gzip(std::string(10000, 'x'));
  for (size_t keep : {size_t{2}, size_t{10}, gz.size() / 2, gz.size() - 1}) {
    EXPECT_TRUE(IsInvalid(Gunzip(gz.substr(0, keep)))) << "kept " << keep << " bytes";
  }
}

TEST(GzipTest, RejectsCorruptStream) {
  std::string gz = Gzip("some text that compresses");
  gz[12] = static_cast<char>(gz[12] ^ 0xff);
  gz[13] = static_cast<char>(gz[13] ^ 0xff);
  EXPECT_TRUE(IsInvalid(Gunzip(gz), {"gzip"}));
}

TEST(GzipTest, RejectsTrailingGarbage) {
  EXPECT_TRUE(IsInvalid(Gunzip(Gzip("abc") + "junk"), {"trailing"}));
}

TEST(GzipTest, RejectsOutputBeyondTheLimit) {
  const std::string gz = Gzip(std::string(1000, 'a'));
  EXPECT_TRUE(IsInvalid(Gunzip(gz, /*max_bytes=*/999), {"limit"}));
  EXPECT_TRUE(Gunzip(gz, /*max_bytes=*/1000).ok());
}

TEST(GzipTest, RejectsDataWithoutTheMagic) {
  EXPECT_FALSE(IsGzip("plain"));
  EXPECT_TRUE(IsInvalid(Gunzip("plain")));
}

TEST(ReadFileBytesTest, ReturnsNotFoundNamingThePath) {
  const std::string path = TempPath("does-not-exist");
  EXPECT_TRUE(HasError(ReadFileBytes(path).status(), absl::StatusCode::kNotFound, {path.c_str()}));
}

TEST(ReadFileBytesTest, GunzipsTransparently) {
  const std::string path = TempPath("data.gz");
  WriteFile(path, Gzip("payload"));
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, "payload");
}

TEST(ReadFileBytesTest, ReadsUncompressedFilesAsTheyAre) {
  const std::string path = TempPath("data.bin");
  const std::string data("\0\x01\x02 raw", 7);
  WriteFile(path, data);
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, data);
}

TEST(ReadFileBytesTest, RejectsADirectory) {
  EXPECT_TRUE(IsInvalid(ReadFileBytes(::testing::TempDir()), {"directory"}));
}

TEST(ReadFileBytesTest, RejectsFilesBeyondTheLimit) {
  const std::string path = TempPath("big");
  WriteFile(path, std::string(100, 'x'));
  EXPECT_TRUE(IsInvalid(ReadFileBytes(path, /*max_bytes=*/99), {"limit"}));
  const std::string gz_path = TempPath("big.gz");
  WriteFile(gz_path, Gzip(std::string(100, 'x')));
  EXPECT_TRUE(IsInvalid(ReadFileBytes(gz_path, /*max_bytes=*/99), {"limit"}));
}

TEST(IdxTest, ScalesUbyteImagesToTheUnitIntervalAndFlattensTrailingDims) {
  const std::string bytes = IdxBytes(0x08, {2, 2, 2}, UbytePayload({0, 255, 51, 102, 1, 2, 3, 4}));
  absl::StatusOr<RowMatrixF> m = ParseIdxFeatures(bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows(), 2);
  ASSERT_EQ(m->cols(), 4);
  EXPECT_EQ((*m)(0, 0), 0.0f);
  EXPECT_EQ((*m)(0, 1), 1.0f);
  EXPECT_FLOAT_EQ((*m)(0, 2), 0.2f);
  EXPECT_FLOAT_EQ((*m)(1, 3), 4.0f / 255.0f);
}

TEST(IdxTest, ConvertsEveryOtherTypeAsIs) {
  const RowMatrixF expected = Matrix(2, 2, {-1, 2, -3, 4});
  const std::vector<std::string> files = {
      IdxBytes(0x09, {2, 2}, UbytePayload({-1, 2, -3, 4})),
      IdxBytes(0x0B, {2, 2}, BigEndianPayload<int16_t>({-1, 2, -3, 4})),
      IdxBytes(0x0C, {2, 2}, BigEndianPayload<int32_t>({-1, 2, -3, 4})),
      IdxBytes(0x0D, {2, 2}, BigEndianPayload<float>({-1, 2, -3, 4})),
      IdxBytes(0x0E, {2, 2}, BigEndianPayload<double>({-1, 2, -3, 4})),
  };
  for (const std::string& bytes : files) {
    absl::StatusOr<RowMatrixF> m = ParseIdxFeatures(bytes);
    ASSERT_TRUE(m.ok()) << "type 0x" << std::hex << int{bytes[2]} << ": " << m.status();
    EXPECT_EQ(*m, expected) << "type 0x" << std::hex << int{bytes[2]};
  }
}

TEST(IdxTest, TreatsOneDimensionalDataAsOneColumn) {
  absl::StatusOr<RowMatrixF> m =
      ParseIdxFeatures(IdxBytes(0x0D, {3}, BigEndianPayload<float>({1, 2, 3})));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, Matrix(3, 1, {1, 2, 3}));
}

TEST(IdxTest, ParsesIntegerLabelsOfEveryIntegerType) {
  const std::vector<int32_t> expected = {3, 0, 9};
  for (const std::string& bytes :
       {IdxBytes(0x08, {3}, UbytePayload({3, 0, 9})), IdxBytes(0x09, {3}, UbytePayload({3, 0, 9})),
        IdxBytes(0x0B, {3}, BigEndianPayload<int16_t>({3, 0, 9})),
        IdxBytes(0x0C, {3}, BigEndianPayload<int32_t>({3, 0, 9}))}) {
    absl::StatusOr<std::vector<int32_t>> labels = ParseIdxLabels(bytes);
    ASSERT_TRUE(labels.ok()) << labels.status();
    EXPECT_EQ(*labels, expected);
  }
}

TEST(IdxTest, RejectsNegativeLabelsNamingTheRow) {
  EXPECT_TRUE(
      IsInvalid(ParseIdxLabels(IdxBytes(0x09, {3}, UbytePayload({1, -2, 0}))), {"row 1", "-2"}));
}

TEST(IdxTest, RejectsFloatingPointOrMultiDimensionalLabels) {
  EXPECT_TRUE(IsInvalid(ParseIdxLabels(IdxBytes(0x0D, {1}, BigEndianPayload<float>({1}))),
                        {"integer type"}));
  EXPECT_TRUE(
      IsInvalid(ParseIdxLabels(IdxBytes(0x08, {2, 1}, UbytePayload({1, 2}))), {"1-dimensional"}));
}

TEST(IdxTest, RejectsTruncatedPayload) {
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x08, {2, 3}, UbytePayload({1, 2, 3, 4, 5}))),
                        {"truncated", "6 bytes", "found 5"}));
}

TEST(IdxTest, RejectsTrailingBytes) {
  EXPECT_TRUE(
      IsInvalid(ParseIdxFeatures(IdxBytes(0x08, {2}, UbytePayload({1, 2, 3}))), {"trailing"}));
}

TEST(IdxTest, RejectsMalformedHeaders) {
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(""), {"4-byte"}));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(std::string("\x01\0\x08\x01", 4)), {"magic"}));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x0A, {1}, "x")), {"unknown IDX element type"}));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x08, {}, "")), {"0 dimensions"}));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x08, {2, 2}, "").substr(0, 9)),
                        {"header is truncated"}));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x08, {2, 0}, "")), {"dimension 1", "is 0"}));
}

TEST(IdxTest, RejectsDimensionsWhoseProductOverflows) {
  const std::string bytes =
      IdxBytes(0x0E, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, std::string(64, '\0'));
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(bytes), {"truncated"}));
}

TEST(IdxTest, RejectsNanAndInfNamingRowAndColumn) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(
      IsInvalid(ParseIdxFeatures(IdxBytes(0x0D, {2, 2}, BigEndianPayload<float>({1, 2, 3, nan}))),
                {"row 1, column 1"}));
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(
      IsInvalid(ParseIdxFeatures(IdxBytes(0x0E, {2, 2}, BigEndianPayload<double>({1, -inf, 3, 4}))),
                {"row 0, column 1"}));
  // Finite as a double, infinite as a float.
  EXPECT_TRUE(IsInvalid(ParseIdxFeatures(IdxBytes(0x0E, {1, 1}, BigEndianPayload<double>({1e300}))),
                        {"row 0, column 0"}));
}

TEST(IdxTest, ReadsGzippedAndPlainFiles) {
  const std::string bytes = IdxBytes(0x08, {2, 1}, UbytePayload({0, 255}));
  const std::string gz_path = TempPath("images.gz");
  const std::string plain_path = TempPath("images");
  WriteFile(gz_path, Gzip(bytes));
  WriteFile(plain_path, bytes);
  for (const std::string& path : {gz_path, plain_path}) {
    absl::StatusOr<RowMatrixF> m = ReadIdxFeatures(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(*m, Matrix(2, 1, {0, 1}));
  }
}

TEST(IdxTest, PrefixesFileErrorsWithThePath) {
  const std::string path = TempPath("broken");
  WriteFile(path, IdxBytes(0x08, {4}, UbytePayload({1})));
  EXPECT_TRUE(IsInvalid(ReadIdxLabels(path), {path.c_str(), "truncated"}));
}

TEST(NpyTest, ParsesFloat32InEveryFormatVersion) {
  const std::string payload = LittleEndianPayload<float>({1, 2, 3, 4, 5, 6});
  for (int version : {1, 2, 3}) {
    absl::StatusOr<RowMatrixF> m =
        ParseNpyFeatures(NpyBytes("<f4", false, "(2, 3)", payload, version));
    ASSERT_TRUE(m.ok()) << "version " << version << ": " << m.status();
    EXPECT_EQ(*m, Matrix(2, 3, {1, 2, 3, 4, 5, 6}));
  }
}

TEST(NpyTest, ConvertsEveryNumericDtype) {
  const RowMatrixF expected = Matrix(2, 2, {1, 2, 3, 100});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"<f8", LittleEndianPayload<double>({1, 2, 3, 100})},
      {"|i1", LittleEndianPayload<int8_t>({1, 2, 3, 100})},
      {"<i2", LittleEndianPayload<int16_t>({1, 2, 3, 100})},
      {"<i4", LittleEndianPayload<int32_t>({1, 2, 3, 100})},
      {"<i8", LittleEndianPayload<int64_t>({1, 2, 3, 100})},
      {"<u2", LittleEndianPayload<uint16_t>({1, 2, 3, 100})},
      {"<u4", LittleEndianPayload<uint32_t>({1, 2, 3, 100})},
      {"<u8", LittleEndianPayload<uint64_t>({1, 2, 3, 100})},
      {">f4", BigEndianPayload<float>({1, 2, 3, 100})},
      {">f8", BigEndianPayload<double>({1, 2, 3, 100})},
      {">i4", BigEndianPayload<int32_t>({1, 2, 3, 100})},
      {">u2", BigEndianPayload<uint16_t>({1, 2, 3, 100})},
      {"=i8", LittleEndianPayload<int64_t>({1, 2, 3, 100})},
  };
  for (const auto& [descr, payload] : cases) {
    absl::StatusOr<RowMatrixF> m = ParseNpyFeatures(NpyBytes(descr, false, "(2, 2)", payload));
    ASSERT_TRUE(m.ok()) << descr << ": " << m.status();
    EXPECT_EQ(*m, expected) << descr;
  }
}

TEST(NpyTest, ScalesUint8ToTheUnitInterval) {
  absl::StatusOr<RowMatrixF> m =
      ParseNpyFeatures(NpyBytes("|u1", false, "(1, 3)", UbytePayload({0, 51, 255})));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)(0, 0), 0.0f);
  EXPECT_FLOAT_EQ((*m)(0, 1), 0.2f);
  EXPECT_EQ((*m)(0, 2), 1.0f);
}

TEST(NpyTest, ShapesOneDimensionalAsAColumnAndFlattensTrailingDims) {
  absl::StatusOr<RowMatrixF> column =
      ParseNpyFeatures(NpyBytes("<f4", false, "(3,)", LittleEndianPayload<float>({1, 2, 3})));
  ASSERT_TRUE(column.ok()) << column.status();
  EXPECT_EQ(*column, Matrix(3, 1, {1, 2, 3}));
  std::vector<float> values(24);
  for (int i = 0; i < 24; ++i) values[i] = static_cast<float>(i);
  absl::StatusOr<RowMatrixF> flat =
      ParseNpyFeatures(NpyBytes("<f4", false, "(2, 3, 4)", LittleEndianPayload(values)));
  ASSERT_TRUE(flat.ok()) << flat.status();
  ASSERT_EQ(flat->rows(), 2);
  ASSERT_EQ(flat->cols(), 12);
  EXPECT_EQ((*flat)(1, 5), 17.0f);
}

TEST(NpyTest, TransposesFortranOrder) {
  // The 2 x 3 matrix [[1 2 3] [4 5 6]] stored column by column.
  absl::StatusOr<RowMatrixF> m = ParseNpyFeatures(
      NpyBytes("<f4", true, "(2, 3)", LittleEndianPayload<float>({1, 4, 2, 5, 3, 6})));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, Matrix(2, 3, {1, 2, 3, 4, 5, 6}));
}

TEST(NpyTest, TransposesThreeDimensionalFortranOrder) {
  // Element (i, j, k) of shape (2, 3, 4) has value 100i + 10j + k; Fortran order stores i fastest.
  std::vector<float> fortran;
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 3; ++j) {
      for (int i = 0; i < 2; ++i) fortran.push_back(static_cast<float>(100 * i + 10 * j + k));
    }
  }
  absl::StatusOr<RowMatrixF> m =
      ParseNpyFeatures(NpyBytes("<f4", true, "(2, 3, 4)", LittleEndianPayload(fortran)));
  ASSERT_TRUE(m.ok()) << m.status();
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 4; ++k) {
        EXPECT_EQ((*m)(i, 4 * j + k), 100.0f * i + 10.0f * j + k) << i << "," << j << "," << k;
      }
    }
  }
}

TEST(NpyTest, AcceptsPython2LongShapesAndDoubleQuotes) {
  const std::string dict = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L, 1L)}";
  absl::StatusOr<RowMatrixF> m =
      ParseNpyFeatures(NpyWithHeader(dict, LittleEndianPayload<float>({1, 2})));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, Matrix(2, 1, {1, 2}));
}

TEST(NpyTest, ParsesLabelsOfAnyIntegerDtypeAsAVectorOrAColumn) {
  const std::vector<int32_t> expected = {2, 0, 1};
  const std::vector<std::string> files = {
      NpyBytes("<i8", false, "(3,)", LittleEndianPayload<int64_t>({2, 0, 1})),
      NpyBytes("<i4", false, "(3, 1)", LittleEndianPayload<int32_t>({2, 0, 1})),
      NpyBytes("|u1", false, "(3,)", UbytePayload({2, 0, 1})),
      NpyBytes(">u4", false, "(3,)", BigEndianPayload<uint32_t>({2, 0, 1})),
      NpyBytes("<u8", true, "(3, 1)", LittleEndianPayload<uint64_t>({2, 0, 1})),
  };
  for (const std::string& bytes : files) {
    absl::StatusOr<std::vector<int32_t>> labels = ParseNpyLabels(bytes);
    ASSERT_TRUE(labels.ok()) << labels.status();
    EXPECT_EQ(*labels, expected);
  }
}

TEST(NpyTest, RejectsLabelsOutsideInt32OrNegativeNamingTheRow) {
  EXPECT_TRUE(IsInvalid(
      ParseNpyLabels(NpyBytes("<i8", false, "(2,)", LittleEndianPayload<int64_t>({0, 1LL << 31}))),
      {"row 1", "int32"}));
  EXPECT_TRUE(IsInvalid(
      ParseNpyLabels(NpyBytes("<i2", false, "(2,)", LittleEndianPayload<int16_t>({-1, 0}))),
      {"row 0", "non-negative"}));
}

TEST(NpyTest, RejectsFloatLabelsAndOtherShapes) {
  EXPECT_TRUE(
      IsInvalid(ParseNpyLabels(NpyBytes("<f8", false, "(2,)", LittleEndianPayload<double>({0, 1}))),
                {"integer dtype"}));
  EXPECT_TRUE(IsInvalid(
      ParseNpyLabels(NpyBytes("<i4", false, "(1, 2)", LittleEndianPayload<int32_t>({0, 1}))),
      {"(n,) or (n, 1)"}));
}

TEST(NpyTest, RejectsMalformedPreambles) {
  const std::string good = NpyBytes("<f4", false, "(1,)", LittleEndianPayload<float>({1}));
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(good.substr(0, 9)), {"10"}));
  std::string bad_magic = good;
  bad_magic[1] = 'X';
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(bad_magic), {"magic"}));
  std::string bad_version = good;
  bad_version[6] = 4;
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(bad_version), {"version 4.0"}));
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(good.substr(0, 40)), {"header is truncated"}));
}

TEST(NpyTest, RejectsMalformedHeaderDicts) {
  const std::string payload = LittleEndianPayload<float>({1});
  const std::vector<std::pair<std::string, const char*>> cases = {
      {"", "expected '{'"},
      {"{'descr': '<f4', 'shape': (1,)}", "'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "malformed"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}", "non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
       "too large"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing", "after the header"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured"},
  };
  for (const auto& [dict, message] : cases) {
    EXPECT_TRUE(IsInvalid(ParseNpyFeatures(NpyWithHeader(dict, payload)), {message})) << dict;
  }
}

TEST(NpyTest, RejectsUnsupportedDtypesNamingThem) {
  for (const char* descr : {"<f2", "<c8", "|b1", "<U3", "|O", "<M8[ns]", "", "<f4x"}) {
    EXPECT_TRUE(IsInvalid(ParseNpyFeatures(NpyBytes(descr, false, "(1,)", std::string(4, '\0'))),
                          {"unsupported .npy dtype"}))
        << descr;
  }
}

TEST(NpyTest, RejectsPayloadsThatDisagreeWithTheShape) {
  EXPECT_TRUE(IsInvalid(
      ParseNpyFeatures(NpyBytes("<f4", false, "(2, 2)", LittleEndianPayload<float>({1, 2, 3}))),
      {"truncated"}));
  EXPECT_TRUE(IsInvalid(
      ParseNpyFeatures(NpyBytes("<f4", false, "(1, 2)", LittleEndianPayload<float>({1, 2, 3}))),
      {"trailing"}));
  EXPECT_TRUE(IsInvalid(
      ParseNpyFeatures(NpyBytes("<f4", false, "(4294967296, 4294967296, 4294967296)", "")),
      {"truncated"}));
}

TEST(NpyTest, RejectsScalarsAndEmptyArrays) {
  EXPECT_TRUE(IsInvalid(
      ParseNpyFeatures(NpyBytes("<f4", false, "()", LittleEndianPayload<float>({1}))), {"0-d"}));
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(NpyBytes("<f4", false, "(0, 3)", "")), {"is 0"}));
}

TEST(NpyTest, RejectsNanAndInfNamingRowAndColumn) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(IsInvalid(ParseNpyFeatures(NpyBytes("<f4", false, "(2, 2)",
                                                  LittleEndianPayload<float>({1, 2, inf, 4}))),
                        {"row 1, column 0"}));
  // In Fortran order the reported position is the logical one, not the storage offset.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(
      IsInvalid(ParseNpyFeatures(NpyBytes("<f8", true, "(2, 3)",
                                          LittleEndianPayload<double>({1, nan, 2, 3, 4, 5}))),
                {"row 1, column 0"}));
}

TEST(NpyTest, ReadsGzippedFiles) {
  const std::string path = TempPath("x.npy.gz");
  WriteFile(path, Gzip(NpyBytes("<f8", false, "(1, 2)", LittleEndianPayload<double>({0.5, 2}))));
  absl::StatusOr<RowMatrixF> m = ReadNpyFeatures(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, Matrix(1, 2, {0.5, 2}));
}

TEST(CsvTest, ReadsAHeaderAndTheLastColumnAsLabels) {
  absl::StatusOr<Dataset> data = ParseCsvDataset("a,b,label\n1,2.5,0\n-3,4e1,2\n", kLastColumn);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->features, Matrix(2, 2, {1, 2.5, -3, 40}));
  EXPECT_EQ(data->labels, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(data->num_classes, 3);
}

TEST(CsvTest, ReadsALabelColumnChosenByIndexWithoutAHeader) {
  absl::StatusOr<Dataset> data = ParseCsvDataset("1,0.5,7\n0,1.5,8\n", 0);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->features, Matrix(2, 2, {0.5, 7, 1.5, 8}));
  EXPECT_EQ(data->labels, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(data->num_classes, 2);
}

TEST(CsvTest, ToleratesWhitespaceCrlfBomBlankLinesAndQuotes) {
  absl::StatusOr<Dataset> data = ParseCsvDataset(
      "\xEF\xBB\xBF\"x\", \"y\" ,\"class\"\r\n\r\n  1 ,\t2, 1 \r\n\n\"3\",4,0\r\n\n", kLastColumn);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->features, Matrix(2, 2, {1, 2, 3, 4}));
  EXPECT_EQ(data->labels, (std::vector<int32_t>{1, 0}));
}

TEST(CsvTest, AcceptsIntegralDecimalLabels) {
  absl::StatusOr<Dataset> data = ParseCsvDataset("1,2.0\n2,0.0\n", kLastColumn);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->labels, (std::vector<int32_t>{2, 0}));
}

TEST(CsvTest, RejectsRaggedRowsNamingTheLine) {
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("a,b,c\n1,2,0\n\n1,2\n", kLastColumn),
                        {"line 4 has 2 fields", "line 1 has 3"}));
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures("1,2\n3,4,5\n"), {"line 2"}));
}

TEST(CsvTest, RejectsLabelColumnsOutOfRange) {
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,2,0\n", 3), {"label column 3", "3 fields"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,2,0\n", -2), {"label column -2"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("0\n1\n", kLastColumn), {"at least one feature"}));
}

TEST(CsvTest, RejectsLabelsThatAreNotNonNegativeIntegers) {
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,0\n2,1.5\n", kLastColumn),
                        {"line 2, column 1", "not an integer"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,-1\n", kLastColumn), {"line 1", "out of range"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,3000000000\n", kLastColumn), {"out of range"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("1,0\n2,\n", kLastColumn), {"line 2", "not an integer"}));
}

TEST(CsvTest, RejectsNonNumericOrEmptyFeaturesNamingLineAndColumn) {
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("x,y\n1,0\nabc,1\n", kLastColumn),
                        {"line 3, column 0", "'abc' is not a number"}));
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures("1,2,3\n4,,6\n"), {"line 2, column 1", "empty"}));
}

TEST(CsvTest, RejectsNanInfAndValuesBeyondFloatRange) {
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures("1,2\n3,nan\n"), {"line 2, column 1", "finite"}));
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures("1,-inf\n"), {"line 1, column 1", "finite"}));
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures("1e39,2\n"), {"line 1, column 0", "finite"}));
}

TEST(CsvTest, RejectsInputWithoutDataRows) {
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures(""), {"no rows"}));
  EXPECT_TRUE(IsInvalid(ParseCsvFeatures(" \n\r\n"), {"no rows"}));
  EXPECT_TRUE(IsInvalid(ParseCsvDataset("a,label\n", kLastColumn), {"no data rows"}));
}

TEST(CsvTest, ReadsFeaturesOnlyAndLabelsOnly) {
  absl::StatusOr<RowMatrixF> features = ParseCsvFeatures("f0,f1\n1,2\n3,4\n");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(*features, Matrix(2, 2, {1, 2, 3, 4}));
  absl::StatusOr<std::vector<int32_t>> labels = ParseCsvLabels("label\n1\n0\n2\n");
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_EQ(*labels, (std::vector<int32_t>{1, 0, 2}));
  EXPECT_TRUE(IsInvalid(ParseCsvLabels("1,2\n"), {"one label per line"}));
}

TEST(CsvTest, ReadsGzippedFilesAndNamesTheDatasetAfterThePath) {
  const std::string path = TempPath("data.csv.gz");
  WriteFile(path, Gzip("1,2,1\n3,4,0\n"));
  absl::StatusOr<Dataset> data = ReadCsvDataset(path, kLastColumn);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->name, path);
  EXPECT_EQ(data->rows(), 2);
  EXPECT_TRUE(ValidateTrainingSet(*data).ok());
}

TEST(SniffTest, DetectsEachFormat) {
  EXPECT_EQ(SniffFormat(NpyBytes("<f4", false, "(1,)", LittleEndianPayload<float>({1}))),
            DataFormat::kNpy);
  EXPECT_EQ(SniffFormat(IdxBytes(0x08, {1}, "x")), DataFormat::kIdx);
  EXPECT_EQ(SniffFormat("1,2,3\n"), DataFormat::kCsv);
  EXPECT_EQ(SniffFormat(""), DataFormat::kCsv);
  EXPECT_EQ(DataFormatName(DataFormat::kIdx), "idx");
}

TEST(SniffTest, ParsesAnyFormatGzippedOrNot) {
  const RowMatrixF expected = Matrix(2, 1, {0, 1});
  for (const std::string& bytes :
       {NpyBytes("|u1", false, "(2,)", UbytePayload({0, 255})),
        IdxBytes(0x08, {2, 1}, UbytePayload({0, 255})), std::string("v\n0\n1\n")}) {
    for (const std::string& variant : {bytes, Gzip(bytes)}) {
      absl::StatusOr<RowMatrixF> m = ParseFeatures(variant);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(*m, expected);
    }
  }
}

TEST(SniffTest, ReadsLabelsFromFilesOfAnyFormat) {
  const std::vector<std::pair<std::string, std::string>> files = {
      {"labels.npy", NpyBytes("<i8", false, "(2,)", LittleEndianPayload<int64_t>({1, 0}))},
      {"labels.idx.gz", Gzip(IdxBytes(0x08, {2}, UbytePayload({1, 0})))},
      {"labels.csv", "1\n0\n"},
  };
  for (const auto& [name, bytes] : files) {
    const std::string path = TempPath(name);
    WriteFile(path, bytes);
    absl::StatusOr<std::vector<int32_t>> labels = ReadLabels(path);
    ASSERT_TRUE(labels.ok()) << name << ": " << labels.status();
    EXPECT_EQ(*labels, (std::vector<int32_t>{1, 0})) << name;
  }
}

TEST(SniffTest, ReportsABrokenIdxFileAsIdxRatherThanCsv) {
  EXPECT_TRUE(IsInvalid(ParseFeatures(IdxBytes(0x08, {5, 5}, "abc")), {"IDX", "truncated"}));
}

// Every prefix and many random corruptions of valid files must give a Status, never a crash (a
// deterministic stand-in for the fuzzers these parsers will meet).
TEST(RobustnessTest, SurvivesTruncationAndCorruptionOfEveryFormat) {
  const std::vector<std::string> seeds = {
      NpyBytes("<f4", true, "(2, 3)", LittleEndianPayload<float>({1, 2, 3, 4, 5, 6})),
      NpyBytes("<i8", false, "(3,)", LittleEndianPayload<int64_t>({2, 0, 1}), 2),
      IdxBytes(0x08, {2, 2, 2}, UbytePayload({0, 1, 2, 3, 4, 5, 6, 7})),
      IdxBytes(0x0E, {2}, BigEndianPayload<double>({1, 2})),
      "a,b,label\n1,2,0\n3,4,1\n",
  };
  std::mt19937_64 rng(1234);
  for (const std::string& seed : seeds) {
    std::vector<std::string> inputs;
    for (size_t n = 0; n <= seed.size(); ++n) inputs.push_back(seed.substr(0, n));
    for (int trial = 0; trial < 300; ++trial) {
      std::string corrupt = seed;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        corrupt[rng() % corrupt.size()] = static_cast<char>(rng() & 0xff);
      }
      inputs.push_back(corrupt);
    }
    inputs.push_back(Gzip(seed).substr(0, 20));
    for (const std::string& input : inputs) {
      (void)ParseFeatures(input);
      (void)ParseLabels(input);
      (void)ParseCsvDataset(input, kLastColumn);
      (void)ParseCsvDataset(input, 1);
    }
  }
}

TEST(FashionMnistTest, LoadsTheRealTrainAndTestSets) {
  if (!std::filesystem::exists(kFashionMnistDir)) {
    GTEST_SKIP() << kFashionMnistDir << " is missing; install dataset-fashion-mnist";
  }
  for (const auto& [split, rows] : {std::pair<const char*, int64_t>{"train", 60000},
                                    std::pair<const char*, int64_t>{"test", 10000}}) {
    absl::StatusOr<Dataset> data = LoadFashionMnist(kFashionMnistDir, split);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(data->name, absl::StrCat("fashion-mnist:", split));
    EXPECT_EQ(data->rows(), rows);
    EXPECT_EQ(data->cols(), 784);
    EXPECT_EQ(data->num_classes, 10);
    EXPECT_GE(data->features.minCoeff(), 0.0f);
    EXPECT_LE(data->features.maxCoeff(), 1.0f);
    EXPECT_EQ(data->features.maxCoeff(), 1.0f);  // some pixel is saturated
    std::vector<int64_t> counts(10, 0);
    for (int32_t label : data->labels) ++counts[label];
    for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c], rows / 10) << split << " class " << c;
    EXPECT_TRUE(ValidateTrainingSet(*data).ok());
  }
}

TEST(FashionMnistTest, LoadsUncompressedFilesFromAnotherDirectory) {
  const std::string dir = TempPath("fmnist");
  std::filesystem::create_directories(dir);
  std::string pixels(2 * 784, '\0');
  pixels[5] = static_cast<char>(255);
  WriteFile(dir + "/t10k-images-idx3-ubyte", IdxBytes(0x08, {2, 28, 28}, pixels));
  WriteFile(dir + "/t10k-labels-idx1-ubyte", IdxBytes(0x08, {2}, UbytePayload({9, 0})));
  absl::StatusOr<Dataset> data = LoadFashionMnist(dir, "test");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->rows(), 2);
  EXPECT_EQ(data->features(0, 5), 1.0f);
  EXPECT_EQ(data->labels, (std::vector<int32_t>{9, 0}));
}

TEST(FashionMnistTest, RejectsLabelsOutsideTheTenClassesAndMismatchedCounts) {
  const std::string dir = TempPath("fmnist");
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/train-images-idx3-ubyte", IdxBytes(0x08, {2, 28, 28}, std::string(1568, '\0')));
  WriteFile(dir + "/train-labels-idx1-ubyte", IdxBytes(0x08, {2}, UbytePayload({10, 0})));
  EXPECT_TRUE(IsInvalid(LoadFashionMnist(dir, "train"), {"row 0", "[0, 10)"}));
  WriteFile(dir + "/train-labels-idx1-ubyte", IdxBytes(0x08, {3}, UbytePayload({1, 0, 2})));
  EXPECT_TRUE(IsInvalid(LoadFashionMnist(dir, "train"), {"2 images", "3 labels"}));
}

TEST(FashionMnistTest, ReturnsNotFoundWithAnInstallHint) {
  const std::string dir = TempPath("empty");
  std::filesystem::create_directories(dir);
  EXPECT_TRUE(HasError(LoadFashionMnist(dir, "train").status(), absl::StatusCode::kNotFound,
                       {dir.c_str(), "train-images-idx3-ubyte", "dataset-fashion-mnist"}));
}

TEST(FashionMnistTest, RejectsAnUnknownSplit) {
  EXPECT_TRUE(IsInvalid(LoadFashionMnist(kFashionMnistDir, "validation"), {"validation"}));
}

TEST(SyntheticTest, IsDeterministicForASeed) {
  SyntheticSpec spec;
  spec.rows = 200;
  spec.cols = 7;
  spec.seed = 42;
  absl::StatusOr<Dataset> a = MakeSynthetic(spec);
  absl::StatusOr<Dataset> b = MakeSynthetic(spec);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->features, b->features);
  EXPECT_EQ(a->labels, b->labels);
  EXPECT_EQ(a->name, "synthetic:rows=200,cols=7,classes=3,separation=3,noise=1,seed=42");
}

TEST(SyntheticTest, DiffersForAnotherSeed) {
  SyntheticSpec spec;
  absl::StatusOr<Dataset> a = MakeSynthetic(spec);
  spec.seed = 1;
  absl::StatusOr<Dataset> b = MakeSynthetic(spec);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->features, b->features);
  EXPECT_NE(a->name, b->name);
}

TEST(SyntheticTest, HasBalancedClassesAndIsAValidTrainingSet) {
  SyntheticSpec spec;
  spec.rows = 1001;
  spec.classes = 4;
  absl::StatusOr<Dataset> data = MakeSynthetic(spec);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_classes, 4);
  std::vector<int> counts(4, 0);
  for (int32_t label : data->labels) ++counts[label];
  EXPECT_EQ(counts, (std::vector<int>{251, 250, 250, 250}));
  EXPECT_TRUE(ValidateTrainingSet(*data).ok());
}

TEST(SyntheticTest, PutsNoiselessSamplesOnClassMeansOfNormSeparation) {
  SyntheticSpec spec;
  spec.rows = 6;
  spec.cols = 50;
  spec.separation = 2.5;
  spec.noise = 0;
  absl::StatusOr<Dataset> data = MakeSynthetic(spec);
  ASSERT_TRUE(data.ok()) << data.status();
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(data->features.row(i).norm(), 2.5, 1e-5);
    EXPECT_EQ(data->features.row(i), data->features.row(i % 3));
  }
  EXPECT_NE(data->features.row(0), data->features.row(1));
}

TEST(SyntheticTest, SeparatesClassesWhenSeparationDominatesNoise) {
  SyntheticSpec spec;
  spec.rows = 300;
  spec.cols = 10;
  spec.separation = 20;
  spec.noise = 1;
  absl::StatusOr<Dataset> data = MakeSynthetic(spec);
  ASSERT_TRUE(data.ok()) << data.status();
  // Nearest class mean (estimated from the data) recovers every label.
  RowMatrixF means = RowMatrixF::Zero(3, 10);
  for (int i = 0; i < 300; ++i) means.row(data->labels[i]) += data->features.row(i) / 100.0f;
  for (int i = 0; i < 300; ++i) {
    Eigen::Index nearest;
    (means.rowwise() - data->features.row(i)).rowwise().squaredNorm().minCoeff(&nearest);
    EXPECT_EQ(nearest, data->labels[i]) << "row " << i;
  }
}

TEST(SyntheticTest, ParsesANameWithEveryKey) {
  absl::StatusOr<SyntheticSpec> spec =
      ParseSyntheticName("synthetic:rows=1000,cols=20,classes=3,separation=3,noise=1,seed=7");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->rows, 1000);
  EXPECT_EQ(spec->cols, 20);
  EXPECT_EQ(spec->classes, 3);
  EXPECT_EQ(spec->separation, 3.0);
  EXPECT_EQ(spec->noise, 1.0);
  EXPECT_EQ(spec->seed, 7u);
}

TEST(SyntheticTest, KeepsDefaultsForOmittedKeys) {
  const SyntheticSpec defaults;
  for (const char* name : {"synthetic", "synthetic:", " synthetic:seed=0 "}) {
    absl::StatusOr<SyntheticSpec> spec = ParseSyntheticName(name);
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status();
    EXPECT_EQ(SyntheticName(*spec), SyntheticName(defaults)) << name;
  }
  absl::StatusOr<SyntheticSpec> spec = ParseSyntheticName("synthetic: classes = 5 , noise=0.25");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->classes, 5);
  EXPECT_EQ(spec->noise, 0.25);
  EXPECT_EQ(spec->rows, defaults.rows);
}

TEST(SyntheticTest, NameRoundTripsThroughTheParser) {
  SyntheticSpec spec;
  spec.rows = 123;
  spec.cols = 4;
  spec.classes = 7;
  spec.separation = 0.1;
  spec.noise = 1.0 / 3.0;
  spec.seed = 18446744073709551615u;
  absl::StatusOr<SyntheticSpec> parsed = ParseSyntheticName(SyntheticName(spec));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->separation, spec.separation);
  EXPECT_EQ(parsed->noise, spec.noise);
  EXPECT_EQ(parsed->seed, spec.seed);
  EXPECT_EQ(SyntheticName(*parsed), SyntheticName(spec));
}

TEST(SyntheticTest, RejectsBadNames) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"synth:rows=10", "not a synthetic dataset name"},
      {"synthetic:rows=10,color=red", "unknown key 'color'"},
      {"synthetic:rows=ten", "'rows' has value 'ten'"},
      {"synthetic:rows=1.5", "'rows'"},
      {"synthetic:seed=-1", "'seed'"},
      {"synthetic:noise=nan", "'noise'"},
      {"synthetic:separation=1e999", "'separation'"},
      {"synthetic:rows=10,rows=20", "repeated"},
      {"synthetic:rows", "key=value"},
      {"synthetic:rows=10,,cols=2", "key=value"},
  };
  for (const auto& [name, message] : cases) {
    EXPECT_TRUE(IsInvalid(ParseSyntheticName(name), {message})) << name;
  }
}

TEST(SyntheticTest, RejectsAbsurdSizes) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"synthetic:rows=0", "rows"},
      {"synthetic:cols=0", "cols"},
      {"synthetic:rows=100000,cols=100000", "limit"},
      {"synthetic:rows=9223372036854775807,cols=9223372036854775807", "limit"},
      {"synthetic:classes=1", "classes"},
      {"synthetic:classes=100000", "classes"},
      {"synthetic:rows=5,classes=6", "every class"},
      {"synthetic:noise=-1", "noise"},
      {"synthetic:separation=-0.5", "separation"},
  };
  for (const auto& [name, message] : cases) {
    EXPECT_TRUE(IsInvalid(ParseSyntheticName(name), {message})) << name;
  }
  SyntheticSpec spec;
  spec.rows = -1;
  EXPECT_TRUE(IsInvalid(MakeSynthetic(spec), {"rows"}));
}

}  // namespace
}  // namespace drfm::core
