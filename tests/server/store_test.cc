// Tests of SqliteStore against a real SQLite file and real blob files in a fresh temporary
// directory per test: job round trips and listing, idempotency, event sequences (also under
// concurrent appends and across a reopen), model versions (one per producing job), checksums,
// atomic writes, dataset deduplication, name validation, the clean-up of what a crash leaves
// behind, and writes that fail for lack of space or permission.
#include "server/store.h"

#include <linux/capability.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace drfm::server {
namespace {

namespace fs = std::filesystem;

// Little-endian bytes of `values` (the wire and file format of features and labels).
template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// A rows x cols dataset whose feature (r, c) is r * 100 + c + salt and whose label is r % classes.
struct TestData {
  std::string features;
  std::string labels;
};
TestData MakeData(int rows, int cols, int classes, float salt = 0) {
  std::vector<float> features;
  std::vector<int32_t> labels;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) features.push_back(r * 100.0f + c + salt);
    labels.push_back(r % classes);
  }
  return {Bytes(features), Bytes(labels)};
}

DatasetInfo Info(const std::string& name, int rows, int cols, int classes) {
  DatasetInfo info;
  info.name = name;
  info.rows = rows;
  info.cols = cols;
  info.num_classes = classes;
  return info;
}

v1::SubmitFitRequest FitRequest(const std::string& dataset, int layers) {
  v1::SubmitFitRequest request;
  request.mutable_train()->set_dataset(dataset);
  request.mutable_config()->set_layers(layers);
  (*request.mutable_labels())["owner"] = "test";
  (*request.mutable_labels())["purpose"] = "idempotency";
  return request;
}

v1::Job QueuedJob(const std::string& request_id = "") {
  v1::Job job;
  job.set_kind(v1::Job::DEEP_RFM);
  job.set_state(v1::Job::QUEUED);
  job.set_request_id(request_id);
  return job;
}

v1::JobEvent ProgressEvent(double fraction) {
  v1::JobEvent event;
  event.mutable_progress()->set_phase(v1::Progress::KERNEL);
  event.mutable_progress()->set_fraction(fraction);
  return event;
}

v1::Model DeepRfmModel(const std::string& name) {
  v1::Model model;
  model.set_name(name);
  model.set_kind(v1::Model::DEEP_RFM);
  model.set_input_dim(4);
  model.set_classes(3);
  return model;
}

// Every regular file under `dir`, as paths relative to it.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(fs::relative(entry.path(), dir).string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

bool HasTemporaryFile(const std::string& dir) {
  for (const std::string& file : FilesUnder(dir)) {
    if (fs::path(file).filename().string().rfind(".tmp-", 0) == 0) return true;
  }
  return false;
}

void FlipByte(const std::string& path, std::streamoff offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.is_open()) << path;
  file.seekg(offset);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x01);
  file.seekp(offset);
  file.write(&byte, 1);
}

// Runs `sql` on the store's database through a second connection; returns the first column of
// the first row as text ("" when there is none).
std::string QueryDatabase(const std::string& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string result;
  if (sqlite3_open((dir + "/store.db").c_str(), &db) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return result;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/drfm_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    Reopen();
  }

  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Closes the store (if open) and opens it again on the same directory.
  void Reopen() {
    store_.reset();
    SqliteStoreOptions options;
    options.data_dir = dir_;
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  v1::Job CreateJob(v1::Job job = QueuedJob()) {
    absl::StatusOr<CreateJobResult> created = store_->CreateJob(job, FitRequest("d", 1), {});
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->job : v1::Job();
  }

  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, CreatedJobReadsBackWithAnIdAndCreateTime) {
  v1::Job job = QueuedJob("req-1");
  job.set_priority(7);
  job.mutable_config()->set_bandwidth(3.5);
  (*job.mutable_labels())["team"] = "collapse";
  absl::StatusOr<CreateJobResult> created = store_->CreateJob(job, FitRequest("d", 2), {});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->job.id().size(), 16u);
  EXPECT_TRUE(created->job.has_create_time());

  absl::StatusOr<v1::Job> read = store_->GetJob(created->job.id());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), created->job.SerializeAsString());
  EXPECT_EQ(read->priority(), 7);
  EXPECT_EQ(read->config().bandwidth(), 3.5);
  EXPECT_EQ(read->labels().at("team"), "collapse");
  EXPECT_EQ(read->last_event_sequence(), 0);
}

