// Test support for the cluster and KV unit tests (test-only; not part of any library):
//   - StatusIs: a GoogleTest predicate for a status code plus a piece of its message;
//   - Gate: a one-shot, idempotent open/wait flag for holding a thread until the test says so;
//   - ObservingTransport: a Transport decorator that reports every message sent and received,
//     so that tests can wait for protocol events instead of sleeping;
//   - RecordingDataHandler: a data-plane handler that queues what reaches a node;
//   - InprocJob: a scheduler and any number of servers and workers over the inproc transport,
//     each node built by the test (rank hints, timeouts, observers), all owned and torn down here.
//
// Thread safety: Gate and ObservingTransport are thread-safe; drive an InprocJob from one thread.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "kv/node_access.h"
#include "cluster/node_runtime.h"
#include "pserver/node.h"
#include "pserver/status.h"
#include "transport/inproc/inproc_transport.h"
#include "transport/transport.h"

namespace pserver::testing {

// True when `s` has `code` and its message contains `text`.
inline ::testing::AssertionResult StatusIs(const Status& s, StatusCode code, std::string_view text = {}) {
  if (s.code() != code) {
    return ::testing::AssertionFailure() << "expected " << StatusCodeName(code) << ", got " << s.ToString();
  }
  if (s.message().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "expected the message to contain '" << text << "', got " << s.ToString();
  }
  return ::testing::AssertionSuccess() << s.ToString();
}

// A gate that opens once. Open() may be called any number of times, from any thread.
class Gate {
 public:
  void Open() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  // True once open; false if `timeout` passed first (a safety net against hanging a test).
  bool Wait(std::chrono::milliseconds timeout) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_; });
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

// Opens a gate when it goes out of scope, so that a failed assertion cannot leave a thread
// blocked on it forever.
class OpenOnExit {
 public:
  explicit OpenOnExit(Gate& gate) : gate_(gate) {}
  ~OpenOnExit() { gate_.Open(); }
  OpenOnExit(const OpenOnExit&) = delete;
  OpenOnExit& operator=(const OpenOnExit&) = delete;

 private:
  Gate& gate_;
};

// Forwards everything to an inner transport and calls the observers with each message sent
// (before it is sent) and received (before the owner sees it). An optional rewriter may change
// each outgoing message first (fault injection: corrupt what a well-behaved node would send).
// Observers and the rewriter run on the sending or receiving thread and must not block. An
// optional gate is asked last, before each send: a status other than OK fails the send with it,
// sending nothing (a send given up); the gate may block its sender (a test holding a send).
class ObservingTransport final : public transport::Transport {
 public:
  using Observer = std::function<void(const transport::Message&)>;
  using Rewriter = std::function<void(transport::Message&)>;
  using Gate = std::function<Status(const transport::Message&)>;
  ObservingTransport(std::unique_ptr<transport::Transport> inner, Observer on_send, Observer on_receive,
                     Rewriter rewrite = {}, Gate gate = {})
      : inner_(std::move(inner)),
        on_send_(std::move(on_send)),
        on_receive_(std::move(on_receive)),
        rewrite_(std::move(rewrite)),
        gate_(std::move(gate)) {}

 protected:
  Result<std::string> DoListen(const std::string& address) override { return inner_->Listen(address); }
  Status DoConnect(NodeId peer, const std::string& address, const transport::ConnectionId& present_as) override {
    return inner_->Connect(peer, address, present_as);
  }
  void DoDisconnect(NodeId peer) override { inner_->Disconnect(peer); }
  void DoWatch(NodeId peer) override { inner_->Watch(peer); }
  std::vector<NodeId> DoPeersDown(std::chrono::milliseconds for_at_least) override {
    return inner_->PeersDown(for_at_least);
  }
  Status DoSend(NodeId, const transport::WireMessage& wire, bool may_block) override {
    transport::Message m = wire.message();
    if (rewrite_) rewrite_(m);
    if (on_send_) on_send_(m);
    if (gate_) PSERVER_RETURN_IF_ERROR(gate_(m));
    return may_block ? inner_->Send(std::move(m)) : inner_->SendNoWait(std::move(m));
  }
  Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) override {
    PSERVER_ASSIGN_OR_RETURN(transport::Message m, inner_->Receive(timeout));
    if (on_receive_) on_receive_(m);
    return RawFrames{transport::EncodeWire(transport::WireMessage(m)), m.origin};
  }
  void DoShutdown() override { inner_->Shutdown(); }

 private:
  std::unique_ptr<transport::Transport> inner_;
  Observer on_send_;
  Observer on_receive_;
  Rewriter rewrite_;
  Gate gate_;
};

