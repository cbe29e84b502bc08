// WireWriter / WireReader: the little-endian codec of control-message bodies.
#include "base/wire_io.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "testing/test_util.h"

namespace pserver::base {
namespace {

std::span<const std::byte> AsSpan(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::vector<unsigned> BytesOf(const std::string& s) {
  std::vector<unsigned> out;
  for (char c : s) out.push_back(static_cast<unsigned char>(c));
  return out;
}

TEST(WireIoTest, EncodesLittleEndian) {
  WireWriter w;
  w.U8(0xAB);
  w.U32(0x01020304);
  w.U64(0x1122334455667788ull);
  w.I64(-2);
  w.Str("hi");
  const std::vector<unsigned> want = {
      0xAB,                                            // U8
      0x04, 0x03, 0x02, 0x01,                          // U32
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // U64
      0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // I64 -2, two's complement
      0x02, 0x00, 0x00, 0x00, 'h',  'i',               // Str: u32 length + bytes
  };
  EXPECT_EQ(BytesOf(w.bytes()), want);
}

TEST(WireIoTest, RoundTripsExtremes) {
  WireWriter w;
  for (uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{255}}) w.U8(v);
  for (uint32_t v : {0u, 1u, 0x80000000u, std::numeric_limits<uint32_t>::max()}) w.U32(v);
  for (uint64_t v : {uint64_t{0}, uint64_t{1} << 63, std::numeric_limits<uint64_t>::max()}) w.U64(v);
  for (int64_t v : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    w.I64(v);
  }
  const std::string binary("a\0b\xff", 4);
  w.Str("");
  w.Str(binary);
  w.Str(std::string(1 << 16, 'x'));  // exactly the default limit
  const std::string bytes = w.Take();

  WireReader r(AsSpan(bytes));
  uint8_t u8;
  uint32_t u32;
  uint64_t u64;
  int64_t i64;
  std::string s;
  for (uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{255}}) {
    ASSERT_TRUE(r.U8(&u8));
    EXPECT_EQ(u8, v);
  }
  for (uint32_t v : {0u, 1u, 0x80000000u, std::numeric_limits<uint32_t>::max()}) {
    ASSERT_TRUE(r.U32(&u32));
    EXPECT_EQ(u32, v);
  }
  for (uint64_t v : {uint64_t{0}, uint64_t{1} << 63, std::numeric_limits<uint64_t>::max()}) {
    ASSERT_TRUE(r.U64(&u64));
    EXPECT_EQ(u64, v);
  }
  for (int64_t v : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    ASSERT_TRUE(r.I64(&i64));
    EXPECT_EQ(i64, v);
  }
  ASSERT_TRUE(r.Str(&s));
  EXPECT_EQ(s, "");
  ASSERT_TRUE(r.Str(&s));
  EXPECT_EQ(s, binary);
  ASSERT_TRUE(r.Str(&s));
  EXPECT_EQ(s, std::string(1 << 16, 'x'));
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.Done());
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(WireIoTest, EmptyInputIsDoneAndRefusesReads) {
  WireReader r({});
  EXPECT_TRUE(r.Done());
  uint8_t v = 7;
  EXPECT_FALSE(r.U8(&v));
  EXPECT_EQ(v, 7);  // untouched
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.Done());
}

TEST(WireIoTest, RefusesEveryTruncation) {
  WireWriter w;
  w.U8(1);
  w.U32(2);
  w.U64(3);
  w.Str("four");
  const std::string full = w.Take();
  for (size_t len = 0; len < full.size(); ++len) {
    SCOPED_TRACE(len);
    WireReader r(AsSpan(full).first(len));
    uint8_t a;
    uint32_t b;
    uint64_t c;
    std::string d;
    bool all = r.U8(&a) && r.U32(&b) && r.U64(&c) && r.Str(&d);
    EXPECT_FALSE(all);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(r.Done());
  }
}

TEST(WireIoTest, FailureIsSticky) {
  const std::string bytes(6, '\x01');
  WireReader r(AsSpan(bytes));
  uint64_t big;
  EXPECT_FALSE(r.U64(&big));  // 8 bytes wanted, 6 there
  uint8_t small;
  EXPECT_FALSE(r.U8(&small));  // would fit, but the reader has failed
  uint32_t mid;
  EXPECT_FALSE(r.U32(&mid));
  EXPECT_FALSE(r.ok());
}

