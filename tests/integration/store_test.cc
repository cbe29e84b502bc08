// The scheduler's Store (src/cluster/store.h): one conformance suite run against the file store
// and against a real etcd (Debian's etcd-server, started on loopback by the test and SIGKILLed
// and restarted to check durability), then what only one of them has: the file store's refusal
// of every kind of damaged file, and clear errors for an etcd that is not there.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cluster/store.h"
#include "tests/integration/etcd_process.h"
#include "tests/integration/subprocess.h"
#include "testing/test_util.h"

namespace pserver::testing {
namespace {

using cluster::OpenStore;
using cluster::Store;
using namespace std::chrono_literals;


std::filesystem::path MakeTempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("pserver_store_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The conformance suite: GetParam() is "file" or "etcd".
class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { root_ = MakeTempDir("suite"); }
  static void TearDownTestSuite() {
    etcd_.reset();
    std::filesystem::remove_all(root_);
  }

  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string name;
    for (char c : test) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    if (GetParam() == "file") {
      url_ = "file:" + (root_ / name).string();
    } else {
      if (!etcd_) {
        etcd_ = std::make_unique<EtcdProcess>(root_);
        std::string why;
        ASSERT_TRUE(etcd_->Start(&why)) << why;
      }
      url_ = "etcd:" + etcd_->endpoint() + "/test/" + name;  // a prefix of its own per test
    }
    Result<std::unique_ptr<Store>> s = OpenStore(url_);
    ASSERT_OK(s);
    store_ = std::move(*s);
  }
  std::unique_ptr<Store> Reopen() {
    Result<std::unique_ptr<Store>> s = OpenStore(url_);
    EXPECT_OK(s);
    return s.ok() ? std::move(*s) : nullptr;
  }

  static inline std::filesystem::path root_;
  static inline std::unique_ptr<EtcdProcess> etcd_;
  std::string url_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, AKeyWithoutAValueIsNotFound) {
  Result<std::string> got = store_->Get("job/state");
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << got.status();
  EXPECT_NE(got.status().message().find("job/state"), std::string::npos) << got.status();
}

TEST_P(StoreTest, ValuesOfAnyBytesRoundTripAndAPutReplaces) {
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  const std::string big(cluster::kMaxStoreValue, 'x');
  for (const std::string& value : {std::string("one"), binary, std::string(), big}) {
    ASSERT_OK(store_->Put("a/b", value));
    Result<std::string> got = store_->Get("a/b");
    ASSERT_OK(got);
    EXPECT_EQ(*got, value);
  }
}

TEST_P(StoreTest, ListGivesTheKeysUnderAPrefixInKeyOrder) {
  for (const char* key : {"job/b/c", "jobx", "job/a", "other", "job/b"}) ASSERT_OK(store_->Put(key, std::string("v-") + key));
  Result<std::vector<std::pair<std::string, std::string>>> under = store_->List("job/");
  ASSERT_OK(under);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"job/a", "v-job/a"}, {"job/b", "v-job/b"}, {"job/b/c", "v-job/b/c"}};
  EXPECT_EQ(*under, want);
  Result<std::vector<std::pair<std::string, std::string>>> all = store_->List("");
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ(all->front().first, "job/a");
  EXPECT_EQ(all->back().first, "other");
  Result<std::vector<std::pair<std::string, std::string>>> none = store_->List("nothing/");
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
}

TEST_P(StoreTest, DeleteRemovesAKeyAndIsFineWithoutOne) {
  ASSERT_OK(store_->Put("k", "v"));
  ASSERT_OK(store_->Delete("k"));
  EXPECT_EQ(store_->Get("k").status().code(), StatusCode::kNotFound);
  EXPECT_OK(store_->Delete("k"));
  Result<std::vector<std::pair<std::string, std::string>>> all = store_->List("");
  ASSERT_OK(all);
  EXPECT_TRUE(all->empty());
}

TEST_P(StoreTest, CompareAndSwapSetsOnlyOverTheExpectedValue) {
  Result<bool> set = store_->CompareAndSwap("gen", std::nullopt, "1");  // only if absent
  ASSERT_OK(set);
  EXPECT_TRUE(*set);
  set = store_->CompareAndSwap("gen", std::nullopt, "other");
  ASSERT_OK(set);
  EXPECT_FALSE(*set);
  set = store_->CompareAndSwap("gen", std::string("0"), "2");
  ASSERT_OK(set);
  EXPECT_FALSE(*set);
  EXPECT_EQ(*store_->Get("gen"), "1");  // nothing changed
  set = store_->CompareAndSwap("gen", std::string("1"), "2");
  ASSERT_OK(set);
  EXPECT_TRUE(*set);
  EXPECT_EQ(*store_->Get("gen"), "2");
  // An empty expected value is a value, not "absent".
  set = store_->CompareAndSwap("empty", std::string(), "x");
  ASSERT_OK(set);
  EXPECT_FALSE(*set);
}

