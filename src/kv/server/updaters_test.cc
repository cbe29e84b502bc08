#include "kv/server/updaters.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "kv/table_catalog.h"
#include "pserver/updater.h"

namespace pserver::kv {
namespace {

// Deterministic by default; PSERVER_TEST_SEED=<n> replays another sequence. Printed by every
// test that uses it.
uint64_t TestSeed(uint64_t salt) {
  uint64_t base = 301;
  if (const char* env = std::getenv("PSERVER_TEST_SEED")) base = std::strtoull(env, nullptr, 10);
  const uint64_t seed = base * 1000003 + salt;
  std::cout << "[ seed     ] " << seed << " (PSERVER_TEST_SEED=" << base << ")\n";
  return seed;
}

std::unique_ptr<Updater> MustCreate(const UpdaterSpec& spec) {
  UpdaterRegistry registry;
  auto made = registry.Create(spec);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(made).value() : nullptr;
}

// One stored row as the storage would keep it: values plus zero-initialised state.
template <typename T>
struct Row {
  std::vector<T> value;
  std::vector<T> state;
};

template <typename T>
Row<T> NewRow(const Updater& u, std::vector<T> value) {
  Row<T> row;
  row.state.assign(value.size() * u.state_per_value(), T(0));
  row.value = std::move(value);
  return row;
}

template <typename T>
void ApplyTo(const Updater& u, Row<T>& row, const std::vector<T>& push, uint64_t clock = 0) {
  UpdateContext ctx;
  ctx.clock = clock;
  ASSERT_EQ(push.size(), row.value.size() * u.push_arity());
  u.Apply(ctx, std::span<T>(row.value), std::span<T>(row.state), std::span<const T>(push));
}

// |a - b| relative to |b|, with a floor so that values near zero are compared absolutely.
double RelErr(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-6); }

// ---------------------------------------------------------------------------------------------
// Reference implementations: one scalar at a time, plain double arithmetic, each stored
// quantity rounded to the table's type T after every push (as a table of T stores it). They
// keep their own state, in their own layout, independent of the rules'.

template <typename T>
struct RefSgd {
  double lr = 0.01;
  struct State {};
  void Step(uint64_t, T& w, State&, double g, double) const { w = static_cast<T>(w - lr * g); }
};

template <typename T>
struct RefAdagrad {
  double lr = 0.01, eps = 1e-8;
  struct State { T n = 0; };
  void Step(uint64_t, T& w, State& s, double g, double) const {
    const double n = static_cast<double>(s.n) + g * g;
    s.n = static_cast<T>(n);
    w = static_cast<T>(w - lr * g / (std::sqrt(n) + eps));
  }
};

template <typename T>
struct RefAdam {
  double lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  struct State { T m = 0, v = 0; int64_t t = 0; };
  void Step(uint64_t, T& w, State& s, double g, double) const {
    s.t += 1;
    const double m = beta1 * s.m + (1 - beta1) * g;
    const double v = beta2 * s.v + (1 - beta2) * g * g;
    s.m = static_cast<T>(m);
    s.v = static_cast<T>(v);
    const double m_hat = m / (1 - std::pow(beta1, static_cast<double>(s.t)));
    const double v_hat = v / (1 - std::pow(beta2, static_cast<double>(s.t)));
    w = static_cast<T>(w - lr * m_hat / (std::sqrt(v_hat) + eps));
  }
};

template <typename T>
struct RefFtrl {
  double alpha = 0.05, beta = 1, l1 = 0, l2 = 0;
  struct State { T z = 0, n = 0; };
  void Step(uint64_t, T& w, State& s, double g, double) const {
    const double n_old = s.n;
    const double n_new = n_old + g * g;
    const double sigma = (std::sqrt(n_new) - std::sqrt(n_old)) / alpha;
    const double z = s.z + g - sigma * w;
    s.z = static_cast<T>(z);
    s.n = static_cast<T>(n_new);
    if (std::abs(z) <= l1) {
      w = 0;
    } else {
      const double sign = z < 0 ? -1.0 : 1.0;
      w = static_cast<T>(-(z - sign * l1) / ((beta + std::sqrt(n_new)) / alpha + l2));
    }
  }
};

template <typename T>
struct RefProx {
  double l1 = 0, l2 = 0, delta = 1;
  struct State { uint64_t iteration = 0; bool started = false; T w0 = 0, g = 0, u = 0; };
  void Step(uint64_t clock, T& w, State& s, double g, double u) const {
    if (!s.started || s.iteration != clock) {
      s = State{clock, true, w, 0, 0};
    }
    s.g = static_cast<T>(s.g + g);
    s.u = static_cast<T>(s.u + u);
    const double big_u = s.u, big_g = s.g, w0 = s.w0;
    if (big_u + l2 <= 0) {  // no curvature: no step from w0
      w = s.w0;
      return;
    }
    const double a = big_u * w0 - big_g;
    double x = 0;
    if (a > l1) x = (a - l1) / (big_u + l2);
    if (a < -l1) x = (a + l1) / (big_u + l2);
    if (x < w0 - delta) x = w0 - delta;
    if (x > w0 + delta) x = w0 + delta;
    w = static_cast<T>(x);
  }
};

// Applies a seeded random sequence of pushes to rows of width 1 and 3 through the rule built
// from `spec` and through `ref`, and compares every value after every push.
template <typename T, typename Ref>
void ExpectMatchesReference(const UpdaterSpec& spec, const Ref& ref, uint64_t salt) {
  const uint64_t seed = TestSeed(salt);
  SCOPED_TRACE("rule " + spec.name + ", seed " + std::to_string(seed));
  std::unique_ptr<Updater> rule = MustCreate(spec);
  ASSERT_NE(rule, nullptr);
  ASSERT_TRUE(rule->Supports(ValueTypeOf<T>::value));
  const uint32_t arity = rule->push_arity();

  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_real_distribution<double> curvature(0.0, 2.0);

  const std::vector<size_t> widths = {1, 1, 3, 3, 3};
  std::vector<Row<T>> rows;
  std::vector<std::vector<T>> ref_values;
  std::vector<std::vector<typename Ref::State>> ref_states;
  for (size_t width : widths) {
    std::vector<T> init(width);
    for (T& x : init) x = static_cast<T>(0.5 * unit(rng));  // as a uniform initializer would
    rows.push_back(NewRow(*rule, init));
    ref_values.push_back(init);
    ref_states.emplace_back(width);
  }

  uint64_t clock = 0;
  for (int step = 0; step < 400; ++step) {
    if (rng() % 4 == 0) ++clock;  // several pushes per clock, as several workers would push
    const size_t r = rng() % rows.size();
    const size_t width = widths[r];
    std::vector<T> push(width * arity);
    for (size_t i = 0; i < width; ++i) push[i] = static_cast<T>(unit(rng));
    for (size_t i = width; i < push.size(); ++i) push[i] = static_cast<T>(curvature(rng));
    ApplyTo(*rule, rows[r], push, clock);
    for (size_t i = 0; i < width; ++i) {
      const double u = arity == 2 ? static_cast<double>(push[width + i]) : 0.0;
      ref.Step(clock, ref_values[r][i], ref_states[r][i], static_cast<double>(push[i]), u);
    }
    for (size_t i = 0; i < width; ++i) {
      ASSERT_LE(RelErr(rows[r].value[i], ref_values[r][i]), 1e-6)
          << "step " << step << " row " << r << " column " << i << ": got " << rows[r].value[i] << ", want "
          << ref_values[r][i];
    }
  }
}

template <typename T>
class UpdatersTypedTest : public ::testing::Test {};
using RealTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(UpdatersTypedTest, RealTypes);

TYPED_TEST(UpdatersTypedTest, SgdMatchesReference) {
  using T = TypeParam;
  ExpectMatchesReference<T>(UpdaterSpec{"sgd", {}}, RefSgd<T>{}, 1);
  ExpectMatchesReference<T>(UpdaterSpec{"sgd", {{"lr", 0.3}}}, RefSgd<T>{.lr = 0.3}, 2);
}

TYPED_TEST(UpdatersTypedTest, AdagradMatchesReference) {
  using T = TypeParam;
  ExpectMatchesReference<T>(UpdaterSpec{"adagrad", {}}, RefAdagrad<T>{}, 3);
  ExpectMatchesReference<T>(UpdaterSpec{"adagrad", {{"lr", 0.2}, {"eps", 0.5}}}, RefAdagrad<T>{.lr = 0.2, .eps = 0.5},
                            4);
}

TYPED_TEST(UpdatersTypedTest, AdamMatchesReference) {
  using T = TypeParam;
  ExpectMatchesReference<T>(UpdaterSpec{"adam", {}}, RefAdam<T>{}, 5);
  ExpectMatchesReference<T>(UpdaterSpec{"adam", {{"lr", 0.05}, {"beta1", 0.5}, {"beta2", 0.75}, {"eps", 0.01}}},
                            RefAdam<T>{.lr = 0.05, .beta1 = 0.5, .beta2 = 0.75, .eps = 0.01}, 6);
  ExpectMatchesReference<T>(UpdaterSpec{"adam", {{"beta1", 0.0}, {"beta2", 0.0}}},
                            RefAdam<T>{.beta1 = 0.0, .beta2 = 0.0}, 7);
}

TYPED_TEST(UpdatersTypedTest, FtrlMatchesReference) {
  using T = TypeParam;
  ExpectMatchesReference<T>(UpdaterSpec{"ftrl", {}}, RefFtrl<T>{}, 8);
  ExpectMatchesReference<T>(UpdaterSpec{"ftrl", {{"alpha", 0.5}, {"beta", 0.25}, {"l1", 0.8}, {"l2", 0.1}}},
                            RefFtrl<T>{.alpha = 0.5, .beta = 0.25, .l1 = 0.8, .l2 = 0.1}, 9);
  ExpectMatchesReference<T>(UpdaterSpec{"ftrl", {{"beta", 0.0}}}, RefFtrl<T>{.beta = 0.0}, 10);
}

TYPED_TEST(UpdatersTypedTest, ProxMatchesReference) {
  using T = TypeParam;
  ExpectMatchesReference<T>(UpdaterSpec{"prox", {}}, RefProx<T>{}, 11);
  ExpectMatchesReference<T>(UpdaterSpec{"prox", {{"l1", 0.3}, {"l2", 0.1}, {"delta", 0.2}}},
                            RefProx<T>{.l1 = 0.3, .l2 = 0.1, .delta = 0.2}, 12);
  ExpectMatchesReference<T>(UpdaterSpec{"prox", {{"l1", 2.0}}}, RefProx<T>{.l1 = 2.0}, 13);
}

TYPED_TEST(UpdatersTypedTest, AddAndAssignMatchReference) {
  using T = TypeParam;
  const uint64_t seed = TestSeed(14);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  auto add = MustCreate(UpdaterSpec{"add", {}});
  auto assign = MustCreate(UpdaterSpec{"assign", {}});
  for (size_t width : {1, 3}) {
    Row<T> sum = NewRow<T>(*add, std::vector<T>(width, T(0)));
    Row<T> last = NewRow<T>(*assign, std::vector<T>(width, T(0)));
    std::vector<T> want_sum(width, T(0));
    for (int step = 0; step < 50; ++step) {
      std::vector<T> push(width);
      for (T& x : push) x = static_cast<T>(unit(rng));
      ApplyTo(*add, sum, push);
      ApplyTo(*assign, last, push);
      for (size_t i = 0; i < width; ++i) want_sum[i] = static_cast<T>(want_sum[i] + push[i]);
      EXPECT_EQ(sum.value, want_sum);
      EXPECT_EQ(last.value, push);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ApplyBatch: a built-in rule's batched loop must give exactly what Apply gives row by row.

// Rows of `width` values (and the rule's state) in one flat array each, as a table keeps them.
template <typename T>
struct RowSet {
  std::vector<T> values, states;
};

// Applies `batches` seeded random batches to `num_rows` rows twice -- by ApplyBatch, and by
// Apply one entry at a time -- and requires bit-identical values and states. Entries pick rows
// at random, so a batch often names a row twice (a key repeated in a request).
template <typename T>
void ExpectBatchEqualsRowByRow(const Updater& rule, uint32_t width, uint64_t seed) {
  SCOPED_TRACE("width " + std::to_string(width) + ", seed " + std::to_string(seed));
  constexpr size_t kRows = 12;
  const size_t state_len = size_t{width} * rule.state_per_value();
  const size_t push_len = size_t{width} * rule.push_arity();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> small(-8, 8);
  const auto draw = [&](bool positive) {  // exact in every type; curvatures kept positive
    const int x = small(rng);
    return static_cast<T>(positive ? std::abs(x) : x) / static_cast<T>(std::is_integral_v<T> ? 1 : 4);
  };
  RowSet<T> batched{std::vector<T>(kRows * width), std::vector<T>(kRows * state_len, T(0))};
  for (T& v : batched.values) v = draw(false);
  RowSet<T> single = batched;
  for (int round = 0; round < 20; ++round) {
    UpdateContext ctx;
    ctx.clock = static_cast<uint64_t>(round / 3);  // prox: several batches per iteration
    const size_t n = 1 + rng() % 40;
    std::vector<T> pushes(n * push_len);
    for (size_t i = 0; i < pushes.size(); ++i) pushes[i] = draw(i % push_len >= width);
    std::vector<size_t> picks(n);
    for (size_t& r : picks) r = rng() % kRows;
    std::vector<RowUpdate<T>> entries;
    for (size_t k = 0; k < n; ++k) {
      const size_t r = picks[k];
      entries.push_back({batched.values.data() + r * width, batched.states.data() + r * state_len,
                         pushes.data() + k * push_len});
    }
    rule.ApplyBatch(ctx, width, std::span<const RowUpdate<T>>(entries));
    for (size_t k = 0; k < n; ++k) {
      const size_t r = picks[k];
      rule.Apply(ctx, std::span<T>(single.values.data() + r * width, width),
                 std::span<T>(single.states.data() + r * state_len, state_len),
                 std::span<const T>(pushes.data() + k * push_len, push_len));
    }
    ASSERT_EQ(batched.values, single.values) << "round " << round;
    ASSERT_EQ(batched.states, single.states) << "round " << round;
  }
}

TYPED_TEST(UpdatersTypedTest, ApplyBatchEqualsApplyRowByRow) {
  const uint64_t seed = TestSeed(16);
  for (const char* name : {"add", "assign", "sgd", "adagrad", "adam", "ftrl", "prox"}) {
    SCOPED_TRACE(name);
    UpdaterSpec spec{name, {}};
    if (std::string(name) == "ftrl") spec.params = {{"l1", 0.5}, {"l2", 0.25}};
    if (std::string(name) == "prox") spec.params = {{"l1", 0.5}, {"delta", 0.75}};
    auto rule = MustCreate(spec);
    ASSERT_NE(rule, nullptr);
    for (uint32_t width : {1u, 3u}) ExpectBatchEqualsRowByRow<TypeParam>(*rule, width, seed + width);
  }
  // "prox" with gradient=1 takes rows of width 2 only.
  SCOPED_TRACE("prox gradient=1");
  auto gradient = MustCreate(UpdaterSpec{"prox", {{"l1", 0.5}, {"delta", 0.75}, {"gradient", 1}}});
  ASSERT_NE(gradient, nullptr);
  ExpectBatchEqualsRowByRow<TypeParam>(*gradient, 2, seed + 2);
}

// ---------------------------------------------------------------------------------------------
// add / assign on integer tables

template <typename T>
class UpdatersIntegerTest : public ::testing::Test {};
using IntegerTypes = ::testing::Types<int32_t, int64_t>;
TYPED_TEST_SUITE(UpdatersIntegerTest, IntegerTypes);

TYPED_TEST(UpdatersIntegerTest, AddAndAssignAreExact) {
  using T = TypeParam;
  const uint64_t seed = TestSeed(15);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(-1000000, 1000000);
  auto add = MustCreate(UpdaterSpec{"add", {}});
  auto assign = MustCreate(UpdaterSpec{"assign", {}});
  ASSERT_TRUE(add->Supports(ValueTypeOf<T>::value));
  ASSERT_TRUE(assign->Supports(ValueTypeOf<T>::value));
  for (size_t width : {1, 3}) {
    Row<T> sum = NewRow<T>(*add, std::vector<T>(width, T(7)));
    Row<T> last = NewRow<T>(*assign, std::vector<T>(width, T(7)));
    std::vector<int64_t> want_sum(width, 7);
    for (int step = 0; step < 100; ++step) {
      std::vector<T> push(width);
      for (T& x : push) x = static_cast<T>(dist(rng));
      ApplyTo(*add, sum, push);
      ApplyTo(*assign, last, push);
      for (size_t i = 0; i < width; ++i) {
        want_sum[i] += push[i];
        ASSERT_EQ(static_cast<int64_t>(sum.value[i]), want_sum[i]);
      }
      ASSERT_EQ(last.value, push);
    }
  }
}

TYPED_TEST(UpdatersIntegerTest, ApplyBatchEqualsApplyRowByRow) {
  const uint64_t seed = TestSeed(17);
  for (const char* name : {"add", "assign"}) {
    SCOPED_TRACE(name);
    auto rule = MustCreate(UpdaterSpec{name, {}});
    ASSERT_NE(rule, nullptr);
    for (uint32_t width : {1u, 3u}) ExpectBatchEqualsRowByRow<TypeParam>(*rule, width, seed + width);
  }
}

TYPED_TEST(UpdatersIntegerTest, AddWrapsAround) {
  using T = TypeParam;
  auto add = MustCreate(UpdaterSpec{"add", {}});
  Row<T> row = NewRow<T>(*add, {std::numeric_limits<T>::max(), std::numeric_limits<T>::min()});
  ApplyTo(*add, row, {T(1), T(-1)});
  EXPECT_EQ(row.value, (std::vector<T>{std::numeric_limits<T>::min(), std::numeric_limits<T>::max()}));
}

TEST(UpdatersTest, SupportsIntegerTypesOnlyForAddAndAssign) {
  for (const char* name : {"add", "assign", "sgd", "adagrad", "adam", "ftrl", "prox"}) {
    SCOPED_TRACE(name);
    auto rule = MustCreate(UpdaterSpec{name, {}});
    ASSERT_NE(rule, nullptr);
    const bool integers = std::string(name) == "add" || std::string(name) == "assign";
    EXPECT_TRUE(rule->Supports(ValueType::kFloat32));
    EXPECT_TRUE(rule->Supports(ValueType::kFloat64));
    EXPECT_EQ(rule->Supports(ValueType::kInt32), integers);
    EXPECT_EQ(rule->Supports(ValueType::kInt64), integers);
  }
}

TEST(UpdatersTest, ArityAndStateSizes) {
  struct Case {
    const char* name;
    uint32_t arity;
    uint32_t state;
  };
  for (const Case& c : {Case{"add", 1, 0}, Case{"assign", 1, 0}, Case{"sgd", 1, 0}, Case{"adagrad", 1, 1},
                        Case{"adam", 1, 3}, Case{"ftrl", 1, 2}, Case{"prox", 2, 4}}) {
    SCOPED_TRACE(c.name);
    auto rule = MustCreate(UpdaterSpec{c.name, {}});
    ASSERT_NE(rule, nullptr);
    EXPECT_EQ(rule->push_arity(), c.arity);
    EXPECT_EQ(rule->state_per_value(), c.state);
  }
  // "prox" with gradient=1: a row (w, G) of width 2, a push (g, u), 4 state values per row.
  auto gradient = MustCreate(UpdaterSpec{"prox", {{"gradient", 1}}});
  ASSERT_NE(gradient, nullptr);
  EXPECT_EQ(gradient->push_arity(), 1u);
  EXPECT_EQ(gradient->state_per_value(), 2u);
  EXPECT_EQ(MustCreate(UpdaterSpec{"prox", {{"gradient", 0}}})->push_arity(), 2u);
}

// ---------------------------------------------------------------------------------------------
// prox

TEST(UpdatersTest, ProxClosedFormOneDimensional) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"l1", 0.1}, {"l2", 0.2}, {"delta", 1.0}}});
  // w0 = 0.5, G = 0.3, U = 2: a = U*w0 - G = 0.7, x = (0.7 - 0.1) / (2 + 0.2).
  Row<double> row = NewRow<double>(*prox, {0.5});
  ApplyTo(*prox, row, {0.3, 2.0}, /*clock=*/4);
  EXPECT_NEAR(row.value[0], 0.6 / 2.2, 1e-15);
  // Negative side: w0 = -0.5, G = -0.3: a = -0.7, x = (-0.7 + 0.1) / 2.2.
  Row<double> neg = NewRow<double>(*prox, {-0.5});
  ApplyTo(*prox, neg, {-0.3, 2.0}, /*clock=*/4);
  EXPECT_NEAR(neg.value[0], -0.6 / 2.2, 1e-15);
  // State: w0, G, U, and the clock + 1.
  EXPECT_EQ(row.state, (std::vector<double>{0.5, 0.3, 2.0, 5.0}));
  // Without regularisation the step is the plain Newton step w0 - G/U.
  auto newton = MustCreate(UpdaterSpec{"prox", {{"delta", 10.0}}});
  Row<double> plain = NewRow<double>(*newton, {1.0});
  ApplyTo(*newton, plain, {0.5, 4.0});
  EXPECT_DOUBLE_EQ(plain.value[0], 1.0 - 0.5 / 4.0);
}