TEST_F(SqliteStoreTest, CreateJobAppendsItsInitialEventsInTheSameTransaction) {
  v1::JobEvent queued;
  queued.mutable_state_change()->set_state(v1::Job::QUEUED);
  absl::StatusOr<CreateJobResult> created =
      store_->CreateJob(QueuedJob("once"), FitRequest("d", 1), {queued});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->job.last_event_sequence(), 1);
  absl::StatusOr<std::vector<v1::JobEvent>> events = store_->ListEvents(created->job.id(), 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].sequence(), 1);
  EXPECT_EQ((*events)[0].state_change().state(), v1::Job::QUEUED);

  // An idempotent repeat returns the job without appending again.
  absl::StatusOr<CreateJobResult> repeat =
      store_->CreateJob(QueuedJob("once"), FitRequest("d", 1), {queued});
  ASSERT_TRUE(repeat.ok());
  EXPECT_FALSE(repeat->created);
  EXPECT_EQ(repeat->job.last_event_sequence(), 1);
  EXPECT_EQ(store_->ListEvents(created->job.id(), 0, 0)->size(), 1u);
}

TEST_F(SqliteStoreTest, UpdateJobReplacesTheStoredJob) {
  v1::Job job = CreateJob();
  job.set_state(v1::Job::RUNNING);
  job.set_layers_done(2);
  job.add_reports()->set_layer(1);
  ASSERT_TRUE(store_->UpdateJob(job, {}).ok());

  absl::StatusOr<v1::Job> read = store_->GetJob(job.id());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->state(), v1::Job::RUNNING);
  EXPECT_EQ(read->layers_done(), 2);
  EXPECT_EQ(read->reports_size(), 1);
}

TEST_F(SqliteStoreTest, UpdateJobAppendsItsEventsAtomicallyAndReturnsTheirSequences) {
  v1::Job job = CreateJob();
  ASSERT_TRUE(store_->AppendEvent(job.id(), ProgressEvent(0)).ok());
  job.set_state(v1::Job::SUCCEEDED);
  v1::JobEvent done;
  done.mutable_state_change()->set_state(v1::Job::SUCCEEDED);
  absl::StatusOr<std::vector<int64_t>> sequences = store_->UpdateJob(job, {ProgressEvent(1), done});
  ASSERT_TRUE(sequences.ok()) << sequences.status();
  EXPECT_EQ(*sequences, (std::vector<int64_t>{2, 3}));

  absl::StatusOr<v1::Job> read = store_->GetJob(job.id());
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(read->last_event_sequence(), 3);
}

TEST_F(SqliteStoreTest, ListJobsFiltersByStateAndPagesNewestFirst) {
  std::vector<std::string> queued;
  for (int i = 0; i < 5; ++i) {
    queued.push_back(CreateJob().id());
    v1::Job running = QueuedJob();
    running.set_state(v1::Job::RUNNING);
    if (i < 2) CreateJob(running);
  }
  std::reverse(queued.begin(), queued.end());

  std::vector<std::string> listed;
  std::vector<size_t> page_sizes;
  std::string token;
  do {
    absl::StatusOr<Page<v1::Job>> page = store_->ListJobs({v1::Job::QUEUED}, 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    page_sizes.push_back(page->items.size());
    for (const v1::Job& job : page->items) listed.push_back(job.id());
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(listed, queued);
  EXPECT_EQ(page_sizes, (std::vector<size_t>{2, 2, 1}));

  absl::StatusOr<Page<v1::Job>> all = store_->ListJobs({}, 0, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->items.size(), 7u);
  EXPECT_TRUE(all->next_page_token.empty());
}

TEST_F(SqliteStoreTest, ListJobsRejectsATokenItDidNotIssueAndANegativePageSize) {
  EXPECT_EQ(store_->ListJobs({}, 10, "not-a-token").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListJobs({}, -1, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, SameRequestIdWithTheSameRequestReturnsTheOriginalJob) {
  absl::StatusOr<CreateJobResult> first = store_->CreateJob(QueuedJob("r"), FitRequest("d", 3), {});
  absl::StatusOr<CreateJobResult> second =
      store_->CreateJob(QueuedJob("r"), FitRequest("d", 3), {});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->job.id(), first->job.id());
  EXPECT_EQ(store_->ListJobs({}, 0, "")->items.size(), 1u);
}

TEST_F(SqliteStoreTest, SameRequestIdWithADifferentRequestIsAlreadyExists) {
  ASSERT_TRUE(store_->CreateJob(QueuedJob("r"), FitRequest("d", 3), {}).ok());
  absl::StatusOr<CreateJobResult> clash = store_->CreateJob(QueuedJob("r"), FitRequest("d", 4), {});
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists);
  // Jobs without a request_id never clash.
  EXPECT_TRUE(store_->CreateJob(QueuedJob(), FitRequest("d", 3), {}).ok());
  EXPECT_TRUE(store_->CreateJob(QueuedJob(), FitRequest("d", 3), {}).ok());
}

TEST_F(SqliteStoreTest, EventSequencesStartAtOneAndAreContiguousPerJob) {
  const std::string a = CreateJob().id();
  const std::string b = CreateJob().id();
  EXPECT_EQ(*store_->AppendEvent(a, ProgressEvent(0.1)), 1);
  EXPECT_EQ(*store_->AppendEvent(a, ProgressEvent(0.2)), 2);
  EXPECT_EQ(*store_->AppendEvent(b, ProgressEvent(0.3)), 1);
  EXPECT_EQ(*store_->AppendEvent(a, ProgressEvent(0.4)), 3);

  absl::StatusOr<std::vector<v1::JobEvent>> events = store_->ListEvents(a, 0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*events)[i].sequence(), i + 1);
    EXPECT_TRUE((*events)[i].has_time());
  }
  EXPECT_DOUBLE_EQ((*events)[2].progress().fraction(), 0.4);
}

