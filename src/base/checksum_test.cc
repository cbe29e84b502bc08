#include "pserver/checksum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace pserver {
namespace {

TEST(ChecksumTest, MatchesXxh64ReferenceValues) {
  // Reference values from libxxhash 0.8.1.
  EXPECT_EQ(Checksum64("", 0, 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(Checksum64("abc", 3, 0), 0x44bc2cf5ad770999ULL);
  const char* s = "Nobody inspects the spammish repetition";
  EXPECT_EQ(Checksum64(s, std::strlen(s), 0), 0xfbcea83c8a378bf1ULL);
  unsigned char bytes[100];
  for (int i = 0; i < 100; ++i) bytes[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(Checksum64(bytes, 100, 12345), 0x28ba1ae2de4de27ULL);
}

TEST(ChecksumTest, AStreamEqualsTheWhole) {
  std::string bytes;
  for (int i = 0; i < 1000; ++i) bytes.push_back(static_cast<char>(i * 7));
  for (uint64_t seed : {uint64_t{0}, uint64_t{42}}) {
    Checksum64Stream s(seed);
    size_t at = 0;
    for (size_t piece : {0, 1, 3, 31, 32, 33, 100, 800}) {
      s.Update(bytes.data() + at, std::min(piece, bytes.size() - at));
      at += std::min(piece, bytes.size() - at);
    }
    ASSERT_EQ(at, bytes.size());
    EXPECT_EQ(s.Digest(), Checksum64(bytes.data(), bytes.size(), seed));
  }
}

TEST(ChecksumTest, AFlippedBitChangesIt) {
  std::string bytes(4096, 'x');
  const uint64_t before = Checksum64(bytes.data(), bytes.size());
  for (size_t i = 0; i < bytes.size(); i += 509) {
    bytes[i] ^= 1;
    EXPECT_NE(Checksum64(bytes.data(), bytes.size()), before) << "byte " << i;
    bytes[i] ^= 1;
  }
}

}  // namespace
}  // namespace pserver
