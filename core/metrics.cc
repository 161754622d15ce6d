#include "core/metrics.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace drfm::core {
namespace {

// Reproducibility: every floating-point sum below has an order fixed by the data shape alone.
// Pass 1 (class sums) gives each thread whole column blocks and sums each entry over all rows in
// row order; pass 2 (per-row quantities) works on fixed row blocks whose partial sums are kept per
// block and added in block order. No atomics or OpenMP reductions on floating point, and no Eigen
// reductions on buffers whose alignment could differ between threads. The thin SVD is a serial
// one-sided Jacobi for the same reason: Eigen's decompositions go through its GEMM for larger C,
// whose blocking depends on the thread count. The result is bit-identical for any thread count.
constexpr int64_t kColBlock = 64;
constexpr int64_t kRowBlock = 256;

// Class means that differ by less than this fraction of their magnitude are equal up to the
// round-off of computing them; the between-class scatter is then 0 and the metrics undefined. The
// same bound marks a single class mean as collapsed onto the global mean (its nc2 row is zero).
constexpr double kMeanRoundoff = 1e-12;

// Singular values of the centered means below this fraction of the largest are treated as zero in
// Sigma_B^+. The smallest one is always dropped: the centered means sum to zero, so rank <= C-1
// and that singular value is pure round-off. A genuine direction weaker than 1e-10 would weight
// the within-class spread by more than 1e20 and make nc1_pinv meaningless anyway.
constexpr double kRankTolerance = 1e-10;
constexpr int kMaxJacobiSweeps = 64;

// Dot product with four interleaved accumulators (fixed order, so deterministic, and vectorizable).
double Dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < n; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

double SquaredDistance(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const double d0 = a[j] - b[j], d1 = a[j + 1] - b[j + 1];
    const double d2 = a[j + 2] - b[j + 2], d3 = a[j + 3] - b[j + 3];
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; j < n; ++j) {
    const double d = a[j] - b[j];
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

// One-sided (Hestenes) Jacobi: rotates pairs of the `rows` rows of `a` (rows x p, row-major) by
// plane rotations until they are mutually orthogonal, so that afterwards row k = s_k u_k^T with
// u_k orthonormal: the thin SVD A^T = U S V^T without forming A A^T (which would square the
// condition number). Rotation formulas from Demmel & Veselic, "Jacobi's method is more accurate
// than QR" (1992); tolerance sqrt(p)*eps as in LAPACK dgesvj. Serial and O(p rows^2) per sweep.
void OrthogonalizeRows(std::vector<double>& a, int rows, int64_t p) {
  const double tolerance = std::sqrt(static_cast<double>(std::max<int64_t>(p, 1))) *
                           std::numeric_limits<double>::epsilon();
  for (int sweep = 0; sweep < kMaxJacobiSweeps; ++sweep) {
    bool rotated = false;
    for (int c = 0; c < rows; ++c) {
      double* ac = a.data() + c * p;
      for (int d = c + 1; d < rows; ++d) {
        double* ad = a.data() + d * p;
        const double alpha = Dot(ac, ac, p);
        const double beta = Dot(ad, ad, p);
        const double gamma = Dot(ac, ad, p);
        if (gamma == 0 || std::abs(gamma) <= tolerance * std::sqrt(alpha) * std::sqrt(beta)) {
          continue;
        }
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = std::copysign(1.0, zeta) / (std::abs(zeta) + std::hypot(1.0, zeta));
        const double cs = 1 / std::sqrt(1 + t * t);
        const double sn = cs * t;
        for (int64_t j = 0; j < p; ++j) {
          const double x = ac[j], y = ad[j];
          ac[j] = cs * x - sn * y;
          ad[j] = sn * x + cs * y;
        }
      }
    }
    if (!rotated) break;
  }
}

}  // namespace

template <typename T>
absl::StatusOr<CollapseMetrics> ComputeCollapseMetrics(const Eigen::Ref<const RowMatrix<T>>& h,
                                                       absl::Span<const int32_t> labels,
                                                       int num_classes) {
  const int64_t n = h.rows();
  const int64_t p = h.cols();
  const int num_c = num_classes;
  if (static_cast<int64_t>(labels.size()) != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collapse metrics: the representation has %d rows but there are %d labels; pass exactly "
        "one label per row",
        n, labels.size()));
  }
  if (num_c < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collapse metrics: num_classes is %d; the metrics compare classes and need at least 2",
        num_c));
  }
  if (n < 1) {
    return absl::InvalidArgumentError(
        "collapse metrics: the representation has no rows; pass at least one row per class");
  }
  if (p < 1) {
    return absl::InvalidArgumentError(
        "collapse metrics: the representation has no columns; pass at least one feature");
  }
  std::vector<int64_t> counts(num_c, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = labels[i];
    if (y < 0 || y >= num_c) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "collapse metrics: label %d of row %d is outside [0, %d); labels must be class indices "
          "below num_classes",
          y, i, num_c));
    }
    ++counts[y];
  }
  for (int c = 0; c < num_c; ++c) {
    if (counts[c] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "collapse metrics: class %d has no rows in this data, so its mean (and every metric) is "
          "undefined; include rows of every class in [0, %d) or lower num_classes",
          c, num_c));
    }
  }

  const T* data = h.data();
  const int64_t stride = h.outerStride();

  // Pass 1: class sums (num_c x p, row-major) and the first non-finite entry.
  std::vector<double> mu(static_cast<size_t>(num_c) * p, 0.0);
  const int64_t num_col_blocks = (p + kColBlock - 1) / kColBlock;
  std::vector<int64_t> bad_row(num_col_blocks, n);
  std::vector<int64_t> bad_col(num_col_blocks, 0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < num_col_blocks; ++b) {
    const int64_t j0 = b * kColBlock;
    const int64_t j1 = std::min(p, j0 + kColBlock);
    for (int64_t i = 0; i < n && bad_row[b] == n; ++i) {
      const T* row = data + i * stride;
      double* sum = mu.data() + static_cast<int64_t>(labels[i]) * p;
      for (int64_t j = j0; j < j1; ++j) {
        const double v = static_cast<double>(row[j]);
        if (!std::isfinite(v)) {
          bad_row[b] = i;
          bad_col[b] = j;
          break;
        }
        sum[j] += v;
      }
    }
  }
  int64_t first_bad_row = n, first_bad_col = 0;
  for (int64_t b = 0; b < num_col_blocks; ++b) {
    if (bad_row[b] < first_bad_row) {  // Blocks ascend in column, so ties keep the lowest column.
      first_bad_row = bad_row[b];
      first_bad_col = bad_col[b];
    }
  }
  if (first_bad_row < n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collapse metrics: the representation has a non-finite value (%g) at row %d, column %d; "
        "remove or impute NaN/Inf before computing metrics",
        static_cast<double>(data[first_bad_row * stride + first_bad_col]), first_bad_row,
        first_bad_col));
  }
  for (int c = 0; c < num_c; ++c) {
    const double inv = 1.0 / static_cast<double>(counts[c]);
    for (int64_t j = 0; j < p; ++j) mu[c * p + j] *= inv;
  }

  // Centered means m_c = mu_c - mu_G with mu_G the mean of the class means.
  std::vector<double> mu_g(p, 0.0);
  for (int c = 0; c < num_c; ++c) {
    for (int64_t j = 0; j < p; ++j) mu_g[j] += mu[c * p + j];
  }
  for (int64_t j = 0; j < p; ++j) mu_g[j] /= num_c;
  std::vector<double> centered(mu.size());
  for (int c = 0; c < num_c; ++c) {
    for (int64_t j = 0; j < p; ++j) centered[c * p + j] = mu[c * p + j] - mu_g[j];
  }

  // Gram of the centered means (num_c x num_c): their norms, tr(Sigma_B) and nc2.
  std::vector<double> gram(static_cast<size_t>(num_c) * num_c);
  for (int c = 0; c < num_c; ++c) {
    for (int d = c; d < num_c; ++d) {
      gram[c * num_c + d] = gram[d * num_c + c] =
          Dot(centered.data() + c * p, centered.data() + d * p, p);
    }
  }
  std::vector<double> norms(num_c);
  double max_norm = 0, max_mean_norm = 0, trace_b = 0;
  for (int c = 0; c < num_c; ++c) {
    norms[c] = std::sqrt(gram[c * num_c + c]);
    max_norm = std::max(max_norm, norms[c]);
    max_mean_norm =
        std::max(max_mean_norm, std::sqrt(Dot(mu.data() + c * p, mu.data() + c * p, p)));
    trace_b += gram[c * num_c + c];
  }
  trace_b /= num_c;
  const double collapse_bound = kMeanRoundoff * max_mean_norm;
  if (max_norm <= collapse_bound) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collapse metrics: all %d class means are equal (up to round-off), so the between-class "
        "scatter tr(Sigma_B) is 0 and nc1, nc1_pinv and nc2 are undefined; the representation "
        "does not separate the classes at all (e.g. constant features)",
        num_c));
  }

  CollapseMetrics metrics;

  // nc2 = (1/C^2) ||Ut Ut^T - E||_F^2. A class mean collapsed onto mu_G has no direction: its row
  // of Ut is taken as zero, so it contributes (0 - E_cd)^2 to every entry of its row and column.
  {
    const double off = -1.0 / (num_c - 1);
    double sum = 0;
    for (int c = 0; c < num_c; ++c) {
      for (int d = 0; d < num_c; ++d) {
        const bool collapsed = norms[c] <= collapse_bound || norms[d] <= collapse_bound;
        const double g = collapsed ? 0.0 : gram[c * num_c + d] / (norms[c] * norms[d]);
        const double diff = g - (c == d ? 1.0 : off);
        sum += diff * diff;
      }
    }
    metrics.nc2 = sum / (static_cast<double>(num_c) * num_c);
  }

  // nc2_equinorm = population std / mean of ||m_c||.
  {
    double mean = 0;
    for (int c = 0; c < num_c; ++c) mean += norms[c];
    mean /= num_c;
    double var = 0;
    for (int c = 0; c < num_c; ++c) var += (norms[c] - mean) * (norms[c] - mean);
    var /= num_c;
    metrics.nc2_equinorm = std::sqrt(var) / mean;
  }

  // Thin SVD of the p x C centered means Mt = U S V^T: Sigma_B = (1/C) U S^2 U^T, so
  // Sigma_B^+ = C U S^-2 U^T and tr(Sigma_W Sigma_B^+)/C = sum_k s_k^-2 u_k^T Sigma_W u_k.
  std::vector<double> basis = centered;
  OrthogonalizeRows(basis, num_c, p);
  std::vector<double> singular(num_c);
  for (int c = 0; c < num_c; ++c) {
    singular[c] = std::sqrt(Dot(basis.data() + c * p, basis.data() + c * p, p));
  }
  std::vector<int> order(num_c);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return singular[a] > singular[b]; });
  const double rank_bound = kRankTolerance * singular[order[0]];
  int rank = 0;
  while (rank < num_c - 1 && singular[order[rank]] > rank_bound) ++rank;
  std::vector<double> u(static_cast<size_t>(rank) * p);
  std::vector<double> inv_s2(rank);
  for (int k = 0; k < rank; ++k) {
    const int src = order[k];
    const double s = singular[src];
    inv_s2[k] = 1 / (s * s);
    for (int64_t j = 0; j < p; ++j) u[k * p + j] = basis[src * p + j] / s;
  }
  basis = std::vector<double>();

  // Pass 2 over fixed row blocks: within-class squared residuals, their projections on u_k, and
  // the nearest-class-mean hits. Partial sums per block, combined in block order below.
  const int64_t num_row_blocks = (n + kRowBlock - 1) / kRowBlock;
  const int64_t stats = rank + 1;  // [sum ||r||^2, sum (r.u_0)^2, ..., sum (r.u_{K-1})^2]
  std::vector<double> block_stats(num_row_blocks * stats, 0.0);
  std::vector<int64_t> block_hits(num_row_blocks, 0);
  const int max_threads = std::max(1, omp_get_max_threads());
  std::vector<double> scratch(static_cast<size_t>(max_threads) * 2 * p);
