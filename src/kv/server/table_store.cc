#include "kv/server/table_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "cluster/key_placement.h"
#include "kv/server/sparse_rows.h"
#include "kv/server/table_store_internal.h"
#include "kv/table_catalog.h"

namespace pserver::kv {

namespace table_store_internal {

std::string RangeString(KeyRange r) { return fmt::format("[{}, {}]", r.first, r.last); }

std::string RangesString(std::span<const KeyRange> ranges) {
  if (ranges.empty()) return "none";
  std::string out;
  for (const KeyRange& r : ranges) {
    if (!out.empty()) out += ", ";
    out += RangeString(r);
  }
  return out;
}

void AssertChecked([[maybe_unused]] const TableStore& store, [[maybe_unused]] const ServerRequest& req,
                   [[maybe_unused]] uint32_t width, [[maybe_unused]] uint32_t push_arity) {
#ifndef NDEBUG
  assert(req.table == store.table());
  assert(req.value_type == store.spec().value_type);
  assert(req.width == width);
  assert(req.keys.size() <= 0xffffffffULL);
  if (req.type == transport::MessageType::kPull) return;
  const size_t elem = ValueTypeSize(req.value_type);
  if (width != 0) {
    assert(req.vals.size() == req.keys.size() * width * push_arity * elem);
    return;
  }
  assert(req.lens.size() == req.keys.size());
  uint64_t total = 0;
  for (int32_t len : req.lens) {
    assert(len >= 0);
    total += static_cast<uint64_t>(len);
  }
  assert(req.vals.size() == total * push_arity * elem);
#endif
}

}  // namespace table_store_internal

using table_store_internal::RangeString;

namespace {

// `ranges` sorted, overlapping and adjacent ones merged. REQUIRES: first <= last for each.
std::vector<KeyRange> MergeRanges(std::vector<KeyRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](KeyRange a, KeyRange b) { return a.first < b.first; });
  std::vector<KeyRange> merged;
  for (const KeyRange& r : ranges) {
    if (!merged.empty() && (merged.back().last == ~Key{0} || r.first <= merged.back().last + 1)) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

// The owned ranges of a dense table, sorted and merged; the whole key range for nullopt.
Result<std::vector<KeyRange>> OwnedRanges(const TableSpec& spec, std::optional<std::vector<KeyRange>> owned) {
  if (!owned) return std::vector<KeyRange>{spec.key_range};
  std::vector<KeyRange> ranges = std::move(*owned);
  for (const KeyRange& r : ranges) {
    if (r.first > r.last || !spec.key_range.Contains(r.first) || !spec.key_range.Contains(r.last)) {
      return Status::InvalidArgument(fmt::format("dense table {}: owned range {} is empty or not within its key range {}",
                                                 spec.name, RangeString(r), RangeString(spec.key_range)));
    }
  }
  return MergeRanges(std::move(ranges));
}

}  // namespace

double InitialValue(const InitializerSpec& init, Key key, uint32_t column) {
  if (init.kind != InitializerSpec::Kind::kUniform) return 0.0;
  uint64_t x = MixKey(init.seed ^ 0x9e3779b97f4a7c15ULL);
  x = MixKey(x ^ key);
  x = MixKey(x ^ (uint64_t{column} + 0x632be59bd9b4e019ULL));
  const double u = static_cast<double>(x >> 11) * 0x1.0p-53;  // [0, 1)
  return init.scale * (2.0 * u - 1.0);
}

Result<std::unique_ptr<TableStore>> TableStore::Create(TableId table, const TableSpec& spec,
                                                       std::unique_ptr<Updater> updater, ApplyPool* pool,
                                                       std::optional<std::vector<KeyRange>> owned_ranges) {
  if (updater == nullptr) return Status::InvalidArgument(fmt::format("table {}: no update rule", spec.name));
  PSERVER_RETURN_IF_ERROR(ValidateTableSpec(spec, updater.get()));
  if (spec.variable_length) return table_store_internal::NewVarRowStore(table, spec, std::move(updater));
  if (spec.storage == StorageKind::kDense) {
    PSERVER_ASSIGN_OR_RETURN(std::vector<KeyRange> owned, OwnedRanges(spec, std::move(owned_ranges)));
    return table_store_internal::NewFixedRowStore(table, spec, std::move(updater), pool, std::move(owned));
  }
  if (uint64_t{spec.width} * ValueTypeSize(spec.value_type) >= kLargeRowBytes) {
    return table_store_internal::NewLargeRowStore(table, spec, std::move(updater));
  }
  return table_store_internal::NewFixedRowStore(table, spec, std::move(updater), pool, {});
}

Status TableStore::SetOwnedRanges(std::vector<KeyRange> ranges) {
  if (spec_.storage != StorageKind::kDense) return Status::Ok();
  PSERVER_ASSIGN_OR_RETURN(std::vector<KeyRange> merged, OwnedRanges(spec_, std::move(ranges)));
  TakeOwnedRanges(std::move(merged));
  return Status::Ok();
}

namespace {

// A stored row as a store's visitor reports it (the spans stay valid until the store changes).
struct ListedRow {
  Key key;
  std::span<const std::byte> value;
  std::span<const std::byte> state;
};

}  // namespace

RowBatch TableStore::ListRows(const KeyPredicate& pred) const {
  std::vector<ListedRow> rows;
  // Collect the spans, sort, then copy once.
  ForEachIf(pred, [&](Key key, std::span<const std::byte> value, std::span<const std::byte> state) {
    rows.push_back({key, value, state});
  });
  std::sort(rows.begin(), rows.end(), [](const ListedRow& a, const ListedRow& b) { return a.key < b.key; });
  return Batch(rows);
}

RowBatch TableStore::ListRowsOf(std::span<const Key> keys) const {
  std::vector<ListedRow> rows;
  rows.reserve(keys.size());
  ForKeys(keys, [&](Key key, std::span<const std::byte> value, std::span<const std::byte> state) {
    rows.push_back({key, value, state});
  });
  return Batch(rows);
}

template <typename Rows>
RowBatch TableStore::Batch(const Rows& rows) const {
  size_t value_bytes = 0, state_bytes = 0;
  for (const auto& r : rows) {
    value_bytes += r.value.size();
    state_bytes += r.state.size();
  }
  const TableSpec& s = spec();
  const size_t elem = ValueTypeSize(s.value_type);
  RowBatch batch;
  batch.value_type = s.value_type;
  batch.width = s.variable_length ? 0 : s.width;
  batch.state_per_value = state_per_value();
  batch.keys = SharedArray<Key>::Uninitialized(rows.size());
  if (s.variable_length) batch.lens = SharedArray<int32_t>::Uninitialized(rows.size());
  batch.values = transport::Bytes::Uninitialized(value_bytes);
  batch.states = transport::Bytes::Uninitialized(state_bytes);
  std::byte* value_out = batch.values.data();
  std::byte* state_out = batch.states.data();
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    batch.keys[i] = r.key;
    if (s.variable_length) batch.lens[i] = static_cast<int32_t>(r.value.size() / elem);
    if (!r.value.empty()) std::memcpy(value_out, r.value.data(), r.value.size());
    if (!r.state.empty()) std::memcpy(state_out, r.state.data(), r.state.size());
    value_out += r.value.size();
    state_out += r.state.size();
  }
  return batch;
}

