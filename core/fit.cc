#include "core/fit.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <limits>
#include <new>

#include "absl/strings/str_format.h"
#include "core/agop.h"
#include "core/features.h"
#include "core/kernels.h"
#include "core/linalg.h"
#include "core/metrics.h"
#include "core/random.h"
#include "core/solve.h"
#include "core/runtime.h"
#include "core/status.h"

namespace drfm::core {
namespace {

// Jitter retries of a failed Cholesky: the ridge becomes lambda + j, j = max(10 lambda, base)
// times 10^(retry-1).
constexpr int kMaxJitterRetries = 6;
// Minimum interval between two OnProgress calls for the same phase (the fraction 1 always goes).
constexpr double kProgressInterval = 0.05;

// Forwards progress to the observer (throttled) and records the time and flops of each phase of
// the current layer's report.
class Monitor {
 public:
  explicit Monitor(FitObserver* observer) : observer_(observer) {}

  ProgressTick Tick(int layer, Phase phase) {
    return [this, layer, phase](double fraction) { return Progress(layer, phase, fraction); };
  }

  bool Progress(int layer, Phase phase, double fraction) {
    if (observer_ == nullptr) return true;
    const double now = NowSeconds();
    const bool same_phase = layer == last_layer_ && phase == last_phase_;
    if (same_phase && fraction < 1.0 && now - last_call_ < kProgressInterval) return true;
    last_call_ = now;
    last_layer_ = layer;
    last_phase_ = phase;
    return observer_->OnProgress(layer, phase, std::clamp(fraction, 0.0, 1.0)) ==
           FitObserver::Action::kContinue;
  }

  bool Layer(const LayerReport& report) {
    return observer_ == nullptr || observer_->OnLayer(report) == FitObserver::Action::kContinue;
  }

 private:
  FitObserver* observer_;
  double last_call_ = -1e300;
  int last_layer_ = -1;
  Phase last_phase_ = Phase::kKernel;
};

// Adds the wall time of its scope to report->phase_seconds[phase].
class PhaseTimer {
 public:
  PhaseTimer(LayerReport* report, Phase phase)
      : report_(report), phase_(static_cast<int>(phase)), start_(NowSeconds()) {}
  ~PhaseTimer() { report_->phase_seconds[phase_] += NowSeconds() - start_; }