TEST(UpdatersTest, ProxGivesExactZerosBelowTheThreshold) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"l1", 1.0}, {"delta", 5.0}}});
  // a = U*w0 - G = 1*0.25 - (-0.5) = 0.75 <= l1: the value is exactly zero.
  Row<float> row = NewRow<float>(*prox, {0.25f, -0.25f, 0.0f});
  ApplyTo(*prox, row, {-0.5f, 0.5f, 0.9f, 1.0f, 1.0f, 1.0f});
  EXPECT_EQ(row.value[0], 0.0f);
  EXPECT_EQ(row.value[1], 0.0f);
  EXPECT_EQ(row.value[2], 0.0f);
  EXPECT_FALSE(std::signbit(row.value[0]));
  // Just above the threshold the value leaves zero.
  Row<double> above = NewRow<double>(*prox, {0.0});
  ApplyTo(*prox, above, {-1.5, 1.0});
  EXPECT_DOUBLE_EQ(above.value[0], 0.5);
}

TEST(UpdatersTest, ProxClampsToTheTrustRegion) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"delta", 0.25}}});
  Row<double> row = NewRow<double>(*prox, {1.0, 1.0, 1.0});
  // Newton steps 1 - 10 = -9, 1 + 10 = 11 and 1 - 0.1 = 0.9.
  ApplyTo(*prox, row, {10.0, -10.0, 0.1, 1.0, 1.0, 1.0});
  EXPECT_EQ(row.value, (std::vector<double>{0.75, 1.25, 0.9}));
  // The region is around w0 of the iteration, not the current value: a second push of the
  // same clock cannot walk further.
  ApplyTo(*prox, row, {10.0, -10.0, 0.0, 0.0, 0.0, 0.0});
  EXPECT_EQ(row.value, (std::vector<double>{0.75, 1.25, 0.9}));
  // With l1 the zero of the soft threshold is clamped too: w0 = 1, delta = 0.25 -> 0.75.
  auto sparse = MustCreate(UpdaterSpec{"prox", {{"l1", 100.0}, {"delta", 0.25}}});
  Row<double> z = NewRow<double>(*sparse, {1.0});
  ApplyTo(*sparse, z, {0.0, 1.0});
  EXPECT_EQ(z.value[0], 0.75);
}

