// Fuzzes the model import assembly of the server (server/model_service.h ImportModel: a header,
// then the safetensors file in chunks, checked against the header's size and SHA-256, parsed and
// committed to the store by server/model_registry.h) through a real ModelServiceImpl served on a
// 127.0.0.1 port of this process, backed by a SqliteStore in a temporary directory. A
// FuzzedDataProvider turns the input into one import: the header (a good or bad name; size_bytes
// exact, 0, off or absurd; sha256 right, wrong, malformed or unset), the file (an MLP built from
// the input and exported, possibly with a few bytes changed, or any bytes), how it is cut into
// chunks, and stray messages (a second header, an empty message, raw wire bytes).
// Properties: no crash, leak, hang or undefined behaviour; an import that is valid by
// construction succeeds; failures are INVALID_ARGUMENT or DATA_LOSS and store nothing; an
// accepted model is listed, exports to a file that imports again, and is the file's MLP.
#include <fuzzer/FuzzedDataProvider.h>
#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mlp_model.h"
#include "drfm/v1/models.grpc.pb.h"
#include "fuzz/fuzz_server.h"
#include "fuzz/fuzz_util.h"
#include "server/hash.h"
#include "server/model_registry.h"
#include "server/model_service.h"
#include "server/store.h"

namespace {

using drfm::core::MlpModel;
using drfm::server::ModelRegistry;
using drfm::server::ModelServiceImpl;
using drfm::server::SqliteStore;
namespace v1 = drfm::v1;

// Far below the server's default, so that size checks are reachable.
constexpr int64_t kMaxImportBytes = 1 << 16;

struct Env {
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<ModelRegistry> registry;
  std::unique_ptr<ModelServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::ModelService::Stub> stub;
};

Env* env = nullptr;

constexpr const char* kGoodNames[] = {"m", "imported-net", "a.b_c-1"};
constexpr const char* kBadNames[] = {"", "x/y", "..", ".hidden", "a b"};

struct Import {
  v1::ImportModelHeader header;
  std::string file;  // every chunk byte sent, in order
  std::vector<v1::ImportModelRequest> messages;
  bool valid = true;  // valid by construction: the server must accept it
};

// A small MLP whose shapes and weights come from the input, exported as safetensors.
std::string BuiltFile(FuzzedDataProvider& p) {
  drfm::core::MlpParams params;
  params.row_normalize = p.ConsumeBool();
  const int depth = p.ConsumeIntegralInRange<int>(0, 3);
  int64_t in = p.ConsumeIntegralInRange<int64_t>(1, 6);
  const int64_t input_dim = in;
  for (int l = 0; l <= depth; ++l) {
    const int64_t out = l == depth ? p.ConsumeIntegralInRange<int64_t>(2, 5)
                                   : p.ConsumeIntegralInRange<int64_t>(1, 6);
    drfm::core::RowMatrixF w(out, in);
    for (int64_t i = 0; i < w.size(); ++i) {
      w.data()[i] = static_cast<float>(p.ConsumeIntegralInRange<int>(-64, 64)) / 16;
    }
    params.weights.push_back(std::move(w));
    in = out;
  }
  if (p.ConsumeBool()) {
    params.standardize = true;
    params.mean = drfm::core::Vector<float>::Constant(input_dim, 0.5f);
    params.std = drfm::core::Vector<float>::Constant(input_dim, 2.0f);
  }
  absl::StatusOr<MlpModel> model = MlpModel::Create(std::move(params));
  FUZZ_CHECK(model.ok());
  return model->ExportSafetensors();
}

Import MakeImport(FuzzedDataProvider& p) {
  Import u;
  v1::ImportModelHeader& h = u.header;
  if (p.ConsumeIntegralInRange<int>(0, 7) == 0) {
    h.set_name(kBadNames[p.ConsumeIntegralInRange<size_t>(0, std::size(kBadNames) - 1)]);
    u.valid = false;
  } else {
    h.set_name(kGoodNames[p.ConsumeIntegralInRange<size_t>(0, std::size(kGoodNames) - 1)]);
  }

  std::string file;
  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      file = p.ConsumeRandomLengthString(4096);
      u.valid = false;  // possibly a valid file; not asserted
      break;
    case 1: {
      file = BuiltFile(p);
      // A few bytes changed: the header JSON, the offsets or the data.
      const int edits = p.ConsumeIntegralInRange<int>(1, 4);
      for (int e = 0; e < edits && !file.empty(); ++e) {
        file[p.ConsumeIntegralInRange<size_t>(0, file.size() - 1)] = p.ConsumeIntegral<char>();
      }
      u.valid = false;  // possibly still valid; not asserted
      break;
    }
    default:
      file = BuiltFile(p);
  }

