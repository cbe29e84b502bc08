// The lossless filters "zstd" and "lz4" (docs/filters.md): each payload frame of at least
// `min_bytes` bytes is compressed, and kept so only when that makes it smaller. The keys of a
// request (frame 0, sorted) are first written as deltas (kv/key_deltas.h): consecutive ids take a
// byte each before the compressor sees them.
//
// A changed frame holds, little-endian: for the keys of a request, the number of keys (u64) and
// the deltas' length in bytes (u64); for any other frame, its length in bytes (u64); then the
// XXH64 checksum of the frame as it was (u64: compressors check their format, not the data, so a
// damaged byte could otherwise decode to a wrong value); then the compressor's output (a
// Zstandard frame, or an LZ4 block). Decode refuses (kCorruption) a frame shorter than its prefix,
// a size above 2 GiB, output that does not decompress to exactly the stated size, deltas that do
// not decode to the stated number of keys, and a checksum that does not match.
//
// Thread safety: thread-safe (compression contexts are per thread).
#pragma once

#include <cstddef>
#include <memory>

#include "kv/filter/filter.h"

namespace pserver::kv {

enum class Codec : uint8_t { kZstd, kLz4 };

// The filter for `spec` (its name "zstd" or "lz4"); kInvalidArgument for an unknown param or a
// value out of range (level 1..19, zstd only; min_bytes >= 0).
Result<std::shared_ptr<const Filter>> MakeCompressFilter(Codec codec, const FilterSpec& spec);

}  // namespace pserver::kv