TEST(UpdatersTest, ProxLeavesTheValueWithoutCurvature) {
  auto prox = MustCreate(UpdaterSpec{"prox", {}});
  Row<double> row = NewRow<double>(*prox, {0.7});
  ApplyTo(*prox, row, {0.5, 0.0}, 3);
  EXPECT_EQ(row.value[0], 0.7);
  // The gradient was still accumulated: a later push of the same clock brings the curvature.
  ApplyTo(*prox, row, {0.5, 2.0}, 3);
  EXPECT_DOUBLE_EQ(row.value[0], 0.7 - 1.0 / 2.0);
  // The value is a function of the sums: if they lose their curvature again, it is w0 (as one
  // push of the sums (1, 0) would give), not the step of the earlier push.
  ApplyTo(*prox, row, {0.0, -2.0}, 3);
  EXPECT_EQ(row.value[0], 0.7);
}

TEST(UpdatersTest, ProxStartsANewIterationWhenTheClockChanges) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"delta", 100.0}}});
  Row<double> row = NewRow<double>(*prox, {2.0});
  ApplyTo(*prox, row, {1.0, 1.0}, /*clock=*/0);  // w0 = 2: 2 - 1/1 = 1
  EXPECT_DOUBLE_EQ(row.value[0], 1.0);
  ApplyTo(*prox, row, {1.0, 1.0}, /*clock=*/0);  // same iteration: 2 - 2/2 = 1
  EXPECT_DOUBLE_EQ(row.value[0], 1.0);
  ApplyTo(*prox, row, {1.0, 4.0}, /*clock=*/1);  // new iteration, w0 = 1: 1 - 1/4
  EXPECT_DOUBLE_EQ(row.value[0], 0.75);
  EXPECT_EQ(row.state, (std::vector<double>{1.0, 1.0, 4.0, 2.0}));
  // Clock 0 after never pushing is distinct from 'never' (c = 0).
  Row<double> fresh = NewRow<double>(*prox, {2.0});
  ApplyTo(*prox, fresh, {1.0, 1.0}, /*clock=*/0);
  EXPECT_EQ(fresh.state[3], 1.0);
  EXPECT_EQ(fresh.state[0], 2.0);
}

