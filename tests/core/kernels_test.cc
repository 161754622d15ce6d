// Tests of the kernel matrices and gradient weights.
#include "core/kernels.h"

#include <omp.h>

#include <cmath>
#include <random>

#include <Eigen/Cholesky>

#include <gtest/gtest.h>

namespace drfm::core {
namespace {

template <typename T>
RowMatrix<T> RandomRows(Eigen::Index rows, Eigen::Index cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = static_cast<T>(normal(rng));
  return m;
}

template <typename T>
RowMatrix<T> Full(KernelType kernel, double bw, KernelOutput what, const RowMatrix<T>& a, const RowMatrix<T>& b,
                  Eigen::Index self_offset) {
  RowMatrix<T> out(a.rows(), b.rows());
  const Vector<T> a_sq = RowSquaredNorms<T>(a), b_sq = RowSquaredNorms<T>(b);
  EXPECT_TRUE(KernelFull<T>(kernel, bw, what, a, a_sq, b, b_sq, self_offset, out, nullptr).ok());
  return out;
}

TEST(KernelTest, MatchesTheFormulasOfDeepRfm) {
  const RowMatrixD a = RandomRows<double>(7, 5, 1), b = RandomRows<double>(9, 5, 2);
  const double bw = 1.7;
  const RowMatrixD lap = Full<double>(KernelType::kLaplace, bw, KernelOutput::kValue, a, b, -1);
  const RowMatrixD gau = Full<double>(KernelType::kGaussian, bw, KernelOutput::kValue, a, b, -1);
  const RowMatrixD lap_w = Full<double>(KernelType::kLaplace, bw, KernelOutput::kGradientWeight, a, b, -1);
  const RowMatrixD gau_w = Full<double>(KernelType::kGaussian, bw, KernelOutput::kGradientWeight, a, b, -1);
  for (int i = 0; i < 7; ++i) {
    for (int j = 0; j < 9; ++j) {
      const double dist = (a.row(i) - b.row(j)).norm();
      EXPECT_NEAR(lap(i, j), std::exp(-dist / bw), 1e-12);
      EXPECT_NEAR(gau(i, j), std::exp(-dist * dist / (2 * bw * bw)), 1e-12);
      EXPECT_NEAR(lap_w(i, j), std::exp(-dist / bw) / (bw * dist), 1e-12);
      EXPECT_NEAR(gau_w(i, j), std::exp(-dist * dist / (2 * bw * bw)) / (bw * bw), 1e-12);
    }
  }
}

TEST(KernelTest, IsSymmetricWithUnitDiagonalAndValuesInZeroOne) {
  RowMatrixF x = RandomRows<float>(300, 20, 3);
  NormalizeRows<float>(x);
  for (KernelType kernel : {KernelType::kLaplace, KernelType::kGaussian}) {
    const RowMatrixF k = Full<float>(kernel, 2.0, KernelOutput::kValue, x, x, 0);
    EXPECT_EQ(k.diagonal(), Vector<float>::Ones(300));
    EXPECT_LE((k - k.transpose()).cwiseAbs().maxCoeff(), 1e-6f);
    EXPECT_GT(k.minCoeff(), 0.f);
    EXPECT_LE(k.maxCoeff(), 1.f);
  }
}

TEST(KernelTest, LaplaceKernelMatrixIsPositiveDefinite) {
  RowMatrixD x = RandomRows<double>(120, 6, 4);
  NormalizeRows<double>(x);
  const RowMatrixD k = Full<double>(KernelType::kLaplace, 2.0, KernelOutput::kValue, x, x, 0);
  Eigen::LLT<Eigen::MatrixXd> llt(k);
  EXPECT_EQ(llt.info(), Eigen::Success);
}

TEST(KernelTest, SelfPairsAndDuplicatesHaveZeroGradientWeight) {
  RowMatrixF x = RandomRows<float>(40, 30, 5);
  x.row(11) = x.row(20);
  NormalizeRows<float>(x);
  const RowMatrixF w = Full<float>(KernelType::kLaplace, 2.0, KernelOutput::kGradientWeight, x, x, 0);
  EXPECT_EQ(w.diagonal(), Vector<float>::Zero(40));
  EXPECT_EQ(w(11, 20), 0.f);
  EXPECT_EQ(w(20, 11), 0.f);
  EXPECT_TRUE(w.allFinite());
  const RowMatrixF k = Full<float>(KernelType::kLaplace, 2.0, KernelOutput::kValue, x, x, 0);
  EXPECT_EQ(k(11, 20), 1.f);  // distance recomputed exactly: 0
}

TEST(KernelTest, LowerTriangleMatchesTheFullMatrix) {
  RowMatrixF x = RandomRows<float>(2100, 9, 6);  // more than two row blocks
  NormalizeRows<float>(x);
  const Vector<float> x_sq = RowSquaredNorms<float>(x);
  RowMatrixF lower = RowMatrixF::Constant(2100, 2100, -1.f);
  ASSERT_TRUE(KernelLowerTriangle<float>(KernelType::kLaplace, 2.0, x, x_sq, lower, nullptr).ok());
  const RowMatrixF full = Full<float>(KernelType::kLaplace, 2.0, KernelOutput::kValue, x, x, 0);
  RowMatrixF a = lower.triangularView<Eigen::Lower>();
  RowMatrixF b = full.triangularView<Eigen::Lower>();
  // Different GEMM shapes round differently: float32 round-off only.
  EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 1e-5f);
}

TEST(KernelTest, StopsWhenTheTickSaysSo) {
  RowMatrixF x = RandomRows<float>(3000, 4, 7);
  const Vector<float> x_sq = RowSquaredNorms<float>(x);
  RowMatrixF out(3000, 3000);
  int calls = 0;
  absl::Status s = KernelLowerTriangle<float>(KernelType::kLaplace, 2.0, x, x_sq, out,
                                              [&calls](double) { return ++calls < 2; });
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
  EXPECT_EQ(calls, 2);
}

TEST(KernelTest, PredictEqualsKernelTimesAlpha) {
  const RowMatrixD x = RandomRows<double>(1500, 5, 8), q = RandomRows<double>(1100, 5, 9);
  const RowMatrixD alpha = RandomRows<double>(1500, 3, 10);
  RowMatrixD scores;
  ASSERT_TRUE(KernelPredict<double>(KernelType::kGaussian, 1.5, q, x, RowSquaredNorms<double>(x), alpha, &scores,
                                    nullptr).ok());
  const RowMatrixD k = Full<double>(KernelType::kGaussian, 1.5, KernelOutput::kValue, q, x, -1);
  EXPECT_LT((scores - k * alpha).norm(), 1e-10 * scores.norm());
}

TEST(KernelTest, OneAndTwoThreadsAgree) {
  RowMatrixF x = RandomRows<float>(800, 64, 11);
  NormalizeRows<float>(x);
  omp_set_num_threads(1);
  const RowMatrixF one = Full<float>(KernelType::kLaplace, 2.0, KernelOutput::kGradientWeight, x, x, 0);
  omp_set_num_threads(2);
  const RowMatrixF two = Full<float>(KernelType::kLaplace, 2.0, KernelOutput::kGradientWeight, x, x, 0);
  EXPECT_LT((one - two).norm(), 1e-5f * one.norm());
}

TEST(RowNormalizationTest, GivesUnitRowsAndKeepsZeroRows) {
  RowMatrixD x = RandomRows<double>(10, 4, 12);
  x.row(3).setZero();
  NormalizeRows<double>(x);
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(x.row(i).norm(), i == 3 ? 0.0 : 1.0, 1e-15);
}

}  // namespace
}  // namespace drfm::core
