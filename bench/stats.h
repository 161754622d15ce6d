// Timing helpers shared by every benchmark in bench/ (no Eigen, so the service benchmarks can use
// them too): a monotonic wall clock and nearest-rank quantiles of latency samples.
#ifndef DRFM_BENCH_STATS_H_
#define DRFM_BENCH_STATS_H_

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <vector>

namespace drfm::bench {

// Seconds on the steady clock (only differences are meaningful).
inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Nearest-rank quantile q of the ascending `sorted` (0 when empty).
inline double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Nearest-rank quantile q of `samples` in any order.
inline double QuantileOf(std::vector<double> samples, double q) {
  std::sort(samples.begin(), samples.end());
  return Quantile(samples, q);
}

}  // namespace drfm::bench

#endif  // DRFM_BENCH_STATS_H_
