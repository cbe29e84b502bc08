// sigmod on pull replies (pull=1): a server's reply leaves out the rows that did not change
// significantly since it last sent them to the worker, and the worker puts them back from its
// copy. With no threshold every filled reply is bit for bit what the server holds, over random
// sequences of pulls; with one, each value is within it. A reply the worker missed makes the next
// one that leaves keys out a copy miss, never a wrong value, and the worker's next pull asks the
// server to start over; a copy frame that does not match its reply is refused as corrupt.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "kv/filter/filter.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::Bytes;
using transport::Frames;

constexpr uint32_t kWidth = 2;

TableSpec PullSpec(std::map<std::string, double> params) {
  params.emplace("push", 0);
  params.emplace("pull", 1);
  TableSpec spec{.name = "t"};
  spec.value_type = ValueType::kFloat64;
  spec.width = kWidth;
  spec.updater.name = "add";
  spec.filters = {{"sigmod", std::move(params)}};
  return spec;
}

FilterChain ChainOf(const TableSpec& spec) {
  Result<FilterChain> chain = MakeFilterChain(spec);
  EXPECT_OK(chain);
  return chain.ok() ? std::move(*chain) : FilterChain();
}

// A server's chain and a worker's for one table, and the replies between them.
struct Link {
  explicit Link(const TableSpec& spec) : server(ChainOf(spec)), worker(ChainOf(spec)) {}

  // The frames of the server's reply to a pull of `keys` whose stored rows are `rows`, as
  // they leave the server ([copy frame, values]).
  Frames Reply(const std::vector<Key>& keys, const std::vector<double>& rows, bool no_copy = false) const {
    Rounding r{.reply = true,
               .peer = worker_id,
               .may_drop = true,
               .no_copy = no_copy,
               .value_type = ValueType::kFloat64,
               .columns = kWidth,
               .keys = SharedArray<Key>(std::vector<Key>(keys)),
               .vals = transport::AsBytes(SharedArray<double>(std::vector<double>(rows))),
               .copy_frame = {}};
    EXPECT_OK(server.Round(r));
    return Frames{r.copy_frame, r.vals};
  }
  Status Fill(const std::vector<Key>& keys, Frames& frames) const {
    transport::Header h;
    h.type = transport::MessageType::kPull;
    h.flags = transport::kFlagReply;
    h.sender = server_id;
    h.value_type = ValueType::kFloat64;
    h.width = kWidth;
    return worker.Fill(h, SharedArray<Key>(std::vector<Key>(keys)), frames);
  }
  // Whether the worker's next pull to the server asks it to start over.
  bool AsksToStartOver() const {
    transport::Message m;
    m.header.type = transport::MessageType::kPull;
    m.header.receiver = server_id;
    m.frames = {Bytes(), Bytes(), Bytes()};
    EXPECT_OK(worker.Encode(m));
    return (m.header.aux & transport::kPullHoldsNoCopy) != 0;
  }

  FilterChain server, worker;
  NodeId server_id{7}, worker_id{3};
};

std::vector<double> RowsOf(const Bytes& b) {
  const auto* p = reinterpret_cast<const double*>(b.data());
  return std::vector<double>(p, p + b.size() / sizeof(double));
}

size_t RowsCarried(const Frames& f) { return f[1].size() / (kWidth * sizeof(double)); }

TEST(SignificantPullTest, FilledRepliesAreExactlyWhatTheServerHolds) {
  const uint64_t seed = std::random_device()();
  std::cout << "seed " << seed << "\n";
  std::mt19937_64 rng(seed);
  const Link link(PullSpec({}));
  ASSERT_TRUE(link.server.rounds_replies());
  ASSERT_TRUE(link.worker.fills_replies());
  constexpr Key kKeys = 200;
  std::vector<double> stored(kKeys * kWidth, 0.0);
  size_t carried = 0, pulled = 0;
  for (int pull = 0; pull < 300; ++pull) {
    // Some rows change (to a value, to -0, to a denormal); then a random sorted subset is pulled.
    for (int c = 0; c < 10; ++c) {
      const size_t at = rng() % stored.size();
      const int kind = static_cast<int>(rng() % 4);
      stored[at] = kind == 0 ? -0.0 : kind == 1 ? 4.9e-324 : std::ldexp(static_cast<double>(rng() % 1000) - 500, -5);
    }
    std::vector<Key> keys;
    std::vector<double> rows;
    const uint64_t every = 1 + rng() % 3;
    for (Key k = rng() % every; k < kKeys; k += every) {
      keys.push_back(k);
      rows.insert(rows.end(), stored.begin() + k * kWidth, stored.begin() + (k + 1) * kWidth);
    }
    Frames f = link.Reply(keys, rows);
    carried += RowsCarried(f);
    pulled += keys.size();
    ASSERT_OK(link.Fill(keys, f));
    EXPECT_TRUE(f[0].empty());
    ASSERT_EQ(f[1].size(), rows.size() * sizeof(double));
    ASSERT_EQ(std::memcmp(f[1].data(), rows.data(), f[1].size()), 0) << "pull " << pull << ": not bit for bit";
    EXPECT_FALSE(link.AsksToStartOver());
  }
  std::cout << carried << " of " << pulled << " rows carried\n";
  EXPECT_LT(carried * 4, pulled);  // most rows did not change between pulls
}

