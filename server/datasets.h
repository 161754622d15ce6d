// Dataset resolution: how a job's DatasetSlice (a dataset id or name, offset and limit) becomes
// the rows a fit runs on, and what the server knows about a dataset before loading it. Three
// sources share one namespace of names: the built-in Fashion-MNIST splits
// ("fashion-mnist:train", "fashion-mnist:test", read from a directory and kept in memory once
// loaded), the seeded synthetic generator ("synthetic:rows=...,cols=...,classes=...,
// separation=...,noise=...,seed=...", see core::ParseSyntheticName) and datasets uploaded to the
// Store (by id or name; uploaded names cannot contain ':').
#ifndef DRFM_SERVER_DATASETS_H_
#define DRFM_SERVER_DATASETS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/dataset.h"
#include "core/io.h"
#include "drfm/v1/common.pb.h"
#include "drfm/v1/datasets.pb.h"
#include "server/store.h"

namespace drfm::server {

inline constexpr char kFashionMnistTrain[] = "fashion-mnist:train";
inline constexpr char kFashionMnistTest[] = "fashion-mnist:test";

// What a slice of a dataset will hold, known without loading its rows.
struct SliceShape {
  v1::Dataset dataset;  // The whole dataset's metadata.
  int64_t rows = 0;     // Rows of the slice: min(limit, dataset rows - offset), limit 0 = all.
  int64_t cols = 0;
  int num_classes = 0;  // Of the dataset (a short slice may lack some classes).
};

// Turns dataset names and slices into metadata and in-memory core::Datasets.
//
// Thread-safe. Each Fashion-MNIST split is read from disk at most once (concurrent first users
// wait for the one load; a failed load is retried by the next user) and then stays in memory for
// the resolver's lifetime (about 190 MB for the training split); slices are copies. Synthetic
// datasets are generated on every Load (they are deterministic and cheap next to a fit). The
// Store must outlive the resolver.
class DatasetResolver {
 public:
  // `store` (not owned) holds the uploaded datasets; `builtin_dir` holds the Fashion-MNIST files
  // (train-images-idx3-ubyte[.gz] etc., as the Debian package dataset-fashion-mnist installs
  // them).
  explicit DatasetResolver(Store* store, std::string builtin_dir = core::kFashionMnistDir);

  DatasetResolver(const DatasetResolver&) = delete;
  DatasetResolver& operator=(const DatasetResolver&) = delete;

  // True for names of built-in datasets: "fashion-mnist:..." and "synthetic:..." (any name with
  // ':'; uploaded datasets cannot have one).
  static bool IsBuiltinName(std::string_view name);

  // Metadata of the dataset with this id or name, without reading its rows: for Fashion-MNIST
  // 60000 (train) or 10000 (test) rows x 784 columns, 10 classes; for a synthetic name, the
  // shape its spec gives (named by its canonical SyntheticName); otherwise Store::GetDataset.
  // Built-ins have id = name and builtin = true. NotFound for an unknown name (the message lists
  // what exists) or a Fashion-MNIST split whose files are not installed (the message names the
  // directory and the Debian package); InvalidArgument for a malformed synthetic spec.
  absl::StatusOr<v1::Dataset> Describe(std::string_view dataset);

  // Describe(slice.dataset) and the shape of the slice. `field` ("train", "test") prefixes the
  // messages. InvalidArgument for a negative limit or an offset not below the dataset's rows;
  // the errors of Describe.
  absl::StatusOr<SliceShape> DescribeSlice(const v1::DatasetSlice& slice, std::string_view field);

  // The rows of `slice`, named after the dataset. The errors of DescribeSlice; for a built-in
  // Fashion-MNIST split also those of core::LoadFashionMnist; for an uploaded dataset those of
  // Store::LoadDataset (DataLoss for a corrupt file).
  absl::StatusOr<core::Dataset> Load(const v1::DatasetSlice& slice, std::string_view field);

  // Metadata of the built-in Fashion-MNIST splits whose files are installed (for ListDatasets;
  // synthetic datasets are unbounded and not listed).
  std::vector<v1::Dataset> InstalledBuiltins();

  const std::string& builtin_dir() const { return builtin_dir_; }

 private:
  struct Split {
    Split(const char* name, const char* split, const char* prefix, int64_t rows)
        : name(name), split(split), prefix(prefix), rows(rows) {}

    const char* const name;    // kFashionMnistTrain or kFashionMnistTest
    const char* const split;   // "train" or "test", as core::LoadFashionMnist takes it
    const char* const prefix;  // file prefix: "train" or "t10k"
    const int64_t rows;
    absl::Mutex mu;
    std::shared_ptr<const core::Dataset> data ABSL_GUARDED_BY(mu);
  };

  Split* FindSplit(std::string_view name);
  // NotFound naming the directory and the package when the split's image file is missing.
  absl::Status CheckInstalled(const Split& split) const;
  v1::Dataset SplitInfo(const Split& split) const;
  absl::StatusOr<std::shared_ptr<const core::Dataset>> LoadSplit(Split& split);
  // NotFound for `dataset`, listing the built-in names and some uploaded datasets.
  absl::Status UnknownDataset(std::string_view dataset);

  Store* const store_;
  const std::string builtin_dir_;
  const absl::Time create_time_;
  Split train_;
  Split test_;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_DATASETS_H_
