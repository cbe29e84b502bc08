#include "kv/server/range_clock.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>

namespace pserver::kv {
namespace {

constexpr Key kMax = std::numeric_limits<Key>::max();

// Worker i's first run (or run `run`): node id 100 + i, an identity that differs per run.
WorkerIncarnation Worker(uint32_t i, uint64_t run = 1) {
  return {NodeId{100 + i}, transport::ConnectionId{.hi = run, .lo = 1000 + i}};
}

std::vector<WorkerIncarnation> Workers(uint32_t n) {
  std::vector<WorkerIncarnation> out;
  for (uint32_t i = 0; i < n; ++i) out.push_back(Worker(i));
  return out;
}

TEST(RangeClockTest, StartsAtZeroEverywhere) {
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(3);
  EXPECT_EQ(c.Get({0, kMax}, ws), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(c.num_segments(), 1u);
}

TEST(RangeClockTest, SetSplitsIntoAtMostThreeSegments) {
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(2);
  c.Set({100, 200}, ws[1], 5);
  EXPECT_EQ(c.num_segments(), 3u);
  EXPECT_EQ(c.Get({100, 200}, ws), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(c.Get({0, 99}, ws), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(c.Get({201, kMax}, ws), (std::vector<int64_t>{0, 0}));
  // A range straddling the edge includes only what all its keys include.
  EXPECT_EQ(c.Get({150, 250}, ws), (std::vector<int64_t>{0, 0}));
}

TEST(RangeClockTest, EqualNeighboursMerge) {
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(1);
  c.Set({100, 200}, ws[0], 5);
  c.Set({0, 99}, ws[0], 5);
  c.Set({201, kMax}, ws[0], 5);
  EXPECT_EQ(c.num_segments(), 1u);
  EXPECT_EQ(c.Get({0, kMax}, ws), (std::vector<int64_t>{5}));
}

TEST(RangeClockTest, CoversDetectsDuplicatesOnly) {
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(2);
  c.Set({10, 20}, ws[0], 1);
  c.Set({30, 40}, ws[0], 2);
  EXPECT_TRUE(c.Covers({10, 20}, ws[0], 1));   // the same request again
  EXPECT_TRUE(c.Covers({12, 18}, ws[0], 1));
  EXPECT_FALSE(c.Covers({10, 20}, ws[0], 3));  // a newer request
  EXPECT_FALSE(c.Covers({15, 35}, ws[0], 2));  // keys 21..29 never saw request 2
  EXPECT_FALSE(c.Covers({10, 20}, ws[1], 1));  // another worker
}

// A restarted worker keeps its node id but presents a new identity and numbers its requests from
// 1 again: its request 1 is new, while a resend of its predecessor's request 1 is a duplicate.
TEST(RangeClockTest, ARestartedWorkersTimestampsAreItsOwn) {
  RangeClock c;
  const WorkerIncarnation first = Worker(0, 1), restarted = Worker(0, 2);
  c.Set({10, 20}, first, 1);
  c.Set({10, 20}, first, 2);
  EXPECT_TRUE(c.Covers({10, 20}, first, 1)) << "a resend of the first run's request 1";
  EXPECT_FALSE(c.Covers({10, 20}, restarted, 1)) << "the restarted worker's own request 1";
  c.Set({10, 15}, restarted, 1);
  EXPECT_TRUE(c.Covers({10, 15}, restarted, 1));
  EXPECT_FALSE(c.Covers({10, 20}, restarted, 1)) << "keys 16..20 never saw the restarted request 1";
  EXPECT_EQ(c.Get({10, 15}, std::vector<WorkerIncarnation>{first, restarted}), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(c.Get({10, 20}, std::vector<WorkerIncarnation>{restarted}), (std::vector<int64_t>{0}));
  EXPECT_EQ(c.num_workers(), 2u);
}

TEST(RangeClockTest, WholeKeySpaceEdges) {
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(1);
  c.Set({0, kMax}, ws[0], 7);
  EXPECT_EQ(c.num_segments(), 1u);
  c.Set({kMax, kMax}, ws[0], 8);
  EXPECT_EQ(c.Get({kMax, kMax}, ws), (std::vector<int64_t>{8}));
  EXPECT_EQ(c.Get({0, kMax}, ws), (std::vector<int64_t>{7}));
  EXPECT_EQ(c.num_segments(), 2u);
}

// Against a brute-force model over a small key space: per key, per worker, the newest set.
TEST(RangeClockTest, MatchesPerKeyModelOnRandomSets) {
  const uint32_t seed = 20261130;
  std::printf("seed %u\n", seed);
  std::mt19937_64 rng(seed);
  const Key space = 64;
  const uint32_t workers = 3;
  RangeClock c;
  const std::vector<WorkerIncarnation> ws = Workers(workers);
  std::vector<std::vector<int64_t>> model(space, std::vector<int64_t>(workers, 0));
  std::vector<int64_t> next_ts(workers, 1);
  for (int step = 0; step < 2000; ++step) {
    Key a = rng() % space, b = rng() % space;
    if (a > b) std::swap(a, b);
    uint32_t w = rng() % workers;
    int64_t ts = next_ts[w]++;
    c.Set({a, b}, ws[w], ts);
    for (Key k = a; k <= b; ++k) model[k][w] = ts;
    Key qa = rng() % space, qb = rng() % space;
    if (qa > qb) std::swap(qa, qb);
    std::vector<int64_t> want(workers, std::numeric_limits<int64_t>::max());
    for (Key k = qa; k <= qb; ++k) {
      for (uint32_t v = 0; v < workers; ++v) want[v] = std::min(want[v], model[k][v]);
    }
    // Keys beyond the model's space were never set.
    ASSERT_EQ(c.Get({qa, qb}, ws), want) << "step " << step;
    // Covers (the duplicate test) against the model: a push `ts` of worker v over [qa, qb] was
    // applied iff every key there includes v's push ts. Timestamps around the newest sets, and
    // sub-ranges of the set just made (a resend of part of it), are asked most.
    for (int q = 0; q < 4; ++q) {
      const uint32_t v = q == 0 ? w : static_cast<uint32_t>(rng() % workers);
      Key ca = qa, cb = qb;
      if (q == 0) {  // a sub-range of the set just made
        ca = a + rng() % (b - a + 1);
        cb = ca + rng() % (b - ca + 1);
      }
      const int64_t newest = next_ts[v] - 1;
      const int64_t probe = std::max<int64_t>(1, newest - static_cast<int64_t>(rng() % 4) + (q == 3 ? 1 : 0));
      bool covered = true;
      for (Key k = ca; k <= cb; ++k) covered = covered && model[k][v] >= probe;
      ASSERT_EQ(c.Covers({ca, cb}, ws[v], probe), covered)
          << "step " << step << ": worker " << v << " ts " << probe << " over [" << ca << ", " << cb << "]";
    }
    ASSERT_LE(c.num_segments(), 2 * space + 1);
  }
}

}  // namespace
}  // namespace pserver::kv
