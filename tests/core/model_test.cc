// Tests of the trained layer stack (core/model.h): the native format round trips bit for bit and
// rejects every corruption with a Status (never a crash), prediction reproduces the fit's own
// readout accuracy, input checks, representations, the safetensors export (parsed here from its
// specification) and the config <-> JSON round trip. Models are small fits on synthetic data.
#include "core/model.h"

#include <omp.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/fit.h"
#include "core/io.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

using Json = nlohmann::json;

constexpr int kLayers = 2;
constexpr int kTrainRows = 300;
constexpr int kTestRows = 100;
constexpr int kCols = 20;
constexpr int kClasses = 3;

// Layout of the native format (model.h): magic, u32 version, u32 reserved, u64 header length,
// header, u64 data length, data, u32 CRC-32 of everything before it.
constexpr size_t kVersionOffset = 8;
constexpr size_t kHeaderLenOffset = 16;
constexpr size_t kHeaderOffset = 24;

::testing::AssertionResult HasError(const absl::Status& status, absl::StatusCode code,
                                    std::initializer_list<const char*> parts = {}) {
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

// The codes Deserialize documents for a damaged file.
::testing::AssertionResult IsCorruptionError(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kDataLoss ||
      status.code() == absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "expected DataLoss or InvalidArgument, got " << status;
}

// The value, or an abort naming the error: for fixtures that every test needs.
template <typename T>
T ValueOrDie(absl::StatusOr<T> result) {
  if (!result.ok()) {
    std::fprintf(stderr, "fixture failed: %s\n", result.status().ToString().c_str());
    std::abort();
  }
  return *std::move(result);
}

struct Variant {
  const char* name;
  Precision precision;
  FeatureMapType feature_map;
  int width;  // cosine 0 = the input dimension
};

const Variant kVariants[] = {
    {"Float32Relu", Precision::kFloat32, FeatureMapType::kRelu, 64},
    {"Float64Relu", Precision::kFloat64, FeatureMapType::kRelu, 64},
    {"Float32CosineInputWidth", Precision::kFloat32, FeatureMapType::kCosine, 0},
};

// Names the variant in test output (instead of its bytes).
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

FitConfig ConfigFor(const Variant& v) {
  FitConfig config;
  config.layers = kLayers;
  config.width = v.width;
  config.feature_map = v.feature_map;
  config.precision = v.precision;
  config.seed = 7;
  return config;
}

// One Gaussian mixture split into train (first kTrainRows) and test (the rest), so both share
// the class means.
struct Data {
  Dataset train;
  Dataset test;
};

const Data& SyntheticData() {
  static const Data* data = [] {
    SyntheticSpec spec;
    spec.rows = kTrainRows + kTestRows;
    spec.cols = kCols;
    spec.classes = kClasses;
    spec.separation = 2.0;
    spec.noise = 1.0;
    spec.seed = 11;
    const Dataset all = ValueOrDie(MakeSynthetic(spec));
    auto* d = new Data;
    d->train = ValueOrDie(SliceDataset(all, 0, kTrainRows));
    d->test = ValueOrDie(SliceDataset(all, kTrainRows, 0));
    return d;
  }();
  return *data;
}

// The fit of each variant, computed once per process.
const FitResult& FittedVariant(const Variant& v) {
  static auto* cache = new std::map<std::string, FitResult>;
  auto it = cache->find(v.name);
  if (it == cache->end()) {
    const Data& data = SyntheticData();
    it =
        cache
            ->emplace(v.name, ValueOrDie(FitDeepRfm(data.train, &data.test, ConfigFor(v), nullptr)))
            .first;
  }
  return it->second;
}

uint32_t Crc32(std::string_view bytes) {
  return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0),
                                     reinterpret_cast<const Bytef*>(bytes.data()),
                                     static_cast<uInt>(bytes.size())));
}

// Rewrites the trailing checksum so that it matches the (edited) bytes before it.
void FixChecksum(std::string* file) {
  const uint32_t crc = Crc32(std::string_view(*file).substr(0, file->size() - 4));
  std::memcpy(file->data() + file->size() - 4, &crc, 4);
}

uint64_t ReadU64(std::string_view bytes, size_t offset) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + offset, 8);
  return v;
}

// The pieces of a native model file.
struct NativeParts {
  Json header;
  std::string data;
};

