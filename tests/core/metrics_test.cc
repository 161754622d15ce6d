// GCC 12's AVX-512 intrinsics give false (maybe-)uninitialized warnings inside Eigen's products
// and reductions (https://gcc.gnu.org/bugzilla/show_bug.cgi?id=105593, fixed in GCC 13). The
// brute force below needs those Eigen paths, so the warnings are silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "core/metrics.h"

#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

// Relative tolerance for quantities that are equal in exact arithmetic and differ only by the
// order of a few double sums.
constexpr double kRoundoff = 1e-12;

struct Problem {
  RowMatrixD h;
  std::vector<int32_t> labels;
  int num_classes = 0;
};

// `per_class` noisy rows around each of `num_classes` random centers in `dims` dimensions, with
// the classes interleaved (row i has label i % num_classes).
Problem MakeClusters(int num_classes, int per_class, int dims, double spread, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  RowMatrixD centers(num_classes, dims);
  for (int c = 0; c < num_classes; ++c) {
    for (int j = 0; j < dims; ++j) centers(c, j) = 2.0 * normal(gen);
  }
  Problem problem;
  problem.num_classes = num_classes;
  const int n = num_classes * per_class;
  problem.h.resize(n, dims);
  for (int i = 0; i < n; ++i) {
    const int c = i % num_classes;
    problem.labels.push_back(c);
    for (int j = 0; j < dims; ++j) problem.h(i, j) = centers(c, j) + spread * normal(gen);
  }
  return problem;
}

CollapseMetrics Compute(const Problem& problem) {
  absl::StatusOr<CollapseMetrics> metrics =
      ComputeCollapseMetrics<double>(problem.h, problem.labels, problem.num_classes);
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return metrics.ok() ? *metrics : CollapseMetrics{};
}

RowMatrixD RandomOrthogonal(int dims, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd a(dims, dims);
  for (int i = 0; i < dims; ++i) {
    for (int j = 0; j < dims; ++j) a(i, j) = normal(gen);
  }
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
  return qr.householderQ() * Eigen::MatrixXd::Identity(dims, dims);
}

void ExpectRelativelyNear(double actual, double expected, double tolerance, const char* what) {
  EXPECT_NEAR(actual, expected, tolerance * std::abs(expected)) << what;
}

void ExpectSameMetrics(const CollapseMetrics& actual, const CollapseMetrics& expected,
                       double tolerance) {
  ExpectRelativelyNear(actual.nc1, expected.nc1, tolerance, "nc1");
  ExpectRelativelyNear(actual.nc1_pinv, expected.nc1_pinv, tolerance, "nc1_pinv");
  ExpectRelativelyNear(actual.nc2, expected.nc2, tolerance, "nc2");
  ExpectRelativelyNear(actual.nc2_equinorm, expected.nc2_equinorm, tolerance, "nc2_equinorm");
  EXPECT_EQ(actual.ncc_accuracy, expected.ncc_accuracy);
}

void ExpectIdenticalMetrics(const CollapseMetrics& actual, const CollapseMetrics& expected) {
  EXPECT_EQ(actual.nc1, expected.nc1);
  EXPECT_EQ(actual.nc1_pinv, expected.nc1_pinv);
  EXPECT_EQ(actual.nc2, expected.nc2);
  EXPECT_EQ(actual.nc2_equinorm, expected.nc2_equinorm);
  EXPECT_EQ(actual.ncc_accuracy, expected.ncc_accuracy);
}

// A simplex ETF of `num_classes` vertices (rows e_c - 1/C, unit norm) rotated into `dims` > C
// dimensions, `copies` identical rows per class.
Problem MakeCollapsedSimplex(int num_classes, int dims, int copies, double scale) {
  const int c_count = num_classes;
  Eigen::MatrixXd vertices = Eigen::MatrixXd::Zero(c_count, dims);
  for (int c = 0; c < c_count; ++c) {
    for (int d = 0; d < c_count; ++d) vertices(c, d) = (c == d ? 1.0 : 0.0) - 1.0 / c_count;
    vertices.row(c).normalize();
  }
  const Eigen::MatrixXd rotated = scale * vertices * RandomOrthogonal(dims, 7);
  Problem problem;
  problem.num_classes = c_count;
  problem.h.resize(c_count * copies, dims);
  for (int i = 0; i < c_count * copies; ++i) {
    problem.labels.push_back(i % c_count);
    problem.h.row(i) = rotated.row(i % c_count);
  }
  return problem;
}

