// The untrained random feature maps of DEEP_RFM.md step 6: ReLU features max(0, P W^T) and random
// Fourier (cosine) features sqrt(2/D) cos(P Omega^T + b).
#ifndef DRFM_CORE_FEATURES_H_
#define DRFM_CORE_FEATURES_H_

#include "core/config.h"
#include "core/kernels.h"
#include "core/random.h"

namespace drfm::core {

template <typename T>
struct FeatureMapParams {
  FeatureMapType type = FeatureMapType::kRelu;
  RowMatrix<T> weights;  // D x d: W (ReLU) or Omega (cosine)
  Vector<T> bias;        // D, cosine only
};

// Draws a fresh map from `rng`: ReLU W_ij ~ U(-1/sqrt(d), 1/sqrt(d)); cosine Omega_ij ~
// Cauchy(0, rff_scale), b_i ~ U[0, 2 pi). `width` 0 (cosine only) means D = d.
template <typename T>
FeatureMapParams<T> DrawFeatureMap(FeatureMapType type, int width, Eigen::Index d,
                                   double rff_scale, Random& rng);

// out = Phi(p), (rows x D). Flops: 2 rows d D.
template <typename T>
void ApplyFeatureMap(const FeatureMapParams<T>& map, const ConstMatrixRef<T>& p, RowMatrix<T>* out);

}  // namespace drfm::core

#endif  // DRFM_CORE_FEATURES_H_