// sgd with shrink=1: a gradient step, then a soft threshold that the pusher sizes.
TEST(UpdatersTest, SgdShrinkStepsThenSoftThresholdsToExactZero) {
  auto sgd = MustCreate(UpdaterSpec{"sgd", {{"lr", 0.5}, {"shrink", 1}}});
  EXPECT_EQ(sgd->push_arity(), 2u);
  Row<double> row = NewRow<double>(*sgd, {1.0, -1.0, 0.3});
  // Pushes are the row's gradients, then its shrinks: 1 - 0.5 * 0.2 = 0.9, shrunk by 0.5 * 0.2.
  ApplyTo(*sgd, row, {0.2, 0.0, 0.0, 0.2, 0.2, 0.6});
  EXPECT_DOUBLE_EQ(row.value[0], 0.8);
  EXPECT_DOUBLE_EQ(row.value[1], -0.9);
  EXPECT_EQ(row.value[2], 0.0);  // |0.3| - 0.3: exactly 0
  // A negative shrink is none.
  ApplyTo(*sgd, row, {0.0, 0.0, 0.0, -1.0, -1.0, -1.0});
  EXPECT_DOUBLE_EQ(row.value[0], 0.8);
  EXPECT_EQ(MustCreate(UpdaterSpec{"sgd", {}})->push_arity(), 1u);
}

