// Integration tests on real clusters: `pserver launch` starts a scheduler, servers and workers
// as separate processes talking ZeroMQ over loopback TCP, and every worker runs one scenario
// of kv_check_worker, which checks closed-form results and exits non-zero on any mismatch.
// A test passes when launch exits 0 and every worker reported its scenario passed; on failure
// the whole cluster output is printed. The only timeout is a hang guard.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

// How long a cluster run may take before it counts as hung (it normally takes a few seconds).
constexpr std::chrono::seconds kHangGuard{240};

size_t CountOccurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t pos = text.find(part); pos != std::string::npos; pos = text.find(part, pos + part.size())) ++n;
  return n;
}

// Runs `pserver launch --servers S --workers W -- kv_check_worker --scenario X --seed N` and
// checks it exits 0 with every worker's "scenario X passed".
void RunScenario(const std::string& scenario, int servers, int workers, std::vector<std::string> extra = {}) {
  const uint64_t seed = TestSeed();
  std::vector<std::string> argv = {PserverBinary(),
                                   "launch",
                                   "--servers",
                                   std::to_string(servers),
                                   "--workers",
                                   std::to_string(workers),
                                   "--grace-ms",
                                   "2000",
                                   "--",
                                   CheckWorkerBinary(),
                                   "--scenario",
                                   scenario,
                                   "--seed",
                                   std::to_string(seed)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto launch = Subprocess::Spawn(argv);
  ASSERT_OK(launch);
  std::optional<int> status = (*launch)->WaitExit(kHangGuard);
  ASSERT_TRUE(status.has_value()) << "pserver launch (scenario " << scenario << ") still running after "
                                  << kHangGuard.count() << " s; output so far:\n"
                                  << (*launch)->output();
  const std::string out = (*launch)->output();
  EXPECT_EQ(DescribeWaitStatus(*status), "exit 0") << "scenario " << scenario << ", seed " << seed << ":\n" << out;
  EXPECT_EQ(CountOccurrences(out, "scenario " + scenario + " passed"), static_cast<size_t>(workers))
      << "not every worker reported success:\n"
      << out;
}

TEST(ClusterTest, SumIsExactWithOneServerTwoWorkers) { RunScenario("sum", 1, 2); }

TEST(ClusterTest, SumIsExactWithThreeServersTwoWorkers) { RunScenario("sum", 3, 2); }

TEST(ClusterTest, MatrixRowsAndRangePlacedIdsAreExact) { RunScenario("matrix", 3, 2); }

TEST(ClusterTest, VariableLengthValuesAndLengthsRoundTrip) { RunScenario("varlen", 2, 2); }

TEST(ClusterTest, RequestsWithoutKeysComplete) { RunScenario("empty", 2, 1); }

TEST(ClusterTest, SixtyFourMiBRequestRoundTripsExactly) { RunScenario("big", 1, 1); }

TEST(ClusterTest, PullSeesEarlierPushWithoutWait) { RunScenario("order", 2, 2); }

TEST(ClusterTest, BadCallsFailAtTheCallAndSendNothing) { RunScenario("errors", 2, 1); }

// The bounded-delay model: with tau = 0 (sequential) and tau = 2, no task of a worker starts
// before every task <= t - tau - 1 finished; a pending bulk-synchronous pull holds back all but
// tau requests behind it (seen by the other worker on a counter key), and pulls issued without
// Wait see every earlier push of their worker.
TEST(ClusterTest, SequentialTasksStartOnlyAfterThePreviousFinished) { RunScenario("delay", 2, 2, {"--max-delay", "0"}); }

TEST(ClusterTest, BoundedDelayKeepsAtMostTauPlusOneTasksInFlight) { RunScenario("delay", 2, 2, {"--max-delay", "2"}); }

// Every built-in update rule (add, assign, sgd, adagrad, adam, ftrl, prox) on two servers
// matches a plain double reference of its formula to 1e-6.
TEST(ClusterTest, BuiltInUpdateRulesMatchTheReference) { RunScenario("rules", 2, 2); }

// A server program that registers its own rule ("scaled_add", w += k * push) serves tables
// naming it; a table naming an unknown rule fails to declare with an error naming it.
TEST(ClusterTest, UserDefinedUpdateRuleOnItsOwnServerProgram) {
  const uint64_t seed = TestSeed();
  constexpr int kServers = 2, kWorkers = 2;
  auto scheduler = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--num-servers", std::to_string(kServers), "--num-workers",
                                      std::to_string(kWorkers)});
  ASSERT_OK(scheduler);
  const std::string marker = "scheduler listening at ";
  std::optional<std::string> line = (*scheduler)->WaitForLine(marker, kHangGuard);
  ASSERT_TRUE(line.has_value()) << (*scheduler)->output();
  const std::string address = line->substr(marker.size());
  auto env = [&](int rank) {
    return std::map<std::string, std::string>{{"PSERVER_SCHEDULER", address},
                                              {"PSERVER_HOST", "127.0.0.1"},
                                              {"PSERVER_NUM_SERVERS", std::to_string(kServers)},
                                              {"PSERVER_NUM_WORKERS", std::to_string(kWorkers)},
                                              {"PSERVER_RANK_HINT", std::to_string(rank)}};
  };
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int r = 0; r < kServers; ++r) {
    auto s = Subprocess::Spawn({CUSTOM_RULE_SERVER}, env(r));
    ASSERT_OK(s);
    nodes.push_back(std::move(*s));
  }
  for (int r = 0; r < kWorkers; ++r) {
    auto w = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "custom_rule", "--seed", std::to_string(seed)},
                               env(r));
    ASSERT_OK(w);
    nodes.push_back(std::move(*w));
  }
  std::string all;
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::optional<int> status = nodes[i]->WaitExit(kHangGuard);
    const std::string who = i < kServers ? "custom_rule_server " + std::to_string(i)
                                         : "worker " + std::to_string(i - kServers);
    ASSERT_TRUE(status.has_value()) << who << " still running; output:\n" << nodes[i]->output();
    EXPECT_EQ(DescribeWaitStatus(*status), "exit 0") << who << ", seed " << seed << ":\n" << nodes[i]->output();
    all += nodes[i]->output();
  }
  std::optional<int> status = (*scheduler)->WaitExit(kHangGuard);
  ASSERT_TRUE(status.has_value()) << (*scheduler)->output();
  EXPECT_EQ(DescribeWaitStatus(*status), "exit 0") << (*scheduler)->output();
  EXPECT_EQ(CountOccurrences(all, "scenario custom_rule passed"), static_cast<size_t>(kWorkers)) << all;
  EXPECT_EQ(CountOccurrences(all, "unknown rule refused"), static_cast<size_t>(kWorkers)) << all;
}

