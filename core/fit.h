// FitDeepRfm: builds a Deep RFM layer by layer (DEEP_RFM.md), reporting each layer's collapse
// metrics to an observer as it ends, and returns the trained layer stack.
#ifndef DRFM_CORE_FIT_H_
#define DRFM_CORE_FIT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/report.h"

namespace drfm::core {

// Receives the fit's progress; its return values can stop the fit (like Ceres'
// IterationCallback). Called on the fitting thread only, between blocks of every long loop.
class FitObserver {
 public:
  enum class Action { kContinue, kStop };
  virtual ~FitObserver() = default;
  // A layer (1-based; L+1 = readout) has ended.
  virtual Action OnLayer(const LayerReport& report) { return Action::kContinue; }
  // `fraction` (0..1) of `phase` of `layer` is done.
  virtual Action OnProgress(int layer, Phase phase, double fraction) { return Action::kContinue; }
};

// How to run a fit (not what to fit): the knobs that do not change the result beyond thread-count
// dependent round-off.
struct FitOptions {
  int threads = 0;  // OpenMP threads for this fit; 0 = the OpenMP default
};

struct FitResult {
  DeepRfmModel model;
  std::vector<LayerReport> reports;  // layers 1..L, then the readout (L+1)
  double seconds = 0;
  double flops = 0;
};

// Fits a Deep RFM on `train`, measuring on `test` too when it is not null.
// Errors: InvalidArgument for a bad config or data (Validate, ValidateTrainingSet, test columns
// that differ from train's, test labels outside the training classes, agop_samples > rows);
// Cancelled when the observer asks to stop; FailedPrecondition when the kernel system stays
// singular after raising the ridge (the message says which ridge to try); ResourceExhausted when
// the n x n kernel cannot be allocated.
// Reproducible bit for bit for a given config, data and thread count.
absl::StatusOr<FitResult> FitDeepRfm(const Dataset& train, const Dataset* test,
                                     const FitConfig& config, FitObserver* observer,
                                     const FitOptions& options = {});

}  // namespace drfm::core

#endif  // DRFM_CORE_FIT_H_
