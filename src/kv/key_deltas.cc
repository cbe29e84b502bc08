#include "kv/key_deltas.h"

#include <fmt/format.h>

#include <bit>

namespace pserver::kv {

namespace {

uint64_t ZigZag(uint64_t delta) {
  const auto d = static_cast<int64_t>(delta);
  return (static_cast<uint64_t>(d) << 1) ^ static_cast<uint64_t>(d >> 63);
}

uint64_t UnZigZag(uint64_t z) { return (z >> 1) ^ (~(z & 1) + 1); }

// 1 byte up to 7 bits, 2 up to 14, ... (branch-free: the size pass runs over every key sent).
size_t VarintSize(uint64_t v) { return (static_cast<size_t>(std::bit_width(v | 1)) + 6) / 7; }

}  // namespace

size_t KeyDeltasSize(std::span<const Key> keys) {
  size_t size = 0;
  Key prev = 0;
  for (Key k : keys) {
    size += VarintSize(ZigZag(k - prev));
    prev = k;
  }
  return size;
}

transport::Bytes EncodeKeyDeltas(std::span<const Key> keys) {
  transport::Bytes out = transport::Bytes::Uninitialized(KeyDeltasSize(keys));
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  Key prev = 0;
  for (Key k : keys) {
    uint64_t v = ZigZag(k - prev);
    prev = k;
    while (v >= 0x80) {
      *p++ = static_cast<uint8_t>(v | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<uint8_t>(v);
  }
  return out;
}

Result<SharedArray<Key>> DecodeKeyDeltas(std::span<const std::byte> in, size_t count) {
  // Every key takes a byte at least: a count beyond the input is refused before allocating.
  if (count > in.size()) {
    return Status::Corruption(fmt::format("{} bytes of key deltas cannot hold {} keys", in.size(), count));
  }
  SharedArray<Key> keys = SharedArray<Key>::Uninitialized(count);
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  const auto* end = p + in.size();
  Key prev = 0;
  for (size_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    if (p != end && (*p & 0x80) == 0) {  // the common one-byte delta
      v = *p++;
      prev += UnZigZag(v);
      keys[i] = prev;
      continue;
    }
    for (int shift = 0;; shift += 7) {
      if (p == end) return Status::Corruption(fmt::format("key delta {} of {} is cut short", i, count));
      const uint8_t b = *p++;
      if (shift == 63 && b > 1) {
        return Status::Corruption(fmt::format("key delta {} of {} is longer than 64 bits", i, count));
      }
      v |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0) break;
    }
    prev += UnZigZag(v);
    keys[i] = prev;
  }
  if (p != end) {
    return Status::Corruption(fmt::format("{} bytes left over after {} key deltas", end - p, count));
  }
  return keys;
}

}  // namespace pserver::kv
