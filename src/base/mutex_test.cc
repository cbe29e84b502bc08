// Mutex, MutexLock and CondVar (src/base/mutex.h), from several threads at once. Each check can
// fail: without mutual exclusion the guarded counter loses increments and the "inside" count
// exceeds one; a CondVar that does not release or retake the mutex deadlocks (timed out by the
// waits' own timeouts) or lets the waiter read an unset value.
#include "base/mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace pserver {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class Counter {
 public:
  // A read, a yield and a write: lost updates are near certain if two threads are ever inside.
  void Add() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
    const int64_t v = value_;
    std::this_thread::yield();
    value_ = v + 1;
    inside_.fetch_sub(1);
  }
  // Through the std names (std::lock_guard) and TryLock, to cover those entry points too.
  void AddWithStdGuard() ABSL_LOCKS_EXCLUDED(mu_) {
    std::lock_guard<Mutex> lock(mu_);
    mu_.AssertHeld();
    AddLocked();
  }
  void AddWithTryLock() ABSL_LOCKS_EXCLUDED(mu_) {
    while (!mu_.TryLock()) std::this_thread::yield();
    AddLocked();
    mu_.Unlock();
  }
  int64_t value() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return value_;
  }
  int overlaps() const { return overlaps_.load(); }

 private:
  void AddLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
    const int64_t v = value_;
    std::this_thread::yield();
    value_ = v + 1;
    inside_.fetch_sub(1);
  }

  Mutex mu_;
  int64_t value_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> inside_{0};
  std::atomic<int> overlaps_{0};
};

TEST(MutexTest, MutexLockExcludesOtherThreads) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 2000;
  Counter counter;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&counter, t] {
        for (int i = 0; i < kPerThread; ++i) {
          switch ((t + i) % 3) {
            case 0: counter.Add(); break;
            case 1: counter.AddWithStdGuard(); break;
            default: counter.AddWithTryLock(); break;
          }
        }
      });
    }
  }
  EXPECT_EQ(counter.value(), int64_t{kThreads} * kPerThread);
  EXPECT_EQ(counter.overlaps(), 0);
}

TEST(MutexTest, TryLockFailsWhileAnotherThreadHolds) {
  Mutex mu;
  MutexLock lock(&mu);
  bool taken = false;
  std::thread([&] {
    if (mu.TryLock()) {
      taken = true;
      mu.Unlock();
    }
  }).join();
  EXPECT_FALSE(taken);
}

// A value and its mutex, for the tests below (clang checks guarded fields, not guarded locals).
struct Guarded {
  Mutex mu;
  CondVar cv;
  int value ABSL_GUARDED_BY(mu) = 0;
};

TEST(MutexTest, MutexLockUnlockLetsAnotherThreadIn) {
  Guarded g;
  MutexLock lock(&g.mu);
  g.value = 1;
  lock.Unlock();
  // With the lock released another thread can take it; if Unlock() did not release, join() hangs
  // (ctest's timeout), and if Lock() below did not retake, the read after it would race (TSan).
  std::thread([&g] {
    MutexLock inner(&g.mu);
    g.value = 2;
  }).join();
  lock.Lock();
  EXPECT_EQ(g.value, 2);
}

