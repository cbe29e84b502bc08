// Integration tests on real clusters: `pserver launch` starts a scheduler, servers and workers
// as separate processes talking ZeroMQ over loopback TCP, and every worker runs one scenario
// of kv_check_worker, which checks closed-form results and exits non-zero on any mismatch.
// A test passes when launch exits 0 and every worker reported its scenario passed; on failure
// the whole cluster output is printed. The only timeout is a hang guard.
#include <gtest/gtest.h>

#include <chrono>
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
