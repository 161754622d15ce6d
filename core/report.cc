#include "core/report.h"

namespace drfm::core {

std::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kKernel: return "kernel";
    case Phase::kSolve: return "solve";
    case Phase::kAgop: return "agop";
    case Phase::kProject: return "project";
    case Phase::kFeatures: return "features";
    case Phase::kMetrics: return "metrics";
  }
  return "unknown";
}

}  // namespace drfm::core
