// SqliteStore: the embedded Store. Layout under the data directory:
//   store.db (+ store.db-wal, store.db-shm)  SQLite database, WAL mode, synchronous=FULL
//   LOCK                                     flock'ed while a store has the directory open
//   datasets/<sha256>.bin                    features (float32 LE, row-major), labels (int32 LE)
//   models/<name>/<version>.drfm             a serialized model, as given to PutModel
//   datasets/.tmp-*, models/.tmp-*           files being written; removed by Open after a crash
// A blob file is written to a temporary file in its final file system, fsync'ed, renamed into
// place and its directory fsync'ed, and only then is its row (with its SHA-256) committed; readers
// verify the SHA-256. A crash therefore leaves at worst an unreferenced file, never a row without
// its complete file; Open removes such files (and temporary ones) before anything can see them.
#include "server/store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/hash.h"

// Blob files store raw little-endian values, copied to and from memory as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "drfm's stored files are little-endian");

namespace drfm::server {
namespace {

namespace fs = std::filesystem;

// Debian's abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr char kTempPrefix[] = ".tmp-";
constexpr char kDatabaseFile[] = "store.db";
constexpr char kLockFile[] = "LOCK";
constexpr size_t kIoChunkBytes = size_t{1} << 20;

// Schema migrations: kMigrations[i] takes the database from version i to version i + 1. Append
// new entries; never edit a released one.
constexpr const char* kMigrations[] = {
    // Version 1.
    R"sql(
    CREATE TABLE jobs (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order; paging cursor
      id TEXT NOT NULL UNIQUE,
      kind INTEGER NOT NULL,                  -- drfm.v1.Job.Kind
      state INTEGER NOT NULL,                 -- drfm.v1.Job.State
      priority INTEGER NOT NULL,
      create_time_us INTEGER NOT NULL,        -- microseconds since the Unix epoch
      request_id TEXT UNIQUE,                 -- NULL when the job has none
      request BLOB NOT NULL,                  -- deterministic serialization of the submit request
      job BLOB NOT NULL,                      -- serialized drfm.v1.Job
      last_sequence INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_state ON jobs (state, seq);
    CREATE INDEX jobs_by_kind ON jobs (kind, seq);
    CREATE TABLE events (
      job_id TEXT NOT NULL REFERENCES jobs (id),
      sequence INTEGER NOT NULL,
      time_us INTEGER NOT NULL,
      event BLOB NOT NULL,                    -- serialized drfm.v1.JobEvent
      PRIMARY KEY (job_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE datasets (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      name TEXT NOT NULL UNIQUE,
      sha256 TEXT NOT NULL UNIQUE,            -- of the file = of the content
      rows INTEGER NOT NULL,
      cols INTEGER NOT NULL,
      num_classes INTEGER NOT NULL,
      size_bytes INTEGER NOT NULL,
      create_time_us INTEGER NOT NULL
    );
    CREATE TABLE model_names (
      name TEXT PRIMARY KEY,
      last_version INTEGER NOT NULL           -- never decreases, so versions are never reused
    ) WITHOUT ROWID;
    CREATE TABLE models (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      name TEXT NOT NULL,
      version INTEGER NOT NULL,
      kind INTEGER NOT NULL,                  -- drfm.v1.Model.Kind
      sha256 TEXT NOT NULL,                   -- of the file
      size_bytes INTEGER NOT NULL,
      create_time_us INTEGER NOT NULL,
      job_id TEXT NOT NULL,
      model BLOB NOT NULL,                    -- serialized drfm.v1.Model
      UNIQUE (name, version)
    );
    )sql",
    // Version 2: models by the job that stored them (PutModel returns a job's earlier version;
    // recovery finds the model of a job that crashed before recording its success), and durable
    // cancel requests of running jobs.
    R"sql(
    CREATE INDEX models_by_job ON models (job_id);
    ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    )sql",
};
constexpr int kLatestSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

// Time.

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  const int64_t nanos = absl::ToUnixNanos(time);
  google::protobuf::Timestamp ts;
  ts.set_seconds(nanos / 1000000000);
  ts.set_nanos(static_cast<int32_t>(nanos % 1000000000));
  return ts;
}

int64_t ToMicros(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000000 + ts.nanos() / 1000;
}

google::protobuf::Timestamp FromMicros(int64_t micros) {
  return ToTimestamp(absl::FromUnixMicros(micros));
}

// Hashing and randomness.

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

// `bytes` cryptographically random bytes as lowercase hex.
std::string RandomHex(int bytes) {
  std::string raw(bytes, '\0');
  DRFM_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) == 1);
  return absl::BytesToHexString(raw);
}

// Files.

// strerror(3), thread-safe.
std::string ErrnoText(int error) {
  char buffer[256];
  return strerror_r(error, buffer, sizeof(buffer));  // GNU: returns the text.
}

bool IsOutOfSpace(int error) { return error == ENOSPC || error == EDQUOT || error == EFBIG; }
bool IsNotWritable(int error) { return error == EROFS || error == EACCES || error == EPERM; }

// What a client is told when the data directory is full (ENOSPC), over quota (EDQUOT) or a write
// hit the process's file size limit (EFBIG, RLIMIT_FSIZE): RESOURCE_EXHAUSTED, which a client
// may retry once space is freed; nothing half-written is kept.
constexpr char kOutOfSpaceHint[] =
    "the server's data directory is out of space; nothing was stored: free space there (or raise "
    "its quota or file size limit) and retry";
// A data directory that cannot be written (read-only mount, permissions): UNAVAILABLE, since an
// operator has to fix the server before the request can succeed.
constexpr char kNotWritableHint[] =
    "the server cannot write its data directory; nothing was stored: an operator must make it "
    "writable (permissions, a read-write mount), then retry";

// A failed file operation as a status: out of space -> RESOURCE_EXHAUSTED, not writable ->
// UNAVAILABLE (both with what to do), anything else INTERNAL.
absl::Status IoError(int error, std::string_view what, std::string_view path) {
  const std::string message =
      absl::StrCat("store: cannot ", AsAbsl(what), " ", AsAbsl(path), ": ", ErrnoText(error));
  if (IsOutOfSpace(error))
    return absl::ResourceExhaustedError(absl::StrCat(message, "; ", kOutOfSpaceHint));
  if (IsNotWritable(error))
    return absl::UnavailableError(absl::StrCat(message, "; ", kNotWritableHint));
  return absl::InternalError(message);
}

// Closes its descriptor on destruction.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  // Closes now; the result of close(2) matters after writes.
  int Reset() {
    int rc = 0;
    if (fd_ >= 0) rc = close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const char* data, size_t size, std::string_view path) {
  while (size > 0) {
    const ssize_t n = write(fd, data, std::min(size, kIoChunkBytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, "write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// fsync of a directory makes the creation, rename or removal of its entries durable.
absl::Status SyncDirectory(const std::string& dir) {
  ScopedFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(errno, "open directory", dir);
  if (fsync(fd.get()) != 0) return IoError(errno, "fsync directory", dir);
  return absl::OkStatus();
}

// Creates `dir` (and missing parents); fsyncs the parent when `dir` was new.
absl::Status MakeDirectory(const std::string& dir) {
  std::error_code ec;
  const bool created = fs::create_directories(dir, ec);
  if (ec) return IoError(ec.value(), "create directory", dir);
  if (!fs::is_directory(dir, ec))
    return absl::InternalError(absl::StrCat(dir, " is not a directory"));
  if (created) return SyncDirectory(fs::path(dir).parent_path().string());
  return absl::OkStatus();
}

// Creates a new, empty temporary file in `dir` (same file system as its final name).
absl::StatusOr<std::pair<ScopedFd, std::string>> CreateTempFile(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kTempPrefix, RandomHex(8));
  ScopedFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return IoError(errno, "create", path);
  return std::make_pair(std::move(fd), path);
}

// OK when files can be created in the existing directory `dir` (an empty temporary file is created
// and removed). FailedPrecondition, saying what to do, when the directory is read-only or not ours
// to write.
absl::Status CheckWritable(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kTempPrefix, "probe-", RandomHex(8));
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    if (IsNotWritable(error)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir, " is not writable (", ErrnoText(error),
          "): drfm-server keeps its jobs, datasets and models there and must be able to write "
          "it; make it writable for this user or mount it read-write, or choose another "
          "--data-dir"));
    }
    return IoError(error, "create a file in", dir);
  }
  close(fd);
  unlink(path.c_str());
  return absl::OkStatus();
}

