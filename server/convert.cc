#include "server/convert.h"

#include <array>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "server/store.h"

namespace drfm::server {
namespace {

// Debian's abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// InvalidArgument for an enum field holding a value its declaration does not have (proto3 enums
// are open, so a client can send any number).
absl::Status BadEnum(const char* field, int value, const char* allowed) {
  return absl::InvalidArgumentError(absl::StrCat("config.", field, " = ", value,
                                                 " is not a known value; use ", allowed));
}

// One enum of FitConfig: the proto values and the core values they stand for, both ways. The
// proto's 0 (..._UNSPECIFIED) keeps the core default; any value not listed is InvalidArgument.
template <typename Proto, typename Core, size_t N>
struct EnumMap {
  const char* field;    // "kernel"
  const char* allowed;  // for the error: "LAPLACE or GAUSSIAN (unset = LAPLACE)"
  std::array<std::pair<Proto, Core>, N> pairs;

  absl::Status FromProto(Proto value, Core* out) const {
    if (value == Proto{}) return absl::OkStatus();
    for (const auto& [p, c] : pairs) {
      if (p == value) {
        *out = c;
        return absl::OkStatus();
      }
    }
    return BadEnum(field, value, allowed);
  }
  Proto ToProto(Core value) const {
    for (const auto& [p, c] : pairs) {
      if (c == value) return p;
    }
    return Proto{};
  }
};

using Fit = v1::FitConfig;
constexpr EnumMap<Fit::Kernel, core::KernelType, 2> kKernels{
    "kernel", "LAPLACE or GAUSSIAN (unset = LAPLACE)",
    {{{Fit::LAPLACE, core::KernelType::kLaplace}, {Fit::GAUSSIAN, core::KernelType::kGaussian}}}};
constexpr EnumMap<Fit::FeatureMap, core::FeatureMapType, 2> kFeatureMaps{
    "feature_map", "RELU or COSINE (unset = RELU)",
    {{{Fit::RELU, core::FeatureMapType::kRelu}, {Fit::COSINE, core::FeatureMapType::kCosine}}}};
constexpr EnumMap<Fit::AgopNormalize, core::AgopNormalize, 2> kAgopNormalizations{
    "agop_normalize", "MAX or NONE (unset = MAX)",
    {{{Fit::MAX, core::AgopNormalize::kMax}, {Fit::NONE, core::AgopNormalize::kNone}}}};
constexpr EnumMap<Fit::Precision, core::Precision, 2> kPrecisions{
    "precision", "FLOAT32 or FLOAT64 (unset = FLOAT32)",
    {{{Fit::FLOAT32, core::Precision::kFloat32}, {Fit::FLOAT64, core::Precision::kFloat64}}}};
constexpr EnumMap<Fit::LabelEncoding, core::LabelEncoding, 2> kLabelEncodings{
    "label_encoding", "PLUS_MINUS_ONE or ONE_HOT (unset = PLUS_MINUS_ONE)",
    {{{Fit::PLUS_MINUS_ONE, core::LabelEncoding::kPlusMinusOne},
      {Fit::ONE_HOT, core::LabelEncoding::kOneHot}}}};
constexpr EnumMap<Fit::AgopMethod, core::AgopMethod, 3> kAgopMethods{
    "agop_method", "AUTO, DIRECT or GRAM (unset = AUTO)",
    {{{Fit::AUTO, core::AgopMethod::kAuto},
      {Fit::DIRECT, core::AgopMethod::kDirect},
      {Fit::GRAM, core::AgopMethod::kGram}}}};

// The checks every submission shares: request_id length, priority range and labels.
absl::Status ValidateJobFields(const std::string& request_id, int32_t priority,
                               const google::protobuf::Map<std::string, std::string>& labels) {
  if (request_id.size() > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("request_id must be at most ",
                                                   kMaxRequestIdLength, " bytes, got ",
                                                   request_id.size()));
  }
  if (priority < kMinPriority || priority > kMaxPriority) {
    return absl::InvalidArgumentError(absl::StrCat("priority = ", priority,
                                                   " is not allowed: use ", kMinPriority, " to ",
                                                   kMaxPriority, " (higher runs first)"));
  }
  if (static_cast<int>(labels.size()) > kMaxJobLabels) {
    return absl::InvalidArgumentError(absl::StrCat("labels has ", labels.size(),
                                                   " entries; at most ", kMaxJobLabels,
                                                   " are allowed"));
  }
  for (const auto& [key, value] : labels) {
    if (key.empty() || key.size() > kMaxLabelKeyLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels key \"", absl::CHexEscape(key.substr(0, kMaxLabelKeyLength + 1)),
                       "\" must be 1 to ", kMaxLabelKeyLength, " characters long"));
    }
    if (value.size() > kMaxLabelValueLength) {
      return absl::InvalidArgumentError(absl::StrCat("labels value of key \"",
                                                     absl::CHexEscape(key), "\" must be at most ",
                                                     kMaxLabelValueLength, " characters long"));
    }
  }
  return absl::OkStatus();
}

