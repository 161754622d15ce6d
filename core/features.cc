#include "core/features.h"

#include <cmath>

namespace drfm::core {

template <typename T>
FeatureMapParams<T> DrawFeatureMap(FeatureMapType type, int width, Eigen::Index d,
                                   double rff_scale, Random& rng) {
  FeatureMapParams<T> map;
  map.type = type;
  const Eigen::Index w = width > 0 ? width : d;
  map.weights.resize(w, d);
  if (type == FeatureMapType::kRelu) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(d));
    for (Eigen::Index i = 0; i < w; ++i) {
      for (Eigen::Index j = 0; j < d; ++j) map.weights(i, j) = static_cast<T>(rng.Uniform(-bound, bound));
    }
  } else {
    for (Eigen::Index i = 0; i < w; ++i) {
      for (Eigen::Index j = 0; j < d; ++j) map.weights(i, j) = static_cast<T>(rng.Cauchy(rff_scale));
    }
    map.bias.resize(w);
    for (Eigen::Index i = 0; i < w; ++i) map.bias(i) = static_cast<T>(rng.Uniform(0, 2 * M_PI));
  }
  return map;
}

template <typename T>
void ApplyFeatureMap(const FeatureMapParams<T>& map, const ConstMatrixRef<T>& p, RowMatrix<T>* out) {
  out->noalias() = p * map.weights.transpose();
  const Eigen::Index rows = out->rows();
  if (map.type == FeatureMapType::kRelu) {
#pragma omp parallel for schedule(static)
    for (Eigen::Index i = 0; i < rows; ++i) out->row(i) = out->row(i).cwiseMax(T(0));
  } else {
    const T scale = static_cast<T>(std::sqrt(2.0 / static_cast<double>(map.weights.rows())));
#pragma omp parallel for schedule(static)
    for (Eigen::Index i = 0; i < rows; ++i) {
      out->row(i) = scale * (out->row(i) + map.bias.transpose()).array().cos().matrix();
    }
  }
}

template FeatureMapParams<float> DrawFeatureMap<float>(FeatureMapType, int, Eigen::Index, double, Random&);
template FeatureMapParams<double> DrawFeatureMap<double>(FeatureMapType, int, Eigen::Index, double, Random&);
template void ApplyFeatureMap<float>(const FeatureMapParams<float>&, const ConstMatrixRef<float>&,
                                     RowMatrix<float>*);
template void ApplyFeatureMap<double>(const FeatureMapParams<double>&, const ConstMatrixRef<double>&,
                                      RowMatrix<double>*);

}  // namespace drfm::core
