#include "server/hash.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "core/status.h"

namespace drfm::server {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  DRFM_CHECK(ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1);
}

void Sha256::Update(const void* data, size_t size) {
  DRFM_CHECK(EVP_DigestUpdate(ctx_.get(), data, size) == 1);
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  DRFM_CHECK(EVP_DigestFinal_ex(ctx_.get(), digest, &size) == 1);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), size));
}

void Sha256::Free::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

std::string Sha256Hex(std::string_view data) {
  Sha256 hash;
  hash.Update(data.data(), data.size());
  return hash.HexDigest();
}

}  // namespace drfm::server