bool NamesTestSlice(bool has_test, const v1::DatasetSlice& test) {
  return has_test && !test.dataset().empty();
}

// The train (required) and test (optional) slices and the model name of a fit request.
absl::Status ValidateFitSlices(bool has_train, const v1::DatasetSlice& train, bool has_test,
                               const v1::DatasetSlice& test, const std::string& model_name) {
  if (!has_train) {
    return absl::InvalidArgumentError(
        "train is required: name the training rows, e.g. train { dataset: \"fashion-mnist:train\" "
        "limit: 2000 }");
  }
  DRFM_RETURN_IF_ERROR(ValidateSlice(train, "train"));
  // A test slice with rows but no dataset is a mistake rather than "no test set".
  if (has_test &&
      (NamesTestSlice(has_test, test) || test.limit() != 0 || test.offset() != 0)) {
    DRFM_RETURN_IF_ERROR(ValidateSlice(test, "test"));
  }
  if (!model_name.empty()) DRFM_RETURN_IF_ERROR(ValidateName("model_name", model_name));
  return absl::OkStatus();
}

}  // namespace

absl::Status ServiceLimits::Validate() const {
  auto check = [](const char* name, int64_t value, int64_t max) -> absl::Status {
    if (value < 1 || value > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("service limit ", name, " = ", value, " must be in [1, ", max, "]"));
    }
    return absl::OkStatus();
  };
  DRFM_RETURN_IF_ERROR(check("max_layers", max_layers, core::kMaxLayers));
  DRFM_RETURN_IF_ERROR(check("max_width", max_width, core::kMaxWidth));
  DRFM_RETURN_IF_ERROR(check("max_rfm_iterations", max_rfm_iterations, core::kMaxRfmIterations));
  DRFM_RETURN_IF_ERROR(check("max_train_rows", max_train_rows, int64_t{1} << 40));
  DRFM_RETURN_IF_ERROR(check("max_test_rows", max_test_rows, int64_t{1} << 40));
  DRFM_RETURN_IF_ERROR(
      check("max_mlp_measurements", max_mlp_measurements, int64_t{core::kMaxMlpEpochs} + 1));
  return absl::OkStatus();
}

uint64_t DrawSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
}

absl::StatusOr<core::FitConfig> FitConfigFromProto(const v1::FitConfig& proto,
                                                   uint64_t seed_if_unset) {
  core::FitConfig config;
  if (proto.has_layers()) config.layers = proto.layers();
  DRFM_RETURN_IF_ERROR(kKernels.FromProto(proto.kernel(), &config.kernel));
  if (proto.has_bandwidth()) config.bandwidth = proto.bandwidth();
  if (proto.has_ridge()) config.ridge = proto.ridge();
  if (proto.has_rfm_iterations()) config.rfm_iterations = proto.rfm_iterations();
  DRFM_RETURN_IF_ERROR(kFeatureMaps.FromProto(proto.feature_map(), &config.feature_map));
  if (proto.has_width()) config.width = proto.width();
  if (proto.has_rff_scale()) config.rff_scale = proto.rff_scale();
  if (proto.has_agop_power()) config.agop_power = proto.agop_power();
  config.agop_samples = proto.agop_samples();
  DRFM_RETURN_IF_ERROR(
      kAgopNormalizations.FromProto(proto.agop_normalize(), &config.agop_normalize));
  DRFM_RETURN_IF_ERROR(kPrecisions.FromProto(proto.precision(), &config.precision));
  if (proto.has_standardize()) config.standardize = proto.standardize();
  DRFM_RETURN_IF_ERROR(
      kLabelEncodings.FromProto(proto.label_encoding(), &config.label_encoding));
  config.seed = proto.has_seed() ? proto.seed() : seed_if_unset;
  DRFM_RETURN_IF_ERROR(kAgopMethods.FromProto(proto.agop_method(), &config.agop_method));
  if (proto.has_top_eigenvalues()) config.top_eigenvalues = proto.top_eigenvalues();
  DRFM_RETURN_IF_ERROR(config.Validate());
  return config;
}

