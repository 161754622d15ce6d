// Fuzzes the dataset upload assembly of the server (server/dataset_service.h: the header, then
// feature and label chunks in any interleaving, validated and committed to the store) through a
// real DatasetServiceImpl served on a 127.0.0.1 port of this process, backed by a SqliteStore in
// a temporary directory. A FuzzedDataProvider turns the input into one upload: the header's
// fields (often small and valid, sometimes anything), the payload (often exactly what the header
// asks for, sometimes not), how it is cut into chunks, and stray messages (a second header, an
// empty message, a message parsed from raw wire bytes) slipped in between.
// Properties: no crash, leak, hang or undefined behaviour; an upload succeeds only with the
// header's exact byte counts, finite features and labels in range, and then the stored dataset
// holds exactly the bytes that were sent; an upload that is valid by construction succeeds;
// failures are INVALID_ARGUMENT or DATA_LOSS.
#include <fuzzer/FuzzedDataProvider.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "drfm/v1/datasets.grpc.pb.h"
#include "fuzz/fuzz_server.h"
#include "fuzz/fuzz_util.h"
#include "server/dataset_service.h"
#include "server/datasets.h"
#include "server/hash.h"
#include "server/store.h"

namespace {

using drfm::server::DatasetResolver;
using drfm::server::DatasetServiceImpl;
using drfm::server::SqliteStore;
namespace v1 = drfm::v1;

struct Env {
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<DatasetResolver> resolver;
  std::unique_ptr<DatasetServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::DatasetService::Stub> stub;
};

Env* env = nullptr;

// Names the server accepts, and some it must refuse.
constexpr const char* kGoodNames[] = {"d", "fuzz-set", "a.b_c-1", "X9"};
constexpr const char* kBadNames[] = {"", "x:y", "../etc", ".hidden", "a b", "n\u00e9"};

struct Upload {
  v1::DatasetHeader header;
  std::string features;  // every feature byte sent, in order
  std::string labels;    // every label byte sent, in order
  std::vector<v1::UploadDatasetRequest> messages;
  bool valid = true;  // valid by construction: the server must accept it
};

int64_t PickCount(FuzzedDataProvider& p) {
  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return p.ConsumeIntegral<int64_t>();
    case 1:
      return p.ConsumeIntegralInRange<int64_t>(-2, 1 << 21);
    default:
      return p.ConsumeIntegralInRange<int64_t>(1, 8);
  }
}

