#include "base/process_memory.h"

#include <charconv>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

namespace pserver::base {

Result<ProcessMemory> ReadProcessMemory() {
  std::ifstream in("/proc/self/status");
  if (!in) return Status::NotFound("cannot read /proc/self/status");
  ProcessMemory m;
  bool rss = false, peak = false;
  std::string line;
  // Lines such as "VmRSS:\t  123456 kB": true if `line` is `field`'s, with its bytes in *out.
  const auto parse = [&line](std::string_view field, size_t* out) {
    if (!line.starts_with(field)) return false;
    const char* p = line.data() + field.size();
    const char* end = line.data() + line.size();
    while (p < end && (*p == ' ' || *p == '\t')) ++p;
    size_t kib = 0;
    if (std::from_chars(p, end, kib).ec != std::errc()) return false;
    *out = kib << 10;
    return true;
  };
  while (std::getline(in, line)) {
    rss = parse("VmRSS:", &m.rss_bytes) || rss;
    peak = parse("VmHWM:", &m.peak_bytes) || peak;
  }
  if (!rss || !peak) return Status::NotFound("/proc/self/status has no readable VmRSS or VmHWM line");
  return m;
}

Status ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5" << std::flush;
  if (!out) return Status::NotFound("cannot reset the peak resident size (/proc/self/clear_refs)");
  return Status::Ok();
}

}  // namespace pserver::base
