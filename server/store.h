// Durable storage of the drfm service: jobs and their event logs, uploaded datasets and stored
// models. `Store` is the seam the service code talks to (so a second backend, e.g. for several
// replicas, can be added without touching it); `SqliteStore` is the embedded implementation: one
// SQLite database plus checksummed blob files under the data directory. What is written is
// durable when the call returns ("nothing is lost", API.md), and nothing half-written is ever
// visible: a crash leaves either the old or the new state.
#ifndef DRFM_SERVER_STORE_H_
#define DRFM_SERVER_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/dataset.h"
#include "drfm/v1/datasets.pb.h"
#include "drfm/v1/jobs.pb.h"
#include "drfm/v1/models.pb.h"

struct sqlite3;

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace drfm::server {

// Longest dataset or model name accepted.
inline constexpr size_t kMaxNameLength = 128;
// Longest request_id accepted.
inline constexpr size_t kMaxRequestIdLength = 128;

// OK when `name` can name a dataset or a model: 1..kMaxNameLength characters from
// [A-Za-z0-9._-], starting with a letter or digit, without "..". Such a name is safe as a path
// component. (Names with ':' are reserved for built-in datasets.) InvalidArgument otherwise,
// saying what is allowed; `what` ("dataset name", "model name") starts the message.
absl::Status ValidateName(std::string_view what, std::string_view name);

// One page of a listing. `next_page_token` is empty on the last page.
template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_page_token;
};

// Which jobs ListJobs returns; STATE_UNSPECIFIED / KIND_UNSPECIFIED match every job.
struct JobFilter {
  v1::Job::State state = v1::Job::STATE_UNSPECIFIED;
  v1::Job::Kind kind = v1::Job::KIND_UNSPECIFIED;
};

// Result of CreateJob: the stored job, and whether this call created it (false when an earlier
// job with the same request_id and an identical request was returned instead).
struct CreateJobResult {
  v1::Job job;
  bool created = false;
};

// Description of a dataset being committed.
struct DatasetInfo {
  std::string name;             // Validated with ValidateName.
  int64_t rows = 0;             // >= 1.
  int64_t cols = 0;             // >= 1.
  int32_t num_classes = 0;      // >= 1; every label must be below it (checked by the caller).
  std::string expected_sha256;  // Lowercase hex; empty = not checked.
};

// Result of committing a dataset: the stored dataset, and whether this call created it (false
// when the same content was already stored, possibly under another name).
struct PutDatasetResult {
  v1::Dataset dataset;
  bool created = false;
};

// Counts and sizes for the metrics exporter.
struct StoreStats {
  std::map<v1::Job::State, int64_t> jobs_by_state;  // States without jobs are absent.
  int64_t datasets = 0;
  int64_t models = 0;
  int64_t dataset_bytes = 0;   // Sum of the dataset files.
  int64_t model_bytes = 0;     // Sum of the model files.
  int64_t database_bytes = 0;  // The database and its write-ahead log.
};

// A dataset being uploaded: feature and label bytes are appended in order (possibly interleaved)
// and become a stored dataset only on Commit. Destroying an upload that was not committed
// discards it and leaves nothing behind. The caller checks the running byte counts against the
// expected ones as chunks arrive (labels are buffered in memory until Commit). Not thread-safe:
// one upload is fed by one thread at a time. The store that started it must outlive it.
class DatasetUpload {
 public:
  virtual ~DatasetUpload() = default;

  // Appends the next feature bytes (float32 little-endian, row-major). Internal on a write error.
  virtual absl::Status AppendFeatures(std::string_view bytes) = 0;
  // Appends the next label bytes (int32 little-endian). Internal on a write error.
  virtual absl::Status AppendLabels(std::string_view bytes) = 0;
  // Bytes appended so far.
  virtual int64_t feature_bytes() const = 0;
  virtual int64_t label_bytes() const = 0;

  // Makes the upload a durable, visible dataset. Checks, in this order: `info` (InvalidArgument),
  // byte counts 4*rows*cols and 4*rows (InvalidArgument), the content hash against
  // info.expected_sha256 (DataLoss); then deduplicates: content already stored returns that
  // dataset with created = false. AlreadyExists when info.name names a different dataset.
  // FailedPrecondition when called twice. Whatever the outcome, the upload is finished after
  // this call.
  virtual absl::StatusOr<PutDatasetResult> Commit(const DatasetInfo& info) = 0;
};

