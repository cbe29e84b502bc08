#include "kv/server/apply_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace pserver::kv {
namespace {

TEST(ApplyPoolTest, SizeOneRunsInlineOnTheCaller) {
  ApplyPool pool(1);
  EXPECT_EQ(pool.size(), 1u);
  std::vector<uint32_t> shards;
  std::thread::id ran_on;
  pool.Run([&](uint32_t s) {
    shards.push_back(s);
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(shards, std::vector<uint32_t>{0});
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(ApplyPoolTest, ZeroIsTakenAsOne) { EXPECT_EQ(ApplyPool(0).size(), 1u); }

TEST(ApplyPoolTest, RunsEveryShardOnceShardZeroOnTheCaller) {
  ApplyPool pool(4);
  for (int run = 0; run < 1000; ++run) {
    std::vector<int> count(4, 0);
    std::vector<std::thread::id> threads(4);
    pool.Run([&](uint32_t s) {
      ++count[s];  // disjoint writes; Run makes them visible to the caller
      threads[s] = std::this_thread::get_id();
    });
    ASSERT_EQ(count, std::vector<int>(4, 1)) << "run " << run;
    ASSERT_EQ(threads[0], std::this_thread::get_id());
    ASSERT_EQ(std::set<std::thread::id>(threads.begin(), threads.end()).size(), 4u);
  }
}

TEST(ApplyPoolTest, ReturnsOnlyWhenAllShardsAreDone) {
  ApplyPool pool(3);
  std::atomic<int> done{0};
  pool.Run([&](uint32_t s) {
    if (s != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    done.fetch_add(1);
  });
  EXPECT_EQ(done.load(), 3);
}

TEST(ApplyPoolTest, DestroysCleanlyWithoutARun) {
  for (int i = 0; i < 20; ++i) ApplyPool pool(4);
}

}  // namespace
}  // namespace pserver::kv
