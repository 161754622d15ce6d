// Fuzzes the CSV readers (core/io.h: ParseCsvDataset, ParseCsvFeatures, ParseCsvLabels). The
// first byte picks the label column (byte % 8 - 2, so -2 .. 5: the invalid -2, kLastColumn and
// the first columns); the rest is the CSV text. Properties: no crash, leak or undefined
// behaviour; a parsed dataset has one label per row, finite features, cols = fields - 1, and
// num_classes = max label + 1 (saturating at INT32_MAX); a labelled parse and a features-only parse
// of the same text agree on the feature values where both succeed with a label in the last column.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/io.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int label_column = data[0] % 8 - 2;
  const std::string_view text = drfm::fuzz::AsView(data + 1, size - 1);

  const absl::StatusOr<drfm::core::Dataset> dataset =
      drfm::core::ParseCsvDataset(text, label_column);
  if (label_column < drfm::core::kLastColumn) FUZZ_CHECK(!dataset.ok());
  if (dataset.ok()) {
    FUZZ_CHECK(dataset->rows() >= 1 && dataset->cols() >= 1);
    FUZZ_CHECK(static_cast<int64_t>(dataset->labels.size()) == dataset->rows());
    FUZZ_CHECK(dataset->features.allFinite());
    const int32_t max_label = *std::max_element(dataset->labels.begin(), dataset->labels.end());
    FUZZ_CHECK(*std::min_element(dataset->labels.begin(), dataset->labels.end()) >= 0);
    // InferNumClasses: max + 1, saturating at INT32_MAX (such a label fails ValidateDataset).
    FUZZ_CHECK(dataset->num_classes == std::min<int64_t>(int64_t{max_label} + 1, INT32_MAX));
  }

  const absl::StatusOr<drfm::core::RowMatrixF> features = drfm::core::ParseCsvFeatures(text);
  if (features.ok()) {
    FUZZ_CHECK(features->rows() >= 1 && features->cols() >= 1);
    FUZZ_CHECK(features->allFinite());
  }
  if (dataset.ok() && features.ok() && label_column == drfm::core::kLastColumn &&
      features->rows() == dataset->rows()) {
    FUZZ_CHECK(features->cols() == dataset->cols() + 1);
    FUZZ_CHECK(features->leftCols(dataset->cols()) == dataset->features);
  }

  const absl::StatusOr<std::vector<int32_t>> labels = drfm::core::ParseCsvLabels(text);
  if (labels.ok()) {
    FUZZ_CHECK(!labels->empty());
    for (int32_t y : *labels) FUZZ_CHECK(y >= 0);
  }
  return 0;
}