// ftrl with scaled=1: each value's penalties are l1 s and l2 s, s pushed beside the gradient.
TEST(UpdatersTest, FtrlScaledComputesEachValueWithThePushedPenaltyScale) {
  auto ftrl = MustCreate(UpdaterSpec{"ftrl", {{"alpha", 1.0}, {"beta", 1.0}, {"l1", 1.0}, {"l2", 0.5}, {"scaled", 1}}});
  EXPECT_EQ(ftrl->push_arity(), 2u);
  EXPECT_EQ(MustCreate(UpdaterSpec{"ftrl", {}})->push_arity(), 1u);
  Row<double> row = NewRow<double>(*ftrl, {0.0, 0.0});
  // g = 3 on both: n = 9, sigma = 3, z = 3. Value 0 at s = 1: -(3 - 1) / ((1 + 3) / 1 + 0.5) = -4/9;
  // value 1 at s = 2: -(3 - 2) / (4 + 1) = -0.2.
  ApplyTo(*ftrl, row, {3.0, 3.0, 1.0, 2.0});
  EXPECT_DOUBLE_EQ(row.value[0], -2.0 / 4.5);
  EXPECT_DOUBLE_EQ(row.value[1], -0.2);
  // The same as an unscaled rule with the scaled penalties.
  auto plain = MustCreate(UpdaterSpec{"ftrl", {{"alpha", 1.0}, {"beta", 1.0}, {"l1", 2.0}, {"l2", 1.0}}});
  Row<double> plain_row = NewRow<double>(*plain, {0.0});
  ApplyTo(*plain, plain_row, {3.0});
  EXPECT_EQ(plain_row.value[0], row.value[1]);
  // A zero gradient leaves z and n, and recomputes the value at the new scale: s = 4 puts |z| = 3
  // inside l1 s (exactly 0); a negative s is 0 (no penalty: -3 / 4).
  ApplyTo(*ftrl, row, {0.0, 0.0, 4.0, -1.0});
  EXPECT_EQ(row.value[0], 0.0);
  EXPECT_DOUBLE_EQ(row.value[1], -0.75);
  EXPECT_EQ(row.state, (std::vector<double>{3.0, 3.0, 9.0, 9.0}));
  // A NaN scale counts as 0 too, never a NaN weight.
  ApplyTo(*ftrl, row, {0.0, 0.0, std::numeric_limits<double>::quiet_NaN(), 4.0});
  EXPECT_DOUBLE_EQ(row.value[0], -0.75);
  EXPECT_EQ(row.value[1], 0.0);
}

// adaptive=1: each weight's own trust region, from its last two steps (ProxTrustRegion).
TEST(UpdatersTest, ProxAdaptiveTrustRegionGrowsWithStepsAndHalvesWhenAWeightTurnsBack) {
  EXPECT_EQ(MustCreate(UpdaterSpec{"prox", {{"gradient", 1}, {"adaptive", 1}}})->state_per_value(), 3u);
  UpdaterRegistry registry;
  Result<std::unique_ptr<Updater>> without_gradient = registry.Create(UpdaterSpec{"prox", {{"adaptive", 1}}});
  EXPECT_EQ(without_gradient.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(without_gradient.status().message().find("gradient=1"), std::string::npos) << without_gradient.status();

  auto prox = MustCreate(UpdaterSpec{"prox", {{"gradient", 1}, {"adaptive", 1}, {"delta", 4.0}, {"delta_min", 0.5}}});
  Row<double> row = NewRow<double>(*prox, {0.0, 0.0});
  // First iteration: the trust region is delta. Newton step -g/u = -10, clamped to -4.
  ApplyTo(*prox, row, {10.0, 1.0}, 0);
  EXPECT_EQ(row.value, (std::vector<double>{-4.0, 10.0}));
  EXPECT_EQ(row.state[4], 4.0);
  // Next: twice the last step plus delta_min, at most delta -> 4 (the step -4 would allow 8.5).
  ApplyTo(*prox, row, {0.25, 1.0}, 1);
  EXPECT_EQ(row.state[4], 4.0);
  EXPECT_EQ(row.state[5], -4.0);  // the step of the previous iteration
  EXPECT_DOUBLE_EQ(row.value[0], -4.25);
  // A step of -0.25 after -4: 2 * 0.25 + 0.5 = 1. The Newton step +3 is clamped to +1.
  ApplyTo(*prox, row, {-3.0, 1.0}, 2);
  EXPECT_DOUBLE_EQ(row.state[4], 1.0);
  EXPECT_DOUBLE_EQ(row.value[0], -3.25);
  // The weight turned back (+1 after -0.25): half the last step, 0.5.
  ApplyTo(*prox, row, {-3.0, 1.0}, 3);
  EXPECT_DOUBLE_EQ(row.state[4], 0.5);
  EXPECT_DOUBLE_EQ(row.value[0], -2.75);
  EXPECT_DOUBLE_EQ(ProxTrustRegion(-0.25, 1.0, 4.0, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(ProxTrustRegion(0.0, 0.0, 4.0, 0.5), 0.5);
  // A resumed job forgets the iteration under way but not the trust region.
  prox->OnResume(std::span<double>(row.state));
  EXPECT_EQ(row.state[3], 0.0);
  EXPECT_DOUBLE_EQ(row.state[4], 0.5);
}

TEST(UpdatersTest, ProxIsIndependentOfPushOrderWithinAClock) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"l1", 0.125}, {"l2", 0.5}, {"delta", 0.75}}});
  // Four workers' pushes for a row of width 3, with dyadic values so that every order sums
  // exactly: every permutation must give bit-identical values.
  const std::vector<std::vector<float>> pushes = {
      {0.5f, -0.25f, 0.125f, 1.0f, 0.5f, 0.25f},
      {-0.75f, 0.5f, 0.0625f, 0.5f, 0.25f, 1.0f},
      {0.25f, 0.25f, -1.5f, 0.25f, 1.0f, 0.5f},
      {1.0f, -0.125f, 0.375f, 0.75f, 0.75f, 0.75f},
  };
  std::vector<size_t> order = {0, 1, 2, 3};
  std::vector<float> first;
  do {
    Row<float> row = NewRow<float>(*prox, {0.5f, -0.5f, 0.0f});
    ApplyTo(*prox, row, {0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}, /*clock=*/6);  // an older iteration
    for (size_t p : order) ApplyTo(*prox, row, pushes[p], /*clock=*/7);
    if (first.empty()) first = row.value;
    EXPECT_EQ(row.value, first);
  } while (std::next_permutation(order.begin(), order.end()));

  // The result equals one push of the summed gradient and curvature.
  std::vector<float> sum(6, 0.0f);
  for (const auto& p : pushes)
    for (size_t i = 0; i < 6; ++i) sum[i] += p[i];
  Row<float> once = NewRow<float>(*prox, {0.5f, -0.5f, 0.0f});
  ApplyTo(*prox, once, {0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}, /*clock=*/6);
  ApplyTo(*prox, once, sum, /*clock=*/7);
  EXPECT_EQ(once.value, first);

  // Random (non-dyadic) values in double agree across orders to rounding.
  const uint64_t seed = TestSeed(16);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::vector<std::vector<double>> random_pushes(5, std::vector<double>(2));
  for (auto& p : random_pushes) p = {unit(rng), 1.0 + unit(rng)};
  std::vector<double> results;
  for (int trial = 0; trial < 20; ++trial) {
    std::shuffle(random_pushes.begin(), random_pushes.end(), rng);
    Row<double> row = NewRow<double>(*prox, {0.3});
    for (const auto& p : random_pushes) ApplyTo(*prox, row, p, /*clock=*/2);
    results.push_back(row.value[0]);
  }
  for (double r : results) EXPECT_NEAR(r, results[0], 1e-12);
}

