// Regression tests for what fuzzing the core readers (fuzz/, scripts/fuzz.sh) found, each with its
// input rebuilt readably here; and a replay of every checked-in crash input (fuzz/regressions/)
// and seed (fuzz/corpus/) of the core targets through the decoding the fuzz targets use
// (fuzz/fuzz_util.h), so the normal build keeps them fixed and the seeds stay valid inputs.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/fit.h"
#include "core/io.h"
#include "core/mlp_model.h"
#include "core/model.h"
#include "fuzz/fuzz_util.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

::testing::AssertionResult HasError(const absl::Status& status, absl::StatusCode code,
                                    std::initializer_list<const char*> parts) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << ", got " << status;
  }
  for (const char* part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure() << "message lacks \"" << part << "\": " << status;
    }
  }
  return ::testing::AssertionSuccess();
}

// A small fitted model (4 inputs, one ReLU layer of width 8, 3 classes, standardized), serialized.
const std::string& TinyModelFile() {
  static const std::string* const file = [] {
    absl::StatusOr<Dataset> data =
        MakeSynthetic(*ParseSyntheticName("synthetic:rows=24,cols=4,classes=3,seed=5"));
    FitConfig config;
    config.layers = 1;
    config.width = 8;
    absl::StatusOr<FitResult> fit = FitDeepRfm(*data, nullptr, config, nullptr, {1});
    EXPECT_TRUE(fit.ok()) << fit.status();
    return new std::string(fit->model.Serialize());
  }();
  return *file;
}

// `file` (the native format: magic, u32 version, u32 reserved, u64 header length, header, u64
// data length, data, u32 CRC-32) with its JSON header changed by `edit` and `extra` bytes
// appended to its data, framed again with a valid checksum.
std::string EditModel(const std::string& file, const std::function<void(Json&)>& edit,
                      std::string_view extra = {}) {
  uint64_t header_len;
  std::memcpy(&header_len, file.data() + 16, 8);
  Json header = Json::parse(file.substr(24, header_len));
  const std::string data = file.substr(24 + header_len + 8, file.size() - 24 - header_len - 8 - 4);
  edit(header);
  // Mode 1 of the model fuzz target frames a header and tensor data exactly as Serialize does.
  return fuzz::ModelFileFromFuzzInput(std::string("\x01") + header.dump() +
                                      std::string(fuzz::kDataMark) + data + std::string(extra));
}

// Bytes of tensor data in `file`.
uint64_t DataSize(const std::string& file) {
  uint64_t header_len;
  std::memcpy(&header_len, file.data() + 16, 8);
  return file.size() - 24 - header_len - 8 - 4;
}

TEST(ModelFuzzRegressionTest, EditingNothingKeepsTheModelValid) {
  const std::string file = EditModel(TinyModelFile(), [](Json&) {});
  EXPECT_EQ(file, TinyModelFile());
  EXPECT_TRUE(DeepRfmModel::Deserialize(file).ok());
}

// Found by model_fuzz: nlohmann converted a floating-point JSON value to int with a plain cast,
// undefined behaviour for 1e300 (UBSan: "outside the range of representable values").
TEST(ModelFuzzRegressionTest, ConfigIntegerGivenAsHugeFloatIsRejectedNotConverted) {
  for (const char* key :
       {"layers", "width", "rfm_iterations", "agop_samples", "seed", "top_eigenvalues"}) {
    const std::string file =
        EditModel(TinyModelFile(), [key](Json& h) { h["config"][key] = 1e300; });
    EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(file).status(),
                         absl::StatusCode::kInvalidArgument, {"config.", key, "integer"}))
        << key;
  }
}

