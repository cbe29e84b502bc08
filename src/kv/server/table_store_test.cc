#include "kv/server/table_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/server/table_store_test_util.h"
#include "kv/server/updaters.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using transport::MessageType;

// Update rules written here, so that these tests do not depend on the built-in ones.

// value -= lr * push, lr = 0.5 (exact in binary floating point).
class SgdRule : public Updater {
 public:
  static constexpr double kLr = 0.5;
  void Apply(const UpdateContext&, std::span<float> v, std::span<float>, std::span<const float> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] -= static_cast<float>(kLr) * g[i];
  }
  void Apply(const UpdateContext&, std::span<double> v, std::span<double>, std::span<const double> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] -= kLr * g[i];
  }
};

// Two state values per value: state[0..w) counts the pushes, state[w..2w) sums them; the value
// becomes their mean plus ctx.clock (to check the context is passed through).
class MeanRule : public Updater {
 public:
  uint32_t state_per_value() const override { return 2; }
  void Apply(const UpdateContext& ctx, std::span<float> v, std::span<float> s, std::span<const float> g) const override {
    Update(ctx, v, s, g);
  }
  void Apply(const UpdateContext& ctx, std::span<double> v, std::span<double> s, std::span<const double> g) const override {
    Update(ctx, v, s, g);
  }

 private:
  template <typename T>
  static void Update(const UpdateContext& ctx, std::span<T> v, std::span<T> s, std::span<const T> g) {
    const size_t w = v.size();
    for (size_t i = 0; i < w; ++i) {
      s[i] += 1;
      s[w + i] += g[i];
      v[i] = s[w + i] / s[i] + static_cast<T>(ctx.clock);
    }
  }
};

// Push arity 2: value += push[i] * push[w + i].
class ProductRule : public Updater {
 public:
  uint32_t push_arity() const override { return 2; }
  void Apply(const UpdateContext&, std::span<float> v, std::span<float>, std::span<const float> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] += g[i] * g[v.size() + i];
  }
  void Apply(const UpdateContext&, std::span<double> v, std::span<double>, std::span<const double> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] += g[i] * g[v.size() + i];
  }
};

// value += push, for every type.
class AddRule : public Updater {
 public:
  bool Supports(ValueType) const override { return true; }
  void Apply(const UpdateContext&, std::span<float> v, std::span<float>, std::span<const float> g) const override { Add(v, g); }
  void Apply(const UpdateContext&, std::span<double> v, std::span<double>, std::span<const double> g) const override { Add(v, g); }
  void Apply(const UpdateContext&, std::span<int32_t> v, std::span<int32_t>, std::span<const int32_t> g) const override { Add(v, g); }
  void Apply(const UpdateContext&, std::span<int64_t> v, std::span<int64_t>, std::span<const int64_t> g) const override { Add(v, g); }

 private:
  template <typename T>
  static void Add(std::span<T> v, std::span<const T> g) {
    for (size_t i = 0; i < v.size(); ++i) v[i] += g[i];
  }
};

using table_store_test::DenseSpec;
using table_store_test::ExpectInvalid;
using table_store_test::kTable;
using table_store_test::Make;
using table_store_test::Pull;
using table_store_test::Push;
using table_store_test::Request;
using table_store_test::Spec;
using table_store_test::Values;
using table_store_test::VarRequest;

TEST(TableStoreTest, CreateRefusesSpecsTheRuleOrStorageCannotTake) {
  const auto create = [](const TableSpec& spec, std::unique_ptr<Updater> rule) {
    return TableStore::Create(kTable, spec, std::move(rule), nullptr).status();
  };
  ExpectInvalid(create(Spec(), nullptr), "no update rule");
  TableSpec var = Spec();
  var.variable_length = true;
  EXPECT_OK(create(var, std::make_unique<AddRule>()));
  var.width = 0;  // ignored for variable length
  EXPECT_OK(create(var, std::make_unique<AddRule>()));
  ExpectInvalid(create(Spec(ValueType::kFloat32, 0), std::make_unique<AddRule>()), "width must be at least 1");
  ExpectInvalid(create(Spec(ValueType::kInt32), std::make_unique<SgdRule>()), "int32");
  ExpectInvalid(create(Spec(), std::make_unique<ProductRule>()), "the table declares 1");
  TableSpec arity2 = Spec();
  arity2.push_arity = 2;
  ExpectInvalid(create(arity2, std::make_unique<SgdRule>()), "the table declares 2");
  EXPECT_OK(create(arity2, std::make_unique<ProductRule>()));
  TableSpec uniform_int = Spec(ValueType::kInt64);
  uniform_int.initializer = {InitializerSpec::Kind::kUniform, 1.0, 1};
  ExpectInvalid(create(uniform_int, std::make_unique<AddRule>()), "uniform");
  TableSpec negative = Spec();
  negative.initializer = {InitializerSpec::Kind::kUniform, -1.0, 1};
  ExpectInvalid(create(negative, std::make_unique<SgdRule>()), "scale");
  // Dense storage needs kRange placement and a range of 1..2^32 keys.
  TableSpec dense = DenseSpec({0, ~Key{0}});
  ExpectInvalid(create(dense, std::make_unique<SgdRule>()), "at most 2^32 keys");
  dense.key_range = {10, 9};
  ExpectInvalid(create(dense, std::make_unique<SgdRule>()), "key range");
  dense.key_range = {10, 20};
  dense.placement = KeyPlacement::kHashed;
  ExpectInvalid(create(dense, std::make_unique<SgdRule>()), "kRange");
  dense.placement = KeyPlacement::kRange;
  EXPECT_OK(create(dense, std::make_unique<SgdRule>()));
  dense.variable_length = true;
  ExpectInvalid(create(dense, std::make_unique<SgdRule>()), "variable-length");
  // The rule's own widths (Updater::FitsWidth): "prox" with gradient=1 keeps (w, G) rows of width 2.
  TableSpec pair = Spec(ValueType::kFloat64, 3);
  pair.updater = UpdaterSpec{"prox", {{"gradient", 1}}};
  Result<std::unique_ptr<Updater>> prox = MakeProxUpdater(pair.updater);
  ASSERT_OK(prox);
  ExpectInvalid(create(pair, std::move(*prox)), "the table needs width 2, not 3");
  pair.width = 2;
  prox = MakeProxUpdater(pair.updater);
  ASSERT_OK(prox);
  EXPECT_OK(create(pair, std::move(*prox)));
}

