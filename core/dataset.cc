// Validation, slicing and class counting of in-memory datasets (core/dataset.h).
#include "core/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace drfm::core {
namespace {

// "dataset 'name'" or "dataset" for an unnamed one, to prefix error messages.
std::string Describe(const Dataset& data) {
  if (data.name.empty()) return "dataset";
  return absl::StrCat("dataset '", data.name, "'");
}

}  // namespace

absl::Status ValidateDataset(const Dataset& data) {
  const std::string what = Describe(data);
  if (data.rows() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no rows; at least 1 is required"));
  }
  if (data.cols() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has no feature columns; at least 1 is required"));
  }
  if (static_cast<int64_t>(data.labels.size()) != data.rows()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d feature rows but %d labels; there must be one label per row",
                        what, data.rows(), data.labels.size()));
  }
  if (data.num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has num_classes = %d; it must be at least 1", what, data.num_classes));
  }
  for (int64_t i = 0; i < data.rows(); ++i) {
    const int32_t label = data.labels[i];
    if (label < 0 || label >= data.num_classes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: label of row %d (0-based) is %d; labels must be in [0, %d) (num_classes = %d)", what,
          i, label, data.num_classes, data.num_classes));
    }
  }
  // Row-major storage: scanning rows in order is a linear pass over memory.
  for (int64_t i = 0; i < data.rows(); ++i) {
    const float* row = data.features.data() + i * data.cols();
    for (int64_t j = 0; j < data.cols(); ++j) {
      if (!std::isfinite(row[j])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: feature at row %d, column %d (0-based) is %f; features must be finite", what, i, j,
            row[j]));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTrainingSet(const Dataset& data) {
  const absl::Status status = ValidateDataset(data);
  if (!status.ok()) return status;
  const std::string what = Describe(data);
  if (data.num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has num_classes = %d; a training set needs at least 2 classes", what,
                        data.num_classes));
  }
  if (data.rows() < data.num_classes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d rows but %d classes; a training set needs at least one row per class", what,
        data.rows(), data.num_classes));
  }
  std::vector<int64_t> counts(data.num_classes, 0);
  for (int32_t label : data.labels) ++counts[label];  // in range: ValidateDataset passed
  for (int c = 0; c < data.num_classes; ++c) {
    if (counts[c] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: class %d of %d has no rows; every class must be present in a training set (the "
          "collapse metrics are undefined otherwise), so relabel the classes to 0..K-1 or pick "
          "another slice",
          what, c, data.num_classes));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int64_t offset, int64_t limit) {
  if (offset < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slice offset is %d; it must be non-negative", offset));
  }
  if (limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slice limit is %d; it must be non-negative (0 = all rows)", limit));
  }
  if (offset >= data.rows()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "slice offset %d is past the end of %s, which has %d rows; the offset must be less than "
        "the row count",
        offset, Describe(data), data.rows()));
  }
  const int64_t available = data.rows() - offset;
  const int64_t count = (limit == 0 || limit > available) ? available : limit;
  if (static_cast<int64_t>(data.labels.size()) < offset + count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d feature rows but only %d labels; cannot slice rows [%d, %d)",
                        Describe(data), data.rows(), data.labels.size(), offset, offset + count));
  }
  Dataset slice;
  slice.name = data.name;
  slice.num_classes = data.num_classes;
  slice.features = data.features.middleRows(offset, count);
  slice.labels.assign(data.labels.begin() + offset, data.labels.begin() + offset + count);
  return slice;
}

int InferNumClasses(const std::vector<int32_t>& labels) {
  if (labels.empty()) return 0;
  const int32_t max_label = *std::max_element(labels.begin(), labels.end());
  if (max_label < 0) return 0;
  // max + 1 would overflow for INT32_MAX; such a label is rejected by ValidateDataset anyway.
  if (max_label == std::numeric_limits<int32_t>::max()) return max_label;
  return max_label + 1;
}

}  // namespace drfm::core
