// Fuzzes the NumPy .npy readers (core/io.h: ParseNpyFeatures, ParseNpyLabels, and ParseFeatures /
// ParseLabels, which sniff the format) with arbitrary bytes. Properties: no crash, leak or
// undefined behaviour; a successful parse is non-empty, finite, never larger than the payload
// could hold, and the labels are non-negative.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/io.h"
#include "fuzz/fuzz_util.h"

namespace {

// Every .npy element takes at least one byte, and the preamble at least 10.
void CheckFeatures(const absl::StatusOr<drfm::core::RowMatrixF>& m, size_t input_size) {
  if (!m.ok()) return;
  FUZZ_CHECK(m->rows() >= 1 && m->cols() >= 1);
  FUZZ_CHECK(static_cast<size_t>(m->size()) <= input_size);
  FUZZ_CHECK(m->allFinite());
}

void CheckLabels(const absl::StatusOr<std::vector<int32_t>>& labels, size_t input_size) {
  if (!labels.ok()) return;
  FUZZ_CHECK(!labels->empty() && labels->size() <= input_size);
  for (int32_t y : *labels) FUZZ_CHECK(y >= 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = drfm::fuzz::AsView(data, size);
  CheckFeatures(drfm::core::ParseNpyFeatures(bytes), size);
  CheckLabels(drfm::core::ParseNpyLabels(bytes), size);
  if (drfm::core::SniffFormat(bytes) == drfm::core::DataFormat::kNpy) {
    // The sniffing entry points must agree with the direct ones.
    FUZZ_CHECK(drfm::core::ParseFeatures(bytes).ok() == drfm::core::ParseNpyFeatures(bytes).ok());
    FUZZ_CHECK(drfm::core::ParseLabels(bytes).ok() == drfm::core::ParseNpyLabels(bytes).ok());
  }
  return 0;
}
