// FakeClock: a Clock (base/clock.h) whose time moves only when a test calls Advance, so that
// heartbeats, timeouts and deadlines are tested without sleeping and without timed assertions.
//
// Threads blocked in SleepUntil or WaitUntil are the clock's waiters. Advance moves the time,
// wakes every waiter whose deadline the new time reaches, and returns only once each of those has
// left its wait; the others stay blocked (a spurious or unrelated wake-up puts them back to
// sleep). So right after Advance returns, num_waiters() and PendingDeadlines() say exactly which
// waits are still in progress. AwaitWaiters lets a test know that a thread has reached its wait
// before it advances the time:
//
//   FakeClock clock;
//   std::jthread beat([&] { clock.SleepFor(std::chrono::seconds(1)); ... });
//   ASSERT_TRUE(clock.AwaitWaiters(1));
//   clock.Advance(std::chrono::milliseconds(999));  // num_waiters() == 1: it still sleeps
//   clock.Advance(std::chrono::milliseconds(1));    // num_waiters() == 0: it has woken
//
// Thread safety: thread-safe. Advance takes the Mutex of each WaitUntil waiter it wakes, so it
// must not be called with such a mutex held.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/clock.h"
#include "base/mutex.h"

namespace pserver::testing {

class FakeClock final : public Clock {
 public:
  // Starts at `start`: by default a fixed point an hour after the steady clock's epoch, so that a
  // test never depends on the real time and `start - d` is valid for small d.
  explicit FakeClock(TimePoint start = TimePoint(std::chrono::hours(1)));
  ~FakeClock() override;

  TimePoint Now() const override ABSL_LOCKS_EXCLUDED(mu_);
  void SleepUntil(TimePoint deadline) override ABSL_LOCKS_EXCLUDED(mu_);
  bool WaitUntil(Mutex* mu, CondVar* cv, TimePoint deadline, const std::function<bool()>& ready) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) ABSL_LOCKS_EXCLUDED(mu_);

  // Moves the time forward by `d` (a negative d is taken as 0), wakes the waiters whose deadline
  // it reaches, and returns once each of them has left its wait. (If one does not leave within
  // a minute of real time -- another thread holds its mutex -- Advance logs it and returns: a hang
  // guard of a test tool.) REQUIRES: no mutex of a waiter held by this thread.
  void Advance(Duration d) ABSL_LOCKS_EXCLUDED(mu_);
  // Advance(t - Now()): moves to `t`, or nowhere when t is not later than Now().
  void AdvanceTo(TimePoint t) ABSL_LOCKS_EXCLUDED(mu_);

  // The threads blocked in SleepUntil or WaitUntil now.
  size_t num_waiters() const ABSL_LOCKS_EXCLUDED(mu_);
  // The deadlines of those waits, earliest first.
  std::vector<TimePoint> PendingDeadlines() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until at least `n` threads are blocked on the clock; false if `timeout` (real time)
  // passes first -- a hang guard, not a timed assertion.
  bool AwaitWaiters(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // One blocked call, on its thread's stack; registered in waiters_ while it waits.
  struct Waiter {
    TimePoint deadline;
    Mutex* mu = nullptr;  // the caller's, for WaitUntil; null for SleepUntil (which waits on changed_)
    CondVar* cv = nullptr;
    // Advance calls that are about to signal this waiter's cv under its mu; the waiter does not
    // leave (and so its mu and cv stay alive) until they are done.
    int pins = 0;
  };

  bool ReachedLocked(TimePoint deadline) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return now_ >= deadline; }
  bool AnyDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(const Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Lock order: a waiter's mutex before mu_ (WaitUntil reads the time holding its caller's mutex;
  // Advance never holds mu_ while it takes a waiter's mutex).
  mutable Mutex mu_;
  // Signalled at every change: the time, a waiter arriving or leaving, a pin released.
  mutable CondVar changed_;
  TimePoint now_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pserver::testing
