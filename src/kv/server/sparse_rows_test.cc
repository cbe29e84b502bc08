#include "kv/server/sparse_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/process_memory.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

TEST(SparseRowsTest, MixIsABijection) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  std::vector<uint64_t> xs = {0, 1, 2, ~uint64_t{0}, ~uint64_t{0} - 1, uint64_t{1} << 63};
  for (int i = 0; i < 100000; ++i) xs.push_back(rng());
  for (uint64_t x : xs) {
    EXPECT_EQ(UnmixKey(MixKey(x)), x);
    EXPECT_EQ(MixKey(UnmixKey(x)), x);
  }
  static_assert(UnmixKey(MixKey(12345)) == 12345);
}

TEST(SparseRowsTest, EmptyTableFindsNothing) {
  SparseRows<float> rows(1);
  EXPECT_EQ(rows.size(), 0u);
  EXPECT_EQ(rows.Find(0), nullptr);
  EXPECT_EQ(rows.Find(UnmixKey(~uint64_t{0})), nullptr);
}

TEST(SparseRowsTest, StoresEveryKeyValueIncludingTheEmptyMarkersKey) {
  SparseRows<int64_t> rows(2);
  const Key special = UnmixKey(~uint64_t{0});  // the key whose mix is the empty marker
  const std::vector<Key> keys = {0, 1, ~Key{0}, special, 42};
  for (Key k : keys) {
    auto [row, inserted] = rows.FindOrInsert(k);
    ASSERT_TRUE(inserted) << k;
    row[0] = static_cast<int64_t>(k);
    row[1] = -static_cast<int64_t>(k);
  }
  EXPECT_EQ(rows.size(), keys.size());
  for (Key k : keys) {
    auto [row, inserted] = rows.FindOrInsert(k);
    EXPECT_FALSE(inserted) << k;
    EXPECT_EQ(row[0], static_cast<int64_t>(k));
    const int64_t* found = rows.Find(k);
    ASSERT_NE(found, nullptr) << k;
    EXPECT_EQ(found[1], -static_cast<int64_t>(k));
  }
  EXPECT_EQ(rows.Find(7), nullptr);
}

// Mixes that share a home slot make probe runs longer than a lookup's branch-free window (8
// slots); lookups of stored and absent mixes inside, before and after such runs stay exact.
TEST(SparseRowsTest, FindsKeysInProbeRunsLongerThanTheLookupWindow) {
  SparseRows<float> rows(1);
  rows.Reserve(1000);  // capacity ~1150: mixes within 2^64 / 2^11 of each other share a home
  constexpr uint64_t kBase = uint64_t{1} << 62;
  std::vector<uint64_t> stored;
  for (uint64_t i = 0; i < 40; ++i) stored.push_back(kBase + 2 * i);  // one run of 40 slots
  for (uint64_t i = 0; i < 20; ++i) stored.push_back((uint64_t{3} << 62) + 4 * i);
  for (uint64_t i = 0; i < stored.size(); ++i) {
    auto [row, inserted] = rows.FindOrInsertMixed(stored[i]);
    ASSERT_TRUE(inserted) << i;
    *row = static_cast<float>(i);
  }
  for (uint64_t i = 0; i < stored.size(); ++i) {
    const float* row = std::as_const(rows).FindMixed(stored[i]);
    ASSERT_NE(row, nullptr) << i;
    EXPECT_EQ(*row, static_cast<float>(i));
    EXPECT_FALSE(rows.FindOrInsertMixed(stored[i]).inserted) << i;
    EXPECT_EQ(std::as_const(rows).FindMixed(stored[i] + 1), nullptr) << i;  // between stored mixes
  }
  EXPECT_EQ(std::as_const(rows).FindMixed(kBase - 1), nullptr);
  EXPECT_EQ(std::as_const(rows).FindMixed(kBase + 200), nullptr);
  EXPECT_EQ(rows.size(), stored.size());
}