v1::FitConfig FitConfigToProto(const core::FitConfig& config) {
  v1::FitConfig proto;
  proto.set_layers(config.layers);
  proto.set_kernel(kKernels.ToProto(config.kernel));
  proto.set_bandwidth(config.bandwidth);
  proto.set_ridge(config.ridge);
  proto.set_rfm_iterations(config.rfm_iterations);
  proto.set_feature_map(kFeatureMaps.ToProto(config.feature_map));
  proto.set_width(config.width);
  proto.set_rff_scale(config.rff_scale);
  proto.set_agop_power(config.agop_power);
  proto.set_agop_samples(config.agop_samples);
  proto.set_agop_normalize(kAgopNormalizations.ToProto(config.agop_normalize));
  proto.set_precision(kPrecisions.ToProto(config.precision));
  proto.set_standardize(config.standardize);
  proto.set_label_encoding(kLabelEncodings.ToProto(config.label_encoding));
  proto.set_seed(config.seed);
  proto.set_agop_method(kAgopMethods.ToProto(config.agop_method));
  proto.set_top_eigenvalues(config.top_eigenvalues);
  return proto;
}

absl::Status CheckServiceLimits(const core::FitConfig& config, const ServiceLimits& limits) {
  if (config.layers > limits.max_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.layers = ", config.layers, " exceeds this server's limit of ",
                     limits.max_layers, " layers; use at most ", limits.max_layers));
  }
  if (config.width > limits.max_width) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.width = ", config.width, " exceeds this server's limit of ",
                     limits.max_width, "; use a width of at most ", limits.max_width));
  }
  if (config.rfm_iterations > limits.max_rfm_iterations) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.rfm_iterations = ", config.rfm_iterations, " exceeds this server's limit of ",
        limits.max_rfm_iterations, "; use at most ", limits.max_rfm_iterations));
  }
  return absl::OkStatus();
}

absl::Status ValidateSlice(const v1::DatasetSlice& slice, std::string_view field) {
  const absl::string_view name = AsAbsl(field);
  if (slice.dataset().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".dataset is required: name a dataset id or name, e.g. \"fashion-mnist:train\""));
  }
  if (slice.limit() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".limit = ", slice.limit(), " is not allowed: use 0 (every row) or a row count"));
  }
  if (slice.offset() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ".offset = ", slice.offset(), " is not allowed: use 0 or a positive row offset"));
  }
  return absl::OkStatus();
}

bool HasTestSlice(const v1::SubmitFitRequest& request) {
  return NamesTestSlice(request.has_test(), request.test());
}

bool HasTestSlice(const v1::SubmitMlpFitRequest& request) {
  return NamesTestSlice(request.has_test(), request.test());
}

absl::Status ValidateSubmitFitRequest(const v1::SubmitFitRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateFitSlices(request.has_train(), request.train(), request.has_test(),
                                         request.test(), request.model_name()));
  return ValidateJobFields(request.request_id(), request.priority(), request.labels());
}

absl::Status ValidateSubmitMlpFitRequest(const v1::SubmitMlpFitRequest& request) {
  DRFM_RETURN_IF_ERROR(ValidateFitSlices(request.has_train(), request.train(), request.has_test(),
                                         request.test(), request.model_name()));
  return ValidateJobFields(request.request_id(), request.priority(), request.labels());
}

