#include "kv/worker/slicer.h"

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pserver::kv {
namespace {

using cluster::Placement;
using cluster::PlacementKind;
using cluster::Ring;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

Ring MustBuild(uint32_t servers, uint32_t vnodes) {
  std::vector<uint32_t> ranks(servers);
  for (uint32_t i = 0; i < servers; ++i) ranks[i] = i * 3 + 1;  // sparse ranks on purpose
  Result<Ring> ring = Ring::Build(ranks, vnodes);
  EXPECT_TRUE(ring.ok()) << ring.status();
  return std::move(ring).value();
}

// The obvious answer: per key Owner(), then per server its indices in key order, consecutive
// indices merged.
Slices Reference(const std::vector<Key>& keys, const Placement& p, const Ring& ring) {
  Slices slices;
  for (uint32_t server : ring.servers()) {
    std::vector<std::pair<uint64_t, uint32_t>> mine;
    for (uint32_t i = 0; i < keys.size(); ++i) {
      const uint64_t routing = cluster::RoutingKey(p, keys[i]);
      if (ring.Owner(routing) == server) mine.push_back({routing, i});
    }
    if (mine.empty()) continue;
    Slice slice{server, {}, static_cast<uint32_t>(mine.size())};
    for (const auto& [routing, i] : mine) {
      if (!slice.runs.empty() && slice.runs.back().end == i) {
        ++slice.runs.back().end;
      } else {
        slice.runs.push_back({i, i + 1});
      }
    }
    slices.push_back(std::move(slice));
  }
  return slices;
}

void ExpectSameSlices(const Slices& got, const Slices& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < got.size(); ++s) {
    EXPECT_EQ(got[s].server, want[s].server) << "slice " << s;
    EXPECT_EQ(got[s].num_keys, want[s].num_keys) << "slice " << s;
    ASSERT_EQ(got[s].runs, want[s].runs) << "slice " << s;
  }
}

std::vector<Key> SortedUnique(std::vector<Key> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

// Keys of three shapes: uniform over 2^64, dense from `base`, and clustered around a few
// centres (sparse features).
std::vector<Key> RandomKeys(int shape, size_t n, std::mt19937_64& rng) {
  std::vector<Key> keys;
  const Key base = rng() % 1000;
  for (size_t i = 0; i < n; ++i) {
    switch (shape) {
      case 0: keys.push_back(rng()); break;
      case 1: keys.push_back(base + i); break;
      default: keys.push_back((rng() % 4) * (kMax / 4) + rng() % (4 * n)); break;
    }
  }
  return SortedUnique(std::move(keys));
}

TEST(SlicerTest, MatchesPerKeyOwnerReference) {
  const uint64_t seed = 1234567;
  std::cout << "seed " << seed << "\n";
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (uint32_t servers : {1u, 2u, 3u, 8u}) {
    for (uint32_t vnodes : {1u, 64u}) {
      const Ring ring = MustBuild(servers, vnodes);
      for (size_t n : {size_t{1}, size_t{2}, size_t{17}, size_t{1000}, size_t{20000}}) {
        for (int shape = 0; shape < 3; ++shape) {
          const std::vector<Key> keys = RandomKeys(shape, n, rng);
          const KeyRange tight{keys.front(), keys.back()};
          const KeyRange loose{keys.front() / 2, keys.back() + (kMax - keys.back()) / 2};
          for (const Placement& p :
               {Placement{PlacementKind::kHashed, {}}, Placement{PlacementKind::kIdentity, {}},
                Placement{PlacementKind::kRange, tight}, Placement{PlacementKind::kRange, loose},
                Placement{PlacementKind::kRange, {0, kMax}}}) {
            SCOPED_TRACE("servers=" + std::to_string(servers) +
                         " vnodes=" + std::to_string(vnodes) + " n=" + std::to_string(n) +
                         " shape=" + std::to_string(shape) +
                         " kind=" + std::to_string(static_cast<int>(p.kind)));
            Result<Slices> slices = SliceKeys(keys, p, ring);
            ASSERT_TRUE(slices.ok()) << slices.status();
            ExpectSameSlices(*slices, Reference(keys, p, ring));
          }
        }
      }
    }
  }
}

TEST(SlicerTest, HashedHandlesKeysCraftedToShareMixedBits) {
  // Keys whose mixed values are consecutive, or equal in their top bits, crowd into one ring
  // prefix (Ring::Owner's table); the result must still be exact.
  const Ring ring = MustBuild(3, 64);
  for (uint64_t base : {uint64_t{0}, uint64_t{1} << 40, kMax - 5000}) {
    std::vector<Key> keys;
    for (uint64_t j = 0; j < 3000; ++j) keys.push_back(cluster::UnmixKey(base + j * 7));
    for (uint64_t j = 0; j < 3000; ++j) keys.push_back(cluster::UnmixKey((j << 50) | base >> 14));
    keys = SortedUnique(keys);
    Result<Slices> slices = SliceKeys(keys, Placement{}, ring);
    ASSERT_TRUE(slices.ok());
    ExpectSameSlices(*slices, Reference(keys, Placement{}, ring));
  }
}

TEST(SlicerTest, EmptyRequestGivesNoSlices) {
  const Ring ring = MustBuild(3, 64);
  for (PlacementKind kind :
       {PlacementKind::kHashed, PlacementKind::kRange, PlacementKind::kIdentity}) {
    Result<Slices> slices = SliceKeys({}, Placement{kind, {10, 20}}, ring);
    ASSERT_TRUE(slices.ok());
    EXPECT_TRUE(slices->empty());
  }
}

TEST(SlicerTest, SingleServerGetsEverythingInOneRunWhenOrdered) {
  const Ring ring = MustBuild(1, 64);
  std::vector<Key> keys;
  for (Key k = 0; k < 1000; ++k) keys.push_back(k * 7919);
  for (const Placement& p : {Placement{PlacementKind::kIdentity, {}},
                             Placement{PlacementKind::kRange, {0, 1000 * 7919}}}) {
    Result<Slices> slices = SliceKeys(keys, p, ring);
    ASSERT_TRUE(slices.ok());
    ASSERT_EQ(slices->size(), 1u);
    EXPECT_EQ((*slices)[0].runs, (IndexRuns{{0, 1000}}));
    EXPECT_EQ((*slices)[0].num_keys, 1000u);
  }
}

TEST(SlicerTest, SplitsAtRangeBoundaries) {
  const Ring ring = MustBuild(2, 4);
  // Keys at both ends of every segment: each segment is one run, and runs alternate servers.
  std::vector<Key> keys;
  for (const cluster::RingSegment& s : ring.segments()) {
    keys.push_back(s.range.first);
    keys.push_back(s.range.last);
  }
  keys = SortedUnique(keys);
  Result<Slices> slices = SliceKeys(keys, {PlacementKind::kIdentity, {}}, ring);
  ASSERT_TRUE(slices.ok());
  size_t runs = 0;
  for (const Slice& s : *slices) {
    runs += s.runs.size();
    for (const IndexRun& r : s.runs) {
      EXPECT_EQ(ring.Owner(keys[r.begin]), s.server);
      EXPECT_EQ(ring.Owner(keys[r.end - 1]), s.server);
    }
  }
  EXPECT_EQ(runs, ring.segments().size());
}

TEST(SlicerTest, RangePlacementGivesFewRuns) {
  const Ring ring = MustBuild(8, 64);
  std::vector<Key> keys;
  for (Key k = 0; k < 100000; ++k) keys.push_back(k);
  Result<Slices> slices = SliceKeys(keys, {PlacementKind::kRange, {0, 99999}}, ring);
  ASSERT_TRUE(slices.ok());
  ASSERT_EQ(slices->size(), 8u);
  size_t runs = 0;
  for (const Slice& s : *slices) runs += s.runs.size();
  // One run per segment that holds a key: a segment narrower than the 2^64 / 100000 spacing of
  // the scaled keys may hold none.
  std::vector<size_t> touched;
  for (Key k : keys) touched.push_back(ring.SegmentIndex(cluster::ScaleKey(k, {0, 99999})));
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  EXPECT_EQ(runs, touched.size());
  EXPECT_GT(runs, ring.segments().size() * 9 / 10);
}

TEST(SlicerTest, RefusesKeysOutsideDeclaredRange) {
  const Ring ring = MustBuild(2, 64);
  const Placement p{PlacementKind::kRange, {10, 20}};
  const std::vector<Key> below = {5, 10, 11};
  Status s = SliceKeys(below, p, ring).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "key 5 at index 0 is outside the table's declared range [10, 20]");
  const std::vector<Key> above = {10, 20, 21, 22};
  s = SliceKeys(above, p, ring).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "key 21 at index 2 is outside the table's declared range [10, 20]");
  const std::vector<Key> inside = {10, 20};
  EXPECT_TRUE(SliceKeys(inside, p, ring).ok());
}