// Queues the data messages that reach a node (attach it with NodeRuntime::AttachDataHandler).
class RecordingDataHandler final : public cluster::DataHandler {
 public:
  void OnData(transport::Message&& msg) override ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    messages_.push_back(std::move(msg));
    cv_.SignalAll();
  }
  void OnNodeFailed(const cluster::NodeFailure&) override {}
  void OnShutdown(const Status&) override {}

  // The next message, or nullopt if none arrives within a generous bound (a failing test then
  // reports it instead of hanging).
  std::optional<transport::Message> Next() ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (!cv_.WaitFor(&mu_, std::chrono::seconds(30),
                     [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !messages_.empty(); })) {
      return std::nullopt;
    }
    transport::Message m = std::move(messages_.front());
    messages_.pop_front();
    return m;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::deque<transport::Message> messages_ ABSL_GUARDED_BY(mu_);
};

// A job over the inproc transport whose nodes the test builds one by one.
class InprocJob {
 public:
  static constexpr const char* kSchedulerAddress = "inproc://scheduler";

  // `base`: the options every node gets (timeouts); role, address and hints are set here.
  explicit InprocJob(NodeOptions base) : base_(std::move(base)) {}
  InprocJob(const InprocJob&) = delete;
  InprocJob& operator=(const InprocJob&) = delete;

  ~InprocJob() {
    if (scheduler_) scheduler_->Stop();
    for (auto& n : nodes_) {
      if (n) n->Stop();
    }
    if (scheduler_run_.valid()) scheduler_run_.wait();
    for (auto& f : spawned_) f.wait();
    nodes_.clear();
    scheduler_.reset();
  }

  // Runs `f` (e.g. a node's Run or Barrier) in a thread that this job joins after stopping every
  // node, so that a test which fails early cannot hang on it. `f` may use the job's nodes.
  std::shared_future<Status> Spawn(std::function<Status()> f) {
    std::shared_future<Status> done = std::async(std::launch::async, std::move(f)).share();
    spawned_.push_back(done);
    return done;
  }

  // Starts the scheduler of a job with `servers` servers and `workers` workers, listening at
  // kSchedulerAddress, with optional observers on its transport.
  Status StartScheduler(uint32_t servers, uint32_t workers, ObservingTransport::Observer on_send = {},
                        ObservingTransport::Observer on_receive = {}) {
    NodeOptions o = base_;
    o.role = Role::kScheduler;
    o.num_servers = servers;
    o.num_workers = workers;
    o.scheduler_address = kSchedulerAddress;
    auto t = std::make_unique<ObservingTransport>(
        std::make_unique<transport::inproc::InprocTransport>(&hub_, transport::inproc::InprocOptions{}),
        std::move(on_send), std::move(on_receive));
    PSERVER_ASSIGN_OR_RETURN(scheduler_, internal::NodeAccess::StartWithTransport(o, std::move(t)));
    return Status::Ok();
  }

  // Runs the scheduler's Run in a thread; its outcome comes from SchedulerOutcome().
  void RunScheduler() {
    Node* s = scheduler_.get();
    scheduler_run_ = std::async(std::launch::async, [s] { return s->Run(); });
  }
  // The scheduler's Run result (blocks until Run returns). REQUIRES: RunScheduler was called,
  // and this is the first call.
  Status SchedulerOutcome() { return scheduler_run_.get(); }
  // Stops the scheduler, waits for its Run to return and destroys it.
  void DestroyScheduler() {
    scheduler_->Stop();
    if (scheduler_run_.valid()) scheduler_run_.wait();
    scheduler_.reset();
  }