 private:
  LayerReport* report_;
  int phase_;
  double start_;
};

void AddFlops(LayerReport* report, Phase phase, double flops) {
  report->phase_flops[static_cast<int>(phase)] += flops;
}

template <typename T>
double Accuracy(const RowMatrix<T>& scores, const std::vector<int32_t>& labels) {
  if (scores.rows() == 0) return 0;
  int64_t correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    correct += best == labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(scores.rows());
}

template <typename T>
struct KernelMachine {
  RowMatrix<T> alpha;
  double train_accuracy = 0;
  double test_accuracy = 0;
};

// Kernel ridge regression on (x, y) in the n x n buffer: alpha = (K + lambda I)^-1 y, with the
// jitter fallback, plus the train and test accuracies. Afterwards the buffer holds the Cholesky
// factor (free for reuse).
template <typename T>
absl::Status FitKernelMachine(const FitConfig& config, const RowMatrix<T>& x, const Vector<T>& x_sq,
                              const RowMatrix<T>& y, const std::vector<int32_t>& labels,
                              const RowMatrix<T>* test_x, const std::vector<int32_t>* test_labels,
                              Eigen::Map<RowMatrix<T>> buffer, int layer, Monitor& monitor,
                              LayerReport* report, KernelMachine<T>* out) {
  const double n = static_cast<double>(x.rows()), d = static_cast<double>(x.cols());
  const double c = static_cast<double>(y.cols());
  double ridge = config.ridge;
  double jitter = 0;
  // The smallest jitter that is not lost in round-off next to the unit diagonal.
  const double base = std::max(10 * config.ridge, 100.0 * std::numeric_limits<T>::epsilon());
  absl::Status factored;
  for (int attempt = 0; attempt <= kMaxJitterRetries; ++attempt) {
    {
      PhaseTimer timer(report, Phase::kKernel);
      DRFM_RETURN_IF_ERROR(KernelLowerTriangle<T>(config.kernel, config.bandwidth, x, x_sq, buffer,
                                                  monitor.Tick(layer, Phase::kKernel)));
      // Row blocks of kKernelRowBlock against all columns up to the block's end.
      double flops = 0;
      for (double r0 = 0; r0 < n; r0 += kKernelRowBlock) {
        const double r1 = std::min(n, r0 + kKernelRowBlock);
        flops += 2 * (r1 - r0) * r1 * d;
      }
      AddFlops(report, Phase::kKernel, flops);
    }
    PhaseTimer timer(report, Phase::kSolve);
    buffer.diagonal().array() += static_cast<T>(ridge);
    factored = CholeskyInPlace<T>(buffer, monitor.Tick(layer, Phase::kSolve));
    AddFlops(report, Phase::kSolve, n * n * n / 3);
    if (factored.ok() || absl::IsCancelled(factored)) break;
    jitter = jitter == 0 ? base : jitter * 10;
    ridge = config.ridge + jitter;
    ++report->jitter_retries;
  }
  if (absl::IsCancelled(factored)) return factored;
  if (!factored.ok()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "layer %d: the kernel system stays singular even with ridge %g (%s); raise config.ridge "
        "(now %g) or the bandwidth, or remove duplicate rows",
        layer, ridge, factored.message(), config.ridge));
  }
  report->ridge_used = ridge;
  {
    PhaseTimer timer(report, Phase::kSolve);
    out->alpha = y;
    CholeskySolveInPlace<T>(buffer, out->alpha);
    AddFlops(report, Phase::kSolve, 2 * n * n * c);
    // K alpha = y - ridge alpha exactly (up to round-off), so the train predictions need no
    // second kernel.
    const RowMatrix<T> train_scores = y - static_cast<T>(ridge) * out->alpha;
    out->train_accuracy = Accuracy(train_scores, labels);
  }
  if (test_x != nullptr) {
    PhaseTimer timer(report, Phase::kKernel);
    RowMatrix<T> scores;
    DRFM_RETURN_IF_ERROR(KernelPredict<T>(config.kernel, config.bandwidth, *test_x, x, x_sq,
                                          out->alpha, &scores, monitor.Tick(layer, Phase::kKernel)));
    AddFlops(report, Phase::kKernel, 2 * static_cast<double>(test_x->rows()) * n * (d + c));
    out->test_accuracy = Accuracy(scores, *test_labels);
  }
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<CollapseMetrics> Metrics(const RowMatrix<T>& h, const Dataset& train,
                                        LayerReport* report, Monitor& monitor) {
  absl::StatusOr<CollapseMetrics> metrics;
  {
    PhaseTimer timer(report, Phase::kMetrics);
    AddFlops(report, Phase::kMetrics,
             static_cast<double>(h.rows()) * static_cast<double>(h.cols()) * (4.0 + 2.0 * train.num_classes));
    metrics = ComputeCollapseMetrics<T>(h, train.labels, train.num_classes);
  }
  if (metrics.ok() && !monitor.Progress(report->layer, Phase::kMetrics, 1.0)) {
    return absl::CancelledError("fit stopped by the observer");
  }
  return metrics;
}

// m distinct row indices in [0, n), sorted, by a partial Fisher-Yates shuffle.
std::vector<Eigen::Index> DrawSamples(int64_t n, int64_t m, Random& rng) {
  std::vector<Eigen::Index> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.Below(static_cast<uint64_t>(n - i)));
    std::swap(all[i], all[j]);
  }
  all.resize(m);
  std::sort(all.begin(), all.end());
  return all;
}

