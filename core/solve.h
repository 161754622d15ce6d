// The kernel ridge solve of DEEP_RFM.md step 2: alpha = (K + lambda I)^-1 Y by a blocked,
// OpenMP-parallel Cholesky factorization done in place in the kernel's own storage, so the fit
// needs a single n x n buffer.
#ifndef DRFM_CORE_SOLVE_H_
#define DRFM_CORE_SOLVE_H_

#include "absl/status/status.h"
#include "core/kernels.h"
#include "core/types.h"

namespace drfm::core {

// Factors the symmetric positive definite matrix whose lower triangle is in `a` (n x n,
// row-major) as L L^T, overwriting the lower triangle with L; the strict upper triangle is used as
// scratch. Right-looking blocked algorithm (Golub & Van Loan, Alg. 4.2.4): the trailing updates
// are GEMMs on column strips spread over OpenMP threads; the result is deterministic for a fixed
// thread count. FailedPrecondition when the matrix is not numerically positive definite (the
// contents of `a` are then undefined); Cancelled when `tick` returns false. Flops: n^3 / 3.
template <typename T>
absl::Status CholeskyInPlace(MatrixRef<T> a, const ProgressTick& tick);

// Solves (L L^T) X = B in place for B (n x k), with L the lower triangle of `l`. Flops: 2 n^2 k.
template <typename T>
void CholeskySolveInPlace(const ConstMatrixRef<T>& l, MatrixRef<T> b);

}  // namespace drfm::core

#endif  // DRFM_CORE_SOLVE_H_
