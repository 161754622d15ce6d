// Matrix aliases used throughout drfm::core. Every data matrix stores one sample per row
// (row-major), the layout of DEEP_RFM.md and of the wire format.
#ifndef DRFM_CORE_TYPES_H_
#define DRFM_CORE_TYPES_H_

#include <cstdint>

#include <Eigen/Core>

namespace drfm::core {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

using RowMatrixF = RowMatrix<float>;
using RowMatrixD = RowMatrix<double>;

}  // namespace drfm::core

#endif  // DRFM_CORE_TYPES_H_
