// The pserver side of `pserver bench`: the same shapes as the raw ZeroMQ bound (raw_zmq.h),
// run through a real cluster -- scheduler, servers and workers as threads of this process, each
// node with its own ZeroMQ context over loopback TCP, as the bound's peers are.
//
// A request carries ONE key whose value is `bytes` long (a float table of width bytes/4). With
// several servers each worker cycles over one key per server, so the load spreads as the
// bound's round-robin over servers does. Servers run the default sum handler, or -- as a
// diagnostic that separates the server's arithmetic from the rest of the path -- a handler that
// does no work (ServerWork::kNone).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "pserver/node.h"
#include "pserver/result.h"
#include "raw_zmq.h"

namespace pserver::bench {

// What the servers do with a request.
enum class ServerWork {
  kStore,  // the default store: pushes are added to the stored row, pulls read it
  kNone,   // diagnostic: pushes are acknowledged and dropped, pulls answered with a shared row
           // of zeros -- the path of a request without the server's arithmetic
};

// How the in-process cluster (kv/local_cluster.h) sets up each server for `work`.
std::function<std::shared_ptr<void>(Node& server)> ServerSetupFor(ServerWork work);

struct ClusterWorkloadOptions {
  Shape shape = Shape::kPush;
  size_t bytes = 4096;  // REQUIRES: a multiple of 4
  int window = 32;      // requests in flight per worker
  int num_workers = 1;
  int num_servers = 1;
  std::chrono::milliseconds min_duration{1000};
  int warmup_requests = 64;
  bool verify = false;  // check every pulled row's size (slower)
  ServerWork server_work = ServerWork::kStore;
  uint32_t replicas = 1;  // the job's replication factor (NodeOptions::replicas)
  bool metrics = false;   // every node keeps and serves its metrics (NodeOptions::metrics_port 0)
};

// Requests per second over all workers, like MeasureRawZmqThroughput.
Result<ThroughputResult> MeasureClusterThroughput(const ClusterWorkloadOptions& options);

// One worker, one server, one request in flight: PushPull of one key of `bytes` (the analogue
// of the bound's REQ/REP echo).
Result<LatencyResult> MeasureClusterRoundTrip(size_t bytes, std::chrono::milliseconds min_duration, int warmup);

}  // namespace pserver::bench