TEST(WireIoTest, DoneIsFalseWithTrailingBytes) {
  WireWriter w;
  w.U32(5);
  w.U8(0);
  const std::string bytes = w.Take();
  WireReader r(AsSpan(bytes));
  uint32_t v;
  ASSERT_TRUE(r.U32(&v));
  EXPECT_TRUE(r.ok());
  EXPECT_FALSE(r.Done());
  EXPECT_EQ(r.remaining(), 1u);
}

TEST(WireIoTest, StrRefusesLengthOverLimit) {
  WireWriter w;
  w.Str("abcdef");
  const std::string bytes = w.Take();
  {
    WireReader r(AsSpan(bytes));
    std::string s;
    EXPECT_FALSE(r.Str(&s, 5));
    EXPECT_FALSE(r.ok());
  }
  {
    WireReader r(AsSpan(bytes));
    std::string s;
    EXPECT_TRUE(r.Str(&s, 6));
    EXPECT_EQ(s, "abcdef");
  }
}

TEST(WireIoTest, StrRefusesLengthBeyondInputWithoutAllocating) {
  // A corrupt length of 4 GiB - 1 with 3 bytes behind it: refused, nothing allocated.
  WireWriter w;
  w.U32(0xFFFFFFFFu);
  w.U8('a');
  w.U8('b');
  w.U8('c');
  const std::string bytes = w.Take();
  WireReader r(AsSpan(bytes));
  std::string s;
  EXPECT_FALSE(r.Str(&s, std::numeric_limits<size_t>::max()));
  EXPECT_TRUE(s.empty());
  EXPECT_FALSE(r.ok());

  WireWriter w2;
  w2.U32(4);  // one byte more than there is
  w2.U8('a');
  w2.U8('b');
  w2.U8('c');
  const std::string bytes2 = w2.Take();
  WireReader r2(AsSpan(bytes2));
  EXPECT_FALSE(r2.Str(&s));
  EXPECT_FALSE(r2.ok());
}

TEST(WireIoTest, RandomSequencesRoundTrip) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  for (int round = 0; round < 200; ++round) {
    WireWriter w;
    std::vector<int> kinds;
    std::vector<uint64_t> ints;
    std::vector<std::string> strs;
    const int n = static_cast<int>(rng() % 20);
    for (int i = 0; i < n; ++i) {
      int kind = static_cast<int>(rng() % 4);
      kinds.push_back(kind);
      uint64_t v = rng();
      switch (kind) {
        case 0: w.U8(static_cast<uint8_t>(v)); ints.push_back(static_cast<uint8_t>(v)); break;
        case 1: w.U32(static_cast<uint32_t>(v)); ints.push_back(static_cast<uint32_t>(v)); break;
        case 2: w.U64(v); ints.push_back(v); break;
        default: {
          std::string s(rng() % 40, '\0');
          for (char& c : s) c = static_cast<char>(rng());
          w.Str(s);
          strs.push_back(s);
        }
      }
    }
    const std::string bytes = w.Take();
    WireReader r(AsSpan(bytes));
    size_t ii = 0, si = 0;
    for (int kind : kinds) {
      uint8_t a;
      uint32_t b;
      uint64_t c;
      std::string s;
      switch (kind) {
        case 0: ASSERT_TRUE(r.U8(&a)); EXPECT_EQ(a, ints[ii++]); break;
        case 1: ASSERT_TRUE(r.U32(&b)); EXPECT_EQ(b, ints[ii++]); break;
        case 2: ASSERT_TRUE(r.U64(&c)); EXPECT_EQ(c, ints[ii++]); break;
        default: ASSERT_TRUE(r.Str(&s)); EXPECT_EQ(s, strs[si++]); break;
      }
    }
    EXPECT_TRUE(r.Done());
  }
}

TEST(WireIoTest, StoresAndLoadsLittleEndianInPlace) {
  std::byte buf[10]{};
  StoreLE<uint16_t>(buf, 0xBEEF);
  StoreLE<uint64_t>(buf + 2, 0x0102030405060708ULL);
  EXPECT_EQ(buf[0], std::byte{0xEF});
  EXPECT_EQ(buf[1], std::byte{0xBE});
  EXPECT_EQ(buf[2], std::byte{0x08});
  EXPECT_EQ(buf[9], std::byte{0x01});
  EXPECT_EQ(LoadLE<uint16_t>(buf), 0xBEEF);
  EXPECT_EQ(LoadLE<uint64_t>(buf + 2), 0x0102030405060708ULL);
  StoreLE<uint64_t>(buf, ~uint64_t{0});
  EXPECT_EQ(LoadLE<uint64_t>(buf), ~uint64_t{0});
}

}  // namespace
}  // namespace pserver::base
