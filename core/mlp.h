// The network side of the paper (DNN.md): FitMlp trains a bias-free ReLU MLP with Adam on the
// MSE loss and measures it every few epochs, AnalyzeMlp measures a stored or imported one. A
// measurement (NetworkReport) gives, for every layer, the collapse metrics of its input, of its
// pre-activation and of its activation, the correlation of W_l^T W_l with the AGOP of the
// sub-network from layer l (the neural feature ansatz) and the top singular values of W_l.
#ifndef DRFM_CORE_MLP_H_
#define DRFM_CORE_MLP_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/dataset.h"
#include "core/estimate.h"
#include "core/fit.h"
#include "core/mlp_config.h"
#include "core/mlp_model.h"
#include "core/report.h"

namespace drfm::core {

// How many singular values of W_l a layer report carries (fewer when W_l is smaller).
inline constexpr int kMlpTopSingularValues = 10;

// Measurements of one layer l (1-based; l = L+1 is the output layer).
struct NetworkLayerReport {
  int layer = 0;
  bool output = false;    // the output layer W_{L+1}: no `left`
  CollapseMetrics none;   // of h_{l-1}, the layer's input
  CollapseMetrics right;  // of W_l h_{l-1}, the pre-activation
  CollapseMetrics left;   // of ReLU(W_l h_{l-1}) = h_l; not set for the output layer
  // Pearson correlation of the entries of W_l^T W_l and AGOP_l^{1/2} (DNN.md), and of W_l^T W_l
  // and AGOP_l itself. NaN when undefined (a 1-column input or a constant Gram matrix).
  double nfa_correlation = 0;
  double nfa_correlation_raw = 0;
  std::vector<double> top_singular_values;  // of W_l, descending, at most kMlpTopSingularValues

  bool has_left() const { return !output; }
};

// One measurement of the network. A collapse metric that is undefined for a degenerate
// representation (every class mean equal, e.g. a layer whose ReLUs are all off) is NaN.
struct NetworkReport {
  int epoch = 0;              // epochs completed (0 = the initialization, and for AnalyzeMlp)
  double train_loss = 0;      // MSE vs the +-1 targets on the training rows (AnalyzeMlp: the data)
  double train_accuracy = 0;  // argmax accuracy on the same rows
  bool has_test = false;
  double test_loss = 0;                    // on the test rows; 0 without them
  double test_accuracy = 0;                // 0 without test rows
  std::vector<NetworkLayerReport> layers;  // layers 1 .. L+1
  double seconds = 0;                      // wall time of this measurement
};

enum class MlpPhase { kTrain, kMeasure };

// Where a fit or an analysis is, for progress displays.
struct MlpProgress {
  MlpPhase phase = MlpPhase::kTrain;
  int epoch = 0;  // epochs completed
  // kMeasure: the layer (1..L+1) being measured, or 0 during the AGOP sweep shared by all layers.
  // kTrain: 0.
  int layer = 0;
  // kTrain: fraction of all training epochs done; kMeasure: fraction of this measurement done.
  double fraction = 0;
};

// Receives a fit's (or analysis') progress; its return values can stop it. Called on the fitting
// thread only: OnProgress between minibatches (at most every 50 ms) and between the blocks of a
// measurement, OnReport after each measurement.
class MlpObserver {
 public:
  enum class Action { kContinue, kStop };
  virtual ~MlpObserver() = default;
  virtual Action OnReport(const NetworkReport& report) { return Action::kContinue; }
  virtual Action OnProgress(const MlpProgress& progress) { return Action::kContinue; }
};

struct MlpFitResult {
  MlpModel model;
  std::vector<NetworkReport> reports;  // in epoch order
  double seconds = 0;
};

// The epochs FitMlp measures at: 0, measure_every, 2 measure_every, ... and always `epochs`
// (measure_every 0: only `epochs`).
std::vector<int> MlpMeasurementEpochs(const MlpConfig& config);

// Trains an MLP (DNN.md) on `train` and measures it on the training rows (accuracy and loss also
// on `test` when it is not null) at MlpMeasurementEpochs(config); each report goes to the
// observer as soon as it is made. Initialization: W_1..W_L Xavier-uniform times init_gain,
// W_{L+1} U(+-1/sqrt(width)), drawn in that order (row-major) from Random(seed), which then
// shuffles the rows at every epoch. Inputs are standardized with the training statistics (zero
// std -> 1) and row-normalized as the config says; the statistics are stored in the model.
// Errors: InvalidArgument for a bad config or data (Validate, ValidateTrainingSet, test columns
// that differ from train's, test labels outside the training classes); Cancelled when the
// observer asks to stop; FailedPrecondition when the loss becomes NaN or infinite (the learning
// rate is too high). Reproducible bit for bit for a config, data and thread count.
absl::StatusOr<MlpFitResult> FitMlp(const Dataset& train, const Dataset* test,
                                    const MlpConfig& config, MlpObserver* observer,
                                    const FitOptions& options = {});

// Cost model of an MLP fit, from the config and the data's shape alone, so that a server can
// admit or refuse a job before it runs.
struct MlpFitEstimate {
  // Bytes allocated at the peak on top of the input datasets: prepared inputs and targets,
  // weights with their Adam moments and gradients, and the measurement's N x k representations,
  // AGOP sums (double) and eigendecomposition scratch.
  double peak_bytes = 0;
  double train_flops = 0;    // all epochs: forward, backward and Adam
  double measure_flops = 0;  // all measurements together
  double flops = 0;          // train_flops + measure_flops
  int measurements = 0;      // MlpMeasurementEpochs(config).size()
};

// InvalidArgument for a bad config or shape (non-positive sizes, fewer than 2 classes).
absl::StatusOr<MlpFitEstimate> EstimateMlpFit(const MlpConfig& config, const FitShape& shape);

// The cost of AnalyzeMlp of a network with input `cols`, hidden widths `layer_dims` and
// `num_classes` outputs on `rows` rows (measurements 1, train_flops 0). InvalidArgument for
// non-positive sizes.
absl::StatusOr<MlpFitEstimate> EstimateMlpAnalysis(int64_t rows, int64_t cols,
                                                   const std::vector<int64_t>& layer_dims,
                                                   int num_classes);

// One measurement of `model` on `data` (epoch 0, no test; train_* are about `data`), with the
// model's own input preparation. The observer (optional) gets OnProgress only; the report is the
// result. InvalidArgument when the data is invalid, its column count differs from the model's
// input_dim, a label is outside the model's classes, or one of the model's classes has no rows
// (the collapse metrics need every class); Cancelled when the observer asks to stop.
absl::StatusOr<NetworkReport> AnalyzeMlp(const MlpModel& model, const Dataset& data,
                                         MlpObserver* observer = nullptr,
                                         const FitOptions& options = {});

}  // namespace drfm::core

#endif  // DRFM_CORE_MLP_H_
