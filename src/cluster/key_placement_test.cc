#include "cluster/key_placement.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cluster/ring.h"
#include "gtest/gtest.h"

namespace pserver::cluster {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

std::mt19937_64 SeededRng(uint64_t seed) {
  std::cout << "seed " << seed << "\n";
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return std::mt19937_64(seed);
}

TEST(KeyPlacementTest, MixUnmixRoundTrip) {
  std::vector<uint64_t> values = {
      0, 1, 2, 3, kMax, kMax - 1, uint64_t{1} << 63, 0x5555555555555555};
  for (int b = 0; b < 64; ++b) values.push_back(uint64_t{1} << b);
  std::mt19937_64 rng = SeededRng(17);
  for (int i = 0; i < 1000000; ++i) values.push_back(rng());
  for (uint64_t v : values) {
    ASSERT_EQ(UnmixKey(MixKey(v)), v) << v;
    ASSERT_EQ(MixKey(UnmixKey(v)), v) << v;
  }
}

TEST(KeyPlacementTest, MixKeyIsStableAcrossMachines) {
  // Golden values of the murmur3 finalizer: a change here moves every key of every table.
  EXPECT_EQ(MixKey(0), 0u);
  EXPECT_EQ(MixKey(1), 0xb456bcfc34c2cb2cULL);
  EXPECT_EQ(MixKey(2), 0x3abf2a20650683e7ULL);
  EXPECT_EQ(MixKey(kMax), 0x64b5720b4b825f21ULL);
}

__extension__ typedef unsigned __int128 Uint128;

// The definition, computed slowly: floor((k - first) * 2^64 / size).
uint64_t ReferenceScale(Key k, KeyRange r) {
  const Uint128 size = Uint128{r.last - r.first} + 1;
  return static_cast<uint64_t>((Uint128{k - r.first} << 64) / size);
}

TEST(KeyPlacementTest, ScaleKeyAtEdges) {
  EXPECT_EQ(ScaleKey(0, {0, 0}), 0u);
  EXPECT_EQ(ScaleKey(kMax, {kMax, kMax}), 0u);
  EXPECT_EQ(ScaleKey(1, {0, 1}), uint64_t{1} << 63);
  EXPECT_EQ(ScaleKey(kMax, {kMax - 1, kMax}), uint64_t{1} << 63);
  EXPECT_EQ(ScaleKey(kMax, {1, kMax}), kMax - 1);        // size 2^64 - 1: just below identity
  EXPECT_EQ(ScaleKey(1, {0, 99999}), 184467440737095u);  // floor(2^64 / 1e5)
  EXPECT_EQ(ScaleKey(99999, {0, 99999}), 18446559606268814520u);
  // Size 2^63 + 1, where floor(2^64 / size) = 1 would leave the top half of the ring empty.
  EXPECT_EQ(ScaleKey(uint64_t{1} << 63, {0, uint64_t{1} << 63}), kMax - 1);
}

// Checks ScaleKey over `keys` (ascending, inside `r`) against the definition, and that it is
// strictly increasing and that RangeScale agrees.
void ExpectScaledMonotone(KeyRange r, const std::vector<Key>& keys) {
  SCOPED_TRACE("range [" + std::to_string(r.first) + ", " + std::to_string(r.last) + "]");
  const RangeScale scale(r);
  EXPECT_EQ(ScaleKey(r.first, r), 0u);
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(ScaleKey(keys[i], r), ReferenceScale(keys[i], r)) << keys[i];
    ASSERT_EQ(scale(keys[i]), ScaleKey(keys[i], r)) << keys[i];
    if (i > 0) {
      ASSERT_LT(ScaleKey(keys[i - 1], r), ScaleKey(keys[i], r)) << keys[i - 1] << " " << keys[i];
    }
  }
  // The last key reaches the top of the ring: within 2^64 / size + 1 of 2^64.
  const Uint128 size = Uint128{r.last - r.first} + 1;
  if (size > 1) {
    const uint64_t gap = static_cast<uint64_t>((Uint128{1} << 64) / size) + 1;
    EXPECT_GE(ScaleKey(r.last, r), kMax - gap);
  }
}