// An error of opening the store: a data directory that cannot be written (UNAVAILABLE from
// IoError or SqliteError) is FailedPrecondition there, like the other reasons not to start.
absl::Status ForOpen(absl::Status status) {
  if (!absl::IsUnavailable(status)) return status;
  return absl::FailedPreconditionError(absl::StrCat(
      status.message(), " (drfm-server does not start on a data directory it cannot write)"));
}

// Makes the written contents of `fd` durable and closes it.
absl::Status SyncAndClose(ScopedFd& fd, std::string_view path) {
  if (fsync(fd.get()) != 0) return IoError(errno, "fsync", path);
  if (fd.Reset() != 0) return IoError(errno, "close", path);
  return absl::OkStatus();
}

// Writes `data` to a durable temporary file in `dir` and returns its path. Nothing is left behind
// on failure.
absl::StatusOr<std::string> WriteTempFile(const std::string& dir, std::string_view data) {
  DRFM_ASSIGN_OR_RETURN(auto temp, CreateTempFile(dir));
  absl::Status status = WriteAll(temp.first.get(), data.data(), data.size(), temp.second);
  if (status.ok()) status = SyncAndClose(temp.first, temp.second);
  if (!status.ok()) {
    unlink(temp.second.c_str());
    return status;
  }
  return temp.second;
}

// Renames `from` to `to` and fsyncs the directory of `to`: the atomic, durable step of a write.
absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) return IoError(errno, "rename to " + to, from);
  return SyncDirectory(fs::path(to).parent_path().string());
}

// Reads all of `path`, checking its size and SHA-256, and hands every piece to `sink` with its
// file offset. DataLoss when the file is missing, has another size or another checksum.
absl::Status ReadVerified(const std::string& path, int64_t expected_size,
                          std::string_view expected_sha256,
                          absl::FunctionRef<void(int64_t, const char*, size_t)> sink) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      return absl::DataLossError(absl::StrCat("stored file ", path, " is missing"));
    }
    return IoError(errno, "open", path);
  }
  std::string buffer(kIoChunkBytes, '\0');
  Sha256 hash;
  int64_t offset = 0;
  for (;;) {
    const ssize_t n = read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, "read", path);
    }
    if (n == 0) break;
    if (offset + n > expected_size) break;  // Too long; reported below.
    hash.Update(buffer.data(), static_cast<size_t>(n));
    sink(offset, buffer.data(), static_cast<size_t>(n));
    offset += n;
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return IoError(errno, "stat", path);
  if (offset != expected_size || st.st_size != expected_size) {
    return absl::DataLossError(absl::StrCat("stored file ", path, " has ", st.st_size,
                                            " bytes, expected ", expected_size));
  }
  const std::string actual = hash.HexDigest();
  if (actual != expected_sha256) {
    return absl::DataLossError(absl::StrCat("stored file ", path, " is corrupt: SHA-256 ", actual,
                                            ", expected ", AsAbsl(expected_sha256)));
  }
  return absl::OkStatus();
}

// Copies the part of [offset, offset + size) of a file that falls into [begin, end) to `dest`,
// which holds the file's bytes [begin, end).
void CopyOverlap(int64_t offset, const char* data, size_t size, int64_t begin, int64_t end,
                 char* dest) {
  const int64_t lo = std::max(offset, begin);
  const int64_t hi = std::min(offset + static_cast<int64_t>(size), end);
  if (lo < hi) std::memcpy(dest + (lo - begin), data + (lo - offset), static_cast<size_t>(hi - lo));
}

// SQLite.

// A failed SQLite call as a status. A full disk and an unwritable database get the codes and
// hints of IoError; SQLite reports some of them as I/O errors, told apart by the OS error.
absl::Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  const std::string message = absl::StrCat("store: ", AsAbsl(what), ": ", sqlite3_errmsg(db));
  const int os_error = sqlite3_system_errno(db);
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return absl::AlreadyExistsError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat(message, "; ", kOutOfSpaceHint));
    case SQLITE_READONLY:
      return absl::UnavailableError(absl::StrCat(message, "; ", kNotWritableHint));
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      if (IsOutOfSpace(os_error)) {
        return absl::ResourceExhaustedError(
            absl::StrCat(message, " (", ErrnoText(os_error), "); ", kOutOfSpaceHint));
      }
      if (IsNotWritable(os_error)) {
        return absl::UnavailableError(
            absl::StrCat(message, " (", ErrnoText(os_error), "); ", kNotWritableHint));
      }
      return absl::InternalError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status Exec(sqlite3* db, const char* sql) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, sql);
  return absl::OkStatus();
}

// A prepared statement. Bind errors are kept and reported by Step.
class Statement {
 public:
  static absl::StatusOr<Statement> Prepare(sqlite3* db, std::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db, rc, absl::StrCat("prepare ", AsAbsl(sql)));
    return Statement(db, stmt);
  }
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), rc_(other.rc_) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  // Parameters are 1-based, in the order of the '?'s.
  Statement& BindInt(int index, int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Statement& BindText(int index, std::string_view value) {
    Check(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                              SQLITE_UTF8));
    return *this;
  }
  Statement& BindBlob(int index, std::string_view value) {
    // A non-null pointer even for an empty blob, so it is stored as a zero-length blob.
    Check(sqlite3_bind_blob64(stmt_, index, value.empty() ? "" : value.data(), value.size(),
                              SQLITE_TRANSIENT));
    return *this;
  }
  Statement& BindNull(int index) {
    Check(sqlite3_bind_null(stmt_, index));
    return *this;
  }

  // True when a row is available, false when the statement is done.
  absl::StatusOr<bool> Step() {
    if (rc_ != SQLITE_OK) return SqliteError(db_, rc_, sqlite3_sql(stmt_));
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, sqlite3_sql(stmt_));
  }
  // Runs a statement that returns no rows.
  absl::Status Run() { return Step().status(); }

  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  std::string Text(int column) const {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    return text == nullptr ? std::string()
                           : std::string(reinterpret_cast<const char*>(text),
                                         sqlite3_column_bytes(stmt_, column));
  }
  std::string_view Blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    return data == nullptr ? std::string_view()
                           : std::string_view(static_cast<const char*>(data),
                                              sqlite3_column_bytes(stmt_, column));
  }

 private:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  void Check(int rc) {
    if (rc != SQLITE_OK && rc_ == SQLITE_OK) rc_ = rc;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE ... COMMIT; rolled back on destruction unless committed. IMMEDIATE takes the
// write lock up front, so a transaction never fails half-way for lack of it.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (begun_ && !committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  absl::Status Begin() {
    DRFM_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
    begun_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    DRFM_RETURN_IF_ERROR(Exec(db_, "COMMIT"));
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  bool begun_ = false;
  bool committed_ = false;
};

// Protos and listing.

std::string SerializeDeterministically(const google::protobuf::Message& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return bytes;
}

