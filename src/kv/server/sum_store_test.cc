#include "kv/server/sum_store.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::MessageType;

template <typename T>
ServerRequest Request(MessageType type, TableId table, std::vector<Key> keys, std::vector<T> vals, uint32_t width,
                      std::vector<int32_t> lens = {}) {
  ServerRequest r;
  r.type = type;
  r.table = table;
  r.value_type = ValueTypeOf<T>::value;
  r.width = width;
  r.keys = SharedArray<Key>(std::move(keys));
  r.vals = transport::AsBytes(SharedArray<T>(std::move(vals)));
  r.lens = SharedArray<int32_t>(std::move(lens));
  return r;
}

template <typename T>
std::vector<T> Values(const ServerResponse& resp) {
  const T* p = reinterpret_cast<const T*>(resp.vals.data());
  return std::vector<T>(p, p + resp.vals.size() / sizeof(T));
}

std::vector<int32_t> Lengths(const ServerResponse& resp) { return {resp.lens.begin(), resp.lens.end()}; }

template <typename T>
class SumStoreTest : public ::testing::Test {
 protected:
  Status Push(TableId table, std::vector<Key> keys, std::vector<T> vals, uint32_t width = 1) {
    ServerResponse resp;
    return store_.Handle(Request<T>(MessageType::kPush, table, std::move(keys), std::move(vals), width), &resp);
  }
  Status PushVar(TableId table, std::vector<Key> keys, std::vector<T> vals, std::vector<int32_t> lens) {
    ServerResponse resp;
    return store_.Handle(Request<T>(MessageType::kPush, table, std::move(keys), std::move(vals), 0, std::move(lens)),
                         &resp);
  }
  std::vector<T> Pull(TableId table, std::vector<Key> keys, uint32_t width = 1) {
    ServerResponse resp;
    EXPECT_OK(store_.Handle(Request<T>(MessageType::kPull, table, std::move(keys), {}, width), &resp));
    return Values<T>(resp);
  }
  // Pulls from a variable-length table: the values and each key's length.
  std::pair<std::vector<T>, std::vector<int32_t>> PullVar(TableId table, std::vector<Key> keys) {
    ServerResponse resp;
    EXPECT_OK(store_.Handle(Request<T>(MessageType::kPull, table, std::move(keys), {}, 0), &resp));
    return {Values<T>(resp), Lengths(resp)};
  }

  SumStore<T> store_;
};

using ValueTypes = ::testing::Types<float, double, int32_t, int64_t>;
TYPED_TEST_SUITE(SumStoreTest, ValueTypes);

