// The lossy filters (fp16, q8, sigmod): rounding stays within each filter's stated bound, what
// was rounded goes over the wire exactly (a whole push, a part of it, a pull reply), the error
// feedback loses nothing (the sum of what was sent plus what is kept equals the sum of what was
// pushed), NaN and infinities are refused naming the key, damaged frames are refused, and specs
// a table cannot take are refused when the chain is made.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kv/filter/filter.h"
#include "kv/filter/quantize_filter.h"
#include "cluster/cluster_test_util.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::Bytes;
using transport::Message;
using transport::MessageType;

TableSpec TableOf(std::vector<FilterSpec> filters, ValueType type = ValueType::kFloat32, uint32_t width = 1) {
  TableSpec spec{.name = std::string(1, 't')};
  spec.value_type = type;
  spec.width = width;
  spec.updater.name = "add";
  spec.filters = std::move(filters);
  return spec;
}

FilterChain ChainOf(const TableSpec& spec) {
  Result<FilterChain> chain = MakeFilterChain(spec);
  EXPECT_OK(chain);
  return chain.ok() ? std::move(*chain) : FilterChain();
}

template <typename T>
std::vector<T> ValuesOf(const Bytes& b) {
  const T* p = reinterpret_cast<const T*>(b.data());
  return std::vector<T>(p, p + b.size() / sizeof(T));
}

template <typename T>
Rounding PushRounding(const TableSpec& spec, std::vector<Key> keys, std::vector<T> vals, bool may_drop = true) {
  return Rounding{.reply = false,
                  .peer = NodeId(),
                  .may_drop = may_drop,
                  .no_copy = false,
                  .value_type = spec.value_type,
                  .columns = spec.width,
                  .keys = SharedArray<Key>(std::move(keys)),
                  .vals = transport::AsBytes(SharedArray<T>(std::move(vals))),
                  .copy_frame = {}};
}

// A push message of rows `vals` (width per key) for `keys`, as a worker builds it.
template <typename T>
Message PushMessage(const TableSpec& spec, const SharedArray<Key>& keys, const Bytes& vals) {
  Message m;
  m.header.type = MessageType::kPush;
  m.header.table = TableId(1);
  m.header.value_type = spec.value_type;
  m.header.width = spec.width;
  m.frames.push_back(transport::AsBytes(keys));
  m.frames.push_back(vals);
  m.frames.emplace_back();
  return m;
}

// Sends `m` through `chain` and back; expects the values frame was encoded (or not: `encoded`)
// and comes back bit for bit.
void ExpectExactOnTheWire(const FilterChain& chain, const Message& m, bool encoded) {
  Message sent = m;
  ASSERT_OK(chain.Encode(sent));
  EXPECT_EQ((sent.header.flags & transport::kFlagFiltered) != 0, encoded);
  if (encoded) {
    EXPECT_LT(sent.frames[1].size(), m.frames[1].size());
  }
  ASSERT_OK(chain.Decode(sent));
  ASSERT_EQ(sent.frames.size(), m.frames.size());
  EXPECT_EQ(std::vector<std::byte>(sent.frames[1].begin(), sent.frames[1].end()),
            std::vector<std::byte>(m.frames[1].begin(), m.frames[1].end()));
}

TEST(LossyFilterTest, HalfConversionIsExactForEveryHalf) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    if (((bits >> 10) & 0x1f) == 0x1f) continue;  // infinities and NaN: never made
    const double v = HalfValue(static_cast<uint16_t>(bits));
    EXPECT_EQ(RoundToHalf(v), v) << bits;
    EXPECT_EQ(HalfBits(v), bits) << bits;
  }
  EXPECT_EQ(HalfValue(0x3c00), 1.0);
  EXPECT_EQ(HalfValue(0x7bff), 65504.0);
  EXPECT_EQ(HalfValue(0x0001), std::ldexp(1.0, -24));
  // Round half to even, between 1 and the next half (1 + 2^-10).
  EXPECT_EQ(RoundToHalf(1 + std::ldexp(1.0, -11)), 1.0);
  EXPECT_EQ(RoundToHalf(1 + 3 * std::ldexp(1.0, -11)), 1 + std::ldexp(2.0, -10));
  EXPECT_EQ(RoundToHalf(-1 - std::ldexp(1.0, -12)), -1.0);
}