TEST(TableStoreTest, SgdPushesGiveTheClosedForm) {
  auto store = Make(Spec(ValueType::kFloat32, 2), std::make_unique<SgdRule>());
  ASSERT_OK(Push<float>(*store, {3, 5}, {1, 2, 3, 4}, 2));
  ASSERT_OK(Push<float>(*store, {5, 9}, {10, 20, -2, 6}, 2));
  EXPECT_EQ(Pull<float>(*store, {3, 5, 9, 11}, 2),
            (std::vector<float>{-0.5f, -1.0f, -6.5f, -12.0f, 1.0f, -3.0f, 0.0f, 0.0f}));
  EXPECT_EQ(store->num_keys(), 3u);
}

TEST(TableStoreTest, RuleStateLivesBesideTheValueAndStartsAtZero) {
  TableSpec spec = Spec(ValueType::kFloat64, 2);
  spec.initializer = {InitializerSpec::Kind::kUniform, 1.0, 99};  // the state still starts at 0
  auto store = Make(spec, std::make_unique<MeanRule>());
  ASSERT_OK(Push<double>(*store, {1}, {2, 4}, 2, /*clock=*/0));
  ASSERT_OK(Push<double>(*store, {1}, {6, 0}, 2, /*clock=*/10));
  EXPECT_EQ(Pull<double>(*store, {1}, 2), (std::vector<double>{14, 12}));  // mean + clock
  std::vector<double> value(2), state(4);
  int rows = 0;
  store->ForEach([&](Key key, std::span<const std::byte> v, std::span<const std::byte> s) {
    ++rows;
    EXPECT_EQ(key, 1u);
    ASSERT_EQ(v.size(), 2 * sizeof(double));
    ASSERT_EQ(s.size(), 4 * sizeof(double));
    std::memcpy(value.data(), v.data(), v.size());
    std::memcpy(state.data(), s.data(), s.size());
  });
  EXPECT_EQ(rows, 1);
  EXPECT_EQ(value, (std::vector<double>{14, 12}));
  EXPECT_EQ(state, (std::vector<double>{2, 2, 8, 4}));  // counts, then sums
}

TEST(TableStoreTest, PushArityTwoGivesTheRuleBothBlocks) {
  TableSpec spec = Spec(ValueType::kFloat32, 2);
  spec.push_arity = 2;
  auto store = Make(spec, std::make_unique<ProductRule>());
  ASSERT_OK(Push<float>(*store, {4}, {1, 2, 3, 4}, 2));  // (1*3, 2*4)
  EXPECT_EQ(Pull<float>(*store, {4}, 2), (std::vector<float>{3, 8}));
}

TEST(TableStoreTest, PushPullAnswersAfterThePush) {
  auto store = Make(Spec(), std::make_unique<AddRule>());
  ASSERT_OK(Push<float>(*store, {1, 2}, {1, 1}));
  ServerResponse resp;
  ASSERT_OK(store->Handle(Request<float>(MessageType::kPushPull, {2, 1, 3}, {5, 6, 7}, 1), UpdateContext{}, &resp));
  EXPECT_EQ(Values<float>(resp), (std::vector<float>{6, 7, 7}));  // request order
  EXPECT_TRUE(resp.lens.empty());
}

TEST(TableStoreTest, RepeatedKeysAreAppliedOncePerOccurrence) {
  auto store = Make(Spec(ValueType::kInt64), std::make_unique<AddRule>());
  ASSERT_OK(Push<int64_t>(*store, {8, 8, 3, 8}, {1, 2, 5, 4}));
  EXPECT_EQ(Pull<int64_t>(*store, {8, 3}), (std::vector<int64_t>{7, 5}));
}

TEST(TableStoreTest, NeverPushedPullReadsTheInitialValueWithoutStoring) {
  TableSpec spec = Spec(ValueType::kFloat32, 3);
  spec.initializer = {InitializerSpec::Kind::kUniform, 0.25, 12345};
  auto store = Make(spec, std::make_unique<SgdRule>());
  const std::vector<float> first = Pull<float>(*store, {100, 200}, 3);
  EXPECT_EQ(store->num_keys(), 0u);
  ASSERT_EQ(first.size(), 6u);
  for (uint32_t c = 0; c < 3; ++c) {
    EXPECT_EQ(first[c], static_cast<float>(InitialValue(spec.initializer, 100, c)));
    EXPECT_EQ(first[3 + c], static_cast<float>(InitialValue(spec.initializer, 200, c)));
  }
  EXPECT_EQ(Pull<float>(*store, {100, 200}, 3), first);  // the same again
  // The first push stores the initialised row, then applies the rule.
  ASSERT_OK(Push<float>(*store, {200}, {2, 4, 8}, 3));
  EXPECT_EQ(store->num_keys(), 1u);
  EXPECT_EQ(Pull<float>(*store, {200}, 3),
            (std::vector<float>{first[3] - 1.0f, first[4] - 2.0f, first[5] - 4.0f}));
}

TEST(TableStoreTest, UniformInitializerIsDeterministicAndInRange) {
  const InitializerSpec init{InitializerSpec::Kind::kUniform, 0.01, 7};
  double sum = 0;
  double lo = 1, hi = -1;
  std::set<double> distinct;
  for (Key k = 0; k < 20000; ++k) {
    for (uint32_t c = 0; c < 4; ++c) {
      const double v = InitialValue(init, k, c);
      ASSERT_EQ(v, InitialValue(init, k, c));
      ASSERT_GE(v, -0.01);
      ASSERT_LE(v, 0.01);
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      distinct.insert(v);
    }
  }
  EXPECT_NEAR(sum / 80000, 0.0, 0.0002);  // the mean of U[-0.01, 0.01] over 80k draws
  EXPECT_LT(lo, -0.0099);
  EXPECT_GT(hi, 0.0099);
  EXPECT_GT(distinct.size(), 79000u);
  InitializerSpec other = init;
  other.seed = 8;
  EXPECT_NE(InitialValue(init, 5, 0), InitialValue(other, 5, 0));
  EXPECT_EQ(InitialValue({}, 5, 0), 0.0);  // kZero
}

