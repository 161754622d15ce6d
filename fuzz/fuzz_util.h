// Helpers shared by the libFuzzer targets in fuzz/: an abort-on-violation check for the
// properties a target asserts (a violated property is a finding, like a crash), splitting an
// input at a delimiter, and gzip compression so a target can feed valid gzip streams to the
// readers. Header-only; each target is one .cc file with LLVMFuzzerTestOneInput.
#ifndef DRFM_FUZZ_FUZZ_UTIL_H_
#define DRFM_FUZZ_FUZZ_UTIL_H_

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "core/checksum.h"

// Aborts (a libFuzzer finding) when a property of the code under test does not hold.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace drfm::fuzz {

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// (text before the first `delimiter`, text after it); without one, (all of `s`, "").
inline std::pair<std::string_view, std::string_view> SplitOnce(std::string_view s,
                                                               std::string_view delimiter) {
  const size_t at = s.find(delimiter);
  if (at == std::string_view::npos) return {s, std::string_view()};
  return {s.substr(0, at), s.substr(at + delimiter.size())};
}

// `bytes` as one gzip member (what gzip(1) writes), at compression `level` (0-9).
inline std::string GzipCompress(std::string_view bytes, int level) {
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  if (deflateInit2(&stream, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    std::abort();
  }
  std::string out(deflateBound(&stream, bytes.size()) + 32, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&stream, Z_FINISH);
  FUZZ_CHECK(rc == Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// The model formats' framing: little-endian integers and the CRC-32 they end with.
using core::AppendU32;
using core::AppendU64;
using core::Crc32;

// How model_fuzz turns an input into a native Deep RFM model file (core/model.h). The first byte
// picks the mode (byte % 3); the checksum at the end would make almost every mutation fail
// early, so two modes repair it:
//   0: the rest is the file as it is;
//   1: the rest is "<header JSON>" kDataMark "<tensor data>", framed here (magic, version 1,
//      lengths, CRC-32) so the JSON and the tensors are what gets fuzzed;
//   2: the rest is a whole file whose trailing CRC-32 is recomputed, so the fixed fields
//      (version, lengths) are fuzzed as well.
// Shared with tests/core/fuzz_regression_test.cc, which replays fuzz/regressions/model/.
inline constexpr std::string_view kDataMark = "\n@@DATA@@\n";

inline std::string WithCrc32(std::string file) {
  AppendU32(&file, Crc32(file));
  return file;
}

inline std::string ModelFileFromFuzzInput(std::string_view input) {
  if (input.empty()) return std::string();
  const std::string_view rest = input.substr(1);
  switch (static_cast<uint8_t>(input[0]) % 3) {
    case 0:
      return std::string(rest);
    case 1: {
      const auto [header, tensors] = SplitOnce(rest, kDataMark);
      std::string file = "DRFMMODL";
      AppendU32(&file, 1);
      AppendU32(&file, 0);
      AppendU64(&file, header.size());
      file += header;
      AppendU64(&file, tensors.size());
      file += tensors;
      return WithCrc32(std::move(file));
    }
    default:
      if (rest.size() < 4) return std::string(rest);
      return WithCrc32(std::string(rest.substr(0, rest.size() - 4)));
  }
}

// How safetensors_fuzz turns an input into a file for MlpModel (core/mlp_model.h): the first byte
// picks the mode (byte % 4):
//   0: the rest is a safetensors file as it is (for ImportSafetensors);
//   1: the rest is "<header JSON>" kDataMark "<tensor data>"; the 8-byte header length is
//      prepended here, so the JSON and the data are what gets fuzzed (ImportSafetensors);
//   2: as 1, then wrapped in the MLP storage format (magic, version 1, reserved, CRC-32) for
//      MlpModel::Deserialize;
//   3: the rest is a storage-format file whose trailing CRC-32 is recomputed (Deserialize).
struct MlpFuzzFile {
  bool stored = false;  // true: for MlpModel::Deserialize; false: for ImportSafetensors
  std::string bytes;
};

inline MlpFuzzFile MlpFileFromFuzzInput(std::string_view input) {
  MlpFuzzFile out;
  if (input.empty()) return out;
  const std::string_view rest = input.substr(1);
  const int mode = static_cast<uint8_t>(input[0]) % 4;
  if (mode == 0) {
    out.bytes = std::string(rest);
    return out;
  }
  if (mode == 3) {
    out.stored = true;
    out.bytes = rest.size() < 4 ? std::string(rest)
                                : WithCrc32(std::string(rest.substr(0, rest.size() - 4)));
    return out;
  }
  const auto [header, tensors] = SplitOnce(rest, kDataMark);
  std::string safetensors;
  AppendU64(&safetensors, header.size());
  safetensors += header;
  safetensors += tensors;
  if (mode == 1) {
    out.bytes = std::move(safetensors);
    return out;
  }
  out.stored = true;
  std::string file("DRFMMLP\0", 8);
  AppendU32(&file, 1);
  AppendU32(&file, 0);
  file += safetensors;
  out.bytes = WithCrc32(std::move(file));
  return out;
}

// A fresh directory for a target's store: under $DRFM_FUZZ_TMPDIR when set (scripts/fuzz.sh
// sets it and removes it afterwards, also after a crash), else under /dev/shm when it exists (the
// store fsyncs every commit, which is cheap on tmpfs), else under $TMPDIR or /tmp. Removed when
// the process exits normally (libFuzzer exits through exit() at the end of a bounded run).
// Aborts on failure.
inline std::string MakeTempDir(const char* prefix) {
  std::string base = "/dev/shm";
  if (const char* dir = std::getenv("DRFM_FUZZ_TMPDIR"); dir != nullptr && *dir != '\0') {
    base = dir;
  } else if (!std::filesystem::is_directory(base)) {
    const char* tmp = std::getenv("TMPDIR");
    base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::string templ = base + "/" + prefix + "XXXXXX";
  FUZZ_CHECK(mkdtemp(templ.data()) != nullptr);
  static std::string* const to_remove = new std::string(templ);
  *to_remove = templ;
  std::atexit([] {
    std::error_code ignored;
    std::filesystem::remove_all(*to_remove, ignored);
  });
  return templ;
}

}  // namespace drfm::fuzz

#endif  // DRFM_FUZZ_FUZZ_UTIL_H_