template <typename T>
absl::StatusOr<T> Parse(std::string_view bytes, std::string_view what) {
  T message;
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(absl::StrCat("store: stored ", AsAbsl(what), " cannot be parsed"));
  }
  return message;
}

absl::StatusOr<v1::Job> ParseJob(const Statement& row, int job_column, int sequence_column) {
  DRFM_ASSIGN_OR_RETURN(v1::Job job, Parse<v1::Job>(row.Blob(job_column), "job"));
  job.set_last_event_sequence(row.Int(sequence_column));
  return job;
}

absl::StatusOr<int> ResolvePageSize(int page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be >= 0 (0 = default), got ", page_size));
  }
  if (page_size == 0) return Store::kDefaultPageSize;
  return std::min(page_size, Store::kMaxPageSize);
}

// A page token is the insertion sequence of the last item of the previous page; listings go
// newest first, so the next page holds the smaller sequences. Empty: no bound.
absl::StatusOr<int64_t> ParsePageToken(std::string_view token) {
  if (token.empty()) return std::numeric_limits<int64_t>::max();
  int64_t seq = 0;
  if (!absl::SimpleAtoi(AsAbsl(token), &seq) || seq <= 0 || absl::StrCat(seq) != AsAbsl(token)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_token \"", absl::CHexEscape(AsAbsl(token)),
        "\" was not issued by this server; pass the next_page_token of the previous page"));
  }
  return seq;
}

// Columns read by DatasetFromRow, in order.
constexpr char kDatasetColumns[] =
    "id, name, rows, cols, num_classes, sha256, size_bytes, create_time_us";

v1::Dataset DatasetFromRow(const Statement& row) {
  v1::Dataset dataset;
  dataset.set_id(row.Text(0));
  dataset.set_name(row.Text(1));
  dataset.set_rows(row.Int(2));
  dataset.set_cols(row.Int(3));
  dataset.set_num_classes(static_cast<int32_t>(row.Int(4)));
  dataset.set_sha256(row.Text(5));
  dataset.set_size_bytes(row.Int(6));
  *dataset.mutable_create_time() = FromMicros(row.Int(7));
  return dataset;
}

bool IsReservedDatasetName(std::string_view name) {
  // Dataset ids ("ds-" + 16 hex digits) are looked up before names, so a name of that form could
  // be shadowed.
  return name.size() == 19 && absl::StartsWith(AsAbsl(name), "ds-") &&
         std::all_of(name.begin() + 3, name.end(),
                     [](char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); });
}

}  // namespace

absl::Status ValidateName(std::string_view what, std::string_view name) {
  const auto allowed = [](char c) {
    return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
  };
  if (name.empty() || name.size() > kMaxNameLength || !absl::ascii_isalnum(name[0]) ||
      !std::all_of(name.begin(), name.end(), allowed) || absl::StrContains(AsAbsl(name), "..")) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(what), " \"", absl::CHexEscape(AsAbsl(name.substr(0, kMaxNameLength + 1))),
        "\" is not allowed: use 1 to ", kMaxNameLength,
        " characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, without \"..\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<PutDatasetResult> Store::PutDataset(const DatasetInfo& info,
                                                   std::string_view features,
                                                   std::string_view labels) {
  DRFM_ASSIGN_OR_RETURN(std::unique_ptr<DatasetUpload> upload, StartDatasetUpload());
  DRFM_RETURN_IF_ERROR(upload->AppendFeatures(features));
  DRFM_RETURN_IF_ERROR(upload->AppendLabels(labels));
  return upload->Commit(info);
}

absl::Status SqliteStoreOptions::Validate() const {
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir must not be empty");
  if (busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("busy_timeout must be >= 0");
  }
  return absl::OkStatus();
}

// Features go to a temporary file as they arrive (they can be large); labels (4 bytes a row) are
// kept in memory and appended at Commit, because the file holds all features first.
class SqliteStore::Upload final : public DatasetUpload {
 public:
  Upload(SqliteStore* store, ScopedFd fd, std::string temp_path)
      : store_(store), fd_(std::move(fd)), temp_path_(std::move(temp_path)) {}
  ~Upload() override { Discard(); }

  absl::Status AppendFeatures(std::string_view bytes) override {
    DRFM_RETURN_IF_ERROR(CheckOpen());
    absl::Status status = WriteAll(fd_.get(), bytes.data(), bytes.size(), temp_path_);
    if (!status.ok()) {
      Discard();
      return status;
    }
    hash_.Update(bytes.data(), bytes.size());
    feature_bytes_ += static_cast<int64_t>(bytes.size());
    return absl::OkStatus();
  }

  absl::Status AppendLabels(std::string_view bytes) override {
    DRFM_RETURN_IF_ERROR(CheckOpen());
    labels_.append(bytes);
    return absl::OkStatus();
  }

  int64_t feature_bytes() const override { return feature_bytes_; }
  int64_t label_bytes() const override { return static_cast<int64_t>(labels_.size()); }

  absl::StatusOr<PutDatasetResult> Commit(const DatasetInfo& info) override {
    DRFM_RETURN_IF_ERROR(CheckOpen());
    absl::StatusOr<std::string> sha256 = Finish(info);
    if (!sha256.ok()) {
      Discard();
      return sha256.status();
    }
    std::string temp = std::exchange(temp_path_, std::string());
    return store_->CommitUpload(info, temp, *sha256, feature_bytes_ + label_bytes());
  }

 private:
  absl::Status CheckOpen() const {
    if (temp_path_.empty()) {
      return absl::FailedPreconditionError("dataset upload is already committed or discarded");
    }
    return absl::OkStatus();
  }

  // Validates `info` against what was written, appends the labels and makes the file durable.
  // Returns the content hash.
  absl::StatusOr<std::string> Finish(const DatasetInfo& info) {
    DRFM_RETURN_IF_ERROR(ValidateName("dataset name", info.name));
    if (IsReservedDatasetName(info.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset name \"", info.name, "\" has the form of a dataset id (ds-<16 hex digits>)"));
    }
    constexpr int64_t kMaxCells = std::numeric_limits<int64_t>::max() / 8;
    if (info.rows < 1 || info.cols < 1 || info.rows > kMaxCells / info.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset rows and cols must be >= 1, got ", info.rows, " x ", info.cols));
    }
    if (info.num_classes < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_classes must be >= 1, got ", info.num_classes));
    }
    const std::string expected = absl::AsciiStrToLower(info.expected_sha256);
    if (!expected.empty() && !IsSha256Hex(expected)) {
      return absl::InvalidArgumentError(
          "sha256 must be 64 hex digits (the SHA-256 of the feature bytes then the label bytes)");
    }
    if (feature_bytes_ != 4 * info.rows * info.cols || label_bytes() != 4 * info.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("a ", info.rows, " x ", info.cols, " dataset needs ",
                       4 * info.rows * info.cols, " feature bytes and ", 4 * info.rows,
                       " label bytes, got ", feature_bytes_, " and ", label_bytes()));
    }
    hash_.Update(labels_.data(), labels_.size());
    std::string actual = hash_.HexDigest();
    if (!expected.empty() && actual != expected) {
      return absl::DataLossError(
          absl::StrCat("uploaded dataset has SHA-256 ", actual, " but the header says ", expected));
    }
    DRFM_RETURN_IF_ERROR(WriteAll(fd_.get(), labels_.data(), labels_.size(), temp_path_));
    DRFM_RETURN_IF_ERROR(SyncAndClose(fd_, temp_path_));
    return actual;
  }

  void Discard() {
    fd_.Reset();
    if (!temp_path_.empty()) unlink(temp_path_.c_str());
    temp_path_.clear();
    labels_.clear();
  }

  SqliteStore* const store_;
  ScopedFd fd_;
  std::string temp_path_;  // Empty once committed or discarded.
  Sha256 hash_;
  int64_t feature_bytes_ = 0;
  std::string labels_;
};