// The checks can fail: with --expect-wrong-sums every worker expects sums off by one, so the
// scenario must fail and launch must pass the worker's failure on (the tests above cannot pass
// vacuously).
TEST(ClusterTest, MismatchMakesWorkerAndLaunchFail) {
  auto launch = Subprocess::Spawn({PserverBinary(), "launch", "--servers", "1", "--workers", "1", "--grace-ms", "2000",
                                   "--", CheckWorkerBinary(), "--scenario", "sum", "--expect-wrong-sums"});
  ASSERT_OK(launch);
  std::optional<int> status = (*launch)->WaitExit(kHangGuard);
  ASSERT_TRUE(status.has_value()) << (*launch)->output();
  const std::string out = (*launch)->output();
  EXPECT_EQ(DescribeWaitStatus(*status), "exit 1") << out;
  EXPECT_NE(out.find("scenario sum FAILED"), std::string::npos) << out;
  EXPECT_NE(out.find("check failed: table 'sum_f32'"), std::string::npos) << out;
}

// Outside a cluster the worker program says what is missing instead of hanging.
TEST(ClusterTest, WorkerWithoutClusterFailsWithAClearMessage) {
  auto worker = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "sum"});
  ASSERT_OK(worker);
  std::optional<int> status = (*worker)->WaitExit(kHangGuard);
  ASSERT_TRUE(status.has_value()) << (*worker)->output();
  EXPECT_EQ(DescribeWaitStatus(*status), "exit 2") << (*worker)->output();
  EXPECT_NE((*worker)->output().find("PSERVER_SCHEDULER"), std::string::npos) << (*worker)->output();
}

}  // namespace
}  // namespace pserver::testing