// Storage of jobs, job events, datasets and models. Implementations are thread-safe: every
// method may be called from any thread at any time. Every method that changes more than one row
// does so atomically.
class Store {
 public:
  // Page size when a listing asks for 0, and the largest honored.
  static constexpr int kDefaultPageSize = 50;
  static constexpr int kMaxPageSize = 1000;

  virtual ~Store() = default;

  // Jobs.

  // Stores a new job and appends `events` (typically its QUEUED state change) to its log in the
  // same transaction, with sequences 1, 2, ... `job.id` empty: a fresh random id (16 hex digits)
  // is assigned; `job.create_time` unset: now. `request` is the submitted request; with a
  // non-empty job.request_id it decides idempotency: an earlier job with the same request_id and
  // a byte-identical (deterministically serialized) request is returned with created = false
  // (and `events` are not appended); a different request gives AlreadyExists. InvalidArgument
  // when kind or state is unspecified, the id or request_id is malformed; AlreadyExists when the
  // id is taken.
  virtual absl::StatusOr<CreateJobResult> CreateJob(const v1::Job& job,
                                                    const google::protobuf::Message& request,
                                                    absl::Span<const v1::JobEvent> events) = 0;

  // The job with `job_id`, its last_event_sequence filled in. NotFound when unknown; DataLoss when
  // the stored job cannot be parsed.
  virtual absl::StatusOr<v1::Job> GetJob(std::string_view job_id) = 0;

  // The job CreateJob stored for `request_id` and this very `request` (as CreateJob compares
  // them), or nullopt when no job has the request_id (or it is empty): lets a repeated
  // submission return its job before anything that may have changed since (its dataset, the
  // queue) is checked again. AlreadyExists when the request_id was used for another request.
  virtual absl::StatusOr<std::optional<v1::Job>> FindJobByRequest(
      std::string_view request_id, const google::protobuf::Message& request) = 0;

  // Replaces the stored job that has job.id() with `job` and appends `events` to its log, all in
  // one transaction. Returns the sequences assigned to the events, in order (see AppendEvent).
  // NotFound when the job is unknown; InvalidArgument when job.state is unspecified.
  virtual absl::StatusOr<std::vector<int64_t>> UpdateJob(const v1::Job& job,
                                                         absl::Span<const v1::JobEvent> events) = 0;

  // Jobs matching `filter`, newest first, at most `page_size` (0 = kDefaultPageSize; capped at
  // kMaxPageSize), starting after `page_token` (empty = first page). InvalidArgument for a
  // negative page size or a token this store did not issue.
  virtual absl::StatusOr<Page<v1::Job>> ListJobs(const JobFilter& filter, int page_size,
                                                 std::string_view page_token) = 0;

  // Deletes a terminal job and all its events. NotFound when unknown; FailedPrecondition when the
  // job is QUEUED or RUNNING.
  virtual absl::Status DeleteJob(std::string_view job_id) = 0;

  // Records, durably, that the job was asked to stop (CancelJob on a job that is running or about
  // to run), so that recovery after a crash cancels it instead of running it again. Idempotent;
  // NotFound when the job is unknown.
  virtual absl::Status MarkCancelRequested(std::string_view job_id) = 0;

  // Whether MarkCancelRequested was called for the job. NotFound when it is unknown.
  virtual absl::StatusOr<bool> CancelRequested(std::string_view job_id) = 0;

  // Events.

  // Appends `event` to the job's log and returns its sequence: 1 for the job's first event, then
  // contiguous, assigned atomically with the insert (event.sequence is ignored). event.time unset:
  // now. NotFound when the job is unknown.
  virtual absl::StatusOr<int64_t> AppendEvent(std::string_view job_id,
                                              const v1::JobEvent& event) = 0;

  // The job's events with sequence > after_sequence, in order, at most `limit` of them (0 = all).
  // NotFound when the job is unknown; InvalidArgument for negative arguments; DataLoss when a
  // stored event cannot be parsed.
  virtual absl::StatusOr<std::vector<v1::JobEvent>> ListEvents(std::string_view job_id,
                                                               int64_t after_sequence,
                                                               int limit) = 0;

  // Datasets.

  // Starts an upload (see DatasetUpload). Internal when the temporary file cannot be created.
  virtual absl::StatusOr<std::unique_ptr<DatasetUpload>> StartDatasetUpload() = 0;

