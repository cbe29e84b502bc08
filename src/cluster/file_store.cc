// The file store of store.h: one file per key, `DIR/<key with '/' as %2F>.kv`, holding
//   magic "PSKV" | version u32 | XXH64 of the value u64 | value length u64 | value
// (little-endian), written atomically. Changes hold an flock(2) on DIR/.lock, so that
// compare-and-swap is atomic across processes sharing DIR; reads take no lock (a file is
// replaced whole by rename, never changed in place).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/mutex.h"
#include "base/wire_io.h"
#include "cluster/store.h"
#include "pserver/atomic_file.h"
#include "pserver/checksum.h"

namespace pserver::cluster {
namespace {

constexpr char kMagic[4] = {'P', 'S', 'K', 'V'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHead = 4 + 4 + 8 + 8;
constexpr std::string_view kSuffix = ".kv";

std::string FileNameOf(std::string_view key) {
  std::string name;
  for (char c : key) {
    if (c == '/') {
      name += "%2F";
    } else {
      name += c;
    }
  }
  name += kSuffix;
  return name;
}

// The key a file name stands for; nullopt for files that are no key's (temporaries, .lock).
std::optional<std::string> KeyOfFileName(std::string_view name) {
  if (name.size() <= kSuffix.size() || !name.ends_with(kSuffix)) return std::nullopt;
  name.remove_suffix(kSuffix.size());
  std::string key;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name.substr(i, 3) == "%2F") {
      key += '/';
      i += 2;
    } else {
      key += name[i];
    }
  }
  if (!CheckStoreKey(key).ok()) return std::nullopt;
  return key;
}

std::string Encode(std::string_view value) {
  base::WireWriter w;
  w.U32(kVersion);
  w.U64(Checksum64(value.data(), value.size()));
  w.U64(value.size());
  std::string out(kMagic, sizeof(kMagic));
  out += w.Take();
  out += value;
  return out;
}

class FileStore final : public Store {
 public:
  FileStore(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}
  ~FileStore() override { ::close(lock_fd_); }

  std::string Describe() const override { return "file store " + dir_; }

  Result<std::string> Get(std::string_view key) override {
    PSERVER_RETURN_IF_ERROR(CheckStoreKey(key));
    return Read(key);
  }

  Status Put(std::string_view key, std::string_view value) override {
    PSERVER_RETURN_IF_ERROR(CheckValue(key, value));
    Locked lock(*this);
    PSERVER_RETURN_IF_ERROR(lock.status());
    return Write(key, value);
  }

  Result<bool> CompareAndSwap(std::string_view key, const std::optional<std::string>& expected,
                              std::string_view value) override {
    PSERVER_RETURN_IF_ERROR(CheckValue(key, value));
    Locked lock(*this);
    PSERVER_RETURN_IF_ERROR(lock.status());
    Result<std::string> now = Read(key);
    if (!now.ok() && now.status().code() != StatusCode::kNotFound) return now.status();
    const bool matches = expected ? now.ok() && *now == *expected : !now.ok();
    if (!matches) return false;
    PSERVER_RETURN_IF_ERROR(Write(key, value));
    return true;
  }

