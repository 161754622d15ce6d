#include "core/linalg.h"

#include <cmath>

#include <Eigen/Eigenvalues>

namespace drfm::core {

absl::StatusOr<SymmetricPower> PsdPower(const RowMatrixD& m, double p) {
  if (m.rows() != m.cols()) return absl::InvalidArgumentError("matrix power needs a square matrix");
  if (!m.allFinite()) {
    return absl::InvalidArgumentError("the AGOP has non-finite entries; the kernel solve diverged");
  }
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(m, Eigen::ComputeEigenvectors);
  if (eig.info() != Eigen::Success) {
    return absl::InternalError("symmetric eigendecomposition of the AGOP did not converge");
  }
  const Eigen::Index d = m.rows();
  Eigen::VectorXd lambda = eig.eigenvalues().cwiseMax(0.0);  // ascending
  Eigen::VectorXd powered = lambda.unaryExpr([p](double v) { return v > 0 ? std::pow(v, p) : 0.0; });
  SymmetricPower out;
  out.power.noalias() = eig.eigenvectors() * powered.asDiagonal() * eig.eigenvectors().transpose();
  out.eigenvalues = lambda.reverse();
  (void)d;
  return out;
}

double PsdPowerFlops(double d) { return 9 * d * d * d; }

double EffectiveRank(const Eigen::VectorXd& eigenvalues) {
  const double sum = eigenvalues.cwiseMax(0.0).sum();
  if (!(sum > 0)) return 0;
  double entropy = 0;
  for (double v : eigenvalues) {
    if (v <= 0) continue;
    const double q = v / sum;
    entropy -= q * std::log(q);
  }
  return std::exp(entropy);
}

}  // namespace drfm::core
