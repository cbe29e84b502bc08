#include "pserver/atomic_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "testing/atomic_file_peer.h"
#include "testing/test_util.h"

namespace pserver {

namespace {

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() / ("pserver_atomic_file_" + std::string(info->name()) + "_" +
                                                     std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
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
  std::vector<std::string> Entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    return names;
  }
  static std::string Join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += x + " ";
    return s;
  }

  std::filesystem::path dir_;
};

TEST_F(AtomicFileTest, WritesAndReplacesAFile) {
  ASSERT_OK(WriteFileAtomically(File("a"), "first"));
  EXPECT_EQ(Slurp(File("a")), "first");
  ASSERT_OK(WriteFileAtomically(File("a"), "second, longer"));
  EXPECT_EQ(Slurp(File("a")), "second, longer");
  ASSERT_OK(WriteFileAtomically(File("empty"), ""));
  EXPECT_TRUE(std::filesystem::exists(File("empty")));
  EXPECT_EQ(std::filesystem::file_size(File("empty")), 0u);
  EXPECT_EQ(Entries().size(), 2u) << Join(Entries());
}

TEST_F(AtomicFileTest, StreamsLargeOutputAndShowsNothingBeforeCommit) {
  auto w = AtomicFileWriter::Open(File("big"));
  ASSERT_OK(w.status());
  std::string want;
  for (int i = 0; i < 3000; ++i) {
    // Chunks of several sizes, some over the 1 MiB buffer.
    const std::string chunk(i % 1000 == 7 ? (size_t{3} << 20) : static_cast<size_t>(i), static_cast<char>('a' + i % 26));
    ASSERT_OK((*w)->Append(chunk));
    want += chunk;
  }
  EXPECT_FALSE(std::filesystem::exists(File("big")));
  EXPECT_TRUE(std::filesystem::exists((*w)->temp_path()));
  EXPECT_EQ((*w)->size(), want.size());
  ASSERT_OK((*w)->Commit());
  EXPECT_EQ(Slurp(File("big")), want);
  EXPECT_EQ(Entries(), std::vector<std::string>{"big"});
}

TEST_F(AtomicFileTest, DestroyingWithoutCommitRemovesTheTemporaryAndKeepsTheOldFile) {
  ASSERT_OK(WriteFileAtomically(File("a"), "old"));
  {
    auto w = AtomicFileWriter::Open(File("a"));
    ASSERT_OK(w.status());
    ASSERT_OK((*w)->Append("new content that is never committed"));
  }
  EXPECT_EQ(Slurp(File("a")), "old");
  EXPECT_EQ(Entries(), std::vector<std::string>{"a"});
}

TEST_F(AtomicFileTest, FullDiskFailsWithTheReasonAndLeavesNothing) {
  ASSERT_OK(WriteFileAtomically(File("a"), "old"));
  auto w = AtomicFileWriter::Open(File("a"));
  ASSERT_OK(w.status());
  AtomicFileWriterTestPeer::RedirectWrites(**w, "/dev/full");
  Status s = (*w)->Append(std::string(size_t{2} << 20, 'x'));  // over the buffer: written now
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s;
  EXPECT_NE(s.message().find(File("a")), std::string::npos) << s;
  // Sticky, and the temporary is already gone.
  EXPECT_EQ((*w)->Append("more"), s);
  EXPECT_EQ((*w)->Commit(), s);
  EXPECT_EQ(Entries(), std::vector<std::string>{"a"}) << Join(Entries());
  EXPECT_EQ(Slurp(File("a")), "old");
}

TEST_F(AtomicFileTest, FullDiskAtCommitFailsAndLeavesNothing) {
  auto w = AtomicFileWriter::Open(File("b"));
  ASSERT_OK(w.status());
  ASSERT_OK((*w)->Append("small, still buffered"));
  AtomicFileWriterTestPeer::RedirectWrites(**w, "/dev/full");
  Status s = (*w)->Commit();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s;
  EXPECT_TRUE(Entries().empty()) << Join(Entries());
}

TEST_F(AtomicFileTest, MissingDirectoryIsNotFoundAndNamesThePath) {
  const std::string path = File("no/such/dir/m");
  Status s = WriteFileAtomically(path, "x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_NE(s.message().find("No such file or directory"), std::string::npos) << s;
  Status c = CheckWritableOutput(path);
  EXPECT_EQ(c.code(), StatusCode::kNotFound) << c;
  EXPECT_NE(c.message().find(path), std::string::npos) << c;
}

TEST_F(AtomicFileTest, ParentThatIsAFileIsRefused) {
  // A regular file in place of the directory (ENOTDIR): this fails for root too.
  ASSERT_OK(WriteFileAtomically(File("plain"), "x"));
  const std::string path = File("plain/m");
  Status s = WriteFileAtomically(path, "x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("Not a directory"), std::string::npos) << s;
  EXPECT_EQ(CheckWritableOutput(path).code(), StatusCode::kNotFound);
  EXPECT_EQ(CheckWritableDirectory(File("plain")).code(), StatusCode::kNotFound);
  EXPECT_EQ(Entries(), std::vector<std::string>{"plain"});
}

TEST_F(AtomicFileTest, ADirectoryOrADeviceIsNeverReplaced) {
  std::filesystem::create_directories(File("d"));
  for (const std::string& path : {File("d"), File("d") + "/", std::string("/dev/full"), std::string("/dev/null")}) {
    Status s = WriteFileAtomically(path, "x");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << path << ": " << s;
    EXPECT_NE(s.message().find(path), std::string::npos) << s;
    EXPECT_EQ(CheckWritableOutput(path).code(), StatusCode::kInvalidArgument) << path;
  }
  struct stat st {};
  ASSERT_EQ(::stat("/dev/full", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_TRUE(std::filesystem::is_directory(File("d")));
  EXPECT_EQ(CheckWritableOutput("").code(), StatusCode::kInvalidArgument);
}

TEST_F(AtomicFileTest, ReadOnlyFileSystemIsRefusedUpFront) {
  // /proc is read-only for root as well.
  Status s = CheckWritableOutput("/proc/pserver-atomic-file-test");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/proc/pserver-atomic-file-test"), std::string::npos) << s;
  EXPECT_FALSE(WriteFileAtomically("/proc/pserver-atomic-file-test", "x").ok());
}

TEST_F(AtomicFileTest, ASymbolicLinkIsFollowedAndKept) {
  ASSERT_OK(WriteFileAtomically(File("real"), "old"));
  std::filesystem::create_symlink(File("real"), File("link"));
  ASSERT_OK(WriteFileAtomically(File("link"), "new"));
  EXPECT_TRUE(std::filesystem::is_symlink(File("link")));
  EXPECT_EQ(Slurp(File("real")), "new");
}

TEST_F(AtomicFileTest, CheckWritableOutputAcceptsAWritablePathAndLeavesNothing) {
  ASSERT_OK(CheckWritableOutput(File("new")));
  ASSERT_OK(WriteFileAtomically(File("existing"), "x"));
  ASSERT_OK(CheckWritableOutput(File("existing")));
  ASSERT_OK(CheckWritableDirectory(dir_.string()));
  EXPECT_EQ(Entries(), std::vector<std::string>{"existing"});
  EXPECT_EQ(Slurp(File("existing")), "x");
}

}  // namespace
}  // namespace pserver
