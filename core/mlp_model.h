// A trained or imported MLP (DNN.md): its input preparation (standardization statistics and
// row normalization) and the weights W_1 .. W_{L+1}. Immutable once built; predicts labels and
// scores, returns the representation h_l after any layer, and converts to and from the
// safetensors layout of DNN.md ("Import") and a checksummed storage format.
#ifndef DRFM_CORE_MLP_MODEL_H_
#define DRFM_CORE_MLP_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/mlp_config.h"
#include "core/mlp_net.h"
#include "core/model.h"
#include "core/types.h"

namespace drfm::core {

// Largest safetensors header the importer accepts (the limit of the reference implementation).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// Most weight tensors (L + 1) an imported MLP may have.
inline constexpr int kMaxMlpLayers = 1024;

// Everything a prediction needs.
struct MlpParams {
  bool standardize = false;   // (x - mean) / std before the network
  Vector<float> mean;         // length input_dim (standardize only)
  Vector<float> std;          // length input_dim, every entry > 0 (standardize only)
  bool row_normalize = true;  // then every row scaled to unit Euclidean norm (zero rows stay 0)
  MlpWeights<float> weights;  // W_1 .. W_{L+1}, each out x in
};

// OK when `params` describe a usable MLP: at least one weight, every weight with both dimensions
// >= 1, the shapes chaining, at least 2 outputs, every value finite, and (standardize) mean and
// std of length input_dim with std > 0. InvalidArgument naming the first problem otherwise.
absl::Status ValidateMlpParams(const MlpParams& params);

// x (float32, as the user gives it) standardized and row-normalized as `params` say: h_0.
// Preconditions: x.cols() == the input dimension. The fit and prediction share it, so both
// compute bit-identical results on the same rows.
RowMatrixF PrepareMlpInput(const MlpParams& params, const RowMatrixF& x);

// Thread-safe (immutable; copies share the parameters).
class MlpModel {
 public:
  // A model of `params`, with the config of the fit that trained it (nullopt when imported).
  // InvalidArgument when ValidateMlpParams fails.
  static absl::StatusOr<MlpModel> Create(MlpParams params,
                                         std::optional<MlpConfig> config = std::nullopt);

  const MlpParams& params() const { return *params_; }
  const std::optional<MlpConfig>& config() const { return config_; }
  int64_t input_dim() const { return params_->weights.front().cols(); }
  int num_classes() const { return static_cast<int>(params_->weights.back().rows()); }
  // Hidden layers L (0 for a linear map); the output layer is L + 1.
  int depth() const { return static_cast<int>(params_->weights.size()) - 1; }
  // Width of h_l for l = 1..L (element l-1).
  std::vector<int64_t> layer_dims() const;

  // Labels (argmax of the scores, ties to the lower class) and scores f(x) (rows x C) for `x`
  // (rows x input_dim, in the units of the training data). InvalidArgument when the column count
  // differs from input_dim (the message gives the expected shape) or a value is not finite
  // (naming its row and column).
  absl::StatusOr<Prediction> Predict(const RowMatrixF& x) const;

  // h_l of `x` for `layer` l in 0..depth(): 0 is the prepared input, l >= 1 the post-activation
  // ReLU(W_l h_{l-1}). InvalidArgument for a layer out of range or bad input as in Predict.
  absl::StatusOr<RowMatrixF> Representation(const RowMatrixF& x, int layer) const;

  // The safetensors layout of DNN.md: layers.<l-1>.weight = W_l (F32, out x in), input.mean and
  // input.std when the model standardizes, and __metadata__ {"format": "drfm-mlp",
  // "row_normalize": "true"|"false", "config": the MlpConfig JSON when trained here}. The header
  // is padded with spaces to a multiple of 8 bytes; tensors follow in the order input.mean,
  // input.std, layers.0 ... layers.L. ImportSafetensors of the result gives back the same model
  // bit for bit.
  std::string ExportSafetensors() const;

  // A model from a safetensors file in the layout above. Without input.mean and input.std the
  // inputs are used as they come (standardize false); row_normalize defaults to "true". The
  // config is read back only from files whose __metadata__ format is "drfm-mlp".
  // InvalidArgument, with a message naming the tensor or field, when: the file is shorter than 8
  // bytes; the header length exceeds kMaxSafetensorsHeaderBytes or the file; the header is not a
  // JSON object; a tensor entry lacks a string dtype, an integer shape or two data_offsets; a
  // dtype is not F32; data_offsets are reversed, outside the data, disagree with the shape, or
  // the tensors overlap or leave bytes of the data uncovered; a tensor name is not
  // layers.<i>.weight, input.mean or input.std; layers.0.weight is missing or the indices have a
  // gap; a weight is not 2-D or has an empty dimension; the shapes do not chain; the last layer
  // has fewer than 2 outputs; only one of input.mean / input.std is present or either is not 1-D
  // of length d; a value is NaN or infinite; a std entry is <= 0; __metadata__ is not an object of
  // strings; row_normalize is neither "true" nor "false"; a drfm-mlp config is invalid.
  static absl::StatusOr<MlpModel> ImportSafetensors(std::string_view bytes);

  // Storage format: magic "DRFMMLP\0", u32 format version (1), u32 reserved (0), the
  // ExportSafetensors bytes, and a CRC-32 (zlib) of everything before it, all little-endian.
  std::string Serialize() const;
  // DataLoss when the file is truncated or the checksum does not match; InvalidArgument for a bad
  // magic, an unknown format version, or contents ImportSafetensors rejects.
  static absl::StatusOr<MlpModel> Deserialize(std::string_view bytes);

 private:
  MlpModel(std::shared_ptr<const MlpParams> params, std::optional<MlpConfig> config)
      : params_(std::move(params)), config_(std::move(config)) {}

  std::shared_ptr<const MlpParams> params_;
  std::optional<MlpConfig> config_;
};

}  // namespace drfm::core

#endif  // DRFM_CORE_MLP_MODEL_H_