absl::Status ValidateSubmitAnalysisRequest(const v1::SubmitAnalysisRequest& request) {
  if (request.model().empty()) {
    return absl::InvalidArgumentError(
        "model is required: name a stored MLP (Model.kind MLP, from SubmitMlpFit or ImportModel)");
  }
  DRFM_RETURN_IF_ERROR(ValidateName("model", request.model()));
  if (request.has_version() && request.version() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version = ", request.version(),
        " is not allowed: use 1 or more, or leave it unset for the latest version"));
  }
  if (!request.has_data()) {
    return absl::InvalidArgumentError(
        "data is required: name the rows to measure the model on, e.g. data { dataset: "
        "\"fashion-mnist:test\" limit: 1000 }");
  }
  DRFM_RETURN_IF_ERROR(ValidateSlice(request.data(), "data"));
  return ValidateJobFields(request.request_id(), request.priority(), request.labels());
}

absl::StatusOr<core::MlpConfig> MlpConfigFromProto(const v1::MlpConfig& proto,
                                                   uint64_t seed_if_unset) {
  core::MlpConfig config;
  if (proto.has_depth()) config.depth = proto.depth();
  if (proto.has_width()) config.width = proto.width();
  if (proto.has_init_gain()) config.init_gain = proto.init_gain();
  if (proto.has_learning_rate()) config.learning_rate = proto.learning_rate();
  if (proto.has_epochs()) config.epochs = proto.epochs();
  if (proto.has_batch_size()) config.batch_size = proto.batch_size();
  if (proto.has_measure_every()) config.measure_every = proto.measure_every();
  config.seed = proto.has_seed() ? proto.seed() : seed_if_unset;
  if (proto.has_weight_decay()) config.weight_decay = proto.weight_decay();
  if (proto.has_standardize()) config.standardize = proto.standardize();
  if (proto.has_row_normalize()) config.row_normalize = proto.row_normalize();
  absl::Status valid = config.Validate();
  if (!valid.ok()) {
    // core names the fields after its struct ("mlp_config.width"); the request calls it config.
    std::string message(valid.message());
    constexpr absl::string_view kCorePrefix = "mlp_config.";
    if (absl::StartsWith(message, kCorePrefix)) {
      message = absl::StrCat("config.", message.substr(kCorePrefix.size()));
    }
    return absl::Status(valid.code(), message);
  }
  return config;
}

v1::MlpConfig MlpConfigToProto(const core::MlpConfig& config) {
  v1::MlpConfig proto;
  proto.set_depth(config.depth);
  proto.set_width(config.width);
  proto.set_init_gain(config.init_gain);
  proto.set_learning_rate(config.learning_rate);
  proto.set_epochs(config.epochs);
  proto.set_batch_size(config.batch_size);
  proto.set_measure_every(config.measure_every);
  proto.set_seed(config.seed);
  proto.set_weight_decay(config.weight_decay);
  proto.set_standardize(config.standardize);
  proto.set_row_normalize(config.row_normalize);
  return proto;
}

absl::Status CheckMlpServiceLimits(const core::MlpConfig& config, const ServiceLimits& limits) {
  // MlpMeasurementEpochs: 0, measure_every, 2 measure_every, ... below epochs, and epochs.
  const int64_t measurements =
      config.measure_every > 0
          ? (int64_t{config.epochs} + config.measure_every - 1) / config.measure_every + 1
          : 1;
  if (measurements > limits.max_mlp_measurements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.epochs = ", config.epochs, " with config.measure_every = ", config.measure_every,
        " takes ", measurements, " measurements; this server records at most ",
        limits.max_mlp_measurements, " per job: raise config.measure_every to at least ",
        (int64_t{config.epochs} + limits.max_mlp_measurements - 2) /
            (limits.max_mlp_measurements - 1 > 0 ? limits.max_mlp_measurements - 1 : 1),
        " (or 0 for one measurement after the last epoch)"));
  }
  return absl::OkStatus();
}