TEST(ModelFuzzRegressionTest, HeaderDimensionsGivenAsFloatsOrOutOfRangeAreRejected) {
  const std::string huge = EditModel(TinyModelFile(), [](Json& h) { h["input_dim"] = 3e30; });
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(huge).status(), absl::StatusCode::kInvalidArgument,
                       {"input_dim", "integer"}));
  const std::string wide =
      EditModel(TinyModelFile(), [](Json& h) { h["num_classes"] = int64_t{1} << 33; });
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(wide).status(), absl::StatusCode::kInvalidArgument,
                       {"num_classes"}));
  const std::string shape = EditModel(TinyModelFile(), [](Json& h) {
    h["tensors"]["readout.alpha"]["shape"] = Json::array({24.0, 3.5});
  });
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(shape).status(),
                       absl::StatusCode::kInvalidArgument, {"readout.alpha", "non-integer"}));
}

// Found by model_fuzz: a readout of 0 training rows made the class count unbounded by the data,
// so a file of a few hundred bytes claiming 2e9 classes was accepted and the first prediction
// allocated rows x 2e9 scores (16 GB for two rows).
TEST(ModelFuzzRegressionTest, ReadoutWithoutTrainingRowsIsRejectedWhateverTheClassCount) {
  const std::string file = EditModel(TinyModelFile(), [](Json& h) {
    h["num_classes"] = 2000000000;
    const int64_t width = h["tensors"]["readout.x"]["shape"][1].get<int64_t>();
    h["tensors"]["readout.x"]["shape"] = Json::array({0, width});
    h["tensors"]["readout.alpha"]["shape"] = Json::array({0, 2000000000});
  });
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(file).status(), absl::StatusCode::kInvalidArgument,
                       {"no training rows"}));
}

// Tensors could point at the same bytes, so a file's header could make its model many times
// larger than the file; now all tensors together hold at most the file's data.
TEST(ModelFuzzRegressionTest, TensorsReusingDataBytesCannotGrowTheModelBeyondTheFile) {
  const std::string file = EditModel(TinyModelFile(), [](Json& h) {
    // A second layer of width 8 made of the first layer's bytes... twice over.
    h["layers"].push_back(h["layers"][0]);
    Json& t = h["tensors"];
    t["layers.1.projection"] = {{"dtype", "F32"}, {"shape", {8, 8}}, {"offset", 0}};
    t["layers.1.weights"] = {{"dtype", "F32"}, {"shape", {8, 8}}, {"offset", 0}};
  });
  EXPECT_TRUE(HasError(DeepRfmModel::Deserialize(file).status(), absl::StatusCode::kDataLoss,
                       {"share data bytes"}));
  // The same layer with its own bytes appended to the data is a valid model.
  const uint64_t end = DataSize(TinyModelFile());
  const std::string own = EditModel(
      TinyModelFile(),
      [end](Json& h) {
        h["layers"].push_back(h["layers"][0]);
        Json& t = h["tensors"];
        t["layers.1.projection"] = {{"dtype", "F32"}, {"shape", {8, 8}}, {"offset", end}};
        t["layers.1.weights"] = {{"dtype", "F32"}, {"shape", {8, 8}}, {"offset", end + 256}};
      },
      std::string(512, '\0'));
  absl::StatusOr<DeepRfmModel> model = DeepRfmModel::Deserialize(own);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->num_layers(), 2);
}

TEST(ModelFuzzRegressionTest, ConfigJsonTakesOnlyIntegersForIntegerFields) {
  EXPECT_TRUE(HasError(FitConfigFromJson(R"({"width": 2.5})").status(),
                       absl::StatusCode::kInvalidArgument, {"config.width"}));
  EXPECT_TRUE(HasError(FitConfigFromJson(R"({"seed": -1})").status(),
                       absl::StatusCode::kInvalidArgument, {"config.seed"}));
  EXPECT_TRUE(HasError(FitConfigFromJson(R"({"layers": 4294967296})").status(),
                       absl::StatusCode::kInvalidArgument, {"config.layers"}));
  FitConfig config;
  config.layers = 5;
  config.bandwidth = 3;
  config.seed = ~uint64_t{0};
  config.agop_samples = int64_t{1} << 40;
  absl::StatusOr<FitConfig> back = FitConfigFromJson(FitConfigToJson(config));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, 5);
  EXPECT_EQ(back->bandwidth, 3.0);
  EXPECT_EQ(back->seed, ~uint64_t{0});
  EXPECT_EQ(back->agop_samples, int64_t{1} << 40);
}

