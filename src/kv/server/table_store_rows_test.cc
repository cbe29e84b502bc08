// TableStore's rows as migration, replication and checkpoints move them: ListRows, InsertRows
// and EraseRows for every storage layout and every built-in rule, the routing-range predicate,
// and dense tables that hold only the key ranges their server owns.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cluster/key_placement.h"
#include "kv/server/table_store.h"
#include "kv/server/table_store_test_util.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

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
using transport::MessageType;

enum class Layout { kSparse, kDense, kLarge, kVar };

std::string LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kSparse: return "sparse";
    case Layout::kDense: return "dense";
    case Layout::kLarge: return "large";
    case Layout::kVar: return "variable-length";
  }
  return "?";
}

constexpr Key kBase = 1000;
// 64 KiB of floats: the smallest row kept one buffer per key.
constexpr uint32_t kLargeWidth = TableStore::kLargeRowBytes / sizeof(float);

// Keys used: [kBase, kBase + span).
Key Span(Layout layout) { return layout == Layout::kLarge ? 8 : 64; }

// Whether `rule` is "prox" with gradient=1: rows (w, G) of width 2 (so no large or
// variable-length layout), pushes (g, u) of arity 1.
bool ProxGradient(const UpdaterSpec& rule) {
  const auto it = rule.params.find("gradient");
  return rule.name == "prox" && it != rule.params.end() && it->second == 1;
}

// A float table of `layout` with `rule`; zero initial values for "add", uniform ones otherwise.
TableSpec LayoutSpec(Layout layout, const UpdaterSpec& rule, ValueType type = ValueType::kFloat32) {
  TableSpec spec = Spec(type, ProxGradient(rule) ? 2 : 3);
  spec.updater = rule;
  spec.push_arity = rule.name == "prox" && !ProxGradient(rule) ? 2 : 1;
  if (rule.name != "add" && rule.name != "assign") spec.initializer = {InitializerSpec::Kind::kUniform, 0.5, 3};
  switch (layout) {
    case Layout::kSparse: break;
    case Layout::kDense:
      spec.storage = StorageKind::kDense;
      spec.placement = KeyPlacement::kRange;
      spec.key_range = {kBase, kBase + Span(layout) - 1};
      break;
    case Layout::kLarge: spec.width = kLargeWidth; break;
    case Layout::kVar: spec.variable_length = true; break;
  }
  return spec;
}

std::unique_ptr<Updater> Rule(const TableSpec& spec) { return std::move(UpdaterRegistry().Create(spec.updater)).value(); }

// A variable-length key's length (0 for some keys: empty rows are rows too).
int32_t VarLength(Key k) { return static_cast<int32_t>(k % 4); }

// A push of some random keys of the layout's span, values multiples of 1/16 (curvatures >= 0).
ServerRequest RandomPush(const TableSpec& spec, Layout layout, std::mt19937_64& rng, MessageType type) {
  std::set<Key> keyset;
  const size_t want = std::uniform_int_distribution<size_t>(1, std::min<size_t>(20, Span(layout)))(rng);
  while (keyset.size() < want) keyset.insert(kBase + rng() % Span(layout));
  std::vector<Key> keys(keyset.begin(), keyset.end());
  std::vector<int32_t> lens;
  size_t values = 0;
  for (Key k : keys) {
    const uint32_t len = layout == Layout::kVar ? static_cast<uint32_t>(VarLength(k)) : spec.width;
    lens.push_back(static_cast<int32_t>(len));
    values += len;
  }
  std::vector<float> vals;
  for (size_t i = 0; i < keys.size(); ++i) {
    const size_t len = static_cast<size_t>(lens[i]);
    for (uint32_t block = 0; block < spec.push_arity; ++block) {
      for (size_t c = 0; c < len; ++c) {
        const float x = static_cast<float>(std::uniform_int_distribution<int>(-64, 64)(rng)) / 16;
        const bool curvature = block == 1 || (ProxGradient(spec.updater) && c == 1);  // prox: u >= 0
        vals.push_back(curvature ? std::abs(x) : x);
      }
    }
  }
  EXPECT_EQ(vals.size(), values * spec.push_arity);
  if (layout == Layout::kVar) return VarRequest<float>(type, std::move(keys), std::move(vals), std::move(lens));
  return Request<float>(type, std::move(keys), std::move(vals), spec.width);
}