TYPED_TEST(SumStoreTest, PullOfNeverPushedKeyIsZero) {
  using T = TypeParam;
  const TableId t(1);
  EXPECT_EQ(this->Pull(t, {3, 99, ~Key{0}}), (std::vector<T>{0, 0, 0}));
  EXPECT_EQ(this->Pull(t, {7}, 4), (std::vector<T>{0, 0, 0, 0}));
  auto [vals, lens] = this->PullVar(TableId(2), {1, 2});
  EXPECT_TRUE(vals.empty());
  EXPECT_EQ(lens, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(this->store_.size(t), 0u);  // a pull stores nothing
}

TYPED_TEST(SumStoreTest, PushAddsToStoredValues) {
  using T = TypeParam;
  const TableId t(1);
  ASSERT_OK(this->Push(t, {1, 5, 9}, {1, 2, 3}));
  ASSERT_OK(this->Push(t, {5, 9, 12}, {10, 20, 30}));
  ASSERT_OK(this->Push(t, {9}, {100}));
  EXPECT_EQ(this->Pull(t, {1, 5, 9, 12, 77}), (std::vector<T>{1, 12, 123, 30, 0}));
  EXPECT_EQ(this->store_.size(t), 4u);
  // Keys in any order: the answer follows the request's order.
  EXPECT_EQ(this->Pull(t, {12, 1}), (std::vector<T>{30, 1}));
}

TYPED_TEST(SumStoreTest, PushPullAnswersWithValuesAfterThePush) {
  using T = TypeParam;
  const TableId t(1);
  ASSERT_OK(this->Push(t, {4}, {6}));
  ServerResponse resp;
  ASSERT_OK(this->store_.Handle(Request<T>(MessageType::kPushPull, t, {4, 8}, {1, 2}, 1), &resp));
  EXPECT_EQ(Values<T>(resp), (std::vector<T>{7, 2}));
  EXPECT_EQ(this->Pull(t, {4, 8}), (std::vector<T>{7, 2}));
}

TYPED_TEST(SumStoreTest, WideRowsAddElementwise) {
  using T = TypeParam;
  const TableId t(3);
  ASSERT_OK(this->Push(t, {10, 20}, {1, 2, 3, 4, 5, 6}, 3));
  ASSERT_OK(this->Push(t, {20, 30}, {10, 20, 30, 7, 8, 9}, 3));
  EXPECT_EQ(this->Pull(t, {10, 20, 30, 40}, 3), (std::vector<T>{1, 2, 3, 14, 25, 36, 7, 8, 9, 0, 0, 0}));
}

TYPED_TEST(SumStoreTest, LargeRowPulledEarlierIsNotChangedByLaterPush) {
  using T = TypeParam;
  const TableId t(4);
  const uint32_t w = (1u << 15) + 3;  // rows of 128 KiB or more: the store may share them with replies
  std::vector<T> row(w), delta(w);
  for (uint32_t j = 0; j < w; ++j) {
    row[j] = static_cast<T>(j % 1000);
    delta[j] = static_cast<T>(j % 7 + 1);
  }
  ASSERT_OK(this->Push(t, {42}, row, w));
  // A reply may share the stored row; it must still show the value it was sent with.
  ServerResponse held;
  ASSERT_OK(this->store_.Handle(Request<T>(MessageType::kPull, t, {42}, {}, w), &held));
  ASSERT_OK(this->Push(t, {42}, delta, w));
  std::vector<T> sum(w);
  for (uint32_t j = 0; j < w; ++j) sum[j] = row[j] + delta[j];
  EXPECT_EQ(Values<T>(held), row);
  EXPECT_EQ(this->Pull(t, {42}, w), sum);
  // Several keys, one never pushed.
  std::vector<T> both = sum;
  both.resize(2 * size_t{w}, T{0});
  EXPECT_EQ(this->Pull(t, {42, 43}, w), both);
  EXPECT_EQ(this->store_.size(t), 1u);
}

TYPED_TEST(SumStoreTest, LargeKeyNeverPushedPullsZerosThatLaterPushesDoNotChange) {
  using T = TypeParam;
  const TableId t(7);
  const uint32_t w = (1u << 15) + 3;
  const std::vector<T> zeros(w, T{0});
  ServerResponse first, second;
  ASSERT_OK(this->store_.Handle(Request<T>(MessageType::kPull, t, {9}, {}, w), &first));
  ASSERT_OK(this->store_.Handle(Request<T>(MessageType::kPull, t, {10}, {}, w), &second));
  EXPECT_EQ(Values<T>(first), zeros);
  EXPECT_EQ(first.vals.data(), second.vals.data());  // one shared row of zeros, not one per pull
  ASSERT_OK(this->Push(t, {9}, std::vector<T>(w, T{5}), w));
  EXPECT_EQ(Values<T>(first), zeros);
  EXPECT_EQ(this->Pull(t, {9}, w), std::vector<T>(w, T{5}));
  EXPECT_EQ(this->Pull(t, {10}, w), zeros);
  EXPECT_EQ(this->store_.size(t), 1u);
}

TYPED_TEST(SumStoreTest, VariableLengthRowsTakeTheirLengthFromTheFirstPush) {
  using T = TypeParam;
  const TableId t(5);
  ASSERT_OK(this->PushVar(t, {1, 2, 3}, {1, 2, 3, 4, 5}, {2, 0, 3}));
  ASSERT_OK(this->PushVar(t, {1, 3}, {10, 20, 30, 40, 50}, {2, 3}));
  auto [vals, lens] = this->PullVar(t, {1, 2, 3, 4});
  EXPECT_EQ(lens, (std::vector<int32_t>{2, 0, 3, 0}));
  EXPECT_EQ(vals, (std::vector<T>{11, 22, 33, 44, 55}));
  EXPECT_EQ(this->store_.size(t), 3u);
}

TYPED_TEST(SumStoreTest, VariableLengthPushOfAnotherLengthIsRefusedAndChangesNothing) {
  using T = TypeParam;
  const TableId t(6);
  ASSERT_OK(this->PushVar(t, {1, 2}, {1, 2, 3}, {2, 1}));
  // Key 1 matches its length, key 2 does not: the whole push is refused, key 1 included.
  EXPECT_TRUE(StatusIs(this->PushVar(t, {1, 2, 3}, {5, 5, 5, 5, 9}, {2, 2, 1}), StatusCode::kInvalidArgument,
                       "key 2 holds 1 values"));
  auto [vals, lens] = this->PullVar(t, {1, 2, 3});
  EXPECT_EQ(lens, (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(vals, (std::vector<T>{1, 2, 3}));
  EXPECT_EQ(this->store_.size(t), 2u);
}

TYPED_TEST(SumStoreTest, TablesAreIndependent) {
  using T = TypeParam;
  ASSERT_OK(this->Push(TableId(1), {7}, {1}));
  ASSERT_OK(this->Push(TableId(2), {7}, {2, 3}, 2));
  ASSERT_OK(this->PushVar(TableId(3), {7}, {4, 5, 6}, {3}));
  ASSERT_OK(this->Push(TableId(1), {8}, {9}));
  EXPECT_EQ(this->Pull(TableId(1), {7, 8}), (std::vector<T>{1, 9}));
  EXPECT_EQ(this->Pull(TableId(2), {7, 8}, 2), (std::vector<T>{2, 3, 0, 0}));
  auto [vals, lens] = this->PullVar(TableId(3), {7, 8});
  EXPECT_EQ(vals, (std::vector<T>{4, 5, 6}));
  EXPECT_EQ(lens, (std::vector<int32_t>{3, 0}));
  EXPECT_EQ(this->store_.size(TableId(1)), 2u);
  EXPECT_EQ(this->store_.size(TableId(2)), 1u);
  EXPECT_EQ(this->store_.size(TableId(3)), 1u);
  EXPECT_EQ(this->store_.size(TableId(4)), 0u);
}

TEST(SumStoreTest, IntegerSumsAreExact) {
  SumStore<int64_t> store;
  const int64_t big = int64_t{1} << 53;  // not representable after +1 in a double
  ServerResponse resp;
  ASSERT_OK(store.Handle(Request<int64_t>(MessageType::kPush, TableId(1), {1}, {big}, 1), &resp));
  ASSERT_OK(store.Handle(Request<int64_t>(MessageType::kPush, TableId(1), {1}, {1}, 1), &resp));
  ASSERT_OK(store.Handle(Request<int64_t>(MessageType::kPull, TableId(1), {1}, {}, 1), &resp));
  EXPECT_EQ(Values<int64_t>(resp), (std::vector<int64_t>{big + 1}));
}

}  // namespace
}  // namespace pserver::kv
