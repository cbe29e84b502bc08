// Fault tests on real clusters of separate processes over loopback TCP: a node is SIGKILLed
// (or never reachable). When it is a server or the scheduler, the others must fail with a clear
// error naming it, not hang; when it is a worker, the others finish their work, and the job then
// ends with an error naming the lost worker (its share of the work is missing).
//
// The tests start the scheduler, servers and workers themselves (not through `pserver launch`)
// so that they can kill one. They synchronise only on output ("listening at", "pushing") and on
// process exit; every wait has a generous hang guard (kHangGuard), which is a hang detector and
// not an assertion about speed. Subprocess kills and reaps whatever is left when a test ends.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "tests/integration/process_expectations.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

constexpr std::chrono::seconds kHangGuard{60};
// Heartbeats of the fault tests. Failure is detected on one path only -- the scheduler judging
// the servers and workers, or the servers and workers judging the scheduler -- and each test
// makes short only the path that must detect its victim: the other path, on which only live
// processes are judged, gets kNeverMs, longer than the scenarios run (yet within kHangGuard, so
// that a node that missed the end of the job still ends), so no starved but live process can be
// taken for dead there. (With one second on every path, a live scheduler starved of CPU for
// a second -- two compilers and a parallel ctest on two cores -- was once taken for dead by its
// server.) The detecting path's timeout is 10 s: a survivor on that path (say, the live server
// while the scheduler waits for the killed one) would have to get no CPU for 10 s to be taken
// for dead, and the killed process is found after 10 s.
const std::string kHeartbeatIntervalMs = "100";
const std::string kDetectMs = "10000";
const std::string kNeverMs = "45000";
// A send to a peer that is gone blocks up to the send timeout (10 s by default), also the
// registration send to a scheduler that is not there (see the report in the commit). The nodes
// of a cluster get a send timeout longer than the detecting heartbeat timeout, so that a dead
// server is declared dead before a send to it gives up; the tests of an unreachable scheduler
// use kSendTimeoutMs, short enough to keep them to a few seconds.
const std::string kClusterSendTimeoutMs = "12000";
const std::string kSendTimeoutMs = "4000";

std::string ExitOf(Subprocess& p, const std::string& who) { return testing::ExitOf(p, who, kHangGuard); }

// A small cluster started process by process: the scheduler, then servers and workers.
class FaultTest : public ::testing::Test {
 protected:
  // Starts the scheduler and reads its address from its "listening at" line.
  void StartScheduler(int servers, int workers) {
    auto s = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--num-servers",
                                std::to_string(servers), "--num-workers", std::to_string(workers),
                                "--heartbeat-interval-ms", kHeartbeatIntervalMs, "--heartbeat-timeout-ms",
                                scheduler_heartbeat_timeout_ms_, "--send-timeout-ms", kClusterSendTimeoutMs});
    ASSERT_OK(s);
    scheduler_ = std::move(*s);
    const std::string marker = "scheduler listening at ";
    std::optional<std::string> line = scheduler_->WaitForLine(marker, kHangGuard);
    ASSERT_TRUE(line.has_value()) << scheduler_->output();
    address_ = line->substr(marker.size());
    ASSERT_EQ(address_.rfind("tcp://127.0.0.1:", 0), 0u) << address_;
  }

  void StartServer(int rank) {
    auto s = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address_, "--host", "127.0.0.1",
                                "--rank-hint", std::to_string(rank), "--heartbeat-interval-ms", kHeartbeatIntervalMs,
                                "--heartbeat-timeout-ms", node_heartbeat_timeout_ms_, "--send-timeout-ms",
                                kClusterSendTimeoutMs});
    ASSERT_OK(s);
    servers_.push_back(std::move(*s));
  }

  // A kv_check_worker running `scenario` (wait_forever by default); returns once it printed
  // "pushing" (the cluster formed and its first push completed).
  // With wait false it returns at once; WaitPushing(i) then waits for workers_[i].
  // `extra` are more flags of kv_check_worker.
  void StartPushingWorker(int servers, int workers, int rank, const std::string& scenario = "wait_forever",
                          bool wait = true, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {CheckWorkerBinary(),       "--scenario",         scenario,
                                     "--seed",                  std::to_string(seed_), "--heartbeat-interval-ms",
                                     kHeartbeatIntervalMs,      "--send-timeout-ms",  kClusterSendTimeoutMs};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto w = Subprocess::Spawn(argv,
                               {{"PSERVER_SCHEDULER", address_},
                                {"PSERVER_HOST", "127.0.0.1"},
                                {"PSERVER_NUM_SERVERS", std::to_string(servers)},
                                {"PSERVER_NUM_WORKERS", std::to_string(workers)},
                                {"PSERVER_RANK_HINT", std::to_string(rank)},
                                {"PSERVER_HEARTBEAT_TIMEOUT_MS", node_heartbeat_timeout_ms_}});
    ASSERT_OK(w);
    workers_.push_back(std::move(*w));
    if (wait) WaitPushing(workers_.size() - 1);
  }

  void WaitPushing(size_t i) {
    ASSERT_TRUE(workers_[i]->WaitForOutput("pushing", kHangGuard))
        << "worker process " << i << " never started pushing:\n"
        << workers_[i]->output() << "\nscheduler:\n"
        << scheduler_->output();
  }

  // The scheduler judges the servers and workers; they judge the scheduler (see kDetectMs).
  // By default a server or worker is the victim; a test that kills the scheduler swaps them.
  std::string scheduler_heartbeat_timeout_ms_ = kDetectMs;
  std::string node_heartbeat_timeout_ms_ = kNeverMs;
  const uint64_t seed_ = TestSeed();
  std::string address_;
  std::unique_ptr<Subprocess> scheduler_;
  std::vector<std::unique_ptr<Subprocess>> servers_;
  std::vector<std::unique_ptr<Subprocess>> workers_;
};

