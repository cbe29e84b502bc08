#include "apps/linear/libsvm_reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "apps/linear/io_util.h"
#include "pserver/atomic_file.h"

namespace pserver::linear {
namespace {

using internal::ErrnoStatus;
using internal::FilePtr;

inline bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// A token for an error message, in single quotes: at most its first kQuoteBytes bytes, then
// "... (N bytes)" when it is longer, with every byte that is not printable ASCII (NUL,
// control bytes, UTF-8) written as \xNN, so that a message stays short and printable.
constexpr size_t kQuoteBytes = 64;
std::string Quote(std::string_view token) {
  std::string out = "'";
  for (const char c : token.substr(0, kQuoteBytes)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  out.push_back('\'');
  if (token.size() > kQuoteBytes) out += fmt::format("... ({} bytes)", token.size());
  return out;
}

// Exactly what std::from_chars gives for short plain decimals ([-+]digits[.digits], at most 7
// significant digits, at most 10 after the point), which are most values in practice, and
// several times faster: m and 10^k are exact floats, so m / 10^k is one correctly rounded
// division (Clinger's fast path). Returns false for anything else (the caller falls back).
inline bool ParseSimpleFloat(const char* p, const char* e, float* out) {
  static constexpr float kPow10[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                     1e6f, 1e7f, 1e8f, 1e9f, 1e10f};
  bool negative = false;
  if (p < e && (*p == '-' || *p == '+')) negative = *p++ == '-';
  uint32_t m = 0;
  int digits = 0, frac = 0;  // significant digits, digits after the point
  bool point = false, any_digit = false;
  for (; p < e; ++p) {
    const char c = *p;
    if (c >= '0' && c <= '9') {
      any_digit = true;
      if (m != 0 || c != '0') ++digits;
      m = m * 10 + static_cast<uint32_t>(c - '0');
      if (point) ++frac;
      if (digits > 7 || frac > 10) return false;
    } else if (c == '.' && !point) {
      point = true;
    } else {
      return false;
    }
  }
  if (!any_digit) return false;  // "", ".", "-"
  const float v = static_cast<float>(m) / kPow10[frac];
  *out = negative ? -v : v;
  return true;
}

// Parses one line at a time into a Dataset. On a malformed line, ParseLine returns false and
// error() says what is wrong (without the file and line, which the caller knows).
class LineParser {
 public:
  explicit LineParser(Dataset* out) : out_(out) {}

  bool ParseLine(const char* p, const char* e) {
    if (const void* hash = std::memchr(p, '#', static_cast<size_t>(e - p))) {
      e = static_cast<const char*>(hash);
    }
    if (ParseFields(p, e)) return true;
    // A NUL byte fails every field; name it rather than the token it happens to end up in.
    // Looked for only here, so that good lines pay nothing for it.
    if (const void* nul = std::memchr(p, '\0', static_cast<size_t>(e - p))) {
      error_ = fmt::format("NUL byte at column {} (binary data?)",
                           static_cast<const char*>(nul) - p + 1);
    }
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  // Parses the fields of a line without its comment.
  bool ParseFields(const char* p, const char* e) {
    while (p < e && IsSpace(*p)) ++p;
    if (p == e) return true;  // blank or comment only
    const char* t = p;
    while (t < e && !IsSpace(*t)) ++t;
    float label = 0;
    if (!ParseLabel(p, t, &label)) {
      error_ = fmt::format("bad label {} (expected +1, -1, 1 or 0)", Quote(std::string_view(p, t - p)));
      return false;
    }
    p = t;
    ids_.clear();
    values_.clear();
    uint64_t prev = 0;
    for (;;) {
      while (p < e && IsSpace(*p)) ++p;
      if (p == e) break;
      t = p;
      while (t < e && !IsSpace(*t)) ++t;
      const std::string_view token(p, t - p);
      // The index, inline (the common case); any problem is diagnosed on the slow path.
      uint64_t index = 0;
      const char* colon = p;
      bool overflow = false;
      for (; colon < t && static_cast<unsigned>(*colon - '0') < 10; ++colon) {
        const uint64_t digit = static_cast<uint64_t>(*colon - '0');
        overflow |= index > (std::numeric_limits<uint64_t>::max() - digit) / 10;
        index = index * 10 + digit;
      }
      if (colon == p || colon == t || *colon != ':' || overflow) {
        colon = static_cast<const char*>(std::memchr(p, ':', token.size()));
        if (colon == nullptr) {
          error_ = fmt::format("missing ':' in {} (expected index:value)", Quote(token));
        } else {
          error_ = fmt::format("bad feature index {} in {}", Quote(std::string_view(p, colon - p)),
                               Quote(token));
        }
        return false;
      }
      if (index == 0) {
        error_ = fmt::format("feature index 0 in {} (indices are 1-based)", Quote(token));
        return false;
      }
      if (index <= prev) {
        error_ = fmt::format(
            "feature index {} after index {} (indices must be strictly increasing)", index, prev);
        return false;
      }
      float value = 0;
      if (!ParseSimpleFloat(colon + 1, t, &value) && !ParseFloat(colon + 1, t, &value)) {
        error_ = fmt::format("bad value {} for feature {}",
                             Quote(std::string_view(colon + 1, t - colon - 1)), index);
        return false;
      }
      ids_.push_back(index - 1);
      values_.push_back(value);
      prev = index;
      p = t;
    }
    const Status s = out_->AppendRow(label, ids_, values_);
    if (!s.ok()) {  // cannot happen: the checks above are stricter
      error_ = s.message();
      return false;
    }
    return true;
  }

  // Any finite float that from_chars reads, also with a leading '+'.
  static bool ParseFloat(const char* v, const char* t, float* value) {
    if (v < t && *v == '+' && v + 1 < t && v[1] != '-') ++v;
    auto [end, ec] = std::from_chars(v, t, *value);
    return ec == std::errc() && end == t && std::isfinite(*value);
  }

  static bool ParseLabel(const char* p, const char* t, float* label) {
    if (t - p == 2 && (p[0] == '+' || p[0] == '-') && p[1] == '1') {
      *label = p[0] == '+' ? 1.0f : -1.0f;
      return true;
    }
    if (p < t && *p == '+') {
      ++p;
      if (p < t && *p == '-') return false;
    }
    double x = 0;
    auto [end, ec] = std::from_chars(p, t, x);
    if (ec != std::errc() || end != t) return false;
    if (x == 1.0) {
      *label = 1.0f;
    } else if (x == -1.0 || x == 0.0) {
      *label = -1.0f;
    } else {
      return false;
    }
    return true;
  }

  Dataset* out_;
  std::vector<uint64_t> ids_;
  std::vector<float> values_;
  std::string error_;
};

// Number of '\n' bytes in [0, end) of the file (for line numbers of errors found in a part
// that did not start at the beginning of its file).
Result<uint64_t> CountNewlines(const std::string& path, uint64_t end) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) return ErrnoStatus(path, "open", errno);
  std::vector<char> buf(size_t{1} << 20);
  uint64_t count = 0, pos = 0;
  while (pos < end) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    const size_t got = std::fread(buf.data(), 1, want, f.get());
    count += static_cast<uint64_t>(std::count(buf.data(), buf.data() + got, '\n'));
    pos += got;
    if (got < want) break;
  }
  return count;
}

// What a line visitor of ScanLines tells it to do next.
enum class LineAction { kNext, kStop, kFail };

// Calls `on_line(begin, end, &error)` (end excludes the '\n') for each line of file `path`
// that begins at a byte offset in [start, limit), in order, until it returns kStop or kFail;
// on kFail, returns kCorruption "<path>:<line>: <error>". A line longer than
// options.max_line_bytes is kCorruption before any of it is visited; the buffer never grows
// past max(options.chunk_bytes, options.max_line_bytes + 1) bytes. The first byte of the file
// begins a line; any other line begins after a '\n'. A directory is kInvalidArgument.
template <typename OnLine>
Status ScanLines(const std::string& path, uint64_t start, uint64_t limit,
                 const LibsvmReadOptions& options, OnLine&& on_line) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) return ErrnoStatus(path, "open", errno);
  struct stat st {};
  if (::fstat(::fileno(f.get()), &st) != 0) return ErrnoStatus(path, "stat", errno);
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(fmt::format("{}: is a directory", path));
  // When starting mid-file, read from the byte before `start` and skip to the end of the
  // line it belongs to: if it is a '\n', the line at `start` is the first one.
  const bool align = start > 0;
  uint64_t buf_offset = align ? start - 1 : 0;  // file offset of buf[0]
  if (buf_offset > 0 && fseeko(f.get(), static_cast<off_t>(buf_offset), SEEK_SET) != 0) {
    return ErrnoStatus(path, "seek", errno);
  }
  const size_t max_line = std::max<size_t>(options.max_line_bytes, 1);
  std::vector<char> buf(std::max<size_t>(options.chunk_bytes, 64));
  size_t have = 0;
  bool eof = false;
  bool skipping = align;
  uint64_t first_line_offset = start;  // file offset of the first line visited
  uint64_t lines_seen = 0;             // physical lines passed since first_line_offset
  std::string error;

  // "<path>:<line>: <what>" for the line after the `lines_seen` ones.
  auto fail = [&](const std::string& what) -> Status {
    uint64_t line = lines_seen + 1;
    if (first_line_offset > 0) {
      Result<uint64_t> before = CountNewlines(path, first_line_offset);
      if (!before.ok()) return before.status();
      line += *before;
    }
    return Status::Corruption(fmt::format("{}:{}: {}", path, line, what));
  };
  auto too_long = [&](const char* line, size_t size) -> Status {
    const bool nul = std::memchr(line, '\0', size) != nullptr;
    return fail(fmt::format("line longer than {} bytes{}", max_line,
                            nul ? " (it holds NUL bytes: binary data?)" : ""));
  };

  for (;;) {
    if (!eof) {
      const size_t want = buf.size() - have;
      const size_t got = std::fread(buf.data() + have, 1, want, f.get());
      if (got < want) {
        if (std::ferror(f.get())) return ErrnoStatus(path, "read", errno);
        eof = true;
      }
      have += got;
    }
    size_t p = 0;
    if (skipping) {
      const void* nl = std::memchr(buf.data(), '\n', have);
      if (nl == nullptr) {
        // No line begins before offset buf_offset + have: done if that is past the range.
        if (eof || buf_offset + have >= limit) return Status::Ok();
        buf_offset += have;
        have = 0;
        continue;
      }
      p = static_cast<size_t>(static_cast<const char*>(nl) - buf.data()) + 1;
      skipping = false;
      first_line_offset = buf_offset + p;
    }
    for (;;) {
      if (buf_offset + p >= limit || p >= have) break;
      const char* line = buf.data() + p;
      const void* nl = std::memchr(line, '\n', have - p);
      if (nl == nullptr) break;
      const char* line_end = static_cast<const char*>(nl);
      const size_t size = static_cast<size_t>(line_end - line);
      if (size > max_line) return too_long(line, size);
      switch (on_line(line, line_end, &error)) {
        case LineAction::kNext:
          break;
        case LineAction::kStop:
          return Status::Ok();
        case LineAction::kFail:
          return fail(error);
      }
      ++lines_seen;
      p = static_cast<size_t>(line_end - buf.data()) + 1;
    }
    if (buf_offset + p >= limit) return Status::Ok();
    if (have - p > max_line) return too_long(buf.data() + p, have - p);
    if (eof) {
      if (p < have && on_line(buf.data() + p, buf.data() + have, &error) == LineAction::kFail) {
        return fail(error);
      }
      return Status::Ok();
    }
    // Keep the incomplete last line; grow the buffer if it holds nothing else (at most to
    // max_line + 1 bytes: a fuller buffer without a '\n' is a line that is too long).
    std::memmove(buf.data(), buf.data() + p, have - p);
    buf_offset += p;
    have -= p;
    if (have == buf.size()) buf.resize(std::min(buf.size() * 2, max_line + 1));
  }
}

