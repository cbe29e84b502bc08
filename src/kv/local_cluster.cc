#include "kv/local_cluster.h"

#include <fmt/format.h>

#include "kv/node_access.h"
#include "pserver/kv_server.h"
#include "transport/inproc/inproc_transport.h"

namespace pserver::kv {

std::shared_ptr<void> DefaultServers(Node& server) {
  struct All {
    explicit All(Node& n) : f32(n), f64(n), i32(n), i64(n) {}
    KVServer<float> f32;
    KVServer<double> f64;
    KVServer<int32_t> i32;
    KVServer<int64_t> i64;
  };
  return std::make_shared<All>(server);
}

namespace {

Result<std::unique_ptr<Node>> StartNode(const NodeOptions& o, transport::inproc::InprocHub* hub,
                                        const LocalClusterOptions& options) {
  if (hub == nullptr) return Node::Start(o);
  std::unique_ptr<transport::Transport> t =
      std::make_unique<transport::inproc::InprocTransport>(hub, transport::inproc::InprocOptions{});
  if (options.wrap_transport) {
    const uint32_t hint = o.rank_hint < 0 ? 0 : static_cast<uint32_t>(o.rank_hint);
    t = options.wrap_transport(o.role, hint, std::move(t));
  }
  return internal::NodeAccess::StartWithTransport(o, std::move(t));
}

}  // namespace

Result<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterOptions& options, ServerSetup setup) {
  if (options.wrap_transport && !options.inproc) {
    return Status::InvalidArgument("LocalClusterOptions::wrap_transport needs the inproc transport");
  }
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  transport::inproc::InprocHub* hub = nullptr;
  if (options.inproc) {
    auto h = std::make_shared<transport::inproc::InprocHub>();
    hub = h.get();
    c->hub_ = h;
  }
  NodeOptions base = options.node;
  base.num_servers = options.num_servers;
  base.num_workers = options.num_workers;
  NodeOptions sched = base;
  sched.role = Role::kScheduler;
  sched.scheduler_address = options.inproc ? "inproc://scheduler" : "tcp://127.0.0.1:0";
  PSERVER_ASSIGN_OR_RETURN(c->scheduler_, StartNode(sched, hub, options));
  base.scheduler_address = c->scheduler_->address();
  c->options_ = options;
  c->server_options_ = base;
  c->server_options_.role = Role::kServer;
  c->server_options_.rank_hint = -1;

  // Start blocks until the whole cluster registered, so every node starts in its own thread.
  const uint32_t total = options.num_servers + options.num_workers;
  std::vector<std::unique_ptr<Node>> started(total);
  std::vector<Status> start_status(total);
  c->results_.assign(total + 1, Status::Ok());
  Node* scheduler = c->scheduler_.get();
  c->threads_.emplace_back([c = c.get(), scheduler] { c->results_[0] = scheduler->Run(); });
  {
    std::vector<std::jthread> starters;
    for (uint32_t i = 0; i < total; ++i) {
      NodeOptions o = base;
      o.role = i < options.num_servers ? Role::kServer : Role::kWorker;
      o.rank_hint = i < options.num_servers ? i : i - options.num_servers;
      starters.emplace_back([&started, &start_status, &options, i, o, hub] {
        Result<std::unique_ptr<Node>> r = StartNode(o, hub, options);
        if (r.ok()) {
          started[i] = std::move(r).value();
        } else {
          start_status[i] = r.status();
        }
      });
    }
  }
  for (uint32_t i = 0; i < total; ++i) {
    if (!start_status[i].ok()) {
      return start_status[i].WithContext(fmt::format("starting node {} of the local cluster", i));
    }
    (i < options.num_servers ? c->servers_ : c->workers_).push_back(std::move(started[i]));
  }
  for (size_t i = 0; i < c->servers_.size(); ++i) {
    Node* server = c->servers_[i].get();
    std::shared_ptr<void> handlers = setup(*server);
    c->threads_.emplace_back([c = c.get(), server, handlers, i]() mutable {
      c->results_[i + 1] = server->Run();
      handlers.reset();
    });
  }
  return c;
}

Status LocalCluster::RunWorkers(const std::function<Status(Node&)>& body) {
  ran_ = true;
  std::vector<Status> results(workers_.size());
  {
    std::vector<std::jthread> threads;
    for (size_t i = 0; i < workers_.size(); ++i) {
      threads.emplace_back([&, i] {
        Status s = body(*workers_[i]);
        Status f = workers_[i]->Finalize();
        results[i] = s.ok() ? f : s;
      });
    }
  }
  threads_.clear();  // joins the scheduler and servers, which end with the job
  std::vector<std::jthread> added_threads;
  {
    MutexLock lock(&added_mu_);
    added_threads.swap(added_threads_);
  }
  added_threads.clear();
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (!results[i].ok()) return results[i].WithContext(fmt::format("worker {}", workers_[i]->rank().value));
  }
  for (const Status& s : results_) PSERVER_RETURN_IF_ERROR(s);
  MutexLock lock(&added_mu_);
  for (const auto& s : added_results_) PSERVER_RETURN_IF_ERROR(*s);
  return Status::Ok();
}

Node& LocalCluster::server(uint32_t i) {
  if (i < servers_.size()) return *servers_[i];
  MutexLock lock(&added_mu_);
  return *added_[i - servers_.size()];
}

uint32_t LocalCluster::num_servers() const {
  MutexLock lock(&added_mu_);
  return static_cast<uint32_t>(servers_.size() + added_.size());
}

Result<Node*> LocalCluster::AddServer(ServerSetup setup) {
  auto* hub = static_cast<transport::inproc::InprocHub*>(hub_.get());
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Node> node, StartNode(server_options_, hub, options_));
  Node* server = node.get();
  std::shared_ptr<void> handlers = setup(*server);
  MutexLock lock(&added_mu_);
  added_.push_back(std::move(node));
  added_results_.push_back(std::make_unique<Status>());
  Status* result = added_results_.back().get();
  added_threads_.emplace_back([server, handlers, result]() mutable {
    *result = server->Run();
    handlers.reset();
  });
  return server;
}

LocalCluster::~LocalCluster() {
  // Without RunWorkers the job never ends by itself: stop every node, then join.
  if (scheduler_) scheduler_->Stop();
  for (auto& n : servers_) n->Stop();
  for (auto& n : workers_) n->Stop();
  threads_.clear();
  MutexLock lock(&added_mu_);
  for (auto& n : added_) n->Stop();
  added_threads_.clear();
}

}  // namespace pserver::kv
