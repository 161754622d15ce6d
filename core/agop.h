// The Average Gradient Outer Product of a kernel predictor f(x) = sum_j alpha_j k(x, x_j)
// (DEEP_RFM.md step 4), computed exactly by either of its two forms:
//   direct: G_c = W diag(alpha_c) X - diag(R_c) X per class, M = (1/m) sum_c G_c^T G_c;
//   Gram:   M = (1/m) X^T Q X, Q = (W_I^T W_I) o (alpha alpha^T) - T - T^T + diag(|R_j|^2 [j in I]).
// with W the gradient weights (kernels.h), R = W_I alpha. Both reuse one caller-provided buffer
// of at least m x n for W_I, so the AGOP adds only O((n + m) d + tile^2) memory to the fit.
#ifndef DRFM_CORE_AGOP_H_
#define DRFM_CORE_AGOP_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/config.h"
#include "core/kernels.h"

namespace drfm::core {

// Flop counts of the two forms for n points, m AGOP rows, d features and C outputs, counting the
// gradient-weight kernel as well. Used to choose a form (kAuto) and by the estimator.
double AgopDirectFlops(double n, double m, double d, double c);
double AgopGramFlops(double n, double m, double d, double c);
// The form kAuto picks: the one with fewer flops.
bool AgopUseGram(AgopMethod method, double n, double m, double d, double c);

template <typename T>
struct AgopResult {
  RowMatrix<T> m;      // d x d, (1/m) sum of gradient outer products, not normalized
  bool gram = false;   // which form was used
  double flops = 0;    // flops performed
};

// AGOP of f(x) = sum_j alpha_j k(x, x_j) over the rows `samples` of x (empty = all rows), with
// gradients taken with respect to x (the kernel's own input space). `x` is n x d, `x_sq` its row
// norms, `alpha` n x C. `buffer` must hold at least m x n values; its contents are overwritten.
// Cancelled when `tick` returns false. Deterministic for a fixed thread count.
template <typename T>
absl::StatusOr<AgopResult<T>> ComputeAgop(KernelType kernel, double bandwidth,
                                         const ConstMatrixRef<T>& x, const Vector<T>& x_sq,
                                         const ConstMatrixRef<T>& alpha,
                                         const std::vector<Eigen::Index>& samples,
                                         AgopMethod method, T* buffer, const ProgressTick& tick);

}  // namespace drfm::core

#endif  // DRFM_CORE_AGOP_H_
