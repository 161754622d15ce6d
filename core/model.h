// The trained Deep RFM "layer stack" (DEEP_RFM.md, "Readout and prediction"): standardization
// statistics, each layer's AGOP projection and random feature map, and the readout kernel
// machine. Immutable once built; predicts labels and scores, returns the representation after any
// layer, and (de)serializes to a versioned, checksummed binary format and to safetensors.
#ifndef DRFM_CORE_MODEL_H_
#define DRFM_CORE_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "core/config.h"
#include "core/features.h"
#include "core/kernels.h"

namespace drfm::core {

template <typename T>
struct LayerParams {
  RowMatrix<T> projection;  // S = M^p, d x d
  FeatureMapParams<T> map;  // Phi: d -> D
};

// Everything a prediction needs, in the fit's precision T.
template <typename T>
struct ModelParams {
  Eigen::Index input_dim = 0;
  int num_classes = 0;
  bool standardize = false;
  Vector<T> mean;  // per input feature (standardize only)
  Vector<T> std;   // per input feature, zero std stored as 1 (standardize only)
  std::vector<LayerParams<T>> layers;
  KernelType kernel = KernelType::kLaplace;
  double bandwidth = 1;
  RowMatrix<T> readout_x;      // row-normalized X_{L+1}, n x D
  Vector<T> readout_x_sq;      // its squared row norms (derived, not serialized)
  RowMatrix<T> readout_alpha;  // n x C
};

// The transforms shared by the fit and by prediction, so that both compute bit-identical results
// on the same rows.
// Input rows (float32, as the user gives them) converted to T and standardized.
template <typename T>
RowMatrix<T> PrepareInput(const ModelParams<T>& params, const RowMatrixF& x);
// projected = x S and features = Phi(projected), for `x` already row-normalized.
template <typename T>
void ApplyLayer(const LayerParams<T>& layer, const RowMatrix<T>& x, RowMatrix<T>* projected,
                RowMatrix<T>* features);

struct Prediction {
  std::vector<int32_t> labels;  // argmax of scores, per row
  RowMatrixF scores;            // rows x C
};

// Thread-safe (immutable; copies share the parameters).
class DeepRfmModel {
 public:
  template <typename T>
  DeepRfmModel(FitConfig config, std::shared_ptr<const ModelParams<T>> params)
      : config_(std::move(config)), params_(std::move(params)) {}

  const FitConfig& config() const { return config_; }
  Precision precision() const;
  int64_t input_dim() const;
  int num_classes() const;
  int num_layers() const;
  // Rows of the readout's training set.
  int64_t readout_rows() const;

  // Labels and scores for `x` (rows x input_dim, same units as the training data). InvalidArgument
  // when the column count differs from input_dim (the message gives the expected shape) or a value
  // is not finite.
  absl::StatusOr<Prediction> Predict(const RowMatrixF& x) const;

  // The representation of `x` after layer `layer` (1..num_layers): Phi_l(...) before the next row
  // normalization. InvalidArgument for a layer out of range or bad input as in Predict.
  absl::StatusOr<RowMatrixF> Representation(const RowMatrixF& x, int layer) const;

  // The native format: magic "DRFMMODL", format version, a JSON header (config, shapes, tensor
  // table), little-endian tensor data, and a CRC-32 of everything before it.
  std::string Serialize() const;
  // DataLoss when the checksum does not match or the file is truncated; InvalidArgument when the
  // header is malformed or from an unknown format version.
  static absl::StatusOr<DeepRfmModel> Deserialize(std::string_view bytes);

  // A safetensors file of every tensor (layers.<i>.projection, layers.<i>.weights,
  // layers.<i>.bias, input.mean, input.std, readout.x, readout.alpha) with the config in
  // __metadata__.
  std::string ExportSafetensors() const;

  // Typed access for code that works in the fit's precision.
  template <typename T>
  const ModelParams<T>* params() const {
    auto p = std::get_if<std::shared_ptr<const ModelParams<T>>>(&params_);
    return p ? p->get() : nullptr;
  }

 private:
  FitConfig config_;
  std::variant<std::shared_ptr<const ModelParams<float>>, std::shared_ptr<const ModelParams<double>>>
      params_;
};

// Config <-> JSON text, used by the model formats (and handy for logs).
std::string FitConfigToJson(const FitConfig& config);
absl::StatusOr<FitConfig> FitConfigFromJson(std::string_view json);

}  // namespace drfm::core

#endif  // DRFM_CORE_MODEL_H_
