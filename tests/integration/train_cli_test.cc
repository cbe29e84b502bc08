// `pserver gen-data`, `pserver train linear` and `pserver predict` as a user runs them: a real
// local cluster (scheduler, servers and workers as processes), the model file and the report
// they write, and predict's refusal of a corrupted model.
#include <gtest/gtest.h>

#include <signal.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "tests/integration/subprocess.h"
#include "testing/test_util.h"

namespace pserver::testing {
namespace {

constexpr std::chrono::milliseconds kHangGuard{240000};

class TrainCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("pserver_train_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs the pserver binary to its end; returns (exit description, output).
  std::pair<std::string, std::string> Run(std::vector<std::string> args) {
    args.insert(args.begin(), PserverBinary());
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p.status());
    if (!p.ok()) return {"spawn failed", ""};
    std::optional<int> status = (*p)->WaitExit(kHangGuard);
    return {status ? DescribeWaitStatus(*status) : "hung", (*p)->output()};
  }

  // The disturbance tests' data: 20,000 rows of 2,000 features (seeded), in train.svm.
  void GenerateTrainingData() {
    auto [status, out] = Run({"gen-data", "--out", Path("train.svm"), "--rows", "20000", "--features", "2000",
                              "--nnz-per-row", "20", "--seed", std::to_string(TestSeed())});
    ASSERT_EQ(status, "exit 0") << out;
  }
  // `pserver train linear` on train.svm to convergence, with `cluster` flags, reporting to `report`.
  std::vector<std::string> TrainArgs(const std::vector<std::string>& cluster, const std::string& report) {
    std::vector<std::string> args = {PserverBinary(), "train", "linear", "--data", Path("train.svm"), "--l1", "1"};
    args.insert(args.end(), cluster.begin(), cluster.end());
    args.insert(args.end(), {"--tau", "0", "--blocks", "4", "--max-passes", "200", "--tol", "1e-15", "--report",
                             Path(report)});
    return args;
  }
  // The objective a report holds (-1 if it cannot be read).
  double ObjectiveOf(const std::string& report) {
    std::ifstream f(Path(report));
    nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    return j.is_discarded() ? -1.0 : j["objective"].get<double>();
  }
  // Runs a training to its end, undisturbed; it must exit 0.
  void TrainUndisturbed(const std::vector<std::string>& args) {
    auto quiet = Subprocess::Spawn(args);
    ASSERT_OK(quiet.status());
    std::optional<int> st = (*quiet)->WaitExit(kHangGuard);
    ASSERT_TRUE(st.has_value());
    ASSERT_EQ(DescribeWaitStatus(*st), "exit 0") << (*quiet)->output();
  }

