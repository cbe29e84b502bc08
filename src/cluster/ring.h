// The ring: which server owns which part of the 64-bit routing-key space [0, 2^64-1], as
// contiguous segments, so that a sorted request is sliced by a walk over the segments (see
// kv/worker/slicer.h).
//
// A job's ring is the scheduler's placement (cluster/partition_placement.h), carried by the
// view as its segments (FromSegments). Build places random virtual nodes instead -- each server
// puts `virtual_nodes` pseudo-random points on the ring, a point p owning (p_prev, p] -- which is
// what consistent hashing usually does; it stays as the baseline the placement is measured
// against and as an easy way for tests to make irregular rings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "pserver/result.h"
#include "pserver/types.h"

namespace pserver::cluster {

// A maximal contiguous run of routing keys owned by one server.
struct RingSegment {
  KeyRange range;
  uint32_t server = 0;  // the owner's server rank
  friend bool operator==(const RingSegment&, const RingSegment&) = default;
};

// The point that virtual node `i` of server `rank` takes on the ring. A bijection of
// (rank, i), so two distinct virtual nodes never share a point. Deterministic across runs,
// builds and machines (pure 64-bit integer arithmetic).
uint64_t RingPoint(uint32_t rank, uint32_t i);

// An immutable placement of servers on the ring. Copyable value type, thread-compatible
// (concurrent const use is safe).
class Ring {
 public:
  static constexpr uint32_t kMaxVirtualNodes = 4096;

  // Builds the ring of `server_ranks` (any order), each with `virtual_nodes` random points.
  // Returns InvalidArgument if the list is empty, holds a rank twice, or virtual_nodes is 0 or
  // greater than kMaxVirtualNodes.
  static Result<Ring> Build(std::vector<uint32_t> server_ranks, uint32_t virtual_nodes);
  // The ring of `segments` as given (each segment's range.last is ignored: a segment ends where
  // the next begins, the last at 2^64-1). Adjacent segments of one owner are merged.
  // InvalidArgument if there is none, the first does not begin at 0, or they are not in
  // strictly ascending order.
  static Result<Ring> FromSegments(std::vector<RingSegment> segments);

  // Segments sorted by range.first, covering [0, UINT64_MAX] exactly with no gaps or overlaps;
  // adjacent segments always have different owners.
  const std::vector<RingSegment>& segments() const { return segments_; }

  // The server rank that owns `routing_key`. O(log segments), O(1) when the key's prefix lies in
  // one segment (most keys: see SegmentIndex).
  uint32_t Owner(uint64_t routing_key) const {
    const uint32_t owner = owner_of_prefix_[static_cast<size_t>(routing_key >> (64 - kPrefixBits))];
    return owner != kSplitPrefix ? owner : segments_[SegmentIndex(routing_key)].server;
  }

  // Index into segments() of the segment that contains `routing_key`. O(log segments), O(1)
  // when the key's prefix lies in one segment. Inline: the worker looks up every key of a
  // hashed request.
  size_t SegmentIndex(uint64_t routing_key) const {
    const size_t p = static_cast<size_t>(routing_key >> (64 - kPrefixBits));
    const uint32_t first = first_segment_of_prefix_[p], last = first_segment_of_prefix_[p + 1];
    if (first == last) return first;  // the whole prefix lies in one segment: the common case
    return SearchSegments(routing_key, first, last);
  }

  // The ranges owned by `server`, ascending; empty if `server` is not on the ring.
  std::vector<KeyRange> RangesOf(uint32_t server) const;

  // The server ranks that own some keys, ascending.
  const std::vector<uint32_t>& servers() const { return servers_; }

  friend bool operator==(const Ring&, const Ring&) = default;

 private:
  static constexpr int kPrefixBits = 12;
  static constexpr uint32_t kSplitPrefix = ~0u;  // in owner_of_prefix_: more than one segment

  // REQUIRES: `segments` as segments() describes them.
  explicit Ring(std::vector<RingSegment> segments);

  // SegmentIndex among segments first..last (those that meet the key's prefix).
  size_t SearchSegments(uint64_t routing_key, uint32_t first, uint32_t last) const;

  std::vector<uint32_t> servers_;  // derived from segments_
  std::vector<RingSegment> segments_;
  // For each prefix p of kPrefixBits bits: the index of the segment holding p's first key.
  // Derived from segments_ (so equal rings have equal tables).
  std::vector<uint32_t> first_segment_of_prefix_;
  // For each prefix: the server owning all of it, or kSplitPrefix when segments meet inside it
  // (Owner's one load for most keys). Derived from segments_.
  std::vector<uint32_t> owner_of_prefix_;
};

}  // namespace pserver::cluster
