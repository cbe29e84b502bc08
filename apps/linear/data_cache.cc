#include "apps/linear/data_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <filesystem>
#include <span>
#include <utility>

#include "apps/linear/io_util.h"

namespace pserver::linear {

static_assert(std::endian::native == std::endian::little,
              "the data cache format is little-endian; add byte swapping for this host");

namespace {

using internal::ErrnoStatus;

constexpr char kMagic[8] = {'P', 'S', 'L', 'D', 'A', 'T', 'A', '\n'};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kChecksumOffset = 56;

constexpr uint64_t kP1 = 11400714785074694791ULL;
constexpr uint64_t kP2 = 14029467366897019727ULL;
constexpr uint64_t kP3 = 1609587929392839161ULL;
constexpr uint64_t kP4 = 9650029242287828579ULL;
constexpr uint64_t kP5 = 2870177450012600261ULL;

inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t Read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t Merge(uint64_t acc, uint64_t val) {
  acc ^= Round(0, val);
  return acc * kP1 + kP4;
}

struct Header {
  uint32_t version = kDataCacheVersion;
  uint64_t num_rows = 0;
  uint64_t nnz = 0;
  uint64_t num_features = 0;
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;
};

void EncodeHeader(const Header& h, unsigned char* out) {
  std::memset(out, 0, kHeaderBytes);
  std::memcpy(out, kMagic, 8);
  const uint32_t header_bytes = kHeaderBytes;
  std::memcpy(out + 8, &h.version, 4);
  std::memcpy(out + 12, &header_bytes, 4);
  std::memcpy(out + 16, &h.num_rows, 8);
  std::memcpy(out + 24, &h.nnz, 8);
  std::memcpy(out + 32, &h.num_features, 8);
  std::memcpy(out + 40, &h.payload_bytes, 8);
  std::memcpy(out + 56, &h.checksum, 8);
}

uint64_t PayloadBytes(uint64_t rows, uint64_t nnz) { return 4 * rows + 8 * (rows + 1) + 12 * nnz; }

template <typename T>
std::span<const unsigned char> Bytes(const std::vector<T>& v) {
  return {reinterpret_cast<const unsigned char*>(v.data()), v.size() * sizeof(T)};
}

uint64_t Checksum(const unsigned char* header, const std::vector<float>& labels,
                  const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& ids,
                  const std::vector<float>& values) {
  uint64_t h = Xxh64(header, kChecksumOffset, 0);
  for (auto bytes : {Bytes(labels), Bytes(offsets), Bytes(ids), Bytes(values)}) {
    h = Xxh64(bytes.data(), bytes.size(), h);
  }
  return h;
}

Status WriteAll(int fd, const std::string& path, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(path, "write", errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Reads exactly `size` bytes; returns false at a premature end of file.
Result<bool> ReadAll(int fd, const std::string& path, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(path, "read", errno);
    }
    if (n == 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::atomic<uint64_t> temp_counter{0};

Status WriteBody(int fd, const std::string& path, const Dataset& data) {
  Header h;
  h.num_rows = data.num_rows();
  h.nnz = data.nnz();
  h.num_features = data.num_features();
  h.payload_bytes = PayloadBytes(h.num_rows, h.nnz);
  unsigned char header[kHeaderBytes];
  EncodeHeader(h, header);
  h.checksum = Checksum(header, data.labels(), data.offsets(), data.feature_ids(), data.values());
  EncodeHeader(h, header);
  PSERVER_RETURN_IF_ERROR(WriteAll(fd, path, header, kHeaderBytes));
  for (auto bytes : {Bytes(data.labels()), Bytes(data.offsets()), Bytes(data.feature_ids()),
                     Bytes(data.values())}) {
    PSERVER_RETURN_IF_ERROR(WriteAll(fd, path, bytes.data(), bytes.size()));
  }
  if (::fsync(fd) != 0) return ErrnoStatus(path, "fsync", errno);
  return Status::Ok();
}

}  // namespace

uint64_t Xxh64(const void* data, size_t size, uint64_t seed) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + size;
  uint64_t h;
  if (size >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = Round(v1, Read64(p));
      v2 = Round(v2, Read64(p + 8));
      v3 = Round(v3, Read64(p + 16));
      v4 = Round(v4, Read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = std::rotl(v1, 1) + std::rotl(v2, 7) + std::rotl(v3, 12) + std::rotl(v4, 18);
    h = Merge(h, v1);
    h = Merge(h, v2);
    h = Merge(h, v3);
    h = Merge(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(size);
  while (p + 8 <= end) {
    h ^= Round(0, Read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= static_cast<uint64_t>(Read32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kP5;
    h = std::rotl(h, 11) * kP1;
    ++p;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

Status WriteDataCache(const Dataset& data, const std::string& path) {
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), temp_counter++);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus(tmp, "create", errno);
  Status s = WriteBody(fd.get(), tmp, data);
  if (s.ok() && ::close(fd.release()) != 0) s = ErrnoStatus(tmp, "close", errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus(path, "rename", errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  // Make the rename durable (best effort: some file systems refuse fsync on a directory).
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::filesystem::path dir = parent.empty() ? std::filesystem::path(".") : parent;
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) (void)::fsync(dir_fd.get());
  return Status::Ok();
}

Result<Dataset> ReadDataCache(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(path, "open", errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(path, "stat", errno);
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  auto corrupt = [&](std::string what) {
    return Status::Corruption(fmt::format("{}: data cache {}", path, what));
  };
  if (file_bytes < kHeaderBytes) {
    return corrupt(
        fmt::format("truncated: {} bytes, less than the {}-byte header", file_bytes, kHeaderBytes));
  }
  unsigned char header[kHeaderBytes];
  PSERVER_ASSIGN_OR_RETURN(bool complete, ReadAll(fd.get(), path, header, kHeaderBytes));
  if (!complete) return corrupt("truncated while reading the header");
  if (std::memcmp(header, kMagic, 8) != 0) return corrupt("has a bad magic (not a data cache)");
  Header h;
  std::memcpy(&h.version, header + 8, 4);
  if (h.version != kDataCacheVersion) {
    return corrupt(fmt::format("has unsupported version {} (this build reads version {})",
                               h.version, kDataCacheVersion));
  }
  if (Read32(header + 12) != kHeaderBytes) {
    return corrupt(fmt::format("has a bad header size {}", Read32(header + 12)));
  }
  h.num_rows = Read64(header + 16);
  h.nnz = Read64(header + 24);
  h.num_features = Read64(header + 32);
  h.payload_bytes = Read64(header + 40);
  h.checksum = Read64(header + kChecksumOffset);
  // Bound the counts by the file size before any arithmetic that could overflow.
  if (h.num_rows > file_bytes / 12 || h.nnz > file_bytes / 12) {
    return corrupt(
        fmt::format("is truncated or corrupt: counts ({} rows, {} entries) do not fit in {} bytes",
                    h.num_rows, h.nnz, file_bytes));
  }
  const uint64_t payload = PayloadBytes(h.num_rows, h.nnz);
  if (h.payload_bytes != payload) {
    return corrupt(
        fmt::format("header says {} payload bytes, counts imply {}", h.payload_bytes, payload));
  }
  if (file_bytes < kHeaderBytes + payload) {
    return corrupt(
        fmt::format("truncated: {} bytes, expected {}", file_bytes, kHeaderBytes + payload));
  }
  if (file_bytes > kHeaderBytes + payload) {
    return corrupt(fmt::format("has {} trailing bytes ({} bytes, expected {})",
                               file_bytes - kHeaderBytes - payload, file_bytes,
                               kHeaderBytes + payload));
  }
  std::vector<float> labels(h.num_rows);
  std::vector<uint64_t> offsets(h.num_rows + 1);
  std::vector<uint64_t> ids(h.nnz);
  std::vector<float> values(h.nnz);
  for (auto bytes : {Bytes(labels), Bytes(offsets), Bytes(ids), Bytes(values)}) {
    PSERVER_ASSIGN_OR_RETURN(
        bool ok, ReadAll(fd.get(), path, const_cast<unsigned char*>(bytes.data()), bytes.size()));
    if (!ok) return corrupt("truncated while reading the payload");
  }
  const uint64_t checksum = Checksum(header, labels, offsets, ids, values);
  if (checksum != h.checksum) {
    return corrupt(
        fmt::format("checksum mismatch (stored {:016x}, computed {:016x})", h.checksum, checksum));
  }
  Result<Dataset> data =
      Dataset::FromArrays(std::move(labels), std::move(offsets), std::move(ids), std::move(values));
  if (!data.ok()) return corrupt(fmt::format("is inconsistent: {}", data.status().message()));
  if (data->num_features() != h.num_features) {
    return corrupt(
        fmt::format("header says {} features, data has {}", h.num_features, data->num_features()));
  }
  return data;
}

Result<LoadedData> LoadOrParse(const std::vector<std::string>& paths, int part, int num_parts,
                               const std::string& cache_dir, const LibsvmReadOptions& options) {
  LoadedData out;
  if (cache_dir.empty()) {
    PSERVER_ASSIGN_OR_RETURN(out.data, ReadPart(paths, part, num_parts, options));
    return out;
  }
  if (paths.empty()) return Status::InvalidArgument("LoadOrParse: no input files");
  if (num_parts < 1 || part < 0 || part >= num_parts) {
    return Status::InvalidArgument(
        fmt::format("LoadOrParse: part {} of {} is out of range", part, num_parts));
  }
  // The key: every input's identity and version, and the split.
  std::string key =
      fmt::format("pserver-linear-data v{} part {} of {}\n", kDataCacheVersion, part, num_parts);
  for (const std::string& p : paths) {
    std::error_code ec;
    const std::filesystem::path abs = std::filesystem::absolute(p, ec);
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return ErrnoStatus(p, "stat", errno);
    key += fmt::format("{}\t{}\t{}.{:09}\n", ec ? p : abs.string(),
                       static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec),
                       static_cast<int64_t>(st.st_mtim.tv_nsec));
  }
  const uint64_t hash = Xxh64(key.data(), key.size(), 0);
  out.cache_path = (std::filesystem::path(cache_dir) /
                    fmt::format("{:016x}.part{}of{}.psdata", hash, part, num_parts))
                       .string();
  Result<Dataset> cached = ReadDataCache(out.cache_path);
  if (cached.ok()) {
    out.data = std::move(cached).value();
    out.from_cache = true;
    return out;
  }
  if (cached.status().code() != StatusCode::kNotFound) out.note = cached.status().ToString();
  PSERVER_ASSIGN_OR_RETURN(out.data, ReadPart(paths, part, num_parts, options));
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec) {
    return Status::Unavailable(
        fmt::format("{}: cannot create cache directory: {}", cache_dir, ec.message()));
  }
  PSERVER_RETURN_IF_ERROR(WriteDataCache(out.data, out.cache_path));
  return out;
}

}  // namespace pserver::linear
