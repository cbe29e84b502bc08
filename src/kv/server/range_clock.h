// RangeClock: the paper's vector clock per key range, for one table on one server.
//
// The key space is cut into contiguous segments; each segment records, per worker incarnation,
// the newest timestamp of that worker whose pushes to keys in the segment are applied. A push
// covering the keys [first, last] sets the pusher's entry on exactly that range, which splits
// at most one segment at each end (so a set makes at most three segments of one), and equal
// neighbours merge again, so traffic that covers the whole range keeps one segment.
//
// Because a worker sends its requests in timestamp order (kv/worker/kv_worker_core.h) and a
// server applies one sender's requests in arrival order, a push whose timestamp is not newer
// than the clock on every segment it covers was applied before: it is a duplicate (a resend)
// and must not be applied again.
//
// Workers are named by their stable node id and their incarnation (the identity their process
// presents, new at every start), never by a rank or position: a restarted worker numbers its
// requests from 1 again, and its requests must not be taken for its predecessor's. A worker's
// entry starts at 0 everywhere the first time it is set.
//
// Thread-compatible: used by the server node's data thread only.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pserver/types.h"
#include "transport/message.h"

namespace pserver::kv {

// One run of a worker process: its stable node id, and the identity its connections present.
struct WorkerIncarnation {
  NodeId worker;
  transport::ConnectionId incarnation;

  friend bool operator==(const WorkerIncarnation&, const WorkerIncarnation&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const WorkerIncarnation& w) {
    return H::combine(std::move(h), w.worker.value, w.incarnation.hi, w.incarnation.lo);
  }
};

class RangeClock {
 public:
  RangeClock();

  // Records that `worker`'s push `ts` covering [range.first, range.last] is applied.
  // REQUIRES: range.first <= range.last.
  void Set(KeyRange range, const WorkerIncarnation& worker, int64_t ts);

  // Per worker of `workers`, the oldest recorded timestamp over the segments [range] covers:
  // what every key in the range includes (0 for a worker never set). REQUIRES: range.first <=
  // range.last.
  std::vector<int64_t> Get(KeyRange range, std::span<const WorkerIncarnation> workers) const;

  // Whether `worker`'s push `ts` over `range` is already applied (see above); false for an
  // incarnation never set.
  bool Covers(KeyRange range, const WorkerIncarnation& worker, int64_t ts) const;

  size_t num_segments() const { return segments_.size(); }
  // Worker incarnations ever set.
  size_t num_workers() const { return columns_.size(); }

 private:
  // Splits the segment holding `key` so that one starts at `key`. REQUIRES: key is in some
  // segment (all keys are).
  void SplitAt(Key key);
  // Merges segments with equal clocks around [first, last].
  void MergeAround(Key first, Key last);

  // Each worker incarnation's position in the segments' clocks, in the order first set.
  absl::flat_hash_map<WorkerIncarnation, uint32_t> columns_;
  // Segment start -> its clock, one entry per column; a segment ends where the next starts (the
  // last at 2^64-1).
  std::map<Key, std::vector<int64_t>> segments_;
};

}  // namespace pserver::kv
