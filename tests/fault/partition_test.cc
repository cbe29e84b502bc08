// A server on a host of its own (a network namespace, netns_host.h) cut off from the job by
// nftables, in a replicated job of real processes whose workers run the built-in check workload
// (every round: pushes in flight, a barrier, every sum pulled back and checked exactly, so a
// lost, doubled or stale value fails the worker naming it):
//   - a partition: the server's packets are all dropped, no connection resets. The scheduler
//     finds it by heartbeats and fails over from it; the workers go on; once healed, the server
//     learns it was declared dead and replaced (or, had its own heartbeat timeout passed first,
//     finds the scheduler silent), and exits without serving;
//   - an asymmetric partition from the scheduler alone (what the server sends it is lost): the
//     same, while the server still reaches the workers and the other servers;
//   - loss: a share of its packets dropped for a while. TCP sends them again; the job goes on
//     with every sum exact, whether or not the server was slow enough to be failed over from.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "tests/fault/netns_host.h"
#include "tests/integration/etcd_process.h"
#include "tests/integration/subprocess.h"
#include "testing/test_util.h"

namespace pserver::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kHangGuard{120000};
constexpr int kHeartbeatTimeoutMs = 1000;

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("pserver_partition_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Result<std::unique_ptr<NetnsHost>> host = NetnsHost::Create(std::to_string(::getpid()));
    ASSERT_OK(host.status());
    host_ = std::move(*host);
  }
  void TearDown() override {
    processes_.clear();  // before the namespace goes
    host_.reset();
    std::filesystem::remove_all(dir_);
  }

  Subprocess& Spawn(std::vector<std::string> args, bool inside = false) {
    args.insert(args.begin(), PserverBinary());
    if (inside) {
      const std::vector<std::string> exec = host_->Exec();
      args.insert(args.begin(), exec.begin(), exec.end());
    }
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p.status());
    processes_.push_back(std::move(*p));
    return *processes_.back();
  }

  // A job of 3 servers (server 2 on the namespace's host) with 2 replicas and 2 check workers.
  // The scheduler listens at this side's second address, so that the namespace can be cut off
  // from it alone.
  void StartJob() {
    seed_ = TestSeed();
    const int port = FreePort();
    scheduler_ = &Spawn({"scheduler", "--host", host_->outside_alt(), "--port", std::to_string(port), "--num-servers", "3",
                         "--num-workers", "2", "--replicas", "2", "--heartbeat-timeout-ms",
                         std::to_string(kHeartbeatTimeoutMs)});
    ASSERT_TRUE(scheduler_->WaitForOutput("scheduler listening at", kHangGuard)) << scheduler_->output();
    const std::string address = "tcp://" + host_->outside_alt() + ":" + std::to_string(port);
    for (int i = 0; i < 3; ++i) {
      const bool inside = i == 2;  // the namespace's server is server 2
      servers_.push_back(&Spawn({"server", "--scheduler", address, "--rank-hint", std::to_string(i), "--host",
                                 inside ? host_->inside() : host_->outside()},
                                inside));
    }
    stop_ = (dir_ / "stop").string();
    for (int i = 0; i < 2; ++i) {
      workers_.push_back(&Spawn({"worker", "--scheduler", address, "--host", host_->outside(), "--keys", "1000",
                                 "--pushes", "4", "--rounds", "1000000", "--seed", std::to_string(seed_),
                                 "--stop-file", stop_}));
    }
    ASSERT_TRUE(servers_[2]->WaitForOutput("server 2 (node", kHangGuard)) << servers_[2]->output()
                                                                           << scheduler_->output();
    for (Subprocess* w : workers_) ASSERT_TRUE(w->WaitForOutput("round 20/", kHangGuard)) << w->output();
  }

  // Both workers finish a round numbered `rounds` past the highest either has printed.
  void ExpectProgress(int rounds) {
    const std::string later = "round " + std::to_string(LastRound() + rounds) + "/";
    for (Subprocess* w : workers_) ASSERT_TRUE(w->WaitForOutput(later, kHangGuard)) << w->output() << scheduler_->output();
  }
  int LastRound() const {
    static const std::regex round(R"(round (\d+)/)");
    int last = 0;
    for (const Subprocess* w : workers_) {
      const std::string out = w->output();
      for (auto it = std::sregex_iterator(out.begin(), out.end(), round); it != std::sregex_iterator(); ++it) {
        last = std::max(last, std::stoi((*it)[1]));
      }
    }
    return last;
  }

  // Server 2, failed over from, found itself cut off from the job and exited with an error
  // without serving: told it was declared dead, or (its heartbeats' answers lost too) finding
  // the scheduler silent for its own heartbeat timeout.
  void ExpectServerTwoFoundItselfCutOff() {
    std::optional<int> st = servers_[2]->WaitExit(kHangGuard);
    ASSERT_TRUE(st.has_value());
    const std::string out = servers_[2]->output();
    EXPECT_NE(DescribeWaitStatus(*st), "exit 0") << out;
    const bool told = out.find("it is no longer part of the job") != std::string::npos;
    const bool silent = out.find("has not answered heartbeats for") != std::string::npos;
    EXPECT_TRUE(told || silent) << out;
    std::printf("server 2 %s\n", told ? "was told it had been declared dead" : "found the scheduler silent");
  }

  // Stops the workers; they, servers 0 and 1 and the scheduler end well.
  void EndJob() {
    std::ofstream(stop_) << "stop\n";
    for (Subprocess* p : {workers_[0], workers_[1], servers_[0], servers_[1], scheduler_}) {
      std::optional<int> st = p->WaitExit(kHangGuard);
      ASSERT_TRUE(st.has_value());
      EXPECT_EQ(DescribeWaitStatus(*st), "exit 0") << p->output();
    }
  }

  std::filesystem::path dir_;
  std::unique_ptr<NetnsHost> host_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
  uint64_t seed_ = 0;
  Subprocess* scheduler_ = nullptr;
  std::vector<Subprocess*> servers_, workers_;
  std::string stop_;
};

