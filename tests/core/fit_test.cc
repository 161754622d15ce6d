// Tests of the Deep RFM fit: the reference numbers of DEEP_RFM.md on Fashion-MNIST, float32 vs
// float64, reproducibility, threads, cancellation, the jitter fallback and input validation.
#include "core/fit.h"

#include <chrono>
#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "core/io.h"

namespace drfm::core {
namespace {

constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist";

Dataset FashionSlice(std::string_view split, int64_t rows) {
  auto full = LoadFashionMnist(kFashionDir, split);
  EXPECT_TRUE(full.ok()) << full.status();
  auto slice = SliceDataset(*full, 0, rows);
  EXPECT_TRUE(slice.ok()) << slice.status();
  return *std::move(slice);
}

Dataset Synthetic(int64_t rows, int64_t cols, int classes, uint64_t seed) {
  SyntheticSpec spec;
  spec.rows = rows;
  spec.cols = cols;
  spec.classes = classes;
  spec.seed = seed;
  auto data = MakeSynthetic(spec);
  EXPECT_TRUE(data.ok()) << data.status();
  return *std::move(data);
}

double RelDiff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-12); }

// The reference setting of DEEP_RFM.md: first 2000 train / 1000 test images, defaults, 3 layers.
class FashionMnistFit : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    train_ = new Dataset(FashionSlice("train", 2000));
    test_ = new Dataset(FashionSlice("test", 1000));
    FitConfig config;
    config.layers = 3;
    auto result = FitDeepRfm(*train_, test_, config, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    result_ = new FitResult(*std::move(result));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete train_;
    delete test_;
  }
  static Dataset* train_;
  static Dataset* test_;
  static FitResult* result_;
};
Dataset* FashionMnistFit::train_ = nullptr;
Dataset* FashionMnistFit::test_ = nullptr;
FitResult* FashionMnistFit::result_ = nullptr;

TEST_F(FashionMnistFit, LayerOneReproducesTheReferenceNumbers) {
  ASSERT_EQ(result_->reports.size(), 4u);
  const LayerReport& l1 = result_->reports[0];
  // DEEP_RFM.md: nc1 about 1.76 (input) and 0.52 (projected), test accuracy about 0.85.
  EXPECT_NEAR(l1.input.nc1, 1.76, 0.02);
  EXPECT_NEAR(l1.projected.nc1, 0.52, 0.02);
  EXPECT_NEAR(l1.test_accuracy, 0.85, 0.01);
  EXPECT_TRUE(l1.has_test);
  EXPECT_EQ(l1.agop_top_eigenvalues.size(), 10u);
  // Max-normalized PSD AGOP: its largest entry is a diagonal 1, so the top eigenvalue is >= 1.
  EXPECT_GE(l1.agop_top_eigenvalues[0], 1.0 - 1e-6);
  for (size_t i = 1; i < l1.agop_top_eigenvalues.size(); ++i) {
    EXPECT_LE(l1.agop_top_eigenvalues[i], l1.agop_top_eigenvalues[i - 1]);
  }
  EXPECT_GT(l1.agop_effective_rank, 1.0);
  EXPECT_LT(l1.agop_effective_rank, 784.0);
}

TEST_F(FashionMnistFit, InputCollapseFallsFromLayerToLayer) {
  const auto& r = result_->reports;
  for (size_t l = 1; l < r.size(); ++l) {
    EXPECT_LT(r[l].input.nc1, r[l - 1].input.nc1) << "layer " << r[l].layer;
  }
  // The AGOP projection does most of the collapse within a layer.
  for (size_t l = 0; l + 1 < r.size(); ++l) EXPECT_LT(r[l].projected.nc1, r[l].input.nc1);
  EXPECT_TRUE(r.back().readout);
  EXPECT_EQ(r.back().layer, 4);
}

TEST_F(FashionMnistFit, Float64AgreesWithFloat32AtLayerOne) {
  FitConfig config;
  config.layers = 1;
  config.precision = Precision::kFloat64;
  auto f64 = FitDeepRfm(*train_, test_, config, nullptr);
  ASSERT_TRUE(f64.ok()) << f64.status();
  const LayerReport& a = result_->reports[0];
  const LayerReport& b = f64->reports[0];
  // The input metrics see only standardization round-off; the projected ones go through a float32
  // AGOP (sums of n^2 terms) and its square root.
  EXPECT_LT(RelDiff(a.input.nc1, b.input.nc1), 1e-5);
  EXPECT_LT(RelDiff(a.projected.nc1, b.projected.nc1), 2e-3);
  EXPECT_LT(RelDiff(a.projected.nc2, b.projected.nc2), 5e-3);
  EXPECT_LT(RelDiff(a.agop_trace, b.agop_trace), 1e-3);
  EXPECT_LE(std::abs(a.test_accuracy - b.test_accuracy), 0.002);
}

