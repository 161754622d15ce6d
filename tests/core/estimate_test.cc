// Tests of the fit cost model (core/estimate.h): argument errors, monotonicity, and agreement with
// real fits: the flops a fit counts and the peak memory it really touches (measured from the
// kernel's resident-set accounting).
#include "core/estimate.h"

#include <malloc.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/fit.h"
#include "core/io.h"
#include "core/report.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

template <typename T>
T ValueOrDie(absl::StatusOr<T> result) {
  if (!result.ok()) {
    std::fprintf(stderr, "fixture failed: %s\n", result.status().ToString().c_str());
    std::abort();
  }
  return *std::move(result);
}

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"; the file gives kB).
double ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return 1024.0 * std::stod(line.substr(field.size() + 1));
  }
  ADD_FAILURE() << "no " << field << " in /proc/self/status";
  return 0;
}

struct Measured {
  FitResult result;
  double peak_bytes = 0;
};

// Makes every block of 1 MiB or more its own mapping, unmapped on free, from the start of the
// process, so that the resident set follows what the code holds. Otherwise glibc's dynamic
// threshold (up to 32 MiB) serves large blocks from the heap, where freed ones stay resident and
// later blocks that do not fit them add to the resident set beside them; set only before a
// measurement, the heap would still hold such blocks from the tests that ran before.
class MallocEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { mallopt(M_MMAP_THRESHOLD, 1 << 20); }
};
::testing::Environment* const kMallocEnvironment =
    ::testing::AddGlobalTestEnvironment(new MallocEnvironment);

// Fits and measures the resident memory it adds at its peak: VmHWM after the fit minus VmRSS
// before it, with the high-water mark reset just before ("5" > /proc/self/clear_refs).
Measured FitAndMeasure(const Dataset& train, const Dataset* test, const FitConfig& config) {
  // Free pages inside the heap are returned, so that the fit's reuse of them counts too.
  malloc_trim(0);
  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const double before = ProcStatusBytes("VmRSS");
  const double hwm_before = ProcStatusBytes("VmHWM");
  EXPECT_LE(hwm_before, before + (4 << 20)) << "the peak RSS was not reset";
  FitResult result = ValueOrDie(FitDeepRfm(train, test, config, nullptr));
  return {std::move(result), ProcStatusBytes("VmHWM") - before};
}

const Dataset& FashionTrain() {
  static const Dataset* data = new Dataset(ValueOrDie(LoadFashionMnist(kFashionMnistDir, "train")));
  return *data;
}

FitShape ShapeOf(const Dataset& train, const Dataset* test) {
  return {train.rows(), test ? test->rows() : 0, train.cols(), train.num_classes};
}

::testing::AssertionResult IsInvalid(const absl::StatusOr<FitEstimate>& result,
                                     std::initializer_list<const char*> parts = {}) {
  if (result.status().code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected InvalidArgument, got " << result.status();
  }
  for (const char* part : parts) {
    if (!absl::StrContains(result.status().message(), part)) {
      return ::testing::AssertionFailure() << "message \"" << result.status().message()
                                           << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

const FitShape kShape = {2000, 500, 784, 10};

double Flops(const FitConfig& config, const FitShape& shape) {
  return ValueOrDie(EstimateFit(config, shape)).flops;
}

double Peak(const FitConfig& config, const FitShape& shape) {
  return ValueOrDie(EstimateFit(config, shape)).peak_bytes;
}

TEST(EstimateTest, BadShapesAreInvalidArgument) {
  const FitConfig config;
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {0, 10, 5, 3}), {"0 training rows"}));
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {-5, 10, 5, 3}), {"-5 training rows"}));
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {100, -1, 5, 3}), {"-1 test rows"}));
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {100, 10, 0, 3}), {"0 columns"}));
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {100, 10, 5, 1}), {"1 classes"}));
  EXPECT_TRUE(IsInvalid(EstimateFit(config, {100, 10, 5, 0}), {"0 classes"}));
}

