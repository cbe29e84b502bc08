// Node: one member of a pserver job -- the scheduler, a server or a worker.
//
// A program creates exactly the Node objects it needs (several may live in one process, e.g.
// in tests); there is no global state. Typical use:
//
//   scheduler:  auto node = Node::Start(opts);  write node->address() somewhere; node->Run();
//   server:     auto node = Node::Start(opts);  KVServer<float> s(*node);  node->Run();
//   worker:     auto node = Node::Start(opts);  KVWorker<float> w(*node);  ... node->Finalize();
//
// Start registers with the scheduler and returns once the whole cluster has registered (for
// servers and workers) or once listening (for the scheduler). Every later failure -- the
// scheduler gone, a node declared dead, the job aborted -- is sticky: health() and every call
// return it from then on.
//
// Thread safety: all methods are thread-safe. Destroying a Node stops its threads; destroy the
// KVWorker/KVServer objects attached to it first.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "pserver/options.h"
#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/types.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace pserver {

namespace metrics {
class NodeMetrics;
}  // namespace metrics
namespace kv {
class MetricsEndpoint;
}  // namespace kv
namespace cluster {
class NodeRuntime;
class Scheduler;
}  // namespace cluster
namespace internal {
class NodeAccess;
}  // namespace internal

inline constexpr std::chrono::milliseconds kDefaultControlTimeout{120000};

// Administration of a running job from outside it (`pserver status`, `pserver drain`,
// `pserver checkpoint`): a
// request to the scheduler at `scheduler_address`, answered at an address this call listens at
// on `host` (the scheduler must reach it). kDeadlineExceeded when no answer comes within
// `timeout`; the scheduler's error otherwise (e.g. kInvalidArgument for a node that is no live
// server, or for the last server).
//
// The job's state: epoch, servers and workers with their state and (servers) share of the
// routing-key space and whether their replicas are in sync, the membership change running, the
// failovers, the tables. As text for people, or (`StatusFormat::kJson`, `pserver status --json`)
// as one JSON object for programs: the fields are listed in docs/elasticity.md, section 5.
enum class StatusFormat { kText, kJson };
Result<std::string> JobStatus(const std::string& scheduler_address, std::chrono::milliseconds timeout,
                              const std::string& host = "127.0.0.1", StatusFormat format = StatusFormat::kText);
// Drains server `node` (its node id, as JobStatus shows it): returns once its keys moved and it
// was told to exit, with the scheduler's one-line summary.
Result<std::string> DrainServer(const std::string& scheduler_address, NodeId node, std::chrono::milliseconds timeout,
                                const std::string& host = "127.0.0.1");
// Checkpoints the job into directory `dir` (made absolute here; it must exist, and every server
// and the scheduler must reach it under that name, e.g. on a shared file system): returns once
// every server wrote its file and the scheduler the manifest, with a one-line summary naming the
// checkpoint's directory (docs/durability.md). A failed checkpoint leaves no directory behind
// and the earlier checkpoints as they were.
Result<std::string> CheckpointJob(const std::string& scheduler_address, const std::string& dir,
                                  std::chrono::milliseconds timeout, const std::string& host = "127.0.0.1");

class Node {
 public:
  // kInvalidArgument for inconsistent options; kUnavailable if the listen address cannot be
  // bound; kDeadlineExceeded (naming the scheduler's address) if registration does not
  // complete within options.register_timeout.
  static Result<std::unique_ptr<Node>> Start(const NodeOptions& options);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();

  Role role() const { return role_; }
  // The scheduler is node 0 with rank 0.
  NodeId id() const;
  Rank rank() const;
  uint32_t num_servers() const;
  uint32_t num_workers() const;
  // The address this node listens at (for the scheduler: the one nodes register at).
  const std::string& address() const;