// Fixed values of the uniform initializer, written down once (from the formula in
// table_store.cc: three rounds of the storage mix (Stafford's Mix13, kv/server/sparse_rows.h)
// over seed, key and column, the top 53 bits as u in [0, 1), scale * (2u - 1)): a change of the function, which would change
// every model trained with it, or an initializer that ignores its seed, key or column, fails.
TEST(TableStoreTest, UniformInitializerGivesTheDocumentedFixedValues) {
  struct Golden {
    double scale;
    uint64_t seed;
    Key key;
    uint32_t column;
    double value;
  };
  const Golden golden[] = {
      {1, 0, 0, 0, -0x1.f5219a8a4f8a8p-2},
      {1, 0, 1, 0, -0x1.0988ce154bde2p-1},  // another key
      {1, 0, 0, 1, -0x1.157c34c84b38p-6},   // another column
      {1, 7, 0, 0, 0x1.fc64064afbfbp-4},    // another seed
      {0.01, 7, 12345, 3, 0x1.4d5df6f312029p-10},
      {1, ~uint64_t{0}, ~Key{0}, 7, 0x1.5129478be2fbep-1},
  };
  for (const Golden& g : golden) {
    const InitializerSpec init{InitializerSpec::Kind::kUniform, g.scale, g.seed};
    EXPECT_EQ(InitialValue(init, g.key, g.column), g.value)
        << "scale " << g.scale << " seed " << g.seed << " key " << g.key << " column " << g.column;
  }
}

// Properties a broken initializer fails, independent of the hash: the scale multiplies
// exactly; two seeds give unrelated streams (no key shares its value, no correlation); the
// values fill [-scale, scale] evenly (ten bins, each within 5 % of a tenth); the variance is
// that of U[-s, s], s^2 / 3.
TEST(TableStoreTest, UniformInitializerScalesExactlyAndSeedsGiveUnrelatedStreams) {
  const InitializerSpec one{InitializerSpec::Kind::kUniform, 1.0, 11};
  const InitializerSpec four{InitializerSpec::Kind::kUniform, 4.0, 11};
  const InitializerSpec other{InitializerSpec::Kind::kUniform, 1.0, 12};
  constexpr int kKeys = 50000;
  int same = 0;
  double dot = 0, sum_sq = 0;
  std::vector<int> bins(10, 0);
  for (Key k = 0; k < kKeys; ++k) {
    const double a = InitialValue(one, k, 0);
    const double b = InitialValue(other, k, 0);
    ASSERT_EQ(InitialValue(four, k, 0), 4 * a) << "key " << k;
    same += a == b ? 1 : 0;
    dot += a * b;
    sum_sq += a * a;
    ++bins[std::min(9, static_cast<int>((a + 1) * 5))];
  }
  EXPECT_EQ(same, 0);
  EXPECT_LT(std::abs(dot / kKeys), 0.01);  // correlation of two independent U[-1, 1]: ~0 +- 0.0015
  EXPECT_NEAR(sum_sq / kKeys, 1.0 / 3, 0.01);
  for (int b = 0; b < 10; ++b) {
    EXPECT_NEAR(bins[b], kKeys / 10, kKeys / 200) << "bin " << b;
  }
}

TEST(TableStoreTest, DenseRowsExistFromTheStartAndRefuseKeysOutsideTheRange) {
  TableSpec spec = DenseSpec({1000, 1099}, 2);
  spec.initializer = {InitializerSpec::Kind::kUniform, 1.0, 3};
  auto store = Make(spec, std::make_unique<SgdRule>());
  EXPECT_EQ(store->num_keys(), 100u);
  const std::vector<float> init = Pull<float>(*store, {1000, 1099}, 2);
  EXPECT_EQ(init[0], static_cast<float>(InitialValue(spec.initializer, 1000, 0)));
  EXPECT_EQ(init[3], static_cast<float>(InitialValue(spec.initializer, 1099, 1)));
  ASSERT_OK(Push<float>(*store, {1000}, {2, 2}, 2));
  // A request with one key outside the range is refused whole, naming the key and the range.
  const Status s = Push<float>(*store, {1000, 1100}, {2, 2, 2, 2}, 2);
  ExpectInvalid(s, "key 1100");
  ExpectInvalid(s, "[1000, 1099]");
  ServerResponse resp;
  ExpectInvalid(store->Handle(Request<float>(MessageType::kPull, {999}, {}, 2), UpdateContext{}, &resp), "key 999");
  EXPECT_EQ(Pull<float>(*store, {1000}, 2), (std::vector<float>{init[0] - 1, init[1] - 1}));
  ExpectInvalid(store->PutRow(5, std::as_bytes(std::span<const float>(init.data(), 2)), {}), "outside");
  size_t rows = 0;
  store->ForEach([&](Key, std::span<const std::byte>, std::span<const std::byte>) { ++rows; });
  EXPECT_EQ(rows, 100u);
}