v1::Progress::Phase PhaseToProto(core::Phase phase) {
  switch (phase) {
    case core::Phase::kKernel:
      return v1::Progress::KERNEL;
    case core::Phase::kSolve:
      return v1::Progress::SOLVE;
    case core::Phase::kAgop:
      return v1::Progress::AGOP;
    case core::Phase::kProject:
      return v1::Progress::PROJECT;
    case core::Phase::kFeatures:
      return v1::Progress::FEATURES;
    case core::Phase::kMetrics:
      return v1::Progress::METRICS;
  }
  return v1::Progress::PHASE_UNSPECIFIED;
}

v1::Progress::Phase MlpPhaseToProto(core::MlpPhase phase) {
  switch (phase) {
    case core::MlpPhase::kTrain:
      return v1::Progress::TRAIN;
    case core::MlpPhase::kMeasure:
      return v1::Progress::MEASURE;
  }
  return v1::Progress::PHASE_UNSPECIFIED;
}

v1::CollapseMetrics CollapseMetricsToProto(const core::CollapseMetrics& metrics) {
  v1::CollapseMetrics proto;
  proto.set_nc1(metrics.nc1);
  proto.set_nc1_pinv(metrics.nc1_pinv);
  proto.set_nc2(metrics.nc2);
  proto.set_nc2_equinorm(metrics.nc2_equinorm);
  proto.set_ncc_accuracy(metrics.ncc_accuracy);
  return proto;
}

v1::PhaseValues PhaseValuesToProto(const std::array<double, core::kNumPhases>& values) {
  auto at = [&values](core::Phase phase) { return values[static_cast<int>(phase)]; };
  v1::PhaseValues proto;
  proto.set_kernel(at(core::Phase::kKernel));
  proto.set_solve(at(core::Phase::kSolve));
  proto.set_agop(at(core::Phase::kAgop));
  proto.set_project(at(core::Phase::kProject));
  proto.set_features(at(core::Phase::kFeatures));
  proto.set_metrics(at(core::Phase::kMetrics));
  return proto;
}

int64_t LayerOutputDim(const core::FitConfig& config, int64_t input_cols, int layer) {
  // Only a COSINE map of width 0 keeps the width of its input, which is then input_cols.
  const int64_t feature_width = config.width > 0 ? config.width : input_cols;
  if (layer > config.layers) return config.layers == 0 ? input_cols : feature_width;
  return feature_width;
}

std::vector<int64_t> LayerDims(const core::FitConfig& config, int64_t input_cols) {
  std::vector<int64_t> dims;
  for (int layer = 1; layer <= config.layers; ++layer) {
    dims.push_back(LayerOutputDim(config, input_cols, layer));
  }
  return dims;
}

v1::LayerReport LayerReportToProto(const core::LayerReport& report, int64_t output_dim) {
  v1::LayerReport proto;
  proto.set_layer(report.layer);
  proto.set_readout(report.readout);
  proto.set_train_accuracy(report.train_accuracy);
  if (report.has_test) proto.set_test_accuracy(report.test_accuracy);
  *proto.mutable_input() = CollapseMetricsToProto(report.input);
  if (!report.readout) {
    *proto.mutable_projected() = CollapseMetricsToProto(report.projected);
    *proto.mutable_features() = CollapseMetricsToProto(report.features);
  }
  proto.set_agop_trace(report.agop_trace);
  proto.set_agop_effective_rank(report.agop_effective_rank);
  for (double value : report.agop_top_eigenvalues) proto.add_agop_top_eigenvalues(value);
  *proto.mutable_phase_seconds() = PhaseValuesToProto(report.phase_seconds);
  *proto.mutable_phase_flops() = PhaseValuesToProto(report.phase_flops);
  proto.set_jitter_retries(report.jitter_retries);
  proto.set_ridge_used(report.ridge_used);
  proto.set_agop_gram_form(report.agop_gram_form);
  proto.set_output_dim(output_dim);
  return proto;
}

