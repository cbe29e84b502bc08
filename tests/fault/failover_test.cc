// Failover across real processes (docs/durability.md, section 3): a job of `pserver` processes
// keeping two replicas of every key -- scheduler, four servers, and two kv_check_workers
// (--scenario failover) that push to 2000 keys without waiting, up to 32 pushes in flight each --
// loses two servers to SIGKILL, one after the other (the second once the replicas of the first
// failover are complete). The job must go on without an error at any worker, and at the end every
// key must hold exactly what the workers say they pushed: no acknowledged push lost, none applied
// twice. Also: with replicas, a second server killed before the chains were restored ends the
// job with an error naming why, never with a wrong sum; and without replicas a dead server still
// ends the job.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "tests/integration/process_expectations.h"
#include "tests/integration/subprocess.h"

namespace pserver {
namespace {

using testing::CheckWorkerBinary;
using testing::PserverBinary;
using testing::Subprocess;

constexpr std::chrono::seconds kHangGuard(240);

std::string ExitOf(Subprocess& p, const std::string& who) { return testing::ExitOf(p, who, kHangGuard); }

class FailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    std::printf("seed %llu\n", static_cast<unsigned long long>(seed_));
    rng_.seed(seed_);
    stop_file_ = ::testing::TempDir() + "failover_stop_" + std::to_string(seed_);
    std::remove(stop_file_.c_str());
  }
  void TearDown() override { std::remove(stop_file_.c_str()); }

  void StartCluster(int servers, int workers, int replicas) {
    auto s = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--num-servers",
                                std::to_string(servers), "--num-workers", std::to_string(workers), "--replicas",
                                std::to_string(replicas)});
    ASSERT_OK(s);
    scheduler_ = std::move(*s);
    const std::string marker = "scheduler listening at ";
    std::optional<std::string> line = scheduler_->WaitForLine(marker, kHangGuard);
    ASSERT_TRUE(line.has_value()) << scheduler_->output();
    address_ = line->substr(marker.size());
    for (int i = 0; i < servers; ++i) {
      auto p = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address_, "--host", "127.0.0.1"});
      ASSERT_OK(p);
      servers_.push_back(std::move(*p));
    }
    const std::map<std::string, std::string> env = {
        {"PSERVER_ROLE", "worker"}, {"PSERVER_SCHEDULER", address_}, {"PSERVER_HOST", "127.0.0.1"}};
    for (int i = 0; i < workers; ++i) {
      auto p = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "failover", "--seed", std::to_string(seed_),
                                  "--stop-file", stop_file_},
                                 env);
      ASSERT_OK(p);
      workers_.push_back(std::move(*p));
    }
    for (auto& w : workers_) ASSERT_TRUE(w->WaitForOutput("failover: pushing\n", kHangGuard)) << w->output();
  }

  // SIGKILLs a live server chosen by the seed; returns its index in servers_.
  size_t KillAServer() {
    std::vector<size_t> live;
    for (size_t i = 0; i < servers_.size(); ++i) {
      if (!killed_.contains(i)) live.push_back(i);
    }
    const size_t victim = live[rng_() % live.size()];
    std::printf("SIGKILL of server process %zu (pid %d)\n", victim, static_cast<int>(servers_[victim]->pid()));
    servers_[victim]->Signal(SIGKILL);
    killed_.insert(victim);
    return victim;
  }

  // Waits for the scheduler to fail over to the view of epoch `epoch`.
  void WaitForFailover(uint64_t epoch) {
    EXPECT_TRUE(scheduler_->WaitForOutput("serves its keys from epoch " + std::to_string(epoch) + "\n", kHangGuard))
        << scheduler_->output();
  }

  // Asks `pserver status` until every live server's replicas are complete at the current epoch
  // (what the scheduler knows, which a server's own log line may precede).
  void WaitForReplicasInSync() {
    const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
    std::string out;
    while (std::chrono::steady_clock::now() < deadline) {
      auto p = Subprocess::Spawn({PserverBinary(), "status", "--scheduler", address_});
      ASSERT_OK(p);
      ASSERT_EQ(ExitOf(**p, "pserver status"), "exit 0") << (*p)->output();
      out = (*p)->output();
      if (out.find("replicas syncing") == std::string::npos && out.find("replicas in sync") != std::string::npos) return;
    }
    FAIL() << "the replicas did not get complete:\n" << out;
  }

  std::string address_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::string stop_file_;
  std::unique_ptr<Subprocess> scheduler_;
  std::vector<std::unique_ptr<Subprocess>> servers_;
  std::vector<std::unique_ptr<Subprocess>> workers_;
  std::set<size_t> killed_;
};

TEST_F(FailoverTest, TwoServersKilledInTurnLoseNoPushAndApplyNoneTwice) {
  StartCluster(/*servers=*/4, /*workers=*/2, /*replicas=*/2);
  // The job formed at epoch 1; each failover is the next view.
  KillAServer();
  WaitForFailover(2);
  // The second kill only once the scheduler knows every live server's replicas are complete again.
  WaitForReplicasInSync();
  KillAServer();
  WaitForFailover(3);
  std::ofstream(stop_file_) << "stop\n";
  for (size_t w = 0; w < workers_.size(); ++w) {
    EXPECT_EQ(ExitOf(*workers_[w], "worker"), "exit 0") << workers_[w]->output();
    EXPECT_NE(workers_[w]->output().find("every sum is exact"), std::string::npos) << workers_[w]->output();
  }
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (!killed_.contains(i)) {
      EXPECT_EQ(ExitOf(*servers_[i], "server"), "exit 0") << servers_[i]->output();
    }
  }
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
}

// Two servers killed at once: none of the servers of their chains may hold all of their rows, so
// the scheduler ends the job with an error saying so -- a failed job, never a wrong sum.
TEST_F(FailoverTest, ASecondDeathBeforeTheReplicasAreRestoredEndsTheJob) {
  StartCluster(/*servers=*/4, /*workers=*/2, /*replicas=*/2);
  KillAServer();
  KillAServer();
  for (auto& w : workers_) {
    const std::string exit = ExitOf(*w, "worker");
    EXPECT_NE(exit, "exit 0") << w->output();
    EXPECT_EQ(w->output().find("every sum is exact"), std::string::npos) << w->output();
  }
  EXPECT_NE(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
  // Found dead in one turn ("died too") or in two ("its replicas were not complete").
  EXPECT_NE(scheduler_->output().find("so none can take"), std::string::npos) << scheduler_->output();
}

// Without replicas a dead server's keys are gone: the job ends with an error naming it.
TEST_F(FailoverTest, WithoutReplicasADeadServerEndsTheJob) {
  StartCluster(/*servers=*/2, /*workers=*/1, /*replicas=*/1);
  KillAServer();
  EXPECT_NE(ExitOf(*workers_[0], "worker"), "exit 0") << workers_[0]->output();
  EXPECT_NE(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
  EXPECT_TRUE(scheduler_->WaitForOutput("died", kHangGuard)) << scheduler_->output();
}

}  // namespace
}  // namespace pserver
