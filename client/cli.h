// The `drfm` command line: parsing (CLI11) and the commands of API.md ("CLI: drfm"): fit,
// estimate, mlp, analyze, jobs list|get|watch|cancel|rm, models list|get|rm|export|import,
// datasets list|get|rm|upload, predict and health. RunCli runs one command line against a server
// and returns the exit status; its streams, terminal detection and connection are injected, so
// tests drive it without a process or a real server. Exit status: 0 success, 1 an error (the
// server's message is printed, a FAILED or CANCELLED job included), 2 a usage error, 130 a watch
// left with Ctrl-C (the job keeps running).
#ifndef DRFM_CLIENT_CLI_H_
#define DRFM_CLIENT_CLI_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "core/dataset.h"
#include "core/types.h"
#include "drfm/v1/jobs.pb.h"

namespace drfm::client {

// Exit statuses of RunCli.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitDetached = 130;

// What `fit` and `mlp` share: the data slices, where the model goes, scheduling, bookkeeping,
// and (when submitting) how the job is followed.
struct SubmitFlags {
  std::string train;
  std::optional<int64_t> train_limit;
  std::optional<int64_t> train_offset;
  std::string test;
  std::optional<int64_t> test_limit;
  std::optional<int64_t> test_offset;
  std::string model;
  std::optional<int32_t> priority;
  std::string request_id;
  std::vector<std::string> labels;  // key=value
  // not for `estimate`:
  bool detach = false;
  std::string plot;
};

// The options of `fit` and `estimate`. Every FitConfig field is optional here as in the proto: a
// flag that is not given stays unset, and the server applies its default (DEEP_RFM.md).
struct FitFlags : SubmitFlags {
  std::optional<int32_t> layers;
  std::optional<std::string> kernel;  // laplace | gaussian
  std::optional<double> bandwidth;
  std::optional<double> ridge;
  std::optional<int32_t> width;
  std::optional<std::string> feature_map;  // relu | cosine
  std::optional<int32_t> rfm_iterations;
  std::optional<std::string> precision;  // float32 | float64
  std::optional<uint64_t> seed;
  std::optional<int64_t> agop_samples;
  std::optional<double> agop_power;
  std::optional<std::string> agop_normalize;  // max | none
  std::optional<std::string> agop_method;     // auto | direct | gram
  std::optional<double> rff_scale;
  std::optional<bool> standardize;
  std::optional<std::string> label_encoding;  // plus_minus_one | one_hot
  std::optional<int32_t> top_eigenvalues;
};

// Declares the FitFlags options on `command` (`fit` or `estimate`); `with_watch_options` adds
// --detach and --plot (fit). Enumerations are matched case-insensitively.
void AddFitFlags(CLI::App* command, FitFlags* flags, bool with_watch_options);

// The request the flags describe: only the given fields are set. InvalidArgument for a --label
// without '=' or with an empty key, or --test-limit / --test-offset without --test.
absl::StatusOr<v1::SubmitFitRequest> BuildSubmitFitRequest(const FitFlags& flags);

// The options of `mlp` (DNN.md). As with FitFlags, a MlpConfig flag that is not given stays unset
// and the server applies its default.
struct MlpFlags : SubmitFlags {
  std::optional<int32_t> depth;
  std::optional<int32_t> width;
  std::optional<double> init_gain;
  std::optional<double> learning_rate;
  std::optional<int32_t> epochs;
  std::optional<int32_t> batch_size;
  std::optional<int32_t> measure_every;
  std::optional<uint64_t> seed;
  std::optional<double> weight_decay;
  std::optional<bool> standardize;
  std::optional<bool> row_normalize;
};

// Declares the MlpFlags options on `command`. The ranges MlpConfig documents (depth, width,
// epochs, batch size; positive learning rate and gain; non-negative measure_every, weight decay
// and seed) are checked while parsing; everything else is the server's to judge.
void AddMlpFlags(CLI::App* command, MlpFlags* flags);

// The request the flags describe: only the given fields are set. InvalidArgument as for
// BuildSubmitFitRequest (a --label without '=', --test-limit / --test-offset without --test).
absl::StatusOr<v1::SubmitMlpFitRequest> BuildSubmitMlpFitRequest(const MlpFlags& flags);

// The options of `analyze MODEL --data DATASET`.
struct AnalyzeFlags {
  std::string model;
  std::optional<int64_t> version;
  std::string data;
  std::optional<int64_t> data_limit;
  std::optional<int64_t> data_offset;
  std::optional<int32_t> priority;
  std::string request_id;
  std::vector<std::string> labels;  // key=value
  bool detach = false;
  std::string plot;
};

// Declares the AnalyzeFlags options (MODEL positional, --data required) on `command`.
void AddAnalyzeFlags(CLI::App* command, AnalyzeFlags* flags);

// The request the flags describe. InvalidArgument for an empty model or data name or a bad
// --label.
absl::StatusOr<v1::SubmitAnalysisRequest> BuildSubmitAnalysisRequest(const AnalyzeFlags& flags);

// What `datasets upload` reads.
struct UploadFiles {
  std::string features;             // .npy, IDX or CSV, optionally gzipped
  std::string labels;               // optional: labels in any of those formats
  std::optional<int> label_column;  // CSV only: the label column (0-based, -1 = last)
  std::optional<int> num_classes;   // optional: every label must be below it
};

// The dataset to upload: features from `features`, labels from `labels` or, for a CSV, from
// `label_column` (default: the last column). InvalidArgument (naming the file) for unreadable or
// malformed files, a label count that differs from the row count, --label-column with a non-CSV
// file or together with --labels, an .npy or IDX file without --labels, or labels outside
// [0, num_classes); the reader's errors (NotFound, ...) otherwise.
absl::StatusOr<core::Dataset> ReadUploadDataset(const UploadFiles& files);

// A dataset name derived from a file path: the file name without directories and without its
// .gz / .csv / .npy / .idx extensions, reduced to [A-Za-z0-9._-] and starting with a letter or
// digit ("data/train-images-idx3-ubyte.gz" -> "train-images-idx3-ubyte"); "dataset" when
// nothing is left.
std::string DatasetNameFromPath(const std::string& path);

// Features to predict on from `path` (any supported format). With `label_column` the file must be
// a CSV; that column is removed from the features and returned in `*labels`.
absl::StatusOr<core::RowMatrixF> ReadPredictFeatures(const std::string& path,
                                                     std::optional<int> label_column,
                                                     std::vector<int32_t>* labels);

// Where RunCli writes and how it connects.
struct CliEnv {
  std::ostream* out = nullptr;  // results (required)
  std::ostream* err = nullptr;  // errors, notices and transfer progress (required)
  // Whether `out` / `err` are terminals: live displays redraw in place only on a terminal.
  bool out_is_terminal = false;
  bool err_is_terminal = false;
  // Ctrl-C during a watch detaches (exit 130) instead of killing the process. Only for a real
  // process: it installs a SIGINT handler for the duration of the watch.
  bool handle_interrupts = false;
  // Opens the connection; default Client::Connect. Tests connect to an in-process server.
  std::function<absl::StatusOr<std::unique_ptr<Client>>(const ConnectionOptions&)> connect;
  // Options of WatchJob re-attaches (tests shorten the backoff).
  int watch_max_reconnects = WatchOptions().max_reconnects;
  absl::Duration watch_initial_backoff = WatchOptions().initial_backoff;
};

// Runs the command line `args` (without the program name). Returns the exit status.
int RunCli(const std::vector<std::string>& args, const CliEnv& env);

}  // namespace drfm::client

#endif  // DRFM_CLIENT_CLI_H_