NativeParts SplitNative(const std::string& file) {
  const uint64_t header_len = ReadU64(file, kHeaderLenOffset);
  NativeParts parts;
  parts.header = Json::parse(file.substr(kHeaderOffset, header_len));
  const uint64_t data_len = ReadU64(file, kHeaderOffset + header_len);
  parts.data = file.substr(kHeaderOffset + header_len + 8, data_len);
  return parts;
}

// A native file with `header` and `data` and a valid checksum, built like Serialize does.
std::string JoinNative(const Json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string out("DRFMMODL", 8);
  const uint32_t version = 1, reserved = 0;
  const uint64_t header_len = text.size(), data_len = data.size();
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&reserved), 4);
  out.append(reinterpret_cast<const char*>(&header_len), 8);
  out += text;
  out.append(reinterpret_cast<const char*>(&data_len), 8);
  out += data;
  out.append(4, '\0');
  FixChecksum(&out);
  return out;
}

template <typename T>
::testing::AssertionResult SameBits(const T& a, const T& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.rows() << "x" << a.cols()
                                         << " vs " << b.rows() << "x" << b.cols();
  }
  if (std::memcmp(a.data(), b.data(), sizeof(typename T::Scalar) * a.size()) != 0) {
    return ::testing::AssertionFailure() << "values differ";
  }
  return ::testing::AssertionSuccess();
}

class ModelVariantTest : public ::testing::TestWithParam<Variant> {
 protected:
  const FitResult& fit() const { return FittedVariant(GetParam()); }
  const DeepRfmModel& model() const { return fit().model; }
  const Dataset& test_set() const { return SyntheticData().test; }
};

TEST_P(ModelVariantTest, SerializeThenDeserializeIsBitExact) {
  const std::string bytes = model().Serialize();
  absl::StatusOr<DeepRfmModel> back = DeepRfmModel::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Serialize(), bytes);
  EXPECT_EQ(back->precision(), model().precision());
  EXPECT_EQ(back->input_dim(), model().input_dim());
  EXPECT_EQ(back->num_classes(), model().num_classes());
  EXPECT_EQ(back->num_layers(), model().num_layers());
  EXPECT_EQ(back->readout_rows(), model().readout_rows());
  EXPECT_EQ(FitConfigToJson(back->config()), FitConfigToJson(model().config()));

  absl::StatusOr<Prediction> want = model().Predict(test_set().features);
  absl::StatusOr<Prediction> got = back->Predict(test_set().features);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->labels, want->labels);
  EXPECT_TRUE(SameBits(got->scores, want->scores));
  for (int layer = 1; layer <= kLayers; ++layer) {
    absl::StatusOr<RowMatrixF> a = model().Representation(test_set().features, layer);
    absl::StatusOr<RowMatrixF> b = back->Representation(test_set().features, layer);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(SameBits(*a, *b)) << "layer " << layer;
  }
}

TEST_P(ModelVariantTest, SerializeIsDeterministic) {
  EXPECT_EQ(model().Serialize(), model().Serialize());
  const DeepRfmModel copy = model();
  EXPECT_EQ(copy.Serialize(), model().Serialize());
}

TEST_P(ModelVariantTest, PredictReproducesTheReadoutTestAccuracyOfTheFit) {
  const LayerReport& readout = fit().reports.back();
  ASSERT_TRUE(readout.readout);
  ASSERT_TRUE(readout.has_test);
  absl::StatusOr<Prediction> p = model().Predict(test_set().features);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->labels.size(), static_cast<size_t>(kTestRows));
  int correct = 0;
  for (int i = 0; i < kTestRows; ++i) correct += p->labels[i] == test_set().labels[i];
  // Prediction runs the same transforms on the same rows as the fit: exactly the same accuracy.
  EXPECT_EQ(static_cast<double>(correct) / kTestRows, readout.test_accuracy);
  // A sanity floor: the mixture is separable enough that a working model beats chance clearly.
  EXPECT_GT(readout.test_accuracy, 0.6);
}

