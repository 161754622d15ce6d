// Regression tests for what fuzzing the server (fuzz/upload_fuzz.cc, fuzz/request_fuzz.cc) found,
// each with its input rebuilt readably: a DatasetServiceImpl on a 127.0.0.1 port (port 0) backed
// by a SqliteStore in a temporary directory, driven through the generated client stub.
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "drfm/v1/datasets.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/dataset_service.h"
#include "server/datasets.h"
#include "server/store.h"

namespace drfm::server {
namespace {

namespace fs = std::filesystem;

class UploadFuzzRegressionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/drfm_fuzz_regression.XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    SqliteStoreOptions options;
    options.data_dir = dir_;
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    resolver_ = std::make_unique<DatasetResolver>(store_.get(), dir_ + "/no-builtins");
    service_ = std::make_unique<DatasetServiceImpl>(store_.get(), resolver_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::DatasetService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    service_.reset();
    resolver_.reset();
    store_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Uploads one row of one zero feature per label, in one chunk.
  grpc::Status Upload(const std::vector<int32_t>& labels, v1::Dataset* response,
                      std::optional<int32_t> num_classes = std::nullopt) {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientWriter<v1::UploadDatasetRequest>> writer =
        stub_->UploadDataset(&context, response);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_name("d");
    header.mutable_header()->set_rows(static_cast<int64_t>(labels.size()));
    header.mutable_header()->set_cols(1);
    if (num_classes.has_value()) header.mutable_header()->set_num_classes(*num_classes);
    v1::UploadDatasetRequest chunk;
    chunk.mutable_chunk()->set_features(std::string(4 * labels.size(), '\0'));
    chunk.mutable_chunk()->set_labels(
        std::string(reinterpret_cast<const char*>(labels.data()), 4 * labels.size()));
    if (writer->Write(header)) writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<DatasetResolver> resolver_;
  std::unique_ptr<DatasetServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::DatasetService::Stub> stub_;
};

// Found by upload_fuzz (UBSan: signed integer overflow): without header.num_classes the class
// count was max label + 1, which overflowed int32 for a label of INT32_MAX.
TEST_F(UploadFuzzRegressionTest, LabelOfInt32MaxWithoutNumClassesIsRejectedNotOverflowed) {
  v1::Dataset response;
  const grpc::Status status = Upload({0, INT32_MAX}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "label of row 1"))
      << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "[0, 1048576)")) << status.error_message();
}

TEST_F(UploadFuzzRegressionTest, ImpliedClassCountHasTheBoundOfAGivenOne) {
  v1::Dataset response;
  // The largest label a header's num_classes (at most 2^20) allows is also the largest implied.
  grpc::Status status = Upload({0, (1 << 20) - 1}, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.num_classes(), 1 << 20);
  status = Upload({1 << 20, 0}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "label of row 0"))
      << status.error_message();
  // A given num_classes still bounds the labels.
  status = Upload({0, 2}, &response, 2);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "[0, 2)")) << status.error_message();
}

}  // namespace
}  // namespace drfm::server