TEST_F(FashionMnistFit, PredictionReproducesTheReportedTestAccuracy) {
  auto prediction = result_->model.Predict(test_->features);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  int64_t correct = 0;
  for (size_t i = 0; i < test_->labels.size(); ++i) correct += prediction->labels[i] == test_->labels[i];
  EXPECT_EQ(static_cast<double>(correct) / test_->rows(), result_->reports.back().test_accuracy);
}

TEST_F(FashionMnistFit, ReportsFlopsAndSecondsForEveryPhaseThatRan) {
  const LayerReport& l1 = result_->reports[0];
  for (int p = 0; p < kNumPhases; ++p) {
    EXPECT_GT(l1.phase_flops[p], 0) << PhaseName(static_cast<Phase>(p));
    EXPECT_GE(l1.phase_seconds[p], 0) << PhaseName(static_cast<Phase>(p));
  }
  EXPECT_GT(result_->flops, 0);
}

TEST(FitTest, IsReproducibleBitForBitWithTheSameSeed) {
  const Dataset train = Synthetic(400, 30, 4, 1), test = Synthetic(100, 30, 4, 2);
  FitConfig config;
  config.layers = 2;
  config.width = 64;
  config.seed = 7;
  auto a = FitDeepRfm(train, &test, config, nullptr, {.threads = 2});
  auto b = FitDeepRfm(train, &test, config, nullptr, {.threads = 2});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->model.Serialize(), b->model.Serialize());
  for (size_t l = 0; l < a->reports.size(); ++l) {
    EXPECT_EQ(a->reports[l].projected.nc1, b->reports[l].projected.nc1);
    EXPECT_EQ(a->reports[l].features.nc2, b->reports[l].features.nc2);
  }
  config.seed = 8;
  auto c = FitDeepRfm(train, &test, config, nullptr, {.threads = 2});
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->model.Serialize(), c->model.Serialize());
}

TEST(FitTest, OneAndTwoThreadsAgree) {
  const Dataset train = Synthetic(600, 40, 3, 3), test = Synthetic(200, 40, 3, 4);
  FitConfig config;
  config.layers = 2;
  config.width = 128;
  auto one = FitDeepRfm(train, &test, config, nullptr, {.threads = 1});
  auto two = FitDeepRfm(train, &test, config, nullptr, {.threads = 2});
  ASSERT_TRUE(one.ok() && two.ok());
  for (size_t l = 0; l < one->reports.size(); ++l) {
    // GEMM blocking depends on the thread count: float32 round-off, amplified by the layers.
    EXPECT_LT(RelDiff(two->reports[l].input.nc1, one->reports[l].input.nc1), 1e-3) << l;
    EXPECT_NEAR(two->reports[l].test_accuracy, one->reports[l].test_accuracy, 0.01) << l;
  }
}