RowBatch SelectRows(const RowBatch& all, const std::vector<size_t>& rows) {
  RowBatch b;
  b.value_type = all.value_type;
  b.width = all.width;
  b.state_per_value = all.state_per_value;
  const size_t elem = ValueTypeSize(all.value_type);
  const size_t spv = all.state_per_value;
  // Where each row's values begin (in values), for variable-length rows.
  std::vector<size_t> first;
  if (all.width == 0) {
    first.resize(all.size() + 1);
    for (size_t i = 0; i < all.size(); ++i) first[i + 1] = first[i] + static_cast<size_t>(all.lens[i]);
  }
  auto span_of = [&](size_t i) -> std::pair<size_t, size_t> {  // (first value, values)
    return all.width == 0 ? std::pair{first[i], static_cast<size_t>(all.lens[i])} : std::pair{i * all.width, size_t{all.width}};
  };
  size_t values = 0;
  for (size_t i : rows) values += span_of(i).second;
  std::vector<Key> keys(rows.size());
  std::vector<int32_t> lens(all.width == 0 ? rows.size() : 0);
  b.values = transport::Bytes::Uninitialized(values * elem);
  b.states = transport::Bytes::Uninitialized(values * elem * spv);
  size_t at = 0;
  for (size_t j = 0; j < rows.size(); ++j) {
    const size_t i = rows[j];
    const auto [from, n] = span_of(i);
    keys[j] = all.keys[i];
    if (all.width == 0) lens[j] = all.lens[i];
    if (n * elem > 0) std::memcpy(b.values.data() + at * elem, all.values.data() + from * elem, n * elem);
    if (n * elem * spv > 0) {
      std::memcpy(b.states.data() + at * elem * spv, all.states.data() + from * elem * spv, n * elem * spv);
    }
    at += n;
  }
  b.keys = SharedArray<Key>(std::move(keys));
  b.lens = SharedArray<int32_t>(std::move(lens));
  return b;
}