// Rounds pushes of random rows and checks each value's error against the filter's bound, and
// that the rounded push, and a part of it, cross the wire exactly.
template <typename T>
void CheckQuantizer(const std::string& filter, uint32_t width, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << filter << " width " << width << " seed " << seed);
  const TableSpec spec = TableOf({{filter}}, ValueTypeOf<T>::value, width);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<T>> cases;
  std::uniform_real_distribution<double> unit(-1, 1);
  for (double scale : {1e-30, 1e-3, 1.0, 7.5, 1e6, 1e30}) {
    std::vector<T> v(40 * width);
    for (T& x : v) x = static_cast<T>(unit(rng) * scale * std::pow(10.0, unit(rng) * 3));
    cases.push_back(v);
  }
  cases.push_back(std::vector<T>(5 * width, T(3.25)));  // all equal
  cases.push_back(std::vector<T>(5 * width, T(0)));     // all zero
  cases.push_back(std::vector<T>(width, T(-1e-7)));     // one key
  cases.push_back({});                                  // empty
  uint64_t next_key = 1;
  // Whether n rows encode smaller than they are (else they go as they are).
  const size_t code = filter == "q8" ? 1 : 2;
  auto smaller = [&](size_t n) { return n > 0 && 8 + 2 * width + n * width * code < n * width * sizeof(T); };
  for (const std::vector<T>& v : cases) {
    const FilterChain chain = ChainOf(spec);  // fresh: no error feedback from the case before
    std::vector<Key> keys(v.size() / width);
    for (Key& k : keys) k = next_key += 3;
    Rounding r = PushRounding(spec, keys, v);
    ASSERT_OK(chain.Round(r));
    const std::vector<T> sent = ValuesOf<T>(r.vals);
    ASSERT_EQ(sent.size(), v.size());
    ASSERT_EQ(r.keys.size(), keys.size());
    std::vector<double> max(width, 0.0);
    for (size_t i = 0; i < v.size(); ++i) max[i % width] = std::max(max[i % width], std::fabs(double(v[i])));
    for (size_t i = 0; i < v.size(); ++i) {
      const double err = std::fabs(double(sent[i]) - double(v[i]));
      // q8: a 2^e step with max < 128 * 2^e; fp16: 11 significant bits, subnormal below 2^-14 of 2^15 * 2^e.
      const double bound = filter == "q8" ? max[i % width] / 64
                                          : std::fabs(double(v[i])) * std::ldexp(1.0, -11) + max[i % width] * 1e-9;
      EXPECT_LE(err, bound * (1 + 1e-12) + std::numeric_limits<T>::denorm_min()) << "value " << i << " " << v[i];
    }
    const Message whole = PushMessage<T>(spec, r.keys, r.vals);
    ExpectExactOnTheWire(chain, whole, smaller(keys.size()));
    // A part (every third row), as the slicer makes: its own maxima, still exact.
    std::vector<Key> part_keys;
    std::vector<T> part_vals;
    const size_t part_rows = (keys.size() + 2) / 3;
    for (size_t i = 0; i < keys.size(); i += 3) {
      part_keys.push_back(keys[i]);
      part_vals.insert(part_vals.end(), sent.begin() + static_cast<ptrdiff_t>(i * width),
                       sent.begin() + static_cast<ptrdiff_t>((i + 1) * width));
    }
    ExpectExactOnTheWire(chain,
                         PushMessage<T>(spec, SharedArray<Key>(std::move(part_keys)),
                                        transport::AsBytes(SharedArray<T>(std::move(part_vals)))),
                         smaller(part_rows));
  }
}

