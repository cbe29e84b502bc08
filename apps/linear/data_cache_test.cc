#include "apps/linear/data_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "apps/linear/synthetic.h"

namespace pserver::linear {
namespace {

class DataCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("pserver_linear_cache_{}_{}", info->name(), ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto gen = SyntheticData::Create({.num_rows = 777,
                                      .num_features = 3000,
                                      .nnz_per_row = 9,
                                      .binary_values = false,
                                      .seed = 3});
    ASSERT_TRUE(gen.ok());
    data_ = gen->Generate();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string File(const std::string& name) const { return (dir_ / name).string(); }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void Spit(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::filesystem::path dir_;
  Dataset data_;
};

TEST_F(DataCacheTest, RoundTripIsExact) {
  const std::string path = File("a.psdata");
  ASSERT_TRUE(WriteDataCache(data_, path).ok());
  auto back = ReadDataCache(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data_);
  EXPECT_EQ(back->num_features(), data_.num_features());
  // Empty data sets too.
  ASSERT_TRUE(WriteDataCache(Dataset(), File("empty.psdata")).ok());
  auto empty = ReadDataCache(File("empty.psdata"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(*empty == Dataset());
  // No temporary files left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 2);
}

TEST_F(DataCacheTest, TruncatedFileIsCorruption) {
  const std::string path = File("t.psdata");
  ASSERT_TRUE(WriteDataCache(data_, path).ok());
  const std::string bytes = Slurp(path);
  for (size_t keep :
       {size_t{0}, size_t{10}, size_t{63}, size_t{64}, size_t{1000}, bytes.size() - 1}) {
    Spit(path, bytes.substr(0, keep));
    const Status s = ReadDataCache(path).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << keep;
    EXPECT_NE(s.message().find(path), std::string::npos) << s;
    EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  }
  Spit(path, bytes + "x");
  EXPECT_NE(ReadDataCache(path).status().message().find("trailing"), std::string::npos);
}

TEST_F(DataCacheTest, CorruptedByteIsCorruption) {
  const std::string path = File("c.psdata");
  ASSERT_TRUE(WriteDataCache(data_, path).ok());
  const std::string bytes = Slurp(path);
  // Flip one bit in the header fields, the checksum and at several places in the payload.
  for (size_t pos : {size_t{20}, size_t{33}, size_t{50}, size_t{57}, size_t{64}, size_t{5000},
                     bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    Spit(path, bad);
    const Status s = ReadDataCache(path).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << "byte " << pos;
    EXPECT_NE(s.message().find(path), std::string::npos) << s;
  }
  std::string bad = bytes;
  bad[0] = 'X';
  Spit(path, bad);
  EXPECT_NE(ReadDataCache(path).status().message().find("bad magic"), std::string::npos);
}

TEST_F(DataCacheTest, WrongVersionIsCorruption) {
  const std::string path = File("v.psdata");
  ASSERT_TRUE(WriteDataCache(data_, path).ok());
  std::string bytes = Slurp(path);
  const uint32_t version = 2;
  std::memcpy(&bytes[8], &version, 4);
  Spit(path, bytes);
  const Status s = ReadDataCache(path).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_EQ(s.message(),
            path + ": data cache has unsupported version 2 (this build reads version 1)");
}

TEST_F(DataCacheTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadDataCache(File("none")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(WriteDataCache(data_, File("no/such/dir/x")).code(), StatusCode::kNotFound);
}

TEST_F(DataCacheTest, LoadOrParseUsesTheCacheOnTheSecondRun) {
  const std::string text = File("in.svm");
  ASSERT_TRUE(WriteLibsvm(data_, text).ok());
  const std::string cache = File("cache");
  for (int parts : {1, 3}) {
    Dataset first_all, second_all;
    for (int p = 0; p < parts; ++p) {
      auto first = LoadOrParse({text}, p, parts, cache);
      ASSERT_TRUE(first.ok()) << first.status();
      EXPECT_FALSE(first->from_cache);
      auto second = LoadOrParse({text}, p, parts, cache);
      ASSERT_TRUE(second.ok()) << second.status();
      EXPECT_TRUE(second->from_cache);
      EXPECT_EQ(second->cache_path, first->cache_path);
      EXPECT_TRUE(second->data == first->data);
      auto direct = ReadPart({text}, p, parts);
      ASSERT_TRUE(direct.ok());
      EXPECT_TRUE(second->data == *direct);
      first_all.Append(first->data);
    }
    EXPECT_TRUE(first_all == data_);
  }
  // A changed input is parsed again (a different size and modification time).
  Dataset more = data_;
  ASSERT_TRUE(more.AppendRow(1, std::vector<uint64_t>{1}, std::vector<float>{1}).ok());
  ASSERT_TRUE(WriteLibsvm(more, text).ok());
  auto changed = LoadOrParse({text}, 0, 1, cache);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(changed->from_cache);
  EXPECT_TRUE(changed->data == more);
  // A corrupt cache file is replaced, and says why.
  Spit(changed->cache_path, "garbage");
  auto again = LoadOrParse({text}, 0, 1, cache);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->from_cache);
  EXPECT_NE(again->note.find("truncated"), std::string::npos) << again->note;
  auto fixed = LoadOrParse({text}, 0, 1, cache);
  ASSERT_TRUE(fixed.ok());
  EXPECT_TRUE(fixed->from_cache);
  EXPECT_TRUE(fixed->data == more);
  // Without a cache directory it just parses.
  auto plain = LoadOrParse({text}, 0, 1, "");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->from_cache);
  EXPECT_TRUE(plain->cache_path.empty());
}

// Issue 11: an input rewritten in place with the same size and modification time (a copy
// tool that keeps times, a clock step, a coarse file-system clock) was read from the stale
// cache. The cache is keyed on the content now.
TEST_F(DataCacheTest, LoadOrParseNoticesAnInputChangedInPlaceWithTheSameSizeAndTime) {
  const std::string text = File("in.svm");
  ASSERT_TRUE(WriteLibsvm(data_, text).ok());
  const std::string cache = File("cache");
  auto first = LoadOrParse({text}, 0, 1, cache);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat before {};
  ASSERT_EQ(::stat(text.c_str(), &before), 0);

  // Flip the first label: same length, other content.
  std::string bytes = Slurp(text);
  ASSERT_TRUE(bytes.starts_with("+1") || bytes.starts_with("-1"));
  bytes[0] = bytes[0] == '+' ? '-' : '+';
  Spit(text, bytes);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, text.c_str(), times, 0), 0);
  struct stat after {};
  ASSERT_EQ(::stat(text.c_str(), &after), 0);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);

  auto second = LoadOrParse({text}, 0, 1, cache);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->from_cache);
  auto direct = ReadPart({text}, 0, 1);
  ASSERT_TRUE(direct.ok());
  EXPECT_TRUE(second->data == *direct);
  EXPECT_NE(second->data.labels()[0], first->data.labels()[0]);
}

// Split by byte range, each worker's cache is keyed on its own share: a change in the other
// half keeps it, a change in the line that straddles its end (which it reads) does not.
TEST_F(DataCacheTest, ByteRangePartsAreKeyedOnTheBytesTheyRead) {
  const std::string text = File("in.svm");
  ASSERT_TRUE(WriteLibsvm(data_, text).ok());
  const std::string cache = File("cache");
  for (int p : {0, 1}) ASSERT_TRUE(LoadOrParse({text}, p, 2, cache).ok());
  std::string bytes = Slurp(text);
  const size_t cut = bytes.size() / 2;  // CutPoint(size, 1, 2)
  // Flip a label of a line starting well inside part 1: part 0 keeps its cache.
  const size_t late = bytes.find('\n', cut + (bytes.size() - cut) / 2) + 1;
  ASSERT_TRUE(bytes[late] == '+' || bytes[late] == '-');
  bytes[late] = bytes[late] == '+' ? '-' : '+';
  Spit(text, bytes);
  auto p0 = LoadOrParse({text}, 0, 2, cache);
  auto p1 = LoadOrParse({text}, 1, 2, cache);
  ASSERT_TRUE(p0.ok() && p1.ok());
  EXPECT_TRUE(p0->from_cache);
  EXPECT_FALSE(p1->from_cache);
  // Change the last digit of the line that straddles the cut: it is part 0's last row.
  const size_t line_end = bytes.find('\n', cut);
  ASSERT_NE(line_end, std::string::npos);
  ASSERT_GT(line_end, cut) << "the cut falls on a line end; pick other data";
  char& digit = bytes[line_end - 1];
  ASSERT_TRUE(digit >= '0' && digit <= '9') << bytes.substr(line_end - 20, 21);
  digit = digit == '9' ? '8' : static_cast<char>(digit + 1);
  Spit(text, bytes);
  p0 = LoadOrParse({text}, 0, 2, cache);
  ASSERT_TRUE(p0.ok());
  EXPECT_FALSE(p0->from_cache);
  auto direct = ReadPart({text}, 0, 2);
  ASSERT_TRUE(direct.ok());
  EXPECT_TRUE(p0->data == *direct);
}

// Issue 11: a cache that cannot be written (a directory that cannot exist, a full disk) is no
// reason to fail: the data is parsed, and the reason comes back as a warning.
TEST_F(DataCacheTest, LoadOrParseWarnsAndGoesOnWhenTheCacheDirectoryCannotBeCreated) {
  const std::string text = File("in.svm");
  ASSERT_TRUE(WriteLibsvm(data_, text).ok());
  // A regular file where the directory should be: ENOTDIR, for root as well.
  Spit(File("blocker"), "x");
  auto loaded = LoadOrParse({text}, 0, 1, File("blocker/cache"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->from_cache);
  EXPECT_TRUE(loaded->data == data_);
  EXPECT_NE(loaded->warning.find(File("blocker/cache")), std::string::npos) << loaded->warning;
  EXPECT_NE(loaded->warning.find("Not a directory"), std::string::npos) << loaded->warning;
}

TEST_F(DataCacheTest, LoadOrParseWarnsAndGoesOnWhenTheCacheFileCannotBeWritten) {
  const std::string text = File("in.svm");
  ASSERT_TRUE(WriteLibsvm(data_, text).ok());
  const std::string cache = File("cache");
  // A file size limit makes every write past 4 KiB fail with EFBIG, as a full disk would.
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto loaded = LoadOrParse({text}, 0, 1, cache);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->from_cache);
  EXPECT_TRUE(loaded->data == data_);
  EXPECT_NE(loaded->warning.find("File too large"), std::string::npos) << loaded->warning;
  // Nothing is left in the cache directory: no truncated cache file, no temporary.
  EXPECT_TRUE(!std::filesystem::exists(cache) || std::filesystem::is_empty(cache));
}

}  // namespace
}  // namespace pserver::linear
