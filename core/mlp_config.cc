#include "core/mlp_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_number.h"

namespace drfm::core {
namespace {

using Json = nlohmann::json;

absl::Status OutOfRange(const char* field, double value, const char* allowed) {
  return absl::InvalidArgumentError(
      absl::StrFormat("mlp_config.%s = %g is not allowed: %s", field, value, allowed));
}

bool FinitePositive(double v) { return std::isfinite(v) && v > 0; }

}  // namespace

absl::Status MlpConfig::Validate() const {
  if (depth < 1 || depth > kMaxMlpDepth) {
    return OutOfRange("depth", depth, "use 1 to 32 hidden layers (default 3)");
  }
  if (width < 1 || width > kMaxMlpWidth) {
    return OutOfRange("width", width, "use 1 to 16384 (default 512)");
  }
  if (!FinitePositive(init_gain)) {
    return OutOfRange("init_gain", init_gain, "the gain must be finite and > 0 (default 0.1)");
  }
  if (!FinitePositive(learning_rate)) {
    return OutOfRange("learning_rate", learning_rate,
                      "the learning rate must be finite and > 0 (default 5e-5)");
  }
  if (epochs < 0 || epochs > kMaxMlpEpochs) {
    return OutOfRange("epochs", epochs,
                      "use 0 (measure the initialization only) to 100000 (default 250)");
  }
  if (batch_size < 1 || batch_size > kMaxMlpBatchSize) {
    return OutOfRange("batch_size", batch_size, "use 1 to 1048576 rows (default 128)");
  }
  if (measure_every < 0 || measure_every > kMaxMlpEpochs) {
    return OutOfRange("measure_every", measure_every,
                      "use 0 (only after the last epoch) to 100000 (default 10)");
  }
  if (!std::isfinite(weight_decay) || weight_decay < 0) {
    return OutOfRange("weight_decay", weight_decay,
                      "the weight decay must be finite and >= 0 (default 0)");
  }
  return absl::OkStatus();
}

std::string MlpConfigToJson(const MlpConfig& c) {
  return Json{{"depth", c.depth},
              {"width", c.width},
              {"init_gain", c.init_gain},
              {"learning_rate", c.learning_rate},
              {"epochs", c.epochs},
              {"batch_size", c.batch_size},
              {"measure_every", c.measure_every},
              {"weight_decay", c.weight_decay},
              {"seed", c.seed},
              {"standardize", c.standardize},
              {"row_normalize", c.row_normalize}}
      .dump();
}

absl::StatusOr<MlpConfig> MlpConfigFromJson(std::string_view json) {
  const Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("MLP config is not a JSON object");
  }
  MlpConfig c;
  try {
    // Integers must be integers in range: nlohmann would silently truncate 2.5 to 2.
    constexpr char kField[] = "MLP config field ";
    auto get_int = [&j, &kField](const char* key, int* out) {
      return ReadNumber(j, kField, key, out);
    };
    auto get_double = [&j, &kField](const char* key, double* out) {
      return ReadNumber(j, kField, key, out);
    };
    auto get_bool = [&j](const char* key, bool* out) -> absl::Status {
      auto it = j.find(key);
      if (it == j.end()) return absl::OkStatus();
      if (!it->is_boolean()) {
        return absl::InvalidArgumentError(
            absl::StrCat("MLP config field ", key, " must be true or false"));
      }
      *out = it->get<bool>();
      return absl::OkStatus();
    };
    for (absl::Status s :
         {get_int("depth", &c.depth), get_int("width", &c.width),
          get_double("init_gain", &c.init_gain), get_double("learning_rate", &c.learning_rate),
          get_int("epochs", &c.epochs), get_int("batch_size", &c.batch_size),
          get_int("measure_every", &c.measure_every), get_double("weight_decay", &c.weight_decay),
          get_bool("standardize", &c.standardize), get_bool("row_normalize", &c.row_normalize)}) {
      if (!s.ok()) return s;
    }
    if (absl::Status s = ReadNumber(j, kField, "seed", &c.seed); !s.ok()) return s;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("MLP config JSON is malformed: ", e.what()));
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

}  // namespace drfm::core
