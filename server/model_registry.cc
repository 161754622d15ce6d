#include "server/model_registry.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace drfm::server {
namespace {

std::string CacheKey(const std::string& name, int64_t version) { return absl::StrCat(name, "@", version); }

}  // namespace

ModelRegistry::ModelRegistry(Store* store, ModelRegistryOptions options)
    : store_(store), options_(options) {}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelRegistry::Load(const std::string& name,
                                                                       int64_t version) {
  if (name.empty()) return absl::InvalidArgumentError("model name is required");
  DRFM_RETURN_IF_ERROR(ValidateName("model name", name));
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model version ", version, " is invalid: use 1 or more, or leave it unset for the latest"));
  }
  absl::StatusOr<v1::Model> meta = store_->GetModel(name, version);
  if (!meta.ok()) {
    if (absl::IsNotFound(meta.status()) && version > 0 && store_->GetModel(name, 0).ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", name, " has no version ", version, "; list its versions with ListModels"));
    }
    return meta.status();
  }
  const std::string key = CacheKey(name, meta->version());
  {
    absl::MutexLock lock(&mu_);
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if (it->first == key && it->second->meta.sha256() == meta->sha256()) {
        cache_.splice(cache_.begin(), cache_, it);
        return it->second;
      }
    }
  }
  DRFM_ASSIGN_OR_RETURN(std::string blob, store_->ReadModelBlob(name, meta->version()));
  if (meta->kind() != v1::Model::DEEP_RFM) {
    return absl::UnimplementedError(absl::StrCat("model ", name, " is of a kind this server cannot load yet"));
  }
  absl::StatusOr<core::DeepRfmModel> model = core::DeepRfmModel::Deserialize(blob);
  if (!model.ok()) {
    return absl::DataLossError(absl::StrCat("stored model ", key, " cannot be read: ", model.status().message()));
  }
  auto loaded = std::make_shared<LoadedModel>();
  loaded->meta = *meta;
  loaded->rfm = std::make_shared<const core::DeepRfmModel>(*std::move(model));
  absl::MutexLock lock(&mu_);
  cache_.remove_if([&key](const auto& entry) { return entry.first == key; });
  cache_.emplace_front(key, loaded);
  while (static_cast<int>(cache_.size()) > options_.cache_capacity) cache_.pop_back();
  return std::shared_ptr<const LoadedModel>(std::move(loaded));
}

absl::StatusOr<v1::PredictResponse> ModelRegistry::Predict(const v1::PredictRequest& request) {
  if (request.rows() < 1 || request.rows() > options_.max_rows_per_request) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rows = %d is out of range: send 1 to %d rows per request (PredictStream for more)",
        request.rows(), options_.max_rows_per_request));
  }
  if (request.cols() < 1 || request.cols() > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(absl::StrFormat("cols = %d is out of range", request.cols()));
  }
  const uint64_t expected = static_cast<uint64_t>(request.rows()) * static_cast<uint64_t>(request.cols()) * 4;
  if (request.features().size() != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "features has %d bytes but rows x cols x 4 = %d x %d x 4 = %d (float32 little-endian, row-major)",
        request.features().size(), request.rows(), request.cols(), expected));
  }
  if (request.layer() < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("layer = %d is invalid: 0 for labels, or 1..L", request.layer()));
  }
  DRFM_ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> loaded,
                        Load(request.model(), request.has_version() ? request.version() : 0));
  const core::DeepRfmModel& model = *loaded->rfm;
  if (request.cols() != model.input_dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model %s v%d expects rows x %d features, got rows x %d", loaded->meta.name(),
        loaded->meta.version(), model.input_dim(), request.cols()));
  }
  core::RowMatrixF x(request.rows(), request.cols());
  std::memcpy(x.data(), request.features().data(), expected);
  v1::PredictResponse response;
  response.mutable_model()->set_name(loaded->meta.name());
  response.mutable_model()->set_version(loaded->meta.version());
  response.set_rows(request.rows());
  response.set_classes(model.num_classes());
  if (request.layer() > 0) {
    DRFM_ASSIGN_OR_RETURN(core::RowMatrixF h, model.Representation(x, request.layer()));
    response.set_representation_cols(h.cols());
    response.set_representation(reinterpret_cast<const char*>(h.data()), h.size() * sizeof(float));
    return response;
  }
  DRFM_ASSIGN_OR_RETURN(core::Prediction prediction, model.Predict(x));
  response.mutable_labels()->Add(prediction.labels.begin(), prediction.labels.end());
  if (request.return_scores()) {
    response.mutable_scores()->Add(prediction.scores.data(), prediction.scores.data() + prediction.scores.size());
  }
  return response;
}

absl::StatusOr<std::pair<v1::Model, std::string>> ModelRegistry::Export(const std::string& name,
                                                                         int64_t version) {
  DRFM_ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> loaded, Load(name, version));
  return std::make_pair(loaded->meta, loaded->rfm->ExportSafetensors());
}

void ModelRegistry::Evict(const std::string& name) {
  const std::string prefix = name + "@";
  absl::MutexLock lock(&mu_);
  cache_.remove_if([&prefix](const auto& entry) { return entry.first.rfind(prefix, 0) == 0; });
}

}  // namespace drfm::server
