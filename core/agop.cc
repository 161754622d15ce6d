#include "core/agop.h"

#include <algorithm>

namespace drfm::core {
namespace {

// Rows of W per GEMM in the direct form, and the tile size of Q in the Gram form.
constexpr Eigen::Index kDirectRowBlock = 2048;
constexpr Eigen::Index kGramTile = 1024;

template <typename T>
using MapMatrix = Eigen::Map<RowMatrix<T>>;

}  // namespace

double AgopDirectFlops(double n, double m, double d, double c) {
  // W_I (2mnd), R = W_I alpha (2mnC), per class V Z (2mnd) and G^T G (2md^2).
  return 2 * m * n * d + 2 * m * n * c + c * (2 * m * n * d + 2 * m * d * d);
}

double AgopGramFlops(double n, double m, double d, double c) {
  // W_I (2mnd), R (2mnC), lower tiles of W_I^T W_I (m n^2), the (2C)-inner products giving the
  // alpha alpha^T and alpha R^T tiles (3 n^2 C), Q X (2 n^2 d), X^T (QX) (2 n d^2), and, when
  // m < n, the W tiles recomputed from X (n^2 d).
  double flops = 2 * m * n * d + 2 * m * n * c + m * n * n + 3 * n * n * c + 2 * n * n * d +
                 2 * n * d * d;
  if (m < n) flops += n * n * d;
  return flops;
}

bool AgopUseGram(AgopMethod method, double n, double m, double d, double c) {
  if (method == AgopMethod::kGram) return true;
  if (method == AgopMethod::kDirect) return false;
  return AgopGramFlops(n, m, d, c) < AgopDirectFlops(n, m, d, c);
}

template <typename T>
absl::StatusOr<AgopResult<T>> ComputeAgop(KernelType kernel, double bandwidth,
                                         const ConstMatrixRef<T>& x, const Vector<T>& x_sq,
                                         const ConstMatrixRef<T>& alpha,
                                         const std::vector<Eigen::Index>& samples,
                                         AgopMethod method, T* buffer, const ProgressTick& tick) {
  const Eigen::Index n = x.rows();
  const Eigen::Index d = x.cols();
  const Eigen::Index c = alpha.cols();
  const bool all = samples.empty();
  const Eigen::Index m = all ? n : static_cast<Eigen::Index>(samples.size());
  AgopResult<T> result;
  result.gram = AgopUseGram(method, n, m, d, c);
  const double nd = static_cast<double>(n), md = static_cast<double>(m);
  const double dd = static_cast<double>(d), cd = static_cast<double>(c);

  // Progress: 10% for W_I, the rest for the main loop.
  auto sub_tick = [&](double lo, double hi) {
    return [&tick, lo, hi](double f) { return !tick || tick(lo + (hi - lo) * f); };
  };

  // Rows I of x (a copy only when sampling).
  RowMatrix<T> x_i_store;
  Vector<T> x_i_sq_store;
  if (!all) {
    x_i_store.resize(m, d);
    x_i_sq_store.resize(m);
    for (Eigen::Index r = 0; r < m; ++r) {
      x_i_store.row(r) = x.row(samples[r]);
      x_i_sq_store(r) = x_sq(samples[r]);
    }
  }
  const ConstMatrixRef<T> x_i = all ? x : ConstMatrixRef<T>(x_i_store);
  const Vector<T>& x_i_sq = all ? x_sq : x_i_sq_store;

  // V = W_I (m x n) in the caller's buffer; the self pairs are exactly 0.
  MapMatrix<T> v(buffer, m, n);
  {
    absl::Status s = KernelFull<T>(kernel, bandwidth, KernelOutput::kGradientWeight, x_i, x_i_sq,
                                   x, x_sq, all ? 0 : -1, v, sub_tick(0.0, 0.1));
    if (!s.ok()) return s;
  }
  if (!all) {
    for (Eigen::Index r = 0; r < m; ++r) v(r, samples[r]) = T(0);
  }
  const RowMatrix<T> r_i = v * alpha;  // R = W_I alpha, m x C
  result.flops += 2 * md * nd * dd + 2 * md * nd * cd;

  RowMatrix<T> agop = RowMatrix<T>::Zero(d, d);
  if (!result.gram) {
    auto progress = sub_tick(0.1, 1.0);
    const Eigen::Index blocks = (m + kDirectRowBlock - 1) / kDirectRowBlock;
    RowMatrix<T> z(n, d);
    RowMatrix<T> g;
    for (Eigen::Index k = 0; k < c; ++k) {
      z = alpha.col(k).asDiagonal() * x;
      for (Eigen::Index b = 0; b < blocks; ++b) {
        const Eigen::Index r0 = b * kDirectRowBlock;
        const Eigen::Index rows = std::min(kDirectRowBlock, m - r0);
        g.noalias() = v.middleRows(r0, rows) * z;
        g.noalias() -= r_i.col(k).segment(r0, rows).asDiagonal() * x_i.middleRows(r0, rows);
        agop.noalias() += g.transpose() * g;
        if (!progress(static_cast<double>(k * blocks + b + 1) / static_cast<double>(c * blocks))) {
          return absl::CancelledError("cancelled while computing the AGOP");
        }
      }
    }
    result.flops += cd * (2 * md * nd * dd + 2 * md * dd * dd);
  } else {
    auto progress = sub_tick(0.1, 1.0);
    // R and |R|^2 scattered to all n points (zero outside I); [alpha R] and [R alpha] stacked so
    // that one GEMM gives alpha_j.R_k + R_j.alpha_k for a whole tile.
    RowMatrix<T> ar(n, 2 * c), ra(n, 2 * c);
    Vector<T> r_sq = Vector<T>::Zero(n);
    {
      RowMatrix<T> r_full = RowMatrix<T>::Zero(n, c);
      for (Eigen::Index r = 0; r < m; ++r) {
        const Eigen::Index j = all ? r : samples[r];
        r_full.row(j) = r_i.row(r);
        r_sq(j) = r_i.row(r).squaredNorm();
      }
      ar << alpha, r_full;
      ra << r_full, alpha;
    }
    RowMatrix<T> qx = RowMatrix<T>::Zero(n, d);
    RowMatrix<T> q, aa, wr, w_tile;
    const Eigen::Index tiles = (n + kGramTile - 1) / kGramTile;
    const double total_tiles = 0.5 * tiles * (tiles + 1);
    double done_tiles = 0;
    for (Eigen::Index t0 = 0; t0 < tiles; ++t0) {
      const Eigen::Index b0 = t0 * kGramTile;
      const Eigen::Index s0 = std::min(kGramTile, n - b0);
      for (Eigen::Index t1 = 0; t1 <= t0; ++t1) {
        const Eigen::Index b1 = t1 * kGramTile;
        const Eigen::Index s1 = std::min(kGramTile, n - b1);
        // (W_I^T W_I) tile; with I = all rows, W is symmetric and rows serve as columns.
        if (all) {
          q.noalias() = v.middleRows(b0, s0) * v.middleRows(b1, s1).transpose();
        } else {
          q.noalias() = v.middleCols(b0, s0).transpose() * v.middleCols(b1, s1);
        }
        aa.noalias() = alpha.middleRows(b0, s0) * alpha.middleRows(b1, s1).transpose();
        wr.noalias() = ar.middleRows(b0, s0) * ra.middleRows(b1, s1).transpose();
        if (!all) {
          w_tile.resize(s0, s1);
          KernelBlock<T>(kernel, bandwidth, KernelOutput::kGradientWeight, x.middleRows(b0, s0),
                         x_sq.segment(b0, s0), x.middleRows(b1, s1), x_sq.segment(b1, s1),
                         b0 - b1, w_tile);
        }
#pragma omp parallel for schedule(static)
        for (Eigen::Index i = 0; i < s0; ++i) {
          if (all) {
            q.row(i).array() = q.row(i).array() * aa.row(i).array() -
                               v.row(b0 + i).segment(b1, s1).array() * wr.row(i).array();
          } else {
            q.row(i).array() =
                q.row(i).array() * aa.row(i).array() - w_tile.row(i).array() * wr.row(i).array();
          }
        }
        if (t0 == t1) q.diagonal() += r_sq.segment(b0, s0);
        const double tile = static_cast<double>(s0) * static_cast<double>(s1);
        result.flops += 2 * tile * md + 6 * tile * cd + (t0 == t1 ? 2 : 4) * tile * dd;
        if (!all) result.flops += 2 * tile * dd;
        qx.middleRows(b0, s0).noalias() += q * x.middleRows(b1, s1);
        if (t0 != t1) qx.middleRows(b1, s1).noalias() += q.transpose() * x.middleRows(b0, s0);
        done_tiles += 1;
        if (!progress(done_tiles / total_tiles)) {
          return absl::CancelledError("cancelled while computing the AGOP");
        }
      }
    }
    agop.noalias() = x.transpose() * qx;
    result.flops += 2 * nd * dd * dd;
  }
  agop /= static_cast<T>(m);
  result.m = std::move(agop);
  return result;
}

template absl::StatusOr<AgopResult<float>> ComputeAgop<float>(
    KernelType, double, const ConstMatrixRef<float>&, const Vector<float>&,
    const ConstMatrixRef<float>&, const std::vector<Eigen::Index>&, AgopMethod, float*,
    const ProgressTick&);
template absl::StatusOr<AgopResult<double>> ComputeAgop<double>(
    KernelType, double, const ConstMatrixRef<double>&, const Vector<double>&,
    const ConstMatrixRef<double>&, const std::vector<Eigen::Index>&, AgopMethod, double*,
    const ProgressTick&);

}  // namespace drfm::core
