#include "kv/server/range_clock.h"

#include <algorithm>
#include <iterator>
#include <limits>

namespace pserver::kv {

RangeClock::RangeClock() { segments_.emplace(Key{0}, std::vector<int64_t>()); }

void RangeClock::SplitAt(Key key) {
  auto it = segments_.upper_bound(key);
  --it;  // the segment holding key (segment 0 starts at 0)
  if (it->first != key) segments_.emplace_hint(std::next(it), key, it->second);
}

void RangeClock::MergeAround(Key first, Key last) {
  auto it = segments_.find(first);  // exists: Set split there
  if (it != segments_.begin()) --it;
  // Compare each neighbour pair from the segment before the range up to the one after it.
  for (auto next = std::next(it); next != segments_.end(); next = std::next(it)) {
    if (last != std::numeric_limits<Key>::max() && next->first > last + 1) break;
    if (next->second == it->second) {
      segments_.erase(next);
    } else {
      it = next;
    }
  }
}

void RangeClock::Set(KeyRange range, const WorkerIncarnation& worker, int64_t ts) {
  auto [col, added] = columns_.try_emplace(worker, static_cast<uint32_t>(columns_.size()));
  if (added) {  // a new incarnation: 0 on every segment (rare: once per worker start)
    for (auto& [start, clock] : segments_) clock.push_back(0);
  }
  const uint32_t c = col->second;
  SplitAt(range.first);
  if (range.last != std::numeric_limits<Key>::max()) SplitAt(range.last + 1);
  for (auto it = segments_.find(range.first); it != segments_.end() && it->first <= range.last; ++it) {
    it->second[c] = std::max(it->second[c], ts);
  }
  MergeAround(range.first, range.last);
}

std::vector<int64_t> RangeClock::Get(KeyRange range, std::span<const WorkerIncarnation> workers) const {
  std::vector<int64_t> out(workers.size(), 0);
  auto first = segments_.upper_bound(range.first);
  --first;
  for (size_t w = 0; w < workers.size(); ++w) {
    auto col = columns_.find(workers[w]);
    if (col == columns_.end()) continue;
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (auto it = first; it != segments_.end() && it->first <= range.last; ++it) {
      oldest = std::min(oldest, it->second[col->second]);
    }
    out[w] = oldest;
  }
  return out;
}

bool RangeClock::Covers(KeyRange range, const WorkerIncarnation& worker, int64_t ts) const {
  auto col = columns_.find(worker);
  if (col == columns_.end()) return false;
  auto it = segments_.upper_bound(range.first);
  --it;
  for (; it != segments_.end() && it->first <= range.last; ++it) {
    if (it->second[col->second] < ts) return false;
  }
  return true;
}

}  // namespace pserver::kv
