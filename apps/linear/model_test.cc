#include "apps/linear/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "testing/test_util.h"

namespace pserver::linear {
namespace {

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("pserver_model_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void WriteAll(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }

  std::filesystem::path dir_;
};

// A version-1 model file (FNV-1a 64 checksum), built by hand so that a file holding any
// weight, also one that Save refuses, can be written well-formed.
std::string ModelFileV1(uint64_t num_features, const std::vector<std::pair<uint64_t, double>>& weights) {
  std::string b = "PSLM";
  auto put = [&](auto v) {
    char raw[sizeof(v)];
    std::memcpy(raw, &v, sizeof(v));
    b.append(raw, sizeof(v));
  };
  put(uint32_t{1});
  put(num_features);
  put(uint64_t{weights.size()});
  for (const auto& [f, w] : weights) {
    put(f);
    put(w);
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : b) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  put(h);
  return b;
}

TEST_F(ModelTest, SaveAndLoadRoundTripExactly) {
  LinearModel m(100, {{3, 0.5}, {17, -1.25}, {99, 1e-300}});
  ASSERT_OK(m.Save(Path("m")));
  Result<LinearModel> back = LinearModel::Load(Path("m"));
  ASSERT_OK(back);
  EXPECT_EQ(back->num_features(), 100u);
  EXPECT_EQ(back->weights(), m.weights());
  EXPECT_EQ(back->Weight(17), -1.25);
  EXPECT_EQ(back->Weight(18), 0.0);
  EXPECT_FALSE(std::filesystem::exists(Path("m.tmp")));
}

TEST_F(ModelTest, RefusesCorruptTruncatedAndForeignFiles) {
  LinearModel m(10, {{1, 2.0}, {4, -3.0}});
  ASSERT_OK(m.Save(Path("m")));
  const std::string good = ReadAll(Path("m"));
  auto expect_refused = [&](const std::string& bytes, const std::string& text) {
    WriteAll(Path("bad"), bytes);
    Status s = LinearModel::Load(Path("bad")).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
    EXPECT_NE(s.message().find(text), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find(Path("bad")), std::string::npos) << s.ToString();
  };
  for (size_t cut : {size_t{0}, size_t{5}, size_t{30}, good.size() - 1}) {
    expect_refused(good.substr(0, cut), cut < 32 ? "truncated" : "do not hold");
  }
  std::string flipped = good;
  flipped[30] ^= 0x10;  // inside the first weight
  expect_refused(flipped, "checksum");
  std::string magic = good;
  magic[0] = 'X';
  expect_refused(magic, "magic");
  std::string version = good;
  version[4] = 9;
  expect_refused(version, "version 9");
  expect_refused(good + "x", "do not hold");
  EXPECT_EQ(LinearModel::Load(Path("missing")).status().code(), StatusCode::kNotFound);
}

// A file whose size is not what its header announces is refused before it is read whole: a
// sparse terabyte is not allocated (issue 11).
TEST_F(ModelTest, RefusesAHugeFileByItsHeaderWithoutReadingIt) {
  LinearModel m(10, {{1, 2.0}, {4, -3.0}});
  ASSERT_OK(m.Save(Path("m")));
  ASSERT_EQ(::truncate(Path("m").c_str(), off_t{1} << 40), 0);
  Status s = LinearModel::Load(Path("m")).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("1099511627776 bytes do not hold the 2 weights"), std::string::npos) << s.ToString();
}

// Issue 11: a well-formed model holding a NaN or infinite weight is refused when loaded, with
// the file and the feature named (predict used to spin forever on it).
TEST_F(ModelTest, LoadRefusesANonFiniteWeight) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    WriteAll(Path("nan"), ModelFileV1(10, {{1, 2.0}, {7, bad}}));
    Status s = LinearModel::Load(Path("nan")).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
    EXPECT_NE(s.message().find(Path("nan")), std::string::npos) << s;
    EXPECT_NE(s.message().find("feature 7"), std::string::npos) << s;
  }
}

// Issue 11: training never writes a non-finite weight: Save refuses one and writes nothing.
TEST_F(ModelTest, SaveRefusesANonFiniteWeightAndWritesNothing) {
  LinearModel m(10, {{1, 2.0}, {4, std::numeric_limits<double>::quiet_NaN()}});
  Status s = m.Save(Path("m"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("feature 4"), std::string::npos) << s;
  EXPECT_NE(s.message().find(Path("m")), std::string::npos) << s;
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

// The version-1 files written before the checksum became XXH64 still load.
TEST_F(ModelTest, LoadsVersionOneFiles) {
  WriteAll(Path("v1"), ModelFileV1(100, {{3, 0.5}, {17, -1.25}}));
  Result<LinearModel> m = LinearModel::Load(Path("v1"));
  ASSERT_OK(m);
  EXPECT_EQ(m->Weight(17), -1.25);
  EXPECT_EQ(m->num_features(), 100u);
}

TEST_F(ModelTest, SaveFailsWithTheReasonForAMissingDirectory) {
  Status s = LinearModel(10, {{1, 2.0}}).Save(Path("no/such/dir/m"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("No such file or directory"), std::string::npos) << s;
}

// Issue 11: Evaluate ends on scores that are NaN (the rank loop made no progress on a NaN,
// and the sort's comparator was no strict weak ordering), and the rest of the metrics stay
// meaningful for the finite scores.
TEST(EvaluateTest, EndsOnNonFiniteScores) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> scores;
  std::vector<float> labels;
  for (int i = 0; i < 1000; ++i) {
    scores.push_back(i % 3 == 0 ? nan : (i % 7 == 0 ? inf : i % 11 - 5.0));
    labels.push_back(i % 2 == 0 ? 1.0f : -1.0f);
  }
  Metrics m = Evaluate(scores, labels);
  EXPECT_EQ(m.rows, 1000u);
  EXPECT_GE(m.auc, 0.0);
  EXPECT_LE(m.auc, 1.0);
  // Every score NaN: all tied, AUC 0.5.
  EXPECT_DOUBLE_EQ(Evaluate({nan, nan, nan, nan}, {1, -1, 1, -1}).auc, 0.5);
}

TEST(EvaluateTest, MetricsMatchClosedForm) {
  // Scores ordered so that positives rank above negatives except one swapped pair.
  std::vector<double> scores{-2, -1, 0.5, 1, 3};
  std::vector<float> labels{-1, 1, -1, 1, 1};
  Metrics m = Evaluate(scores, labels);
  // Pairs (pos, neg): 3 positives x 2 negatives = 6; misordered: (score -1 pos) < (0.5 neg) -> 1.
  EXPECT_DOUBLE_EQ(m.auc, 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.accuracy, 3.0 / 5.0);  // -2:-1 ok, -1:+1 wrong, 0.5:-1 wrong, 1 ok, 3 ok
  double loss = 0;
  for (size_t i = 0; i < scores.size(); ++i) loss += std::log1p(std::exp(-labels[i] * scores[i]));
  EXPECT_NEAR(m.log_loss, loss / 5, 1e-12);
  // Ties share their rank: all scores equal gives AUC 0.5.
  EXPECT_DOUBLE_EQ(Evaluate({1, 1, 1, 1}, {1, -1, 1, -1}).auc, 0.5);
}

}  // namespace
}  // namespace pserver::linear
