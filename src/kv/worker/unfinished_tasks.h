// UnfinishedTasks: the set of a worker's issued but unfinished task timestamps.
//
// Tasks are issued in increasing timestamp order and finish in any order; the consistency
// checks ask whether a task is unfinished and which unfinished task is the oldest. The set is
// a window of flags from the oldest unfinished timestamp to the newest issued one, so every
// operation is O(1) amortised and, in steady state, allocates nothing per task (a std::set
// would allocate a node for each).
//
// Thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace pserver::kv {

class UnfinishedTasks {
 public:
  // Adds `ts`. REQUIRES: `ts` is above every timestamp added before.
  void Add(int64_t ts);
  // Removes `ts`; a no-op when it is not in the set.
  void Remove(int64_t ts);
  bool Contains(int64_t ts) const {
    return ts >= base_ && ts - base_ < static_cast<int64_t>(window_.size()) && window_[ts - base_];
  }
  bool empty() const { return window_.empty(); }
  // The smallest timestamp in the set. REQUIRES: !empty().
  int64_t oldest() const { return base_; }
  size_t size() const { return count_; }

 private:
  int64_t base_ = 0;          // the timestamp of window_[0], the oldest unfinished one
  std::deque<bool> window_;   // window_[i]: base_ + i is unfinished; front and back are true
  size_t count_ = 0;          // the number of true flags
};

inline void UnfinishedTasks::Add(int64_t ts) {
  if (window_.empty()) {
    base_ = ts;
  } else {
    // Timestamps skipped over (never added) count as finished.
    while (base_ + static_cast<int64_t>(window_.size()) < ts) window_.push_back(false);
  }
  window_.push_back(true);
  ++count_;
}

inline void UnfinishedTasks::Remove(int64_t ts) {
  if (!Contains(ts)) return;
  window_[ts - base_] = false;
  --count_;
  while (!window_.empty() && !window_.front()) {
    window_.pop_front();
    ++base_;
  }
  while (!window_.empty() && !window_.back()) window_.pop_back();
}

}  // namespace pserver::kv