// What pulls of every key of the span answer (values and lengths), as bytes.
std::vector<std::byte> PullSpan(TableStore& store, Layout layout) {
  std::vector<Key> keys;
  for (Key k = kBase; k < kBase + Span(layout); ++k) keys.push_back(k);
  const uint32_t width = layout == Layout::kVar ? 0 : store.spec().width;
  ServerResponse resp;
  ServerRequest req = layout == Layout::kVar ? VarRequest<float>(MessageType::kPull, keys, {}, {})
                                             : Request<float>(MessageType::kPull, keys, {}, width);
  EXPECT_OK(store.Handle(req, UpdateContext{}, &resp));
  std::vector<std::byte> out(resp.vals.begin(), resp.vals.end());
  const auto* lens = reinterpret_cast<const std::byte*>(resp.lens.data());
  out.insert(out.end(), lens, lens + resp.lens.size_bytes());
  return out;
}

std::vector<std::byte> BytesOf(const transport::Bytes& b) { return {b.begin(), b.end()}; }

void ExpectSameBatch(const RowBatch& a, const RowBatch& b) {
  EXPECT_EQ(a.value_type, b.value_type);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.state_per_value, b.state_per_value);
  EXPECT_EQ(std::vector<Key>(a.keys.begin(), a.keys.end()), std::vector<Key>(b.keys.begin(), b.keys.end()));
  EXPECT_EQ(std::vector<int32_t>(a.lens.begin(), a.lens.end()), std::vector<int32_t>(b.lens.begin(), b.lens.end()));
  EXPECT_TRUE(BytesOf(a.values) == BytesOf(b.values));
  EXPECT_TRUE(BytesOf(a.states) == BytesOf(b.states));
}

const std::vector<UpdaterSpec>& AllRules() {
  static const std::vector<UpdaterSpec> rules = {
      {"add", {}},  {"assign", {}}, {"sgd", {{"lr", 0.25}}}, {"adagrad", {}}, {"adam", {}},
      {"ftrl", {{"l1", 0.01}}},   {"prox", {{"l1", 0.01}}},
      {"prox", {{"l1", 0.01}, {"gradient", 1}}},
  };
  return rules;
}

constexpr Layout kLayouts[] = {Layout::kSparse, Layout::kDense, Layout::kLarge, Layout::kVar};

// Every layout x every built-in rule: list all rows of store A, insert them into an empty store
// B (of another shard count): B lists the same batch, answers the same pulls, and the same next
// push gives both the same rows.
TEST(TableStoreRowsTest, ListedRowsInsertedIntoAnEmptyStoreGiveTheSameStoreForEveryLayoutAndRule) {
  const uint64_t seed = pserver::testing::TestSeed();
  for (Layout layout : kLayouts) {
    for (const UpdaterSpec& rule : AllRules()) {
      if (ProxGradient(rule) && (layout == Layout::kLarge || layout == Layout::kVar)) continue;  // width 2 only
      SCOPED_TRACE(LayoutName(layout) + " x " + rule.name + (ProxGradient(rule) ? " gradient=1" : ""));
      const TableSpec spec = LayoutSpec(layout, rule);
      ApplyPool pool(3);
      auto a = Make(spec, Rule(spec));
      auto b = Make(spec, Rule(spec), &pool);
      ASSERT_TRUE(a && b);
      std::mt19937_64 rng(seed);
      for (int round = 0; round < 4; ++round) {
        UpdateContext ctx;
        ctx.clock = static_cast<uint64_t>(round / 2);
        ServerResponse resp;
        ASSERT_OK(a->Handle(RandomPush(spec, layout, rng, MessageType::kPush), ctx, &resp));
      }
      const RowBatch listed = a->ListRows();
      ASSERT_GT(listed.size(), 0u);
      EXPECT_EQ(listed.size(), a->num_keys());
      EXPECT_EQ(listed.state_per_value, Rule(spec)->state_per_value());
      EXPECT_EQ(listed.states.size() > 0, listed.state_per_value > 0);
      EXPECT_TRUE(std::is_sorted(listed.keys.begin(), listed.keys.end()));
      ASSERT_OK(b->InsertRows(listed));
      EXPECT_EQ(b->num_keys(), a->num_keys());
      ExpectSameBatch(b->ListRows(), listed);
      EXPECT_TRUE(PullSpan(*a, layout) == PullSpan(*b, layout));
      // The same next push (with the state carried, the rules take the same step).
      UpdateContext ctx;
      ctx.clock = 1;
      const ServerRequest next = RandomPush(spec, layout, rng, MessageType::kPushPull);
      ServerResponse ra, rb;
      ASSERT_OK(a->Handle(next, ctx, &ra));
      ASSERT_OK(b->Handle(next, ctx, &rb));
      EXPECT_TRUE(BytesOf(ra.vals) == BytesOf(rb.vals));
      EXPECT_TRUE(PullSpan(*a, layout) == PullSpan(*b, layout));
      ExpectSameBatch(a->ListRows(), b->ListRows());
    }
  }
}

