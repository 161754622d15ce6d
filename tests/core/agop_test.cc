// Tests of the AGOP: both exact forms against finite differences of the fitted predictor, against
// each other, with row sampling, and its basic properties.
#include "core/agop.h"

#include <omp.h>

#include <random>

#include <Eigen/Eigenvalues>

#include <gtest/gtest.h>

#include "core/kernels.h"

namespace drfm::core {
namespace {

template <typename T>
RowMatrix<T> RandomMatrix(Eigen::Index rows, Eigen::Index cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = static_cast<T>(normal(rng));
  return m;
}

// The predictor f_c(x) = sum_{j != skip} alpha_jc k(x, x_j), evaluated directly.
double Predictor(KernelType kernel, double bw, const RowMatrixD& x, const RowMatrixD& alpha,
                 const Eigen::VectorXd& point, Eigen::Index skip, Eigen::Index c) {
  double f = 0;
  for (Eigen::Index j = 0; j < x.rows(); ++j) {
    if (j == skip) continue;
    const double dist = (point - x.row(j).transpose()).norm();
    const double k = kernel == KernelType::kLaplace ? std::exp(-dist / bw) : std::exp(-dist * dist / (2 * bw * bw));
    f += alpha(j, c) * k;
  }
  return f;
}

// AGOP by central finite differences of the predictor at each sample (the self pair excluded,
// as DEEP_RFM.md prescribes).
RowMatrixD FiniteDifferenceAgop(KernelType kernel, double bw, const RowMatrixD& x, const RowMatrixD& alpha,
                                const std::vector<Eigen::Index>& samples) {
  const Eigen::Index d = x.cols();
  RowMatrixD m = RowMatrixD::Zero(d, d);
  const double h = 1e-6;
  for (Eigen::Index i : samples) {
    for (Eigen::Index c = 0; c < alpha.cols(); ++c) {
      Eigen::VectorXd grad(d);
      for (Eigen::Index k = 0; k < d; ++k) {
        Eigen::VectorXd plus = x.row(i).transpose(), minus = x.row(i).transpose();
        plus(k) += h;
        minus(k) -= h;
        grad(k) = (Predictor(kernel, bw, x, alpha, plus, i, c) - Predictor(kernel, bw, x, alpha, minus, i, c)) / (2 * h);
      }
      m += grad * grad.transpose();
    }
  }
  return m / static_cast<double>(samples.size());
}

template <typename T>
AgopResult<T> Agop(KernelType kernel, double bw, const RowMatrix<T>& x, const RowMatrix<T>& alpha,
                   const std::vector<Eigen::Index>& samples, AgopMethod method) {
  const Vector<T> x_sq = RowSquaredNorms<T>(x);
  std::vector<T> buffer(static_cast<size_t>(x.rows()) * x.rows());
  auto result = ComputeAgop<T>(kernel, bw, x, x_sq, alpha, samples, method, buffer.data(), nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return *std::move(result);
}

double RelativeError(const RowMatrixD& a, const RowMatrixD& b) { return (a - b).norm() / b.norm(); }

struct Case {
  KernelType kernel;
  AgopMethod method;
};

class AgopFormTest : public ::testing::TestWithParam<Case> {};

TEST_P(AgopFormTest, MatchesFiniteDifferencesOfThePredictor) {
  const Case c = GetParam();
  RowMatrixD x = RandomMatrix<double>(30, 5, 1);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(30, 3, 2);
  std::vector<Eigen::Index> all(30);
  for (int i = 0; i < 30; ++i) all[i] = i;
  const AgopResult<double> agop = Agop<double>(c.kernel, 0.7, x, alpha, {}, c.method);
  EXPECT_EQ(agop.gram, c.method == AgopMethod::kGram);
  const RowMatrixD fd = FiniteDifferenceAgop(c.kernel, 0.7, x, alpha, all);
  // Central differences with h = 1e-6 carry about 1e-9 relative error.
  EXPECT_LT(RelativeError(agop.m, fd), 1e-6);
}

TEST_P(AgopFormTest, MatchesFiniteDifferencesWithSampledRows) {
  const Case c = GetParam();
  RowMatrixD x = RandomMatrix<double>(25, 4, 3);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(25, 2, 4);
  const std::vector<Eigen::Index> samples = {0, 3, 4, 10, 17, 24};
  const AgopResult<double> agop = Agop<double>(c.kernel, 1.3, x, alpha, samples, c.method);
  const RowMatrixD fd = FiniteDifferenceAgop(c.kernel, 1.3, x, alpha, samples);
  EXPECT_LT(RelativeError(agop.m, fd), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Forms, AgopFormTest,
                         ::testing::Values(Case{KernelType::kLaplace, AgopMethod::kDirect},
                                           Case{KernelType::kLaplace, AgopMethod::kGram},
                                           Case{KernelType::kGaussian, AgopMethod::kDirect},
                                           Case{KernelType::kGaussian, AgopMethod::kGram}));

TEST(AgopTest, DirectAndGramFormsAgreeAcrossSeveralTiles) {
  // n > 1024 exercises the Gram form's tiling, including a partial last tile.
  RowMatrixD x = RandomMatrix<double>(1500, 12, 5);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(1500, 3, 6);
  const AgopResult<double> direct = Agop<double>(KernelType::kLaplace, 2.0, x, alpha, {}, AgopMethod::kDirect);
  const AgopResult<double> gram = Agop<double>(KernelType::kLaplace, 2.0, x, alpha, {}, AgopMethod::kGram);
  EXPECT_LT(RelativeError(gram.m, direct.m), 1e-10);
}

TEST(AgopTest, DirectAndGramFormsAgreeWithSampledRowsAcrossTiles) {
  RowMatrixD x = RandomMatrix<double>(1300, 6, 7);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(1300, 2, 8);
  std::vector<Eigen::Index> samples;
  for (Eigen::Index i = 0; i < 1300; i += 3) samples.push_back(i);
  const AgopResult<double> direct = Agop<double>(KernelType::kGaussian, 1.0, x, alpha, samples, AgopMethod::kDirect);
  const AgopResult<double> gram = Agop<double>(KernelType::kGaussian, 1.0, x, alpha, samples, AgopMethod::kGram);
  EXPECT_LT(RelativeError(gram.m, direct.m), 1e-10);
}

TEST(AgopTest, IsSymmetricPositiveSemidefinite) {
  RowMatrixD x = RandomMatrix<double>(200, 8, 9);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(200, 4, 10);
  for (AgopMethod method : {AgopMethod::kDirect, AgopMethod::kGram}) {
    const RowMatrixD m = Agop<double>(KernelType::kLaplace, 2.0, x, alpha, {}, method).m;
    EXPECT_LT((m - m.transpose()).norm(), 1e-12 * m.norm());
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(m);
    EXPECT_GT(eig.eigenvalues().minCoeff(), -1e-12 * eig.eigenvalues().maxCoeff());
  }
}

TEST(AgopTest, Float32AgreesWithFloat64ToRoundOff) {
  RowMatrixD x = RandomMatrix<double>(600, 16, 11);
  NormalizeRows<double>(x);
  const RowMatrixD alpha = RandomMatrix<double>(600, 3, 12);
  const RowMatrixF xf = x.cast<float>(), alphaf = alpha.cast<float>();
  for (AgopMethod method : {AgopMethod::kDirect, AgopMethod::kGram}) {
    const RowMatrixD m64 = Agop<double>(KernelType::kLaplace, 2.0, x, alpha, {}, method).m;
    const RowMatrixD m32 = Agop<float>(KernelType::kLaplace, 2.0, xf, alphaf, {}, method).m.cast<double>();
    // Sums of ~n^2 float terms: allow 1e-4 relative.
    EXPECT_LT(RelativeError(m32, m64), 1e-4);
  }
}

TEST(AgopTest, DuplicateRowsContributeNothingInFloat32) {
  // Two identical points: the pair's Laplace gradient is undefined and must be skipped, also when
  // float32 round-off leaves the expanded distance slightly above 0.
  RowMatrixF x = RandomMatrix<float>(50, 10, 13);
  x.row(7) = x.row(3);
  NormalizeRows<float>(x);
  const RowMatrixF alpha = RandomMatrix<float>(50, 2, 14);
  const RowMatrixD m = Agop<float>(KernelType::kLaplace, 2.0, x, alpha, {}, AgopMethod::kDirect).m.cast<double>();
  EXPECT_TRUE(m.allFinite());
  RowMatrixD xd = x.cast<double>();
  xd.row(7) = xd.row(3);
  std::vector<Eigen::Index> all(50);
  for (int i = 0; i < 50; ++i) all[i] = i;
  // The finite-difference reference skips only the self pair; the duplicate pair's k(x, x_j) term
  // is evaluated exactly at its kink, where the central difference of |x - x_j| is 0: same rule.
  const RowMatrixD fd = FiniteDifferenceAgop(KernelType::kLaplace, 2.0, xd, alpha.cast<double>(), all);
  EXPECT_LT(RelativeError(m, fd), 1e-4);
}

TEST(AgopTest, OneAndTwoThreadsAgree) {
  RowMatrixF x = RandomMatrix<float>(1200, 20, 15);
  NormalizeRows<float>(x);
  const RowMatrixF alpha = RandomMatrix<float>(1200, 3, 16);
  for (AgopMethod method : {AgopMethod::kDirect, AgopMethod::kGram}) {
    omp_set_num_threads(1);
    const RowMatrixF one = Agop<float>(KernelType::kLaplace, 2.0, x, alpha, {}, method).m;
    omp_set_num_threads(2);
    const RowMatrixF two = Agop<float>(KernelType::kLaplace, 2.0, x, alpha, {}, method).m;
    const RowMatrixF again = Agop<float>(KernelType::kLaplace, 2.0, x, alpha, {}, method).m;
    EXPECT_LT(RelativeError(one.cast<double>(), two.cast<double>()), 1e-5);
    EXPECT_EQ(two, again) << "not reproducible at a fixed thread count";
  }
}

TEST(AgopTest, AutoPicksTheFormWithFewerFlops) {
  // Many rows, few classes x features: direct is cheaper; few rows, wide features: Gram.
  EXPECT_FALSE(AgopUseGram(AgopMethod::kAuto, 60000, 60000, 784, 10));
  EXPECT_TRUE(AgopUseGram(AgopMethod::kAuto, 5000, 5000, 784, 10));
  EXPECT_TRUE(AgopUseGram(AgopMethod::kGram, 60000, 60000, 784, 10));
  EXPECT_FALSE(AgopUseGram(AgopMethod::kDirect, 100, 100, 784, 10));
}

}  // namespace
}  // namespace drfm::core
