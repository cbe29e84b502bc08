// `pserver chaos` as CI runs it: servers of a replicated local cluster SIGKILLed one after
// another (each restarted and joining), every sum the workers pushed checked exactly; workers
// and the scheduler killed and started again; and the
// same command failing when replicas do not keep what they acknowledge (a failpoint), so that a
// pass means something.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/integration/subprocess.h"
#include "testing/test_util.h"

namespace pserver::testing {
namespace {

constexpr std::chrono::milliseconds kHangGuard{280000};

// Runs `pserver chaos ARGS` to its end; returns (exit description, output).
std::pair<std::string, std::string> RunChaos(std::vector<std::string> args,
                                             const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), {PserverBinary(), "chaos"});
  auto p = Subprocess::Spawn(args, env);
  EXPECT_OK(p.status());
  if (!p.ok()) return {"spawn failed", ""};
  std::optional<int> status = (*p)->WaitExit(kHangGuard);
  return {status ? DescribeWaitStatus(*status) : "hung", (*p)->output()};
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(ChaosTest, TwentyServerKillsLoseNoUpdateAndApplyNoneTwice) {
  const std::string seed = std::to_string(TestSeed());
  auto [status, out] = RunChaos({"--kills", "20", "--seed", seed});
  ASSERT_EQ(status, "exit 0") << out;
  EXPECT_EQ(Count(out, "chaos: kill "), 20u) << out;
  EXPECT_EQ(Count(out, "chaos: the cluster is whole again"), 20u) << out;
  EXPECT_NE(out.find("chaos: 20 kills, seed " + seed + ": 0 updates lost, 0 applied twice"), std::string::npos) << out;
  EXPECT_NE(out.find("chaos: recovery from 20 SIGKILLs (kill -> every worker progressing): median"), std::string::npos)
      << out;
}

// A server that goes silent without dying (SIGSTOP, as a partitioned machine does) is found by
// heartbeats and failed over from; continued, it learns that it was cut off and exits without
// serving, and the server started in its place joins.
TEST(ChaosTest, StoppedServersAreFailedOverFromAndExitOnceContinued) {
  const std::string seed = std::to_string(TestSeed());
  auto [status, out] = RunChaos({"--kills", "3", "--faults", "stop", "--heartbeat-timeout-ms", "1000", "--seed", seed});
  ASSERT_EQ(status, "exit 0") << out;
  EXPECT_EQ(Count(out, " SIGSTOPped "), 3u) << out;
  EXPECT_EQ(Count(out, ", continued, found itself cut off from the job and exited with status 1"), 3u) << out;
  EXPECT_NE(out.find("chaos: 3 kills, seed " + seed + ": 0 updates lost, 0 applied twice"), std::string::npos) << out;
  EXPECT_NE(out.find("chaos: recovery from 3 SIGSTOPs"), std::string::npos) << out;
}

// The scheduler SIGKILLed again and again (it keeps the job's state in a file store; the
// launcher starts it again and it resumes the job), then servers and the scheduler drawn alike:
// every sum exact throughout.
TEST(ChaosTest, SchedulerKillsAreResumedFromTheStoreAndLoseNothing) {
  const std::string seed = std::to_string(TestSeed());
  auto [status, out] = RunChaos({"--kills", "5", "--victims", "scheduler", "--seed", seed});
  ASSERT_EQ(status, "exit 0") << out;
  EXPECT_EQ(Count(out, "the scheduler SIGKILLed"), 5u) << out;
  EXPECT_EQ(Count(out, "scheduler killed by signal 9 (SIGKILL) while the workers run; starting it again"), 5u) << out;
  EXPECT_NE(out.find("chaos: 5 kills, seed " + seed + ": 0 updates lost, 0 applied twice"), std::string::npos) << out;
  EXPECT_NE(out.find("chaos: recovery from 5 SIGKILLs of the scheduler"), std::string::npos) << out;

  auto [any_status, any_out] = RunChaos({"--kills", "8", "--victims", "any", "--seed", seed});
  ASSERT_EQ(any_status, "exit 0") << any_out;
  EXPECT_EQ(Count(any_out, "chaos: kill "), 8u) << any_out;
  EXPECT_NE(any_out.find("chaos: 8 kills, seed " + seed + ": 0 updates lost, 0 applied twice"), std::string::npos)
      << any_out;
}

// Workers SIGKILLed: the launcher starts each again in its place (its slot), which takes its work
// over, finds every value of the slot between what its predecessor's pushes acknowledged and
// what it sent, and carries on checking exactly; the job ends well.
TEST(ChaosTest, KilledWorkersAreReplacedAndTheirSuccessorsCheckWhatTheyLeft) {
  const std::string seed = std::to_string(TestSeed());
  auto [status, out] = RunChaos({"--kills", "6", "--victims", "workers", "--seed", seed});
  ASSERT_EQ(status, "exit 0") << out;
  EXPECT_EQ(Count(out, " SIGKILLed "), 6u) << out;
  EXPECT_EQ(Count(out, "killed by signal 9 (SIGKILL) while the workers run; starting it again, to take its work over"),
            6u)
      << out;
  EXPECT_EQ(Count(out, "every value lies between what its pushes acknowledged and what it sent"), 6u) << out;
  EXPECT_NE(out.find("chaos: 6 kills, seed " + seed + ": 0 updates lost, 0 applied twice"), std::string::npos) << out;
  EXPECT_NE(out.find("chaos: recovery from 6 SIGKILLs of workers"), std::string::npos) << out;
}

TEST(ChaosTest, FailsNamingTheLostSumWhenReplicasStoreNothing) {
  const std::string seed = std::to_string(TestSeed());
  auto [status, out] = RunChaos({"--kills", "3", "--seed", seed}, {{"PSERVER_FAILPOINTS", "replica-stores-nothing"}});
  EXPECT_EQ(status, "exit 1") << out;
  EXPECT_NE(out.find("failpoint replica-stores-nothing"), std::string::npos) << out;
  EXPECT_NE(out.find("chaos: FAILED"), std::string::npos) << out;
  // A worker found a sum short of what was pushed.
  EXPECT_NE(out.find(", expected "), std::string::npos) << out;
  EXPECT_EQ(out.find("0 updates lost"), std::string::npos) << out;
}

TEST(ChaosTest, RefusesReplicasItCannotKillUnder) {
  auto [status, out] = RunChaos({"--kills", "1", "--servers", "2", "--replicas", "3"});
  EXPECT_EQ(status, "exit 2") << out;
  EXPECT_NE(out.find("--replicas must be at least 2 and at most --servers"), std::string::npos) << out;
  auto [stop_status, stop_out] = RunChaos({"--kills", "1", "--victims", "scheduler", "--faults", "stop"});
  EXPECT_EQ(stop_status, "exit 2") << stop_out;
  EXPECT_NE(stop_out.find("--victims scheduler, workers or any goes with --faults kill"), std::string::npos) << stop_out;
}

}  // namespace
}  // namespace pserver::testing
