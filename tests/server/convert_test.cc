// Tests of the proto <-> core conversions and the request validation of server/convert.h: every
// FitConfig field in both directions, defaults of unset fields, the seed rule, unknown enum
// values, core ranges and the server's own limits, slices and the other request fields, and the
// report, phase and estimate conversions.
#include "server/convert.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace drfm::server {
namespace {

using google::protobuf::util::MessageDifferencer;

// A config with every field set to a value other than its default.
v1::FitConfig NonDefaultConfig() {
  v1::FitConfig proto;
  proto.set_layers(5);
  proto.set_kernel(v1::FitConfig::GAUSSIAN);
  proto.set_bandwidth(3.5);
  proto.set_ridge(0.25);
  proto.set_rfm_iterations(3);
  proto.set_feature_map(v1::FitConfig::COSINE);
  proto.set_width(64);
  proto.set_rff_scale(0.75);
  proto.set_agop_power(1.5);
  proto.set_agop_samples(100);
  proto.set_agop_normalize(v1::FitConfig::NONE);
  proto.set_precision(v1::FitConfig::FLOAT64);
  proto.set_standardize(false);
  proto.set_label_encoding(v1::FitConfig::ONE_HOT);
  proto.set_seed(0xfeedfacecafebeefULL);
  proto.set_agop_method(v1::FitConfig::GRAM);
  proto.set_top_eigenvalues(7);
  return proto;
}

TEST(FitConfigFromProtoTest, UnsetFieldsTakeTheCoreDefaultsAndTheGivenSeed) {
  absl::StatusOr<core::FitConfig> config = FitConfigFromProto(v1::FitConfig(), 42);
  ASSERT_TRUE(config.ok()) << config.status();
  const core::FitConfig defaults;
  EXPECT_EQ(config->layers, defaults.layers);
  EXPECT_EQ(config->kernel, defaults.kernel);
  EXPECT_EQ(config->bandwidth, defaults.bandwidth);
  EXPECT_EQ(config->ridge, defaults.ridge);
  EXPECT_EQ(config->rfm_iterations, defaults.rfm_iterations);
  EXPECT_EQ(config->feature_map, defaults.feature_map);
  EXPECT_EQ(config->width, defaults.width);
  EXPECT_EQ(config->rff_scale, defaults.rff_scale);
  EXPECT_EQ(config->agop_power, defaults.agop_power);
  EXPECT_EQ(config->agop_samples, defaults.agop_samples);
  EXPECT_EQ(config->agop_normalize, defaults.agop_normalize);
  EXPECT_EQ(config->agop_method, defaults.agop_method);
  EXPECT_EQ(config->precision, defaults.precision);
  EXPECT_EQ(config->standardize, defaults.standardize);
  EXPECT_EQ(config->label_encoding, defaults.label_encoding);
  EXPECT_EQ(config->top_eigenvalues, defaults.top_eigenvalues);
  EXPECT_EQ(config->seed, 42u);
}

TEST(FitConfigFromProtoTest, ConvertsEveryField) {
  absl::StatusOr<core::FitConfig> config = FitConfigFromProto(NonDefaultConfig(), 42);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layers, 5);
  EXPECT_EQ(config->kernel, core::KernelType::kGaussian);
  EXPECT_EQ(config->bandwidth, 3.5);
  EXPECT_EQ(config->ridge, 0.25);
  EXPECT_EQ(config->rfm_iterations, 3);
  EXPECT_EQ(config->feature_map, core::FeatureMapType::kCosine);
  EXPECT_EQ(config->width, 64);
  EXPECT_EQ(config->rff_scale, 0.75);
  EXPECT_EQ(config->agop_power, 1.5);
  EXPECT_EQ(config->agop_samples, 100);
  EXPECT_EQ(config->agop_normalize, core::AgopNormalize::kNone);
  EXPECT_EQ(config->precision, core::Precision::kFloat64);
  EXPECT_FALSE(config->standardize);
  EXPECT_EQ(config->label_encoding, core::LabelEncoding::kOneHot);
  EXPECT_EQ(config->seed, 0xfeedfacecafebeefULL);
  EXPECT_EQ(config->agop_method, core::AgopMethod::kGram);
  EXPECT_EQ(config->top_eigenvalues, 7);
}

TEST(FitConfigFromProtoTest, EveryFieldRoundTripsThroughCore) {
  const v1::FitConfig original = NonDefaultConfig();
  absl::StatusOr<core::FitConfig> config = FitConfigFromProto(original, 42);
  ASSERT_TRUE(config.ok()) << config.status();
  const v1::FitConfig back = FitConfigToProto(*config);
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(original, back)) << diff;
}