TEST_F(FaultTest, KilledServerFailsWorkerWithClearErrorInsteadOfHanging) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(2, 1));
  ASSERT_NO_FATAL_FAILURE(StartServer(0));
  ASSERT_NO_FATAL_FAILURE(StartServer(1));
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(2, 1, 0));

  servers_[1]->Signal(SIGKILL);
  EXPECT_EQ(ExitOf(*servers_[1], "server 1"), "killed by signal 9 (SIGKILL)");

  // The worker's pending push (or its next call) fails with kUnavailable/kAborted naming the
  // dead server; wait_forever then exits 3.
  const std::string worker = ExitOf(*workers_[0], "worker 0");
  const std::string worker_out = workers_[0]->output();
  EXPECT_EQ(worker, "exit 3") << worker_out;
  EXPECT_TRUE(Contains(worker_out, "the cluster failed: Unavailable"));
  EXPECT_TRUE(Contains(worker_out, "server 1"));

  // The scheduler ends the job with an error naming the dead server.
  const std::string scheduler = ExitOf(*scheduler_, "scheduler");
  EXPECT_TRUE(ExitedNonZero(scheduler)) << scheduler << "\n" << scheduler_->output();
  EXPECT_TRUE(Contains(scheduler_->output(), "pserver scheduler: Unavailable: server 1"));

  // The surviving server is told and exits non-zero too.
  const std::string survivor = ExitOf(*servers_[0], "server 0");
  EXPECT_TRUE(ExitedNonZero(survivor)) << survivor << "\n" << servers_[0]->output();
  EXPECT_TRUE(Contains(servers_[0]->output(), "server 1"));
}

TEST_F(FaultTest, KilledSchedulerEndsServersAndWorkersWithClearError) {
  // The victim is the scheduler: only the nodes' judgement of it is short.
  scheduler_heartbeat_timeout_ms_ = kNeverMs;
  node_heartbeat_timeout_ms_ = kDetectMs;
  ASSERT_NO_FATAL_FAILURE(StartScheduler(1, 1));
  ASSERT_NO_FATAL_FAILURE(StartServer(0));
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(1, 1, 0));

  scheduler_->Signal(SIGKILL);
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "killed by signal 9 (SIGKILL)");

  // Both notice the silence of the scheduler (heartbeat timeout) and say so.
  const std::string worker = ExitOf(*workers_[0], "worker 0");
  EXPECT_EQ(worker, "exit 3") << workers_[0]->output();
  EXPECT_TRUE(Contains(workers_[0]->output(), "the scheduler at " + address_));

  const std::string server = ExitOf(*servers_[0], "server 0");
  EXPECT_TRUE(ExitedNonZero(server)) << server << "\n" << servers_[0]->output();
  EXPECT_TRUE(Contains(servers_[0]->output(), "the scheduler at " + address_));
}

