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
  TableSpec spec{.name = std::string(1, 't')};
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
  // A trailer naming a filter twice, or out of the chain's order, is refused.
  {
    const FilterChain stacked = ChainOf({{"zstd"}, {"lz4", {{"min_bytes", 0}}}});
    Message m = FilteredPush(ChainOf({{"zstd"}}));
    m.frames.back() = BytesOf(std::vector<uint8_t>{1, 0x01, 1, 0x01});
    EXPECT_TRUE(StatusIs(stacked.Decode(m), StatusCode::kCorruption, "filter code 1"));
    m = FilteredPush(ChainOf({{"zstd"}}));
    m.frames.back() = BytesOf(std::vector<uint8_t>{2, 0x01, 1, 0x01});
    EXPECT_TRUE(StatusIs(stacked.Decode(m), StatusCode::kCorruption, "after the filters before it"));
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
  expect_refused({{"gzip"}}, "unknown filter 'gzip' (this node knows: keycache, zstd, lz4, fp16, q8, sigmod)");
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

// A request of `keys` to server node `to`, routed by `epoch`.
Message RequestTo(uint32_t to, uint64_t epoch, const std::vector<Key>& keys) {
  Message m = PushOf(keys, std::vector<float>(keys.size(), 1.0f));
  m.header.receiver = NodeId(to);
  m.header.epoch = Epoch(epoch);
  return m;
}

std::vector<Key> Range(Key first, size_t n) {
  std::vector<Key> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = first + 7 * i;
  return keys;
}

// What the server's chain makes of what the worker's chain sent: the status, and the message.
std::pair<Status, Message> Deliver(const FilterChain& worker, const FilterChain& server, Message m) {
  EXPECT_OK(worker.Encode(m));
  Status s = server.Decode(m);
  return {s, m};
}

TEST(FilterTest, TheKeyCacheSendsASignatureForAListTheServerHolds) {
  const FilterChain worker = ChainOf({{"keycache"}, {"zstd"}});
  const FilterChain server = ChainOf({{"keycache"}, {"zstd"}});
  const std::vector<Key> keys = Range(100, 1000);
  Message first = RequestTo(3, 1, keys);
  ASSERT_OK(worker.Encode(first));
  EXPECT_GT(first.frames[0].size(), 24u);  // in full (compressed) the first time
  ASSERT_OK(server.Decode(first));
  EXPECT_EQ(Copy(first.frames[0]), Copy(BytesOf(keys)));
  Message second = RequestTo(3, 1, keys);
  ASSERT_OK(worker.Encode(second));
  EXPECT_EQ(second.frames[0].size(), 24u);  // the signature and the count
  const size_t wire = WireBytes(second);
  ASSERT_OK(server.Decode(second));
  EXPECT_EQ(Copy(second.frames[0]), Copy(BytesOf(keys)));  // put back exactly
  EXPECT_LT(wire, 8 * keys.size() / 4);
  // A pull refers to the same list: its keys are the same.
  Message pull = RequestTo(3, 1, keys);
  pull.header.type = MessageType::kPull;
  pull.frames[1] = Bytes();
  auto [s, got] = Deliver(worker, server, pull);
  ASSERT_OK(s);
  EXPECT_EQ(Copy(got.frames[0]), Copy(BytesOf(keys)));
  // Another server never saw it: the keys go in full to it.
  Message other = RequestTo(4, 1, keys);
  ASSERT_OK(worker.Encode(other));
  EXPECT_GT(other.frames[0].size(), 24u);
  // Short lists (under min_keys, 16) are never cached; a resend always carries its keys.
  Message shorter = RequestTo(3, 1, Range(5, 15));
  ASSERT_OK(worker.Encode(shorter));
  ASSERT_OK(server.Decode(shorter));
  shorter = RequestTo(3, 1, Range(5, 15));
  ASSERT_OK(worker.Encode(shorter));
  EXPECT_EQ(shorter.frames[0].size(), 15u * 8);
  Message resend = RequestTo(3, 1, keys);
  resend.header.flags |= transport::kFlagResend;
  ASSERT_OK(worker.Encode(resend));
  EXPECT_GT(resend.frames[0].size(), 24u);
}

TEST(FilterTest, AKeyCacheMissIsNotFoundAndNeverAWrongList) {
  // The server evicted the list (capacity 1000 keys: a second list of 1000 pushes it out).
  const FilterChain worker = ChainOf({{"keycache"}});
  const FilterChain server = ChainOf({{"keycache", {{"capacity_keys", 1000}}}});
  const std::vector<Key> a = Range(0, 1000), b = Range(1, 1000);
  ASSERT_OK(Deliver(worker, server, RequestTo(3, 1, a)).first);
  ASSERT_OK(Deliver(worker, server, RequestTo(3, 1, b)).first);
  auto [miss, m] = Deliver(worker, server, RequestTo(3, 1, a));
  EXPECT_TRUE(StatusIs(miss, StatusCode::kNotFound, "no key list of signature"));
  EXPECT_TRUE(IsKeyCacheMiss(miss));
  EXPECT_NE(miss.message().find("table 't': filter 'keycache'"), std::string::npos) << miss;
  // The part is sent again as a resend: in full, and cached again.
  Message resend = RequestTo(3, 1, a);
  resend.header.flags |= transport::kFlagResend;
  ASSERT_OK(Deliver(worker, server, resend).first);
  ASSERT_OK(Deliver(worker, server, RequestTo(3, 1, a)).first);

  // A new routing view empties both sides: the worker sends the keys again, the server, seeing a
  // message of the newer epoch, drops what it held, and a reference of the old epoch misses.
  const FilterChain server2 = ChainOf({{"keycache"}});
  const FilterChain worker2 = ChainOf({{"keycache"}});
  ASSERT_OK(Deliver(worker2, server2, RequestTo(3, 1, a)).first);
  Message next_view = RequestTo(3, 2, a);
  ASSERT_OK(worker2.Encode(next_view));
  EXPECT_EQ(next_view.frames[0].size(), 8 * a.size());
  ASSERT_OK(server2.Decode(next_view));
  Message stale = RequestTo(3, 1, a);  // a reference routed by epoch 1, as another worker might send
  stale.header.flags |= transport::kFlagFiltered;
  const uint64_t fake[3] = {1, 2, a.size()};
  stale.frames[0] = BytesOf(std::vector<uint64_t>(fake, fake + 3));
  stale.frames.push_back(BytesOf(std::vector<uint8_t>{3, 1}));
  EXPECT_TRUE(IsKeyCacheMiss(server2.Decode(stale)));

  // A part sliced by an older view than the newest the worker sent this server goes in full.
  Message older = RequestTo(3, 1, a);
  ASSERT_OK(worker2.Encode(older));
  EXPECT_EQ(older.frames[0].size(), 8 * a.size());
  // The server keeps one cache per worker: another worker's reference to the same list misses
  // until that worker sent it in full itself.
  Message from_other = RequestTo(3, 2, a);
  ASSERT_OK(worker2.Encode(from_other));
  ASSERT_EQ(from_other.frames[0].size(), 24u);
  from_other.header.sender = NodeId(9);
  EXPECT_TRUE(IsKeyCacheMiss(server2.Decode(from_other)));

  // A reference of the wrong size, or whose count is not the cached list's, is refused.
  Message ref = RequestTo(3, 2, a);
  ASSERT_OK(worker2.Encode(ref));
  ASSERT_EQ(ref.frames[0].size(), 24u);
  Message cut = ref;
  cut.frames[0] = Bytes(cut.frames[0].owner(), cut.frames[0].data(), 16);
  EXPECT_TRUE(StatusIs(server2.Decode(cut), StatusCode::kCorruption, "must be frame 0 of a request, 24 bytes"));
  Message miscounted = ref;
  miscounted.frames[0] = Mutated(miscounted.frames[0], 16, std::byte{0x01});
  EXPECT_TRUE(StatusIs(server2.Decode(miscounted), StatusCode::kCorruption, "its cached list holds 1000"));
  Message wrong_mask = ref;
  wrong_mask.frames.back() = BytesOf(std::vector<uint8_t>{3, 0x02});
  EXPECT_TRUE(StatusIs(server2.Decode(wrong_mask), StatusCode::kCorruption, "must be frame 0"));
  ASSERT_OK(server2.Decode(ref));
  EXPECT_EQ(Copy(ref.frames[0]), Copy(BytesOf(a)));
}

TEST(FilterTest, TheKeyCacheComesBeforeCompressorsAndChecksItsParams) {
  auto refused = [](std::vector<FilterSpec> filters, const std::string& says) {
    Result<FilterChain> chain = MakeFilterChain(SpecWith(std::move(filters)));
    EXPECT_TRUE(StatusIs(chain.status(), StatusCode::kInvalidArgument, says)) << chain.status();
  };
  refused({{"zstd"}, {"keycache"}}, "filter 'keycache' must come before 'zstd'");
  refused({{"keycache", {{"min_keys", 0}}}}, "min_keys must be");
  refused({{"keycache", {{"capacity_keys", 1.5}}}}, "capacity_keys must be");
  refused({{"keycache", {{"min_keys", 100}, {"capacity_keys", 10}}}}, "below min_keys");
  refused({{"keycache", {{"size", 1}}}}, "no param 'size'");
  EXPECT_OK(MakeFilterChain(SpecWith({{"keycache", {{"min_keys", 1}, {"capacity_keys", 1}}}, {"lz4"}})));
}

TEST(FilterTest, ParsesTheFlagForm) {
  Result<std::vector<FilterSpec>> f = ParseFilters("zstd:level=3:min_bytes=0,lz4");
  ASSERT_OK(f);
  EXPECT_EQ(*f, (std::vector<FilterSpec>{{"zstd", {{"level", 3}, {"min_bytes", 0}}}, {"lz4", {}}}));
  EXPECT_TRUE(ParseFilters("")->empty());
  EXPECT_TRUE(ParseFilters("none")->empty());
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"gzip", "unknown filter 'gzip' (this node knows: keycache, zstd, lz4, fp16, q8, sigmod)"},
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