TEST(FitConfigToProtoTest, ResolvedConfigSetsEveryFieldAndNoUnspecifiedEnum) {
  core::FitConfig config;
  config.seed = 9;
  const v1::FitConfig proto = FitConfigToProto(config);
  EXPECT_TRUE(proto.has_layers() && proto.has_bandwidth() && proto.has_ridge() &&
              proto.has_rfm_iterations() && proto.has_width() && proto.has_rff_scale() &&
              proto.has_agop_power() && proto.has_standardize() && proto.has_seed() &&
              proto.has_top_eigenvalues());
  EXPECT_EQ(proto.kernel(), v1::FitConfig::LAPLACE);
  EXPECT_EQ(proto.feature_map(), v1::FitConfig::RELU);
  EXPECT_EQ(proto.agop_normalize(), v1::FitConfig::MAX);
  EXPECT_EQ(proto.precision(), v1::FitConfig::FLOAT32);
  EXPECT_EQ(proto.label_encoding(), v1::FitConfig::PLUS_MINUS_ONE);
  EXPECT_EQ(proto.agop_method(), v1::FitConfig::AUTO);
  EXPECT_EQ(proto.seed(), 9u);
  // Converting the resolved message again gives it back unchanged, whatever the fallback seed.
  absl::StatusOr<core::FitConfig> again = FitConfigFromProto(proto, 12345);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(MessageDifferencer::Equals(FitConfigToProto(*again), proto));
}

TEST(FitConfigFromProtoTest, ExplicitZeroSeedIsKeptAndOnlyUnsetSeedTakesTheFallback) {
  v1::FitConfig proto;
  proto.set_seed(0);
  EXPECT_EQ(FitConfigFromProto(proto, 42)->seed, 0u);
  proto.clear_seed();
  EXPECT_EQ(FitConfigFromProto(proto, 42)->seed, 42u);
}

TEST(FitConfigFromProtoTest, ExplicitZeroLayersIsKeptNotReplacedByTheDefault) {
  v1::FitConfig proto;
  proto.set_layers(0);
  EXPECT_EQ(FitConfigFromProto(proto, 1)->layers, 0);
}

TEST(FitConfigFromProtoTest, UnknownEnumValuesAreRejectedListingTheAllowedNames) {
  struct Case {
    void (*set)(v1::FitConfig*);
    const char* field;
    const char* allowed;
  };
  const Case cases[] = {
      {[](v1::FitConfig* c) { c->set_kernel(static_cast<v1::FitConfig::Kernel>(7)); },
       "config.kernel = 7", "LAPLACE or GAUSSIAN"},
      {[](v1::FitConfig* c) { c->set_feature_map(static_cast<v1::FitConfig::FeatureMap>(9)); },
       "config.feature_map = 9", "RELU or COSINE"},
      {[](v1::FitConfig* c) {
         c->set_agop_normalize(static_cast<v1::FitConfig::AgopNormalize>(-1));
       },
       "config.agop_normalize = -1", "MAX or NONE"},
      {[](v1::FitConfig* c) { c->set_precision(static_cast<v1::FitConfig::Precision>(3)); },
       "config.precision = 3", "FLOAT32 or FLOAT64"},
      {[](v1::FitConfig* c) {
         c->set_label_encoding(static_cast<v1::FitConfig::LabelEncoding>(5));
       },
       "config.label_encoding = 5", "PLUS_MINUS_ONE or ONE_HOT"},
      {[](v1::FitConfig* c) { c->set_agop_method(static_cast<v1::FitConfig::AgopMethod>(4)); },
       "config.agop_method = 4", "AUTO, DIRECT or GRAM"},
  };
  for (const Case& c : cases) {
    v1::FitConfig proto;
    c.set(&proto);
    absl::StatusOr<core::FitConfig> config = FitConfigFromProto(proto, 1);
    ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(config.status().message().find(c.field), std::string::npos) << config.status();
    EXPECT_NE(config.status().message().find(c.allowed), std::string::npos) << config.status();
  }
}

