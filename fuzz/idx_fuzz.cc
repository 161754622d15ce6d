// Fuzzes the IDX readers (core/io.h: ParseIdxFeatures, ParseIdxLabels) on plain bytes and, through
// ParseFeatures / ParseLabels, on gzip streams: the harness gzips the input itself (one member,
// or two concatenated members split at a fuzzer-chosen point) so the decompressor sees valid
// streams as often as corrupt ones. The first byte picks the mode:
//   bit 0 clear: the rest is given to every reader as it is (also covering corrupt gzip);
//   bit 0 set:   the rest is gzipped at level (byte >> 4) % 10 first; with bit 1 also set it is
//                split at the position the second byte names into two gzip members.
// Properties: no crash, leak or undefined behaviour; a gzipped input parses exactly as the plain
// one does (same values or the same failure); successful parses are non-empty and finite.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/io.h"
#include "fuzz/fuzz_util.h"

namespace {

using drfm::core::RowMatrixF;

void CheckFeatures(const absl::StatusOr<RowMatrixF>& m) {
  if (!m.ok()) return;
  FUZZ_CHECK(m->rows() >= 1 && m->cols() >= 1);
  FUZZ_CHECK(m->allFinite());
}

void CheckLabels(const absl::StatusOr<std::vector<int32_t>>& labels) {
  if (!labels.ok()) return;
  FUZZ_CHECK(!labels->empty());
  for (int32_t y : *labels) FUZZ_CHECK(y >= 0);
}

// Same success and, on success, bit-identical values.
void CheckSame(const absl::StatusOr<RowMatrixF>& a, const absl::StatusOr<RowMatrixF>& b) {
  FUZZ_CHECK(a.ok() == b.ok());
  if (!a.ok()) return;
  FUZZ_CHECK(a->rows() == b->rows() && a->cols() == b->cols());
  FUZZ_CHECK(std::memcmp(a->data(), b->data(), sizeof(float) * a->size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string_view plain = drfm::fuzz::AsView(data + 1, size - 1);
  const absl::StatusOr<RowMatrixF> features = drfm::core::ParseIdxFeatures(plain);
  const absl::StatusOr<std::vector<int32_t>> labels = drfm::core::ParseIdxLabels(plain);
  CheckFeatures(features);
  CheckLabels(labels);
  if ((mode & 1) == 0) {
    // Raw bytes through the sniffing readers: corrupt gzip, CSV and .npy look-alikes as well.
    CheckFeatures(drfm::core::ParseFeatures(plain));
    CheckLabels(drfm::core::ParseLabels(plain));
    if (drfm::core::IsGzip(plain)) (void)drfm::core::Gunzip(plain, 1 << 20);
    return 0;
  }
  const int level = (mode >> 4) % 10;
  std::string gz;
  if ((mode & 2) != 0 && plain.size() >= 2) {
    const size_t cut = 1 + static_cast<uint8_t>(plain[0]) % (plain.size() - 1);
    gz = drfm::fuzz::GzipCompress(plain.substr(0, cut), level) +
         drfm::fuzz::GzipCompress(plain.substr(cut), level);
  } else {
    gz = drfm::fuzz::GzipCompress(plain, level);
  }
  const absl::StatusOr<std::string> gunzipped = drfm::core::Gunzip(gz);
  FUZZ_CHECK(gunzipped.ok() && *gunzipped == plain);
  // A small limit must refuse, never truncate silently.
  if (!plain.empty()) FUZZ_CHECK(!drfm::core::Gunzip(gz, plain.size() - 1).ok());
  if (drfm::core::SniffFormat(plain) == drfm::core::DataFormat::kIdx) {
    CheckSame(drfm::core::ParseFeatures(gz), features);
    const absl::StatusOr<std::vector<int32_t>> gz_labels = drfm::core::ParseLabels(gz);
    FUZZ_CHECK(gz_labels.ok() == labels.ok());
    if (labels.ok()) FUZZ_CHECK(*gz_labels == *labels);
  } else {
    CheckFeatures(drfm::core::ParseFeatures(gz));
    CheckLabels(drfm::core::ParseLabels(gz));
  }
  return 0;
}
