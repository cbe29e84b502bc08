// A compact binary cache of a parsed Dataset, so that a second run does not parse text again.
//
// File format (version 1; little-endian; docs in this comment are the specification):
//   offset  0  char[8]  magic "PSLDATA\n"
//           8  uint32   version (1)
//          12  uint32   header size in bytes (64)
//          16  uint64   num_rows R
//          24  uint64   nnz E
//          32  uint64   num_features (max feature id + 1, or 0)
//          40  uint64   payload size in bytes (4R + 8(R+1) + 12E)
//          48  uint64   reserved (0)
//          56  uint64   checksum: XXH64 over bytes [0, 56) of the header, then chained (the
//                       previous hash as seed) over each payload array in order
//          64  payload  labels float[R], offsets uint64[R+1], feature ids uint64[E],
//                       values float[E]
// Files are written atomically (pserver/atomic_file.h: a temporary file in the same directory,
// fsync, rename, fsync of the directory), so a reader sees either the old file, the new one,
// or none, and a failed write leaves nothing behind.
//
// All functions are thread-safe (no shared state) and block on file I/O. Two processes may
// race to write the same cache file; the last rename wins and both files are complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "apps/linear/dataset.h"
#include "apps/linear/libsvm_reader.h"
#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::linear {

inline constexpr uint32_t kDataCacheVersion = 1;

// Writes `data` to `path` atomically. Returns kUnavailable (or kNotFound for a missing
// directory) on I/O errors; then `path` is unchanged and no temporary file is left behind.
Status WriteDataCache(const Dataset& data, const std::string& path);

// Reads a file written by WriteDataCache, exactly. Returns kNotFound if it does not exist,
// kUnavailable on other I/O errors, and kCorruption naming the file and what is wrong for a
// file that is truncated, too long, of another version, fails its checksum, or whose arrays
// break the Dataset invariants.
Result<Dataset> ReadDataCache(const std::string& path);

struct LoadedData {
  Dataset data;
  bool from_cache = false;  // true when read from the cache file, false when parsed
  std::string cache_path;   // the cache file used or written; empty without a cache_dir
  // Why the text was parsed although a cache file existed (e.g. it was corrupt); else empty.
  std::string note;
  // Why the cache could not be written (e.g. a full disk, or a cache directory that cannot be
  // created); the data was parsed and is complete. Empty when the cache was written or used.
  std::string warning;
};

// Returns part `part` of `num_parts` of the libsvm files `paths` (as ReadPart), from a cache
// file in `cache_dir` when one matches, else by parsing the text and then writing the cache.
// The cache file name is derived from the content of this part (XXH3-64 of the bytes that
// decide its lines -- its whole files, or its byte range with the byte before it and the rest
// of the line straddling its end, see PartSpans -- so each worker reads only its share once
// more to hash it) and from (part, num_parts), so a changed input or a different split never
// uses a stale cache, also when the input was rewritten in place with the same size and
// modification time. A cache file that cannot be
// read (corrupt, truncated, other version) is replaced (see LoadedData::note). An empty
// `cache_dir` disables caching; a missing one is created. A cache that cannot be written is
// no error: the parsed data is returned with LoadedData::warning saying why. Errors: those of
// reading the inputs (ReadPart's, and kNotFound / kUnavailable from hashing them).
Result<LoadedData> LoadOrParse(const std::vector<std::string>& paths, int part, int num_parts,
                               const std::string& cache_dir, const LibsvmReadOptions& options = {});

}  // namespace pserver::linear
