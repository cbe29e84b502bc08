#include "apps/linear/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <string>

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
