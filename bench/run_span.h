// RunSpan: the wall-clock span covering the measured intervals of several worker threads -- from
// the earliest start to the latest end -- over which a cluster workload's throughput is taken.
//
// Thread-safe: Record may be called concurrently from every worker.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace pserver::bench {

class RunSpan {
 public:
  using Clock = std::chrono::steady_clock;

  void Record(Clock::time_point start, Clock::time_point end) {
    const int64_t s = start.time_since_epoch().count(), e = end.time_since_epoch().count();
    int64_t cur = first_start_.load();
    while (s < cur && !first_start_.compare_exchange_weak(cur, s)) {}
    cur = last_end_.load();
    while (e > cur && !last_end_.compare_exchange_weak(cur, e)) {}
  }

  // Seconds from the earliest recorded start to the latest end; 0 if nothing was recorded.
  double seconds() const {
    const int64_t s = first_start_.load(), e = last_end_.load();
    return e > s ? std::chrono::duration<double>(Clock::duration(e - s)).count() : 0.0;
  }

 private:
  std::atomic<int64_t> first_start_{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> last_end_{0};
};

}  // namespace pserver::bench
