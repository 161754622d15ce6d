// Enforces the layering of ARCHITECTURE.md: core/ is pure numerics and includes no gRPC, protobuf
// (nor protoc-generated *.pb.h) or Prometheus header. Scans every *.h and *.cc under core/.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace {

namespace fs = std::filesystem;

// The forbidden library an #include line names, or nothing.
std::optional<std::string> ForbiddenInclude(const std::string& line) {
  static const std::regex include(R"(^\s*#\s*include\s*[<"]([^>"]+)[>"])");
  std::smatch m;
  if (!std::regex_search(line, m, include)) return std::nullopt;
  const std::string path = m[1].str();
  if (path.rfind("grpc", 0) == 0) return "gRPC";  // grpc/, grpcpp/, grpc++/
  if (path.rfind("google/protobuf", 0) == 0) return "protobuf";
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".pb.h") == 0)
    return "protobuf (generated code)";
  if (path.rfind("prometheus", 0) == 0) return "Prometheus";
  return std::nullopt;
}

TEST(LayeringTest, ForbiddenIncludeRecognizesEachLibraryInEitherSpelling) {
  EXPECT_EQ(ForbiddenInclude("#include <grpcpp/grpcpp.h>"), "gRPC");
  EXPECT_EQ(ForbiddenInclude("#include <grpc/grpc.h>"), "gRPC");
  EXPECT_EQ(ForbiddenInclude("  #  include \"grpcpp/server.h\""), "gRPC");
  EXPECT_EQ(ForbiddenInclude("#include <google/protobuf/message.h>"), "protobuf");
  EXPECT_EQ(ForbiddenInclude("#include \"proto/drfm.pb.h\""), "protobuf (generated code)");
  EXPECT_EQ(ForbiddenInclude("#include \"proto/drfm.grpc.pb.h\""), "protobuf (generated code)");
  EXPECT_EQ(ForbiddenInclude("#include <prometheus/registry.h>"), "Prometheus");
}

TEST(LayeringTest, ForbiddenIncludeIgnoresAllowedIncludesAndProse) {
  EXPECT_EQ(ForbiddenInclude("#include \"core/fit.h\""), std::nullopt);
  EXPECT_EQ(ForbiddenInclude("#include <Eigen/Core>"), std::nullopt);
  EXPECT_EQ(ForbiddenInclude("#include \"absl/status/status.h\""), std::nullopt);
  EXPECT_EQ(ForbiddenInclude("// core never includes <grpcpp/grpcpp.h>"), std::nullopt);
  EXPECT_EQ(ForbiddenInclude("int prometheus_free = 1;"), std::nullopt);
}

// "file:line includes a <library> header ...: <line>" for every forbidden include in the *.h and
// *.cc files under `dir` (paths relative to `base`), in file order.
std::vector<std::string> ScanForForbiddenIncludes(const fs::path& dir, const fs::path& base) {
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".h" || ext == ".cc")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> violations;
  for (const fs::path& file : files) {
    std::ifstream in(file);
    if (!in) {
      violations.push_back("cannot read " + file.string());
      continue;
    }
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (std::optional<std::string> library = ForbiddenInclude(line)) {
        violations.push_back(fs::relative(file, base).string() + ":" + std::to_string(number) +
                             " includes a " + *library +
                             " header (core must stay pure numerics): " + line);
      }
    }
  }
  return violations;
}

TEST(LayeringTest, ScanNamesTheFileAndLineOfAForbiddenInclude) {
  const fs::path root = fs::path(::testing::TempDir()) / "drfm_layering_test";
  fs::remove_all(root);
  fs::create_directories(root / "core" / "sub");
  std::ofstream(root / "core" / "ok.h") << "#include \"core/types.h\"\n";
  std::ofstream(root / "core" / "sub" / "bad.cc")
      << "#include <vector>\n\n#include <grpcpp/grpcpp.h>\n";
  std::ofstream(root / "core" / "notes.txt") << "#include <prometheus/registry.h>\n";
  const std::vector<std::string> violations = ScanForForbiddenIncludes(root / "core", root);
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].rfind("core/sub/bad.cc:3 includes a gRPC header", 0), 0u)
      << violations[0];
  fs::remove_all(root);
}

TEST(LayeringTest, CoreIncludesNoGrpcProtobufOrPrometheusHeader) {
  const fs::path source = DRFM_SOURCE_DIR;
  const fs::path core = source / "core";
  ASSERT_TRUE(fs::is_directory(core)) << core;
  // Not vacuous: the scan sees the core library itself.
  ASSERT_TRUE(fs::is_regular_file(core / "fit.h"));
  for (const std::string& violation : ScanForForbiddenIncludes(core, source))
    ADD_FAILURE() << violation;
}

}  // namespace