// Parses into `out` the lines of file `path` that begin at a byte offset in [start, limit).
Status ReadLines(const std::string& path, uint64_t start, uint64_t limit,
                 const LibsvmReadOptions& options, Dataset* out) {
  LineParser parser(out);
  return ScanLines(path, start, limit, options,
                   [&](const char* b, const char* e, std::string* error) {
                     if (parser.ParseLine(b, e)) return LineAction::kNext;
                     *error = parser.error();
                     return LineAction::kFail;
                   });
}

// "a FIFO", "a character device", ... for a file that is not regular.
const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// floor(total * p / n) without overflow.
uint64_t CutPoint(uint64_t total, uint64_t p, uint64_t n) {
  return (total / n) * p + (total % n) * p / n;
}

}  // namespace

Result<Dataset> ParseLibsvm(std::string_view text, std::string_view name, uint64_t first_line) {
  Dataset out;
  LineParser parser(&out);
  uint64_t line = first_line;
  const char* p = text.data();
  const char* const e = text.data() + text.size();
  while (p < e) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(e - p)));
    const char* line_end = nl == nullptr ? e : nl;
    if (!parser.ParseLine(p, line_end)) {
      return Status::Corruption(fmt::format("{}:{}: {}", name, line, parser.error()));
    }
    ++line;
    p = nl == nullptr ? e : nl + 1;
  }
  return out;
}

