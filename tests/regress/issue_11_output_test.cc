// Issue 11, items 3-6: the files `pserver train linear` and `pserver predict` write and read.
//   3. The binary data cache was reused when an input changed in place with the same size and
//      modification time: training ran on the old content.
//   5. Output paths were checked only after training (--model-out in a missing directory failed
//      after the last pass); --scores-out on a full disk left a truncated file under its name.
//   6. The cache was mandatory: an unwritable --cache-dir or a full disk failed training.
// (Item 4, a NaN weight, is covered by apps/linear/model_test.cc.)
// Every case runs the real binary, as a user does. A full disk is a file size limit
// (prlimit --fsize, with SIGXFSZ ignored): writes past it fail with EFBIG, for root as well.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "apps/linear/model.h"
#include "testing/test_util.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

// Hang guard only (a run that never ends fails as "hung"); no assertion on speed.
constexpr std::chrono::milliseconds kHangGuard{240000};

class Issue11OutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("pserver_issue11_output_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs the pserver binary to its end; returns (exit description, output). With
  // `file_size_limit` > 0, every file it writes is limited to that many bytes.
  std::pair<std::string, std::string> Run(std::vector<std::string> args, uint64_t file_size_limit = 0) {
    args.insert(args.begin(), PserverBinary());
    if (file_size_limit > 0) {
      args.insert(args.begin(), {"/bin/sh", "-c", "trap '' XFSZ; exec /usr/bin/prlimit --fsize=" +
                                                      std::to_string(file_size_limit) + " -- \"$@\"",
                                 "sh"});
    }
    auto p = Subprocess::Spawn(args);
    EXPECT_OK(p.status());
    if (!p.ok()) return {"spawn failed", ""};
    std::optional<int> status = (*p)->WaitExit(kHangGuard);
    return {status ? DescribeWaitStatus(*status) : "hung", (*p)->output()};
  }

  void GenData(const std::string& name, int rows) {
    auto [status, out] = Run({"gen-data", "--out", Path(name), "--rows", std::to_string(rows), "--features", "200",
                              "--nnz-per-row", "10", "--seed", std::to_string(seed_)});
    ASSERT_EQ(status, "exit 0") << out;
  }

  // A short training run on a one-worker local cluster, with the given extra flags.
  std::pair<std::string, std::string> Train(const std::string& data, std::vector<std::string> extra,
                                            uint64_t file_size_limit = 0) {
    std::vector<std::string> args = {"train", "linear", "--data",    Path(data), "--l1",        "1",
                                     "--servers", "1",  "--workers", "1",        "--max-passes", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Run(args, file_size_limit);
  }

  // The names in the test directory (and below `sub`, when given).
  std::vector<std::string> Entries(const std::string& sub = "") const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(sub.empty() ? dir_ : dir_ / sub)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  static std::string Join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += x + " ";
    return s;
  }

  const uint64_t seed_ = TestSeed();
  std::filesystem::path dir_;
};

// Item 5: an output path that cannot be written fails the job before the first pass, naming
// the flag, the path and the reason -- in the launching process, and in a worker started
// alone with --scheduler (there is no launcher then; the worker checks before joining).
TEST_F(Issue11OutputTest, UnwritableOutputPathsFailBeforeAnyPass) {
  GenData("train.svm", 500);
  {
    const std::string model = Path("missing/dir/model.bin");
    auto [status, out] = Train("train.svm", {"--model-out", model, "--cache-dir", ""});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find("--model-out"), std::string::npos) << out;
    EXPECT_NE(out.find(model), std::string::npos) << out;
    EXPECT_NE(out.find("No such file or directory"), std::string::npos) << out;
    EXPECT_EQ(out.find("pass   1"), std::string::npos) << out;
  }
  {
    // A regular file where the directory should be: ENOTDIR, which stops root too.
    std::ofstream(Path("plain")) << "x";
    const std::string report = Path("plain/report.json");
    auto [status, out] = Train("train.svm", {"--report", report, "--cache-dir", ""});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find("--report"), std::string::npos) << out;
    EXPECT_NE(out.find(report), std::string::npos) << out;
    EXPECT_NE(out.find("Not a directory"), std::string::npos) << out;
    EXPECT_EQ(out.find("pass   1"), std::string::npos) << out;
  }
  {
    // A directory in place of the model file.
    auto [status, out] = Train("train.svm", {"--model-out", dir_.string(), "--cache-dir", ""});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find("is a directory"), std::string::npos) << out;
    EXPECT_EQ(out.find("pass   1"), std::string::npos) << out;
  }
  {
    // A lone worker: nothing listens at this scheduler address; the check comes first.
    const std::string model = Path("missing/dir/model.bin");
    auto [status, out] = Train("train.svm", {"--scheduler", "tcp://127.0.0.1:9", "--model-out", model, "--cache-dir", ""});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find(model), std::string::npos) << out;
    EXPECT_NE(out.find("No such file or directory"), std::string::npos) << out;
  }
  EXPECT_EQ(Entries(), (std::vector<std::string>{"plain", "train.svm"})) << Join(Entries());
}

