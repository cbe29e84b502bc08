// SparseRows<T>: an open-addressing hash table from 64-bit keys to fixed-length rows of T, made
// for huge, sparse key spaces where a stored parameter must cost little more than its bytes.
//
// Layout. Two parallel arrays: one uint64 per slot and one row of `row_len` T per slot (a table
// row: its values, then its update rule's state). A slot holds not the key but MixKey(key), a
// bijective 64-bit mix of it, so the key is recovered with UnmixKey and no hash is ever
// recomputed. A key's home slot is the mix's multiply-shift range reduction into the capacity
// (any capacity, not only powers of two); collisions probe linearly. The slots are kept sorted
// by mix (ordered linear probing, i.e. Robin Hood with linear probing), which gives three things:
//   * the empty marker is the mix 2^64-1: a lookup's slot is the first from the home on whose
//     mix is not below the key's, which an empty slot always is; the one key whose mix is
//     2^64-1 lives in a side slot, so every key value can be stored;
//   * the slots below a key's mix form a prefix of its probe window, so a lookup counts them
//     among the home's first 8 slots instead of branching on each (see Position): lookups of
//     random keys then overlap their cache misses, with Prefetch issued some keys ahead;
//   * an absent key is found absent as fast as a present one is found (the scan stops at the
//     first larger mix), so a high load factor stays cheap;
//   * growing is one linear pass that copies the slots in order, without probing.
// Probing never wraps around: the arrays have a small tail past the capacity, whose last slot
// stays empty as the sentinel; a table whose probe would run past it grows.
//
// Growth in small steps. A table of more than kSplitKeys keys is split, once, into 64
// segments by the top 6 bits of the mix, and from then on each segment grows on its own (a
// segment is a table as above: its homes are the range reduction of the mix's remaining bits).
// So a growth copies 1/64 of the table, not all of it: the old and the new arrays are both
// alive only for that segment. And the segments grow out of step: at the split, segment i is
// given room for g^(i/64) times its keys over the maximal load (g the growth factor), so
// their loads are spread evenly over one growth cycle and the whole table's load stays near
// the cycle's mean at every size, instead of swinging between max/g and max as one table does.
//
// Memory: (8 + row_len * sizeof(T)) bytes per slot. Narrow rows (at most 16 bytes) keep each
// segment's load between 0.7 and 0.875 (growth by 1.25x), a mean of 0.78: a width-1 float row
// costs about 15.4 bytes, tails included. Wider rows keep the load between 0.5 and 0.75
// (growth 1.5x) because an insert shifts the rest of its probe run by one slot, and that costs
// more with wide rows. A segment's arrays of 16 KiB and more are mapped directly (mmap), so the
// memory a growth frees goes back to the system at once instead of staying, fragmented, in the
// allocator's heap.
//
// Thread safety: thread-compatible. Const methods may run concurrently with each other; any
// non-const call needs exclusive access.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <utility>
#include <vector>

#include "pserver/types.h"

