// Log verbosity of the library (logs go to stderr). Thread-safe.
#pragma once

#include <string_view>

namespace pserver {

// Sets the level from a name: trace, debug, info, warn, error or off. Returns false for an
// unknown name (the level is then unchanged).
bool SetLogLevel(std::string_view level);

}  // namespace pserver