TEST_P(ModelVariantTest, PredictedLabelsAreTheArgmaxOfTheScores) {
  absl::StatusOr<Prediction> p = model().Predict(test_set().features);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->scores.rows(), kTestRows);
  ASSERT_EQ(p->scores.cols(), kClasses);
  ASSERT_EQ(p->labels.size(), static_cast<size_t>(kTestRows));
  for (int i = 0; i < kTestRows; ++i) {
    ASSERT_GE(p->labels[i], 0);
    ASSERT_LT(p->labels[i], kClasses);
    // The float64 model takes the argmax before rounding the scores to float, which can only
    // create ties, never reverse an order: the label's score is still a maximum.
    EXPECT_EQ(p->scores(i, p->labels[i]), p->scores.row(i).maxCoeff()) << "row " << i;
  }
}

TEST_P(ModelVariantTest, PredictionOfARowDoesNotDependOnTheOtherRows) {
  absl::StatusOr<Prediction> all = model().Predict(test_set().features);
  ASSERT_TRUE(all.ok());
  for (int i : {0, 17, kTestRows - 1}) {
    absl::StatusOr<Prediction> one = model().Predict(test_set().features.row(i));
    ASSERT_TRUE(one.ok());
    // Different GEMM shapes may round differently; the scores are O(1).
    for (int k = 0; k < kClasses; ++k) EXPECT_NEAR(one->scores(0, k), all->scores(i, k), 1e-4);
    Eigen::RowVectorXf sorted = all->scores.row(i);
    std::sort(sorted.data(), sorted.data() + sorted.size());
    if (sorted(kClasses - 1) - sorted(kClasses - 2) > 1e-3) {
      EXPECT_EQ(one->labels[0], all->labels[i]) << "row " << i;
    }
  }
}

TEST_P(ModelVariantTest, RepresentationHasTheLayerWidthAsColumns) {
  const int expected_width = GetParam().width > 0 ? GetParam().width : kCols;
  for (int layer = 1; layer <= kLayers; ++layer) {
    absl::StatusOr<RowMatrixF> h = model().Representation(test_set().features, layer);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->rows(), kTestRows);
    EXPECT_EQ(h->cols(), expected_width) << "layer " << layer;
    EXPECT_TRUE(h->allFinite());
    if (GetParam().feature_map == FeatureMapType::kRelu) {
      EXPECT_GE(h->minCoeff(), 0.0f);
    }
  }
}

TEST_P(ModelVariantTest, RepresentationOutsideTheLayersIsInvalidArgument) {
  for (int layer : {0, -1, kLayers + 1, 1000}) {
    EXPECT_TRUE(HasError(model().Representation(test_set().features, layer).status(),
                         absl::StatusCode::kInvalidArgument, {"out of range", "1..2"}))
        << "layer " << layer;
  }
}

TEST_P(ModelVariantTest, WrongColumnCountIsInvalidArgumentNamingTheExpectedCount) {
  for (int cols : {kCols - 1, kCols + 1, 1}) {
    const RowMatrixF x = RowMatrixF::Zero(4, cols);
    EXPECT_TRUE(HasError(model().Predict(x).status(), absl::StatusCode::kInvalidArgument,
                         {"x 20 features"}))
        << cols << " columns";
    EXPECT_TRUE(HasError(model().Representation(x, 1).status(), absl::StatusCode::kInvalidArgument,
                         {"x 20 features"}));
  }
}

TEST_P(ModelVariantTest, NonFiniteInputIsInvalidArgumentNamingTheCell) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    RowMatrixF x = test_set().features.topRows(5);
    x(3, 7) = bad;
    EXPECT_TRUE(HasError(model().Predict(x).status(), absl::StatusCode::kInvalidArgument,
                         {"row 3 column 7"}));
    EXPECT_TRUE(HasError(model().Representation(x, 1).status(), absl::StatusCode::kInvalidArgument,
                         {"row 3 column 7"}));
  }
}

