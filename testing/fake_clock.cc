#include "testing/fake_clock.h"

#include <algorithm>

#include "base/logging.h"

namespace pserver::testing {

namespace {
// How long Advance waits for a woken waiter to leave before it gives up (real time).
constexpr std::chrono::seconds kLeaveGuard(60);
}  // namespace

FakeClock::FakeClock(TimePoint start) : now_(start) {}

FakeClock::~FakeClock() = default;

Clock::TimePoint FakeClock::Now() const {
  MutexLock lock(&mu_);
  return now_;
}

void FakeClock::SleepUntil(TimePoint deadline) {
  MutexLock lock(&mu_);
  if (ReachedLocked(deadline)) return;
  Waiter w{deadline};
  waiters_.push_back(&w);
  changed_.SignalAll();
  while (!ReachedLocked(deadline)) changed_.Wait(&mu_);  // Advance signals changed_ under mu_
  RemoveLocked(&w);
}

bool FakeClock::WaitUntil(Mutex* mu, CondVar* cv, TimePoint deadline, const std::function<bool()>& ready) {
  if (ready()) return true;
  Waiter w{deadline, mu, cv};
  {
    MutexLock lock(&mu_);
    if (ReachedLocked(deadline)) return ready();
    waiters_.push_back(&w);
    changed_.SignalAll();
  }
  // The time is read with *mu held, and Advance signals *cv with *mu held after it moved the
  // time: a deadline reached between the check and the wait still wakes the wait.
  for (;;) {
    if (ready()) break;
    {
      MutexLock lock(&mu_);
      if (ReachedLocked(deadline)) break;
    }
    cv->Wait(mu);
  }
  {
    MutexLock lock(&mu_);
    if (w.pins == 0) {
      RemoveLocked(&w);
      return ready();
    }
  }
  // An Advance is about to signal *cv under *mu: let it (it needs *mu), so that it is done with
  // them before this call returns and the caller may destroy them.
  mu->Unlock();
  {
    MutexLock lock(&mu_);
    while (w.pins > 0) changed_.Wait(&mu_);  // each pin is released right after its signal
    RemoveLocked(&w);
  }
  mu->Lock();
  return ready();
}

void FakeClock::Advance(Duration d) {
  std::vector<Waiter*> to_signal;
  {
    MutexLock lock(&mu_);
    if (d > Duration::zero()) now_ += d;
    for (Waiter* w : waiters_) {
      if (w->mu != nullptr && ReachedLocked(w->deadline)) {
        ++w->pins;
        to_signal.push_back(w);
      }
    }
    changed_.SignalAll();  // wakes the sleepers
  }
  for (Waiter* w : to_signal) {
    {
      MutexLock waiter_lock(w->mu);
      w->cv->SignalAll();
    }
    MutexLock lock(&mu_);
    --w->pins;
    changed_.SignalAll();
  }
  MutexLock lock(&mu_);
  if (!changed_.WaitFor(&mu_, kLeaveGuard, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !AnyDueLocked(); })) {
    PSERVER_LOG_ERROR("FakeClock::Advance: a waiter whose deadline passed did not leave its wait within {} s",
                      kLeaveGuard.count());
  }
}

void FakeClock::AdvanceTo(TimePoint t) {
  Duration d;
  {
    MutexLock lock(&mu_);
    d = t - now_;
  }
  Advance(d);
}

size_t FakeClock::num_waiters() const {
  MutexLock lock(&mu_);
  return waiters_.size();
}

std::vector<Clock::TimePoint> FakeClock::PendingDeadlines() const {
  MutexLock lock(&mu_);
  std::vector<TimePoint> deadlines;
  for (const Waiter* w : waiters_) deadlines.push_back(w->deadline);
  std::sort(deadlines.begin(), deadlines.end());
  return deadlines;
}

bool FakeClock::AwaitWaiters(size_t n, std::chrono::milliseconds timeout) const {
  MutexLock lock(&mu_);
  return changed_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiters_.size() >= n; });
}

bool FakeClock::AnyDueLocked() const {
  return std::any_of(waiters_.begin(), waiters_.end(), [&](const Waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ReachedLocked(w->deadline);
  });
}

void FakeClock::RemoveLocked(const Waiter* w) {
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), w));
  changed_.SignalAll();
}

}  // namespace pserver::testing
