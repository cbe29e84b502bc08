// Issue 11, items 1 and 2: no model that looks complete from a job that lost a worker, and
// feature ids anywhere in the 64-bit range.
//
// 1. A worker that dies (SIGKILL) or stops (SIGSTOP) during `pserver train linear` leaves its
//    share of the data behind. Before issue 11 the survivors trained on their own shard and
//    wrote a model that looked complete. Since issue 14 a live worker reads the lost share again
//    and trains on it (docs/durability.md, section 5): the job ends well, with every row in the
//    model -- and when the lost share cannot be read again, the job must still end with a
//    non-zero status at every process, name the lost worker and its data, write no model, and
//    record the failure in the report.
// 2. Feature indices up to 2^64 - 1 train at the cost of the features used: before the fix an
//    index >= 2^32 - 1 made the model collection walk every id below it (the job never ended),
//    and 2^64 - 1 overflowed the feature count to 0 (an all-zero model, exit 0).
//
// Every signal is sent once the job's lead printed its second pass; wherever the victim is then,
// the assertions are the same (the job runs many more passes than that takes, and none can end
// before the victim is declared dead). Waits have a hang guard, which detects hangs and asserts
// nothing about speed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "tests/integration/process_expectations.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

constexpr std::chrono::seconds kHangGuard{240};
// Heartbeats: only the path that must detect the victim -- the scheduler judging the workers --
// is short enough for the test (a killed or frozen worker is declared dead after kDetectMs); the
// nodes judge the scheduler, which stays alive, with kNeverMs, so a live but starved process (two
// cores, a parallel ctest) is not taken for dead there. Under `pserver train` every process
// shares one setting (the environment): kDetectMs.
const std::string kDetectMs = "10000";
const std::string kNeverMs = "45000";
const std::string kHeartbeatIntervalMs = "100";

std::string ExitOf(Subprocess& p) { return testing::ExitOf(p, "pid " + std::to_string(p.pid()), kHangGuard); }

class LostWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Seeded data, large enough for many passes; 2 files, so worker r reads file r.
    for (int i = 0; i < 2; ++i) {
      auto gen = Subprocess::Spawn({PserverBinary(), "gen-data", "--out", Path("part" + std::to_string(i)), "--rows",
                                    "3000", "--features", "2000", "--seed", std::to_string(11 + i)});
      ASSERT_OK(gen);
      ASSERT_EQ(ExitOf(**gen), "exit 0") << (*gen)->output();
    }
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  // `pserver train linear` flags for a job of 40 passes (every one made: the tolerance is 0).
  std::vector<std::string> TrainArgs() const {
    return {"train",        "linear",       "--data",  Path("part0"),     Path("part1"), "--l1",
            "1",            "--max-passes", "40",      "--tol",           "1e-300",      "--model-out",
            Path("model"),  "--report",     Path("report.json"), "--cache-dir", ""};
  }
  // The report's JSON (null if there is none).
  nlohmann::json Report() const {
    std::ifstream in(Path("report.json"));
    if (!in.good()) return nullptr;
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }

  void StartScheduler() {
    auto s = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--num-servers", "1",
                                "--num-workers", "2", "--heartbeat-interval-ms", kHeartbeatIntervalMs,
                                "--heartbeat-timeout-ms", kDetectMs});
    ASSERT_OK(s);
    scheduler_ = std::move(*s);
    const std::string marker = "scheduler listening at ";
    std::optional<std::string> line = scheduler_->WaitForLine(marker, kHangGuard);
    ASSERT_TRUE(line.has_value()) << scheduler_->output();
    address_ = line->substr(marker.size());
    auto server = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address_, "--host", "127.0.0.1",
                                     "--heartbeat-interval-ms", kHeartbeatIntervalMs, "--heartbeat-timeout-ms",
                                     kNeverMs});
    ASSERT_OK(server);
    server_ = std::move(*server);
  }

  // A `pserver train linear --scheduler` worker of the hand-started cluster.
  void StartWorker(int rank) {
    std::vector<std::string> argv = TrainArgs();
    argv.insert(argv.begin(), PserverBinary());
    argv.insert(argv.end(), {"--scheduler", address_});
    auto w = Subprocess::Spawn(argv, {{"PSERVER_HOST", "127.0.0.1"},
                                      {"PSERVER_RANK_HINT", std::to_string(rank)},
                                      {"PSERVER_HEARTBEAT_INTERVAL_MS", kHeartbeatIntervalMs},
                                      {"PSERVER_HEARTBEAT_TIMEOUT_MS", kNeverMs}});
    ASSERT_OK(w);
    workers_.push_back(std::move(*w));
  }

  // Worker `victim` of a hand-started cluster is killed during training; with `data_gone`, its
  // file was removed first, so that no one can read its share again. Returns the index of the
  // surviving worker's process.
  int KillWorkerOfHandStartedCluster(int victim, bool data_gone) {
    StartScheduler();
    if (HasFatalFailure()) return -1;
    StartWorker(0);
    StartWorker(1);
    if (HasFatalFailure()) return -1;
    // Ranks follow registration, not the order of the processes: find them by the line each
    // worker prints once it loaded its data ("worker R: N rows ...").
    int victim_index = -1;
    for (int i = 0; i < 2; ++i) {
      std::optional<std::string> line = workers_[i]->WaitForLine("worker ", kHangGuard);
      EXPECT_TRUE(line.has_value()) << workers_[i]->output();
      if (line && line->rfind("worker " + std::to_string(victim) + ": ", 0) == 0) victim_index = i;
    }
    EXPECT_NE(victim_index, -1) << workers_[0]->output() << workers_[1]->output();
    if (victim_index < 0) return -1;
    const int lead = victim == 0 ? victim_index : 1 - victim_index;
    EXPECT_TRUE(workers_[lead]->WaitForOutput("pass   2", kHangGuard)) << workers_[lead]->output();
    if (data_gone) std::filesystem::remove(Path("part" + std::to_string(victim)));
    workers_[victim_index]->Signal(SIGKILL);
    EXPECT_EQ(ExitOf(*workers_[victim_index]), "killed by signal 9 (SIGKILL)");
    return 1 - victim_index;
  }

  // A worker killed mid-training: the survivor trains on its rows too, and the job ends well at
  // every process with a model of every row. Worker 0 is the lead (it prints and writes); when it
  // is the one lost, the survivor takes that over too.
  void ExpectTakenOver(int victim, Subprocess& survivor, const std::string& victim_data) {
    const std::string exit = ExitOf(survivor);
    const std::string out = survivor.output();
    EXPECT_EQ(exit, "exit 0") << out;
    EXPECT_TRUE(Contains(out, "worker " + std::to_string(victim) + " left the job; training on its data too (" +
                                  victim_data + "): 3000 rows"))
        << out;
    for (Subprocess* p : {server_.get(), scheduler_.get()}) EXPECT_EQ(ExitOf(*p), "exit 0") << p->output();
    EXPECT_TRUE(Contains(scheduler_->output(), "took over the work of worker " + std::to_string(victim)))
        << scheduler_->output();
    EXPECT_TRUE(std::filesystem::exists(Path("model"))) << out;
    const nlohmann::json report = Report();
    ASSERT_TRUE(report.is_object()) << out;
    EXPECT_EQ(report.at("status"), "ok") << report.dump(2);
    EXPECT_EQ(report.at("rows"), 6000) << report.dump(2);
    EXPECT_EQ(report.at("passes"), 40) << report.dump(2);
  }

  // `pserver train linear` of 2 workers, whose heartbeats find a stopped worker; once worker 0
  // printed its second pass, one of the launcher's two worker processes (whichever rank it has)
  // is frozen by SIGSTOP (*frozen: its pid). Null, with a test failure, if that went wrong.
  std::unique_ptr<Subprocess> TrainAndStopAWorker(pid_t* frozen) {
    std::vector<std::string> argv = TrainArgs();
    argv.insert(argv.begin(), PserverBinary());
    argv.insert(argv.end(), {"--servers", "1", "--workers", "2"});
    auto train = Subprocess::Spawn(argv, {{"PSERVER_HEARTBEAT_INTERVAL_MS", kHeartbeatIntervalMs},
                                          {"PSERVER_HEARTBEAT_TIMEOUT_MS", kDetectMs}});
    EXPECT_OK(train);
    if (!train.ok()) return nullptr;
    Subprocess& job = **train;
    if (!job.WaitForOutput("[worker 0] pass   2", kHangGuard)) {
      ADD_FAILURE() << job.output();
      return nullptr;
    }
    std::vector<pid_t> workers;
    for (const ProcessInfo& p : ListProcesses()) {
      if (p.ppid == job.pid() && p.cmdline.find(" train linear ") != std::string::npos) workers.push_back(p.pid);
    }
    if (workers.size() != 2 || ::kill(workers[1], SIGSTOP) != 0) {
      ADD_FAILURE() << "the launcher's worker processes: " << workers.size();
      return nullptr;
    }
    *frozen = workers[1];
    return std::move(*train);
  }

  TempDir dir_;
  std::string address_;
  std::unique_ptr<Subprocess> scheduler_, server_;
  std::vector<std::unique_ptr<Subprocess>> workers_;
};

