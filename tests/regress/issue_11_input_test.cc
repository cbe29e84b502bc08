// Issue 11, items 7-9: bad input to the `pserver` command is a clear error with a non-zero exit
// status -- never an abort, a hang, unbounded memory, or exit 0 with a wrong or missing model.
//   7. `predict --model DIR` aborted with an uncaught std::ios_failure (exit 134).
//   8. `--data /dev/zero` grew memory without bound.
//   9. An empty data file trained an empty model with exit 0 (and predict printed AUC 0);
//      `--tol nan` was accepted; the same file given twice to --data doubled the data.
// Every case runs the real binary, as a user does.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "testing/test_util.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

// Hang guard only (a run that never ends fails as "hung"); no assertion on speed.
constexpr std::chrono::milliseconds kHangGuard{120000};

class Issue11InputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("pserver_issue11_input_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs the pserver binary to its end; returns (exit description, output). With
  // `memory_limit`, under an address-space limit of that many bytes (prlimit --as), where
  // the build has no sanitizer (whose shadow memory does not fit such a limit).
  std::pair<std::string, std::string> Run(std::vector<std::string> args, uint64_t memory_limit = 0) {
    args.insert(args.begin(), PserverBinary());
    if (memory_limit > 0 && !kSanitized && ::access("/usr/bin/prlimit", X_OK) == 0) {
      args.insert(args.begin(), {"/usr/bin/prlimit", "--as=" + std::to_string(memory_limit)});
    }
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p.status());
    if (!p.ok()) return {"spawn failed", ""};
    std::optional<int> status = (*p)->WaitExit(kHangGuard);
    return {status ? DescribeWaitStatus(*status) : "hung", (*p)->output()};
  }

  void WriteText(const std::string& name, const std::string& text) {
    std::ofstream(Path(name), std::ios::binary) << text;
  }

  // A small data set from gen-data.
  void GenData(const std::string& name, int rows) {
    auto [status, out] = Run({"gen-data", "--out", Path(name), "--rows", std::to_string(rows), "--features", "50",
                              "--nnz-per-row", "5", "--seed", std::to_string(seed_)});
    ASSERT_EQ(status, "exit 0") << out;
  }

  // A valid model file (see apps/linear/model.h): weight 0.5 on feature 0, of 50 features.
  void WriteModel(const std::string& name) {
    std::string bytes = "PSLM";
    auto put = [&](auto v) { bytes.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    put(uint32_t{1});
    put(uint64_t{50});
    put(uint64_t{1});
    put(uint64_t{0});
    put(0.5);
    uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
    put(h);
    WriteText(name, bytes);
  }

  std::vector<std::string> Train(std::vector<std::string> extra) {
    std::vector<std::string> args = {"train", "linear", "--servers", "1", "--max-passes", "2", "--blocks", "2",
                                     "--cache-dir", ""};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  uint64_t seed_ = TestSeed();
  std::filesystem::path dir_;
};

// A run that failed cleanly: it exited (no signal, no hang) with a non-zero status.
#define EXPECT_CLEAN_FAILURE(status, out)                                        \
  do {                                                                           \
    EXPECT_TRUE((status).rfind("exit ", 0) == 0 && (status) != "exit 0")         \
        << "expected a clean non-zero exit, got " << (status) << "\n" << (out); \
  } while (0)

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST_F(Issue11InputTest, PredictWithADirectoryAsModelIsAnErrorNotAnAbort) {
  GenData("data.svm", 50);
  std::filesystem::create_directories(Path("model_dir"));
  auto [status, out] = Run({"predict", "--model", Path("model_dir"), "--data", Path("data.svm")});
  EXPECT_CLEAN_FAILURE(status, out);
  EXPECT_TRUE(Contains(out, Path("model_dir") + ": is a directory")) << out;

  // A device is no model either (reading /dev/zero whole would never end).
  auto [dev_status, dev_out] = Run({"predict", "--model", "/dev/zero", "--data", Path("data.svm")}, 1ull << 31);
  EXPECT_CLEAN_FAILURE(dev_status, dev_out);
  EXPECT_TRUE(Contains(dev_out, "/dev/zero: not a regular file")) << dev_out;
}

TEST_F(Issue11InputTest, DataWithADirectoryIsAnError) {
  WriteModel("model.bin");
  std::filesystem::create_directories(Path("data_dir"));
  auto [status, out] = Run({"predict", "--model", Path("model.bin"), "--data", Path("data_dir")});
  EXPECT_CLEAN_FAILURE(status, out);
  EXPECT_TRUE(Contains(out, Path("data_dir") + ": is a directory")) << out;

  auto [t_status, t_out] = Run(Train({"--workers", "1", "--data", Path("data_dir")}));
  EXPECT_CLEAN_FAILURE(t_status, t_out);
  EXPECT_TRUE(Contains(t_out, Path("data_dir") + ": is a directory")) << t_out;
}

TEST_F(Issue11InputTest, PredictOnDevZeroStopsAtTheLineLimitInBoundedMemory) {
  WriteModel("model.bin");
  auto [status, out] = Run({"predict", "--model", Path("model.bin"), "--data", "/dev/zero"}, 1ull << 31);
  EXPECT_CLEAN_FAILURE(status, out);
  EXPECT_TRUE(Contains(out, "/dev/zero:1: line longer than 67108864 bytes")) << out.substr(0, 2000);
  EXPECT_LT(out.size(), 1000u);
}

TEST_F(Issue11InputTest, TrainOnDevZeroIsRefusedInBoundedMemory) {
  for (const char* workers : {"1", "2"}) {
    auto [status, out] = Run(Train({"--workers", workers, "--data", "/dev/zero"}), 1ull << 31);
    EXPECT_CLEAN_FAILURE(status, out);
    EXPECT_TRUE(Contains(out, "/dev/zero: not a regular file")) << workers << " workers: " << out.substr(0, 2000);
  }
}

TEST_F(Issue11InputTest, TrainOnEmptyDataFailsAndWritesNoModel) {
  WriteText("empty.svm", "");
  WriteText("comments.svm", "# only a comment\n\n");
  for (const std::vector<std::string>& data :
       {std::vector<std::string>{Path("empty.svm")}, std::vector<std::string>{Path("empty.svm"), Path("comments.svm")}}) {
    for (const char* workers : {"1", "2"}) {
      std::vector<std::string> args = Train({"--workers", workers, "--model-out", Path("model.bin"), "--data"});
      args.insert(args.end(), data.begin(), data.end());
      auto [status, out] = Run(args);
      EXPECT_CLEAN_FAILURE(status, out);
      EXPECT_TRUE(Contains(out, "no data rows in")) << out;
      EXPECT_FALSE(std::filesystem::exists(Path("model.bin"))) << out;
    }
  }
}

TEST_F(Issue11InputTest, WorkersOfARunningJobRefuseEmptyData) {
  // As workers of a cluster started by `pserver launch` (the --scheduler path), which skips
  // the check that `train linear` makes before it starts a cluster.
  WriteText("empty.svm", "\n");
  auto [status, out] = Run({"launch", "--servers", "1", "--workers", "2", "--", PserverBinary(), "train", "linear",
                            "--data", Path("empty.svm"), "--cache-dir", "", "--model-out", Path("model.bin")});
  EXPECT_CLEAN_FAILURE(status, out);
  EXPECT_TRUE(Contains(out, "no data rows in --data " + Path("empty.svm"))) << out;
  EXPECT_FALSE(std::filesystem::exists(Path("model.bin"))) << out;
}

TEST_F(Issue11InputTest, WorkerWithAnEmptyPartStillTrains) {
  // Two files for two workers: worker 1's file is empty, the job is not.
  GenData("data.svm", 300);
  WriteText("empty.svm", "");
  auto [status, out] = Run(Train({"--workers", "2", "--model-out", Path("model.bin"), "--data", Path("data.svm"),
                                  Path("empty.svm")}));
  EXPECT_EQ(status, "exit 0") << out;
  EXPECT_TRUE(Contains(out, "model written to")) << out;
}

TEST_F(Issue11InputTest, PredictOnEmptyDataSaysSoAndFails) {
  WriteModel("model.bin");
  WriteText("empty.svm", "# nothing\n");
  auto [status, out] = Run({"predict", "--model", Path("model.bin"), "--data", Path("empty.svm")});
  EXPECT_CLEAN_FAILURE(status, out);
  EXPECT_TRUE(Contains(out, "no rows in " + Path("empty.svm"))) << out;
  EXPECT_FALSE(Contains(out, "AUC")) << out;
}

TEST_F(Issue11InputTest, NonFiniteFloatFlagsAreRefused) {
  GenData("data.svm", 50);
  for (const char* flag : {"--tol", "--l1", "--l2", "--learning-rate"}) {
    for (const char* value : {"nan", "inf", "-nan", "NaN", "infinity"}) {
      auto [status, out] =
          Run(Train({"--workers", "1", "--algo", "sgd", "--data", Path("data.svm"), flag, value}));
      EXPECT_CLEAN_FAILURE(status, out);
      EXPECT_TRUE(Contains(out, flag)) << flag << " " << value << ": " << out;
      EXPECT_TRUE(Contains(out, "finite")) << flag << " " << value << ": " << out;
    }
  }
  for (const char* flag : {"--nnz-per-row", "--zipf", "--weight-density"}) {
    auto [status, out] = Run({"gen-data", "--out", Path("gen.svm"), "--rows", "10", flag, "nan"});
    EXPECT_CLEAN_FAILURE(status, out);
    EXPECT_TRUE(Contains(out, flag)) << flag << ": " << out;
    EXPECT_TRUE(Contains(out, "finite")) << flag << ": " << out;
  }
}

TEST_F(Issue11InputTest, SameDataFileTwiceIsRefused) {
  GenData("data.svm", 50);
  WriteModel("model.bin");
  std::filesystem::create_symlink(Path("data.svm"), Path("link.svm"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Path("data.svm"), Path("data.svm") + " is given twice"},
      {Path("link.svm"), Path("data.svm") + " and " + Path("link.svm") + " are the same file"}};
  for (const auto& [second, message] : cases) {
    auto [status, out] = Run(Train({"--workers", "1", "--data", Path("data.svm"), second}));
    EXPECT_CLEAN_FAILURE(status, out);
    EXPECT_TRUE(Contains(out, message)) << out;

    auto [p_status, p_out] = Run({"predict", "--model", Path("model.bin"), "--data", Path("data.svm"), second});
    EXPECT_CLEAN_FAILURE(p_status, p_out);
    EXPECT_TRUE(Contains(p_out, message)) << p_out;
  }
}

}  // namespace
}  // namespace pserver::testing
