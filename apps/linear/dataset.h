// Dataset: a sparse data set for linear models, in compressed sparse row (CSR) form.
//
// Row r has the label labels()[r] (+1 or -1) and the entries
// feature_ids()[k], values()[k] for k in [offsets()[r], offsets()[r + 1]). Feature ids are
// 0-based (the libsvm reader subtracts one from the file's 1-based indices), strictly
// increasing within a row and at most 2^64 - 2 (so that num_features() fits); values are finite. offsets() always has num_rows() + 1 elements, the first being 0.
//
// A Dataset is a plain value type: copyable, movable, thread-compatible (concurrent const
// access is safe; any mutation needs external synchronisation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::linear {

// One row viewed in place; the spans borrow from the Dataset and are invalidated by any
// mutation of it.
struct RowView {
  float label = 0;
  std::span<const uint64_t> feature_ids;
  std::span<const float> values;
};

class Dataset {
 public:
  Dataset() = default;

  // Builds a Dataset from its four arrays, checking every invariant stated above.
  // Returns kInvalidArgument naming the first violation (row number, position).
  static Result<Dataset> FromArrays(std::vector<float> labels, std::vector<uint64_t> offsets,
                                    std::vector<uint64_t> feature_ids, std::vector<float> values);

  // Appends one row. `ids` are 0-based and must be strictly increasing; `values` has the
  // same length; `label` is +1 or -1. Returns kInvalidArgument (and appends nothing) otherwise.
  Status AppendRow(float label, std::span<const uint64_t> ids, std::span<const float> values);

  // Appends all rows of `other` (already valid by construction).
  void Append(const Dataset& other);

  // Pre-allocates room for `rows` more rows and `entries` more non-zeros.
  void Reserve(size_t rows, size_t entries);
  void Clear();

  size_t num_rows() const { return labels_.size(); }
  size_t nnz() const { return feature_ids_.size(); }
  bool empty() const { return labels_.empty(); }
  // Largest feature id present, or 0 when there are no entries (see num_features()).
  uint64_t max_feature_id() const { return num_features_ == 0 ? 0 : num_features_ - 1; }
  // max_feature_id() + 1, or 0 when there are no entries: the dimension a model needs.
  uint64_t num_features() const { return num_features_; }

  const std::vector<float>& labels() const { return labels_; }
  const std::vector<uint64_t>& offsets() const { return offsets_; }
  const std::vector<uint64_t>& feature_ids() const { return feature_ids_; }
  const std::vector<float>& values() const { return values_; }

  // REQUIRES: r < num_rows().
  RowView row(size_t r) const;

  // Exact equality of all arrays (tests).
  friend bool operator==(const Dataset& a, const Dataset& b) {
    return a.labels_ == b.labels_ && a.offsets_ == b.offsets_ && a.feature_ids_ == b.feature_ids_ &&
           a.values_ == b.values_;
  }

 private:
  std::vector<float> labels_;
  std::vector<uint64_t> offsets_{0};
  std::vector<uint64_t> feature_ids_;
  std::vector<float> values_;
  uint64_t num_features_ = 0;
};

}  // namespace pserver::linear