// Two stores on the same place (as two processes would have) and two threads on each, every one
// incrementing a counter by compare-and-swap: no increment is lost.
TEST_P(StoreTest, CompareAndSwapIsAtomicAcrossStoresAndThreads) {
  std::unique_ptr<Store> second = Reopen();
  ASSERT_NE(second, nullptr);
  ASSERT_OK(store_->Put("counter", "0"));
  constexpr int kThreads = 4, kIncrements = 25;
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      Store& s = t % 2 == 0 ? *store_ : *second;
      threads.emplace_back([&s, &failures] {
        for (int i = 0; i < kIncrements; ++i) {
          for (;;) {
            Result<std::string> now = s.Get("counter");
            if (!now.ok()) {
              ++failures;
              return;
            }
            Result<bool> set = s.CompareAndSwap("counter", *now, std::to_string(std::stoi(*now) + 1));
            if (!set.ok()) {
              ++failures;
              return;
            }
            if (*set) break;
          }
        }
      });
    }
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*store_->Get("counter"), std::to_string(kThreads * kIncrements));
}

TEST_P(StoreTest, BadKeysAndValuesAreRefusedNamingThem) {
  for (const std::string& key : {std::string(), std::string(cluster::kMaxStoreKey + 1, 'k'), std::string("sp ace"),
                                 std::string("per%cent"), std::string("nul\0l", 5)}) {
    Status s = store_->Put(key, "v");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "key '" << key << "': " << s;
    EXPECT_EQ(store_->Get(key).status().code(), StatusCode::kInvalidArgument);
  }
  Status big = store_->Put("big", std::string(cluster::kMaxStoreValue + 1, 'x'));
  EXPECT_EQ(big.code(), StatusCode::kInvalidArgument) << big;
  EXPECT_NE(big.message().find("big"), std::string::npos) << big;
  EXPECT_OK(store_->Put(std::string(cluster::kMaxStoreKey, 'k'), "longest key"));
}