std::vector<Key> SampleOf(KeyRange r, std::mt19937_64& rng) {
  std::vector<Key> keys = {r.first, r.last};
  if (r.last - r.first < 5000) {
    for (Key k = r.first; k != r.last; ++k) keys.push_back(k);
  } else {
    std::uniform_int_distribution<uint64_t> d(r.first, r.last);
    for (int i = 0; i < 5000; ++i) keys.push_back(d(rng));
    for (Key k = 0; k < 100; ++k) keys.push_back(r.first + k), keys.push_back(r.last - k);
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

TEST(KeyPlacementTest, ScaleKeyIsStrictlyMonotoneAndExact) {
  std::mt19937_64 rng = SeededRng(4242);
  std::vector<KeyRange> ranges = {{0, kMax},
                                  {1, kMax},
                                  {0, kMax - 1},
                                  {0, 0},
                                  {kMax, kMax},
                                  {kMax - 1, kMax},
                                  {kMax - 9, kMax},
                                  {0, 99999},
                                  {0, 2},
                                  {5, 7},
                                  {0, (uint64_t{1} << 63) - 1},
                                  {uint64_t{1} << 63, kMax},
                                  {0, uint64_t{1} << 63},
                                  {0, (uint64_t{1} << 32) + 1}};
  for (int i = 0; i < 200; ++i) {
    const uint64_t a = rng(), b = rng() >> (rng() % 64);
    ranges.push_back({std::min(a, b), std::max(a, b)});
  }
  for (KeyRange r : ranges) ExpectScaledMonotone(r, SampleOf(r, rng));
}

TEST(KeyPlacementTest, FullRangeScalesToIdentity) {
  for (Key k : {Key{0}, Key{1}, Key{12345}, kMax - 1, kMax}) EXPECT_EQ(ScaleKey(k, {0, kMax}), k);
}

TEST(KeyPlacementTest, RoutingKeyFollowsPlacementKind) {
  const Key k = 777;
  EXPECT_EQ(RoutingKey(Placement{}, k), MixKey(k));  // kHashed is the default
  EXPECT_EQ(RoutingKey({PlacementKind::kIdentity, {}}, k), k);
  const KeyRange r{700, 799};
  EXPECT_EQ(RoutingKey({PlacementKind::kRange, r}, k), ScaleKey(k, r));
}

// The largest |share / fair share - 1| over the servers when keys 0..n-1 are routed under
// `placement` on a ring of `servers` servers with `vnodes` virtual nodes each.
double MaxDeviation(const Placement& placement, uint32_t servers, uint32_t vnodes, Key n) {
  std::vector<uint32_t> ranks(servers);
  for (uint32_t i = 0; i < servers; ++i) ranks[i] = i;
  Result<Ring> ring = Ring::Build(ranks, vnodes);
  EXPECT_TRUE(ring.ok());
  std::vector<double> count(servers, 0);
  for (Key k = 0; k < n; ++k) ++count[ring->Owner(RoutingKey(placement, k))];
  double worst = 0;
  for (double c : count) worst = std::max(worst, std::abs(c * servers / n - 1));
  std::cout << "servers " << servers << " vnodes " << vnodes << " max deviation from fair share "
            << worst << "\n";
  return worst;
}

// A server's share of the ring has a relative spread of about 1 / sqrt(vnodes), so the worst of
// 8 servers is near 2.5 / sqrt(vnodes). Measured with this hash for 1/2/3/8 servers: at most
// 0.32 with 64 virtual nodes and 0.14 with 256. The layout is deterministic, so these bounds
// cannot flake; they fail when a hash change makes the spread worse.
struct SpreadBound {
  uint32_t vnodes;
  double max_deviation;
};
constexpr SpreadBound kSpreadBounds[] = {{64, 0.35}, {256, 0.15}};

TEST(KeyPlacementTest, HashedSpreadsDenseIds) {
  for (SpreadBound b : kSpreadBounds) {
    for (uint32_t servers : {1u, 2u, 3u, 8u}) {
      EXPECT_LE(MaxDeviation(Placement{}, servers, b.vnodes, 100000), b.max_deviation)
          << servers << " servers, " << b.vnodes << " vnodes";
    }
  }
}

TEST(KeyPlacementTest, RangeSpreadsDeclaredDenseIds) {
  const Placement range{PlacementKind::kRange, {0, 99999}};
  for (SpreadBound b : kSpreadBounds) {
    for (uint32_t servers : {1u, 2u, 3u, 8u}) {
      EXPECT_LE(MaxDeviation(range, servers, b.vnodes, 100000), b.max_deviation)
          << servers << " servers, " << b.vnodes << " vnodes";
    }
  }
}

TEST(KeyPlacementTest, IdentityPutsDenseIdsOnOneServer) {
  // Why kIdentity is not the default: 0..99999 is a tiny corner of the ring.
  const Placement identity{PlacementKind::kIdentity, {}};
  EXPECT_DOUBLE_EQ(MaxDeviation(identity, 8, 64, 100000), 7.0);
}

}  // namespace
}  // namespace pserver::cluster
