// Keys as deltas round-trip exactly (sorted runs, steps down between runs, the extremes of the
// key space, random keys) and malformed input is refused with what was wrong.
#include "kv/key_deltas.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;

std::vector<Key> RoundTrip(const std::vector<Key>& keys) {
  transport::Bytes b = EncodeKeyDeltas(keys);
  EXPECT_EQ(b.size(), KeyDeltasSize(keys));
  Result<SharedArray<Key>> back = DecodeKeyDeltas({b.data(), b.size()}, keys.size());
  EXPECT_OK(back);
  return back.ok() ? std::vector<Key>(back->begin(), back->end()) : std::vector<Key>{};
}

TEST(KeyDeltasTest, RoundTripsEdgeCases) {
  for (const std::vector<Key>& keys : std::vector<std::vector<Key>>{
           {}, {0}, {~Key{0}}, {0, ~Key{0}}, {~Key{0}, 0}, {5, 5, 5}, {1, 2, 3, 100, 2, 3, 4}, {1ULL << 63, 0, 1}}) {
    EXPECT_EQ(RoundTrip(keys), keys);
  }
}

TEST(KeyDeltasTest, ConsecutiveIdsTakeAByteEach) {
  std::vector<Key> keys(1000);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = 20000 + i;
  EXPECT_EQ(KeyDeltasSize(keys), 3 + 999);  // 20000 zigzagged takes 3 bytes
  EXPECT_EQ(RoundTrip(keys), keys);
}

TEST(KeyDeltasTest, RoundTripsRandomSortedRuns) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    std::vector<Key> keys;
    for (int run = 0; run < 1 + round % 4; ++run) {
      std::vector<Key> r(rng() % 300);
      const uint64_t span = round % 2 ? ~uint64_t{0} : 1000;
      for (Key& k : r) k = rng() % span;
      std::sort(r.begin(), r.end());
      keys.insert(keys.end(), r.begin(), r.end());
    }
    ASSERT_EQ(RoundTrip(keys), keys);
  }
}

TEST(KeyDeltasTest, RefusesMalformedInput) {
  const std::vector<Key> keys{1, 300, 70000};
  transport::Bytes b = EncodeKeyDeltas(keys);
  const std::span<const std::byte> all{b.data(), b.size()};
  EXPECT_TRUE(StatusIs(DecodeKeyDeltas(all.first(all.size() - 1), 3).status(), StatusCode::kCorruption,
                       "key delta 2 of 3 is cut short"));
  EXPECT_TRUE(StatusIs(DecodeKeyDeltas(all, 2).status(), StatusCode::kCorruption, "bytes left over after 2 key deltas"));
  EXPECT_TRUE(StatusIs(DecodeKeyDeltas(all, 100).status(), StatusCode::kCorruption, "cannot hold 100 keys"));
  std::vector<std::byte> overlong(11, std::byte{0xff});
  overlong.back() = std::byte{0};
  EXPECT_TRUE(StatusIs(DecodeKeyDeltas(overlong, 1).status(), StatusCode::kCorruption, "longer than 64 bits"));
}

}  // namespace
}  // namespace pserver::kv
