// WireWriter / WireReader: little-endian encoding of the small control-message bodies
// (registration, node lists, barriers). Data-plane arrays never go through here: they travel
// as raw frames.
//
// WireReader never reads past its input: every getter returns false once the input is
// exhausted or malformed, and the reader stays failed (sticky), so a decoder can read all
// fields and check ok() once. Both are thread-compatible.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace pserver::base {

// A little-endian integer at a fixed place in a buffer the caller sized (frame prefixes).
template <typename T>
void StoreLE(std::byte* at, T v) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) at[i] = static_cast<std::byte>(v >> (8 * i));
}
template <typename T>
T LoadLE(const std::byte* at) {
  static_assert(std::is_unsigned_v<T>);
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | (T{std::to_integer<uint8_t>(at[i])} << (8 * i)));
  return v;
}

class WireWriter {
 public:
  void U8(uint8_t v) { Put(&v, 1); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }  // the u64 of its IEEE-754 bits
  void Str(std::string_view s);  // u32 length + bytes
  const std::string& bytes() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Put(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> in) : in_(in) {}

  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool I64(int64_t* v);
  bool F64(double* v);
  // Strings longer than max_len are refused (a corrupt length must not allocate gigabytes).
  bool Str(std::string* s, size_t max_len = 1 << 16);

  bool ok() const { return ok_; }
  // True when everything was read and nothing is left over.
  bool Done() const { return ok_ && pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  bool Take(void* out, size_t n);
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace pserver::base