TEST(CollapseMetricsTest, CollapsedSimplexEtfHasZeroVariabilityAndPerfectNcc) {
  for (int num_classes : {3, 4}) {
    const Problem problem = MakeCollapsedSimplex(num_classes, 9, 5, 3.0);
    const CollapseMetrics m = Compute(problem);
    // Each class's rows are identical, so Sigma_W is zero up to the round-off of a mean of 5
    // equal numbers; the class means form an exact ETF up to the rotation's round-off.
    EXPECT_NEAR(m.nc1, 0, 1e-28) << num_classes;
    EXPECT_NEAR(m.nc1_pinv, 0, 1e-28) << num_classes;
    EXPECT_NEAR(m.nc2, 0, 1e-28) << num_classes;
    EXPECT_NEAR(m.nc2_equinorm, 0, 1e-14) << num_classes;
    EXPECT_EQ(m.ncc_accuracy, 1.0) << num_classes;
  }
}

TEST(CollapseMetricsTest, CollapsedSimplexEtfInFloatHasZeroVariability) {
  const Problem problem = MakeCollapsedSimplex(4, 6, 3, 1.0);
  const RowMatrixF h = problem.h.cast<float>();
  absl::StatusOr<CollapseMetrics> m =
      ComputeCollapseMetrics<float>(h, problem.labels, problem.num_classes);
  ASSERT_TRUE(m.ok()) << m.status();
  // Rounding the ETF to float perturbs the class means by ~1e-7 relative: nc2 is a sum of
  // squared perturbations and equinorm a first-order one.
  EXPECT_NEAR(m->nc1, 0, 1e-28);
  EXPECT_NEAR(m->nc1_pinv, 0, 1e-28);
  EXPECT_NEAR(m->nc2, 0, 1e-12);
  EXPECT_NEAR(m->nc2_equinorm, 0, 1e-6);
  EXPECT_EQ(m->ncc_accuracy, 1.0);
}

TEST(CollapseMetricsTest, VariabilityMetricsAreInvariantToScalingTheRepresentation) {
  const Problem problem = MakeClusters(4, 30, 12, 1.5, 1);
  const CollapseMetrics base = Compute(problem);
  for (double scale : {1e-3, 3.7, 1e4}) {
    Problem scaled = problem;
    scaled.h *= scale;
    ExpectSameMetrics(Compute(scaled), base, kRoundoff);
  }
}

TEST(CollapseMetricsTest, MetricsAreInvariantToRenamingTheClasses) {
  const Problem problem = MakeClusters(5, 20, 8, 1.5, 2);
  const CollapseMetrics base = Compute(problem);
  const std::vector<int32_t> rename = {3, 0, 4, 1, 2};
  Problem renamed = problem;
  for (int32_t& y : renamed.labels) y = rename[y];
  ExpectSameMetrics(Compute(renamed), base, kRoundoff);
}

TEST(CollapseMetricsTest, MetricsAreInvariantToPermutingTheRows) {
  const Problem problem = MakeClusters(3, 40, 10, 1.5, 3);
  const CollapseMetrics base = Compute(problem);
  std::vector<int> perm(problem.h.rows());
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 gen(4);
  std::shuffle(perm.begin(), perm.end(), gen);
  Problem shuffled = problem;
  for (size_t i = 0; i < perm.size(); ++i) {
    shuffled.h.row(i) = problem.h.row(perm[i]);
    shuffled.labels[i] = problem.labels[perm[i]];
  }
  ExpectSameMetrics(Compute(shuffled), base, kRoundoff);
}