Result<Dataset> ReadLibsvm(const std::string& path, const LibsvmReadOptions& options) {
  Dataset out;
  PSERVER_RETURN_IF_ERROR(ReadLines(path, 0, std::numeric_limits<uint64_t>::max(), options, &out));
  return out;
}

Result<std::vector<FileSpan>> PartSpans(const std::vector<std::string>& paths, int part, int num_parts) {
  if (paths.empty()) return Status::InvalidArgument("ReadPart: no input files");
  if (num_parts < 1 || part < 0 || part >= num_parts) {
    return Status::InvalidArgument(
        fmt::format("ReadPart: part {} of {} is out of range", part, num_parts));
  }
  PSERVER_RETURN_IF_ERROR(CheckInputFiles(paths));
  std::vector<FileSpan> spans;
  const size_t n = static_cast<size_t>(num_parts);
  if (paths.size() >= n) {
    for (size_t i = static_cast<size_t>(part); i < paths.size(); i += n) spans.push_back(FileSpan{paths[i]});
    return spans;
  }
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const std::string& path : paths) {
    // Only a regular file's size is known: a device or pipe says 0 (/dev/zero), and a
    // split by that size would silently give every part nothing.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(path, "stat", errno);
    if (!S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(fmt::format(
          "{}: not a regular file ({}), so it cannot be split by byte range into {} parts; give "
          "a regular file, or at least {} files so that each part reads whole files",
          path, FileKind(st.st_mode), num_parts, num_parts));
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    sizes.push_back(size);
    total += size;
  }
  const uint64_t begin = CutPoint(total, static_cast<uint64_t>(part), n);
  const uint64_t end = CutPoint(total, static_cast<uint64_t>(part) + 1, n);
  uint64_t file_begin = 0;  // offset of the current file in the concatenation
  for (size_t i = 0; i < paths.size(); ++i) {
    const uint64_t file_end = file_begin + sizes[i];
    const uint64_t a = std::max(begin, file_begin), b = std::min(end, file_end);
    if (a < b) spans.push_back(FileSpan{paths[i], a - file_begin, b - file_begin});
    file_begin = file_end;
  }
  return spans;
}

