// Conversions between the drfm.v1 API messages and the core types, and the validation of
// submitted requests: the one place that knows both sides. A request is checked here once (enum
// values, ranges via core's Validate, the server's own limits, slices, names, labels) and turned
// into core types; what core produces (layer reports, phases, estimates) is turned back into
// messages here. Every error is InvalidArgument naming the field as the proto spells it
// ("config.width", "train.limit") with the value and what is allowed. Stateless and thread-safe.
#ifndef DRFM_SERVER_CONVERT_H_
#define DRFM_SERVER_CONVERT_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "core/estimate.h"
#include "core/mlp.h"
#include "core/mlp_config.h"
#include "core/report.h"
#include "drfm/v1/common.pb.h"
#include "drfm/v1/config.pb.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/reports.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace drfm::server {

// Scheduling priorities a request may ask for (SubmitFitRequest.priority).
inline constexpr int kMinPriority = -1000;
inline constexpr int kMaxPriority = 1000;
// Bounds of SubmitFitRequest.labels.
inline constexpr int kMaxJobLabels = 64;
inline constexpr size_t kMaxLabelKeyLength = 63;
inline constexpr size_t kMaxLabelValueLength = 256;

// What this server accepts per fit, on top of the ranges of the API (core::FitConfig::Validate):
// an operator's knobs that keep one job from monopolizing the machine. The memory a fit may use
// is bounded separately (JobManagerOptions::memory_budget_bytes), from core::EstimateFit.
struct ServiceLimits {
  int max_layers = core::kMaxLayers;  // config.layers; the API allows up to 64
  int max_width = 16384;              // config.width; the API allows up to 65536
  int max_rfm_iterations = 20;        // config.rfm_iterations; the API allows up to 50
  int64_t max_train_rows = 100000;    // rows of the training slice
  int64_t max_test_rows = 100000;     // rows of the test slice
  // Measurements (NetworkReports) of one MLP fit: each is stored in the job and as an event, so
  // epochs / measure_every is bounded. The API allows up to 100001.
  int max_mlp_measurements = 1000;

  // InvalidArgument when a limit is below 1 or above the API's range.
  absl::Status Validate() const;
};

// A seed for a request that leaves config.seed unset: 64 bits from std::random_device.
uint64_t DrawSeed();

// The core configuration `proto` asks for: unset fields take core::FitConfig's defaults, an unset
// seed becomes `seed_if_unset`. InvalidArgument for an enum value outside the declared ones
// (listing the allowed names) or a value core::FitConfig::Validate rejects (its message names
// the field as "config.<field>").
absl::StatusOr<core::FitConfig> FitConfigFromProto(const v1::FitConfig& proto,
                                                   uint64_t seed_if_unset);

// The resolved message of `config`: every field set, enums never *_UNSPECIFIED, so a Job and a
// Model show every value the fit used. FitConfigFromProto(FitConfigToProto(c), _) == c.
v1::FitConfig FitConfigToProto(const core::FitConfig& config);

// OK when `config` is within `limits`; InvalidArgument naming the field and this server's limit
// otherwise.
absl::Status CheckServiceLimits(const core::FitConfig& config, const ServiceLimits& limits);

// The core MLP configuration `proto` asks for: unset fields take core::MlpConfig's defaults, an
// unset seed becomes `seed_if_unset`. InvalidArgument for a value core::MlpConfig::Validate
// rejects, naming the field as "config.<field>".
absl::StatusOr<core::MlpConfig> MlpConfigFromProto(const v1::MlpConfig& proto,
                                                   uint64_t seed_if_unset);

// The resolved message of `config`, every field set. MlpConfigFromProto(MlpConfigToProto(c), _)
// == c.
v1::MlpConfig MlpConfigToProto(const core::MlpConfig& config);

// OK when `config` is within `limits` (the number of measurements it takes); InvalidArgument
// naming the fields and the limit otherwise.
absl::Status CheckMlpServiceLimits(const core::MlpConfig& config, const ServiceLimits& limits);