TEST(UpdatersTest, ProxStepClosedForm) {
  // w0 = 0.5, G = 0.3, U = 2, l1 = 0.1, l2 = 0.2: (U*w0 - G - l1) / (U + l2).
  EXPECT_NEAR(ProxStep(0.5, 0.3, 2.0, 0.1, 0.2, 1.0), 0.6 / 2.2, 1e-15);
  EXPECT_NEAR(ProxStep(-0.5, -0.3, 2.0, 0.1, 0.2, 1.0), -0.6 / 2.2, 1e-15);
  // Inside the L1 band: exactly +0.
  EXPECT_EQ(ProxStep(0.25, -0.5, 1.0, 1.0, 0.0, 5.0), 0.0);
  EXPECT_FALSE(std::signbit(ProxStep(-0.25, 0.5, 1.0, 1.0, 0.0, 5.0)));
  // The trust region around w0, also for the zero of the threshold.
  EXPECT_EQ(ProxStep(1.0, 10.0, 1.0, 0.0, 0.0, 0.25), 0.75);
  EXPECT_EQ(ProxStep(1.0, 0.0, 1.0, 100.0, 0.0, 0.25), 0.75);
  // No curvature (or NaN): no step.
  EXPECT_EQ(ProxStep(0.7, 0.5, 0.0, 0.0, 0.0, 1.0), 0.7);
  EXPECT_EQ(ProxStep(0.7, 0.5, -1.0, 0.0, 0.5, 1.0), 0.7);
  EXPECT_EQ(ProxStep(0.7, 0.5, std::numeric_limits<double>::quiet_NaN(), 0.0, 0.0, 1.0), 0.7);
  // Only l2 curvature: a pure proximal step of the regulariser, (0*w0 - G) / l2.
  EXPECT_DOUBLE_EQ(ProxStep(0.0, -1.0, 0.0, 0.0, 2.0, 5.0), 0.5);
}

// ---------------------------------------------------------------------------------------------
// prox with gradient=1: rows (w, G), pushes (g, u)

// The same pushes, as (g, u) per key, through both layouts: the weights are bit-identical
// (one step, one code path), G is the sum of the iteration's gradients, and the state holds
// w0, G, U, c as the plain layout's blocks do for a width-1 row.
TYPED_TEST(UpdatersTypedTest, ProxGradientLayoutGivesThePlainLayoutsWeights) {
  using T = TypeParam;
  const uint64_t seed = TestSeed(18);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  const std::map<std::string, double> params = {{"l1", 0.25}, {"l2", 0.1}, {"delta", 0.5}};
  auto plain = MustCreate(UpdaterSpec{"prox", params});
  std::map<std::string, double> with_g = params;
  with_g["gradient"] = 1;
  auto gradient = MustCreate(UpdaterSpec{"prox", with_g});
  ASSERT_TRUE(plain && gradient);
  for (int key = 0; key < 4; ++key) {
    const T init = static_cast<T>(0.5 * unit(rng));
    Row<T> p = NewRow<T>(*plain, {init});
    Row<T> g = NewRow<T>(*gradient, {init, T(0)});
    ASSERT_EQ(g.state.size(), 4u);
    uint64_t clock = 0;
    double sum_g = 0;  // the iteration's gradients, summed in T as the rule stores them
    for (int step = 0; step < 200; ++step) {
      if (rng() % 3 == 0) {
        clock += 1 + rng() % 2;
        sum_g = 0;
      }
      const T grad = static_cast<T>(unit(rng));
      const T curv = static_cast<T>(1.0 + unit(rng));  // (0, 2): the sums stay positive
      ApplyTo(*plain, p, {grad, curv}, clock);
      ApplyTo(*gradient, g, {grad, curv}, clock);
      sum_g = static_cast<T>(sum_g + static_cast<double>(grad));
      ASSERT_EQ(g.value[0], p.value[0]) << "key " << key << " step " << step;
      ASSERT_EQ(static_cast<double>(g.value[1]), sum_g) << "key " << key << " step " << step;
      ASSERT_EQ(g.state, p.state) << "key " << key << " step " << step;  // w0, G, U, c
    }
  }
}

TEST(UpdatersTest, ProxGradientRowHoldsTheIterationsGradientAndRestartsOnANewClock) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"delta", 100.0}, {"gradient", 1}}});
  Row<double> row = NewRow<double>(*prox, {2.0, 0.0});
  ApplyTo(*prox, row, {1.0, 1.0}, /*clock=*/0);  // w0 = 2: 2 - 1/1 = 1
  EXPECT_EQ(row.value, (std::vector<double>{1.0, 1.0}));
  ApplyTo(*prox, row, {0.5, 1.0}, /*clock=*/0);  // same iteration: 2 - 1.5/2
  EXPECT_EQ(row.value, (std::vector<double>{1.25, 1.5}));
  EXPECT_EQ(row.state, (std::vector<double>{2.0, 1.5, 2.0, 1.0}));  // w0, G, U, clock + 1
  // A new iteration starts from the current weight, with fresh sums: G is this iteration's.
  ApplyTo(*prox, row, {-1.0, 4.0}, /*clock=*/1);  // w0 = 1.25: 1.25 + 1/4
  EXPECT_EQ(row.value, (std::vector<double>{1.5, -1.0}));
  EXPECT_EQ(row.state, (std::vector<double>{1.25, -1.0, 4.0, 2.0}));
  // A pushed G column is ignored: the row's G is the rule's sum, whatever was stored there.
  Row<double> stale = NewRow<double>(*prox, {2.0, 123.0});
  ApplyTo(*prox, stale, {1.0, 1.0}, /*clock=*/0);
  EXPECT_EQ(stale.value, (std::vector<double>{1.0, 1.0}));
}

