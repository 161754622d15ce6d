#include "core/mlp.h"

#include <omp.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_format.h"
#include "core/linalg.h"
#include "core/metrics.h"
#include "core/random.h"
#include "core/runtime.h"
#include "core/status.h"

namespace drfm::core {
namespace {

// Minimum interval between two OnProgress calls of the same phase (the end of a phase always goes).
constexpr double kProgressInterval = 0.05;
// Adam's constants (DNN.md, the paper's torch defaults).
constexpr double kBeta1 = 0.9;
constexpr double kBeta2 = 0.999;
constexpr double kAdamEps = 1e-8;
// Share of a measurement's progress bar taken by each of its parts.
constexpr double kForwardShare = 0.2;
constexpr double kSweepShare = 0.6;

// Forwards progress (throttled) and reports to the observer; false means "stop".
class Monitor {
 public:
  explicit Monitor(MlpObserver* observer) : observer_(observer) {}

  bool Progress(MlpPhase phase, int epoch, int layer, double fraction, bool force = false) {
    if (observer_ == nullptr) return true;
    const double now = NowSeconds();
    if (!force && phase == last_phase_ && now - last_call_ < kProgressInterval) return true;
    last_call_ = now;
    last_phase_ = phase;
    MlpProgress p;
    p.phase = phase;
    p.epoch = epoch;
    p.layer = layer;
    p.fraction = std::clamp(fraction, 0.0, 1.0);
    return observer_->OnProgress(p) == MlpObserver::Action::kContinue;
  }

  bool Report(const NetworkReport& report) {
    return observer_ == nullptr || observer_->OnReport(report) == MlpObserver::Action::kContinue;
  }

 private:
  MlpObserver* observer_;
  double last_call_ = -1e300;
  MlpPhase last_phase_ = MlpPhase::kTrain;
};

absl::Status Stopped(int epoch) {
  return absl::CancelledError(
      absl::StrFormat("MLP fit stopped by the observer at epoch %d", epoch));
}

// Collapse metrics of `h`, NaN when they are undefined for it (the labels were checked before,
// so a failure means a degenerate representation, e.g. all class means equal).
CollapseMetrics MetricsOrNaN(const RowMatrixF& h, const std::vector<int32_t>& labels,
                             int num_classes) {
  absl::StatusOr<CollapseMetrics> m = ComputeCollapseMetrics<float>(h, labels, num_classes);
  if (m.ok()) return *m;
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  CollapseMetrics nan;
  nan.nc1 = nan.nc1_pinv = nan.nc2 = nan.nc2_equinorm = nan.ncc_accuracy = kNaN;
  return nan;
}

// MSE against the +-1 targets (mean over samples and outputs) and argmax accuracy of `scores`.
void LossAndAccuracy(const RowMatrixF& scores, const std::vector<int32_t>& labels, double* loss,
                     double* accuracy) {
  const Eigen::Index n = scores.rows(), c = scores.cols();
  double sum = 0;
  int64_t correct = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index j = 0; j < c; ++j) {
      const double diff = static_cast<double>(scores(i, j)) - (j == labels[i] ? 1.0 : -1.0);
      sum += diff * diff;
    }
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    correct += best == labels[i];
  }
  *loss = n > 0 ? sum / (static_cast<double>(n) * static_cast<double>(c)) : 0;
  *accuracy = n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0;
}

// The largest singular values of `w`, from the eigenvalues of its smaller Gram matrix.
absl::StatusOr<std::vector<double>> TopSingularValues(const RowMatrixD& w, const RowMatrixD& gram) {
  const Eigen::MatrixXd small =
      w.rows() < w.cols() ? Eigen::MatrixXd(w * w.transpose()) : Eigen::MatrixXd(gram);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(small, Eigen::EigenvaluesOnly);
  if (solver.info() != Eigen::Success) {
    return absl::InternalError("the eigenvalues of W W^T did not converge");
  }
  const Eigen::VectorXd& ev = solver.eigenvalues();  // ascending
  std::vector<double> out;
  for (Eigen::Index i = ev.size() - 1;
       i >= 0 && static_cast<int>(out.size()) < kMlpTopSingularValues; --i) {
    out.push_back(std::sqrt(std::max(ev[i], 0.0)));
  }
  return out;
}

