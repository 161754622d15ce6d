// Tests of the MLP side (core/mlp.h, core/mlp_model.h, core/mlp_net.h, core/mlp_config.h): the
// batched Jacobians and loss gradients against central finite differences (in double), the AGOP
// sweep against explicit sums of Jacobian outer products, the NFA correlation's exact cases,
// training to zero error on separable data, reproducibility, cancellation, measurement wiring,
// prediction and representations, the safetensors layout of DNN.md (round trip bit for bit and
// every import error) and the checksummed storage format.
#include "core/mlp.h"

#include <Eigen/QR>
#include <Eigen/SVD>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "core/io.h"
#include "core/linalg.h"
#include "core/metrics.h"
#include "core/mlp_config.h"
#include "core/mlp_model.h"
#include "core/mlp_net.h"
#include "core/random.h"
#include "gtest/gtest.h"

namespace drfm::core {
namespace {

using Json = nlohmann::json;

::testing::AssertionResult HasError(const absl::Status& status, absl::StatusCode code,
                                    std::initializer_list<const char*> parts = {}) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected code " << absl::StatusCodeToString(code) << ", got " << status;
  }
  for (const char* part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure()
             << "message \"" << status.message() << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
RowMatrix<T> RandomMatrix(Eigen::Index rows, Eigen::Index cols, double scale, Random& rng) {
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<T>(rng.Uniform(-scale, scale));
  return m;
}

// An MLP with input d, hidden widths `widths`, C outputs and entries U(+-1/sqrt(fan_in)) scaled by
// 2, large enough that the ReLU masks are mixed.
template <typename T>
MlpWeights<T> RandomWeights(Eigen::Index d, const std::vector<Eigen::Index>& widths, Eigen::Index c,
                            uint64_t seed) {
  Random rng(seed);
  MlpWeights<T> w;
  Eigen::Index in = d;
  for (Eigen::Index out : widths) {
    w.push_back(RandomMatrix<T>(out, in, 2.0 / std::sqrt(static_cast<double>(in)), rng));
    in = out;
  }
  w.push_back(RandomMatrix<T>(c, in, 2.0 / std::sqrt(static_cast<double>(in)), rng));
  return w;
}

Dataset Synthetic(int64_t rows, int64_t cols, int classes, double separation, uint64_t seed) {
  SyntheticSpec spec;
  spec.rows = rows;
  spec.cols = cols;
  spec.classes = classes;
  spec.separation = separation;
  spec.seed = seed;
  auto data = MakeSynthetic(spec);
  EXPECT_TRUE(data.ok()) << data.status();
  return *std::move(data);
}

bool BitEqual(const RowMatrixF& a, const RowMatrixF& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

bool BitEqual(const Vector<float>& a, const Vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

MlpModel ModelOf(MlpWeights<float> weights, bool standardize = false, bool row_normalize = true) {
  MlpParams p;
  p.row_normalize = row_normalize;
  p.standardize = standardize;
  const Eigen::Index d = weights.front().cols();
  if (standardize) {
    p.mean = Vector<float>::LinSpaced(d, -0.5f, 0.5f);
    p.std = Vector<float>::LinSpaced(d, 0.5f, 2.0f);
  }
  p.weights = std::move(weights);
  auto model = MlpModel::Create(std::move(p));
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

// ---------------------------------------------------------------------------------------------
// The arithmetic (mlp_net.h), checked in double.

TEST(MlpNetTest, JacobiansMatchCentralFiniteDifferencesOfTheNetworkOutput) {
  const MlpWeights<double> w = RandomWeights<double>(6, {7, 5, 8}, 4, 1);
  Random rng(2);
  for (int layer = 1; layer <= 4; ++layer) {
    const Eigen::Index in = w[layer - 1].cols();
    const RowMatrixD h = RandomMatrix<double>(5, in, 1.0, rng);
    const RowMatrixD jac = MlpJacobians<double>(w, layer, h);
    ASSERT_EQ(jac.rows(), 5 * 4);
    ASSERT_EQ(jac.cols(), in);
    constexpr double kStep = 1e-6;
    for (Eigen::Index i = 0; i < h.rows(); ++i) {
      for (Eigen::Index j = 0; j < in; ++j) {
        RowMatrixD plus = h.row(i), minus = h.row(i);
        plus(0, j) += kStep;
        minus(0, j) -= kStep;
        const RowMatrixD diff =
            (MlpForwardFrom<double>(w, layer, plus) - MlpForwardFrom<double>(w, layer, minus)) /
            (2 * kStep);
        for (Eigen::Index c = 0; c < 4; ++c) {
          EXPECT_NEAR(jac(i * 4 + c, j), diff(0, c), 1e-7)
              << "layer " << layer << " row " << i << " input " << j;
        }
      }
    }
  }
}

TEST(MlpNetTest, LossGradientsMatchCentralFiniteDifferences) {
  MlpWeights<double> w = RandomWeights<double>(4, {5, 6}, 3, 3);
  Random rng(4);
  const RowMatrixD x = RandomMatrix<double>(7, 4, 1.0, rng);
  const RowMatrixD y = RandomMatrix<double>(7, 3, 1.0, rng);
  MlpWorkspace<double> ws;
  MlpWeights<double> grads, unused;
  const double loss = MlpLossAndGradients<double>(w, x, y, &ws, &grads);
  EXPECT_NEAR(loss, (MlpForwardFrom<double>(w, 1, x) - y).squaredNorm() / (7 * 3), 1e-14);
  constexpr double kStep = 1e-6;
  for (size_t l = 0; l < w.size(); ++l) {
    ASSERT_EQ(grads[l].rows(), w[l].rows());
    ASSERT_EQ(grads[l].cols(), w[l].cols());
    for (Eigen::Index e = 0; e < w[l].size(); ++e) {
      const double saved = w[l].data()[e];
      w[l].data()[e] = saved + kStep;
      const double up = MlpLossAndGradients<double>(w, x, y, &ws, &unused);
      w[l].data()[e] = saved - kStep;
      const double down = MlpLossAndGradients<double>(w, x, y, &ws, &unused);
      w[l].data()[e] = saved;
      EXPECT_NEAR(grads[l].data()[e], (up - down) / (2 * kStep), 1e-8)
          << "W_" << l + 1 << " entry " << e;
    }
  }
}

TEST(MlpNetTest, FloatGradientsAgreeWithDoubleToFloatRoundOff) {
  const MlpWeights<double> wd = RandomWeights<double>(10, {16, 16}, 3, 5);
  MlpWeights<float> wf;
  for (const RowMatrixD& m : wd) wf.push_back(m.cast<float>());
  Random rng(6);
  const RowMatrixD x = RandomMatrix<double>(32, 10, 1.0, rng);
  const RowMatrixD y = RandomMatrix<double>(32, 3, 1.0, rng);
  MlpWorkspace<double> wsd;
  MlpWorkspace<float> wsf;
  MlpWeights<double> gd;
  MlpWeights<float> gf;
  const double ld = MlpLossAndGradients<double>(wd, x, y, &wsd, &gd);
  const float lf = MlpLossAndGradients<float>(wf, x.cast<float>(), y.cast<float>(), &wsf, &gf);
  EXPECT_NEAR(lf, ld, 1e-5 * ld);
  for (size_t l = 0; l < gd.size(); ++l) {
    // float32 round-off over sums of a few dozen terms: 1e-4 of the largest entry is generous.
    EXPECT_LE((gf[l].cast<double>() - gd[l]).cwiseAbs().maxCoeff(),
              1e-4 * gd[l].cwiseAbs().maxCoeff())
        << l;
  }
}

TEST(MlpNetTest, AgopOfALinearNetworkIsWTransposeW) {
  const MlpWeights<double> w = RandomWeights<double>(6, {}, 3, 7);
  Random rng(8);
  const RowMatrixD x = RandomMatrix<double>(11, 6, 1.0, rng);
  std::vector<RowMatrixD> agops;
  ASSERT_TRUE(MlpAgops<double>(w, x, &agops).ok());
  ASSERT_EQ(agops.size(), 1u);
  const RowMatrixD gram = w[0].transpose() * w[0];
  EXPECT_LE((agops[0] - gram).cwiseAbs().maxCoeff(), 1e-14);
  // The same through the batched Jacobians: J_i = W for every sample.
  const RowMatrixD jac = MlpJacobians<double>(w, 1, x);
  const RowMatrixD mean = jac.transpose() * jac / 11.0;
  EXPECT_LE((mean - gram).cwiseAbs().maxCoeff(), 1e-13);
}

TEST(MlpNetTest, AgopSweepEqualsTheMeanOfJacobianOuterProductsAtEveryLayer) {
  // 50 outputs: the sweep's blocks hold 81 samples, so 200 samples span three of them.
  const MlpWeights<double> w = RandomWeights<double>(5, {9, 7, 8}, 50, 9);
  Random rng(10);
  const RowMatrixD x = RandomMatrix<double>(200, 5, 1.0, rng);
  std::vector<RowMatrixD> agops;
  ASSERT_TRUE(MlpAgops<double>(w, x, &agops).ok());
  ASSERT_EQ(agops.size(), 4u);
  RowMatrixD h = x;
  for (int layer = 1; layer <= 4; ++layer) {
    const RowMatrixD jac = MlpJacobians<double>(w, layer, h);
    const RowMatrixD expected = jac.transpose() * jac / 200.0;
    EXPECT_LE((agops[layer - 1] - expected).cwiseAbs().maxCoeff(),
              1e-12 * expected.cwiseAbs().maxCoeff())
        << "layer " << layer;
    if (layer < 4) {
      h = (h * w[layer - 1].transpose()).cwiseMax(0.0);
    }
  }
}

TEST(MlpNetTest, AgopSweepStopsWhenTheTickSaysSo) {
  const MlpWeights<float> w = RandomWeights<float>(5, {8}, 50, 11);
  Random rng(12);
  const RowMatrixF x = RandomMatrix<float>(300, 5, 1.0, rng);
  std::vector<RowMatrixD> agops;
  int calls = 0;
  const absl::Status s = MlpAgops<float>(w, x, &agops, [&](double) { return ++calls < 2; });
  EXPECT_TRUE(HasError(s, absl::StatusCode::kCancelled));
  EXPECT_EQ(calls, 2);
}

TEST(MlpNetTest, EntrywiseCorrelationIsExactlyOneForEqualMatricesAndInvariantToAffineMaps) {
  Random rng(13);
  const RowMatrixD a = RandomMatrix<double>(6, 6, 1.0, rng);
  EXPECT_EQ(EntrywiseCorrelation(a, a), 1.0);
  EXPECT_NEAR(EntrywiseCorrelation(a, (3.0 * a.array() + 2.0).matrix()), 1.0, 1e-15);
  EXPECT_NEAR(EntrywiseCorrelation(a, -a), -1.0, 1e-15);
  const RowMatrixD b = RandomMatrix<double>(6, 6, 1.0, rng);
  const double r = EntrywiseCorrelation(a, b);
  EXPECT_GT(r, -1.0);
  EXPECT_LT(r, 1.0);
  // Pearson's formula on the flattened entries.
  const Eigen::VectorXd va = Eigen::Map<const Eigen::VectorXd>(a.data(), 36).array() - a.mean();
  const Eigen::VectorXd vb = Eigen::Map<const Eigen::VectorXd>(b.data(), 36).array() - b.mean();
  EXPECT_NEAR(r, va.dot(vb) / (va.norm() * vb.norm()), 1e-14);
}

TEST(MlpNetTest, EntrywiseCorrelationIsNaNWhenUndefined) {
  EXPECT_TRUE(std::isnan(
      EntrywiseCorrelation(RowMatrixD::Constant(1, 1, 2.0), RowMatrixD::Constant(1, 1, 3.0))));
  EXPECT_TRUE(std::isnan(
      EntrywiseCorrelation(RowMatrixD::Constant(3, 3, 2.0), RowMatrixD::Identity(3, 3))));
  EXPECT_TRUE(
      std::isnan(EntrywiseCorrelation(RowMatrixD::Identity(3, 3), RowMatrixD::Identity(2, 2))));
}

// ---------------------------------------------------------------------------------------------
// Measurement (AnalyzeMlp shares FitMlp's measurement).

TEST(MlpMeasureTest, OutputLayerCorrelationWithItsRawAgopIsExactlyOne) {
  const Dataset data = Synthetic(60, 6, 3, 3.0, 1);
  for (const std::vector<Eigen::Index>& widths : {std::vector<Eigen::Index>{}, {8}, {8, 7}}) {
    const MlpModel model = ModelOf(RandomWeights<float>(6, widths, 3, 14));
    auto report = AnalyzeMlp(model, data);
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_EQ(report->layers.size(), widths.size() + 1);
    const NetworkLayerReport& out = report->layers.back();
    EXPECT_TRUE(out.output);
    EXPECT_FALSE(out.has_left());
    EXPECT_EQ(out.nfa_correlation_raw, 1.0);
  }
}

TEST(MlpMeasureTest, OutputLayerWithOrthogonalEqualNormRowsHasNfaCorrelationOne) {
  // W = s Q^T with orthonormal columns Q: W^T W = s^2 P and (W^T W)^{1/2} = s P for the projector
  // P.
  MlpWeights<float> w = RandomWeights<float>(6, {8}, 3, 15);
  Random rng(16);
  const RowMatrixD g = RandomMatrix<double>(8, 3, 1.0, rng);
  const Eigen::MatrixXd q =
      Eigen::HouseholderQR<Eigen::MatrixXd>(g).householderQ() * Eigen::MatrixXd::Identity(8, 3);
  w[1] = (0.7 * q.transpose()).cast<float>();
  auto report = AnalyzeMlp(ModelOf(std::move(w)), Synthetic(60, 6, 3, 3.0, 2));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NEAR(report->layers[1].nfa_correlation, 1.0, 1e-6);
}

TEST(MlpMeasureTest, ReportMatchesIndependentComputationsLayerByLayer) {
  const Dataset data = Synthetic(90, 6, 3, 3.0, 3);
  const MlpModel model = ModelOf(RandomWeights<float>(6, {12, 9}, 3, 17), /*standardize=*/true);
  auto report = AnalyzeMlp(model, data);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->epoch, 0);
  EXPECT_FALSE(report->has_test);
  ASSERT_EQ(report->layers.size(), 3u);
  const MlpWeights<float>& w = model.params().weights;
  auto h0 = model.Representation(data.features, 0);
  ASSERT_TRUE(h0.ok());
  // AGOPs in double from the Jacobians, as an independent check of the float sweep's wiring.
  const MlpWeights<double> wd = {w[0].cast<double>(), w[1].cast<double>(), w[2].cast<double>()};
  RowMatrixD h = h0->cast<double>();
  for (int l = 1; l <= 3; ++l) {
    const NetworkLayerReport& lr = report->layers[l - 1];
    EXPECT_EQ(lr.layer, l);
    EXPECT_EQ(lr.output, l == 3);
    auto rep = model.Representation(data.features, l - 1);
    ASSERT_TRUE(rep.ok());
    auto none = ComputeCollapseMetrics<float>(*rep, data.labels, 3);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(lr.none.nc1, none->nc1) << l;
    const RowMatrixF pre = *rep * w[l - 1].transpose();
    auto right = ComputeCollapseMetrics<float>(pre, data.labels, 3);
    ASSERT_TRUE(right.ok());
    EXPECT_EQ(lr.right.nc1, right->nc1) << l;
    EXPECT_EQ(lr.right.ncc_accuracy, right->ncc_accuracy) << l;
    if (l < 3) {
      auto next = model.Representation(data.features, l);
      auto left = ComputeCollapseMetrics<float>(*next, data.labels, 3);
      ASSERT_TRUE(left.ok());
      EXPECT_EQ(lr.left.nc1, left->nc1) << l;
      EXPECT_EQ(report->layers[l].none.nc1, lr.left.nc1);
    }
    const RowMatrixD jac = MlpJacobians<double>(wd, l, h);
    const RowMatrixD agop = jac.transpose() * jac / static_cast<double>(data.rows());
    const RowMatrixD gram = wd[l - 1].transpose() * wd[l - 1];
    auto root = PsdPower(agop, 0.5);
    ASSERT_TRUE(root.ok());
    // float32 sweep against float64: agreement to ~1e-6 in the correlations.
    EXPECT_NEAR(lr.nfa_correlation_raw, EntrywiseCorrelation(gram, agop), 1e-5) << l;
    EXPECT_NEAR(lr.nfa_correlation, EntrywiseCorrelation(gram, root->power), 1e-5) << l;
    const Eigen::VectorXd sv =
        Eigen::JacobiSVD<Eigen::MatrixXd>(Eigen::MatrixXd(wd[l - 1])).singularValues();
    ASSERT_EQ(lr.top_singular_values.size(),
              static_cast<size_t>(std::min<Eigen::Index>(10, sv.size())))
        << l;
    for (size_t i = 0; i < lr.top_singular_values.size(); ++i) {
      EXPECT_NEAR(lr.top_singular_values[i], sv[i], 1e-9 * sv[0]) << l << " " << i;
    }
    if (l < 3) h = (h * wd[l - 1].transpose()).cwiseMax(0.0);
  }
  // Loss and accuracy of the model's own predictions.
  auto pred = model.Predict(data.features);
  ASSERT_TRUE(pred.ok());
  double correct = 0, loss = 0;
  for (Eigen::Index i = 0; i < data.rows(); ++i) {
    correct += pred->labels[i] == data.labels[i];
    for (int c = 0; c < 3; ++c) {
      const double t = c == data.labels[i] ? 1.0 : -1.0;
      loss += (pred->scores(i, c) - t) * (pred->scores(i, c) - t);
    }
  }
  EXPECT_DOUBLE_EQ(report->train_accuracy, correct / data.rows());
  EXPECT_NEAR(report->train_loss, loss / (3.0 * data.rows()), 1e-12);
}

TEST(MlpMeasureTest, DeadLayerGivesNaNMetricsInsteadOfFailing) {
  MlpWeights<float> w = RandomWeights<float>(6, {8, 8}, 3, 18);
  w[1] = -w[1].cwiseAbs();  // h_1 >= 0, so every pre-activation of layer 2 is <= 0: h_2 = 0
  auto report = AnalyzeMlp(ModelOf(std::move(w), false, /*row_normalize=*/false),
                           Synthetic(60, 6, 3, 3.0, 4));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(std::isnan(report->layers[1].none.nc1));
  EXPECT_TRUE(std::isnan(report->layers[1].left.nc1));
  EXPECT_TRUE(std::isnan(report->layers[2].none.nc1));
}

TEST(MlpMeasureTest, AnalyzeRejectsDataThatDoesNotFitTheModel) {
  const MlpModel model = ModelOf(RandomWeights<float>(6, {8}, 3, 19));
  EXPECT_TRUE(HasError(AnalyzeMlp(model, Synthetic(30, 5, 3, 3.0, 5)).status(),
                       absl::StatusCode::kInvalidArgument, {"5 columns", "6 features"}));
  EXPECT_TRUE(HasError(AnalyzeMlp(model, Synthetic(30, 6, 4, 3.0, 5)).status(),
                       absl::StatusCode::kInvalidArgument, {"label 3", "3 classes"}));
  EXPECT_TRUE(HasError(AnalyzeMlp(model, Synthetic(30, 6, 2, 3.0, 5)).status(),
                       absl::StatusCode::kInvalidArgument, {"class 2 has no rows"}));
}

// ---------------------------------------------------------------------------------------------
// Training.

MlpConfig SmallConfig() {
  MlpConfig c;
  c.depth = 2;
  c.width = 32;
  c.learning_rate = 3e-3;
  c.epochs = 20;
  c.batch_size = 32;
  c.measure_every = 10;
  c.seed = 42;
  return c;
}

class RecordingObserver : public MlpObserver {
 public:
  Action OnReport(const NetworkReport& report) override {
    reports.push_back(report);
    return stop_at_report >= 0 && static_cast<int>(reports.size()) > stop_at_report
               ? Action::kStop
               : Action::kContinue;
  }
  Action OnProgress(const MlpProgress& progress) override {
    progress_calls.push_back(progress);
    return stop_at_progress >= 0 && static_cast<int>(progress_calls.size()) > stop_at_progress
               ? Action::kStop
               : Action::kContinue;
  }
  int stop_at_report = -1;
  int stop_at_progress = -1;
  std::vector<NetworkReport> reports;
  std::vector<MlpProgress> progress_calls;
};

TEST(MlpFitTest, ReachesZeroTrainingErrorOnSeparableData) {
  const Dataset train = Synthetic(300, 10, 3, 10.0, 6);
  const Dataset test = Synthetic(150, 10, 3, 10.0, 7);
  RecordingObserver observer;
  auto result = FitMlp(train, &test, SmallConfig(), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  const NetworkReport& last = result->reports.back();
  EXPECT_EQ(last.epoch, 20);
  EXPECT_EQ(last.train_accuracy, 1.0);
  EXPECT_TRUE(last.has_test);
  EXPECT_LT(last.train_loss, result->reports.front().train_loss);
  // The observer saw the same reports, in epoch order.
  ASSERT_EQ(observer.reports.size(), result->reports.size());
  for (size_t i = 0; i < observer.reports.size(); ++i)
    EXPECT_EQ(observer.reports[i].epoch, result->reports[i].epoch);
  // Training progress runs from 0 to 1 over all epochs; measurement progress names its layers.
  // (Calls are throttled to one per 50 ms, so which measurement steps show up depends on timing.)
  double last_train = 0;
  for (const MlpProgress& p : observer.progress_calls) {
    EXPECT_GE(p.fraction, 0.0);
    EXPECT_LE(p.fraction, 1.0);
    if (p.phase == MlpPhase::kTrain) {
      EXPECT_GE(p.fraction, last_train);
      EXPECT_EQ(p.layer, 0);
      last_train = p.fraction;
    } else {
      EXPECT_LE(p.layer, 3);
    }
  }
  EXPECT_EQ(last_train, 1.0);
  // The stored model predicts what the last measurement measured.
  auto pred = result->model.Predict(test.features);
  ASSERT_TRUE(pred.ok());
  double correct = 0;
  for (Eigen::Index i = 0; i < test.rows(); ++i) correct += pred->labels[i] == test.labels[i];
  EXPECT_DOUBLE_EQ(last.test_accuracy, correct / test.rows());
  ASSERT_TRUE(result->model.config().has_value());
  EXPECT_EQ(result->model.depth(), 2);
  EXPECT_EQ(result->model.layer_dims(), (std::vector<int64_t>{32, 32}));
  EXPECT_TRUE(result->model.params().standardize);
}

TEST(MlpFitTest, MeasuresAtTheInitializationEveryFewEpochsAndAtTheEnd) {
  MlpConfig c;
  c.epochs = 25;
  c.measure_every = 10;
  EXPECT_EQ(MlpMeasurementEpochs(c), (std::vector<int>{0, 10, 20, 25}));
  c.epochs = 20;
  EXPECT_EQ(MlpMeasurementEpochs(c), (std::vector<int>{0, 10, 20}));
  c.measure_every = 0;
  EXPECT_EQ(MlpMeasurementEpochs(c), (std::vector<int>{20}));
  c.epochs = 0;
  c.measure_every = 10;
  EXPECT_EQ(MlpMeasurementEpochs(c), (std::vector<int>{0}));

  MlpConfig small = SmallConfig();
  small.epochs = 5;
  small.measure_every = 2;
  auto result = FitMlp(Synthetic(60, 5, 3, 5.0, 8), nullptr, small, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<int> epochs;
  for (const NetworkReport& r : result->reports) {
    epochs.push_back(r.epoch);
    EXPECT_FALSE(r.has_test);
    EXPECT_EQ(r.layers.size(), 3u);
  }
  EXPECT_EQ(epochs, (std::vector<int>{0, 2, 4, 5}));
}

TEST(MlpFitTest, ZeroEpochsMeasuresAndReturnsTheInitialization) {
  MlpConfig c = SmallConfig();
  c.epochs = 0;
  const Dataset train = Synthetic(60, 5, 3, 5.0, 9);
  auto result = FitMlp(train, nullptr, c, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->reports.size(), 1u);
  EXPECT_EQ(result->reports[0].epoch, 0);
  // DNN.md's initialization bounds: hidden g sqrt(6/(fan_in+fan_out)), output 1/sqrt(k).
  const MlpWeights<float>& w = result->model.params().weights;
  EXPECT_LE(w[0].cwiseAbs().maxCoeff(), 0.1 * std::sqrt(6.0 / (5 + 32)));
  EXPECT_GT(w[0].cwiseAbs().maxCoeff(), 0.09 * std::sqrt(6.0 / (5 + 32)));
  EXPECT_LE(w[1].cwiseAbs().maxCoeff(), 0.1 * std::sqrt(6.0 / 64));
  EXPECT_LE(w[2].cwiseAbs().maxCoeff(), 1 / std::sqrt(32.0));
  EXPECT_GT(w[2].cwiseAbs().maxCoeff(), 0.9 / std::sqrt(32.0));
}

TEST(MlpFitTest, IsReproducibleBitForBitForASeed) {
  const Dataset train = Synthetic(120, 8, 3, 4.0, 10);
  MlpConfig c = SmallConfig();
  c.epochs = 4;
  c.measure_every = 2;
  auto a = FitMlp(train, nullptr, c, nullptr, {.threads = 2});
  auto b = FitMlp(train, nullptr, c, nullptr, {.threads = 2});
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t l = 0; l < a->model.params().weights.size(); ++l) {
    EXPECT_TRUE(BitEqual(a->model.params().weights[l], b->model.params().weights[l])) << l;
  }
  ASSERT_EQ(a->reports.size(), b->reports.size());
  for (size_t i = 0; i < a->reports.size(); ++i) {
    EXPECT_EQ(a->reports[i].train_loss, b->reports[i].train_loss);
    for (size_t l = 0; l < a->reports[i].layers.size(); ++l) {
      EXPECT_EQ(a->reports[i].layers[l].right.nc1, b->reports[i].layers[l].right.nc1);
      EXPECT_EQ(a->reports[i].layers[l].nfa_correlation, b->reports[i].layers[l].nfa_correlation);
    }
  }
  EXPECT_EQ(a->model.Serialize(), b->model.Serialize());
  c.seed = 43;
  auto other = FitMlp(train, nullptr, c, nullptr, {.threads = 2});
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(BitEqual(a->model.params().weights[0], other->model.params().weights[0]));
}

// The training step's products are split into fixed tiles (256 x 256), not per thread: the
// trained weights are the same bit for bit whatever the thread count. Width 300 and batch 300
// make products of two tiles in both directions (256 + 44).
TEST(MlpFitTest, TrainedWeightsDoNotDependOnTheThreadCount) {
  const Dataset train = Synthetic(600, 20, 3, 4.0, 12);
  MlpConfig c = SmallConfig();
  c.width = 300;
  c.depth = 2;
  c.batch_size = 300;
  c.epochs = 2;
  c.measure_every = 0;
  auto one = FitMlp(train, nullptr, c, nullptr, {.threads = 1});
  ASSERT_TRUE(one.ok()) << one.status();
  for (int threads : {2, 3}) {
    auto many = FitMlp(train, nullptr, c, nullptr, {.threads = threads});
    ASSERT_TRUE(many.ok()) << many.status();
    for (size_t l = 0; l < one->model.params().weights.size(); ++l) {
      EXPECT_TRUE(BitEqual(one->model.params().weights[l], many->model.params().weights[l]))
          << "layer " << l + 1 << ", " << threads << " threads";
    }
  }
}

TEST(MlpFitTest, WeightDecayShrinksTheWeights) {
  const Dataset train = Synthetic(120, 8, 3, 4.0, 11);
  MlpConfig c = SmallConfig();
  c.epochs = 10;
  c.measure_every = 0;
  auto plain = FitMlp(train, nullptr, c, nullptr);
  c.weight_decay = 1.0;
  auto decayed = FitMlp(train, nullptr, c, nullptr);
  ASSERT_TRUE(plain.ok() && decayed.ok());
  EXPECT_LT(decayed->model.params().weights[1].norm(), plain->model.params().weights[1].norm());
}

TEST(MlpFitTest, StopInOnProgressCancelsWithoutFurtherCalls) {
  RecordingObserver observer;
  observer.stop_at_progress = 0;
  auto result = FitMlp(Synthetic(300, 10, 3, 5.0, 12), nullptr, SmallConfig(), &observer);
  EXPECT_TRUE(HasError(result.status(), absl::StatusCode::kCancelled));
  EXPECT_EQ(observer.progress_calls.size(), 1u);
  EXPECT_TRUE(
      observer.reports.empty());  // the first call comes while the initialization is measured
}

TEST(MlpFitTest, StopInOnProgressDuringTrainingCancels) {
  class StopInTraining : public MlpObserver {
   public:
    Action OnProgress(const MlpProgress& p) override {
      ++calls;
      if (stopped) ++after;
      if (p.phase == MlpPhase::kTrain) stopped = true;
      return stopped ? Action::kStop : Action::kContinue;
    }
    int calls = 0, after = 0;
    bool stopped = false;
  } observer;
  auto result = FitMlp(Synthetic(300, 10, 3, 5.0, 12), nullptr, SmallConfig(), &observer);
  EXPECT_TRUE(HasError(result.status(), absl::StatusCode::kCancelled));
  EXPECT_TRUE(observer.stopped);
  EXPECT_EQ(observer.after, 0);
}

TEST(MlpFitTest, StopInOnReportCancels) {
  RecordingObserver observer;
  observer.stop_at_report = 0;
  auto result = FitMlp(Synthetic(300, 10, 3, 5.0, 12), nullptr, SmallConfig(), &observer);
  EXPECT_TRUE(HasError(result.status(), absl::StatusCode::kCancelled, {"epoch 0"}));
  EXPECT_EQ(observer.reports.size(), 1u);
}

TEST(MlpFitTest, DivergingTrainingIsFailedPrecondition) {
  MlpConfig c = SmallConfig();
  c.learning_rate = 1e30;
  auto result = FitMlp(Synthetic(120, 8, 3, 4.0, 13), nullptr, c, nullptr);
  EXPECT_TRUE(HasError(result.status(), absl::StatusCode::kFailedPrecondition, {"learning rate"}));
}

TEST(MlpFitTest, BadInputsAreInvalidArgument) {
  const Dataset train = Synthetic(60, 5, 3, 5.0, 14);
  MlpConfig c = SmallConfig();
  c.depth = 0;
  EXPECT_TRUE(HasError(FitMlp(train, nullptr, c, nullptr).status(),
                       absl::StatusCode::kInvalidArgument, {"depth"}));
  const Dataset wide = Synthetic(30, 6, 3, 5.0, 15);
  EXPECT_TRUE(HasError(FitMlp(train, &wide, SmallConfig(), nullptr).status(),
                       absl::StatusCode::kInvalidArgument, {"test set has 6 columns"}));
  const Dataset more_classes = Synthetic(30, 5, 4, 5.0, 15);
  EXPECT_TRUE(HasError(FitMlp(train, &more_classes, SmallConfig(), nullptr).status(),
                       absl::StatusCode::kInvalidArgument, {"label 3"}));
}

TEST(MlpFitTest, InputPreparationFlagsAreStoredInTheModel) {
  MlpConfig c = SmallConfig();
  c.epochs = 1;
  c.standardize = false;
  c.row_normalize = false;
  auto result = FitMlp(Synthetic(60, 5, 3, 5.0, 16), nullptr, c, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->model.params().standardize);
  EXPECT_FALSE(result->model.params().row_normalize);
  auto back = MlpModel::ImportSafetensors(result->model.ExportSafetensors());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->params().standardize);
  EXPECT_FALSE(back->params().row_normalize);
}

TEST(MlpFitTest, EstimateScalesWithEpochsRowsAndMeasurements) {
  MlpConfig c;
  c.depth = 5;
  c.epochs = 100;
  c.measure_every = 10;
  const FitShape shape{10000, 2000, 784, 10};
  auto e = EstimateMlpFit(c, shape);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->measurements, 11);
  EXPECT_DOUBLE_EQ(e->flops, e->train_flops + e->measure_flops);
  // One epoch is about 6 n P flops with P = 784*512 + 4*512^2 + 512*10 weights.
  const double params = 784.0 * 512 + 4.0 * 512 * 512 + 512.0 * 10;
  EXPECT_NEAR(e->train_flops / 100, 6 * 10000 * params, 0.1 * 6 * 10000 * params);
  // At least the prepared inputs, and well under a gigabyte for this shape.
  EXPECT_GT(e->peak_bytes, 4.0 * 12000 * 784);
  EXPECT_LT(e->peak_bytes, 1e9);
  c.epochs = 200;
  auto twice = EstimateMlpFit(c, shape);
  ASSERT_TRUE(twice.ok());
  EXPECT_NEAR(twice->train_flops, 2 * e->train_flops, 1e-9 * e->train_flops);
  EXPECT_GT(twice->measure_flops, e->measure_flops);
  auto analysis = EstimateMlpAnalysis(10000, 784, {512, 512, 512, 512, 512}, 10);
  ASSERT_TRUE(analysis.ok());
  EXPECT_NEAR(analysis->measure_flops * 11, e->measure_flops, 0.05 * e->measure_flops);
  EXPECT_TRUE(HasError(EstimateMlpFit(c, FitShape{0, 0, 784, 10}).status(),
                       absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(
      HasError(EstimateMlpAnalysis(10, 5, {0}, 3).status(), absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------------
// Config.

TEST(MlpConfigTest, DefaultsAreThoseOfDnnMd) {
  const MlpConfig c;
  EXPECT_EQ(c.init_gain, 0.1);
  EXPECT_EQ(c.learning_rate, 5e-5);
  EXPECT_EQ(c.epochs, 250);
  EXPECT_EQ(c.batch_size, 128);
  EXPECT_EQ(c.measure_every, 10);
  EXPECT_EQ(c.weight_decay, 0);
  EXPECT_EQ(c.width, 512);
  EXPECT_TRUE(c.standardize);
  EXPECT_TRUE(c.row_normalize);
  EXPECT_TRUE(c.Validate().ok());
}

TEST(MlpConfigTest, ValidateNamesTheFieldOutOfRange) {
  struct Case {
    const char* field;
    void (*set)(MlpConfig&);
  };
  const Case cases[] = {
      {"depth", [](MlpConfig& c) { c.depth = 0; }},
      {"depth", [](MlpConfig& c) { c.depth = 33; }},
      {"width", [](MlpConfig& c) { c.width = 0; }},
      {"width", [](MlpConfig& c) { c.width = 16385; }},
      {"init_gain", [](MlpConfig& c) { c.init_gain = 0; }},
      {"init_gain", [](MlpConfig& c) { c.init_gain = std::numeric_limits<double>::infinity(); }},
      {"learning_rate", [](MlpConfig& c) { c.learning_rate = -1; }},
      {"learning_rate", [](MlpConfig& c) { c.learning_rate = std::nan(""); }},
      {"epochs", [](MlpConfig& c) { c.epochs = -1; }},
      {"epochs", [](MlpConfig& c) { c.epochs = 100001; }},
      {"batch_size", [](MlpConfig& c) { c.batch_size = 0; }},
      {"batch_size", [](MlpConfig& c) { c.batch_size = (1 << 20) + 1; }},
      {"measure_every", [](MlpConfig& c) { c.measure_every = -1; }},
      {"weight_decay", [](MlpConfig& c) { c.weight_decay = -0.1; }},
  };
  for (const Case& k : cases) {
    MlpConfig c;
    k.set(c);
    EXPECT_TRUE(HasError(c.Validate(), absl::StatusCode::kInvalidArgument, {k.field})) << k.field;
  }
}

TEST(MlpConfigTest, JsonRoundTripKeepsEveryField) {
  MlpConfig c;
  c.depth = 7;
  c.width = 100;
  c.init_gain = 0.123456789012345;
  c.learning_rate = 1.5e-4;
  c.epochs = 3;
  c.batch_size = 64;
  c.measure_every = 0;
  c.weight_decay = 1e-3;
  c.seed = UINT64_MAX;
  c.standardize = false;
  c.row_normalize = false;
  auto back = MlpConfigFromJson(MlpConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(MlpConfigToJson(*back), MlpConfigToJson(c));
  EXPECT_EQ(back->seed, UINT64_MAX);
  EXPECT_EQ(back->init_gain, c.init_gain);
  auto defaults = MlpConfigFromJson("{}");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(MlpConfigToJson(*defaults), MlpConfigToJson(MlpConfig{}));
  EXPECT_TRUE(HasError(MlpConfigFromJson("[1]").status(), absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(HasError(MlpConfigFromJson("{\"depth\": 2.5}").status(),
                       absl::StatusCode::kInvalidArgument, {"depth"}));
  EXPECT_TRUE(HasError(MlpConfigFromJson("{\"depth\": 99}").status(),
                       absl::StatusCode::kInvalidArgument, {"depth"}));
  EXPECT_TRUE(HasError(MlpConfigFromJson("{\"seed\": -1}").status(),
                       absl::StatusCode::kInvalidArgument, {"seed"}));
}

// ---------------------------------------------------------------------------------------------
// The model: prediction, representations, formats.

TEST(MlpModelTest, PredictedLabelsAreTheArgmaxOfTheScores) {
  const MlpModel model = ModelOf(RandomWeights<float>(6, {8, 8}, 4, 20), true);
  const Dataset data = Synthetic(50, 6, 4, 2.0, 17);
  auto pred = model.Predict(data.features);
  ASSERT_TRUE(pred.ok());
  ASSERT_EQ(pred->scores.rows(), 50);
  ASSERT_EQ(pred->scores.cols(), 4);
  for (Eigen::Index i = 0; i < 50; ++i) {
    Eigen::Index best;
    pred->scores.row(i).maxCoeff(&best);
    EXPECT_EQ(pred->labels[i], best);
  }
}

TEST(MlpModelTest, ScoresFollowTheDocumentedInputPreparationAndForwardPass) {
  const MlpWeights<float> w = RandomWeights<float>(3, {4}, 2, 21);
  const MlpModel model = ModelOf(w, /*standardize=*/true, /*row_normalize=*/true);
  RowMatrixF x(1, 3);
  x << 1.0f, -2.0f, 0.5f;
  Eigen::VectorXd h = x.row(0).transpose().cast<double>();
  const Eigen::VectorXd mean = model.params().mean.cast<double>(),
                        std = model.params().std.cast<double>();
  h = ((h - mean).array() / std.array()).matrix();
  h /= h.norm();
  const Eigen::VectorXd out = w[1].cast<double>() * (w[0].cast<double>() * h).cwiseMax(0.0);
  auto pred = model.Predict(x);
  ASSERT_TRUE(pred.ok());
  EXPECT_NEAR(pred->scores(0, 0), out[0], 1e-6);
  EXPECT_NEAR(pred->scores(0, 1), out[1], 1e-6);
}

TEST(MlpModelTest, RepresentationsRunFromThePreparedInputToTheLastHiddenLayer) {
  const MlpModel model = ModelOf(RandomWeights<float>(6, {8, 5}, 3, 22), true);
  const Dataset data = Synthetic(20, 6, 3, 2.0, 18);
  auto h0 = model.Representation(data.features, 0);
  ASSERT_TRUE(h0.ok());
  EXPECT_TRUE(BitEqual(*h0, PrepareMlpInput(model.params(), data.features)));
  for (Eigen::Index i = 0; i < 20; ++i) EXPECT_NEAR(h0->row(i).norm(), 1.0, 1e-6);
  auto h2 = model.Representation(data.features, 2);
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(h2->cols(), 5);
  EXPECT_GE(h2->minCoeff(), 0.0f);
  auto pred = model.Predict(data.features);
  ASSERT_TRUE(pred.ok());
  EXPECT_TRUE(BitEqual(RowMatrixF(*h2 * model.params().weights[2].transpose()), pred->scores));
  EXPECT_TRUE(HasError(model.Representation(data.features, 3).status(),
                       absl::StatusCode::kInvalidArgument, {"layer 3", "h_2"}));
  EXPECT_TRUE(HasError(model.Representation(data.features, -1).status(),
                       absl::StatusCode::kInvalidArgument));
}

TEST(MlpModelTest, BadPredictionInputIsInvalidArgumentNamingTheProblem) {
  const MlpModel model = ModelOf(RandomWeights<float>(6, {8}, 3, 23));
  EXPECT_TRUE(HasError(model.Predict(RowMatrixF::Zero(2, 5)).status(),
                       absl::StatusCode::kInvalidArgument, {"5 columns", "6 features"}));
  RowMatrixF x = RowMatrixF::Zero(3, 6);
  x(2, 4) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(
      HasError(model.Predict(x).status(), absl::StatusCode::kInvalidArgument, {"row 2 column 4"}));
}

TEST(MlpModelTest, CreateRejectsParametersThatAreNotAnMlp) {
  MlpParams p;
  EXPECT_TRUE(
      HasError(MlpModel::Create(p).status(), absl::StatusCode::kInvalidArgument, {"no layers"}));
  p.weights = {RowMatrixF::Ones(4, 3), RowMatrixF::Ones(2, 5)};
  EXPECT_TRUE(
      HasError(MlpModel::Create(p).status(), absl::StatusCode::kInvalidArgument, {"chain"}));
  p.weights = {RowMatrixF::Ones(4, 3), RowMatrixF::Ones(1, 4)};
  EXPECT_TRUE(
      HasError(MlpModel::Create(p).status(), absl::StatusCode::kInvalidArgument, {"at least 2"}));
  p.weights = {RowMatrixF::Ones(4, 3), RowMatrixF::Ones(2, 4)};
  p.weights[1](1, 2) = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(HasError(MlpModel::Create(p).status(), absl::StatusCode::kInvalidArgument,
                       {"layers.1.weight", "[1, 2]"}));
  p.weights[1](1, 2) = 0;
  p.standardize = true;
  p.mean = Vector<float>::Zero(3);
  p.std = Vector<float>::Ones(3);
  p.std[1] = 0;
  EXPECT_TRUE(
      HasError(MlpModel::Create(p).status(), absl::StatusCode::kInvalidArgument, {"input.std[1]"}));
  p.std[1] = 1;
  EXPECT_TRUE(MlpModel::Create(p).ok());
}

// A safetensors file from a header object and data, as the format's specification lays it out.
std::string Safetensors(const Json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text + data;
}

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A valid two-layer file (d = 3, k = 2, C = 2), written the way another tool might: keys in
// arbitrary order, no padding, the data of layers.1 before layers.0.
struct ForeignFile {
  Json header;
  std::string data;
  std::string bytes() const { return Safetensors(header, data); }
};

ForeignFile MakeForeignFile() {
  ForeignFile f;
  const std::vector<float> w1 = {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f};  // 2 x 3
  const std::vector<float> w2 = {1.0f, -2.0f, 0.5f, 3.0f};                 // 2 x 2
  f.data = FloatBytes(w2) + FloatBytes(w1);
  f.header = {
      {"layers.1.weight", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}},
      {"layers.0.weight", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {16, 40}}}},
      {"__metadata__", {{"framework", "pt"}}}};
  return f;
}

TEST(MlpSafetensorsTest, ForeignFileImportsAndPredictsAsTheContractSays) {
  auto model = MlpModel::ImportSafetensors(MakeForeignFile().bytes());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->input_dim(), 3);
  EXPECT_EQ(model->num_classes(), 2);
  EXPECT_EQ(model->depth(), 1);
  EXPECT_FALSE(model->params().standardize);
  EXPECT_TRUE(model->params().row_normalize);  // the default without metadata
  EXPECT_FALSE(model->config().has_value());
  RowMatrixF x(1, 3);
  x << 2.0f, 0.0f, 0.0f;  // unit row after normalization: (1, 0, 0)
  auto pred = model->Predict(x);
  ASSERT_TRUE(pred.ok());
  // h_1 = ReLU((0.5, 1.5)) ; f = ((1 * 0.5 - 2 * 1.5), (0.5 * 0.5 + 3 * 1.5)) = (-2.5, 4.75)
  EXPECT_FLOAT_EQ(pred->scores(0, 0), -2.5f);
  EXPECT_FLOAT_EQ(pred->scores(0, 1), 4.75f);
  EXPECT_EQ(pred->labels[0], 1);

  ForeignFile f = MakeForeignFile();
  f.header["__metadata__"]["row_normalize"] = "false";
  f.data += FloatBytes({1.0f, 0.0f, 0.0f}) + FloatBytes({2.0f, 1.0f, 1.0f});
  f.header["input.mean"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {40, 52}}};
  f.header["input.std"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {52, 64}}};
  auto standardized = MlpModel::ImportSafetensors(f.bytes());
  ASSERT_TRUE(standardized.ok()) << standardized.status();
  EXPECT_FALSE(standardized->params().row_normalize);
  EXPECT_TRUE(standardized->params().standardize);
  RowMatrixF z(1, 3);
  z << 3.0f, 0.0f, 0.0f;  // standardized: (1, 0, 0), not normalized further
  auto p2 = standardized->Predict(z);
  ASSERT_TRUE(p2.ok());
  EXPECT_FLOAT_EQ(p2->scores(0, 1), 4.75f);
}

TEST(MlpSafetensorsTest, ExportThenImportIsBitExact) {
  MlpConfig c = SmallConfig();
  c.epochs = 2;
  auto fit = FitMlp(Synthetic(60, 5, 3, 5.0, 19), nullptr, c, nullptr);
  ASSERT_TRUE(fit.ok()) << fit.status();
  for (const MlpModel& model :
       {fit->model, ModelOf(RandomWeights<float>(6, {}, 3, 24), false, false)}) {
    const std::string bytes = model.ExportSafetensors();
    uint64_t header_len;
    std::memcpy(&header_len, bytes.data(), 8);
    EXPECT_EQ(header_len % 8, 0u);
    auto back = MlpModel::ImportSafetensors(bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->ExportSafetensors(), bytes);
    ASSERT_EQ(back->params().weights.size(), model.params().weights.size());
    for (size_t l = 0; l < model.params().weights.size(); ++l) {
      EXPECT_TRUE(BitEqual(back->params().weights[l], model.params().weights[l]));
    }
    EXPECT_EQ(back->params().standardize, model.params().standardize);
    EXPECT_EQ(back->params().row_normalize, model.params().row_normalize);
    if (model.params().standardize) {
      EXPECT_TRUE(BitEqual(back->params().mean, model.params().mean));
      EXPECT_TRUE(BitEqual(back->params().std, model.params().std));
    }
    EXPECT_EQ(back->config().has_value(), model.config().has_value());
    if (model.config()) {
      EXPECT_EQ(MlpConfigToJson(*back->config()), MlpConfigToJson(*model.config()));
    }
    // The tensors as DNN.md names them.
    const Json header = Json::parse(bytes.substr(8, header_len));
    for (int l = 0; l <= model.depth(); ++l) {
      const Json& t = header.at("layers." + std::to_string(l) + ".weight");
      EXPECT_EQ(t.at("dtype"), "F32");
      EXPECT_EQ(t.at("shape")[0], model.params().weights[l].rows());
      EXPECT_EQ(t.at("shape")[1], model.params().weights[l].cols());
    }
    EXPECT_EQ(header.contains("input.mean"), model.params().standardize);
  }
}

TEST(MlpSafetensorsTest, EveryMalformedFileIsInvalidArgumentWithAPreciseMessage) {
  struct Case {
    const char* name;
    std::string bytes;
    const char* expected;
  };
  std::vector<Case> cases;
  auto modified = [](void (*edit)(ForeignFile&)) {
    ForeignFile f = MakeForeignFile();
    edit(f);
    return f.bytes();
  };
  const std::string good = MakeForeignFile().bytes();
  uint64_t good_header;
  std::memcpy(&good_header, good.data(), 8);
  auto with_length = [&good](uint64_t n) {
    std::string s = good;
    std::memcpy(s.data(), &n, 8);
    return s;
  };
  cases.push_back({"short file", "abc", "shorter than its 8-byte header length"});
  cases.push_back({"huge header length", with_length(uint64_t{1} << 40), "exceeds the limit"});
  cases.push_back({"header past the end", with_length(good.size()), "runs past the end"});
  cases.push_back(
      {"header not JSON", Safetensors(Json(), "").replace(8, 4, "{oop"), "not valid JSON"});
  cases.push_back(
      {"header not an object", Safetensors(Json::array({1, 2}), ""), "not a JSON object"});
  cases.push_back({"F64 dtype",
                   modified([](ForeignFile& f) { f.header["layers.0.weight"]["dtype"] = "F64"; }),
                   "dtype F64; only F32"});
  cases.push_back({"missing dtype",
                   modified([](ForeignFile& f) { f.header["layers.0.weight"].erase("dtype"); }),
                   "no string dtype"});
  cases.push_back({"entry not an object", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"] = {1, 2};
                   }),
                   "entry of tensor layers.0.weight is not an object"});
  cases.push_back({"missing shape",
                   modified([](ForeignFile& f) { f.header["layers.0.weight"].erase("shape"); }),
                   "no shape array"});
  cases.push_back({"shape whose size overflows", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40};
                   }),
                   "too many bytes as F32"});
  cases.push_back({"negative dim", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["shape"] = {-2, 3};
                   }),
                   "non-negative integers"});
  cases.push_back({"one offset", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["data_offsets"] = {16};
                   }),
                   "data_offsets [begin, end]"});
  cases.push_back({"reversed offsets", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["data_offsets"] = {40, 16};
                   }),
                   "reversed or lie outside"});
  cases.push_back({"offsets past the data", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["data_offsets"] = {16, 44};
                   }),
                   "reversed or lie outside"});
  cases.push_back({"size disagrees with shape", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["shape"] = {3, 3};
                   }),
                   "shape [3, 3] (36 bytes as F32) but its data_offsets span 24 bytes"});
  cases.push_back({"overlap", modified([](ForeignFile& f) {
                     f.header["layers.1.weight"]["data_offsets"] = {0, 16};
                     f.header["layers.0.weight"]["data_offsets"] = {12, 36};
                   }),
                   "overlap"});
  cases.push_back({"hole", modified([](ForeignFile& f) {
                     f.data = std::string(4, '\0') + f.data;
                     f.header["layers.1.weight"]["data_offsets"] = {4, 20};
                     f.header["layers.0.weight"]["data_offsets"] = {20, 44};
                   }),
                   "bytes [0, 4) of the data buffer belong to no tensor"});
  cases.push_back({"trailing bytes", modified([](ForeignFile& f) { f.data += "xxxx"; }),
                   "bytes [40, 44) at the end"});
  cases.push_back(
      {"unknown tensor", modified([](ForeignFile& f) {
         f.data += FloatBytes({1, 2});
         f.header["layers.0.bias"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {40, 48}}};
       }),
       "unknown tensor layers.0.bias"});
  cases.push_back({"leading zero index", modified([](ForeignFile& f) {
                     f.header["layers.01.weight"] = f.header["layers.1.weight"];
                     f.header.erase("layers.1.weight");
                   }),
                   "unknown tensor layers.01.weight"});
  cases.push_back({"no weights", Safetensors(Json::object(), ""), "no layers.0.weight"});
  cases.push_back({"gap in the indices", modified([](ForeignFile& f) {
                     f.header["layers.2.weight"] = f.header["layers.1.weight"];
                     f.header.erase("layers.1.weight");
                   }),
                   "layers.1.weight is missing"});
  cases.push_back({"3-D weight", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["shape"] = {2, 3, 1};
                   }),
                   "must be 2-D"});
  cases.push_back({"1-D weight",
                   modified([](ForeignFile& f) { f.header["layers.0.weight"]["shape"] = {6}; }),
                   "must be 2-D"});
  cases.push_back({"empty dimension", modified([](ForeignFile& f) {
                     f.data = f.data.substr(0, 16);
                     f.header["layers.0.weight"] = {
                         {"dtype", "F32"}, {"shape", {2, 0}}, {"data_offsets", {16, 16}}};
                   }),
                   "empty dimension"});
  cases.push_back({"shapes do not chain", modified([](ForeignFile& f) {
                     f.header["layers.0.weight"]["shape"] = {3, 2};
                   }),
                   "layers.1.weight has 2 input columns but layers.0.weight has 3 outputs"});
  cases.push_back({"one output", modified([](ForeignFile& f) {
                     f.header["layers.1.weight"]["shape"] = {1, 4};
                     f.header["layers.0.weight"]["shape"] = {4, 6};
                     f.data = f.data.substr(0, 16) + f.data.substr(16) + std::string(72, '\0');
                     f.header["layers.0.weight"]["data_offsets"] = {16, 112};
                   }),
                   "needs at least 2"});
  cases.push_back({"NaN weight", modified([](ForeignFile& f) {
                     const float nan = std::numeric_limits<float>::quiet_NaN();
                     std::memcpy(f.data.data() + 16 + 4 * 4, &nan, 4);
                   }),
                   "layers.0.weight has a non-finite value at [1, 1]"});
  cases.push_back({"infinite weight", modified([](ForeignFile& f) {
                     const float inf = -std::numeric_limits<float>::infinity();
                     std::memcpy(f.data.data() + 4, &inf, 4);
                   }),
                   "layers.1.weight has a non-finite value at [0, 1]"});
  cases.push_back(
      {"mean without std", modified([](ForeignFile& f) {
         f.data += FloatBytes({0, 0, 0});
         f.header["input.mean"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {40, 52}}};
       }),
       "input.mean is present without input.std"});
  cases.push_back(
      {"mean of the wrong length", modified([](ForeignFile& f) {
         f.data += FloatBytes({0, 0, 1, 1});
         f.header["input.mean"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {40, 48}}};
         f.header["input.std"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {48, 56}}};
       }),
       "input.mean must be 1-D of length 3"});
  cases.push_back(
      {"zero std", modified([](ForeignFile& f) {
         f.data += FloatBytes({0, 0, 0, 1, 0, 1});
         f.header["input.mean"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {40, 52}}};
         f.header["input.std"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {52, 64}}};
       }),
       "input.std[1] = 0"});
  cases.push_back({"metadata not strings", modified([](ForeignFile& f) {
                     f.header["__metadata__"]["row_normalize"] = true;
                   }),
                   "value of \"row_normalize\" is not a string"});
  cases.push_back({"metadata not an object",
                   modified([](ForeignFile& f) { f.header["__metadata__"] = "x"; }),
                   "__metadata__ must be an object"});
  cases.push_back({"bad row_normalize", modified([](ForeignFile& f) {
                     f.header["__metadata__"]["row_normalize"] = "yes";
                   }),
                   "row_normalize must be \"true\" or \"false\", not \"yes\""});
  cases.push_back({"bad drfm config", modified([](ForeignFile& f) {
                     f.header["__metadata__"]["format"] = "drfm-mlp";
                     f.header["__metadata__"]["config"] = "{\"depth\": 0}";
                   }),
                   "config is invalid"});
  for (const Case& k : cases) {
    auto model = MlpModel::ImportSafetensors(k.bytes);
    EXPECT_TRUE(HasError(model.status(), absl::StatusCode::kInvalidArgument, {k.expected}))
        << k.name;
  }
}