template <typename T>
void Standardization(const RowMatrixF& x, ModelParams<T>* params) {
  const Eigen::Index n = x.rows(), d = x.cols();
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(d), var = Eigen::VectorXd::Zero(d);
  for (Eigen::Index i = 0; i < n; ++i) mean += x.row(i).transpose().cast<double>();
  mean /= static_cast<double>(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    var += (x.row(i).transpose().cast<double>() - mean).array().square().matrix();
  }
  var /= static_cast<double>(n);
  params->mean = mean.template cast<T>();
  params->std = var.cwiseSqrt().unaryExpr([](double s) { return s > 0 ? s : 1.0; }).template cast<T>();
}

template <typename T>
absl::StatusOr<FitResult> FitImpl(const Dataset& train, const Dataset* test, const FitConfig& config,
                                  Monitor& monitor) {
  const double start = NowSeconds();
  const Eigen::Index n = train.rows();
  const int num_classes = train.num_classes;
  auto params = std::make_shared<ModelParams<T>>();
  params->input_dim = train.cols();
  params->num_classes = num_classes;
  params->standardize = config.standardize;
  params->kernel = config.kernel;
  params->bandwidth = config.bandwidth;
  if (config.standardize) Standardization(train.features, params.get());

  RowMatrix<T> x = PrepareInput(*params, train.features);
  RowMatrix<T> test_x;
  if (test != nullptr) test_x = PrepareInput(*params, test->features);
  const RowMatrix<T>* test_ptr = test != nullptr ? &test_x : nullptr;
  const std::vector<int32_t>* test_labels = test != nullptr ? &test->labels : nullptr;

  const T negative = config.label_encoding == LabelEncoding::kPlusMinusOne ? T(-1) : T(0);
  RowMatrix<T> y = RowMatrix<T>::Constant(n, num_classes, negative);
  for (Eigen::Index i = 0; i < n; ++i) y(i, train.labels[i]) = T(1);

  // 64-byte aligned, so that Eigen's vectorized loops peel the same way in every run: the
  // alignment of a buffer decides the summation order of its reductions, and with it the last bits.
  const size_t buffer_size = static_cast<size_t>(n) * static_cast<size_t>(n);
  const size_t buffer_bytes = (buffer_size * sizeof(T) + 63) / 64 * 64;
  std::unique_ptr<T[], decltype(&std::free)> buffer_store(
      static_cast<T*>(std::aligned_alloc(64, buffer_bytes)), &std::free);
  if (!buffer_store) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate the %d x %d kernel matrix (%.2f GB); use fewer training rows", n, n,
        static_cast<double>(buffer_size * sizeof(T)) / 1e9));
  }
  Eigen::Map<RowMatrix<T>> buffer(buffer_store.get(), n, n);

  Random rng(config.seed);
  const int64_t m = (config.agop_samples == 0 || config.agop_samples >= n) ? n : config.agop_samples;
  FitResult result{DeepRfmModel(config, std::shared_ptr<const ModelParams<T>>(params)), {}, 0, 0};
  RowMatrix<T> projected, features, test_projected, test_features;

  for (int layer = 1; layer <= config.layers; ++layer) {
    LayerReport report;
    report.layer = layer;
    report.has_test = test != nullptr;
    {
      PhaseTimer timer(&report, Phase::kKernel);
      NormalizeRows<T>(x);
      if (test_ptr) NormalizeRows<T>(test_x);
    }
    DRFM_ASSIGN_OR_RETURN(report.input, Metrics(x, train, &report, monitor));

    // RFM iterations: fit, AGOP, and (before the last) refit with the Mahalanobis kernel
    // k(S x, S z), S = M^(1/2), whose AGOP with respect to x is S AGOP_u S.
    RowMatrixD agop, mahalanobis;
    RowMatrix<T> xk, test_xk;
    for (int t = 1; t <= config.rfm_iterations; ++t) {
      const bool transformed = t > 1;
      if (transformed) {
        PhaseTimer timer(&report, Phase::kKernel);
        const RowMatrix<T> s = mahalanobis.cast<T>();
        xk.noalias() = x * s;
        if (test_ptr) test_xk.noalias() = test_x * s;
        AddFlops(&report, Phase::kKernel,
                 2.0 * (n + test_x.rows()) * static_cast<double>(x.cols()) * x.cols());
      }
      const RowMatrix<T>& fit_x = transformed ? xk : x;
      const Vector<T> fit_sq = RowSquaredNorms<T>(fit_x);
      KernelMachine<T> machine;
      DRFM_RETURN_IF_ERROR(FitKernelMachine<T>(config, fit_x, fit_sq, y, train.labels,
                                               test_ptr ? (transformed ? &test_xk : &test_x) : nullptr,
                                               test_labels, buffer, layer, monitor, &report, &machine));
      report.train_accuracy = machine.train_accuracy;
      report.test_accuracy = machine.test_accuracy;

      PhaseTimer timer(&report, Phase::kAgop);
      const std::vector<Eigen::Index> samples = m < n ? DrawSamples(n, m, rng) : std::vector<Eigen::Index>{};
      DRFM_ASSIGN_OR_RETURN(AgopResult<T> raw,
                            ComputeAgop<T>(config.kernel, config.bandwidth, fit_x, fit_sq, machine.alpha,
                                           samples, config.agop_method, buffer_store.get(),
                                           monitor.Tick(layer, Phase::kAgop)));
      AddFlops(&report, Phase::kAgop, raw.flops);
      report.agop_gram_form = raw.gram;
      agop = raw.m.template cast<double>();
      if (transformed) {
        agop = mahalanobis * agop * mahalanobis;
        AddFlops(&report, Phase::kAgop, 4.0 * std::pow(static_cast<double>(x.cols()), 3));
      }
      if (config.agop_normalize == AgopNormalize::kMax) {
        const double max_abs = agop.cwiseAbs().maxCoeff();
        if (max_abs > 0) agop /= max_abs;
      }
      if (t < config.rfm_iterations) {
        DRFM_ASSIGN_OR_RETURN(SymmetricPower root, PsdPower(agop, 0.5));
        mahalanobis = std::move(root.power);
        AddFlops(&report, Phase::kAgop, PsdPowerFlops(static_cast<double>(x.cols())));
      }
    }

    LayerParams<T> layer_params;
    {
      PhaseTimer timer(&report, Phase::kProject);
      DRFM_ASSIGN_OR_RETURN(SymmetricPower power, PsdPower(agop, config.agop_power));
      const double d = static_cast<double>(x.cols());
      AddFlops(&report, Phase::kProject, PsdPowerFlops(d) + 2.0 * (n + test_x.rows()) * d * d);
      report.agop_trace = agop.trace();
      report.agop_effective_rank = EffectiveRank(power.eigenvalues);
      const Eigen::Index top = std::min<Eigen::Index>(config.top_eigenvalues, power.eigenvalues.size());
      report.agop_top_eigenvalues.assign(power.eigenvalues.data(), power.eigenvalues.data() + top);
      layer_params.projection = power.power.cast<T>();
      projected.noalias() = x * layer_params.projection;
    }
    if (!monitor.Progress(layer, Phase::kProject, 1.0)) {
      return absl::CancelledError("fit stopped by the observer");
    }
    {
      PhaseTimer timer(&report, Phase::kFeatures);
      layer_params.map = DrawFeatureMap<T>(config.feature_map, config.width, x.cols(), config.rff_scale, rng);
      ApplyFeatureMap<T>(layer_params.map, projected, &features);
      if (test_ptr) ApplyLayer(layer_params, test_x, &test_projected, &test_features);
      AddFlops(&report, Phase::kFeatures,
               2.0 * (n + test_x.rows()) * static_cast<double>(x.cols()) * layer_params.map.weights.rows());
    }
    if (!monitor.Progress(layer, Phase::kFeatures, 1.0)) {
      return absl::CancelledError("fit stopped by the observer");
    }
    DRFM_ASSIGN_OR_RETURN(report.projected, Metrics(projected, train, &report, monitor));
    DRFM_ASSIGN_OR_RETURN(report.features, Metrics(features, train, &report, monitor));
    params->layers.push_back(std::move(layer_params));
    // The previous rows are not needed any more: free them now rather than at the next layer.
    x.swap(features);
    features.resize(0, 0);
    projected.resize(0, 0);
    if (test_ptr) {
      test_x.swap(test_features);
      test_features.resize(0, 0);
      test_projected.resize(0, 0);
    }

    for (int p = 0; p < kNumPhases; ++p) result.flops += report.phase_flops[p];
    result.reports.push_back(report);
    if (!monitor.Layer(report)) {
      return absl::CancelledError(absl::StrFormat("fit stopped by the observer after layer %d", layer));
    }
  }

  // Readout: a plain kernel machine on the row-normalized last features.
  LayerReport report;
  report.layer = config.layers + 1;
  report.readout = true;
  report.has_test = test != nullptr;
  {
    PhaseTimer timer(&report, Phase::kKernel);
    NormalizeRows<T>(x);
    if (test_ptr) NormalizeRows<T>(test_x);
  }
  DRFM_ASSIGN_OR_RETURN(report.input, Metrics(x, train, &report, monitor));
  const Vector<T> x_sq = RowSquaredNorms<T>(x);
  KernelMachine<T> machine;
  DRFM_RETURN_IF_ERROR(FitKernelMachine<T>(config, x, x_sq, y, train.labels, test_ptr, test_labels,
                                           buffer, config.layers + 1, monitor, &report, &machine));
  report.train_accuracy = machine.train_accuracy;
  report.test_accuracy = machine.test_accuracy;
  buffer_store.reset();
  params->readout_x = std::move(x);
  params->readout_x_sq = x_sq;
  params->readout_alpha = std::move(machine.alpha);
  for (int p = 0; p < kNumPhases; ++p) result.flops += report.phase_flops[p];
  result.reports.push_back(report);
  result.seconds = NowSeconds() - start;
  if (!monitor.Layer(report)) return absl::CancelledError("fit stopped by the observer after the readout");
  return result;
}

