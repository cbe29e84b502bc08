// Flag checks shared by the `pserver` sub-commands (CLI11 validators).
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "pserver/table.h"

namespace pserver::tools {

// Refuses a floating-point flag value that reads as NaN or infinite ("nan", "inf", "1e999"):
// CLI11's range checks compare with < and >, which NaN passes, and a NaN tolerance or penalty
// would silently change what the job computes. Text that is not a number at all is left to the
// option's type conversion, which names it. Put it before other checks of the same option.
inline CLI::Validator FiniteNumber() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        const char* begin = input.c_str();
        char* end = nullptr;
        const double v = std::strtod(begin, &end);
        if (end == begin || std::isfinite(v)) return std::string();
        return "value " + input + " is not a finite number";
      },
      "FINITE", "FiniteNumber");
}

// Refuses a filter chain that ParseFilters refuses (pserver/table.h), with its message.
inline CLI::Validator FilterChainText() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        Result<std::vector<FilterSpec>> parsed = ParseFilters(text);
        return parsed.ok() ? std::string() : parsed.status().message();
      },
      "FILTERS", "FilterChainText");
}

}  // namespace pserver::tools
