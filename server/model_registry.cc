#include "server/model_registry.h"

#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "server/hash.h"

namespace drfm::server {
namespace {

std::string CacheKey(const std::string& name, int64_t version) { return absl::StrCat(name, "@", version); }

// The prediction interface both kinds of model share.
int64_t InputDim(const LoadedModel& m) { return m.mlp ? m.mlp->input_dim() : m.rfm->input_dim(); }
int NumClasses(const LoadedModel& m) { return m.mlp ? m.mlp->num_classes() : m.rfm->num_classes(); }
int NumLayers(const LoadedModel& m) { return m.mlp ? m.mlp->depth() : m.rfm->num_layers(); }

absl::StatusOr<core::Prediction> PredictRows(const LoadedModel& m, const core::RowMatrixF& x) {
  return m.mlp ? m.mlp->Predict(x) : m.rfm->Predict(x);
}

absl::StatusOr<core::RowMatrixF> RepresentRows(const LoadedModel& m, const core::RowMatrixF& x,
                                               int layer) {
  return m.mlp ? m.mlp->Representation(x, layer) : m.rfm->Representation(x, layer);
}

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
  auto loaded = std::make_shared<LoadedModel>();
  loaded->meta = *meta;
  if (meta->kind() == v1::Model::DEEP_RFM) {
    absl::StatusOr<core::DeepRfmModel> model = core::DeepRfmModel::Deserialize(blob);
    if (!model.ok()) {
      return absl::DataLossError(absl::StrCat("stored model ", key, " cannot be read: ", model.status().message()));
    }
    loaded->rfm = std::make_shared<const core::DeepRfmModel>(*std::move(model));
  } else if (meta->kind() == v1::Model::MLP) {
    absl::StatusOr<core::MlpModel> model = core::MlpModel::Deserialize(blob);
    if (!model.ok()) {
      return absl::DataLossError(absl::StrCat("stored MLP ", key, " cannot be read: ", model.status().message()));
    }
    loaded->mlp = std::make_shared<const core::MlpModel>(*std::move(model));
  } else {
    return absl::DataLossError(absl::StrCat("stored model ", key, " has unknown kind ", meta->kind()));
  }
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
  const LoadedModel& model = *loaded;
  if (request.cols() != InputDim(model)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model %s v%d expects rows x %d features, got rows x %d", loaded->meta.name(),
        loaded->meta.version(), InputDim(model), request.cols()));
  }
  if (request.layer() > NumLayers(model)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer = %d is out of range: model %s v%d has %d layers; use 0 for labels or 1..%d for "
        "the representation after a layer",
        request.layer(), loaded->meta.name(), loaded->meta.version(), NumLayers(model),
        NumLayers(model)));
  }
  core::RowMatrixF x(request.rows(), request.cols());
  std::memcpy(x.data(), request.features().data(), expected);
  v1::PredictResponse response;
  response.mutable_model()->set_name(loaded->meta.name());
  response.mutable_model()->set_version(loaded->meta.version());
  response.set_rows(request.rows());
  response.set_classes(NumClasses(model));
  if (request.layer() > 0) {
    DRFM_ASSIGN_OR_RETURN(core::RowMatrixF h, RepresentRows(model, x, request.layer()));
    response.set_representation_cols(h.cols());
    response.set_representation(reinterpret_cast<const char*>(h.data()), h.size() * sizeof(float));
    return response;
  }
  DRFM_ASSIGN_OR_RETURN(core::Prediction prediction, PredictRows(model, x));
  response.mutable_labels()->Add(prediction.labels.begin(), prediction.labels.end());
  if (request.return_scores()) {
    response.mutable_scores()->Add(prediction.scores.data(), prediction.scores.data() + prediction.scores.size());
  }
  return response;
}

absl::StatusOr<std::pair<v1::Model, std::string>> ModelRegistry::Export(const std::string& name,
                                                                         int64_t version) {
  DRFM_ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> loaded, Load(name, version));
  return std::make_pair(loaded->meta, loaded->mlp ? loaded->mlp->ExportSafetensors()
                                                  : loaded->rfm->ExportSafetensors());
}

absl::Status ModelRegistry::ValidateImportHeader(const v1::ImportModelHeader& header) const {
  if (header.name().empty()) {
    return absl::InvalidArgumentError("header.name is required: the model name to store the MLP as");
  }
  DRFM_RETURN_IF_ERROR(ValidateName("header.name", header.name()));
  if (header.size_bytes() < 0 || header.size_bytes() > options_.max_import_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "header.size_bytes = %d is out of range: use 0 (not checked) to this server's import limit "
        "of %d bytes",
        header.size_bytes(), options_.max_import_bytes));
  }
  if (header.has_sha256()) {
    bool hex = header.sha256().size() == 64;
    for (char c : header.sha256()) hex = hex && absl::ascii_isxdigit(c);
    if (!hex) {
      return absl::InvalidArgumentError(
          "header.sha256 must be 64 hexadecimal digits (the SHA-256 of the whole file), or unset");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Model> ModelRegistry::Import(const v1::ImportModelHeader& header,
                                                std::string_view bytes) {
  DRFM_RETURN_IF_ERROR(ValidateImportHeader(header));
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size > options_.max_import_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the file has %d bytes, more than this server's import limit of %d bytes", size,
        options_.max_import_bytes));
  }
  if (header.size_bytes() > 0 && size != header.size_bytes()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the file has %d bytes but header.size_bytes says %d: the upload %s", size,
        header.size_bytes(), size < header.size_bytes() ? "was cut short" : "has extra bytes"));
  }
  if (header.has_sha256()) {
    const std::string actual = Sha256Hex(bytes);
    if (actual != absl::AsciiStrToLower(header.sha256())) {
      return absl::DataLossError(absl::StrCat(
          "the file's SHA-256 is ", actual, " but header.sha256 is ",
          absl::AsciiStrToLower(header.sha256()),
          ": the file was corrupted or truncated in transfer; send it again"));
    }
  }
  absl::StatusOr<core::MlpModel> model = core::MlpModel::ImportSafetensors(bytes);
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot import the file as an MLP (DNN.md: layers.<i>.weight F32 out x in, optional "
        "input.mean and input.std): ", model.status().message()));
  }
  v1::Model meta;
  meta.set_name(header.name());
  meta.set_kind(v1::Model::MLP);
  meta.set_input_dim(model->input_dim());
  meta.set_classes(model->num_classes());
  meta.set_layers(model->depth());
  for (int64_t dim : model->layer_dims()) meta.add_layer_dims(dim);
  meta.set_standardize(model->params().standardize);
  return store_->PutModel(meta, model->Serialize());
}

void ModelRegistry::Evict(const std::string& name) {
  const std::string prefix = name + "@";
  absl::MutexLock lock(&mu_);
  cache_.remove_if([&prefix](const auto& entry) { return entry.first.rfind(prefix, 0) == 0; });
}

}  // namespace drfm::server
