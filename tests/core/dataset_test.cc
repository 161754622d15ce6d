// Tests of dataset validation, slicing and class counting (core/dataset.h).
#include "core/dataset.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

// Success when `status` is InvalidArgument and its message contains every string of `parts`.
::testing::AssertionResult IsInvalid(const absl::Status& status,
                                     std::initializer_list<const char*> parts = {}) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected InvalidArgument, got " << status;
  }
  for (const char* part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure()
             << "message \"" << status.message() << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

// rows x 2 features with value 10 * row + column, and the given labels.
Dataset MakeDataset(std::vector<int32_t> labels, int num_classes) {
  Dataset data;
  data.name = "toy";
  data.features.resize(static_cast<int64_t>(labels.size()), 2);
  for (int64_t i = 0; i < data.features.rows(); ++i) {
    data.features(i, 0) = static_cast<float>(10 * i);
    data.features(i, 1) = static_cast<float>(10 * i + 1);
  }
  data.labels = std::move(labels);
  data.num_classes = num_classes;
  return data;
}

TEST(ValidateDatasetTest, AcceptsAWellFormedDataset) {
  EXPECT_TRUE(ValidateDataset(MakeDataset({0, 1, 2, 1}, 3)).ok());
}

TEST(ValidateDatasetTest, AcceptsATestSetMissingSomeClasses) {
  EXPECT_TRUE(ValidateDataset(MakeDataset({0, 0}, 3)).ok());
}

TEST(ValidateDatasetTest, RejectsNoRowsOrNoColumns) {
  EXPECT_TRUE(IsInvalid(ValidateDataset(MakeDataset({}, 2)), {"no rows"}));
  Dataset no_columns = MakeDataset({0, 1}, 2);
  no_columns.features.resize(2, 0);
  EXPECT_TRUE(IsInvalid(ValidateDataset(no_columns), {"no feature columns"}));
}

TEST(ValidateDatasetTest, RejectsALabelCountDifferentFromTheRowCount) {
  Dataset data = MakeDataset({0, 1, 1}, 2);
  data.labels.pop_back();
  EXPECT_TRUE(IsInvalid(ValidateDataset(data), {"3 feature rows", "2 labels"}));
}

TEST(ValidateDatasetTest, RejectsLabelsOutOfRangeNamingTheRow) {
  EXPECT_TRUE(
      IsInvalid(ValidateDataset(MakeDataset({0, 1, 3}, 3)), {"'toy'", "row 2", "is 3", "[0, 3)"}));
  EXPECT_TRUE(IsInvalid(ValidateDataset(MakeDataset({0, -1}, 3)), {"row 1", "is -1"}));
}

TEST(ValidateDatasetTest, RejectsANonPositiveClassCount) {
  EXPECT_TRUE(IsInvalid(ValidateDataset(MakeDataset({0}, 0)), {"num_classes = 0"}));
}

TEST(ValidateDatasetTest, RejectsNanAndInfNamingRowAndColumn) {
  Dataset data = MakeDataset({0, 1, 0}, 2);
  data.features(2, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(IsInvalid(ValidateDataset(data), {"row 2, column 1", "finite"}));
  data.features(2, 1) = 0;
  data.features(1, 0) = -std::numeric_limits<float>::infinity();
  EXPECT_TRUE(IsInvalid(ValidateDataset(data), {"row 1, column 0", "finite"}));
}

TEST(ValidateTrainingSetTest, AcceptsEveryClassPresent) {
  EXPECT_TRUE(ValidateTrainingSet(MakeDataset({1, 0, 2}, 3)).ok());
}

TEST(ValidateTrainingSetTest, RejectsAClassWithNoSamplesNamingIt) {
  EXPECT_TRUE(IsInvalid(ValidateTrainingSet(MakeDataset({0, 2, 0, 2}, 3)), {"class 1 of 3"}));
}

TEST(ValidateTrainingSetTest, RejectsFewerRowsThanClasses) {
  EXPECT_TRUE(IsInvalid(ValidateTrainingSet(MakeDataset({0, 1}, 3)), {"2 rows", "3 classes"}));
}

TEST(ValidateTrainingSetTest, RejectsASingleClass) {
  EXPECT_TRUE(IsInvalid(ValidateTrainingSet(MakeDataset({0, 0}, 1)), {"at least 2 classes"}));
}

TEST(ValidateTrainingSetTest, ReportsTheBasicChecksFirst) {
  Dataset data = MakeDataset({0, 1}, 2);
  data.features(0, 0) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(IsInvalid(ValidateTrainingSet(data), {"row 0, column 0"}));
}

TEST(SliceDatasetTest, TakesLimitRowsAfterOffset) {
  const Dataset data = MakeDataset({0, 1, 2, 0, 1}, 3);
  absl::StatusOr<Dataset> slice = SliceDataset(data, 1, 3);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->rows(), 3);
  EXPECT_EQ(slice->cols(), 2);
  EXPECT_EQ(slice->labels, (std::vector<int32_t>{1, 2, 0}));
  EXPECT_EQ(slice->features(0, 0), 10.0f);
  EXPECT_EQ(slice->features(2, 1), 31.0f);
  EXPECT_EQ(slice->num_classes, 3);
  EXPECT_EQ(slice->name, "toy");
}

TEST(SliceDatasetTest, TreatsLimitZeroAsAllRemainingRows) {
  absl::StatusOr<Dataset> slice = SliceDataset(MakeDataset({0, 1, 2, 0, 1}, 3), 2, 0);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->labels, (std::vector<int32_t>{2, 0, 1}));
}

TEST(SliceDatasetTest, StopsAtTheEndWhenLimitIsLarger) {
  absl::StatusOr<Dataset> slice =
      SliceDataset(MakeDataset({0, 1, 2}, 3), 1, std::numeric_limits<int64_t>::max());
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->rows(), 2);
}

TEST(SliceDatasetTest, RejectsNegativeArgumentsAndOffsetsPastTheEnd) {
  const Dataset data = MakeDataset({0, 1, 2}, 3);
  EXPECT_TRUE(IsInvalid(SliceDataset(data, -1, 0).status(), {"offset is -1"}));
  EXPECT_TRUE(IsInvalid(SliceDataset(data, 0, -2).status(), {"limit is -2"}));
  EXPECT_TRUE(IsInvalid(SliceDataset(data, 3, 0).status(), {"offset 3", "3 rows"}));
}

TEST(InferNumClassesTest, IsTheLargestLabelPlusOne) {
  EXPECT_EQ(InferNumClasses({2, 0, 7, 1}), 8);
  EXPECT_EQ(InferNumClasses({0}), 1);
}

TEST(InferNumClassesTest, IsZeroWithoutLabels) { EXPECT_EQ(InferNumClasses({}), 0); }

}  // namespace
}  // namespace drfm::core
