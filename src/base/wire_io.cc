#include "base/wire_io.h"

namespace pserver::base {

void WireWriter::U32(uint32_t v) {
  unsigned char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  Put(b, 4);
}

void WireWriter::U64(uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  Put(b, 8);
}

void WireWriter::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  Put(s.data(), s.size());
}

bool WireReader::Take(void* out, size_t n) {
  if (!ok_ || in_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  if (n > 0) std::memcpy(out, in_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool WireReader::U8(uint8_t* v) { return Take(v, 1); }

bool WireReader::U32(uint32_t* v) {
  unsigned char b[4];
  if (!Take(b, 4)) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(b[i]) << (8 * i);
  return true;
}

bool WireReader::U64(uint64_t* v) {
  unsigned char b[8];
  if (!Take(b, 8)) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(b[i]) << (8 * i);
  return true;
}

bool WireReader::I64(int64_t* v) {
  uint64_t u;
  if (!U64(&u)) return false;
  *v = static_cast<int64_t>(u);
  return true;
}

bool WireReader::F64(double* v) {
  uint64_t bits = 0;
  if (!U64(&bits)) return false;
  *v = std::bit_cast<double>(bits);
  return true;
}

bool WireReader::Str(std::string* s, size_t max_len) {
  uint32_t n;
  if (!U32(&n)) return false;
  if (n > max_len || n > remaining()) {
    ok_ = false;
    return false;
  }
  s->assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
  pos_ += n;
  return true;
}

}  // namespace pserver::base
