// Tests of the blocked Cholesky factorization and solve, and of the symmetric matrix power.
#include "core/solve.h"

#include <omp.h>

#include <random>

#include <Eigen/Cholesky>
#include <gtest/gtest.h>

#include "core/linalg.h"

namespace drfm::core {
namespace {

template <typename T>
RowMatrix<T> RandomSpd(Eigen::Index n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  RowMatrixD a(n, n / 2 + 3);
  for (Eigen::Index i = 0; i < a.rows(); ++i)
    for (Eigen::Index j = 0; j < a.cols(); ++j) a(i, j) = normal(rng);
  RowMatrixD spd = a * a.transpose() / static_cast<double>(a.cols());
  spd.diagonal().array() += 0.5;
  return spd.cast<T>();
}

TEST(CholeskyTest, MatchesEigenLltAcrossPanelBoundaries) {
  for (Eigen::Index n : {1, 5, 256, 257, 700}) {
    const RowMatrixD a = RandomSpd<double>(n, n);
    RowMatrixD f = a;
    ASSERT_TRUE(CholeskyInPlace<double>(f, nullptr).ok()) << n;
    const RowMatrixD l = f.triangularView<Eigen::Lower>();
    EXPECT_LT((l * l.transpose() - a).norm(), 1e-12 * a.norm()) << n;
    const Eigen::MatrixXd ref = Eigen::LLT<Eigen::MatrixXd>(a).matrixL();
    EXPECT_LT((l - ref).norm(), 1e-12 * ref.norm()) << n;
  }
}

TEST(CholeskyTest, SolveHasSmallResidual) {
  const RowMatrixF a = RandomSpd<float>(600, 1);
  std::mt19937_64 rng(2);
  std::normal_distribution<float> normal;
  RowMatrixF b(600, 4);
  for (Eigen::Index i = 0; i < b.size(); ++i) b.data()[i] = normal(rng);
  RowMatrixF f = a, x = b;
  ASSERT_TRUE(CholeskyInPlace<float>(f, nullptr).ok());
  CholeskySolveInPlace<float>(f, x);
  EXPECT_LT((a * x - b).norm() / b.norm(), 1e-4f);
}

TEST(CholeskyTest, RejectsAMatrixThatIsNotPositiveDefinite) {
  RowMatrixD a = RandomSpd<double>(400, 3);
  a(300, 300) = -5;
  absl::Status s = CholeskyInPlace<double>(a, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST(CholeskyTest, IsBitIdenticalForOneAndTwoThreads) {
  // Strips and panel chunks are the same whatever the thread count, and each is computed by one
  // thread with the same arithmetic.
  const RowMatrixF a = RandomSpd<float>(900, 4);
  RowMatrixF one = a, two = a;
  omp_set_num_threads(1);
  ASSERT_TRUE(CholeskyInPlace<float>(one, nullptr).ok());
  omp_set_num_threads(2);
  ASSERT_TRUE(CholeskyInPlace<float>(two, nullptr).ok());
  RowMatrixF l1 = one.triangularView<Eigen::Lower>(), l2 = two.triangularView<Eigen::Lower>();
  EXPECT_EQ(l1, l2);
}

TEST(CholeskyTest, StopsWhenTheTickSaysSo) {
  RowMatrixF a = RandomSpd<float>(1000, 5);
  absl::Status s = CholeskyInPlace<float>(a, [](double) { return false; });
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
}

TEST(PsdPowerTest, SquareRootSquaresBackAndClipsNegativeEigenvalues) {
  RowMatrixD m = RandomSpd<double>(30, 6);
  auto root = PsdPower(m, 0.5);
  ASSERT_TRUE(root.ok());
  EXPECT_LT((root->power * root->power - m).norm(), 1e-10 * m.norm());
  EXPECT_LT((root->power - root->power.transpose()).norm(), 1e-12);
  // An indefinite matrix: eigenvalues 2, -1 -> the power keeps only the positive part.
  RowMatrixD ind(2, 2);
  ind << 0.5, 1.5, 1.5, 0.5;
  auto p = PsdPower(ind, 1.0);
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(p->eigenvalues(0), 2.0, 1e-12);
  EXPECT_EQ(p->eigenvalues(1), 0.0);
  RowMatrixD expected(2, 2);
  expected << 1, 1, 1, 1;
  EXPECT_LT((p->power - expected).norm(), 1e-12);
}

TEST(PsdPowerTest, RejectsNonFiniteInput) {
  RowMatrixD m = RowMatrixD::Identity(3, 3);
  m(1, 2) = std::nan("");
  EXPECT_EQ(PsdPower(m, 0.5).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EffectiveRankTest, CountsEqualEigenvaluesAndIgnoresZeros) {
  Eigen::VectorXd v(5);
  v << 3, 3, 3, 0, 0;
  EXPECT_NEAR(EffectiveRank(v), 3.0, 1e-12);
  Eigen::VectorXd one(3);
  one << 1, 0, 0;
  EXPECT_NEAR(EffectiveRank(one), 1.0, 1e-12);
  EXPECT_EQ(EffectiveRank(Eigen::VectorXd::Zero(4)), 0.0);
}

}  // namespace
}  // namespace drfm::core