SqliteStore::SqliteStore(SqliteStoreOptions options, int lock_fd)
    : options_(std::move(options)),
      datasets_dir_(options_.data_dir + "/datasets"),
      models_dir_(options_.data_dir + "/models"),
      lock_fd_(lock_fd) {}

SqliteStore::~SqliteStore() {
  {
    absl::MutexLock lock(&mu_);
    if (db_ != nullptr) sqlite3_close_v2(db_);
    db_ = nullptr;
  }
  close(lock_fd_);  // Releases the flock.
}

int SqliteStore::LatestSchemaVersion() { return kLatestSchemaVersion; }

std::string SqliteStore::DatasetPath(std::string_view sha256) const {
  return absl::StrCat(datasets_dir_, "/", AsAbsl(sha256), ".bin");
}

std::string SqliteStore::ModelPath(std::string_view name, int64_t version) const {
  return absl::StrCat(models_dir_, "/", AsAbsl(name), "/", version, ".drfm");
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const SqliteStoreOptions& options) {
  DRFM_RETURN_IF_ERROR(options.Validate());
  // A data directory that cannot be written is refused here, before anything is read: the store
  // does not serve read-only (recovery writes at once, and a server that accepted work it could
  // never record would lose it), so the server does not start and says why.
  DRFM_RETURN_IF_ERROR(ForOpen(MakeDirectory(options.data_dir)));
  DRFM_RETURN_IF_ERROR(CheckWritable(options.data_dir));
  const std::string lock_path = absl::StrCat(options.data_dir, "/", kLockFile);
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return ForOpen(IoError(errno, "open", lock_path));
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(lock_fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat("data directory ", options.data_dir,
                                                        " is in use by another drfm store (",
                                                        lock_path, " is locked)"));
    }
    return IoError(error, "lock", lock_path);
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(options, lock_fd));
  DRFM_RETURN_IF_ERROR(store->Initialize());
  return store;
}

absl::Status SqliteStore::Initialize() {
  for (const std::string& dir : {datasets_dir_, models_dir_}) {
    DRFM_RETURN_IF_ERROR(ForOpen(MakeDirectory(dir)));
    DRFM_RETURN_IF_ERROR(CheckWritable(dir));
  }
  absl::MutexLock lock(&mu_);
  const std::string path = absl::StrCat(options_.data_dir, "/", kDatabaseFile);
  // NOMUTEX: the connection is only used under mu_.
  const int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = db_ == nullptr ? absl::InternalError("store: out of memory")
                                         : SqliteError(db_, rc, absl::StrCat("open ", path));
    sqlite3_close_v2(db_);
    db_ = nullptr;
    return ForOpen(status);
  }
  if (sqlite3_db_readonly(db_, "main") == 1) {
    // SQLite opens a write-protected file read-only instead of failing.
    return absl::FailedPreconditionError(
        absl::StrCat("store: the database ", path,
                     " is read-only: drfm-server must be able to write it; "
                     "make it writable for this user, or choose another --data-dir"));
  }
  sqlite3_busy_timeout(db_, static_cast<int>(absl::ToInt64Milliseconds(options_.busy_timeout)));
  {
    DRFM_ASSIGN_OR_RETURN(Statement wal, Statement::Prepare(db_, "PRAGMA journal_mode=WAL"));
    DRFM_ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || absl::AsciiStrToLower(wal.Text(0)) != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("store: the file system of ", path, " does not support SQLite's WAL mode"));
    }
  }
  DRFM_RETURN_IF_ERROR(Exec(db_, "PRAGMA synchronous=FULL"));
  DRFM_RETURN_IF_ERROR(Exec(db_, "PRAGMA foreign_keys=ON"));
  DRFM_RETURN_IF_ERROR(ForOpen(Migrate()));
  return RemoveUnreferencedFilesLocked();
}

absl::Status SqliteStore::Migrate() {
  DRFM_RETURN_IF_ERROR(
      Exec(db_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_, "SELECT MAX(version) FROM schema_version"));
  DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
  const int current = row && !select.IsNull(0) ? static_cast<int>(select.Int(0)) : 0;
  if (current > kLatestSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: the database has schema version ", current, " but this build knows only up to ",
        kLatestSchemaVersion, "; use a newer drfm-server"));
  }
  for (int version = current + 1; version <= kLatestSchemaVersion; ++version) {
    Transaction tx(db_);
    DRFM_RETURN_IF_ERROR(tx.Begin());
    DRFM_RETURN_IF_ERROR(Exec(db_, kMigrations[version - 1]));
    DRFM_ASSIGN_OR_RETURN(
        Statement insert,
        Statement::Prepare(db_, "INSERT INTO schema_version (version) VALUES (?)"));
    DRFM_RETURN_IF_ERROR(insert.BindInt(1, version).Run());
    DRFM_RETURN_IF_ERROR(tx.Commit());
  }
  return absl::OkStatus();
}

// Files a crash can leave behind: temporary files (an upload or model being written, a
// writability probe), a dataset file whose row was never committed or was deleted, and a model
// version file likewise. None is referenced by a row, so none can be visible through the API; they
// are removed here, before the store is used. Files whose names the store does not give are left
// alone.
absl::Status SqliteStore::RemoveUnreferencedFilesLocked() {
  std::set<std::string> dataset_hashes;
  std::set<std::pair<std::string, int64_t>> model_versions;
  {
    DRFM_ASSIGN_OR_RETURN(Statement select, Statement::Prepare(db_, "SELECT sha256 FROM datasets"));
    for (;;) {
      DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      dataset_hashes.insert(select.Text(0));
    }
  }
  {
    DRFM_ASSIGN_OR_RETURN(Statement select,
                          Statement::Prepare(db_, "SELECT name, version FROM models"));
    for (;;) {
      DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      model_versions.emplace(select.Text(0), select.Int(1));
    }
  }
  // The entries of `dir`; `ec` is set when it cannot be listed.
  auto list = [](const std::string& dir, std::error_code& ec) {
    std::vector<fs::directory_entry> entries;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      entries.push_back(*it);
    }
    return entries;
  };
  auto is_temporary = [](const fs::path& path) {
    return absl::StartsWith(path.filename().string(), kTempPrefix);
  };
  // Removes `path` and makes the removal durable with its directory.
  auto remove = [this](const fs::path& path) -> absl::Status {
    if (unlink(path.c_str()) != 0 && errno != ENOENT)
      return IoError(errno, "remove", path.string());
    ++files_removed_at_open_;
    return SyncDirectory(path.parent_path().string());
  };
  std::error_code ec;
  for (const fs::directory_entry& entry : list(options_.data_dir, ec)) {
    if (is_temporary(entry.path())) DRFM_RETURN_IF_ERROR(remove(entry.path()));
  }
  if (ec) return IoError(ec.value(), "list", options_.data_dir);
  for (const fs::directory_entry& entry : list(datasets_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string sha256 = name.substr(0, 64);
    const bool dataset_file = name == absl::StrCat(sha256, ".bin") && IsSha256Hex(sha256);
    if (is_temporary(entry.path()) || (dataset_file && dataset_hashes.count(sha256) == 0)) {
      DRFM_RETURN_IF_ERROR(remove(entry.path()));
    }
  }
  if (ec) return IoError(ec.value(), "list", datasets_dir_);
  for (const fs::directory_entry& entry : list(models_dir_, ec)) {
    if (is_temporary(entry.path())) {
      DRFM_RETURN_IF_ERROR(remove(entry.path()));
      continue;
    }
    std::error_code is_dir_ec;
    if (!entry.is_directory(is_dir_ec)) continue;
    const std::string dir = entry.path().string();
    const std::string model_name = entry.path().filename().string();
    std::error_code dir_ec;
    for (const fs::directory_entry& file : list(dir, dir_ec)) {
      const std::string name = file.path().filename().string();
      int64_t version = 0;
      const bool model_file = absl::EndsWith(name, ".drfm") &&
                              absl::SimpleAtoi(AsAbsl(name).substr(0, name.size() - 5), &version) &&
                              name == absl::StrCat(version, ".drfm");
      if (is_temporary(file.path()) ||
          (model_file && model_versions.count({model_name, version}) == 0)) {
        DRFM_RETURN_IF_ERROR(remove(file.path()));
      }
    }
    if (dir_ec) return IoError(dir_ec.value(), "list", dir);
    // A model name's directory is removed with its last version (DeleteModel); one emptied here
    // goes too. rmdir fails, harmlessly, when it is not empty.
    if (rmdir(dir.c_str()) == 0) DRFM_RETURN_IF_ERROR(SyncDirectory(models_dir_));
  }
  if (ec) return IoError(ec.value(), "list", models_dir_);
  return absl::OkStatus();
}

