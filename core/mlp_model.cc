#include "core/mlp_model.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/checksum.h"
#include "core/kernels.h"
#include "core/status.h"

namespace drfm::core {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the model formats assume little-endian");

using Json = nlohmann::json;

constexpr char kMagic[8] = {'D', 'R', 'F', 'M', 'M', 'L', 'P', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kPrefixBytes = sizeof(kMagic) + 4 + 4;
constexpr char kFormatName[] = "drfm-mlp";

std::string WeightName(size_t index) { return absl::StrCat("layers.", index, ".weight"); }

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// First non-finite entry of `m`, as "[r, c]" text, or empty when all are finite.
std::string FirstNonFinite(const Eigen::Ref<const RowMatrixF>& m) {
  if (m.allFinite()) return "";
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      if (!std::isfinite(m(i, j))) return absl::StrFormat("[%d, %d]", i, j);
    }
  }
  return "";
}

absl::Status CheckInput(const MlpParams& p, const RowMatrixF& x) {
  const int64_t d = p.weights.front().cols();
  if (x.cols() != d) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "input has %d columns but the model expects rows x %d features", x.cols(), d));
  }
  if (!x.allFinite()) {
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      for (Eigen::Index j = 0; j < x.cols(); ++j) {
        if (!std::isfinite(x(i, j))) {
          return absl::InvalidArgumentError(
              absl::StrFormat("input row %d column %d is not a finite number", i, j));
        }
      }
    }
  }
  return absl::OkStatus();
}

// One tensor entry of a safetensors header.
struct TensorEntry {
  std::string name;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

absl::StatusOr<TensorEntry> ParseEntry(const std::string& name, const Json& value,
                                       uint64_t data_size) {
  TensorEntry e;
  e.name = name;
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: the entry of tensor ", name, " is not an object"));
  }
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: tensor ", name, " has no string dtype"));
  }
  if (dtype->get<std::string>() != "F32") {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor ", name, " has dtype ",
                                                   dtype->get<std::string>(),
                                                   "; only F32 (float32) tensors are supported"));
  }
  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: tensor ", name, " has no shape array"));
  }
  for (const Json& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: the shape of tensor ", name,
                                                     " must hold non-negative integers"));
    }
    e.shape.push_back(dim.get<uint64_t>());
  }
  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: tensor ", name,
                     " needs data_offsets [begin, end] of two non-negative integers"));
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("safetensors: data_offsets [%d, %d] of tensor %s are reversed or lie "
                        "outside the %d-byte data buffer",
                        e.begin, e.end, name, data_size));
  }
  uint64_t bytes = sizeof(float);
  for (uint64_t dim : e.shape) {
    if (__builtin_mul_overflow(bytes, dim, &bytes)) bytes = UINT64_MAX;
  }
  if (bytes != e.end - e.begin) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "safetensors: tensor %s has shape %s (%s bytes as F32) but its data_offsets span %d bytes",
        name, ShapeString(e.shape), bytes == UINT64_MAX ? "too many" : absl::StrCat(bytes),
        e.end - e.begin));
  }
  return e;
}

// The index i of "layers.<i>.weight" (decimal, no leading zeros), or -1 for another name.
int WeightIndex(const std::string& name) {
  constexpr std::string_view kPrefix = "layers.", kSuffix = ".weight";
  if (name.size() <= kPrefix.size() + kSuffix.size() ||
      name.compare(0, kPrefix.size(), kPrefix) != 0 ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
    return -1;
  }
  const std::string digits =
      name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (digits.size() > 9 || (digits.size() > 1 && digits[0] == '0') ||
      !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return -1;
  }
  int index = 0;
  if (!absl::SimpleAtoi(digits, &index)) return -1;
  return index;
}

RowMatrixF ReadTensor(std::string_view data, const TensorEntry& e, Eigen::Index rows,
                      Eigen::Index cols) {
  RowMatrixF m(rows, cols);
  if (m.size() > 0)
    std::memcpy(m.data(), data.data() + e.begin, static_cast<size_t>(m.size()) * sizeof(float));
  return m;
}

}  // namespace