TEST(CollapseMetricsTest, MetricsAreInvariantToTranslationAndRotationOfTheFeatureSpace) {
  const Problem problem = MakeClusters(4, 25, 7, 1.5, 5);
  const CollapseMetrics base = Compute(problem);
  Problem moved = problem;
  const RowMatrixD q = RandomOrthogonal(7, 6);
  Eigen::RowVectorXd offset(7);
  offset << 5, -3, 0.5, 10, -7, 2, 1;
  moved.h = (problem.h * q).rowwise() + offset;
  // The offset (|offset| ~ 14) is larger than the class spread, so the class means lose a few
  // more bits to cancellation than in the other invariance tests (observed: below 1e-13).
  ExpectSameMetrics(Compute(moved), base, 1e-11);
}

TEST(CollapseMetricsTest, FloatInputIsAccumulatedInDouble) {
  // Double data that are exactly representable in float give bit-identical metrics.
  Problem problem = MakeClusters(4, 50, 9, 1.0, 8);
  const RowMatrixF hf = problem.h.cast<float>();
  problem.h = hf.cast<double>();
  absl::StatusOr<CollapseMetrics> from_float =
      ComputeCollapseMetrics<float>(hf, problem.labels, problem.num_classes);
  ASSERT_TRUE(from_float.ok()) << from_float.status();
  ExpectIdenticalMetrics(*from_float, Compute(problem));
}

TEST(CollapseMetricsTest, FloatAndDoubleAgreeToFloatRoundoff) {
  const Problem problem = MakeClusters(5, 60, 16, 1.0, 9);
  const RowMatrixF hf = problem.h.cast<float>();
  absl::StatusOr<CollapseMetrics> from_float =
      ComputeCollapseMetrics<float>(hf, problem.labels, problem.num_classes);
  ASSERT_TRUE(from_float.ok()) << from_float.status();
  // Rounding the inputs to float (6e-8 relative per entry) moves every metric by at most a small
  // multiple of that; averaging over rows makes it smaller still (observed: below 1e-8).
  ExpectSameMetrics(*from_float, Compute(problem), 1e-6);
}