#pragma omp parallel num_threads(max_threads)
  {
    double* x = scratch.data() + static_cast<int64_t>(omp_get_thread_num()) * 2 * p;
    double* r = x + p;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < num_row_blocks; ++b) {
      double* acc = block_stats.data() + b * stats;
      int64_t hits = 0;
      const int64_t i1 = std::min(n, (b + 1) * kRowBlock);
      for (int64_t i = b * kRowBlock; i < i1; ++i) {
        const T* row = data + i * stride;
        for (int64_t j = 0; j < p; ++j) x[j] = static_cast<double>(row[j]);
        const int32_t y = labels[i];
        const double* own = mu.data() + static_cast<int64_t>(y) * p;
        for (int64_t j = 0; j < p; ++j) r[j] = x[j] - own[j];
        acc[0] += Dot(r, r, p);
        for (int k = 0; k < rank; ++k) {
          const double proj = Dot(r, u.data() + k * p, p);
          acc[k + 1] += proj * proj;
        }
        // Ties go to the lowest class index (strict comparison).
        int best = 0;
        double best_dist = SquaredDistance(x, mu.data(), p);
        for (int c = 1; c < num_c; ++c) {
          const double dist = SquaredDistance(x, mu.data() + c * p, p);
          if (dist < best_dist) {
            best_dist = dist;
            best = c;
          }
        }
        if (best == y) ++hits;
      }
      block_hits[b] = hits;
    }
  }
  std::vector<double> totals(stats, 0.0);
  int64_t hits = 0;
  for (int64_t b = 0; b < num_row_blocks; ++b) {
    for (int64_t k = 0; k < stats; ++k) totals[k] += block_stats[b * stats + k];
    hits += block_hits[b];
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  const double trace_w = totals[0] * inv_n;
  metrics.nc1 = trace_w / trace_b;
  double pinv = 0;
  for (int k = 0; k < rank; ++k) pinv += totals[k + 1] * inv_n * inv_s2[k];
  metrics.nc1_pinv = pinv;
  metrics.ncc_accuracy = static_cast<double>(hits) / static_cast<double>(n);
  return metrics;
}

template absl::StatusOr<CollapseMetrics> ComputeCollapseMetrics<float>(
    const Eigen::Ref<const RowMatrix<float>>& h, absl::Span<const int32_t> labels, int num_classes);
template absl::StatusOr<CollapseMetrics> ComputeCollapseMetrics<double>(
    const Eigen::Ref<const RowMatrix<double>>& h, absl::Span<const int32_t> labels,
    int num_classes);

}  // namespace drfm::core
