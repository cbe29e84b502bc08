// Elastic membership across real processes (docs/elasticity.md): a job of `pserver` processes
// -- scheduler, servers, and two `pserver worker`s that push known values round after round and
// check every pulled sum exactly -- while servers join (two at once), one is drained with
// `pserver drain`, one leaves on SIGTERM and one more with `pserver drain`; `pserver status`
// shows each step; the drain of the last server is refused with a clear error. Every process
// must exit 0: the workers' sums were exact in every round, through every change. Also: a joining
// server killed while rows move to it changes nothing, and a worker joins a stale-synchronous
// job at the current clock.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <map>
#include <random>
#include <regex>
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

class ElasticTest : public ::testing::Test {
 protected:
  void StartScheduler(int servers, int workers) {
    auto s = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--num-servers",
                                std::to_string(servers), "--num-workers", std::to_string(workers)});
    ASSERT_OK(s);
    scheduler_ = std::move(*s);
    const std::string marker = "scheduler listening at ";
    std::optional<std::string> line = scheduler_->WaitForLine(marker, kHangGuard);
    ASSERT_TRUE(line.has_value()) << scheduler_->output();
    address_ = line->substr(marker.size());
  }

  Subprocess& StartServer(const std::map<std::string, std::string>& env = {}) {
    auto s = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address_, "--host", "127.0.0.1"}, env);
    EXPECT_OK(s);
    servers_.push_back(std::move(*s));
    return *servers_.back();
  }

  // Runs `pserver args...` against the job and returns its exit description and output.
  std::pair<std::string, std::string> Admin(std::vector<std::string> args) {
    args.insert(args.begin(), PserverBinary());
    args.push_back("--scheduler");
    args.push_back(address_);
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p);
    const std::string exit = ExitOf(**p, args[1]);
    return {exit, (*p)->output()};
  }

  std::string Status() {
    auto [exit, out] = Admin({"status"});
    EXPECT_EQ(exit, "exit 0") << out;
    return out;
  }

  // The server rank and node id of a server process, from the line it logs once registered (the
  // processes register in any order, so the first one started need not be rank 0).
  std::pair<std::string, std::string> RankAndNodeOf(Subprocess& server) {
    EXPECT_TRUE(server.WaitForOutput(") registered at ", kHangGuard)) << server.output();
    std::smatch m;
    const std::string out = server.output();
    const std::regex re(R"(server (\d+) \(node (\d+)\) registered at )");
    EXPECT_TRUE(std::regex_search(out, m, re)) << out;
    return m.size() > 2 ? std::pair{m[1].str(), m[2].str()} : std::pair{std::string("?"), std::string("0")};
  }

  // The last round worker 0 printed.
  int RoundsDone() {
    const std::string out = workers_[0]->output();
    const size_t at = out.rfind(": round ");
    return at == std::string::npos ? 0 : std::atoi(out.c_str() + at + 8);
  }

  // Waits until every worker printed its round `round` (so the changes come while they push).
  void WaitForRound(int round) {
    for (auto& w : workers_) {
      ASSERT_TRUE(w->WaitForOutput("round " + std::to_string(round) + "/", kHangGuard)) << w->output();
    }
  }

  // Two `pserver worker`s that push and check until `stop_file` exists.
  void StartWorkers(const std::string& stop_file) {
    for (int w = 0; w < 2; ++w) {
      auto p = Subprocess::Spawn({PserverBinary(), "worker", "--scheduler", address_, "--host", "127.0.0.1",
                                  "--rounds", "1000000", "--keys", "1000", "--stop-file", stop_file});
      ASSERT_OK(p);
      workers_.push_back(std::move(*p));
    }
  }

  std::string address_;
  std::unique_ptr<Subprocess> scheduler_;
  std::vector<std::unique_ptr<Subprocess>> servers_;
  std::vector<std::unique_ptr<Subprocess>> workers_;
};

