// PartitionPlacement: which server owns each of the 2^16 equal partitions of the routing-key
// space -- the placement the scheduler owns and changes one join or leave at a time
// (docs/elasticity.md, section 1).
//
// Partition p holds the routing keys whose top 16 bits are p. The first servers are dealt
// contiguous runs of partitions. A joining server takes partitions one at a time from the
// currently most loaded server (ties: the lowest rank), each time the donor's highest partition,
// until no server holds more than one partition more than it; a leaving server's partitions go
// one at a time to the currently least loaded server (ties: the lowest rank), each receiver
// getting a contiguous run of them (the lowest to the lowest rank). So:
//   - only the partitions the joiner takes (or the leaver gives) change owner: a join moves
//     floor or ceil of P/(N+1) partitions, the minimum;
//   - after every change each server holds floor(P/N) or ceil(P/N) partitions, so the most
//     loaded server's share is at most 1 + N/P times the mean;
//   - the placement is a function of the membership history alone (no randomness).
//
// Thread safety: an immutable value type; copies are independent.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cluster/ring.h"
#include "pserver/result.h"

namespace pserver::cluster {

class PartitionPlacement {
 public:
  static constexpr uint32_t kPartitionBits = 16;
  static constexpr uint32_t kPartitions = uint32_t{1} << kPartitionBits;

  // The first servers (ranks in any order): server i of the sorted ranks holds the contiguous
  // run of partitions [i P / N, (i + 1) P / N). kInvalidArgument for no server, a rank twice or
  // more servers than partitions.
  static Result<PartitionPlacement> Initial(std::vector<uint32_t> ranks);

  // The placement whose Segments() are `segments` (a placement saved as its segments, e.g. by a
  // scheduler that resumes a job). kInvalidArgument unless they cover every routing key in
  // order with whole partitions.
  static Result<PartitionPlacement> FromSegments(const std::vector<RingSegment>& segments);

  // The placement after server `rank` joins. kInvalidArgument if it is placed already, or the
  // servers would outnumber the partitions.
  Result<PartitionPlacement> WithServer(uint32_t rank) const;
  // The placement after server `rank` leaves. kInvalidArgument if it is not placed, or it is the
  // last server (nobody could hold its keys).
  Result<PartitionPlacement> WithoutServer(uint32_t rank) const;
  // The placement after server `rank` died (failover): each of its partitions p goes to
  // heir(p), the next server of p's replica chain, which holds its rows already -- so no row
  // moves, at the price of balance (a later join evens it out). kInvalidArgument if `rank` is not
  // placed or is the last server, or an heir is `rank` or not placed.
  Result<PartitionPlacement> WithoutServerTo(uint32_t rank, const std::function<uint32_t(uint32_t)>& heir) const;

  // The owner of partition `p` (< kPartitions).
  uint32_t Owner(uint32_t p) const { return owner_[p]; }
  // The partition of a routing key.
  static uint32_t PartitionOf(uint64_t routing_key) { return static_cast<uint32_t>(routing_key >> (64 - kPartitionBits)); }
  // The routing keys of partition `p` (< kPartitions).
  static KeyRange RangeOfPartition(uint32_t p);
  // The placed servers' ranks, ascending.
  const std::vector<uint32_t>& servers() const { return servers_; }
  // The partitions `rank` holds (0 for a rank not placed). O(log N).
  uint32_t PartitionsOf(uint32_t rank) const;
  // The placement as ring segments: maximal runs of partitions of one owner, as routing-key
  // ranges, covering [0, 2^64 - 1] in order.
  std::vector<RingSegment> Segments() const;

 private:
  PartitionPlacement() = default;
  // This placement with `rank` taken off the servers (its partitions still its own): the start of
  // WithoutServer and WithoutServerTo, with their checks.
  Result<PartitionPlacement> Unplaced(uint32_t rank) const;
  // The index of `rank` in servers_ (or where it would go).
  size_t IndexOf(uint32_t rank) const;

  std::vector<uint32_t> owner_;    // kPartitions entries
  std::vector<uint32_t> servers_;  // ascending
  std::vector<uint32_t> counts_;   // partitions of servers_[i]
};

// Routing keys that change owner between two placements: server `from` hands `ranges`
// (inclusive routing-key ranges, ascending, adjacent partitions merged) to server `to`.
struct Transfer {
  uint32_t from = 0;
  uint32_t to = 0;
  std::vector<KeyRange> ranges;
  friend bool operator==(const Transfer&, const Transfer&) = default;
};

// Every transfer from `before` to `after`, ordered by (from, to). Empty when they are equal.
std::vector<Transfer> TransfersBetween(const PartitionPlacement& before, const PartitionPlacement& after);

}  // namespace pserver::cluster
