// Kernel matrices of DEEP_RFM.md step 2 (Laplace and Gaussian), and the pairwise weights of their
// gradients used by the AGOP (step 4). Distances come from one GEMM via
// ||x||^2 + ||z||^2 - 2<x, z>, clamped at 0; pairs whose expanded distance is within round-off of
// zero are recomputed directly from the difference, so exact duplicates get distance 0 (and a zero
// gradient weight) in float32 too.
#ifndef DRFM_CORE_KERNELS_H_
#define DRFM_CORE_KERNELS_H_

#include <functional>

#include "absl/status/status.h"
#include "core/config.h"
#include "core/types.h"

namespace drfm::core {

template <typename T>
using ConstMatrixRef = Eigen::Ref<const RowMatrix<T>>;
template <typename T>
using MatrixRef = Eigen::Ref<RowMatrix<T>>;

// Called between blocks of long loops with the fraction done; returns false to stop.
using ProgressTick = std::function<bool(double fraction)>;

// What a kernel block holds.
enum class KernelOutput {
  kValue,           // k(a_i, b_j)
  kGradientWeight,  // w_ij with grad_x k(x, b_j)|_{x=a_i} = w_ij (b_j - a_i): Laplace
                    // k / (L ||a_i - b_j||), Gaussian k / L^2; 0 for pairs closer than 1e-10
};

// Pairs closer than this contribute nothing to the AGOP (the Laplace gradient is undefined there).
inline constexpr double kMinPairDistance = 1e-10;

// Squared Euclidean norm of every row.
template <typename T>
Vector<T> RowSquaredNorms(const ConstMatrixRef<T>& x);

// Scales every row of `x` to unit Euclidean norm in place (zero rows stay zero).
template <typename T>
void NormalizeRows(MatrixRef<T> x);

// out (a.rows() x b.rows()) = kernel output of every pair (a_i, b_j). `a_sq`, `b_sq` are the
// RowSquaredNorms of a and b. When `self_offset` >= 0, row i of `a` is row i + self_offset of `b`
// (the same point): those pairs get k = 1 and weight 0 exactly. Flops: 2 * a.rows * b.rows * d.
// Uses OpenMP over cache-sized tiles (see kKernelTileRows); the result does not depend on the
// thread count.
template <typename T>
void KernelBlock(KernelType kernel, double bandwidth, KernelOutput what, const ConstMatrixRef<T>& a,
                 const Vector<T>& a_sq, const ConstMatrixRef<T>& b, const Vector<T>& b_sq,
                 Eigen::Index self_offset, MatrixRef<T> out);

// The lower triangle (diagonal included) of k(x, x) into `out` (n x n); the strict upper triangle
// is left untouched. Processes row blocks, calling `tick` between them: Cancelled when it returns
// false. Flops: about n^2 d.
template <typename T>
absl::Status KernelLowerTriangle(KernelType kernel, double bandwidth, const ConstMatrixRef<T>& x,
                                 const Vector<T>& x_sq, MatrixRef<T> out, const ProgressTick& tick);

// Full k(a, b) or gradient weights in row blocks of `a`, calling `tick` between blocks; see
// KernelBlock. `self_offset` as there (use 0 when a and b are the same matrix, -1 otherwise).
template <typename T>
absl::Status KernelFull(KernelType kernel, double bandwidth, KernelOutput what,
                        const ConstMatrixRef<T>& a, const Vector<T>& a_sq,
                        const ConstMatrixRef<T>& b, const Vector<T>& b_sq, Eigen::Index self_offset,
                        MatrixRef<T> out, const ProgressTick& tick);

// scores (q.rows() x C) = k(q, x) alpha: the kernel machine's predictions for query rows q, in row
// blocks of q (scratch: one block x n). Flops: 2 q.rows n (d + C). Cancelled when `tick` returns
// false.
template <typename T>
absl::Status KernelPredict(KernelType kernel, double bandwidth, const ConstMatrixRef<T>& q,
                           const ConstMatrixRef<T>& x, const Vector<T>& x_sq,
                           const ConstMatrixRef<T>& alpha, RowMatrix<T>* scores,
                           const ProgressTick& tick);

// Rows per block used by the blocked kernel loops (KernelFull, KernelPredict, ...).
inline constexpr Eigen::Index kKernelRowBlock = 1024;
// KernelBlock's unit of work: tiles of kKernelTileRows rows and kKernelTileBytes (one core's L2
// cache) in all, each a GEMM and the elementwise pass while the tile is in cache.
inline constexpr Eigen::Index kKernelTileRows = 256;
inline constexpr Eigen::Index kKernelTileBytes = Eigen::Index{1} << 20;

}  // namespace drfm::core

#endif  // DRFM_CORE_KERNELS_H_
