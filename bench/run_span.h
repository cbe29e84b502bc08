// RunSpan: the wall-clock span covering the measured intervals of several worker threads -- from
// the earliest start to the latest end -- over which a cluster workload's throughput is taken,
// and the process CPU time (every thread of the process) spent over the same span.
//
// Thread-safe: Record may be called concurrently from every worker.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <limits>

namespace pserver::bench {

// CPU seconds used so far by all threads of this process (CLOCK_PROCESS_CPUTIME_ID).
inline double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU microseconds per request of a measurement: `cpu_seconds` over `requests` answered; 0 when
// none was.
inline double CpuMicrosPerRequest(double cpu_seconds, uint64_t requests) {
  return requests > 0 ? cpu_seconds * 1e6 / static_cast<double>(requests) : 0.0;
}

class RunSpan {
 public:
  using Clock = std::chrono::steady_clock;

  // One worker's measured interval: wall-clock `start`/`end`, and ProcessCpuSeconds() read at
  // the same two moments.
  void Record(Clock::time_point start, Clock::time_point end, double cpu_start, double cpu_end) {
    Widen(first_start_, last_end_, start.time_since_epoch().count(), end.time_since_epoch().count());
    Widen(first_cpu_ns_, last_cpu_ns_, static_cast<int64_t>(cpu_start * 1e9), static_cast<int64_t>(cpu_end * 1e9));
  }

  // Seconds from the earliest recorded start to the latest end; 0 if nothing was recorded.
  double seconds() const {
    const int64_t s = first_start_.load(), e = last_end_.load();
    return e > s ? std::chrono::duration<double>(Clock::duration(e - s)).count() : 0.0;
  }

  // Process CPU seconds from the earliest recorded start to the latest end; 0 if nothing was
  // recorded.
  double cpu_seconds() const {
    const int64_t s = first_cpu_ns_.load(), e = last_cpu_ns_.load();
    return e > s ? static_cast<double>(e - s) * 1e-9 : 0.0;
  }

 private:
  // Lowers `first` to `s` and raises `last` to `e` where they extend the span.
  static void Widen(std::atomic<int64_t>& first, std::atomic<int64_t>& last, int64_t s, int64_t e) {
    int64_t cur = first.load();
    while (s < cur && !first.compare_exchange_weak(cur, s)) {}
    cur = last.load();
    while (e > cur && !last.compare_exchange_weak(cur, e)) {}
  }

  std::atomic<int64_t> first_start_{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> last_end_{0};
  std::atomic<int64_t> first_cpu_ns_{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> last_cpu_ns_{0};
};

}  // namespace pserver::bench
