// GoogleTest helpers: Status assertions and printed, reproducible seeds.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "pserver/result.h"
#include "pserver/status.h"

#define PSERVER_TESTING_STATUS_(expr) ::pserver::testing::StatusOf(expr)
#define ASSERT_OK(expr) ASSERT_TRUE(PSERVER_TESTING_STATUS_(expr).ok()) << PSERVER_TESTING_STATUS_(expr).ToString()
#define EXPECT_OK(expr)                                                   \
  do {                                                                    \
    ::pserver::Status pserver_s_ = PSERVER_TESTING_STATUS_(expr);         \
    EXPECT_TRUE(pserver_s_.ok()) << pserver_s_.ToString();                \
  } while (0)

// In a worker body that returns a Status (rather than asserting): fail with the condition's text.
#define PSERVER_RETURN_IF_FALSE(cond)                                            \
  do {                                                                           \
    if (!(cond)) return Status::Internal(std::string("check failed: ") + #cond); \
  } while (0)

namespace pserver::testing {

inline Status StatusOf(const Status& s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.status();
}

// Whether this build runs under a sanitizer (whose shadow memory does not fit an address-space
// limit, for example).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// The seed of a randomized test: PSERVER_TEST_SEED if set, else `fallback`. Always printed
// (and recorded in the test's XML) so that a failure can be replayed.
inline uint64_t TestSeed(uint64_t fallback = 20261124) {
  uint64_t seed = fallback;
  if (const char* env = std::getenv("PSERVER_TEST_SEED"); env && *env) seed = std::strtoull(env, nullptr, 10);
  std::printf("[ seed     ] %llu (set PSERVER_TEST_SEED to replay)\n", static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// A fresh directory for one test, under the temp dir and named after the test and the process;
// removed, with its contents, at destruction.
class TestDir {
 public:
  TestDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("pserver_") + info->test_suite_name() + "_" + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TestDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace pserver::testing
