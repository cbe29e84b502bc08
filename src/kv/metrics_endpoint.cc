#include "kv/metrics_endpoint.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include "prometheus/text_serializer.h"

namespace pserver::kv {

MetricsEndpoint::MetricsEndpoint() : server_(std::make_unique<httplib::Server>()) {}

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& host, int port,
                                                                 std::shared_ptr<metrics::NodeMetrics> metrics) {
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument(fmt::format("metrics port {}: give 0 (any free port) to 65535", port));
  }
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  httplib::Server& s = *e->server_;
  // Prometheus scrapes a target every few seconds: two threads are plenty, and one request per
  // connection lets a stop finish without waiting out a client's keep-alive.
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  s.set_keep_alive_max_count(1);
  s.set_read_timeout(2, 0);
  s.set_write_timeout(2, 0);
  // SO_REUSEADDR (a restarted node takes its port back at once) but not httplib's default
  // SO_REUSEPORT, with which a second node would share a taken port instead of being refused.
  s.set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.Get("/metrics", [metrics = std::move(metrics)](const httplib::Request&, httplib::Response& res) {
    res.set_content(prometheus::TextSerializer().Serialize(metrics->Collect()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  const bool bound = port == 0 ? (e->port_ = s.bind_to_any_port(host)) > 0 : s.bind_to_port(host, port);
  if (!bound) {
    return Status::Unavailable(
        fmt::format("cannot serve metrics at {}:{} (is the port taken, or the host not this machine's?)", host, port));
  }
  if (port != 0) e->port_ = port;
  e->thread_ = std::thread([server = e->server_.get(), done = &e->done_] {
    server->listen_after_bind();
    done->store(true);
  });
  // Serving before Start returns: httplib's stop() is a no-op until the accept loop runs, so an
  // endpoint destroyed before then would leave its thread blocked in accept().
  while (!s.is_running() && !e->done_.load()) std::this_thread::yield();
  return e;
}

MetricsEndpoint::~MetricsEndpoint() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace pserver::kv