TEST_P(ModelVariantTest, EverySingleByteFlipIsRejected) {
  const std::string good = model().Serialize();
  const uint64_t header_len = ReadU64(good, kHeaderLenOffset);
  // Every byte of the fixed prefix, the header and the data length, then a stride through the
  // tensor data, and every byte of the checksum trailer.
  std::vector<size_t> positions;
  for (size_t i = 0; i < kHeaderOffset + header_len + 8; ++i) positions.push_back(i);
  for (size_t i = kHeaderOffset + header_len + 8; i < good.size() - 4; i += 97)
    positions.push_back(i);
  positions.push_back(good.size() - 5);  // the last data byte
  for (size_t i = good.size() - 4; i < good.size(); ++i) positions.push_back(i);
  for (size_t pos : positions) {
    for (unsigned char mask : {0x01, 0x80, 0xFF}) {
      std::string bad = good;
      bad[pos] = static_cast<char>(bad[pos] ^ mask);
      absl::StatusOr<DeepRfmModel> m = DeepRfmModel::Deserialize(bad);
      ASSERT_TRUE(IsCorruptionError(m.status())) << "byte " << pos << " ^ " << int{mask};
      if (pos >= 8) {
        // Past the magic, the checksum catches every single-byte change (CRC-32 detects every
        // burst of up to 32 bits).
        ASSERT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << "byte " << pos;
      }
    }
  }
}

TEST_P(ModelVariantTest, TruncatedFilesAreRejected) {
  const std::string good = model().Serialize();
  const uint64_t header_len = ReadU64(good, kHeaderLenOffset);
  for (size_t len :
       {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{23}, size_t{24}, size_t{35}, size_t{36},
        kHeaderOffset + header_len / 2, kHeaderOffset + header_len, kHeaderOffset + header_len + 8,
        good.size() / 2, good.size() - 5, good.size() - 4, good.size() - 1}) {
    const absl::Status s =
        DeepRfmModel::Deserialize(std::string_view(good).substr(0, len)).status();
    EXPECT_TRUE(IsCorruptionError(s)) << "length " << len;
  }
  // Trailing garbage is a different file, not a longer one.
  EXPECT_TRUE(IsCorruptionError(DeepRfmModel::Deserialize(good + "x").status()));
}

TEST_P(ModelVariantTest, SafetensorsExportIsConsistentAndHoldsTheModelTensors) {
  const std::string st = model().ExportSafetensors();
  ASSERT_GE(st.size(), 8u);
  const uint64_t header_len = ReadU64(st, 0);
  ASSERT_LE(8 + header_len, st.size());
  const std::string_view text = std::string_view(st).substr(8, header_len);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.front(), '{');
  EXPECT_EQ((8 + header_len) % 8, 0u) << "tensor data should start 8-byte aligned";
  const Json header = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(header.is_object());
  const std::string_view data = std::string_view(st).substr(8 + header_len);

  const bool f64 = GetParam().precision == Precision::kFloat64;
  const size_t elem = f64 ? 8 : 4;
  std::set<std::string> want = {"input.mean", "input.std", "readout.x", "readout.alpha"};
  for (int l = 0; l < kLayers; ++l) {
    want.insert(absl::StrCat("layers.", l, ".projection"));
    want.insert(absl::StrCat("layers.", l, ".weights"));
    if (GetParam().feature_map == FeatureMapType::kCosine)
      want.insert(absl::StrCat("layers.", l, ".bias"));
  }
  std::set<std::string> names;
  std::map<uint64_t, uint64_t> ranges;  // begin -> end
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__") continue;
    names.insert(name);
    ASSERT_TRUE(t.is_object()) << name;
    EXPECT_EQ(t.at("dtype"), f64 ? "F64" : "F32") << name;
    uint64_t count = 1;
    for (const Json& dim : t.at("shape")) {
      ASSERT_TRUE(dim.is_number_unsigned()) << name;
      count *= dim.get<uint64_t>();
    }
    const auto offsets = t.at("data_offsets").get<std::vector<uint64_t>>();
    ASSERT_EQ(offsets.size(), 2u) << name;
    ASSERT_LE(offsets[0], offsets[1]) << name;
    EXPECT_EQ(offsets[1] - offsets[0], count * elem) << name;
    ranges[offsets[0]] = offsets[1];
  }
  EXPECT_EQ(names, want);
  // Contiguous, starting at 0, ending exactly at the end of the file.
  uint64_t next = 0;
  for (const auto& [begin, end] : ranges) {
    EXPECT_EQ(begin, next);
    next = end;
  }
  EXPECT_EQ(next, data.size());

  auto tensor_bytes = [&](const std::string& name) {
    const auto offsets = header.at(name).at("data_offsets").get<std::vector<uint64_t>>();
    return std::string(data.substr(offsets[0], offsets[1] - offsets[0]));
  };
  auto expect_tensor = [&](const std::string& name, const auto& m) {
    const std::string bytes = tensor_bytes(name);
    ASSERT_EQ(bytes.size(), sizeof(m.data()[0]) * m.size()) << name;
    EXPECT_EQ(std::memcmp(bytes.data(), m.data(), bytes.size()), 0) << name;
    const auto shape = header.at(name).at("shape").template get<std::vector<int64_t>>();
    if (shape.size() == 2) {
      EXPECT_EQ(shape[0], m.rows()) << name;
      EXPECT_EQ(shape[1], m.cols()) << name;
    } else {
      EXPECT_EQ(shape, std::vector<int64_t>{m.size()}) << name;
    }
  };
  auto check_params = [&](const auto* p) {
    ASSERT_NE(p, nullptr);
    expect_tensor("readout.alpha", p->readout_alpha);
    expect_tensor("readout.x", p->readout_x);
    expect_tensor("input.mean", p->mean);
    expect_tensor("input.std", p->std);
    for (int l = 0; l < kLayers; ++l) {
      expect_tensor(absl::StrCat("layers.", l, ".projection"), p->layers[l].projection);
      expect_tensor(absl::StrCat("layers.", l, ".weights"), p->layers[l].map.weights);
      if (GetParam().feature_map == FeatureMapType::kCosine) {
        expect_tensor(absl::StrCat("layers.", l, ".bias"), p->layers[l].map.bias);
      }
    }
  };
  if (f64) {
    check_params(model().params<double>());
  } else {
    check_params(model().params<float>());
  }

  // Safetensors metadata is a flat string -> string map; the config inside parses back.
  ASSERT_TRUE(header.contains("__metadata__"));
  const Json& meta = header.at("__metadata__");
  ASSERT_TRUE(meta.is_object());
  for (const auto& [key, value] : meta.items()) EXPECT_TRUE(value.is_string()) << key;
  absl::StatusOr<FitConfig> config = FitConfigFromJson(meta.at("config").get<std::string>());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(FitConfigToJson(*config), FitConfigToJson(model().config()));
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelVariantTest, ::testing::ValuesIn(kVariants),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return std::string(info.param.name);
                         });