TEST(FitConfigFromProtoTest, OutOfRangeValuesAreRejectedNamingTheField) {
  struct Case {
    void (*set)(v1::FitConfig*);
    const char* field;
  };
  const Case cases[] = {
      {[](v1::FitConfig* c) { c->set_layers(65); }, "config.layers"},
      {[](v1::FitConfig* c) { c->set_layers(-1); }, "config.layers"},
      {[](v1::FitConfig* c) { c->set_bandwidth(0); }, "config.bandwidth"},
      {[](v1::FitConfig* c) { c->set_bandwidth(std::numeric_limits<double>::quiet_NaN()); },
       "config.bandwidth"},
      {[](v1::FitConfig* c) { c->set_ridge(-1); }, "config.ridge"},
      {[](v1::FitConfig* c) { c->set_ridge(std::numeric_limits<double>::infinity()); },
       "config.ridge"},
      {[](v1::FitConfig* c) { c->set_rfm_iterations(0); }, "config.rfm_iterations"},
      {[](v1::FitConfig* c) { c->set_rfm_iterations(51); }, "config.rfm_iterations"},
      {[](v1::FitConfig* c) { c->set_width(0); }, "config.width"},  // RELU needs >= 1
      {[](v1::FitConfig* c) { c->set_width(65537); }, "config.width"},
      {[](v1::FitConfig* c) { c->set_rff_scale(-0.5); }, "config.rff_scale"},
      {[](v1::FitConfig* c) { c->set_agop_power(0); }, "config.agop_power"},
      {[](v1::FitConfig* c) { c->set_agop_power(4.5); }, "config.agop_power"},
      {[](v1::FitConfig* c) { c->set_agop_samples(-3); }, "config.agop_samples"},
      {[](v1::FitConfig* c) { c->set_top_eigenvalues(1025); }, "config.top_eigenvalues"},
  };
  for (const Case& c : cases) {
    v1::FitConfig proto;
    c.set(&proto);
    absl::StatusOr<core::FitConfig> config = FitConfigFromProto(proto, 1);
    ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(config.status().message().find(c.field), std::string::npos) << config.status();
  }
}

TEST(FitConfigFromProtoTest, CosineMapAcceptsWidthZero) {
  v1::FitConfig proto;
  proto.set_feature_map(v1::FitConfig::COSINE);
  proto.set_width(0);
  EXPECT_TRUE(FitConfigFromProto(proto, 1).ok());
}

TEST(ServiceLimitsTest, ConfigsWithinTheLimitsPass) {
  core::FitConfig config;
  EXPECT_TRUE(CheckServiceLimits(config, ServiceLimits()).ok());
}

TEST(ServiceLimitsTest, ExceedingALimitNamesTheFieldAndTheLimit) {
  ServiceLimits limits;
  limits.max_layers = 4;
  limits.max_width = 128;
  limits.max_rfm_iterations = 2;
  core::FitConfig config;
  config.layers = 5;
  absl::Status status = CheckServiceLimits(config, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("config.layers = 5"), std::string::npos) << status;
  EXPECT_NE(status.message().find("limit of 4"), std::string::npos) << status;

  config = core::FitConfig();
  config.width = 256;
  status = CheckServiceLimits(config, limits);
  EXPECT_NE(status.message().find("config.width = 256"), std::string::npos) << status;
  EXPECT_NE(status.message().find("128"), std::string::npos) << status;

  config = core::FitConfig();
  config.width = 64;
  config.rfm_iterations = 3;
  status = CheckServiceLimits(config, limits);
  EXPECT_NE(status.message().find("config.rfm_iterations = 3"), std::string::npos) << status;
}

TEST(ServiceLimitsTest, ValidateRejectsLimitsOutsideTheApiRange) {
  EXPECT_TRUE(ServiceLimits().Validate().ok());
  ServiceLimits limits;
  limits.max_layers = 0;
  EXPECT_EQ(limits.Validate().code(), absl::StatusCode::kInvalidArgument);
  limits = ServiceLimits();
  limits.max_width = core::kMaxWidth + 1;
  EXPECT_EQ(limits.Validate().code(), absl::StatusCode::kInvalidArgument);
  limits = ServiceLimits();
  limits.max_train_rows = 0;
  EXPECT_EQ(limits.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateSliceTest, RequiresADatasetAndNonNegativeLimitAndOffset) {
  v1::DatasetSlice slice;
  absl::Status status = ValidateSlice(slice, "train");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("train.dataset"), std::string::npos) << status;

  slice.set_dataset("fashion-mnist:train");
  EXPECT_TRUE(ValidateSlice(slice, "train").ok());
  slice.set_limit(-1);
  status = ValidateSlice(slice, "test");
  EXPECT_NE(status.message().find("test.limit = -1"), std::string::npos) << status;
  slice.set_limit(10);
  slice.set_offset(-2);
  status = ValidateSlice(slice, "test");
  EXPECT_NE(status.message().find("test.offset = -2"), std::string::npos) << status;
}

v1::SubmitFitRequest ValidRequest() {
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset("synthetic:rows=200,cols=10,classes=3");
  return request;
}

TEST(ValidateSubmitFitRequestTest, AcceptsAMinimalRequest) {
  EXPECT_TRUE(ValidateSubmitFitRequest(ValidRequest()).ok());
}