// Random and sequential keys against std::unordered_map, through many growths.
TEST(SparseRowsTest, MatchesAReferenceMapThroughGrowth) {
  const uint64_t seed = pserver::testing::TestSeed();
  std::mt19937_64 rng(seed);
  SparseRows<double> rows(3);
  std::unordered_map<Key, double> ref;
  for (int i = 0; i < 200000; ++i) {
    // Half sequential small ids (dense clusters), half random 64-bit keys, some repeats.
    const Key k = (i % 2 == 0) ? static_cast<Key>(rng() % 150000) : rng();
    const double v = static_cast<double>(i);
    auto [row, inserted] = rows.FindOrInsert(k);
    auto [it, fresh] = ref.try_emplace(k, 0.0);
    ASSERT_EQ(inserted, fresh) << "key " << k << " step " << i;
    if (inserted) {
      row[0] = row[1] = row[2] = 0.0;
    }
    row[0] += v;
    row[2] = static_cast<double>(k % 1000);
    it->second += v;
  }
  ASSERT_EQ(rows.size(), ref.size());
  for (const auto& [k, v] : ref) {
    const double* row = rows.Find(k);
    ASSERT_NE(row, nullptr) << k;
    EXPECT_EQ(row[0], v);
    EXPECT_EQ(row[1], 0.0);
    EXPECT_EQ(row[2], static_cast<double>(k % 1000));
  }
  for (int i = 0; i < 10000; ++i) {
    const Key k = rng();
    if (!ref.contains(k)) {
      EXPECT_EQ(rows.Find(k), nullptr) << k;
    }
  }
  // ForEach visits each stored key once, with its row.
  size_t visited = 0;
  rows.ForEach([&](Key k, const double* row) {
    ++visited;
    auto it = ref.find(k);
    ASSERT_NE(it, ref.end()) << k;
    EXPECT_EQ(row[0], it->second);
  });
  EXPECT_EQ(visited, ref.size());
  const double load = static_cast<double>(rows.size()) / static_cast<double>(rows.capacity());
  EXPECT_LE(load, 0.9);
}

// Erasing keeps every other key findable with its row (also in long probe runs and for the key
// whose mix is the empty marker), and later inserts and lookups work as before.
TEST(SparseRowsTest, EraseIfRemovesExactlyTheMatchingKeys) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  SparseRows<int64_t> rows(2);
  std::unordered_map<Key, int64_t> ref;
  const Key special = UnmixKey(~uint64_t{0});
  std::vector<Key> keys = {special, 0, 1, ~Key{0}};
  for (int i = 0; i < 50000; ++i) keys.push_back(i % 2 == 0 ? static_cast<Key>(i) : rng());
  for (Key k : keys) {
    auto [row, inserted] = rows.FindOrInsert(k);
    row[0] = static_cast<int64_t>(k * 3);
    row[1] = -static_cast<int64_t>(k);
    ref[k] = static_cast<int64_t>(k * 3);
  }
  // Clustered mixes: a probe run far longer than the lookup window, half of it erased.
  for (uint64_t i = 0; i < 40; ++i) {
    const Key k = UnmixKey((uint64_t{1} << 62) + i);
    rows.FindOrInsert(k).row[0] = static_cast<int64_t>(k * 3);
    ref[k] = static_cast<int64_t>(k * 3);
  }
  const auto doomed = [&](Key k) { return k == special || k % 3 == 0; };
  size_t want = 0;
  for (const auto& [k, v] : ref) want += doomed(k) ? 1 : 0;
  EXPECT_EQ(rows.EraseIf(doomed), want);
  std::erase_if(ref, [&](const auto& kv) { return doomed(kv.first); });
  ASSERT_EQ(rows.size(), ref.size());
  for (const auto& [k, v] : ref) {
    const int64_t* row = rows.Find(k);
    ASSERT_NE(row, nullptr) << k;
    EXPECT_EQ(row[0], v);
  }
  for (Key k : keys) {
    if (doomed(k)) {
      EXPECT_EQ(rows.Find(k), nullptr) << k;
    }
  }
  size_t visited = 0;
  rows.ForEach([&](Key k, const int64_t*) { visited += ref.contains(k) ? 1 : 0; });
  EXPECT_EQ(visited, ref.size());
  // The erased keys come back as new ones.
  EXPECT_TRUE(rows.FindOrInsert(special).inserted);
  EXPECT_TRUE(rows.FindOrInsert(3).inserted);
  EXPECT_FALSE(rows.FindOrInsert(1).inserted);
  EXPECT_EQ(rows.EraseIf([](Key) { return true; }), ref.size() + 2);
  EXPECT_EQ(rows.size(), 0u);
  EXPECT_EQ(rows.Find(1), nullptr);
}