const DeepRfmModel& Float32Model() { return FittedVariant(kVariants[0]).model; }

TEST(ModelTest, BadMagicIsInvalidArgument) {
  std::string bytes = Float32Model().Serialize();
  bytes[0] = 'X';
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(bytes).status(),
                       absl::StatusCode::kInvalidArgument, {"magic"}));
  // A safetensors export is not a native model file.
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(Float32Model().ExportSafetensors()).status(),
                       absl::StatusCode::kInvalidArgument, {"magic"}));
}

TEST(ModelTest, UnknownFormatVersionIsInvalidArgument) {
  std::string bytes = Float32Model().Serialize();
  const uint32_t version = 2;
  std::memcpy(bytes.data() + kVersionOffset, &version, 4);
  FixChecksum(&bytes);
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(bytes).status(),
                       absl::StatusCode::kInvalidArgument, {"version 2"}));
}

TEST(ModelTest, RebuiltFileWithTheSameContentsDeserializes) {
  // Guards the helpers below: a file rebuilt from its own parts is accepted.
  const std::string good = Float32Model().Serialize();
  const NativeParts parts = SplitNative(good);
  EXPECT_EQ(JoinNative(parts.header, parts.data), good);
}

// Sets this thread's OpenMP thread count for the lifetime of the object.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(ModelTest, HeaderCorruptionBehindAValidChecksumIsRejectedWithoutCrashing) {
  const std::string good = Float32Model().Serialize();
  const uint64_t header_len = ReadU64(good, kHeaderLenOffset);
  const RowMatrixF x = SyntheticData().test.features.topRows(3);
  // About a thousand tiny predictions follow: one thread spares them OpenMP's fork/join cost,
  // which dominates on a busy machine.
  const ScopedOmpThreads one_thread(1);
  int accepted = 0;
  for (size_t pos = kVersionOffset; pos < kHeaderOffset + header_len + 8; ++pos) {
    for (unsigned char mask : {0x01, 0x04, 0x20}) {
      std::string bad = good;
      bad[pos] = static_cast<char>(bad[pos] ^ mask);
      FixChecksum(&bad);
      absl::StatusOr<DeepRfmModel> m = DeepRfmModel::Deserialize(bad);
      if (!m.ok()) {
        ASSERT_TRUE(IsCorruptionError(m.status())) << "byte " << pos;
        continue;
      }
      // Some edits are harmless (a digit of the bandwidth, a config value): the model must then
      // still work.
      ++accepted;
      absl::StatusOr<Prediction> p = m->Predict(x);
      if (p.ok()) {
        EXPECT_EQ(p->scores.rows(), 3) << "byte " << pos;
      }
    }
  }
  RecordProperty("accepted_edits", accepted);
}

