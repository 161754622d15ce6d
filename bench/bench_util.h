// Shared by the compute benchmarks: a wall clock, this machine's float32 GEMM rate through Eigen
// (the engine the core uses), and the process's resident memory. Figures are reported as ratios
// to the GEMM rate measured in the same run, since absolute times on shared machines drift.
#ifndef DRFM_BENCH_BENCH_UTIL_H_
#define DRFM_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <fstream>
#include <string>

#include <Eigen/Core>

#include "bench/stats.h"
#include "core/types.h"

namespace drfm::bench {

// Best of `reps` runs of an (m x k) * (k x n) float32 product, in flop/s.
inline double GemmRate(int m, int k, int n, int reps) {
  core::RowMatrixF a = core::RowMatrixF::Random(m, k);
  core::RowMatrixF b = core::RowMatrixF::Random(k, n);
  core::RowMatrixF c = core::RowMatrixF::Zero(m, n);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const double t = Now();
    c.noalias() = a * b;
    const double s = Now() - t;
    best = std::max(best, 2.0 * m * static_cast<double>(k) * n / s);
  }
  return best;
}

// Best of `reps` runs of an n x n x n float32 GEMM: the machine's reference rate.
inline double GemmRate(int n, int reps) { return GemmRate(n, n, n, reps); }

// A field of /proc/self/status in bytes (VmRSS, VmHWM, ...).
inline double ProcStatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) * 1024.0;
  }
  return 0;
}

// Resets VmHWM to the current resident set.
inline void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace drfm::bench

#endif  // DRFM_BENCH_BENCH_UTIL_H_
