// What the lossy filters (quantize_filter.h, significant_filter.h) share: the error-feedback
// store, which keeps per key what rounding took off the values sent for it so far, to be added
// to its next values; and the check that a table's values can be rounded at all.
//
// Thread safety: Residuals is not thread-safe; its filter locks around it.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pserver/status.h"
#include "pserver/table.h"

namespace pserver::kv {

class Residuals {
 public:
  explicit Residuals(size_t columns) : columns_(columns) {}

  size_t columns() const { return columns_; }
  size_t size() const { return slots_.size(); }

  // The row of `key` (columns() values), or null when nothing is kept for it.
  const double* Find(Key key) const {
    auto it = slots_.find(key);
    return it == slots_.end() ? nullptr : &rows_[size_t{it->second} * columns_];
  }

  // Keeps `row` for `key`; a row of zeros is forgotten.
  void Set(Key key, const double* row) {
    const bool zero = std::all_of(row, row + columns_, [](double v) { return v == 0; });
    auto it = slots_.find(key);
    if (zero) {
      if (it != slots_.end()) {
        free_.push_back(it->second);
        slots_.erase(it);
      }
      return;
    }
    uint32_t slot;
    if (it != slots_.end()) {
      slot = it->second;
    } else if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
      slots_.emplace(key, slot);
    } else {
      slot = static_cast<uint32_t>(rows_.size() / columns_);
      rows_.resize(rows_.size() + columns_);
      slots_.emplace(key, slot);
    }
    std::copy(row, row + columns_, rows_.begin() + static_cast<ptrdiff_t>(size_t{slot} * columns_));
  }

  // Adds every kept row to (*held)[key] and forgets them all.
  void TakeInto(std::map<Key, std::vector<double>>* held) {
    for (const auto& [key, slot] : slots_) {
      std::vector<double>& row = (*held)[key];
      row.resize(columns_, 0.0);
      for (size_t j = 0; j < columns_; ++j) row[j] += rows_[size_t{slot} * columns_ + j];
    }
    slots_.clear();
    rows_.clear();
    free_.clear();
  }

 private:
  size_t columns_;
  absl::flat_hash_map<Key, uint32_t> slots_;
  std::vector<double> rows_;     // slot s: [s * columns_, (s + 1) * columns_)
  std::vector<uint32_t> free_;   // slots of forgotten rows
};

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