TEST_F(LostWorkerTest, KilledWorkerOneOfAHandStartedClusterIsTakenOverAndTheModelHasEveryRow) {
  const int survivor = KillWorkerOfHandStartedCluster(1, /*data_gone=*/false);
  ASSERT_GE(survivor, 0);
  ExpectTakenOver(1, *workers_[survivor], Path("part1"));
}

TEST_F(LostWorkerTest, KilledWorkerZeroOfAHandStartedClusterIsTakenOverAndTheSurvivorLeads) {
  const int survivor = KillWorkerOfHandStartedCluster(0, /*data_gone=*/false);
  ASSERT_GE(survivor, 0);
  ExpectTakenOver(0, *workers_[survivor], Path("part0"));
  EXPECT_TRUE(Contains(workers_[survivor]->output(), "model written to " + Path("model")));
}

// The lost worker's file is gone: nobody can train on its rows, so the job fails at every
// process, naming the file, and writes no model; the lead's report records the failure.
TEST_F(LostWorkerTest, ALostWorkerWhoseDataCannotBeReadAgainFailsEveryProcessAndWritesNoModel) {
  const int survivor = KillWorkerOfHandStartedCluster(1, /*data_gone=*/true);
  ASSERT_GE(survivor, 0);
  const std::string exit = ExitOf(*workers_[survivor]);
  const std::string out = workers_[survivor]->output();
  EXPECT_TRUE(ExitedNonZero(exit)) << exit << "\n" << out;
  EXPECT_TRUE(Contains(out, Path("part1"))) << out;
  for (Subprocess* p : {server_.get(), scheduler_.get()}) {
    const std::string e = ExitOf(*p);
    EXPECT_TRUE(ExitedNonZero(e)) << e << "\n" << p->output();
    EXPECT_TRUE(Contains(p->output(), Path("part1"))) << p->output();
  }
  EXPECT_FALSE(std::filesystem::exists(Path("model"))) << "a job that lost a worker's data wrote a model:\n" << out;
  const nlohmann::json report = Report();
  ASSERT_TRUE(report.is_object()) << "no report:\n" << out;
  EXPECT_EQ(report.at("status"), "failed") << report.dump(2);
  EXPECT_TRUE(Contains(report.at("error").get<std::string>(), Path("part1"))) << report.dump(2);
}

// Under `pserver train`, a worker frozen by SIGSTOP is declared dead after the heartbeat timeout;
// the other takes its rows over and the job ends well; the launcher then kills the frozen one.
TEST_F(LostWorkerTest, StoppedWorkerUnderTrainIsTakenOverAndKilledWhenTheJobEnds) {
  pid_t frozen = 0;
  std::unique_ptr<Subprocess> train = TrainAndStopAWorker(&frozen);
  ASSERT_NE(train, nullptr);
  Subprocess& job = *train;
  const std::string exit = ExitOf(job);
  std::optional<ProcessInfo> left = FindProcess(frozen);
  if (left && left->state != 'Z' && left->cmdline.find(" train linear ") != std::string::npos) {
    ADD_FAILURE() << "the launcher left the frozen worker " << frozen << " behind";
    ::kill(frozen, SIGKILL);
  }
  const std::string out = job.output();
  EXPECT_EQ(exit, "exit 0") << out;
  EXPECT_TRUE(Contains(out, "left the job; training on its data too")) << out;
  EXPECT_TRUE(Contains(out, "after the job ended well: it was declared dead and its work taken over; killing it")) << out;
  EXPECT_TRUE(std::filesystem::exists(Path("model"))) << out;
  const nlohmann::json report = Report();
  ASSERT_TRUE(report.is_object()) << out;
  EXPECT_EQ(report.at("rows"), 6000) << report.dump(2);
}

// Under `pserver train`, a worker frozen by SIGSTOP is declared dead and its rows taken over;
// continued then, it finds itself out of the job (the servers refuse its requests, the
// scheduler tells it it was declared dead) and leaves with kExitDeclaredDead, which the launcher
// takes as a lost worker, not a failure: the job ends well with every row.
TEST_F(LostWorkerTest, StoppedWorkerContinuedAfterItsTakeOverLeavesAndTheJobEndsWell) {
  pid_t frozen = 0;
  std::unique_ptr<Subprocess> train = TrainAndStopAWorker(&frozen);
  ASSERT_NE(train, nullptr);
  Subprocess& job = *train;
  ASSERT_TRUE(job.WaitForOutput("left the job; training on its data too", kHangGuard)) << job.output();
  ASSERT_EQ(::kill(frozen, SIGCONT), 0);
  const std::string exit = ExitOf(job);
  const std::string out = job.output();
  EXPECT_EQ(exit, "exit 0") << out;
  EXPECT_TRUE(Contains(out, "left: the scheduler had declared it dead while it was silent while the workers run; the "
                            "others take over its work"))
      << out;
  EXPECT_TRUE(Contains(out, "was declared dead while it was silent, and the job went on without it")) << out;
  EXPECT_TRUE(std::filesystem::exists(Path("model"))) << out;
  const nlohmann::json report = Report();
  ASSERT_TRUE(report.is_object()) << out;
  EXPECT_EQ(report.at("status"), "ok") << report.dump(2);
  EXPECT_EQ(report.at("rows"), 6000) << report.dump(2);
}

