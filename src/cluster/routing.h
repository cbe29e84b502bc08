// Routing: one immutable, epoch-stamped snapshot of the cluster's routing state -- the view
// (members, their addresses and identities), the ring built from it and the epoch -- that a
// node swaps as a whole when the scheduler announces a new view (NodeRuntime::routing()).
// Whoever routes or checks a request takes one snapshot and uses it throughout, so a request is
// never sliced by half of one view and half of another.
//
// Servers are named on the ring by their rank, their stable name (see ClusterView); nothing
// here assumes the ranks are dense.
//
// Thread safety: immutable after Build; shared freely between threads (std::shared_ptr).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "cluster/control_messages.h"
#include "cluster/ring.h"
#include "pserver/result.h"

namespace pserver::cluster {

class Routing {
 public:
  // The snapshot of `view`: the ring of its segments. kCorruption if the ring is empty, does
  // not tile the routing-key space (Ring::FromSegments) or names an owner that is no server of
  // the view, or if a node id or server rank repeats.
  static Result<std::shared_ptr<const Routing>> Build(ClusterView view);

  Epoch epoch() const { return view_.epoch; }
  const ClusterView& view() const { return view_; }
  const Ring& ring() const { return ring_; }

  // The node of the server with rank `rank`, or nullptr if the view has none.
  const NodeInfo* Server(uint32_t rank) const;
  // The node with id `id`, or nullptr if it is not a member of the view.
  const NodeInfo* Find(NodeId id) const;
  // The ranks of every server of the view (on the ring or not), ascending.
  const std::vector<uint32_t>& server_ranks() const { return server_ranks_; }

  // Whether server `rank` owns `routing_key` under this view.
  bool Owns(uint32_t rank, uint64_t routing_key) const { return ring_.Owner(routing_key) == rank; }

  // Replication (docs/durability.md, section 3): the chain of segment `segment` of the ring --
  // its owner first, then the owners of the following segments (wrapping round) that are not
  // in the chain yet, chain_length() servers in all.
  std::span<const uint32_t> ChainOfSegment(size_t segment) const {
    return {chains_.data() + segment * chain_length_, chain_length_};
  }
  std::span<const uint32_t> Chain(uint64_t routing_key) const { return ChainOfSegment(ring_.SegmentIndex(routing_key)); }
  // The routing-key ranges whose chains hold server `rank` (its own and those it is a replica
  // of), ascending, adjacent ones merged.
  std::vector<KeyRange> ChainRangesOf(uint32_t rank) const;
  // min(view().replicas, servers on the ring).
  uint32_t chain_length() const { return chain_length_; }
  // Whether server `rank` is in the chain of `routing_key`.
  bool InChain(uint32_t rank, uint64_t routing_key) const {
    for (uint32_t r : Chain(routing_key)) {
      if (r == rank) return true;
    }
    return false;
  }

 private:
  Routing(ClusterView view, Ring ring);

  ClusterView view_;
  Ring ring_;
  absl::flat_hash_map<NodeId, size_t> by_id_;        // index into view_.nodes
  absl::flat_hash_map<uint32_t, size_t> by_server_;  // server rank -> index into view_.nodes
  std::vector<uint32_t> server_ranks_;
  uint32_t chain_length_ = 1;
  std::vector<uint32_t> chains_;  // chain_length_ ranks per segment of the ring
};

}  // namespace pserver::cluster
