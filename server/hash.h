// SHA-256 (OpenSSL EVP) for content hashes and checksums of datasets, models and exports.
#ifndef DRFM_SERVER_HASH_H_
#define DRFM_SERVER_HASH_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace drfm::server {

// Incremental SHA-256. OpenSSL fails here only when out of memory, which is fatal. Not
// thread-safe.
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  // Lowercase hex digest; the object is spent afterwards.
  std::string HexDigest();

 private:
  struct Free {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> ctx_;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace drfm::server

#endif  // DRFM_SERVER_HASH_H_