TEST(ValidateSubmitFitRequestTest, RejectsEachBadFieldNamingIt) {
  struct Case {
    void (*change)(v1::SubmitFitRequest*);
    const char* needle;
  };
  const Case cases[] = {
      {[](v1::SubmitFitRequest* r) { r->clear_train(); }, "train is required"},
      {[](v1::SubmitFitRequest* r) { r->mutable_train()->set_dataset(""); }, "train.dataset"},
      {[](v1::SubmitFitRequest* r) { r->mutable_test()->set_limit(10); }, "test.dataset"},
      {[](v1::SubmitFitRequest* r) {
         r->mutable_test()->set_dataset("x");
         r->mutable_test()->set_offset(-1);
       },
       "test.offset"},
      {[](v1::SubmitFitRequest* r) { r->set_model_name("bad name!"); }, "model_name"},
      {[](v1::SubmitFitRequest* r) { r->set_request_id(std::string(129, 'r')); }, "request_id"},
      {[](v1::SubmitFitRequest* r) { r->set_priority(1001); }, "priority = 1001"},
      {[](v1::SubmitFitRequest* r) { r->set_priority(-1001); }, "priority = -1001"},
      {[](v1::SubmitFitRequest* r) { (*r->mutable_labels())[""] = "v"; }, "labels key"},
      {[](v1::SubmitFitRequest* r) { (*r->mutable_labels())["k"] = std::string(257, 'v'); },
       "labels value"},
      {[](v1::SubmitFitRequest* r) {
         for (int i = 0; i < 65; ++i) (*r->mutable_labels())["k" + std::to_string(i)] = "v";
       },
       "at most 64"},
  };
  for (const Case& c : cases) {
    v1::SubmitFitRequest request = ValidRequest();
    c.change(&request);
    const absl::Status status = ValidateSubmitFitRequest(request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.needle;
    EXPECT_NE(status.message().find(c.needle), std::string::npos) << status;
  }
}

TEST(ValidateSubmitFitRequestTest, AnEmptyTestMessageMeansNoTestSet) {
  v1::SubmitFitRequest request = ValidRequest();
  request.mutable_test();
  EXPECT_TRUE(ValidateSubmitFitRequest(request).ok());
  EXPECT_FALSE(HasTestSlice(request));
  request.mutable_test()->set_dataset("fashion-mnist:test");
  EXPECT_TRUE(HasTestSlice(request));
}

TEST(PhaseToProtoTest, MapsEveryCorePhase) {
  EXPECT_EQ(PhaseToProto(core::Phase::kKernel), v1::Progress::KERNEL);
  EXPECT_EQ(PhaseToProto(core::Phase::kSolve), v1::Progress::SOLVE);
  EXPECT_EQ(PhaseToProto(core::Phase::kAgop), v1::Progress::AGOP);
  EXPECT_EQ(PhaseToProto(core::Phase::kProject), v1::Progress::PROJECT);
  EXPECT_EQ(PhaseToProto(core::Phase::kFeatures), v1::Progress::FEATURES);
  EXPECT_EQ(PhaseToProto(core::Phase::kMetrics), v1::Progress::METRICS);
}

TEST(LayerReportToProtoTest, CopiesEveryFieldOfAFeatureLayer) {
  core::LayerReport report;
  report.layer = 2;
  report.train_accuracy = 0.9;
  report.test_accuracy = 0.8;
  report.has_test = true;
  report.input.nc1 = 1.5;
  report.input.ncc_accuracy = 0.7;
  report.projected.nc2 = 0.25;
  report.features.nc1_pinv = 0.125;
  report.features.nc2_equinorm = 0.5;
  report.agop_trace = 3;
  report.agop_effective_rank = 2.5;
  report.agop_top_eigenvalues = {1, 0.5};
  for (int p = 0; p < core::kNumPhases; ++p) {
    report.phase_seconds[p] = p + 1;
    report.phase_flops[p] = 10 * (p + 1);
  }
  report.jitter_retries = 2;
  report.ridge_used = 0.1;
  report.agop_gram_form = true;
  const v1::LayerReport proto = LayerReportToProto(report, 32);
  EXPECT_EQ(proto.layer(), 2);
  EXPECT_FALSE(proto.readout());
  EXPECT_EQ(proto.train_accuracy(), 0.9);
  ASSERT_TRUE(proto.has_test_accuracy());
  EXPECT_EQ(proto.test_accuracy(), 0.8);
  EXPECT_EQ(proto.input().nc1(), 1.5);
  EXPECT_EQ(proto.input().ncc_accuracy(), 0.7);
  EXPECT_EQ(proto.projected().nc2(), 0.25);
  EXPECT_EQ(proto.features().nc1_pinv(), 0.125);
  EXPECT_EQ(proto.features().nc2_equinorm(), 0.5);
  EXPECT_EQ(proto.agop_trace(), 3);
  EXPECT_EQ(proto.agop_effective_rank(), 2.5);
  ASSERT_EQ(proto.agop_top_eigenvalues_size(), 2);
  EXPECT_EQ(proto.agop_top_eigenvalues(1), 0.5);
  EXPECT_EQ(proto.phase_seconds().kernel(), 1);
  EXPECT_EQ(proto.phase_seconds().metrics(), 6);
  EXPECT_EQ(proto.phase_flops().agop(), 30);
  EXPECT_EQ(proto.jitter_retries(), 2);
  EXPECT_EQ(proto.ridge_used(), 0.1);
  EXPECT_TRUE(proto.agop_gram_form());
  EXPECT_EQ(proto.output_dim(), 32);
}

TEST(LayerReportToProtoTest, ReadoutWithoutTestSetHasNoTestAccuracyOrProjections) {
  core::LayerReport report;
  report.layer = 3;
  report.readout = true;
  const v1::LayerReport proto = LayerReportToProto(report, 16);
  EXPECT_TRUE(proto.readout());
  EXPECT_FALSE(proto.has_test_accuracy());
  EXPECT_FALSE(proto.has_projected());
  EXPECT_FALSE(proto.has_features());
  EXPECT_TRUE(proto.has_input());
}

TEST(LayerOutputDimTest, FollowsTheFeatureMapWidth) {
  core::FitConfig config;
  config.layers = 2;
  config.width = 32;
  EXPECT_EQ(LayerOutputDim(config, 10, 1), 32);
  EXPECT_EQ(LayerOutputDim(config, 10, 3), 32);  // readout input
  EXPECT_EQ(LayerDims(config, 10), (std::vector<int64_t>{32, 32}));
  config.feature_map = core::FeatureMapType::kCosine;
  config.width = 0;
  EXPECT_EQ(LayerOutputDim(config, 10, 1), 10);
  config.layers = 0;
  config.width = 32;
  EXPECT_EQ(LayerOutputDim(config, 10, 1), 10);  // readout only: the input rows
  EXPECT_TRUE(LayerDims(config, 10).empty());
}

TEST(FitEstimateToProtoTest, AddsTheLoadedRowsAndComparesWithTheBudget) {
  core::FitEstimate estimate;
  estimate.peak_bytes = 1000;
  estimate.kernel_matrix_bytes = 400;
  estimate.flops = 5e6;
  estimate.phase_flops[static_cast<int>(core::Phase::kSolve)] = 2e6;
  core::FitShape shape;
  shape.train_rows = 10;
  shape.test_rows = 5;
  shape.cols = 3;
  shape.num_classes = 2;
  const int64_t rows_bytes = DatasetBytes(15, 3);
  EXPECT_EQ(rows_bytes, 4 * 15 * 4);
  v1::FitEstimate proto = FitEstimateToProto(estimate, shape, 0);
  EXPECT_EQ(proto.memory_bytes(), 1000 + rows_bytes);
  EXPECT_EQ(proto.kernel_bytes(), 400);
  EXPECT_EQ(proto.flops(), 5e6);
  EXPECT_EQ(proto.phase_flops().solve(), 2e6);
  EXPECT_EQ(proto.train_rows(), 10);
  EXPECT_EQ(proto.test_rows(), 5);
  EXPECT_EQ(proto.cols(), 3);
  EXPECT_EQ(proto.num_classes(), 2);
  EXPECT_TRUE(proto.within_budget());  // 0 = unlimited
  proto = FitEstimateToProto(estimate, shape, 1000 + rows_bytes);
  EXPECT_TRUE(proto.within_budget());
  proto = FitEstimateToProto(estimate, shape, 1000);
  EXPECT_FALSE(proto.within_budget());
  EXPECT_EQ(proto.memory_budget_bytes(), 1000);
}

v1::MlpConfig NonDefaultMlpConfig() {
  v1::MlpConfig proto;
  proto.set_depth(5);
  proto.set_width(64);
  proto.set_init_gain(0.25);
  proto.set_learning_rate(1e-3);
  proto.set_epochs(40);
  proto.set_batch_size(32);
  proto.set_measure_every(4);
  proto.set_seed(0xfeedfacecafebeefULL);
  proto.set_weight_decay(1e-4);
  proto.set_standardize(false);
  proto.set_row_normalize(false);
  return proto;
}

TEST(MlpConfigFromProtoTest, UnsetFieldsTakeTheCoreDefaultsAndTheGivenSeed) {
  absl::StatusOr<core::MlpConfig> config = MlpConfigFromProto(v1::MlpConfig(), 42);
  ASSERT_TRUE(config.ok()) << config.status();
  const core::MlpConfig defaults;
  EXPECT_EQ(config->depth, defaults.depth);
  EXPECT_EQ(config->width, defaults.width);
  EXPECT_EQ(config->init_gain, defaults.init_gain);
  EXPECT_EQ(config->learning_rate, defaults.learning_rate);
  EXPECT_EQ(config->epochs, defaults.epochs);
  EXPECT_EQ(config->batch_size, defaults.batch_size);
  EXPECT_EQ(config->measure_every, defaults.measure_every);
  EXPECT_EQ(config->weight_decay, defaults.weight_decay);
  EXPECT_EQ(config->standardize, defaults.standardize);
  EXPECT_EQ(config->row_normalize, defaults.row_normalize);
  EXPECT_EQ(config->seed, 42u);
}

TEST(MlpConfigFromProtoTest, ConvertsEveryFieldAndRoundTrips) {
  const v1::MlpConfig proto = NonDefaultMlpConfig();
  absl::StatusOr<core::MlpConfig> config = MlpConfigFromProto(proto, 42);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->depth, 5);
  EXPECT_EQ(config->width, 64);
  EXPECT_EQ(config->init_gain, 0.25);
  EXPECT_EQ(config->learning_rate, 1e-3);
  EXPECT_EQ(config->epochs, 40);
  EXPECT_EQ(config->batch_size, 32);
  EXPECT_EQ(config->measure_every, 4);
  EXPECT_EQ(config->seed, 0xfeedfacecafebeefULL);
  EXPECT_EQ(config->weight_decay, 1e-4);
  EXPECT_FALSE(config->standardize);
  EXPECT_FALSE(config->row_normalize);
  const v1::MlpConfig back = MlpConfigToProto(*config);
  EXPECT_TRUE(MessageDifferencer::Equals(back, proto)) << back.DebugString();
  // The resolved message sets every field, defaults included.
  const v1::MlpConfig resolved = MlpConfigToProto(core::MlpConfig());
  EXPECT_TRUE(resolved.has_depth() && resolved.has_width() && resolved.has_init_gain() &&
              resolved.has_learning_rate() && resolved.has_epochs() &&
              resolved.has_batch_size() && resolved.has_measure_every() && resolved.has_seed() &&
              resolved.has_weight_decay() && resolved.has_standardize() &&
              resolved.has_row_normalize());
  // An explicit zero is kept, not replaced by the default.
  v1::MlpConfig zero_epochs;
  zero_epochs.set_epochs(0);
  zero_epochs.set_seed(0);
  EXPECT_EQ(MlpConfigFromProto(zero_epochs, 42)->epochs, 0);
  EXPECT_EQ(MlpConfigFromProto(zero_epochs, 42)->seed, 0u);
}