absl::StatusOr<CreateJobResult> SqliteStore::CreateJob(const v1::Job& job,
                                                       const google::protobuf::Message& request,
                                                       absl::Span<const v1::JobEvent> events) {
  if (job.kind() == v1::Job::KIND_UNSPECIFIED || job.state() == v1::Job::STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError("store: a job needs a kind and a state");
  }
  if (!job.id().empty()) DRFM_RETURN_IF_ERROR(ValidateName("job id", job.id()));
  if (job.request_id().size() > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("request_id must be at most ",
                                                   kMaxRequestIdLength, " bytes, got ",
                                                   job.request_id().size()));
  }
  const std::string request_bytes = SerializeDeterministically(request);
  v1::Job stored = job;
  stored.clear_last_event_sequence();
  if (!stored.has_create_time()) *stored.mutable_create_time() = ToTimestamp(absl::Now());

  absl::MutexLock lock(&mu_);
  Transaction tx(db_);
  DRFM_RETURN_IF_ERROR(tx.Begin());
  if (!job.request_id().empty()) {
    DRFM_ASSIGN_OR_RETURN(std::optional<v1::Job> existing,
                          FindJobByRequestLocked(job.request_id(), request_bytes));
    if (existing.has_value()) return CreateJobResult{*std::move(existing), false};
  }
  // A generated id is 64 random bits; the loop only guards against the improbable collision.
  for (int attempt = 0;; ++attempt) {
    if (job.id().empty()) stored.set_id(RandomHex(8));
    DRFM_ASSIGN_OR_RETURN(Statement select,
                          Statement::Prepare(db_, "SELECT 1 FROM jobs WHERE id = ?"));
    select.BindText(1, stored.id());
    DRFM_ASSIGN_OR_RETURN(bool taken, select.Step());
    if (!taken) break;
    if (!job.id().empty() || attempt >= 3) {
      return absl::AlreadyExistsError(absl::StrCat("job id ", stored.id(), " is taken"));
    }
  }
  DRFM_ASSIGN_OR_RETURN(
      Statement insert,
      Statement::Prepare(db_,
                         "INSERT INTO jobs (id, kind, state, priority, create_time_us, "
                         "request_id, request, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.BindText(1, stored.id())
      .BindInt(2, stored.kind())
      .BindInt(3, stored.state())
      .BindInt(4, stored.priority())
      .BindInt(5, ToMicros(stored.create_time()))
      .BindBlob(7, request_bytes)
      .BindBlob(8, stored.SerializeAsString());
  if (stored.request_id().empty()) {
    insert.BindNull(6);
  } else {
    insert.BindText(6, stored.request_id());
  }
  DRFM_RETURN_IF_ERROR(insert.Run());
  for (const v1::JobEvent& event : events) {
    DRFM_ASSIGN_OR_RETURN(int64_t sequence, AppendEventLocked(stored.id(), event));
    stored.set_last_event_sequence(sequence);
  }
  DRFM_RETURN_IF_ERROR(tx.Commit());
  return CreateJobResult{std::move(stored), true};
}

absl::StatusOr<std::optional<v1::Job>> SqliteStore::FindJobByRequest(
    std::string_view request_id, const google::protobuf::Message& request) {
  if (request_id.empty()) return std::optional<v1::Job>();
  const std::string request_bytes = SerializeDeterministically(request);
  absl::MutexLock lock(&mu_);
  return FindJobByRequestLocked(request_id, request_bytes);
}

absl::StatusOr<std::optional<v1::Job>> SqliteStore::FindJobByRequestLocked(
    std::string_view request_id, std::string_view request_bytes) {
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_,
                         "SELECT id, request, job, last_sequence FROM jobs WHERE request_id = ?"));
  select.BindText(1, request_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return std::optional<v1::Job>();
  if (select.Blob(1) != request_bytes) {
    return absl::AlreadyExistsError(absl::StrCat(
        "request_id \"", absl::CHexEscape(AsAbsl(request_id)), "\" was already used by job ",
        select.Text(0), " for a different request; use a new request_id"));
  }
  DRFM_ASSIGN_OR_RETURN(v1::Job existing, ParseJob(select, 2, 3));
  return std::optional<v1::Job>(std::move(existing));
}

absl::StatusOr<v1::Job> SqliteStore::GetJob(std::string_view job_id) {
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_, "SELECT job, last_sequence FROM jobs WHERE id = ?"));
  select.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  return ParseJob(select, 0, 1);
}

absl::StatusOr<std::vector<int64_t>> SqliteStore::UpdateJob(const v1::Job& job,
                                                            absl::Span<const v1::JobEvent> events) {
  if (job.state() == v1::Job::STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError("store: a job needs a state");
  }
  v1::Job stored = job;
  stored.clear_last_event_sequence();
  const std::string bytes = stored.SerializeAsString();

  absl::MutexLock lock(&mu_);
  Transaction tx(db_);
  DRFM_RETURN_IF_ERROR(tx.Begin());
  DRFM_ASSIGN_OR_RETURN(
      Statement update,
      Statement::Prepare(db_, "UPDATE jobs SET state = ?, priority = ?, job = ? WHERE id = ?"));
  update.BindInt(1, stored.state())
      .BindInt(2, stored.priority())
      .BindBlob(3, bytes)
      .BindText(4, stored.id());
  DRFM_RETURN_IF_ERROR(update.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("job ", absl::CHexEscape(job.id()), " not found"));
  }
  std::vector<int64_t> sequences;
  sequences.reserve(events.size());
  for (const v1::JobEvent& event : events) {
    DRFM_ASSIGN_OR_RETURN(int64_t sequence, AppendEventLocked(job.id(), event));
    sequences.push_back(sequence);
  }
  DRFM_RETURN_IF_ERROR(tx.Commit());
  return sequences;
}

