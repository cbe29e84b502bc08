#include "apps/linear/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cassert>
#include <utility>

namespace pserver::linear {
namespace {

bool IsLabel(float label) { return label == 1.0f || label == -1.0f; }

// The largest feature id: num_features() = id + 1 must fit in 64 bits.
constexpr uint64_t kMaxFeatureId = ~uint64_t{0} - 1;

// Ids strictly increasing, at most kMaxFeatureId; values finite. The error says where (k).
Status CheckEntries(std::span<const uint64_t> ids, std::span<const float> values) {
  for (size_t k = 0; k < ids.size(); ++k) {
    if (k > 0 && ids[k] <= ids[k - 1]) {
      return Status::InvalidArgument(
          fmt::format("feature ids not strictly increasing ({} after {})", ids[k], ids[k - 1]));
    }
    if (!std::isfinite(values[k])) {
      return Status::InvalidArgument(fmt::format("feature {} has the value {}, not a finite number", ids[k], values[k]));
    }
  }
  if (!ids.empty() && ids.back() > kMaxFeatureId) {
    return Status::InvalidArgument(fmt::format("feature id {} is above the largest, {}", ids.back(), kMaxFeatureId));
  }
  return Status::Ok();
}

}  // namespace

Result<Dataset> Dataset::FromArrays(std::vector<float> labels, std::vector<uint64_t> offsets,
                                    std::vector<uint64_t> feature_ids, std::vector<float> values) {
  if (offsets.size() != labels.size() + 1) {
    return Status::InvalidArgument(fmt::format("{} offsets for {} rows (expected {})",
                                               offsets.size(), labels.size(), labels.size() + 1));
  }
  if (offsets.front() != 0) return Status::InvalidArgument("offsets[0] is not 0");
  if (feature_ids.size() != values.size()) {
    return Status::InvalidArgument(
        fmt::format("{} feature ids but {} values", feature_ids.size(), values.size()));
  }
  if (offsets.back() != feature_ids.size()) {
    return Status::InvalidArgument(
        fmt::format("last offset {} != number of entries {}", offsets.back(), feature_ids.size()));
  }
  uint64_t num_features = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (!IsLabel(labels[r])) {
      return Status::InvalidArgument(fmt::format("row {}: label {} is not +1 or -1", r, labels[r]));
    }
    const uint64_t begin = offsets[r], end = offsets[r + 1];
    if (end < begin || end > feature_ids.size()) {
      return Status::InvalidArgument(fmt::format("row {}: bad offsets [{}, {})", r, begin, end));
    }
    const Status entries = CheckEntries(std::span<const uint64_t>(feature_ids).subspan(begin, end - begin),
                                        std::span<const float>(values).subspan(begin, end - begin));
    if (!entries.ok()) return Status::InvalidArgument(fmt::format("row {}: {}", r, entries.message()));
    if (end > begin) num_features = std::max(num_features, feature_ids[end - 1] + 1);
  }
  Dataset d;
  d.labels_ = std::move(labels);
  d.offsets_ = std::move(offsets);
  d.feature_ids_ = std::move(feature_ids);
  d.values_ = std::move(values);
  d.num_features_ = num_features;
  return d;
}

Status Dataset::AppendRow(float label, std::span<const uint64_t> ids,
                          std::span<const float> values) {
  if (!IsLabel(label)) {
    return Status::InvalidArgument(fmt::format("label {} is not +1 or -1", label));
  }
  if (ids.size() != values.size()) {
    return Status::InvalidArgument(
        fmt::format("{} feature ids but {} values", ids.size(), values.size()));
  }
  PSERVER_RETURN_IF_ERROR(CheckEntries(ids, values));
  labels_.push_back(label);
  feature_ids_.insert(feature_ids_.end(), ids.begin(), ids.end());
  values_.insert(values_.end(), values.begin(), values.end());
  offsets_.push_back(feature_ids_.size());
  if (!ids.empty()) num_features_ = std::max(num_features_, ids.back() + 1);
  return Status::Ok();
}

void Dataset::Append(const Dataset& other) {
  const uint64_t base = feature_ids_.size();
  labels_.insert(labels_.end(), other.labels_.begin(), other.labels_.end());
  feature_ids_.insert(feature_ids_.end(), other.feature_ids_.begin(), other.feature_ids_.end());
  values_.insert(values_.end(), other.values_.begin(), other.values_.end());
  offsets_.reserve(offsets_.size() + other.num_rows());
  for (size_t r = 1; r < other.offsets_.size(); ++r) offsets_.push_back(base + other.offsets_[r]);
  num_features_ = std::max(num_features_, other.num_features_);
}

void Dataset::Reserve(size_t rows, size_t entries) {
  labels_.reserve(labels_.size() + rows);
  offsets_.reserve(offsets_.size() + rows);
  feature_ids_.reserve(feature_ids_.size() + entries);
  values_.reserve(values_.size() + entries);
}

void Dataset::Clear() { *this = Dataset(); }

RowView Dataset::row(size_t r) const {
  assert(r < num_rows());
  const uint64_t begin = offsets_[r], n = offsets_[r + 1] - begin;
  return RowView{labels_[r], std::span<const uint64_t>(feature_ids_.data() + begin, n),
                 std::span<const float>(values_.data() + begin, n)};
}

}  // namespace pserver::linear