TEST(SparseRowsTest, ReserveAvoidsGrowth) {
  SparseRows<float> rows(1);
  rows.Reserve(100000);
  const size_t capacity = rows.capacity();
  for (Key k = 0; k < 100000; ++k) rows.FindOrInsert(k * 7919).row[0] = 1.0f;
  EXPECT_EQ(rows.capacity(), capacity);
  EXPECT_EQ(rows.size(), 100000u);

  SparseRows<float> big(1);  // mapped arrays
  big.Reserve(1'000'000);
  const size_t big_capacity = big.capacity();
  for (Key k = 0; k < 1'000'000; ++k) big.FindOrInsert(k * 7919).row[0] = 1.0f;
  EXPECT_EQ(big.capacity(), big_capacity);
  EXPECT_EQ(big.size(), 1'000'000u);
}

// A model test of growth: over several seeded sequences of inserts, updates and erasures, each
// crossing many growth steps (in place, from the heap into mappings, erasures between them), the
// table holds exactly the rows of a plain map -- the value and the rule state of every row.
TEST(SparseRowsTest, GrowthKeepsEveryRowAndItsState) {
  const uint64_t base = pserver::testing::TestSeed();
  for (uint64_t run = 0; run < 6; ++run) {
    const uint64_t seed = base + run;
    // Rows of 1 (the rows stay on the heap while the mixes are mapped), 2 (an AdaGrad row) and
    // 5 values (wide: the other load and growth factor).
    const uint32_t row_len = run % 3 == 0 ? 1 : run % 3 == 1 ? 2 : 5;
    SCOPED_TRACE(::testing::Message() << "sequence seed " << seed << ", row length " << row_len);
    std::mt19937_64 rng(seed);
    SparseRows<float> rows(row_len);
    std::unordered_map<Key, std::pair<float, float>> ref;  // row[0] and row[row_len - 1]
    const size_t steps = 400'000;
    for (size_t i = 0; i < steps; ++i) {
      // Random keys, keys of a small dense range (updates), and now and then an erasure.
      const Key k = (i % 3 == 0) ? static_cast<Key>(rng() % 50000) : rng();
      const float g = static_cast<float>(i % 97) * 0.25f;
      auto [row, inserted] = rows.FindOrInsert(k);
      auto [it, fresh] = ref.try_emplace(k, 0.0f, 0.0f);
      ASSERT_EQ(inserted, fresh) << "key " << k << " step " << i;
      if (inserted) std::fill(row, row + row_len, 0.0f);
      row[row_len - 1] += g * g;
      row[0] -= g / (1.0f + row[row_len - 1]);
      if (row_len == 1) {  // the state is the value itself
        it->second.first += g * g;
        it->second.first -= g / (1.0f + it->second.first);
        it->second.second = it->second.first;
      } else {
        it->second.second += g * g;
        it->second.first -= g / (1.0f + it->second.second);
      }
      if (i % 40000 == 39999) {
        const Key low = rng() % 50000;  // erase the dense keys below `low` whose value is odd
        const auto pred = [low](Key key) { return key < low && key % 2 == 1; };
        size_t expected = 0;
        for (auto e = ref.begin(); e != ref.end();) {
          if (pred(e->first)) {
            e = ref.erase(e);
            ++expected;
          } else {
            ++e;
          }
        }
        ASSERT_EQ(rows.EraseIf(pred), expected) << "step " << i;
      }
    }
    ASSERT_EQ(rows.size(), ref.size());
    for (const auto& [k, v] : ref) {
      const float* row = rows.Find(k);
      ASSERT_NE(row, nullptr) << k;
      ASSERT_EQ(row[0], v.first) << k;
      ASSERT_EQ(row[row_len - 1], v.second) << k;
    }
    size_t visited = 0;
    rows.ForEach([&](Key k, const float* row) {
      ++visited;
      auto it = ref.find(k);
      ASSERT_NE(it, ref.end()) << k;
      EXPECT_EQ(row[0], it->second.first);
    });
    EXPECT_EQ(visited, ref.size());
    for (int i = 0; i < 1000; ++i) {
      const Key k = rng();
      if (!ref.contains(k)) {
        EXPECT_EQ(rows.Find(k), nullptr) << k;
      }
    }
  }
}

