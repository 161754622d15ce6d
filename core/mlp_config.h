// The MLP fit configuration of DNN.md (the paper's training settings as defaults), its single
// validation point (MlpConfig::Validate) and its JSON form, used by the MLP model formats.
#ifndef DRFM_CORE_MLP_CONFIG_H_
#define DRFM_CORE_MLP_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace drfm::core {

// Upper bounds that keep a single MLP fit's cost sane (the ranges of drfm.v1.MlpConfig); the
// server may set tighter ones.
inline constexpr int kMaxMlpDepth = 32;
inline constexpr int kMaxMlpWidth = 16384;
inline constexpr int kMaxMlpEpochs = 100000;
inline constexpr int kMaxMlpBatchSize = 1 << 20;

// Configuration of one MLP fit: depth hidden bias-free ReLU layers of equal width, MSE loss on
// +-1 targets, Adam (beta 0.9/0.999, eps 1e-8) with seeded shuffling. A plain value type.
struct MlpConfig {
  int depth = 3;           // L, hidden layers (the output layer L+1 is not counted)
  int width = 512;         // k, width of every hidden layer
  double init_gain = 0.1;  // g of the hidden Xavier-uniform init U(+-g sqrt(6/(fan_in+fan_out)))
  double learning_rate = 5e-5;  // Adam step size
  int epochs = 250;             // 0 measures the initialization only
  int batch_size = 128;         // rows per minibatch; more than the training rows = full batch
  int measure_every = 10;       // a measurement every this many epochs (and at 0 and the end);
                                // 0 = only after the last epoch
  double weight_decay = 0;      // L2 coefficient added to the gradient (torch.optim.Adam)
  uint64_t seed = 0;            // seeds the initialization and the shuffling
  bool standardize = true;      // inputs standardized with the training statistics
  bool row_normalize = true;    // then every input row scaled to unit norm

  // OK when every field is in range; InvalidArgument naming the field, its value and what is
  // allowed otherwise.
  absl::Status Validate() const;
};

// Config <-> JSON text (every field, by its name above). FromJson: fields absent from the object
// keep their defaults; InvalidArgument when the text is not a JSON object, a field has the wrong
// type, or the result fails Validate().
std::string MlpConfigToJson(const MlpConfig& config);
absl::StatusOr<MlpConfig> MlpConfigFromJson(std::string_view json);

}  // namespace drfm::core

#endif  // DRFM_CORE_MLP_CONFIG_H_
