#include "core/config.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace drfm::core {
namespace {

absl::Status OutOfRange(const char* field, double value, const char* allowed) {
  return absl::InvalidArgumentError(
      absl::StrFormat("config.%s = %g is not allowed: %s", field, value, allowed));
}

bool FinitePositive(double v) { return std::isfinite(v) && v > 0; }

}  // namespace

absl::Status FitConfig::Validate() const {
  if (layers < 0 || layers > kMaxLayers) {
    return OutOfRange("layers", layers, "use 0 (readout only) to 64");
  }
  if (!FinitePositive(bandwidth)) {
    return OutOfRange("bandwidth", bandwidth, "the kernel bandwidth must be finite and > 0 (default 2)");
  }
  if (!std::isfinite(ridge) || ridge < 0) {
    return OutOfRange("ridge", ridge, "the ridge must be finite and >= 0 (default 1e-3)");
  }
  if (rfm_iterations < 1 || rfm_iterations > kMaxRfmIterations) {
    return OutOfRange("rfm_iterations", rfm_iterations, "use 1 to 50 (default 1)");
  }
  if (width < 0 || width > kMaxWidth) {
    return OutOfRange("width", width, "use 1 to 65536 (default 512; cosine also takes 0 = input dimension)");
  }
  if (width == 0 && feature_map == FeatureMapType::kRelu) {
    return OutOfRange("width", width, "the ReLU feature map needs a width >= 1 (default 512)");
  }
  if (!FinitePositive(rff_scale)) {
    return OutOfRange("rff_scale", rff_scale, "the Cauchy scale must be finite and > 0 (default 0.5)");
  }
  if (!std::isfinite(agop_power) || agop_power <= 0 || agop_power > 4) {
    return OutOfRange("agop_power", agop_power, "use a power in (0, 4] (default 0.5)");
  }
  if (agop_samples < 0) {
    return OutOfRange("agop_samples", static_cast<double>(agop_samples),
                      "use 0 (all training rows) or a positive count");
  }
  if (top_eigenvalues < 0 || top_eigenvalues > 1024) {
    return OutOfRange("top_eigenvalues", top_eigenvalues, "use 0 to 1024 (default 10)");
  }
  return absl::OkStatus();
}

std::string KernelName(KernelType kernel) {
  return kernel == KernelType::kLaplace ? "laplace" : "gaussian";
}

std::string FeatureMapName(FeatureMapType map) {
  return map == FeatureMapType::kRelu ? "relu" : "cosine";
}

}  // namespace drfm::core
