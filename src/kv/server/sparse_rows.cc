#include "kv/server/sparse_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include <sys/mman.h>

namespace pserver::kv {

namespace {

constexpr size_t kMinCapacity = 16;
constexpr size_t kNarrowRowBytes = 16;

// Slots past the capacity: enough for the probe runs of a table at its maximal load (runs
// longer than this are rare; one makes the table grow early), and at least a lookup's window.
constexpr size_t kMinTailSlots = 64;
size_t TailSlots(size_t capacity) { return kMinTailSlots + capacity / 1024; }

constexpr size_t kPage = 4096;
constexpr size_t kHugePage = size_t{2} << 20;
// Arrays from this size on are mappings of their own rather than taken from the allocator's heap.
constexpr size_t kMapMinBytes = size_t{16} << 10;

size_t PageRound(size_t bytes) { return (bytes + kPage - 1) & ~(kPage - 1); }

// The alignment of a mapping of `bytes`: 2 MiB from 2 MiB on (such mappings are advised to use
// huge pages, when the kernel allows: random lookups in a large table otherwise spend much of
// their time on TLB misses), a page otherwise.
size_t AlignmentFor(size_t bytes) { return bytes >= kHugePage ? kHugePage : kPage; }

// An aligned range of PageRound(bytes) (AlignmentFor), mapped with `prot` and `flags` (private,
// anonymous); nullptr if there is no room.
void* MapRange(size_t bytes, int prot, int flags) {
  const size_t alignment = AlignmentFor(bytes);
  const size_t length = PageRound(bytes);
  const size_t mapped = alignment == kPage ? length : length + alignment;
  void* m = mmap(nullptr, mapped, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  // Keep the aligned part and give back what is before and after it.
  const auto base = reinterpret_cast<uintptr_t>(m);
  const uintptr_t begin = (base + alignment - 1) & ~(uintptr_t{alignment} - 1);
  if (begin > base) munmap(m, begin - base);
  if (base + mapped > begin + length) munmap(reinterpret_cast<void*>(begin + length), base + mapped - begin - length);
  return reinterpret_cast<void*>(begin);
}

void AdviseHugePages(void* p, size_t bytes) {
  if (AlignmentFor(bytes) == kHugePage) madvise(p, PageRound(bytes), MADV_HUGEPAGE);  // a hint: failure is harmless
}

template <typename U>
using Array = std::unique_ptr<U[], sparse_rows_internal::ArrayDelete>;

// n uninitialised elements: from kMapMinBytes on a mapping of their own (one kernel mapping, so
// that it can grow in place and goes back to the system when freed); below, from operator new.
// Throws std::bad_alloc when there is no memory, as operator new does.
template <typename U>
Array<U> AllocateArray(size_t n) {
  const size_t bytes = std::max<size_t>(n * sizeof(U), 1);
  if (bytes < kMapMinBytes) return Array<U>(static_cast<U*>(::operator new(bytes, std::align_val_t{64})), {bytes, false});
  void* p = MapRange(bytes, PROT_READ | PROT_WRITE, 0);
  if (p == nullptr) throw std::bad_alloc();
  AdviseHugePages(p, bytes);
  return Array<U>(static_cast<U*>(p), {bytes, true});
}

// Makes `a` (of `old_n` elements) hold `new_n` elements, the first old_n kept; nothing if it
// already holds as many. A mapped array is moved and extended by the kernel in one step
// (mremap into an aligned range reserved for it: its pages change address, no byte is copied,
// they are never resident twice, and it stays one mapping); a small one is copied. Throws
// std::bad_alloc, with `a` unchanged, when there is no memory or address space.
template <typename U>
void Enlarge(Array<U>& a, size_t old_n, size_t new_n) {
  const size_t new_bytes = new_n * sizeof(U);
  if (a && a.get_deleter().bytes >= new_bytes) return;  // an earlier, interrupted growth made it
  if (a && a.get_deleter().mapped) {
    // Reserved, not committed: only the moved pages and those touched later take memory.
    void* range = MapRange(new_bytes, PROT_NONE, MAP_NORESERVE);
    if (range == nullptr) throw std::bad_alloc();
    void* at = mremap(a.get(), PageRound(a.get_deleter().bytes), PageRound(new_bytes), MREMAP_MAYMOVE | MREMAP_FIXED,
                      range);
    if (at == MAP_FAILED) {
      munmap(range, PageRound(new_bytes));
      throw std::bad_alloc();
    }
    AdviseHugePages(at, new_bytes);  // the moved mapping keeps the old one's advice: renew it
    (void)a.release();               // its range was unmapped by the move
    a = Array<U>(static_cast<U*>(at), {new_bytes, true});
    return;
  }
  Array<U> bigger = AllocateArray<U>(new_n);
  if (old_n > 0) std::memcpy(bigger.get(), a.get(), old_n * sizeof(U));
  a = std::move(bigger);
}

}  // namespace

namespace sparse_rows_internal {
void ArrayDelete::operator()(void* p) const {
  if (mapped) {
    munmap(p, PageRound(bytes));
  } else {
    ::operator delete(p, std::align_val_t{64});
  }
}
}  // namespace sparse_rows_internal

template <typename T>
SparseRows<T>::SparseRows(uint32_t row_len) : row_len_(row_len < 1 ? 1 : row_len) {
  const bool narrow = row_len_ * sizeof(T) <= kNarrowRowBytes;
  max_load_ = narrow ? 0.875 : 0.75;
  growth_ = narrow ? 1.1 : 1.25;
}

template <typename T>
typename SparseRows<T>::Slot SparseRows<T>::Insert(uint64_t mix) {
  if (mix == kEmpty) {
    const bool inserted = !has_max_;
    if (inserted) {
      max_row_.resize(row_len_);
      has_max_ = true;
      ++size_;
    }
    return {max_row_.data(), inserted};
  }
  if (slots_ == 0) Grow(1, 1.0);
  for (;;) {
    size_t i = Home(mix);
    while (mixes_[i] < mix) ++i;
    if (mixes_[i] == mix) return {Row(i), false};
    // Insert at i, shifting the rest of the run [i, end) one slot up.
    size_t end = i;
    while (mixes_[end] != kEmpty) ++end;
    const bool full = static_cast<double>(size_ + 1) > max_load_ * static_cast<double>(capacity_);
    if (full || end + 1 >= slots_) {  // the last slot must stay empty: it ends every scan
      Grow(size_ + 1, full ? growth_ : 1.0625);
      continue;
    }
    if (end > i) {
      std::memmove(&mixes_[i + 1], &mixes_[i], (end - i) * sizeof(uint64_t));
      std::memmove(Row(i + 1), Row(i), (end - i) * row_len_ * sizeof(T));
    }
    mixes_[i] = mix;
    ++size_;
    return {Row(i), true};
  }
}

template <typename T>
void SparseRows<T>::Reserve(size_t n) {
  if (static_cast<double>(n) > max_load_ * static_cast<double>(capacity_)) Grow(n, 1.0);
}

template <typename T>
void SparseRows<T>::Grow(size_t keys, double factor) {
  size_t capacity = std::max<size_t>(kMinCapacity, static_cast<size_t>(std::ceil(static_cast<double>(capacity_) * factor)));
  capacity = std::max(capacity, static_cast<size_t>(std::ceil(static_cast<double>(keys) / max_load_)));
  while (!Rebuild(capacity)) capacity += capacity / 16 + 1;
}

template <typename T>
bool SparseRows<T>::Rebuild(size_t capacity) {
  static_assert(kWindow <= kMinTailSlots, "a lookup window must fit in the tail");
  // Placing in place needs homes that only move up: never a smaller capacity (Grow then tries
  // larger ones).
  if (capacity < capacity_) return false;
  const size_t slots = capacity + TailSlots(capacity);
  const auto home = [capacity](uint64_t mix) { return HomeFor(mix, capacity); };
  // Every key goes to max(its home, the previous key's new slot + 1): sorted, gap-free runs. A
  // key's new slot is at or after its old one (its home for the larger capacity is, and so, by
  // induction, is the previous key's new slot), so walking from the last key to the first, each
  // moves to a slot that is free by then. A key's new slot depends on every key before it, so a
  // first, forward pass checks that all fit and records the running "previous slot + 1" at the
  // start of every chunk of old slots; the backward pass recomputes one chunk's slots at a time.
  constexpr size_t kChunk = 4096;
  std::vector<size_t> chunk_next;
  chunk_next.reserve(slots_ / kChunk + 1);
  size_t next = 0;
  for (size_t i = 0; i < slots_; ++i) {
    if (i % kChunk == 0) chunk_next.push_back(next);
    const uint64_t mix = mixes_[i];
    if (mix == kEmpty) continue;
    const size_t pos = std::max(home(mix), next);
    if (pos + 1 >= slots) return false;
    next = pos + 1;
  }
  Enlarge(mixes_, slots_, slots);
  Enlarge(rows_, slots_ * row_len_, slots * row_len_);
  std::fill(mixes_.get() + slots_, mixes_.get() + slots, kEmpty);
  std::vector<size_t> chunk_pos(std::min(kChunk, slots_));
  for (size_t c = chunk_next.size(); c-- > 0;) {
    const size_t first = c * kChunk, end = std::min(slots_, first + kChunk);
    next = chunk_next[c];
    for (size_t i = first; i < end; ++i) {
      const uint64_t mix = mixes_[i];
      if (mix == kEmpty) continue;
      chunk_pos[i - first] = std::max(home(mix), next);
      next = chunk_pos[i - first] + 1;
    }
    for (size_t i = end; i-- > first;) {
      const uint64_t mix = mixes_[i];
      if (mix == kEmpty) continue;
      const size_t pos = chunk_pos[i - first];
      if (pos == i) continue;
      mixes_[pos] = mix;
      std::memcpy(Row(pos), Row(i), row_len_ * sizeof(T));  // pos > i: the rows do not overlap
      mixes_[i] = kEmpty;  // unless a key before it moves here, which comes later in this walk
    }
  }
  capacity_ = capacity;
  slots_ = slots;
  return true;
}

template <typename T>
size_t SparseRows<T>::memory_bytes() const {
  return sizeof(*this) + slots_ * (sizeof(uint64_t) + row_len_ * sizeof(T)) + max_row_.capacity() * sizeof(T);
}

template class SparseRows<float>;
template class SparseRows<double>;
template class SparseRows<int32_t>;
template class SparseRows<int64_t>;

}  // namespace pserver::kv