  // Servers and workers: blocks until every node of `group` has called Barrier with it.
  // kDeadlineExceeded naming the barrier after `timeout`; the sticky error if the job failed.
  Status Barrier(BarrierGroup group, std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Workers (and servers): declares a table by name; every node declaring the same name with
  // the same spec gets the same id. kInvalidArgument for a bad spec or a conflicting one.
  Result<TableId> DeclareTable(const TableSpec& spec, std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Workers: reports this worker done and waits until all workers are (the end of the job).
  // Call it after the last Wait. OK when the job ended normally.
  Status Finalize(std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Workers: this worker cannot do its part of the job (`why`, e.g. its data could not be read,
  // or its results would be wrong). Instead of leaving the job to end without its work -- which
  // could look like success -- the scheduler ends the job at once for every node with an error
  // naming this worker and `why`. Waits up to `timeout` for that end; returns the job's error.
  Status FinalizeWithError(const Status& why, std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Workers: this worker does the work of worker `lost` (its NodeId, from id() there), which
  // died before it finished -- e.g. it read the lost worker's data and trains on it too. A job
  // that lost a worker otherwise ends with an error saying its share of the work is missing;
  // once another worker took it over, the job may end well. Call it when the scheduler has
  // declared `lost` dead (a barrier it missed was released) and before Finalize.
  // kInvalidArgument if `lost` is no worker that died before finishing.
  Status TakeOver(NodeId lost, std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Workers and servers: CheckpointJob asked over this node's own connection to the scheduler
  // (so it works on any transport): checkpoints the job into `dir` (made absolute here) and
  // returns the scheduler's summary once the checkpoint is complete. A checkpoint taken while
  // no worker pushes (e.g. between two barriers) is a consistent cut of the job. A server must
  // not call it from a thread that serves its requests: the checkpoint waits for them.
  Result<std::string> Checkpoint(const std::string& dir, std::chrono::milliseconds timeout = kDefaultControlTimeout);

  // Scheduler and servers: serves until the job ends. OK when every worker finalized; the
  // reason otherwise (a dead node, a cluster that did not form in time, ...). A server holds
  // requests that arrive before Run, so create its KVServer objects first.
  Status Run();

  // Servers: asks the scheduler to drain this server -- move its keys to the other servers --
  // after which Run returns OK (see docs/elasticity.md). Returns once asked. The scheduler
  // refuses to drain the last server (logged here; the server goes on serving). `pserver server`
  // calls it on SIGTERM.
  Status Leave();

  // OK while the node takes part in a live job.
  Status health() const;
  // True once the scheduler told this node it had been declared dead -- it was silent (stopped,
  // cut off) for the heartbeat timeout -- and the job goes on without it (what it was doing, if
  // the job needs it, is handed to another node: Node::TakeOver). Its requests fail from then on.
  bool declared_dead() const;

  // What this node sent and received on the wire so far: every message, data and control, its
  // bytes as they travelled (after the tables' filters, docs/filters.md).
  struct Traffic {
    uint64_t messages_sent = 0;
    uint64_t bytes_sent = 0;
    uint64_t messages_received = 0;
    uint64_t bytes_received = 0;
  };
  Traffic traffic() const;

  // Ends this node's part in the job at once (e.g. on Ctrl-C): Run, Finalize, Barrier and
  // pending requests return kAborted. Peers notice through the scheduler's heartbeats.
  void Stop();

  // Metrics (NodeOptions::metrics_port; docs/metrics.md). metrics_address() is "HOST:PORT" where
  // they are served, empty without. metrics() is the node's prometheus-cpp registry, for a
  // program's own instruments (prometheus::BuildGauge().Name(...).Register(*node.metrics())),
  // served with the node's; nullptr without a metrics port.
  const std::string& metrics_address() const { return metrics_address_; }
  prometheus::Registry* metrics() const;

 private:
  friend class internal::NodeAccess;
  Node() = default;

  Role role_ = Role::kWorker;
  std::unique_ptr<cluster::NodeRuntime> runtime_;
  std::unique_ptr<cluster::Scheduler> scheduler_;
  // Declared after the runtime and the scheduler, so destroyed before them: the endpoint stops
  // serving before what it reads goes.
  std::shared_ptr<metrics::NodeMetrics> metrics_;
  std::unique_ptr<kv::MetricsEndpoint> endpoint_;
  std::string metrics_address_;
};

}  // namespace pserver