// Found by csv_fuzz (a wrong property in the target, kept as a test of the documented
// behaviour): a label of INT32_MAX parses, num_classes saturates instead of overflowing, and the
// dataset is then rejected as a whole.
TEST(CsvFuzzRegressionTest, LabelOfInt32MaxSaturatesTheClassCountAndFailsValidation) {
  absl::StatusOr<Dataset> data = ParseCsvDataset("5,2147483647\n", kLastColumn);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_classes, INT32_MAX);
  EXPECT_EQ(data->labels, std::vector<int32_t>{INT32_MAX});
  EXPECT_EQ(ValidateDataset(*data).code(), absl::StatusCode::kInvalidArgument);
}

// The checked-in inputs of one fuzz target: fuzz/<kind>/<target>/*.
std::vector<std::string> Inputs(const char* kind, const char* target) {
  std::vector<std::string> inputs;
  const fs::path dir = fs::path(DRFM_SOURCE_DIR) / "fuzz" / kind / target;
  if (!fs::is_directory(dir)) return inputs;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return inputs;
}

TEST(FuzzRegressionReplayTest, EveryCheckedInModelInputIsHandled) {
  int accepted = 0;
  for (const char* kind : {"regressions", "corpus"}) {
    for (const std::string& input : Inputs(kind, "model")) {
      absl::StatusOr<DeepRfmModel> model =
          DeepRfmModel::Deserialize(fuzz::ModelFileFromFuzzInput(input));
      if (!model.ok()) continue;
      ++accepted;
      RowMatrixF x = RowMatrixF::Ones(2, model->input_dim());
      EXPECT_TRUE(model->Predict(x).ok());
    }
  }
  // The seeds are valid models; the crash inputs are not.
  EXPECT_EQ(accepted, static_cast<int>(Inputs("corpus", "model").size()));
  EXPECT_GE(Inputs("regressions", "model").size(), 3u);
}

TEST(FuzzRegressionReplayTest, EveryCheckedInSafetensorsInputIsHandled) {
  int accepted = 0;
  for (const char* kind : {"regressions", "corpus"}) {
    for (const std::string& input : Inputs(kind, "safetensors")) {
      const fuzz::MlpFuzzFile file = fuzz::MlpFileFromFuzzInput(input);
      absl::StatusOr<MlpModel> model =
          file.stored ? MlpModel::Deserialize(file.bytes) : MlpModel::ImportSafetensors(file.bytes);
      if (!model.ok()) continue;
      ++accepted;
      EXPECT_TRUE(model->Predict(RowMatrixF::Ones(2, model->input_dim())).ok());
    }
  }
  EXPECT_EQ(accepted, static_cast<int>(Inputs("corpus", "safetensors").size()));
}

TEST(FuzzRegressionReplayTest, EveryCheckedInDataFileInputIsHandled) {
  int npy_parsed = 0;
  for (const char* kind : {"regressions", "corpus"}) {
    for (const std::string& input : Inputs(kind, "npy")) {
      const bool features = ParseNpyFeatures(input).ok();
      const bool labels = ParseNpyLabels(input).ok();
      npy_parsed += features || labels;
    }
    for (const std::string& input : Inputs(kind, "idx")) {
      // The rest after the idx_fuzz mode byte, parsed as it is.
      const std::string_view plain = std::string_view(input).substr(input.empty() ? 0 : 1);
      (void)ParseIdxFeatures(plain);
      (void)ParseIdxLabels(plain);
      (void)ParseFeatures(plain);
      (void)ParseLabels(plain);
    }
    for (const std::string& input : Inputs(kind, "csv")) {
      if (input.empty()) continue;
      const std::string_view text = std::string_view(input).substr(1);
      (void)ParseCsvDataset(text, static_cast<uint8_t>(input[0]) % 8 - 2);
      (void)ParseCsvFeatures(text);
      (void)ParseCsvLabels(text);
    }
  }
  EXPECT_EQ(npy_parsed, static_cast<int>(Inputs("corpus", "npy").size()));
}

}  // namespace
}  // namespace drfm::core
