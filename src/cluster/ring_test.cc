#include "cluster/ring.h"

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "cluster/cluster_test_util.h"

namespace pserver::cluster {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

Ring MustBuild(std::vector<uint32_t> ranks, uint32_t vnodes) {
  Result<Ring> ring = Ring::Build(std::move(ranks), vnodes);
  EXPECT_TRUE(ring.ok()) << ring.status();
  return std::move(ring).value();
}

std::vector<uint32_t> Iota(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// Checks the segments tile [0, 2^64-1] in order, with merged neighbours and known owners.
void ExpectTiles(const Ring& ring) {
  const std::vector<RingSegment>& s = ring.segments();
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s.front().range.first, 0u);
  EXPECT_EQ(s.back().range.last, kMax);
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_LE(s[i].range.first, s[i].range.last) << "segment " << i;
    EXPECT_TRUE(std::binary_search(ring.servers().begin(), ring.servers().end(), s[i].server));
    if (i == 0) continue;
    EXPECT_EQ(s[i].range.first, s[i - 1].range.last + 1) << "gap or overlap before segment " << i;
    EXPECT_NE(s[i].server, s[i - 1].server) << "unmerged neighbours at segment " << i;
  }
}

TEST(RingTest, CoversWholeKeySpace) {
  for (uint32_t n : {1u, 2u, 3u, 8u, 100u}) {
    for (uint32_t vnodes : {1u, 2u, 64u, Ring::kMaxVirtualNodes}) {
      SCOPED_TRACE("servers=" + std::to_string(n) + " vnodes=" + std::to_string(vnodes));
      ExpectTiles(MustBuild(Iota(n), vnodes));
    }
  }
}

TEST(RingTest, SingleServerOwnsEverything) {
  const Ring ring = MustBuild({5}, 64);
  ASSERT_EQ(ring.segments().size(), 1u);
  EXPECT_EQ(ring.segments()[0], (RingSegment{KeyRange{0, kMax}, 5}));
  EXPECT_EQ(ring.Owner(0), 5u);
  EXPECT_EQ(ring.Owner(kMax), 5u);
}

TEST(RingTest, BuildIsDeterministicAndIgnoresRankOrder) {
  const Ring a = MustBuild({0, 1, 2, 3, 4, 5, 6, 7}, 64);
  const Ring b = MustBuild({7, 3, 5, 1, 0, 6, 2, 4}, 64);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.servers(), Iota(8));
}

