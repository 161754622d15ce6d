// Neural-collapse metrics of a representation (DEEP_RFM.md, "Collapse metrics"): nc1, nc1_pinv
// (Papyan, Han, Donoho 2020), nc2, nc2_equinorm and nearest-class-center accuracy. Every metric
// costs O(N p C) time and O(p C) extra memory beyond the input: no p x p matrix is formed.
#ifndef DRFM_CORE_METRICS_H_
#define DRFM_CORE_METRICS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/report.h"
#include "core/types.h"

namespace drfm::core {

// Collapse metrics of `h` (N x p, one sample per row) with `labels` (N entries in
// [0, num_classes)). Accumulates in double whatever T is. Thread-safe; uses OpenMP, and the result
// is bit-identical for any number of threads.
// InvalidArgument when shapes disagree, N or p is 0, num_classes < 2, a label is out of range, a
// class has no rows, `h` holds NaN or Inf, or all class means are equal up to round-off
// (tr(Sigma_B) = 0): the metrics are undefined then.
// Conventions: nc1_pinv keeps at most C-1 singular directions of the centered means, those above
// 1e-10 of the largest; in nc2 a class mean equal to the mean of class means (up to round-off)
// has no direction and its row of U is taken as zero; ncc ties go to the lowest class index.
template <typename T>
absl::StatusOr<CollapseMetrics> ComputeCollapseMetrics(
    const Eigen::Ref<const RowMatrix<T>>& h, absl::Span<const int32_t> labels, int num_classes);

}  // namespace drfm::core

#endif  // DRFM_CORE_METRICS_H_