TEST(LossyFilterTest, QuantizersRoundWithinTheirBoundAndCrossTheWireExactly) {
  const uint64_t seed = std::random_device()();
  std::cout << "seed " << seed << "\n";
  for (const std::string filter : {"fp16", "q8"}) {
    for (uint32_t width : {1u, 3u}) {
      CheckQuantizer<float>(filter, width, seed);
      CheckQuantizer<double>(filter, width, seed + 1);
    }
  }
}

TEST(LossyFilterTest, ValuesTheFilterDidNotRoundGoAsTheyAre) {
  const TableSpec spec = TableOf({{"q8"}});
  const FilterChain chain = ChainOf(spec);
  // 0.3 is no multiple of a power of two that 8 bits reach from 1.
  ExpectExactOnTheWire(chain, PushMessage<float>(spec, SharedArray<Key>(std::vector<Key>{1, 2}),
                                                 transport::AsBytes(SharedArray<float>(std::vector<float>{1.0f, 0.3f}))),
                       false);
  // A double column whose small values would underflow on the large one's grid.
  const TableSpec wide = TableOf({{"fp16"}}, ValueType::kFloat64);
  std::vector<double> spread(8, 1e300);
  spread[3] = 1e-30;
  ExpectExactOnTheWire(ChainOf(wide),
                       PushMessage<double>(wide, SharedArray<Key>(std::vector<Key>{1, 2, 3, 4, 5, 6, 7, 8}),
                                           transport::AsBytes(SharedArray<double>(std::move(spread)))),
                       false);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  ExpectExactOnTheWire(chain, PushMessage<float>(spec, SharedArray<Key>(std::vector<Key>{1}),
                                                 transport::AsBytes(SharedArray<float>(std::vector<float>{nan}))),
                       false);
}

// Sum over keys of the values pushed, of those sent, and of those kept back.
struct Sums {
  std::map<Key, double> pushed, sent;
};

template <typename T>
void ExpectNothingLost(const std::vector<FilterSpec>& filters, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const TableSpec spec = TableOf(filters, ValueTypeOf<T>::value);
  const FilterChain chain = ChainOf(spec);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1, 1);
  Sums sums;
  double scale = 0;
  for (int push = 0; push < 60; ++push) {
    std::vector<Key> keys;
    for (Key k = 0; k < 200; ++k) {
      if (rng() % 3 != 0) keys.push_back(k * 11);
    }
    std::vector<T> vals(keys.size());
    for (T& v : vals) v = static_cast<T>(unit(rng) * std::pow(10.0, unit(rng) * 2));
    for (size_t i = 0; i < keys.size(); ++i) {
      sums.pushed[keys[i]] += double(vals[i]);
      scale += std::fabs(double(vals[i]));
    }
    Rounding r = PushRounding(spec, keys, vals, /*may_drop=*/push % 5 != 4);
    ASSERT_OK(chain.Round(r));
    const std::vector<T> sent = ValuesOf<T>(r.vals);
    ASSERT_EQ(sent.size(), r.keys.size());
    for (size_t i = 0; i < r.keys.size(); ++i) sums.sent[r.keys[i]] += double(sent[i]);
    if (push % 5 == 4) {
      EXPECT_EQ(r.keys.size(), keys.size()) << "a push-pull leaves no key out";
    }
  }
  const std::map<Key, std::vector<double>> held = chain.TakeHeld();
  size_t off = 0;
  for (const auto& [key, pushed] : sums.pushed) {
    const double kept = held.contains(key) ? held.at(key)[0] : 0.0;
    const double sent = sums.sent.contains(key) ? sums.sent.at(key) : 0.0;
    EXPECT_NEAR(sent + kept, pushed, scale * 1e-12) << "key " << key;
    off += sent != pushed;
  }
  EXPECT_GT(off, 0u) << "the filters rounded nothing: the test proves nothing";
  EXPECT_TRUE(chain.TakeHeld().empty()) << "taken once";
}