TEST_F(FaultTest, KilledWorkerLeavesTheJobTheOthersFinishAndTheJobFailsNamingIt) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(1, 2));
  ASSERT_NO_FATAL_FAILURE(StartServer(0));
  // Worker 1 pushes in a loop until it is killed; worker 0 pushes once and then waits in a
  // barrier of the workers that only the death of worker 1 can complete.
  // (The cluster forms only once both have registered.)
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(1, 2, 1, "wait_forever", /*wait=*/false));
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(1, 2, 0, "outlive", /*wait=*/false));
  ASSERT_NO_FATAL_FAILURE(WaitPushing(0));
  ASSERT_NO_FATAL_FAILURE(WaitPushing(1));

  workers_[0]->Signal(SIGKILL);
  EXPECT_EQ(ExitOf(*workers_[0], "worker 1"), "killed by signal 9 (SIGKILL)");

  // The survivor's barrier completes, it checks what it pulls and finalizes. The job went on
  // without worker 1 but lost its share of the work, so it ends with an error naming worker 1
  // that every process reports: no process exits 0 for an incomplete job.
  const std::string survivor = ExitOf(*workers_[1], "worker 0");
  EXPECT_TRUE(ExitedNonZero(survivor)) << survivor << "\n" << workers_[1]->output();
  EXPECT_TRUE(Contains(workers_[1]->output(), "worker 0: the barrier completed"));
  EXPECT_TRUE(Contains(workers_[1]->output(), "scenario outlive checks passed"));
  EXPECT_TRUE(Contains(workers_[1]->output(), "the job lost 1 of 2 workers before they finished: worker 1 (node "));

  const std::string server = ExitOf(*servers_[0], "server 0");
  EXPECT_TRUE(ExitedNonZero(server)) << server << "\n" << servers_[0]->output();
  EXPECT_TRUE(Contains(servers_[0]->output(), "the job lost 1 of 2 workers"));

  const std::string scheduler = ExitOf(*scheduler_, "scheduler");
  EXPECT_TRUE(ExitedNonZero(scheduler)) << scheduler << "\n" << scheduler_->output();
  EXPECT_TRUE(Contains(scheduler_->output(), "the job lost 1 of 2 workers before they finished: worker 1 (node "));
}

