// Atomic file output: every file pserver writes (models, data caches, libsvm files, reports,
// scores, benchmark results) goes through this, so that a reader never sees a half-written
// file under its final name, whatever fails (a full disk, a killed process, a power cut).
//
// A file is written to a temporary file in the same directory (`PATH.tmp.PID.N`, created
// exclusively), then Commit() flushes it, fsyncs it, renames it over PATH and fsyncs the
// directory. On any failure, and when a writer is destroyed without Commit(), the temporary
// file is removed and PATH is left as it was (absent, or the old content).
//
// PATH must be a regular file or absent: a directory, a device (/dev/full, /dev/null), a fifo
// or a socket is refused with kInvalidArgument, so that the rename never replaces one. A
// symbolic link is followed: the file it points to is replaced and the link stays.
//
// Errors name the path, the operation and the reason (errno text): kNotFound when a directory
// on the way does not exist or is not a directory (ENOENT, ENOTDIR), kInvalidArgument for a
// target that is not a regular file, kUnavailable for every other I/O error (ENOSPC, EFBIG,
// EROFS, EACCES, EIO, ...).
//
// All functions block on file I/O. Distinct writers are independent (thread-safe with respect
// to each other, even for one PATH: the last Commit wins and every version is complete); one
// AtomicFileWriter is thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver {

// Checks up front, before any work whose result would go to `path`, that the file can be
// written there: `path` is not empty, is a regular file or absent, and its directory exists,
// is a directory, and a file can be created in it (checked by creating and removing a probe
// file, because access(2) says yes to root on a read-only directory). Writes nothing that
// stays. Errors as above; the message starts with `path`.
Status CheckWritableOutput(const std::string& path);

// Checks that `dir` exists, is a directory, and a file can be created in it (by a probe file,
// as above). kNotFound for a missing directory, kUnavailable otherwise.
Status CheckWritableDirectory(const std::string& dir);

// Writes `bytes` to `path` atomically (as AtomicFileWriter::Open + Append + Commit).
Status WriteFileAtomically(const std::string& path, std::string_view bytes);

// Streams a large file to `path` atomically. Append() buffers (1 MiB) and writes through;
// nothing is visible under `path` before Commit() returns OK.
class AtomicFileWriter {
 public:
  // Creates the temporary file beside `path`. Errors as above.
  static Result<std::unique_ptr<AtomicFileWriter>> Open(const std::string& path);

  // Removes the temporary file unless Commit() succeeded.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends `bytes`. After the first error every later call returns that error (sticky), and
  // the temporary file is already removed.
  Status Append(std::string_view bytes);

  // Writes what is buffered and fsyncs the temporary file: the slow part of Commit, done ahead
  // (e.g. a model staged before the job's end, so that only the rename is left after it).
  // Errors as Append. Appending after it is allowed (Commit syncs again).
  Status Sync();

  // Writes what is buffered, fsyncs, renames the temporary file over the final path and fsyncs
  // the directory. On an error before the rename the temporary file is removed and the final
  // path is unchanged. If only the directory's fsync fails, the file is already in place under
  // the final path: kUnavailable says so ("... renamed, but ..."), and the rename may not
  // survive a crash of the machine. REQUIRES: called at most once.
  Status Commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  // Bytes appended so far.
  uint64_t size() const { return size_; }

 private:
  friend class AtomicFileWriterTestPeer;
  AtomicFileWriter(std::string path, std::string target, std::string temp_path, int fd);
  Status WriteBuffer();
  // Records `s` as the sticky error, closes and removes the temporary file; returns `s`.
  Status Fail(Status s);

  std::string path_;       // as given
  std::string target_;     // what the rename replaces: `path_`, or the file a link points to
  std::string temp_path_;  // in the directory of target_
  int fd_ = -1;
  std::string buffer_;
  uint64_t size_ = 0;
  bool committed_ = false;
  Status error_;
};

}  // namespace pserver
