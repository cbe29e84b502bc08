// Clock: where code that times heartbeats, timeouts and deadlines reads the time and waits for
// it, so that a test can pass a testing::FakeClock (testing/fake_clock.h) and move the time by
// hand instead of sleeping. Production code takes a `Clock*` (borrowed; SteadyClock::Default()
// unless a test says otherwise).
//
// A wait for a deadline must go through the Clock -- SleepUntil, or WaitUntil on the caller's own
// Mutex and CondVar -- never through std::this_thread or CondVar's own timed waits: only then
// does a fake clock's time reach it. A wait that is ended only by an event (a message, a stop
// request) and bounded by a deadline is a WaitUntil whose predicate sees the event:
//
//   MutexLock lock(&mu_);
//   // Wakes at the next heartbeat time, or at once when stopped.
//   clock_->WaitUntil(&mu_, &cv_, next_beat, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; });
//
// and whoever sets `stopping_` does so under mu_ and calls cv_.SignalAll().
//
// Time points are std::chrono::steady_clock's type, so that deadlines computed from either clock
// mix with the rest of the code; a fake clock's points are only meaningful to that fake clock.
//
// Thread safety: every Clock is thread-safe. SteadyClock holds no state.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"

namespace pserver {

class Clock {
 public:
  using Duration = std::chrono::steady_clock::duration;
  using TimePoint = std::chrono::steady_clock::time_point;

  Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;

  // The current time; never goes backwards.
  virtual TimePoint Now() const = 0;

  // Blocks until Now() >= deadline; returns at once when it already is.
  virtual void SleepUntil(TimePoint deadline) = 0;

  // Waits on `cv`, releasing *mu while blocked as CondVar::Wait does, until ready() is true or
  // Now() >= deadline, whichever comes first. Returns ready()'s last value: false means the
  // deadline passed with the predicate still false. ready() runs with *mu held; whoever makes it
  // true must do so under *mu and then signal *cv. Returns at once (with ready()) when the
  // deadline has passed already. `mu`, `cv` and `ready` are borrowed for the call.
  // REQUIRES: *mu held by this thread.
  virtual bool WaitUntil(Mutex* mu, CondVar* cv, TimePoint deadline, const std::function<bool()>& ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // SleepUntil(Now() + d).
  void SleepFor(Duration d) { SleepUntil(Now() + d); }
  // WaitUntil(mu, cv, Now() + timeout, ready). REQUIRES: *mu held by this thread.
  bool WaitFor(Mutex* mu, CondVar* cv, Duration timeout, const std::function<bool()>& ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return WaitUntil(mu, cv, Now() + timeout, ready);
  }
};

// The real monotonic clock, std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  // One instance for the whole process, for options that default to the real clock. Sharing it
  // couples nothing: it holds no state.
  static Clock* Default() {
    static SteadyClock clock;
    return &clock;
  }

  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  void SleepUntil(TimePoint deadline) override { std::this_thread::sleep_until(deadline); }
  bool WaitUntil(Mutex* mu, CondVar* cv, TimePoint deadline, const std::function<bool()>& ready) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return cv->WaitUntil(mu, deadline, [&ready] { return ready(); });
  }
};

}  // namespace pserver
