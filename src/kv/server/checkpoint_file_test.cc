#include "kv/server/checkpoint_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "pserver/checksum.h"
#include "testing/atomic_file_peer.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

template <typename T>
transport::Bytes BytesOf(std::vector<T> v) {
  return transport::AsBytes(SharedArray<T>(std::move(v)));
}

// Three tables: float32 with one state value per value, float64 rows of width 3, and int64 of
// variable length; and an empty one.
std::vector<CheckpointTable> SomeTables(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<CheckpointTable> tables;
  {
    CheckpointTable t;
    t.spec.name = "w";
    t.spec.updater.name = "adagrad";
    t.spec.updater.params = {{"eta", 0.1}};
    std::vector<Key> keys;
    for (Key k = 5; keys.size() < 50; k += 1 + rng() % 1000) keys.push_back(k);
    std::vector<float> values(keys.size()), states(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      values[i] = static_cast<float>(rng() % 1000) / 7;
      states[i] = static_cast<float>(rng() % 1000) / 3;
    }
    t.rows.value_type = ValueType::kFloat32;
    t.rows.width = 1;
    t.rows.state_per_value = 1;
    t.rows.keys = SharedArray<Key>(std::move(keys));
    t.rows.values = BytesOf(std::move(values));
    t.rows.states = BytesOf(std::move(states));
    tables.push_back(std::move(t));
  }
  {
    CheckpointTable t;
    t.spec.name = "emb";
    t.spec.value_type = ValueType::kFloat64;
    t.spec.width = 3;
    std::vector<Key> keys = {1, 2, ~Key{0}};
    std::vector<double> values(9);
    for (double& v : values) v = static_cast<double>(rng()) / 3;
    t.rows.value_type = ValueType::kFloat64;
    t.rows.width = 3;
    t.rows.keys = SharedArray<Key>(std::move(keys));
    t.rows.values = BytesOf(std::move(values));
    tables.push_back(std::move(t));
  }
  {
    CheckpointTable t;
    t.spec.name = "lists";
    t.spec.value_type = ValueType::kInt64;
    t.spec.variable_length = true;
    t.rows.value_type = ValueType::kInt64;
    t.rows.width = 0;
    t.rows.keys = SharedArray<Key>(std::vector<Key>{7, 8, 9});
    t.rows.lens = SharedArray<int32_t>(std::vector<int32_t>{2, 0, 1});
    t.rows.values = BytesOf(std::vector<int64_t>{-1, 1LL << 40, 3});
    tables.push_back(std::move(t));
  }
  {
    CheckpointTable t;
    t.spec.name = "empty";
    t.rows.width = 1;
    tables.push_back(std::move(t));
  }
  return tables;
}

std::string ToString(const transport::Bytes& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

void ExpectSameTables(const std::vector<CheckpointTable>& got, const std::vector<CheckpointTable>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("table " + want[i].spec.name);
    EXPECT_EQ(got[i].spec, want[i].spec);
    EXPECT_EQ(got[i].rows.value_type, want[i].rows.value_type);
    EXPECT_EQ(got[i].rows.width, want[i].rows.width);
    EXPECT_EQ(got[i].rows.state_per_value, want[i].rows.state_per_value);
    EXPECT_EQ(std::vector<Key>(got[i].rows.keys.begin(), got[i].rows.keys.end()),
              std::vector<Key>(want[i].rows.keys.begin(), want[i].rows.keys.end()));
    EXPECT_EQ(std::vector<int32_t>(got[i].rows.lens.begin(), got[i].rows.lens.end()),
              std::vector<int32_t>(want[i].rows.lens.begin(), want[i].rows.lens.end()));
    EXPECT_EQ(ToString(got[i].rows.values), ToString(want[i].rows.values));  // bit-identical
    EXPECT_EQ(ToString(got[i].rows.states), ToString(want[i].rows.states));
  }
}

class CheckpointFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("pserver_checkpoint_file_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  CheckpointFileInfo Write(const std::string& path, const std::vector<CheckpointTable>& tables) {
    Result<std::unique_ptr<AtomicFileWriter>> out = AtomicFileWriter::Open(path);
    EXPECT_OK(out);
    Result<CheckpointFileInfo> info = WriteCheckpointFile(**out, tables);
    EXPECT_OK(info);
    return info.ok() ? *info : CheckpointFileInfo{};
  }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void Spit(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  // Reading `bytes` (as a file) fails with kCorruption, and the error names the file.
  void ExpectRefused(const std::string& bytes, const std::string& why_part, const std::string& trace) {
    const std::string path = Path("bad.psckpt");
    Spit(path, bytes);
    Result<std::vector<CheckpointTable>> got = ReadCheckpointFile(path);
    ASSERT_FALSE(got.ok()) << trace;
    EXPECT_EQ(got.status().code(), StatusCode::kCorruption) << trace << ": " << got.status().ToString();
    EXPECT_NE(got.status().message().find("checkpoint " + path), std::string::npos) << got.status().ToString();
    EXPECT_NE(got.status().message().find(why_part), std::string::npos) << trace << ": " << got.status().ToString();
  }

  std::filesystem::path dir_;
};

TEST_F(CheckpointFileTest, ReadsBackEveryTableBitIdentical) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  const std::vector<CheckpointTable> tables = SomeTables(seed);
  const std::string path = Path("server-0.psckpt");
  const CheckpointFileInfo written = Write(path, tables);
  EXPECT_EQ(written.rows, 50u + 3 + 3);
  EXPECT_EQ(written.bytes, std::filesystem::file_size(path));
  CheckpointFileInfo read;
  Result<std::vector<CheckpointTable>> got = ReadCheckpointFile(path, &read);
  ASSERT_OK(got);
  ExpectSameTables(*got, tables);
  EXPECT_EQ(read.rows, written.rows);
  EXPECT_EQ(read.bytes, written.bytes);
  EXPECT_EQ(read.checksum, written.checksum);
}

TEST_F(CheckpointFileTest, NoTablesIsAFileToo) {
  const std::string path = Path("none.psckpt");
  Write(path, {});
  Result<std::vector<CheckpointTable>> got = ReadCheckpointFile(path);
  ASSERT_OK(got);
  EXPECT_TRUE(got->empty());
}

// Cut at every length short of the whole: every section (header, each table's spec, layout,
// keys, lengths, values, states, checksum, the footer) is cut somewhere in here.
TEST_F(CheckpointFileTest, AFileCutAnywhereIsRefused) {
  const std::string path = Path("whole.psckpt");
  Write(path, SomeTables(1));
  const std::string whole = Slurp(path);
  for (size_t n = 0; n < whole.size(); ++n) {
    ExpectRefused(whole.substr(0, n), n < 24 ? "cut short in the header" : "", "cut at " + std::to_string(n));
    if (HasFatalFailure()) return;
  }
}

TEST_F(CheckpointFileTest, EveryFlippedByteIsRefused) {
  const std::string path = Path("whole.psckpt");
  Write(path, SomeTables(2));
  const std::string whole = Slurp(path);
  for (size_t i = 0; i < whole.size(); ++i) {
    std::string bad = whole;
    bad[i] ^= 0x10;
    ExpectRefused(bad, "", "byte " + std::to_string(i) + " flipped");
    if (HasFatalFailure()) return;
  }
}

TEST_F(CheckpointFileTest, TablesSwappedOrDroppedAreRefused) {
  std::vector<CheckpointTable> tables = SomeTables(3);
  const std::string path = Path("t.psckpt");
  // The tables of one file in another order: each table's bytes are intact, but the chain is not.
  Write(path, {tables[0]});
  const size_t a_size = Slurp(path).size() - 24 - 16;
  Write(path, {tables[0], tables[1]});
  const std::string ab = Slurp(path);
  const std::string swapped =
      ab.substr(0, 24) + ab.substr(24 + a_size, ab.size() - 16 - 24 - a_size) + ab.substr(24, a_size) + ab.substr(ab.size() - 16);
  ASSERT_EQ(swapped.size(), ab.size());
  ExpectRefused(swapped, "table 0 ('emb'): checksum mismatch", "tables swapped");
  // A file whose header says 2 tables and holds 1: the footer is not where the reader expects it.
  Write(path, {tables[0]});
  const std::string one = Slurp(path);
  Write(path, {tables[0], tables[3]});
  const std::string two = Slurp(path);
  std::string dropped = two.substr(0, 24) + one.substr(24);
  ExpectRefused(dropped, "", "a table dropped");
}

