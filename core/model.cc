#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checksum.h"
#include "core/json_number.h"
#include "core/status.h"

namespace drfm::core {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the model formats assume little-endian");

using Json = nlohmann::json;

constexpr char kMagic[8] = {'D', 'R', 'F', 'M', 'M', 'O', 'D', 'L'};
constexpr uint32_t kFormatVersion = 1;
// Upper bound on a header so a corrupt length cannot make us allocate absurdly.
constexpr uint64_t kMaxHeaderBytes = 64 << 20;

template <typename T>
const char* DtypeName() {
  return sizeof(T) == 4 ? "F32" : "F64";
}

// A tensor to write: name, shape and contiguous row-major data.
struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  const char* data;
  size_t bytes;
};

template <typename T>
std::vector<TensorView> CollectTensors(const ModelParams<T>& p) {
  std::vector<TensorView> out;
  auto add_matrix = [&out](std::string name, const RowMatrix<T>& m) {
    out.push_back({std::move(name), {m.rows(), m.cols()}, reinterpret_cast<const char*>(m.data()),
                   static_cast<size_t>(m.size()) * sizeof(T)});
  };
  auto add_vector = [&out](std::string name, const Vector<T>& v) {
    out.push_back({std::move(name), {v.size()}, reinterpret_cast<const char*>(v.data()),
                   static_cast<size_t>(v.size()) * sizeof(T)});
  };
  if (p.standardize) {
    add_vector("input.mean", p.mean);
    add_vector("input.std", p.std);
  }
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const std::string prefix = absl::StrCat("layers.", i, ".");
    add_matrix(prefix + "projection", p.layers[i].projection);
    add_matrix(prefix + "weights", p.layers[i].map.weights);
    if (p.layers[i].map.type == FeatureMapType::kCosine) add_vector(prefix + "bias", p.layers[i].map.bias);
  }
  add_matrix("readout.x", p.readout_x);
  add_matrix("readout.alpha", p.readout_alpha);
  return out;
}

// The tensor `name` of the header's tensor table, of shape rows x cols (-1 = any; a 1-D shape is
// n x 1). `*budget` is the number of data bytes not yet taken by earlier tensors; this tensor's
// bytes are taken from it, so the tensors of a file never hold more than its data in total
// (overlapping offsets cannot multiply a small file into a large model).
template <typename T>
absl::StatusOr<RowMatrix<T>> ReadMatrix(const Json& table, const std::string& name,
                                        std::string_view data, int64_t rows, int64_t cols,
                                        uint64_t* budget) {
  auto it = table.find(name);
  if (it == table.end()) return absl::InvalidArgumentError(absl::StrCat("model file lacks tensor ", name));
  const Json& t = *it;
  if (!t.contains("shape") || !t.contains("offset") || !t["shape"].is_array() ||
      !t["offset"].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat("model file: bad entry for tensor ", name));
  }
  std::vector<int64_t> shape;
  for (const Json& dim : t["shape"]) {
    if (!dim.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("model file: tensor ", name, " has a non-integer shape"));
    }
    shape.push_back(dim.get<int64_t>());
  }
  if (shape.size() == 1) shape.push_back(1);
  if (shape.size() != 2 || shape[0] < 0 || shape[1] < 0 || (rows >= 0 && shape[0] != rows) ||
      (cols >= 0 && shape[1] != cols)) {
    return absl::InvalidArgumentError(absl::StrCat("model file: tensor ", name, " has the wrong shape"));
  }
  const uint64_t offset = t["offset"].get<uint64_t>();
  // Bound one dimension by the other before multiplying: a crafted shape whose product wraps
  // around 2^64 would otherwise pass and make the matrix allocation throw.
  const uint64_t capacity = data.size() / sizeof(T);
  if (shape[0] != 0 &&
      static_cast<uint64_t>(shape[1]) > capacity / static_cast<uint64_t>(shape[0])) {
    return absl::DataLossError(absl::StrCat("model file: tensor ", name, " lies outside the data"));
  }
  const uint64_t count = static_cast<uint64_t>(shape[0]) * static_cast<uint64_t>(shape[1]);
  if (count > capacity || offset > data.size() - count * sizeof(T)) {
    return absl::DataLossError(absl::StrCat("model file: tensor ", name, " lies outside the data"));
  }
  if (count * sizeof(T) > *budget) {
    return absl::DataLossError(
        absl::StrCat("model file: tensor ", name, " would share data bytes with other tensors: "
                     "together they need more than the file's data"));
  }
  *budget -= count * sizeof(T);
  RowMatrix<T> m(shape[0], shape[1]);
  if (count > 0) std::memcpy(m.data(), data.data() + offset, count * sizeof(T));
  if (!m.allFinite()) {
    return absl::DataLossError(absl::StrCat("model file: tensor ", name, " has non-finite values"));
  }
  return m;
}

