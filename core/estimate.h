// Cost model of a Deep RFM fit: the peak memory and the flops it will need, from the config and
// the data's shape alone, so that a server can admit or refuse a job before it runs.
#ifndef DRFM_CORE_ESTIMATE_H_
#define DRFM_CORE_ESTIMATE_H_

#include <array>
#include <cstdint>

#include "absl/status/statusor.h"
#include "core/config.h"
#include "core/report.h"

namespace drfm::core {

struct FitShape {
  int64_t train_rows = 0;
  int64_t test_rows = 0;
  int64_t cols = 0;
  int num_classes = 0;
};

struct FitEstimate {
  // Bytes the fit allocates at its peak on top of the input datasets: the n x n kernel buffer,
  // working copies of the features, AGOP scratch and the model.
  double peak_bytes = 0;
  double kernel_matrix_bytes = 0;  // the single n x n buffer, included in peak_bytes
  double flops = 0;
  std::array<double, kNumPhases> phase_flops{};
};

// InvalidArgument for a bad config or shape (non-positive sizes, fewer than 2 classes).
absl::StatusOr<FitEstimate> EstimateFit(const FitConfig& config, const FitShape& shape);

}  // namespace drfm::core

#endif  // DRFM_CORE_ESTIMATE_H_
