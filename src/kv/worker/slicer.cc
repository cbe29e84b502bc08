#include "kv/worker/slicer.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

namespace pserver::kv {
namespace {

using cluster::PlacementKind;
using cluster::Ring;
using cluster::RingSegment;

constexpr uint64_t kRoutingMax = std::numeric_limits<uint64_t>::max();

// Positions [begin, end) of the routing-ordered keys that go to one server (as an index into
// ring.servers()).
struct Span {
  uint32_t server_index;
  uint32_t begin;
  uint32_t end;
};

// The first position in [pos + 1, n) whose routing key exceeds `last`, or n. REQUIRES:
// routing_at(pos) <= last. Gallops from pos, so a short span costs O(log span) probes.
template <typename RoutingAt>
size_t FirstAbove(size_t pos, size_t n, uint64_t last, const RoutingAt& routing_at) {
  size_t lo = pos + 1;  // every position below lo routes to <= last
  size_t hi = lo;
  size_t step = 1;
  while (hi < n && routing_at(hi) <= last) {
    lo = hi + 1;
    hi = lo + step;
    step *= 2;
  }
  hi = std::min(hi, n);
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (routing_at(mid) <= last) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Cuts positions [0, n), whose routing keys routing_at(pos) ascend, into maximal spans that lie
// in one ring segment each: one segment lookup per span, not per key.
template <typename RoutingAt>
std::vector<Span> WalkSegments(size_t n, const Ring& ring, const RoutingAt& routing_at) {
  const std::vector<RingSegment>& segments = ring.segments();
  const std::vector<uint32_t>& servers = ring.servers();
  std::vector<Span> spans;
  size_t pos = 0;
  while (pos < n) {
    const RingSegment& segment = segments[ring.SegmentIndex(routing_at(pos))];
    const size_t end =
        segment.range.last == kRoutingMax ? n : FirstAbove(pos, n, segment.range.last, routing_at);
    const auto server = std::lower_bound(servers.begin(), servers.end(), segment.server);
    spans.push_back({static_cast<uint32_t>(server - servers.begin()), static_cast<uint32_t>(pos),
                     static_cast<uint32_t>(end)});
    pos = end;
  }
  return spans;
}

void AppendRun(Slice& slice, uint32_t begin, uint32_t end) {
  if (!slice.runs.empty() && slice.runs.back().end == begin) {
    slice.runs.back().end = end;
  } else {
    slice.runs.push_back({begin, end});
  }
  slice.num_keys += end - begin;
}

// One slice per server of the ring, runs reserved to `runs_bound(span)` summed over its spans.
template <typename RunsBound>
Slices EmptySlices(const Ring& ring, const std::vector<Span>& spans, const RunsBound& runs_bound) {
  Slices slices(ring.servers().size());
  std::vector<size_t> bound(slices.size(), 0);
  for (const Span& s : spans) bound[s.server_index] += runs_bound(s);
  for (size_t i = 0; i < slices.size(); ++i) {
    slices[i].server = ring.servers()[i];
    slices[i].runs.reserve(bound[i]);
  }
  return slices;
}

Slices WithoutEmpty(Slices slices) {
  slices.erase(std::remove_if(slices.begin(), slices.end(), [](const Slice& s) { return s.num_keys == 0; }),
               slices.end());
  return slices;
}

// kRange and kIdentity: routing order is key order, so a span is already a run.
template <typename RoutingAt>
Slices SliceOrdered(size_t n, const Ring& ring, const RoutingAt& routing_at) {
  const std::vector<Span> spans = WalkSegments(n, ring, routing_at);
  Slices slices = EmptySlices(ring, spans, [](const Span&) { return size_t{1}; });
  for (const Span& s : spans) AppendRun(slices[s.server_index], s.begin, s.end);
  return WithoutEmpty(std::move(slices));
}

// Fills `order` with the key indices grouped by slice (a stable counting sort by owner).
void GroupBySlice(const std::vector<uint32_t>& owner, const Slices& slices, std::vector<uint32_t>* order) {
  order->resize(owner.size());
  uint32_t* out = order->data();
  if (slices.size() == 2) {
    // The common split, with both cursors in registers (a cursor array in memory makes every
    // key wait for the store of the one before) and no branch on the random owner (a
    // mispredicted branch per key costs more than the rest of the loop).
    uint32_t next0 = 0, next1 = slices[0].num_keys;
    for (size_t i = 0; i < owner.size(); ++i) {
      const uint32_t o = owner[i];  // 0 or 1
      out[next0 ^ ((next0 ^ next1) & (0u - o))] = static_cast<uint32_t>(i);
      next0 += 1 - o;
      next1 += o;
    }
    return;
  }
  std::vector<uint32_t> next(slices.size());
  for (size_t s = 1; s < slices.size(); ++s) next[s] = next[s - 1] + slices[s - 1].num_keys;
  for (size_t i = 0; i < owner.size(); ++i) out[next[owner[i]]++] = static_cast<uint32_t>(i);
}

// kHashed: each key goes to the owner of its mixed routing key; every slice keeps its keys in
// request (ascending key) order, so a request to one server is one run and travels without a
// copy.
Slices SliceHashed(std::span<const Key> keys, const Ring& ring, std::vector<uint32_t>* order) {
  const std::vector<uint32_t>& servers = ring.servers();
  Slices slices(servers.size());
  for (size_t i = 0; i < slices.size(); ++i) slices[i].server = servers[i];
  if (servers.size() == 1) {
    AppendRun(slices[0], 0, static_cast<uint32_t>(keys.size()));
    return WithoutEmpty(std::move(slices));
  }
  // Server rank -> slice index (ranks are small: 0 .. num_servers - 1 plus joins).
  std::vector<uint32_t> slice_of(servers.back() + 1, 0);
  for (size_t i = 0; i < servers.size(); ++i) slice_of[servers[i]] = static_cast<uint32_t>(i);
  // Pass 1: each key's slice, and the slices' sizes.
  std::vector<uint32_t> owner(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) owner[i] = slice_of[ring.Owner(cluster::MixKey(keys[i]))];
  if (slices.size() == 2) {  // a sum (vectorised), not a counter in memory per key
    uint32_t second = 0;
    for (uint32_t o : owner) second += o;
    slices[0].num_keys = static_cast<uint32_t>(keys.size()) - second;
    slices[1].num_keys = second;
  } else {
    for (uint32_t o : owner) ++slices[o].num_keys;
  }
  if (order) {
    // The caller moves rows by `order`: no runs -- unless every key went to one server, when
    // the whole request is that slice's one run (and travels without a copy). Grouped before
    // the empty slices are dropped: they take no room in the order, so no position changes.
    const auto nonempty = std::count_if(slices.begin(), slices.end(), [](const Slice& s) { return s.num_keys > 0; });
    if (nonempty > 1) GroupBySlice(owner, slices, order);
    Slices result = WithoutEmpty(std::move(slices));
    if (result.size() == 1) result[0].runs = {IndexRun{0, result[0].num_keys}};
    return result;
  }
  // Pass 2: the runs, appended without a branch on the random owners (a mispredicted branch
  // per key cost more than the rest of the slicing): every key writes a one-key run at its
  // slice's end, and either keeps it (a new run) or folds it into the previous run.
  std::vector<IndexRun*> runs(slices.size());
  std::vector<size_t> used(slices.size(), 0);
  for (size_t s = 0; s < slices.size(); ++s) {
    slices[s].runs.resize(std::max<size_t>(slices[s].num_keys, 1));  // at most one run per key
    runs[s] = slices[s].runs.data();
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t s = owner[i];
    const auto k = static_cast<uint32_t>(i);
    IndexRun* r = runs[s];
    const size_t u = used[s];
    IndexRun& last = r[u > 0 ? u - 1 : 0];
    const bool extend = u > 0 && last.end == k;
    r[u] = {k, k + 1};  // (slot u exists: u < this slice's keys so far + 1 <= its size)
    last.end = extend ? k + 1 : last.end;
    used[s] = u + (extend ? 0 : 1);
  }
  for (size_t s = 0; s < slices.size(); ++s) {
    slices[s].runs.resize(used[s]);
    if (used[s] < slices[s].runs.capacity() / 2) slices[s].runs.shrink_to_fit();  // requests may be huge
  }
  return WithoutEmpty(std::move(slices));
}

std::string RangeString(KeyRange r) {
  return fmt::format("[{}, {}]", r.first, r.last);
}

// OK if every key lies in `range`; the keys are sorted, so only the ends need a look.
Status CheckInRange(std::span<const Key> keys, KeyRange range) {
  size_t bad = keys.size();
  if (keys.front() < range.first) {
    bad = 0;
  } else if (keys.back() > range.last) {
    bad =
        static_cast<size_t>(std::upper_bound(keys.begin(), keys.end(), range.last) - keys.begin());
  }
  if (bad == keys.size()) return Status::Ok();
  return Status::InvalidArgument("key " + std::to_string(keys[bad]) + " at index " +
                                 std::to_string(bad) + " is outside the table's declared range " +
                                 RangeString(range));
}

// Rows moved by `order`. kRow is the row size when it is known at compile time (the copies
// become plain moves), 0 otherwise.
template <size_t kRow>
void GatherByOrderImpl(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* dst) {
  if constexpr (kRow != 0) row = kRow;
  for (size_t p = 0; p < order.size(); ++p) std::memcpy(dst + p * row, src + size_t{order[p]} * row, row);
}
template <size_t kRow>
void ScatterByOrderImpl(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* out) {
  if constexpr (kRow != 0) row = kRow;
  for (size_t p = 0; p < order.size(); ++p) std::memcpy(out + size_t{order[p]} * row, src + p * row, row);
}

}  // namespace

void GatherByOrder(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* dst) {
  if (row == 4) return GatherByOrderImpl<4>(src, order, row, dst);
  if (row == 8) return GatherByOrderImpl<8>(src, order, row, dst);
  GatherByOrderImpl<0>(src, order, row, dst);
}

void ScatterByOrder(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* out) {
  if (row == 4) return ScatterByOrderImpl<4>(src, order, row, out);
  if (row == 8) return ScatterByOrderImpl<8>(src, order, row, out);
  ScatterByOrderImpl<0>(src, order, row, out);
}

IndexRuns RunsOf(std::span<const uint32_t> indices) {
  IndexRuns runs;
  for (uint32_t i : indices) {
    if (!runs.empty() && runs.back().end == i) {
      ++runs.back().end;
    } else {
      runs.push_back(IndexRun{i, i + 1});
    }
  }
  return runs;
}

std::vector<uint64_t> Offsets(const SharedArray<int32_t>& lens) {
  std::vector<uint64_t> off(lens.size() + 1, 0);
  for (size_t i = 0; i < lens.size(); ++i) off[i + 1] = off[i] + static_cast<uint64_t>(lens[i]);
  return off;
}

void GatherRows(const std::byte* src, const IndexRuns& runs, size_t row, std::byte* dst) {
  for (const IndexRun& r : runs) {
    const size_t bytes = size_t{r.end - r.begin} * row;
    if (bytes) std::memcpy(dst, src + size_t{r.begin} * row, bytes);
    dst += bytes;
  }
}

void ScatterRows(const std::byte* src, const IndexRuns& runs, size_t row, std::byte* dst) {
  for (const IndexRun& r : runs) {
    const size_t bytes = size_t{r.end - r.begin} * row;
    if (bytes) std::memcpy(dst + size_t{r.begin} * row, src, bytes);
    src += bytes;
  }
}

Status CheckSortedUnique(std::span<const Key> keys) {
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i] > keys[i - 1]) continue;
    if (keys[i] == keys[i - 1]) {
      return Status::InvalidArgument("duplicate key " + std::to_string(keys[i]) + " at index " +
                                     std::to_string(i));
    }
    return Status::InvalidArgument("keys not sorted ascending at index " + std::to_string(i) +
                                   ": " + std::to_string(keys[i]) + " follows " +
                                   std::to_string(keys[i - 1]));
  }
  return Status::Ok();
}