TEST(UpdatersTest, ProxGradientIsIndependentOfPushOrderWithinAClock) {
  auto prox = MustCreate(UpdaterSpec{"prox", {{"l1", 0.125}, {"l2", 0.5}, {"delta", 0.75}, {"gradient", 1}}});
  // Four workers' (g, u), dyadic so that every order sums exactly: bit-identical rows.
  const std::vector<std::vector<float>> pushes = {{0.5f, 1.0f}, {-0.75f, 0.5f}, {0.25f, 0.25f}, {1.0f, 0.75f}};
  std::vector<size_t> order = {0, 1, 2, 3};
  std::vector<float> first;
  std::vector<float> first_state;
  do {
    Row<float> row = NewRow<float>(*prox, {0.5f, 0.0f});
    ApplyTo(*prox, row, {0.0f, 1.0f}, /*clock=*/6);  // an older iteration
    for (size_t p : order) ApplyTo(*prox, row, pushes[p], /*clock=*/7);
    if (first.empty()) {
      first = row.value;
      first_state = row.state;
    }
    EXPECT_EQ(row.value, first);
    EXPECT_EQ(row.state, first_state);
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(first[1], 0.5f - 0.75f + 0.25f + 1.0f);  // G: the iteration's gradients
  // The same as one push of the sums.
  Row<float> once = NewRow<float>(*prox, {0.5f, 0.0f});
  ApplyTo(*prox, once, {0.0f, 1.0f}, /*clock=*/6);
  ApplyTo(*prox, once, {1.0f, 2.5f}, /*clock=*/7);
  EXPECT_EQ(once.value, first);
  // And ProxStep of the sums, from w0 = the weight clock 6 left.
  const double w0 = static_cast<float>(ProxStep(0.5, 0.0, 1.0, 0.125, 0.5, 0.75));
  EXPECT_EQ(first[0], static_cast<float>(ProxStep(w0, 1.0, 2.5, 0.125, 0.5, 0.75)));
}

TEST(UpdatersTest, ProxGradientRefusesOtherWidthsAndArities) {
  auto gradient = MustCreate(UpdaterSpec{"prox", {{"gradient", 1}}});
  auto plain = MustCreate(UpdaterSpec{"prox", {}});
  ASSERT_TRUE(gradient && plain);
  EXPECT_TRUE(gradient->FitsWidth(2, false).ok());
  for (uint32_t width : {1u, 3u, 64u}) {
    const Status s = gradient->FitsWidth(width, false);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << width;
    EXPECT_NE(s.message().find("width 2"), std::string::npos) << s;
  }
  EXPECT_EQ(gradient->FitsWidth(2, true).code(), StatusCode::kInvalidArgument);
  // The plain layout (and every other rule) takes any width.
  for (uint32_t width : {1u, 2u, 3u}) EXPECT_TRUE(plain->FitsWidth(width, false).ok());
  EXPECT_TRUE(plain->FitsWidth(0, true).ok());

  // Through the table check (kv/table_catalog.h): the table, the rule and what is wrong.
  TableSpec spec;
  spec.name = "dbpg_w";
  spec.value_type = ValueType::kFloat64;
  spec.updater = UpdaterSpec{"prox", {{"gradient", 1}}};
  spec.width = 2;
  spec.push_arity = 1;
  EXPECT_TRUE(ValidateTableSpec(spec, gradient.get()).ok());
  spec.width = 3;
  Status s = ValidateTableSpec(spec, gradient.get());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "table 'dbpg_w': updater 'prox': with gradient=1 a row is (w, G): the table needs width 2, not 3");
  spec.width = 0;
  spec.variable_length = true;
  s = ValidateTableSpec(spec, gradient.get());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("table 'dbpg_w'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("variable-length"), std::string::npos) << s;
  spec.width = 2;
  spec.variable_length = false;
  spec.push_arity = 2;
  s = ValidateTableSpec(spec, gradient.get());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "table 'dbpg_w': updater 'prox' takes pushes of arity 1, the table declares 2");
}

// ---------------------------------------------------------------------------------------------
// Registry and parameters

TEST(UpdatersTest, RegistryHasTheBuiltins) {
  UpdaterRegistry registry;
  for (const char* name : {"add", "assign", "sgd", "adagrad", "adam", "ftrl", "prox"}) {
    EXPECT_TRUE(registry.Contains(name)) << name;
    auto made = registry.Create(UpdaterSpec{name, {}});
    ASSERT_TRUE(made.ok()) << made.status();
    EXPECT_NE(*made, nullptr);
  }
  EXPECT_FALSE(registry.Contains("momentum"));
  // The default spec names "add".
  auto made = registry.Create(UpdaterSpec{});
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE((*made)->Supports(ValueType::kInt64));
}

TEST(UpdatersTest, RegisterRefusesEmptyAndDuplicateNames) {
  UpdaterRegistry registry;
  auto factory = [](const UpdaterSpec& spec) { return MakeAddUpdater(spec); };
  EXPECT_EQ(registry.Register("", factory).code(), StatusCode::kInvalidArgument);
  const Status dup = registry.Register("adam", factory);
  EXPECT_EQ(dup.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("adam"), std::string::npos) << dup;
  EXPECT_EQ(registry.Register("mine", nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.Register("mine", factory).ok());
  EXPECT_EQ(registry.Register("mine", factory).code(), StatusCode::kInvalidArgument);
}

TEST(UpdatersTest, CreateOfAnUnknownRuleIsNotFound) {
  UpdaterRegistry registry;
  auto made = registry.Create(UpdaterSpec{"momentum", {}});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kNotFound);
  EXPECT_NE(made.status().message().find("'momentum'"), std::string::npos) << made.status();
}

// A user rule: value = decay * value + push, with the decay from the spec's params.
class DecayAdd final : public Updater {
 public:
  explicit DecayAdd(double decay) : decay_(decay) {}
  using Updater::Apply;
  void Apply(const UpdateContext&, std::span<float> v, std::span<float>, std::span<const float> p) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(decay_ * v[i] + p[i]);
  }
  void Apply(const UpdateContext&, std::span<double> v, std::span<double>, std::span<const double> p) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] = decay_ * v[i] + p[i];
  }

 private:
  double decay_;
};

TEST(UpdatersTest, UserRuleIsCreatedThroughTheRegistry) {
  UpdaterRegistry registry;
  ASSERT_TRUE(registry
                  .Register("decay_add",
                            [](const UpdaterSpec& spec) -> Result<std::unique_ptr<Updater>> {
                              double decay = 1.0;
                              for (const auto& [name, value] : spec.params) {
                                if (name != "decay") return Status::InvalidArgument("unknown parameter '" + name + "'");
                                decay = value;
                              }
                              return std::unique_ptr<Updater>(std::make_unique<DecayAdd>(decay));
                            })
                  .ok());
  EXPECT_TRUE(registry.Contains("decay_add"));
  auto made = registry.Create(UpdaterSpec{"decay_add", {{"decay", 0.5}}});
  ASSERT_TRUE(made.ok()) << made.status();
  Row<double> row = NewRow<double>(**made, {4.0, 2.0});
  ApplyTo(**made, row, {1.0, 1.0});
  EXPECT_EQ(row.value, (std::vector<double>{3.0, 2.0}));
  auto bad = registry.Create(UpdaterSpec{"decay_add", {{"rate", 0.5}}});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  // A copy of the registry carries the user rule (it goes into ServerOptions by value).
  UpdaterRegistry copy = registry;
  EXPECT_TRUE(copy.Contains("decay_add"));
  // A factory returning no rule is an internal error, not a crash later.
  ASSERT_TRUE(registry.Register("broken", [](const UpdaterSpec&) -> Result<std::unique_ptr<Updater>> {
                        return std::unique_ptr<Updater>();
                      }).ok());
  EXPECT_EQ(registry.Create(UpdaterSpec{"broken", {}}).status().code(), StatusCode::kInternal);
}

