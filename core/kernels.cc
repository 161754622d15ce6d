#include "core/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/tiles.h"

namespace drfm::core {
namespace {

// Expanded squared distances below kNearFactor * eps * (|a|^2 + |b|^2) are dominated by
// cancellation error and are recomputed from the difference.
constexpr double kNearFactor = 64.0;

// Rows per block of the blocked kernel loops: large enough for GEMM efficiency, small enough for
// prompt cancellation and bounded scratch.
constexpr Eigen::Index kRowBlock = kKernelRowBlock;

}  // namespace

template <typename T>
Vector<T> RowSquaredNorms(const ConstMatrixRef<T>& x) {
  return x.rowwise().squaredNorm();
}

template <typename T>
void NormalizeRows(MatrixRef<T> x) {
  const Eigen::Index n = x.rows();
#pragma omp parallel for schedule(static)
  for (Eigen::Index i = 0; i < n; ++i) {
    const T norm = x.row(i).norm();
    if (norm > T(0)) x.row(i) /= norm;
  }
}

template <typename T>
void KernelBlock(KernelType kernel, double bandwidth, KernelOutput what, const ConstMatrixRef<T>& a,
                 const Vector<T>& a_sq, const ConstMatrixRef<T>& b, const Vector<T>& b_sq,
                 Eigen::Index self_offset, MatrixRef<T> out) {
  const Eigen::Index rows = a.rows();
  const Eigen::Index cols = b.rows();
  const T near = static_cast<T>(kNearFactor * std::numeric_limits<T>::epsilon());
  const T inv_bw = static_cast<T>(1.0 / bandwidth);
  const T inv_two_bw2 = static_cast<T>(1.0 / (2.0 * bandwidth * bandwidth));
  const T inv_bw2 = static_cast<T>(1.0 / (bandwidth * bandwidth));
  const T min_dist = static_cast<T>(kMinPairDistance);
  const bool laplace = kernel == KernelType::kLaplace;
  const bool weight = what == KernelOutput::kGradientWeight;
  // The output is cut into tiles that fit in one core's L2 cache (core/tiles.h): each is a GEMM
  // followed, while the tile is still in cache, by the elementwise pass that turns inner products
  // into kernel values. That saves the second trip through memory a full-width GEMM followed by
  // an elementwise pass needs.
  const Eigen::Index tile_cols =
      kKernelTileBytes / (kKernelTileRows * static_cast<Eigen::Index>(sizeof(T)));
  ForEachTile(
      rows, cols, kKernelTileRows, tile_cols,
      [&](Eigen::Index i0, Eigen::Index ni, Eigen::Index j0, Eigen::Index nj) {
        auto tile = out.block(i0, j0, ni, nj);
        tile.noalias() = a.middleRows(i0, ni) * b.middleRows(j0, nj).transpose();
        const auto bj_sq = b_sq.segment(j0, nj).transpose().array();
        for (Eigen::Index i = 0; i < ni; ++i) {
          auto r = tile.row(i).array();
          const T ai = a_sq(i0 + i);
          r = (ai + bj_sq - T(2) * r).max(T(0));
          // Near pairs are rare: test the whole row vectorized and walk it only when one is there.
          if ((r < near * (ai + bj_sq)).any()) {
            for (Eigen::Index j = 0; j < nj; ++j) {
              if (r(j) < near * (ai + bj_sq(j)))
                r(j) = (a.row(i0 + i) - b.row(j0 + j)).squaredNorm();
            }
          }
          if (laplace) {
            if (weight) {
              // w = exp(-d/L) / (L d), 0 for d < 1e-10.
              auto dist = r.sqrt();
              r = (dist >= min_dist).select((-dist * inv_bw).exp() / (dist * T(bandwidth)), T(0));
            } else {
              r = (-r.sqrt() * inv_bw).exp();
            }
          } else {
            if (weight) {
              r = (r.sqrt() >= min_dist).select((-r * inv_two_bw2).exp() * inv_bw2, T(0));
            } else {
              r = (-r * inv_two_bw2).exp();
            }
          }
          if (self_offset >= 0) {
            // Column of the same point as row i0 + i, if it falls in this tile.
            const Eigen::Index j = i0 + i + self_offset - j0;
            if (j >= 0 && j < nj) r(j) = weight ? T(0) : T(1);
          }
        }
      });
}

template <typename T>
absl::Status KernelLowerTriangle(KernelType kernel, double bandwidth, const ConstMatrixRef<T>& x,
                                 const Vector<T>& x_sq, MatrixRef<T> out,
                                 const ProgressTick& tick) {
  const Eigen::Index n = x.rows();
  const double total = 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
  for (Eigen::Index r0 = 0; r0 < n; r0 += kRowBlock) {
    const Eigen::Index r1 = std::min(n, r0 + kRowBlock);
    // Rows [r0, r1) against columns [0, r1): the block of the lower triangle plus the part of the
    // diagonal block above it, which is harmless to write.
    KernelBlock<T>(kernel, bandwidth, KernelOutput::kValue, x.middleRows(r0, r1 - r0),
                   x_sq.segment(r0, r1 - r0), x.topRows(r1), x_sq.head(r1), r0,
                   out.block(r0, 0, r1 - r0, r1));
    const double done = 0.5 * static_cast<double>(r1) * static_cast<double>(r1 + 1);
    if (tick && !tick(done / total)) return absl::CancelledError("cancelled while computing the kernel");
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status KernelFull(KernelType kernel, double bandwidth, KernelOutput what,
                        const ConstMatrixRef<T>& a, const Vector<T>& a_sq,
                        const ConstMatrixRef<T>& b, const Vector<T>& b_sq, Eigen::Index self_offset,
                        MatrixRef<T> out, const ProgressTick& tick) {
  const Eigen::Index n = a.rows();
  for (Eigen::Index r0 = 0; r0 < n; r0 += kRowBlock) {
    const Eigen::Index rows = std::min(kRowBlock, n - r0);
    KernelBlock<T>(kernel, bandwidth, what, a.middleRows(r0, rows), a_sq.segment(r0, rows), b,
                   b_sq, self_offset >= 0 ? self_offset + r0 : -1, out.middleRows(r0, rows));
    if (tick && !tick(static_cast<double>(r0 + rows) / static_cast<double>(n))) {
      return absl::CancelledError("cancelled while computing the kernel");
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status KernelPredict(KernelType kernel, double bandwidth, const ConstMatrixRef<T>& q,
                           const ConstMatrixRef<T>& x, const Vector<T>& x_sq,
                           const ConstMatrixRef<T>& alpha, RowMatrix<T>* scores,
                           const ProgressTick& tick) {
  const Eigen::Index rows = q.rows();
  scores->resize(rows, alpha.cols());
  const Vector<T> q_sq = RowSquaredNorms<T>(q);
  RowMatrix<T> block;
  for (Eigen::Index r0 = 0; r0 < rows; r0 += kRowBlock) {
    const Eigen::Index nr = std::min(kRowBlock, rows - r0);
    block.resize(nr, x.rows());
    KernelBlock<T>(kernel, bandwidth, KernelOutput::kValue, q.middleRows(r0, nr),
                   q_sq.segment(r0, nr), x, x_sq, -1, block);
    scores->middleRows(r0, nr).noalias() = block * alpha;
    if (tick && !tick(static_cast<double>(r0 + nr) / static_cast<double>(rows))) {
      return absl::CancelledError("cancelled while predicting");
    }
  }
  return absl::OkStatus();
}

#define DRFM_INSTANTIATE_KERNELS(T)                                                              \
  template Vector<T> RowSquaredNorms<T>(const ConstMatrixRef<T>&);                               \
  template void NormalizeRows<T>(MatrixRef<T>);                                                  \
  template void KernelBlock<T>(KernelType, double, KernelOutput, const ConstMatrixRef<T>&,       \
                               const Vector<T>&, const ConstMatrixRef<T>&, const Vector<T>&,     \
                               Eigen::Index, MatrixRef<T>);                                      \
  template absl::Status KernelLowerTriangle<T>(KernelType, double, const ConstMatrixRef<T>&,     \
                                               const Vector<T>&, MatrixRef<T>,                   \
                                               const ProgressTick&);                             \
  template absl::Status KernelFull<T>(KernelType, double, KernelOutput, const ConstMatrixRef<T>&, \
                                      const Vector<T>&, const ConstMatrixRef<T>&,                 \
                                      const Vector<T>&, Eigen::Index, MatrixRef<T>,               \
                                      const ProgressTick&);                                      \
  template absl::Status KernelPredict<T>(KernelType, double, const ConstMatrixRef<T>&,            \
                                         const ConstMatrixRef<T>&, const Vector<T>&,              \
                                         const ConstMatrixRef<T>&, RowMatrix<T>*,                 \
                                         const ProgressTick&);
DRFM_INSTANTIATE_KERNELS(float)
DRFM_INSTANTIATE_KERNELS(double)
#undef DRFM_INSTANTIATE_KERNELS

}  // namespace drfm::core
