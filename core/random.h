// The job's seeded random stream. Uses std::mt19937_64 (whose output sequence the C++ standard
// fixes) with our own transforms to uniform, normal and Cauchy draws, so a seed gives the same
// numbers with any standard library.
#ifndef DRFM_CORE_RANDOM_H_
#define DRFM_CORE_RANDOM_H_

#include <cmath>
#include <cstdint>
#include <random>

namespace drfm::core {

// Not thread-safe: one per fit, drawn from serially.
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}

  // Uniform on [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Cauchy(0, scale) by inversion.
  double Cauchy(double scale) { return scale * std::tan(M_PI * (Uniform() - 0.5)); }
  // Standard normal by Box-Muller (one of the pair; simplicity over speed).
  double Normal() {
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  // Uniform integer in [0, n) (n > 0) by rejection, without modulo bias.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = engine_(); while (v >= limit);
    return v % n;
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace drfm::core

#endif  // DRFM_CORE_RANDOM_H_
