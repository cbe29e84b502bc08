// Integration tests of RunLaunch with fake scheduler, server and worker programs: /bin/sh
// scripts written by each test into its own temp dir. Every fake records its pid in
// <dir>/<role>[.<rank>].pid (tmp + mv, so an existing file is complete) so the test can check
// afterwards that nothing of the cluster is left. Fakes that must act only once the whole
// cluster is up wait for all pid files (`await_cluster`); the tests themselves never sleep and
// assert nothing about time.
#include "pserver/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pserver::tools {
namespace {

// EXPECT_TRUE(Contains(text, part)) prints both on failure (gmock is not linked).
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) {
    return ::testing::AssertionSuccess() << "found \"" << part << "\" in:\n" << text;
  }
  return ::testing::AssertionFailure() << "no \"" << part << "\" in:\n" << text;
}

// What the fake scheduler and servers do once started.
enum class Fake {
  kExitWhenWorkersDone,  // like the real ones: exit 0 once every worker wrote done.<rank>
  kRunUntilKilled,       // exec sleep 1000
  kIgnoreSigterm,        // exec sleep 1000 with SIGTERM ignored
  kFailAfterStartup,     // exit 4 once the cluster is up
  kNeverWriteAddress,    // scheduler only: exec sleep 1000 without writing the address file
};

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "launcher_test.XXXXXX");
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    out_ = std::tmpfile();
    err_ = std::tmpfile();
    ASSERT_NE(out_, nullptr);
    ASSERT_NE(err_, nullptr);
  }

  void TearDown() override {
    std::fclose(out_);
    std::fclose(err_);
    std::filesystem::remove_all(dir_);
  }

  // Writes an executable /bin/sh script with the common helpers and returns its path.
  std::string WriteScript(const std::string& name, const std::string& body) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path)
        << "#!/bin/sh\n"
        << "D='" << dir_ << "'\n"
        << "record_pid() { echo $$ > \"$D/$1.tmp\" && mv \"$D/$1.tmp\" \"$D/$1\"; }\n"
        << "count() { ls \"$D\" | grep -c \"$1\"; }\n"
        << "await_cluster() {\n"
        << "  total=$((1 + PSERVER_NUM_SERVERS + PSERVER_NUM_WORKERS))\n"
        << "  while [ \"$(count '\\.pid$')\" -lt \"$total\" ]; do sleep 0.01; done\n"
        << "}\n"
        << "await_workers_done() {\n"
        << "  while [ \"$(count '^done\\.')\" -lt \"$PSERVER_NUM_WORKERS\" ]; do\n"
        << "    sleep 0.01\n"
        << "  done\n"
        << "}\n"
        << body << "\n";
    chmod(path.c_str(), 0755);
    return path;
  }

  static std::string Behaviour(Fake fake) {
    switch (fake) {
      case Fake::kExitWhenWorkersDone:
        return "await_workers_done; exit 0";
      case Fake::kRunUntilKilled:
        return "exec sleep 1000";
      case Fake::kIgnoreSigterm:
        return "exec sleep 1000";  // trap set in Preamble()
      case Fake::kFailAfterStartup:
        return "await_cluster; exit 4";
      case Fake::kNeverWriteAddress:
        return "exec sleep 1000";
    }
    return "";
  }

  // Runs before the fake records its pid, so a fake whose pid file exists is fully set up.
  static std::string Preamble(Fake fake) {
    return fake == Fake::kIgnoreSigterm ? "trap '' TERM\n" : "";
  }

  std::string FakeScheduler(Fake fake) {
    std::string body = Preamble(fake) +
                       "record_pid scheduler.pid\n"
                       "echo \"scheduler args: $*\"\n"
                       "while [ $# -gt 0 ]; do\n"
                       "  case \"$1\" in --address-file) file=\"$2\"; shift 2;; *) shift;; esac\n"
                       "done\n";
    if (fake != Fake::kNeverWriteAddress) {
      body += "echo tcp://127.0.0.1:1 > \"$file.tmp\" && mv \"$file.tmp\" \"$file\"\n";
    }
    return WriteScript("scheduler.sh", body + Behaviour(fake));
  }

  std::string FakeServer(Fake fake) {
    return WriteScript(
        "server.sh", Preamble(fake) +
                         "record_pid server.$PSERVER_RANK_HINT.pid\n"
                         "echo \"server args: $*\" >&2\n"
                         "echo \"server env: $PSERVER_ROLE|$PSERVER_SCHEDULER|$PSERVER_NUM_SERVERS|"
                         "$PSERVER_NUM_WORKERS|$PSERVER_HOST|$PSERVER_RANK_HINT|apply=$PSERVER_APPLY_THREADS\" >&2\n" +
                         Behaviour(fake));
  }

  // A worker that records its pid, runs `body`, then reports done and exits 0 (unless `body`
  // exits or execs first).
  std::string FakeWorker(const std::string& body) {
    return WriteScript("worker.sh", "record_pid worker.$PSERVER_RANK_HINT.pid\n" + body +
                                        "\ntouch \"$D/done.$PSERVER_RANK_HINT\"\nexit 0");
  }

  LaunchOptions Options(int servers, int workers, Fake scheduler, Fake server,
                        const std::string& worker_body) {
    LaunchOptions options;
    options.num_servers = servers;
    options.num_workers = workers;
    options.scheduler_argv = {FakeScheduler(scheduler)};
    options.server_argv = {FakeServer(server)};
    options.worker_argv = {FakeWorker(worker_body)};
    options.grace = std::chrono::milliseconds(10000);  // only reached where a test wants it
    options.out = out_;
    options.err = err_;
    return options;
  }

  static std::string ReadAll(std::FILE* file) {
    std::fflush(file);
    std::rewind(file);
    std::string text;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof(buf), file)) > 0;) text.append(buf, n);
    return text;
  }
  std::string Out() { return ReadAll(out_); }
  std::string Err() { return ReadAll(err_); }

  // Checks that every process that recorded a pid is gone, that all of `required` did record
  // one, and that the launcher left no child (not even a zombie) behind.
  void ExpectNothingRemains(const std::vector<std::string>& required) {
    for (const std::string& name : required) {
      EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + name)) << name << " never started";
    }
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      if (entry.path().extension() != ".pid") continue;
      pid_t pid = 0;
      std::ifstream(entry.path()) >> pid;
      ASSERT_GT(pid, 0) << entry.path();
      errno = 0;
      EXPECT_EQ(kill(pid, 0), -1) << entry.path().filename() << " (pid " << pid << ") remains";
      EXPECT_EQ(errno, ESRCH) << entry.path().filename();
    }
    errno = 0;
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1) << "a child of the launcher was left behind";
    EXPECT_EQ(errno, ECHILD);
  }

  std::string dir_;
  std::FILE* out_ = nullptr;
  std::FILE* err_ = nullptr;
};

