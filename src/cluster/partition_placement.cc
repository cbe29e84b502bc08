#include "cluster/partition_placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <utility>

namespace pserver::cluster {

Result<PartitionPlacement> PartitionPlacement::Initial(std::vector<uint32_t> ranks) {
  if (ranks.empty()) return Status::InvalidArgument("a placement needs at least one server");
  std::sort(ranks.begin(), ranks.end());
  if (std::adjacent_find(ranks.begin(), ranks.end()) != ranks.end()) {
    return Status::InvalidArgument("placement: a server rank given twice");
  }
  if (ranks.size() > kPartitions) {
    return Status::InvalidArgument(fmt::format("placement: {} servers, at most {}", ranks.size(), kPartitions));
  }
  PartitionPlacement p;
  p.servers_ = std::move(ranks);
  p.counts_.resize(p.servers_.size());
  p.owner_.resize(kPartitions);
  const uint64_t n = p.servers_.size();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t first = i * kPartitions / n, end = (i + 1) * kPartitions / n;
    for (uint64_t q = first; q < end; ++q) p.owner_[q] = p.servers_[i];
    p.counts_[i] = static_cast<uint32_t>(end - first);
  }
  return p;
}

Result<PartitionPlacement> PartitionPlacement::FromSegments(const std::vector<RingSegment>& segments) {
  PartitionPlacement p;
  p.owner_.reserve(kPartitions);
  for (const RingSegment& s : segments) {
    const uint32_t first = PartitionOf(s.range.first), last = PartitionOf(s.range.last);
    if (first != p.owner_.size() || s.range.first != RangeOfPartition(first).first ||
        s.range.last != RangeOfPartition(last).last || last < first) {
      return Status::InvalidArgument(fmt::format("placement: segment [{:#x}, {:#x}] of server {} is not a run of whole "
                                                 "partitions after the ones before it",
                                                 s.range.first, s.range.last, s.server));
    }
    p.owner_.insert(p.owner_.end(), last - first + 1, s.server);
  }
  if (p.owner_.size() != kPartitions) {
    return Status::InvalidArgument(fmt::format("placement: the segments cover {} of {} partitions", p.owner_.size(), kPartitions));
  }
  std::map<uint32_t, uint32_t> counts;
  for (uint32_t owner : p.owner_) ++counts[owner];
  for (const auto& [rank, count] : counts) {
    p.servers_.push_back(rank);
    p.counts_.push_back(count);
  }
  return p;
}

Result<PartitionPlacement> PartitionPlacement::WithServer(uint32_t rank) const {
  if (std::binary_search(servers_.begin(), servers_.end(), rank)) {
    return Status::InvalidArgument(fmt::format("placement: server {} is placed already", rank));
  }
  if (servers_.size() + 1 > kPartitions) {
    return Status::InvalidArgument(fmt::format("placement: no room for server {}", rank));
  }
  // How many each donor gives: one at a time from the most loaded (ties: the lowest rank) until
  // no server holds more than one partition more than the joiner.
  std::set<std::pair<uint32_t, uint32_t>, std::greater<>> by_load;  // (count, ~rank): most loaded first
  for (size_t i = 0; i < servers_.size(); ++i) by_load.emplace(counts_[i], ~servers_[i]);
  std::map<uint32_t, uint32_t> gives;  // donor rank -> partitions it gives
  uint32_t joiner = 0;
  for (;;) {
    auto [count, not_rank] = *by_load.begin();
    if (count <= joiner + 1) break;
    by_load.erase(by_load.begin());
    by_load.emplace(count - 1, not_rank);
    ++gives[~not_rank];
    ++joiner;
  }
  PartitionPlacement next = *this;
  // Each donor gives its highest partitions: one pass from the top of the key space.
  for (uint32_t q = kPartitions; q-- > 0 && !gives.empty();) {
    auto it = gives.find(owner_[q]);
    if (it == gives.end()) continue;
    next.owner_[q] = rank;
    if (--it->second == 0) gives.erase(it);
  }
  const size_t at = std::upper_bound(servers_.begin(), servers_.end(), rank) - servers_.begin();
  next.servers_.insert(next.servers_.begin() + static_cast<std::ptrdiff_t>(at), rank);
  next.counts_.insert(next.counts_.begin() + static_cast<std::ptrdiff_t>(at), joiner);
  for (const auto& [count, not_rank] : by_load) next.counts_[next.IndexOf(~not_rank)] = count;
  return next;
}

