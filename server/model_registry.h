// Stored models as the prediction path sees them: a small LRU cache of deserialized models (Deep
// RFM layer stacks and MLPs) in front of the Store, and the request-level logic of Predict,
// ExportModel and ImportModel (validation, shape checks, conversion of the wire format),
// independent of gRPC.
#ifndef DRFM_SERVER_MODEL_REGISTRY_H_
#define DRFM_SERVER_MODEL_REGISTRY_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/mlp_model.h"
#include "core/model.h"
#include "drfm/v1/models.pb.h"
#include "server/store.h"

namespace drfm::server {

// A model ready to predict: its stored description and the immutable core model, exactly one of
// `rfm` (meta.kind DEEP_RFM) and `mlp` (meta.kind MLP).
struct LoadedModel {
  v1::Model meta;
  std::shared_ptr<const core::DeepRfmModel> rfm;
  std::shared_ptr<const core::MlpModel> mlp;
};

struct ModelRegistryOptions {
  int cache_capacity = 8;                  // models kept deserialized in memory
  int64_t max_rows_per_request = 1 << 20;  // rows one Predict request may carry
  int64_t max_import_bytes = int64_t{1} << 30;  // size of one ImportModel file
};

// Thread-safe. Loading a model that is not cached happens outside the lock; two concurrent first
// loads of the same model may both deserialize it (the second result is dropped).
class ModelRegistry {
 public:
  ModelRegistry(Store* store, ModelRegistryOptions options);

  // The model `name` at `version` (0 = latest). NotFound for an unknown name;
  // FailedPrecondition for a version the name does not have (API.md); DataLoss for a corrupt file.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Load(const std::string& name, int64_t version);

  // Labels (and scores, or the representation after `layer`) for the request's rows.
  // InvalidArgument for a missing model name, rows/cols out of range, a features payload whose
  // size is not rows*cols*4, non-finite values, a column count other than the model's input
  // dimension (the message gives the expected shape) or a layer out of range; errors of Load.
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);

  // The model's safetensors bytes with its description (DNN.md's layout for an MLP). Errors of
  // Load.
  absl::StatusOr<std::pair<v1::Model, std::string>> Export(const std::string& name, int64_t version);

  // OK when `header` can start an import: a valid name, 0 <= size_bytes <= max_import_bytes, and
  // a sha256 (when set) of 64 hex digits. InvalidArgument naming the field otherwise.
  absl::Status ValidateImportHeader(const v1::ImportModelHeader& header) const;

  // Stores the MLP in the safetensors file `bytes` as the next version of header.name and
  // returns it (kind MLP, no job_id or mlp_config). Checks in this order: the header
  // (ValidateImportHeader); the size against header.size_bytes when it is not 0
  // (InvalidArgument: the file was cut short or is longer); the SHA-256 against header.sha256
  // when set (DataLoss); the file itself (core::MlpModel::ImportSafetensors: InvalidArgument
  // naming the tensor or field, e.g. shapes that do not chain, a non-F32 dtype, non-finite
  // values, data offsets outside the file). Nothing is stored unless every check passes; the
  // store writes the version atomically.
  absl::StatusOr<v1::Model> Import(const v1::ImportModelHeader& header, std::string_view bytes);

  const ModelRegistryOptions& options() const { return options_; }

  // Drops cached copies of `name` (all versions).
  void Evict(const std::string& name);

 private:
  Store* store_;
  ModelRegistryOptions options_;
  absl::Mutex mu_;
  // Most recently used first; key "name@version".
  std::list<std::pair<std::string, std::shared_ptr<const LoadedModel>>> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_MODEL_REGISTRY_H_