TEST_F(LauncherTest, ReturnsZeroAndLeavesNothingWhenAllWorkersSucceed) {
  LaunchOptions options =
      Options(2, 3, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "echo hello");

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid",
                        "worker.1.pid", "worker.2.pid"});
  EXPECT_FALSE(Contains(Err(), "launch:"));
}

TEST_F(LauncherTest, PrefixesEachLineWithRoleAndRank) {
  LaunchOptions options = Options(2, 2, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "echo \"hello from $PSERVER_RANK_HINT\"\n"
                                  "echo \"oops $PSERVER_RANK_HINT\" >&2\n"
                                  "printf 'no newline'");

  ASSERT_EQ(RunLaunch(options), 0) << Err();

  const std::string out = Out();
  const std::string err = Err();
  EXPECT_TRUE(Contains(out, "[worker 0] hello from 0\n"));
  EXPECT_TRUE(Contains(out, "[worker 1] hello from 1\n"));
  EXPECT_TRUE(Contains(out, "[worker 0] no newline\n"));  // partial line flushed at EOF
  EXPECT_TRUE(Contains(out, "[worker 1] no newline\n"));
  EXPECT_TRUE(Contains(err, "[worker 0] oops 0\n"));
  EXPECT_TRUE(Contains(err, "[worker 1] oops 1\n"));
  EXPECT_FALSE(Contains(out, "oops"));
  EXPECT_TRUE(Contains(out,
                       "[scheduler] scheduler args: --host 127.0.0.1 --port 0 "
                       "--num-servers 2 --num-workers 2 --address-file /"));
  EXPECT_TRUE(Contains(err,
                       "[server 0] server args: --scheduler tcp://127.0.0.1:1 "
                       "--host 127.0.0.1\n"));
  EXPECT_TRUE(Contains(err,
                       "[server 1] server args: --scheduler tcp://127.0.0.1:1 "
                       "--host 127.0.0.1\n"));
}