// A dense table holds the ranges it is given: a kept range keeps its rows, a new one starts at
// initial values but takes over the rows of keys held before, and a range given up is freed.
TEST(TableStoreTest, DenseOwnedRangesGrowAndShrinkKeepingTheRowsOfKeysStillHeld) {
  TableSpec spec = DenseSpec({0, 999}, 1);
  spec.initializer = {InitializerSpec::Kind::kUniform, 1.0, 5};
  auto store = Make(spec, std::make_unique<AddRule>(), nullptr, std::vector<KeyRange>{{100, 199}, {500, 599}});
  EXPECT_EQ(store->num_keys(), 200u);
  EXPECT_EQ(store->owned_ranges(), (std::vector<KeyRange>{{100, 199}, {500, 599}}));
  const float init150 = static_cast<float>(InitialValue(spec.initializer, 150, 0));
  const float init520 = static_cast<float>(InitialValue(spec.initializer, 520, 0));
  ASSERT_OK(Push<float>(*store, {150, 520}, {1, 2}));
  const size_t bytes_of_200 = store->memory_bytes();
  // [100, 199] grows to [50, 249] (adjacent [250, 260] merges in); [500, 599] is given up.
  ASSERT_OK(store->SetOwnedRanges({{250, 260}, {50, 249}}));
  EXPECT_EQ(store->owned_ranges(), (std::vector<KeyRange>{{50, 260}}));
  EXPECT_EQ(store->num_keys(), 211u);
  EXPECT_EQ(Pull<float>(*store, {50, 150, 260}, 1),
            (std::vector<float>{static_cast<float>(InitialValue(spec.initializer, 50, 0)), init150 + 1,
                                static_cast<float>(InitialValue(spec.initializer, 260, 0))}));
  ExpectInvalid(Push<float>(*store, {520}, {1}), "key 520");
  // Cutting a held range keeps the rows of the part still held.
  ASSERT_OK(store->SetOwnedRanges({{150, 260}}));
  EXPECT_EQ(store->num_keys(), 111u);
  EXPECT_EQ(Pull<float>(*store, {150}, 1), (std::vector<float>{init150 + 1}));
  ASSERT_OK(store->SetOwnedRanges({{50, 260}}));
  EXPECT_EQ(Pull<float>(*store, {100, 150}, 1),
            (std::vector<float>{static_cast<float>(InitialValue(spec.initializer, 100, 0)), init150 + 1}));
  // Taking the range back starts it afresh: its rows were handed over.
  ASSERT_OK(store->SetOwnedRanges({{50, 260}, {500, 599}}));
  EXPECT_EQ(Pull<float>(*store, {520}, 1), (std::vector<float>{init520}));
  // Owning nothing frees every row.
  ASSERT_OK(store->SetOwnedRanges({}));
  EXPECT_EQ(store->num_keys(), 0u);
  EXPECT_LT(store->memory_bytes(), bytes_of_200);
  // A range outside the declared one is refused, changing nothing.
  ASSERT_OK(store->SetOwnedRanges({{0, 9}}));
  ExpectInvalid(store->SetOwnedRanges({{990, 1000}}), "not within its key range");
  EXPECT_EQ(store->owned_ranges(), (std::vector<KeyRange>{{0, 9}}));
}

// The key ranges a server owns of a kRange table are exactly the keys whose routing keys its
// ring segments hold, one run per segment.
TEST(TableStoreTest, KeyRangesOfRoutingAreTheKeysRoutedToTheRanges) {
  TableSpec spec = DenseSpec({1000, 1999}, 1);
  const std::vector<std::vector<KeyRange>> routings = {
      {{0, ~uint64_t{0}}},
      {{0, uint64_t{1} << 62}, {uint64_t{3} << 62, ~uint64_t{0}}},
      {{uint64_t{1} << 63, uint64_t{1} << 63}},  // a single routing key: the key mapped there, if any
      {{5, 6}},                                   // between two keys' routing keys: none
  };
  for (const std::vector<KeyRange>& routing : routings) {
    const std::vector<KeyRange> ranges = KeyRangesOfRouting(spec, routing);
    const KeyPredicate routed = RoutingRangePredicate(spec, routing);
    auto in_ranges = [&](Key k) {
      return std::any_of(ranges.begin(), ranges.end(), [k](KeyRange r) { return r.Contains(k); });
    };
    for (Key k = 990; k <= 2010; ++k) ASSERT_EQ(in_ranges(k), routed(k)) << "key " << k;
  }
  EXPECT_EQ(KeyRangesOfRouting(spec, {{0, ~uint64_t{0}}}), (std::vector<KeyRange>{{1000, 1999}}));
  TableSpec hashed = Spec();
  EXPECT_TRUE(KeyRangesOfRouting(hashed, {{0, ~uint64_t{0}}}).empty());
}

TEST(TableStoreTest, AcceptsValuesThatAreNotAligned) {
  auto store = Make(Spec(ValueType::kFloat64), std::make_unique<AddRule>());
  std::vector<std::byte> buf(1 + 2 * sizeof(double));
  const double vals[2] = {1.5, -2.5};
  std::memcpy(buf.data() + 1, vals, sizeof(vals));
  transport::Bytes all = transport::Bytes(std::move(buf));
  ServerRequest req = Request<double>(MessageType::kPush, {1, 2}, {}, 1);
  req.vals = all.Slice(1, all.size());
  ServerResponse resp;
  ASSERT_OK(store->Handle(req, UpdateContext{}, &resp));
  EXPECT_EQ(Pull<double>(*store, {1, 2}), (std::vector<double>{1.5, -2.5}));
}

TEST(TableStoreTest, PutRowRestoresWhatForEachReports) {
  auto a = Make(Spec(ValueType::kFloat32, 2), std::make_unique<MeanRule>());
  ASSERT_OK(Push<float>(*a, {1, 50, 1}, {1, 2, 3, 4, 5, 6}, 2));
  ApplyPool pool(3);
  auto b = Make(Spec(ValueType::kFloat32, 2), std::make_unique<MeanRule>(), &pool);
  a->ForEach([&](Key key, std::span<const std::byte> v, std::span<const std::byte> s) { EXPECT_OK(b->PutRow(key, v, s)); });
  EXPECT_EQ(b->num_keys(), 2u);
  // The same state gives the same next step.
  ASSERT_OK(Push<float>(*a, {1}, {7, 8}, 2));
  ASSERT_OK(Push<float>(*b, {1}, {7, 8}, 2));
  EXPECT_EQ(Pull<float>(*a, {1, 50}, 2), Pull<float>(*b, {1, 50}, 2));
  ExpectInvalid(b->PutRow(3, {}, {}), "row of 0 value");
}

