#include "server/datasets.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "server/convert.h"

namespace drfm::server {
namespace {

// Debian's abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr int64_t kFashionMnistCols = 784;
constexpr int kFashionMnistClasses = 10;
// How many uploaded datasets an unknown-name message lists.
constexpr int kListedUploads = 10;

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

DatasetResolver::DatasetResolver(Store* store, std::string builtin_dir)
    : store_(store),
      builtin_dir_(std::move(builtin_dir)),
      create_time_(absl::Now()),
      train_(kFashionMnistTrain, "train", "train", 60000),
      test_(kFashionMnistTest, "test", "t10k", 10000) {}

bool DatasetResolver::IsBuiltinName(std::string_view name) {
  return name.find(':') != std::string_view::npos;
}

DatasetResolver::Split* DatasetResolver::FindSplit(std::string_view name) {
  if (name == kFashionMnistTrain) return &train_;
  if (name == kFashionMnistTest) return &test_;
  return nullptr;
}

absl::Status DatasetResolver::CheckInstalled(const Split& split) const {
  const std::string images = absl::StrCat(builtin_dir_, "/", split.prefix, "-images-idx3-ubyte");
  if (FileExists(images) || FileExists(images + ".gz")) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat(
      "built-in dataset ", split.name, " is not installed: ", images,
      "(.gz) is missing; install the Debian package dataset-fashion-mnist or start the server "
      "with --builtin-dir naming a directory that has the Fashion-MNIST files"));
}

v1::Dataset DatasetResolver::SplitInfo(const Split& split) const {
  v1::Dataset info;
  info.set_id(split.name);
  info.set_name(split.name);
  info.set_rows(split.rows);
  info.set_cols(kFashionMnistCols);
  info.set_num_classes(kFashionMnistClasses);
  *info.mutable_create_time() = ToProtoTime(create_time_);
  info.set_size_bytes(DatasetBytes(split.rows, kFashionMnistCols));
  info.set_builtin(true);
  return info;
}

absl::Status DatasetResolver::UnknownDataset(std::string_view dataset) {
  std::vector<std::string> uploaded;
  bool more = false;
  // The listing only decorates the message; if it fails, the message goes without it.
  absl::StatusOr<Page<v1::Dataset>> page = store_->ListDatasets(kListedUploads, "");
  if (page.ok()) {
    for (const v1::Dataset& d : page->items) uploaded.push_back(d.name());
    more = !page->next_page_token.empty();
  }
  std::string uploads =
      uploaded.empty() ? "no uploaded datasets"
                       : absl::StrCat("the uploaded datasets ", absl::StrJoin(uploaded, ", "),
                                      more ? " (and more: see ListDatasets)" : "");
  return absl::NotFoundError(absl::StrCat(
      "no dataset has id or name \"", absl::CHexEscape(AsAbsl(dataset)),
      "\"; known are ", kFashionMnistTrain, ", ", kFashionMnistTest,
      ", synthetic:rows=N,cols=D,classes=C,separation=S,noise=E,seed=K (a generated Gaussian "
      "mixture; e.g. synthetic:rows=1000,cols=20,classes=3) and ",
      uploads));
}

absl::StatusOr<v1::Dataset> DatasetResolver::Describe(std::string_view dataset) {
  if (Split* split = FindSplit(dataset)) {
    DRFM_RETURN_IF_ERROR(CheckInstalled(*split));
    return SplitInfo(*split);
  }
  if (absl::StartsWith(AsAbsl(dataset), "synthetic:")) {
    DRFM_ASSIGN_OR_RETURN(const core::SyntheticSpec spec, core::ParseSyntheticName(dataset));
    v1::Dataset info;
    info.set_id(core::SyntheticName(spec));
    info.set_name(info.id());
    info.set_rows(spec.rows);
    info.set_cols(spec.cols);
    info.set_num_classes(spec.classes);
    *info.mutable_create_time() = ToProtoTime(create_time_);
    info.set_size_bytes(DatasetBytes(spec.rows, spec.cols));
    info.set_builtin(true);
    return info;
  }
  if (IsBuiltinName(dataset)) return UnknownDataset(dataset);
  // Anything else is an upload's id or name: refuse what none can be (a path, a NUL byte, ...).
  DRFM_RETURN_IF_ERROR(ValidateName("dataset", dataset));
  absl::StatusOr<v1::Dataset> stored = store_->GetDataset(dataset);
  if (absl::IsNotFound(stored.status())) return UnknownDataset(dataset);
  return stored;
}

absl::StatusOr<SliceShape> DatasetResolver::DescribeSlice(const v1::DatasetSlice& slice,
                                                          std::string_view field) {
  DRFM_RETURN_IF_ERROR(ValidateSlice(slice, field));
  absl::StatusOr<v1::Dataset> info = Describe(slice.dataset());
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat(AsAbsl(field), ".dataset: ", info.status().message()));
  }
  if (slice.offset() >= info->rows()) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(field), ".offset = ", slice.offset(), " is not below the ", info->rows(),
        " rows of ", info->name(), "; use an offset in [0, ", info->rows(), ")"));
  }
  SliceShape shape;
  const int64_t available = info->rows() - slice.offset();
  shape.rows = slice.limit() == 0 ? available : std::min(slice.limit(), available);
  shape.cols = info->cols();
  shape.num_classes = info->num_classes();
  shape.dataset = *std::move(info);
  return shape;
}

absl::StatusOr<std::shared_ptr<const core::Dataset>> DatasetResolver::LoadSplit(Split& split) {
  absl::MutexLock lock(&split.mu);
  if (split.data == nullptr) {
    DRFM_ASSIGN_OR_RETURN(core::Dataset data, core::LoadFashionMnist(builtin_dir_, split.split));
    split.data = std::make_shared<const core::Dataset>(std::move(data));
  }
  return split.data;
}

absl::StatusOr<core::Dataset> DatasetResolver::Load(const v1::DatasetSlice& slice,
                                                    std::string_view field) {
  DRFM_ASSIGN_OR_RETURN(const SliceShape shape, DescribeSlice(slice, field));
  if (Split* split = FindSplit(slice.dataset())) {
    DRFM_ASSIGN_OR_RETURN(std::shared_ptr<const core::Dataset> data, LoadSplit(*split));
    return core::SliceDataset(*data, slice.offset(), slice.limit());
  }
  if (absl::StartsWith(slice.dataset(), "synthetic:")) {
    DRFM_ASSIGN_OR_RETURN(const core::SyntheticSpec spec,
                          core::ParseSyntheticName(slice.dataset()));
    DRFM_ASSIGN_OR_RETURN(core::Dataset data, core::MakeSynthetic(spec));
    if (slice.offset() == 0 && (slice.limit() == 0 || slice.limit() >= data.rows())) return data;
    return core::SliceDataset(data, slice.offset(), slice.limit());
  }
  absl::StatusOr<core::Dataset> data =
      store_->LoadDataset(shape.dataset.id(), slice.offset(), slice.limit());
  if (absl::IsNotFound(data.status())) {
    const absl::Status unknown = UnknownDataset(slice.dataset());
    return absl::NotFoundError(absl::StrCat(AsAbsl(field), ".dataset: ", unknown.message()));
  }
  return data;
}

std::vector<v1::Dataset> DatasetResolver::InstalledBuiltins() {
  std::vector<v1::Dataset> builtins;
  for (Split* split : {&train_, &test_}) {
    if (CheckInstalled(*split).ok()) builtins.push_back(SplitInfo(*split));
  }
  return builtins;
}

}  // namespace drfm::server