TEST_F(LauncherTest, ForwardsRawLinesWithoutPrefix) {
  LaunchOptions options =
      Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "echo plain");
  options.prefix_output = false;

  ASSERT_EQ(RunLaunch(options), 0) << Err();

  const std::string out = Out();
  EXPECT_TRUE(Contains(out, "\nplain\n"));
  EXPECT_FALSE(Contains(out, "["));
}

TEST_F(LauncherTest, PassesClusterEnvironmentToServersAndWorkers) {
  LaunchOptions options = Options(2, 2, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "echo \"env: $PSERVER_ROLE|$PSERVER_SCHEDULER|"
                                  "$PSERVER_NUM_SERVERS|$PSERVER_NUM_WORKERS|$PSERVER_HOST|"
                                  "$PSERVER_RANK_HINT|apply=$PSERVER_APPLY_THREADS\"");
  options.hardware_threads = 5;  // shared out: 5 / 2 servers = 2 apply threads each

  ASSERT_EQ(RunLaunch(options), 0) << Err();

  const std::string out = Out();
  const std::string err = Err();
  EXPECT_TRUE(Contains(out, "[worker 0] env: worker|tcp://127.0.0.1:1|2|2|127.0.0.1|0|apply=\n"));
  EXPECT_TRUE(Contains(out, "[worker 1] env: worker|tcp://127.0.0.1:1|2|2|127.0.0.1|1|apply=\n"));
  EXPECT_TRUE(Contains(err, "[server 0] server env: server|tcp://127.0.0.1:1|2|2|127.0.0.1|0|apply=2\n"));
  EXPECT_TRUE(Contains(err, "[server 1] server env: server|tcp://127.0.0.1:1|2|2|127.0.0.1|1|apply=2\n"));
}

// --metrics-port P: the scheduler on P, the servers after it, then the workers; listed once.
TEST_F(LauncherTest, GivesEachNodeItsMetricsPortAndListsThem) {
  LaunchOptions options =
      Options(2, 3, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "echo \"metrics: $PSERVER_METRICS_PORT\"");
  options.metrics_port = 9100;
  ASSERT_EQ(RunLaunch(options), 0) << Err();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Contains(Out(), "[worker " + std::to_string(i) + "] metrics: " + std::to_string(9103 + i) + "\n"));
  }
  EXPECT_TRUE(Contains(Err(), "launch: metrics at http://127.0.0.1:PORT/metrics: scheduler 9100, servers "
                              "9101-9102, workers 9103-9105 (by index)\n"));
}

// Without metrics every node is told -1, whatever the launcher's own environment exports (a
// port there would have every node bind it).
TEST_F(LauncherTest, WithoutMetricsEveryNodeIsToldNone) {
  ASSERT_EQ(::setenv("PSERVER_METRICS_PORT", "9100", 1), 0);
  LaunchOptions options =
      Options(1, 2, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "echo \"metrics: $PSERVER_METRICS_PORT\"");
  const int status = RunLaunch(options);
  ::unsetenv("PSERVER_METRICS_PORT");
  ASSERT_EQ(status, 0) << Err();
  EXPECT_TRUE(Contains(Out(), "[worker 0] metrics: -1\n"));
  EXPECT_TRUE(Contains(Out(), "[worker 1] metrics: -1\n"));
  EXPECT_FALSE(Contains(Err(), "launch: metrics"));
}