TEST(LossyFilterTest, ErrorFeedbackLosesNothing) {
  const uint64_t seed = std::random_device()();
  std::cout << "seed " << seed << "\n";
  for (const std::vector<FilterSpec>& filters : std::vector<std::vector<FilterSpec>>{
           {{"fp16"}},
           {{"q8"}},
           {{"sigmod", {{"threshold", 0.5}}}},
           {{"sigmod", {{"relative", 0.3}, {"threshold", 0.01}, {"decay", 0.9}}}, {"q8"}}}) {
    SCOPED_TRACE(filters[0].name + (filters.size() > 1 ? "," + filters[1].name : ""));
    ExpectNothingLost<float>(filters, seed);
    ExpectNothingLost<double>(filters, seed);
  }
}

TEST(LossyFilterTest, SignificantlyModifiedSendsOnlyWhatCrossesTheThreshold) {
  const TableSpec spec = TableOf({{"sigmod", {{"threshold", 1.0}, {"decay", 0.5}}}});
  const FilterChain chain = ChainOf(spec);
  Rounding r = PushRounding<float>(spec, {1, 2, 3}, {0.6f, 2.0f, -0.7f});
  ASSERT_OK(chain.Round(r));
  EXPECT_EQ(std::vector<Key>(r.keys.begin(), r.keys.end()), (std::vector<Key>{2}));
  EXPECT_EQ(ValuesOf<float>(r.vals), (std::vector<float>{2.0f}));
  // Key 1 gathers 0.6 + 0.6 > 1 * 0.5 (the threshold's second step); key 3: -0.7 + 0 > 0.5.
  r = PushRounding<float>(spec, {1, 3}, {0.6f, 0.0f});
  ASSERT_OK(chain.Round(r));
  EXPECT_EQ(std::vector<Key>(r.keys.begin(), r.keys.end()), (std::vector<Key>{1, 3}));
  EXPECT_EQ(ValuesOf<float>(r.vals), (std::vector<float>{1.2f, -0.7f}));
  EXPECT_TRUE(chain.TakeHeld().empty());
  // relative: only keys within a factor of the push's largest change.
  const TableSpec rel_spec = TableOf({{"sigmod", {{"relative", 0.5}}}});
  const FilterChain rel = ChainOf(rel_spec);
  r = PushRounding<float>(rel_spec, {1, 2, 3}, {-4.0f, 1.0f, 2.0f});
  ASSERT_OK(rel.Round(r));
  EXPECT_EQ(std::vector<Key>(r.keys.begin(), r.keys.end()), (std::vector<Key>{1, 3}));
}

TEST(LossyFilterTest, AStoreOverItsBoundIsSentWithThePush) {
  const uint64_t seed = std::random_device()();
  std::cout << "seed " << seed << "\n";
  std::mt19937_64 rng(seed);
  constexpr size_t kBound = 8;
  for (const std::vector<FilterSpec>& filters : std::vector<std::vector<FilterSpec>>{
           {{"q8", {{"held_keys", kBound}}}},
           {{"sigmod", {{"threshold", 0.5}, {"held_keys", kBound}}}, {"fp16", {{"held_keys", kBound}}}}}) {
    SCOPED_TRACE(filters[0].name);
    const TableSpec spec = TableOf(filters, ValueType::kFloat64);
    const FilterChain chain = ChainOf(spec);
    std::map<Key, double> pushed, sent;
    int flushes = 0;
    for (int push = 0; push < 200; ++push) {
      std::vector<Key> keys;
      std::vector<double> vals;
      for (Key k = rng() % 7; k < 40; k += 1 + rng() % 9) {
        keys.push_back(k);
        vals.push_back(std::uniform_real_distribution<double>(-1, 1)(rng));
        pushed[k] += vals.back();
      }
      const std::vector<Key> asked = keys;
      Rounding r = PushRounding(spec, std::move(keys), std::move(vals));
      ASSERT_OK(chain.Round(r));
      const std::vector<double> out = ValuesOf<double>(r.vals);
      bool extra = false;
      for (size_t i = 0; i < r.keys.size(); ++i) {
        sent[r.keys[i]] += out[i];
        extra = extra || !std::binary_search(asked.begin(), asked.end(), r.keys[i]);
      }
      ASSERT_TRUE(std::is_sorted(r.keys.begin(), r.keys.end()));
      if (extra) ++flushes;
    }
    EXPECT_GT(flushes, 0) << "40 keys never stayed under a bound of 8";
    // A push-pull over the bound takes nothing held: its reply must hold its own keys' rows only.
    std::vector<Key> many(2 * kBound);
    for (size_t i = 0; i < many.size(); ++i) many[i] = 100 + i;
    Rounding pp = PushRounding(spec, many, std::vector<double>(many.size(), 0.3), /*may_drop=*/false);
    ASSERT_OK(chain.Round(pp));
    EXPECT_EQ(std::vector<Key>(pp.keys.begin(), pp.keys.end()), many);
    for (size_t i = 0; i < pp.keys.size(); ++i) sent[pp.keys[i]] += ValuesOf<double>(pp.vals)[i];
    for (Key k : many) pushed[k] += 0.3;
    for (const auto& [key, row] : chain.TakeHeld()) sent[key] += row[0];
    for (const auto& [key, sum] : pushed) EXPECT_NEAR(sent[key], sum, 1e-12) << "key " << key;
  }
}

