// The Deep RFM fit configuration: every knob of DEEP_RFM.md with its documented default, and the
// single place where user-supplied values are checked (FitConfig::Validate).
#ifndef DRFM_CORE_CONFIG_H_
#define DRFM_CORE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace drfm::core {

enum class KernelType { kLaplace, kGaussian };
enum class FeatureMapType { kRelu, kCosine };
enum class AgopNormalize { kMax, kNone };
enum class Precision { kFloat32, kFloat64 };
enum class LabelEncoding { kPlusMinusOne, kOneHot };
// Which exact AGOP form to use (DEEP_RFM.md step 4): kAuto picks the one with fewer flops.
enum class AgopMethod { kAuto, kDirect, kGram };

// Upper bounds that keep a single fit's cost sane; the server may set tighter ones.
inline constexpr int kMaxLayers = 64;
inline constexpr int kMaxRfmIterations = 50;
inline constexpr int kMaxWidth = 1 << 16;

// Configuration of one Deep RFM fit. Defaults are those of DEEP_RFM.md. A plain value type.
struct FitConfig {
  int layers = 3;                                  // L, number of Deep RFM layers (0 = readout only)
  KernelType kernel = KernelType::kLaplace;        // kernel of every layer and of the readout
  double bandwidth = 2.0;                          // L in exp(-||x-z||/L) or exp(-||x-z||^2/(2L^2))
  double ridge = 1e-3;                             // lambda in (K + lambda I)^-1 Y
  int rfm_iterations = 1;                          // T: RFM iterations (Mahalanobis refits) per layer
  FeatureMapType feature_map = FeatureMapType::kRelu;
  int width = 512;                                 // random-feature width D (cosine: 0 means D = d)
  double rff_scale = 0.5;                          // gamma of the Cauchy frequencies (cosine map)
  double agop_power = 0.5;                         // p in S = M^p
  int64_t agop_samples = 0;                        // m rows entering the AGOP (0 = all n)
  AgopNormalize agop_normalize = AgopNormalize::kMax;
  AgopMethod agop_method = AgopMethod::kAuto;
  Precision precision = Precision::kFloat32;
  bool standardize = true;
  LabelEncoding label_encoding = LabelEncoding::kPlusMinusOne;
  uint64_t seed = 0;                               // seeds every random draw of the fit
  int top_eigenvalues = 10;                        // how many AGOP eigenvalues each report carries

  // OK when every field is in range; InvalidArgument naming the field, its value and what is
  // allowed otherwise.
  absl::Status Validate() const;
};

std::string KernelName(KernelType kernel);
std::string FeatureMapName(FeatureMapType map);

}  // namespace drfm::core

#endif  // DRFM_CORE_CONFIG_H_