TEST_F(LauncherTest, RefusesMetricsPortsPastTheLastPort) {
  LaunchOptions options = Options(2, 3, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "true");
  options.metrics_port = 65531;
  EXPECT_EQ(RunLaunch(options), 2);
  EXPECT_TRUE(Contains(Err(), "--metrics-port 65531: the job's 6 ports from there go past 65535"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/scheduler.pid"));
}

// Servers get at least one apply thread however many share the machine.
TEST_F(LauncherTest, SharesHardwareThreadsAmongServers) {
  LaunchOptions options = Options(3, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "true");
  options.hardware_threads = 2;
  ASSERT_EQ(RunLaunch(options), 0) << Err();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Contains(Err(), "[server " + std::to_string(i) + "] server env: server|tcp://127.0.0.1:1|3|1|127.0.0.1|" +
                                    std::to_string(i) + "|apply=1\n"))
        << Err();
  }
}

TEST_F(LauncherTest, PassesTheUsersApplyThreadsOnUnchanged) {
  ASSERT_EQ(::setenv("PSERVER_APPLY_THREADS", "7", 1), 0);
  LaunchOptions chosen = Options(2, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "true");
  chosen.hardware_threads = 16;
  const int status = RunLaunch(chosen);
  ::unsetenv("PSERVER_APPLY_THREADS");
  ASSERT_EQ(status, 0) << Err();
  EXPECT_TRUE(Contains(Err(), "[server 0] server env: server|tcp://127.0.0.1:1|2|1|127.0.0.1|0|apply=7\n")) << Err();
  EXPECT_TRUE(Contains(Err(), "[server 1] server env: server|tcp://127.0.0.1:1|2|1|127.0.0.1|1|apply=7\n")) << Err();
}