TEST_F(SqliteStoreTest, ListEventsReturnsOnlyEventsAfterTheGivenSequenceUpToTheLimit) {
  const std::string id = CreateJob().id();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store_->AppendEvent(id, ProgressEvent(i)).ok());
  absl::StatusOr<std::vector<v1::JobEvent>> after = store_->ListEvents(id, 3, 0);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].sequence(), 4);
  EXPECT_EQ((*after)[1].sequence(), 5);
  absl::StatusOr<std::vector<v1::JobEvent>> limited = store_->ListEvents(id, 1, 2);
  ASSERT_TRUE(limited.ok());
  ASSERT_EQ(limited->size(), 2u);
  EXPECT_EQ((*limited)[0].sequence(), 2);
  EXPECT_TRUE(store_->ListEvents(id, 5, 0)->empty());
}

TEST_F(SqliteStoreTest, ConcurrentAppendsFromSeveralThreadsGetUniqueContiguousSequences) {
  const std::string id = CreateJob().id();
  const std::string other = CreateJob().id();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::vector<std::vector<int64_t>> sequences(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // The fraction encodes who appended the event.
        absl::StatusOr<int64_t> seq = store_->AppendEvent(id, ProgressEvent(t * 1000 + i));
        ASSERT_TRUE(seq.ok()) << seq.status();
        sequences[t].push_back(*seq);
        if (i % 5 == 0) {
          ASSERT_TRUE(store_->AppendEvent(other, ProgressEvent(0)).ok());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  std::vector<int64_t> all;
  for (const auto& s : sequences) {
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));  // Each thread sees its own appends in order.
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expected(kThreads * kPerThread);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<int64_t>(i) + 1;
  EXPECT_EQ(all, expected);

  absl::StatusOr<std::vector<v1::JobEvent>> events = store_->ListEvents(id, 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), expected.size());
  std::set<double> payloads;
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].sequence(), static_cast<int64_t>(i) + 1);
    payloads.insert((*events)[i].progress().fraction());
  }
  EXPECT_EQ(payloads.size(), expected.size());
  EXPECT_EQ(store_->ListEvents(other, 0, 0)->size(), static_cast<size_t>(kThreads * 5));
}

TEST_F(SqliteStoreTest, EventsSurviveClosingAndReopeningTheStore) {
  const std::string id = CreateJob().id();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store_->AppendEvent(id, ProgressEvent(i)).ok());
  Reopen();
  absl::StatusOr<std::vector<v1::JobEvent>> events = store_->ListEvents(id, 0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_DOUBLE_EQ((*events)[2].progress().fraction(), 2);
  EXPECT_EQ(*store_->AppendEvent(id, ProgressEvent(3)), 4);
  EXPECT_EQ(store_->GetJob(id)->last_event_sequence(), 4);
}