TEST(MlpConfigFromProtoTest, OutOfRangeValuesAreRejectedNamingTheRequestField) {
  struct Case {
    void (*change)(v1::MlpConfig*);
    const char* field;
  };
  const Case cases[] = {
      {[](v1::MlpConfig* c) { c->set_depth(0); }, "config.depth"},
      {[](v1::MlpConfig* c) { c->set_depth(33); }, "config.depth"},
      {[](v1::MlpConfig* c) { c->set_width(0); }, "config.width"},
      {[](v1::MlpConfig* c) { c->set_width(16385); }, "config.width"},
      {[](v1::MlpConfig* c) { c->set_init_gain(0); }, "config.init_gain"},
      {[](v1::MlpConfig* c) { c->set_learning_rate(std::nan("")); }, "config.learning_rate"},
      {[](v1::MlpConfig* c) { c->set_epochs(-1); }, "config.epochs"},
      {[](v1::MlpConfig* c) { c->set_epochs(100001); }, "config.epochs"},
      {[](v1::MlpConfig* c) { c->set_batch_size(0); }, "config.batch_size"},
      {[](v1::MlpConfig* c) { c->set_measure_every(-1); }, "config.measure_every"},
      {[](v1::MlpConfig* c) { c->set_weight_decay(-1); }, "config.weight_decay"},
  };
  for (const Case& c : cases) {
    v1::MlpConfig proto;
    c.change(&proto);
    const absl::Status status = MlpConfigFromProto(proto, 1).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_EQ(status.message().rfind(c.field, 0), 0u) << status;  // starts with the field
  }
}