template <typename T>
absl::StatusOr<std::shared_ptr<const ModelParams<T>>> ParamsFromJson(const Json& h,
                                                                    std::string_view data) {
  auto p = std::make_shared<ModelParams<T>>();
  int64_t input_dim = 0;
  constexpr char kFile[] = "model file: ";
  DRFM_RETURN_IF_ERROR(ReadNumber(h, kFile, "input_dim", &input_dim, /*required=*/true));
  p->input_dim = input_dim;
  DRFM_RETURN_IF_ERROR(ReadNumber(h, kFile, "num_classes", &p->num_classes, /*required=*/true));
  p->standardize = h.at("standardize").get<bool>();
  DRFM_RETURN_IF_ERROR(ReadNumber(h, kFile, "bandwidth", &p->bandwidth, /*required=*/true));
  uint64_t budget = data.size();
  p->kernel = h.at("kernel").get<std::string>() == "gaussian" ? KernelType::kGaussian : KernelType::kLaplace;
  if (p->input_dim < 1 || p->num_classes < 2 || !(p->bandwidth > 0)) {
    return absl::InvalidArgumentError("model file: header has invalid dimensions");
  }
  const Json& table = h.at("tensors");
  if (p->standardize) {
    DRFM_ASSIGN_OR_RETURN(RowMatrix<T> mean, ReadMatrix<T>(table, "input.mean", data, p->input_dim, 1, &budget));
    DRFM_ASSIGN_OR_RETURN(RowMatrix<T> std, ReadMatrix<T>(table, "input.std", data, p->input_dim, 1, &budget));
    p->mean = Eigen::Map<Vector<T>>(mean.data(), mean.size());
    p->std = Eigen::Map<Vector<T>>(std.data(), std.size());
  }
  int64_t d = p->input_dim;
  const Json& layers = h.at("layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerParams<T> layer;
    const std::string prefix = absl::StrCat("layers.", i, ".");
    layer.map.type = layers[i].at("feature_map").get<std::string>() == "cosine" ? FeatureMapType::kCosine
                                                                               : FeatureMapType::kRelu;
    DRFM_ASSIGN_OR_RETURN(layer.projection, ReadMatrix<T>(table, prefix + "projection", data, d, d, &budget));
    DRFM_ASSIGN_OR_RETURN(layer.map.weights, ReadMatrix<T>(table, prefix + "weights", data, -1, d, &budget));
    const int64_t width = layer.map.weights.rows();
    // A fit never makes an empty layer, and one would leave the later shapes unbounded by the data.
    if (width < 1) {
      return absl::InvalidArgumentError(absl::StrCat("model file: layer ", i, " has no features"));
    }
    if (layer.map.type == FeatureMapType::kCosine) {
      DRFM_ASSIGN_OR_RETURN(RowMatrix<T> bias, ReadMatrix<T>(table, prefix + "bias", data, width, 1, &budget));
      layer.map.bias = Eigen::Map<Vector<T>>(bias.data(), bias.size());
    }
    p->layers.push_back(std::move(layer));
    d = width;
  }
  DRFM_ASSIGN_OR_RETURN(p->readout_x, ReadMatrix<T>(table, "readout.x", data, -1, d, &budget));
  // A fit always has training rows; without them num_classes would be bounded by nothing, and a
  // prediction would allocate rows x num_classes scores for any claimed class count.
  if (p->readout_x.rows() < 1) {
    return absl::InvalidArgumentError("model file: the readout has no training rows");
  }
  DRFM_ASSIGN_OR_RETURN(p->readout_alpha,
                        ReadMatrix<T>(table, "readout.alpha", data, p->readout_x.rows(),
                                      p->num_classes, &budget));
  p->readout_x_sq = RowSquaredNorms<T>(p->readout_x);
  return std::shared_ptr<const ModelParams<T>>(std::move(p));
}

