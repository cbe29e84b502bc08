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
  return std::shared_ptr<const Routing>(std::move(r));
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
