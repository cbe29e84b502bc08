// NodeAccess: the library's own way into a pserver::Node -- its runtime for the KV layer, and
// construction over a given transport for the in-process test harness. Not for applications.
#pragma once

#include <memory>

#include "base/clock.h"
#include "cluster/node_runtime.h"
#include "pserver/node.h"
#include "transport/transport.h"

namespace pserver::internal {

class NodeAccess {
 public:
  // The runtime of a server or worker node; nullptr for the scheduler.
  static cluster::NodeRuntime* Runtime(Node& node) { return node.runtime_.get(); }
  // The scheduler of a scheduler node; nullptr for servers and workers.
  static cluster::Scheduler* Scheduler(Node& node) { return node.scheduler_.get(); }

  // Node::Start over the given transport (e.g. inproc) instead of ZeroMQ; a server or worker
  // times its liveness with `clock` (cluster/node_runtime.h; borrowed, outlives the node).
  static Result<std::unique_ptr<Node>> StartWithTransport(const NodeOptions& options,
                                                          std::unique_ptr<transport::Transport> transport,
                                                          Clock* clock = SteadyClock::Default());
};

}  // namespace pserver::internal