Status CheckSliceable(std::span<const Key> keys, const cluster::Placement& placement) {
  if (keys.size() > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("request has " + std::to_string(keys.size()) +
                                   " keys; at most 2^32 - 1 are allowed");
  }
  switch (placement.kind) {
    case PlacementKind::kHashed:
    case PlacementKind::kIdentity: return Status::Ok();
    case PlacementKind::kRange:
      if (placement.range.first > placement.range.last) {
        return Status::InvalidArgument("table's declared key range " + RangeString(placement.range) +
                                       " is empty");
      }
      return keys.empty() ? Status::Ok() : CheckInRange(keys, placement.range);
  }
  return Status::InvalidArgument("unknown placement kind " +
                                 std::to_string(static_cast<int>(placement.kind)));
}

Result<Slices> SliceKeys(std::span<const Key> keys, const cluster::Placement& placement, const Ring& ring,
                         std::vector<uint32_t>* order) {
  if (order) order->clear();
  PSERVER_RETURN_IF_ERROR(CheckSliceable(keys, placement));
  if (keys.empty()) return Slices();
  switch (placement.kind) {
    case PlacementKind::kHashed: return SliceHashed(keys, ring, order);
    case PlacementKind::kIdentity:
      return SliceOrdered(keys.size(), ring, [keys](size_t i) { return keys[i]; });
    case PlacementKind::kRange: {
      const cluster::RangeScale scale(placement.range);
      return SliceOrdered(keys.size(), ring, [keys, &scale](size_t i) { return scale(keys[i]); });
    }
  }
  return Slices();  // CheckSliceable refused any other kind
}

