// The process's resident memory as the kernel counts it (/proc/self/status), and a reset of its
// peak: what a memory figure that "counts everything" -- the store, the allocator's slack,
// freed-but-kept pages, scratch -- is measured with (the memory benchmark and tests). Linux only.
#pragma once

#include <cstddef>

#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::base {

struct ProcessMemory {
  size_t rss_bytes = 0;   // VmRSS: resident now
  size_t peak_bytes = 0;  // VmHWM: the most resident since the process began or ResetPeakRss
};

// Reads VmRSS and VmHWM from /proc/self/status.
Result<ProcessMemory> ReadProcessMemory();

// Resets VmHWM to the current resident size (writes "5" to /proc/self/clear_refs; Linux 4.0+).
Status ResetPeakRss();

}  // namespace pserver::base
