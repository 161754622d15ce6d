// What a Deep RFM fit reports per layer: collapse metrics, probe accuracies, AGOP statistics and
// the time and flops spent in each phase. Plain value types.
#ifndef DRFM_CORE_REPORT_H_
#define DRFM_CORE_REPORT_H_

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace drfm::core {

// Phases of one layer, in the order they run. kNumPhases counts them.
enum class Phase { kKernel = 0, kSolve, kAgop, kProject, kFeatures, kMetrics };
inline constexpr int kNumPhases = 6;
// Lower-case name of a phase ("kernel", "solve", ...).
std::string_view PhaseName(Phase phase);

// Neural-collapse metrics of one representation (formulas in DEEP_RFM.md).
struct CollapseMetrics {
  double nc1 = 0;           // tr(Sigma_W) / tr(Sigma_B)
  double nc1_pinv = 0;      // tr(Sigma_W Sigma_B^+) / C
  double nc2 = 0;           // (1/C^2) ||U U^T - E_simplex||_F^2
  double nc2_equinorm = 0;  // std / mean of the class-mean norms
  double ncc_accuracy = 0;  // nearest-class-mean accuracy (NC4)
};

// Report of one layer (1-based); layer L+1 is the readout, which has only `input` metrics and
// accuracies.
struct LayerReport {
  int layer = 0;
  bool readout = false;
  double train_accuracy = 0;
  double test_accuracy = 0;  // 0 when there is no test set (has_test false)
  bool has_test = false;
  CollapseMetrics input;
  CollapseMetrics projected;  // not set for the readout
  CollapseMetrics features;   // not set for the readout
  double agop_trace = 0;
  double agop_effective_rank = 0;
  std::vector<double> agop_top_eigenvalues;  // descending
  std::array<double, kNumPhases> phase_seconds{};
  std::array<double, kNumPhases> phase_flops{};
  int jitter_retries = 0;     // how many times the ridge was raised to make the solve succeed
  double ridge_used = 0;      // the ridge of the final (successful) solve
  bool agop_gram_form = false;  // which exact AGOP form was used (false: direct)
};

}  // namespace drfm::core

#endif  // DRFM_CORE_REPORT_H_
