#include "apps/linear/libsvm_reader.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "apps/linear/synthetic.h"
#include "testing/test_util.h"

namespace pserver::linear {
namespace {

using TempDir = pserver::testing::TestDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

Status ParseError(const std::string& text) { return ParseLibsvm(text, "data/x.svm").status(); }

TEST(LibsvmReaderTest, ParsesLabelsIndicesValues) {
  auto d = ParseLibsvm("+1 1:0.5 3:2 10:-1e-3\n-1 2:1\n1 5:+4\n0\n", "mem");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->num_rows(), 4u);
  EXPECT_EQ(d->labels(), (std::vector<float>{1, -1, 1, -1}));
  EXPECT_EQ(d->offsets(), (std::vector<uint64_t>{0, 3, 4, 5, 5}));
  EXPECT_EQ(d->feature_ids(), (std::vector<uint64_t>{0, 2, 9, 1, 4}));
  EXPECT_EQ(d->values(), (std::vector<float>{0.5f, 2.f, -1e-3f, 1.f, 4.f}));
  EXPECT_EQ(d->num_features(), 10u);
}

TEST(LibsvmReaderTest, ToleratesCommentsBlankLinesCrlfAndTabs) {
  const std::string text =
      "# header comment\r\n"
      "\r\n"
      "   \n"
      "+1\t1:1  2:2 # trailing comment 3:3\r\n"
      "-1 4:4\r\n"
      "# another\n"
      "1 7:7";  // no final newline
  auto d = ParseLibsvm(text, "mem");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->num_rows(), 3u);
  EXPECT_EQ(d->feature_ids(), (std::vector<uint64_t>{0, 1, 3, 6}));
  EXPECT_EQ(d->values(), (std::vector<float>{1, 2, 4, 7}));
}

// Values take a fast path for short decimals; it must agree with std::from_chars exactly.
TEST(LibsvmReaderTest, ValuesReadExactlyAsFromChars) {
  const uint64_t seed = pserver::testing::TestSeed(20261201);
  SCOPED_TRACE(fmt::format("seed={} (PSERVER_TEST_SEED replays it)", seed));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<std::string> texts = {
      "0",          "-0",    "1",         "+1",        "0.1",      ".5",           "5.",
      "-.25",       "0.3",   "9999999",   "0.0000001", "1234567.", "3.4028235e38", "16777217",
      "0.33333334", "1e-45", "00000001.5"};
  for (int i = 0; i < 20000; ++i) {
    std::string t = rng() % 2 ? "-" : "";
    const int int_digits = static_cast<int>(rng() % 9), frac_digits = static_cast<int>(rng() % 12);
    for (int k = 0; k < int_digits; ++k) t += static_cast<char>('0' + rng() % 10);
    if (frac_digits > 0 || int_digits == 0) t += '.';
    for (int k = 0; k < frac_digits; ++k) t += static_cast<char>('0' + rng() % 10);
    if (int_digits + frac_digits > 0) texts.push_back(t);
  }
  for (const std::string& t : texts) {
    const char* b = t.data() + (t[0] == '+' ? 1 : 0);
    float want = 0;
    auto [end, ec] = std::from_chars(b, t.data() + t.size(), want);
    ASSERT_TRUE(ec == std::errc() && end == t.data() + t.size()) << t;
    auto d = ParseLibsvm(fmt::format("1 1:{}", t), "mem");
    ASSERT_TRUE(d.ok()) << t << " " << d.status();
    EXPECT_EQ(std::bit_cast<uint32_t>(d->values()[0]), std::bit_cast<uint32_t>(want)) << t;
  }
}

struct BadLine {
  std::string line;
  std::string message;  // the expected message after "data/x.svm:3: "
};

TEST(LibsvmReaderTest, MalformedLinesNameFileLineAndProblem) {
  const std::vector<BadLine> cases = {
      {"2 1:1", "bad label '2' (expected +1, -1, 1 or 0)"},
      {"yes 1:1", "bad label 'yes' (expected +1, -1, 1 or 0)"},
      {"+-1 1:1", "bad label '+-1' (expected +1, -1, 1 or 0)"},
      {"1:1 2:1", "bad label '1:1' (expected +1, -1, 1 or 0)"},
      {"1 x:1", "bad feature index 'x' in 'x:1'"},
      {"1 -3:1", "bad feature index '-3' in '-3:1'"},
      {"1 99999999999999999999:1",
       "bad feature index '99999999999999999999' in '99999999999999999999:1'"},
      {"1 0:1", "feature index 0 in '0:1' (indices are 1-based)"},
      {"1 3:1 3:2", "feature index 3 after index 3 (indices must be strictly increasing)"},
      {"1 4:1 2:2", "feature index 2 after index 4 (indices must be strictly increasing)"},
      {"1 5:abc", "bad value 'abc' for feature 5"},
      {"1 5:", "bad value '' for feature 5"},
      {"1 5:1.0x", "bad value '1.0x' for feature 5"},
      {"1 5:nan", "bad value 'nan' for feature 5"},
      {"1 5:1e99", "bad value '1e99' for feature 5"},
      {"1 5:1:2", "bad value '1:2' for feature 5"},
      {"1 5", "missing ':' in '5' (expected index:value)"},
      {"1 5:1 garbage", "missing ':' in 'garbage' (expected index:value)"},
  };
  for (const BadLine& c : cases) {
    const Status s = ParseError(fmt::format("1 1:1\n\n{}\n-1 2:2\n", c.line));
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << c.line;
    EXPECT_EQ(s.message(), fmt::format("data/x.svm:3: {}", c.message)) << c.line;
  }
}

