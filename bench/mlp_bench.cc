// drfm-bench-mlp: the MLP side's performance benchmark (not a test). Measures this machine's
// float32 GEMM rate, then on Fashion-MNIST (default n=10000, depth 5, width 512, batch 128, the
// paper's network) times training epochs and one measurement (DNN.md: collapse metrics of none /
// right / left, the AGOPs of every sub-network, NFA correlations, spectra), and reports their
// achieved GFLOP/s against the GEMM rate measured in the same run (the measurement is the one
// FitMlp makes after the last epoch). Flops are those of the cost
// model (EstimateMlpFit / EstimateMlpAnalysis): forward, backward and Adam for an epoch, every
// product a measurement needs for the measurement.
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_util.h"
#include "core/io.h"
#include "core/mlp.h"

namespace {

using drfm::bench::GemmRate;
using drfm::bench::Now;

// Collects the measurement times of a fit.
class MeasureTimes : public drfm::core::MlpObserver {
 public:
  Action OnReport(const drfm::core::NetworkReport& report) override {
    seconds += report.seconds;
    return Action::kContinue;
  }
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark MLP training and measurement against this machine's GEMM rate"};
  int64_t rows = 10000;
  int depth = 5, width = 512, batch = 128, epochs = 3, gemm_n = 4000, threads = 0;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  app.add_option("--rows", rows, "training rows (first N of Fashion-MNIST train)")->capture_default_str();
  app.add_option("--depth", depth, "hidden layers")->capture_default_str();
  app.add_option("--width", width, "hidden width")->capture_default_str();
  app.add_option("--batch-size", batch, "minibatch rows")->capture_default_str();
  app.add_option("--epochs", epochs, "training epochs timed (one measurement after them)")->capture_default_str();
  app.add_option("--gemm-n", gemm_n, "size of the reference GEMM")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = default)")->capture_default_str();
  app.add_option("--data-dir", data_dir, "Fashion-MNIST directory")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);

  auto train_all = drfm::core::LoadFashionMnist(data_dir, "train");
  if (!train_all.ok()) {
    std::fprintf(stderr, "error: %s\n", train_all.status().ToString().c_str());
    return 2;
  }
  auto train = drfm::core::SliceDataset(*train_all, 0, rows);
  if (!train.ok()) {
    std::fprintf(stderr, "error: %s\n", train.status().ToString().c_str());
    return 2;
  }
  drfm::core::MlpConfig config;
  config.depth = depth;
  config.width = width;
  config.batch_size = batch;
  config.epochs = epochs;
  config.measure_every = 0;  // one measurement, after the last epoch
  drfm::core::FitOptions options;
  options.threads = threads;

  const double gemm = GemmRate(gemm_n, 3);
  // For reference: the rate of the minibatch-shaped products training is made of.
  const double gemm_batch = GemmRate(batch, width, width, 200);
  std::printf("machine: float32 GEMM %d^3 (Eigen, %d threads): %.1f GFLOP/s; %dx%dx%d (a minibatch layer): %.1f GFLOP/s\n",
              gemm_n, Eigen::nbThreads(), gemm / 1e9, batch, width, width, gemm_batch / 1e9);
  std::printf("mlp: n=%lld, d=%lld, C=%d, depth %d, width %d, batch %d, %d epochs + 1 measurement\n",
              static_cast<long long>(train->rows()), static_cast<long long>(train->cols()), train->num_classes,
              depth, width, batch, epochs);

  auto estimate = drfm::core::EstimateMlpFit(config, {train->rows(), 0, train->cols(), train->num_classes});
  if (!estimate.ok()) {
    std::fprintf(stderr, "error: %s\n", estimate.status().ToString().c_str());
    return 2;
  }
  MeasureTimes times;
  const double t0 = Now();
  auto fit = drfm::core::FitMlp(*train, nullptr, config, &times, options);
  const double fit_seconds = Now() - t0;
  if (!fit.ok()) {
    std::fprintf(stderr, "error: %s\n", fit.status().ToString().c_str());
    return 1;
  }
  const double train_seconds = fit_seconds - times.seconds;
  const double epoch_seconds = train_seconds / epochs;
  const double epoch_flops = estimate->train_flops / epochs;

  // The measurement after the last epoch (the same work as AnalyzeMlp on the training rows).
  auto analysis_cost = drfm::core::EstimateMlpAnalysis(train->rows(), train->cols(), fit->model.layer_dims(),
                                                       train->num_classes);
  if (!analysis_cost.ok()) {
    std::fprintf(stderr, "error: %s\n", analysis_cost.status().ToString().c_str());
    return 1;
  }
  const double measure_seconds = times.seconds;
  const double measure_flops = analysis_cost->measure_flops;

  std::printf("\n%-12s %9s %9s %9s %8s\n", "part", "seconds", "GFLOP", "GFLOP/s", "vs GEMM");
  auto row = [&](const char* name, double s, double f) {
    std::printf("%-12s %9.3f %9.2f %9.1f %7.0f%%\n", name, s, f / 1e9, f / s / 1e9, 100 * f / s / gemm);
  };
  row("epoch", epoch_seconds, epoch_flops);
  row("measurement", measure_seconds, measure_flops);
  row("fit", fit_seconds, estimate->flops);
  std::printf("\nafter %d epochs: train loss %.5f, accuracy %.4f\n", epochs, fit->reports.back().train_loss,
              fit->reports.back().train_accuracy);
  return 0;
}
