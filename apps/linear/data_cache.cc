#include "apps/linear/data_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <utility>

#include "apps/linear/io_util.h"
#include "pserver/atomic_file.h"
#include "pserver/checksum.h"

namespace pserver::linear {

static_assert(std::endian::native == std::endian::little,
              "the data cache format is little-endian; add byte swapping for this host");

namespace {

using internal::ErrnoStatus;

constexpr char kMagic[8] = {'P', 'S', 'L', 'D', 'A', 'T', 'A', '\n'};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kChecksumOffset = 56;

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
  uint64_t h = Checksum64(header, kChecksumOffset, 0);
  for (auto bytes : {Bytes(labels), Bytes(offsets), Bytes(ids), Bytes(values)}) {
    h = Checksum64(bytes.data(), bytes.size(), h);
  }
  return h;
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

// Adds to `state` the bytes of `span` that decide which lines the part holds: a whole file, or
// for a byte range [b, e) the byte before b (does b begin a line?), [b, e), and the rest of the
// line that straddles e (up to its newline, or the line limit, or the end of the file) -- so that
// a worker hashes its share of the data, not every input.
Status HashSpan(const FileSpan& span, size_t max_line_bytes, XXH3_state_t* state, std::vector<char>& buf) {
  Fd fd(::open(span.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(span.path, "open", errno);
  const bool whole = span.end == FileSpan::kToEnd;
  uint64_t at = whole || span.begin == 0 ? 0 : span.begin - 1;
  const uint64_t hard_end = whole ? FileSpan::kToEnd : span.end + max_line_bytes + 1;
  uint64_t hashed = 0;
  for (bool done = false; !done && at < hard_end;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), hard_end - at));
    const ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(span.path, "read", errno);
    }
    if (n == 0) break;
    size_t take = static_cast<size_t>(n);
    if (!whole && at + take > span.end) {
      // Past e, hash up to the straddling line's newline and stop.
      const size_t from = at >= span.end ? 0 : static_cast<size_t>(span.end - at);
      const void* nl = std::memchr(buf.data() + from, '\n', take - from);
      if (nl != nullptr) {
        take = static_cast<size_t>(static_cast<const char*>(nl) - buf.data()) + 1;
        done = true;
      }
    }
    (void)XXH3_64bits_update(state, buf.data(), take);
    at += take;
    hashed += take;
  }
  // The span's bounds and length end it, so that moving bytes between spans changes the key.
  const uint64_t tail[3] = {span.begin, span.end, hashed};
  (void)XXH3_64bits_update(state, tail, sizeof(tail));
  return Status::Ok();
}

// The content key of a worker's part: XXH3-64 of the bytes of its spans (HashSpan), in order,
// and the split.
Result<uint64_t> InputsKey(const std::vector<std::string>& paths, int part, int num_parts,
                           const LibsvmReadOptions& options) {
  PSERVER_ASSIGN_OR_RETURN(std::vector<FileSpan> spans, PartSpans(paths, part, num_parts));
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) return Status::Internal("XXH3_createState failed");
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> owner(state, XXH3_freeState);
  (void)XXH3_64bits_reset(state);
  const std::string head =
      fmt::format("pserver-linear-data v{} part {} of {} files {}\n", kDataCacheVersion, part, num_parts,
                  paths.size());
  (void)XXH3_64bits_update(state, head.data(), head.size());
  std::vector<char> buf(size_t{1} << 20);
  for (const FileSpan& span : spans) PSERVER_RETURN_IF_ERROR(HashSpan(span, options.max_line_bytes, state, buf));
  return XXH3_64bits_digest(state);
}

}  // namespace

Status WriteDataCache(const Dataset& data, const std::string& path) {
  Header h;
  h.num_rows = data.num_rows();
  h.nnz = data.nnz();
  h.num_features = data.num_features();
  h.payload_bytes = PayloadBytes(h.num_rows, h.nnz);
  unsigned char header[kHeaderBytes];
  EncodeHeader(h, header);
  h.checksum = Checksum(header, data.labels(), data.offsets(), data.feature_ids(), data.values());
  EncodeHeader(h, header);
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, AtomicFileWriter::Open(path));
  PSERVER_RETURN_IF_ERROR(out->Append({reinterpret_cast<const char*>(header), kHeaderBytes}));
  for (auto bytes : {Bytes(data.labels()), Bytes(data.offsets()), Bytes(data.feature_ids()),
                     Bytes(data.values())}) {
    PSERVER_RETURN_IF_ERROR(out->Append({reinterpret_cast<const char*>(bytes.data()), bytes.size()}));
  }
  return out->Commit();
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
  PSERVER_ASSIGN_OR_RETURN(const uint64_t hash, InputsKey(paths, part, num_parts, options));
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
  // The cache only saves time: when it cannot be written, say why and go on without it.
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  Status written = ec ? Status::Unavailable(fmt::format("{}: cannot create the directory: {}", cache_dir, ec.message()))
                      : WriteDataCache(out.data, out.cache_path);
  if (!written.ok()) {
    out.warning = fmt::format("data cache not written, continuing without it: {}", written.message());
    out.cache_path.clear();
  }
  return out;
}

}  // namespace pserver::linear
