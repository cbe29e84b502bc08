#include "kv/server/sparse_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

// n uninitialised elements; huge-page backed (when the kernel allows) from 2 MiB on.
template <typename U>
std::unique_ptr<U[], sparse_rows_internal::AlignedDelete> AllocateArray(size_t n) {
  const size_t bytes = std::max<size_t>(n * sizeof(U), 1);
  const size_t alignment = bytes >= kHugePage ? kHugePage : 64;
  void* p = ::operator new(bytes, std::align_val_t{alignment});
  if (alignment == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failure is harmless
  return std::unique_ptr<U[], sparse_rows_internal::AlignedDelete>(static_cast<U*>(p),
                                                                   sparse_rows_internal::AlignedDelete{alignment});
}

}  // namespace

template <typename T>
SparseRows<T>::SparseRows(uint32_t row_len) : row_len_(row_len < 1 ? 1 : row_len) {
  const bool narrow = row_len_ * sizeof(T) <= kNarrowRowBytes;
  max_load_ = narrow ? 0.875 : 0.75;
  growth_ = narrow ? 1.375 : 1.5;
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
  const size_t slots = capacity + TailSlots(capacity);
  auto mixes = AllocateArray<uint64_t>(slots);
  auto rows = AllocateArray<T>(slots * row_len_);
  std::fill(mixes.get(), mixes.get() + slots, kEmpty);
  const auto home = [capacity](uint64_t mix) {
    return static_cast<size_t>((static_cast<sparse_rows_internal::Uint128>(mix) * capacity) >> 64);
  };
  // The old slots are sorted by mix and the new homes are monotone in the mix: placing each at
  // max(home, previous + 1) yields the sorted, gap-free runs that ordered probing needs.
  size_t next = 0;
  for (size_t i = 0; i < slots_; ++i) {
    const uint64_t mix = mixes_[i];
    if (mix == kEmpty) continue;
    const size_t pos = std::max(home(mix), next);
    if (pos + 1 >= slots) return false;
    mixes[pos] = mix;
    std::memcpy(rows.get() + pos * row_len_, Row(i), row_len_ * sizeof(T));
    next = pos + 1;
  }
  mixes_ = std::move(mixes);
  rows_ = std::move(rows);
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