absl::Status ValidateMlpParams(const MlpParams& p) {
  if (p.weights.empty()) return absl::InvalidArgumentError("the MLP has no layers");
  if (p.weights.size() > static_cast<size_t>(kMaxMlpLayers)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the MLP has %d weight layers; at most %d are supported", p.weights.size(), kMaxMlpLayers));
  }
  for (size_t l = 0; l < p.weights.size(); ++l) {
    const RowMatrixF& w = p.weights[l];
    if (w.rows() < 1 || w.cols() < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s has an empty dimension (shape [%d, %d])", WeightName(l), w.rows(), w.cols()));
    }
    if (l > 0 && w.cols() != p.weights[l - 1].rows()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s has %d input columns but %s has %d outputs; the shapes must chain "
                          "(each weight is out x in)",
                          WeightName(l), w.cols(), WeightName(l - 1), p.weights[l - 1].rows()));
    }
  }
  const int64_t outputs = p.weights.back().rows();
  if (outputs < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the last layer (%s) has %d output; a classifier needs at least 2",
                        WeightName(p.weights.size() - 1), outputs));
  }
  const int64_t d = p.weights.front().cols();
  if (p.standardize) {
    if (p.mean.size() != d || p.std.size() != d) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "input.mean and input.std must have length %d (the input dimension), not %d and %d", d,
          p.mean.size(), p.std.size()));
    }
    if (std::string at = FirstNonFinite(p.mean.transpose()); !at.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("input.mean has a non-finite value at ", at));
    }
    for (Eigen::Index j = 0; j < d; ++j) {
      if (!(std::isfinite(p.std[j]) && p.std[j] > 0)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "input.std[%d] = %g; standard deviations must be finite and > 0", j, p.std[j]));
      }
    }
  }
  for (size_t l = 0; l < p.weights.size(); ++l) {
    if (std::string at = FirstNonFinite(p.weights[l]); !at.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(WeightName(l), " has a non-finite value at ", at));
    }
  }
  return absl::OkStatus();
}

RowMatrixF PrepareMlpInput(const MlpParams& p, const RowMatrixF& x) {
  RowMatrixF h = x;
  if (p.standardize) {
    h.array().rowwise() -= p.mean.transpose().array();
    h.array().rowwise() /= p.std.transpose().array();
  }
  if (p.row_normalize) NormalizeRows<float>(h);
  return h;
}

absl::StatusOr<MlpModel> MlpModel::Create(MlpParams params, std::optional<MlpConfig> config) {
  DRFM_RETURN_IF_ERROR(ValidateMlpParams(params));
  if (!params.standardize) {
    params.mean.resize(0);
    params.std.resize(0);
  }
  return MlpModel(std::make_shared<const MlpParams>(std::move(params)), std::move(config));
}

std::vector<int64_t> MlpModel::layer_dims() const {
  std::vector<int64_t> dims;
  for (size_t l = 0; l + 1 < params_->weights.size(); ++l)
    dims.push_back(params_->weights[l].rows());
  return dims;
}

absl::StatusOr<Prediction> MlpModel::Predict(const RowMatrixF& x) const {
  DRFM_RETURN_IF_ERROR(CheckInput(*params_, x));
  const RowMatrixF h = PrepareMlpInput(*params_, x);
  Prediction out;
  out.scores = MlpForwardFrom<float>(params_->weights, 1, h);
  out.labels.resize(out.scores.rows());
  for (Eigen::Index i = 0; i < out.scores.rows(); ++i) {
    Eigen::Index best;
    out.scores.row(i).maxCoeff(&best);
    out.labels[i] = static_cast<int32_t>(best);
  }
  return out;
}

absl::StatusOr<RowMatrixF> MlpModel::Representation(const RowMatrixF& x, int layer) const {
  if (layer < 0 || layer > depth()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer %d is out of range: this MLP has representations h_0 (prepared input) .. h_%d",
        layer, depth()));
  }
  DRFM_RETURN_IF_ERROR(CheckInput(*params_, x));
  RowMatrixF h = PrepareMlpInput(*params_, x);
  RowMatrixF next;
  for (int l = 1; l <= layer; ++l) {
    next.noalias() = h * params_->weights[l - 1].transpose();
    next.array() = next.array().max(0.0f);
    h.swap(next);
  }
  return h;
}

