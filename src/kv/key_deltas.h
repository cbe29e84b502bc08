// Keys as deltas: a compact, lossless form of key arrays that are sorted or made of sorted runs
// (a push's keys; several pushes one after the other). Each key is written as the difference
// from the key before it (the first from 0), two's-complement wrapping, zigzag-mapped so that a
// step down between runs stays small, as an unsigned LEB128 varint (7 bits a byte, low bits
// first, the high bit set on every byte but the last; at most 10 bytes).
//
// Consecutive feature ids take one byte a key instead of eight; random 64-bit keys take about as
// many bytes as raw ones (KeyDeltasSize tells before encoding). Server-to-server replication
// uses it (docs/wire_format.md, kReplicate).
//
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <span>

#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/types.h"
#include "transport/message.h"

namespace pserver::kv {

// The bytes EncodeKeyDeltas(keys) takes.
size_t KeyDeltasSize(std::span<const Key> keys);
transport::Bytes EncodeKeyDeltas(std::span<const Key> keys);
// Exactly `count` keys from `in`; kCorruption, naming what was wrong, for a varint cut short or
// longer than 10 bytes (or past 64 bits), fewer keys than `count`, or bytes left over.
Result<SharedArray<Key>> DecodeKeyDeltas(std::span<const std::byte> in, size_t count);

}  // namespace pserver::kv
