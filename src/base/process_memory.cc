#include "base/process_memory.h"

#include <fstream>
#include <string>

namespace pserver::base {

Result<ProcessMemory> ReadProcessMemory() {
  std::ifstream in("/proc/self/status");
  if (!in) return Status::NotFound("cannot read /proc/self/status");
  ProcessMemory m;
  bool rss = false, peak = false;
  std::string line;
  while (std::getline(in, line)) {
    // Lines such as "VmRSS:\t  123456 kB".
    const auto kib = [&line] { return static_cast<size_t>(std::stoull(line.substr(line.find(':') + 1))) << 10; };
    if (line.starts_with("VmRSS:")) m.rss_bytes = kib(), rss = true;
    if (line.starts_with("VmHWM:")) m.peak_bytes = kib(), peak = true;
  }
  if (!rss || !peak) return Status::NotFound("/proc/self/status has no VmRSS or VmHWM line");
  return m;
}

Status ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5" << std::flush;
  if (!out) return Status::NotFound("cannot reset the peak resident size (/proc/self/clear_refs)");
  return Status::Ok();
}

}  // namespace pserver::base