TEST(SignificantPullTest, AThresholdKeepsEachValueWithinIt) {
  const Link link(PullSpec({{"pull_threshold", 0.1}, {"pull_relative", 0.01}}));
  std::vector<double> rows = {1.0, 100.0};
  Frames f = link.Reply({5}, rows);
  ASSERT_OK(link.Fill({5}, f));
  // 0.05 off the first (under 0.1), 0.9 off the second (under 1 % of 100): left out.
  rows = {1.05, 100.9};
  f = link.Reply({5}, rows);
  EXPECT_EQ(RowsCarried(f), 0u);
  ASSERT_OK(link.Fill({5}, f));
  EXPECT_EQ(RowsOf(f[1]), (std::vector<double>{1.0, 100.0}));
  // Measured against what was last sent, not the last value: drift cannot build up.
  rows = {1.11, 100.0};
  f = link.Reply({5}, rows);
  EXPECT_EQ(RowsCarried(f), 1u);
  ASSERT_OK(link.Fill({5}, f));
  EXPECT_EQ(RowsOf(f[1]), rows);
}

TEST(SignificantPullTest, AMissedReplyIsAMissAndTheServerStartsOver) {
  const Link link(PullSpec({}));
  EXPECT_TRUE(link.AsksToStartOver()) << "no copy yet";
  const std::vector<Key> keys = {1, 2, 3};
  Frames first = link.Reply(keys, {1, 1, 2, 2, 3, 3});
  ASSERT_OK(link.Fill(keys, first));
  EXPECT_FALSE(link.AsksToStartOver());
  Frames lost = link.Reply(keys, {1, 1, 2, 2, 3, 4});  // never reaches the worker
  EXPECT_EQ(RowsCarried(lost), 1u);
  Frames next = link.Reply(keys, {1, 1, 2, 2, 3, 4});  // key 3 left out: the worker holds 3, 3
  ASSERT_EQ(RowsCarried(next), 0u);
  EXPECT_TRUE(IsCopyMiss(link.Fill(keys, next)));
  EXPECT_TRUE(link.AsksToStartOver());
  // A reply that leaves nothing out is read, but does not mend the copy.
  Frames whole = link.Reply({4}, {4, 4});
  ASSERT_OK(link.Fill({4}, whole));
  EXPECT_EQ(RowsOf(whole[1]), (std::vector<double>{4, 4}));
  EXPECT_TRUE(link.AsksToStartOver());
  // The pull asks; the server starts over: its reply carries every row, and the copy is whole again.
  Frames over = link.Reply(keys, {1, 1, 2, 2, 3, 4}, /*no_copy=*/true);
  EXPECT_EQ(RowsCarried(over), 3u);
  ASSERT_OK(link.Fill(keys, over));
  EXPECT_EQ(RowsOf(over[1]), (std::vector<double>{1, 1, 2, 2, 3, 4}));
  EXPECT_FALSE(link.AsksToStartOver());
  Frames after = link.Reply(keys, {1, 1, 2, 2, 3, 4});
  EXPECT_EQ(RowsCarried(after), 0u);
  ASSERT_OK(link.Fill(keys, after));
  EXPECT_EQ(RowsOf(after[1]), (std::vector<double>{1, 1, 2, 2, 3, 4}));
}

TEST(SignificantPullTest, AnOlderGenerationIsNotTakenForANewStart) {
  const Link link(PullSpec({}));
  const std::vector<Key> keys = {1, 2};
  Frames old_start = link.Reply(keys, {1, 1, 2, 2}, /*no_copy=*/true);
  Frames old_next = link.Reply(keys, {1, 1, 2, 5});
  Frames new_start = link.Reply(keys, {1, 1, 2, 5}, /*no_copy=*/true);
  ASSERT_OK(link.Fill(keys, new_start));
  // The first generation's replies, arriving late, are not this copy's: the one that leaves a
  // key out is a miss.
  EXPECT_TRUE(IsCopyMiss(link.Fill(keys, old_next))) << "old_next leaves key 1 out";
  ASSERT_OK(link.Fill(keys, old_start));  // whole: read, but the copy is not rebuilt from it
  EXPECT_TRUE(link.AsksToStartOver());
}