Status TableStore::InsertRows(const RowBatch& batch) {
  const TableSpec& s = spec();
  const uint32_t width = s.variable_length ? 0 : s.width;
  const uint32_t spv = state_per_value();
  if (batch.value_type != s.value_type || batch.width != width || batch.state_per_value != spv) {
    return Status::InvalidArgument(fmt::format(
        "table {} holds {} rows of width {} with {} state values per value; the batch {} rows of width {} with {}", s.name,
        ValueTypeName(s.value_type), width, spv, ValueTypeName(batch.value_type), batch.width, batch.state_per_value));
  }
  const size_t n = batch.keys.size();
  const size_t elem = ValueTypeSize(s.value_type);
  uint64_t values = 0;
  if (s.variable_length) {
    if (batch.lens.size() != n) {
      return Status::InvalidArgument(fmt::format("table {}: a batch of {} keys and {} lengths", s.name, n, batch.lens.size()));
    }
    for (size_t i = 0; i < n; ++i) {
      if (batch.lens[i] < 0) {
        return Status::InvalidArgument(
            fmt::format("table {}: negative length {} for key {}", s.name, batch.lens[i], batch.keys[i]));
      }
      values += static_cast<uint64_t>(batch.lens[i]);
    }
  } else {
    if (!batch.lens.empty()) {
      return Status::InvalidArgument(fmt::format("table {} has fixed width {}: a batch with lengths", s.name, width));
    }
    values = uint64_t{n} * width;
  }
  if (batch.values.size() != values * elem || batch.states.size() != values * spv * elem) {
    return Status::InvalidArgument(
        fmt::format("table {}: a batch of {} value and {} state bytes where its rows hold {} and {}", s.name,
                    batch.values.size(), batch.states.size(), values * elem, values * spv * elem));
  }
  for (size_t i = 0; i < n; ++i) PSERVER_RETURN_IF_ERROR(CheckInsert(batch.keys[i]));
  size_t value_off = 0, state_off = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t len = (s.variable_length ? static_cast<size_t>(batch.lens[i]) : width) * elem;
    const std::span<const std::byte> value(batch.values.data() + value_off, len);
    const std::span<const std::byte> state(batch.states.data() + state_off, len * spv);
    // Checked above: PutRow cannot fail here, so a refused batch has changed nothing.
    PSERVER_RETURN_IF_ERROR(PutRow(batch.keys[i], value, state));
    value_off += len;
    state_off += len * spv;
  }
  return Status::Ok();
}

KeyPredicate RoutingRangePredicate(const TableSpec& spec, std::vector<KeyRange> routing_ranges) {
  // Sorted and merged, so that a key is looked up by binary search: a server's ranges may be
  // thousands of partitions (a drained server's, given out one at a time).
  std::sort(routing_ranges.begin(), routing_ranges.end(),
            [](const KeyRange& a, const KeyRange& b) { return a.first < b.first; });
  std::vector<KeyRange> merged;
  for (const KeyRange& r : routing_ranges) {
    if (r.first > r.last) continue;
    if (!merged.empty() && (merged.back().last == ~uint64_t{0} || r.first <= merged.back().last + 1)) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  const auto in = [ranges = std::move(merged)](uint64_t r) {
    auto it = std::upper_bound(ranges.begin(), ranges.end(), r, [](uint64_t k, const KeyRange& x) { return k < x.first; });
    return it != ranges.begin() && std::prev(it)->Contains(r);
  };
  switch (spec.placement) {
    case KeyPlacement::kHashed:
      return [in](Key k) { return in(cluster::MixKey(k)); };
    case KeyPlacement::kRange:
      if (spec.key_range.first > spec.key_range.last) return [](Key) { return false; };
      return [in, declared = spec.key_range, scale = cluster::RangeScale(spec.key_range)](Key k) {
        return declared.Contains(k) && in(scale(k));
      };
    case KeyPlacement::kIdentity:
      return [in](Key k) { return in(k); };
  }
  return [](Key) { return false; };
}

std::vector<KeyRange> KeyRangesOfRouting(const TableSpec& spec, const std::vector<KeyRange>& routing_ranges) {
  const KeyRange declared = spec.key_range;
  if (spec.placement != KeyPlacement::kRange || declared.first > declared.last) return {};
  const cluster::RangeScale scale(declared);
  // The first key whose routing key is at least r, or nullopt (scale is increasing).
  auto first_at_least = [&](uint64_t r) -> std::optional<Key> {
    if (scale(declared.last) < r) return std::nullopt;
    Key lo = declared.first, hi = declared.last;
    while (lo < hi) {
      const Key mid = lo + (hi - lo) / 2;
      if (scale(mid) >= r) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  };
  std::vector<KeyRange> keys;
  for (const KeyRange& r : routing_ranges) {
    std::optional<Key> first = first_at_least(r.first);
    if (!first || scale(*first) > r.last) continue;  // no key routes into r
    // The last key: before the first key past r, or the last declared key.
    std::optional<Key> past = r.last == ~uint64_t{0} ? std::nullopt : first_at_least(r.last + 1);
    keys.push_back(KeyRange{*first, past ? *past - 1 : declared.last});
  }
  return MergeRanges(std::move(keys));
}

}  // namespace pserver::kv