absl::Status ValidateInputs(const Dataset& train, const Dataset* test, const FitConfig& config) {
  DRFM_RETURN_IF_ERROR(config.Validate());
  DRFM_RETURN_IF_ERROR(ValidateTrainingSet(train));
  if (config.agop_samples > train.rows()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "config.agop_samples = %d exceeds the %d training rows; use 0 (all) or at most %d",
        config.agop_samples, train.rows(), train.rows()));
  }
  if (test == nullptr) return absl::OkStatus();
  DRFM_RETURN_IF_ERROR(ValidateDataset(*test));
  if (test->cols() != train.cols()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the test set has %d columns but the training set has %d", test->cols(), train.cols()));
  }
  for (size_t i = 0; i < test->labels.size(); ++i) {
    if (test->labels[i] < 0 || test->labels[i] >= train.num_classes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "test row %d has label %d, outside the %d training classes", i, test->labels[i], train.num_classes));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FitResult> FitDeepRfm(const Dataset& train, const Dataset* test,
                                     const FitConfig& config, FitObserver* observer,
                                     const FitOptions& options) {
  DRFM_RETURN_IF_ERROR(ValidateInputs(train, test, config));
  ScopedThreads threads(options.threads);
  Monitor monitor(observer);
  if (config.precision == Precision::kFloat64) return FitImpl<double>(train, test, config, monitor);
  return FitImpl<float>(train, test, config, monitor);
}

}  // namespace drfm::core