TEST_F(SqliteStoreTest, UnknownJobsAreNotFound) {
  v1::Job ghost = QueuedJob();
  ghost.set_id("0000000000000000");
  EXPECT_EQ(store_->GetJob(ghost.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->UpdateJob(ghost, {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->AppendEvent(ghost.id(), ProgressEvent(0)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ListEvents(ghost.id(), 0, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteJob(ghost.id()).code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, DeleteJobRefusesARunningJobAndRemovesATerminalOneWithItsEvents) {
  v1::Job job = CreateJob();
  ASSERT_TRUE(store_->AppendEvent(job.id(), ProgressEvent(0)).ok());
  job.set_state(v1::Job::RUNNING);
  ASSERT_TRUE(store_->UpdateJob(job, {}).ok());
  EXPECT_EQ(store_->DeleteJob(job.id()).code(), absl::StatusCode::kFailedPrecondition);

  job.set_state(v1::Job::CANCELLED);
  ASSERT_TRUE(store_->UpdateJob(job, {}).ok());
  ASSERT_TRUE(store_->DeleteJob(job.id()).ok());
  EXPECT_EQ(store_->GetJob(job.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ListEvents(job.id(), 0, 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, ACancelRequestIsDurable) {
  const v1::Job job = CreateJob();
  EXPECT_FALSE(*store_->CancelRequested(job.id()));
  ASSERT_TRUE(store_->MarkCancelRequested(job.id()).ok());
  ASSERT_TRUE(store_->MarkCancelRequested(job.id()).ok());  // Idempotent.
  Reopen();
  EXPECT_TRUE(*store_->CancelRequested(job.id()));
  EXPECT_EQ(store_->GetJob(job.id())->state(), v1::Job::QUEUED);  // Only a request.
  EXPECT_EQ(store_->MarkCancelRequested("0000000000000000").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CancelRequested("0000000000000000").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, FindJobByRequestReturnsTheJobOfAnIdenticalRequestOnly) {
  v1::Job job = CreateJob(QueuedJob("req-1"));
  absl::StatusOr<std::optional<v1::Job>> found =
      store_->FindJobByRequest("req-1", FitRequest("d", 1));
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id(), job.id());
  EXPECT_EQ(store_->FindJobByRequest("req-1", FitRequest("d", 2)).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(store_->FindJobByRequest("req-2", FitRequest("d", 1))->has_value());
  EXPECT_FALSE(store_->FindJobByRequest("", FitRequest("d", 1))->has_value());
}

TEST_F(SqliteStoreTest, FindModelOfJobReturnsTheVersionTheJobStored) {
  v1::Model model = DeepRfmModel("m");
  model.set_job_id("0123456789abcdef");
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "imported").ok());
  EXPECT_FALSE(store_->FindModelOfJob(model.job_id())->has_value());
  EXPECT_FALSE(store_->FindModelOfJob("")->has_value());  // Not the imported one.
  ASSERT_TRUE(store_->PutModel(model, "fitted").ok());
  absl::StatusOr<std::optional<v1::Model>> found = store_->FindModelOfJob(model.job_id());
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->version(), 2);
  ASSERT_TRUE(store_->DeleteModel("m", 2).ok());
  EXPECT_FALSE(store_->FindModelOfJob(model.job_id())->has_value());
}

TEST_F(SqliteStoreTest, ModelVersionsIncreasePerNameAndAreNeverReused) {
  EXPECT_EQ(store_->PutModel(DeepRfmModel("a"), "a1")->version(), 1);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("a"), "a2")->version(), 2);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("b"), "b1")->version(), 1);
  absl::StatusOr<v1::Model> a3 = store_->PutModel(DeepRfmModel("a"), "a3");
  ASSERT_TRUE(a3.ok()) << a3.status();
  EXPECT_EQ(a3->version(), 3);
  EXPECT_EQ(a3->size_bytes(), 2);
  EXPECT_EQ(a3->sha256().size(), 64u);

  absl::StatusOr<v1::Model> latest = store_->GetModel("a", 0);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version(), 3);
  EXPECT_EQ(*store_->ReadModelBlob("a", 2), "a2");
  EXPECT_EQ(store_->GetModel("a", 9).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(store_->DeleteModel("a", 3).ok());
  EXPECT_EQ(store_->GetModel("a", 0)->version(), 2);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("a"), "a4")->version(), 4);
  EXPECT_EQ(store_->ListModels("a", 0, "")->items.size(), 3u);
  EXPECT_EQ(store_->ListModels("", 0, "")->items.size(), 4u);

  ASSERT_TRUE(store_->DeleteModel("a", 0).ok());
  EXPECT_EQ(store_->GetModel("a", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("a"), "a5")->version(), 5);
}

TEST_F(SqliteStoreTest, ConcurrentPutModelsOfOneNameGetDistinctVersions) {
  constexpr int kThreads = 4;
  std::vector<int64_t> versions(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<v1::Model> model = store_->PutModel(DeepRfmModel("m"), std::string(100, 'x'));
      ASSERT_TRUE(model.ok()) << model.status();
      versions[t] = model->version();
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::sort(versions.begin(), versions.end());
  EXPECT_EQ(versions, (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST_F(SqliteStoreTest, ModelFileWithAFlippedByteIsDataLoss) {
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), std::string(5000, 'w')).ok());
  FlipByte(store_->ModelPath("m", 1), 1234);
  EXPECT_EQ(store_->ReadModelBlob("m", 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SqliteStoreTest, MissingOrTruncatedModelFileIsDataLoss) {
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), std::string(5000, 'w')).ok());
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), std::string(5000, 'w')).ok());
  fs::resize_file(store_->ModelPath("m", 1), 4000);
  fs::remove(store_->ModelPath("m", 2));
  EXPECT_EQ(store_->ReadModelBlob("m", 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->ReadModelBlob("m", 2).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SqliteStoreTest, DatasetReadsBackWholeAndAsASlice) {
  const TestData data = MakeData(10, 3, 4);
  absl::StatusOr<PutDatasetResult> put =
      store_->PutDataset(Info("tiny", 10, 3, 4), data.features, data.labels);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_TRUE(put->created);
  EXPECT_EQ(put->dataset.id(), "ds-" + put->dataset.sha256().substr(0, 16));
  EXPECT_EQ(put->dataset.size_bytes(), 4 * 10 * 4);

  absl::StatusOr<core::Dataset> whole = store_->LoadDataset("tiny", 0, 0);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->rows(), 10);
  EXPECT_EQ(whole->cols(), 3);
  EXPECT_EQ(whole->num_classes, 4);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(whole->features.data()), 120), data.features);

  absl::StatusOr<core::Dataset> slice = store_->LoadDataset(put->dataset.id(), 6, 3);
  ASSERT_TRUE(slice.ok()) << slice.status();
  ASSERT_EQ(slice->rows(), 3);
  EXPECT_EQ(slice->features(0, 0), 600.0f);
  EXPECT_EQ(slice->features(2, 2), 802.0f);
  EXPECT_EQ(slice->labels, (std::vector<int32_t>{2, 3, 0}));
  // A limit past the end stops at the last row.
  EXPECT_EQ(store_->LoadDataset("tiny", 8, 100)->rows(), 2);
  EXPECT_EQ(store_->LoadDataset("tiny", 10, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, DatasetFileWithAFlippedByteIsDataLoss) {
  const TestData data = MakeData(10, 3, 4);
  absl::StatusOr<PutDatasetResult> put =
      store_->PutDataset(Info("tiny", 10, 3, 4), data.features, data.labels);
  ASSERT_TRUE(put.ok()) << put.status();
  FlipByte(store_->DatasetPath(put->dataset.sha256()), 130);  // In the labels.
  EXPECT_EQ(store_->LoadDataset("tiny", 0, 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SqliteStoreTest, DatasetsAreDeduplicatedByContentHash) {
  const TestData data = MakeData(6, 2, 3);
  absl::StatusOr<PutDatasetResult> first =
      store_->PutDataset(Info("first", 6, 2, 3), data.features, data.labels);
  absl::StatusOr<PutDatasetResult> again =
      store_->PutDataset(Info("second", 6, 2, 3), data.features, data.labels);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->dataset.id(), first->dataset.id());
  EXPECT_EQ(again->dataset.name(), "first");
  EXPECT_EQ(store_->ListDatasets(0, "")->items.size(), 1u);
  EXPECT_EQ(FilesUnder(dir_ + "/datasets"),
            (std::vector<std::string>{first->dataset.sha256() + ".bin"}));
}

TEST_F(SqliteStoreTest, DatasetNameTakenByOtherContentIsAlreadyExists) {
  const TestData a = MakeData(6, 2, 3);
  const TestData b = MakeData(6, 2, 3, /*salt=*/0.5f);
  ASSERT_TRUE(store_->PutDataset(Info("name", 6, 2, 3), a.features, a.labels).ok());
  EXPECT_EQ(store_->PutDataset(Info("name", 6, 2, 3), b.features, b.labels).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(HasTemporaryFile(dir_));
}

TEST_F(SqliteStoreTest, UploadWithWrongByteCountsIsInvalidAndLeavesNothing) {
  const TestData data = MakeData(6, 2, 3);
  EXPECT_EQ(store_->PutDataset(Info("short", 6, 3, 3), data.features, data.labels).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListDatasets(0, "")->items.size(), 0u);
  EXPECT_TRUE(FilesUnder(dir_ + "/datasets").empty());
}

TEST_F(SqliteStoreTest, UploadWhoseContentDoesNotMatchTheGivenChecksumIsDataLoss) {
  const TestData data = MakeData(6, 2, 3);
  DatasetInfo info = Info("sum", 6, 2, 3);
  info.expected_sha256 = std::string(64, 'a');
  EXPECT_EQ(store_->PutDataset(info, data.features, data.labels).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(FilesUnder(dir_ + "/datasets").empty());
}

TEST_F(SqliteStoreTest, InterleavedUploadChunksGiveTheSameDatasetAsOneShot) {
  const TestData data = MakeData(8, 5, 2);
  absl::StatusOr<std::unique_ptr<DatasetUpload>> upload = store_->StartDatasetUpload();
  ASSERT_TRUE(upload.ok()) << upload.status();
  for (int r = 0; r < 8; ++r) {
    ASSERT_TRUE((*upload)->AppendFeatures(data.features.substr(r * 20, 20)).ok());
    ASSERT_TRUE((*upload)->AppendLabels(data.labels.substr(r * 4, 4)).ok());
  }
  absl::StatusOr<PutDatasetResult> chunked = (*upload)->Commit(Info("chunked", 8, 5, 2));
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  EXPECT_EQ((*upload)->Commit(Info("chunked", 8, 5, 2)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<PutDatasetResult> one_shot =
      store_->PutDataset(Info("one-shot", 8, 5, 2), data.features, data.labels);
  ASSERT_TRUE(one_shot.ok());
  EXPECT_FALSE(one_shot->created);
  EXPECT_EQ(one_shot->dataset.sha256(), chunked->dataset.sha256());
}

TEST_F(SqliteStoreTest, DeleteDatasetRemovesItsRowAndFile) {
  const TestData data = MakeData(6, 2, 3);
  absl::StatusOr<PutDatasetResult> put =
      store_->PutDataset(Info("gone", 6, 2, 3), data.features, data.labels);
  ASSERT_TRUE(put.ok());
  ASSERT_TRUE(store_->DeleteDataset("gone").ok());
  EXPECT_EQ(store_->GetDataset(put->dataset.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(FilesUnder(dir_ + "/datasets").empty());
  EXPECT_EQ(store_->DeleteDataset("gone").code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, WritesLeaveNoTemporaryFilesBehind) {
  const TestData data = MakeData(6, 2, 3);
  ASSERT_TRUE(store_->PutDataset(Info("d", 6, 2, 3), data.features, data.labels).ok());
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "model bytes").ok());
  {
    absl::StatusOr<std::unique_ptr<DatasetUpload>> abandoned = store_->StartDatasetUpload();
    ASSERT_TRUE(abandoned.ok());
    ASSERT_TRUE((*abandoned)->AppendFeatures("half").ok());
    EXPECT_TRUE(HasTemporaryFile(dir_));  // Visible only while the upload is in progress.
  }
  EXPECT_FALSE(HasTemporaryFile(dir_));
  const std::vector<std::string> files = FilesUnder(dir_);
  EXPECT_NE(std::find(files.begin(), files.end(), "models/m/1.drfm"), files.end());
}

TEST_F(SqliteStoreTest, OpenRemovesTemporaryFilesLeftByACrash) {
  std::ofstream(dir_ + "/datasets/.tmp-0123456789abcdef") << "partial";
  std::ofstream(dir_ + "/models/.tmp-fedcba9876543210") << "partial";
  std::ofstream(dir_ + "/.tmp-probe-0123456789abcdef") << "";
  Reopen();
  EXPECT_FALSE(HasTemporaryFile(dir_));
  EXPECT_EQ(store_->files_removed_at_open(), 3);
}

TEST_F(SqliteStoreTest, OpenRemovesBlobFilesNoRowRefersTo) {
  const TestData data = MakeData(6, 2, 3);
  absl::StatusOr<PutDatasetResult> kept =
      store_->PutDataset(Info("kept", 6, 2, 3), data.features, data.labels);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "v1").ok());
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "v2").ok());
  // What a crash leaves: a dataset placed but never committed (or deleted but not yet unlinked),
  // a model version likewise, and a model name whose only version was never committed.
  const std::string orphan_dataset = store_->DatasetPath(std::string(64, 'a'));
  std::ofstream(orphan_dataset) << "uncommitted";
  std::ofstream(store_->ModelPath("m", 3)) << "uncommitted";
  fs::create_directories(dir_ + "/models/ghost");
  std::ofstream(store_->ModelPath("ghost", 1)) << "uncommitted";
  std::ofstream(dir_ + "/datasets/README") << "not the store's: left alone";
  Reopen();
  EXPECT_EQ(store_->files_removed_at_open(), 3);
  EXPECT_FALSE(fs::exists(orphan_dataset));
  EXPECT_FALSE(fs::exists(store_->ModelPath("m", 3)));
  EXPECT_FALSE(fs::exists(dir_ + "/models/ghost"));
  EXPECT_TRUE(fs::exists(dir_ + "/datasets/README"));
  // What rows refer to is untouched and reads back verified.
  EXPECT_TRUE(store_->LoadDataset("kept", 0, 0).ok());
  EXPECT_EQ(*store_->ReadModelBlob("m", 1), "v1");
  EXPECT_EQ(*store_->ReadModelBlob("m", 2), "v2");
  // The orphan's version number was never committed, so it is handed out (to a new file) again.
  EXPECT_EQ(store_->PutModel(DeepRfmModel("m"), "v3")->version(), 3);
  EXPECT_EQ(*store_->ReadModelBlob("m", 3), "v3");
  Reopen();
  EXPECT_EQ(store_->files_removed_at_open(), 0);
}

TEST_F(SqliteStoreTest, PutModelOfAJobThatAlreadyStoredOneReturnsThatVersion) {
  v1::Model model = DeepRfmModel("m");
  model.set_job_id("0123456789abcdef");
  absl::StatusOr<v1::Model> first = store_->PutModel(model, "first run");
  ASSERT_TRUE(first.ok()) << first.status();
  // The job runs again (a crash came before its success was recorded) and stores its result.
  absl::StatusOr<v1::Model> again = store_->PutModel(model, "second run");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version(), first->version());
  EXPECT_EQ(again->sha256(), first->sha256());
  Reopen();
  EXPECT_EQ(store_->PutModel(model, "third run")->version(), first->version());
  EXPECT_EQ(store_->ListModels("m", 0, "")->items.size(), 1u);
  EXPECT_EQ(*store_->ReadModelBlob("m", 0), "first run");
  EXPECT_FALSE(HasTemporaryFile(dir_));
  // Other jobs and models without a job get versions of their own.
  v1::Model other = DeepRfmModel("m");
  other.set_job_id("fedcba9876543210");
  EXPECT_EQ(store_->PutModel(other, "other job")->version(), 2);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("m"), "imported")->version(), 3);
  EXPECT_EQ(store_->PutModel(DeepRfmModel("m"), "imported")->version(), 4);
  // Once the job's version is deleted, the job may store a new one.
  ASSERT_TRUE(store_->DeleteModel("m", first->version()).ok());
  EXPECT_EQ(store_->PutModel(model, "after delete")->version(), 5);
}