std::string MlpModel::ExportSafetensors() const {
  const MlpParams& p = *params_;
  struct View {
    std::string name;
    std::vector<int64_t> shape;
    const float* data;
    size_t count;
  };
  std::vector<View> views;
  if (p.standardize) {
    views.push_back(
        {"input.mean", {p.mean.size()}, p.mean.data(), static_cast<size_t>(p.mean.size())});
    views.push_back({"input.std", {p.std.size()}, p.std.data(), static_cast<size_t>(p.std.size())});
  }
  for (size_t l = 0; l < p.weights.size(); ++l) {
    const RowMatrixF& w = p.weights[l];
    views.push_back({WeightName(l), {w.rows(), w.cols()}, w.data(), static_cast<size_t>(w.size())});
  }
  Json header = Json::object();
  uint64_t offset = 0;
  for (const View& v : views) {
    const uint64_t bytes = v.count * sizeof(float);
    header[v.name] = {
        {"dtype", "F32"}, {"shape", v.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  Json meta = {{"format", kFormatName}, {"row_normalize", p.row_normalize ? "true" : "false"}};
  if (config_.has_value()) meta["config"] = MlpConfigToJson(*config_);
  header["__metadata__"] = meta;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // align the data to 8 bytes
  std::string out;
  out.reserve(8 + text.size() + offset);
  AppendU64(&out, text.size());
  out += text;
  for (const View& v : views)
    out.append(reinterpret_cast<const char*>(v.data), v.count * sizeof(float));
  return out;
}

absl::StatusOr<MlpModel> MlpModel::ImportSafetensors(std::string_view bytes) {
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "safetensors: the file is %d bytes, shorter than its 8-byte header length", bytes.size()));
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("safetensors: header length %d exceeds the limit of %d bytes", header_len,
                        kMaxSafetensorsHeaderBytes));
  }
  if (header_len > bytes.size() - 8) {
    return absl::InvalidArgumentError(
        absl::StrFormat("safetensors: header length %d runs past the end of the %d-byte file",
                        header_len, bytes.size()));
  }
  const Json header = Json::parse(bytes.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded())
    return absl::InvalidArgumentError("safetensors: the header is not valid JSON");
  if (!header.is_object())
    return absl::InvalidArgumentError("safetensors: the header is not a JSON object");
  const std::string_view data = bytes.substr(8 + header_len);

  std::vector<TensorEntry> entries;
  std::map<std::string, std::string> meta;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object())
        return absl::InvalidArgumentError("safetensors: __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("safetensors: __metadata__ value of \"", m.key(), "\" is not a string"));
        }
        meta[m.key()] = m->get<std::string>();
      }
      continue;
    }
    DRFM_ASSIGN_OR_RETURN(TensorEntry e, ParseEntry(it.key(), *it, data.size()));
    entries.push_back(std::move(e));
  }

  // The tensors must tile the data buffer exactly: no overlap, no hole, nothing left over.
  std::vector<const TensorEntry*> by_offset;
  for (const TensorEntry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* e : by_offset) {
    if (e->begin < covered) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "safetensors: tensors %s and %s overlap in the data buffer", previous->name, e->name));
    }
    if (e->begin > covered) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "safetensors: bytes [%d, %d) of the data buffer belong to no tensor", covered, e->begin));
    }
    covered = e->end;
    previous = e;
  }
  if (covered != data.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "safetensors: bytes [%d, %d) at the end of the data buffer belong to no tensor", covered,
        data.size()));
  }

  std::map<int, const TensorEntry*> layers;
  const TensorEntry* mean = nullptr;
  const TensorEntry* std = nullptr;
  for (const TensorEntry& e : entries) {
    if (e.name == "input.mean") {
      mean = &e;
    } else if (e.name == "input.std") {
      std = &e;
    } else if (const int index = WeightIndex(e.name); index >= 0) {
      if (index >= kMaxMlpLayers) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "safetensors: tensor %s exceeds the limit of %d weight layers", e.name, kMaxMlpLayers));
      }
      layers[index] = &e;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: unknown tensor ", e.name,
                       "; an MLP file holds layers.<i>.weight for i = 0, 1, ... and optionally "
                       "input.mean and input.std"));
    }
  }
  if (layers.empty())
    return absl::InvalidArgumentError("safetensors: the file has no layers.0.weight");
  const int count = layers.rbegin()->first + 1;
  for (int i = 0; i < count; ++i) {
    if (layers.find(i) == layers.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("safetensors: %s is missing (the file has weights up to %s)",
                          WeightName(i), WeightName(count - 1)));
    }
  }
  for (int i = 0; i < count; ++i) {
    const TensorEntry& e = *layers[i];
    if (e.shape.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrFormat("safetensors: %s must be 2-D (out x in), but has shape %s", e.name,
                          ShapeString(e.shape)));
    }
    if (e.shape[0] == 0 || e.shape[1] == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "safetensors: %s has an empty dimension (shape %s)", e.name, ShapeString(e.shape)));
    }
    if (i > 0 && e.shape[1] != layers[i - 1]->shape[0]) {
      return absl::InvalidArgumentError(
          absl::StrFormat("safetensors: %s has %d input columns but %s has %d outputs; the shapes "
                          "must chain (each weight is out x in)",
                          e.name, e.shape[1], layers[i - 1]->name, layers[i - 1]->shape[0]));
    }
  }
  const uint64_t outputs = layers[count - 1]->shape[0];
  if (outputs < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "safetensors: the last layer (%s) has %d output; a classifier needs at least 2",
        layers[count - 1]->name, outputs));
  }
  const uint64_t d = layers[0]->shape[1];
  if ((mean == nullptr) != (std == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("safetensors: %s is present without %s; give both or neither",
                        mean ? "input.mean" : "input.std", mean ? "input.std" : "input.mean"));
  }
  for (const TensorEntry* e : {mean, std}) {
    if (e != nullptr && (e->shape.size() != 1 || e->shape[0] != d)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "safetensors: %s must be 1-D of length %d (the input dimension), but has shape %s",
          e->name, d, ShapeString(e->shape)));
    }
  }

  MlpParams params;
  params.row_normalize = true;
  if (auto it = meta.find("row_normalize"); it != meta.end()) {
    if (it->second != "true" && it->second != "false") {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: __metadata__ row_normalize must be \"true\" or \"false\", not \"",
          it->second, "\""));
    }
    params.row_normalize = it->second == "true";
  }
  std::optional<MlpConfig> config;
  if (auto f = meta.find("format"); f != meta.end() && f->second == kFormatName) {
    if (auto c = meta.find("config"); c != meta.end()) {
      absl::StatusOr<MlpConfig> parsed = MlpConfigFromJson(c->second);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "safetensors: __metadata__ config is invalid: ", parsed.status().message()));
      }
      config = *parsed;
    }
  }
  params.standardize = mean != nullptr;
  if (params.standardize) {
    const Eigen::Index n = static_cast<Eigen::Index>(d);
    params.mean = Eigen::Map<const Vector<float>>(ReadTensor(data, *mean, n, 1).data(), n);
    params.std = Eigen::Map<const Vector<float>>(ReadTensor(data, *std, n, 1).data(), n);
  }
  for (int i = 0; i < count; ++i) {
    const TensorEntry& e = *layers[i];
    params.weights.push_back(ReadTensor(data, e, static_cast<Eigen::Index>(e.shape[0]),
                                        static_cast<Eigen::Index>(e.shape[1])));
  }
  absl::Status valid = ValidateMlpParams(params);
  if (!valid.ok())
    return absl::InvalidArgumentError(absl::StrCat("safetensors: ", valid.message()));
  return MlpModel(std::make_shared<const MlpParams>(std::move(params)), std::move(config));
}