// Well sealed (every checksum right) but inconsistent: what a writer's bug would leave. Refused
// before any row is used, never read past an array.
TEST_F(CheckpointFileTest, SizesThatDoNotFitTheLayoutAreRefused) {
  const std::vector<CheckpointTable> good = SomeTables(7);
  const std::string path = Path("bad.psckpt");
  auto why = [&](CheckpointTable t) {
    Write(path, {std::move(t)});
    Result<std::vector<CheckpointTable>> got = ReadCheckpointFile(path);
    return got.ok() ? std::string("accepted") : got.status().ToString();
  };
  CheckpointTable lists = good[2];  // variable length: 3 keys
  lists.rows.lens = SharedArray<int32_t>(std::vector<int32_t>{2, 0});
  EXPECT_NE(why(lists).find("2 lengths for 3 keys"), std::string::npos) << why(lists);
  lists = good[2];
  lists.rows.lens = SharedArray<int32_t>(std::vector<int32_t>{2, -1, 2});
  EXPECT_NE(why(lists).find("a negative length -1 at row 1"), std::string::npos) << why(lists);
  lists = good[2];
  lists.rows.lens = SharedArray<int32_t>(std::vector<int32_t>{2, 0, 9});
  EXPECT_NE(why(lists).find("value bytes"), std::string::npos) << why(lists);
  CheckpointTable w = good[0];  // float32, one state value per value
  w.rows.states = BytesOf(std::vector<float>(3));
  EXPECT_NE(why(w).find("state bytes"), std::string::npos) << why(w);
  w = good[0];
  w.rows.value_type = ValueType::kFloat64;
  EXPECT_NE(why(w).find("for a table of float32 values"), std::string::npos) << why(w);
  w = good[0];
  w.rows.width = 2;
  EXPECT_NE(why(w).find("of width 2"), std::string::npos) << why(w);
}

TEST_F(CheckpointFileTest, ForeignFilesAndOtherVersionsAreRefusedByName) {
  ExpectRefused("hello, world: not a checkpoint at all", "not a pserver checkpoint file", "text");
  const std::string path = Path("v.psckpt");
  Write(path, SomeTables(4));
  std::string v1 = Slurp(path);
  v1[8] = 1;  // version 1 (before TableSpec::checkpointed), and a header checksum that matches it
  const uint64_t sum = Checksum64(v1.data(), 16);
  for (int i = 0; i < 8; ++i) v1[16 + i] = static_cast<char>(sum >> (8 * i));
  ExpectRefused(v1, "file version 1; this build reads version 2", "version 1");
  ExpectRefused(Slurp(path) + "x", "1 bytes after the footer", "a byte after the footer");
  Result<std::vector<CheckpointTable>> missing = ReadCheckpointFile(Path("absent.psckpt"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
}

TEST_F(CheckpointFileTest, AFullDiskFailsAndKeepsTheOlderFile) {
  const std::string path = Path("server-0.psckpt");
  const std::vector<CheckpointTable> old_tables = SomeTables(5);
  Write(path, old_tables);
  Result<std::unique_ptr<AtomicFileWriter>> out = AtomicFileWriter::Open(path);
  ASSERT_OK(out);
  AtomicFileWriterTestPeer::RedirectWrites(**out, "/dev/full");
  Result<CheckpointFileInfo> info = WriteCheckpointFile(**out, SomeTables(6));
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), StatusCode::kUnavailable) << info.status().ToString();
  EXPECT_NE(info.status().message().find(path), std::string::npos) << info.status().ToString();
  out->reset();
  Result<std::vector<CheckpointTable>> got = ReadCheckpointFile(path);
  ASSERT_OK(got);
  ExpectSameTables(*got, old_tables);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename(), "server-0.psckpt") << "a temporary file was left behind";
  }
}

}  // namespace
}  // namespace pserver::kv