  switch (p.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      break;  // 0: not checked
    case 1:
      h.set_size_bytes(p.ConsumeIntegral<int64_t>());
      if (h.size_bytes() != static_cast<int64_t>(file.size())) u.valid = false;
      break;
    case 2:
      h.set_size_bytes(static_cast<int64_t>(file.size()) + p.ConsumeIntegralInRange<int>(-3, 3));
      if (h.size_bytes() != static_cast<int64_t>(file.size())) u.valid = false;
      break;
    default:
      h.set_size_bytes(static_cast<int64_t>(file.size()));
  }
  if (h.size_bytes() < 0 || h.size_bytes() > kMaxImportBytes) u.valid = false;
  switch (p.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      break;  // unset
    case 1:
      h.set_sha256(drfm::server::Sha256Hex(file + "x"));
      u.valid = false;
      break;
    case 2:
      h.set_sha256(p.ConsumeRandomLengthString(70));
      for (char& c : *h.mutable_sha256()) c = static_cast<char>(c & 0x7f);
      u.valid = false;  // 64 hex digits by chance would still be the wrong hash
      break;
    default:
      h.set_sha256(drfm::server::Sha256Hex(file));
  }

  v1::ImportModelRequest first;
  *first.mutable_header() = h;
  if (p.ConsumeIntegralInRange<int>(0, 31) == 0) {
    first.Clear();  // no header first
    u.valid = false;
  }
  u.messages.push_back(first);
  size_t offset = 0;
  while (offset < file.size()) {
    const int what = p.remaining_bytes() == 0 ? -1 : p.ConsumeIntegralInRange<int>(0, 31);
    v1::ImportModelRequest m;
    if (what == 0) {
      *m.mutable_header() = h;  // a second header
      u.valid = false;
    } else if (what == 1) {
      u.valid = false;  // an empty message: neither header nor chunk
    } else if (what == 2) {
      if (!m.ParseFromString(p.ConsumeRandomLengthString(64))) m.Clear();
      if (m.part_case() != v1::ImportModelRequest::kChunk || !m.chunk().empty()) u.valid = false;
    } else {
      const size_t n =
          what < 0 ? file.size() - offset
                   : std::min(file.size() - offset, p.ConsumeIntegralInRange<size_t>(0, 512));
      m.set_chunk(file.substr(offset, n));
      offset += n;
    }
    if (m.part_case() == v1::ImportModelRequest::kChunk) u.file += m.chunk();
    u.messages.push_back(std::move(m));
    if (u.messages.size() > 4096) {
      u.valid = false;
      break;
    }
  }
  if (u.file != file) u.valid = false;
  return u;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  env = new Env;
  env->store = drfm::fuzz::OpenTempStore("drfm-import-fuzz-");
  drfm::server::ModelRegistryOptions registry_options;
  registry_options.max_import_bytes = kMaxImportBytes;
  env->registry = std::make_unique<ModelRegistry>(env->store.get(), registry_options);
  env->service = std::make_unique<ModelServiceImpl>(env->store.get(), env->registry.get(), nullptr);
  env->stub =
      v1::ModelService::NewStub(drfm::fuzz::ServeOnLoopback(env->service.get(), &env->server));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  const Import import = MakeImport(provider);

  grpc::ClientContext context;
  v1::Model response;
  const grpc::Status status =
      drfm::fuzz::SendAll(*env->stub->ImportModel(&context, &response), import.messages);

  const auto listed = env->store->ListModels("", 10, "");
  FUZZ_CHECK(listed.ok());
  if (import.valid) FUZZ_CHECK(status.ok());
  if (!status.ok()) {
    FUZZ_CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
               status.error_code() == grpc::StatusCode::DATA_LOSS);
    FUZZ_CHECK(listed->items.empty());  // nothing half-imported
    return 0;
  }
  FUZZ_CHECK(response.name() == import.header.name() && response.kind() == v1::Model::MLP);
  FUZZ_CHECK(listed->items.size() == 1 && listed->items[0].version() == response.version());
  // The stored model is the file's MLP: it exports to a file that imports again to the same
  // network as the one the uploaded file describes.
  const absl::StatusOr<MlpModel> sent = MlpModel::ImportSafetensors(import.file);
  FUZZ_CHECK(sent.ok());
  const auto exported = env->registry->Export(response.name(), response.version());
  FUZZ_CHECK(exported.ok());
  FUZZ_CHECK(exported->second == sent->ExportSafetensors());
  FUZZ_CHECK(response.input_dim() == sent->input_dim() &&
             response.classes() == sent->num_classes());
  // Start every input from an empty store (as DeleteModel does: the registry forgets it too).
  FUZZ_CHECK(env->store->DeleteModel(response.name(), response.version()).ok());
  env->registry->Evict(response.name());
  return 0;
}