TEST(EstimateTest, BadConfigsAreInvalidArgumentNamingTheField) {
  FitConfig config;
  config.layers = -1;
  EXPECT_TRUE(IsInvalid(EstimateFit(config, kShape), {"config.layers"}));
  config = FitConfig();
  config.bandwidth = 0;
  EXPECT_TRUE(IsInvalid(EstimateFit(config, kShape), {"config.bandwidth"}));
  config = FitConfig();
  config.width = 0;  // ReLU needs a width
  EXPECT_TRUE(IsInvalid(EstimateFit(config, kShape), {"config.width"}));
  config = FitConfig();
  config.rfm_iterations = 0;
  EXPECT_TRUE(IsInvalid(EstimateFit(config, kShape), {"config.rfm_iterations"}));
  // As FitDeepRfm does: more AGOP samples than rows is an error, not "all rows".
  config = FitConfig();
  config.agop_samples = kShape.train_rows + 1;
  EXPECT_TRUE(IsInvalid(EstimateFit(config, kShape), {"config.agop_samples"}));
  config.agop_samples = kShape.train_rows;
  EXPECT_TRUE(EstimateFit(config, kShape).ok());
}

TEST(EstimateTest, KernelMatrixIsTheNByNBufferInTheFitPrecision) {
  FitConfig config;
  FitEstimate est = ValueOrDie(EstimateFit(config, {20000, 0, 784, 10}));
  EXPECT_EQ(est.kernel_matrix_bytes, 20000.0 * 20000.0 * 4);  // 1.6 GB, as DEEP_RFM.md says
  EXPECT_GT(est.peak_bytes, est.kernel_matrix_bytes);
  config.precision = Precision::kFloat64;
  est = ValueOrDie(EstimateFit(config, {20000, 0, 784, 10}));
  EXPECT_EQ(est.kernel_matrix_bytes, 20000.0 * 20000.0 * 8);
}

TEST(EstimateTest, FlopsAreTheSumOfThePhaseFlops) {
  FitConfig config;
  config.rfm_iterations = 2;
  const FitEstimate est = ValueOrDie(EstimateFit(config, kShape));
  double sum = 0;
  for (double f : est.phase_flops) {
    EXPECT_GT(f, 0);
    sum += f;
  }
  EXPECT_DOUBLE_EQ(est.flops, sum);
}

TEST(EstimateTest, CostsGrowWithTheTrainingRows) {
  const FitConfig config;
  double last_flops = 0, last_peak = 0;
  for (int64_t rows : {10, 100, 1000, 1023, 1024, 1025, 3000, 20000, 100000}) {
    const FitShape shape = {rows, 500, 784, 10};
    EXPECT_GT(Flops(config, shape), last_flops) << rows << " rows";
    EXPECT_GT(Peak(config, shape), last_peak) << rows << " rows";
    last_flops = Flops(config, shape);
    last_peak = Peak(config, shape);
  }
}

TEST(EstimateTest, CostsGrowWithTheTestRows) {
  const FitConfig config;
  double last_flops = 0, last_peak = 0;
  for (int64_t rows : {0, 1, 100, 1024, 5000}) {
    const FitShape shape = {2000, rows, 784, 10};
    EXPECT_GT(Flops(config, shape), last_flops) << rows << " test rows";
    EXPECT_GE(Peak(config, shape), last_peak) << rows << " test rows";
    last_flops = Flops(config, shape);
    last_peak = Peak(config, shape);
  }
}

TEST(EstimateTest, CostsGrowWithTheLayers) {
  FitConfig config;
  double last_flops = 0, last_peak = 0;
  for (int layers : {0, 1, 2, 3, 8, 64}) {
    config.layers = layers;
    EXPECT_GT(Flops(config, kShape), last_flops) << layers << " layers";
    EXPECT_GE(Peak(config, kShape), last_peak) << layers << " layers";
    last_flops = Flops(config, kShape);
    last_peak = Peak(config, kShape);
  }
}

