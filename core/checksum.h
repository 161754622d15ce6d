// The framing pieces both model storage formats (core/model.cc, core/mlp_model.cc) are written
// with: little-endian fixed-width integers and the zlib CRC-32 they end with. The fuzz harnesses
// (fuzz/fuzz_util.h) frame their inputs with the same functions.
#ifndef DRFM_CORE_CHECKSUM_H_
#define DRFM_CORE_CHECKSUM_H_

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace drfm::core {

// Appends `v` in little-endian byte order.
inline void AppendU32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}
inline void AppendU64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}

// zlib's CRC-32 of `bytes` (fed in pieces of at most 1 GiB, zlib's length being a uInt).
inline uint32_t Crc32(std::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t off = 0;
  while (off < bytes.size()) {
    const uInt len = static_cast<uInt>(std::min<size_t>(bytes.size() - off, size_t{1} << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + off), len);
    off += len;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace drfm::core

#endif  // DRFM_CORE_CHECKSUM_H_
