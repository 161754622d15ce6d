#include "core/estimate.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/agop.h"
#include "core/kernels.h"
#include "core/linalg.h"
#include "core/status.h"

namespace drfm::core {
namespace {

// Mirrors the block sizes of agop.cc and kernels.cc (scratch they allocate).
constexpr double kDirectRowBlock = 2048;
constexpr double kGramTile = 1024;

double KernelLowerFlops(double n, double d) {
  double flops = 0;
  for (double r0 = 0; r0 < n; r0 += kKernelRowBlock) {
    const double r1 = std::min(n, r0 + kKernelRowBlock);
    flops += 2 * (r1 - r0) * r1 * d;
  }
  return flops;
}

}  // namespace

absl::StatusOr<FitEstimate> EstimateFit(const FitConfig& config, const FitShape& shape) {
  DRFM_RETURN_IF_ERROR(config.Validate());
  if (shape.train_rows < 1 || shape.cols < 1 || shape.test_rows < 0 || shape.num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot estimate a fit of %d training rows, %d test rows, %d columns and %d classes",
        shape.train_rows, shape.test_rows, shape.cols, shape.num_classes));
  }
  const double s = config.precision == Precision::kFloat64 ? 8 : 4;
  const double n = static_cast<double>(shape.train_rows);
  const double nt = static_cast<double>(shape.test_rows);
  const double c = shape.num_classes;
  const double m = (config.agop_samples == 0 || config.agop_samples >= shape.train_rows)
                       ? n
                       : static_cast<double>(config.agop_samples);
  FitEstimate est;
  est.kernel_matrix_bytes = n * n * s;
  auto add = [&est](Phase p, double flops) { est.phase_flops[static_cast<int>(p)] += flops; };
  auto metrics_flops = [&](double d) { return n * d * (4.0 + 2.0 * c); };
  // The kernel machine of one RFM iteration or of the readout.
  auto machine = [&](double d) {
    add(Phase::kKernel, KernelLowerFlops(n, d) + 2 * nt * n * (d + c));
    add(Phase::kSolve, n * n * n / 3 + 2 * n * n * c);
  };

  double peak_extra = 0;
  double d = static_cast<double>(shape.cols);
  for (int layer = 1; layer <= config.layers; ++layer) {
    const double width = config.width > 0 ? config.width : d;
    const bool gram = AgopUseGram(config.agop_method, n, m, d, c);
    for (int t = 1; t <= config.rfm_iterations; ++t) {
      if (t > 1) add(Phase::kKernel, 2 * (n + nt) * d * d);
      machine(d);
      add(Phase::kAgop, gram ? AgopGramFlops(n, m, d, c) : AgopDirectFlops(n, m, d, c));
      if (t > 1) add(Phase::kAgop, 4 * d * d * d);
      if (t < config.rfm_iterations) add(Phase::kAgop, PsdPowerFlops(d));
    }
    add(Phase::kProject, PsdPowerFlops(d) + 2 * (n + nt) * d * d);
    add(Phase::kFeatures, 2 * (n + nt) * d * width);
    add(Phase::kMetrics, metrics_flops(d) * 2 + metrics_flops(width));

    // Live besides the kernel buffer: x and test x, y and alpha, plus the largest phase scratch.
    const double persistent = s * ((n + nt) * d + 3 * n * c);
    const double agop_scratch =
        s * (gram ? n * d + 5 * n * c + 3 * kGramTile * kGramTile + (m < n ? m * d : 0)
                  : n * d + kDirectRowBlock * d + (m < n ? m * d : 0)) +
        (config.rfm_iterations > 1 ? s * (n + nt) * d : 0);
    const double feature_scratch = s * (n + nt) * (d + width);
    const double predict_scratch = s * std::min(nt, static_cast<double>(kKernelRowBlock)) * n;
    const double eigen_scratch = 8 * 8 * d * d;
    peak_extra = std::max(peak_extra, persistent + std::max({agop_scratch, feature_scratch, predict_scratch}) +
                                          eigen_scratch);
    d = width;
  }
  machine(d);
  add(Phase::kMetrics, metrics_flops(d));
  peak_extra = std::max(peak_extra, s * ((n + nt) * d + 3 * n * c + std::min(nt, double(kKernelRowBlock)) * n));
  est.peak_bytes = est.kernel_matrix_bytes + peak_extra;
  for (double f : est.phase_flops) est.flops += f;
  return est;
}

}  // namespace drfm::core
