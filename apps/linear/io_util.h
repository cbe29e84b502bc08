// Small helpers shared by the data readers and writers of apps/linear (internal).
// Thread-safe: no shared state.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <system_error>

#include "pserver/status.h"

namespace pserver::linear::internal {

// The Status for a failed system call on `path` with error number `err`: kNotFound for
// ENOENT, kUnavailable otherwise.
inline Status ErrnoStatus(const std::string& path, std::string_view what, int err) {
  std::string msg = fmt::format("{}: {}: {}", path, what,
                                std::error_code(err, std::generic_category()).message());
  if (err == ENOENT) return Status::NotFound(std::move(msg));
  return Status::Unavailable(std::move(msg));
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace pserver::linear::internal