absl::StatusOr<Page<v1::Job>> SqliteStore::ListJobs(const JobFilter& filter, int page_size,
                                                    std::string_view page_token) {
  DRFM_ASSIGN_OR_RETURN(const int limit, ResolvePageSize(page_size));
  DRFM_ASSIGN_OR_RETURN(const int64_t before, ParsePageToken(page_token));
  std::string sql = "SELECT seq, job, last_sequence FROM jobs WHERE seq < ?";
  std::vector<int64_t> args = {before};
  if (filter.state != v1::Job::STATE_UNSPECIFIED) {
    sql += " AND state = ?";
    args.push_back(filter.state);
  }
  if (filter.kind != v1::Job::KIND_UNSPECIFIED) {
    sql += " AND kind = ?";
    args.push_back(filter.kind);
  }
  sql += " ORDER BY seq DESC LIMIT ?";
  args.push_back(limit + 1);  // One more tells whether there is a next page.

  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(Statement select, Statement::Prepare(db_, sql));
  for (size_t i = 0; i < args.size(); ++i) select.BindInt(static_cast<int>(i + 1), args[i]);
  Page<v1::Job> page;
  int64_t last_seq = 0;
  for (;;) {
    DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (static_cast<int>(page.items.size()) == limit) {
      page.next_page_token = absl::StrCat(last_seq);
      break;
    }
    DRFM_ASSIGN_OR_RETURN(v1::Job job, ParseJob(select, 1, 2));
    page.items.push_back(std::move(job));
    last_seq = select.Int(0);
  }
  return page;
}

absl::Status SqliteStore::DeleteJob(std::string_view job_id) {
  absl::MutexLock lock(&mu_);
  Transaction tx(db_);
  DRFM_RETURN_IF_ERROR(tx.Begin());
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_, "SELECT state FROM jobs WHERE id = ?"));
  select.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  const auto state = static_cast<v1::Job::State>(select.Int(0));
  if (state == v1::Job::QUEUED || state == v1::Job::RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", AsAbsl(job_id), " is ", v1::Job::State_Name(state),
                     "; cancel it and delete it once it has stopped"));
  }
  for (const char* sql : {"DELETE FROM events WHERE job_id = ?", "DELETE FROM jobs WHERE id = ?"}) {
    DRFM_ASSIGN_OR_RETURN(Statement del, Statement::Prepare(db_, sql));
    DRFM_RETURN_IF_ERROR(del.BindText(1, job_id).Run());
  }
  return tx.Commit();
}

absl::Status SqliteStore::MarkCancelRequested(std::string_view job_id) {
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(
      Statement update,
      Statement::Prepare(db_, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?"));
  DRFM_RETURN_IF_ERROR(update.BindText(1, job_id).Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SqliteStore::CancelRequested(std::string_view job_id) {
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_, "SELECT cancel_requested FROM jobs WHERE id = ?"));
  select.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  return select.Int(0) != 0;
}

absl::StatusOr<int64_t> SqliteStore::AppendEvent(std::string_view job_id,
                                                 const v1::JobEvent& event) {
  absl::MutexLock lock(&mu_);
  Transaction tx(db_);
  DRFM_RETURN_IF_ERROR(tx.Begin());
  DRFM_ASSIGN_OR_RETURN(int64_t sequence, AppendEventLocked(job_id, event));
  DRFM_RETURN_IF_ERROR(tx.Commit());
  return sequence;
}

// Runs inside the caller's transaction: reading last_sequence, inserting the event and bumping
// last_sequence commit together, so sequences stay contiguous across crashes.
absl::StatusOr<int64_t> SqliteStore::AppendEventLocked(std::string_view job_id,
                                                       const v1::JobEvent& event) {
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_, "SELECT last_sequence FROM jobs WHERE id = ?"));
  select.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  const int64_t sequence = select.Int(0) + 1;
  v1::JobEvent stored = event;
  stored.set_sequence(sequence);
  if (!stored.has_time()) *stored.mutable_time() = ToTimestamp(absl::Now());
  DRFM_ASSIGN_OR_RETURN(
      Statement insert,
      Statement::Prepare(
          db_, "INSERT INTO events (job_id, sequence, time_us, event) VALUES (?, ?, ?, ?)"));
  insert.BindText(1, job_id)
      .BindInt(2, sequence)
      .BindInt(3, ToMicros(stored.time()))
      .BindBlob(4, stored.SerializeAsString());
  DRFM_RETURN_IF_ERROR(insert.Run());
  DRFM_ASSIGN_OR_RETURN(Statement update,
                        Statement::Prepare(db_, "UPDATE jobs SET last_sequence = ? WHERE id = ?"));
  DRFM_RETURN_IF_ERROR(update.BindInt(1, sequence).BindText(2, job_id).Run());
  return sequence;
}

absl::StatusOr<std::vector<v1::JobEvent>> SqliteStore::ListEvents(std::string_view job_id,
                                                                  int64_t after_sequence,
                                                                  int limit) {
  if (after_sequence < 0 || limit < 0) {
    return absl::InvalidArgumentError(absl::StrCat("after_sequence and limit must be >= 0, got ",
                                                   after_sequence, " and ", limit));
  }
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(Statement exists,
                        Statement::Prepare(db_, "SELECT 1 FROM jobs WHERE id = ?"));
  exists.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, exists.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("job ", absl::CHexEscape(AsAbsl(job_id)), " not found"));
  }
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_,
                         "SELECT event FROM events WHERE job_id = ? AND sequence > ? "
                         "ORDER BY sequence LIMIT ?"));
  select.BindText(1, job_id).BindInt(2, after_sequence).BindInt(3, limit == 0 ? -1 : limit);
  std::vector<v1::JobEvent> events;
  for (;;) {
    DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    DRFM_ASSIGN_OR_RETURN(v1::JobEvent event, Parse<v1::JobEvent>(select.Blob(0), "job event"));
    events.push_back(std::move(event));
  }
  return events;
}

absl::StatusOr<std::unique_ptr<DatasetUpload>> SqliteStore::StartDatasetUpload() {
  DRFM_ASSIGN_OR_RETURN(auto temp, CreateTempFile(datasets_dir_));
  return std::make_unique<Upload>(this, std::move(temp.first), std::move(temp.second));
}

absl::StatusOr<PutDatasetResult> SqliteStore::CommitUpload(const DatasetInfo& info,
                                                           const std::string& temp,
                                                           const std::string& sha256,
                                                           int64_t size_bytes) {
  const std::string path = DatasetPath(sha256);
  bool placing = false;  // Set when `path` is about to be replaced by `temp`.
  absl::MutexLock lock(&mu_);
  absl::StatusOr<PutDatasetResult> result = [&]() -> absl::StatusOr<PutDatasetResult> {
    DRFM_ASSIGN_OR_RETURN(
        Statement select,
        Statement::Prepare(db_, absl::StrCat("SELECT ", kDatasetColumns,
                                             " FROM datasets WHERE sha256 = ? OR name = ? "
                                             "ORDER BY sha256 = ? DESC LIMIT 1")));
    select.BindText(1, sha256).BindText(2, info.name).BindText(3, sha256);
    DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
    if (found) {
      v1::Dataset existing = DatasetFromRow(select);
      if (existing.sha256() == sha256) return PutDatasetResult{std::move(existing), false};
      return absl::AlreadyExistsError(absl::StrCat(
          "dataset name \"", info.name, "\" is taken by dataset ", existing.id(),
          " with different content; choose another name or delete that dataset first"));
    }
    // No row has this content hash, so a file at `path` is a leftover nobody refers to.
    placing = true;
    DRFM_RETURN_IF_ERROR(RenameDurably(temp, path));
    v1::Dataset dataset;
    dataset.set_id(absl::StrCat("ds-", sha256.substr(0, 16)));
    dataset.set_name(info.name);
    dataset.set_rows(info.rows);
    dataset.set_cols(info.cols);
    dataset.set_num_classes(info.num_classes);
    dataset.set_sha256(sha256);
    dataset.set_size_bytes(size_bytes);
    *dataset.mutable_create_time() = ToTimestamp(absl::Now());
    DRFM_ASSIGN_OR_RETURN(
        Statement insert,
        Statement::Prepare(db_, absl::StrCat("INSERT INTO datasets (", kDatasetColumns,
                                             ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)")));
    insert.BindText(1, dataset.id())
        .BindText(2, dataset.name())
        .BindInt(3, dataset.rows())
        .BindInt(4, dataset.cols())
        .BindInt(5, dataset.num_classes())
        .BindText(6, dataset.sha256())
        .BindInt(7, dataset.size_bytes())
        .BindInt(8, ToMicros(dataset.create_time()));
    DRFM_RETURN_IF_ERROR(insert.Run());  // A single statement is its own transaction.
    return PutDatasetResult{std::move(dataset), true};
  }();
  // Whatever happened, the temporary file is gone afterwards (it no longer exists once renamed),
  // and so is a placed file that no committed row refers to.
  unlink(temp.c_str());
  if (!result.ok() && placing) unlink(path.c_str());
  return result;
}

absl::StatusOr<v1::Dataset> SqliteStore::GetDatasetLocked(std::string_view dataset) {
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_, absl::StrCat("SELECT ", kDatasetColumns,
                                           " FROM datasets WHERE id = ?1 OR name = ?1 "
                                           "ORDER BY id = ?1 DESC LIMIT 1")));
  select.BindText(1, dataset);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("no dataset has id or name \"", absl::CHexEscape(AsAbsl(dataset)), "\""));
  }
  return DatasetFromRow(select);
}

