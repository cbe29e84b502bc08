// GoogleTest helpers for the tests that run real processes (tests/integration, tests/fault,
// tests/regress): matching their output and judging how they ended. Header-only; the tests
// link GoogleTest, the subprocess library does not.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "tests/integration/subprocess.h"

namespace pserver::testing {

// EXPECT_TRUE(Contains(text, part)) prints the whole text on failure.
inline ::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no \"" << part << "\" in:\n" << text;
}

// How `p` ended ("exit 0", "killed by signal 9 (SIGKILL)"), once it did; a test failure naming
// `who`, and "hung", if it runs past `guard` -- a hang detector, not an assertion about speed.
inline std::string ExitOf(Subprocess& p, const std::string& who, std::chrono::seconds guard) {
  std::optional<int> status = p.WaitExit(guard);
  if (!status) {
    ADD_FAILURE() << who << " (pid " << p.pid() << ") did not exit within " << guard.count()
                  << " s: it hangs. Output so far:\n"
                  << p.output();
    return "hung";
  }
  return DescribeWaitStatus(*status);
}

// An ExitOf description of a process that ended by itself or by a signal, but not with 0.
inline bool ExitedNonZero(const std::string& described) { return described != "exit 0" && described != "hung"; }

}  // namespace pserver::testing
