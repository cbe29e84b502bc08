// NodeOptions: everything a node needs to start, with documented defaults. The library never
// reads environment variables or flags itself; the `pserver` tool and user programs build
// NodeOptions (see pserver/launch_env.h for the launcher's environment).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "pserver/types.h"

namespace pserver {

struct NodeOptions {
  Role role = Role::kWorker;

  // The scheduler's address, "tcp://host:port". For the scheduler itself this is where it
  // listens (port 0: any free port; read the result from Node::address()).
  std::string scheduler_address;

  // Host (IP or name) this node listens on; the port is chosen by the system. Peers connect
  // to it, so on a multi-host cluster it must be an address the others can reach.
  std::string host = "127.0.0.1";

  // Scheduler only: how many servers and workers form the job.
  uint32_t num_servers = 1;
  uint32_t num_workers = 1;

  // Preferred rank among the nodes of this role (e.g. the launcher's start order); the
  // scheduler honours it when it is free and in range. -1: no preference.
  int64_t rank_hint = -1;

  // How long Start waits for the whole cluster to register.
  std::chrono::milliseconds register_timeout{60000};
  // Heartbeats to the scheduler, and how long a silent node (or scheduler) is considered alive.
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{5000};
  // How long a server holds a request routed with a newer cluster view than its own while it
  // waits to learn that view (then the request fails with kUnavailable), and how long a node
  // waits for a peer's data message that others overtook (then the node fails with kUnavailable).
  std::chrono::milliseconds view_timeout{60000};
  // Data messages (and the control work kept in order with them) a node queues for its data
  // thread. While the queue is full the node stops reading; after heartbeat_timeout of that (an
  // apply or callback that does not return) the node fails with kUnavailable. 0 means 1.
  uint32_t data_queue_limit = 65536;
  // How long a send may block on a peer that does not take messages.
  std::chrono::milliseconds send_timeout{10000};
  // Scheduler only: how long it waits for the remaining servers to confirm a shutdown.
  std::chrono::milliseconds shutdown_timeout{10000};
  // Scheduler only: with both set, a checkpoint of the job into checkpoint_dir every
  // checkpoint_interval (the first one interval after the cluster formed; docs/durability.md).
  std::string checkpoint_dir;
  std::chrono::milliseconds checkpoint_interval{0};
  // Scheduler only: the replication factor k (1..8; docs/durability.md). With k >= 2 each key
  // range is held by k servers (its chain: the owner and the next servers of the ring), a push
  // is acknowledged once all of them applied it, and a server that dies is replaced by the next
  // server of each of its chains without losing an acknowledged update. 1: no replication (a
  // dead server ends the job).
  uint32_t replicas = 1;
  // Scheduler only: where it keeps the job's state (docs/durability.md, section 6): "file:DIR"
  // or "etcd:http://HOST:PORT[/PREFIX]". A scheduler started on a store that holds a job that has
  // not ended resumes it: it listens at the address recorded there, and the nodes, which wait
  // for it, go on with it. Empty: the state is in the scheduler's memory only, and a dead
  // scheduler ends the job.
  std::string store;
  // Where the node serves its metrics in Prometheus' text format (http://HOST:PORT/metrics, HOST
  // being `host`; docs/metrics.md): -1 serves none (no metric is kept, nothing costs), 0 any free
  // port (read it from Node::metrics_address()). The endpoint is up before Start waits for the
  // cluster, so that a liveness probe finds a node that waits for its peers alive.
  int32_t metrics_port = -1;
  // Servers and workers: how long they wait for a scheduler that keeps its state in a store
  // (its heartbeat answers say so) to come back once it fell silent, before they fail.
  std::chrono::milliseconds scheduler_grace{60000};
};

}  // namespace pserver
