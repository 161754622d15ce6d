// drfm-local-fit: runs a Deep RFM fit in-process (no server) on Fashion-MNIST or a synthetic
// dataset and prints the per-layer table. For quick experiments and as the smoke test of the core.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "core/estimate.h"
#include "core/fit.h"
#include "core/io.h"

namespace {

class PrintingObserver : public drfm::core::FitObserver {
 public:
  Action OnLayer(const drfm::core::LayerReport& r) override {
    double seconds = 0;
    for (double s : r.phase_seconds) seconds += s;
    if (r.readout) {
      std::printf("%-7s %8.4f %8s %8s %8.4f %8s %8s %7.4f %7.4f %7.2f\n", "readout", r.input.nc1, "-",
                  "-", r.input.nc2, "-", "-", r.train_accuracy, r.test_accuracy, seconds);
    } else {
      std::printf("%-7d %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f %7.4f %7.4f %7.2f\n", r.layer, r.input.nc1,
                  r.projected.nc1, r.features.nc1, r.input.nc2, r.projected.nc2, r.features.nc2,
                  r.train_accuracy, r.test_accuracy, seconds);
    }
    std::fflush(stdout);
    return Action::kContinue;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fit a Deep RFM locally and print the per-layer collapse metrics"};
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t train_limit = 2000, test_limit = 1000;
  drfm::core::FitConfig config;
  std::string kernel = "laplace", precision = "float32", synthetic;
  int threads = 0;
  app.add_option("--data-dir", data_dir, "Fashion-MNIST directory")->capture_default_str();
  app.add_option("--synthetic", synthetic, "use synthetic:... data instead (train and test from two seeds)");
  app.add_option("--train-limit", train_limit, "first N training rows (0 = all)")->capture_default_str();
  app.add_option("--test-limit", test_limit, "first N test rows (0 = all)")->capture_default_str();
  app.add_option("--layers", config.layers, "Deep RFM layers")->capture_default_str();
  app.add_option("--kernel", kernel, "laplace|gaussian")->capture_default_str();
  app.add_option("--bandwidth", config.bandwidth, "kernel bandwidth")->capture_default_str();
  app.add_option("--ridge", config.ridge, "ridge")->capture_default_str();
  app.add_option("--width", config.width, "random feature width")->capture_default_str();
  app.add_option("--rfm-iterations", config.rfm_iterations, "RFM iterations per layer")->capture_default_str();
  app.add_option("--precision", precision, "float32|float64")->capture_default_str();
  app.add_option("--seed", config.seed, "seed")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = default)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  config.kernel = kernel == "gaussian" ? drfm::core::KernelType::kGaussian : drfm::core::KernelType::kLaplace;
  config.precision = precision == "float64" ? drfm::core::Precision::kFloat64 : drfm::core::Precision::kFloat32;

  absl::StatusOr<drfm::core::Dataset> train, test;
  if (!synthetic.empty()) {
    auto spec = drfm::core::ParseSyntheticName(synthetic);
    if (!spec.ok()) { std::fprintf(stderr, "error: %s\n", spec.status().ToString().c_str()); return 2; }
    train = drfm::core::MakeSynthetic(*spec);
    spec->seed += 1;
    test = drfm::core::MakeSynthetic(*spec);
  } else {
    train = drfm::core::LoadFashionMnist(data_dir, "train");
    test = drfm::core::LoadFashionMnist(data_dir, "test");
  }
  if (!train.ok() || !test.ok()) {
    std::fprintf(stderr, "error: %s\n", (!train.ok() ? train.status() : test.status()).ToString().c_str());
    return 2;
  }
  auto tr = drfm::core::SliceDataset(*train, 0, train_limit);
  auto te = drfm::core::SliceDataset(*test, 0, test_limit);
  if (!tr.ok() || !te.ok()) {
    std::fprintf(stderr, "error: %s\n", (!tr.ok() ? tr.status() : te.status()).ToString().c_str());
    return 2;
  }
  auto est = drfm::core::EstimateFit(config, {tr->rows(), te->rows(), tr->cols(), tr->num_classes});
  if (est.ok()) {
    std::printf("fit: %lld train x %lld test rows, %lld features, %d classes; estimated %.2f GB, %.1f GFLOP\n",
                static_cast<long long>(tr->rows()), static_cast<long long>(te->rows()),
                static_cast<long long>(tr->cols()), tr->num_classes, est->peak_bytes / 1e9, est->flops / 1e9);
  }
  std::printf("%-7s %8s %8s %8s %8s %8s %8s %7s %7s %7s\n", "layer", "nc1_in", "nc1_proj", "nc1_feat",
              "nc2_in", "nc2_proj", "nc2_feat", "train", "test", "sec");
  PrintingObserver observer;
  drfm::core::FitOptions options;
  options.threads = threads;
  auto result = drfm::core::FitDeepRfm(*tr, &*te, config, &observer, options);
  if (!result.ok()) {
    std::fprintf(stderr, "error: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("total %.2f s, %.1f GFLOP (%.1f GFLOP/s)\n", result->seconds, result->flops / 1e9,
              result->flops / result->seconds / 1e9);
  return 0;
}