TEST(SlicerTest, RefusesEmptyDeclaredRange) {
  const Ring ring = MustBuild(2, 64);
  const std::vector<Key> keys = {1};
  const Status s = SliceKeys(keys, {PlacementKind::kRange, {5, 4}}, ring).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "table's declared key range [5, 4] is empty");
}

TEST(SlicerTest, CheckSortedUniqueAcceptsSortedKeys) {
  EXPECT_TRUE(CheckSortedUnique({}).ok());
  const std::vector<Key> one = {kMax};
  EXPECT_TRUE(CheckSortedUnique(one).ok());
  const std::vector<Key> sorted = {0, 1, 5, kMax};
  EXPECT_TRUE(CheckSortedUnique(sorted).ok());
}

TEST(SlicerTest, CheckSortedUniqueNamesTheOffendingKeys) {
  const std::vector<Key> dup = {1, 2, 42, 42, 50};
  Status s = CheckSortedUnique(dup);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "duplicate key 42 at index 3");
  const std::vector<Key> unsorted = {1, 2, 3, 4, 5, 6, 99, 42};
  s = CheckSortedUnique(unsorted);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "keys not sorted ascending at index 7: 42 follows 99");
}

// The order of a hashed request lists, slice after slice, exactly the keys that slice's runs
// (when asked for without an order) hold, ascending; moving rows by order equals moving them by
// runs. A request whose keys all go to one server gets that slice's one run instead.
TEST(SlicerTest, OrderOfAHashedRequestMatchesItsRunsAndMovesTheSameRows) {
  std::mt19937_64 rng(20261130);
  for (uint32_t servers : {2u, 3u, 8u}) {
    const Ring ring = MustBuild(servers, 64);
    for (size_t n : {size_t{1}, size_t{3}, size_t{1000}}) {  // few keys: some servers get none
      std::vector<Key> keys(n);
      for (Key& k : keys) k = rng();
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
      std::vector<uint32_t> order = {7};
      Result<Slices> by_order = SliceKeys(keys, {PlacementKind::kHashed, {}}, ring, &order);
      Result<Slices> slices = SliceKeys(keys, {PlacementKind::kHashed, {}}, ring);
      ASSERT_TRUE(by_order.ok() && slices.ok());
      ASSERT_EQ(by_order->size(), slices->size());
      if (slices->size() == 1) {  // one server: its one run, no order
        EXPECT_TRUE(order.empty());
        EXPECT_EQ((*by_order)[0].runs, (*slices)[0].runs);
        EXPECT_EQ((*by_order)[0].num_keys, keys.size());
        continue;
      }
      ASSERT_EQ(order.size(), keys.size()) << servers << " servers, " << n << " keys";
      // The same slices, without runs; each slice's part of the order is its runs' keys.
      std::span<const uint32_t> rest = order;
      for (size_t s = 0; s < slices->size(); ++s) {
        EXPECT_EQ((*by_order)[s].server, (*slices)[s].server);
        EXPECT_EQ((*by_order)[s].num_keys, (*slices)[s].num_keys);
        EXPECT_TRUE((*by_order)[s].runs.empty());
        std::vector<uint32_t> from_runs;
        for (const IndexRun& r : (*slices)[s].runs) {
          for (uint32_t i = r.begin; i < r.end; ++i) from_runs.push_back(i);
        }
        ASSERT_LE(from_runs.size(), rest.size());
        EXPECT_EQ(std::vector<uint32_t>(rest.begin(), rest.begin() + from_runs.size()), from_runs) << "slice " << s;
        rest = rest.subspan(from_runs.size());
      }
      EXPECT_TRUE(rest.empty());
      // Rows of 4, 8 and 12 bytes, split by order and by runs, then put back.
      for (size_t row : {size_t{4}, size_t{8}, size_t{12}}) {
        std::vector<std::byte> src(keys.size() * row);
        for (std::byte& b : src) b = static_cast<std::byte>(rng());
        std::vector<std::byte> back(src.size());
        std::span<const uint32_t> part = order;
        for (const Slice& s : *slices) {
          std::vector<std::byte> by_runs(s.num_keys * row), by_order_rows(s.num_keys * row);
          GatherRows(src.data(), s.runs, row, by_runs.data());
          GatherByOrder(src.data(), part.first(s.num_keys), row, by_order_rows.data());
          ASSERT_EQ(by_order_rows, by_runs);
          ScatterByOrder(by_order_rows.data(), part.first(s.num_keys), row, back.data());
          part = part.subspan(s.num_keys);
        }
        ASSERT_EQ(back, src);
      }
    }
  }
  // Other placements leave the order empty.
  std::vector<uint32_t> order = {7};
  const std::vector<Key> keys = {1, 2, 3};
  ASSERT_TRUE(SliceKeys(keys, {PlacementKind::kIdentity, {}}, MustBuild(2, 64), &order).ok());
  EXPECT_TRUE(order.empty());
}