template <typename T>
absl::Status CheckInput(const ModelParams<T>& p, const RowMatrixF& x) {
  if (x.cols() != p.input_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "input has %d columns but the model expects rows x %d features", x.cols(), p.input_dim));
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

template <typename T>
absl::StatusOr<Prediction> PredictImpl(const ModelParams<T>& p, const RowMatrixF& x) {
  DRFM_RETURN_IF_ERROR(CheckInput(p, x));
  RowMatrix<T> h = PrepareInput(p, x);
  RowMatrix<T> projected, features;
  for (const LayerParams<T>& layer : p.layers) {
    NormalizeRows<T>(h);
    ApplyLayer(layer, h, &projected, &features);
    h.swap(features);
  }
  NormalizeRows<T>(h);
  RowMatrix<T> scores;
  DRFM_RETURN_IF_ERROR(KernelPredict<T>(p.kernel, p.bandwidth, h, p.readout_x, p.readout_x_sq,
                                        p.readout_alpha, &scores, nullptr));
  Prediction out;
  out.scores = scores.template cast<float>();
  out.labels.resize(scores.rows());
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    out.labels[i] = static_cast<int32_t>(best);
  }
  return out;
}

template <typename T>
absl::StatusOr<RowMatrixF> RepresentationImpl(const ModelParams<T>& p, const RowMatrixF& x, int layer) {
  if (layer < 1 || layer > static_cast<int>(p.layers.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer %d is out of range: this model has layers 1..%d", layer, p.layers.size()));
  }
  DRFM_RETURN_IF_ERROR(CheckInput(p, x));
  RowMatrix<T> h = PrepareInput(p, x);
  RowMatrix<T> projected, features;
  for (int l = 0; l < layer; ++l) {
    NormalizeRows<T>(h);
    ApplyLayer(p.layers[l], h, &projected, &features);
    h.swap(features);
  }
  return RowMatrixF(h.template cast<float>());
}

Json ConfigJson(const FitConfig& c) {
  return Json{{"layers", c.layers},
              {"kernel", KernelName(c.kernel)},
              {"bandwidth", c.bandwidth},
              {"ridge", c.ridge},
              {"rfm_iterations", c.rfm_iterations},
              {"feature_map", FeatureMapName(c.feature_map)},
              {"width", c.width},
              {"rff_scale", c.rff_scale},
              {"agop_power", c.agop_power},
              {"agop_samples", c.agop_samples},
              {"agop_normalize", c.agop_normalize == AgopNormalize::kMax ? "max" : "none"},
              {"agop_method", c.agop_method == AgopMethod::kAuto     ? "auto"
                              : c.agop_method == AgopMethod::kDirect ? "direct"
                                                                     : "gram"},
              {"precision", c.precision == Precision::kFloat32 ? "float32" : "float64"},
              {"standardize", c.standardize},
              {"label_encoding", c.label_encoding == LabelEncoding::kPlusMinusOne ? "plus_minus_one" : "one_hot"},
              {"seed", c.seed},
              {"top_eigenvalues", c.top_eigenvalues}};
}

// Reads an enum-valued field: its value must be one of `names` (index = enum value); absent = the
// default.
template <typename E>
absl::Status ReadEnum(const Json& j, const char* key, std::initializer_list<const char*> names, E* out) {
  auto it = j.find(key);
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_string()) return absl::InvalidArgumentError(absl::StrCat("config.", key, " must be a string"));
  const std::string value = it->get<std::string>();
  int index = 0;
  for (const char* name : names) {
    if (value == name) {
      *out = static_cast<E>(index);
      return absl::OkStatus();
    }
    ++index;
  }
  std::string allowed;
  for (const char* name : names) absl::StrAppend(&allowed, allowed.empty() ? "" : ", ", name);
  return absl::InvalidArgumentError(absl::StrCat("config.", key, " = \"", value, "\" is not one of: ", allowed));
}

