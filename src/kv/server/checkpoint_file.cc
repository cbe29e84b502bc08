#include "kv/server/checkpoint_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>

#include "kv/table_catalog.h"
#include "pserver/checksum.h"

namespace pserver::kv {
namespace {

using transport::Bytes;

constexpr std::string_view kMagic("PSCKPT\x01\n", 8);
constexpr std::string_view kEndMagic("PSCKEND\n", 8);
constexpr size_t kHeaderBytes = 24;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint32_t GetU32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string_view View(const void* data, size_t size) { return {static_cast<const char*>(data), size}; }

// Appends `bytes` to the file and to the running checksum.
class SectionWriter {
 public:
  SectionWriter(AtomicFileWriter& out, uint64_t seed) : out_(out), sum_(seed) {}
  Status Put(std::string_view bytes) {
    sum_.Update(bytes.data(), bytes.size());
    return out_.Append(bytes);
  }
  // A u64 length, then the bytes.
  Status Blob(std::string_view bytes) {
    std::string n;
    PutU64(&n, bytes.size());
    PSERVER_RETURN_IF_ERROR(Put(n));
    return Put(bytes);
  }
  uint64_t checksum() const { return sum_.Digest(); }

 private:
  AtomicFileWriter& out_;
  Checksum64Stream sum_;
};

// Reads the file front to back, checking each read against what is left.
class FileReader {
 public:
  FileReader(std::FILE* f, uint64_t size) : f_(f), size_(size) {}

  uint64_t offset() const { return offset_; }
  uint64_t left() const { return size_ - offset_; }

  // Reads exactly `n` bytes; kCorruption naming `what` if the file ends first.
  Status Read(void* out, size_t n, const std::string& what) {
    if (n > left()) {
      return Status::Corruption(
          fmt::format("cut short in {}: {} bytes needed at offset {}, {} left", what, n, offset_, left()));
    }
    if (n > 0 && std::fread(out, 1, n, f_) != n) {
      return Status::Unavailable(fmt::format("reading {} at offset {}: {}", what, offset_,
                                             std::ferror(f_) ? std::strerror(errno) : "unexpected end of file"));
    }
    offset_ += n;
    return Status::Ok();
  }

 private:
  std::FILE* f_;
  uint64_t size_;
  uint64_t offset_ = 0;
};

// A section read into memory and hashed.
class SectionReader {
 public:
  SectionReader(FileReader& in, uint64_t seed) : in_(in), sum_(seed) {}
  Status Read(void* out, size_t n, const std::string& what) {
    PSERVER_RETURN_IF_ERROR(in_.Read(out, n, what));
    sum_.Update(out, n);
    return Status::Ok();
  }
  // A u64 length, then that many bytes (at most what is left of the file).
  Result<Bytes> Blob(const std::string& what) {
    unsigned char n_bytes[8];
    PSERVER_RETURN_IF_ERROR(Read(n_bytes, 8, what + "'s length"));
    const uint64_t n = GetU64(n_bytes);
    if (n > in_.left()) {
      return Status::Corruption(fmt::format("{} of {} bytes at offset {}, but only {} bytes are left in the file", what,
                                            n, in_.offset(), in_.left()));
    }
    Bytes b = Bytes::Uninitialized(n);
    PSERVER_RETURN_IF_ERROR(Read(b.data(), n, what));
    return b;
  }
  uint64_t checksum() const { return sum_.Digest(); }