TEST(ModelTest, TensorShapeWhoseElementCountOverflowsIsRejected) {
  NativeParts parts = SplitNative(Float32Model().Serialize());
  // 2^58 + 1 rows of 64 columns wrap around 2^64 to a count of 64 elements.
  parts.header["tensors"]["readout.x"]["shape"] = {(uint64_t{1} << 58) + 1, 64};
  EXPECT_TRUE(
      IsCorruptionError(DeepRfmModel::Deserialize(JoinNative(parts.header, parts.data)).status()));
  parts.header["tensors"]["readout.x"]["shape"] = {uint64_t{1} << 58, 64};
  EXPECT_TRUE(
      IsCorruptionError(DeepRfmModel::Deserialize(JoinNative(parts.header, parts.data)).status()));
}

TEST(ModelTest, LayerOfZeroWidthIsRejected) {
  // A zero-width layer makes the next shape checks vacuous (0 x anything fits in any data): here
  // layer 2 declares 2^62 features, which only Predict would then try to allocate.
  NativeParts parts = SplitNative(Float32Model().Serialize());
  const uint64_t huge = uint64_t{1} << 62;
  parts.header["tensors"]["layers.0.weights"]["shape"] = {0, kCols};
  parts.header["tensors"]["layers.1.projection"]["shape"] = {0, 0};
  parts.header["tensors"]["layers.1.weights"]["shape"] = {huge, 0};
  parts.header["tensors"]["readout.x"]["shape"] = {0, huge};
  parts.header["tensors"]["readout.alpha"]["shape"] = {0, kClasses};
  EXPECT_TRUE(
      IsCorruptionError(DeepRfmModel::Deserialize(JoinNative(parts.header, parts.data)).status()));
}

TEST(ModelTest, WrongTypesInTheHeaderAreInvalidArgument) {
  const NativeParts good = SplitNative(Float32Model().Serialize());
  std::vector<Json> headers;
  Json h = good.header;
  h["input_dim"] = "twenty";
  headers.push_back(h);
  h = good.header;
  h["layers"] = 3;
  headers.push_back(h);
  h = good.header;
  h["tensors"] = Json::array();
  headers.push_back(h);
  h = good.header;
  h["config"] = 5;
  headers.push_back(h);
  h = good.header;
  h.erase("num_classes");
  headers.push_back(h);
  h = good.header;
  h["tensors"]["readout.alpha"]["offset"] = -8;
  headers.push_back(h);
  for (size_t i = 0; i < headers.size(); ++i) {
    EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(JoinNative(headers[i], good.data)).status(),
                         absl::StatusCode::kInvalidArgument))
        << "case " << i;
  }
}

TEST(ModelTest, TensorOutsideTheDataIsDataLoss) {
  NativeParts parts = SplitNative(Float32Model().Serialize());
  const uint64_t offset = parts.header["tensors"]["readout.alpha"]["offset"].get<uint64_t>();
  parts.header["tensors"]["readout.alpha"]["offset"] = offset + 4;
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(JoinNative(parts.header, parts.data)).status(),
                       absl::StatusCode::kDataLoss, {"readout.alpha"}));
}

TEST(ModelTest, NonFiniteTensorValueIsDataLoss) {
  NativeParts parts = SplitNative(Float32Model().Serialize());
  const uint64_t offset = parts.header["tensors"]["readout.alpha"]["offset"].get<uint64_t>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(parts.data.data() + offset, &nan, 4);
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(JoinNative(parts.header, parts.data)).status(),
                       absl::StatusCode::kDataLoss, {"non-finite"}));
}