TEST_F(LauncherTest, ReturnsFailingWorkerStatusAndStopsTheCluster) {
  LaunchOptions options = Options(2, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "[ \"$PSERVER_RANK_HINT\" = 1 ] && exit 3\n"
                                  "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 3);

  EXPECT_TRUE(Contains(Err(), "launch: worker 1 exited with status 3; stopping the cluster\n"));
  ExpectNothingRemains(
      {"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid", "worker.1.pid"});
}

TEST_F(LauncherTest, Returns128PlusSignalWhenWorkerIsKilled) {
  LaunchOptions options = Options(1, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "[ \"$PSERVER_RANK_HINT\" = 0 ] && kill -KILL $$\n"
                                  "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 137);

  EXPECT_TRUE(Contains(Err(),
                       "launch: worker 0 killed by signal 9 (SIGKILL); stopping the "
                       "cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid", "worker.1.pid"});
}

TEST_F(LauncherTest, ReturnsOneWhenServerFailsBeforeWorkersFinish) {
  LaunchOptions options =
      Options(2, 1, Fake::kRunUntilKilled, Fake::kFailAfterStartup, "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(),
                       "exited with status 4 before the workers finished; stopping the "
                       "cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid"});
}

// With replicas (`launch --replicas 2`) a server that dies is the scheduler's to fail over from:
// the launcher reports it and the workers finish; their status is the launch's.
TEST_F(LauncherTest, AServerThatDiesIsReportedWhenServersMayDie) {
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "server=$(cat \"$D/server.0.pid\")\n"
                                  "kill -KILL \"$server\"\n"
                                  "while kill -0 \"$server\" 2>/dev/null; do sleep 0.01; done");
  options.servers_may_die = true;

  EXPECT_EQ(RunLaunch(options), 0);

  EXPECT_TRUE(Contains(Err(), "launch: server 0 killed by signal 9 (SIGKILL) while the workers run; its replicas take "
                              "its keys\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

// `pserver train` lets workers die (their data is taken over): a worker killed is reported and
// the others' status is the launch's; a launch whose every worker was killed fails.
TEST_F(LauncherTest, AWorkerKilledIsReportedWhenWorkersMayDie) {
  LaunchOptions options = Options(1, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "if [ \"$PSERVER_RANK_HINT\" = 1 ]; then kill -KILL $$; fi");
  options.workers_may_die = true;
  options.grace = std::chrono::milliseconds(200);  // the fakes never exit by themselves

  EXPECT_EQ(RunLaunch(options), 0);

  EXPECT_TRUE(Contains(Err(), "launch: worker 1 killed by signal 9 (SIGKILL) while the workers run; the others take "
                              "over its work\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid", "worker.1.pid"});
}

TEST_F(LauncherTest, ALaunchWhoseEveryWorkerWasKilledFails) {
  LaunchOptions options = Options(1, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "kill -KILL $$");
  options.workers_may_die = true;

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(), "launch: every worker was killed before it finished; stopping the cluster\n"));
  ExpectNothingRemains({"worker.0.pid", "worker.1.pid"});  // the others may be stopped before they record theirs
}

// `launch --store ... --restart`: a scheduler killed is started again with the same command
// (it resumes the job from its store); the workers' status is the launch's.
TEST_F(LauncherTest, RestartsTheSchedulerThatDiesWhenItKeepsAStore) {
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "await_cluster\n"
                                  "first=$(cat \"$D/scheduler.pid\")\n"
                                  "kill -KILL \"$first\"\n"
                                  "while [ \"$(cat \"$D/scheduler.pid\")\" = \"$first\" ]; do sleep 0.01; done");
  options.restart_scheduler = true;

  EXPECT_EQ(RunLaunch(options), 0);

  EXPECT_TRUE(Contains(Err(), "launch: scheduler killed by signal 9 (SIGKILL) while the workers run; starting it again: "
                              "it resumes the job from its store\n"));
  // Started twice with the same command.
  const std::string out = Out();
  const size_t first = out.find("scheduler args: ");
  ASSERT_NE(first, std::string::npos) << out;
  const std::string args = out.substr(first, out.find('\n', first) - first);
  EXPECT_NE(out.find(args, first + 1), std::string::npos) << out;
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

// Without a store a dead scheduler ends the launch, as before.
TEST_F(LauncherTest, ASchedulerThatDiesEndsTheLaunchWithoutAStore) {
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "kill -KILL \"$(cat \"$D/scheduler.pid\")\"\n"
                                  "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(), "launch: scheduler killed by signal 9 (SIGKILL) before the workers finished"));
}

// `launch --restart`: the server killed is started again, as the next server index, and the
// hooks of a driving program (`pserver chaos`) hear of every start, exit and worker line.
TEST_F(LauncherTest, RestartsAServerThatDiesWhenAskedTo) {
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "await_cluster\n"
                                  "echo 'progress line'\n"
                                  "echo 'plain line'\n"
                                  "kill -KILL \"$(cat \"$D/server.0.pid\")\"\n"
                                  "while [ ! -f \"$D/server.1.pid\" ]; do sleep 0.01; done");
  options.servers_may_die = true;
  options.restart_servers = true;
  std::string address;
  std::vector<std::string> events;
  options.on_scheduler_address = [&](const std::string& a) { address = a; };
  pid_t pid0 = -1;
  options.on_start = [&](LaunchRole role, int index, pid_t pid) {
    if (role == LaunchRole::kScheduler) return;
    events.push_back((role == LaunchRole::kServer ? "start server " : "start worker ") + std::to_string(index));
    EXPECT_GT(pid, 0);
    if (role == LaunchRole::kServer && index == 0) pid0 = pid;
  };
  options.on_exit = [&](LaunchRole role, int index, bool by_itself, const std::string& how) {
    if (role == LaunchRole::kScheduler) return;
    events.push_back((role == LaunchRole::kServer ? "exit server " : "exit worker ") + std::to_string(index));
    if (role == LaunchRole::kServer && index == 0) {
      EXPECT_FALSE(by_itself);
      EXPECT_EQ(how, "killed by signal 9 (SIGKILL)");
      // Not reaped yet: its pid stays taken while the hook runs.
      siginfo_t info{};
      EXPECT_EQ(waitid(P_PID, static_cast<id_t>(pid0), &info, WEXITED | WNOHANG | WNOWAIT), 0);
      EXPECT_EQ(info.si_pid, pid0);
    }
  };
  options.on_worker_line = [&](int, std::string_view line) { return line.substr(0, 8) != "progress"; };

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  EXPECT_TRUE(Contains(Err(), "launch: server 0 killed by signal 9 (SIGKILL) while the workers run; its replicas take "
                              "its keys; starting server 1 in its place\n"));
  EXPECT_EQ(address, "tcp://127.0.0.1:1");
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "start server 0");
  EXPECT_EQ(events[1], "start worker 0");
  EXPECT_NE(std::find(events.begin(), events.end(), "start server 1"), events.end());
  EXPECT_LT(std::find(events.begin(), events.end(), "exit server 0"),
            std::find(events.begin(), events.end(), "start server 1"));
  EXPECT_TRUE(Contains(Out(), "[worker 0] plain line\n"));
  EXPECT_FALSE(Contains(Out(), "progress line"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid"});
}

// With restart_workers, a worker killed while the workers run is started again with its index
// (PSERVER_RANK_HINT), and the launch ends well once it finished.
TEST_F(LauncherTest, RestartsAKilledWorkerInItsPlaceWhenAskedTo) {
  LaunchOptions options = Options(1, 2, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "await_cluster\n"
                                  "if [ \"$PSERVER_RANK_HINT\" = 1 ] && [ ! -f \"$D/killed.1\" ]; then\n"
                                  "  touch \"$D/killed.1\"\n"
                                  "  kill -KILL $$\n"
                                  "fi\n"
                                  "echo \"running with rank hint $PSERVER_RANK_HINT\"");
  options.workers_may_die = true;
  options.restart_workers = true;
  std::vector<int> worker_starts;
  options.on_start = [&](LaunchRole role, int index, pid_t) {
    if (role == LaunchRole::kWorker) worker_starts.push_back(index);
  };

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  EXPECT_TRUE(Contains(Err(), "launch: worker 1 killed by signal 9 (SIGKILL) while the workers run; starting it "
                              "again, to take its work over\n"));
  EXPECT_EQ(std::count(worker_starts.begin(), worker_starts.end(), 1), 2) << Err();
  EXPECT_TRUE(Contains(Out(), "[worker 1] running with rank hint 1\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid", "worker.1.pid"});
}

// Restarting workers needs workers that may die.
TEST_F(LauncherTest, RefusesToRestartWorkersThatMayNotDie) {
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone, "true");
  options.restart_workers = true;
  EXPECT_EQ(RunLaunch(options), 2);
  EXPECT_TRUE(Contains(Err(), "restarting workers needs workers that may die")) << Err();
}