// Arbitrary bytes are either parsed or refused with kCorruption naming the source: never a
// crash (run under ASan/UBSan in the sanitizer builds).
TEST(LibsvmReaderTest, RandomBytesNeverCrash) {
  const uint64_t seed = pserver::testing::TestSeed(20261202);
  SCOPED_TRACE(fmt::format("seed={} (PSERVER_TEST_SEED replays it)", seed));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const std::string alphabet("0123456789+-.:#eEnaif \t\r\n\x00\xff", 27);
  for (int i = 0; i < 5000; ++i) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) text += alphabet[rng() % alphabet.size()];
    auto d = ParseLibsvm(text, "mem");
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
      EXPECT_EQ(d.status().message().rfind("mem:", 0), 0u) << d.status();
    }
  }
}

TEST(LibsvmReaderTest, FileErrorsNameFileAndLine) {
  TempDir dir;
  const std::string path = dir.File("bad.svm");
  WriteText(path, "# c\r\n+1 1:1\r\n\r\n-1 2:1 2:3\r\n");
  auto d = ReadLibsvm(path);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(d.status().message(),
            path + ":4: feature index 2 after index 2 (indices must be strictly increasing)");
  // A part that starts mid-file still reports the line number within the file.
  std::string text;
  for (int i = 0; i < 200; ++i) text += "+1 1:1 2:2\n";
  text += "-1 3:zz\n";
  WriteText(path, text);
  for (int parts = 1; parts <= 5; ++parts) {
    const Status s = ReadPart({path}, parts - 1, parts).status();
    EXPECT_EQ(s.message(), path + ":201: bad value 'zz' for feature 3") << parts;
  }
  EXPECT_EQ(ReadLibsvm(dir.File("missing.svm")).status().code(), StatusCode::kNotFound);
}

TEST(LibsvmReaderTest, SmallChunksGiveTheSameResult) {
  TempDir dir;
  const std::string path = dir.File("d.svm");
  auto gen = SyntheticData::Create({.num_rows = 500,
                                    .num_features = 1000,
                                    .nnz_per_row = 12,
                                    .binary_values = false,
                                    .seed = 7});
  ASSERT_TRUE(gen.ok());
  const Dataset want = gen->Generate();
  ASSERT_TRUE(WriteLibsvm(want, path).ok());
  for (size_t chunk : {1, 7, 64, 1000, 1 << 20}) {
    auto got = ReadLibsvm(path, {.chunk_bytes = chunk});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(*got == want) << "chunk " << chunk;
  }
}