Result<Dataset> ReadPart(const std::vector<std::string>& paths, int part, int num_parts,
                         const LibsvmReadOptions& options) {
  PSERVER_ASSIGN_OR_RETURN(std::vector<FileSpan> spans, PartSpans(paths, part, num_parts));
  Dataset out;
  for (const FileSpan& span : spans) {
    PSERVER_RETURN_IF_ERROR(ReadLines(span.path, span.begin, span.end, options, &out));
  }
  return out;
}

Status CheckInputFiles(const std::vector<std::string>& paths) {
  std::vector<struct stat> stats(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    if (::stat(paths[i].c_str(), &stats[i]) != 0) return ErrnoStatus(paths[i], "stat", errno);
    if (S_ISDIR(stats[i].st_mode)) {
      return Status::InvalidArgument(fmt::format("{}: is a directory", paths[i]));
    }
    for (size_t j = 0; j < i; ++j) {
      if (stats[j].st_dev != stats[i].st_dev || stats[j].st_ino != stats[i].st_ino) continue;
      if (paths[j] == paths[i]) {
        return Status::InvalidArgument(fmt::format(
            "{} is given twice as input (its rows would be read twice)", paths[i]));
      }
      return Status::InvalidArgument(
          fmt::format("{} and {} are the same file, given twice as input (its rows would be read "
                      "twice)",
                      paths[j], paths[i]));
    }
  }
  return Status::Ok();
}