TEST(EstimateTest, FlopsGrowWithWidthColumnsAndRfmIterations) {
  FitConfig config;
  double last = 0;
  for (int width : {1, 64, 512, 4096}) {
    config.width = width;
    EXPECT_GT(Flops(config, kShape), last) << "width " << width;
    last = Flops(config, kShape);
  }
  config = FitConfig();
  last = 0;
  for (int64_t cols : {1, 20, 784, 3072}) {
    EXPECT_GT(Flops(config, {2000, 500, cols, 10}), last) << cols << " columns";
    last = Flops(config, {2000, 500, cols, 10});
  }
  last = 0;
  for (int t : {1, 2, 5}) {
    config.rfm_iterations = t;
    EXPECT_GT(Flops(config, kShape), last) << t << " iterations";
    last = Flops(config, kShape);
  }
}

TEST(EstimateTest, Float64DoublesTheKernelMatrixButNotTheFlops) {
  FitConfig config;
  const FitEstimate f32 = ValueOrDie(EstimateFit(config, kShape));
  config.precision = Precision::kFloat64;
  const FitEstimate f64 = ValueOrDie(EstimateFit(config, kShape));
  EXPECT_EQ(f64.flops, f32.flops);
  EXPECT_EQ(f64.kernel_matrix_bytes, 2 * f32.kernel_matrix_bytes);
  EXPECT_GT(f64.peak_bytes, f32.peak_bytes);
}

// Flops: the estimate against the flops the fit counts as it runs, on synthetic data large enough
// for several kernel row blocks and Gram tiles (1024 rows each).
struct FlopsCase {
  const char* name;
  int layers = 2;
  int width = 64;
  AgopMethod method = AgopMethod::kAuto;
  int64_t agop_samples = 0;
  int rfm_iterations = 1;
  Precision precision = Precision::kFloat32;
  FeatureMapType feature_map = FeatureMapType::kRelu;
  bool with_test = true;
  std::vector<bool> gram_form;  // the AGOP form each layer should use
};

void PrintTo(const FlopsCase& c, std::ostream* os) { *os << c.name; }

FlopsCase MakeFlopsCase(const char* name, void (*edit)(FlopsCase*)) {
  FlopsCase c;
  c.name = name;
  edit(&c);
  return c;
}

// 1500 rows, 40 columns, 4 classes: kAuto picks the direct form for 40 or 64 features (n > 2 C d)
// and the Gram form for 512 (n < 2 C d).
const FlopsCase kFlopsCases[] = {
    MakeFlopsCase("Gram",
                  [](FlopsCase* c) {
                    c->method = AgopMethod::kGram;
                    c->gram_form = {true, true};
                  }),
    MakeFlopsCase("Direct",
                  [](FlopsCase* c) {
                    c->method = AgopMethod::kDirect;
                    c->gram_form = {false, false};
                  }),
    MakeFlopsCase("AutoPicksDirectThenGram",
                  [](FlopsCase* c) {
                    c->width = 512;
                    c->gram_form = {false, true};
                  }),
    MakeFlopsCase("GramSampled",
                  [](FlopsCase* c) {
                    c->method = AgopMethod::kGram;
                    c->agop_samples = 700;
                    c->gram_form = {true, true};
                  }),
    MakeFlopsCase("DirectSampled",
                  [](FlopsCase* c) {
                    c->method = AgopMethod::kDirect;
                    c->agop_samples = 700;
                    c->gram_form = {false, false};
                  }),
    MakeFlopsCase("TwoRfmIterations",
                  [](FlopsCase* c) {
                    c->rfm_iterations = 2;
                    c->width = 512;
                    c->gram_form = {false, true};
                  }),
    MakeFlopsCase("Float64",
                  [](FlopsCase* c) {
                    c->precision = Precision::kFloat64;
                    c->method = AgopMethod::kGram;
                    c->gram_form = {true, true};
                  }),
    MakeFlopsCase("CosineInputWidthNoTestSet",
                  [](FlopsCase* c) {
                    c->feature_map = FeatureMapType::kCosine;
                    c->width = 0;
                    c->with_test = false;
                    c->gram_form = {false, false};
                  }),
    MakeFlopsCase("ReadoutOnly", [](FlopsCase* c) { c->layers = 0; }),
};

class EstimateFlopsTest : public ::testing::TestWithParam<FlopsCase> {
 protected:
  static const Dataset& Train() { return Data().train; }
  static const Dataset& Test() { return Data().test; }

