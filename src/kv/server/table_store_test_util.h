// Helpers of the TableStore tests (table_store_test.cc, table_store_rows_test.cc): table specs,
// stores and requests.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kv/server/table_store.h"

namespace pserver::kv::table_store_test {

using transport::MessageType;

inline constexpr TableId kTable{7};

inline TableSpec Spec(ValueType type = ValueType::kFloat32, uint32_t width = 1) {
  TableSpec spec;
  spec.name = std::string("t");  // not = "t": GCC 12 -Wrestrict false positive (PR105329)
  spec.value_type = type;
  spec.width = width;
  return spec;
}

inline TableSpec DenseSpec(KeyRange range, uint32_t width = 1) {
  TableSpec spec = Spec(ValueType::kFloat32, width);
  spec.storage = StorageKind::kDense;
  spec.placement = KeyPlacement::kRange;
  spec.key_range = range;
  return spec;
}

inline std::unique_ptr<TableStore> Make(const TableSpec& spec, std::unique_ptr<Updater> rule, ApplyPool* pool = nullptr,
                                         std::optional<std::vector<KeyRange>> owned = std::nullopt) {
  Result<std::unique_ptr<TableStore>> store = TableStore::Create(kTable, spec, std::move(rule), pool, std::move(owned));
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

template <typename T>
ServerRequest Request(MessageType type, std::vector<Key> keys, std::vector<T> vals, uint32_t width) {
  ServerRequest r;
  r.type = type;
  r.table = kTable;
  r.value_type = ValueTypeOf<T>::value;
  r.width = width;
  r.keys = SharedArray<Key>(std::move(keys));
  r.vals = transport::AsBytes(SharedArray<T>(std::move(vals)));
  return r;
}

// A push to a variable-length table: lens[i] values (times the push arity) for keys[i].
template <typename T>
ServerRequest VarRequest(MessageType type, std::vector<Key> keys, std::vector<T> vals, std::vector<int32_t> lens) {
  ServerRequest r = Request<T>(type, std::move(keys), std::move(vals), 0);
  r.lens = SharedArray<int32_t>(std::move(lens));
  return r;
}

template <typename T>
std::vector<T> Values(const ServerResponse& resp) {
  std::vector<T> v(resp.vals.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), resp.vals.data(), resp.vals.size());
  return v;
}

template <typename T>
Status Push(TableStore& store, std::vector<Key> keys, std::vector<T> vals, uint32_t width = 1, uint64_t clock = 0) {
  ServerResponse resp;
  UpdateContext ctx;
  ctx.clock = clock;
  return store.Handle(Request<T>(MessageType::kPush, std::move(keys), std::move(vals), width), ctx, &resp);
}

template <typename T>
std::vector<T> Pull(TableStore& store, std::vector<Key> keys, uint32_t width = 1) {
  ServerResponse resp;
  Status s = store.Handle(Request<T>(MessageType::kPull, std::move(keys), {}, width), UpdateContext{}, &resp);
  EXPECT_TRUE(s.ok()) << s;
  return Values<T>(resp);
}

inline void ExpectInvalid(const Status& s, const std::string& needle = "") {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s;
}

}  // namespace pserver::kv::table_store_test
