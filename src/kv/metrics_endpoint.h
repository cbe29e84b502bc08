// MetricsEndpoint: a node's metrics over HTTP, in Prometheus' text format (docs/metrics.md).
//
// GET /metrics answers with what metrics::NodeMetrics::Collect gives at that moment, serialised
// by prometheus-cpp; anything else is a 404. The server is cpp-httplib's (the library the etcd
// store already speaks HTTP with) on a thread of its own and two for requests; a connection
// carries one request and is closed, so that stopping never waits on an idle client. Destroying
// the endpoint stops it at once (a request being answered finishes first).
//
// Thread safety: Start and the destructor from one thread; requests are served on the
// endpoint's threads.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "base/metrics.h"
#include "pserver/result.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace pserver::kv {

class MetricsEndpoint {
 public:
  // Serves `metrics` at http://host:port/metrics; port 0 takes any free port (port() says
  // which). kInvalidArgument for a port outside 0..65535; kUnavailable, naming host:port, when
  // it cannot listen there (the port is taken, or the host is not this machine's).
  static Result<std::unique_ptr<MetricsEndpoint>> Start(const std::string& host, int port,
                                                         std::shared_ptr<metrics::NodeMetrics> metrics);
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;
  ~MetricsEndpoint();

  int port() const { return port_; }

 private:
  MetricsEndpoint();
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::atomic<bool> done_{false};  // the accept loop returned
  std::thread thread_;             // runs the server's accept loop
};

}  // namespace pserver::kv
