// The libsvm reader against hostile input: files without newlines (/dev/zero, binary files),
// NUL bytes, huge tokens, directories, devices split by byte range, and the same file named
// twice. Each is a clear error in bounded memory, never a crash, a hang or a silent change of
// the data. (issue 11, items 7-9)
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/linear/libsvm_reader.h"
#include "testing/test_util.h"

namespace pserver::linear {
namespace {

using TempDir = pserver::testing::TestDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(LibsvmReaderLimitsTest, HugeBadValueIsCutInTheMessage) {
  const std::string token(5'000'000, '9');
  const Status s = ParseLibsvm("+1 1:0.5\n-1 2:" + token + "x\n", "big.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.message().substr(0, 300);
  EXPECT_LT(s.message().size(), 300u) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), "big.svm:2: bad value '99999")) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), "... (5000001 bytes)")) << s.message().substr(0, 300);
}

TEST(LibsvmReaderLimitsTest, HugeBadLabelAndIndexAreCutInTheMessage) {
  const std::string token(5'000'000, 'a');
  Status s = ParseLibsvm(token + " 1:1\n", "big.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_LT(s.message().size(), 300u) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), "big.svm:1: bad label 'aaaa")) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), "... (5000000 bytes)")) << s.message().substr(0, 300);

  s = ParseLibsvm("+1 " + token + "\n", "big.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_LT(s.message().size(), 300u) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), "missing ':'")) << s.message().substr(0, 300);

  s = ParseLibsvm("+1 " + token + ":1\n", "big.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_LT(s.message().size(), 400u) << s.message().substr(0, 400);
  EXPECT_TRUE(Contains(s.message(), "bad feature index")) << s.message().substr(0, 400);
}

TEST(LibsvmReaderLimitsTest, NonPrintableBytesAreEscapedInTheMessage) {
  const Status s = ParseLibsvm(std::string("+1 1:0.5\x01\xff\n"), "x.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s.message(), "'0.5\\x01\\xff'")) << s.message();
}

TEST(LibsvmReaderLimitsTest, NulByteInALineIsACorruptionNamingItsColumn) {
  const std::string text = "+1 1:1\n-1 1:0.5" + std::string(2, '\0') + " 2:1\n";
  const Status s = ParseLibsvm(text, "x.svm").status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.message();
  EXPECT_TRUE(Contains(s.message(), "x.svm:2: NUL byte at column 9")) << s.message();
  EXPECT_FALSE(Contains(s.message(), std::string(1, '\0'))) << s.message();
}

TEST(LibsvmReaderLimitsTest, NulBytesInAFileAreACorruption) {
  TempDir dir;
  WriteText(dir.File("nul.svm"), std::string("+1 1:1\n") + std::string(1000, '\0') + "\n");
  const Status s = ReadLibsvm(dir.File("nul.svm")).status();
  ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.message().substr(0, 300);
  EXPECT_TRUE(Contains(s.message(), dir.File("nul.svm") + ":2: NUL byte at column 1"))
      << s.message().substr(0, 300);
  EXPECT_LT(s.message().size(), 400u);
}

TEST(LibsvmReaderLimitsTest, DirectoryIsRefusedAsADirectory) {
  TempDir dir;
  const Status s = ReadLibsvm(dir.path()).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(Contains(s.message(), dir.path() + ": is a directory")) << s;
  for (int parts : {1, 2, 3}) {
    const Status p = ReadPart({dir.path()}, 0, parts).status();
    EXPECT_EQ(p.code(), StatusCode::kInvalidArgument) << p;
    EXPECT_TRUE(Contains(p.message(), "is a directory")) << p;
  }
}

TEST(LibsvmReaderLimitsTest, SameFileTwiceIsRefusedNotDoubled) {
  TempDir dir;
  const std::string a = dir.File("a.svm");
  WriteText(a, "+1 1:1\n-1 2:1\n");
  std::filesystem::create_hard_link(a, dir.File("hard.svm"));
  std::filesystem::create_symlink(a, dir.File("soft.svm"));
  WriteText(dir.File("b.svm"), "+1 3:1\n");
  for (int parts : {1, 2, 3}) {
    Status s = ReadPart({a, dir.File("b.svm"), a}, 0, parts).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << parts << ": " << s;
    EXPECT_TRUE(Contains(s.message(), a + " is given twice")) << s;
    for (const char* other : {"hard.svm", "soft.svm"}) {
      s = ReadPart({a, dir.File(other)}, 0, parts).status();
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << other << " " << parts << ": " << s;
      EXPECT_TRUE(Contains(s.message(), a + " and " + dir.File(other) + " are the same file")) << s;
    }
  }
  // Distinct files are fine.
  Result<Dataset> d = ReadPart({a, dir.File("b.svm")}, 0, 1);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_rows(), 3u);
}

TEST(LibsvmReaderLimitsTest, DeviceSplitByByteRangeIsRefusedNotEmpty) {
  // /dev/zero has size 0 in stat: a byte-range split would silently give every part nothing.
  for (int part : {0, 1}) {
    const Status s = ReadPart({"/dev/zero"}, part, 2).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(Contains(s.message(), "/dev/zero: not a regular file")) << s;
  }
}

TEST(LibsvmReaderLimitsTest, LineAtTheLimitIsReadOneByteLongerIsRefused) {
  TempDir dir;
  // "+1 1:0.5" is 8 bytes. Small chunks make lines straddle chunk ends and grow the buffer.
  for (size_t chunk : {size_t{1}, size_t{5}, size_t{64}, size_t{1} << 20}) {
    LibsvmReadOptions o;
    o.chunk_bytes = chunk;
    o.max_line_bytes = 8;
    WriteText(dir.File("ok.svm"), "+1 1:0.5\n-1 2:1\n+1 1:0.5");  // last line without '\n'
    Result<Dataset> d = ReadLibsvm(dir.File("ok.svm"), o);
    ASSERT_TRUE(d.ok()) << chunk << ": " << d.status();
    EXPECT_EQ(d->num_rows(), 3u);

    WriteText(dir.File("long.svm"), "+1 1:0.5\n-1 2:1\n+1 1:0.25\n");
    Status s = ReadLibsvm(dir.File("long.svm"), o).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << chunk << ": " << s;
    EXPECT_EQ(s.message(), dir.File("long.svm") + ":3: line longer than 8 bytes") << chunk;

    WriteText(dir.File("last.svm"), "+1 1:0.5\n-1 2:1\n+1 1:0.25");  // the same, without '\n'
    s = ReadLibsvm(dir.File("last.svm"), o).status();
    EXPECT_EQ(s.message(), dir.File("last.svm") + ":3: line longer than 8 bytes") << chunk;
  }
}

TEST(LibsvmReaderLimitsTest, FileOfNulBytesWithoutNewlineIsRefusedAtTheLimit) {
  TempDir dir;
  WriteText(dir.File("zeros.bin"), std::string(1 << 20, '\0'));
  LibsvmReadOptions o;
  o.chunk_bytes = 4096;
  o.max_line_bytes = 10000;
  for (int parts : {1, 2, 3}) {  // every part that owns a line start sees the same error
    const Status s = ReadPart({dir.File("zeros.bin")}, 0, parts, o).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
    EXPECT_EQ(s.message(), dir.File("zeros.bin") +
                               ":1: line longer than 10000 bytes (it holds NUL bytes: binary data?)");
    // The other parts start inside that one line: they own no line, and stop at their end.
    for (int part = 1; part < parts; ++part) {
      Result<Dataset> d = ReadPart({dir.File("zeros.bin")}, part, parts, o);
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->num_rows(), 0u);
    }
  }
}

TEST(LibsvmReaderLimitsTest, LongLineInALaterPartNamesItsLine) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 100; ++i) text += "+1 1:1 2:1\n";
  text += "-1 " + std::string(500, '7') + "\n";  // line 101
  for (int i = 0; i < 100; ++i) text += "-1 3:1\n";
  WriteText(dir.File("x.svm"), text);
  LibsvmReadOptions o;
  o.chunk_bytes = 64;
  o.max_line_bytes = 100;
  bool seen = false;
  for (int part = 0; part < 4; ++part) {
    const Status s = ReadPart({dir.File("x.svm")}, part, 4, o).status();
    if (s.ok()) continue;
    EXPECT_FALSE(seen) << "two parts own line 101";
    seen = true;
    EXPECT_EQ(s.message(), dir.File("x.svm") + ":101: line longer than 100 bytes");
  }
  EXPECT_TRUE(seen);
}

