#include "cluster/routing.h"

#include <fmt/format.h>

#include <algorithm>


namespace pserver::cluster {

Routing::Routing(ClusterView view, Ring ring) : view_(std::move(view)), ring_(std::move(ring)) {}

Result<std::shared_ptr<const Routing>> Routing::Build(ClusterView view) {
  absl::flat_hash_map<NodeId, size_t> by_id;
  absl::flat_hash_map<uint32_t, size_t> by_server;
  for (size_t i = 0; i < view.nodes.size(); ++i) {
    const NodeInfo& n = view.nodes[i];
    if (!by_id.emplace(n.id, i).second) {
      return Status::Corruption(fmt::format("view of epoch {} names node {} twice", view.epoch.value, n.id.value));
    }
    if (n.role == Role::kServer && !by_server.emplace(n.rank.value, i).second) {
      return Status::Corruption(fmt::format("view of epoch {} names server {} twice", view.epoch.value, n.rank.value));
    }
  }
  if (view.ring.empty()) return Status::Corruption(fmt::format("view of epoch {} has no server on its ring", view.epoch.value));
  for (const RingSegment& s : view.ring) {
    if (!by_server.contains(s.server)) {
      return Status::Corruption(fmt::format("the ring of the view of epoch {} names server {}, which the view lacks",
                                            view.epoch.value, s.server));
    }
  }
  Result<Ring> ring = Ring::FromSegments(view.ring);
  if (!ring.ok()) return Status::Corruption(fmt::format("view of epoch {}: {}", view.epoch.value, ring.status().message()));
  std::shared_ptr<Routing> r(new Routing(std::move(view), std::move(*ring)));
  r->by_id_ = std::move(by_id);
  r->by_server_ = std::move(by_server);
  for (const auto& [rank, index] : r->by_server_) r->server_ranks_.push_back(rank);
  std::sort(r->server_ranks_.begin(), r->server_ranks_.end());
  const std::vector<RingSegment>& segments = r->ring_.segments();
  r->chain_length_ = std::min<uint32_t>(std::max<uint32_t>(r->view_.replicas, 1),
                                        static_cast<uint32_t>(r->ring_.servers().size()));
  r->chains_.reserve(segments.size() * r->chain_length_);
  for (size_t i = 0; i < segments.size(); ++i) {
    const size_t first = r->chains_.size();
    r->chains_.push_back(segments[i].server);
    // The ring holds at least chain_length_ servers, so the walk ends within one turn.
    for (size_t j = (i + 1) % segments.size(); r->chains_.size() - first < r->chain_length_; j = (j + 1) % segments.size()) {
      const uint32_t next = segments[j].server;
      if (std::find(r->chains_.begin() + first, r->chains_.end(), next) == r->chains_.end()) r->chains_.push_back(next);
    }
  }
  return std::shared_ptr<const Routing>(std::move(r));
}

std::vector<KeyRange> Routing::ChainRangesOf(uint32_t rank) const {
  std::vector<KeyRange> out;
  const std::vector<RingSegment>& segments = ring_.segments();
  for (size_t i = 0; i < segments.size(); ++i) {
    std::span<const uint32_t> chain = ChainOfSegment(i);
    if (std::find(chain.begin(), chain.end(), rank) == chain.end()) continue;
    if (!out.empty() && out.back().last + 1 == segments[i].range.first) {
      out.back().last = segments[i].range.last;
    } else {
      out.push_back(segments[i].range);
    }
  }
  return out;
}

const NodeInfo* Routing::Server(uint32_t rank) const {
  auto it = by_server_.find(rank);
  return it == by_server_.end() ? nullptr : &view_.nodes[it->second];
}

const NodeInfo* Routing::Find(NodeId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &view_.nodes[it->second];
}

}  // namespace pserver::cluster
