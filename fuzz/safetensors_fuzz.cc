// Fuzzes the safetensors importer of MLPs (core/mlp_model.h: MlpModel::ImportSafetensors, what
// ImportModel and `drfm models import` feed user files to) and the MLP storage format wrapped
// around it (MlpModel::Deserialize). The input becomes a file as
// drfm::fuzz::MlpFileFromFuzzInput (fuzz/fuzz_util.h) says: a mode byte, then a safetensors file,
// a header JSON and tensor data to frame, or a storage-format file (built or checksum-repaired).
// (core/model.h only writes safetensors; DeepRfmModel has no safetensors reader.)
// Properties: no crash, leak, hang or undefined behaviour; an accepted model exports to a file
// that imports to a model exporting the same bytes, survives Serialize/Deserialize, and predicts
// and returns every representation for a couple of input rows without error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/mlp_model.h"
#include "fuzz/fuzz_util.h"

namespace {

using drfm::core::MlpModel;

void CheckAccepted(const MlpModel& model) {
  FUZZ_CHECK(model.input_dim() >= 1 && model.num_classes() >= 2 && model.depth() >= 0);
  const std::string exported = model.ExportSafetensors();
  const absl::StatusOr<MlpModel> imported = MlpModel::ImportSafetensors(exported);
  FUZZ_CHECK(imported.ok());
  FUZZ_CHECK(imported->ExportSafetensors() == exported);
  const absl::StatusOr<MlpModel> restored = MlpModel::Deserialize(model.Serialize());
  FUZZ_CHECK(restored.ok());
  FUZZ_CHECK(restored->ExportSafetensors() == exported);

  drfm::core::RowMatrixF x(2, model.input_dim());
  x.row(0).setZero();
  x.row(1).setOnes();
  const absl::StatusOr<drfm::core::Prediction> prediction = model.Predict(x);
  FUZZ_CHECK(prediction.ok());
  FUZZ_CHECK(prediction->scores.rows() == 2 && prediction->scores.cols() == model.num_classes());
  for (int32_t label : prediction->labels) FUZZ_CHECK(label >= 0 && label < model.num_classes());
  for (int layer = 0; layer <= model.depth(); ++layer) {
    FUZZ_CHECK(model.Representation(x, layer).ok());
  }
  FUZZ_CHECK(!model.Representation(x, model.depth() + 1).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const drfm::fuzz::MlpFuzzFile file =
      drfm::fuzz::MlpFileFromFuzzInput(drfm::fuzz::AsView(data, size));
  const absl::StatusOr<MlpModel> model =
      file.stored ? MlpModel::Deserialize(file.bytes) : MlpModel::ImportSafetensors(file.bytes);
  if (model.ok()) CheckAccepted(*model);
  return 0;
}