TEST(LossyFilterTest, AReplyStoreOverItsBoundStartsAgain) {
  // Two keys pulled in turn: with room for one, the store of each reply's feedback is emptied
  // before the next, so a key's replies are all the same rounding of 1/3; with room for both,
  // feedback makes them alternate around it.
  for (const double bound : {1.0, 2.0}) {
    const TableSpec spec = TableOf({{"fp16", {{"push", 0}, {"held_keys", bound}}}}, ValueType::kFloat64);
    const FilterChain chain = ChainOf(spec);
    std::set<double> seen;
    for (int pull = 0; pull < 20; ++pull) {
      for (Key key : {Key{1}, Key{2}}) {
        Rounding r = PushRounding<double>(spec, {key}, {1.0 / 3});
        r.reply = true;
        r.peer = NodeId(1);
        r.may_drop = false;
        ASSERT_OK(chain.Round(r));
        if (key == 1) seen.insert(ValuesOf<double>(r.vals)[0]);
      }
    }
    EXPECT_EQ(seen.size(), bound == 1.0 ? 1u : 2u) << "held_keys " << bound;
  }
}

TEST(LossyFilterTest, NanAndInfinitiesAreRefusedNamingTheKey) {
  for (const std::string filter : {"fp16", "q8", "sigmod"}) {
    const TableSpec spec = TableOf({{filter}});
    const FilterChain chain = ChainOf(spec);
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      Rounding r = PushRounding<float>(spec, {5, 9}, {0.25f, bad});
      EXPECT_TRUE(StatusIs(chain.Round(r), StatusCode::kInvalidArgument, "key 9 holds")) << filter;
      EXPECT_TRUE(StatusIs(chain.Round(r), StatusCode::kInvalidArgument, "finite values only")) << filter;
      EXPECT_EQ(ValuesOf<float>(r.vals)[0], 0.25f) << "nothing rounded";
    }
    EXPECT_TRUE(chain.TakeHeld().empty()) << "nothing kept";
  }
}