TEST(RingTest, PointsAreStableAcrossMachines) {
  // Golden values: a change here moves every key of every deployed table.
  EXPECT_EQ(RingPoint(0, 0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(RingPoint(0, 1), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(RingPoint(1, 0), 0x46093cf9861ec2e4ULL);
  EXPECT_EQ(RingPoint(7, 63), 0xe8762a43f5f3152fULL);
}

TEST(RingTest, EachPointBelongsToItsServer) {
  const Ring ring = MustBuild(Iota(8), 64);
  for (uint32_t r = 0; r < 8; ++r) {
    for (uint32_t i = 0; i < 64; ++i) EXPECT_EQ(ring.Owner(RingPoint(r, i)), r) << r << ":" << i;
  }
}

TEST(RingTest, PointsDoNotCollide) {
  std::vector<uint64_t> points;
  for (uint32_t r = 0; r < 256; ++r) {
    for (uint32_t i = 0; i < Ring::kMaxVirtualNodes; ++i) points.push_back(RingPoint(r, i));
  }
  std::sort(points.begin(), points.end());
  EXPECT_EQ(std::adjacent_find(points.begin(), points.end()), points.end());
}

TEST(RingTest, OwnerMatchesSegments) {
  const Ring ring = MustBuild({2, 9, 4}, 16);
  for (const RingSegment& s : ring.segments()) {
    EXPECT_EQ(ring.Owner(s.range.first), s.server);
    EXPECT_EQ(ring.Owner(s.range.last), s.server);
    EXPECT_EQ(ring.Owner(s.range.first + (s.range.last - s.range.first) / 2), s.server);
  }
  const uint64_t seed = 20240601;
  std::cout << "seed " << seed << "\n";
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t k = rng();
    const auto it = std::find_if(ring.segments().begin(), ring.segments().end(),
                                 [k](const RingSegment& s) { return s.range.Contains(k); });
    ASSERT_NE(it, ring.segments().end());
    EXPECT_EQ(ring.Owner(k), it->server) << "key " << k;
    EXPECT_EQ(ring.SegmentIndex(k), static_cast<size_t>(it - ring.segments().begin()));
  }
}

TEST(RingTest, RangesOfListsOwnSegments) {
  const Ring ring = MustBuild(Iota(3), 8);
  size_t total = 0;
  for (uint32_t r = 0; r < 3; ++r) {
    const std::vector<KeyRange> ranges = ring.RangesOf(r);
    EXPECT_FALSE(ranges.empty());
    total += ranges.size();
    for (size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_EQ(ring.Owner(ranges[i].first), r);
      EXPECT_EQ(ring.Owner(ranges[i].last), r);
      if (i > 0) {
        EXPECT_LT(ranges[i - 1].last, ranges[i].first);
      }
    }
  }
  EXPECT_EQ(total, ring.segments().size());
  EXPECT_TRUE(ring.RangesOf(3).empty());
}

TEST(RingTest, RejectsBadArguments) {
  EXPECT_EQ(Ring::Build({}, 64).status().code(), StatusCode::kInvalidArgument);
  const Status dup = Ring::Build({1, 2, 1}, 64).status();
  EXPECT_EQ(dup.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("duplicate server rank 1"), std::string::npos) << dup;
  EXPECT_EQ(Ring::Build({0}, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Ring::Build({0}, Ring::kMaxVirtualNodes + 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(Ring::Build({0}, Ring::kMaxVirtualNodes).ok());
}

TEST(RingTest, FromSegmentsTakesThePlacementAsGiven) {
  Result<Ring> ring = Ring::FromSegments({{KeyRange{0, 0}, 4}, {KeyRange{100, 0}, 2}, {KeyRange{200, 0}, 2},
                                          {KeyRange{uint64_t{1} << 63, 0}, 4}});
  ASSERT_TRUE(ring.ok()) << ring.status();
  ExpectTiles(*ring);
  // Each segment ends where the next begins; the two segments of server 2 merge.
  ASSERT_EQ(ring->segments().size(), 3u);
  EXPECT_EQ(ring->segments()[0], (RingSegment{KeyRange{0, 99}, 4}));
  EXPECT_EQ(ring->segments()[1], (RingSegment{KeyRange{100, (uint64_t{1} << 63) - 1}, 2}));
  EXPECT_EQ(ring->segments()[2], (RingSegment{KeyRange{uint64_t{1} << 63, kMax}, 4}));
  EXPECT_EQ(ring->servers(), (std::vector<uint32_t>{2, 4}));
  EXPECT_EQ(ring->Owner(99), 4u);
  EXPECT_EQ(ring->Owner(100), 2u);
  EXPECT_EQ(ring->RangesOf(4).size(), 2u);
  // A ring rebuilt from another's segments is that ring.
  const Ring random = MustBuild(Iota(5), 16);
  Result<Ring> copy = Ring::FromSegments(random.segments());
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(*copy, random);
}

TEST(RingTest, FromSegmentsRefusesWhatDoesNotTileTheSpace) {
  EXPECT_TRUE(testing::StatusIs(Ring::FromSegments({}).status(), StatusCode::kInvalidArgument, "no segments"));
  EXPECT_TRUE(testing::StatusIs(Ring::FromSegments({{KeyRange{5, 0}, 1}}).status(), StatusCode::kInvalidArgument,
                                "begins at 5, not 0"));
  EXPECT_TRUE(testing::StatusIs(Ring::FromSegments({{KeyRange{0, 0}, 1}, {KeyRange{9, 0}, 2}, {KeyRange{9, 0}, 1}})
                                    .status(),
                                StatusCode::kInvalidArgument, "segment 2 begins at 9"));
}

}  // namespace
}  // namespace pserver::cluster