// Sets the OpenMP thread count for the scope and restores the previous one after it.
class ScopedNumThreads {
 public:
  explicit ScopedNumThreads(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedNumThreads() { omp_set_num_threads(saved_); }
  ScopedNumThreads(const ScopedNumThreads&) = delete;
  ScopedNumThreads& operator=(const ScopedNumThreads&) = delete;

 private:
  int saved_;
};

TEST(CollapseMetricsTest, OneThreadAndSeveralThreadsGiveBitIdenticalResults) {
  // Several column blocks (p > 64) and many row blocks (N > 256) so that both passes split work.
  const Problem problem = MakeClusters(6, 500, 150, 12.0, 10);
  const RowMatrixF hf = problem.h.cast<float>();
  CollapseMetrics one;
  absl::StatusOr<CollapseMetrics> one_f;
  {
    ScopedNumThreads scoped(1);
    one = Compute(problem);
    one_f = ComputeCollapseMetrics<float>(hf, problem.labels, problem.num_classes);
  }
  ASSERT_TRUE(one_f.ok()) << one_f.status();
  EXPECT_GT(one.nc1, 0);
  EXPECT_LT(one.ncc_accuracy, 1.0);  // The classes overlap, so the comparison is not vacuous.
  for (int threads : {2, 3}) {
    ScopedNumThreads scoped(threads);
    ExpectIdenticalMetrics(Compute(problem), one);
    absl::StatusOr<CollapseMetrics> many_f =
        ComputeCollapseMetrics<float>(hf, problem.labels, problem.num_classes);
    ASSERT_TRUE(many_f.ok()) << many_f.status();
    ExpectIdenticalMetrics(*many_f, *one_f);
  }
}

TEST(CollapseMetricsTest, PinvVariabilityIgnoresSpreadOrthogonalToTheClassMeans) {
  // Class means span the first two coordinates only. Adding noise in the other four, in +/- pairs
  // so that no class mean moves, raises tr(Sigma_W) (so nc1) but not tr(Sigma_W Sigma_B^+).
  Problem problem = MakeClusters(3, 20, 6, 0.5, 14);
  problem.h.rightCols(4).setZero();
  Problem noisy = problem;
  std::mt19937 gen(15);
  std::normal_distribution<double> normal;
  for (int i = 0; i + 3 < noisy.h.rows(); i += 6) {
    for (int j = 2; j < 6; ++j) {
      for (int k = 0; k < 3; ++k) {  // Rows i + k and i + k + 3 share a class.
        const double v = 3 * normal(gen);
        noisy.h(i + k, j) = v;
        noisy.h(i + k + 3, j) = -v;
      }
    }
  }
  const CollapseMetrics clean = Compute(problem);
  const CollapseMetrics spread = Compute(noisy);
  ExpectRelativelyNear(spread.nc1_pinv, clean.nc1_pinv, kRoundoff, "nc1_pinv");
  EXPECT_GT(spread.nc1, 2 * clean.nc1);
}

TEST(CollapseMetricsTest, TwoClassesOnALineMatchHandComputation) {
  // Class 0 rows {0, 2}: mu_0 = 1. Class 1 rows {3, 5, 7}: mu_1 = 5. mu_G = 3, m_0 = -2, m_1 = 2.
  // Sigma_W = (1 + 1 + 4 + 0 + 4) / 5 = 2; Sigma_B = (4 + 4) / 2 = 4; nc1 = 2 / 4 = 0.5.
  // nc1_pinv = tr(Sigma_W Sigma_B^+) / C = (2 / 4) / 2 = 0.25.
  // Two classes always form an ETF (m_0 = -m_1, E off-diagonal -1): nc2 = 0, equinorm = 0.
  // NCC: row 3 is at distance 2 from both means; the tie goes to class 0, so only 4/5 are hits.
  Problem problem;
  problem.num_classes = 2;
  problem.h.resize(5, 1);
  problem.h << 0, 2, 3, 5, 7;
  problem.labels = {0, 0, 1, 1, 1};
  const CollapseMetrics m = Compute(problem);
  EXPECT_DOUBLE_EQ(m.nc1, 0.5);
  EXPECT_DOUBLE_EQ(m.nc1_pinv, 0.25);
  EXPECT_NEAR(m.nc2, 0, 1e-30);
  EXPECT_NEAR(m.nc2_equinorm, 0, 1e-30);
  EXPECT_DOUBLE_EQ(m.ncc_accuracy, 0.8);
}

TEST(CollapseMetricsTest, ThreeClassesWithACollapsedMeanMatchHandComputation) {
  // Class 0 rows {-1.5, -0.5}: mu_0 = -1. Class 1 row {0}: mu_1 = 0. Class 2 rows {1, 1}: mu_2 = 1.
  // mu_G = 0, so m = (-1, 0, 1) and class 1's mean is collapsed onto mu_G (its Ut row is zero).
  // Sigma_W = (0.25 + 0.25) / 5 = 0.1; Sigma_B = (1 + 0 + 1) / 3 = 2/3; nc1 = 0.15.
  // Sigma_B^+ = 3/2, nc1_pinv = (0.1 * 3/2) / 3 = 0.05.
  // Ut Ut^T = [[1,0,-1],[0,0,0],[-1,0,1]], E = 1 on the diagonal, -1/2 off it; the squared
  // differences are 0, 1/4, 1/4 | 1/4, 1, 1/4 | 1/4, 1/4, 0, summing to 5/2: nc2 = 5/18.
  // Norms (1, 0, 1): mean 2/3, population variance (1/9 + 4/9 + 1/9) / 3 = 2/9,
  // equinorm = (sqrt(2)/3) / (2/3) = sqrt(2)/2.
  // NCC: -0.5 is equidistant from mu_0 and mu_1 and the tie goes to class 0 (its own): 5/5.
  Problem problem;
  problem.num_classes = 3;
  problem.h.resize(5, 1);
  problem.h << -1.5, -0.5, 0, 1, 1;
  problem.labels = {0, 0, 1, 2, 2};
  const CollapseMetrics m = Compute(problem);
  EXPECT_DOUBLE_EQ(m.nc1, 0.15);
  EXPECT_DOUBLE_EQ(m.nc1_pinv, 0.05);
  EXPECT_DOUBLE_EQ(m.nc2, 5.0 / 18.0);
  EXPECT_DOUBLE_EQ(m.nc2_equinorm, std::sqrt(2.0) / 2);
  EXPECT_DOUBLE_EQ(m.ncc_accuracy, 1.0);
}

// Every metric straight from its definition with p x p scatter matrices and an explicit
// pseudo-inverse; only for small problems.
CollapseMetrics BruteForce(const Problem& problem) {
  const int c_count = problem.num_classes;
  const int64_t n = problem.h.rows(), p = problem.h.cols();
  Eigen::MatrixXd means = Eigen::MatrixXd::Zero(c_count, p);
  std::vector<int> counts(c_count, 0);
  for (int64_t i = 0; i < n; ++i) {
    means.row(problem.labels[i]) += problem.h.row(i);
    ++counts[problem.labels[i]];
  }
  for (int c = 0; c < c_count; ++c) means.row(c) /= counts[c];
  const Eigen::RowVectorXd global = means.colwise().mean();
  Eigen::MatrixXd sigma_w = Eigen::MatrixXd::Zero(p, p);
  for (int64_t i = 0; i < n; ++i) {
    const Eigen::VectorXd r = (problem.h.row(i) - means.row(problem.labels[i])).transpose();
    sigma_w += r * r.transpose() / n;
  }
  Eigen::MatrixXd sigma_b = Eigen::MatrixXd::Zero(p, p);
  Eigen::MatrixXd unit(c_count, p);
  Eigen::VectorXd norms(c_count);
  for (int c = 0; c < c_count; ++c) {
    const Eigen::VectorXd m = (means.row(c) - global).transpose();
    sigma_b += m * m.transpose() / c_count;
    norms(c) = m.norm();
    unit.row(c) = m.transpose() / m.norm();
  }
  Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd> cod(sigma_b);
  cod.setThreshold(1e-10);  // Sigma_B's null space computes at round-off, ~1e-16 relative.
  CollapseMetrics metrics;
  metrics.nc1 = sigma_w.trace() / sigma_b.trace();
  metrics.nc1_pinv = (sigma_w * cod.pseudoInverse()).trace() / c_count;
  Eigen::MatrixXd etf = Eigen::MatrixXd::Constant(c_count, c_count, -1.0 / (c_count - 1));
  etf.diagonal().setOnes();
  metrics.nc2 = (unit * unit.transpose() - etf).squaredNorm() / (c_count * c_count);
  const double mean_norm = norms.mean();
  metrics.nc2_equinorm = std::sqrt((norms.array() - mean_norm).square().mean()) / mean_norm;
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    Eigen::Index best = 0;
    (means.rowwise() - problem.h.row(i)).rowwise().squaredNorm().minCoeff(&best);
    hits += best == problem.labels[i];
  }
  metrics.ncc_accuracy = static_cast<double>(hits) / n;
  return metrics;
}