TEST_F(ElasticTest, ServersJoinAndLeaveWhileWorkersCheckEverySum) {
  StartScheduler(2, 2);
  StartServer();
  StartServer();
  // The workers push until the test is done changing the servers (the stop file).
  testing::TempDir dir;
  const std::string stop_file = dir.path() + "/stop";
  StartWorkers(stop_file);
  WaitForRound(20);
  // Two servers join at once; the scheduler moves keys to one, then the other.
  StartServer();
  StartServer();
  WaitForRound(60);
  std::string status = Status();
  for (int i = 0; i < 100 && status.find("changes done: 2") == std::string::npos; ++i) {
    WaitForRound(60 + 10 * (i + 1));
    status = Status();
  }
  ASSERT_NE(status.find("changes done: 2"), std::string::npos) << status;

  // `pserver drain` of the first server started, then SIGTERM of one joiner, then `pserver drain`
  // of the other.
  const auto [first_rank, first_node] = RankAndNodeOf(*servers_[0]);
  const auto [last_rank, last_node] = RankAndNodeOf(*servers_[1]);
  auto [drained, out] = Admin({"drain", "--node", first_node});
  EXPECT_EQ(drained, "exit 0") << out;
  EXPECT_NE(out.find("server " + first_rank + " (node " + first_node + ")"), std::string::npos) << out;
  EXPECT_EQ(ExitOf(*servers_[0], "the first server"), "exit 0") << servers_[0]->output() << "\nscheduler:\n"
                                                          << scheduler_->output();
  servers_[2]->Signal(SIGTERM);
  EXPECT_EQ(ExitOf(*servers_[2], "a joiner"), "exit 0") << servers_[2]->output();
  EXPECT_NE(servers_[2]->output().find("asked the scheduler to drain this server"), std::string::npos);
  auto [drained3, out3] = Admin({"drain", "--node", RankAndNodeOf(*servers_[3]).second});
  EXPECT_EQ(drained3, "exit 0") << out3;
  EXPECT_EQ(ExitOf(*servers_[3], "the other joiner"), "exit 0") << servers_[3]->output();

  // The second server started is the last: its drain is refused, and it goes on serving.
  status = Status();
  EXPECT_TRUE(std::regex_search(status, std::regex("server " + first_rank + " \\(node " + first_node + "\\) +left")))
      << status;
  EXPECT_TRUE(std::regex_search(
      status, std::regex("server " + last_rank + " \\(node " + last_node + "\\) +serving .* share 1\\.0000")))
      << status;
  // The same state as JSON, for scripts.
  auto [json_exit, json_out] = Admin({"status", "--json"});
  ASSERT_EQ(json_exit, "exit 0") << json_out;
  const nlohmann::json doc = nlohmann::json::parse(json_out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << json_out;
  EXPECT_TRUE(doc["change_running"].is_null()) << json_out;
  EXPECT_NE(status.find(fmt::format("changes done: {},", doc["changes_done"].get<int>())), std::string::npos)
      << json_out << status;
  int found = 0;
  for (const nlohmann::json& m : doc["members"]) {
    if (std::to_string(m["id"].get<uint32_t>()) == first_node) {
      ++found;
      EXPECT_EQ(m["state"], "left") << m.dump();
    } else if (std::to_string(m["id"].get<uint32_t>()) == last_node) {
      ++found;
      EXPECT_EQ(m["state"], "serving") << m.dump();
      EXPECT_EQ(m["partitions"], doc["partitions"]) << json_out;
      ASSERT_TRUE(m["tables"].is_array()) << m.dump();
      EXPECT_GT(m["tables"][0]["rows"].get<uint64_t>(), 0u) << m.dump();
    }
  }
  EXPECT_EQ(found, 2) << json_out;
  auto [refused, why] = Admin({"drain", "--node", last_node});
  EXPECT_EQ(refused, "exit 1") << why;
  EXPECT_NE(why.find("it is the last server, and no other could hold its keys"), std::string::npos) << why;

  WaitForRound(std::max(200, RoundsDone() + 20));  // and it goes on
  { std::ofstream(stop_file) << "stop\n"; }
  for (size_t w = 0; w < workers_.size(); ++w) {
    EXPECT_EQ(ExitOf(*workers_[w], "worker"), "exit 0") << workers_[w]->output();
  }
  EXPECT_EQ(ExitOf(*servers_[1], "the last server"), "exit 0") << servers_[1]->output();
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
  EXPECT_NE(scheduler_->output().find("was drained at epoch"), std::string::npos);
}

// A joining server killed while rows move to it (it stores and answers none of them: the failpoint
// holds the change before its commit): the change is cancelled, the donors keep every row and own
// them again, and the workers' sums stay exact.
TEST_F(ElasticTest, AJoinerKilledWhileRowsMoveChangesNothing) {
  StartScheduler(2, 2);
  StartServer();
  StartServer();
  testing::TempDir dir;
  const std::string stop_file = dir.path() + "/stop";
  StartWorkers(stop_file);
  WaitForRound(10);
  Subprocess& joiner = StartServer({{"PSERVER_FAILPOINTS", "migrate-rows-unanswered"}});
  ASSERT_TRUE(joiner.WaitForOutput("failpoint migrate-rows-unanswered", kHangGuard))
      << joiner.output() << "\nscheduler:\n"
      << scheduler_->output();
  joiner.Signal(SIGKILL);
  EXPECT_EQ(ExitOf(joiner, "the joiner"), "killed by signal 9 (SIGKILL)");
  // The scheduler learns of the death (heartbeat silence, or a donor's send to it failing) and
  // calls the change off. (The bound is a hang guard; the job's heartbeat timeout is 5 s.)
  std::string status = Status();
  const auto guard = std::chrono::steady_clock::now() + kHangGuard;
  while ((status.find("change running") != std::string::npos ||
          (status.find("dead") == std::string::npos && status.find("left") == std::string::npos)) &&
         std::chrono::steady_clock::now() < guard) {
    WaitForRound(RoundsDone() + 1);
    status = Status();
  }
  EXPECT_NE(status.find("changes done: 0"), std::string::npos) << status;
  EXPECT_EQ(status.find("change running"), std::string::npos) << status;
  EXPECT_NE(scheduler_->output().find("cancelled"), std::string::npos) << scheduler_->output();

  WaitForRound(RoundsDone() + 20);  // the job goes on, every sum exact
  { std::ofstream(stop_file) << "stop\n"; }
  for (auto& w : workers_) EXPECT_EQ(ExitOf(*w, "worker"), "exit 0") << w->output();
  EXPECT_EQ(ExitOf(*servers_[0], "server"), "exit 0") << servers_[0]->output();
  EXPECT_EQ(ExitOf(*servers_[1], "server"), "exit 0") << servers_[1]->output();
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
}

// A worker joins a running stale-synchronous job (kv_check_worker --scenario ssp_join): admitted
// at the current clock, it does not hold the first worker back to wait for it from clock 0, and
// the first worker's final sums count both workers' pushes exactly.
TEST_F(ElasticTest, AWorkerJoinsAStaleSynchronousJobMidWay) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  StartScheduler(1, 1);
  StartServer();
  const std::map<std::string, std::string> env = {
      {"PSERVER_ROLE", "worker"}, {"PSERVER_SCHEDULER", address_}, {"PSERVER_HOST", "127.0.0.1"}};
  const std::vector<std::string> args = {CheckWorkerBinary(), "--scenario", "ssp_join", "--seed", std::to_string(seed),
                                         "--rounds", "20", "--iterations", "100000"};
  auto first = Subprocess::Spawn(args, env);
  ASSERT_OK(first);
  workers_.push_back(std::move(*first));
  ASSERT_TRUE(workers_[0]->WaitForOutput("ssp_join: clock 20\n", kHangGuard)) << workers_[0]->output();
  const std::string out = workers_[0]->output();
  const size_t at = out.rfind("ssp_join: clock ");
  const std::string clock = std::to_string(std::atoi(out.c_str() + at + 16));  // reached before the joiner started
  std::vector<std::string> joiner_args = args;
  joiner_args.insert(joiner_args.end(), {"--joined-after", clock});
  auto joiner = Subprocess::Spawn(joiner_args, env);
  ASSERT_OK(joiner);
  workers_.push_back(std::move(*joiner));
  EXPECT_EQ(ExitOf(*workers_[1], "the joiner"), "exit 0") << workers_[1]->output();
  EXPECT_NE(workers_[1]->output().find("ssp_join: 20 clocks done"), std::string::npos) << workers_[1]->output();
  EXPECT_EQ(ExitOf(*workers_[0], "the first worker"), "exit 0") << workers_[0]->output();
  EXPECT_NE(workers_[0]->output().find("every sum is"), std::string::npos) << workers_[0]->output();
  EXPECT_EQ(ExitOf(*servers_[0], "server"), "exit 0") << servers_[0]->output();
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
}

}  // namespace
}  // namespace pserver