// A one-slot mailbox: the consumer must see every value the producer puts, in order.
class Mailbox {
 public:
  void Put(int v) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    while (full_) cv_.Wait(&mu_);
    value_ = v;
    full_ = true;
    cv_.SignalAll();
  }
  // False when nothing came within `timeout`.
  bool Take(int* v, milliseconds timeout) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (!cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return full_; })) return false;
    *v = value_;
    full_ = false;
    cv_.SignalAll();
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool full_ ABSL_GUARDED_BY(mu_) = false;
  int value_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(CondVarTest, HandsEveryValueFromProducersToConsumer) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 500;
  Mailbox box;
  std::vector<int64_t> sums(kProducers, 0);
  std::vector<int> last(kProducers, -1);
  bool in_order = true;
  {
    std::vector<std::jthread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&box, p] {
        for (int i = 0; i < kPerProducer; ++i) box.Put(p * kPerProducer + i);
      });
    }
    for (int n = 0; n < kProducers * kPerProducer; ++n) {
      int v = -1;
      ASSERT_TRUE(box.Take(&v, milliseconds(30000))) << "value " << n << " never came";
      const int p = v / kPerProducer;
      ASSERT_GE(p, 0);
      ASSERT_LT(p, kProducers);
      if (v <= last[p]) in_order = false;
      last[p] = v;
      sums[p] += v;
    }
  }
  EXPECT_TRUE(in_order) << "a producer's values arrived out of order";
  for (int p = 0; p < kProducers; ++p) {
    const int64_t first = int64_t{p} * kPerProducer;
    EXPECT_EQ(sums[p], kPerProducer * first + int64_t{kPerProducer} * (kPerProducer - 1) / 2) << "producer " << p;
  }
}

TEST(CondVarTest, WaitForTimesOutWithThePredicateFalse) {
  Mailbox box;
  int v = 0;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(box.Take(&v, milliseconds(50)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(50));
}

// Two threads take turns through the stages 0 -> 1 -> 2 -> 3, each waiting for the other's.
TEST(CondVarTest, UnconditionalWaitsReleaseAndRetakeTheMutex) {
  Guarded g;
  std::jthread other([&g] {
    MutexLock lock(&g.mu);
    g.value = 1;
    g.cv.SignalAll();
    while (g.value != 2) ASSERT_TRUE(g.cv.WaitFor(&g.mu, seconds(30)) || g.value == 2) << "never woken";
    g.value = 3;
    g.cv.SignalAll();
  });
  MutexLock lock(&g.mu);
  const auto deadline = std::chrono::steady_clock::now() + seconds(30);
  while (g.value != 1) ASSERT_TRUE(g.cv.WaitUntil(&g.mu, deadline) || g.value == 1) << "stage 1 never came";
  g.value = 2;
  g.cv.SignalAll();
  g.cv.Wait(&g.mu, [&g]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g.mu) { return g.value == 3; });
  EXPECT_EQ(g.value, 3);
}

// Writers exclude each other and readers; readers share: two readers are inside at once.
class Table {
 public:
  void Write() ABSL_LOCKS_EXCLUDED(mu_) {
    WriterMutexLock lock(&mu_);
    if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
    const int64_t v = value_;
    std::this_thread::yield();
    value_ = v + 1;
    inside_.fetch_sub(1);
  }
  // Holds the shared lock until `readers` readers were inside together (true) or 30 s passed.
  bool ReadTogether(int readers) ABSL_LOCKS_EXCLUDED(mu_) {
    ReaderMutexLock lock(&mu_);
    mu_.AssertReaderHeld();
    readers_.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + seconds(30);
    while (readers_.load() < readers) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return value_ >= 0;
  }
  int64_t value() ABSL_LOCKS_EXCLUDED(mu_) {
    ReaderMutexLock lock(&mu_);
    return value_;
  }
  int overlaps() const { return overlaps_.load(); }

 private:
  SharedMutex mu_;
  int64_t value_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> inside_{0};
  std::atomic<int> overlaps_{0};
  std::atomic<int> readers_{0};
};

TEST(SharedMutexTest, WritersExcludeEachOtherAndReadersShare) {
  constexpr int kThreads = 6;
  constexpr int kPerThread = 2000;
  Table table;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&table] {
        for (int i = 0; i < kPerThread; ++i) table.Write();
      });
    }
  }
  EXPECT_EQ(table.value(), int64_t{kThreads} * kPerThread);
  EXPECT_EQ(table.overlaps(), 0);

  bool shared[2] = {false, false};
  {
    std::jthread a([&] { shared[0] = table.ReadTogether(2); });
    std::jthread b([&] { shared[1] = table.ReadTogether(2); });
  }
  EXPECT_TRUE(shared[0] && shared[1]) << "two readers never held the lock together";
}

}  // namespace
}  // namespace pserver
