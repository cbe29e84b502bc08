// Filters: the lossless ones round-trip every frame exactly (sorted, random and extreme keys,
// random, equal and special float values, empty and one-key messages, stacked), small or
// incompressible frames go as they are, and a damaged message -- a corrupt or truncated frame, a
// wrong size prefix, a trailer naming a filter the table lacks or a frame the message lacks -- is
// refused with kCorruption, naming the table and the filter. Specs with unknown filters or params
// are refused when the chain is made.
#include "kv/filter/filter.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::Bytes;
using transport::Message;
using transport::MessageType;

TableSpec SpecWith(std::vector<FilterSpec> filters) {
  TableSpec spec;
  spec.name = "t";
  spec.filters = std::move(filters);
  return spec;
}

FilterChain ChainOf(std::vector<FilterSpec> filters) {
  Result<FilterChain> chain = MakeFilterChain(SpecWith(std::move(filters)));
  EXPECT_OK(chain);
  return chain.ok() ? std::move(*chain) : FilterChain();
}

template <typename T>
Bytes BytesOf(const std::vector<T>& v) {
  return transport::AsBytes(SharedArray<T>(std::vector<T>(v)));
}

std::vector<std::byte> Copy(const Bytes& b) { return {b.begin(), b.end()}; }

Message PushOf(const std::vector<Key>& keys, const std::vector<float>& vals) {
  Message m;
  m.header.type = MessageType::kPush;
  m.header.table = TableId(1);
  m.frames.push_back(BytesOf(keys));
  m.frames.push_back(BytesOf(vals));
  m.frames.emplace_back();
  return m;
}

Message PullReplyOf(const std::vector<float>& vals, const std::vector<int64_t>& clock) {
  Message m;
  m.header.type = MessageType::kPull;
  m.header.flags = transport::kFlagReply;
  m.header.table = TableId(1);
  m.frames.emplace_back();
  m.frames.push_back(BytesOf(vals));
  m.frames.emplace_back();
  m.frames.push_back(BytesOf(clock));
  return m;
}

// Encodes a copy of `m` with `chain`, checks the frames are back bit for bit after Decode, and
// returns the encoded message.
Message ExpectRoundTrip(const FilterChain& chain, const Message& m) {
  Message sent = m;
  EXPECT_OK(chain.Encode(sent));
  Message received = sent;
  EXPECT_OK(chain.Decode(received));
  EXPECT_EQ(received.header.flags, m.header.flags);
  EXPECT_EQ(received.frames.size(), m.frames.size());
  for (size_t i = 0; i < m.frames.size() && i < received.frames.size(); ++i) {
    EXPECT_EQ(Copy(received.frames[i]), Copy(m.frames[i])) << "frame " << i;
  }
  return sent;
}

size_t WireBytes(const Message& m) {
  size_t n = 0;
  for (const Bytes& f : m.frames) n += f.size();
  return n;
}

const std::vector<std::vector<FilterSpec>>& Chains() {
  static const auto* chains = new std::vector<std::vector<FilterSpec>>{
      {{"zstd"}}, {{"lz4"}}, {{"zstd", {{"level", 9}, {"min_bytes", 0}}}}, {{"lz4", {{"min_bytes", 0}}}},
      {{"zstd"}, {"lz4"}}, {{"lz4", {{"min_bytes", 0}}}, {"zstd", {{"min_bytes", 0}}}}};
  return *chains;
}

TEST(FilterTest, LosslessFiltersRoundTripSortedKeysAndValuesExactly) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  for (const auto& specs : Chains()) {
    SCOPED_TRACE(specs.front().name + (specs.size() > 1 ? "+" + specs.back().name : ""));
    const FilterChain chain = ChainOf(specs);
    // Consecutive ids with smooth values: compress well.
    std::vector<Key> keys(10000);
    std::vector<float> vals(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      keys[i] = 1000 + 2 * i;
      vals[i] = static_cast<float>(i % 7);
    }
    Message sent = ExpectRoundTrip(chain, PushOf(keys, vals));
    EXPECT_TRUE(sent.header.flags & transport::kFlagFiltered);
    EXPECT_LT(WireBytes(sent), WireBytes(PushOf(keys, vals)) / 4);
    // Random sorted 64-bit keys and random floats, with NaN, infinities, -0 and denormals.
    std::vector<Key> random_keys(5000);
    for (Key& k : random_keys) k = rng();
    std::sort(random_keys.begin(), random_keys.end());
    random_keys.erase(std::unique(random_keys.begin(), random_keys.end()), random_keys.end());
    std::vector<float> random_vals(random_keys.size());
    std::normal_distribution<float> normal;
    for (float& v : random_vals) v = normal(rng);
    random_vals[0] = std::numeric_limits<float>::quiet_NaN();
    random_vals[1] = std::numeric_limits<float>::infinity();
    random_vals[2] = -std::numeric_limits<float>::infinity();
    random_vals[3] = -0.0f;
    random_vals[4] = std::numeric_limits<float>::denorm_min();
    ExpectRoundTrip(chain, PushOf(random_keys, random_vals));
    // The extremes of the key space, one key, no keys, all values equal.
    ExpectRoundTrip(chain, PushOf({0, 1, ~Key{0} - 1, ~Key{0}}, {1, 2, 3, 4}));
    ExpectRoundTrip(chain, PushOf({42}, {0.5f}));
    ExpectRoundTrip(chain, PushOf({}, {}));
    ExpectRoundTrip(chain, PushOf(keys, std::vector<float>(keys.size(), 3.25f)));
    // A pull reply: values and the vector clock; frame 0 (empty) is not keys.
    ExpectRoundTrip(chain, PullReplyOf(vals, std::vector<int64_t>(64, 17)));
  }
}