// Sets RLIMIT_FSIZE (with SIGXFSZ ignored, so that a write beyond it fails with EFBIG instead of
// killing the process) for the test's lifetime.
class ScopedFileSizeLimit {
 public:
  explicit ScopedFileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ok_ = setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~ScopedFileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  sighandler_t old_handler_ = SIG_DFL;
  bool ok_ = false;
};

TEST_F(SqliteStoreTest, WritesThatRunOutOfSpaceAreResourceExhaustedAndStoreNothing) {
  const TestData small = MakeData(6, 2, 3);
  ASSERT_TRUE(store_->PutDataset(Info("before", 6, 2, 3), small.features, small.labels).ok());
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "before").ok());
  const std::vector<std::string> files_before = FilesUnder(dir_ + "/datasets");
  const TestData big = MakeData(4000, 64, 3);  // 1 MB of features
  {
    ScopedFileSizeLimit limit(256 << 10);
    ASSERT_TRUE(limit.ok());
    absl::StatusOr<PutDatasetResult> dataset =
        store_->PutDataset(Info("big", 4000, 64, 3), big.features, big.labels);
    EXPECT_EQ(dataset.status().code(), absl::StatusCode::kResourceExhausted) << dataset.status();
    EXPECT_NE(dataset.status().message().find("out of space"), std::string::npos)
        << dataset.status();
    absl::StatusOr<v1::Model> model = store_->PutModel(DeepRfmModel("m"), big.features);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted) << model.status();
    EXPECT_FALSE(HasTemporaryFile(dir_));
    EXPECT_EQ(FilesUnder(dir_ + "/datasets"), files_before);
    EXPECT_EQ(store_->GetDataset("big").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(store_->GetModel("m", 0)->version(), 1);
    // Small writes still fit.
    EXPECT_TRUE(store_->PutModel(DeepRfmModel("m"), "small")->version() == 2);
  }
  // With space again the same writes succeed; what was there before is intact.
  EXPECT_TRUE(store_->PutDataset(Info("big", 4000, 64, 3), big.features, big.labels).ok());
  EXPECT_EQ(store_->PutModel(DeepRfmModel("m"), big.features)->version(), 3);
  EXPECT_TRUE(store_->LoadDataset("before", 0, 0).ok());
  EXPECT_EQ(*store_->ReadModelBlob("m", 1), "before");
  EXPECT_EQ(QueryDatabase(dir_, "PRAGMA integrity_check"), "ok");
}