  struct NodeSpec {
    Role role = Role::kWorker;
    int64_t rank_hint = -1;
  };
  // Options of a server or worker of this job (the test may adjust them before StartNodes).
  NodeOptions OptionsFor(const NodeSpec& spec) const {
    NodeOptions o = base_;
    o.role = spec.role;
    o.rank_hint = spec.rank_hint;
    o.scheduler_address = kSchedulerAddress;
    return o;
  }
  // Starts one node per option set, all at once (Start blocks until the whole cluster has
  // registered), and returns each Start's status; started nodes are kept, in the given order.
  // transports[i], when given and not null, is node i's transport (made with NewTransport,
  // possibly wrapped); otherwise node i gets a plain one. clocks[i], when given and not null,
  // times node i's liveness (e.g. a testing::FakeClock); otherwise the real clock.
  std::vector<Status> StartNodes(const std::vector<NodeOptions>& options,
                                 std::vector<std::unique_ptr<transport::Transport>> transports = {},
                                 std::vector<Clock*> clocks = {}) {
    transports.resize(options.size());
    clocks.resize(options.size(), nullptr);
    for (auto& t : transports) {
      if (!t) t = NewTransport();
    }
    std::vector<std::unique_ptr<Node>> started(options.size());
    std::vector<Status> statuses(options.size());
    {
      std::vector<std::jthread> threads;
      for (size_t i = 0; i < options.size(); ++i) {
        threads.emplace_back([&, i] {
          Result<std::unique_ptr<Node>> r =
              internal::NodeAccess::StartWithTransport(options[i], std::move(transports[i]),
                                                       clocks[i] != nullptr ? clocks[i] : SteadyClock::Default());
          if (r.ok()) {
            started[i] = std::move(r).value();
          } else {
            statuses[i] = r.status();
          }
        });
      }
    }
    for (auto& n : started) nodes_.push_back(std::move(n));
    return statuses;
  }
  // Starts the given nodes and returns the first error, if any.
  Status StartAll(const std::vector<NodeSpec>& specs) {
    std::vector<NodeOptions> options;
    for (const NodeSpec& s : specs) options.push_back(OptionsFor(s));
    for (const Status& s : StartNodes(options)) PSERVER_RETURN_IF_ERROR(s);
    return Status::Ok();
  }

  // The i-th node started (in StartNodes order, over all calls); nullptr if it failed or was
  // destroyed.
  Node* node(size_t i) { return nodes_[i].get(); }
  size_t num_nodes() const { return nodes_.size(); }
  // Stops and destroys the i-th node.
  void Destroy(size_t i) {
    nodes_[i]->Stop();
    nodes_[i].reset();
  }
  Node& scheduler() { return *scheduler_; }
  // A transport on this job's hub, for starting nodes by hand.
  std::unique_ptr<transport::Transport> NewTransport() {
    return std::make_unique<transport::inproc::InprocTransport>(&hub_, transport::inproc::InprocOptions{});
  }

 private:
  NodeOptions base_;
  transport::inproc::InprocHub hub_;  // outlives every node (declared first, destroyed last)
  std::unique_ptr<Node> scheduler_;
  std::future<Status> scheduler_run_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::shared_future<Status>> spawned_;  // joined in the destructor, after Stop
};

// Node specs for InprocJob: a server or worker with no rank preference, or with one.
inline constexpr InprocJob::NodeSpec kServer{Role::kServer, -1};
inline constexpr InprocJob::NodeSpec kWorker{Role::kWorker, -1};
inline InprocJob::NodeSpec Server(int64_t hint) { return {Role::kServer, hint}; }
inline InprocJob::NodeSpec Worker(int64_t hint) { return {Role::kWorker, hint}; }

// Short heartbeats, for tests of failure detection: a stopped node is declared dead after
// 1.5 s by the scheduler's own timer (the tests wait for that event, not for time). Not
// shorter: a live node starved of CPU that long on a loaded 2-core machine must not be taken
// for dead (the multi-process fault tests once saw a one-second starvation).
inline NodeOptions FastHeartbeats() {
  NodeOptions o;
  o.heartbeat_interval = std::chrono::milliseconds(50);
  o.heartbeat_timeout = std::chrono::milliseconds(1500);
  o.register_timeout = std::chrono::seconds(30);
  o.shutdown_timeout = std::chrono::seconds(2);
  return o;
}

}  // namespace pserver::testing