// Stale-synchronous rounds (staleness 1) with 3 workers: the slow worker 2 stops after clock 2
// and blocks; the fast workers 0 and 1 each check in every pull at clock C that it includes
// every live worker's pushes before clock C - 1, and block at clock 4 (which needs worker 2 at
// clock 3). No pull of clock 4 may complete while worker 2 lives; once it is killed, the
// scheduler drops it from the clock and the fast workers finish their 6 rounds and the job.
TEST_F(FaultTest, KilledSlowWorkerReleasesStaleSynchronousPullsAndTheOthersFinish) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(2, 3));
  ASSERT_NO_FATAL_FAILURE(StartServer(0));
  ASSERT_NO_FATAL_FAILURE(StartServer(1));
  const std::vector<std::string> flags = {"--rounds", "6", "--slow-clock", "2"};
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(2, 3, 2, "ssp", /*wait=*/false, flags));
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(2, 3, 0, "ssp", /*wait=*/false, flags));
  ASSERT_NO_FATAL_FAILURE(StartPushingWorker(2, 3, 1, "ssp", /*wait=*/false, flags));
  Subprocess& slow = *workers_[0];
  ASSERT_TRUE(slow.WaitForOutput("worker 2: ssp: stuck at clock 2", kHangGuard)) << slow.output();
  for (int i : {1, 2}) {
    const std::string rank = std::to_string(i - 1);
    ASSERT_TRUE(workers_[i]->WaitForOutput("worker " + rank + ": ssp: waiting for the slow worker at clock 4",
                                           kHangGuard))
        << workers_[i]->output();
    // Up to clock 3 the fast workers ran (3 - 1 <= 2), and not beyond while worker 2 lives.
    EXPECT_TRUE(Contains(workers_[i]->output(), "worker " + rank + ": ssp: clock 3 pulled"));
  }
  for (int i : {1, 2}) {
    EXPECT_FALSE(workers_[i]->output().find("ssp: clock 4 pulled") != std::string::npos)
        << "a pull at clock 4 completed while worker 2 was at clock 2 (staleness 1):\n"
        << workers_[i]->output();
  }
  slow.Signal(SIGKILL);
  EXPECT_EQ(ExitOf(slow, "worker 2"), "killed by signal 9 (SIGKILL)");

  for (int i : {1, 2}) {
    const std::string rank = std::to_string(i - 1);
    const std::string status = ExitOf(*workers_[i], "worker " + rank);
    EXPECT_TRUE(ExitedNonZero(status)) << status << "\n" << workers_[i]->output();
    EXPECT_TRUE(Contains(workers_[i]->output(), "worker " + rank + ": ssp: clock 6 pulled"));
    EXPECT_TRUE(Contains(workers_[i]->output(), "scenario ssp checks passed"));
    EXPECT_TRUE(Contains(workers_[i]->output(), "the job lost 1 of 3 workers before they finished: worker 2 (node "));
  }
  // The job lost worker 2's share of the work: every process says so and none exits 0.
  for (int i : {0, 1}) {
    const std::string server = ExitOf(*servers_[i], "server " + std::to_string(i));
    EXPECT_TRUE(ExitedNonZero(server)) << server << "\n" << servers_[i]->output();
  }
  const std::string scheduler = ExitOf(*scheduler_, "scheduler");
  EXPECT_TRUE(ExitedNonZero(scheduler)) << scheduler << "\n" << scheduler_->output();
  EXPECT_TRUE(Contains(scheduler_->output(), "the job lost 1 of 3 workers before they finished: worker 2 (node "));
}

// A TCP port on loopback that refuses connections: bound (so nobody else gets it) but not
// listening. Closed when the object goes.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() {
    if (fd_ >= 0) close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Registration is bounded by the register timeout only once the first send to the scheduler
// returned, and that send blocks up to the send timeout when nothing listens (kSendTimeoutMs).
TEST(FaultUnreachableTest, WorkerThatCannotReachSchedulerFailsNamingTheAddress) {
  RefusingPort closed;
  ASSERT_NE(closed.port(), 0) << "cannot reserve a loopback port: " << std::strerror(errno);
  const std::string address = "tcp://127.0.0.1:" + std::to_string(closed.port());
  auto worker = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "sum", "--send-timeout-ms", kSendTimeoutMs},
                                  {{"PSERVER_SCHEDULER", address},
                                   {"PSERVER_NUM_SERVERS", "1"},
                                   {"PSERVER_NUM_WORKERS", "1"},
                                   {"PSERVER_REGISTER_TIMEOUT_MS", "1000"}});
  ASSERT_OK(worker);
  const std::string status = ExitOf(**worker, "worker");
  EXPECT_TRUE(ExitedNonZero(status)) << status << "\n" << (*worker)->output();
  EXPECT_TRUE(Contains((*worker)->output(), address));
}

TEST(FaultUnreachableTest, ServerThatCannotReachSchedulerFailsNamingTheAddress) {
  RefusingPort closed;
  ASSERT_NE(closed.port(), 0) << "cannot reserve a loopback port: " << std::strerror(errno);
  const std::string address = "tcp://127.0.0.1:" + std::to_string(closed.port());
  auto server = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address, "--register-timeout-ms", "1000",
                                   "--send-timeout-ms", kSendTimeoutMs});
  ASSERT_OK(server);
  const std::string status = ExitOf(**server, "server");
  EXPECT_TRUE(ExitedNonZero(status)) << status << "\n" << (*server)->output();
  EXPECT_TRUE(Contains((*server)->output(), address));
}