// The same seeded random workload on one shard (inline) and on four (the pool) must give
// bit-identical answers and rows, for sparse and dense storage.
void RunShardedVersusSingle(const TableSpec& spec, uint64_t seed) {
  ApplyPool pool(4);
  auto single = Make(spec, std::make_unique<MeanRule>(), nullptr);
  auto sharded = Make(spec, std::make_unique<MeanRule>(), &pool);
  ASSERT_TRUE(single && sharded);
  std::mt19937_64 rng(seed);
  const uint32_t w = spec.width;
  const Key base = spec.storage == StorageKind::kDense ? spec.key_range.first : 0;
  for (int round = 0; round < 30; ++round) {
    const size_t want = std::uniform_int_distribution<size_t>(1, 3 * TableStore::kParallelMinKeys)(rng);
    std::set<Key> keyset;
    while (keyset.size() < want) keyset.insert(base + rng() % 40000);
    std::vector<Key> keys(keyset.begin(), keyset.end());
    std::vector<float> vals(keys.size() * w);
    for (float& v : vals) v = static_cast<float>(std::uniform_int_distribution<int>(-100, 100)(rng)) / 8;
    const auto type = static_cast<MessageType>(
        std::array{MessageType::kPush, MessageType::kPull, MessageType::kPushPull}[rng() % 3]);
    ServerRequest req = Request<float>(type, keys, type == MessageType::kPull ? std::vector<float>{} : vals, w);
    UpdateContext ctx;
    ctx.clock = static_cast<uint64_t>(round);
    ServerResponse r1, r2;
    ASSERT_OK(single->Handle(req, ctx, &r1));
    ASSERT_OK(sharded->Handle(req, ctx, &r2));
    ASSERT_EQ(r1.vals.size(), r2.vals.size());
    // (An empty reply's data() is null, which memcmp must not be given even for 0 bytes.)
    if (!r1.vals.empty()) {
      ASSERT_EQ(0, std::memcmp(r1.vals.data(), r2.vals.data(), r1.vals.size())) << "round " << round;
    }
  }
  EXPECT_EQ(single->num_keys(), sharded->num_keys());
  std::map<Key, std::vector<std::byte>> rows1, rows2;
  const auto collect = [](std::map<Key, std::vector<std::byte>>& rows) {
    return [&rows](Key key, std::span<const std::byte> v, std::span<const std::byte> s) {
      auto& row = rows[key];
      row.assign(v.begin(), v.end());
      row.insert(row.end(), s.begin(), s.end());
    };
  };
  single->ForEach(collect(rows1));
  sharded->ForEach(collect(rows2));
  EXPECT_EQ(rows1.size(), single->num_keys());
  EXPECT_TRUE(rows1 == rows2);
}

TEST(TableStoreTest, ShardedAndSingleThreadedGiveIdenticalResultsSparse) {
  TableSpec spec = Spec(ValueType::kFloat32, 3);
  spec.initializer = {InitializerSpec::Kind::kUniform, 0.5, 11};
  RunShardedVersusSingle(spec, pserver::testing::TestSeed());
}

TEST(TableStoreTest, ShardedAndSingleThreadedGiveIdenticalResultsDense) {
  TableSpec spec = DenseSpec({5000, 5000 + 39999}, 2);
  spec.initializer = {InitializerSpec::Kind::kUniform, 0.5, 11};
  RunShardedVersusSingle(spec, pserver::testing::TestSeed());
}

// Forwards to another rule's Apply only, so that a store applies it one row at a time (the
// default ApplyBatch) -- the reference for that rule's own batched loop.
class RowByRow final : public Updater {
 public:
  explicit RowByRow(std::unique_ptr<Updater> rule) : rule_(std::move(rule)) {}
  uint32_t push_arity() const override { return rule_->push_arity(); }
  uint32_t state_per_value() const override { return rule_->state_per_value(); }
  bool Supports(ValueType type) const override { return rule_->Supports(type); }
  void Apply(const UpdateContext& ctx, std::span<float> v, std::span<float> s, std::span<const float> g) const override {
    rule_->Apply(ctx, v, s, g);
  }
  void Apply(const UpdateContext& ctx, std::span<double> v, std::span<double> s, std::span<const double> g) const override {
    rule_->Apply(ctx, v, s, g);
  }

 private:
  std::unique_ptr<Updater> rule_;
};

// The built-in rules (their batched loops) through the store give the bits of the same rule
// applied row by row on one thread, on one shard and on four. The requests are large (the
// pool's path: keys partitioned by shard) and their keys unsorted and repeated (so the order
// of application within a key matters), many of them new (insertions between batched rows).
TEST(TableStoreTest, BuiltinRulesGiveTheRowByRowResultsOnAnyNumberOfShards) {
  const uint64_t seed = pserver::testing::TestSeed();
  for (const UpdaterSpec& rule : {UpdaterSpec{"sgd", {{"lr", 0.25}}}, UpdaterSpec{"adam", {}},
                                  UpdaterSpec{"ftrl", {{"l1", 0.01}}}, UpdaterSpec{"prox", {{"l1", 0.01}}},
                                  UpdaterSpec{"prox", {{"l1", 0.01}, {"gradient", 1}}}}) {
    const bool gradient = rule.params.contains("gradient");  // prox rows (w, G), pushes (g, u)
    SCOPED_TRACE(rule.name + (gradient ? " gradient=1" : ""));
    UpdaterRegistry registry;
    const auto make_rule = [&] { return std::move(registry.Create(rule)).value(); };
    TableSpec spec = Spec(ValueType::kFloat32, 2);
    spec.updater = rule;
    spec.push_arity = make_rule()->push_arity();
    spec.initializer = {InitializerSpec::Kind::kUniform, 0.5, 3};
    ApplyPool pool(4);
    auto reference = Make(spec, std::make_unique<RowByRow>(make_rule()));
    auto single = Make(spec, make_rule());
    auto sharded = Make(spec, make_rule(), &pool);
    ASSERT_TRUE(reference && single && sharded);
    std::mt19937_64 rng(seed);
    const uint32_t push_len = spec.width * spec.push_arity;
    for (int round = 0; round < 6; ++round) {
      const size_t n = std::uniform_int_distribution<size_t>(TableStore::kParallelMinKeys,
                                                             3 * TableStore::kParallelMinKeys)(rng);
      std::vector<Key> keys(n);
      for (Key& k : keys) k = rng() % (3 * TableStore::kParallelMinKeys);
      std::vector<float> vals(n * push_len);
      for (size_t i = 0; i < vals.size(); ++i) {
        const float x = static_cast<float>(std::uniform_int_distribution<int>(-64, 64)(rng)) / 16;
        const bool curvature = gradient ? i % push_len == 1 : i % push_len >= spec.width;
        vals[i] = curvature ? std::abs(x) : x;  // prox: curvatures >= 0
      }
      const MessageType type = round % 2 == 0 ? MessageType::kPush : MessageType::kPushPull;
      const ServerRequest req = Request<float>(type, keys, vals, spec.width);
      UpdateContext ctx;
      ctx.clock = static_cast<uint64_t>(round / 2);
      ServerResponse want, got1, got4;
      ASSERT_OK(reference->Handle(req, ctx, &want));
      ASSERT_OK(single->Handle(req, ctx, &got1));
      ASSERT_OK(sharded->Handle(req, ctx, &got4));
      ASSERT_EQ(Values<float>(got1), Values<float>(want)) << "round " << round;
      ASSERT_EQ(Values<float>(got4), Values<float>(want)) << "round " << round;
    }
    std::map<Key, std::vector<std::byte>> rows[3];
    int which = 0;
    for (TableStore* store : {reference.get(), single.get(), sharded.get()}) {
      std::map<Key, std::vector<std::byte>>& out = rows[which++];
      store->ForEach([&out](Key key, std::span<const std::byte> v, std::span<const std::byte> s) {
        std::vector<std::byte>& row = out[key];
        row.assign(v.begin(), v.end());
        row.insert(row.end(), s.begin(), s.end());
      });
    }
    EXPECT_EQ(rows[0].size(), reference->num_keys());
    EXPECT_TRUE(rows[0] == rows[1]);
    EXPECT_TRUE(rows[0] == rows[2]);
  }
}