Result<PartitionPlacement> PartitionPlacement::Unplaced(uint32_t rank) const {
  if (!std::binary_search(servers_.begin(), servers_.end(), rank)) {
    return Status::InvalidArgument(fmt::format("placement: server {} is not placed", rank));
  }
  if (servers_.size() == 1) {
    return Status::InvalidArgument(fmt::format("placement: server {} is the last one; nobody could hold its keys", rank));
  }
  PartitionPlacement next = *this;
  const size_t at = IndexOf(rank);
  next.servers_.erase(next.servers_.begin() + static_cast<std::ptrdiff_t>(at));
  next.counts_.erase(next.counts_.begin() + static_cast<std::ptrdiff_t>(at));
  return next;
}

Result<PartitionPlacement> PartitionPlacement::WithoutServer(uint32_t rank) const {
  PSERVER_ASSIGN_OR_RETURN(PartitionPlacement next, Unplaced(rank));
  const size_t at = IndexOf(rank);
  // How many of its partitions each server takes: one at a time to the least loaded (ties: the
  // lowest rank). Then they are dealt in contiguous runs, lowest partitions to the lowest rank,
  // so that each receiver gets one run of them where it can (a ring of few segments, and few
  // ranges for a dense table or a migration to walk).
  std::set<std::pair<uint32_t, uint32_t>> by_load;  // (count, rank): least loaded first
  for (size_t i = 0; i < next.servers_.size(); ++i) by_load.emplace(next.counts_[i], next.servers_[i]);
  std::map<uint32_t, uint32_t> takes;  // rank -> partitions it takes
  for (uint32_t n = counts_[at]; n > 0; --n) {
    auto [count, to] = *by_load.begin();
    by_load.erase(by_load.begin());
    by_load.emplace(count + 1, to);
    ++takes[to];
  }
  auto receiver = takes.begin();
  for (uint32_t q = 0; q < kPartitions; ++q) {
    if (owner_[q] != rank) continue;
    while (receiver->second == 0) ++receiver;
    next.owner_[q] = receiver->first;
    --receiver->second;
  }
  for (const auto& [count, r] : by_load) next.counts_[next.IndexOf(r)] = count;
  return next;
}

Result<PartitionPlacement> PartitionPlacement::WithoutServerTo(uint32_t rank,
                                                               const std::function<uint32_t(uint32_t)>& heir) const {
  PSERVER_ASSIGN_OR_RETURN(PartitionPlacement next, Unplaced(rank));
  for (uint32_t q = 0; q < kPartitions; ++q) {
    if (owner_[q] != rank) continue;
    const uint32_t to = heir(q);
    if (to == rank || !std::binary_search(next.servers_.begin(), next.servers_.end(), to)) {
      return Status::InvalidArgument(
          fmt::format("placement: partition {} of server {} cannot go to server {}", q, rank, to));
    }
    next.owner_[q] = to;
    ++next.counts_[next.IndexOf(to)];
  }
  return next;
}

size_t PartitionPlacement::IndexOf(uint32_t rank) const {
  return static_cast<size_t>(std::lower_bound(servers_.begin(), servers_.end(), rank) - servers_.begin());
}

uint32_t PartitionPlacement::PartitionsOf(uint32_t rank) const {
  const size_t i = IndexOf(rank);
  return i < servers_.size() && servers_[i] == rank ? counts_[i] : 0;
}

std::vector<RingSegment> PartitionPlacement::Segments() const {
  std::vector<RingSegment> out;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const KeyRange range = RangeOfPartition(p);
    if (!out.empty() && out.back().server == owner_[p]) {
      out.back().range.last = range.last;
    } else {
      out.push_back(RingSegment{range, owner_[p]});
    }
  }
  return out;
}

KeyRange PartitionPlacement::RangeOfPartition(uint32_t p) {
  constexpr uint32_t kShift = 64 - kPartitionBits;
  const uint64_t first = uint64_t{p} << kShift;
  return KeyRange{first, first + ((uint64_t{1} << kShift) - 1)};
}

std::vector<Transfer> TransfersBetween(const PartitionPlacement& before, const PartitionPlacement& after) {
  std::map<std::pair<uint32_t, uint32_t>, std::vector<KeyRange>> moves;
  for (uint32_t p = 0; p < PartitionPlacement::kPartitions; ++p) {
    const uint32_t from = before.Owner(p), to = after.Owner(p);
    if (from == to) continue;
    std::vector<KeyRange>& ranges = moves[{from, to}];
    const KeyRange range = PartitionPlacement::RangeOfPartition(p);
    if (!ranges.empty() && ranges.back().last + 1 == range.first) {
      ranges.back().last = range.last;
    } else {
      ranges.push_back(range);
    }
  }
  std::vector<Transfer> out;
  for (auto& [pair, ranges] : moves) out.push_back(Transfer{pair.first, pair.second, std::move(ranges)});
  return out;
}

}  // namespace pserver::cluster