// Drops, for the calling thread only (capabilities are per thread), the capabilities that let
// root write where permissions forbid it, so that a chmod'ed directory is read-only to it too.
// Restores them on destruction.
class ScopedNoPermissionOverride {
 public:
  ScopedNoPermissionOverride() {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    if (syscall(SYS_capget, &header_, saved_) != 0) return;
    __user_cap_data_struct reduced[2];
    std::memcpy(reduced, saved_, sizeof(reduced));
    for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) {
      reduced[cap / 32].effective &= ~(1u << (cap % 32));
    }
    ok_ = syscall(SYS_capset, &header_, reduced) == 0;
  }
  ~ScopedNoPermissionOverride() {
    if (ok_) syscall(SYS_capset, &header_, saved_);
  }
  bool ok() const { return ok_; }

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2]{};
  bool ok_ = false;
};

TEST_F(SqliteStoreTest, OpenRefusesADataDirectoryItCannotWriteAndChangesNothing) {
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "kept").ok());
  store_.reset();
  const std::vector<std::string> files = FilesUnder(dir_);
  ScopedNoPermissionOverride no_override;
  ASSERT_TRUE(no_override.ok()) << "cannot drop CAP_DAC_OVERRIDE: " << std::strerror(errno);
  SqliteStoreOptions options;
  options.data_dir = dir_;
  for (const std::string& dir : {dir_, dir_ + "/datasets", dir_ + "/models"}) {
    SCOPED_TRACE(dir);
    fs::permissions(dir, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                    fs::perm_options::remove);
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
    EXPECT_NE(store.status().message().find("not writable"), std::string::npos) << store.status();
    fs::permissions(dir, fs::perms::owner_write, fs::perm_options::add);
    EXPECT_EQ(FilesUnder(dir_), files);
  }
  // A write-protected database (SQLite would open it read-only) is refused too.
  fs::permissions(dir_ + "/store.db", fs::perms::owner_write, fs::perm_options::remove);
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_NE(store.status().message().find("read-only"), std::string::npos) << store.status();
  fs::permissions(dir_ + "/store.db", fs::perms::owner_write, fs::perm_options::add);
  Reopen();
  EXPECT_EQ(*store_->ReadModelBlob("m", 1), "kept");
}

