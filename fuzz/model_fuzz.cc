// Fuzzes the native Deep RFM model format (core/model.h: DeepRfmModel::Deserialize), what the
// store reads back for every prediction. The input becomes a model file as
// drfm::fuzz::ModelFileFromFuzzInput (fuzz/fuzz_util.h) says: a mode byte, then the file as it
// is, a header JSON and tensor data to frame, or a file whose checksum is repaired.
// Properties: no crash, leak, hang or undefined behaviour; an accepted model re-serializes to a
// file that is accepted again and serializes to the same bytes; it predicts and returns every
// layer's representation for a couple of input rows without error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/model.h"
#include "fuzz/fuzz_util.h"

namespace {

void CheckAccepted(const drfm::core::DeepRfmModel& model) {
  FUZZ_CHECK(model.input_dim() >= 1 && model.num_classes() >= 2 && model.num_layers() >= 0);
  const std::string bytes = model.Serialize();
  const absl::StatusOr<drfm::core::DeepRfmModel> again =
      drfm::core::DeepRfmModel::Deserialize(bytes);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->Serialize() == bytes);
  FUZZ_CHECK(!model.ExportSafetensors().empty());

  drfm::core::RowMatrixF x(2, model.input_dim());
  x.row(0).setZero();
  x.row(1).setOnes();
  const absl::StatusOr<drfm::core::Prediction> prediction = model.Predict(x);
  FUZZ_CHECK(prediction.ok());
  FUZZ_CHECK(prediction->labels.size() == 2);
  FUZZ_CHECK(prediction->scores.rows() == 2 && prediction->scores.cols() == model.num_classes());
  for (int32_t label : prediction->labels) FUZZ_CHECK(label >= 0 && label < model.num_classes());
  for (int layer = 1; layer <= model.num_layers(); ++layer) {
    const absl::StatusOr<drfm::core::RowMatrixF> h = model.Representation(x, layer);
    FUZZ_CHECK(h.ok() && h->rows() == 2);
  }
  FUZZ_CHECK(!model.Representation(x, model.num_layers() + 1).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = drfm::fuzz::ModelFileFromFuzzInput(drfm::fuzz::AsView(data, size));
  const absl::StatusOr<drfm::core::DeepRfmModel> model =
      drfm::core::DeepRfmModel::Deserialize(file);
  if (model.ok()) CheckAccepted(*model);
  return 0;
}