TEST(MlpSerializeTest, RoundTripIsBitExactAndEveryByteFlipIsRejected) {
  MlpConfig c = SmallConfig();
  c.depth = 1;
  c.width = 4;
  c.epochs = 1;
  auto fit = FitMlp(Synthetic(30, 3, 3, 5.0, 20), nullptr, c, nullptr);
  ASSERT_TRUE(fit.ok()) << fit.status();
  const std::string bytes = fit->model.Serialize();
  auto back = MlpModel::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Serialize(), bytes);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    const absl::Status s = MlpModel::Deserialize(bad).status();
    EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss ||
                s.code() == absl::StatusCode::kInvalidArgument)
        << "byte " << i << ": " << s;
  }
  for (size_t len : {size_t{0}, size_t{7}, size_t{12}, bytes.size() / 2, bytes.size() - 1}) {
    const absl::Status s = MlpModel::Deserialize(bytes.substr(0, len)).status();
    EXPECT_TRUE(s.code() == absl::StatusCode::kDataLoss || (len < 8 && !s.ok()))
        << len << ": " << s;
  }
  EXPECT_TRUE(HasError(MlpModel::Deserialize(bytes.substr(0, bytes.size() - 1)).status(),
                       absl::StatusCode::kDataLoss));
  std::string magic = bytes;
  magic[0] = 'X';
  EXPECT_TRUE(HasError(MlpModel::Deserialize(magic).status(), absl::StatusCode::kInvalidArgument,
                       {"magic"}));
  // A safetensors file is not a storage file.
  EXPECT_TRUE(HasError(MlpModel::Deserialize(fit->model.ExportSafetensors()).status(),
                       absl::StatusCode::kInvalidArgument, {"magic"}));
}

}  // namespace
}  // namespace drfm::core
