// In-memory labelled datasets: the features and labels a fit trains or is tested on, with the
// checks every dataset passes before the numerics see it.
#ifndef DRFM_CORE_DATASET_H_
#define DRFM_CORE_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/types.h"

namespace drfm::core {

// A labelled dataset: `features` is rows×cols float32 (one sample per row), `labels` has one
// class index in [0, num_classes) per row. A plain value type; not synchronized.
struct Dataset {
  std::string name;
  RowMatrixF features;
  std::vector<int32_t> labels;
  int num_classes = 0;

  int64_t rows() const { return features.rows(); }
  int64_t cols() const { return features.cols(); }
};

// OK when `features` and `labels` agree in length, every feature is finite, every label is in
// [0, num_classes) and there are at least 1 column and 1 row. InvalidArgument otherwise, naming the
// first offending row/column.
absl::Status ValidateDataset(const Dataset& data);

// Like ValidateDataset, and additionally requires what a training set needs: at least
// num_classes >= 2, rows >= num_classes, and every class present at least once (the collapse
// metrics are undefined otherwise). InvalidArgument naming the missing class otherwise.
absl::Status ValidateTrainingSet(const Dataset& data);

// Rows [offset, offset + limit) of `data` (limit 0 = all rows after offset). InvalidArgument when
// offset is past the end or negative, or limit is negative.
absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t offset, int64_t limit);

// Number of classes implied by the labels: max label + 1 (0 for no rows).
int InferNumClasses(const std::vector<int32_t>& labels);

}  // namespace drfm::core

#endif  // DRFM_CORE_DATASET_H_
