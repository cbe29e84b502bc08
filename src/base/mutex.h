// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with clang's thread-safety
// annotations (and SharedMutex with ReaderMutexLock / WriterMutexLock over std::shared_mutex), so that `ABSL_GUARDED_BY(mu_)` fields and `ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)`
// helpers are checked by the compiler (clang -Wthread-safety; CI builds with it and -Werror).
// Under GCC the annotations expand to nothing.
//
// Why not absl::Mutex: Debian's libabsl is not built with ThreadSanitizer, so TSan would not see
// its synchronisation and would report races that are not there (or miss ones that are). A
// std::mutex underneath keeps TSan exact. The annotation macros come from absl's header-only
// absl/base/thread_annotations.h.
//
// How to use:
//
//   class Queue {
//    public:
//     void Put(int v) ABSL_LOCKS_EXCLUDED(mu_) {
//       MutexLock lock(&mu_);
//       items_.push_back(v);
//       cv_.SignalAll();
//     }
//     // Waits up to `timeout` for an item; false when none came.
//     bool Take(int* v, std::chrono::milliseconds timeout) ABSL_LOCKS_EXCLUDED(mu_) {
//       MutexLock lock(&mu_);
//       if (!cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
//             return !items_.empty();
//           })) return false;
//       ...
//     }
//    private:
//     void DropLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // REQUIRES: mu_ held
//     Mutex mu_;
//     CondVar cv_;
//     std::deque<int> items_ ABSL_GUARDED_BY(mu_);
//   };
//
// A predicate that reads guarded fields says so with ABSL_EXCLUSIVE_LOCKS_REQUIRED on the lambda
// (clang analyses a lambda body on its own; CondVar calls it with the mutex held). A plain
// `while (!ready_) cv_.Wait(&mu_);` loop needs no annotation.
//
// Thread safety: Mutex, SharedMutex and CondVar are thread-safe (that is their purpose). A
// MutexLock (ReaderMutexLock, WriterMutexLock) belongs to the thread that made it. Mutex is not recursive: locking it twice on one thread deadlocks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "absl/base/thread_annotations.h"

namespace pserver {

class CondVar;

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // Blocks until this thread holds the mutex. REQUIRES: not held by this thread.
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  // REQUIRES: held by this thread.
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Takes the mutex if it is free; true when it was taken. Does not block.
  [[nodiscard]] bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

  // Tells the analysis that this thread holds the mutex where it cannot prove it (a callback
  // documented to run under the lock). Checks nothing at run time (std::mutex has no owner to
  // ask); TSan still catches an unguarded access behind a wrong assertion.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

  // The standard names, so that std::lock_guard / std::scoped_lock work too (prefer MutexLock:
  // clang understands it).
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { Lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { Unlock(); }
  [[nodiscard]] bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return TryLock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its lifetime (RAII). Unlock() and Lock() release and retake it in the middle
// of the scope (to call out without the lock, say); the destructor releases it only if held.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  // Blocks until `mu` is held. `mu` is borrowed and must outlive this object.
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // REQUIRES: held (by this object).
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    held_ = false;
    mu_->Unlock();
  }
  // REQUIRES: not held (released by Unlock()).
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

// A readers-writer lock: many holders in shared mode or one in exclusive mode. Not recursive.
// Thread-safe. Use it only where readers are many and long enough to matter; Mutex is cheaper.
class ABSL_LOCKABLE SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  // Exclusive mode. REQUIRES: not held by this thread (in either mode).
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Shared mode. REQUIRES: not held by this thread (in either mode).
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }
  // As Mutex::AssertHeld: for the analysis only.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
  void AssertReaderHeld() const ABSL_ASSERT_SHARED_LOCK() {}

 private:
  std::shared_mutex mu_;
};

// Holds a SharedMutex in exclusive mode for its lifetime. `mu` is borrowed.
class ABSL_SCOPED_LOCKABLE WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds a SharedMutex in shared mode for its lifetime. `mu` is borrowed.
class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// A condition variable whose waits release and retake a pserver::Mutex. Every wait may wake
// spuriously; the predicate forms loop until the predicate holds. Signal/SignalAll need not be
// called with the mutex held (but a change to the awaited state must be made under it).
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases *mu, blocks until woken (or spuriously), retakes *mu. REQUIRES: *mu held.
  // Untimed: a wait on a peer or another node must use WaitFor/WaitUntil instead.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // *mu stays held: the caller's lock owns it.
  }

  // As Wait, for at most `timeout`. Returns false when the time ran out (a true return may still
  // be spurious). REQUIRES: *mu held.
  template <typename Rep, typename Period>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool woken = cv_.wait_for(lock, timeout) == std::cv_status::no_timeout;
    lock.release();
    return woken;
  }

  // As Wait, until `deadline`. Returns false when the deadline passed. REQUIRES: *mu held.
  template <typename Clock, typename Duration>
  bool WaitUntil(Mutex* mu, std::chrono::time_point<Clock, Duration> deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool woken = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return woken;
  }

  // Waits until pred() is true; pred runs with *mu held. REQUIRES: *mu held.
  template <typename Pred>
  void Wait(Mutex* mu, Pred pred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    while (!CallLocked(pred)) Wait(mu);
  }

  // Waits until pred() is true or `timeout` ran out; returns pred()'s last value (false: timed
  // out with the predicate still false). pred runs with *mu held. REQUIRES: *mu held.
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout, Pred pred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout, std::move(pred));
  }

  // Waits until pred() is true or `deadline` passed; returns pred()'s last value. REQUIRES: *mu held.
  template <typename Clock, typename Duration, typename Pred>
  bool WaitUntil(Mutex* mu, std::chrono::time_point<Clock, Duration> deadline, Pred pred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    while (!CallLocked(pred)) {
      if (!WaitUntil(mu, deadline)) return CallLocked(pred);
    }
    return true;
  }

  // Wakes one waiter / every waiter.
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  // The predicate's own annotation names the caller's mutex, which the analysis cannot match to
  // the Mutex* parameter here; the callers above hold it (their REQUIRES says so).
  template <typename Pred>
  static bool CallLocked(Pred& pred) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return pred();
  }

  std::condition_variable cv_;
};

}  // namespace pserver