// GatherRows and ScatterRows against a byte-by-byte reference, for rows of several sizes,
// with runs of one row and longer ones.
TEST(SlicerTest, GatherAndScatterRowsMatchAReferenceAndInvertEachOther) {
  std::mt19937_64 rng(20261130);
  for (size_t row : {1, 4, 8, 12, 64}) {
    for (int trial = 0; trial < 50; ++trial) {
      const uint32_t n = 1 + static_cast<uint32_t>(rng() % 200);
      // Random disjoint ascending runs over [0, n).
      IndexRuns runs;
      uint32_t i = 0;
      while (i < n) {
        const uint32_t skip = static_cast<uint32_t>(rng() % 3);
        const uint32_t len = 1 + static_cast<uint32_t>(rng() % (rng() % 2 ? 1 : 9));
        const uint32_t b = std::min(n, i + skip), e = std::min(n, b + len);
        if (b < e) runs.push_back({b, e});
        i = e + 1;
      }
      std::vector<std::byte> src(n * row);
      for (std::byte& b : src) b = static_cast<std::byte>(rng());
      std::vector<std::byte> want;
      for (const IndexRun& r : runs) {
        want.insert(want.end(), src.begin() + r.begin * row, src.begin() + r.end * row);
      }
      std::vector<std::byte> got(want.size());
      GatherRows(src.data(), runs, row, got.data());
      ASSERT_EQ(got, want) << "row " << row << " trial " << trial;
      std::vector<std::byte> back(src.size(), std::byte{0});
      ScatterRows(got.data(), runs, row, back.data());
      for (const IndexRun& r : runs) {
        for (uint32_t k = r.begin * row; k < r.end * row; ++k) ASSERT_EQ(back[k], src[k]) << "row " << row;
      }
    }
  }
}

}  // namespace
}  // namespace pserver::kv
