// drfm-bench-predict: what the gRPC service adds to a prediction (not a test). Fits (or loads) a
// Deep RFM whose readout holds n = 10000 Fashion-MNIST rows, stores it, starts a DrfmServer
// in-process on loopback and measures in the same run:
//   (a) single-row latency: Predict over gRPC against an empty RPC (grpc.health.v1.Health/Check)
//       and against the core's own DeepRfmModel::Predict of that row;
//   (b) batched throughput: 1000-row Predict requests against DeepRfmModel::Predict on the same
//       batches in-process, interleaved batch by batch, and the service overhead
//       (service time - core time) / core time.
// The machine may be shared and busy: the ratios between figures measured side by side are what
// to compare across runs, not the absolute times.
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/stats.h"
#include "core/fit.h"
#include "core/io.h"
#include "core/model.h"
#include "drfm/v1/models.grpc.pb.h"
#include "server/convert.h"
#include "server/server.h"
#include "server/store.h"

namespace {

namespace fs = std::filesystem;
using drfm::core::RowMatrixF;

using drfm::bench::Now;
using drfm::bench::QuantileOf;

double Sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "error: %s\n", what.c_str());
  return 1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// grpc.health.v1.Health/Check of the process ("" service: an empty request message), a unary call
// through the same synchronous path as the generated stubs. Returns false on an RPC error.
bool HealthCheck(grpc::Channel* channel, const grpc::internal::RpcMethod& method) {
  grpc::ClientContext context;
  grpc::Slice empty_message("", 0);  // HealthCheckRequest{service: ""} encodes to no bytes
  grpc::ByteBuffer request(&empty_message, 1), response;
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
             channel, method, &context, request, &response)
      .ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the overhead of the drfm gRPC service on Predict against the core"};
  int64_t rows = 10000;
  int layers = 1, width = 512, single_calls = 2000, batch_rows = 1000, batches = 20, threads = 0;
  int64_t agop_samples = 1000;
  bool synthetic = false, scores = false;
  std::string data_dir = "/usr/share/datasets/fashion-mnist", model_file;
  app.add_option("--rows", rows, "training rows = readout rows n of the model")
      ->capture_default_str();
  app.add_option("--layers", layers, "Deep RFM layers")->capture_default_str();
  app.add_option("--width", width, "random feature width")->capture_default_str();
  app.add_option("--agop-samples", agop_samples,
                 "AGOP rows of the fit (0 = all; only the fit's time depends on it)")
      ->capture_default_str();
  app.add_option("--single-calls", single_calls, "single-row calls per measurement")
      ->capture_default_str();
  app.add_option("--batch-rows", batch_rows, "rows per batched Predict request")
      ->capture_default_str();
  app.add_option("--batches", batches, "batched requests (each also run in-process)")
      ->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = default), in-process and in the server")
      ->capture_default_str();
  app.add_flag("--scores", scores, "ask for the class scores too");
  app.add_flag("--synthetic", synthetic, "synthetic rows x 784 data instead of Fashion-MNIST");
  app.add_option("--data-dir", data_dir, "Fashion-MNIST directory")->capture_default_str();
  app.add_option("--model-file", model_file,
                 "reuse this serialized model if it exists, else fit and save it there");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);

  // Data: n training rows for the model, and distinct rows to predict.
  const int64_t predict_rows = std::max<int64_t>(batch_rows, 1) * 2;
  absl::StatusOr<drfm::core::Dataset> train, test;
  if (synthetic) {
    drfm::core::SyntheticSpec spec;
    spec.rows = rows;
    spec.cols = 784;
    spec.classes = 10;
    spec.seed = 1;
    train = drfm::core::MakeSynthetic(spec);
    spec.rows = predict_rows;
    spec.seed = 2;
    test = drfm::core::MakeSynthetic(spec);
  } else {
    absl::StatusOr<drfm::core::Dataset> all = drfm::core::LoadFashionMnist(data_dir, "train");
    if (!all.ok()) return Fail(all.status().ToString() + " (try --synthetic)");
    train = drfm::core::SliceDataset(*all, 0, rows);
    all = drfm::core::LoadFashionMnist(data_dir, "test");
    if (!all.ok()) return Fail(all.status().ToString());
    test = drfm::core::SliceDataset(*all, 0, std::min<int64_t>(predict_rows, all->rows()));
  }
  if (!train.ok() || !test.ok())
    return Fail((!train.ok() ? train.status() : test.status()).ToString());

  // The model: fitted once here (or loaded from --model-file).
  drfm::core::FitConfig config;
  config.layers = layers;
  config.width = width;
  config.agop_samples = agop_samples;
  config.precision = drfm::core::Precision::kFloat32;
  config.seed = 7;
  std::optional<drfm::core::DeepRfmModel> model;
  double fit_seconds = 0;
  if (!model_file.empty() && fs::exists(model_file)) {
    absl::StatusOr<drfm::core::DeepRfmModel> loaded =
        drfm::core::DeepRfmModel::Deserialize(ReadFile(model_file));
    if (!loaded.ok()) return Fail(loaded.status().ToString());
    model = *std::move(loaded);
    config = model->config();
    std::printf("model: loaded from %s\n", model_file.c_str());
  } else {
    std::printf("model: fitting n=%lld x d=%lld, %d layer(s), width %d, float32 ...\n",
                static_cast<long long>(train->rows()), static_cast<long long>(train->cols()),
                layers, width);
    std::fflush(stdout);
    const double t = Now();
    drfm::core::FitOptions fit_options;
    fit_options.threads = threads;
    absl::StatusOr<drfm::core::FitResult> fit =
        drfm::core::FitDeepRfm(*train, nullptr, config, nullptr, fit_options);
    if (!fit.ok()) return Fail(fit.status().ToString());
    fit_seconds = Now() - t;
    model = std::move(fit->model);
    if (!model_file.empty()) std::ofstream(model_file, std::ios::binary) << model->Serialize();
  }
  const int64_t cols = model->input_dim();
  train = absl::UnknownError("released");

  // Store it and start the server on a fresh data dir, in-process, on loopback.
  const std::string dir =
      (fs::temp_directory_path() / ("drfm-bench-predict-" + std::to_string(getpid()))).string();
  fs::remove_all(dir);
  drfm::v1::Model meta;
  meta.set_name("bench");
  meta.set_kind(drfm::v1::Model::DEEP_RFM);
  meta.set_input_dim(cols);
  meta.set_classes(model->num_classes());
  meta.set_layers(model->num_layers());
  *meta.mutable_config() = drfm::server::FitConfigToProto(config);
  for (int64_t d : drfm::server::LayerDims(config, cols)) meta.add_layer_dims(d);
  meta.set_standardize(config.standardize);
  {
    drfm::server::SqliteStoreOptions store_options;
    store_options.data_dir = dir;
    auto store = drfm::server::SqliteStore::Open(store_options);
    if (!store.ok()) return Fail(store.status().ToString());
    auto stored = (*store)->PutModel(meta, model->Serialize());
    if (!stored.ok()) return Fail(stored.status().ToString());
  }  // closes the store: the server takes the directory over
  drfm::server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.data_dir = dir;
  options.workers = 1;
  auto server = drfm::server::DrfmServer::Start(options);
  if (!server.ok()) return Fail(server.status().ToString());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<drfm::v1::ModelService::Stub> stub = drfm::v1::ModelService::NewStub(channel);
  const grpc::internal::RpcMethod health("/grpc.health.v1.Health/Check",
                                         grpc::internal::RpcMethod::NORMAL_RPC);

  // Requests, built before any timing; the core gets the same rows as a matrix.
  const RowMatrixF& x = test->features;
  auto request_for = [&](int64_t begin, int64_t count) {
    drfm::v1::PredictRequest r;
    r.set_model("bench");
    r.set_rows(count);
    r.set_cols(cols);
    r.set_return_scores(scores);
    r.set_features(reinterpret_cast<const char*>(x.data() + begin * cols),
                   count * cols * sizeof(float));
    return r;
  };
  auto predict = [&](const drfm::v1::PredictRequest& r, drfm::v1::PredictResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    return stub->Predict(&context, r, response);
  };

  // Warm up: the model's first load, OpenMP teams of the server's threads, the connection.
  const int64_t n_rows = x.rows();
  for (int i = 0; i < 20; ++i) {
    drfm::v1::PredictResponse response;
    grpc::Status status = predict(request_for(i % n_rows, 1), &response);
    if (!status.ok()) return Fail("Predict: " + status.error_message());
    if (!HealthCheck(channel.get(), health)) return Fail("health Check failed");
    if (!model->Predict(x.middleRows(i % n_rows, 1)).ok()) return Fail("core Predict failed");
  }

  // (a) Single rows: the three measurements interleaved call by call.
  std::vector<double> rpc1, empty, core1;
  std::vector<drfm::v1::PredictRequest> singles;
  for (int i = 0; i < single_calls; ++i) singles.push_back(request_for(i % n_rows, 1));
  for (int i = 0; i < single_calls; ++i) {
    const RowMatrixF row = x.middleRows(i % n_rows, 1);
    double t = Now();
    if (!model->Predict(row).ok()) return Fail("core Predict failed");
    core1.push_back(Now() - t);
    drfm::v1::PredictResponse response;
    t = Now();
    grpc::Status status = predict(singles[i], &response);
    rpc1.push_back(Now() - t);
    if (!status.ok() || response.labels_size() != 1)
      return Fail("Predict: " + status.error_message());
    t = Now();
    if (!HealthCheck(channel.get(), health)) return Fail("health Check failed");
    empty.push_back(Now() - t);
  }

  // (b) Batches: each batch through the core in-process and through the service, alternately.
  // Also the same request to a model that does not exist: the server receives and parses all of it
  // and answers NOT_FOUND, so its time is the transport's share of the overhead.
  std::vector<double> rpc_batch, core_batch, transport_batch;
  const int64_t batch_count = std::max<int64_t>(1, std::min<int64_t>(batch_rows, n_rows));
  int64_t mismatched = 0;
  for (int b = 0; b < batches; ++b) {
    const int64_t begin = (b * batch_count) % std::max<int64_t>(1, n_rows - batch_count + 1);
    const drfm::v1::PredictRequest request = request_for(begin, batch_count);
    const RowMatrixF batch = x.middleRows(begin, batch_count);
    double t = Now();
    absl::StatusOr<drfm::core::Prediction> local = model->Predict(batch);
    core_batch.push_back(Now() - t);
    if (!local.ok()) return Fail(local.status().ToString());
    drfm::v1::PredictResponse response;
    t = Now();
    grpc::Status status = predict(request, &response);
    rpc_batch.push_back(Now() - t);
    if (!status.ok()) return Fail("Predict: " + status.error_message());
    for (int64_t i = 0; i < batch_count; ++i) mismatched += response.labels(i) != local->labels[i];
    drfm::v1::PredictRequest missing = request;
    missing.set_model("no-such-model");
    t = Now();
    status = predict(missing, &response);
    transport_batch.push_back(Now() - t);
    if (status.error_code() != grpc::StatusCode::NOT_FOUND)
      return Fail("expected NOT_FOUND: " + status.error_message());
  }
  (*server)->Shutdown(absl::Seconds(5));
  server->reset();
  fs::remove_all(dir);

  const double us = 1e6, ms = 1e3;
  std::printf("\ncommand: %s\n", command.c_str());
  std::printf(
      "model: n=%lld readout rows, d=%lld, C=%d, %d layer(s), width %d, float32, %d OpenMP "
      "threads%s\n",
      static_cast<long long>(model->readout_rows()), static_cast<long long>(cols),
      model->num_classes(), model->num_layers(), width, omp_get_max_threads(),
      fit_seconds > 0 ? (", fit in " + std::to_string(fit_seconds).substr(0, 5) + " s").c_str()
                      : "");
  std::printf(
      "server: DrfmServer in-process, loopback TCP, synchronous unary calls, return_scores=%s\n",
      scores ? "true" : "false");

  std::printf("\n(a) single-row latency, %d calls each, interleaved\n", single_calls);
  std::printf("  %-34s %10s %10s %10s\n", "", "p50 us", "p99 us", "mean us");
  auto line = [&](const char* what, const std::vector<double>& v) {
    std::printf("  %-34s %10.1f %10.1f %10.1f\n", what, QuantileOf(v, 0.5) * us,
                QuantileOf(v, 0.99) * us, Sum(v) / v.size() * us);
  };
  line("Predict RPC (1 row)", rpc1);
  line("empty RPC (health Check)", empty);
  line("core DeepRfmModel::Predict (1 row)", core1);
  const double p50_overhead = QuantileOf(rpc1, 0.5) - QuantileOf(core1, 0.5);
  const double p50_beyond = p50_overhead - QuantileOf(empty, 0.5);
  std::printf(
      "  service overhead at p50 (RPC - core):           %8.1f us = %.2f x the empty RPC's round "
      "trip\n",
      p50_overhead * us, p50_overhead / QuantileOf(empty, 0.5));
  std::printf(
      "  beyond an empty RPC (RPC - core - empty), p50:  %8.1f us (validation, model lookup, "
      "copies)\n",
      p50_beyond * us);

  std::printf(
      "\n(b) batched throughput, %d requests of %lld rows, interleaved with the core on the same "
      "batch\n",
      batches, static_cast<long long>(batch_count));
  const double core_total = Sum(core_batch), rpc_total = Sum(rpc_batch);
  const double rows_total = static_cast<double>(batches * batch_count);
  std::printf("  %-34s %10s %10s %12s\n", "", "p50 ms", "mean ms", "rows/s");
  std::printf("  %-34s %10.2f %10.2f %12.0f\n", "Predict RPC", QuantileOf(rpc_batch, 0.5) * ms,
              rpc_total / batches * ms, rows_total / rpc_total);
  std::printf("  %-34s %10.2f %10.2f %12.0f\n", "core DeepRfmModel::Predict",
              QuantileOf(core_batch, 0.5) * ms, core_total / batches * ms, rows_total / core_total);
  std::printf("  %-34s %10.2f %10.2f\n", "same request, missing model",
              QuantileOf(transport_batch, 0.5) * ms, Sum(transport_batch) / batches * ms);
  std::vector<double> ratio;
  for (size_t i = 0; i < rpc_batch.size(); ++i)
    ratio.push_back((rpc_batch[i] - core_batch[i]) / core_batch[i]);
  std::printf(
      "  service overhead (service - core) / core: total %.1f%%, median of per-batch ratios %.1f%% "
      "(goal < 10%%)\n",
      100 * (rpc_total - core_total) / core_total, 100 * QuantileOf(ratio, 0.5));
  std::printf(
      "  of which moving and parsing the request (missing-model round trip / core): %.1f%%\n",
      100 * Sum(transport_batch) / core_total);
  std::printf("  labels differing between service and core: %lld of %.0f\n",
              static_cast<long long>(mismatched), rows_total);
  return 0;
}