FitConfig NonDefaultConfig() {
  FitConfig c;
  c.layers = 5;
  c.kernel = KernelType::kGaussian;
  c.bandwidth = 0.1 + 1e-12;  // not a short decimal: the JSON must keep every bit
  c.ridge = 3.7e-7;
  c.rfm_iterations = 4;
  c.feature_map = FeatureMapType::kCosine;
  c.width = 0;
  c.rff_scale = 1.0 / 3.0;
  c.agop_power = 0.75;
  c.agop_samples = 1234;
  c.agop_normalize = AgopNormalize::kNone;
  c.agop_method = AgopMethod::kGram;
  c.precision = Precision::kFloat64;
  c.standardize = false;
  c.label_encoding = LabelEncoding::kOneHot;
  c.seed = (uint64_t{1} << 63) + 12345;  // above the int64 range
  c.top_eigenvalues = 3;
  return c;
}

void ExpectSameConfig(const FitConfig& a, const FitConfig& b) {
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_EQ(a.kernel, b.kernel);
  EXPECT_EQ(a.bandwidth, b.bandwidth);
  EXPECT_EQ(a.ridge, b.ridge);
  EXPECT_EQ(a.rfm_iterations, b.rfm_iterations);
  EXPECT_EQ(a.feature_map, b.feature_map);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.rff_scale, b.rff_scale);
  EXPECT_EQ(a.agop_power, b.agop_power);
  EXPECT_EQ(a.agop_samples, b.agop_samples);
  EXPECT_EQ(a.agop_normalize, b.agop_normalize);
  EXPECT_EQ(a.agop_method, b.agop_method);
  EXPECT_EQ(a.precision, b.precision);
  EXPECT_EQ(a.standardize, b.standardize);
  EXPECT_EQ(a.label_encoding, b.label_encoding);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.top_eigenvalues, b.top_eigenvalues);
}

TEST(FitConfigJsonTest, RoundTripKeepsEveryField) {
  for (const FitConfig& config : {FitConfig{}, NonDefaultConfig()}) {
    const std::string json = FitConfigToJson(config);
    absl::StatusOr<FitConfig> back = FitConfigFromJson(json);
    ASSERT_TRUE(back.ok()) << back.status() << " for " << json;
    ExpectSameConfig(*back, config);
    EXPECT_EQ(FitConfigToJson(*back), json);
  }
}

TEST(FitConfigJsonTest, EveryEnumValueRoundTrips) {
  FitConfig c;
  for (KernelType k : {KernelType::kLaplace, KernelType::kGaussian}) {
    for (AgopMethod m : {AgopMethod::kAuto, AgopMethod::kDirect, AgopMethod::kGram}) {
      for (Precision p : {Precision::kFloat32, Precision::kFloat64}) {
        c.kernel = k;
        c.agop_method = m;
        c.precision = p;
        absl::StatusOr<FitConfig> back = FitConfigFromJson(FitConfigToJson(c));
        ASSERT_TRUE(back.ok());
        ExpectSameConfig(*back, c);
      }
    }
  }
}

TEST(FitConfigJsonTest, MissingFieldsTakeTheDefaults) {
  absl::StatusOr<FitConfig> c = FitConfigFromJson("{}");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectSameConfig(*c, FitConfig{});
  c = FitConfigFromJson(R"({"layers": 1})");
  ASSERT_TRUE(c.ok()) << c.status();
  FitConfig want;
  want.layers = 1;
  ExpectSameConfig(*c, want);
}

TEST(FitConfigJsonTest, MalformedOrInvalidConfigIsInvalidArgument) {
  for (const char* json : {"", "not json", "[1, 2]", "3", R"({"layers": "three"})",
                           R"({"bandwidth": [2]})", R"({"layers": -1})", R"({"ridge": -1})",
                           R"({"width": 0, "feature_map": "relu"})", R"({"layers": 3)"}) {
    EXPECT_TRUE(HasError(FitConfigFromJson(json).status(), absl::StatusCode::kInvalidArgument))
        << json;
  }
}

TEST(FitConfigJsonTest, RejectsAnUnknownEnumNameInsteadOfDefaulting) {
  absl::StatusOr<FitConfig> config = FitConfigFromJson(R"({"kernel": "gausian"})");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("laplace, gaussian"), std::string::npos) << config.status();
  EXPECT_FALSE(FitConfigFromJson(R"({"precision": 64})").ok());
}

}  // namespace
}  // namespace drfm::core