// One measurement (DNN.md) of the network `w` on prepared rows `x` with `labels`, plus the loss
// and accuracy on `test_x` when given.
absl::StatusOr<NetworkReport> Measure(const MlpWeights<float>& w, const RowMatrixF& x,
                                      const std::vector<int32_t>& labels, int num_classes,
                                      const RowMatrixF* test_x,
                                      const std::vector<int32_t>* test_labels, int epoch,
                                      Monitor& monitor) {
  const double start = NowSeconds();
  const int hidden = static_cast<int>(w.size()) - 1;
  NetworkReport report;
  report.epoch = epoch;
  report.layers.resize(hidden + 1);

  // Forward pass over all rows, layer by layer; left of layer l is none of layer l+1.
  CollapseMetrics previous = MetricsOrNaN(x, labels, num_classes);
  RowMatrixF h, z;
  for (int l = 1; l <= hidden + 1; ++l) {
    NetworkLayerReport& lr = report.layers[l - 1];
    lr.layer = l;
    lr.output = l == hidden + 1;
    lr.none = previous;
    z.noalias() = (l == 1 ? x : h) * w[l - 1].transpose();
    lr.right = MetricsOrNaN(z, labels, num_classes);
    if (lr.output) {
      LossAndAccuracy(z, labels, &report.train_loss, &report.train_accuracy);
    } else {
      z.array() = z.array().max(0.0f);
      lr.left = MetricsOrNaN(z, labels, num_classes);
      previous = lr.left;
      h.swap(z);
    }
    if (!monitor.Progress(MlpPhase::kMeasure, epoch, l, kForwardShare * l / (hidden + 1)))
      return Stopped(epoch);
  }
  h.resize(0, 0);
  z.resize(0, 0);
  if (test_x != nullptr) {
    report.has_test = true;
    LossAndAccuracy(MlpForwardFrom<float>(w, 1, *test_x), *test_labels, &report.test_loss,
                    &report.test_accuracy);
  }

  std::vector<RowMatrixD> agops;
  absl::Status swept = MlpAgops<float>(w, x, &agops, [&](double fraction) {
    return monitor.Progress(MlpPhase::kMeasure, epoch, 0, kForwardShare + kSweepShare * fraction);
  });
  if (absl::IsCancelled(swept)) return Stopped(epoch);
  DRFM_RETURN_IF_ERROR(swept);

  for (int l = 1; l <= hidden + 1; ++l) {
    NetworkLayerReport& lr = report.layers[l - 1];
    const RowMatrixD wd = w[l - 1].cast<double>();
    const RowMatrixD gram = wd.transpose() * wd;
    DRFM_ASSIGN_OR_RETURN(SymmetricPower root, PsdPower(agops[l - 1], 0.5));
    lr.nfa_correlation = EntrywiseCorrelation(gram, root.power);
    lr.nfa_correlation_raw = EntrywiseCorrelation(gram, agops[l - 1]);
    DRFM_ASSIGN_OR_RETURN(lr.top_singular_values, TopSingularValues(wd, gram));
    const double done =
        kForwardShare + kSweepShare + (1 - kForwardShare - kSweepShare) * l / (hidden + 1);
    if (!monitor.Progress(MlpPhase::kMeasure, epoch, l, done, l == hidden + 1))
      return Stopped(epoch);
  }
  report.seconds = NowSeconds() - start;
  return report;
}

// Per-feature mean and standard deviation (zero std -> 1) of `x`, accumulated in double.
void Standardization(const RowMatrixF& x, MlpParams* params) {
  const Eigen::Index n = x.rows(), d = x.cols();
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(d), var = Eigen::VectorXd::Zero(d);
  for (Eigen::Index i = 0; i < n; ++i) mean += x.row(i).transpose().cast<double>();
  mean /= static_cast<double>(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    var += (x.row(i).transpose().cast<double>() - mean).array().square().matrix();
  }
  var /= static_cast<double>(n);
  params->mean = mean.cast<float>();
  params->std = var.cwiseSqrt().unaryExpr([](double s) { return s > 0 ? s : 1.0; }).cast<float>();
  // A std that underflows to 0 in float would divide by zero.
  params->std = params->std.unaryExpr([](float s) { return s > 0 ? s : 1.0f; });
}

// DNN.md's initialization, drawn row-major layer by layer from `rng`.
MlpWeights<float> InitialWeights(const MlpConfig& config, Eigen::Index d, int num_classes,
                                 Random& rng) {
  MlpWeights<float> w;
  Eigen::Index in = d;
  for (int l = 1; l <= config.depth + 1; ++l) {
    const bool output = l == config.depth + 1;
    const Eigen::Index out = output ? num_classes : config.width;
    const double bound = output ? 1.0 / std::sqrt(static_cast<double>(in))
                                : config.init_gain * std::sqrt(6.0 / static_cast<double>(in + out));
    RowMatrixF m(out, in);
    for (Eigen::Index i = 0; i < out; ++i) {
      for (Eigen::Index j = 0; j < in; ++j)
        m(i, j) = static_cast<float>(rng.Uniform(-bound, bound));
    }
    w.push_back(std::move(m));
    in = out;
  }
  return w;
}