// A server that cannot start (it fails by itself at once) is not restarted in a loop.
TEST_F(LauncherTest, DoesNotRestartAServerThatFailsAtOnce) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kFailAfterStartup, "exec sleep 1000");
  options.servers_may_die = true;
  options.restart_servers = true;

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(), "not restarted, it would fail again; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

TEST_F(LauncherTest, GivesWorkersGraceWhenServerExitsCleanlyFirst) {
  // The worker finishes only once the launcher has reaped the server (kill -0 fails), so the
  // server's clean exit is always seen while the worker still runs.
  LaunchOptions options = Options(1, 1, Fake::kExitWhenWorkersDone, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "server=$(cat \"$D/server.0.pid\")\n"
                                  "kill -TERM \"$server\"\n"
                                  "while kill -0 \"$server\" 2>/dev/null; do sleep 0.01; done");
  options.server_argv = {WriteScript("clean_server.sh",
                                     "trap 'exit 0' TERM\n"
                                     "record_pid server.0.pid\n"
                                     "while :; do sleep 0.01; done")};

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

TEST_F(LauncherTest, ReturnsOneWhenWorkersOutliveCleanSchedulerExitByGrace) {
  LaunchOptions options =
      Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "exec sleep 1000");
  options.scheduler_argv = {WriteScript("clean_scheduler.sh",
                                        "record_pid scheduler.pid\n"
                                        "while [ $# -gt 0 ]; do\n"
                                        "  case \"$1\" in --address-file) file=\"$2\"; shift 2;; *) shift;; esac\n"
                                        "done\n"
                                        "echo tcp://127.0.0.1:1 > \"$file.tmp\" && mv \"$file.tmp\" \"$file\"\n"
                                        "await_cluster\n"
                                        "exit 0")};
  options.grace = std::chrono::milliseconds(100);

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(),
                       "launch: scheduler exited with status 0 but workers were still "
                       "running 100 ms later; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

TEST_F(LauncherTest, AServerThatExitsCleanlyWhileWorkersRunIsNoFailure) {
  // The worker finishes only once server 0 has exited (and been reaped: kill -0 fails).
  LaunchOptions options = Options(2, 1, Fake::kExitWhenWorkersDone, Fake::kExitWhenWorkersDone,
                                  "await_cluster\n"
                                  "while [ ! -e \"$D/server.0.pid\" ]; do sleep 0.01; done\n"
                                  "while kill -0 \"$(cat \"$D/server.0.pid\")\" 2>/dev/null; do sleep 0.01; done");
  options.server_argv = {WriteScript("drained_server.sh",
                                     "record_pid server.$PSERVER_RANK_HINT.pid\n"
                                     "await_cluster\n"
                                     "if [ \"$PSERVER_RANK_HINT\" = 0 ]; then exit 0; fi\n"
                                     "exec sleep 1000")};
  options.grace = std::chrono::milliseconds(100);

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  // A drained server and the scheduler say so themselves; the launcher does not guess: the same
  // exit is seen at every job's end when a server exits before the last worker process.
  EXPECT_FALSE(Contains(Err(), "launch: server 0"));
}

TEST_F(LauncherTest, TerminatesSchedulerAndServersThatStayAfterWorkersSucceed) {
  LaunchOptions options =
      Options(2, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "await_cluster");
  options.grace = std::chrono::milliseconds(100);

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  EXPECT_TRUE(Contains(Err(), "after the workers finished; sending SIGTERM\n"));
  ExpectNothingRemains(
      {"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid", "worker.1.pid"});
}

TEST_F(LauncherTest, KillsServersThatIgnoreSigterm) {
  LaunchOptions options =
      Options(2, 1, Fake::kRunUntilKilled, Fake::kIgnoreSigterm, "await_cluster");
  options.grace = std::chrono::milliseconds(100);

  EXPECT_EQ(RunLaunch(options), 0) << Err();

  EXPECT_TRUE(Contains(Err(), "after SIGTERM; sending SIGKILL\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid"});
}

TEST_F(LauncherTest, FailsWhenSchedulerNeverWritesItsAddress) {
  LaunchOptions options = Options(1, 1, Fake::kNeverWriteAddress, Fake::kRunUntilKilled, "");
  options.startup_timeout = std::chrono::milliseconds(100);

  EXPECT_EQ(RunLaunch(options), 1);

  const std::string err = Err();
  EXPECT_TRUE(Contains(err,
                       "launch: timed out after 100 ms waiting for the scheduler to write "
                       "its address to /"));
  EXPECT_TRUE(Contains(err, "/scheduler.addr (scheduler command: " + dir_ + "/scheduler.sh)"));
  // The scheduler may not have recorded its pid within the timeout; the launcher reaped it
  // (no child left) either way.
  ExpectNothingRemains({});
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/server.0.pid"));
}

TEST_F(LauncherTest, FailsWhenSchedulerExitsBeforeWritingItsAddress) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  options.scheduler_argv = {WriteScript("bad_scheduler.sh", "record_pid scheduler.pid; exit 5")};

  EXPECT_EQ(RunLaunch(options), 1);

  EXPECT_TRUE(Contains(Err(),
                       "launch: scheduler exited with status 5 before writing its "
                       "address to /"));
  ExpectNothingRemains({"scheduler.pid"});
}