v1::NetworkReport NetworkReportToProto(const core::NetworkReport& report) {
  v1::NetworkReport proto;
  proto.set_epoch(report.epoch);
  proto.set_train_loss(report.train_loss);
  proto.set_train_accuracy(report.train_accuracy);
  if (report.has_test) {
    proto.set_test_accuracy(report.test_accuracy);
    proto.set_test_loss(report.test_loss);
  }
  for (const core::NetworkLayerReport& layer : report.layers) {
    v1::NetworkLayerReport* out = proto.add_layers();
    out->set_layer(layer.layer);
    out->set_output(layer.output);
    *out->mutable_none() = CollapseMetricsToProto(layer.none);
    *out->mutable_right() = CollapseMetricsToProto(layer.right);
    if (layer.has_left()) *out->mutable_left() = CollapseMetricsToProto(layer.left);
    out->set_nfa_correlation(layer.nfa_correlation);
    out->set_nfa_correlation_raw(layer.nfa_correlation_raw);
    for (double value : layer.top_singular_values) out->add_top_singular_values(value);
  }
  proto.set_seconds(report.seconds);
  return proto;
}

int64_t DatasetBytes(int64_t rows, int64_t cols) { return 4 * rows * (cols + 1); }

v1::FitEstimate FitEstimateToProto(const core::FitEstimate& estimate, const core::FitShape& shape,
                                   int64_t memory_budget_bytes) {
  v1::FitEstimate proto;
  const double memory = estimate.peak_bytes + static_cast<double>(DatasetBytes(
                                                  shape.train_rows + shape.test_rows, shape.cols));
  proto.set_memory_bytes(static_cast<int64_t>(std::ceil(memory)));
  proto.set_flops(estimate.flops);
  *proto.mutable_phase_flops() = PhaseValuesToProto(estimate.phase_flops);
  proto.set_kernel_bytes(static_cast<int64_t>(std::ceil(estimate.kernel_matrix_bytes)));
  proto.set_train_rows(shape.train_rows);
  proto.set_test_rows(shape.test_rows);
  proto.set_cols(shape.cols);
  proto.set_num_classes(shape.num_classes);
  proto.set_memory_budget_bytes(memory_budget_bytes);
  proto.set_within_budget(memory_budget_bytes <= 0 || proto.memory_bytes() <= memory_budget_bytes);
  return proto;
}

v1::FitEstimate MlpEstimateToProto(const core::MlpFitEstimate& estimate,
                                   const core::FitShape& shape, int64_t memory_budget_bytes) {
  v1::FitEstimate proto;
  const double memory = estimate.peak_bytes + static_cast<double>(DatasetBytes(
                                                  shape.train_rows + shape.test_rows, shape.cols));
  proto.set_memory_bytes(static_cast<int64_t>(std::ceil(memory)));
  proto.set_flops(estimate.flops);
  proto.set_train_rows(shape.train_rows);
  proto.set_test_rows(shape.test_rows);
  proto.set_cols(shape.cols);
  proto.set_num_classes(shape.num_classes);
  proto.set_memory_budget_bytes(memory_budget_bytes);
  proto.set_within_budget(memory_budget_bytes <= 0 || proto.memory_bytes() <= memory_budget_bytes);
  return proto;
}

std::string FormatGigabytes(double bytes) {
  const double gb = bytes / 1e9;
  // Small amounts keep two significant digits rather than showing as "0.0 GB".
  return gb >= 0.1 || gb == 0 ? absl::StrFormat("%.1f GB", gb) : absl::StrFormat("%.2g GB", gb);
}

google::protobuf::Timestamp ToProtoTime(absl::Time time) {
  const int64_t nanos = absl::ToUnixNanos(time);
  google::protobuf::Timestamp timestamp;
  // Floor division, so times before 1970 keep nanos in [0, 1e9).
  int64_t seconds = nanos / 1000000000;
  int64_t rest = nanos % 1000000000;
  if (rest < 0) {
    rest += 1000000000;
    --seconds;
  }
  timestamp.set_seconds(seconds);
  timestamp.set_nanos(static_cast<int32_t>(rest));
  return timestamp;
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixSeconds(timestamp.seconds()) + absl::Nanoseconds(timestamp.nanos());
}

bool IsTerminal(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED || state == v1::Job::CANCELLED;
}

}  // namespace drfm::server
