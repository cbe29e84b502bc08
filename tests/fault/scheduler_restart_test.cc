// A durable scheduler (docs/durability.md, section 6): a job of real processes -- a scheduler
// with --store, 2 servers, 2 workers running the built-in check workload (every round: pushes in
// flight, a barrier, every sum pulled back and checked exactly) -- whose scheduler is SIGKILLed
// mid-job and started again on the same store. The workers go on (their barriers, asked again
// of the new scheduler, complete), no update is lost or applied twice, and the job ends well.
// Run with the file store and with a real etcd. Also: a scheduler started on the store of a job
// whose scheduler lives is refused (it cannot take the job's address), and one started for
// another shape of job is refused naming both.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/etcd_process.h"
#include "tests/integration/subprocess.h"
#include "testing/test_util.h"

namespace pserver::testing {
namespace {

constexpr std::chrono::milliseconds kHangGuard{120000};

class SchedulerRestartTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("pserver_sched_restart_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    if (GetParam() == "file") {
      store_ = "file:" + (dir_ / "store").string();
    } else {
      etcd_ = std::make_unique<EtcdProcess>(dir_);
      std::string why;
      ASSERT_TRUE(etcd_->Start(&why)) << why;
      store_ = "etcd:" + etcd_->endpoint() + "/restart";
    }
  }
  void TearDown() override {
    processes_.clear();
    etcd_.reset();
    std::filesystem::remove_all(dir_);
  }

  Subprocess& Spawn(std::vector<std::string> args) {
    args.insert(args.begin(), PserverBinary());
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p.status());
    processes_.push_back(std::move(*p));
    return *processes_.back();
  }
  std::vector<std::string> SchedulerArgs(int port, int workers = 2) {
    return {"--log-level", "debug", "scheduler", "--port", std::to_string(port), "--num-servers", "2", "--num-workers", std::to_string(workers),
            "--store", store_, "--heartbeat-timeout-ms", "10000"};
  }

  // The highest round worker `w` printed ("worker W: round R/...").
  static int LastRound(const Subprocess& w) {
    static const std::regex round(R"(round (\d+)/)");
    int last = 0;
    const std::string out = w.output();
    for (auto it = std::sregex_iterator(out.begin(), out.end(), round); it != std::sregex_iterator(); ++it) {
      last = std::max(last, std::stoi((*it)[1]));
    }
    return last;
  }

  std::filesystem::path dir_;
  std::string store_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
};