TEST(LossyFilterTest, PullRepliesAreRoundedWithFeedbackPerWorker) {
  const TableSpec spec = TableOf({{"fp16", {{"push", 0}}}}, ValueType::kFloat64);
  const FilterChain chain = ChainOf(spec);
  EXPECT_FALSE(chain.rounds_pushes());
  ASSERT_TRUE(chain.rounds_replies());
  const double w = 1.0 / 3;
  double received_a = 0, received_b = 0;
  for (int pull = 0; pull < 1000; ++pull) {
    for (auto [peer, received] : {std::pair{1u, &received_a}, std::pair{2u, &received_b}}) {
      Rounding r = PushRounding<double>(spec, {7}, {w});
      r.reply = true;
      r.peer = NodeId(peer);
      r.may_drop = false;
      ASSERT_OK(chain.Round(r));
      *received += ValuesOf<double>(r.vals)[0];
      if (pull == 0) {
        EXPECT_NE(ValuesOf<double>(r.vals)[0], w);
      }
    }
  }
  // A stored zero reads as zero, and drops what was kept for the key.
  Rounding zero = PushRounding<double>(spec, {7}, {0.0});
  zero.reply = true;
  zero.peer = NodeId(1);
  ASSERT_OK(chain.Round(zero));
  EXPECT_EQ(ValuesOf<double>(zero.vals)[0], 0.0);
  // What a coarse grid left (7 pulled beside 1000) does not swamp a later pull of 7 alone: the
  // feedback added is at most a step of the value's own grid.
  const TableSpec q8_spec = TableOf({{"q8", {{"push", 0}}}}, ValueType::kFloat64);
  const FilterChain q8 = ChainOf(q8_spec);
  Rounding both = PushRounding<double>(q8_spec, {1, 2}, {1000.0, 0.01});
  both.reply = true;
  both.peer = NodeId(1);
  ASSERT_OK(q8.Round(both));
  EXPECT_EQ(ValuesOf<double>(both.vals)[1], 0.0);  // 0.01 on a grid of 8: kept back
  Rounding alone = PushRounding<double>(q8_spec, {2}, {0.01});
  alone.reply = true;
  alone.peer = NodeId(1);
  ASSERT_OK(q8.Round(alone));
  EXPECT_NEAR(ValuesOf<double>(alone.vals)[0], 0.01, 0.01 / 32);
  // Each worker's values average to w, to far better than a half's precision.
  EXPECT_NEAR(received_a / 1000, w, 1e-6);
  EXPECT_NEAR(received_b / 1000, w, 1e-6);
  // A reply goes encoded; a push goes as it is.
  Message reply;
  reply.header.type = MessageType::kPull;
  reply.header.flags = transport::kFlagReply;
  reply.header.value_type = ValueType::kFloat64;
  reply.header.width = 1;
  reply.frames = {Bytes(), transport::AsBytes(SharedArray<double>(std::vector<double>{0.5, 0.25})), Bytes()};
  ExpectExactOnTheWire(chain, reply, true);
  ExpectExactOnTheWire(chain,
                       PushMessage<double>(spec, SharedArray<Key>(std::vector<Key>{1, 2}),
                                           transport::AsBytes(SharedArray<double>(std::vector<double>{0.5, 0.25}))),
                       false);
}

TEST(LossyFilterTest, DamagedFramesAreRefused) {
  const TableSpec spec = TableOf({{"fp16"}}, ValueType::kFloat32, 2);
  const FilterChain chain = ChainOf(spec);
  std::vector<float> vals(16);
  for (size_t i = 0; i < vals.size(); ++i) vals[i] = static_cast<float>(i) - 5;
  Message m = PushMessage<float>(spec, SharedArray<Key>(std::vector<Key>{1, 2, 3, 4, 5, 6, 7, 8}),
                                 transport::AsBytes(SharedArray<float>(std::move(vals))));
  ASSERT_OK(chain.Encode(m));
  ASSERT_TRUE(m.header.flags & transport::kFlagFiltered);
  auto damaged = [&](auto change, const std::string& says) {
    Message d = m;
    std::vector<std::byte> frame(d.frames[1].begin(), d.frames[1].end());
    change(frame);
    d.frames[1] = transport::BytesFromString(std::string(reinterpret_cast<const char*>(frame.data()), frame.size()));
    const Status s = chain.Decode(d);
    EXPECT_TRUE(StatusIs(s, StatusCode::kCorruption, says)) << s;
    EXPECT_TRUE(StatusIs(s, StatusCode::kCorruption, "table 't': filter 'fp16'")) << s;
  };
  // The frame: checksum (8 bytes), 2 exponents (2 each), 8 rows of 2 halves.
  damaged([](std::vector<std::byte>& f) { f.pop_back(); }, "2 exponents and whole rows");
  damaged([](std::vector<std::byte>& f) { f.resize(9); }, "2 exponents and whole rows");
  damaged([](std::vector<std::byte>& f) { f[9] = std::byte{0x7f}; }, "beyond any value's");
  damaged([](std::vector<std::byte>& f) { f[13] = std::byte{0x7c}; }, "an infinity or NaN");
  damaged([](std::vector<std::byte>& f) { f[8] = std::byte{0x7f}; f[9] = std::byte{0}; },
          "beyond the range of float32");
  damaged([](std::vector<std::byte>& f) { f[12] ^= std::byte{1}; }, "checksum is not the sender's");
  damaged([](std::vector<std::byte>& f) { f[0] ^= std::byte{1}; }, "checksum is not the sender's");
}

