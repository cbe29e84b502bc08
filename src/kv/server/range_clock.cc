#include "kv/server/range_clock.h"

#include <algorithm>
#include <iterator>
#include <limits>

namespace pserver::kv {

RangeClock::RangeClock(uint32_t num_workers) : num_workers_(num_workers) {
  segments_.emplace(Key{0}, std::vector<int64_t>(num_workers, 0));
}

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

void RangeClock::Set(KeyRange range, uint32_t worker, int64_t ts) {
  SplitAt(range.first);
  if (range.last != std::numeric_limits<Key>::max()) SplitAt(range.last + 1);
  for (auto it = segments_.find(range.first); it != segments_.end() && it->first <= range.last; ++it) {
    it->second[worker] = std::max(it->second[worker], ts);
  }
  MergeAround(range.first, range.last);
}

std::vector<int64_t> RangeClock::Get(KeyRange range) const {
  std::vector<int64_t> out(num_workers_, std::numeric_limits<int64_t>::max());
  auto it = segments_.upper_bound(range.first);
  --it;
  for (; it != segments_.end() && it->first <= range.last; ++it) {
    for (uint32_t w = 0; w < num_workers_; ++w) out[w] = std::min(out[w], it->second[w]);
  }
  return out;
}

bool RangeClock::Covers(KeyRange range, uint32_t worker, int64_t ts) const {
  auto it = segments_.upper_bound(range.first);
  --it;
  for (; it != segments_.end() && it->first <= range.last; ++it) {
    if (it->second[worker] < ts) return false;
  }
  return true;
}

}  // namespace pserver::kv
