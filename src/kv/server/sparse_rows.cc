#include "kv/server/sparse_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#include <sys/mman.h>

namespace pserver::kv {

namespace {

constexpr size_t kMinCapacity = 16;
constexpr size_t kNarrowRowBytes = 16;

// Slots past the capacity: enough for the probe runs of a table at its maximal load (runs
// longer than this are rare; one makes the table grow early), and at least a lookup's window.
constexpr size_t kMinTailSlots = 64;
size_t TailSlots(size_t capacity) { return kMinTailSlots + capacity / 256; }

constexpr size_t kHugePage = size_t{2} << 20;
// Allocations from this size on are mapped directly rather than taken from the allocator's heap.
constexpr size_t kMapMinBytes = size_t{16} << 10;
constexpr size_t kPage = 4096;

// `bytes` uninitialised bytes, 64-byte aligned. From kMapMinBytes on a private anonymous mapping
// of their own (so that freeing it returns the memory to the system); from 2 MiB on also 2
// MiB-aligned and advised to use huge pages (when the kernel allows). Throws std::bad_alloc when
// there is no memory, as operator new does.
std::unique_ptr<std::byte[], sparse_rows_internal::ArrayDelete> AllocateBytes(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bytes < kMapMinBytes) {
    void* p = ::operator new(bytes, std::align_val_t{64});
    return {static_cast<std::byte*>(p), {bytes, false}};
  }
  const size_t alignment = bytes >= kHugePage ? kHugePage : kPage;
  const size_t mapped = bytes + alignment;
  void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  // Keep the aligned part (rounded up to whole pages) and give back what is before and after it.
  const auto base = reinterpret_cast<uintptr_t>(m);
  const uintptr_t begin = (base + alignment - 1) & ~(uintptr_t{alignment} - 1);
  const uintptr_t end = begin + ((bytes + kPage - 1) & ~(kPage - 1));
  if (begin > base) munmap(m, begin - base);
  if (base + mapped > end) munmap(reinterpret_cast<void*>(end), base + mapped - end);
  void* p = reinterpret_cast<void*>(begin);
  if (alignment == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failure is harmless
  return {static_cast<std::byte*>(p), {bytes, true}};
}

}  // namespace

namespace sparse_rows_internal {
void ArrayDelete::operator()(void* p) const {
  if (mapped) {
    munmap(p, bytes);
  } else {
    ::operator delete(p, std::align_val_t{64});
  }
}
}  // namespace sparse_rows_internal

template <typename T>
SparseRows<T>::SparseRows(uint32_t row_len) : row_len_(row_len < 1 ? 1 : row_len), segments_(1) {
  const bool narrow = row_len_ * sizeof(T) <= kNarrowRowBytes;
  max_load_ = narrow ? 0.875 : 0.75;
  growth_ = narrow ? 1.15 : 1.5;
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
  for (;;) {
    Segment& s = segments_[SegmentOf(mix)];
    if (s.slots == 0) Grow(s, 1, 1.0);
    size_t i = Home(s, mix);
    while (s.mixes[i] < mix) ++i;
    if (s.mixes[i] == mix) return {Row(s, i), false};
    // Insert at i, shifting the rest of the run [i, end) one slot up.
    size_t end = i;
    while (s.mixes[end] != kEmpty) ++end;
    const bool full = static_cast<double>(s.size + 1) > max_load_ * static_cast<double>(s.capacity);
    if (full && segments_.size() == 1 && size_ + 1 > kSplitKeys) {
      Split(0, growth_);
      continue;
    }
    if (full || end + 1 >= s.slots) {  // the last slot must stay empty: it ends every scan
      Grow(s, s.size + 1, full ? growth_ : 1.0625);
      continue;
    }
    if (end > i) {
      std::memmove(&s.mixes[i + 1], &s.mixes[i], (end - i) * sizeof(uint64_t));
      std::memmove(Row(s, i + 1), Row(s, i), (end - i) * row_len_ * sizeof(T));
    }
    s.mixes[i] = mix;
    ++s.size;
    ++size_;
    return {Row(s, i), true};
  }
}

template <typename T>
void SparseRows<T>::Reserve(size_t n) {
  if (segments_.size() == 1 && n > kSplitKeys) Split(0, 1.0);
  if (segments_.size() == 1) {
    Segment& s = segments_[0];
    if (static_cast<double>(n) > max_load_ * static_cast<double>(s.capacity)) Grow(s, n, 1.0);
    return;
  }
  // A segment's share of n random keys, with slack for the spread of a binomial count.
  const double share = static_cast<double>(n) / kSegments;
  const auto keys = static_cast<size_t>(std::ceil(share + 4 * std::sqrt(share) + 8));
  for (Segment& s : segments_) {
    if (static_cast<double>(keys) > max_load_ * static_cast<double>(s.capacity)) Grow(s, keys, 1.0);
  }
}

template <typename T>
void SparseRows<T>::Grow(Segment& s, size_t keys, double factor) {
  size_t capacity = std::max<size_t>(kMinCapacity, static_cast<size_t>(std::ceil(static_cast<double>(s.capacity) * factor)));
  capacity = std::max(capacity, static_cast<size_t>(std::ceil(static_cast<double>(keys) / max_load_)));
  Segment grown;
  while (!Fill(grown, capacity, s, 0, s.slots)) capacity += capacity / 16 + 1;
  s = std::move(grown);
}

template <typename T>
void SparseRows<T>::Split(size_t min_keys, double stagger) {
  Segment whole = std::move(segments_[0]);
  segments_.clear();
  segments_.resize(kSegments);
  segment_bits_ = kSegmentBits;
  // The old slots are sorted by mix, so each new segment's keys are one run of them.
  size_t first = 0;
  for (size_t seg = 0; seg < kSegments; ++seg) {
    size_t end = first;
    size_t keys = 0;
    for (; end < whole.slots && (whole.mixes[end] == kEmpty || SegmentOf(whole.mixes[end]) == seg); ++end) {
      keys += whole.mixes[end] != kEmpty ? 1 : 0;
    }
    keys = std::max(keys, min_keys);
    const double room = std::pow(stagger, static_cast<double>(seg) / kSegments) / max_load_;
    size_t capacity = std::max<size_t>(kMinCapacity, static_cast<size_t>(std::ceil(static_cast<double>(keys) * room)));
    while (!Fill(segments_[seg], capacity, whole, first, end)) capacity += capacity / 16 + 1;
    first = end;
  }
}

template <typename T>
bool SparseRows<T>::Fill(Segment& to, size_t capacity, const Segment& from, size_t first, size_t end) const {
  static_assert(kWindow <= kMinTailSlots, "a lookup window must fit in the tail");
  const size_t slots = capacity + TailSlots(capacity);
  const size_t rows_offset = (slots * sizeof(uint64_t) + 63) & ~size_t{63};
  auto memory = AllocateBytes(rows_offset + slots * row_len_ * sizeof(T));
  auto* mixes = reinterpret_cast<uint64_t*>(memory.get());
  auto* rows = reinterpret_cast<T*>(memory.get() + rows_offset);
  std::fill(mixes, mixes + slots, kEmpty);
  // The old slots are sorted by mix and the new homes are monotone in the mix: placing each at
  // max(home, previous + 1) yields the sorted, gap-free runs that ordered probing needs.
  size_t next = 0;
  size_t keys = 0;
  for (size_t i = first; i < end; ++i) {
    const uint64_t mix = from.mixes[i];
    if (mix == kEmpty) continue;
    const size_t pos = std::max(HomeIn(capacity, mix), next);
    if (pos + 1 >= slots) return false;
    mixes[pos] = mix;
    std::memcpy(rows + pos * row_len_, Row(from, i), row_len_ * sizeof(T));
    next = pos + 1;
    ++keys;
  }
  to.capacity = capacity;
  to.slots = slots;
  to.size = keys;
  to.mixes = mixes;
  to.rows = rows;
  to.memory = std::move(memory);
  return true;
}

template <typename T>
size_t SparseRows<T>::capacity() const {
  size_t n = 0;
  for (const Segment& s : segments_) n += s.capacity;
  return n;
}

template <typename T>
size_t SparseRows<T>::memory_bytes() const {
  size_t bytes = sizeof(*this) + segments_.capacity() * sizeof(Segment) + max_row_.capacity() * sizeof(T);
  for (const Segment& s : segments_) bytes += s.slots * (sizeof(uint64_t) + row_len_ * sizeof(T));
  return bytes;
}

template class SparseRows<float>;
template class SparseRows<double>;
template class SparseRows<int32_t>;
template class SparseRows<int64_t>;

}  // namespace pserver::kv
