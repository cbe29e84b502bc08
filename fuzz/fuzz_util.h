// Helpers shared by the fuzz targets (header-only).
//
// A target traps (__builtin_trap) when a property it checks breaks, so that libFuzzer and the
// standalone driver (standalone_main.cc) both report it as a crash and keep the input.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "apps/linear/dataset.h"

namespace pserver::fuzz {

inline void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// A private directory for the files a target reads and writes, made once per process and
// removed at exit.
class ScratchDir {
 public:
  static const ScratchDir& Get() {
    static const ScratchDir dir;
    return dir;
  }
  std::string Path(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pserver-fuzz-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string path_;
};

// Whether two arrays of floats hold the same bits (unlike ==, a NaN equals itself).
template <typename Vec>
bool SameBits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
}

// Whether two data sets hold the same arrays, bit for bit.
inline bool SameData(const linear::Dataset& a, const linear::Dataset& b) {
  return SameBits(a.labels(), b.labels()) && a.offsets() == b.offsets() && a.feature_ids() == b.feature_ids() &&
         SameBits(a.values(), b.values());
}

// Writes `bytes` to `path` (created or truncated); aborts when the file cannot be written, which
// is a problem of the machine and not of the input.
inline void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace pserver::fuzz
