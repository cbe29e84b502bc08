// Reading (and writing) sparse data in libsvm / svmlight text format.
//
// One example per line:   <label> <index>:<value> <index>:<value> ... [# comment]
//   * label: +1, 1 or -1, or 0 (which means -1); any spelling from_chars reads as one of
//     these numbers (1.0, +1, -1e0) is accepted.
//   * index: 1-based, strictly increasing within a line; stored 0-based (index - 1).
//   * value: a finite float.
//   * '#' starts a comment that runs to the end of the line; blank and comment-only lines are
//     skipped; spaces and tabs separate tokens; CRLF line ends are accepted.
// Anything else is an error, never skipped: kCorruption with a message
// "<file>:<line>: <what is wrong>", e.g. "data/x.svm:17: bad value 'abc' for feature 5"
// (line numbers are 1-based and count every physical line, including blank ones).
//
// A NUL byte outside a comment is refused
// ("<file>:<line>: NUL byte at column C (binary data?)"), and so is a line longer than
// LibsvmReadOptions::max_line_bytes ("<file>:<line>: line longer than N bytes"). A token
// quoted in an error message is cut to its first 64 bytes followed by "... (N bytes)", and
// bytes that are not printable ASCII are shown as \xNN.
//
// Files are read in chunks (LibsvmReadOptions::chunk_bytes), so the reader needs memory for
// the parsed Dataset plus max(chunk_bytes, max_line_bytes + 1) bytes, whatever the file size
// -- also for a file without any newline, such as /dev/zero. Files that are not regular
// (pipes, devices such as /dev/stdin) are read as streams, once, from their start. All
// functions are thread-safe (no shared state) and block on file I/O.
//
// Errors of every function here: kNotFound when a file does not exist, kInvalidArgument for a
// directory ("<dir>: is a directory"), kUnavailable for other I/O errors (the message names the
// file and the system error), kCorruption for malformed text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "apps/linear/dataset.h"
#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::linear {

struct LibsvmReadOptions {
  // Bytes read from a file at a time. A line longer than this grows the buffer, up to
  // max_line_bytes + 1.
  size_t chunk_bytes = size_t{16} << 20;
  // The longest line accepted, in bytes, not counting its '\n'. 64 MiB holds a row of some
  // four million features in the usual "index:value" spelling, and bounds the memory spent on
  // a file that has no newline at all.
  size_t max_line_bytes = size_t{64} << 20;
};

// Parses libsvm text held in memory. `name` names the source in error messages and
// `first_line` is the line number of the first line of `text`.
Result<Dataset> ParseLibsvm(std::string_view text, std::string_view name, uint64_t first_line = 1);

// Reads a whole libsvm file.
Result<Dataset> ReadLibsvm(const std::string& path, const LibsvmReadOptions& options = {});

// Reads part `part` of `num_parts` of the concatenation of `paths`, so that workers
// 0..num_parts-1 together read every line exactly once:
//   * when paths.size() >= num_parts, by file: file i belongs to part i % num_parts (the
//     part's files are read in order);
//   * otherwise by byte range: the concatenated inputs (total size S) are cut at
//     floor(S * p / num_parts); a part holds the lines that *begin* in its range, i.e. it
//     starts at the first line beginning at or after its start offset and includes the line
//     straddling its end. Each file's first byte begins a line. Rows keep file order.
// A part may be empty. The byte-range split needs the size of every file, so there a file
// that is not regular (a pipe or device, whose size stat does not know) is refused with
// kInvalidArgument; the split by file reads such files as streams. REQUIRES nothing: bad
// arguments give kInvalidArgument (no paths, num_parts < 1, part outside [0, num_parts), and
// the checks of CheckInputFiles).
Result<Dataset> ReadPart(const std::vector<std::string>& paths, int part, int num_parts,
                         const LibsvmReadOptions& options = {});

// One input's share of a part: the lines that begin in bytes [begin, end) of `path` (a line
// straddling `end` included; kToEnd: to the end of the file).
struct FileSpan {
  static constexpr uint64_t kToEnd = ~uint64_t{0};
  std::string path;
  uint64_t begin = 0;
  uint64_t end = kToEnd;
};

// What ReadPart(paths, part, num_parts) reads, in order: its split, planned without reading any
// data. Errors as ReadPart's before it reads (bad arguments, CheckInputFiles, a byte-range
// split of a file that is not regular).
Result<std::vector<FileSpan>> PartSpans(const std::vector<std::string>& paths, int part, int num_parts);

// Names the share of the inputs that ReadPart(paths, part, num_parts) reads, for messages
// (e.g. "b.svm, d.svm" or "bytes [1024, 2048) of a.svm"). Never fails: a file whose size
// cannot be read is named whole.
std::string DescribePart(const std::vector<std::string>& paths, int part, int num_parts);

// Checks, without reading them, that `paths` can serve as the inputs of one job: each exists
// (else kNotFound, or kUnavailable for another stat error), none is a directory
// (kInvalidArgument "<path>: is a directory"), and no file is named twice, by the same path or
// by two paths that lead to the same file (kInvalidArgument "<path> is given twice" or
// "<a> and <b> are the same file"): reading it twice would silently double its rows.
Status CheckInputFiles(const std::vector<std::string>& paths);

// Whether any of `paths` holds a data row, i.e. a line that is not blank or a comment only
// (the line is not parsed). Reads each regular file up to its first such line, so it is cheap
// for data that has rows and reads everything only when there are none. A file that is not
// regular (a pipe or device) is read like the others, which consumes what a pipe holds.
// Errors: as ReadLibsvm for I/O, and the line-length limit of `options`.
Result<bool> HasDataRows(const std::vector<std::string>& paths,
                         const LibsvmReadOptions& options = {});

// Appends one row in libsvm text (label "+1" or "-1", 1-based indices, values in the
// shortest form that reads back to the same float) and a '\n' to `out`.
void AppendLibsvmRow(const RowView& row, std::string* out);

// Writes `data` as libsvm text to `path` (created or truncated). ReadLibsvm of the result
// gives back an equal Dataset. Returns kUnavailable on I/O errors.
Status WriteLibsvm(const Dataset& data, const std::string& path);

}  // namespace pserver::linear
