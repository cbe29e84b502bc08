// What the lossy filters (quantize_filter.h, significant_filter.h) share: rows kept by key
// (KeyedRows); the error-feedback store, which keeps per key what rounding took off the values
// sent for it so far, to be added to its next values; and the check that a table's values can
// be rounded at all.
//
// Thread safety: KeyedRows and Residuals are not thread-safe; their filter locks around them.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pserver/shared_array.h"
#include "pserver/status.h"
#include "pserver/table.h"

namespace pserver::kv {

// Rows of `width` elements by key: each key's row keeps its slot until Clear. What the lossy
// filters keep per key -- residuals (below), and sigmod's copies of pull replies.
template <typename E>
class KeyedRows {
 public:
  explicit KeyedRows(size_t width = 0) : width_(width) {}

  size_t width() const { return width_; }
  size_t size() const { return slots_.size(); }

  // Forgets every row; rows from then on have `width` elements.
  void Clear(size_t width) {
    width_ = width;
    slots_.clear();
    rows_.clear();
  }
  void Clear() { Clear(width_); }
  void Prefetch(Key key) const { slots_.prefetch(key); }
  // The row of `key`, or null; valid until the next Slot() that makes one.
  E* Find(Key key) {
    auto it = slots_.find(key);
    return it == slots_.end() ? nullptr : Row(it->second);
  }
  // The slot of `key`'s row, made (zero-filled) when absent: one hash lookup.
  uint32_t Slot(Key key) {
    auto [it, added] = slots_.try_emplace(key, static_cast<uint32_t>(rows_.size() / width_));
    if (added) rows_.resize(rows_.size() + width_, E{});
    return it->second;
  }
  // Slot() of every key, into slots (keys.size() of them): the hash lookups overlapped.
  void Slots(const SharedArray<Key>& keys, uint32_t* slots) {
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i + kPrefetchAhead < keys.size()) Prefetch(keys[i + kPrefetchAhead]);
      slots[i] = Slot(keys[i]);
    }
  }
  // The row of a slot; valid until the next Slot() that makes one.
  E* Row(uint32_t slot) { return &rows_[size_t{slot} * width_]; }

  // Hash lookups are prefetched this many keys ahead.
  static constexpr size_t kPrefetchAhead = 8;

 protected:
  size_t width_;
  absl::flat_hash_map<Key, uint32_t> slots_;
  std::vector<E> rows_;  // slot s: [s * width_, (s + 1) * width_)
};

// The error-feedback store: per key, a row of `columns` doubles.
class Residuals : public KeyedRows<double> {
 public:
  explicit Residuals(size_t columns) : KeyedRows(columns) {}

  // Adds every row that is not all zeros to (*held)[key] and forgets them all.
  void TakeInto(std::map<Key, std::vector<double>>* held) {
    for (const auto& [key, slot] : slots_) {
      const double* row = Row(slot);
      if (std::all_of(row, row + width_, [](double v) { return v == 0; })) continue;
      std::vector<double>& sum = (*held)[key];
      sum.resize(width_, 0.0);
      for (size_t j = 0; j < width_; ++j) sum[j] += row[j];
    }
    Clear();
  }
};

// kInvalidArgument naming the key when one of `vals` (rows of `columns`, one a key) is a NaN or
// an infinity: a lossy filter refuses it before it changes anything.
template <typename T>
Status CheckFinite(const SharedArray<Key>& keys, const T* vals, size_t columns, std::string_view filter) {
  for (size_t i = 0; i < keys.size() * columns; ++i) {
    if (!std::isfinite(vals[i])) {
      return Status::InvalidArgument(
          fmt::format("key {} holds {}: {} rounds finite values only", keys[i / columns], vals[i], filter));
    }
  }
  return Status::Ok();
}

// Stores number their rows with 32 bits: a bound on their keys is at most this.
inline constexpr double kMaxStoreKeys = 2147483648.0;

// The bound on the keys an error-feedback store holds (param held_keys), unless a spec sets one.
inline constexpr double kDefaultHeldKeys = 4194304;

// Reads param held_keys (a whole number from 1 to 2^31) into *out; false when `param` is another.
inline Result<bool> ReadHeldKeys(std::string_view filter, const std::string& param, double value, uint64_t* out) {
  if (param != "held_keys") return false;
  if (!(value >= 1 && value <= kMaxStoreKeys) || value != std::floor(value)) {
    return Status::InvalidArgument(
        fmt::format("filter '{}': held_keys {} is out of range (a whole number from 1 to 2^31)", filter, value));
  }
  *out = static_cast<uint64_t>(value);
  return true;
}

// Whether filter `name` may round the values of `table`: floating values of a fixed width, and
// (when it rounds pushes) a rule that adds pushes up -- "assign" would not add what it keeps
// back to a later push, nor would "ftrl" with scaled=1 to its scale.
inline Status CheckRoundable(std::string_view name, const TableSpec& table, bool pushes) {
  if (table.value_type != ValueType::kFloat32 && table.value_type != ValueType::kFloat64) {
    return Status::InvalidArgument(fmt::format("filter '{}' rounds floating-point values, and the table holds {}",
                                               name, ValueTypeName(table.value_type)));
  }
  if (table.variable_length) {
    return Status::InvalidArgument(
        fmt::format("filter '{}' rounds rows of a fixed width, and the table has variable-length values", name));
  }
  if (pushes && table.updater.name == "assign") {
    return Status::InvalidArgument(fmt::format(
        "filter '{}' keeps back what it rounds off a push for the next one, which rule 'assign' would not add up",
        name));
  }
  if (pushes && table.updater.name == "ftrl" && table.updater.params.contains("scaled") &&
      table.updater.params.at("scaled") == 1) {
    return Status::InvalidArgument(fmt::format(
        "filter '{}' keeps back what it rounds off a push for the next one, and rule 'ftrl' with scaled=1 takes "
        "the second half of a push as a scale, not as something to add up",
        name));
  }
  return Status::Ok();
}

}  // namespace pserver::kv
