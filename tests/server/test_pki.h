// A throwaway PKI for tests of TLS and mutual TLS, made at test time with OpenSSL's C API: a CA, a
// server certificate for localhost / 127.0.0.1, a client certificate from the same CA, and a
// second CA with a client certificate of its own (a stranger). Header-only; used by
// tests/server/auth_test.cc and tests/e2e/security_test.cc.
#ifndef DRFM_TESTS_SERVER_TEST_PKI_H_
#define DRFM_TESTS_SERVER_TEST_PKI_H_

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace drfm::testing_pki {

struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertDeleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using Cert = std::unique_ptr<X509, CertDeleter>;

// A key pair with its certificate, and both in PEM.
struct Identity {
  Key key;
  Cert cert;
  std::string key_pem;
  std::string cert_pem;
};

inline void AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  ASSERT_NE(ext, nullptr) << "extension " << OBJ_nid2sn(nid) << "=" << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

inline std::string ToPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

inline std::string ToPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

enum class Role { kCa, kServer, kClient };

// A P-256 key and a certificate for `common_name`, signed by `issuer` (self-signed when null),
// valid from an hour ago for a day. Server certificates name DNS:localhost and IP:127.0.0.1.
inline Identity MakeIdentity(const std::string& common_name, Role role, const Identity* issuer) {
  static std::atomic<long> serial{1};
  Identity id;
  id.key.reset(EVP_EC_gen("P-256"));
  EXPECT_NE(id.key, nullptr);
  id.cert.reset(X509_new());
  X509* cert = id.cert.get();
  X509_set_version(cert, 2);  // v3.
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, id.key.get());
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("drfm tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* issuer_cert = issuer != nullptr ? issuer->cert.get() : cert;
  EVP_PKEY* issuer_key = issuer != nullptr ? issuer->key.get() : id.key.get();
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer_cert, cert, nullptr, nullptr, 0);
  AddExtension(cert, &ctx, NID_subject_key_identifier, "hash");
  switch (role) {
    case Role::kCa:
      AddExtension(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE");
      AddExtension(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
      break;
    case Role::kServer:
      AddExtension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE");
      AddExtension(cert, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
      AddExtension(cert, &ctx, NID_ext_key_usage, "serverAuth");
      AddExtension(cert, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
      AddExtension(cert, &ctx, NID_authority_key_identifier, "keyid");
      break;
    case Role::kClient:
      AddExtension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE");
      AddExtension(cert, &ctx, NID_key_usage, "critical,digitalSignature");
      AddExtension(cert, &ctx, NID_ext_key_usage, "clientAuth");
      AddExtension(cert, &ctx, NID_authority_key_identifier, "keyid");
      break;
  }
  EXPECT_GT(X509_sign(cert, issuer_key, EVP_sha256()), 0);
  id.cert_pem = ToPem(cert);
  id.key_pem = ToPem(id.key.get());
  return id;
}

// The PEM files of a test PKI, written into an existing directory.
struct Pki {
  explicit Pki(const std::string& dir) {
    auto write = [&dir](const std::string& name, const std::string& contents) {
      const std::string file = (std::filesystem::path(dir) / name).string();
      std::ofstream(file, std::ios::binary) << contents;
      return file;
    };
    Identity ca = MakeIdentity("drfm test CA", Role::kCa, nullptr);
    Identity server = MakeIdentity("localhost", Role::kServer, &ca);
    Identity client = MakeIdentity("drfm test client", Role::kClient, &ca);
    Identity other_ca = MakeIdentity("other CA", Role::kCa, nullptr);
    Identity stranger = MakeIdentity("stranger", Role::kClient, &other_ca);
    ca_file = write("ca.pem", ca.cert_pem);
    server_cert_file = write("server.pem", server.cert_pem);
    server_key_file = write("server.key", server.key_pem);
    client_cert_file = write("client.pem", client.cert_pem);
    client_key_file = write("client.key", client.key_pem);
    other_ca_file = write("other_ca.pem", other_ca.cert_pem);
    stranger_cert_file = write("stranger.pem", stranger.cert_pem);
    stranger_key_file = write("stranger.key", stranger.key_pem);
  }
  std::string ca_file, server_cert_file, server_key_file, client_cert_file, client_key_file,
      other_ca_file, stranger_cert_file, stranger_key_file;
};

}  // namespace drfm::testing_pki

#endif  // DRFM_TESTS_SERVER_TEST_PKI_H_
