// SteadyClock: the real clock behind the Clock interface. Its waits end no earlier than their
// deadlines and at once when their predicate holds; nothing is asserted about how long a wait
// took beyond that lower bound (the fake clock's tests, testing/fake_clock_test.cc, show the
// waits' exact wake-ups).
#include "base/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "base/mutex.h"

namespace pserver {
namespace {

using std::chrono::milliseconds;

// An upper bound for waits that should end at once; only reached when the code is broken.
constexpr milliseconds kLongWait(30000);

TEST(SteadyClockTest, DefaultIsOneSharedInstance) {
  Clock* clock = SteadyClock::Default();
  ASSERT_NE(clock, nullptr);
  EXPECT_EQ(clock, SteadyClock::Default());
}

TEST(SteadyClockTest, NowNeverGoesBackwards) {
  Clock* clock = SteadyClock::Default();
  Clock::TimePoint last = clock->Now();
  for (int i = 0; i < 10000; ++i) {
    const Clock::TimePoint now = clock->Now();
    ASSERT_GE(now, last);
    last = now;
  }
}

TEST(SteadyClockTest, SleepEndsNoEarlierThanItsDeadline) {
  Clock* clock = SteadyClock::Default();
  const Clock::TimePoint deadline = clock->Now() + milliseconds(5);
  clock->SleepUntil(deadline);
  EXPECT_GE(clock->Now(), deadline);
  const Clock::TimePoint before = clock->Now();
  clock->SleepFor(milliseconds(2));
  EXPECT_GE(clock->Now(), before + milliseconds(2));
  clock->SleepUntil(before - milliseconds(1));  // passed already: returns
}

TEST(SteadyClockTest, WaitWithAFalsePredicateEndsAtItsDeadline) {
  Clock* clock = SteadyClock::Default();
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const Clock::TimePoint deadline = clock->Now() + milliseconds(5);
  EXPECT_FALSE(clock->WaitUntil(&mu, &cv, deadline, [] { return false; }));
  EXPECT_GE(clock->Now(), deadline);
  const Clock::TimePoint before = clock->Now();
  EXPECT_FALSE(clock->WaitFor(&mu, &cv, milliseconds(2), [] { return false; }));
  EXPECT_GE(clock->Now(), before + milliseconds(2));
}

TEST(SteadyClockTest, WaitWithADeadlinePassedReturnsThePredicateAtOnce) {
  Clock* clock = SteadyClock::Default();
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const Clock::TimePoint past = clock->Now() - milliseconds(1);
  EXPECT_TRUE(clock->WaitUntil(&mu, &cv, past, [] { return true; }));
  EXPECT_FALSE(clock->WaitUntil(&mu, &cv, past, [] { return false; }));
}

TEST(SteadyClockTest, WaitEndsWhenThePredicateTurnsTrue) {
  Clock* clock = SteadyClock::Default();
  Mutex mu;
  CondVar cv;
  bool set = false;  // guarded by mu
  std::promise<void> waiting;
  auto waiter = std::async(std::launch::async, [&] {
    MutexLock lock(&mu);
    waiting.set_value();
    // Far beyond the hang guard below: only the signal can end this wait in time.
    return clock->WaitFor(&mu, &cv, 4 * kLongWait, [&] { return set; });
  });
  waiting.get_future().wait();
  {
    MutexLock lock(&mu);
    set = true;
  }
  cv.SignalAll();
  ASSERT_EQ(waiter.wait_for(kLongWait), std::future_status::ready) << "the signal was lost";
  EXPECT_TRUE(waiter.get());
}

}  // namespace
}  // namespace pserver