std::string MlpModel::Serialize() const {
  std::string out(kMagic, sizeof(kMagic));
  AppendU32(&out, kFormatVersion);
  AppendU32(&out, 0);
  out += ExportSafetensors();
  AppendU32(&out, Crc32(out));
  return out;
}

absl::StatusOr<MlpModel> MlpModel::Deserialize(std::string_view bytes) {
  if (bytes.size() < sizeof(kMagic)) return absl::DataLossError("MLP model file is truncated");
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not a drfm MLP model file (bad magic)");
  }
  if (bytes.size() < kPrefixBytes + 8 + 4)
    return absl::DataLossError("MLP model file is truncated");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - 4, 4);
  if (Crc32(bytes.substr(0, bytes.size() - 4)) != stored_crc) {
    return absl::DataLossError(
        "MLP model file checksum mismatch: the file is corrupt or truncated");
  }
  uint32_t version;
  std::memcpy(&version, bytes.data() + sizeof(kMagic), 4);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("MLP model format version ", version,
                                                   " is not supported (this build reads ",
                                                   kFormatVersion, ")"));
  }
  absl::StatusOr<MlpModel> model =
      ImportSafetensors(bytes.substr(kPrefixBytes, bytes.size() - kPrefixBytes - 4));
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("MLP model file: ", model.status().message()));
  }
  return model;
}

}  // namespace drfm::core
