#include "kv/worker/unfinished_tasks.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "testing/test_util.h"

namespace pserver::kv {
namespace {

TEST(UnfinishedTasksTest, TracksOldestAsTasksFinishOutOfOrder) {
  UnfinishedTasks u;
  EXPECT_TRUE(u.empty());
  for (int64_t ts = 1; ts <= 4; ++ts) u.Add(ts);
  EXPECT_EQ(u.oldest(), 1);
  u.Remove(2);
  EXPECT_FALSE(u.Contains(2));
  EXPECT_EQ(u.oldest(), 1);
  u.Remove(1);
  EXPECT_EQ(u.oldest(), 3);
  u.Remove(4);
  EXPECT_EQ(u.oldest(), 3);
  EXPECT_EQ(u.size(), 1u);
  u.Remove(3);
  EXPECT_TRUE(u.empty());
  u.Remove(3);  // absent: no-op
  u.Remove(99);
  EXPECT_TRUE(u.empty());
  u.Add(10);  // after emptying, a later timestamp restarts the window
  EXPECT_EQ(u.oldest(), 10);
  EXPECT_TRUE(u.Contains(10));
  EXPECT_FALSE(u.Contains(9));
}

TEST(UnfinishedTasksTest, SkippedTimestampsAreNotMembers) {
  UnfinishedTasks u;
  u.Add(5);
  u.Add(9);
  EXPECT_FALSE(u.Contains(7));
  u.Remove(5);
  EXPECT_EQ(u.oldest(), 9);
}

TEST(UnfinishedTasksTest, MatchesStdSetUnderRandomOperations) {
  const uint64_t seed = pserver::testing::TestSeed();
  std::mt19937_64 rng(seed);
  UnfinishedTasks u;
  std::set<int64_t> model;
  int64_t next = 1;
  for (int i = 0; i < 200000; ++i) {
    if (model.size() < 64 && rng() % 2 == 0) {
      next += 1 + static_cast<int64_t>(rng() % 3);
      u.Add(next);
      model.insert(next);
    } else if (!model.empty()) {
      // Finish a random unfinished task, or (sometimes) one that is not in the set.
      const int64_t ts = rng() % 8 == 0 ? next - static_cast<int64_t>(rng() % 80)
                                        : *std::next(model.begin(), static_cast<long>(rng() % model.size()));
      u.Remove(ts);
      model.erase(ts);
    }
    ASSERT_EQ(u.empty(), model.empty()) << "seed " << seed << " step " << i;
    ASSERT_EQ(u.size(), model.size());
    if (!model.empty()) {
      ASSERT_EQ(u.oldest(), *model.begin());
    }
    const int64_t probe = next - static_cast<int64_t>(rng() % 100);
    ASSERT_EQ(u.Contains(probe), model.contains(probe)) << "seed " << seed << " step " << i;
  }
}

}  // namespace
}  // namespace pserver::kv
