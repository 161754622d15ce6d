// drfm-bench-fit: the compute core's performance benchmark (not a test). Measures this machine's
// float32 GEMM rate, then runs a Deep RFM fit on Fashion-MNIST and reports, for each phase, the
// seconds, the achieved GFLOP/s and its ratio to the GEMM rate measured in the same run, plus the
// whole fit's ratio and its peak memory against one n x n matrix. Ratios, not absolute times, are
// the figures to compare across runs: shared machines drift.
#include <omp.h>

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include "bench/bench_util.h"
#include "core/estimate.h"
#include "core/fit.h"
#include "core/io.h"

namespace {

using drfm::bench::GemmRate;
using drfm::bench::ProcStatusBytes;
using drfm::bench::ResetPeakRss;
using drfm::core::kNumPhases;
using drfm::core::Phase;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the Deep RFM compute core against this machine's GEMM rate"};
  int64_t rows = 10000, test_rows = 0;
  int layers = 1, gemm_n = 4000, threads = 0;
  std::string data_dir = "/usr/share/datasets/fashion-mnist", agop = "auto", precision = "float32";
  app.add_option("--rows", rows, "training rows (first N of Fashion-MNIST train)")->capture_default_str();
  app.add_option("--test-rows", test_rows, "test rows (0 = no test set)")->capture_default_str();
  app.add_option("--layers", layers, "Deep RFM layers")->capture_default_str();
  app.add_option("--agop", agop, "AGOP form: auto|direct|gram")->capture_default_str();
  app.add_option("--precision", precision, "float32|float64")->capture_default_str();
  app.add_option("--gemm-n", gemm_n, "size of the reference GEMM")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = default)")->capture_default_str();
  app.add_option("--data-dir", data_dir, "Fashion-MNIST directory")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // The allocator keeps glibc's defaults, as in drfm-server: a lower mmap threshold would hand
  // every GEMM packing buffer of the kernel tiles back to the kernel and fault it in again (a
  // 1 MiB threshold made the kernel phase 25% slower). Large blocks (the datasets, the n x n
  // buffer) are mmapped either way, so what the fit frees leaves the process and the peak below
  // is what the fit holds.

  auto train_all = drfm::core::LoadFashionMnist(data_dir, "train");
  auto test_all = drfm::core::LoadFashionMnist(data_dir, "test");
  if (!train_all.ok() || !test_all.ok()) {
    std::fprintf(stderr, "error: %s\n", (!train_all.ok() ? train_all.status() : test_all.status()).ToString().c_str());
    return 2;
  }
  auto train = drfm::core::SliceDataset(*train_all, 0, rows);
  auto test = drfm::core::SliceDataset(*test_all, 0, std::max<int64_t>(test_rows, 1));
  if (!train.ok() || !test.ok()) {
    std::fprintf(stderr, "error: %s\n", (!train.ok() ? train.status() : test.status()).ToString().c_str());
    return 2;
  }
  train_all = absl::UnknownError("released");

  drfm::core::FitConfig config;
  config.layers = layers;
  config.agop_method = agop == "direct" ? drfm::core::AgopMethod::kDirect
                       : agop == "gram" ? drfm::core::AgopMethod::kGram
                                        : drfm::core::AgopMethod::kAuto;
  config.precision = precision == "float64" ? drfm::core::Precision::kFloat64 : drfm::core::Precision::kFloat32;
  drfm::core::FitOptions options;
  options.threads = threads;
  if (threads > 0) omp_set_num_threads(threads);

  const double gemm = GemmRate(gemm_n, 3);
  std::printf("machine: float32 GEMM %d^3 (Eigen, %d threads): %.1f GFLOP/s\n", gemm_n, Eigen::nbThreads(), gemm / 1e9);
  std::printf("fit: n=%lld train, %lld test, d=%lld, C=%d, layers=%d, %s, agop=%s\n",
              static_cast<long long>(train->rows()), static_cast<long long>(test_rows),
              static_cast<long long>(train->cols()), train->num_classes, layers, precision.c_str(), agop.c_str());

  const drfm::core::Dataset* test_ptr = test_rows > 0 ? &*test : nullptr;
  auto estimate = drfm::core::EstimateFit(config, {train->rows(), test_rows, train->cols(), train->num_classes});
  ResetPeakRss();
  const double rss_before = ProcStatusBytes("VmRSS");
  auto result = drfm::core::FitDeepRfm(*train, test_ptr, config, nullptr, options);
  const double peak = ProcStatusBytes("VmHWM") - rss_before;
  if (!result.ok()) {
    std::fprintf(stderr, "error: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::array<double, kNumPhases> seconds{}, flops{};
  for (const auto& r : result->reports) {
    for (int p = 0; p < kNumPhases; ++p) {
      seconds[p] += r.phase_seconds[p];
      flops[p] += r.phase_flops[p];
    }
  }
  std::printf("\n%-9s %9s %10s %9s %8s\n", "phase", "seconds", "GFLOP", "GFLOP/s", "vs GEMM");
  double total_s = 0, total_f = 0;
  for (int p = 0; p < kNumPhases; ++p) {
    total_s += seconds[p];
    total_f += flops[p];
    const double rate = seconds[p] > 0 ? flops[p] / seconds[p] : 0;
    std::printf("%-9s %9.3f %10.2f %9.1f %7.0f%%\n", std::string(drfm::core::PhaseName(static_cast<Phase>(p))).c_str(),
                seconds[p], flops[p] / 1e9, rate / 1e9, 100 * rate / gemm);
  }
  std::printf("%-9s %9.3f %10.2f %9.1f %7.0f%%\n", "phases", total_s, total_f / 1e9, total_f / total_s / 1e9,
              100 * total_f / total_s / gemm);
  std::printf("%-9s %9.3f %10.2f %9.1f %7.0f%%   (wall clock of FitDeepRfm)\n", "fit", result->seconds,
              result->flops / 1e9, result->flops / result->seconds / 1e9, 100 * result->flops / result->seconds / gemm);
  const double nn = static_cast<double>(train->rows()) * train->rows() * (precision == "float64" ? 8 : 4);
  std::printf("\nkernel phase by layer:");
  for (const auto& r : result->reports) {
    std::printf(" %s%d %.3f s (%.0f%%)", r.readout ? "readout " : "", r.layer,
                r.phase_seconds[static_cast<int>(Phase::kKernel)],
                100 * r.phase_flops[static_cast<int>(Phase::kKernel)] /
                    r.phase_seconds[static_cast<int>(Phase::kKernel)] / gemm);
  }
  std::printf("\n");
  std::printf("\nAGOP form: %s\n", result->reports[0].agop_gram_form ? "gram" : "direct");
  std::printf("peak memory: %.3f GB = %.2f x the n x n matrix (%.3f GB); estimate %.3f GB (%.2f x measured)\n",
              peak / 1e9, peak / nn, nn / 1e9, estimate.ok() ? estimate->peak_bytes / 1e9 : 0,
              estimate.ok() ? estimate->peak_bytes / peak : 0);
  std::printf("layer 1: train acc %.4f, nc1 input %.4f -> projected %.4f\n", result->reports[0].train_accuracy,
              result->reports[0].input.nc1, result->reports[0].projected.nc1);
  return 0;
}
