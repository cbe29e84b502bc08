// SharedArray<T>: a contiguous array with shared ownership and zero-copy slicing.
//
// This is how value arrays travel from the user's buffer to the socket and back without copies:
// a SharedArray built from a std::vector takes the vector over (no copy); a slice shares the
// owner; the transport keeps the owner alive while a send is in flight; a pulled array may alias
// the received network buffer.
//
// Thread safety: like std::shared_ptr. Copies in different threads are safe; the elements are
// plain memory, so writers and readers of the same elements must synchronise themselves.
// An array handed to Push must not be modified until that request completes.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace pserver {

template <typename T>
class SharedArray {
  static_assert(std::is_trivially_copyable_v<T>, "SharedArray holds plain data only");

 public:
  SharedArray() = default;

  // n value-initialised (zero) elements, 64-byte aligned.
  explicit SharedArray(size_t n) : SharedArray(Uninitialized(n)) {
    if (n > 0) std::memset(static_cast<void*>(data_), 0, n * sizeof(T));
  }

  // n elements whose values are unspecified until written, 64-byte aligned.
  static SharedArray Uninitialized(size_t n) {
    SharedArray a;
    if (n == 0) return a;
    constexpr std::align_val_t kAlign{64};
    T* p = static_cast<T*>(::operator new(n * sizeof(T), kAlign));
    a.owner_ = std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, std::align_val_t{64}); });
    a.data_ = p;
    a.size_ = n;
    return a;
  }

  // Takes the vector over; no element is copied.
  SharedArray(std::vector<T>&& v)  // NOLINT(google-explicit-constructor)
      : size_(v.size()) {
    auto holder = std::make_shared<std::vector<T>>(std::move(v));
    data_ = holder->data();
    owner_ = std::move(holder);
  }

  // Aliases `data[0..size)`, kept alive by `owner` (which may be null when the caller guarantees
  // the memory outlives every copy of this array).
  SharedArray(std::shared_ptr<void> owner, T* data, size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}

  // A new array holding a copy of `src`.
  static SharedArray CopyOf(std::span<const T> src) {
    SharedArray a = Uninitialized(src.size());
    if (!src.empty()) std::memcpy(static_cast<void*>(a.data_), src.data(), src.size_bytes());
    return a;
  }

  T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t size_bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) const { return data_[i]; }
  T* begin() const { return data_; }
  T* end() const { return data_ + size_; }
  std::span<T> span() const { return {data_, size_}; }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Elements [begin, end) sharing this array's owner. REQUIRES: begin <= end <= size().
  SharedArray Slice(size_t begin, size_t end) const { return SharedArray(owner_, data_ + begin, end - begin); }

  void Clear() { *this = SharedArray(); }

 private:
  std::shared_ptr<void> owner_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace pserver