TEST_P(SchedulerRestartTest, AKilledSchedulerStartedAgainResumesTheJobAndNothingIsLost) {
  const uint64_t seed = TestSeed();
  const int port = FreePort();
  Subprocess& first = Spawn(SchedulerArgs(port));
  ASSERT_TRUE(first.WaitForOutput("scheduler listening at", kHangGuard)) << first.output();
  const std::string address = "tcp://127.0.0.1:" + std::to_string(port);
  std::vector<Subprocess*> servers, workers;
  for (int i = 0; i < 2; ++i) servers.push_back(&Spawn({"server", "--scheduler", address}));
  const std::string stop = (dir_ / "stop").string();
  for (int i = 0; i < 2; ++i) {
    workers.push_back(&Spawn({"worker", "--scheduler", address, "--keys", "1000", "--pushes", "4", "--rounds", "1000000",
                              "--seed", std::to_string(seed), "--stop-file", stop}));
  }
  for (Subprocess* w : workers) ASSERT_TRUE(w->WaitForOutput("round 20/", kHangGuard)) << w->output();

  // Worker 1 stops; worker 0 then waits in a barrier for it, and the scheduler holds its call.
  // Killed now, the scheduler takes that call with it: worker 0 must ask the new one again.
  // The scheduler names each worker's process as it registered ("worker R (node N) registered").
  const std::regex name(R"((worker \d+ \(node \d+\)) registered)");
  std::smatch m0, m1;
  const std::string out0 = workers[0]->output(), out1 = workers[1]->output();
  ASSERT_TRUE(std::regex_search(out0, m0, name)) << out0;
  ASSERT_TRUE(std::regex_search(out1, m1, name)) << out1;
  workers[1]->Signal(SIGSTOP);
  const auto give_up = std::chrono::steady_clock::now() + kHangGuard;
  for (;;) {  // until the kernel has stopped it
    std::optional<ProcessInfo> info = FindProcess(workers[1]->pid());
    ASSERT_TRUE(info.has_value());
    if (info->state == 'T') break;
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "worker 1 is in state " << info->state << ", not stopped";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Worker 0's barrier that never completes is the one it enters alone after worker 1's last
  // entry: worker 0 may have entered it before the stop, or be a round behind and enter it
  // after. A barrier message worker 1 sent just before it stopped may be logged later still;
  // then worker 0's wait is the next one.
  const std::string entered1 = m1[1].str() + " entered the barrier";
  for (;;) {
    const size_t last1 = first.output().rfind(entered1);
    ASSERT_TRUE(first.WaitForOutput(m0[1].str() + " entered the barrier of workers (1 arrived)", kHangGuard,
                                    last1 == std::string::npos ? 0 : last1))
        << first.output();
    if (first.output().rfind(entered1) == last1) break;
  }
  first.Signal(SIGKILL);
  ASSERT_TRUE(first.WaitExit(kHangGuard).has_value());
  const int at_kill = std::max(LastRound(*workers[0]), LastRound(*workers[1]));
  std::printf("SIGKILL of the scheduler at round %d, worker 0 in a barrier (%s store)\n", at_kill, GetParam().c_str());

  Subprocess& second = Spawn(SchedulerArgs(port));
  ASSERT_TRUE(second.WaitForOutput("resumed the job recorded in", kHangGuard)) << second.output();
  workers[1]->Signal(SIGCONT);
  // The barrier cannot complete unless worker 0 asks the new scheduler again.
  ASSERT_TRUE(workers[0]->WaitForOutput("a new scheduler (generation 2) resumed the job; asking it again for 1 request(s)",
                                        kHangGuard))
      << workers[0]->output() << second.output();
  // Both workers make progress under the new scheduler: rounds need its barriers.
  const std::string later = "round " + std::to_string(at_kill + 20) + "/";
  for (Subprocess* w : workers) ASSERT_TRUE(w->WaitForOutput(later, kHangGuard)) << w->output() << second.output();
  std::ofstream(stop) << "stop\n";

  for (Subprocess* p : workers) {
    std::optional<int> st = p->WaitExit(kHangGuard);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(DescribeWaitStatus(*st), "exit 0") << p->output();
  }
  for (Subprocess* p : servers) {
    std::optional<int> st = p->WaitExit(kHangGuard);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(DescribeWaitStatus(*st), "exit 0") << p->output();
  }
  std::optional<int> st = second.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(DescribeWaitStatus(*st), "exit 0") << second.output();
  EXPECT_NE(second.output().find("job finished"), std::string::npos) << second.output();

  // The job ended, so a scheduler started on the store now begins a new job.
  Subprocess& third = Spawn(SchedulerArgs(FreePort(), 1));
  ASSERT_TRUE(third.WaitForOutput("ended (ok); a new job replaces it", kHangGuard)) << third.output();
}

TEST_P(SchedulerRestartTest, ASecondSchedulerOrAnotherShapeOfJobIsRefused) {
  const int port = FreePort();
  Subprocess& first = Spawn(SchedulerArgs(port));
  ASSERT_TRUE(first.WaitForOutput("scheduler listening at", kHangGuard)) << first.output();
  const std::string address = "tcp://127.0.0.1:" + std::to_string(port);
  Spawn({"server", "--scheduler", address});
  Spawn({"server", "--scheduler", address});
  Spawn({"worker", "--scheduler", address, "--rounds", "1000000", "--stop-file", (dir_ / "stop").string()});
  Subprocess& w = Spawn({"worker", "--scheduler", address, "--rounds", "1000000", "--stop-file", (dir_ / "stop").string()});
  ASSERT_TRUE(w.WaitForOutput("round 2/", kHangGuard)) << w.output();
  // While the first lives: a second one on its store cannot take the job's address.
  Subprocess& second = Spawn(SchedulerArgs(port));
  std::optional<int> st = second.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(DescribeWaitStatus(*st), "exit 0") << second.output();
  EXPECT_NE(second.output().find(address), std::string::npos) << second.output();
  // Another shape of job on the same store.
  first.Signal(SIGKILL);
  ASSERT_TRUE(first.WaitExit(kHangGuard).has_value());
  Subprocess& other = Spawn(SchedulerArgs(port, 3));
  st = other.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(DescribeWaitStatus(*st), "exit 0") << other.output();
  EXPECT_NE(other.output().find("holds a running job of 2 servers, 2 workers and 1 replicas, not the 2, 3 and 1"),
            std::string::npos)
      << other.output();
}

INSTANTIATE_TEST_SUITE_P(Stores, SchedulerRestartTest, ::testing::Values("file", "etcd"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace pserver::testing