// Feature indices at the top of the 64-bit range train like any other: the same data with the
// huge indices renamed to small unused ones gives the same objective and the same weights.
TEST(HugeFeatureIdTest, IndicesUpToTwoToTheSixtyFourTrainLikeSmallOnes) {
  TempDir dir;
  const std::string base = dir.path() + "/base.svm";
  auto gen = Subprocess::Spawn(
      {PserverBinary(), "gen-data", "--out", base, "--rows", "2000", "--features", "500", "--seed", "5"});
  ASSERT_OK(gen);
  ASSERT_EQ(ExitOf(**gen), "exit 0") << (*gen)->output();
  std::ifstream in(base);
  const std::string rows((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Extra rows that use four huge indices (or, renamed, 601..604) often enough to get weights.
  const std::vector<std::string> huge = {"4294967295", "1000000000", "18446744073709551614", "18446744073709551615"};
  const std::vector<std::string> small = {"601", "602", "603", "604"};
  auto write = [&](const std::string& path, const std::vector<std::string>& ids) {
    std::ofstream out(path);
    out << rows;
    for (int i = 0; i < 200; ++i) {
      out << (i % 3 == 0 ? "-1" : "+1") << " " << (1 + i % 7) << ":1 " << ids[i % 2] << ":1 " << ids[2 + i % 2]
          << ":" << (i % 2 ? "0.5" : "1") << "\n";
    }
  };
  write(dir.path() + "/huge.svm", huge);
  write(dir.path() + "/small.svm", small);
  auto train = [&](const std::string& name) {
    auto p = Subprocess::Spawn({PserverBinary(), "train", "linear", "--data", dir.path() + "/" + name + ".svm", "--l1",
                                "1", "--servers", "2", "--workers", "2", "--tol", "1e-9", "--max-passes", "3000",
                                "--model-out", dir.path() + "/" + name + ".model", "--report",
                                dir.path() + "/" + name + ".json", "--cache-dir", ""});
    EXPECT_OK(p);
    const std::string exit = ExitOf(**p);
    EXPECT_EQ(exit, "exit 0") << (*p)->output();
    std::ifstream report(dir.path() + "/" + name + ".json");
    return nlohmann::json::parse(report);
  };
  const nlohmann::json with_huge = train("huge");
  const nlohmann::json with_small = train("small");
  const double objective = with_small.at("objective");
  EXPECT_NEAR(with_huge.at("objective").get<double>(), objective, 1e-6 * objective);
  EXPECT_EQ(with_huge.at("nnz"), with_small.at("nnz"));
  EXPECT_GT(with_huge.at("nnz").get<int>(), 0);

  // predict scores the data the same with both models (the weights moved with the names).
  // (The two runs split the feature blocks differently, so they meet the optimum along
  // different paths: the figures agree to the solver's tolerance, not bit for bit.)
  auto predict = [&](const std::string& name) {
    auto p = Subprocess::Spawn({PserverBinary(), "predict", "--model", dir.path() + "/" + name + ".model", "--data",
                                dir.path() + "/" + name + ".svm"});
    EXPECT_OK(p);
    EXPECT_EQ(ExitOf(**p), "exit 0") << (*p)->output();
    const std::string out = (*p)->output();
    double log_loss = -1, auc = -1;
    const size_t at = out.find("log-loss ");
    EXPECT_NE(at, std::string::npos) << out;
    if (at != std::string::npos) {
      EXPECT_EQ(std::sscanf(out.c_str() + at, "log-loss %lf AUC %lf", &log_loss, &auc), 2) << out;
    }
    return std::pair{log_loss, auc};
  };
  const auto [huge_loss, huge_auc] = predict("huge");
  const auto [small_loss, small_auc] = predict("small");
  EXPECT_GT(huge_auc, 0.8);
  EXPECT_NEAR(huge_loss, small_loss, 1e-4);
  EXPECT_NEAR(huge_auc, small_auc, 1e-4);
}

}  // namespace
}  // namespace pserver::testing