// Asks to stop at the first progress callback of `phase` in `layer` and times the return.
class StopAt : public FitObserver {
 public:
  StopAt(int layer, Phase phase) : layer_(layer), phase_(phase) {}
  Action OnProgress(int layer, Phase phase, double fraction) override {
    if (!stop_sent_ && layer == layer_ && phase == phase_) {
      stop_sent_ = true;
      stop_time_ = Clock::now();
    }
    return stop_sent_ ? Action::kStop : Action::kContinue;
  }
  bool stop_sent() const { return stop_sent_; }
  double SecondsSinceStop() const { return std::chrono::duration<double>(Clock::now() - stop_time_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  int layer_;
  Phase phase_;
  bool stop_sent_ = false;
  Clock::time_point stop_time_;
};

TEST(FitTest, CancelledFitAtFiveThousandRowsReturnsWithinOneSecond) {
  const Dataset train = FashionSlice("train", 5000);
  // Stop in each long phase, whatever the machine's speed: the layers' kernels, solves and AGOPs
  // and the readout's solve (layer 4 of a 3-layer fit).
  const std::pair<int, Phase> stops[] = {{1, Phase::kKernel}, {1, Phase::kSolve}, {1, Phase::kAgop},
                                         {2, Phase::kAgop},   {3, Phase::kSolve}, {4, Phase::kSolve}};
  for (const auto& [layer, phase] : stops) {
    StopAt observer(layer, phase);
    auto result = FitDeepRfm(train, nullptr, FitConfig{}, &observer);
    ASSERT_TRUE(observer.stop_sent()) << "never reached layer " << layer << " " << PhaseName(phase);
    const double latency = observer.SecondsSinceStop();
    ASSERT_TRUE(absl::IsCancelled(result.status())) << result.status();
    EXPECT_LT(latency, 1.0) << "stop requested in layer " << layer << " " << PhaseName(phase);
  }
}

class Recorder : public FitObserver {
 public:
  Action OnLayer(const LayerReport& report) override {
    layers.push_back(report.layer);
    return Action::kContinue;
  }
  Action OnProgress(int layer, Phase phase, double fraction) override {
    phases.insert(phase);
    EXPECT_GE(fraction, 0.0);
    EXPECT_LE(fraction, 1.0);
    return Action::kContinue;
  }
  std::vector<int> layers;
  std::set<Phase> phases;
};

TEST(FitTest, ObserverSeesEveryLayerAndEveryPhase) {
  const Dataset train = Synthetic(300, 20, 3, 5);
  FitConfig config;
  config.layers = 3;
  config.width = 32;
  Recorder recorder;
  auto result = FitDeepRfm(train, nullptr, config, &recorder);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(recorder.layers, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(recorder.phases.size(), static_cast<size_t>(kNumPhases));
  EXPECT_FALSE(result->reports[0].has_test);
}

TEST(FitTest, ObserverCanStopAfterALayer) {
  class StopAtTwo : public FitObserver {
    Action OnLayer(const LayerReport& r) override { return r.layer == 2 ? Action::kStop : Action::kContinue; }
  } observer;
  const Dataset train = Synthetic(200, 10, 3, 6);
  auto result = FitDeepRfm(train, nullptr, FitConfig{}, &observer);
  EXPECT_TRUE(absl::IsCancelled(result.status())) << result.status();
}

TEST(FitTest, JitterRescuesASingularKernelSystemAndIsReported) {
  // Duplicate rows and no ridge: K is exactly singular.
  Dataset train = Synthetic(120, 8, 3, 7);
  for (int i = 0; i < 60; ++i) train.features.row(60 + i) = train.features.row(i);
  for (int i = 0; i < 60; ++i) train.labels[60 + i] = train.labels[i];
  FitConfig config;
  config.layers = 1;
  config.width = 16;
  config.ridge = 0;
  auto result = FitDeepRfm(train, nullptr, config, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->reports[0].jitter_retries, 0);
  EXPECT_GT(result->reports[0].ridge_used, 0);
  EXPECT_TRUE(std::isfinite(result->reports[0].projected.nc1));
}

TEST(FitTest, RunsEveryVariantOfTheConfig) {
  const Dataset train = Synthetic(300, 12, 3, 8), test = Synthetic(90, 12, 3, 9);
  std::vector<FitConfig> configs(6);
  configs[0].kernel = KernelType::kGaussian;
  configs[1].feature_map = FeatureMapType::kCosine;
  configs[1].width = 0;
  configs[2].rfm_iterations = 3;
  configs[3].agop_samples = 100;
  configs[4].agop_method = AgopMethod::kDirect;
  configs[4].label_encoding = LabelEncoding::kOneHot;
  configs[4].standardize = false;
  configs[5].agop_normalize = AgopNormalize::kNone;
  configs[5].agop_power = 1.0;
  configs[5].precision = Precision::kFloat64;
  for (size_t i = 0; i < configs.size(); ++i) {
    configs[i].layers = 2;
    if (configs[i].width != 0) configs[i].width = 48;
    auto result = FitDeepRfm(train, &test, configs[i], nullptr);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    for (const LayerReport& r : result->reports) {
      EXPECT_TRUE(std::isfinite(r.input.nc1)) << i;
      EXPECT_GT(r.train_accuracy, 0.5) << i;
    }
    if (i == 1) {
      EXPECT_EQ(result->model.params<float>()->layers[0].map.weights.rows(), 12);
    }
  }
}

TEST(FitTest, RejectsBadInputWithClearErrors) {
  const Dataset train = Synthetic(100, 6, 3, 10);
  FitConfig bad;
  bad.bandwidth = -1;
  auto r = FitDeepRfm(train, nullptr, bad, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("bandwidth"), std::string::npos) << r.status();

  FitConfig too_many;
  too_many.agop_samples = 101;
  r = FitDeepRfm(train, nullptr, too_many, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("agop_samples"), std::string::npos) << r.status();

  const Dataset narrow = Synthetic(50, 5, 3, 11);
  r = FitDeepRfm(train, &narrow, FitConfig{}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("columns"), std::string::npos) << r.status();

  Dataset wrong_label = Synthetic(50, 6, 3, 12);
  wrong_label.num_classes = 5;
  wrong_label.labels[3] = 4;
  r = FitDeepRfm(train, &wrong_label, FitConfig{}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();

  Dataset missing_class = train;
  for (auto& y : missing_class.labels) if (y == 2) y = 1;
  r = FitDeepRfm(missing_class, nullptr, FitConfig{}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

}  // namespace
}  // namespace drfm::core
