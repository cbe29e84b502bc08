#include "pserver/atomic_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace pserver {
namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;

// Makes temporary and probe names unique within the process (the pid makes them unique
// across processes).
std::atomic<uint64_t> name_counter{0};

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

Status IoError(const std::string& path, std::string_view what, int err) {
  std::string msg = fmt::format("{}: {}: {}", path, what, ErrnoText(err));
  if (err == ENOENT || err == ENOTDIR) return Status::NotFound(std::move(msg));
  return Status::Unavailable(std::move(msg));
}

std::string DirectoryOf(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::string UniqueSuffix() { return fmt::format("{}.{}", ::getpid(), name_counter++); }

// The file a write to `path` replaces: `path` itself, or what a symbolic link points to.
// Refuses a target that exists and is not a regular file.
Result<std::string> ResolveTarget(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("output path is empty");
  std::string target = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const std::filesystem::path resolved = std::filesystem::weakly_canonical(path, ec);
    if (ec) return IoError(path, "cannot resolve symbolic link", ec.value());
    target = resolved.string();
  }
  if (::stat(target.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument(fmt::format("{}: is a directory, not a file", path));
    }
    if (!S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(
          fmt::format("{}: is not a regular file (a device, fifo or socket); refusing to replace it", path));
    }
  } else if (errno != ENOENT) {
    return IoError(path, "cannot stat", errno);
  }
  if (!target.empty() && target.back() == '/') {
    return Status::InvalidArgument(fmt::format("{}: names a directory, not a file", path));
  }
  return target;
}

// Errors name `path` (the final name the user knows) and `temp` (the file written).
Status WriteAll(int fd, const std::string& path, const std::string& temp, const char* p, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path, fmt::format("write to {}", temp), errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Makes a rename in `dir` durable. File systems that cannot fsync a directory (EINVAL) are
// accepted: there is nothing more to do on them.
Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(dir, "open directory for fsync", errno);
  Status s;
  if (::fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) s = IoError(dir, "fsync directory", errno);
  ::close(fd);
  return s;
}

}  // namespace

Status CheckWritableDirectory(const std::string& dir) {
  const std::string d = dir.empty() ? std::string(".") : dir;
  struct stat st {};
  if (::stat(d.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return Status::NotFound(fmt::format("{}: directory does not exist: {}", d, ErrnoText(err)));
    }
    return IoError(d, "cannot stat directory", err);
  }
  if (!S_ISDIR(st.st_mode)) return Status::NotFound(fmt::format("{}: is not a directory", d));
  const std::string probe = (std::filesystem::path(d) / fmt::format(".pserver-probe.{}", UniqueSuffix())).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(d, "cannot create a file in directory", errno);
  ::close(fd);
  ::unlink(probe.c_str());
  return Status::Ok();
}

Status CheckWritableOutput(const std::string& path) {
  PSERVER_ASSIGN_OR_RETURN(std::string target, ResolveTarget(path));
  if (Status s = CheckWritableDirectory(DirectoryOf(target)); !s.ok()) {
    return Status(s.code(), fmt::format("{}: cannot write the file: {}", path, s.message()));
  }
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> w, AtomicFileWriter::Open(path));
  PSERVER_RETURN_IF_ERROR(w->Append(bytes));
  return w->Commit();
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Open(const std::string& path) {
  PSERVER_ASSIGN_OR_RETURN(std::string target, ResolveTarget(path));
  std::string temp = fmt::format("{}.tmp.{}", target, UniqueSuffix());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    return IoError(path, fmt::format("cannot create a file in directory {}", DirectoryOf(target)), err);
  }
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(target), std::move(temp), fd));
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string target, std::string temp_path, int fd)
    : path_(std::move(path)), target_(std::move(target)), temp_path_(std::move(temp_path)), fd_(fd) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && error_.ok()) ::unlink(temp_path_.c_str());
}

Status AtomicFileWriter::Fail(Status s) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
  error_ = s;
  return s;
}

Status AtomicFileWriter::WriteBuffer() {
  if (buffer_.empty()) return Status::Ok();
  Status s = WriteAll(fd_, path_, temp_path_, buffer_.data(), buffer_.size());
  buffer_.clear();
  return s;
}

Status AtomicFileWriter::Append(std::string_view bytes) {
  if (!error_.ok()) return error_;
  if (committed_) return Status::Internal(fmt::format("{}: Append after Commit", path_));
  size_ += bytes.size();
  if (buffer_.size() + bytes.size() > kBufferBytes) {
    if (Status s = WriteBuffer(); !s.ok()) return Fail(std::move(s));
    if (bytes.size() >= kBufferBytes) {
      if (Status s = WriteAll(fd_, path_, temp_path_, bytes.data(), bytes.size()); !s.ok()) return Fail(std::move(s));
      return Status::Ok();
    }
  }
  buffer_.append(bytes);
  return Status::Ok();
}

Status AtomicFileWriter::Sync() {
  if (!error_.ok()) return error_;
  if (committed_) return Status::Internal(fmt::format("{}: Sync after Commit", path_));
  if (Status s = WriteBuffer(); !s.ok()) return Fail(std::move(s));
  if (::fsync(fd_) != 0) return Fail(IoError(path_, fmt::format("fsync of {}", temp_path_), errno));
  return Status::Ok();
}

Status AtomicFileWriter::Commit() {
  if (!error_.ok()) return error_;
  if (committed_) return Status::Internal(fmt::format("{}: Commit called twice", path_));
  if (Status s = WriteBuffer(); !s.ok()) return Fail(std::move(s));
  if (::fsync(fd_) != 0) return Fail(IoError(path_, fmt::format("fsync of {}", temp_path_), errno));
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return Fail(IoError(path_, fmt::format("close of {}", temp_path_), errno));
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0) {
    return Fail(IoError(path_, fmt::format("rename from {}", temp_path_), errno));
  }
  committed_ = true;
  // The file is complete under its name; only the durability of the rename is in question.
  return SyncDirectory(DirectoryOf(target_)).WithContext(fmt::format("{}: renamed into place, but", path_));
}

}  // namespace pserver
