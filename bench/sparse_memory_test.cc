// The memory goal of the sparse store as a build fact: a sparse float table with a stateless
// rule costs at most 16 bytes of the process's resident memory per stored parameter, and its
// peak while growing stays within 1.25x of that (MeasureSparseMemory: the store itself, filled
// with 20 M random keys in requests of 100k). Not a timing test; skipped under sanitizers,
// whose shadow memory makes resident sizes meaningless.
#include <gtest/gtest.h>

#include <cstdio>

#include "sparse_workloads.h"
#include "testing/test_util.h"

namespace pserver::bench {
namespace {

TEST(SparseMemoryTest, TwentyMillionKeysCostAtMostSixteenBytesEachAndPeakWithinAQuarterMore) {
  if (pserver::testing::kSanitized) GTEST_SKIP() << "resident sizes mean nothing under a sanitizer";
  const uint64_t seed = pserver::testing::TestSeed();
  Result<SparseMemory> m = MeasureSparseMemory(20'000'000, 2, "sgd", seed);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const double resident = m->PerParam(m->resident_bytes);
  const double peak = m->PerParam(m->peak_bytes);
  std::printf("20M keys, 2 shards: resident %.2f B/param (untrimmed %.2f), peak %.2f, store's count %.2f\n", resident,
              m->PerParam(m->untrimmed_bytes), peak, m->PerParam(m->store_bytes));
  EXPECT_EQ(m->keys_measured + 100'000, m->keys);
  // A key and a float take 12 bytes: less means the measurement is broken, not the store good.
  EXPECT_GE(resident, 12.0);
  EXPECT_LE(resident, 16.0);
  // The peak and the untrimmed figure both count what the allocator holds free.
  EXPECT_LE(peak, 1.25 * m->PerParam(m->untrimmed_bytes));
}

}  // namespace
}  // namespace pserver::bench