absl::StatusOr<v1::Dataset> SqliteStore::GetDataset(std::string_view dataset) {
  absl::MutexLock lock(&mu_);
  return GetDatasetLocked(dataset);
}

absl::StatusOr<Page<v1::Dataset>> SqliteStore::ListDatasets(int page_size,
                                                            std::string_view page_token) {
  DRFM_ASSIGN_OR_RETURN(const int limit, ResolvePageSize(page_size));
  DRFM_ASSIGN_OR_RETURN(const int64_t before, ParsePageToken(page_token));
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_, absl::StrCat("SELECT ", kDatasetColumns,
                                                             ", seq FROM datasets WHERE seq < ? "
                                                             "ORDER BY seq DESC LIMIT ?")));
  select.BindInt(1, before).BindInt(2, limit + 1);
  Page<v1::Dataset> page;
  int64_t last_seq = 0;
  for (;;) {
    DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (static_cast<int>(page.items.size()) == limit) {
      page.next_page_token = absl::StrCat(last_seq);
      break;
    }
    page.items.push_back(DatasetFromRow(select));
    last_seq = select.Int(8);
  }
  return page;
}

absl::Status SqliteStore::DeleteDataset(std::string_view dataset) {
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(v1::Dataset found, GetDatasetLocked(dataset));
  DRFM_ASSIGN_OR_RETURN(Statement del,
                        Statement::Prepare(db_, "DELETE FROM datasets WHERE id = ?"));
  DRFM_RETURN_IF_ERROR(del.BindText(1, found.id()).Run());
  // After the commit: a crash in between leaves an unreferenced file, which a later upload of the
  // same content replaces.
  const std::string path = DatasetPath(found.sha256());
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return IoError(errno, "remove", path);
  return SyncDirectory(datasets_dir_);
}

absl::StatusOr<core::Dataset> SqliteStore::LoadDataset(std::string_view dataset, int64_t offset,
                                                       int64_t limit) {
  v1::Dataset info;
  {
    absl::MutexLock lock(&mu_);
    DRFM_ASSIGN_OR_RETURN(info, GetDatasetLocked(dataset));
  }
  if (offset < 0 || offset >= info.rows() || limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset ", info.name(), " has ", info.rows(),
                     " rows: offset must be in [0, rows) and limit >= 0, got offset ", offset,
                     " and limit ", limit));
  }
  const int64_t available = info.rows() - offset;
  const int64_t rows = limit == 0 ? available : std::min(limit, available);
  core::Dataset data;
  data.name = info.name();
  data.num_classes = info.num_classes();
  data.features.resize(rows, info.cols());
  data.labels.resize(rows);
  const int64_t row_bytes = 4 * info.cols();
  const int64_t labels_at = info.rows() * row_bytes;
  const int64_t features_begin = offset * row_bytes;
  const int64_t features_end = features_begin + rows * row_bytes;
  const int64_t labels_begin = labels_at + 4 * offset;
  const int64_t labels_end = labels_begin + 4 * rows;
  char* features = reinterpret_cast<char*>(data.features.data());
  char* labels = reinterpret_cast<char*>(data.labels.data());
  DRFM_RETURN_IF_ERROR(
      ReadVerified(DatasetPath(info.sha256()), info.size_bytes(), info.sha256(),
                   [&](int64_t at, const char* bytes, size_t size) {
                     CopyOverlap(at, bytes, size, features_begin, features_end, features);
                     CopyOverlap(at, bytes, size, labels_begin, labels_end, labels);
                   }));
  return data;
}

absl::StatusOr<v1::Model> SqliteStore::PutModel(const v1::Model& model, std::string_view blob) {
  DRFM_RETURN_IF_ERROR(ValidateName("model name", model.name()));
  if (model.kind() == v1::Model::KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError("store: a model needs a kind");
  }
  v1::Model stored = model;
  stored.set_sha256(Sha256Hex(blob));
  stored.set_size_bytes(static_cast<int64_t>(blob.size()));
  if (!stored.has_create_time()) *stored.mutable_create_time() = ToTimestamp(absl::Now());
  if (!stored.job_id().empty()) {
    absl::MutexLock lock(&mu_);
    DRFM_ASSIGN_OR_RETURN(std::optional<v1::Model> earlier, FindModelOfJobLocked(stored.job_id()));
    if (earlier.has_value()) return *std::move(earlier);
  }
  // The slow part, writing and syncing the file, happens before taking the lock.
  DRFM_ASSIGN_OR_RETURN(const std::string temp, WriteTempFile(models_dir_, blob));

  absl::MutexLock lock(&mu_);
  std::string path;  // Set when the file is about to be placed under its versioned name.
  std::optional<v1::Model> earlier;  // Set when the job's version appeared meanwhile.
  absl::Status status = [&]() -> absl::Status {
    Transaction tx(db_);
    DRFM_RETURN_IF_ERROR(tx.Begin());
    if (!stored.job_id().empty()) {
      DRFM_ASSIGN_OR_RETURN(earlier, FindModelOfJobLocked(stored.job_id()));
      if (earlier.has_value()) return absl::OkStatus();
    }
    DRFM_ASSIGN_OR_RETURN(
        Statement select,
        Statement::Prepare(db_, "SELECT last_version FROM model_names WHERE name = ?"));
    select.BindText(1, stored.name());
    DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
    stored.set_version(found ? select.Int(0) + 1 : 1);
    DRFM_RETURN_IF_ERROR(MakeDirectory(absl::StrCat(models_dir_, "/", stored.name())));
    path = ModelPath(stored.name(), stored.version());
    DRFM_RETURN_IF_ERROR(RenameDurably(temp, path));
    DRFM_ASSIGN_OR_RETURN(
        Statement upsert,
        Statement::Prepare(
            db_,
            "INSERT INTO model_names (name, last_version) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version"));
    DRFM_RETURN_IF_ERROR(upsert.BindText(1, stored.name()).BindInt(2, stored.version()).Run());
    DRFM_ASSIGN_OR_RETURN(
        Statement insert,
        Statement::Prepare(db_,
                           "INSERT INTO models (name, version, kind, sha256, size_bytes, "
                           "create_time_us, job_id, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    insert.BindText(1, stored.name())
        .BindInt(2, stored.version())
        .BindInt(3, stored.kind())
        .BindText(4, stored.sha256())
        .BindInt(5, stored.size_bytes())
        .BindInt(6, ToMicros(stored.create_time()))
        .BindText(7, stored.job_id())
        .BindBlob(8, stored.SerializeAsString());
    DRFM_RETURN_IF_ERROR(insert.Run());
    return tx.Commit();
  }();
  if (!status.ok()) {
    // Nothing refers to either file: the version was not committed.
    unlink(temp.c_str());
    if (!path.empty()) unlink(path.c_str());
    return status;
  }
  if (earlier.has_value()) {
    unlink(temp.c_str());
    return *std::move(earlier);
  }
  return stored;
}

absl::StatusOr<std::optional<v1::Model>> SqliteStore::FindModelOfJob(std::string_view job_id) {
  if (job_id.empty()) return std::optional<v1::Model>();  // Imported models have no job.
  absl::MutexLock lock(&mu_);
  return FindModelOfJobLocked(job_id);
}

absl::StatusOr<std::optional<v1::Model>> SqliteStore::FindModelOfJobLocked(
    std::string_view job_id) {
  DRFM_ASSIGN_OR_RETURN(Statement select,
                        Statement::Prepare(db_,
                                           "SELECT model FROM models WHERE job_id = ? "
                                           "ORDER BY version LIMIT 1"));
  select.BindText(1, job_id);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return std::optional<v1::Model>();
  DRFM_ASSIGN_OR_RETURN(v1::Model model, Parse<v1::Model>(select.Blob(0), "model"));
  return std::optional<v1::Model>(std::move(model));
}

absl::StatusOr<v1::Model> SqliteStore::GetModelLocked(std::string_view name, int64_t version) {
  DRFM_RETURN_IF_ERROR(ValidateName("model name", name));
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model version must be >= 1 (or 0 for the latest), got ", version));
  }
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_, version == 0 ? "SELECT model FROM models WHERE name = ? "
                                             "ORDER BY version DESC LIMIT 1"
                                           : "SELECT model FROM models WHERE name = ? "
                                             "AND version = ?"));
  select.BindText(1, name);
  if (version != 0) select.BindInt(2, version);
  DRFM_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    if (version == 0)
      return absl::NotFoundError(absl::StrCat("model ", AsAbsl(name), " not found"));
    return absl::NotFoundError(absl::StrCat("model ", AsAbsl(name), " has no version ", version));
  }
  return Parse<v1::Model>(select.Blob(0), "model");
}