// Item 5: --scores-out on a full disk leaves no truncated file under its name and no
// temporary; a missing directory or a device is refused before scoring.
TEST_F(Issue11OutputTest, ScoresOutFailuresLeaveNothing) {
  GenData("test.svm", 2000);
  ASSERT_OK(linear::LinearModel(201, {{0, 0.5}, {3, -0.25}, {17, 1.0}}).Save(Path("model.bin")));
  {
    // About 2000 scores of several bytes each: far past a 4 KiB limit.
    auto [status, out] =
        Run({"predict", "--model", Path("model.bin"), "--data", Path("test.svm"), "--scores-out", Path("scores.txt")},
            4096);
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find(Path("scores.txt")), std::string::npos) << out;
    EXPECT_NE(out.find("File too large"), std::string::npos) << out;
    EXPECT_FALSE(std::filesystem::exists(Path("scores.txt")));
    EXPECT_EQ(Entries(), (std::vector<std::string>{"model.bin", "test.svm"})) << Join(Entries());
  }
  {
    const std::string scores = Path("missing/scores.txt");
    auto [status, out] =
        Run({"predict", "--model", Path("model.bin"), "--data", Path("test.svm"), "--scores-out", scores});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find(scores), std::string::npos) << out;
    EXPECT_NE(out.find("No such file or directory"), std::string::npos) << out;
    EXPECT_EQ(out.find("rows 2000"), std::string::npos) << out;
  }
  {
    auto [status, out] =
        Run({"predict", "--model", Path("model.bin"), "--data", Path("test.svm"), "--scores-out", "/dev/full"});
    EXPECT_EQ(status, "exit 1") << out;
    EXPECT_NE(out.find("/dev/full"), std::string::npos) << out;
    struct stat st {};
    ASSERT_EQ(::stat("/dev/full", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/full was replaced";
  }
  {
    // And a run that can write succeeds, one line per row.
    auto [status, out] =
        Run({"predict", "--model", Path("model.bin"), "--data", Path("test.svm"), "--scores-out", Path("scores.txt")});
    ASSERT_EQ(status, "exit 0") << out;
    std::ifstream in(Path("scores.txt"));
    size_t lines = 0;
    for (std::string line; std::getline(in, line);) ++lines;
    EXPECT_EQ(lines, 2000u);
  }
}

// Item 3: an input rewritten in place with the same size and modification time is parsed
// again, not read from the cache of its old content.
TEST_F(Issue11OutputTest, AnInputChangedInPlaceWithTheSameSizeAndTimeIsParsedAgain) {
  GenData("train.svm", 1000);
  auto [first_status, first_out] = Train("train.svm", {"--cache-dir", Path("cache")});
  ASSERT_EQ(first_status, "exit 0") << first_out;
  EXPECT_NE(first_out.find("(parsed)"), std::string::npos) << first_out;
  auto [again_status, again_out] = Train("train.svm", {"--cache-dir", Path("cache")});
  ASSERT_EQ(again_status, "exit 0") << again_out;
  EXPECT_NE(again_out.find("(from the cache)"), std::string::npos) << again_out;

  struct stat before {};
  ASSERT_EQ(::stat(Path("train.svm").c_str(), &before), 0);
  std::string text;
  {
    std::ifstream in(Path("train.svm"), std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Every label flipped: the same bytes count, other data.
  for (size_t i = 0; i < text.size(); ++i) {
    if ((i == 0 || text[i - 1] == '\n') && (text[i] == '+' || text[i] == '-')) text[i] = text[i] == '+' ? '-' : '+';
  }
  std::ofstream(Path("train.svm"), std::ios::binary | std::ios::trunc) << text;
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, Path("train.svm").c_str(), times, 0), 0);
  struct stat after {};
  ASSERT_EQ(::stat(Path("train.svm").c_str(), &after), 0);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);

  auto [changed_status, changed_out] = Train("train.svm", {"--cache-dir", Path("cache")});
  ASSERT_EQ(changed_status, "exit 0") << changed_out;
  EXPECT_NE(changed_out.find("(parsed)"), std::string::npos) << changed_out;
  EXPECT_EQ(changed_out.find("(from the cache)"), std::string::npos) << changed_out;
}

// Item 6: a cache directory that cannot be created, or a cache file that cannot be written
// (a full disk), is a warning: training goes on without the cache and writes its model.
TEST_F(Issue11OutputTest, AnUnwritableCacheIsAWarningNotAFailure) {
  GenData("train.svm", 1000);
  std::ofstream(Path("plain")) << "x";
  {
    auto [status, out] =
        Train("train.svm", {"--cache-dir", Path("plain/cache"), "--model-out", Path("model.bin")});
    ASSERT_EQ(status, "exit 0") << out;
    EXPECT_NE(out.find("warning"), std::string::npos) << out;
    EXPECT_NE(out.find(Path("plain/cache")), std::string::npos) << out;
    EXPECT_NE(out.find("model written to"), std::string::npos) << out;
    ASSERT_OK(linear::LinearModel::Load(Path("model.bin")));
  }
  std::filesystem::remove(Path("model.bin"));
  {
    // The data cache of 1000 rows is some 150 KB; the model at most 3.2 KB. A 16 KiB limit
    // fails the first and not the second.
    auto [status, out] =
        Train("train.svm", {"--cache-dir", Path("cache"), "--model-out", Path("model.bin")}, 16384);
    ASSERT_EQ(status, "exit 0") << out;
    EXPECT_NE(out.find("warning"), std::string::npos) << out;
    EXPECT_NE(out.find("File too large"), std::string::npos) << out;
    EXPECT_NE(out.find("model written to"), std::string::npos) << out;
    ASSERT_OK(linear::LinearModel::Load(Path("model.bin")));
    // No truncated cache file and no temporary.
    EXPECT_TRUE(Entries("cache").empty()) << Join(Entries("cache"));
  }
}

}  // namespace
}  // namespace pserver::testing
