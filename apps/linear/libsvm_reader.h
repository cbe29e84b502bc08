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
// Files are read in chunks (LibsvmReadOptions::chunk_bytes), so the reader needs memory for
// the parsed Dataset plus one chunk, whatever the file size. All functions are thread-safe
// (no shared state) and block on file I/O.
//
// Errors of every function here: kNotFound when a file does not exist, kUnavailable for other
// I/O errors (the message names the file and the system error), kCorruption for malformed text.
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
  // Bytes read from a file at a time. A line longer than this grows the buffer.
  size_t chunk_bytes = size_t{16} << 20;
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
// A part may be empty. REQUIRES nothing: bad arguments give kInvalidArgument
// (no paths, num_parts < 1, part outside [0, num_parts)).
Result<Dataset> ReadPart(const std::vector<std::string>& paths, int part, int num_parts,
                         const LibsvmReadOptions& options = {});

// Appends one row in libsvm text (label "+1" or "-1", 1-based indices, values in the
// shortest form that reads back to the same float) and a '\n' to `out`.
void AppendLibsvmRow(const RowView& row, std::string* out);

// Writes `data` as libsvm text to `path` (created or truncated). ReadLibsvm of the result
// gives back an equal Dataset. Returns kUnavailable on I/O errors.
Status WriteLibsvm(const Dataset& data, const std::string& path);

}  // namespace pserver::linear