Result<bool> HasDataRows(const std::vector<std::string>& paths,
                         const LibsvmReadOptions& options) {
  for (const std::string& path : paths) {
    bool found = false;
    PSERVER_RETURN_IF_ERROR(ScanLines(path, 0, std::numeric_limits<uint64_t>::max(), options,
                                      [&](const char* b, const char* e, std::string*) {
                                        while (b < e && IsSpace(*b)) ++b;
                                        if (b == e || *b == '#') return LineAction::kNext;
                                        found = true;
                                        return LineAction::kStop;
                                      }));
    if (found) return true;
  }
  return false;
}

void AppendLibsvmRow(const RowView& row, std::string* out) {
  out->append(row.label > 0 ? "+1" : "-1");
  char buf[64];
  for (size_t k = 0; k < row.feature_ids.size(); ++k) {
    char* p = buf;
    *p++ = ' ';
    p = std::to_chars(p, buf + sizeof(buf), row.feature_ids[k] + 1).ptr;
    *p++ = ':';
    p = std::to_chars(p, buf + sizeof(buf), row.values[k]).ptr;
    out->append(buf, p);
  }
  out->push_back('\n');
}

Status WriteLibsvm(const Dataset& data, const std::string& path) {
  // Atomic (pserver/atomic_file.h): a failed write leaves no partial file under `path`.
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, AtomicFileWriter::Open(path));
  std::string buf;
  constexpr size_t kFlushBytes = size_t{4} << 20;
  for (size_t r = 0; r < data.num_rows(); ++r) {
    AppendLibsvmRow(data.row(r), &buf);
    if (buf.size() >= kFlushBytes) {
      PSERVER_RETURN_IF_ERROR(out->Append(buf));
      buf.clear();
    }
  }
  PSERVER_RETURN_IF_ERROR(out->Append(buf));
  return out->Commit();
}

std::string DescribePart(const std::vector<std::string>& paths, int part, int num_parts) {
  Result<std::vector<FileSpan>> spans = PartSpans(paths, part, num_parts);
  if (!spans.ok()) return fmt::format("part {} of {} of {}", part + 1, num_parts, fmt::join(paths, ", "));
  std::vector<std::string> pieces;
  for (const FileSpan& span : *spans) {
    pieces.push_back(span.end == FileSpan::kToEnd
                         ? span.path
                         : fmt::format("the lines starting in bytes [{}, {}) of {}", span.begin, span.end, span.path));
  }
  if (pieces.empty()) return "no data (an empty part)";
  return fmt::format("{}", fmt::join(pieces, ", "));
}

}  // namespace pserver::linear