  // The dataset whose id, or else whose name, is `dataset`. NotFound when none.
  virtual absl::StatusOr<v1::Dataset> GetDataset(std::string_view dataset) = 0;

  // Stored datasets, newest first; paging as ListJobs.
  virtual absl::StatusOr<Page<v1::Dataset>> ListDatasets(int page_size,
                                                         std::string_view page_token) = 0;

  // Deletes the dataset (by id or name) and its file. NotFound when unknown.
  virtual absl::Status DeleteDataset(std::string_view dataset) = 0;

  // Rows [offset, offset + limit) (limit 0 = all rows after offset) of the dataset (by id or
  // name), read from its file after verifying the whole file against the stored checksum.
  // NotFound when unknown; InvalidArgument when offset is negative or not below the row count,
  // or limit is negative; DataLoss when the file is missing, has the wrong size or fails the
  // checksum.
  virtual absl::StatusOr<core::Dataset> LoadDataset(std::string_view dataset, int64_t offset,
                                                    int64_t limit) = 0;

  // Convenience: StartDatasetUpload, append both byte strings, Commit.
  absl::StatusOr<PutDatasetResult> PutDataset(const DatasetInfo& info, std::string_view features,
                                              std::string_view labels);

  // Models.

  // Stores `blob` (the serialized model) as the next version of model.name(): one more than the
  // largest version this name ever had (1 for a new name), assigned atomically. Fills in and
  // returns the model's version, create_time (when unset), size_bytes and sha256.
  // Idempotent per job: when model.job_id() is set and a version stored by that job still exists,
  // that version is returned and nothing is written, so a job that runs again after a crash
  // (between storing its model and recording its success) keeps one model version.
  // InvalidArgument for a bad name or an unspecified kind; ResourceExhausted when the data
  // directory is out of space; Unavailable when it cannot be written (nothing is stored then).
  virtual absl::StatusOr<v1::Model> PutModel(const v1::Model& model, std::string_view blob) = 0;

  // Version `version` of model `name`, or its latest version when `version` is 0. NotFound when
  // the name or version is unknown; InvalidArgument for a malformed name or negative version.
  virtual absl::StatusOr<v1::Model> GetModel(std::string_view name, int64_t version) = 0;

  // The model version job `job_id` stored (see PutModel), or nullopt when it stored none (or it
  // was deleted). How recovery tells a job that finished its work but not its bookkeeping.
  virtual absl::StatusOr<std::optional<v1::Model>> FindModelOfJob(std::string_view job_id) = 0;

  // Stored models, newest first, only those named `name` unless it is empty; paging as ListJobs.
  virtual absl::StatusOr<Page<v1::Model>> ListModels(std::string_view name, int page_size,
                                                     std::string_view page_token) = 0;

  // Deletes version `version` of `name` (0 = every version) with its files. Deleted version
  // numbers are never reused. NotFound when nothing matches.
  virtual absl::Status DeleteModel(std::string_view name, int64_t version) = 0;

  // The stored bytes of a model version (0 = latest), verified against its checksum. NotFound as
  // GetModel; DataLoss when the file is missing, has the wrong size or fails the checksum.
  virtual absl::StatusOr<std::string> ReadModelBlob(std::string_view name, int64_t version) = 0;

  // Statistics.

  // Counts and sizes of what is stored.
  virtual absl::StatusOr<StoreStats> Stats() = 0;
};

// Options of SqliteStore::Open.
struct SqliteStoreOptions {
  // Directory holding everything: store.db (+ -wal, -shm), LOCK, datasets/<sha256>.bin and
  // models/<name>/<version>.drfm. Created if missing. Required.
  std::string data_dir;
  // How long a statement waits for a lock held by another connection (e.g. the sqlite3 shell).
  absl::Duration busy_timeout = absl::Seconds(5);

  // InvalidArgument when data_dir is empty or busy_timeout is negative.
  absl::Status Validate() const;
};

