// Reading numbers from untrusted JSON (model file headers, stored configs) without nlohmann's
// silent conversions: shared by core/model.cc and core/mlp_config.cc.
#ifndef DRFM_CORE_JSON_NUMBER_H_
#define DRFM_CORE_JSON_NUMBER_H_

#include <cstdint>
#include <limits>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace drfm::core {

// Reads the number at `j[key]` into `out`; an absent key leaves `out` as it is unless `required`.
// Integer fields take only JSON integers within T's range, so a crafted header cannot make
// nlohmann convert 1e300 or -1.5 to an integer (undefined behaviour) or wrap a large value.
// `prefix` starts the error messages ("model file: ", "config.").
template <typename T>
absl::Status ReadNumber(const nlohmann::json& j, const char* prefix, const char* key, T* out,
                        bool required = false) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(prefix, key, " is missing"));
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, key, " must be a number"));
    }
    *out = it->template get<T>();
  } else {
    bool in_range = false;
    if (it->is_number_unsigned()) {
      const uint64_t v = it->template get<uint64_t>();
      in_range = v <= static_cast<uint64_t>(std::numeric_limits<T>::max());
      if (in_range) *out = static_cast<T>(v);
    } else if (it->is_number_integer()) {
      const int64_t v = it->template get<int64_t>();
      in_range = std::is_signed_v<T> && v >= static_cast<int64_t>(std::numeric_limits<T>::min());
      if (in_range) *out = static_cast<T>(v);
    }
    if (!in_range) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, key, " must be an integer in [", std::numeric_limits<T>::min(),
                       ", ", std::numeric_limits<T>::max(), "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace drfm::core

#endif  // DRFM_CORE_JSON_NUMBER_H_
