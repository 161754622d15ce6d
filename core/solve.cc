#include "core/solve.h"

#include <algorithm>

#include <Eigen/Cholesky>

#include "absl/strings/str_cat.h"

namespace drfm::core {
namespace {

// Panel width of the blocked factorization and width of the column strips of the trailing update.
constexpr Eigen::Index kPanel = 256;
constexpr Eigen::Index kStrip = 256;

}  // namespace

template <typename T>
absl::Status CholeskyInPlace(MatrixRef<T> a, const ProgressTick& tick) {
  const Eigen::Index n = a.rows();
  const double total = static_cast<double>(n) * n * n;
  for (Eigen::Index k = 0; k < n; k += kPanel) {
    const Eigen::Index nb = std::min(kPanel, n - k);
    // 1. Diagonal block: unblocked Cholesky (Eigen reads its lower triangle only).
    RowMatrix<T> diag = a.block(k, k, nb, nb);
    Eigen::LLT<Eigen::Ref<RowMatrix<T>>, Eigen::Lower> llt(diag);
    if (llt.info() != Eigen::Success) {
      return absl::FailedPreconditionError(
          absl::StrCat("kernel matrix is not positive definite (pivot block at row ", k, ")"));
    }
    a.block(k, k, nb, nb).template triangularView<Eigen::Lower>() =
        diag.template triangularView<Eigen::Lower>();
    const Eigen::Index below = n - k - nb;
    if (below == 0) break;
    // 2. Panel: L21 = A21 L11^-T, rows split across threads.
    const auto l11 = a.block(k, k, nb, nb).template triangularView<Eigen::Lower>();
    const Eigen::Index chunk = 256;
    const Eigen::Index chunks = (below + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (Eigen::Index c = 0; c < chunks; ++c) {
      const Eigen::Index r0 = k + nb + c * chunk;
      const Eigen::Index rows = std::min(chunk, n - r0);
      auto panel = a.block(r0, k, rows, nb);
      l11.transpose().template solveInPlace<Eigen::OnTheRight>(panel);
    }
    // 3. Trailing update of the lower triangle: A22 -= L21 L21^T, one GEMM per column strip
    // (rows from the strip's diagonal down). Strips shrink, so they are handed out dynamically;
    // each strip is written by one thread with the same arithmetic whichever thread it is.
    const Eigen::Index t0 = k + nb;
    const Eigen::Index strips = (below + kStrip - 1) / kStrip;
#pragma omp parallel for schedule(dynamic, 1)
    for (Eigen::Index s = 0; s < strips; ++s) {
      const Eigen::Index c0 = t0 + s * kStrip;
      const Eigen::Index cols = std::min(kStrip, n - c0);
      const Eigen::Index rows = n - c0;
      a.block(c0, c0, rows, cols).noalias() -=
          a.block(c0, k, rows, nb) * a.block(c0, k, cols, nb).transpose();
    }
    if (tick) {
      const double left = static_cast<double>(n - k - nb);
      if (!tick(1.0 - left * left * left / total)) {
        return absl::CancelledError("cancelled during the Cholesky factorization");
      }
    }
  }
  if (tick && !tick(1.0)) return absl::CancelledError("cancelled during the Cholesky factorization");
  return absl::OkStatus();
}

template <typename T>
void CholeskySolveInPlace(const ConstMatrixRef<T>& l, MatrixRef<T> b) {
  const auto lower = l.template triangularView<Eigen::Lower>();
  lower.solveInPlace(b);
  lower.transpose().solveInPlace(b);
}

template absl::Status CholeskyInPlace<float>(MatrixRef<float>, const ProgressTick&);
template absl::Status CholeskyInPlace<double>(MatrixRef<double>, const ProgressTick&);
template void CholeskySolveInPlace<float>(const ConstMatrixRef<float>&, MatrixRef<float>);
template void CholeskySolveInPlace<double>(const ConstMatrixRef<double>&, MatrixRef<double>);

}  // namespace drfm::core