// Growth in place: while a large table grows, the process's memory rises by the growth only --
// the old and the new arrays are never resident together, as a copy into new arrays would have
// them (it would need the whole new table, about 1.1 times the old, on top).
TEST(SparseRowsTest, GrowsInPlaceWithoutASecondCopy) {
  if (pserver::testing::kSanitized) GTEST_SKIP() << "resident sizes mean nothing under a sanitizer";
  std::mt19937_64 rng(pserver::testing::TestSeed());
  SparseRows<float> rows(1);
  while (rows.size() < 3'000'000) rows.FindOrInsert(rng()).row[0] = 1.0f;
  const size_t capacity = rows.capacity();
  const size_t before_bytes = rows.memory_bytes();
  ASSERT_TRUE(base::ResetPeakRss().ok());
  const Result<base::ProcessMemory> before = base::ReadProcessMemory();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  while (rows.capacity() == capacity) rows.FindOrInsert(rng()).row[0] = 1.0f;
  const Result<base::ProcessMemory> after = base::ReadProcessMemory();
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  const size_t grown_by = rows.memory_bytes() - before_bytes;
  const size_t rose_by = after->peak_bytes - before->rss_bytes;
  std::printf("table %zu -> %zu bytes; resident peak rose by %zu bytes\n", before_bytes, rows.memory_bytes(), rose_by);
  EXPECT_LE(rose_by, grown_by + (size_t{4} << 20));  // 4 MiB for pages of the process's own
  EXPECT_LT(grown_by + (size_t{4} << 20), before_bytes);  // so the check above can fail
}

// Each array stays one kernel mapping however often it grows: a growth moves and extends it in
// one step. (Moving its pages into a second, larger mapping would leave two mappings, which
// kernels before 6.17 cannot move again, and their count would approach the process's limit.)
TEST(SparseRowsTest, EachArrayStaysOneMappingAsItGrows) {
  const auto mappings = [] {
    std::ifstream maps("/proc/self/maps");
    size_t n = 0;
    for (std::string line; std::getline(maps, line);) ++n;
    return n;
  };
  std::mt19937_64 rng(pserver::testing::TestSeed());
  SparseRows<float> rows(1);
  while (rows.size() < 20'000) rows.FindOrInsert(rng()).row[0] = 1.0f;  // both arrays mapped
  const size_t before = mappings();
  const size_t capacity = rows.capacity();
  while (rows.size() < 2'000'000) rows.FindOrInsert(rng()).row[0] = 1.0f;
  ASSERT_GT(rows.capacity(), 50 * capacity);  // some 40 growths of each array
  EXPECT_LE(mappings(), before + 4);
}

// Keys whose mixes all lie just below 2^64 pile up at the end of the table: their probe run
// passes the tail, which makes the table grow early (and Rebuild try larger capacities) rather
// than lose a key.
TEST(SparseRowsTest, KeysCrowdingTheEndOfTheTableAreAllKept) {
  SparseRows<double> rows(2);
  std::vector<Key> keys;
  for (uint64_t i = 0; i < 3000; ++i) keys.push_back(UnmixKey(~uint64_t{0} - 1 - i));
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [row, inserted] = rows.FindOrInsert(keys[i]);
    ASSERT_TRUE(inserted) << i;
    row[0] = static_cast<double>(i);
    row[1] = -static_cast<double>(i);
  }
  ASSERT_EQ(rows.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const double* row = rows.Find(keys[i]);
    ASSERT_NE(row, nullptr) << i;
    EXPECT_EQ(row[0], static_cast<double>(i));
    EXPECT_EQ(row[1], -static_cast<double>(i));
  }
}

// The memory figure (not a timing test): a width-1 float table keeps its load between 0.79 and
// 0.875 at every size, at most 16 bytes per key all overhead included.
TEST(SparseRowsTest, NarrowRowsCostAtMostSixteenBytesPerKey) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  SparseRows<float> rows(1);
  size_t worst_checked = 0;
  for (size_t i = 1; i <= 1'000'000; ++i) {
    rows.FindOrInsert(rng()).row[0] = 0.5f;
    if (i >= 100'000 && i % 25'000 == 0) {
      const double per_key = static_cast<double>(rows.memory_bytes()) / static_cast<double>(rows.size());
      EXPECT_LE(per_key, 16.0) << "at " << i << " keys";
      const double load = static_cast<double>(rows.size()) / static_cast<double>(rows.capacity());
      EXPECT_GE(load, 0.79) << "at " << i << " keys";
      EXPECT_LE(load, 0.9) << "at " << i << " keys";
      ++worst_checked;
    }
  }
  EXPECT_GT(worst_checked, 0u);
  std::printf("1M float keys: %.2f bytes/key, load %.3f\n",
              static_cast<double>(rows.memory_bytes()) / static_cast<double>(rows.size()),
              static_cast<double>(rows.size()) / static_cast<double>(rows.capacity()));
}

}  // namespace
}  // namespace pserver::kv