  Status Delete(std::string_view key) override {
    PSERVER_RETURN_IF_ERROR(CheckStoreKey(key));
    Locked lock(*this);
    PSERVER_RETURN_IF_ERROR(lock.status());
    const std::string path = PathOf(key);
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) return Status::Ok();
      return IoError(path, "remove", errno);
    }
    return SyncDirectory();
  }

  Result<std::vector<std::pair<std::string, std::string>>> List(std::string_view prefix) override {
    std::vector<std::string> keys;
    {
      DIR* d = ::opendir(dir_.c_str());
      if (d == nullptr) return IoError(dir_, "list", errno);
      while (const dirent* e = ::readdir(d)) {
        std::optional<std::string> key = KeyOfFileName(e->d_name);
        if (key && key->starts_with(prefix)) keys.push_back(std::move(*key));
      }
      ::closedir(d);
    }
    std::sort(keys.begin(), keys.end());
    std::vector<std::pair<std::string, std::string>> out;
    for (std::string& key : keys) {
      Result<std::string> value = Read(key);
      if (!value.ok() && value.status().code() == StatusCode::kNotFound) continue;  // removed meanwhile
      if (!value.ok()) return value.status();
      out.emplace_back(std::move(key), std::move(*value));
    }
    return out;
  }

 private:
  // Holds the process-wide mutex and the directory's flock for one change.
  class ABSL_SCOPED_LOCKABLE Locked {
   public:
    explicit Locked(FileStore& s) ABSL_EXCLUSIVE_LOCK_FUNCTION(s.mu_) : s_(s) {
      s_.mu_.Lock();
      while (::flock(s_.lock_fd_, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        status_ = s_.IoError(s_.dir_ + "/.lock", "lock", errno);
        break;
      }
    }
    ~Locked() ABSL_UNLOCK_FUNCTION() {
      if (status_.ok()) ::flock(s_.lock_fd_, LOCK_UN);
      s_.mu_.Unlock();
    }
    const Status& status() const { return status_; }

   private:
    FileStore& s_;
    Status status_;
  };

  std::string PathOf(std::string_view key) const { return dir_ + "/" + FileNameOf(key); }

  Status IoError(const std::string& path, const char* what, int err) const {
    return Status::Unavailable(fmt::format("{}: cannot {} {}: {}", Describe(), what, path, std::strerror(err)));
  }

  Status CheckValue(std::string_view key, std::string_view value) const {
    return CheckStoreEntry(Describe(), key, value);
  }

  Result<std::string> Read(std::string_view key) const {
    const std::string path = PathOf(key);
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      if (errno == ENOENT) return Status::NotFound(fmt::format("{}: no value for {}", Describe(), key));
      return IoError(path, "read", errno);
    }
    std::ostringstream all;
    all << f.rdbuf();
    if (f.bad()) return IoError(path, "read", errno);
    const std::string bytes = all.str();
    auto corrupt = [&](const std::string& why) {
      return Status::Corruption(fmt::format("{}: {} (the value of {}) is {}", Describe(), path, key, why));
    };
    if (bytes.size() < kHead) return corrupt(fmt::format("{} bytes long, shorter than its {}-byte head", bytes.size(), kHead));
    if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) return corrupt("not a pserver store file (bad magic)");
    base::WireReader r(std::as_bytes(std::span(bytes.data() + sizeof(kMagic), kHead - sizeof(kMagic))));
    uint32_t version = 0;
    uint64_t checksum = 0, length = 0;
    if (!r.U32(&version) || !r.U64(&checksum) || !r.U64(&length)) return corrupt("cut short in its head");
    if (version != kVersion) return corrupt(fmt::format("of format version {}, not {}", version, kVersion));
    if (length != bytes.size() - kHead) {
      return corrupt(fmt::format("cut short or extended: its head says {} value bytes, it holds {}", length,
                                 bytes.size() - kHead));
    }
    std::string value = bytes.substr(kHead);
    if (Checksum64(value.data(), value.size()) != checksum) return corrupt("corrupt: its checksum does not match");
    return value;
  }

  Status Write(std::string_view key, std::string_view value) const {
    return WriteFileAtomically(PathOf(key), Encode(value)).WithContext(Describe());
  }

  Status SyncDirectory() const {
    const int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return IoError(dir_, "open", errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    return rc == 0 ? Status::Ok() : IoError(dir_, "sync", err);
  }

  const std::string dir_;
  const int lock_fd_;
  Mutex mu_;  // one change at a time within the process (flock is per open file, not per thread)
};

}  // namespace

Status CheckStoreKey(std::string_view key) {
  const bool chars_ok = std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == '/';
  });
  if (key.empty() || key.size() > kMaxStoreKey || !chars_ok) {
    return Status::InvalidArgument(fmt::format("store key '{}': keys are 1 to {} bytes of A-Z a-z 0-9 . _ - /", key,
                                               kMaxStoreKey));
  }
  return Status::Ok();
}

Status CheckStoreEntry(const std::string& store, std::string_view key, std::string_view value) {
  PSERVER_RETURN_IF_ERROR(CheckStoreKey(key));
  if (value.size() > kMaxStoreValue) {
    return Status::InvalidArgument(
        fmt::format("{}: the value of {} has {} bytes, more than {}", store, key, value.size(), kMaxStoreValue));
  }
  return Status::Ok();
}

Result<std::unique_ptr<Store>> OpenFileStore(const std::string& dir) {
  if (dir.empty()) return Status::InvalidArgument("a file store needs a directory (file:DIR)");
  std::error_code ec;
  // A directory made here is the owner's alone: the job's state holds the identities its nodes
  // believe (bearer secrets until the transport is authenticated).
  if (std::filesystem::create_directories(dir, ec) && !ec) {
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, std::filesystem::perm_options::replace, ec);
  }
  if (ec) return Status::Unavailable(fmt::format("file store {}: cannot create the directory: {}", dir, ec.message()));
  PSERVER_RETURN_IF_ERROR(CheckWritableDirectory(dir).WithContext("file store"));
  const std::string lock = dir + "/.lock";
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Unavailable(fmt::format("file store {}: cannot open {}: {}", dir, lock, std::strerror(errno)));
  return std::unique_ptr<Store>(std::make_unique<FileStore>(dir, fd));
}

}  // namespace pserver::cluster