  std::filesystem::path dir_;
};

TEST_F(TrainCliTest, TrainsOnALocalClusterThenPredictsAndRefusesACorruptModel) {
  const uint64_t seed = TestSeed();
  auto [gen_status, gen_out] = Run({"gen-data", "--out", Path("train.svm"), "--rows", "4000", "--features", "500",
                                    "--nnz-per-row", "15", "--seed", std::to_string(seed)});
  ASSERT_EQ(gen_status, "exit 0") << gen_out;

  auto [status, out] = Run({"train", "linear", "--data", Path("train.svm"), "--l1", "1", "--servers", "2", "--workers",
                            "2", "--tau", "1", "--blocks", "8", "--model-out", Path("model.bin"), "--report",
                            Path("report.json"), "--cache-dir", Path("cache")});
  ASSERT_EQ(status, "exit 0") << out;
  EXPECT_NE(out.find("[worker 0] pass   1  objective"), std::string::npos) << out;
  EXPECT_NE(out.find("model written to"), std::string::npos) << out;

  std::ifstream report_file(Path("report.json"));
  nlohmann::json report = nlohmann::json::parse(report_file, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(report.is_discarded());
  for (const char* field : {"objective", "nnz", "passes", "seconds", "bytes_sent"}) {
    EXPECT_TRUE(report.contains(field)) << field;
  }
  EXPECT_GT(report["passes"].get<int>(), 1);
  EXPECT_GT(report["bytes_sent"].get<double>(), 0);
  // The objective decreases from the all-zero model's n * log 2.
  EXPECT_LT(report["objective"].get<double>(), 4000 * std::log(2.0));

  auto [p_status, p_out] = Run({"predict", "--model", Path("model.bin"), "--data", Path("train.svm"), "--scores-out",
                                Path("scores.txt")});
  ASSERT_EQ(p_status, "exit 0") << p_out;
  EXPECT_NE(p_out.find("rows 4000  log-loss"), std::string::npos) << p_out;
  EXPECT_NE(p_out.find("AUC"), std::string::npos) << p_out;
  size_t lines = 0;
  std::ifstream scores(Path("scores.txt"));
  for (std::string line; std::getline(scores, line);) ++lines;
  EXPECT_EQ(lines, 4000u);

  // A second run reads the binary cache instead of parsing the text again.
  auto [again_status, again_out] = Run({"train", "linear", "--data", Path("train.svm"), "--l1", "1", "--servers",
                                        "1", "--workers", "2", "--max-passes", "2", "--cache-dir", Path("cache")});
  ASSERT_EQ(again_status, "exit 0") << again_out;
  EXPECT_NE(again_out.find("(from the cache)"), std::string::npos) << again_out;

  // One flipped byte in the model: predict refuses it, naming the file.
  {
    std::fstream f(Path("model.bin"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(28);
    f.put('\x7f');
  }
  auto [bad_status, bad_out] = Run({"predict", "--model", Path("model.bin"), "--data", Path("train.svm")});
  EXPECT_EQ(bad_status, "exit 1") << bad_out;
  EXPECT_NE(bad_out.find("model file " + Path("model.bin")), std::string::npos) << bad_out;
  EXPECT_NE(bad_out.find("Corruption"), std::string::npos) << bad_out;
}

// Training goes on while a server joins the running job and another is drained, and ends with
// the objective of an undisturbed run (one worker and a fixed number of passes, so that both
// runs add the same numbers in the same order; enough passes that the changes come while it
// trains).
TEST_F(TrainCliTest, TrainingThroughAJoinAndADrainEndsWithTheUndisturbedObjective) {
  ASSERT_NO_FATAL_FAILURE(GenerateTrainingData());
  const std::vector<std::string> cluster = {"--servers", "2", "--workers", "1"};
  ASSERT_NO_FATAL_FAILURE(TrainUndisturbed(TrainArgs(cluster, "quiet.json")));
  auto train = Subprocess::Spawn(TrainArgs(cluster, "moved.json"));
  ASSERT_OK(train.status());
  Subprocess& t = **train;
  const std::string marker = "scheduler listening at ";
  ASSERT_TRUE(t.WaitForOutput(marker, kHangGuard)) << t.output();
  std::string out = t.output();
  const size_t at = out.find(marker) + marker.size();
  const std::string scheduler = out.substr(at, out.find_first_of(" \n", at) - at);
  ASSERT_TRUE(t.WaitForOutput("pass   2", kHangGuard)) << t.output();
  auto joiner = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", scheduler, "--host", "127.0.0.1"});
  ASSERT_OK(joiner.status());
  ASSERT_TRUE((*joiner)->WaitForOutput("registered at", kHangGuard)) << (*joiner)->output();
  ASSERT_TRUE(t.WaitForOutput("pass   5", kHangGuard)) << t.output();
  // Drain the job's first server (node 1: the launcher starts the servers first... its id is
  // read from `pserver status`).
  auto status = Subprocess::Spawn({PserverBinary(), "status", "--scheduler", scheduler});
  ASSERT_OK(status.status());
  ASSERT_TRUE((*status)->WaitExit(kHangGuard).has_value());
  const std::string text = (*status)->output();
  const std::string server0 = "server 0 (node ";
  ASSERT_NE(text.find(server0), std::string::npos) << text;
  const size_t id_at = text.find(server0) + server0.size();
  const std::string node = text.substr(id_at, text.find(')', id_at) - id_at);
  auto drain = Subprocess::Spawn({PserverBinary(), "drain", "--scheduler", scheduler, "--node", node});
  ASSERT_OK(drain.status());
  std::optional<int> drained = (*drain)->WaitExit(kHangGuard);
  ASSERT_TRUE(drained.has_value());
  EXPECT_EQ(DescribeWaitStatus(*drained), "exit 0") << (*drain)->output();

  std::optional<int> st = t.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(DescribeWaitStatus(*st), "exit 0") << t.output();
  std::optional<int> joined = (*joiner)->WaitExit(kHangGuard);
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(DescribeWaitStatus(*joined), "exit 0") << (*joiner)->output();
  const double quiet = ObjectiveOf("quiet.json"), moved = ObjectiveOf("moved.json");
  std::printf("objective undisturbed %.9g, through a join and a drain %.9g (relative difference %.3g)\n", quiet, moved,
              std::abs(moved - quiet) / quiet);
  EXPECT_GT(quiet, 0);
  EXPECT_LE(std::abs(moved - quiet), 1e-6 * quiet);
}

// DBPG with two replicas while a server is SIGKILLed mid-training: the job finishes, and its
// objective equals the failure-free run's (docs/durability.md: no push lost or applied twice).
TEST_F(TrainCliTest, TrainingThroughAServerKilledEndsWithTheUndisturbedObjective) {
  ASSERT_NO_FATAL_FAILURE(GenerateTrainingData());
  const std::vector<std::string> cluster = {"--servers", "3", "--replicas", "2", "--workers", "2"};
  ASSERT_NO_FATAL_FAILURE(TrainUndisturbed(TrainArgs(cluster, "quiet.json")));
  auto train = Subprocess::Spawn(TrainArgs(cluster, "killed.json"));
  ASSERT_OK(train.status());
  Subprocess& t = **train;
  ASSERT_TRUE(t.WaitForOutput("pass   3", kHangGuard)) << t.output();
  // A server process of this job: a child of the training command's launcher.
  pid_t victim = 0;
  for (const ProcessInfo& p : ListProcesses()) {
    if (p.ppid == t.pid() && p.cmdline.find(" server ") != std::string::npos && p.state != 'Z') victim = p.pid;
  }
  ASSERT_NE(victim, 0) << "no server process under pid " << t.pid();
  std::printf("SIGKILL of server pid %d\n", static_cast<int>(victim));
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  std::optional<int> st = t.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(DescribeWaitStatus(*st), "exit 0") << t.output();
  EXPECT_NE(t.output().find("serves its keys from epoch"), std::string::npos) << t.output();
  const double quiet = ObjectiveOf("quiet.json"), killed = ObjectiveOf("killed.json");
  std::printf("objective undisturbed %.9g, through a server killed %.9g (relative difference %.3g)\n", quiet, killed,
              std::abs(killed - quiet) / quiet);
  EXPECT_GT(quiet, 0);
  EXPECT_LE(std::abs(killed - quiet), 1e-6 * quiet);
}

// The environment variable `name` of process `pid` ("" if unset or unreadable).
std::string EnvironmentOf(pid_t pid, const std::string& name) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string entry;
  while (std::getline(f, entry, '\0')) {
    if (entry.rfind(name + "=", 0) == 0) return entry.substr(name.size() + 1);
  }
  return "";
}

// DBPG while worker 0 -- the lead, which prints the progress and writes the model -- is
// SIGKILLed mid-training: a live worker reads its data and trains on it too, the job finishes
// with every row in the model, the new lead writes it, and training converges to the
// undisturbed run's optimum (the killed worker's last push may be lost: only the path differs).
TEST_F(TrainCliTest, TrainingThroughAWorkerKilledUsesEveryRowAndReachesTheUndisturbedOptimum) {
  ASSERT_NO_FATAL_FAILURE(GenerateTrainingData());
  const std::vector<std::string> cluster = {"--servers", "2", "--workers", "3", "--model-out", Path("model")};
  ASSERT_NO_FATAL_FAILURE(TrainUndisturbed(TrainArgs(cluster, "quiet.json")));
  std::filesystem::remove(Path("model"));
  auto train = Subprocess::Spawn(TrainArgs(cluster, "killed.json"));
  ASSERT_OK(train.status());
  Subprocess& t = **train;
  ASSERT_TRUE(t.WaitForOutput("pass   3", kHangGuard)) << t.output();
  pid_t victim = 0;
  for (const ProcessInfo& p : ListProcesses()) {
    if (p.ppid == t.pid() && p.cmdline.find(" train linear ") != std::string::npos && p.state != 'Z' &&
        EnvironmentOf(p.pid, "PSERVER_ROLE") == "worker" && EnvironmentOf(p.pid, "PSERVER_RANK_HINT") == "0") {
      victim = p.pid;
    }
  }
  ASSERT_NE(victim, 0) << "no worker 0 under pid " << t.pid();
  std::printf("SIGKILL of worker 0, pid %d\n", static_cast<int>(victim));
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  std::optional<int> st = t.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(DescribeWaitStatus(*st), "exit 0") << t.output();
  const std::string out = t.output();
  EXPECT_NE(out.find("worker 0 killed by signal 9"), std::string::npos) << out;
  EXPECT_NE(out.find("worker 0 left the job; training on its data too"), std::string::npos) << out;
  EXPECT_NE(out.find("(2 of 3 workers)"), std::string::npos) << out;
  EXPECT_NE(out.find("model written to " + Path("model")), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(Path("model")));
  std::ifstream f(Path("killed.json"));
  nlohmann::json report = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(report.is_discarded());
  EXPECT_EQ(report["status"], "ok");
  EXPECT_EQ(report["rows"].get<uint64_t>(), 20000u);  // every row, in the last pass's figures
  EXPECT_EQ(report["per_pass"].back()["workers"].get<uint32_t>(), 2u);
  const double quiet = ObjectiveOf("quiet.json"), killed = ObjectiveOf("killed.json");
  // Each pass's figures are of one model (every worker's margins agree with the weights): none
  // is below the optimum, as figures mixing stale and fresh weights could be.
  for (const nlohmann::json& pass : report["per_pass"]) {
    EXPECT_GE(pass["objective"].get<double>(), quiet * (1 - 1e-9)) << "pass " << pass["pass"];
  }
  std::printf("objective undisturbed %.9g, through a worker killed %.9g (relative difference %.3g)\n", quiet, killed,
              std::abs(killed - quiet) / quiet);
  EXPECT_GT(quiet, 0);
  EXPECT_LE(std::abs(killed - quiet), 1e-6 * quiet);
}

// DBPG checkpointing itself every 2 passes while the whole cluster -- launcher, scheduler,
// servers and workers -- is SIGKILLed after its second checkpoint: `--resume` with the same
// command goes on from the latest complete checkpoint (on another number of servers) and ends
// where the undisturbed run ends, to rounding (its margins are summed again from the weights).
TEST_F(TrainCliTest, AWholeClusterKilledResumesFromItsCheckpointToTheUndisturbedOptimum) {
  ASSERT_NO_FATAL_FAILURE(GenerateTrainingData());
  ASSERT_NO_FATAL_FAILURE(TrainUndisturbed(TrainArgs({"--servers", "2", "--workers", "2"}, "quiet.json")));
  const std::vector<std::string> cluster = {"--servers", "2", "--workers", "2", "--checkpoint-dir", Path("ckpt"),
                                            "--checkpoint-every", "2"};
  auto train = Subprocess::Spawn(TrainArgs(cluster, "killed.json"));
  ASSERT_OK(train.status());
  Subprocess& t = **train;
  ASSERT_TRUE(t.WaitForOutput("ckpt-000002 complete", kHangGuard)) << t.output();
  // The launcher first, so that it cannot reap or stop a process before the test kills it.
  std::vector<pid_t> cluster_pids;
  for (const ProcessInfo& p : ListProcesses()) {
    if (p.ppid == t.pid() && p.state != 'Z') cluster_pids.push_back(p.pid);
  }
  ASSERT_EQ(::kill(t.pid(), SIGKILL), 0);
  for (pid_t pid : cluster_pids) ::kill(pid, SIGKILL);  // gone already is as good
  std::printf("SIGKILL of the launcher and its %zu processes\n", cluster_pids.size());
  EXPECT_EQ(cluster_pids.size(), 5u) << "scheduler, 2 servers, 2 workers";
  std::optional<int> st = t.WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(DescribeWaitStatus(*st), "killed by signal 9 (SIGKILL)");

  std::vector<std::string> again = TrainArgs({"--servers", "3", "--workers", "2", "--resume", Path("ckpt"),
                                              "--model-out", Path("model")},
                                             "resumed.json");
  auto resumed = Subprocess::Spawn(again);
  ASSERT_OK(resumed.status());
  st = (*resumed)->WaitExit(kHangGuard);
  ASSERT_TRUE(st.has_value());
  const std::string out = (*resumed)->output();
  ASSERT_EQ(DescribeWaitStatus(*st), "exit 0") << out;
  EXPECT_NE(out.find("resumed after pass"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(Path("model")));
  std::ifstream f(Path("resumed.json"));
  nlohmann::json report = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(report.is_discarded());
  EXPECT_EQ(report["status"], "ok");
  ASSERT_TRUE(report.contains("resumed_from_pass")) << report.dump();
  const int from = report["resumed_from_pass"].get<int>();
  EXPECT_GE(from, 4);
  EXPECT_EQ(from % 2, 0) << "checkpoints are taken every 2 passes";
  EXPECT_EQ(report["per_pass"].front()["pass"].get<int>(), from + 1);
  const double quiet = ObjectiveOf("quiet.json"), after = ObjectiveOf("resumed.json");
  std::printf("objective undisturbed %.12g, resumed after pass %d %.12g (relative difference %.3g)\n", quiet, from,
              after, std::abs(after - quiet) / quiet);
  EXPECT_GT(quiet, 0);
  EXPECT_LE(std::abs(after - quiet), 1e-9 * quiet);
}

TEST_F(TrainCliTest, MalformedDataFailsTheJobNamingFileAndLine) {
  {
    std::ofstream f(Path("bad.svm"));
    f << "+1 1:1 3:1\n-1 2:1\n+1 4:abc\n";
  }
  auto [status, out] = Run({"train", "linear", "--data", Path("bad.svm"), "--servers", "1", "--workers", "1",
                            "--cache-dir", ""});
  EXPECT_NE(status, "exit 0") << out;
  EXPECT_NE(out.find(Path("bad.svm") + ":3: bad value 'abc' for feature 4"), std::string::npos) << out;
}

}  // namespace
}  // namespace pserver::testing