// A large request (the pool's path) with unsorted, repeated keys against a plain model: every
// occurrence is applied exactly once, and a pull answers every position.
TEST(TableStoreTest, LargeRequestsApplyEveryOccurrenceOnceOnEveryShardCount) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  const size_t n = 3 * TableStore::kParallelMinKeys;
  std::vector<Key> keys(n);
  for (Key& k : keys) k = rng() % n;  // about a third repeated
  std::vector<int64_t> vals(n);
  for (int64_t& v : vals) v = static_cast<int64_t>(rng() % 1000);
  std::map<Key, int64_t> model;
  for (size_t i = 0; i < n; ++i) model[keys[i]] += 2 * vals[i];  // pushed twice below
  for (uint32_t shards : {1u, 2u, 3u, 4u}) {
    SCOPED_TRACE(shards);
    ApplyPool pool(shards);
    auto store = Make(Spec(ValueType::kInt64), std::make_unique<AddRule>(), &pool);
    ASSERT_OK(Push<int64_t>(*store, keys, vals));
    ServerResponse resp;
    ASSERT_OK(store->Handle(Request<int64_t>(MessageType::kPushPull, keys, vals, 1), UpdateContext{}, &resp));
    const std::vector<int64_t> got = Values<int64_t>(resp);
    ASSERT_EQ(got.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], model[keys[i]]) << "position " << i;
    EXPECT_EQ(store->num_keys(), model.size());
  }
}

// ---------------------------------------------------------------------------------------------
// The default table: the built-in "add" rule on zero initial values, sparse storage, for every
// value type -- fixed width, large rows (one buffer per key, shared with pull replies) and
// variable length.

template <typename T>
class AddTableTest : public ::testing::Test {
 protected:
  static std::unique_ptr<TableStore> AddStore(uint32_t width, bool variable_length = false) {
    TableSpec spec = Spec(ValueTypeOf<T>::value, width);
    spec.variable_length = variable_length;
    return Make(spec, std::move(MakeAddUpdater(spec.updater)).value());
  }
  static Status PushVar(TableStore& store, std::vector<Key> keys, std::vector<T> vals, std::vector<int32_t> lens) {
    ServerResponse resp;
    return store.Handle(VarRequest<T>(MessageType::kPush, std::move(keys), std::move(vals), std::move(lens)),
                        UpdateContext{}, &resp);
  }
  // The values and each key's length.
  static std::pair<std::vector<T>, std::vector<int32_t>> PullVar(TableStore& store, std::vector<Key> keys) {
    ServerResponse resp;
    EXPECT_OK(store.Handle(VarRequest<T>(MessageType::kPull, std::move(keys), {}, {}), UpdateContext{}, &resp));
    return {Values<T>(resp), std::vector<int32_t>(resp.lens.begin(), resp.lens.end())};
  }
  static ServerResponse PullResponse(TableStore& store, std::vector<Key> keys, uint32_t width) {
    ServerResponse resp;
    EXPECT_OK(store.Handle(Request<T>(MessageType::kPull, std::move(keys), {}, width), UpdateContext{}, &resp));
    return resp;
  }
};

using ValueTypes = ::testing::Types<float, double, int32_t, int64_t>;
TYPED_TEST_SUITE(AddTableTest, ValueTypes);

// Rows of 128 KiB and more: stored one buffer each (at least TableStore::kLargeRowBytes).
constexpr uint32_t kLargeWidth = (1u << 15) + 3;