// One Adam update of rows [r0, r0 + nr) of `w` with gradient `g` (weight decay added to it
// first). Every entry is updated on its own, so the result does not depend on how rows are split
// across threads.
void AdamRows(float step_size, float bc2_sqrt, float eps, float decay, const RowMatrixF& g,
              Eigen::Index r0, Eigen::Index nr, RowMatrixF* m, RowMatrixF* v, RowMatrixF* w) {
  const float b1 = static_cast<float>(kBeta1), b2 = static_cast<float>(kBeta2);
  const float c1 = static_cast<float>(1 - kBeta1), c2 = static_cast<float>(1 - kBeta2);
  for (Eigen::Index i = r0; i < r0 + nr; ++i) {
    const auto gi = g.row(i).array() + decay * w->row(i).array();  // an expression, not a copy
    m->row(i).array() = b1 * m->row(i).array() + c1 * gi;
    v->row(i).array() = b2 * v->row(i).array() + c2 * gi.square();
    w->row(i).array() -=
        step_size * m->row(i).array() / (v->row(i).array().sqrt() / bc2_sqrt + eps);
  }
}

absl::Status ValidateFitInputs(const Dataset& train, const Dataset* test, const MlpConfig& config) {
  DRFM_RETURN_IF_ERROR(config.Validate());
  DRFM_RETURN_IF_ERROR(ValidateTrainingSet(train));
  if (test == nullptr) return absl::OkStatus();
  DRFM_RETURN_IF_ERROR(ValidateDataset(*test));
  if (test->cols() != train.cols()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the test set has %d columns but the training set has %d", test->cols(), train.cols()));
  }
  for (size_t i = 0; i < test->labels.size(); ++i) {
    if (test->labels[i] < 0 || test->labels[i] >= train.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("test row %d has label %d, outside the %d training classes", i,
                          test->labels[i], train.num_classes));
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// Flops and peak bytes of one measurement of a network with widths dims = (d, k_1, .., k_L, C) on
// n rows (Measure and MlpAgops).
void MeasureCost(double n, const std::vector<double>& dims, double* flops, double* bytes) {
  const size_t last = dims.size() - 1;  // index of C
  const double c = dims[last];
  double f = 0, widest = 0, agop_bytes = 0, eig_bytes = 0;
  for (size_t l = 1; l <= last; ++l) {
    const double in = dims[l - 1], out = dims[l];
    f += 2 * 2 * n * in * out;                         // forward for the metrics and in the sweep
    f += (4 + 2 * c) * n * (l == last ? 1 : 2) * out;  // metrics of right (and left)
    if (l < last) {
      f += 2 * n * c * out * out;                 // sum of A^T A
      if (l > 1) f += 2 * n * c * out * in;       // propagation A W_l
      f += 2 * (out * out * in + out * in * in);  // W^T M W
      agop_bytes += 8 * out * out;
    }
    f += 2 * in * in * out + PsdPowerFlops(in) +
         4 * std::pow(std::min(in, out), 3);  // Gram, root, spectrum
    agop_bytes += 8 * in * in;
    eig_bytes = std::max(eig_bytes, 8 * 4 * in * in);
    widest = std::max(widest, out);
  }
  f += (4 + 2 * c) * n * dims[0];  // metrics of the input
  *flops = f;
  const double sweep_rows = std::max(4096.0, c);
  *bytes = 4 * 2 * n * widest + agop_bytes + eig_bytes +
           4 * (3 * sweep_rows * widest + widest * widest) +
           4 * (sweep_rows / c) * widest * (last - 1);
}

absl::Status CheckShape(double rows, double cols, int num_classes) {
  if (rows < 1 || cols < 1 || num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("an MLP estimate needs rows >= 1, cols >= 1 and at least 2 classes (got %g "
                        "rows, %g columns, %d classes)",
                        rows, cols, num_classes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MlpFitEstimate> EstimateMlpFit(const MlpConfig& config, const FitShape& shape) {
  DRFM_RETURN_IF_ERROR(config.Validate());
  const double n = static_cast<double>(shape.train_rows), d = static_cast<double>(shape.cols);
  const double nt = static_cast<double>(std::max<int64_t>(shape.test_rows, 0));
  DRFM_RETURN_IF_ERROR(CheckShape(n, d, shape.num_classes));
  const double k = config.width, c = shape.num_classes;
  std::vector<double> dims = {d};
  for (int l = 0; l < config.depth; ++l) dims.push_back(k);
  dims.push_back(c);
  double params = 0;
  for (size_t l = 1; l < dims.size(); ++l) params += dims[l - 1] * dims[l];
  const double batch = std::min<double>(config.batch_size, n);
  const double steps = std::ceil(n / batch);

  MlpFitEstimate e;
  e.measurements = static_cast<int>(MlpMeasurementEpochs(config).size());
  // Forward 2 n P, backward 4 n P less the unneeded input gradient of layer 1, Adam ~12 per weight.
  e.train_flops = config.epochs * (6 * n * params - 2 * n * d * k + 12 * params * steps);
  double measure_flops = 0, measure_bytes = 0;
  MeasureCost(n, dims, &measure_flops, &measure_bytes);
  e.measure_flops = e.measurements * (measure_flops + 2 * nt * params);
  e.flops = e.train_flops + e.measure_flops;
  const double inputs = 4 * (n + nt) * d + 4 * n * c;
  const double train_state = 4 * 4 * params + 4 * batch * (2 * d + 2 * c + (config.depth + 2) * k);
  e.peak_bytes = inputs + train_state + std::max(measure_bytes, 4 * 2 * nt * k);
  return e;
}

absl::StatusOr<MlpFitEstimate> EstimateMlpAnalysis(int64_t rows, int64_t cols,
                                                   const std::vector<int64_t>& layer_dims,
                                                   int num_classes) {
  DRFM_RETURN_IF_ERROR(
      CheckShape(static_cast<double>(rows), static_cast<double>(cols), num_classes));
  std::vector<double> dims = {static_cast<double>(cols)};
  for (int64_t k : layer_dims) {
    if (k < 1) return absl::InvalidArgumentError("an MLP estimate needs layer widths >= 1");
    dims.push_back(static_cast<double>(k));
  }
  dims.push_back(num_classes);
  MlpFitEstimate e;
  e.measurements = 1;
  double bytes = 0;
  MeasureCost(static_cast<double>(rows), dims, &e.measure_flops, &bytes);
  e.flops = e.measure_flops;
  double params = 0;
  for (size_t l = 1; l < dims.size(); ++l) params += dims[l - 1] * dims[l];
  e.peak_bytes = 4 * static_cast<double>(rows) * static_cast<double>(cols) + 4 * params + bytes;
  return e;
}

std::vector<int> MlpMeasurementEpochs(const MlpConfig& config) {
  std::vector<int> epochs;
  if (config.measure_every > 0) {
    for (int e = 0; e < config.epochs; e += config.measure_every) epochs.push_back(e);
  }
  epochs.push_back(config.epochs);
  return epochs;
}

absl::StatusOr<MlpFitResult> FitMlp(const Dataset& train, const Dataset* test,
                                    const MlpConfig& config, MlpObserver* observer,
                                    const FitOptions& options) {
  DRFM_RETURN_IF_ERROR(ValidateFitInputs(train, test, config));
  const double start = NowSeconds();
  ScopedThreads threads(options.threads);
  Monitor monitor(observer);
  const Eigen::Index n = train.rows();
  const int num_classes = train.num_classes;

  MlpParams params;
  params.standardize = config.standardize;
  params.row_normalize = config.row_normalize;
  if (config.standardize) Standardization(train.features, &params);
  const RowMatrixF x = PrepareMlpInput(params, train.features);
  RowMatrixF test_x;
  if (test != nullptr) test_x = PrepareMlpInput(params, test->features);
  const RowMatrixF* test_ptr = test != nullptr ? &test_x : nullptr;
  const std::vector<int32_t>* test_labels = test != nullptr ? &test->labels : nullptr;
  RowMatrixF y = RowMatrixF::Constant(n, num_classes, -1.0f);
  for (Eigen::Index i = 0; i < n; ++i) y(i, train.labels[i]) = 1.0f;

  Random rng(config.seed);
  MlpWeights<float> w = InitialWeights(config, train.cols(), num_classes, rng);
  MlpWeights<float> adam_m, adam_v, grads;
  for (const RowMatrixF& wl : w) {
    adam_m.push_back(RowMatrixF::Zero(wl.rows(), wl.cols()));
    adam_v.push_back(RowMatrixF::Zero(wl.rows(), wl.cols()));
  }
  MlpWorkspace<float> ws;

  const std::vector<int> measure_at = MlpMeasurementEpochs(config);
  size_t next_measure = 0;
  std::vector<NetworkReport> reports;
  auto measure = [&](int epoch) -> absl::Status {
    DRFM_ASSIGN_OR_RETURN(NetworkReport report, Measure(w, x, train.labels, num_classes, test_ptr,
                                                        test_labels, epoch, monitor));
    reports.push_back(report);
    if (!monitor.Report(reports.back())) return Stopped(epoch);
    return absl::OkStatus();
  };
  if (measure_at[next_measure] == 0) {
    DRFM_RETURN_IF_ERROR(measure(0));
    ++next_measure;
  }

  const Eigen::Index batch = std::min<Eigen::Index>(config.batch_size, n);
  const Eigen::Index batches = (n + batch - 1) / batch;
  std::vector<Eigen::Index> order(n);
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  std::vector<Eigen::Index> rows;
  RowMatrixF xb, yb;
  const float decay = static_cast<float>(config.weight_decay);
  const float eps = static_cast<float>(kAdamEps);
  int64_t step = 0;
  for (int epoch = 1; epoch <= config.epochs; ++epoch) {
    // Fisher-Yates, continuing from the previous epoch's order.
    for (Eigen::Index i = n - 1; i > 0; --i) {
      std::swap(order[i],
                order[static_cast<Eigen::Index>(rng.Below(static_cast<uint64_t>(i + 1)))]);
    }
    for (Eigen::Index b = 0; b < batches; ++b) {
      const Eigen::Index begin = b * batch, end = std::min(n, begin + batch);
      rows.assign(order.begin() + begin, order.begin() + end);
      xb = x(rows, Eigen::all);
      yb = y(rows, Eigen::all);
      // Adam with bias correction, in torch.optim.Adam's arrangement:
      // w -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), applied to each block of gradient rows
      // inside the backward pass, as soon as the block is final (MlpLossAndGradients' hook).
      ++step;
      const float step_size =
          static_cast<float>(config.learning_rate / (1 - std::pow(kBeta1, step)));
      const float bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(kBeta2, step)));
      const float loss = MlpLossAndGradients<float>(
          w, xb, yb, &ws, &grads, [&](int layer, Eigen::Index r0, Eigen::Index nr) {
            const size_t l = static_cast<size_t>(layer - 1);
            AdamRows(step_size, bc2_sqrt, eps, decay, grads[l], r0, nr, &adam_m[l], &adam_v[l],
                     &w[l]);
          });
      if (!std::isfinite(loss)) {
        return absl::FailedPreconditionError(
            absl::StrFormat("the training loss became %g at epoch %d: training diverged; lower the "
                            "learning rate (now %g)",
                            loss, epoch, config.learning_rate));
      }
      const double fraction =
          (epoch - 1 + static_cast<double>(b + 1) / static_cast<double>(batches)) / config.epochs;
      if (!monitor.Progress(MlpPhase::kTrain, epoch - 1, 0, fraction, b + 1 == batches))
        return Stopped(epoch - 1);
    }
    if (next_measure < measure_at.size() && measure_at[next_measure] == epoch) {
      DRFM_RETURN_IF_ERROR(measure(epoch));
      ++next_measure;
    }
  }
  params.weights = std::move(w);
  DRFM_ASSIGN_OR_RETURN(MlpModel model, MlpModel::Create(std::move(params), config));
  return MlpFitResult{std::move(model), std::move(reports), NowSeconds() - start};
}

absl::StatusOr<NetworkReport> AnalyzeMlp(const MlpModel& model, const Dataset& data,
                                         MlpObserver* observer, const FitOptions& options) {
  DRFM_RETURN_IF_ERROR(ValidateDataset(data));
  if (data.cols() != model.input_dim()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the data has %d columns but the model expects %d features", data.cols(),
                        model.input_dim()));
  }
  const int num_classes = model.num_classes();
  std::vector<int64_t> counts(num_classes, 0);
  for (size_t i = 0; i < data.labels.size(); ++i) {
    if (data.labels[i] < 0 || data.labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "row %d has label %d, outside the model's %d classes", i, data.labels[i], num_classes));
    }
    ++counts[data.labels[i]];
  }
  for (int c = 0; c < num_classes; ++c) {
    if (counts[c] == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("class %d has no rows in the data; the collapse metrics need every one "
                          "of the model's %d classes",
                          c, num_classes));
    }
  }
  ScopedThreads threads(options.threads);
  Monitor monitor(observer);
  const RowMatrixF x = PrepareMlpInput(model.params(), data.features);
  absl::StatusOr<NetworkReport> report =
      Measure(model.params().weights, x, data.labels, num_classes, nullptr, nullptr, 0, monitor);
  if (absl::IsCancelled(report.status()))
    return absl::CancelledError("MLP analysis stopped by the observer");
  return report;
}

}  // namespace drfm::core