namespace pserver::kv {

// A bijective 64-bit mix of a key and its inverse: Stafford's "Mix13" variant of the
// MurmurHash3 finaliser. Deliberately NOT the routing mix (cluster/key_placement.h, the
// MurmurHash3 finaliser itself): a server owns a contiguous range of routing positions, and
// a storage hash equal to the routing hash would crowd all of its keys into a fraction of the
// table's home slots.
constexpr uint64_t MixKey(Key key) {
  uint64_t x = key;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

namespace sparse_rows_internal {
// Frees what AllocateBytes (sparse_rows.cc) allocated: an aligned operator new, or a mapping
// of `bytes` bytes.
struct ArrayDelete {
  size_t bytes = 0;
  bool mapped = false;
  void operator()(void* p) const;
};
__extension__ typedef unsigned __int128 Uint128;  // __extension__: no -Wpedantic warning
// The inverse of an odd number modulo 2^64 (Newton's iteration: 3 -> 6 -> ... -> 96 bits).
constexpr uint64_t InverseMod64(uint64_t a) {
  uint64_t y = a;
  for (int i = 0; i < 5; ++i) y *= 2 - a * y;
  return y;
}
}  // namespace sparse_rows_internal

namespace sparse_rows_internal {
// Hints the CPU to load the cache line of `p` (which must point into an object). Not
// __builtin_prefetch on x86: GCC 12 at -O2 drops a __builtin_prefetch that sits under a
// condition (such as Prefetch's), leaving the lookups without any; asm volatile stays.
inline void PrefetchLine(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

// The inverse of x ^= x >> shift.
constexpr uint64_t UnXorShift(uint64_t y, int shift) {
  uint64_t x = y;
  for (int s = shift; s < 64; s += shift) x = y ^ (x >> shift);
  return x;
}
}  // namespace sparse_rows_internal

constexpr Key UnmixKey(uint64_t x) {
  using sparse_rows_internal::InverseMod64;
  using sparse_rows_internal::UnXorShift;
  x = UnXorShift(x, 31);
  x *= InverseMod64(0x94d049bb133111ebULL);
  x = UnXorShift(x, 27);
  x *= InverseMod64(0xbf58476d1ce4e5b9ULL);
  x = UnXorShift(x, 30);
  return x;
}

template <typename T>
class SparseRows {
 public:
  struct Slot {
    T* row;         // the key's row_len() values
    bool inserted;  // true: the key was not stored before and its row is uninitialised
  };

  // An empty table of rows of `row_len` values. REQUIRES: row_len >= 1.
  explicit SparseRows(uint32_t row_len);

  SparseRows(const SparseRows&) = delete;
  SparseRows& operator=(const SparseRows&) = delete;
  SparseRows(SparseRows&&) noexcept = default;
  SparseRows& operator=(SparseRows&&) noexcept = default;

  // The row of `key`, inserting the key first if absent (its row is then uninitialised: the
  // caller fills it). The returned pointer, and every pointer returned before, stays valid only
  // until the next insertion.
  Slot FindOrInsert(Key key) { return FindOrInsertMixed(MixKey(key)); }
  // The row of `key`, or nullptr if the key is not stored.
  T* Find(Key key) { return const_cast<T*>(FindMixed(MixKey(key))); }
  const T* Find(Key key) const { return FindMixed(MixKey(key)); }

  // The same, given mix = MixKey(key) already computed by the caller.
  // The hit (the common case of a push to a stored key) is inline; inserts are out of line.
  Slot FindOrInsertMixed(uint64_t mix) {
    if (mix != kEmpty) {
      const Segment& s = segments_[SegmentOf(mix)];
      if (s.slots != 0) {
        const size_t i = Position(s, mix);
        if (s.mixes[i] == mix) return {Row(s, i), false};
      }
    }
    return Insert(mix);
  }
  T* FindMixed(uint64_t mix) { return const_cast<T*>(std::as_const(*this).FindMixed(mix)); }
  const T* FindMixed(uint64_t mix) const {
    if (mix == kEmpty) return has_max_ ? max_row_.data() : nullptr;
    const Segment& s = segments_[SegmentOf(mix)];
    if (s.slots == 0) return nullptr;
    const size_t i = Position(s, mix);
    return s.mixes[i] == mix ? Row(s, i) : nullptr;
  }
  // Hints the CPU to load the cache lines a lookup of `mix` reads (most of the time): the
  // probe window's mixes and the home slot's row. Issued some keys ahead of the lookups of a
  // batch of random keys, it lets their cache misses overlap.
  void Prefetch(uint64_t mix) const {
    const Segment& s = segments_[SegmentOf(mix)];
    if (s.slots == 0) return;
    const size_t home = Home(s, mix);
    sparse_rows_internal::PrefetchLine(&s.mixes[home]);
    sparse_rows_internal::PrefetchLine(&s.mixes[home + kWindow - 1]);
    sparse_rows_internal::PrefetchLine(Row(s, home));
  }

  // Makes room for about `n` keys in all without further growth (exactly so below
  // kSplitKeys; above, each segment gets room for its share with some slack).
  void Reserve(size_t n);

  // Calls fn(key, row) for every stored key, in an unspecified but deterministic order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    if (has_max_) fn(UnmixKey(kEmpty), static_cast<const T*>(max_row_.data()));
    for (const Segment& s : segments_) {
      for (size_t i = 0; i < s.slots; ++i) {
        if (s.mixes[i] != kEmpty) fn(UnmixKey(s.mixes[i]), static_cast<const T*>(Row(s, i)));
      }
    }
  }

  // Removes every stored key for which pred(key) is true and returns how many were removed.
  // One pass over the slots; the memory is kept (the table does not shrink). Like an insertion,
  // it may move the rows of the keys kept.
  template <typename Pred>
  size_t EraseIf(Pred&& pred);

  size_t size() const { return size_; }
  uint32_t row_len() const { return row_len_; }
  // Home slots the keys are spread over, all segments together (tails excluded); size() /
  // capacity() is the load.
  size_t capacity() const;
  // Segments the table is split into: 1, or kSegments once it has held more than kSplitKeys.
  size_t segments() const { return segments_.size(); }
  // Bytes held by the table: every segment's arrays including their tails, the segment list,
  // the side slot and the object.
  size_t memory_bytes() const;

  // A table splits into kSegments segments when it outgrows kSplitKeys keys.
  static constexpr int kSegmentBits = 6;
  static constexpr size_t kSegments = size_t{1} << kSegmentBits;
  static constexpr size_t kSplitKeys = kSegments * 2048;

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  // Slots a lookup compares without branching (the tail holds more, so they all exist).
  static constexpr size_t kWindow = 8;

  // The keys whose mixes share the top segment_bits_ bits, in a table of their own. Its two
  // arrays share one allocation: the slots' mixes, then (64-byte aligned) their rows.
  struct Segment {
    size_t capacity = 0;  // home slots
    size_t slots = 0;     // capacity + tail; 0 before the segment's first key
    size_t size = 0;      // keys stored here (the side slot's is not)
    uint64_t* mixes = nullptr;
    T* rows = nullptr;
    std::unique_ptr<std::byte[], sparse_rows_internal::ArrayDelete> memory;
  };

  // FindOrInsertMixed's slow path: the special key, a segment's first key, or an insert.
  Slot Insert(uint64_t mix);

  // The segment of `mix`: its top segment_bits_ bits (0 while the table is whole).
  size_t SegmentOf(uint64_t mix) const { return static_cast<size_t>((mix >> 1) >> (63 - segment_bits_)); }
  // The home slot of `mix` in its segment `s`: the range reduction of the mix's bits below the
  // segment's into the segment's capacity, so homes are monotone in the mix within a segment.
  size_t Home(const Segment& s, uint64_t mix) const { return HomeIn(s.capacity, mix); }
  size_t HomeIn(size_t capacity, uint64_t mix) const {
    return static_cast<size_t>((static_cast<sparse_rows_internal::Uint128>(mix << segment_bits_) * capacity) >> 64);
  }
  // The first slot from `mix`'s home on whose mix is not below `mix`: where `mix` is stored if
  // it is. REQUIRES: s.slots != 0. The slots from the home on that hold smaller mixes are a
  // prefix of the run (a smaller mix there has its home at or before ours and its whole probe
  // run is occupied), so counting them in the first kWindow slots finds the slot without a
  // data-dependent branch -- a mispredicted one per lookup would end the overlap of the cache
  // misses of consecutive lookups. Longer runs (rare) continue with a scan.
  size_t Position(const Segment& s, uint64_t mix) const {
    const size_t home = Home(s, mix);
    const uint64_t* p = &s.mixes[home];
    size_t below = 0;
    for (size_t j = 0; j < kWindow; ++j) below += p[j] < mix ? 1 : 0;
    if (below < kWindow) [[likely]] return home + below;
    size_t i = home + kWindow;
    while (s.mixes[i] < mix) ++i;  // stops at the latest at the empty sentinel
    return i;
  }
  T* Row(const Segment& s, size_t slot) const { return s.rows + slot * row_len_; }
  // Regrows `s` to hold at least `keys` keys at the maximal load; at least a `factor` larger.
  void Grow(Segment& s, size_t keys, double factor);
  // Splits the whole table into kSegments segments, each given room for max(its keys,
  // `min_keys`) keys at the maximal load times `stagger`^(i / kSegments) for segment i.
  void Split(size_t min_keys, double stagger);
  // Builds `to` with `capacity` home slots from the keys of from.mixes[first, end), which
  // all belong to `to`; false (and `to` unchanged) if a probe run would pass the tail.
  bool Fill(Segment& to, size_t capacity, const Segment& from, size_t first, size_t end) const;

  uint32_t row_len_;
  double max_load_;
  double growth_;
  int segment_bits_ = 0;
  size_t size_ = 0;  // keys stored, the side slot included
  // 1 segment, or kSegments. Allocations of 2 MiB and more are 2 MiB-aligned and advised to use
  // transparent huge pages: random lookups in a large table otherwise spend much of their time
  // on TLB misses.
  std::vector<Segment> segments_;
  bool has_max_ = false;  // the key whose mix is kEmpty is stored, in max_row_
  std::vector<T> max_row_;
};

template <typename T>
template <typename Pred>
size_t SparseRows<T>::EraseIf(Pred&& pred) {
  size_t erased = 0;
  if (has_max_ && pred(UnmixKey(kEmpty))) {
    has_max_ = false;
    max_row_.clear();
    ++erased;
  }
  // Each kept key moves to max(home, previous kept + 1), as Fill places them: never later
  // than where it was (its home is not after it, nor is the slot after the previous kept key),
  // and every slot between that and its old one is empty by then, so the slots stay sorted with
  // gap-free runs.
  for (Segment& s : segments_) {
    size_t next = 0;
    for (size_t i = 0; i < s.slots; ++i) {
      const uint64_t mix = s.mixes[i];
      if (mix == kEmpty) continue;
      if (pred(UnmixKey(mix))) {
        s.mixes[i] = kEmpty;
        --s.size;
        ++erased;
        continue;
      }
      const size_t pos = std::max(Home(s, mix), next);
      if (pos != i) {
        s.mixes[pos] = mix;
        s.mixes[i] = kEmpty;
        std::memcpy(Row(s, pos), Row(s, i), size_t{row_len_} * sizeof(T));
      }
      next = pos + 1;
    }
  }
  size_ -= erased;
  return erased;
}

extern template class SparseRows<float>;
extern template class SparseRows<double>;
extern template class SparseRows<int32_t>;
extern template class SparseRows<int64_t>;

}  // namespace pserver::kv