TEST(FilterTest, SmallOrIncompressibleFramesGoAsTheyAre) {
  const FilterChain chain = ChainOf({{"zstd"}});
  // Under min_bytes (256): no trailer, no flag, the same frames.
  Message small = PushOf({1, 2, 3}, {1, 2, 3});
  Message sent = ExpectRoundTrip(chain, small);
  EXPECT_FALSE(sent.header.flags & transport::kFlagFiltered);
  EXPECT_EQ(sent.frames.size(), 3u);
  // Random bytes do not compress: that frame is left alone, the keys are not.
  std::mt19937_64 rng(7);
  std::vector<Key> keys(4096);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i;
  std::vector<float> noise(keys.size());
  for (float& v : noise) {
    uint32_t bits = static_cast<uint32_t>(rng());
    std::memcpy(&v, &bits, 4);
  }
  Message m = PushOf(keys, noise);
  sent = ExpectRoundTrip(chain, m);
  ASSERT_EQ(sent.frames.size(), 4u);
  EXPECT_EQ(Copy(sent.frames[1]), Copy(m.frames[1]));  // values unchanged
  EXPECT_EQ(std::to_integer<int>(sent.frames[3][1]), 0x01);  // the trailer: keys only
}

// A filtered push of compressible data, and the chain that made it.
Message FilteredPush(const FilterChain& chain) {
  std::vector<Key> keys(2000);
  std::vector<float> vals(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    keys[i] = 3 * i;
    vals[i] = static_cast<float>(i % 5);
  }
  Message m = PushOf(keys, vals);
  EXPECT_OK(chain.Encode(m));
  EXPECT_TRUE(m.header.flags & transport::kFlagFiltered);
  return m;
}

Bytes Mutated(const Bytes& b, size_t at, std::byte x) {
  std::vector<std::byte> v = Copy(b);
  v[at] ^= x;
  return BytesOf(v);
}

TEST(FilterTest, DamagedMessagesAreRefused) {
  for (const char* name : {"zstd", "lz4"}) {
    SCOPED_TRACE(name);
    const FilterChain chain = ChainOf({{name}});
    const Message good = FilteredPush(chain);
    auto expect_refused = [&](Message m, const std::string& says) {
      Status s = chain.Decode(m);
      EXPECT_TRUE(StatusIs(s, StatusCode::kCorruption)) << s;
      EXPECT_NE(s.message().find("table 't'"), std::string::npos) << s;
      EXPECT_NE(s.message().find(says), std::string::npos) << s;
    };
    // The compressed bytes damaged, cut short, or their size prefix wrong.
    Message m = good;
    m.frames[1] = Mutated(m.frames[1], m.frames[1].size() / 2, std::byte{0x5a});
    expect_refused(m, "frame 1");
    m = good;
    m.frames[1] = Bytes(m.frames[1].owner(), m.frames[1].data(), m.frames[1].size() - 3);
    expect_refused(m, "frame 1");
    m = good;
    m.frames[1] = Mutated(m.frames[1], 0, std::byte{0x01});  // the stated length, off by one
    expect_refused(m, "frame 1");
    m = good;
    m.frames[1] = Bytes(m.frames[1].owner(), m.frames[1].data(), 4);
    expect_refused(m, "shorter than");
    m = good;
    m.frames[0] = Mutated(m.frames[0], 7, std::byte{0x40});  // a key count past any frame
    expect_refused(m, "more than a frame may hold");
    m = good;
    m.frames[0] = Mutated(m.frames[0], 0, std::byte{0x01});  // one key more than the deltas hold
    expect_refused(m, "frame 0");
    // The trailer: missing, odd, naming a filter the table lacks or a frame the message lacks.
    m = good;
    m.frames.pop_back();
    m.frames.pop_back();
    m.frames.pop_back();
    m.frames.pop_back();
    expect_refused(m, "no filter trailer");
    m = good;
    m.frames.back() = BytesOf(std::vector<uint8_t>{1});
    expect_refused(m, "trailer of 1 bytes");
    m = good;
    m.frames.back() = BytesOf(std::vector<uint8_t>{9, 1});
    expect_refused(m, "filter code 9");
    m = good;
    m.frames.back() = BytesOf(std::vector<uint8_t>{static_cast<uint8_t>(std::to_integer<uint8_t>(good.frames[3][0])), 0x10});
    expect_refused(m, "names frames 0x10");
  }
  // A table without filters refuses a filtered message.
  Message m = FilteredPush(ChainOf({{"zstd"}}));
  Status s = ChainOf({}).Decode(m);
  EXPECT_TRUE(StatusIs(s, StatusCode::kCorruption));
  EXPECT_NE(s.message().find("no filters"), std::string::npos) << s;
  // And a message filtered by zstd is not undone by lz4.
  m = FilteredPush(ChainOf({{"zstd"}}));
  EXPECT_TRUE(StatusIs(ChainOf({{"lz4"}}).Decode(m), StatusCode::kCorruption));
}