// Integer tables (add and assign take them) round-trip too.
TEST(TableStoreRowsTest, IntegerRowsRoundTrip) {
  for (Layout layout : {Layout::kSparse, Layout::kLarge, Layout::kVar}) {
    for (const char* name : {"add", "assign"}) {
      SCOPED_TRACE(LayoutName(layout) + " x " + name);
      TableSpec spec = LayoutSpec(layout, {name, {}}, ValueType::kInt64);
      if (layout == Layout::kLarge) spec.width = TableStore::kLargeRowBytes / sizeof(int64_t);
      auto a = Make(spec, Rule(spec));
      auto b = Make(spec, Rule(spec));
      const std::vector<Key> keys = {kBase, kBase + 3, kBase + 7};
      const size_t values = layout == Layout::kVar ? 0 + 3 + 3 : 3 * size_t{spec.width};
      std::vector<int64_t> vals(values);
      for (size_t i = 0; i < values; ++i) vals[i] = static_cast<int64_t>(i * 977) - 5000;
      ServerResponse resp;
      const ServerRequest push = layout == Layout::kVar
                                     ? VarRequest<int64_t>(MessageType::kPush, keys, vals, {VarLength(kBase), VarLength(kBase + 3), VarLength(kBase + 7)})
                                     : Request<int64_t>(MessageType::kPush, keys, vals, spec.width);
      ASSERT_OK(a->Handle(push, UpdateContext{}, &resp));
      ASSERT_OK(a->Handle(push, UpdateContext{}, &resp));
      ASSERT_OK(b->InsertRows(a->ListRows()));
      ExpectSameBatch(a->ListRows(), b->ListRows());
      ASSERT_OK(a->Handle(push, UpdateContext{}, &resp));
      ASSERT_OK(b->Handle(push, UpdateContext{}, &resp));
      ExpectSameBatch(a->ListRows(), b->ListRows());
    }
  }
}

// Migration of one ring range: the rows whose routing keys lie in it are listed, inserted at the
// new owner and erased at the old one; together the two hold every row once.
TEST(TableStoreRowsTest, RowsOfARoutingRangeMoveWithListInsertAndErase) {
  const uint64_t seed = pserver::testing::TestSeed();
  const KeyRange half{0, (uint64_t{1} << 63) - 1};  // the first half of the ring
  for (Layout layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    const TableSpec spec = LayoutSpec(layout, {"adagrad", {}});
    const KeyPredicate moves = RoutingRangePredicate(spec, {half});
    auto old_owner = Make(spec, Rule(spec));
    auto new_owner = Make(spec, Rule(spec));
    std::mt19937_64 rng(seed);
    for (int round = 0; round < 4; ++round) {
      ServerResponse resp;
      ASSERT_OK(old_owner->Handle(RandomPush(spec, layout, rng, MessageType::kPush), UpdateContext{}, &resp));
    }
    const RowBatch all = old_owner->ListRows();
    const RowBatch moved = old_owner->ListRows(moves);
    size_t chosen = 0;
    for (Key k : all.keys) {
      const uint64_t routing = spec.placement == KeyPlacement::kRange ? cluster::ScaleKey(k, spec.key_range)
                                                                      : cluster::MixKey(k);
      chosen += half.Contains(routing) ? 1 : 0;
    }
    EXPECT_EQ(moved.size(), chosen);
    if (all.size() >= 20) {  // then both halves hold rows (with overwhelming probability)
      EXPECT_GT(moved.size(), 0u);
      EXPECT_LT(moved.size(), all.size());
    }
    for (Key k : moved.keys) EXPECT_TRUE(moves(k)) << k;
    ASSERT_OK(new_owner->InsertRows(moved));
    EXPECT_EQ(old_owner->EraseRows(moves), moved.size());
    if (layout == Layout::kDense) {
      // A dense table keeps its rows: the moved ones are back at their initial values.
      EXPECT_EQ(old_owner->num_keys(), all.size());
      auto fresh = Make(spec, Rule(spec));
      ExpectSameBatch(old_owner->ListRows(moves), fresh->ListRows(moves));
      continue;
    }
    EXPECT_EQ(old_owner->ListRows(moves).size(), 0u);
    EXPECT_EQ(old_owner->num_keys() + new_owner->num_keys(), all.size());
    // Together they list every row once, unchanged.
    auto joined = Make(spec, Rule(spec));
    ASSERT_OK(joined->InsertRows(old_owner->ListRows()));
    ASSERT_OK(joined->InsertRows(new_owner->ListRows()));
    ExpectSameBatch(joined->ListRows(), all);
    EXPECT_EQ(old_owner->EraseRows({}), all.size() - moved.size());
    EXPECT_EQ(old_owner->num_keys(), 0u);
  }
}

