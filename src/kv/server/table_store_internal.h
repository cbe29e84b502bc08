// What the storage layouts of TableStore (table_store.h) share: the request contract, initial values
// and the factories of the layouts. Internal to table_store*.cc and *_row_store.cc.
#pragma once

#include <cassert>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kv/server/table_store.h"

namespace pserver::kv::table_store_internal {

std::string RangeString(KeyRange r);
// "[a, b], [c, d]" ("none" for no range).
std::string RangesString(std::span<const KeyRange> ranges);

// Asserts (debug builds) what KVServerCore checked of a request before handing it over, once,
// where it came off the wire: the table id, the value type, `width` (0 for a variable-length
// table), at most 2^32 - 1 keys, and pushed values that are keys x width x push_arity (variable
// length: a non-negative length per key, whose sum times push_arity is the values' count).
void AssertChecked(const TableStore& store, const ServerRequest& req, uint32_t width, uint32_t push_arity);

// The initial value of `column` of `key` in a table of T.
template <typename T>
T Initial(const InitializerSpec& init, Key key, uint32_t column) {
  if (init.kind == InitializerSpec::Kind::kZero) return T{};
  return static_cast<T>(InitialValue(init, key, column));
}

// The pushed values of `req` as T: the request's own bytes when they are aligned for T, else a
// copy made into *aligned.
template <typename T>
const T* PushedValues(const ServerRequest& req, SharedArray<T>* aligned) {
  if (reinterpret_cast<uintptr_t>(req.vals.data()) % alignof(T) == 0) {
    return reinterpret_cast<const T*>(req.vals.data());
  }
  *aligned = SharedArray<T>::Uninitialized(req.vals.size() / sizeof(T));
  if (!req.vals.empty()) std::memcpy(aligned->data(), req.vals.data(), req.vals.size());
  return aligned->data();
}

// The layouts. REQUIRES: `spec` and `updater` passed the checks of TableStore::Create; `owned`
// sorted, disjoint and within spec.key_range.
// Sparse (SparseRows, sharded on `pool`) or dense (one array per owned range) fixed-width rows.
std::unique_ptr<TableStore> NewFixedRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater,
                                             ApplyPool* pool, std::vector<KeyRange> owned);
// Sparse rows of at least TableStore::kLargeRowBytes, one shared buffer each.
std::unique_ptr<TableStore> NewLargeRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater);
// Variable-length sparse rows.
std::unique_ptr<TableStore> NewVarRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater);

}  // namespace pserver::kv::table_store_internal
