// How a table's key becomes a routing key, the position on the ring (cluster/ring.h) that
// decides which server holds it.
//
// Dense small ids (0, 1, 2, ...) must spread over all servers, so a key is never routed as is
// unless the table asks for it. A table either has its keys mixed by a bijective hash (kHashed,
// the default) or declares the range its keys come from, which is then stretched over the whole
// ring in key order (kRange). kIdentity routes the key itself, for keys that are already
// uniformly spread. Every map here is a bijection onto its image, so distinct keys never share
// a routing key, and kRange and kIdentity keep key order, so a sorted request stays sorted.
#pragma once

#include <cstdint>
#include <limits>

#include "pserver/types.h"

namespace pserver::cluster {

// MixKey's multipliers (odd, so that each step can be undone: see UnmixKey).
inline constexpr uint64_t kMixMultiplier1 = 0xff51afd7ed558ccdULL;
inline constexpr uint64_t kMixMultiplier2 = 0xc4ceb9fe1a85ec53ULL;

// A bijective 64-bit mix (the murmur3 64-bit finalizer): dense inputs land spread over the
// whole 64-bit space. Deterministic across runs and machines. In the header: the worker mixes
// every key of a hashed request.
constexpr uint64_t MixKey(Key k) {
  k ^= k >> 33;
  k *= kMixMultiplier1;
  k ^= k >> 33;
  k *= kMixMultiplier2;
  k ^= k >> 33;
  return k;
}

// The exact inverse of MixKey: UnmixKey(MixKey(k)) == k and MixKey(UnmixKey(m)) == m.
Key UnmixKey(uint64_t m);

// Maps `declared` onto the whole 64-bit space, keeping order:
//   ScaleKey(k) = floor((k - first) * 2^64 / size),  size = last - first + 1 (up to 2^64).
// The slope 2^64 / size is at least 1, so the map is strictly increasing (injective); the first
// key maps to 0, consecutive keys land floor(2^64 / size) or one more apart, and the last key
// lands at least 2^64 - 2^64 / size - 1, so keys spread over the whole ring. The full range maps
// every key to itself; a single-key range maps its key to 0.
// REQUIRES: declared.Contains(k).
uint64_t ScaleKey(Key k, KeyRange declared);

// ScaleKey for one declared range with its constants computed once (one 128-bit division), so
// that each key then costs a few multiplications. Immutable, copyable value type.
class RangeScale {
 public:
  // REQUIRES: declared.first <= declared.last.
  explicit RangeScale(KeyRange declared);

  // ScaleKey(k, declared). REQUIRES: declared.Contains(k).
  uint64_t operator()(Key k) const;

 private:
  Key first_;
  uint64_t size_;       // last - first + 1; 0 stands for 2^64 (the full range)
  uint64_t stride_;     // floor(2^64 / size); 1 for the full range, 0 for a single key
  uint64_t remainder_;  // 2^64 mod size
  uint64_t fraction_;   // floor(remainder * 2^64 / size): remainder / size in 0.64 fixed point
};

enum class PlacementKind : uint8_t {
  kHashed = 0,    // routing key = MixKey(k); any key is allowed
  kRange = 1,     // routing key = ScaleKey(k, range); keys must lie in range
  kIdentity = 2,  // routing key = k
};

// A table's placement: its kind and, for kRange, the declared key range.
struct Placement {
  PlacementKind kind = PlacementKind::kHashed;
  KeyRange range{0, std::numeric_limits<uint64_t>::max()};  // used by kRange only
  friend bool operator==(const Placement&, const Placement&) = default;
};

// The routing key of `k` under `placement`. REQUIRES: for kRange, placement.range.Contains(k)
// (the slicer checks this and refuses the request otherwise). For kRange each call pays
// RangeScale's division; a loop over many keys of one table should build one RangeScale.
uint64_t RoutingKey(const Placement& placement, Key k);

}  // namespace pserver::cluster