// Makes this process the reaper of orphaned descendants for the scope, so that a process that
// `pserver launch` left behind becomes our child, where the test can see it.
class ChildSubreaper {
 public:
  ChildSubreaper() { ok_ = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }
  ~ChildSubreaper() { prctl(PR_SET_CHILD_SUBREAPER, 0); }
  ChildSubreaper(const ChildSubreaper&) = delete;
  ChildSubreaper& operator=(const ChildSubreaper&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

// Reaps every exited child of this process (orphans adopted as subreaper) without blocking.
void ReapZombieChildren() {
  int st = 0;
  while (waitpid(-1, &st, WNOHANG) > 0) {
  }
}

// Live (not zombie) processes whose parent is this process or whose command line has `token`.
std::vector<ProcessInfo> Leftovers(const std::string& token) {
  std::vector<ProcessInfo> left;
  for (ProcessInfo& p : ListProcesses()) {
    if (p.pid == getpid() || p.state == 'Z') continue;
    if (p.ppid == getpid() || p.cmdline.find(token) != std::string::npos) left.push_back(std::move(p));
  }
  return left;
}

int ReadPid(const std::string& path) {
  std::ifstream in(path);
  int pid = 0;
  in >> pid;
  return pid;
}

TEST(FaultLaunchTest, LaunchLeavesNoProcessBehindWhenAWorkerFails) {
  ChildSubreaper subreaper;
  ASSERT_TRUE(subreaper.ok()) << "prctl(PR_SET_CHILD_SUBREAPER): " << std::strerror(errno);
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string d = dir.path();
  // Each worker records its pid and that of a grandchild it starts in the background (which
  // only a signal to launch's whole process group reaches). Worker 1 waits (bounded) until
  // worker 0 is set up and exits 7; worker 0 becomes a kv_check_worker waiting for the
  // cluster that will never form.
  const std::string script = "D='" + d +
                             "'; R=$PSERVER_RANK_HINT\n"
                             "sleep 1000 &\n"
                             "echo $! > \"$D/g$R.tmp\" && mv \"$D/g$R.tmp\" \"$D/g$R\"\n"
                             "echo $$ > \"$D/w$R.tmp\" && mv \"$D/w$R.tmp\" \"$D/w$R\"\n"
                             "if [ \"$R\" = 1 ]; then\n"
                             "  i=0; while [ ! -e \"$D/w0\" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n"
                             "  [ -e \"$D/w0\" ] || { echo 'worker 0 never started' >&2; exit 9; }\n"
                             "  exit 7\n"
                             "fi\n"
                             "exec '" +
                             CheckWorkerBinary() + "' --scenario wait_forever --tag \"$D\"\n";
  auto launch = Subprocess::Spawn({PserverBinary(), "launch", "--servers", "2", "--workers", "2", "--grace-ms", "1000",
                                   "--", "/bin/sh", "-c", script, "worker-script"});
  ASSERT_OK(launch);
  const std::string status = ExitOf(**launch, "pserver launch");
  const std::string out = (*launch)->output();
  EXPECT_EQ(status, "exit 7") << out;

  // launch has returned: everything it started must be gone. Orphans would have been
  // re-parented to this process (the subreaper); zombies among them are reaped first.
  ReapZombieChildren();
  for (const ProcessInfo& p : Leftovers(d)) {
    ADD_FAILURE() << "left behind: pid " << p.pid << " (parent " << p.ppid << ", state " << p.state
                  << "): " << p.cmdline << "\nlaunch output:\n"
                  << out;
    kill(p.pid, SIGKILL);
    if (p.ppid == getpid()) waitpid(p.pid, nullptr, 0);
  }
  for (const char* name : {"w0", "w1", "g0", "g1"}) {
    const int pid = ReadPid(d + "/" + name);
    ASSERT_GT(pid, 0) << name << " was not recorded; launch output:\n" << out;
    // A live process of that pid is a leftover if it is still ours (not a reused pid).
    std::optional<ProcessInfo> p = FindProcess(pid);
    const bool ours = p && (p->cmdline.find(d) != std::string::npos || p->cmdline.rfind("sleep 1000", 0) == 0);
    EXPECT_FALSE(ours && p->state != 'Z') << name << " (pid " << pid << ") is still running: " << p->cmdline;
  }
  ReapZombieChildren();
}

}  // namespace
}  // namespace pserver::testing
