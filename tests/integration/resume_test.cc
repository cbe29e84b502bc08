// A checkpoint, the whole cluster killed, and the job resumed on another number of servers
// (docs/durability.md): kv_check_worker --scenario checkpoint, phase 1 on a cluster of 2 servers
// and 2 workers started one by one (the workers push, worker 0 checkpoints with `CheckpointJob`
// and records what one more push gives), every process SIGKILLed, then phase 2 under `pserver
// launch --servers 3 --resume DIR`: every value, and the update rule's state, come back
// bit-identical. `pserver checkpoint` checkpoints the first job too, and names a directory that
// does not exist.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
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

TEST(ResumeTest, ACheckpointOutlivesTheWholeClusterKilled) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  testing::TempDir dir;
  const std::string checkpoints = dir.path() + "/checkpoints";
  const std::string expected = dir.path() + "/expected.bin";
  std::filesystem::create_directories(checkpoints);

  auto scheduler = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--num-servers", "2", "--num-workers", "2"});
  ASSERT_OK(scheduler);
  const std::string marker = "scheduler listening at ";
  std::optional<std::string> line = (*scheduler)->WaitForLine(marker, kHangGuard);
  ASSERT_TRUE(line.has_value()) << (*scheduler)->output();
  const std::string address = line->substr(marker.size());
  std::vector<std::unique_ptr<Subprocess>> cluster;
  for (int i = 0; i < 2; ++i) {
    auto s = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address, "--host", "127.0.0.1"});
    ASSERT_OK(s);
    cluster.push_back(std::move(*s));
  }
  const std::map<std::string, std::string> env = {
      {"PSERVER_ROLE", "worker"}, {"PSERVER_SCHEDULER", address}, {"PSERVER_HOST", "127.0.0.1"}};
  std::vector<Subprocess*> workers;
  for (int i = 0; i < 2; ++i) {
    auto w = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "checkpoint", "--phase", "1", "--seed",
                                std::to_string(seed), "--dir", checkpoints, "--expect-file", expected},
                               env);
    ASSERT_OK(w);
    workers.push_back(w->get());
    cluster.push_back(std::move(*w));
  }
  for (Subprocess* w : workers) {
    ASSERT_TRUE(w->WaitForOutput("phase 1 done, waiting to be killed", kHangGuard))
        << w->output() << "\nscheduler:\n"
        << (*scheduler)->output();
  }
  // `pserver checkpoint` of the same job (idle now) into another directory, and into one that
  // does not exist.
  const std::string more = dir.path() + "/more";
  std::filesystem::create_directories(more);
  for (const auto& [target, want] : {std::pair{more, std::string("exit 0")}, std::pair{more + "/absent", std::string("exit 1")}}) {
    auto tool = Subprocess::Spawn({PserverBinary(), "checkpoint", "--scheduler", address, "--dir", target});
    ASSERT_OK(tool);
    EXPECT_EQ(testing::ExitOf(**tool, "pserver checkpoint", kHangGuard), want) << (*tool)->output();
    EXPECT_TRUE(testing::Contains((*tool)->output(), want == "exit 0" ? "checkpoint " + more + "/ckpt-000001 complete: 2 files"
                                                                      : target));
  }
  EXPECT_TRUE(std::filesystem::exists(more + "/ckpt-000001/MANIFEST"));

  cluster.push_back(std::move(*scheduler));
  for (auto& p : cluster) p->Signal(SIGKILL);
  for (auto& p : cluster) EXPECT_EQ(testing::ExitOf(*p, "a process of the first job", kHangGuard), "killed by signal 9 (SIGKILL)");
  ASSERT_TRUE(std::filesystem::exists(checkpoints + "/ckpt-000001/MANIFEST"));
  ASSERT_TRUE(std::filesystem::exists(expected));

  auto resumed = Subprocess::Spawn({PserverBinary(), "launch", "--servers", "3", "--workers", "1", "--resume",
                                    checkpoints, "--", CheckWorkerBinary(), "--scenario", "checkpoint", "--phase", "2",
                                    "--phase1-workers", "2", "--seed", std::to_string(seed), "--dir", checkpoints,
                                    "--expect-file", expected});
  ASSERT_OK(resumed);
  EXPECT_EQ(testing::ExitOf(**resumed, "the resumed job", kHangGuard), "exit 0") << (*resumed)->output();
  EXPECT_TRUE(testing::Contains((*resumed)->output(), "resumed values and state are bit-identical"));
  EXPECT_TRUE(testing::Contains((*resumed)->output(), "resumes from checkpoint " + checkpoints + "/ckpt-000001"));
}

}  // namespace
}  // namespace pserver