TEST_F(LauncherTest, ReportsWorkerProgramThatDoesNotExist) {
  LaunchOptions options = Options(2, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  options.worker_argv = {dir_ + "/no-such-worker", "--flag"};

  EXPECT_EQ(RunLaunch(options), 127);

  EXPECT_TRUE(Contains(Err(), "launch: cannot start worker 0: '" + dir_ +
                                  "/no-such-worker': No such file or directory; stopping the "
                                  "cluster\n"));
  // The servers may be stopped before they record a pid; the launcher reaped them either way.
  ExpectNothingRemains({"scheduler.pid"});
}

TEST_F(LauncherTest, ReportsProgramNotFoundInPath) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  options.worker_argv = {"pserver-launcher-test-no-such-program"};

  EXPECT_EQ(RunLaunch(options), 127);

  EXPECT_TRUE(Contains(Err(),
                       "launch: cannot start worker 0: "
                       "'pserver-launcher-test-no-such-program': No such file or "
                       "directory; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid"});
}

TEST_F(LauncherTest, ReportsProgramThatIsNotExecutable) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  const std::string path = WriteScript("not_executable.sh", "exit 0");
  chmod(path.c_str(), 0644);
  options.worker_argv = {path};

  EXPECT_EQ(RunLaunch(options), 127);

  EXPECT_TRUE(Contains(Err(), "launch: cannot start worker 0: '" + path +
                                  "': Permission denied; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid"});
}

