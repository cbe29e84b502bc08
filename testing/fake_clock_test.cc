// FakeClock: the time moves only by Advance, and a waiter -- asleep, or waiting on its own mutex
// and condition variable -- wakes exactly when the time reaches its deadline, or earlier only
// when its predicate turns true. No test sleeps or asserts anything about real time: a thread's
// arrival at its wait is awaited (AwaitWaiters), and Advance returns once the waiters it woke
// have left their waits.
#include "testing/fake_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "base/mutex.h"

namespace pserver::testing {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using TimePoint = Clock::TimePoint;

// An upper bound for waits that should end at once; only reached when the code is broken.
constexpr milliseconds kLongWait(30000);

// A mutex, a condition variable and the flag a WaitUntil predicate reads.
struct Event {
  Mutex mu;
  CondVar cv;
  bool set ABSL_GUARDED_BY(mu) = false;

  void Set() {
    {
      MutexLock lock(&mu);
      set = true;
    }
    cv.SignalAll();
  }
  void SignalWithoutSetting() {
    MutexLock lock(&mu);
    cv.SignalAll();
  }
};

struct WaitResult {
  bool ready = false;
  TimePoint woke_at;
};

// Waits on `clock` for `event` until `deadline`, on a thread of its own.
std::future<WaitResult> WaitOn(FakeClock& clock, Event& event, TimePoint deadline) {
  return std::async(std::launch::async, [&clock, &event, deadline] {
    MutexLock lock(&event.mu);
    WaitResult r;
    r.ready = clock.WaitUntil(&event.mu, &event.cv, deadline,
                              [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(event.mu) { return event.set; });
    r.woke_at = clock.Now();
    return r;
  });
}

// Sleeps on `clock` until `deadline`, on a thread of its own; returns the time it woke at.
std::future<TimePoint> SleepOn(FakeClock& clock, TimePoint deadline) {
  return std::async(std::launch::async, [&clock, deadline] {
    clock.SleepUntil(deadline);
    return clock.Now();
  });
}

bool Pending(const std::future<WaitResult>& f) { return f.wait_for(milliseconds(0)) == std::future_status::timeout; }
bool Pending(const std::future<TimePoint>& f) { return f.wait_for(milliseconds(0)) == std::future_status::timeout; }

TEST(FakeClockTest, TimeMovesOnlyWhenAdvanced) {
  const TimePoint start = TimePoint(hours(5));
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(milliseconds(5));
  EXPECT_EQ(clock.Now(), start + milliseconds(5));
  clock.Advance(milliseconds(-3));  // never backwards
  EXPECT_EQ(clock.Now(), start + milliseconds(5));
  clock.AdvanceTo(start);  // already past: nothing moves
  EXPECT_EQ(clock.Now(), start + milliseconds(5));
  clock.AdvanceTo(start + hours(1));
  EXPECT_EQ(clock.Now(), start + hours(1));
  FakeClock default_start;
  EXPECT_EQ(default_start.Now(), TimePoint(hours(1)));
}

TEST(FakeClockTest, SleeperWakesExactlyWhenTheTimeReachesItsDeadline) {
  FakeClock clock;
  const TimePoint start = clock.Now();
  std::future<TimePoint> woke = SleepOn(clock, start + milliseconds(100));
  ASSERT_TRUE(clock.AwaitWaiters(1));
  clock.Advance(milliseconds(99));
  EXPECT_EQ(clock.num_waiters(), 1u);  // one short of its deadline: still asleep
  EXPECT_TRUE(Pending(woke));
  clock.Advance(milliseconds(1));
  EXPECT_EQ(clock.num_waiters(), 0u);  // Advance returned after it left its wait
  EXPECT_EQ(woke.get(), start + milliseconds(100));
}

TEST(FakeClockTest, AdvancingPastTheDeadlineWakesTheSleeperToo) {
  FakeClock clock;
  const TimePoint start = clock.Now();
  std::future<TimePoint> woke = SleepOn(clock, start + milliseconds(10));
  ASSERT_TRUE(clock.AwaitWaiters(1));
  clock.Advance(hours(2));
  EXPECT_EQ(clock.num_waiters(), 0u);
  EXPECT_EQ(woke.get(), start + hours(2));
}

TEST(FakeClockTest, WaiterOnItsConditionVariableWakesExactlyAtItsDeadline) {
  FakeClock clock;
  const TimePoint start = clock.Now();
  Event event;
  std::future<WaitResult> result = WaitOn(clock, event, start + milliseconds(50));
  ASSERT_TRUE(clock.AwaitWaiters(1));
  clock.Advance(milliseconds(49));
  EXPECT_EQ(clock.num_waiters(), 1u);
  EXPECT_TRUE(Pending(result));
  clock.Advance(milliseconds(1));
  EXPECT_EQ(clock.num_waiters(), 0u);
  WaitResult r = result.get();
  EXPECT_FALSE(r.ready);  // the deadline, not the event, ended the wait
  EXPECT_EQ(r.woke_at, start + milliseconds(50));
}

TEST(FakeClockTest, WaiterWakesWhenItsPredicateTurnsTrueWithoutTimeMoving) {
  FakeClock clock;
  const TimePoint start = clock.Now();
  Event event;
  std::future<WaitResult> result = WaitOn(clock, event, start + hours(1));
  ASSERT_TRUE(clock.AwaitWaiters(1));
  event.Set();
  ASSERT_EQ(result.wait_for(kLongWait), std::future_status::ready) << "the signal was lost";
  WaitResult r = result.get();
  EXPECT_TRUE(r.ready);
  EXPECT_EQ(r.woke_at, start);
  EXPECT_EQ(clock.num_waiters(), 0u);  // the waiter thread has returned: it left its wait
}

TEST(FakeClockTest, SignalsWithoutThePredicateDoNotEndTheWaitEarly) {
  FakeClock clock;
  const TimePoint start = clock.Now();
  Event event;
  std::future<WaitResult> result = WaitOn(clock, event, start + milliseconds(100));
  ASSERT_TRUE(clock.AwaitWaiters(1));
  for (int i = 0; i < 100; ++i) event.SignalWithoutSetting();
  clock.Advance(milliseconds(50));
  EXPECT_EQ(clock.num_waiters(), 1u);  // woken, found nothing, waits again
  EXPECT_TRUE(Pending(result));
  clock.Advance(milliseconds(50));
  WaitResult r = result.get();
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.woke_at, start + milliseconds(100));
}

TEST(FakeClockTest, ADeadlineAlreadyReachedReturnsAtOnce) {
  FakeClock clock;
  const TimePoint now = clock.Now();
  clock.SleepUntil(now);  // returns: the deadline is now
  clock.SleepUntil(now - milliseconds(1));
  clock.SleepFor(milliseconds(0));
  Event event;
  MutexLock lock(&event.mu);
  auto is_set = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(event.mu) { return event.set; };
  EXPECT_FALSE(clock.WaitUntil(&event.mu, &event.cv, now, is_set));
  EXPECT_FALSE(clock.WaitFor(&event.mu, &event.cv, milliseconds(0), is_set));
  event.set = true;
  EXPECT_TRUE(clock.WaitUntil(&event.mu, &event.cv, now + hours(1), is_set));  // ready: no wait
  EXPECT_EQ(clock.num_waiters(), 0u);
  EXPECT_EQ(clock.Now(), now);
}

// Sleepers and condition-variable waiters with different deadlines, several on one mutex: each
// step of time wakes exactly those whose deadline it reaches.
TEST(FakeClockTest, EachAdvanceWakesExactlyTheWaitersItsTimeReaches) {
  FakeClock clock;
  const TimePoint t0 = clock.Now();
  Event shared;  // three waiters on one mutex and condition variable
  Event own;
  std::vector<std::future<WaitResult>> waits;
  waits.push_back(WaitOn(clock, shared, t0 + milliseconds(10)));
  waits.push_back(WaitOn(clock, shared, t0 + milliseconds(30)));
  waits.push_back(WaitOn(clock, own, t0 + milliseconds(30)));
  waits.push_back(WaitOn(clock, shared, t0 + milliseconds(50)));
  std::vector<std::future<TimePoint>> sleeps;
  sleeps.push_back(SleepOn(clock, t0 + milliseconds(20)));
  sleeps.push_back(SleepOn(clock, t0 + milliseconds(40)));
  ASSERT_TRUE(clock.AwaitWaiters(6));
  auto at = [&](std::vector<int> ms) {
    std::vector<TimePoint> v;
    for (int m : ms) v.push_back(t0 + milliseconds(m));
    return v;
  };
  EXPECT_EQ(clock.PendingDeadlines(), at({10, 20, 30, 30, 40, 50}));
  clock.Advance(milliseconds(9));
  EXPECT_EQ(clock.PendingDeadlines(), at({10, 20, 30, 30, 40, 50}));
  clock.Advance(milliseconds(1));
  EXPECT_EQ(clock.PendingDeadlines(), at({20, 30, 30, 40, 50}));
  clock.Advance(milliseconds(25));
  EXPECT_EQ(clock.PendingDeadlines(), at({40, 50}));
  clock.AdvanceTo(t0 + milliseconds(40));
  EXPECT_EQ(clock.PendingDeadlines(), at({50}));
  EXPECT_TRUE(Pending(waits[3]));
  clock.Advance(milliseconds(10));
  EXPECT_TRUE(clock.PendingDeadlines().empty());
  for (auto& w : waits) EXPECT_FALSE(w.get().ready);
  EXPECT_GE(sleeps[0].get(), t0 + milliseconds(20));
  EXPECT_GE(sleeps[1].get(), t0 + milliseconds(40));
}

// Threads that wait again and again (a heartbeat loop) while the test advances the time in
// steps: every wait ends at its deadline, none is lost, none ends early.
TEST(FakeClockTest, PeriodicWaitersWakeOncePerPeriod) {
  FakeClock clock;
  const TimePoint t0 = clock.Now();
  constexpr int kThreads = 3;
  constexpr int kBeats = 20;
  const milliseconds period(100);
  Event stop;
  std::vector<std::future<std::vector<TimePoint>>> loops;
  for (int t = 0; t < kThreads; ++t) {
    loops.push_back(std::async(std::launch::async, [&] {
      std::vector<TimePoint> beats;
      MutexLock lock(&stop.mu);
      TimePoint next = t0 + period;
      for (int i = 0; i < kBeats; ++i) {
        if (clock.WaitUntil(&stop.mu, &stop.cv, next, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stop.mu) { return stop.set; })) {
          break;
        }
        beats.push_back(clock.Now());
        next += period;
      }
      return beats;
    }));
  }
  for (int i = 0; i < kBeats; ++i) {
    ASSERT_TRUE(clock.AwaitWaiters(kThreads)) << "beat " << i;
    clock.Advance(period);
  }
  for (auto& loop : loops) {
    std::vector<TimePoint> beats = loop.get();
    ASSERT_EQ(beats.size(), static_cast<size_t>(kBeats));
    for (int i = 0; i < kBeats; ++i) EXPECT_EQ(beats[i], t0 + (i + 1) * period) << "beat " << i;
  }
}

TEST(FakeClockTest, AwaitWaitersGivesUpAfterItsTimeout) {
  FakeClock clock;
  EXPECT_FALSE(clock.AwaitWaiters(1, milliseconds(1)));
  EXPECT_TRUE(clock.AwaitWaiters(0, milliseconds(0)));
}

TEST(FakeClockTest, CodeTakesItThroughTheClockInterface) {
  FakeClock fake;
  Clock* clock = &fake;
  const TimePoint start = clock->Now();
  std::future<void> slept = std::async(std::launch::async, [clock] { clock->SleepFor(milliseconds(30)); });
  ASSERT_TRUE(fake.AwaitWaiters(1));
  fake.Advance(milliseconds(30));
  ASSERT_EQ(slept.wait_for(kLongWait), std::future_status::ready);
  EXPECT_EQ(clock->Now(), start + milliseconds(30));
}

}  // namespace
}  // namespace pserver::testing