TEST(TableStoreRowsTest, RoutingRangePredicateFollowsTheTablesPlacement) {
  const KeyRange half{0, (uint64_t{1} << 63) - 1};
  TableSpec range = DenseSpec({1000, 1063});
  const KeyPredicate in_range = RoutingRangePredicate(range, {half});
  EXPECT_TRUE(in_range(1000));
  EXPECT_TRUE(in_range(1031));
  EXPECT_FALSE(in_range(1032));
  EXPECT_FALSE(in_range(999));  // outside the declared range: never chosen
  TableSpec identity = Spec();
  identity.placement = KeyPlacement::kIdentity;
  const KeyPredicate in_identity = RoutingRangePredicate(identity, {{10, 20}, {100, 100}});
  EXPECT_TRUE(in_identity(10) && in_identity(20) && in_identity(100));
  EXPECT_FALSE(in_identity(21) || in_identity(99) || in_identity(101));
  const KeyPredicate in_hashed = RoutingRangePredicate(Spec(), {half});
  for (Key k = 0; k < 100; ++k) EXPECT_EQ(in_hashed(k), half.Contains(cluster::MixKey(k))) << k;
  EXPECT_FALSE(RoutingRangePredicate(Spec(), {})(5));
}

TEST(TableStoreRowsTest, InsertRowsRefusesBatchesThatDoNotFitAndChangesNothing) {
  TableSpec spec = LayoutSpec(Layout::kSparse, {"adagrad", {}});
  auto store = Make(spec, Rule(spec));
  std::mt19937_64 rng(1);
  ServerResponse resp;
  ASSERT_OK(store->Handle(RandomPush(spec, Layout::kSparse, rng, MessageType::kPush), UpdateContext{}, &resp));
  const RowBatch good = store->ListRows();
  const RowBatch before = store->ListRows();
  RowBatch bad = good;
  bad.width = 2;
  ExpectInvalid(store->InsertRows(bad), "width");
  bad = good;
  bad.state_per_value = 0;
  ExpectInvalid(store->InsertRows(bad), "state values");
  bad = good;
  bad.value_type = ValueType::kFloat64;
  ExpectInvalid(store->InsertRows(bad), "float64");
  bad = good;
  bad.values = good.values.Slice(0, good.values.size() - 4);
  ExpectInvalid(store->InsertRows(bad), "value");
  bad = good;
  bad.lens = SharedArray<int32_t>(std::vector<int32_t>(good.size(), 3));
  ExpectInvalid(store->InsertRows(bad), "lengths");
  ExpectSameBatch(store->ListRows(), before);
  // Variable length: lengths must match the keys and add up to the values.
  TableSpec var = LayoutSpec(Layout::kVar, {"add", {}});
  auto var_store = Make(var, Rule(var));
  RowBatch rows;
  rows.value_type = ValueType::kFloat32;
  rows.keys = SharedArray<Key>(std::vector<Key>{1, 2});
  rows.lens = SharedArray<int32_t>(std::vector<int32_t>{1, -1});
  rows.values = transport::AsBytes(SharedArray<float>(std::vector<float>{1}));
  ExpectInvalid(var_store->InsertRows(rows), "negative length -1 for key 2");
  rows.lens = SharedArray<int32_t>(std::vector<int32_t>{1});
  ExpectInvalid(var_store->InsertRows(rows), "2 keys and 1 lengths");
  rows.lens = SharedArray<int32_t>(std::vector<int32_t>{1, 0});
  ASSERT_OK(var_store->InsertRows(rows));
  EXPECT_EQ(var_store->num_keys(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Dense tables hold only the key ranges their server owns.

TEST(TableStoreRowsTest, DenseTableHoldsOnlyItsOwnedRangesAndRefusesOtherKeys) {
  TableSpec spec = DenseSpec({1000, 1099}, 2);
  spec.updater = {"sgd", {}};
  spec.initializer = {InitializerSpec::Kind::kUniform, 1.0, 3};
  // In any order; overlapping ranges merge.
  auto store = Make(spec, Rule(spec), nullptr, std::vector<KeyRange>{{1050, 1059}, {1000, 1009}, {1005, 1012}});
  auto whole = Make(spec, Rule(spec));
  ASSERT_TRUE(store && whole);
  EXPECT_EQ(store->num_keys(), 23u);
  EXPECT_LT(store->memory_bytes(), whole->memory_bytes());
  EXPECT_EQ(Pull<float>(*store, {1000, 1012, 1050, 1059}, 2), Pull<float>(*whole, {1000, 1012, 1050, 1059}, 2));
  ASSERT_OK(Push<float>(*store, {1001, 1055}, {1, 2, 3, 4}, 2));
  for (Key outside : {Key{999}, Key{1013}, Key{1049}, Key{1060}, Key{1099}}) {
    const Status pushed = Push<float>(*store, {1001, outside}, {1, 2, 3, 4}, 2);
    ExpectInvalid(pushed, fmt::format("key {} ", outside));
    ExpectInvalid(pushed, "[1000, 1012], [1050, 1059]");
    ServerResponse resp;
    ExpectInvalid(store->Handle(Request<float>(MessageType::kPull, {outside}, {}, 2), UpdateContext{}, &resp),
                  fmt::format("key {} ", outside));
    const float row[2] = {1, 2};
    ExpectInvalid(store->PutRow(outside, std::as_bytes(std::span<const float>(row)), {}),
                  fmt::format("key {} ", outside));
  }
  const RowBatch before = store->ListRows();
  EXPECT_EQ(before.size(), 23u);
  // A batch with one key this server does not own is refused whole.
  RowBatch moved = whole->ListRows([](Key k) { return k == 1002 || k == 1030; });
  ASSERT_EQ(moved.size(), 2u);
  ExpectInvalid(store->InsertRows(moved), "key 1030");
  ExpectSameBatch(store->ListRows(), before);
  // The sharded apply of a large request over several owned ranges.
  TableSpec big = DenseSpec({0, 99999});
  big.updater = {"sgd", {}};
  const std::vector<KeyRange> owned = {{0, 9999}, {20000, 29999}};
  ApplyPool pool(2);
  auto single = Make(big, Rule(big), nullptr, owned);
  auto sharded = Make(big, Rule(big), &pool, owned);
  std::vector<Key> keys;
  for (Key k = 5000; k < 10000; ++k) keys.push_back(k);
  for (Key k = 20000; k < 25000; ++k) keys.push_back(k);
  std::vector<float> grads(keys.size());
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = static_cast<float>(i % 17);
  ServerResponse r1, r2;
  ASSERT_OK(single->Handle(Request<float>(MessageType::kPushPull, keys, grads, 1), UpdateContext{}, &r1));
  ASSERT_OK(sharded->Handle(Request<float>(MessageType::kPushPull, keys, grads, 1), UpdateContext{}, &r2));
  EXPECT_EQ(Values<float>(r1), Values<float>(r2));
  ExpectSameBatch(single->ListRows(), sharded->ListRows());
}

TEST(TableStoreRowsTest, DenseOwnedRangesMustLieInTheKeyRange) {
  TableSpec spec = DenseSpec({1000, 1099});
  spec.updater = {"sgd", {}};
  const auto create = [&](std::vector<KeyRange> owned) {
    return TableStore::Create(kTable, spec, Rule(spec), nullptr, std::move(owned)).status();
  };
  ExpectInvalid(create({{900, 1000}}), "owned range [900, 1000]");
  ExpectInvalid(create({{1000, 1100}}), "owned range");
  ExpectInvalid(create({{1010, 1005}}), "owned range");
  // No range: the server holds no key of the table.
  auto none = Make(spec, Rule(spec), nullptr, std::vector<KeyRange>{});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->num_keys(), 0u);
  ExpectInvalid(Push<float>(*none, {1000}, {1}), "key 1000");
  // Adjacent ranges merge, and the last key of the 64-bit space is fine.
  TableSpec top = DenseSpec({~Key{0} - 9, ~Key{0}});
  top.updater = {"sgd", {}};
  auto edge = Make(top, Rule(top), nullptr, std::vector<KeyRange>{{~Key{0} - 4, ~Key{0}}, {~Key{0} - 9, ~Key{0} - 5}});
  ASSERT_TRUE(edge);
  EXPECT_EQ(edge->num_keys(), 10u);
  EXPECT_OK(Push<float>(*edge, {~Key{0}}, {1}));
}

}  // namespace
}  // namespace pserver::kv
