// The environment `pserver launch` gives the programs it starts, and the helper that turns it
// into NodeOptions. The library itself never reads the environment; a program calls this
// explicitly (the `pserver` tool's node commands do, as a fallback for missing flags).
//
//   PSERVER_ROLE          server | worker
//   PSERVER_SCHEDULER     the scheduler's address, tcp://host:port
//   PSERVER_HOST          the host this node listens on (default 127.0.0.1)
//   PSERVER_NUM_SERVERS   the job's number of servers
//   PSERVER_NUM_WORKERS   the job's number of workers
//   PSERVER_RANK_HINT     the node's index among its role, in start order
//   PSERVER_HEARTBEAT_INTERVAL_MS, PSERVER_HEARTBEAT_TIMEOUT_MS, PSERVER_REGISTER_TIMEOUT_MS,
//   PSERVER_SEND_TIMEOUT_MS   optional timing settings
//   PSERVER_METRICS_PORT  where the node serves its metrics (NodeOptions::metrics_port; -1: none)
#pragma once

#include "pserver/options.h"
#include "pserver/result.h"

namespace pserver {

// The exit status of a program started by `pserver launch` that found the scheduler had declared
// it dead (Node::declared_dead: it was silent -- stopped, cut off -- for the heartbeat timeout,
// and the job went on without it). With LaunchOptions::workers_may_die a worker that exits so
// while the job runs is the others' to take over, as one killed from outside.
inline constexpr int kExitDeclaredDead = 75;

// Builds NodeOptions from the variables above. kInvalidArgument naming the variable when one
// is missing (PSERVER_SCHEDULER) or malformed.
Result<NodeOptions> NodeOptionsFromEnvironment();

}  // namespace pserver