std::optional<size_t> FirstNotOwned(std::span<const Key> keys, const cluster::Placement& placement, const Ring& ring,
                                    uint32_t server) {
  if (keys.empty()) return std::nullopt;
  // Ordered placements: the keys' routing keys ascend, so the request is owned iff every ring
  // segment from the first key's to the last key's is; only then is a key-by-key search needed.
  auto ordered = [&](const auto& routing_at) -> std::optional<size_t> {
    const size_t first = ring.SegmentIndex(routing_at(0)), last = ring.SegmentIndex(routing_at(keys.size() - 1));
    bool all = true;
    for (size_t s = first; s <= last && all; ++s) all = ring.segments()[s].server == server;
    if (all) return std::nullopt;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (ring.Owner(routing_at(i)) != server) return i;
    }
    return std::nullopt;
  };
  switch (placement.kind) {
    case PlacementKind::kHashed:
      for (size_t i = 0; i < keys.size(); ++i) {
        if (ring.Owner(cluster::MixKey(keys[i])) != server) return i;
      }
      return std::nullopt;
    case PlacementKind::kIdentity: return ordered([keys](size_t i) { return keys[i]; });
    case PlacementKind::kRange: {
      const KeyRange range = placement.range;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (!range.Contains(keys[i])) return i;
      }
      const cluster::RangeScale scale(range);
      return ordered([keys, &scale](size_t i) { return scale(keys[i]); });
    }
  }
  return 0;
}

}  // namespace pserver::kv
