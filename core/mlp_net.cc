#include "core/mlp_net.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"
#include "core/tiles.h"

namespace drfm::core {
namespace {

// Rows (samples x outputs) of the stacked Jacobian block the AGOP sweep propagates at once: big
// enough for efficient GEMMs, small enough (4096 x 512 floats = 8 MB) to stay cheap in memory.
constexpr Eigen::Index kSweepRows = 4096;

template <typename T>
void CheckChain(const MlpWeights<T>& w) {
  DRFM_CHECK(!w.empty());
  for (size_t l = 1; l < w.size(); ++l) DRFM_CHECK(w[l].cols() == w[l - 1].rows());
}

// In-place ReLU.
template <typename T>
void Relu(RowMatrix<T>* z) {
  z->array() = z->array().max(T(0));
}

// Multiplies the C-row block of sample i of `a` ((rows * C) x k) column-wise by the ReLU mask
// 1[h_i > 0] of that sample (h: rows x k, post-activations; h > 0 exactly where the
// pre-activation is > 0).
template <typename T>
void MaskBlocks(const RowMatrix<T>& h, Eigen::Index c, RowMatrix<T>* a) {
  const Eigen::Index rows = h.rows();
  Eigen::Array<T, 1, Eigen::Dynamic> mask(h.cols());
  for (Eigen::Index i = 0; i < rows; ++i) {
    mask = (h.row(i).array() > T(0)).template cast<T>();
    a->middleRows(i * c, c).array().rowwise() *= mask;
  }
}

// (rows * C) x k: W (C x k) repeated once per sample.
template <typename T>
void Replicate(const RowMatrix<T>& w, Eigen::Index rows, RowMatrix<T>* a) {
  const Eigen::Index c = w.rows();
  a->resize(rows * c, w.cols());
  for (Eigen::Index i = 0; i < rows; ++i) a->middleRows(i * c, c) = w;
}

// The training step's products are cut into tiles of at most kTile x kTile outputs (row blocks
// of kTile for the weight gradients; see core/tiles.h). Minibatch products (B = 128 rows, k = 512)
// are too small for Eigen's own parallel GEMM to split well; fixed tiles split them without
// synchronizing inside a product.
constexpr Eigen::Index kTile = 256;

// out (a.rows() x w.rows()) = a W^T, ReLU'd when `relu`.
template <typename T>
void ProductTransposed(const ConstMatrixRef<T>& a, const RowMatrix<T>& w, bool relu,
                       RowMatrix<T>* out) {
  out->resize(a.rows(), w.rows());
  ForEachTile(a.rows(), w.rows(), kTile, kTile,
              [&](Eigen::Index r0, Eigen::Index nr, Eigen::Index c0, Eigen::Index nc) {
                auto tile = out->block(r0, c0, nr, nc);
                tile.noalias() = a.middleRows(r0, nr) * w.middleRows(c0, nc).transpose();
                if (relu) tile = tile.cwiseMax(T(0));
              });
}

// out (delta.rows() x w.cols()) = (delta W) o 1[h > 0]: backpropagation through W and the ReLU
// whose outputs are h.
template <typename T>
void ProductMasked(const RowMatrix<T>& delta, const RowMatrix<T>& w, const RowMatrix<T>& h,
                   RowMatrix<T>* out) {
  out->resize(delta.rows(), w.cols());
  ForEachTile(delta.rows(), w.cols(), kTile, kTile,
              [&](Eigen::Index r0, Eigen::Index nr, Eigen::Index c0, Eigen::Index nc) {
                auto tile = out->block(r0, c0, nr, nc);
                tile.noalias() = delta.middleRows(r0, nr) * w.middleCols(c0, nc);
                tile.array() *= (h.block(r0, c0, nr, nc).array() > T(0)).template cast<T>();
              });
}

// grad (delta.cols() x input.cols()) = delta^T input in blocks of kTile rows; `on_rows` gets each
// block as soon as it is done.
template <typename T>
void WeightGradient(const RowMatrix<T>& delta, const ConstMatrixRef<T>& input, int layer,
                    const GradientRowsHook& on_rows, RowMatrix<T>* grad) {
  grad->resize(delta.cols(), input.cols());
  ForEachTile(delta.cols(), input.cols(), kTile, input.cols(),
              [&](Eigen::Index r0, Eigen::Index nr, Eigen::Index, Eigen::Index) {
                grad->middleRows(r0, nr).noalias() = delta.middleCols(r0, nr).transpose() * input;
                if (on_rows) on_rows(layer, r0, nr);
              });
}

}  // namespace

template <typename T>
RowMatrix<T> MlpForwardFrom(const MlpWeights<T>& w, int layer, const ConstMatrixRef<T>& h) {
  CheckChain(w);
  const int last = static_cast<int>(w.size());  // L + 1
  DRFM_CHECK(layer >= 1 && layer <= last);
  DRFM_CHECK(h.cols() == w[layer - 1].cols());
  if (layer == last) return h * w[last - 1].transpose();
  RowMatrix<T> cur = h * w[layer - 1].transpose();
  Relu(&cur);
  RowMatrix<T> next;
  for (int l = layer + 1; l < last; ++l) {
    next.noalias() = cur * w[l - 1].transpose();
    Relu(&next);
    cur.swap(next);
  }
  return cur * w[last - 1].transpose();
}

template <typename T>
T MlpLossAndGradients(const MlpWeights<T>& w, const ConstMatrixRef<T>& x,
                      const ConstMatrixRef<T>& y, MlpWorkspace<T>* ws, MlpWeights<T>* grads,
                      const GradientRowsHook& on_rows) {
  CheckChain(w);
  const int hidden = static_cast<int>(w.size()) - 1;  // L
  const Eigen::Index b = x.rows();
  DRFM_CHECK(b >= 1 && x.cols() == w[0].cols());
  DRFM_CHECK(y.rows() == b && y.cols() == w.back().rows());
  ws->h.resize(hidden + 1);
  grads->resize(w.size());
  // Input of layer l (1-based): x for the first, H_{l-1} after.
  auto input = [&](int l) -> ConstMatrixRef<T> {
    if (l == 1) return x;
    return ws->h[l - 1];
  };
  for (int l = 1; l <= hidden; ++l) ProductTransposed<T>(input(l), w[l - 1], true, &ws->h[l]);
  ProductTransposed<T>(input(hidden + 1), w[hidden], false, &ws->out);
  const T scale = T(1) / static_cast<T>(static_cast<double>(b) * static_cast<double>(y.cols()));
  ws->delta = ws->out - y;
  const T loss = ws->delta.squaredNorm() * scale;
  ws->delta *= T(2) * scale;
  for (int l = hidden + 1; l >= 1; --l) {
    // dZ_{l-1} first: it is the last use of W_l, which `on_rows` may then update.
    if (l > 1) ProductMasked<T>(ws->delta, w[l - 1], ws->h[l - 1], &ws->delta_next);
    WeightGradient<T>(ws->delta, input(l), l, on_rows, &(*grads)[l - 1]);
    if (l > 1) ws->delta.swap(ws->delta_next);
  }
  return loss;
}

template <typename T>
RowMatrix<T> MlpJacobians(const MlpWeights<T>& w, int layer, const ConstMatrixRef<T>& h) {
  CheckChain(w);
  const int last = static_cast<int>(w.size());
  DRFM_CHECK(layer >= 1 && layer <= last);
  DRFM_CHECK(h.cols() == w[layer - 1].cols());
  const Eigen::Index rows = h.rows(), c = w.back().rows();
  // Post-activations of layers layer .. L (index j - layer) give the masks D_j.
  std::vector<RowMatrix<T>> post;
  for (int j = layer; j < last; ++j) {
    RowMatrix<T> z = (j == layer ? RowMatrix<T>(h) : post.back()) * w[j - 1].transpose();
    Relu(&z);
    post.push_back(std::move(z));
  }
  RowMatrix<T> a, next;
  Replicate(w[last - 1], rows, &a);
  for (int j = last - 1; j >= layer; --j) {
    MaskBlocks(post[j - layer], c, &a);
    next.noalias() = a * w[j - 1];
    a.swap(next);
  }
  return a;
}

template <typename T>
absl::Status MlpAgops(const MlpWeights<T>& w, const ConstMatrixRef<T>& x,
                      std::vector<RowMatrixD>* agops, const ProgressTick& tick) {
  CheckChain(w);
  const int hidden = static_cast<int>(w.size()) - 1;
  const Eigen::Index n = x.rows(), c = w.back().rows();
  if (n == 0) return absl::InvalidArgumentError("the AGOP needs at least one sample");
  DRFM_CHECK(x.cols() == w[0].cols());
  // sums[l-1] = sum_i A_i^(l)T A_i^(l) (k_l x k_l), l = 1..L.
  std::vector<RowMatrixD> sums(hidden);
  for (int l = 1; l <= hidden; ++l)
    sums[l - 1] = RowMatrixD::Zero(w[l - 1].rows(), w[l - 1].rows());
  const Eigen::Index block = std::max<Eigen::Index>(1, kSweepRows / c);
  std::vector<RowMatrix<T>> post(hidden + 1);
  RowMatrix<T> a, next, gram;
  for (Eigen::Index start = 0; hidden > 0 && start < n; start += block) {
    const Eigen::Index rows = std::min(block, n - start);
    for (int l = 1; l <= hidden; ++l) {
      if (l == 1) {
        post[1].noalias() = x.middleRows(start, rows) * w[0].transpose();
      } else {
        post[l].noalias() = post[l - 1] * w[l - 1].transpose();
      }
      Relu(&post[l]);
    }
    Replicate(w[hidden], rows, &a);
    for (int l = hidden; l >= 1; --l) {
      if (l < hidden) {
        next.noalias() = a * w[l];  // A^(l+1) W_{l+1}
        a.swap(next);
      }
      MaskBlocks(post[l], c, &a);
      gram.noalias() = a.transpose() * a;
      sums[l - 1] += gram.template cast<double>();
    }
    if (tick && !tick(static_cast<double>(start + rows) / static_cast<double>(n))) {
      return absl::CancelledError("stopped by the observer during the AGOP sweep");
    }
  }
  agops->assign(hidden + 1, RowMatrixD());
  const double inv_n = 1.0 / static_cast<double>(n);
  for (int l = 1; l <= hidden; ++l) {
    const RowMatrixD wl = w[l - 1].template cast<double>();
    const RowMatrixD sw = sums[l - 1] * wl;
    (*agops)[l - 1].noalias() = wl.transpose() * sw;
    (*agops)[l - 1] *= inv_n;
  }
  const RowMatrixD out = w[hidden].template cast<double>();
  (*agops)[hidden].noalias() = out.transpose() * out;
  return absl::OkStatus();
}

double EntrywiseCorrelation(const RowMatrixD& a, const RowMatrixD& b) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.size() == 0) return kNaN;
  Eigen::ArrayXXd ca = a.array() - a.mean();
  Eigen::ArrayXXd cb = b.array() - b.mean();
  const double sa = ca.abs().maxCoeff(), sb = cb.abs().maxCoeff();
  if (!(sa > 0) || !(sb > 0)) return kNaN;
  // Scaled to max |entry| 1 first, so neither the squares underflow nor their product overflows;
  // then sqrt(na * nb) is exactly dot when a == b, and the correlation exactly 1.
  ca /= sa;
  cb /= sb;
  const double dot = (ca * cb).sum();
  const double na = ca.square().sum(), nb = cb.square().sum();
  return std::clamp(dot / std::sqrt(na * nb), -1.0, 1.0);
}

#define DRFM_INSTANTIATE_MLP_NET(T)                                                              \
  template RowMatrix<T> MlpForwardFrom<T>(const MlpWeights<T>&, int, const ConstMatrixRef<T>&);  \
  template T MlpLossAndGradients<T>(const MlpWeights<T>&, const ConstMatrixRef<T>&,              \
                                    const ConstMatrixRef<T>&, MlpWorkspace<T>*, MlpWeights<T>*,  \
                                    const GradientRowsHook&);                                    \
  template RowMatrix<T> MlpJacobians<T>(const MlpWeights<T>&, int, const ConstMatrixRef<T>&);    \
  template absl::Status MlpAgops<T>(const MlpWeights<T>&, const ConstMatrixRef<T>&,              \
                                    std::vector<RowMatrixD>*, const ProgressTick&);

DRFM_INSTANTIATE_MLP_NET(float)
DRFM_INSTANTIATE_MLP_NET(double)
#undef DRFM_INSTANTIATE_MLP_NET

}  // namespace drfm::core