absl::StatusOr<FitConfig> ConfigFromJsonValue(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config is not a JSON object");
  FitConfig c;
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "layers", &c.layers));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "bandwidth", &c.bandwidth));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "ridge", &c.ridge));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "rfm_iterations", &c.rfm_iterations));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "width", &c.width));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "rff_scale", &c.rff_scale));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "agop_power", &c.agop_power));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "agop_samples", &c.agop_samples));
  c.standardize = j.value("standardize", c.standardize);
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "seed", &c.seed));
  DRFM_RETURN_IF_ERROR(ReadNumber(j, "config.", "top_eigenvalues", &c.top_eigenvalues));
  // The enums' declaration order in config.h.
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "kernel", {"laplace", "gaussian"}, &c.kernel));
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "feature_map", {"relu", "cosine"}, &c.feature_map));
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "agop_normalize", {"max", "none"}, &c.agop_normalize));
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "agop_method", {"auto", "direct", "gram"}, &c.agop_method));
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "precision", {"float32", "float64"}, &c.precision));
  DRFM_RETURN_IF_ERROR(ReadEnum(j, "label_encoding", {"plus_minus_one", "one_hot"}, &c.label_encoding));
  return c;
}

template <typename T>
Json HeaderJson(const FitConfig& config, const ModelParams<T>& p) {
  Json layers = Json::array();
  for (const auto& l : p.layers) {
    layers.push_back({{"feature_map", FeatureMapName(l.map.type)}, {"width", l.map.weights.rows()}});
  }
  return Json{{"format", "drfm-deep-rfm"},
              {"precision", sizeof(T) == 4 ? "float32" : "float64"},
              {"config", ConfigJson(config)},
              {"input_dim", p.input_dim},
              {"num_classes", p.num_classes},
              {"standardize", p.standardize},
              {"kernel", KernelName(p.kernel)},
              {"bandwidth", p.bandwidth},
              {"layers", layers}};
}

template <typename T>
std::string SerializeImpl(const FitConfig& config, const ModelParams<T>& p) {
  Json header = HeaderJson(config, p);
  Json table = Json::object();
  const std::vector<TensorView> tensors = CollectTensors(p);
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    table[t.name] = {{"dtype", DtypeName<T>()}, {"shape", t.shape}, {"offset", offset}};
    offset += t.bytes;
  }
  header["tensors"] = table;
  const std::string text = header.dump();
  std::string out(kMagic, sizeof(kMagic));
  AppendU32(&out, kFormatVersion);
  AppendU32(&out, 0);
  AppendU64(&out, text.size());
  out += text;
  AppendU64(&out, offset);
  out.reserve(out.size() + offset + 4);
  for (const TensorView& t : tensors) out.append(t.data, t.bytes);
  AppendU32(&out, Crc32(out));
  return out;
}

template <typename T>
std::string SafetensorsImpl(const FitConfig& config, const ModelParams<T>& p) {
  Json header = Json::object();
  const std::vector<TensorView> tensors = CollectTensors(p);
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    header[t.name] = {{"dtype", DtypeName<T>()}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  Json meta = HeaderJson(config, p);
  header["__metadata__"] = {{"format", "drfm-deep-rfm"},
                            {"config", ConfigJson(config).dump()},
                            {"kernel", KernelName(p.kernel)},
                            {"bandwidth", absl::StrCat(p.bandwidth)},
                            {"num_classes", absl::StrCat(p.num_classes)},
                            {"row_normalize", "true"},
                            {"layers", meta["layers"].dump()}};
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // align the data to 8 bytes
  std::string out;
  AppendU64(&out, text.size());
  out += text;
  out.reserve(out.size() + offset);
  for (const TensorView& t : tensors) out.append(t.data, t.bytes);
  return out;
}

}  // namespace

template <typename T>
RowMatrix<T> PrepareInput(const ModelParams<T>& params, const RowMatrixF& x) {
  RowMatrix<T> h = x.template cast<T>();
  if (params.standardize) {
    const Eigen::Index rows = h.rows();
    const auto mean = params.mean.transpose().array();
    const auto std = params.std.transpose().array();
#pragma omp parallel for schedule(static)
    for (Eigen::Index i = 0; i < rows; ++i) h.row(i) = ((h.row(i).array() - mean) / std).matrix();
  }
  return h;
}

template <typename T>
void ApplyLayer(const LayerParams<T>& layer, const RowMatrix<T>& x, RowMatrix<T>* projected,
                RowMatrix<T>* features) {
  projected->noalias() = x * layer.projection;
  ApplyFeatureMap<T>(layer.map, *projected, features);
}

template RowMatrix<float> PrepareInput<float>(const ModelParams<float>&, const RowMatrixF&);
template RowMatrix<double> PrepareInput<double>(const ModelParams<double>&, const RowMatrixF&);
template void ApplyLayer<float>(const LayerParams<float>&, const RowMatrix<float>&, RowMatrix<float>*,
                                RowMatrix<float>*);