// What a Put returned OK for is there after the store -- for etcd, the etcd process itself,
// SIGKILLed -- comes back.
TEST_P(StoreTest, WhatWasPutSurvivesAKill) {
  ASSERT_OK(store_->Put("job/state", "epoch 7"));
  ASSERT_OK(store_->Put("job/gone", "x"));
  ASSERT_OK(store_->Delete("job/gone"));
  store_.reset();
  if (GetParam() == "etcd") {
    etcd_->Kill();
    std::string why;
    ASSERT_TRUE(etcd_->Start(&why)) << why;
  }
  std::unique_ptr<Store> again = Reopen();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(*again->Get("job/state"), "epoch 7");
  EXPECT_EQ(again->Get("job/gone").status().code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("file", "etcd"),
                         [](const auto& info) { return info.param; });

// Every way a file store file can be damaged is refused with kCorruption naming the file and
// the key; a file that is no key's (a temporary, the lock) is not listed.
TEST(FileStoreTest, EveryDamagedFileIsRefusedNamingIt) {
  const std::filesystem::path dir = MakeTempDir("damage");
  Result<std::unique_ptr<Store>> s = OpenStore("file:" + dir.string());
  ASSERT_OK(s);
  Store& store = **s;
  ASSERT_OK(store.Put("job/state", "the state of the job"));
  const std::filesystem::path file = dir / "job%2Fstate.kv";
  ASSERT_TRUE(std::filesystem::exists(file));
  std::string good;
  {
    std::ifstream f(file, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& bytes) {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    f << bytes;
  };
  auto expect_refused = [&](const std::string& what) {
    Result<std::string> got = store.Get("job/state");
    EXPECT_EQ(got.status().code(), StatusCode::kCorruption) << what << ": " << got.status();
    EXPECT_NE(got.status().message().find(file.string()), std::string::npos) << got.status();
    EXPECT_NE(got.status().message().find("job/state"), std::string::npos) << got.status();
    EXPECT_EQ(store.List("job/").status().code(), StatusCode::kCorruption) << what;
  };
  for (size_t len = 0; len < good.size(); ++len) {
    write(good.substr(0, len));
    expect_refused("cut to " + std::to_string(len) + " bytes");
  }
  write(good + "x");
  expect_refused("a byte added");
  std::mt19937 rng(static_cast<uint32_t>(TestSeed()));
  for (size_t at = 0; at < good.size(); ++at) {
    std::string flipped = good;
    flipped[at] = static_cast<char>(flipped[at] ^ (1 + rng() % 255));
    write(flipped);
    Result<std::string> got = store.Get("job/state");
    // A flip in the length's high bytes, the checksum or the value: all refused.
    EXPECT_EQ(got.status().code(), StatusCode::kCorruption) << "byte " << at << " flipped: " << got.status();
  }
  write(good);
  EXPECT_EQ(*store.Get("job/state"), "the state of the job");
  // Leftovers that are no key's.
  std::ofstream(dir / "job%2Fstate.kv.tmp.123.4") << "half";
  std::ofstream(dir / "notes.txt") << "x";
  Result<std::vector<std::pair<std::string, std::string>>> all = store.List("");
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().first, "job/state");
  std::filesystem::remove_all(dir);
}

TEST(FileStoreTest, ADirectoryThatCannotBeMadeIsRefused) {
  Result<std::unique_ptr<Store>> s = OpenStore("file:/proc/no/such/place");
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status();
  EXPECT_NE(s.status().message().find("/proc/no/such/place"), std::string::npos) << s.status();
}

TEST(EtcdStoreTest, AnEtcdThatIsNotThereAndBadUrlsAreClearErrors) {
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(FreePort());
  Result<std::unique_ptr<Store>> s = OpenStore("etcd:" + endpoint, 2s);
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status();
  EXPECT_NE(s.status().message().find(endpoint), std::string::npos) << s.status();
  for (const char* url : {"etcd://127.0.0.1:2379", "zookeeper:x", "etcd:http://", "etcd:http://h:1/bad prefix", ""}) {
    Result<std::unique_ptr<Store>> bad = OpenStore(url);
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << url << ": " << bad.status();
  }
}

// etcd stalls in normal operation (a leader election, a slow fsync): a store request waits for it,
// within the retry budget, and a compare-and-swap whose unanswered try etcd applied later reports
// the swap rather than a conflict (the scheduler would take that for another scheduler).
TEST(EtcdStoreTest, AStalledEtcdIsWaitedForWithinTheBudgetAndAnAppliedSwapCounts) {
  const std::filesystem::path dir = MakeTempDir("stall");
  EtcdProcess etcd(dir);
  std::string why;
  ASSERT_TRUE(etcd.Start(&why)) << why;
  const std::string url = "etcd:" + etcd.endpoint() + "/stall";
  Result<std::unique_ptr<Store>> patient = OpenStore(url, 300ms, 120s);
  ASSERT_OK(patient);
  ASSERT_OK((*patient)->Put("job/state", "a"));
  ASSERT_OK((*patient)->Get("job/state"));

  // Stopped, etcd takes the request into its socket's queue and answers nothing; its first try
  // times out (300 ms) and may already be applied when etcd goes on. Either way the swap is done.
  etcd.Signal(SIGSTOP);
  Result<bool> swapped = false;
  std::thread swapper([&] { swapped = (*patient)->CompareAndSwap("job/state", std::string("a"), "b"); });
  // Not a synchronisation: the outcome below is the same whether or not a try timed out first;
  // the pause only makes the retry path the one usually taken.
  std::this_thread::sleep_for(1s);
  etcd.Signal(SIGCONT);
  swapper.join();
  ASSERT_OK(swapped);
  EXPECT_TRUE(*swapped);
  Result<std::string> now = (*patient)->Get("job/state");
  ASSERT_OK(now);
  EXPECT_EQ(*now, "b");

  // Past the budget, the error names etcd, the key and how many tries were made.
  Result<std::unique_ptr<Store>> hasty = OpenStore(url, 200ms, 700ms);
  ASSERT_OK(hasty);
  etcd.Signal(SIGSTOP);
  Status put = (*hasty)->Put("job/other", "x");
  etcd.Signal(SIGCONT);
  EXPECT_EQ(put.code(), StatusCode::kUnavailable) << put;
  EXPECT_NE(put.message().find(etcd.endpoint()), std::string::npos) << put;
  EXPECT_NE(put.message().find("job/other"), std::string::npos) << put;
  EXPECT_NE(put.message().find("tries over 700 ms"), std::string::npos) << put;
  etcd.Kill();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pserver::testing
