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

// Flops of agop.cc's Gram form. AgopGramFlops counts W_I^T W_I as a symmetric rank-k update
// (m n^2), but agop.cc computes the lower tiles of Q with the diagonal tiles in full, which cover
// (n^2 + sum of s_t^2) / 2 entries for tiles of s_t rows; the per-entry work on the diagonal tiles
// (2m for W_I^T W_I, 6C for the alpha products, 2d when the W tile is recomputed) is the excess.
double AgopGramTiledFlops(double n, double m, double d, double c) {
  double diagonal = 0;
  for (double b0 = 0; b0 < n; b0 += kGramTile) {
    const double rows = std::min(kGramTile, n - b0);
    diagonal += rows * rows;
  }
  return AgopGramFlops(n, m, d, c) + (m + 3 * c + (m < n ? d : 0)) * diagonal;
}

}  // namespace

absl::StatusOr<FitEstimate> EstimateFit(const FitConfig& config, const FitShape& shape) {
  DRFM_RETURN_IF_ERROR(config.Validate());
  if (shape.train_rows < 1 || shape.cols < 1 || shape.test_rows < 0 || shape.num_classes < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot estimate a fit of %d training rows, %d test rows, %d columns and %d classes",
        shape.train_rows, shape.test_rows, shape.cols, shape.num_classes));
  }
  if (config.agop_samples > shape.train_rows) {  // FitDeepRfm refuses it too
    return absl::InvalidArgumentError(absl::StrFormat(
        "config.agop_samples = %d exceeds the %d training rows; use 0 (all) or at most %d",
        config.agop_samples, shape.train_rows, shape.train_rows));
  }
  const double s = config.precision == Precision::kFloat64 ? 8 : 4;
  const double n = static_cast<double>(shape.train_rows);
  const double nt = static_cast<double>(shape.test_rows);
  const double c = shape.num_classes;
  const double m = (config.agop_samples == 0 || config.agop_samples >= shape.train_rows)
                       ? n
                       : static_cast<double>(config.agop_samples);
  const bool sampled = m < n;
  const bool rfm = config.rfm_iterations > 1;
  FitEstimate est;
  est.kernel_matrix_bytes = n * n * s;
  auto add = [&est](Phase p, double flops) { est.phase_flops[static_cast<int>(p)] += flops; };
  auto metrics_flops = [&](double d) { return n * d * (4.0 + 2.0 * c); };
  // The kernel machine of one RFM iteration or of the readout.
  auto machine = [&](double d) {
    add(Phase::kKernel, KernelLowerFlops(n, d) + 2 * nt * n * (d + c));
    add(Phase::kSolve, n * n * n / 3 + 2 * n * n * c);
  };

  // Memory: the bytes live in each phase of fit.cc, of which the peak is the largest. Every phase
  // holds the n x n buffer, Y (n x C) and the model so far; a layer also holds its input rows X
  // and X_test (d columns); the previous layer's rows are freed when it ends.
  // Scratch of a kernel machine beside alpha and the row norms: the train scores, then the test
  // prediction's row block of k(X_test, X) and its scores (kernels.cc, KernelPredict).
  const double predict_rows = std::min(nt, static_cast<double>(kKernelRowBlock));
  const double machine_bytes = s * (n + n * c + std::max(n * c, nt + predict_rows * n + nt * c));
  const double tile = std::min(n, kGramTile);
  double params = config.standardize ? 2 * s * static_cast<double>(shape.cols) : 0;
  double peak = 0;
  double d = static_cast<double>(shape.cols);
  for (int layer = 1; layer <= config.layers; ++layer) {
    const double width = config.width > 0 ? config.width : d;
    const bool gram = AgopUseGram(config.agop_method, n, m, d, c);
    for (int t = 1; t <= config.rfm_iterations; ++t) {
      if (t > 1) add(Phase::kKernel, 2 * (n + nt) * d * d);
      machine(d);
      add(Phase::kAgop, gram ? AgopGramTiledFlops(n, m, d, c) : AgopDirectFlops(n, m, d, c));
      if (t > 1) add(Phase::kAgop, 4 * d * d * d);
      if (t < config.rfm_iterations) add(Phase::kAgop, PsdPowerFlops(d));
    }
    add(Phase::kProject, PsdPowerFlops(d) + 2 * (n + nt) * d * d);
    add(Phase::kFeatures, 2 * (n + nt) * d * width);
    add(Phase::kMetrics, metrics_flops(d) * 2 + metrics_flops(width));

    const double fixed = est.kernel_matrix_bytes + s * n * c + params;
    // From the second RFM iteration on: the Mahalanobis copies of X and X_test and S = M^(1/2)
    // (double) until the layer ends, and during the fit and AGOP the previous AGOP (double).
    const double mahalanobis = rfm ? s * (n + nt) * d + 8 * d * d : 0;
    const double previous_agop = rfm ? 8 * d * d : 0;
    const double held = fixed + s * (n + nt) * d + mahalanobis;
    // agop.cc: the AGOP (d x d), R = W_I alpha, the sampled rows of X; direct form: diag(alpha_c) X
    // and a row block of G_c; Gram form: [alpha R] and [R alpha], |R|^2, QX and the Q tiles (one
    // more tile of W when sampling). Beside them the row norms and alpha of the kernel machine.
    double agop = s * (n + n * c + m * c + d * d) + (sampled ? s * m * (d + 1) + 8 * n : 0);
    agop += gram ? s * (4 * n * c + n + n * d + (sampled ? 4 : 3) * tile * tile)
                 : s * (n * d + std::min(m, kDirectRowBlock) * d);
    // linalg.cc PsdPower of the AGOP (double): the eigenvectors, V diag(lambda^p) and the power;
    // before the last RFM iteration the AGOP as computed (T) is live too.
    const double eigen = 8 * d * d + 3 * 8 * d * d + (rfm ? s * d * d : 0);
    // Projection: the AGOP, its power (double) and its cast to T, and P.
    const double project = 2 * 8 * d * d + s * d * d + s * n * d;
    // Features: the layer's parameters, P and Phi(P) for train and test.
    const double features = fixed + s * (n + nt) * d + mahalanobis + 8 * d * d +
                            s * (d * d + width * d + width) + s * (n + nt) * (d + width);
    peak = std::max({peak, held + previous_agop + machine_bytes, held + previous_agop + agop,
                     held + eigen, held + project, features});
    params += s * (d * d + width * d + (config.feature_map == FeatureMapType::kCosine ? width : 0));
    d = width;
  }
  machine(d);
  add(Phase::kMetrics, metrics_flops(d));
  // Readout: X and X_test of the last features and the kernel machine.
  peak = std::max(peak, est.kernel_matrix_bytes + s * n * c + params + s * (n + nt) * d + machine_bytes);
  est.peak_bytes = peak;
  for (double f : est.phase_flops) est.flops += f;
  return est;
}

}  // namespace drfm::core