TEST_F(SqliteStoreTest, BadNamesAreRefused) {
  const std::vector<std::string> bad = {
      "",           "..", "a/b", "../x", "x/../../y", std::string("a\0b", 3),
      ".hidden",    "-x", "a b", "a:b",  "a..b",      std::string(kMaxNameLength + 1, 'n'),
      "caf\xc3\xa9"};
  for (const std::string& name : bad) {
    SCOPED_TRACE(absl::CHexEscape(name));
    EXPECT_EQ(ValidateName("model name", name).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->PutModel(DeepRfmModel(name), "x").status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->GetModel(name, 0).status().code(), absl::StatusCode::kInvalidArgument);
    const TestData data = MakeData(2, 1, 2);
    EXPECT_EQ(store_->PutDataset(Info(name, 2, 1, 2), data.features, data.labels).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  for (const std::string& name :
       {std::string("mnist-2k_v1.0"), std::string("A"), std::string(kMaxNameLength, 'n')}) {
    EXPECT_TRUE(ValidateName("model name", name).ok()) << name;
  }
  // A dataset name may not look like a dataset id, which is looked up first.
  const TestData data = MakeData(2, 1, 2);
  EXPECT_EQ(store_->PutDataset(Info("ds-0123456789abcdef", 2, 1, 2), data.features, data.labels)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(HasTemporaryFile(dir_));
  EXPECT_TRUE(FilesUnder(dir_ + "/models").empty());
}

TEST_F(SqliteStoreTest, ASecondStoreCannotOpenTheSameDirectory) {
  SqliteStoreOptions options;
  options.data_dir = dir_;
  EXPECT_EQ(SqliteStore::Open(options).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteStoreTest, DatabaseIsInWalModeAtTheLatestSchemaVersion) {
  EXPECT_EQ(QueryDatabase(dir_, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryDatabase(dir_, "SELECT MAX(version) FROM schema_version"),
            std::to_string(SqliteStore::LatestSchemaVersion()));
  Reopen();  // Migrations already applied are not applied again.
  EXPECT_EQ(QueryDatabase(dir_, "SELECT COUNT(*) FROM schema_version"),
            std::to_string(SqliteStore::LatestSchemaVersion()));
}

TEST_F(SqliteStoreTest, OpenMigratesADatabaseOfTheFirstSchemaVersion) {
  const v1::Job job = CreateJob(QueuedJob("req"));
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "blob").ok());
  store_.reset();
  // Back to version 1: what version 2 added is taken out again.
  QueryDatabase(dir_, "DROP INDEX models_by_job");
  QueryDatabase(dir_, "ALTER TABLE jobs DROP COLUMN cancel_requested");
  QueryDatabase(dir_, "DELETE FROM schema_version WHERE version > 1");
  ASSERT_EQ(QueryDatabase(dir_,
                          "SELECT COUNT(*) FROM pragma_table_info('jobs') "
                          "WHERE name = 'cancel_requested'"),
            "0");
  ASSERT_EQ(QueryDatabase(dir_, "SELECT MAX(version) FROM schema_version"), "1");
  Reopen();
  EXPECT_EQ(QueryDatabase(dir_, "SELECT MAX(version) FROM schema_version"),
            std::to_string(SqliteStore::LatestSchemaVersion()));
  EXPECT_EQ(store_->GetJob(job.id())->request_id(), "req");
  EXPECT_FALSE(*store_->CancelRequested(job.id()));
  EXPECT_TRUE(store_->MarkCancelRequested(job.id()).ok());
  EXPECT_EQ(*store_->ReadModelBlob("m", 1), "blob");
  EXPECT_EQ(QueryDatabase(dir_, "PRAGMA integrity_check"), "ok");
}

TEST_F(SqliteStoreTest, OpenRefusesADatabaseWrittenByANewerSchema) {
  store_.reset();
  QueryDatabase(dir_, "INSERT INTO schema_version (version) VALUES (1000)");
  SqliteStoreOptions options;
  options.data_dir = dir_;
  EXPECT_EQ(SqliteStore::Open(options).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteStoreTest, StatsCountWhatIsStored) {
  CreateJob();
  CreateJob();
  const TestData data = MakeData(6, 2, 3);
  ASSERT_TRUE(store_->PutDataset(Info("d", 6, 2, 3), data.features, data.labels).ok());
  ASSERT_TRUE(store_->PutModel(DeepRfmModel("m"), "12345").ok());
  absl::StatusOr<StoreStats> stats = store_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->jobs_by_state.at(v1::Job::QUEUED), 2);
  EXPECT_EQ(stats->datasets, 1);
  EXPECT_EQ(stats->dataset_bytes, 6 * 3 * 4);
  EXPECT_EQ(stats->models, 1);
  EXPECT_EQ(stats->model_bytes, 5);
  EXPECT_GT(stats->database_bytes, 0);
}

}  // namespace
}  // namespace drfm::server
