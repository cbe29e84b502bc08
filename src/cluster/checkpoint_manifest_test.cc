#include "cluster/checkpoint_manifest.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "pserver/checksum.h"
#include "testing/test_util.h"

namespace pserver::cluster {
namespace {

CheckpointManifest Some() {
  CheckpointManifest m;
  m.epoch = 12;
  m.files = {{"server-0.psckpt", 1234, 56, 0x0123456789abcdefULL}, {"server-1.psckpt", 99, 0, 7}};
  return m;
}

// `body` closed with the end line a writer would add.
std::string Closed(const std::string& body) {
  return body + fmt::format("end {:016x}\n", Checksum64(body.data(), body.size()));
}

TEST(CheckpointManifestTest, RoundTrips) {
  const std::string text = EncodeManifest(Some());
  Result<CheckpointManifest> m = ParseManifest(text, "M");
  ASSERT_OK(m);
  EXPECT_EQ(*m, Some());
  Result<CheckpointManifest> empty = ParseManifest(EncodeManifest(CheckpointManifest{}), "M");
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->files.empty());
}

TEST(CheckpointManifestTest, AnyDamageIsRefusedNamingTheManifest) {
  const std::string text = EncodeManifest(Some());
  for (size_t i = 0; i < text.size(); ++i) {
    std::string bad = text;
    bad[i] ^= 0x01;
    Result<CheckpointManifest> m = ParseManifest(bad, "DIR/MANIFEST");
    ASSERT_FALSE(m.ok()) << "byte " << i;
    EXPECT_EQ(m.status().code(), StatusCode::kCorruption);
    EXPECT_NE(m.status().message().find("DIR/MANIFEST"), std::string::npos) << m.status().ToString();
  }
  for (size_t n = 0; n + 1 < text.size(); ++n) {
    EXPECT_FALSE(ParseManifest(text.substr(0, n), "M").ok()) << "cut at " << n;
  }
}

TEST(CheckpointManifestTest, WellSealedNonsenseIsRefusedByLine) {
  auto why = [](const std::string& body) {
    Result<CheckpointManifest> m = ParseManifest(Closed(body), "M");
    return m.ok() ? std::string("accepted") : std::string(m.status().message());
  };
  EXPECT_NE(why("pserver checkpoint 2\nepoch 1\n").find("line 1"), std::string::npos);
  EXPECT_NE(why("pserver checkpoint 1\n").find("no epoch line"), std::string::npos);
  EXPECT_NE(why("pserver checkpoint 1\nepoch x\n").find("line 2: a malformed epoch"), std::string::npos);
  EXPECT_NE(why("pserver checkpoint 1\nepoch 1\nfile ../etc/passwd bytes 1 rows 1 checksum 1\n").find("line 3"),
            std::string::npos);
  EXPECT_NE(why("pserver checkpoint 1\nepoch 1\nfile a bytes 1 rows 1 checksum 1\nfile a bytes 1 rows 1 checksum 1\n")
                .find("listed twice"),
            std::string::npos);
  EXPECT_NE(why("pserver checkpoint 1\nepoch 1\nfile a bytes 1 rows 1\n").find("malformed file line"),
            std::string::npos);
}

class CheckpointDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (std::filesystem::temp_directory_path() /
            ("pserver_manifest_" + std::string(info->name()) + "_" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Make(uint64_t n, const std::string* manifest) {
    const std::string d = CheckpointDirectory(dir_, n);
    std::filesystem::create_directories(d);
    if (manifest != nullptr) std::ofstream(d + "/" + kManifestName) << *manifest;
  }
  std::string dir_;
};

TEST_F(CheckpointDirectoryTest, TheLatestCompleteOneIsFound) {
  EXPECT_EQ(LatestCheckpoint(dir_).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(LatestCheckpoint(dir_ + "/absent").status().code(), StatusCode::kNotFound);
  const std::string good = EncodeManifest(Some());
  Make(1, &good);
  Make(2, &good);
  Make(10, nullptr);  // not completed: passed over
  std::filesystem::create_directories(dir_ + "/ckpt-x");  // not a checkpoint's name
  Result<std::vector<uint64_t>> all = ListCheckpoints(dir_);
  ASSERT_OK(all);
  EXPECT_EQ(*all, (std::vector<uint64_t>{1, 2, 10}));
  Result<FoundCheckpoint> found = LatestCheckpoint(dir_);
  ASSERT_OK(found);
  EXPECT_EQ(found->directory, CheckpointDirectory(dir_, 2));
  EXPECT_EQ(found->manifest, Some());
  EXPECT_EQ(CheckpointDirectory(dir_, 2), dir_ + "/ckpt-000002");
}

TEST_F(CheckpointDirectoryTest, ACorruptManifestIsAnErrorNotSkipped) {
  const std::string good = EncodeManifest(Some());
  const std::string bad = good.substr(0, good.size() / 2);
  Make(1, &good);
  Make(2, &bad);
  Result<FoundCheckpoint> found = LatestCheckpoint(dir_);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), StatusCode::kCorruption);
  EXPECT_NE(found.status().message().find("ckpt-000002/MANIFEST"), std::string::npos) << found.status().ToString();
}

}  // namespace
}  // namespace pserver::cluster
