// NodeOptionsFromEnvironment: the PSERVER_* variables `pserver launch` sets, and what a user
// may have set by hand. A malformed or out-of-range value is an error naming the variable and
// the accepted range, never a silently wrapped or ignored number (issue 11).
#include "pserver/launch_env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <optional>
#include <string>
#include <vector>

namespace pserver {
namespace {

// Sets variables for one test and restores the environment's previous values after it.
class ScopedEnv {
 public:
  using Vars = std::vector<std::pair<std::string, std::string>>;
  explicit ScopedEnv(const Vars& vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (auto& [name, old] : saved_) {
      if (old) {
        ::setenv(name.c_str(), old->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(LaunchEnvTest, ReadsTheVariablesTheLauncherSets) {
  ScopedEnv env({{"PSERVER_ROLE", "server"},
                 {"PSERVER_SCHEDULER", "tcp://127.0.0.1:5000"},
                 {"PSERVER_NUM_SERVERS", "3"},
                 {"PSERVER_NUM_WORKERS", "4"},
                 {"PSERVER_RANK_HINT", "2"},
                 {"PSERVER_HEARTBEAT_TIMEOUT_MS", "7000"},
                 {"PSERVER_METRICS_PORT", "9101"}});
  Result<NodeOptions> o = NodeOptionsFromEnvironment();
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->metrics_port, 9101);
  EXPECT_EQ(o->role, Role::kServer);
  EXPECT_EQ(o->scheduler_address, "tcp://127.0.0.1:5000");
  EXPECT_EQ(o->num_servers, 3u);
  EXPECT_EQ(o->num_workers, 4u);
  EXPECT_EQ(o->rank_hint, 2);
  EXPECT_EQ(o->heartbeat_timeout, std::chrono::milliseconds(7000));
}

TEST(LaunchEnvTest, RefusesMalformedAndOutOfRangeValuesNamingTheVariable) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"PSERVER_NUM_SERVERS", "4294967297"},  // wrapped to 1 in a uint32 before
      {"PSERVER_NUM_SERVERS", "0"},
      {"PSERVER_NUM_WORKERS", "-1"},
      {"PSERVER_NUM_WORKERS", "2x"},
      {"PSERVER_RANK_HINT", "99999999999"},
      {"PSERVER_HEARTBEAT_TIMEOUT_MS", "0"},  // silently meant "the default" before
      {"PSERVER_SEND_TIMEOUT_MS", "1e3"},
      {"PSERVER_REGISTER_TIMEOUT_MS", "999999999999"},
      {"PSERVER_HEARTBEAT_INTERVAL_MS", " 5"},
      {"PSERVER_METRICS_PORT", "65536"},
      {"PSERVER_METRICS_PORT", "-2"},
  };
  for (const auto& [name, value] : bad) {
    ScopedEnv env({{"PSERVER_SCHEDULER", "tcp://127.0.0.1:5000"}, {name, value}});
    Result<NodeOptions> o = NodeOptionsFromEnvironment();
    ASSERT_FALSE(o.ok()) << name << "=" << value << " was accepted";
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(name + "='" + value + "' is not an integer in ["), std::string::npos)
        << o.status().ToString();
  }
}

TEST(LaunchEnvTest, RefusesAnUnknownRoleAndAMissingScheduler) {
  {
    ScopedEnv env({{"PSERVER_SCHEDULER", "tcp://127.0.0.1:5000"}, {"PSERVER_ROLE", "scheduler"}});
    EXPECT_EQ(NodeOptionsFromEnvironment().status().code(), StatusCode::kInvalidArgument);
  }
  ScopedEnv env(ScopedEnv::Vars{{"PSERVER_SCHEDULER", ""}});
  Result<NodeOptions> o = NodeOptionsFromEnvironment();
  EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(o.status().message().find("PSERVER_SCHEDULER is not set"), std::string::npos) << o.status().ToString();
}

}  // namespace
}  // namespace pserver