absl::StatusOr<v1::Model> SqliteStore::GetModel(std::string_view name, int64_t version) {
  absl::MutexLock lock(&mu_);
  return GetModelLocked(name, version);
}

absl::StatusOr<Page<v1::Model>> SqliteStore::ListModels(std::string_view name, int page_size,
                                                        std::string_view page_token) {
  if (!name.empty()) DRFM_RETURN_IF_ERROR(ValidateName("model name", name));
  DRFM_ASSIGN_OR_RETURN(const int limit, ResolvePageSize(page_size));
  DRFM_ASSIGN_OR_RETURN(const int64_t before, ParsePageToken(page_token));
  absl::MutexLock lock(&mu_);
  DRFM_ASSIGN_OR_RETURN(
      Statement select,
      Statement::Prepare(db_, name.empty() ? "SELECT seq, model FROM models WHERE seq < ? "
                                             "ORDER BY seq DESC LIMIT ?"
                                           : "SELECT seq, model FROM models WHERE seq < ? "
                                             "AND name = ? ORDER BY seq DESC LIMIT ?"));
  select.BindInt(1, before);
  if (name.empty()) {
    select.BindInt(2, limit + 1);
  } else {
    select.BindText(2, name).BindInt(3, limit + 1);
  }
  Page<v1::Model> page;
  int64_t last_seq = 0;
  for (;;) {
    DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (static_cast<int>(page.items.size()) == limit) {
      page.next_page_token = absl::StrCat(last_seq);
      break;
    }
    DRFM_ASSIGN_OR_RETURN(v1::Model model, Parse<v1::Model>(select.Blob(1), "model"));
    page.items.push_back(std::move(model));
    last_seq = select.Int(0);
  }
  return page;
}

absl::Status SqliteStore::DeleteModel(std::string_view name, int64_t version) {
  DRFM_RETURN_IF_ERROR(ValidateName("model name", name));
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model version must be >= 1 (or 0 for every version), got ", version));
  }
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> versions;
  {
    DRFM_ASSIGN_OR_RETURN(
        Statement select,
        Statement::Prepare(db_, version == 0
                                    ? "SELECT version FROM models WHERE name = ?"
                                    : "SELECT version FROM models WHERE name = ? AND version = ?"));
    select.BindText(1, name);
    if (version != 0) select.BindInt(2, version);
    for (;;) {
      DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      versions.push_back(select.Int(0));
    }
  }
  if (versions.empty()) {
    if (version == 0)
      return absl::NotFoundError(absl::StrCat("model ", AsAbsl(name), " not found"));
    return absl::NotFoundError(absl::StrCat("model ", AsAbsl(name), " has no version ", version));
  }
  {
    DRFM_ASSIGN_OR_RETURN(
        Statement del,
        Statement::Prepare(db_, version == 0
                                    ? "DELETE FROM models WHERE name = ?"
                                    : "DELETE FROM models WHERE name = ? AND version = ?"));
    del.BindText(1, name);
    if (version != 0) del.BindInt(2, version);
    DRFM_RETURN_IF_ERROR(del.Run());
  }
  // Files go after the commit (see DeleteDataset); an emptied name directory goes too.
  for (int64_t v : versions) {
    const std::string path = ModelPath(name, v);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return IoError(errno, "remove", path);
  }
  const std::string dir = absl::StrCat(models_dir_, "/", AsAbsl(name));
  if (rmdir(dir.c_str()) == 0) return SyncDirectory(models_dir_);
  return SyncDirectory(dir);
}

absl::StatusOr<std::string> SqliteStore::ReadModelBlob(std::string_view name, int64_t version) {
  v1::Model model;
  {
    absl::MutexLock lock(&mu_);
    DRFM_ASSIGN_OR_RETURN(model, GetModelLocked(name, version));
  }
  std::string blob(static_cast<size_t>(model.size_bytes()), '\0');
  DRFM_RETURN_IF_ERROR(
      ReadVerified(ModelPath(model.name(), model.version()), model.size_bytes(), model.sha256(),
                   [&](int64_t at, const char* bytes, size_t size) {
                     CopyOverlap(at, bytes, size, 0, model.size_bytes(), blob.data());
                   }));
  return blob;
}

absl::StatusOr<StoreStats> SqliteStore::Stats() {
  StoreStats stats;
  absl::MutexLock lock(&mu_);
  {
    DRFM_ASSIGN_OR_RETURN(
        Statement select,
        Statement::Prepare(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state"));
    for (;;) {
      DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      stats.jobs_by_state[static_cast<v1::Job::State>(select.Int(0))] = select.Int(1);
    }
  }
  for (const auto& [table, count, bytes] :
       {std::make_tuple("datasets", &stats.datasets, &stats.dataset_bytes),
        std::make_tuple("models", &stats.models, &stats.model_bytes)}) {
    DRFM_ASSIGN_OR_RETURN(
        Statement select,
        Statement::Prepare(
            db_, absl::StrCat("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM ", table)));
    DRFM_ASSIGN_OR_RETURN(bool row, select.Step());
    if (row) {
      *count = select.Int(0);
      *bytes = select.Int(1);
    }
  }
  for (const char* suffix : {"", "-wal"}) {
    struct stat st;
    const std::string path = absl::StrCat(options_.data_dir, "/", kDatabaseFile, suffix);
    if (stat(path.c_str(), &st) == 0) stats.database_bytes += st.st_size;
  }
  return stats;
}

}  // namespace drfm::server