// The embedded Store: SQLite in WAL mode with synchronous=FULL (a commit is on disk when it
// returns) and one blob file per dataset and model version, written atomically (temporary file,
// fsync, rename, fsync of the directory) and checked against a SHA-256 stored in the database
// whenever it is read. One process owns a data directory (an exclusive lock on data_dir/LOCK).
//
// Thread safety: one SQLite connection, used only under `mu_`; file writing, hashing and reading
// happen outside the lock, so long blob transfers do not block other calls.
class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the store in options.data_dir, takes the directory lock, applies
  // pending schema migrations and removes what a crash can leave behind: temporary files and
  // blob files no row refers to. InvalidArgument for bad options; FailedPrecondition when
  // another store holds the directory, the database was written by a newer schema, or the data
  // directory (or the database) cannot be written: the store is never opened read-only;
  // Internal on other I/O or SQLite errors.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const SqliteStoreOptions& options);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Schema version this build writes.
  static int LatestSchemaVersion();
  // Files Open removed as leftovers of a crash (see Open).
  int64_t files_removed_at_open() const { return files_removed_at_open_; }
  // Path of a dataset's file and a model version's file (whether or not they exist).
  std::string DatasetPath(std::string_view sha256) const;
  std::string ModelPath(std::string_view name, int64_t version) const;

  absl::StatusOr<CreateJobResult> CreateJob(const v1::Job& job,
                                            const google::protobuf::Message& request,
                                            absl::Span<const v1::JobEvent> events) override;
  absl::StatusOr<v1::Job> GetJob(std::string_view job_id) override;
  absl::StatusOr<std::optional<v1::Job>> FindJobByRequest(
      std::string_view request_id, const google::protobuf::Message& request) override;
  absl::StatusOr<std::vector<int64_t>> UpdateJob(const v1::Job& job,
                                                 absl::Span<const v1::JobEvent> events) override;
  absl::StatusOr<Page<v1::Job>> ListJobs(const JobFilter& filter, int page_size,
                                         std::string_view page_token) override;
  absl::Status DeleteJob(std::string_view job_id) override;
  absl::Status MarkCancelRequested(std::string_view job_id) override;
  absl::StatusOr<bool> CancelRequested(std::string_view job_id) override;
  absl::StatusOr<int64_t> AppendEvent(std::string_view job_id, const v1::JobEvent& event) override;
  absl::StatusOr<std::vector<v1::JobEvent>> ListEvents(std::string_view job_id,
                                                       int64_t after_sequence, int limit) override;
  absl::StatusOr<std::unique_ptr<DatasetUpload>> StartDatasetUpload() override;
  absl::StatusOr<v1::Dataset> GetDataset(std::string_view dataset) override;
  absl::StatusOr<Page<v1::Dataset>> ListDatasets(int page_size,
                                                 std::string_view page_token) override;
  absl::Status DeleteDataset(std::string_view dataset) override;
  absl::StatusOr<core::Dataset> LoadDataset(std::string_view dataset, int64_t offset,
                                            int64_t limit) override;
  absl::StatusOr<v1::Model> PutModel(const v1::Model& model, std::string_view blob) override;
  absl::StatusOr<v1::Model> GetModel(std::string_view name, int64_t version) override;
  absl::StatusOr<std::optional<v1::Model>> FindModelOfJob(std::string_view job_id) override;
  absl::StatusOr<Page<v1::Model>> ListModels(std::string_view name, int page_size,
                                             std::string_view page_token) override;
  absl::Status DeleteModel(std::string_view name, int64_t version) override;
  absl::StatusOr<std::string> ReadModelBlob(std::string_view name, int64_t version) override;
  absl::StatusOr<StoreStats> Stats() override;

 private:
  class Upload;

  SqliteStore(SqliteStoreOptions options, int lock_fd);

  absl::Status Initialize();
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RemoveUnreferencedFilesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Second half of Upload::Commit: dedup, name check, rename into place and insert.
  absl::StatusOr<PutDatasetResult> CommitUpload(const DatasetInfo& info, const std::string& temp,
                                                const std::string& sha256, int64_t size_bytes);
  absl::StatusOr<v1::Dataset> GetDatasetLocked(std::string_view dataset)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Model> GetModelLocked(std::string_view name, int64_t version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<v1::Job>> FindJobByRequestLocked(std::string_view request_id,
                                                                std::string_view request_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The oldest stored version whose job_id is `job_id`, if any.
  absl::StatusOr<std::optional<v1::Model>> FindModelOfJobLocked(std::string_view job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> AppendEventLocked(std::string_view job_id, const v1::JobEvent& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SqliteStoreOptions options_;
  const std::string datasets_dir_;
  const std::string models_dir_;
  const int lock_fd_;  // Holds the flock on data_dir/LOCK; closed by the destructor.
  int64_t files_removed_at_open_ = 0;  // Written by Open only.
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_STORE_H_