TEST(CollapseMetricsTest, MatchesBruteForcePseudoInverseOnSmallRandomProblem) {
  const Problem problem = MakeClusters(4, 10, 6, 1.5, 11);
  // The explicit Sigma_B^+ amplifies the round-off of the p x p scatter matrices by Sigma_B's
  // condition number (observed: below 1e-13).
  ExpectSameMetrics(Compute(problem), BruteForce(problem), 1e-11);
}

TEST(CollapseMetricsTest, MatchesBruteForceWhenThereAreMoreClassesThanDimensions) {
  // Six classes in 3-D: Sigma_B has rank 3 < C - 1 = 5, so two singular values are dropped.
  const Problem problem = MakeClusters(6, 8, 3, 1.0, 12);
  ExpectSameMetrics(Compute(problem), BruteForce(problem), 1e-11);  // As above.
}

TEST(CollapseMetricsTest, MatchesBruteForceWithUnequalClassSizes) {
  Problem problem = MakeClusters(3, 12, 5, 2.0, 13);
  for (int i = 0; i < 10; ++i) problem.labels[i] = 0;  // Classes of 14, 11 and 11 rows.
  ExpectSameMetrics(Compute(problem), BruteForce(problem), 1e-11);  // As above.
}

absl::Status StatusOf(const RowMatrixD& h, const std::vector<int32_t>& labels, int num_classes) {
  return ComputeCollapseMetrics<double>(h, labels, num_classes).status();
}