TEST(LibsvmReaderTest, ReadPartRefusesBadArguments) {
  EXPECT_EQ(ReadPart({}, 0, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPart({"a"}, 1, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPart({"a"}, -1, 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPart({"a"}, 0, 0).status().code(), StatusCode::kInvalidArgument);
}

// Rows as comparable strings, for order-free comparison.
std::vector<std::string> RowStrings(const Dataset& d) {
  std::vector<std::string> rows;
  for (size_t r = 0; r < d.num_rows(); ++r) {
    std::string s;
    AppendLibsvmRow(d.row(r), &s);
    rows.push_back(std::move(s));
  }
  return rows;
}

// Every line is read by exactly one part, for 1..7 parts, over random files with comments,
// blank lines, CRLF and varied line lengths, cut into 1..4 files at random points.
TEST(LibsvmReaderTest, ReadPartCoversEveryLineExactlyOnce) {
  const uint64_t seed = pserver::testing::TestSeed(20261203);
  SCOPED_TRACE(fmt::format("seed={} (PSERVER_TEST_SEED replays it)", seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  for (int trial = 0; trial < 6; ++trial) {
    auto gen = SyntheticData::Create({.num_rows = 300 + rng() % 300,
                                      .num_features = 5000,
                                      .nnz_per_row = static_cast<double>(1 + rng() % 30),
                                      .seed = rng()});
    ASSERT_TRUE(gen.ok());
    const Dataset all = gen->Generate();
    // Build the text with noise lines; each row is tagged so it is unique.
    std::string text;
    for (size_t r = 0; r < all.num_rows(); ++r) {
      switch (rng() % 8) {
        case 0:
          text += "# comment line\n";
          break;
        case 1:
          text += "\n";
          break;
        case 2:
          text += " \t \r\n";
          break;
        default:
          break;
      }
      std::string line;
      AppendLibsvmRow(all.row(r), &line);
      line.pop_back();  // the '\n'
      text += line;
      text += rng() % 4 == 0 ? "\r\n" : "\n";
    }
    if (rng() % 2) text.pop_back();  // maybe no final newline
    // Cut into files at line boundaries or anywhere (a cut mid-line makes two lines).
    const int num_files = 1 + static_cast<int>(rng() % 4);
    std::vector<size_t> cuts{0, text.size()};
    for (int i = 1; i < num_files; ++i) {
      size_t c = rng() % text.size();
      if (rng() % 2) {
        c = text.find('\n', c);
        c = c == std::string::npos ? text.size() : c + 1;
      }
      cuts.push_back(c);
    }
    std::sort(cuts.begin(), cuts.end());
    std::vector<std::string> paths;
    for (int i = 0; i < num_files; ++i) {
      paths.push_back(dir.File(fmt::format("part{}_{}", trial, i)));
      WriteText(paths.back(), text.substr(cuts[i], cuts[i + 1] - cuts[i]));
    }
    // The reference: every file read whole, in order.
    Dataset want;
    bool parse_ok = true;
    for (const auto& p : paths) {
      auto d = ReadLibsvm(p);
      if (!d.ok()) {  // a mid-line cut can make a malformed line; the parts must agree
        parse_ok = false;
        break;
      }
      want.Append(*d);
    }
    if (!parse_ok) continue;
    for (int parts = 1; parts <= 7; ++parts) {
      Dataset got;
      std::vector<std::string> got_rows;
      for (int p = 0; p < parts; ++p) {
        const size_t chunk = 16 + rng() % 4096;
        auto d = ReadPart(paths, p, parts, {.chunk_bytes = chunk});
        ASSERT_TRUE(d.ok()) << d.status();
        got.Append(*d);
      }
      if (static_cast<int>(paths.size()) < parts) {
        EXPECT_TRUE(got == want) << "trial " << trial << " parts " << parts;  // same order
      }
      auto a = RowStrings(got), b = RowStrings(want);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      EXPECT_EQ(a, b) << "trial " << trial << " files " << num_files << " parts " << parts;
    }
  }
}

// More parts than lines, and parts whose cut points fall exactly on line starts.
TEST(LibsvmReaderTest, ReadPartWithManyPartsAndTinyFiles) {
  TempDir dir;
  const std::string path = dir.File("tiny.svm");
  WriteText(path, "1 1:1\n-1 2:1\n1 3:1\n");  // 3 lines of 6, 7, 6 bytes
  for (int parts = 1; parts <= 40; ++parts) {
    Dataset got;
    for (int p = 0; p < parts; ++p) {
      auto d = ReadPart({path}, p, parts);
      ASSERT_TRUE(d.ok()) << d.status();
      got.Append(*d);
    }
    EXPECT_EQ(got.feature_ids(), (std::vector<uint64_t>{0, 1, 2})) << parts;
  }
  // By file: file i goes to part i % num_parts.
  std::vector<std::string> paths;
  for (int i = 0; i < 5; ++i) {
    paths.push_back(dir.File(fmt::format("f{}", i)));
    WriteText(paths.back(), fmt::format("1 {}:1\n", i + 1));
  }
  auto p1 = ReadPart(paths, 1, 2);
  ASSERT_TRUE(p1.ok());
  EXPECT_EQ(p1->feature_ids(), (std::vector<uint64_t>{1, 3}));
}

TEST(LibsvmReaderTest, WriteThenReadRoundTrips) {
  TempDir dir;
  Dataset d;
  ASSERT_TRUE(d.AppendRow(1, std::vector<uint64_t>{0, 99}, std::vector<float>{0.1f, 3e-20f}).ok());
  ASSERT_TRUE(d.AppendRow(-1, {}, {}).ok());
  ASSERT_TRUE(WriteLibsvm(d, dir.File("rt.svm")).ok());
  auto back = ReadLibsvm(dir.File("rt.svm"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == d);
}

}  // namespace
}  // namespace pserver::linear