TEST_F(PartitionTest, APartitionedServerIsFailedOverFromAndOnceHealedLearnsItWasReplaced) {
  ASSERT_NO_FATAL_FAILURE(StartJob());
  const size_t before = scheduler_->output().size();
  const auto cut = Clock::now();
  ASSERT_OK(host_->Partition());
  std::printf("seed %llu: server 2 partitioned at round %d\n", static_cast<unsigned long long>(seed_), LastRound());
  // Only heartbeats can tell: nothing resets.
  ASSERT_TRUE(scheduler_->WaitForOutput("server 2 (node", kHangGuard, before)) << scheduler_->output();
  ASSERT_TRUE(scheduler_->WaitForOutput("is dead: no heartbeat for", kHangGuard, before)) << scheduler_->output();
  const auto declared = Clock::now();
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(1));
  const auto going = Clock::now();
  std::printf("declared dead %.0f ms after the partition (heartbeat timeout %d ms); every worker progressing %.0f ms "
              "after that\n",
              std::chrono::duration<double, std::milli>(declared - cut).count(), kHeartbeatTimeoutMs,
              std::chrono::duration<double, std::milli>(going - declared).count());
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(20));
  // Healed: its heartbeats reach the scheduler again, which tells it it is out of the job.
  ASSERT_OK(host_->Heal());
  ASSERT_NO_FATAL_FAILURE(ExpectServerTwoFoundItselfCutOff());
  // The job goes on after the heal, every sum still exact.
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(20));
  ASSERT_NO_FATAL_FAILURE(EndJob());
}

// An asymmetric partition of one server from the scheduler only: everything the server sends to
// the scheduler's address is dropped (its heartbeats, and the scheduler's answers on that
// connection), while it still reaches the workers and the other servers (and the connections the
// scheduler opens to it pass). The scheduler declares it dead and fails over from it; what the
// server still receives from workers that have not learned the failover it cannot replicate (its
// replicas take rows only from the servers of their view), so it answers none of it; it finds the
// scheduler silent (or is told) and exits. Every sum stays exact.
TEST_F(PartitionTest, AServerWhoseMessagesToTheSchedulerAreLostIsFailedOverFromAndExits) {
  ASSERT_NO_FATAL_FAILURE(StartJob());
  const size_t before = scheduler_->output().size();
  ASSERT_OK(host_->CutFrom(host_->outside_alt()));
  std::printf("seed %llu: server 2 cut off from the scheduler at round %d\n", static_cast<unsigned long long>(seed_),
              LastRound());
  ASSERT_TRUE(scheduler_->WaitForOutput("is dead: no heartbeat for", kHangGuard, before)) << scheduler_->output();
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(20));
  ASSERT_NO_FATAL_FAILURE(ExpectServerTwoFoundItselfCutOff());
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(20));
  ASSERT_NO_FATAL_FAILURE(EndJob());
}

TEST_F(PartitionTest, PacketLossOnAServerLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartJob());
  const size_t before = scheduler_->output().size();
  // Each packet in and out dropped at 10 %: a round's messages are sent again by TCP, whose
  // timeouts back off, so a round may take seconds; 10 rounds show the job going on.
  ASSERT_OK(host_->Loss(10));
  std::printf("seed %llu: 10%% of server 2's packets dropped from round %d\n", static_cast<unsigned long long>(seed_),
              LastRound());
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(10));
  ASSERT_OK(host_->Heal());
  std::printf("loss ended at round %d\n", LastRound());
  ASSERT_NO_FATAL_FAILURE(ExpectProgress(20));
  static const std::regex dead(R"(server 2 \(node \d+\) is dead)");
  const std::string since = scheduler_->output().substr(before);
  const bool failed_over = std::regex_search(since, dead);
  std::printf("server 2 was %s\n", failed_over ? "failed over from (its heartbeats were late)" : "kept");
  ASSERT_NO_FATAL_FAILURE(EndJob());
  if (failed_over) {
    ASSERT_NO_FATAL_FAILURE(ExpectServerTwoFoundItselfCutOff());
  } else {
    std::optional<int> st = servers_[2]->WaitExit(kHangGuard);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(DescribeWaitStatus(*st), "exit 0") << servers_[2]->output();
  }
}

}  // namespace
}  // namespace pserver::testing
