// Stored models as the prediction path sees them: a small LRU cache of deserialized models in
// front of the Store, and the request-level logic of Predict and ExportModel (validation, shape
// checks, conversion of the wire format), independent of gRPC.
#ifndef DRFM_SERVER_MODEL_REGISTRY_H_
#define DRFM_SERVER_MODEL_REGISTRY_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/model.h"
#include "drfm/v1/models.pb.h"
#include "server/store.h"

namespace drfm::server {

// A model ready to predict: its stored description and the immutable core model.
struct LoadedModel {
  v1::Model meta;
  std::shared_ptr<const core::DeepRfmModel> rfm;
};

struct ModelRegistryOptions {
  int cache_capacity = 8;                 // models kept deserialized in memory
  int64_t max_rows_per_request = 1 << 20; // rows one Predict request may carry
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

  // The model's safetensors bytes with its description. Errors of Load.
  absl::StatusOr<std::pair<v1::Model, std::string>> Export(const std::string& name, int64_t version);

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