// A rule with Apply only: the default ApplyBatch calls Apply once per entry, in order, with the
// entry's spans.
class CallLog final : public Updater {
 public:
  uint32_t push_arity() const override { return 2; }
  uint32_t state_per_value() const override { return 3; }
  using Updater::Apply;
  void Apply(const UpdateContext& ctx, std::span<float> v, std::span<float> s, std::span<const float> p) const override {
    calls.push_back({v.data(), v.size(), s.data(), s.size(), p.data(), p.size(), ctx.clock});
    v[0] += p[0];  // later entries for the same row must see this
  }
  void Apply(const UpdateContext&, std::span<double>, std::span<double>, std::span<const double>) const override {}

  struct Call {
    const float* value;
    size_t value_size;
    const float* state;
    size_t state_size;
    const float* push;
    size_t push_size;
    uint64_t clock;
  };
  mutable std::vector<Call> calls;  // a test double: single-threaded
};

TEST(UpdatersTest, DefaultApplyBatchCallsApplyOncePerEntryInOrder) {
  CallLog rule;
  constexpr uint32_t kWidth = 2;
  std::vector<float> values(2 * kWidth, 1.0f), states(2 * kWidth * 3, 0.0f), pushes(3 * kWidth * 2, 2.0f);
  const std::vector<RowUpdate<float>> entries = {
      {values.data(), states.data(), pushes.data()},
      {values.data() + kWidth, states.data() + kWidth * 3, pushes.data() + kWidth * 2},
      {values.data(), states.data(), pushes.data() + 2 * kWidth * 2},
  };
  UpdateContext ctx;
  ctx.clock = 9;
  static_cast<const Updater&>(rule).ApplyBatch(ctx, kWidth, std::span<const RowUpdate<float>>(entries));
  ASSERT_EQ(rule.calls.size(), entries.size());
  for (size_t k = 0; k < entries.size(); ++k) {
    EXPECT_EQ(rule.calls[k].value, entries[k].value);
    EXPECT_EQ(rule.calls[k].value_size, kWidth);
    EXPECT_EQ(rule.calls[k].state, entries[k].state);
    EXPECT_EQ(rule.calls[k].state_size, kWidth * 3);
    EXPECT_EQ(rule.calls[k].push, entries[k].push);
    EXPECT_EQ(rule.calls[k].push_size, kWidth * 2);
    EXPECT_EQ(rule.calls[k].clock, 9u);
  }
  EXPECT_EQ(values[0], 5.0f);  // row 0 twice: 1 + 2 + 2
  EXPECT_EQ(values[kWidth], 3.0f);
}

TEST(UpdatersTest, UnknownParameterIsNamedWithTheKnownOnes) {
  UpdaterRegistry registry;
  auto made = registry.Create(UpdaterSpec{"adam", {{"lr2", 0.1}}});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(made.status().message(), "updater 'adam': unknown parameter 'lr2' (known: beta1, beta2, eps, lr)");
  auto add = registry.Create(UpdaterSpec{"add", {{"lr", 0.1}}});
  EXPECT_EQ(add.status().message(), "updater 'add': unknown parameter 'lr' (known: none)");
}

TEST(UpdatersTest, OutOfRangeParametersAreRefused) {
  struct Case {
    const char* rule;
    const char* param;
    double value;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const Case cases[] = {
      {"sgd", "lr", -0.1},      {"sgd", "lr", nan},         {"adagrad", "lr", -1.0},  {"adagrad", "eps", 0.0},
      {"adagrad", "eps", -1.0}, {"adam", "lr", -0.001},     {"adam", "beta1", 1.0},   {"adam", "beta1", -0.1},
      {"adam", "beta2", 1.5},   {"adam", "eps", 0.0},       {"adam", "lr", inf},      {"ftrl", "alpha", 0.0},
      {"ftrl", "beta", -1.0},   {"ftrl", "l1", -0.5},       {"ftrl", "l2", -0.5},     {"ftrl", "scaled", 0.5}, {"prox", "l1", -1.0},
      {"prox", "l2", -1.0},     {"prox", "delta", 0.0},     {"prox", "delta", -2.0},  {"prox", "gradient", 0.5},
      {"prox", "gradient", 2.0}, {"prox", "gradient", -1.0}, {"prox", "gradient", nan},
  };
  UpdaterRegistry registry;
  for (const Case& c : cases) {
    auto made = registry.Create(UpdaterSpec{c.rule, {{c.param, c.value}}});
    ASSERT_FALSE(made.ok()) << c.rule << " " << c.param << "=" << c.value;
    EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
    const std::string msg = made.status().message();
    EXPECT_NE(msg.find(std::string("updater '") + c.rule + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::string("parameter '") + c.param + "'"), std::string::npos) << msg;
  }
  // Boundary values that are allowed.
  for (const Case& c : {Case{"sgd", "lr", 0.0}, Case{"adam", "beta1", 0.0}, Case{"adam", "beta2", 0.999999},
                        Case{"ftrl", "beta", 0.0}, Case{"prox", "l1", 0.0}, Case{"prox", "gradient", 0.0},
                        Case{"prox", "gradient", 1.0}}) {
    auto made = registry.Create(UpdaterSpec{c.rule, {{c.param, c.value}}});
    EXPECT_TRUE(made.ok()) << c.rule << " " << c.param << ": " << made.status();
  }
}

TEST(UpdatersTest, TheTableCheckAsksTheRule) {
  auto prox = MustCreate(UpdaterSpec{"prox", {}});
  auto sgd = MustCreate(UpdaterSpec{"sgd", {}});
  TableSpec spec;
  spec.name = "w";
  spec.updater = UpdaterSpec{"prox", {}};
  spec.push_arity = 2;
  EXPECT_TRUE(ValidateTableSpec(spec, prox.get()).ok());
  spec.push_arity = 1;
  EXPECT_EQ(ValidateTableSpec(spec, prox.get()).code(), StatusCode::kInvalidArgument);
  spec.updater = UpdaterSpec{"sgd", {}};
  EXPECT_TRUE(ValidateTableSpec(spec, sgd.get()).ok());
  spec.value_type = ValueType::kInt32;
  const Status s = ValidateTableSpec(spec, sgd.get());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'sgd'"), std::string::npos) << s;
}

}  // namespace
}  // namespace pserver::kv