TEST_F(LauncherTest, ReportsSchedulerThatDoesNotExist) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  options.scheduler_argv = {dir_ + "/no-such-scheduler", "scheduler"};

  EXPECT_EQ(RunLaunch(options), 127);

  EXPECT_TRUE(Contains(Err(), "launch: cannot start scheduler: '" + dir_ +
                                  "/no-such-scheduler': No such file or directory"));
  ExpectNothingRemains({});
}

TEST_F(LauncherTest, StopsTheClusterOnSigtermAndReturns143) {
  // A worker delivers the signal to the launcher (its parent) once the cluster is up.
  LaunchOptions options = Options(1, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "[ \"$PSERVER_RANK_HINT\" = 1 ] && kill -TERM $PPID\n"
                                  "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 143);

  EXPECT_TRUE(Contains(Err(), "launch: received SIGTERM; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid", "worker.1.pid"});
  struct sigaction restored {};
  sigaction(SIGTERM, nullptr, &restored);
  EXPECT_EQ(restored.sa_handler, SIG_DFL) << "RunLaunch must restore the previous handler";
}

TEST_F(LauncherTest, StopsTheClusterOnSigintAndReturns130) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "kill -INT $PPID\n"
                                  "exec sleep 1000");

  EXPECT_EQ(RunLaunch(options), 130);

  EXPECT_TRUE(Contains(Err(), "launch: received SIGINT; stopping the cluster\n"));
  ExpectNothingRemains({"scheduler.pid", "server.0.pid", "worker.0.pid"});
}

TEST_F(LauncherTest, ClusterDiesWithTheLauncher) {
  // Orphans are reparented to this process, so it can wait for each to die.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const std::string fifo = dir_ + "/up.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const int up = open(fifo.c_str(), O_RDWR | O_CLOEXEC);  // RDWR: open does not block
  ASSERT_GE(up, 0);
  LaunchOptions options = Options(2, 2, Fake::kRunUntilKilled, Fake::kRunUntilKilled,
                                  "await_cluster\n"
                                  "[ \"$PSERVER_RANK_HINT\" = 0 ] && echo up > \"$D/up.fifo\"\n"
                                  "exec sleep 1000");
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    setenv("TMPDIR", dir_.c_str(), 1);  // the killed launcher cannot remove its temp dir
    _exit(RunLaunch(options));
  }

  pollfd cluster_up = {up, POLLIN, 0};
  const bool came_up = poll(&cluster_up, 1, /*timeout=*/60000) == 1;  // a hang guard only
  kill(launcher, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(launcher, &status, 0), launcher);
  close(up);
  ASSERT_TRUE(came_up) << "the cluster never came up";

  for (const char* name :
       {"scheduler.pid", "server.0.pid", "server.1.pid", "worker.0.pid", "worker.1.pid"}) {
    pid_t pid = 0;
    std::ifstream(dir_ + "/" + name) >> pid;
    ASSERT_GT(pid, 0) << name;
    ASSERT_EQ(waitpid(pid, &status, 0), pid) << name;  // returns once PDEATHSIG killed it
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << name;
  }
  // PDEATHSIG reaches only the launcher's own children: a fake still in await_cluster may
  // have left a short-lived helper (sleep 0.01, ls) that was reparented here. Reap those.
  while (waitpid(-1, nullptr, 0) > 0) {
  }
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
  ExpectNothingRemains({});
}

TEST_F(LauncherTest, RejectsInvalidOptionsWithoutStartingAnything) {
  LaunchOptions options = Options(1, 1, Fake::kRunUntilKilled, Fake::kRunUntilKilled, "");
  options.worker_argv.clear();

  EXPECT_EQ(RunLaunch(options), 2);

  EXPECT_TRUE(Contains(Err(), "launch: invalid options: no worker program given\n"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/scheduler.pid"));
}

}  // namespace
}  // namespace pserver::tools