template void ApplyLayer<double>(const LayerParams<double>&, const RowMatrix<double>&, RowMatrix<double>*,
                                 RowMatrix<double>*);

Precision DeepRfmModel::precision() const {
  return params<float>() ? Precision::kFloat32 : Precision::kFloat64;
}

int64_t DeepRfmModel::input_dim() const {
  return std::visit([](const auto& p) -> int64_t { return p->input_dim; }, params_);
}
int DeepRfmModel::num_classes() const {
  return std::visit([](const auto& p) { return p->num_classes; }, params_);
}
int DeepRfmModel::num_layers() const {
  return std::visit([](const auto& p) { return static_cast<int>(p->layers.size()); }, params_);
}
int64_t DeepRfmModel::readout_rows() const {
  return std::visit([](const auto& p) -> int64_t { return p->readout_x.rows(); }, params_);
}

absl::StatusOr<Prediction> DeepRfmModel::Predict(const RowMatrixF& x) const {
  return std::visit([&x](const auto& p) { return PredictImpl(*p, x); }, params_);
}

absl::StatusOr<RowMatrixF> DeepRfmModel::Representation(const RowMatrixF& x, int layer) const {
  return std::visit([&](const auto& p) { return RepresentationImpl(*p, x, layer); }, params_);
}

std::string DeepRfmModel::Serialize() const {
  return std::visit([this](const auto& p) { return SerializeImpl(config_, *p); }, params_);
}

std::string DeepRfmModel::ExportSafetensors() const {
  return std::visit([this](const auto& p) { return SafetensorsImpl(config_, *p); }, params_);
}

absl::StatusOr<DeepRfmModel> DeepRfmModel::Deserialize(std::string_view bytes) {
  constexpr size_t kFixed = sizeof(kMagic) + 4 + 4 + 8;
  if (bytes.size() < kFixed + 8 + 4) return absl::DataLossError("model file is truncated");
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not a drfm model file (bad magic)");
  }
  const uint32_t stored_crc = [&] {
    uint32_t v;
    std::memcpy(&v, bytes.data() + bytes.size() - 4, 4);
    return v;
  }();
  if (Crc32(bytes.substr(0, bytes.size() - 4)) != stored_crc) {
    return absl::DataLossError("model file checksum mismatch: the file is corrupt");
  }
  uint32_t version;
  std::memcpy(&version, bytes.data() + sizeof(kMagic), 4);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("model format version ", version, " is not supported (this build reads ", kFormatVersion, ")"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data() + sizeof(kMagic) + 8, 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - kFixed - 8 - 4) {
    return absl::DataLossError("model file header length is out of range");
  }
  const std::string_view header_text = bytes.substr(kFixed, header_len);
  uint64_t data_len;
  std::memcpy(&data_len, bytes.data() + kFixed + header_len, 8);
  const size_t data_start = kFixed + header_len + 8;
  if (data_len != bytes.size() - data_start - 4) {
    return absl::DataLossError("model file data length does not match the file size");
  }
  const std::string_view data = bytes.substr(data_start, data_len);
  Json header = Json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError("model file header is not valid JSON");
  }
  try {
    DRFM_ASSIGN_OR_RETURN(FitConfig config, ConfigFromJsonValue(header.at("config")));
    if (header.at("precision").get<std::string>() == "float64") {
      DRFM_ASSIGN_OR_RETURN(auto p, ParamsFromJson<double>(header, data));
      return DeepRfmModel(std::move(config), std::move(p));
    }
    DRFM_ASSIGN_OR_RETURN(auto p, ParamsFromJson<float>(header, data));
    return DeepRfmModel(std::move(config), std::move(p));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("model file header is malformed: ", e.what()));
  }
}

std::string FitConfigToJson(const FitConfig& config) { return ConfigJson(config).dump(); }

absl::StatusOr<FitConfig> FitConfigFromJson(std::string_view json) {
  Json j = Json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("config is not a JSON object");
  try {
    DRFM_ASSIGN_OR_RETURN(FitConfig c, ConfigFromJsonValue(j));
    DRFM_RETURN_IF_ERROR(c.Validate());
    return c;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config JSON is malformed: ", e.what()));
  }
}

}  // namespace drfm::core