TEST(LibsvmReaderLimitsTest, HasDataRowsSeesRowsNotBlankOrCommentLines) {
  TempDir dir;
  WriteText(dir.File("empty.svm"), "");
  WriteText(dir.File("comments.svm"), "# a header\n\n   \t\r\n  # more\n");
  WriteText(dir.File("data.svm"), "# a header\n+1 1:1\n");
  WriteText(dir.File("bad.svm"), "\n\nthis is not libsvm\n");
  auto has = [&](std::vector<std::string> names) {
    for (std::string& n : names) n = dir.File(n);
    Result<bool> r = HasDataRows(names);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && *r;
  };
  EXPECT_FALSE(has({"empty.svm"}));
  EXPECT_FALSE(has({"empty.svm", "comments.svm"}));
  EXPECT_TRUE(has({"empty.svm", "comments.svm", "data.svm"}));
  EXPECT_TRUE(has({"bad.svm"}));  // a line that is not blank is a row, parsed or not
  EXPECT_FALSE(*HasDataRows({"/dev/null"}));

  LibsvmReadOptions o;
  o.max_line_bytes = 1000;
  const Status s = HasDataRows({"/dev/zero"}, o).status();
  EXPECT_EQ(s.message(), "/dev/zero:1: line longer than 1000 bytes (it holds NUL bytes: binary data?)");
  EXPECT_EQ(HasDataRows({dir.File("missing.svm")}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(HasDataRows({dir.path()}).status().code(), StatusCode::kInvalidArgument);
}

TEST(LibsvmReaderLimitsTest, CheckInputFilesNamesWhatIsWrong) {
  TempDir dir;
  WriteText(dir.File("a.svm"), "+1 1:1\n");
  WriteText(dir.File("b.svm"), "+1 1:1\n");
  EXPECT_TRUE(CheckInputFiles({dir.File("a.svm"), dir.File("b.svm")}).ok());
  Status s = CheckInputFiles({dir.File("a.svm"), dir.File("missing.svm")});
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_TRUE(Contains(s.message(), dir.File("missing.svm"))) << s;
  s = CheckInputFiles({dir.File("a.svm"), dir.path()});
  EXPECT_EQ(s.message(), dir.path() + ": is a directory");
  const std::string again = dir.path() + "/./a.svm";
  s = CheckInputFiles({dir.File("a.svm"), dir.File("b.svm"), again});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(Contains(s.message(), dir.File("a.svm") + " and " + again + " are the same file")) << s;
}

// Reads /dev/zero with the default options under a 1 GiB address-space limit, and exits 0
// when the reader stopped at its line-length limit with a clear error (1 otherwise). A reader
// that grows its buffer until memory runs out dies of std::bad_alloc instead.
[[noreturn]] void ReadDevZeroInBoundedMemoryAndExit() {
  const rlimit limit{rlim_t{1} << 30, rlim_t{1} << 30};
  if (::setrlimit(RLIMIT_AS, &limit) != 0) std::_Exit(3);
  for (int parts : {1, 2}) {  // the whole file, and the split by file
    const Status s = parts == 1 ? ReadLibsvm("/dev/zero").status()
                                : ReadPart({"/dev/zero", "/dev/null"}, 0, 2).status();
    std::fprintf(stderr, "%s\n", s.ToString().substr(0, 300).c_str());
    if (s.code() != StatusCode::kCorruption ||
        !Contains(s.message(), "/dev/zero:1: line longer than 67108864 bytes")) {
      std::_Exit(1);
    }
  }
  std::_Exit(0);
}

TEST(LibsvmReaderLimitsTest, DevZeroFailsAtTheLineLimitInBoundedMemory) {
  if (pserver::testing::kSanitized) GTEST_SKIP() << "an address-space limit does not fit a sanitizer's shadow memory";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ReadDevZeroInBoundedMemoryAndExit(), ::testing::ExitedWithCode(0), "line longer than");
}

}  // namespace
}  // namespace pserver::linear
