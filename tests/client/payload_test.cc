// Tests of the wire payloads (client/payload.h): byte encodings, the SHA-256 content hash, the
// chunking of an upload and of a model import (every chunk size reassembles to the payload), the
// safetensors framing check, predict batching and the prediction CSV.
#include "client/payload.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace drfm::client {
namespace {

core::Dataset SmallDataset(int rows, int cols, int classes) {
  core::Dataset data;
  data.features.resize(rows, cols);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) data.features(r, c) = static_cast<float>(r * 100 + c) / 7;
    data.labels.push_back(r % classes);
  }
  data.num_classes = classes;
  return data;
}

TEST(PayloadTest, Sha256MatchesTheStandardTestVectors) {
  Sha256 empty;
  EXPECT_EQ(empty.HexDigest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 abc;
  abc.Update("a");
  abc.Update("bc");  // incremental == one shot
  EXPECT_EQ(abc.HexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PayloadTest, EncodesFloatsAndLabelsLittleEndianRowMajor) {
  core::RowMatrixF x(2, 2);
  x << 1.0f, 2.0f, -0.5f, 0.0f;
  const std::string bytes = EncodeFeatureRows(x, 0, 2);
  ASSERT_EQ(bytes.size(), 16u);
  EXPECT_EQ(bytes.substr(0, 4), std::string("\x00\x00\x80\x3f", 4));  // 1.0f
  EXPECT_EQ(bytes.substr(4, 4), std::string("\x00\x00\x00\x40", 4));  // 2.0f
  EXPECT_EQ(bytes.substr(8, 4), std::string("\x00\x00\x00\xbf", 4));  // -0.5f
  EXPECT_EQ(EncodeFeatureRows(x, 1, 1), bytes.substr(8));
  EXPECT_EQ(EncodeLabels({1, 258}), std::string("\x01\x00\x00\x00\x02\x01\x00\x00", 8));
}

TEST(PayloadTest, DatasetHashIsTheHashOfFeaturesThenLabels) {
  const core::Dataset data = SmallDataset(5, 3, 2);
  Sha256 sha;
  sha.Update(EncodeFeatureRows(data.features, 0, 5));
  sha.Update(EncodeLabels(data.labels));
  EXPECT_EQ(DatasetSha256(data), sha.HexDigest());
}

TEST(PayloadTest, UploadHeaderDescribesTheDataset) {
  const core::Dataset data = SmallDataset(10, 3, 4);
  DatasetUpload upload("toy", data);
  ASSERT_TRUE(upload.header().has_header());
  const v1::DatasetHeader& header = upload.header().header();
  EXPECT_EQ(header.name(), "toy");
  EXPECT_EQ(header.rows(), 10);
  EXPECT_EQ(header.cols(), 3);
  EXPECT_EQ(header.num_classes(), 4);
  EXPECT_EQ(header.sha256(), DatasetSha256(data));
  EXPECT_EQ(upload.total_bytes(), 4 * 10 * (3 + 1));
}

TEST(PayloadTest, UploadChunksOfEverySizeReassembleToThePayload) {
  const core::Dataset data = SmallDataset(13, 5, 3);
  const std::string features = EncodeFeatureRows(data.features, 0, 13);
  const std::string labels = EncodeLabels(data.labels);
  for (size_t chunk_bytes : {size_t{1}, size_t{3}, size_t{4}, size_t{7}, size_t{20}, size_t{64},
                             size_t{259}, size_t{260}, size_t{1} << 20}) {
    SCOPED_TRACE(chunk_bytes);
    DatasetUpload upload("toy", data, chunk_bytes);
    std::string got_features, got_labels;
    v1::UploadDatasetRequest request;
    int chunks = 0;
    while (upload.NextChunk(&request)) {
      ASSERT_TRUE(request.has_chunk());
      const size_t size = request.chunk().features().size() + request.chunk().labels().size();
      EXPECT_GE(size, 1u);
      EXPECT_LE(size, chunk_bytes);
      // Labels start only after the last feature byte.
      if (!request.chunk().labels().empty()) {
        EXPECT_EQ(got_features.size() + request.chunk().features().size(), features.size());
      }
      got_features += request.chunk().features();
      got_labels += request.chunk().labels();
      ++chunks;
      EXPECT_EQ(upload.sent_bytes(), static_cast<int64_t>(got_features.size() + got_labels.size()));
    }
    EXPECT_EQ(got_features, features);
    EXPECT_EQ(got_labels, labels);
    const size_t total = features.size() + labels.size();
    EXPECT_EQ(chunks, static_cast<int>((total + chunk_bytes - 1) / chunk_bytes));
    // Rewind starts over.
    upload.Rewind();
    ASSERT_TRUE(upload.NextChunk(&request));
    EXPECT_EQ(request.chunk().features(), features.substr(0, chunk_bytes));
  }
}

TEST(PayloadTest, DefaultChunksAreAbout1MiB) {
  const core::Dataset data = SmallDataset(1000, 784, 10);  // 3.1 MB of features
  DatasetUpload upload("big", data);
  v1::UploadDatasetRequest request;
  std::vector<size_t> sizes;
  while (upload.NextChunk(&request)) {
    sizes.push_back(request.chunk().features().size() + request.chunk().labels().size());
  }
  ASSERT_EQ(sizes.size(), 3u);  // 3,140,000 payload bytes
  EXPECT_EQ(sizes[0], kDefaultChunkBytes);
  EXPECT_EQ(sizes[1], kDefaultChunkBytes);
}

TEST(PayloadTest, PredictBatchesStayWithinTheByteBudget) {
  EXPECT_EQ(PredictBatchRows(784), (1 << 20) / (4 * 784));
  EXPECT_EQ(PredictBatchRows(1), 1 << 18);
  EXPECT_EQ(PredictBatchRows(1 << 20), 1);  // one row larger than the budget still goes alone
  EXPECT_EQ(PredictBatchRows(10, 400), 10);
}

TEST(PayloadTest, PredictRequestCarriesTheTargetAndTheRows) {
  core::RowMatrixF x(4, 2);
  x << 0, 1, 2, 3, 4, 5, 6, 7;
  PredictTarget target;
  target.model = "m";
  v1::PredictRequest request = MakePredictRequest(target, x, 1, 2);
  EXPECT_EQ(request.model(), "m");
  EXPECT_FALSE(request.has_version());
  EXPECT_EQ(request.rows(), 2);
  EXPECT_EQ(request.cols(), 2);
  EXPECT_EQ(request.features(), EncodeFeatureRows(x, 1, 2));
  EXPECT_FALSE(request.return_scores());
  target.version = 3;
  target.return_scores = true;
  target.layer = 2;
  request = MakePredictRequest(target, x, 0, 1);
  EXPECT_EQ(request.version(), 3);
  EXPECT_TRUE(request.return_scores());
  EXPECT_EQ(request.layer(), 2);
}

TEST(PayloadTest, FormatFloatIsShortestRoundTrip) {
  EXPECT_EQ(FormatFloat(0.1f), "0.1");
  EXPECT_EQ(FormatFloat(1.0f), "1");
  EXPECT_EQ(FormatFloat(-2.5e-7f), "-2.5e-07");
  EXPECT_EQ(FormatFloat(1.0f / 3), "0.33333334");
  EXPECT_EQ(FormatFloat(std::numeric_limits<float>::infinity()), "inf");
  for (float v : {0.1f, 1.0f / 3, 123456.79f, 1e-30f}) EXPECT_EQ(std::stof(FormatFloat(v)), v);
}

v1::PredictResponse Labels(std::vector<int32_t> labels) {
  v1::PredictResponse r;
  r.set_rows(static_cast<int64_t>(labels.size()));
  r.set_classes(3);
  for (int32_t l : labels) r.add_labels(l);
  return r;
}

TEST(PayloadTest, PredictionCsvHasOneLabelPerRowInOrder) {
  PredictionCsv csv(/*scores=*/false, /*layer=*/0);
  ASSERT_TRUE(csv.Add(Labels({2, 0})).ok());
  ASSERT_TRUE(csv.Add(Labels({1})).ok());
  EXPECT_EQ(csv.text(), "label\n2\n0\n1\n");
  EXPECT_EQ(csv.rows(), 3);
  EXPECT_EQ(csv.labels(), (std::vector<int32_t>{2, 0, 1}));
}

TEST(PayloadTest, PredictionCsvWithScoresHasAColumnPerClass) {
  PredictionCsv csv(/*scores=*/true, /*layer=*/0);
  v1::PredictResponse r = Labels({1, 0});
  for (float s : {0.25f, 0.5f, 0.25f, 0.9f, 0.1f, 0.0f}) r.add_scores(s);
  ASSERT_TRUE(csv.Add(r).ok());
  EXPECT_EQ(csv.text(), "label,score_0,score_1,score_2\n1,0.25,0.5,0.25\n0,0.9,0.1,0\n");
}

TEST(PayloadTest, PredictionCsvOfARepresentationHasItsColumns) {
  PredictionCsv csv(/*scores=*/false, /*layer=*/1);
  v1::PredictResponse r;
  r.set_rows(1);
  r.set_representation_cols(2);
  core::RowMatrixF rep(1, 2);
  rep << 1.5f, -2.0f;
  r.set_representation(EncodeFeatureRows(rep, 0, 1));
  ASSERT_TRUE(csv.Add(r).ok());
  EXPECT_EQ(csv.text(), "x_0,x_1\n1.5,-2\n");
}

TEST(PayloadTest, PredictionCsvRefusesInconsistentAnswers) {
  PredictionCsv csv(/*scores=*/true, /*layer=*/0);
  v1::PredictResponse short_scores = Labels({1, 0});
  short_scores.add_scores(0.5f);
  EXPECT_EQ(csv.Add(short_scores).code(), absl::StatusCode::kInvalidArgument);
  PredictionCsv labels_only(false, 0);
  v1::PredictResponse missing = Labels({1});
  missing.set_rows(2);
  EXPECT_EQ(labels_only.Add(missing).code(), absl::StatusCode::kInvalidArgument);
  PredictionCsv rep(false, 2);
  v1::PredictResponse no_bytes;
  no_bytes.set_rows(1);
  no_bytes.set_representation_cols(4);
  EXPECT_EQ(rep.Add(no_bytes).code(), absl::StatusCode::kInvalidArgument);
}

// A safetensors file: the little-endian header length, `header`, `data`.
std::string SafetensorsFile(const std::string& header, const std::string& data) {
  std::string out;
  for (int b = 0; b < 8; ++b) out += static_cast<char>((header.size() >> (8 * b)) & 0xff);
  return out + header + data;
}

TEST(ModelImportTest, HeaderNamesTheSizeAndHashOfTheFile) {
  const std::string file = SafetensorsFile(R"({"a":1})", std::string(100, 'x'));
  ModelImport import("net", file);
  ASSERT_TRUE(import.header().has_header());
  EXPECT_EQ(import.header().header().name(), "net");
  EXPECT_EQ(import.header().header().size_bytes(), static_cast<int64_t>(file.size()));
  Sha256 sha;
  sha.Update(file);
  EXPECT_EQ(import.header().header().sha256(), sha.HexDigest());
  EXPECT_EQ(import.total_bytes(), static_cast<int64_t>(file.size()));
}

TEST(ModelImportTest, ChunksOfEverySizeReassembleToTheFile) {
  std::string file;
  for (int i = 0; i < 1000; ++i) file += static_cast<char>(i * 13);
  for (size_t chunk_bytes : {size_t{1}, size_t{7}, size_t{999}, size_t{1000}, size_t{4096}}) {
    ModelImport import("m", file, chunk_bytes);
    std::string joined;
    v1::ImportModelRequest request;
    int chunks = 0;
    while (import.NextChunk(&request)) {
      ASSERT_EQ(request.part_case(), v1::ImportModelRequest::kChunk);
      EXPECT_LE(request.chunk().size(), chunk_bytes);
      EXPECT_FALSE(request.chunk().empty());
      joined += request.chunk();
      ++chunks;
      EXPECT_EQ(import.sent_bytes(), static_cast<int64_t>(joined.size()));
    }
    EXPECT_EQ(joined, file) << chunk_bytes;
    EXPECT_EQ(chunks, static_cast<int>((file.size() + chunk_bytes - 1) / chunk_bytes));
    import.Rewind();
    EXPECT_TRUE(import.NextChunk(&request));
    EXPECT_EQ(request.chunk(), file.substr(0, std::min(chunk_bytes, file.size())));
  }
  // An empty file has no chunks (the server rejects it).
  ModelImport empty("m", "");
  v1::ImportModelRequest request;
  EXPECT_FALSE(empty.NextChunk(&request));
}

TEST(SafetensorsFramingTest, AcceptsAHeaderLengthAndAJsonObject) {
  EXPECT_TRUE(CheckSafetensorsFraming(SafetensorsFile(R"({"x":{}})", "data"), "f").ok());
  EXPECT_TRUE(CheckSafetensorsFraming(SafetensorsFile("  {}", ""), "f").ok());
}

TEST(SafetensorsFramingTest, RefusesOtherFilesNamingThem) {
  const auto short_file = CheckSafetensorsFraming("abc", "w.bin");
  EXPECT_EQ(short_file.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(short_file.message(), "w.bin is not a safetensors file"))
      << short_file;
  // A CSV: its first 8 bytes read as an absurd header length.
  const auto csv = CheckSafetensorsFraming("1,2,3,4,5,6\n7,8,9\n", "w.csv");
  EXPECT_TRUE(absl::StrContains(csv.message(), "header length")) << csv;
  // The right length, but not JSON.
  const auto not_json = CheckSafetensorsFraming(SafetensorsFile("[1,2]", ""), "w");
  EXPECT_TRUE(absl::StrContains(not_json.message(), "not a JSON object")) << not_json;
  // A header that runs past the end of the file (truncated).
  std::string truncated = SafetensorsFile(R"({"x":{}})", "");
  truncated.resize(truncated.size() - 1);
  EXPECT_FALSE(CheckSafetensorsFraming(truncated, "w").ok());
}

}  // namespace
}  // namespace drfm::client
