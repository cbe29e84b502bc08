// SparseRows<T>: an open-addressing hash table from 64-bit keys to fixed-length rows of T, made
// for huge, sparse key spaces where a stored parameter must cost little more than its bytes.
//
// Layout. Two parallel arrays: one uint64 per slot and one row of `row_len` T per slot (a table
// row: its values, then its update rule's state). A slot holds not the key but MixKey(key), a
// bijective 64-bit mix of it, so the key is recovered with UnmixKey and no hash is ever
// recomputed. A key's home slot is the mix's multiply-shift range reduction into the capacity
// (any capacity, not only powers of two); collisions probe linearly. The slots are kept sorted
// by mix (ordered linear probing, i.e. Robin Hood with linear probing), which gives four things:
//   * the empty marker is the mix 2^64-1: a lookup's slot is the first from the home on whose
//     mix is not below the key's, which an empty slot always is; the one key whose mix is
//     2^64-1 lives in a side slot, so every key value can be stored;
//   * the slots below a key's mix form a prefix of its probe window, so a lookup counts them
//     among the home's first 8 slots instead of branching on each (see Position): lookups of
//     random keys then overlap their cache misses, with Prefetch issued some keys ahead;
//   * an absent key is found absent as fast as a present one is found (the scan stops at the
//     first larger mix), so a high load factor stays cheap;
//   * every key sits at max(its home, the previous key's slot + 1), so placing the keys for a
//     larger capacity moves each one to a slot at or after its current one (homes only move
//     up as the capacity grows): growing works in place (see below).
// Probing never wraps around: the arrays have a small tail past the capacity, whose last slot
// stays empty as the sentinel; a table whose probe would run past it grows.
//
// Growth in place, never a copy of the table. Arrays of 16 KiB and more are anonymous mappings
// of their own (mmap), each one kernel mapping. To grow, the kernel moves and extends each array
// in one step (mremap into an aligned range reserved for it: the pages change address, no byte
// is copied, and no second copy of the table is ever resident); then the keys are placed for the
// new capacity from the last to the first, each to a slot at or after its own, so nothing is
// overwritten before it has moved. The process's memory while growing is therefore the new
// table's only: its peak is the size it grows to, not the old and the new arrays together. A
// growth costs three passes over the slots (a check that every key fits, then one chunk at a
// time: its new slots, and the moves) and holds the table for their time: 1.1 to 1.5 s per
// 100 M keys on the development machine. Memory freed by an erase stays with the table; memory
// of a dropped table goes back to the system at once (unmapped, not kept in the allocator's
// heap).
//
// Memory: (8 + row_len * sizeof(T)) bytes per slot. Growing in place costs no memory, so the
// table grows in small steps. Narrow rows (at most 16 bytes) keep the load between 0.795 and
// 0.875 (growth by 1.1x): a width-1 float row costs 13.7 to 15.1 bytes, tails included. Wider
// rows keep the load between 0.6 and 0.75 (growth 1.25x) because an insert shifts the rest of
// its probe run by one slot, and that costs more with wide rows. (A Reserve, or a probe run
// past the tail, grows the table outside these bounds.)
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
// Frees what AllocateArray (sparse_rows.cc) allocated: `bytes` from an aligned operator new, or
// a mapping of them.
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
    if (mix != kEmpty && slots_ != 0) {
      const size_t i = Position(mix);
      if (mixes_[i] == mix) return {Row(i), false};
    }
    return Insert(mix);
  }
  T* FindMixed(uint64_t mix) { return const_cast<T*>(std::as_const(*this).FindMixed(mix)); }
  const T* FindMixed(uint64_t mix) const {
    if (mix == kEmpty) return has_max_ ? max_row_.data() : nullptr;
    if (slots_ == 0) return nullptr;
    const size_t i = Position(mix);
    return mixes_[i] == mix ? Row(i) : nullptr;
  }
  // Hints the CPU to load the cache lines a lookup of `mix` reads (most of the time): the
  // probe window's mixes and the home slot's row. Issued some keys ahead of the lookups of a
  // batch of random keys, it lets their cache misses overlap.
  void Prefetch(uint64_t mix) const {
    if (slots_ == 0) return;
    const size_t home = Home(mix);
    sparse_rows_internal::PrefetchLine(&mixes_[home]);
    sparse_rows_internal::PrefetchLine(&mixes_[home + kWindow - 1]);
    sparse_rows_internal::PrefetchLine(Row(home));
  }

  // Makes room for `n` keys in all without further growth.
  void Reserve(size_t n);

  // Calls fn(key, row) for every stored key, in an unspecified but deterministic order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    if (has_max_) fn(UnmixKey(kEmpty), static_cast<const T*>(max_row_.data()));
    for (size_t i = 0; i < slots_; ++i) {
      if (mixes_[i] != kEmpty) fn(UnmixKey(mixes_[i]), static_cast<const T*>(rows_.get() + i * row_len_));
    }
  }

  // Removes every stored key for which pred(key) is true and returns how many were removed.
  // One pass over the slots; the memory is kept (the table does not shrink). Like an insertion,
  // it may move the rows of the keys kept.
  template <typename Pred>
  size_t EraseIf(Pred&& pred);

  size_t size() const { return size_; }
  uint32_t row_len() const { return row_len_; }
  // Slots the keys are spread over (excluding the tail); size() / capacity() is the load.
  size_t capacity() const { return capacity_; }
  // Bytes held by the table: both arrays including the tail, the side slot and the object.
  size_t memory_bytes() const;

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  // Slots a lookup compares without branching (the tail holds more, so they all exist).
  static constexpr size_t kWindow = 8;

  // FindOrInsertMixed's slow path: the special key, the first key, or an insert.
  Slot Insert(uint64_t mix);

  // The first slot from `mix`'s home on whose mix is not below `mix`: where `mix` is stored if
  // it is. REQUIRES: slots_ != 0. The slots from the home on that hold smaller mixes are a
  // prefix of the run (a smaller mix there has its home at or before ours and its whole probe
  // run is occupied), so counting them in the first kWindow slots finds the slot without a
  // data-dependent branch -- a mispredicted one per lookup would end the overlap of the cache
  // misses of consecutive lookups. Longer runs (rare) continue with a scan.
  size_t Position(uint64_t mix) const {
    const size_t home = Home(mix);
    const uint64_t* p = &mixes_[home];
    size_t below = 0;
    for (size_t j = 0; j < kWindow; ++j) below += p[j] < mix ? 1 : 0;
    if (below < kWindow) [[likely]] return home + below;
    size_t i = home + kWindow;
    while (mixes_[i] < mix) ++i;  // stops at the latest at the empty sentinel
    return i;
  }
  size_t Home(uint64_t mix) const { return HomeFor(mix, capacity_); }
  // The home slot of `mix` in a table of `capacity` home slots: monotone in the mix, and in the
  // capacity.
  static size_t HomeFor(uint64_t mix, size_t capacity) {
    return static_cast<size_t>((static_cast<sparse_rows_internal::Uint128>(mix) * capacity) >> 64);
  }
  T* Row(size_t slot) const { return rows_.get() + slot * row_len_; }
  // Regrows to hold at least `keys` keys at the maximal load; at least a `factor` larger.
  void Grow(size_t keys, double factor);
  // Places the keys for `capacity` home slots, in place (see the header comment); false, with
  // nothing changed, if a probe run would pass the new tail.
  bool Rebuild(size_t capacity);

  uint32_t row_len_;
  double max_load_;
  double growth_;
  size_t capacity_ = 0;  // home slots
  size_t slots_ = 0;     // capacity_ + tail; 0 before the first insertion
  size_t size_ = 0;      // keys stored, the side slot included
  // Arrays of 2 MiB and more are 2 MiB-aligned and advised to use transparent huge pages:
  // random lookups in a large table otherwise spend much of their time on TLB misses.
  std::unique_ptr<uint64_t[], sparse_rows_internal::ArrayDelete> mixes_;
  std::unique_ptr<T[], sparse_rows_internal::ArrayDelete> rows_;
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
  // Each kept key moves to max(home, previous kept + 1), as keys are always placed: never later
  // than where it was (its home is not after it, nor is the slot after the previous kept key),
  // and every slot between that and its old one is empty by then, so the slots stay sorted with
  // gap-free runs.
  size_t next = 0;
  for (size_t i = 0; i < slots_; ++i) {
    const uint64_t mix = mixes_[i];
    if (mix == kEmpty) continue;
    if (pred(UnmixKey(mix))) {
      mixes_[i] = kEmpty;
      ++erased;
      continue;
    }
    const size_t pos = std::max(Home(mix), next);
    if (pos != i) {
      mixes_[pos] = mix;
      mixes_[i] = kEmpty;
      std::memcpy(Row(pos), Row(i), size_t{row_len_} * sizeof(T));
    }
    next = pos + 1;
  }
  size_ -= erased;
  return erased;
}

extern template class SparseRows<float>;
extern template class SparseRows<double>;
extern template class SparseRows<int32_t>;
extern template class SparseRows<int64_t>;

}  // namespace pserver::kv
