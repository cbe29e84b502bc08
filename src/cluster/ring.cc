#include "cluster/ring.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <string>

namespace pserver::cluster {
namespace {

constexpr uint64_t kKeyMax = std::numeric_limits<uint64_t>::max();

struct Point {
  uint64_t position;
  uint32_t server;
};

// Turns the sorted points into segments: (p_prev, p] belongs to p's owner, and the wrap-around
// (p_last, 2^64-1] and [0, p_first] belongs to the first point's owner. Adjacent segments of one
// owner are merged.
std::vector<RingSegment> SegmentsOf(const std::vector<Point>& points) {
  std::vector<RingSegment> segments;
  segments.reserve(points.size() + 1);
  auto append = [&segments](Key first, Key last, uint32_t server) {
    if (!segments.empty() && segments.back().server == server) {
      segments.back().range.last = last;
    } else {
      segments.push_back({KeyRange{first, last}, server});
    }
  };
  Key next_first = 0;
  for (const Point& p : points) {
    append(next_first, p.position, p.server);
    next_first = p.position + 1;  // wraps to 0 only after the last possible point
  }
  if (points.back().position != kKeyMax) append(next_first, kKeyMax, points.front().server);
  return segments;
}

}  // namespace

uint64_t RingPoint(uint32_t rank, uint32_t i) {
  // splitmix64 at state (rank:i + 1) * golden ratio. Each step is a bijection on 64 bits and
  // rank:i is injective, so distinct virtual nodes cannot collide. The golden-ratio step makes
  // the points differ from MixKey (key_placement.h), so a mixed key equal to rank:i is not
  // pinned to a point.
  uint64_t z = ((static_cast<uint64_t>(rank) << 32 | i) + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

Result<Ring> Ring::Build(std::vector<uint32_t> server_ranks, uint32_t virtual_nodes) {
  if (server_ranks.empty()) return Status::InvalidArgument("ring: server list is empty");
  if (virtual_nodes == 0 || virtual_nodes > kMaxVirtualNodes) {
    return Status::InvalidArgument("ring: virtual_nodes must be in [1, " +
                                   std::to_string(kMaxVirtualNodes) + "], got " +
                                   std::to_string(virtual_nodes));
  }
  std::sort(server_ranks.begin(), server_ranks.end());
  auto dup = std::adjacent_find(server_ranks.begin(), server_ranks.end());
  if (dup != server_ranks.end()) {
    return Status::InvalidArgument("ring: duplicate server rank " + std::to_string(*dup));
  }

  std::vector<Point> points;
  points.reserve(server_ranks.size() * virtual_nodes);
  for (uint32_t rank : server_ranks) {
    for (uint32_t i = 0; i < virtual_nodes; ++i) points.push_back({RingPoint(rank, i), rank});
  }
  std::sort(points.begin(), points.end(),
            [](const Point& a, const Point& b) { return a.position < b.position; });
  // RingPoint is a bijection, so equal positions are a bug of ours, not of the caller.
  auto same = std::adjacent_find(points.begin(), points.end(), [](const Point& a, const Point& b) {
    return a.position == b.position;
  });
  if (same != points.end()) return Status::Internal("ring: two virtual nodes share a point");

  return Ring(SegmentsOf(points));
}

Result<Ring> Ring::FromSegments(std::vector<RingSegment> segments) {
  if (segments.empty()) return Status::InvalidArgument("ring: no segments");
  if (segments.front().range.first != 0) {
    return Status::InvalidArgument(fmt::format("ring: the first segment begins at {}, not 0", segments.front().range.first));
  }
  std::vector<RingSegment> merged;
  merged.reserve(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0 && segments[i].range.first <= segments[i - 1].range.first) {
      return Status::InvalidArgument(fmt::format("ring: segment {} begins at {}, not after segment {} ({})", i,
                                                 segments[i].range.first, i - 1, segments[i - 1].range.first));
    }
    const Key last = i + 1 < segments.size() ? segments[i + 1].range.first - 1 : kKeyMax;
    if (!merged.empty() && merged.back().server == segments[i].server) {
      merged.back().range.last = last;
    } else {
      merged.push_back({KeyRange{segments[i].range.first, last}, segments[i].server});
    }
  }
  return Ring(std::move(merged));
}

Ring::Ring(std::vector<RingSegment> segments) : segments_(std::move(segments)) {
  for (const RingSegment& s : segments_) servers_.push_back(s.server);
  std::sort(servers_.begin(), servers_.end());
  servers_.erase(std::unique(servers_.begin(), servers_.end()), servers_.end());
  const size_t prefixes = size_t{1} << kPrefixBits;
  first_segment_of_prefix_.resize(prefixes + 1);
  size_t seg = 0;
  for (size_t p = 0; p < prefixes; ++p) {
    const uint64_t first_key = static_cast<uint64_t>(p) << (64 - kPrefixBits);
    while (seg + 1 < segments_.size() && segments_[seg + 1].range.first <= first_key) ++seg;
    first_segment_of_prefix_[p] = static_cast<uint32_t>(seg);
  }
  first_segment_of_prefix_[prefixes] = static_cast<uint32_t>(segments_.size() - 1);
  owner_of_prefix_.resize(prefixes);
  for (size_t p = 0; p < prefixes; ++p) {
    const uint32_t first = first_segment_of_prefix_[p];
    owner_of_prefix_[p] = first == first_segment_of_prefix_[p + 1] ? segments_[first].server : kSplitPrefix;
  }
}

size_t Ring::SearchSegments(uint64_t routing_key, uint32_t first, uint32_t last) const {
  // The last segment whose first is <= routing_key, searched among the segments that meet the
  // key's prefix: from the one holding the prefix's first key to the one holding the next
  // prefix's first key.
  const auto lo = segments_.begin() + first;
  const auto hi = segments_.begin() + last + 1;
  auto it = std::upper_bound(lo, hi, routing_key, [](uint64_t k, const RingSegment& s) { return k < s.range.first; });
  return static_cast<size_t>(it - segments_.begin()) - 1;
}

std::vector<KeyRange> Ring::RangesOf(uint32_t server) const {
  std::vector<KeyRange> ranges;
  for (const RingSegment& s : segments_) {
    if (s.server == server) ranges.push_back(s.range);
  }
  return ranges;
}

}  // namespace pserver::cluster