// OK when `slice` is usable as the request field `field` ("train", "test"): a non-empty dataset,
// limit >= 0 and offset >= 0 (whether offset is below the dataset's rows is checked once the
// dataset is known). InvalidArgument otherwise.
absl::Status ValidateSlice(const v1::DatasetSlice& slice, std::string_view field);

// True when the request names a test slice (a non-empty test.dataset).
bool HasTestSlice(const v1::SubmitFitRequest& request);
bool HasTestSlice(const v1::SubmitMlpFitRequest& request);

// Checks of a SubmitFitRequest that need no dataset and no config conversion: train (required)
// and test (optional) slices, model_name (empty, or a valid name: ValidateName), request_id
// length, priority range and labels. InvalidArgument naming the field otherwise.
absl::Status ValidateSubmitFitRequest(const v1::SubmitFitRequest& request);
// The same checks of a SubmitMlpFitRequest (its config is checked by MlpConfigFromProto).
absl::Status ValidateSubmitMlpFitRequest(const v1::SubmitMlpFitRequest& request);
// Checks of a SubmitAnalysisRequest that need no store: model (required, a valid name), version
// (>= 1 when set), data (a required slice), request_id, priority and labels as for SubmitFit.
absl::Status ValidateSubmitAnalysisRequest(const v1::SubmitAnalysisRequest& request);

// Enum conversions of what a fit reports.
v1::Progress::Phase PhaseToProto(core::Phase phase);
v1::Progress::Phase MlpPhaseToProto(core::MlpPhase phase);
v1::CollapseMetrics CollapseMetricsToProto(const core::CollapseMetrics& metrics);
v1::PhaseValues PhaseValuesToProto(const std::array<double, core::kNumPhases>& values);

// Width of the representation layer `layer` (1..L+1) outputs for a fit of `config` on rows of
// `input_cols` features: the feature-map width (or, for a COSINE map of width 0, the input
// width, which then never changes); for the readout (L+1), the width of its input.
int64_t LayerOutputDim(const core::FitConfig& config, int64_t input_cols, int layer);
// LayerOutputDim of layers 1..L (Model.layer_dims).
std::vector<int64_t> LayerDims(const core::FitConfig& config, int64_t input_cols);

// `report` as a message; `output_dim` fills LayerReport.output_dim (see LayerOutputDim).
// test_accuracy is set only when the report has a test measurement.
v1::LayerReport LayerReportToProto(const core::LayerReport& report, int64_t output_dim);

// `report` as a message: test_accuracy and test_loss only when the report has a test
// measurement, `left` only for hidden layers. Undefined metrics stay NaN.
v1::NetworkReport NetworkReportToProto(const core::NetworkReport& report);

// Bytes of the float32 features and int32 labels of `rows` x `cols` (a loaded slice in memory).
int64_t DatasetBytes(int64_t rows, int64_t cols);

// The estimate message: memory_bytes = estimate.peak_bytes + the loaded slices (DatasetBytes of
// train and test rows), the flops, the shapes, the budget (0 = unlimited) and whether the memory
// is within it.
v1::FitEstimate FitEstimateToProto(const core::FitEstimate& estimate, const core::FitShape& shape,
                                   int64_t memory_budget_bytes);

// The estimate message of an MLP fit or analysis: memory_bytes = estimate.peak_bytes + the loaded
// slices, flops, the shapes, the budget and whether the memory is within it; kernel_bytes 0 and
// no phase_flops (an MLP has no kernel matrix or Deep RFM phases).
v1::FitEstimate MlpEstimateToProto(const core::MlpFitEstimate& estimate,
                                   const core::FitShape& shape, int64_t memory_budget_bytes);

// "12.3 GB" (decimal gigabytes, as admission messages give them); below 0.1 GB two significant
// digits ("0.017 GB").
std::string FormatGigabytes(double bytes);

google::protobuf::Timestamp ToProtoTime(absl::Time time);
absl::Time FromProtoTime(const google::protobuf::Timestamp& timestamp);

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::Job::State state);

}  // namespace drfm::server

#endif  // DRFM_SERVER_CONVERT_H_
