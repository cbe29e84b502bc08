#include "cluster/key_placement.h"

#include <cassert>

namespace pserver::cluster {
namespace {

// 64 x 64 -> 128-bit products, and one 128-bit division per declared range.
__extension__ typedef unsigned __int128 Uint128;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// The inverse of odd `a` modulo 2^64 by Newton's iteration: x = a is right to 3 bits and each
// step doubles the correct bits (3, 6, 12, 24, 48, 96).
constexpr uint64_t InverseMod64(uint64_t a) {
  uint64_t x = a;
  for (int i = 0; i < 5; ++i) x *= 2 - a * x;
  return x;
}

constexpr uint64_t kUnmix1 = InverseMod64(kMixMultiplier1);
constexpr uint64_t kUnmix2 = InverseMod64(kMixMultiplier2);
static_assert(kMixMultiplier1 * kUnmix1 == 1 && kMixMultiplier2 * kUnmix2 == 1);

}  // namespace

Key UnmixKey(uint64_t m) {
  // x ^= x >> 33 is its own inverse because 2 * 33 >= 64.
  m ^= m >> 33;
  m *= kUnmix2;
  m ^= m >> 33;
  m *= kUnmix1;
  m ^= m >> 33;
  return m;
}

RangeScale::RangeScale(KeyRange declared) : first_(declared.first) {
  assert(declared.first <= declared.last);
  size_ = declared.last - declared.first + 1;  // wraps to 0 for the full range
  if (size_ <= 1) {  // the full range is the identity; a single key maps to 0
    stride_ = size_ == 0 ? 1 : 0;
    remainder_ = fraction_ = 0;
    return;
  }
  // 2^64 = stride * size + remainder, computed from 2^64 - 1 without overflow.
  stride_ = kMax / size_;
  remainder_ = kMax % size_ + 1;
  if (remainder_ == size_) {
    ++stride_;
    remainder_ = 0;
  }
  fraction_ = static_cast<uint64_t>((Uint128{remainder_} << 64) / size_);
}

uint64_t RangeScale::operator()(Key k) const {
  // d * 2^64 / size = d * stride + d * remainder / size. The second term's floor t is found from
  // the fixed-point fraction, which may make it one too small; one exact 128-bit comparison
  // corrects that. The sum is the exact floor, at most (size - 1) * 2^64 / size < 2^64.
  const uint64_t d = k - first_;
  if (remainder_ == 0) return d * stride_;
  uint64_t t = static_cast<uint64_t>((Uint128{d} * fraction_) >> 64);
  if (Uint128{t + 1} * size_ <= Uint128{d} * remainder_) ++t;
  return d * stride_ + t;
}

uint64_t ScaleKey(Key k, KeyRange declared) {
  assert(declared.Contains(k));
  return RangeScale(declared)(k);
}

uint64_t RoutingKey(const Placement& placement, Key k) {
  switch (placement.kind) {
    case PlacementKind::kHashed: return MixKey(k);
    case PlacementKind::kRange: return ScaleKey(k, placement.range);
    case PlacementKind::kIdentity: return k;
  }
  return MixKey(k);
}

}  // namespace pserver::cluster