TEST(SignificantPullTest, ForgettingAWorkerAndTheBoundStartOver) {
  const Link link(PullSpec({{"copy_keys", 4}}));
  const std::vector<Key> keys = {1, 2, 3};
  Frames f = link.Reply(keys, {1, 1, 2, 2, 3, 3});
  ASSERT_OK(link.Fill(keys, f));
  link.server.Forget(link.worker_id);
  f = link.Reply(keys, {1, 1, 2, 2, 3, 3});
  EXPECT_EQ(RowsCarried(f), 3u) << "a forgotten worker's copy starts over";
  ASSERT_OK(link.Fill(keys, f));
  EXPECT_FALSE(link.AsksToStartOver());
  // Two more keys take both copies past 4 rows: the worker drops its copy and asks to start
  // over; the server starts over at its next reply.
  f = link.Reply({4, 5}, {4, 4, 5, 5});
  ASSERT_OK(link.Fill({4, 5}, f));
  EXPECT_TRUE(link.AsksToStartOver());
  f = link.Reply(keys, {1, 1, 2, 2, 3, 3});
  EXPECT_EQ(RowsCarried(f), 3u);
  ASSERT_OK(link.Fill(keys, f));
  EXPECT_EQ(RowsOf(f[1]), (std::vector<double>{1, 1, 2, 2, 3, 3}));
}

TEST(SignificantPullTest, ACopyFrameThatDoesNotMatchItsReplyIsRefused) {
  const Link link(PullSpec({}));
  const std::vector<Key> keys = {1, 2, 3};
  const Frames good = link.Reply(keys, {1, 1, 2, 2, 3, 3});
  auto with = [&](auto change) {
    Frames f = good;
    std::vector<std::byte> copy(f[0].begin(), f[0].end());
    change(copy, f);
    f[0] = Bytes::CopyOf(copy);
    return f;
  };
  Frames f = with([](std::vector<std::byte>& c, Frames&) { c.pop_back(); });
  EXPECT_TRUE(StatusIs(link.Fill(keys, f), StatusCode::kCorruption, "copy frame"));
  f = with([](std::vector<std::byte>& c, Frames&) { c.back() &= std::byte{0xfe}; });  // a row unmarked
  EXPECT_TRUE(StatusIs(link.Fill(keys, f), StatusCode::kCorruption, "marks 2 of 3 rows"));
  f = with([](std::vector<std::byte>& c, Frames&) { c.back() |= std::byte{0x80}; });  // a row past the end
  EXPECT_TRUE(StatusIs(link.Fill(keys, f), StatusCode::kCorruption, "copy frame"));
  f = with([](std::vector<std::byte>&, Frames& fr) { fr[1] = Bytes(fr[1].owner(), fr[1].data(), 8); });
  EXPECT_TRUE(StatusIs(link.Fill(keys, f), StatusCode::kCorruption, "carries 8 bytes"));
  EXPECT_TRUE(StatusIs(link.Fill({1, 2}, f), StatusCode::kCorruption, "for 2 keys"));
  f = good;
  transport::Header wide;
  wide.type = transport::MessageType::kPull;
  wide.sender = link.server_id;
  wide.value_type = ValueType::kFloat64;
  wide.width = 0x40000000;  // a peer's claim, not the table's width
  EXPECT_TRUE(StatusIs(link.worker.Fill(wide, SharedArray<Key>(std::vector<Key>(keys)), f), StatusCode::kCorruption,
                       "the table's rows are 16 bytes"));
  ASSERT_OK(link.Fill(keys, f));  // the undamaged reply still follows
  // A table whose filters leave nothing out refuses a copy frame.
  TableSpec plain = PullSpec({});
  plain.filters = {{"fp16"}};
  const FilterChain fp16 = ChainOf(plain);
  transport::Header h;
  h.type = transport::MessageType::kPull;
  h.width = kWidth;
  h.value_type = ValueType::kFloat64;
  f = good;
  EXPECT_TRUE(StatusIs(fp16.Fill(h, SharedArray<Key>(std::vector<Key>(keys)), f), StatusCode::kCorruption,
                       "no filter of the table leaves keys out"));
}

TEST(SignificantPullTest, ParamsAreChecked) {
  auto refused = [](std::map<std::string, double> params, const std::string& says) {
    TableSpec spec = PullSpec({});
    spec.filters = {{"sigmod", std::move(params)}};
    EXPECT_TRUE(StatusIs(MakeFilterChain(spec).status(), StatusCode::kInvalidArgument, says));
  };
  refused({{"push", 0}}, "push=0 and pull=0 would do nothing");
  refused({{"pull", 2}}, "pull 2 is out of range");
  refused({{"pull", 1}, {"pull_threshold", -1}}, "pull_threshold -1 is out of range");
  refused({{"pull", 1}, {"pull_relative", 1.5}}, "pull_relative 1.5 is out of range");
  refused({{"pull", 1}, {"copy_keys", 0.5}}, "copy_keys 0.5 is out of range");
  refused({{"pull", 1}, {"copies", 1}}, "no param 'copies'");
  TableSpec assign = PullSpec({});
  assign.updater.name = "assign";
  EXPECT_OK(MakeFilterChain(assign));  // pull replies only: any rule
  assign.filters[0].params["push"] = 1;
  EXPECT_TRUE(StatusIs(MakeFilterChain(assign).status(), StatusCode::kInvalidArgument,
                       "sigmod:push=0:pull=1 filters pull replies only"));
}

}  // namespace
}  // namespace pserver::kv
