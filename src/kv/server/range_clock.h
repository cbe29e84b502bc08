// RangeClock: the paper's vector clock per key range, for one table on one server.
//
// The key space is cut into contiguous segments; each segment records, per worker (by rank),
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
// Thread-compatible: used by the server node's data thread only.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "pserver/types.h"

namespace pserver::kv {

class RangeClock {
 public:
  explicit RangeClock(uint32_t num_workers);

  // Records that `worker`'s push `ts` covering [range.first, range.last] is applied.
  // REQUIRES: worker < num_workers, range.first <= range.last.
  void Set(KeyRange range, uint32_t worker, int64_t ts);

  // Per worker, the oldest recorded timestamp over the segments [range] covers: what every key
  // in the range includes. REQUIRES: range.first <= range.last.
  std::vector<int64_t> Get(KeyRange range) const;

  // Whether `worker`'s push `ts` over `range` is already applied (see above).
  bool Covers(KeyRange range, uint32_t worker, int64_t ts) const;

  size_t num_segments() const { return segments_.size(); }

 private:
  // Splits the segment holding `key` so that one starts at `key`. REQUIRES: key is in some
  // segment (all keys are).
  void SplitAt(Key key);
  // Merges segments with equal clocks around [first, last].
  void MergeAround(Key first, Key last);

  uint32_t num_workers_;
  // Segment start -> its clock; a segment ends where the next starts (the last at 2^64-1).
  std::map<Key, std::vector<int64_t>> segments_;
};

}  // namespace pserver::kv