 private:
  struct Split {
    Dataset train, test;
  };
  static const Split& Data() {
    static const Split* split = [] {
      SyntheticSpec spec;
      spec.rows = 1500 + 300;
      spec.cols = 40;
      spec.classes = 4;
      spec.seed = 3;
      const Dataset all = ValueOrDie(MakeSynthetic(spec));
      return new Split{ValueOrDie(SliceDataset(all, 0, 1500)),
                       ValueOrDie(SliceDataset(all, 1500, 0))};
    }();
    return *split;
  }
};

TEST_P(EstimateFlopsTest, EstimateIsWithinAQuarterOfTheFlopsTheFitCounts) {
  const FlopsCase& c = GetParam();
  FitConfig config;
  config.layers = c.layers;
  config.width = c.width;
  config.agop_method = c.method;
  config.agop_samples = c.agop_samples;
  config.rfm_iterations = c.rfm_iterations;
  config.precision = c.precision;
  config.feature_map = c.feature_map;
  const Dataset* test = c.with_test ? &Test() : nullptr;
  const FitResult fit = ValueOrDie(FitDeepRfm(Train(), test, config, nullptr));
  const FitEstimate est = ValueOrDie(EstimateFit(config, ShapeOf(Train(), test)));
  ASSERT_EQ(fit.reports.size(), c.gram_form.size() + 1);
  for (const LayerReport& r : fit.reports) {
    ASSERT_EQ(r.jitter_retries, 0) << "a retried solve adds flops no estimate can foresee";
    if (!r.readout) {
      EXPECT_EQ(r.agop_gram_form, c.gram_form[r.layer - 1]) << "layer " << r.layer;
    }
  }
  const double ratio = est.flops / fit.flops;
  std::printf("%s: estimated %.4g flops, the fit counted %.4g, ratio %.4f\n", c.name, est.flops,
              fit.flops, ratio);
  RecordProperty("flops_ratio", absl::StrCat(ratio));
  EXPECT_NEAR(ratio, 1.0, 0.25);
}

TEST_P(EstimateFlopsTest, EveryPhaseMatchesTheFitsOwnAccounting) {
  // The estimator mirrors the fit's flop accounting term by term (same blocks and tiles), so
  // each phase agrees to round-off: a drift here means one of them changed without the other.
  const FlopsCase& c = GetParam();
  FitConfig config;
  config.layers = c.layers;
  config.width = c.width;
  config.agop_method = c.method;
  config.agop_samples = c.agop_samples;
  config.rfm_iterations = c.rfm_iterations;
  config.precision = c.precision;
  config.feature_map = c.feature_map;
  const Dataset* test = c.with_test ? &Test() : nullptr;
  const FitResult fit = ValueOrDie(FitDeepRfm(Train(), test, config, nullptr));
  const FitEstimate est = ValueOrDie(EstimateFit(config, ShapeOf(Train(), test)));
  std::array<double, kNumPhases> counted{};
  for (const LayerReport& r : fit.reports) {
    for (int p = 0; p < kNumPhases; ++p) counted[p] += r.phase_flops[p];
  }
  for (int p = 0; p < kNumPhases; ++p) {
    EXPECT_NEAR(est.phase_flops[p], counted[p], 1e-9 * counted[p] + 1)
        << PhaseName(static_cast<Phase>(p));
  }
}

INSTANTIATE_TEST_SUITE_P(Fits, EstimateFlopsTest, ::testing::ValuesIn(kFlopsCases),
                         [](const ::testing::TestParamInfo<FlopsCase>& info) {
                           return std::string(info.param.name);
                         });

// Memory: the estimated peak against the resident memory a real fit adds at its peak, on slices
// of Fashion-MNIST (784 columns, 10 classes).
struct MemoryCase {
  const char* name;
  int64_t train_rows;
  int64_t test_rows;
  int layers;
  int width;
  Precision precision = Precision::kFloat32;
  AgopMethod method = AgopMethod::kAuto;
  int64_t agop_samples = 0;
  int rfm_iterations = 1;
};