TYPED_TEST(AddTableTest, PullOfNeverPushedKeyIsZero) {
  using T = TypeParam;
  auto narrow = this->AddStore(1);
  auto wide = this->AddStore(4);
  auto var = this->AddStore(0, true);
  EXPECT_EQ(Pull<T>(*narrow, {3, 99, ~Key{0}}), (std::vector<T>{0, 0, 0}));
  EXPECT_EQ(Pull<T>(*wide, {7}, 4), (std::vector<T>{0, 0, 0, 0}));
  auto [vals, lens] = this->PullVar(*var, {1, 2});
  EXPECT_TRUE(vals.empty());
  EXPECT_EQ(lens, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(narrow->num_keys() + wide->num_keys() + var->num_keys(), 0u);  // a pull stores nothing
}

TYPED_TEST(AddTableTest, PushAddsToStoredValues) {
  using T = TypeParam;
  auto store = this->AddStore(1);
  ASSERT_OK(Push<T>(*store, {1, 5, 9}, {1, 2, 3}));
  ASSERT_OK(Push<T>(*store, {5, 9, 12}, {10, 20, 30}));
  ASSERT_OK(Push<T>(*store, {9}, {100}));
  EXPECT_EQ(Pull<T>(*store, {1, 5, 9, 12, 77}), (std::vector<T>{1, 12, 123, 30, 0}));
  EXPECT_EQ(store->num_keys(), 4u);
  // Keys in any order: the answer follows the request's order.
  EXPECT_EQ(Pull<T>(*store, {12, 1}), (std::vector<T>{30, 1}));
}

TYPED_TEST(AddTableTest, PushPullAnswersWithValuesAfterThePush) {
  using T = TypeParam;
  auto store = this->AddStore(1);
  ASSERT_OK(Push<T>(*store, {4}, {6}));
  ServerResponse resp;
  ASSERT_OK(store->Handle(Request<T>(MessageType::kPushPull, {4, 8}, {1, 2}, 1), UpdateContext{}, &resp));
  EXPECT_EQ(Values<T>(resp), (std::vector<T>{7, 2}));
  EXPECT_EQ(Pull<T>(*store, {4, 8}), (std::vector<T>{7, 2}));
}

TYPED_TEST(AddTableTest, WideRowsAddElementwise) {
  using T = TypeParam;
  auto store = this->AddStore(3);
  ASSERT_OK(Push<T>(*store, {10, 20}, {1, 2, 3, 4, 5, 6}, 3));
  ASSERT_OK(Push<T>(*store, {20, 30}, {10, 20, 30, 7, 8, 9}, 3));
  EXPECT_EQ(Pull<T>(*store, {10, 20, 30, 40}, 3), (std::vector<T>{1, 2, 3, 14, 25, 36, 7, 8, 9, 0, 0, 0}));
}

TYPED_TEST(AddTableTest, LargeRowPulledEarlierIsNotChangedByLaterPush) {
  using T = TypeParam;
  const uint32_t w = kLargeWidth;
  auto store = this->AddStore(w);
  std::vector<T> row(w), delta(w);
  for (uint32_t j = 0; j < w; ++j) {
    row[j] = static_cast<T>(j % 1000);
    delta[j] = static_cast<T>(j % 7 + 1);
  }
  ASSERT_OK(Push<T>(*store, {42}, row, w));
  // A reply shares the stored row; it must still show the value it was sent with.
  const ServerResponse held = this->PullResponse(*store, {42}, w);
  ASSERT_OK(Push<T>(*store, {42}, delta, w));
  std::vector<T> sum(w);
  for (uint32_t j = 0; j < w; ++j) sum[j] = row[j] + delta[j];
  EXPECT_EQ(Values<T>(held), row);
  EXPECT_EQ(Pull<T>(*store, {42}, w), sum);
  // Several keys, one never pushed: a copy.
  std::vector<T> both = sum;
  both.resize(2 * size_t{w}, T{0});
  EXPECT_EQ(Pull<T>(*store, {42, 43}, w), both);
  EXPECT_EQ(store->num_keys(), 1u);
}

// The zero-copy pull of a large row: a one-key pull answers with the stored buffer itself.
TYPED_TEST(AddTableTest, LargeRowPullSharesTheStoredBuffer) {
  using T = TypeParam;
  const uint32_t w = kLargeWidth;
  auto store = this->AddStore(w);
  ASSERT_OK(Push<T>(*store, {5}, std::vector<T>(w, T{2}), w));
  const std::byte* stored = nullptr;
  store->ForEach([&](Key, std::span<const std::byte> value, std::span<const std::byte>) { stored = value.data(); });
  const ServerResponse first = this->PullResponse(*store, {5}, w);
  const ServerResponse second = this->PullResponse(*store, {5}, w);
  EXPECT_EQ(first.vals.data(), stored);
  EXPECT_EQ(second.vals.data(), stored);
  // A push while replies hold the row writes a fresh buffer, which the next pull shares.
  ASSERT_OK(Push<T>(*store, {5}, std::vector<T>(w, T{1}), w));
  const ServerResponse third = this->PullResponse(*store, {5}, w);
  EXPECT_NE(third.vals.data(), stored);
  EXPECT_EQ(Values<T>(first), std::vector<T>(w, T{2}));
  EXPECT_EQ(Values<T>(third), std::vector<T>(w, T{3}));
}

TYPED_TEST(AddTableTest, LargeKeyNeverPushedPullsZerosThatLaterPushesDoNotChange) {
  using T = TypeParam;
  const uint32_t w = kLargeWidth;
  auto store = this->AddStore(w);
  const std::vector<T> zeros(w, T{0});
  const ServerResponse first = this->PullResponse(*store, {9}, w);
  const ServerResponse second = this->PullResponse(*store, {10}, w);
  EXPECT_EQ(Values<T>(first), zeros);
  EXPECT_EQ(first.vals.data(), second.vals.data());  // one shared row of zeros, not one per pull
  ASSERT_OK(Push<T>(*store, {9}, std::vector<T>(w, T{5}), w));
  EXPECT_EQ(Values<T>(first), zeros);
  EXPECT_EQ(Pull<T>(*store, {9}, w), std::vector<T>(w, T{5}));
  EXPECT_EQ(Pull<T>(*store, {10}, w), zeros);
  EXPECT_EQ(store->num_keys(), 1u);
}

TYPED_TEST(AddTableTest, VariableLengthRowsTakeTheirLengthFromTheFirstPush) {
  using T = TypeParam;
  auto store = this->AddStore(0, true);
  ASSERT_OK(this->PushVar(*store, {1, 2, 3}, {1, 2, 3, 4, 5}, {2, 0, 3}));
  ASSERT_OK(this->PushVar(*store, {1, 3}, {10, 20, 30, 40, 50}, {2, 3}));
  auto [vals, lens] = this->PullVar(*store, {1, 2, 3, 4});
  EXPECT_EQ(lens, (std::vector<int32_t>{2, 0, 3, 0}));
  EXPECT_EQ(vals, (std::vector<T>{11, 22, 33, 44, 55}));
  EXPECT_EQ(store->num_keys(), 3u);
}

TYPED_TEST(AddTableTest, VariableLengthPushOfAnotherLengthIsRefusedAndChangesNothing) {
  using T = TypeParam;
  auto store = this->AddStore(0, true);
  ASSERT_OK(this->PushVar(*store, {1, 2}, {1, 2, 3}, {2, 1}));
  // Key 1 matches its length, key 2 does not: the whole push is refused, key 1 included.
  ExpectInvalid(this->PushVar(*store, {1, 2, 3}, {5, 5, 5, 5, 9}, {2, 2, 1}), "key 2 holds 1 values");
  // (The request's shape -- sorted unique keys, lengths that add up to the values, none
  // negative -- is KVServerCore's to check: kv_server_core_test.cc.)
  auto [vals, lens] = this->PullVar(*store, {1, 2, 3});
  EXPECT_EQ(lens, (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(vals, (std::vector<T>{1, 2, 3}));
  EXPECT_EQ(store->num_keys(), 2u);
}

TEST(AddTableTest, IntegerSumsAreExactAndWrap) {
  TableSpec spec = Spec(ValueType::kInt64);
  auto store = Make(spec, std::move(MakeAddUpdater(spec.updater)).value());
  const int64_t big = int64_t{1} << 53;  // not representable after +1 in a double
  ASSERT_OK(Push<int64_t>(*store, {1, 2}, {big, std::numeric_limits<int64_t>::max()}));
  ASSERT_OK(Push<int64_t>(*store, {1, 2}, {1, 1}));
  EXPECT_EQ(Pull<int64_t>(*store, {1, 2}), (std::vector<int64_t>{big + 1, std::numeric_limits<int64_t>::min()}));
}

// ---------------------------------------------------------------------------------------------
// Large and variable-length rows under other rules.

TEST(TableStoreTest, LargeRowsOfAStatefulRuleAreCopiedOnWriteWhileAReplyHoldsThem) {
  const uint32_t w = kLargeWidth;
  TableSpec spec = Spec(ValueType::kFloat64, w);
  spec.initializer = {InitializerSpec::Kind::kUniform, 1.0, 5};
  auto store = Make(spec, std::make_unique<MeanRule>());
  // Never pushed: the initial values, computed per key.
  const std::vector<double> init = Pull<double>(*store, {3}, w);
  ASSERT_EQ(init.size(), w);
  EXPECT_EQ(init[7], InitialValue(spec.initializer, 3, 7));
  ASSERT_OK(Push<double>(*store, {3}, std::vector<double>(w, 4.0), w, /*clock=*/1));
  ServerResponse held;
  ASSERT_OK(store->Handle(Request<double>(MessageType::kPull, {3}, {}, w), UpdateContext{}, &held));
  ASSERT_OK(Push<double>(*store, {3}, std::vector<double>(w, 8.0), w, /*clock=*/2));
  EXPECT_EQ(Values<double>(held), std::vector<double>(w, 4.0 + 1));  // mean 4 + clock 1
  EXPECT_EQ(Pull<double>(*store, {3}, w), std::vector<double>(w, 6.0 + 2));
  size_t rows = 0;
  store->ForEach([&](Key, std::span<const std::byte> v, std::span<const std::byte> s) {
    ++rows;
    EXPECT_EQ(v.size(), w * sizeof(double));
    ASSERT_EQ(s.size(), 2 * w * sizeof(double));
    double count = 0, sum = 0;
    std::memcpy(&count, s.data(), sizeof(double));
    std::memcpy(&sum, s.data() + w * sizeof(double), sizeof(double));
    EXPECT_EQ(count, 2);
    EXPECT_EQ(sum, 12);
  });
  EXPECT_EQ(rows, 1u);
}

TEST(TableStoreTest, VariableLengthRowsKeepStateAndTakePushArity) {
  TableSpec spec = Spec(ValueType::kFloat32, 0);
  spec.variable_length = true;
  auto mean = Make(spec, std::make_unique<MeanRule>());
  ServerResponse resp;
  ASSERT_OK(mean->Handle(VarRequest<float>(MessageType::kPush, {1, 2}, {2, 4, 6}, {1, 2}), UpdateContext{}, &resp));
  UpdateContext later;
  later.clock = 10;
  ASSERT_OK(mean->Handle(VarRequest<float>(MessageType::kPushPull, {1, 2}, {4, 0, 0}, {1, 2}), later, &resp));
  EXPECT_EQ(Values<float>(resp), (std::vector<float>{13, 12, 13}));  // means + clock
  EXPECT_EQ(std::vector<int32_t>(resp.lens.begin(), resp.lens.end()), (std::vector<int32_t>{1, 2}));
  std::map<Key, std::pair<size_t, size_t>> sizes;
  mean->ForEach([&](Key k, std::span<const std::byte> v, std::span<const std::byte> s) {
    sizes[k] = {v.size(), s.size()};
  });
  EXPECT_EQ(sizes[1], std::make_pair(sizeof(float), 2 * sizeof(float)));
  EXPECT_EQ(sizes[2], std::make_pair(2 * sizeof(float), 4 * sizeof(float)));
  // Push arity 2: a key of length l carries 2 l values.
  spec.push_arity = 2;
  auto product = Make(spec, std::make_unique<ProductRule>());
  ASSERT_OK(product->Handle(VarRequest<float>(MessageType::kPushPull, {5, 6}, {1, 2, 3, 4, 5, 6}, {1, 2}),
                            UpdateContext{}, &resp));
  EXPECT_EQ(Values<float>(resp), (std::vector<float>{2, 15, 24}));  // 1*2; (3, 4) * (5, 6)
}

// A sanity check of the memory figure (no timing): 1M keys of a width-1 float SGD table.
TEST(TableStoreTest, MemoryPerKeyIsSmallAtOneMillionKeys) {
  ApplyPool pool(2);
  auto store = Make(Spec(), std::make_unique<SgdRule>(), &pool);
  std::mt19937_64 rng(pserver::testing::TestSeed());
  constexpr size_t kKeys = 1'000'000, kBatch = 100'000;
  for (size_t done = 0; done < kKeys; done += kBatch) {
    std::vector<Key> keys(kBatch);
    for (Key& k : keys) k = rng();
    std::sort(keys.begin(), keys.end());
    ASSERT_OK(Push<float>(*store, keys, std::vector<float>(kBatch, 1.0f)));
  }
  const double per_key = static_cast<double>(store->memory_bytes()) / static_cast<double>(store->num_keys());
  std::printf("%zu keys: %zu bytes, %.2f bytes/key\n", store->num_keys(), store->memory_bytes(), per_key);
  EXPECT_EQ(store->num_keys(), kKeys);  // 64-bit random keys: no repeats expected
  EXPECT_LE(per_key, 20.0);
}

}  // namespace
}  // namespace pserver::kv
