// LocalCluster: a whole job -- scheduler, servers and workers -- as threads of this process,
// each node with its own transport (ZeroMQ over loopback TCP, or the inproc transport). Used by
// the in-process test tier and by `pserver bench`.
//
// Start() returns once every node has registered. RunWorkers() runs a function on every worker
// in parallel, finalizes the workers and waits for the scheduler and servers to finish.
// AddServer() starts one more server while the job runs (it joins; see docs/elasticity.md).
//
// Thread safety: drive a LocalCluster from one thread, but for AddServer, which may run while
// another thread is in RunWorkers.
#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "pserver/node.h"
#include "pserver/options.h"
#include "transport/transport.h"

namespace pserver::kv {

struct LocalClusterOptions {
  uint32_t num_servers = 1;
  uint32_t num_workers = 1;
  bool inproc = false;  // inproc transport instead of ZeroMQ over loopback TCP
  // Timeouts and other settings every node gets (role, addresses and counts are filled in).
  NodeOptions node;
  // inproc only: wraps each node's transport before the node starts (e.g. in a
  // testing::InterceptingTransport, to watch, hold or re-send its messages). Called with the
  // node's role and rank hint (servers and workers get their index as hint, which the
  // scheduler honours; the scheduler gets 0). The wrapper must keep the inner transport. Called
  // from several threads at once (nodes start in parallel).
  std::function<std::unique_ptr<transport::Transport>(Role role, uint32_t rank_hint,
                                                      std::unique_ptr<transport::Transport> inner)>
      wrap_transport;
};

// Called on each server before it runs; the returned object (e.g. KVServer instances) lives
// until the server's Run returns. The default serves all value types with the sum handler.
using ServerSetup = std::function<std::shared_ptr<void>(Node& server)>;
std::shared_ptr<void> DefaultServers(Node& server);

class LocalCluster {
 public:
  static Result<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options,
                                                     ServerSetup setup = DefaultServers);
  ~LocalCluster();  // joins every thread (after RunWorkers, or by stopping the job)

  Node& worker(uint32_t i) { return *workers_[i]; }
  uint32_t num_workers() const { return static_cast<uint32_t>(workers_.size()); }
  Node& scheduler() { return *scheduler_; }
  // The servers started with the cluster, then those added, in order.
  Node& server(uint32_t i) ABSL_LOCKS_EXCLUDED(added_mu_);
  uint32_t num_servers() const ABSL_LOCKS_EXCLUDED(added_mu_);

  // Starts one more server, set up by `setup`, and returns it once registered: the scheduler
  // then moves keys to it (the job must not have ended).
  Result<Node*> AddServer(ServerSetup setup = DefaultServers) ABSL_LOCKS_EXCLUDED(added_mu_);

  // Runs body(worker node) on every worker in its own thread, then finalizes each worker and
  // waits for the job to end. Returns the first error of a body, a Finalize, the servers or
  // the scheduler. Call once.
  Status RunWorkers(const std::function<Status(Node& worker)>& body);

 private:
  LocalCluster() = default;
  std::shared_ptr<void> hub_;  // the inproc hub, when used
  std::unique_ptr<Node> scheduler_;
  std::vector<std::unique_ptr<Node>> servers_;
  std::vector<std::unique_ptr<Node>> workers_;
  std::vector<std::jthread> threads_;  // scheduler and servers running
  std::vector<Status> results_;        // of those threads, by index
  bool ran_ = false;
  // What AddServer needs, and what it started.
  LocalClusterOptions options_;
  NodeOptions server_options_;
  mutable Mutex added_mu_;
  std::vector<std::unique_ptr<Node>> added_ ABSL_GUARDED_BY(added_mu_);
  std::vector<std::unique_ptr<Status>> added_results_ ABSL_GUARDED_BY(added_mu_);
  std::vector<std::jthread> added_threads_ ABSL_GUARDED_BY(added_mu_);
};

}  // namespace pserver::kv