TEST(CheckMlpServiceLimitsTest, CountsMeasurementsAsTheFitTakesThem) {
  ServiceLimits limits;
  limits.max_mlp_measurements = 4;
  core::MlpConfig config;
  config.epochs = 30;
  config.measure_every = 10;  // 0, 10, 20, 30
  ASSERT_EQ(core::MlpMeasurementEpochs(config).size(), 4u);
  EXPECT_TRUE(CheckMlpServiceLimits(config, limits).ok());
  config.epochs = 31;  // 0, 10, 20, 30, 31
  ASSERT_EQ(core::MlpMeasurementEpochs(config).size(), 5u);
  const absl::Status status = CheckMlpServiceLimits(config, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("5 measurements"), std::string::npos) << status;
  EXPECT_NE(status.message().find("at least 11"), std::string::npos) << status;
  config.measure_every = 11;  // 0, 11, 22, 31
  EXPECT_TRUE(CheckMlpServiceLimits(config, limits).ok());
  config.measure_every = 0;
  EXPECT_TRUE(CheckMlpServiceLimits(config, limits).ok());
  config.epochs = 0;
  config.measure_every = 10;
  EXPECT_TRUE(CheckMlpServiceLimits(config, limits).ok());
  limits.max_mlp_measurements = 0;
  EXPECT_EQ(limits.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateSubmitMlpFitRequestTest, ChecksSlicesNamesAndJobFields) {
  v1::SubmitMlpFitRequest request;
  request.mutable_train()->set_dataset("fashion-mnist:train");
  EXPECT_TRUE(ValidateSubmitMlpFitRequest(request).ok());
  EXPECT_FALSE(HasTestSlice(request));
  request.mutable_test();  // an empty test message means no test set
  EXPECT_TRUE(ValidateSubmitMlpFitRequest(request).ok());
  EXPECT_FALSE(HasTestSlice(request));
  request.mutable_test()->set_dataset("fashion-mnist:test");
  EXPECT_TRUE(HasTestSlice(request));

  struct Case {
    void (*change)(v1::SubmitMlpFitRequest*);
    const char* needle;
  };
  const Case cases[] = {
      {[](v1::SubmitMlpFitRequest* r) { r->clear_train(); }, "train is required"},
      {[](v1::SubmitMlpFitRequest* r) { r->mutable_train()->set_limit(-1); }, "train.limit"},
      {[](v1::SubmitMlpFitRequest* r) {
         r->mutable_test()->clear_dataset();
         r->mutable_test()->set_limit(5);
       },
       "test.dataset"},
      {[](v1::SubmitMlpFitRequest* r) { r->set_model_name("a/b"); }, "model_name"},
      {[](v1::SubmitMlpFitRequest* r) { r->set_request_id(std::string(129, 'x')); },
       "request_id"},
      {[](v1::SubmitMlpFitRequest* r) { r->set_priority(-1001); }, "priority"},
      {[](v1::SubmitMlpFitRequest* r) { (*r->mutable_labels())[""] = "v"; }, "labels key"},
  };
  for (const Case& c : cases) {
    v1::SubmitMlpFitRequest bad = request;
    c.change(&bad);
    const absl::Status status = ValidateSubmitMlpFitRequest(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.needle;
    EXPECT_NE(status.message().find(c.needle), std::string::npos) << status;
  }
}

TEST(ValidateSubmitAnalysisRequestTest, RequiresAModelAndDataAndChecksTheOtherFields) {
  v1::SubmitAnalysisRequest request;
  request.set_model("my-mlp");
  request.mutable_data()->set_dataset("fashion-mnist:test");
  EXPECT_TRUE(ValidateSubmitAnalysisRequest(request).ok());
  struct Case {
    void (*change)(v1::SubmitAnalysisRequest*);
    const char* needle;
  };
  const Case cases[] = {
      {[](v1::SubmitAnalysisRequest* r) { r->clear_model(); }, "model is required"},
      {[](v1::SubmitAnalysisRequest* r) { r->set_model("../x"); }, "model"},
      {[](v1::SubmitAnalysisRequest* r) { r->set_version(0); }, "version = 0"},
      {[](v1::SubmitAnalysisRequest* r) { r->clear_data(); }, "data is required"},
      {[](v1::SubmitAnalysisRequest* r) { r->mutable_data()->clear_dataset(); }, "data.dataset"},
      {[](v1::SubmitAnalysisRequest* r) { r->mutable_data()->set_offset(-2); }, "data.offset"},
      {[](v1::SubmitAnalysisRequest* r) { r->set_priority(1001); }, "priority"},
      {[](v1::SubmitAnalysisRequest* r) { r->set_request_id(std::string(200, 'r')); },
       "request_id"},
  };
  for (const Case& c : cases) {
    v1::SubmitAnalysisRequest bad = request;
    c.change(&bad);
    const absl::Status status = ValidateSubmitAnalysisRequest(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.needle;
    EXPECT_NE(status.message().find(c.needle), std::string::npos) << status;
  }
}

TEST(MlpPhaseToProtoTest, MapsBothPhases) {
  EXPECT_EQ(MlpPhaseToProto(core::MlpPhase::kTrain), v1::Progress::TRAIN);
  EXPECT_EQ(MlpPhaseToProto(core::MlpPhase::kMeasure), v1::Progress::MEASURE);
}

TEST(NetworkReportToProtoTest, CopiesEveryFieldAndLeavesOutLeftForTheOutputLayer) {
  core::NetworkReport report;
  report.epoch = 30;
  report.train_loss = 0.5;
  report.train_accuracy = 0.75;
  report.has_test = true;
  report.test_loss = 0.625;
  report.test_accuracy = 0.5;
  report.seconds = 1.5;
  core::NetworkLayerReport hidden;
  hidden.layer = 1;
  hidden.none.nc1 = 4;
  hidden.right.nc1 = 2;
  hidden.left.nc1 = 1;
  hidden.left.ncc_accuracy = 0.9;
  hidden.nfa_correlation = 0.8;
  hidden.nfa_correlation_raw = std::numeric_limits<double>::quiet_NaN();
  hidden.top_singular_values = {3, 2, 1};
  core::NetworkLayerReport output;
  output.layer = 2;
  output.output = true;
  output.right.nc2 = 0.25;
  report.layers = {hidden, output};

  const v1::NetworkReport proto = NetworkReportToProto(report);
  EXPECT_EQ(proto.epoch(), 30);
  EXPECT_EQ(proto.train_loss(), 0.5);
  EXPECT_EQ(proto.train_accuracy(), 0.75);
  ASSERT_TRUE(proto.has_test_accuracy());
  EXPECT_EQ(proto.test_accuracy(), 0.5);
  ASSERT_TRUE(proto.has_test_loss());
  EXPECT_EQ(proto.test_loss(), 0.625);
  EXPECT_EQ(proto.seconds(), 1.5);
  ASSERT_EQ(proto.layers_size(), 2);
  const v1::NetworkLayerReport& first = proto.layers(0);
  EXPECT_EQ(first.layer(), 1);
  EXPECT_FALSE(first.output());
  EXPECT_EQ(first.none().nc1(), 4);
  EXPECT_EQ(first.right().nc1(), 2);
  ASSERT_TRUE(first.has_left());
  EXPECT_EQ(first.left().nc1(), 1);
  EXPECT_EQ(first.left().ncc_accuracy(), 0.9);
  EXPECT_EQ(first.nfa_correlation(), 0.8);
  EXPECT_TRUE(std::isnan(first.nfa_correlation_raw()));
  EXPECT_EQ(std::vector<double>(first.top_singular_values().begin(),
                                first.top_singular_values().end()),
            (std::vector<double>{3, 2, 1}));
  const v1::NetworkLayerReport& last = proto.layers(1);
  EXPECT_TRUE(last.output());
  EXPECT_FALSE(last.has_left());
  EXPECT_EQ(last.right().nc2(), 0.25);

  report.has_test = false;
  const v1::NetworkReport no_test = NetworkReportToProto(report);
  EXPECT_FALSE(no_test.has_test_accuracy());
  EXPECT_FALSE(no_test.has_test_loss());
}

TEST(MlpEstimateToProtoTest, AddsTheLoadedRowsAndHasNoKernel) {
  core::MlpFitEstimate estimate;
  estimate.peak_bytes = 5000;
  estimate.flops = 7e9;
  core::FitShape shape;
  shape.train_rows = 100;
  shape.test_rows = 20;
  shape.cols = 8;
  shape.num_classes = 3;
  v1::FitEstimate proto = MlpEstimateToProto(estimate, shape, 0);
  EXPECT_EQ(proto.memory_bytes(), 5000 + DatasetBytes(120, 8));
  EXPECT_EQ(proto.flops(), 7e9);
  EXPECT_EQ(proto.kernel_bytes(), 0);
  EXPECT_FALSE(proto.has_phase_flops());
  EXPECT_EQ(proto.train_rows(), 100);
  EXPECT_EQ(proto.test_rows(), 20);
  EXPECT_EQ(proto.num_classes(), 3);
  EXPECT_TRUE(proto.within_budget());
  proto = MlpEstimateToProto(estimate, shape, 5000);
  EXPECT_FALSE(proto.within_budget());
}

TEST(TimeTest, ProtoTimestampsRoundTrip) {
  const absl::Time time = absl::FromUnixMicros(1700000000123456);
  EXPECT_EQ(FromProtoTime(ToProtoTime(time)), time);
  const absl::Time before_epoch = absl::FromUnixMillis(-1500);
  const google::protobuf::Timestamp ts = ToProtoTime(before_epoch);
  EXPECT_GE(ts.nanos(), 0);
  EXPECT_EQ(FromProtoTime(ts), before_epoch);
}

TEST(FormatGigabytesTest, UsesOneDecimal) {
  EXPECT_EQ(FormatGigabytes(12.34e9), "12.3 GB");
  EXPECT_EQ(FormatGigabytes(0), "0.0 GB");
  EXPECT_EQ(FormatGigabytes(16.6e6), "0.017 GB");
  EXPECT_EQ(FormatGigabytes(1e6), "0.001 GB");
}

TEST(DrawSeedTest, DrawsDifferentSeeds) {
  // 64 random bits: two equal draws in a row are practically impossible.
  EXPECT_NE(DrawSeed(), DrawSeed());
}

}  // namespace
}  // namespace drfm::server