TEST(FilterTest, AnUnfilteredMessagePassesDecodeUnchanged) {
  const FilterChain chain = ChainOf({{"zstd"}});
  Message m = PushOf({1, 2}, {3, 4});
  ASSERT_OK(chain.Decode(m));
  EXPECT_EQ(m.frames.size(), 3u);
  // Filtering twice is a bug of the caller, refused.
  Message twice = FilteredPush(chain);
  EXPECT_TRUE(StatusIs(chain.Encode(twice), StatusCode::kInternal));
}

TEST(FilterTest, BadSpecsAreRefusedWhenTheChainIsMade) {
  auto expect_refused = [](std::vector<FilterSpec> filters, const std::string& says) {
    Result<FilterChain> chain = MakeFilterChain(SpecWith(std::move(filters)));
    ASSERT_FALSE(chain.ok());
    EXPECT_TRUE(StatusIs(chain.status(), StatusCode::kInvalidArgument));
    EXPECT_NE(chain.status().message().find("table 't'"), std::string::npos) << chain.status();
    EXPECT_NE(chain.status().message().find(says), std::string::npos) << chain.status();
  };
  expect_refused({{"gzip"}}, "unknown filter 'gzip' (this node knows: zstd, lz4)");
  expect_refused({{"zstd", {{"level", 0}}}}, "level must be");
  expect_refused({{"zstd", {{"level", 2.5}}}}, "level must be");
  expect_refused({{"zstd", {{"level", 20}}}}, "level must be");
  expect_refused({{"lz4", {{"level", 3}}}}, "no param 'level'");
  expect_refused({{"lz4", {{"min_bytes", -1}}}}, "min_bytes must be");
  expect_refused({{"zstd"}, {"zstd"}}, "named twice");
  expect_refused(std::vector<FilterSpec>(9, FilterSpec{"zstd"}), "at most 8");
  EXPECT_OK(MakeFilterChain(SpecWith({})));
  EXPECT_TRUE(ChainOf({}).empty());
}

TEST(FilterTest, ParsesTheFlagForm) {
  Result<std::vector<FilterSpec>> f = ParseFilters("zstd:level=3:min_bytes=0,lz4");
  ASSERT_OK(f);
  EXPECT_EQ(*f, (std::vector<FilterSpec>{{"zstd", {{"level", 3}, {"min_bytes", 0}}}, {"lz4", {}}}));
  EXPECT_TRUE(ParseFilters("")->empty());
  EXPECT_TRUE(ParseFilters("none")->empty());
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"gzip", "unknown filter 'gzip'"},
           {"zstd,", "an empty filter name"},
           {"zstd:level", "'level' of filter 'zstd' is not param=number"},
           {"zstd:level=x", "is not param=number"},
           {"zstd:level=nan", "is not param=number"},
           {"zstd:=3", "is not param=number"},
           {"zstd:level=30", "level must be"},
           {"lz4,lz4", "named twice"}}) {
    Result<std::vector<FilterSpec>> bad = ParseFilters(text);
    EXPECT_TRUE(StatusIs(bad.status(), StatusCode::kInvalidArgument, says)) << text << ": " << bad.status();
    EXPECT_TRUE(StatusIs(bad.status(), StatusCode::kInvalidArgument, "filters '" + text + "'")) << bad.status();
  }
}

}  // namespace
}  // namespace pserver::kv
