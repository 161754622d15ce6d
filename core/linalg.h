// Symmetric positive semi-definite matrix functions for the AGOP (DEEP_RFM.md step 5): the power
// M^p through a symmetric eigendecomposition with negative eigenvalues clipped to 0, and the
// spectrum statistics the layer reports carry.
#ifndef DRFM_CORE_LINALG_H_
#define DRFM_CORE_LINALG_H_

#include "absl/status/statusor.h"
#include "core/types.h"

namespace drfm::core {

struct SymmetricPower {
  RowMatrixD power;             // V diag(max(lambda, 0)^p) V^T
  Eigen::VectorXd eigenvalues;  // clipped at 0, descending
};

// M^p for symmetric `m` (only its lower triangle is read), computed in double. InvalidArgument
// when `m` is not square or has a non-finite entry. Flops: about 9 d^3 (Eigen's tridiagonal QR
// with vectors, plus the reconstruction).
absl::StatusOr<SymmetricPower> PsdPower(const RowMatrixD& m, double p);

// Flops counted for PsdPower on a d x d matrix.
double PsdPowerFlops(double d);

// exp of the Shannon entropy of the eigenvalues normalized to sum 1 (Roy & Vetterli 2007);
// 0 when they sum to 0.
double EffectiveRank(const Eigen::VectorXd& eigenvalues);

}  // namespace drfm::core

#endif  // DRFM_CORE_LINALG_H_