 private:
  FileReader& in_;
  Checksum64Stream sum_;
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

Result<CheckpointTable> ReadTable(FileReader& in, const std::string& path, size_t index, uint64_t* chain) {
  SectionReader s(in, *chain);
  std::string name = fmt::format("table {}", index);
  auto fail = [&](const Status& why) { return Status(why.code(), fmt::format("checkpoint {}: {}: {}", path, name, why.message())); };
  auto corrupt = [&](const std::string& what) { return fail(Status::Corruption(what)); };
  Result<Bytes> spec_bytes = s.Blob("spec");
  if (!spec_bytes.ok()) return fail(spec_bytes.status());
  Result<TableSpec> spec = DecodeTableSpec(*spec_bytes);
  CheckpointTable t;
  if (spec.ok()) {
    t.spec = std::move(*spec);
    name = fmt::format("table {} ('{}')", index, t.spec.name);
  }
  unsigned char layout[16];
  if (Status st = s.Read(layout, sizeof layout, "row layout"); !st.ok()) return fail(st);
  Result<Bytes> keys = s.Blob("keys");
  if (!keys.ok()) return fail(keys.status());
  Result<Bytes> lens = s.Blob("lengths");
  if (!lens.ok()) return fail(lens.status());
  Result<Bytes> values = s.Blob("values");
  if (!values.ok()) return fail(values.status());
  Result<Bytes> states = s.Blob("states");
  if (!states.ok()) return fail(states.status());
  unsigned char stored[8];
  if (Status st = in.Read(stored, 8, "checksum"); !st.ok()) return fail(st);
  // The checksum first: a mismatch explains any oddity below it.
  if (GetU64(stored) != s.checksum()) {
    return corrupt(fmt::format("checksum mismatch (stored {:016x}, computed {:016x}): the file is corrupt", GetU64(stored),
                            s.checksum()));
  }
  *chain = s.checksum();
  if (!spec.ok()) return corrupt(std::string(spec.status().message()));
  const uint32_t value_type = GetU32(layout);
  if (value_type < static_cast<uint32_t>(ValueType::kFloat32) || value_type > static_cast<uint32_t>(ValueType::kInt64) ||
      GetU32(layout + 12) != 0) {
    return corrupt(fmt::format("a row layout of value type {} (reserved field {})", value_type, GetU32(layout + 12)));
  }
  RowBatch& r = t.rows;
  r.value_type = static_cast<ValueType>(value_type);
  r.width = GetU32(layout + 4);
  r.state_per_value = GetU32(layout + 8);
  if (keys->size() % sizeof(Key) != 0 || lens->size() % sizeof(int32_t) != 0) {
    return corrupt(fmt::format("{} key bytes and {} length bytes are no whole number of keys and lengths", keys->size(),
                            lens->size()));
  }
  r.keys = SharedArray<Key>(keys->owner(), reinterpret_cast<Key*>(keys->data()), keys->size() / sizeof(Key));
  r.lens = SharedArray<int32_t>(lens->owner(), reinterpret_cast<int32_t*>(lens->data()), lens->size() / sizeof(int32_t));
  r.values = std::move(*values);
  r.states = std::move(*states);
  for (size_t i = 1; i < r.keys.size(); ++i) {
    if (r.keys[i] <= r.keys[i - 1]) return corrupt(fmt::format("keys not ascending at row {} ({} after {})", i, r.keys[i], r.keys[i - 1]));
  }
  // The row layout must be the spec's, and the arrays must fit it exactly.
  const uint32_t spec_width = t.spec.variable_length ? 0 : t.spec.width;
  if (r.value_type != t.spec.value_type || r.width != spec_width || r.state_per_value > 64) {
    return corrupt(fmt::format("a row layout of {} values of width {} with {} state values each, for a table of {} "
                               "values of width {}",
                               ValueTypeName(r.value_type), r.width, r.state_per_value, ValueTypeName(t.spec.value_type),
                               spec_width));
  }
  uint64_t count = 0;  // values of every row
  if (r.width == 0) {
    if (r.lens.size() != r.keys.size()) {
      return corrupt(fmt::format("{} lengths for {} keys", r.lens.size(), r.keys.size()));
    }
    for (size_t i = 0; i < r.lens.size(); ++i) {
      if (r.lens[i] < 0) return corrupt(fmt::format("a negative length {} at row {}", r.lens[i], i));
      count += static_cast<uint64_t>(r.lens[i]);
    }
  } else {
    if (!r.lens.empty()) return corrupt(fmt::format("{} lengths for rows of fixed width {}", r.lens.size(), r.width));
    count = uint64_t{r.keys.size()} * r.width;
  }
  const uint64_t elem = ValueTypeSize(r.value_type);
  if (r.values.size() != count * elem || r.states.size() != count * elem * r.state_per_value) {
    return corrupt(fmt::format("{} value bytes and {} state bytes where its {} rows hold {} and {}", r.values.size(),
                               r.states.size(), r.keys.size(), count * elem, count * elem * r.state_per_value));
  }
  return t;
}

}  // namespace

Result<CheckpointFileInfo> WriteCheckpointFile(AtomicFileWriter& out, const std::vector<CheckpointTable>& tables) {
  std::string header(kMagic);
  PutU32(&header, kCheckpointFileVersion);
  PutU32(&header, static_cast<uint32_t>(tables.size()));
  uint64_t chain = Checksum64(header.data(), header.size());
  PutU64(&header, chain);
  PSERVER_RETURN_IF_ERROR(out.Append(header));
  CheckpointFileInfo info;
  for (const CheckpointTable& t : tables) {
    const RowBatch& r = t.rows;
    SectionWriter s(out, chain);
    const Bytes spec = EncodeTableSpec(t.spec);
    PSERVER_RETURN_IF_ERROR(s.Blob(View(spec.data(), spec.size())));
    std::string layout;
    PutU32(&layout, static_cast<uint32_t>(r.value_type));
    PutU32(&layout, r.width);
    PutU32(&layout, r.state_per_value);
    PutU32(&layout, 0);
    PSERVER_RETURN_IF_ERROR(s.Put(layout));
    PSERVER_RETURN_IF_ERROR(s.Blob(View(r.keys.data(), r.keys.size_bytes())));
    PSERVER_RETURN_IF_ERROR(s.Blob(View(r.lens.data(), r.lens.size_bytes())));
    PSERVER_RETURN_IF_ERROR(s.Blob(View(r.values.data(), r.values.size())));
    PSERVER_RETURN_IF_ERROR(s.Blob(View(r.states.data(), r.states.size())));
    chain = s.checksum();
    std::string sum;
    PutU64(&sum, chain);
    PSERVER_RETURN_IF_ERROR(out.Append(sum));
    info.rows += r.size();
  }
  std::string footer(kEndMagic);
  PutU64(&footer, chain);
  PSERVER_RETURN_IF_ERROR(out.Append(footer));
  info.bytes = out.size();
  info.checksum = chain;
  PSERVER_RETURN_IF_ERROR(out.Commit());
  return info;
}

Result<std::vector<CheckpointTable>> ReadCheckpointFile(const std::string& path, CheckpointFileInfo* info) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (f == nullptr) {
    const int err = errno;
    const std::string why = fmt::format("checkpoint {}: cannot open: {}", path, std::strerror(err));
    return err == ENOENT ? Status::NotFound(why) : Status::Unavailable(why);
  }
  if (std::fseek(f.get(), 0, SEEK_END) != 0) {
    return Status::Unavailable(fmt::format("checkpoint {}: cannot seek: {}", path, std::strerror(errno)));
  }
  const long size = std::ftell(f.get());
  std::rewind(f.get());
  if (size < 0) return Status::Unavailable(fmt::format("checkpoint {}: cannot tell its size: {}", path, std::strerror(errno)));
  FileReader in(f.get(), static_cast<uint64_t>(size));
  auto at_path = [&](const Status& why) { return Status(why.code(), fmt::format("checkpoint {}: {}", path, why.message())); };
  unsigned char header[kHeaderBytes];
  if (Status st = in.Read(header, sizeof header, "the header"); !st.ok()) return at_path(st);
  if (View(header, 8) != kMagic) {
    return Status::Corruption(fmt::format("checkpoint {}: not a pserver checkpoint file (its first bytes are no "
                                          "checkpoint's)",
                                          path));
  }
  uint64_t chain = Checksum64(header, 16);
  if (GetU64(header + 16) != chain) {
    return Status::Corruption(fmt::format("checkpoint {}: the header's checksum does not match: the file is corrupt", path));
  }
  const uint32_t version = GetU32(header + 8);
  if (version != kCheckpointFileVersion) {
    return Status::Corruption(fmt::format("checkpoint {}: file version {}; this build reads version {}", path, version,
                                          kCheckpointFileVersion));
  }
  const uint32_t count = GetU32(header + 12);
  std::vector<CheckpointTable> tables;
  CheckpointFileInfo got;
  for (uint32_t i = 0; i < count; ++i) {
    PSERVER_ASSIGN_OR_RETURN(CheckpointTable t, ReadTable(in, path, i, &chain));
    got.rows += t.rows.size();
    tables.push_back(std::move(t));
  }
  unsigned char footer[16];
  if (Status st = in.Read(footer, sizeof footer, "the footer"); !st.ok()) return at_path(st);
  if (View(footer, 8) != kEndMagic || GetU64(footer + 8) != chain) {
    return Status::Corruption(fmt::format("checkpoint {}: the footer does not close the {} tables: the file is corrupt",
                                          path, count));
  }
  if (in.left() != 0) {
    return Status::Corruption(fmt::format("checkpoint {}: {} bytes after the footer", path, in.left()));
  }
  got.bytes = static_cast<uint64_t>(size);
  got.checksum = chain;
  if (info != nullptr) *info = got;
  return tables;
}

}  // namespace pserver::kv