Upload MakeUpload(FuzzedDataProvider& p) {
  Upload u;
  v1::DatasetHeader& h = u.header;
  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      h.set_name(kBadNames[p.ConsumeIntegralInRange<size_t>(0, std::size(kBadNames) - 1)]);
      u.valid = false;
      break;
    case 1:
      // ASCII only: a proto3 string must be UTF-8, or the message does not even parse.
      h.set_name(p.ConsumeRandomLengthString(140));
      for (char& c : *h.mutable_name()) c = static_cast<char>(c & 0x7f);
      u.valid = false;  // possibly valid; not asserted
      break;
    default:
      h.set_name(kGoodNames[p.ConsumeIntegralInRange<size_t>(0, std::size(kGoodNames) - 1)]);
  }
  h.set_rows(PickCount(p));
  h.set_cols(PickCount(p));
  const bool small = h.rows() >= 1 && h.cols() >= 1 && h.rows() <= 64 && h.cols() <= 64;
  if (!small) u.valid = false;
  if (p.ConsumeBool()) {
    h.set_num_classes(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                      : p.ConsumeIntegralInRange<int32_t>(-1, 6));
    if (h.num_classes() < 1 || h.num_classes() > (1 << 20)) u.valid = false;
  }

  // The payload: exactly what the header asks for (values from the input, padded with zeros when
  // it runs out), or any bytes.
  if (small && p.ConsumeIntegralInRange<int>(0, 7) != 0) {
    const size_t count = static_cast<size_t>(h.rows() * h.cols());
    for (size_t i = 0; i < count; ++i) {
      float f = p.ConsumeIntegralInRange<int>(0, 15) == 0
                    ? p.ConsumeFloatingPoint<float>()
                    : static_cast<float>(p.ConsumeIntegralInRange<int>(-100, 100)) / 8;
      if (!std::isfinite(f)) u.valid = false;
      u.features.append(reinterpret_cast<const char*>(&f), 4);
    }
    for (int64_t i = 0; i < h.rows(); ++i) {
      const int32_t y = p.ConsumeIntegralInRange<int>(0, 15) == 0
                            ? p.ConsumeIntegral<int32_t>()
                            : p.ConsumeIntegralInRange<int32_t>(0, 5);
      if (y < 0 || y >= (h.has_num_classes() ? h.num_classes() : (1 << 20))) u.valid = false;
      u.labels.append(reinterpret_cast<const char*>(&y), 4);
    }
  } else {
    u.features = p.ConsumeRandomLengthString(2048);
    u.labels = p.ConsumeRandomLengthString(512);
    u.valid = false;
  }

  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      h.set_sha256(drfm::server::Sha256Hex(u.features + u.labels));
      break;
    case 1: {
      std::string wrong = drfm::server::Sha256Hex(u.features + u.labels + "x");
      if (p.ConsumeBool()) wrong = p.ConsumeRandomLengthString(70);
      h.set_sha256(wrong);
      u.valid = false;
      break;
    }
    default:
      break;
  }

  v1::UploadDatasetRequest first;
  *first.mutable_header() = h;
  u.messages.push_back(first);
  // Cut both planned payloads into chunks of fuzzer-chosen sizes, interleaved; what is actually
  // sent (stray chunks included) is recorded in u.features and u.labels.
  const std::string features = std::move(u.features), labels = std::move(u.labels);
  u.features.clear();
  u.labels.clear();
  size_t f = 0, l = 0;
  while (f < features.size() || l < labels.size()) {
    // Once the input is used up, the rest goes in one chunk.
    const int what = p.remaining_bytes() == 0 ? -1 : p.ConsumeIntegralInRange<int>(0, 31);
    v1::UploadDatasetRequest m;
    if (what == 0) {
      *m.mutable_header() = h;  // a second header
      u.valid = false;
    } else if (what == 1) {
      u.valid = false;  // an empty message: neither header nor chunk
    } else if (what == 2) {
      if (!m.ParseFromString(p.ConsumeRandomLengthString(64))) m.Clear();
      if (!m.has_chunk() || !m.chunk().features().empty() || !m.chunk().labels().empty()) {
        u.valid = false;
      }
    } else {
      const size_t nf =
          what < 0 ? features.size() - f
                   : std::min(features.size() - f, p.ConsumeIntegralInRange<size_t>(0, 300));
      const size_t nl = what < 0
                            ? labels.size() - l
                            : std::min(labels.size() - l, p.ConsumeIntegralInRange<size_t>(0, 100));
      m.mutable_chunk()->set_features(features.substr(f, nf));
      m.mutable_chunk()->set_labels(labels.substr(l, nl));
      f += nf;
      l += nl;
    }
    if (m.has_chunk()) {
      u.features += m.chunk().features();
      u.labels += m.chunk().labels();
    }
    u.messages.push_back(std::move(m));
    if (u.messages.size() > 4096) {
      u.valid = false;
      break;
    }
  }
  return u;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  env = new Env;
  std::string data_dir;
  env->store = drfm::fuzz::OpenTempStore("drfm-upload-fuzz-", &data_dir);
  // No Fashion-MNIST directory: the uploads are all there is.
  env->resolver = std::make_unique<DatasetResolver>(env->store.get(), data_dir + "/none");
  env->service = std::make_unique<DatasetServiceImpl>(env->store.get(), env->resolver.get());
  env->stub =
      v1::DatasetService::NewStub(drfm::fuzz::ServeOnLoopback(env->service.get(), &env->server));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  Upload upload = MakeUpload(provider);

  grpc::ClientContext context;
  v1::Dataset response;
  const grpc::Status status =
      drfm::fuzz::SendAll(*env->stub->UploadDataset(&context, &response), upload.messages);

  if (upload.valid) FUZZ_CHECK(status.ok());
  if (!status.ok()) {
    FUZZ_CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
               status.error_code() == grpc::StatusCode::DATA_LOSS);
    return 0;
  }
  const v1::DatasetHeader& h = upload.header;
  FUZZ_CHECK(response.rows() == h.rows() && response.cols() == h.cols());
  FUZZ_CHECK(static_cast<int64_t>(upload.features.size()) == h.rows() * h.cols() * 4);
  FUZZ_CHECK(static_cast<int64_t>(upload.labels.size()) == h.rows() * 4);
  absl::StatusOr<drfm::core::Dataset> stored = env->store->LoadDataset(response.id(), 0, 0);
  FUZZ_CHECK(stored.ok());
  FUZZ_CHECK(stored->rows() == h.rows() && stored->cols() == h.cols());
  FUZZ_CHECK(std::memcmp(stored->features.data(), upload.features.data(), upload.features.size()) ==
             0);
  FUZZ_CHECK(std::memcmp(stored->labels.data(), upload.labels.data(), upload.labels.size()) == 0);
  FUZZ_CHECK(stored->features.allFinite());
  for (int32_t y : stored->labels) FUZZ_CHECK(y >= 0 && y < response.num_classes());
  // Start every input from an empty store.
  FUZZ_CHECK(env->store->DeleteDataset(response.id()).ok());
  return 0;
}
