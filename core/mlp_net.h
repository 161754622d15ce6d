// The arithmetic of the bias-free ReLU MLP of DNN.md on row-major batches (one sample per row):
// the forward pass H_l = ReLU(H_{l-1} W_l^T), the MSE loss with its gradients by backpropagation,
// the Jacobians of the sub-network that starts at a layer, the AGOP of every layer in one
// backward sweep, and the entrywise Pearson correlation behind the neural feature ansatz.
// Templated on the scalar: float for the service, double for the tests' finite-difference checks.
// Every product is an Eigen GEMM: the training step's are split into fixed tiles over the OpenMP
// threads (the same bits for any thread count), the measurement's run through Eigen's parallel
// GEMM (the same bits on every run for a fixed thread count). All functions are
// thread-compatible.
#ifndef DRFM_CORE_MLP_NET_H_
#define DRFM_CORE_MLP_NET_H_

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "core/kernels.h"
#include "core/types.h"

namespace drfm::core {

// W_1 .. W_{L+1} of an MLP with L hidden layers: element l-1 holds W_l (out x in), the shapes
// chain (W_l.cols() == W_{l-1}.rows()) and the last one has the C outputs as rows. L = size - 1
// may be 0 (a linear map).
template <typename T>
using MlpWeights = std::vector<RowMatrix<T>>;

// Outputs of the sub-network that starts at layer `layer` (1 .. L+1),
// g_l(h) = W_{L+1} ReLU(W_L ... ReLU(W_l h)), for the rows of `h` (rows x in_l): rows x C.
// `layer` 1 gives the network's outputs for prepared inputs. Preconditions (DRFM_CHECK): `layer`
// in range and h.cols() == in_l.
template <typename T>
RowMatrix<T> MlpForwardFrom(const MlpWeights<T>& w, int layer, const ConstMatrixRef<T>& h);

// Buffers the training loop reuses from one minibatch to the next.
template <typename T>
struct MlpWorkspace {
  std::vector<RowMatrix<T>> h;  // h[l] = H_l, l = 1..L (the input is not copied)
  RowMatrix<T> out;             // the outputs F (B x C)
  RowMatrix<T> delta;           // dLoss/dZ of the layer being backpropagated
  RowMatrix<T> delta_next;
};

// The MSE loss (1/(B C)) ||F - Y||_F^2 of the batch `x` (B x d, prepared) with targets `y`
// (B x C), and its gradient with respect to every weight: (*grads)[l-1] = dLoss/dW_l, resized to
// W_l's shape. Backpropagation by matrix products: with dF = 2 (F - Y)/(B C),
// dW_{L+1} = dF^T H_L, then dZ_l = (dZ_{l+1} W_{l+1}) o 1[H_l > 0] and dW_l = dZ_l^T H_{l-1}.
// ReLU'(0) is taken as 0, as torch does. Preconditions (DRFM_CHECK): matching shapes, B >= 1.
// `on_rows` (optional) is called with (l, r0, nr) as soon as rows [r0, r0 + nr) of dLoss/dW_l are
// final and W_l is no longer read by the pass, so an optimizer can update those rows of W_l there,
// while the gradient rows are still in cache (the weights behind `w` may change during the call
// that way, but only after their last use). It runs on OpenMP threads, concurrently for disjoint
// row blocks. The products are split into fixed tiles, so results do not depend on the thread
// count.
using GradientRowsHook = std::function<void(int layer, Eigen::Index r0, Eigen::Index nr)>;
template <typename T>
T MlpLossAndGradients(const MlpWeights<T>& w, const ConstMatrixRef<T>& x,
                      const ConstMatrixRef<T>& y, MlpWorkspace<T>* ws, MlpWeights<T>* grads,
                      const GradientRowsHook& on_rows = nullptr);

// The Jacobians J_i = dg_l/dh at every row h_i of `h` (rows x in_l, the inputs of layer `layer`):
// J_i = W_{L+1} D_L W_L ... D_l W_l with D_j = diag(1[pre-activation of layer j > 0]) at sample
// i. Returned stacked: (rows * C) x in_l, rows i*C .. i*C + C-1 hold J_i. The C output directions
// of all rows are propagated backwards together as one (rows * C) x k matrix per layer.
template <typename T>
RowMatrix<T> MlpJacobians(const MlpWeights<T>& w, int layer, const ConstMatrixRef<T>& h);

// The AGOP of the sub-network of every layer, AGOP_l = (1/N) sum_i J_i^T J_i (in_l x in_l,
// accumulated in double), over the N rows of `x` (prepared inputs h_0, N x d): (*agops)[l-1] for
// l = 1 .. L+1. One backward sweep per block of samples serves every layer: with
// A_i^(L) = W_{L+1} D_L and A_i^(l) = A_i^(l+1) W_{l+1} D_l, J_i of layer l is A_i^(l) W_l, so
// AGOP_l = W_l^T (sum_i A_i^(l)T A_i^(l)) W_l / N; for the output layer AGOP_{L+1} = W^T W.
// Flops: about 2 N (d k_1 + sum k_l k_{l+1}) for the forward and 2 N C (2 sum_{l>=2} k_l k_{l-1}
// + sum_l k_l^2) for the sweep, plus O(k^3) per layer. `tick` (optional) gets the fraction done
// between blocks; Cancelled when it returns false. InvalidArgument when `x` has no rows.
template <typename T>
absl::Status MlpAgops(const MlpWeights<T>& w, const ConstMatrixRef<T>& x,
                      std::vector<RowMatrixD>* agops, const ProgressTick& tick = nullptr);

// Pearson correlation of the entries of `a` and `b` (same shape): both flattened, centered by
// their mean entry, then the cosine of the two vectors (DNN.md's NFA correlation). NaN when
// either centered vector is zero (e.g. a 1 x 1 matrix) or the shapes differ. Exactly 1 when a == b
// (and a is not constant).
double EntrywiseCorrelation(const RowMatrixD& a, const RowMatrixD& b);

}  // namespace drfm::core

#endif  // DRFM_CORE_MLP_NET_H_