void PrintTo(const MemoryCase& c, std::ostream* os) { *os << c.name; }

class EstimateMemoryTest : public ::testing::TestWithParam<MemoryCase> {};

// A sanitizer's allocator (ASan's redzones and quarantine, TSan's shadow memory) adds its own
// resident memory to every allocation, so the measured peak says nothing about the fit's
// (scripts/sanitize.sh runs every other test of this file).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DRFM_SANITIZER_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define DRFM_SANITIZER_HEAP 1
#endif
#endif

TEST_P(EstimateMemoryTest, PeakIsWithinAQuarterOfTheMeasuredPeak) {
#ifdef DRFM_SANITIZER_HEAP
  GTEST_SKIP() << "built with a sanitizer: its allocator changes the resident memory measured here";
#endif
  const MemoryCase& c = GetParam();
  const Dataset train = ValueOrDie(SliceDataset(FashionTrain(), 0, c.train_rows));
  const Dataset test =
      ValueOrDie(SliceDataset(FashionTrain(), 50000, std::max<int64_t>(c.test_rows, 1)));
  const Dataset* test_ptr = c.test_rows > 0 ? &test : nullptr;
  FitConfig config;
  config.layers = c.layers;
  config.width = c.width;
  config.precision = c.precision;
  config.agop_method = c.method;
  config.agop_samples = c.agop_samples;
  config.rfm_iterations = c.rfm_iterations;
  {
    // Warm up: OpenMP's thread pool and every lazily initialized library state exist before the
    // measured fit.
    const Dataset small = ValueOrDie(SliceDataset(train, 0, 200));
    FitConfig warm = config;
    warm.agop_samples = 0;
    ValueOrDie(FitDeepRfm(small, nullptr, warm, nullptr));
  }
  const FitEstimate est = ValueOrDie(EstimateFit(config, ShapeOf(train, test_ptr)));
  const Measured m = FitAndMeasure(train, test_ptr, config);
  const double ratio = est.peak_bytes / m.peak_bytes;
  std::printf("%s: estimated peak %.1f MB (n x n %.1f MB), measured %.1f MB, ratio %.3f (%.1f s)\n",
              c.name, est.peak_bytes / 1e6, est.kernel_matrix_bytes / 1e6, m.peak_bytes / 1e6,
              ratio, m.result.seconds);
  RecordProperty("memory_ratio", absl::StrCat(ratio));
  EXPECT_NEAR(ratio, 1.0, 0.25);
}

MemoryCase MakeMemoryCase(const char* name, int64_t train_rows, int64_t test_rows, int layers,
                          int width, void (*edit)(MemoryCase*) = nullptr) {
  MemoryCase c{name, train_rows, test_rows, layers, width};
  if (edit) edit(&c);
  return c;
}

const MemoryCase kMemoryCases[] = {
    // The n x n matrix is about 60% of the peak.
    MakeMemoryCase("KernelMatrixDominates", 4000, 0, 1, 256),
    // The previous layer's rows are still held during the second layer's AGOP.
    MakeMemoryCase("TwoLayersWithTestSet", 3000, 1000, 2, 512),
    MakeMemoryCase("DirectForm", 2000, 500, 1, 512,
                   [](MemoryCase* c) { c->method = AgopMethod::kDirect; }),
    MakeMemoryCase("Float64", 2000, 500, 1, 512,
                   [](MemoryCase* c) { c->precision = Precision::kFloat64; }),
    MakeMemoryCase("SampledAgopAndTwoRfmIterations", 2000, 500, 2, 512,
                   [](MemoryCase* c) {
                     c->agop_samples = 600;
                     c->rfm_iterations = 2;
                   }),
    // A 2048-wide second layer: its 2048 x 2048 eigendecomposition dwarfs the 1000 x 1000 kernel.
    MakeMemoryCase("WideLayerEigenDominates", 1000, 300, 2, 2048),
};

INSTANTIATE_TEST_SUITE_P(Fits, EstimateMemoryTest, ::testing::ValuesIn(kMemoryCases),
                         [](const ::testing::TestParamInfo<MemoryCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace drfm::core