void ExpectInvalid(const absl::Status& status, const std::string& message) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(std::string(status.message()).find(message), std::string::npos) << status;
}

TEST(CollapseMetricsTest, RejectsLabelsThatDoNotMatchTheRows) {
  const RowMatrixD h = RowMatrixD::Random(4, 2);
  ExpectInvalid(StatusOf(h, {0, 1, 0}, 2), "4 rows but there are 3 labels");
}

TEST(CollapseMetricsTest, RejectsFewerThanTwoClasses) {
  const RowMatrixD h = RowMatrixD::Random(3, 2);
  ExpectInvalid(StatusOf(h, {0, 0, 0}, 1), "at least 2");
  ExpectInvalid(StatusOf(h, {0, 0, 0}, 0), "at least 2");
}

TEST(CollapseMetricsTest, RejectsAnEmptyRepresentation) {
  ExpectInvalid(StatusOf(RowMatrixD(0, 3), {}, 2), "no rows");
  ExpectInvalid(StatusOf(RowMatrixD(2, 0), {0, 1}, 2), "no columns");
}

TEST(CollapseMetricsTest, RejectsLabelsOutsideTheClassRange) {
  const RowMatrixD h = RowMatrixD::Random(3, 2);
  ExpectInvalid(StatusOf(h, {0, 2, 1}, 2), "label 2 of row 1 is outside [0, 2)");
  ExpectInvalid(StatusOf(h, {0, 1, -1}, 2), "label -1 of row 2");
}

TEST(CollapseMetricsTest, RejectsAClassWithoutRows) {
  const RowMatrixD h = RowMatrixD::Random(4, 2);
  ExpectInvalid(StatusOf(h, {0, 1, 2, 0}, 4), "class 3 has no rows in this data");
}

TEST(CollapseMetricsTest, RejectsNonFiniteValuesNamingTheFirstOne) {
  RowMatrixD h = RowMatrixD::Random(300, 70);
  std::vector<int32_t> labels(300);
  for (int i = 0; i < 300; ++i) labels[i] = i % 3;
  h(250, 3) = std::numeric_limits<double>::infinity();
  h(120, 66) = std::numeric_limits<double>::quiet_NaN();
  h(120, 68) = std::numeric_limits<double>::quiet_NaN();
  ExpectInvalid(StatusOf(h, labels, 3), "at row 120, column 66");

  RowMatrixF hf = RowMatrixF::Random(4, 2);
  hf(1, 0) = -std::numeric_limits<float>::infinity();
  const std::vector<int32_t> few = {0, 1, 0, 1};
  const absl::Status status = ComputeCollapseMetrics<float>(hf, few, 2).status();
  ExpectInvalid(status, "non-finite value (-inf) at row 1, column 0");
}

TEST(CollapseMetricsTest, RejectsDataWhoseClassMeansAreAllEqual) {
  RowMatrixD h(5, 2);
  h << 1, 2, 3, 4, 2, 3, -1, 0, 5, 6;  // Both classes have mean (2, 3).
  ExpectInvalid(StatusOf(h, {0, 0, 1, 1, 1}, 2), "class means are equal");
  // Constant data whose class means differ only by the round-off of averaging 3 and 7 copies.
  const RowMatrixD constant = RowMatrixD::Constant(10, 3, 0.1);
  ExpectInvalid(StatusOf(constant, {0, 0, 0, 1, 1, 1, 1, 1, 1, 1}, 2), "tr(Sigma_B) is 0");
  ExpectInvalid(StatusOf(RowMatrixD::Zero(4, 3), {0, 1, 0, 1}, 2), "class means are equal");
}

}  // namespace
}  // namespace drfm::core