TEST(LossyFilterTest, TablesTheyCannotRoundAreRefused) {
  auto refused = [](const TableSpec& spec, const std::string& says) {
    Result<FilterChain> chain = MakeFilterChain(spec);
    EXPECT_TRUE(StatusIs(chain.status(), StatusCode::kInvalidArgument, says)) << chain.status();
    EXPECT_TRUE(StatusIs(chain.status(), StatusCode::kInvalidArgument, "table 't'")) << chain.status();
  };
  refused(TableOf({{"q8"}}, ValueType::kInt32), "rounds floating-point values, and the table holds int32");
  TableSpec var = TableOf({{"fp16"}});
  var.variable_length = true;
  refused(var, "variable-length values");
  TableSpec assign = TableOf({{"q8"}});
  assign.updater.name = "assign";
  refused(assign, "rule 'assign' would not add up (set push=0 to round pull replies only)");
  assign.filters = {{"q8", {{"push", 0}}}};
  EXPECT_OK(MakeFilterChain(assign));
  assign.filters = {{"sigmod"}};
  refused(assign, "rule 'assign' would not add up");
  TableSpec ftrl = TableOf({{"fp16"}});
  ftrl.updater = {.name = "ftrl", .params = {{"scaled", 1}}};
  refused(ftrl, "rule 'ftrl' with scaled=1 takes the second half of a push as a scale");
  ftrl.filters = {{"fp16", {{"push", 0}}}};
  EXPECT_OK(MakeFilterChain(ftrl));
  refused(TableOf({{"q8", {{"push", 0}, {"pull", 0}}}}), "would do nothing");
  refused(TableOf({{"q8", {{"push", 2}}}}), "push must be 0 or 1");
  refused(TableOf({{"fp16"}, {"q8"}}), "both quantise values");
  refused(TableOf({{"zstd"}, {"q8"}}), "filter 'q8' must come before 'zstd'");
  refused(TableOf({{"q8"}, {"sigmod"}}), "filter 'sigmod' must come before 'q8'");
  refused(TableOf({{"q8"}}, ValueType::kInt64), "the table holds int64");
  refused(TableOf({{"sigmod", {{"decay", 0}}}}), "decay 0 is out of range");
  refused(TableOf({{"sigmod", {{"relative", 2}}}}), "relative 2 is out of range");
  refused(TableOf({{"sigmod", {{"level", 2}}}}), "no param 'level'");
  refused(TableOf({{"q8", {{"held_keys", 0}}}}), "held_keys 0 is out of range");
  refused(TableOf({{"sigmod", {{"held_keys", 2.5}}}}), "held_keys 2.5 is out of range");
  EXPECT_OK(MakeFilterChain(TableOf({{"sigmod", {{"threshold", 1e-4}}}, {"q8"}, {"keycache"}, {"zstd"}})));
  Result<std::vector<FilterSpec>> parsed = ParseFilters("sigmod:threshold=0.001:decay=0.99,fp16:pull=0,keycache,lz4");
  ASSERT_OK(parsed);
  EXPECT_EQ(parsed->size(), 4u);
}

}  // namespace
}  // namespace pserver::kv
