// NodeRuntime: the cluster side of one server or worker node.
//
// Start() listens, registers with the scheduler, waits until the whole cluster has
// registered, connects to its peers and starts the node's three threads:
//   - the receive loop, which only receives: it handles control messages (heartbeat answers,
//     views, calls) and puts data messages in order (see "Data channels") on the data queue;
//   - the data thread, which hands the queued data messages to the DataHandler the KV layer
//     attached, one at a time in arrival order, so that a long apply or a slow callback never
//     keeps the receive loop from hearing the scheduler (a live node never looks dead). The
//     queue holds options.data_queue_limit items; while it is full the receive loop waits, and
//     a data thread that handles nothing for options.heartbeat_timeout fails the node; and
//   - the heartbeat timer, which tells the scheduler this node lives and notices when the
//     scheduler stops answering.
// The liveness times -- heartbeats, the scheduler's silence, a stalled data thread, requests
// parked for a view or a gap -- are read and waited for through a Clock (base/clock.h), so that
// a test can drive them with a fake one; registration and the timeouts of calls (Barrier,
// DeclareTable, Finalize) are real time.
// Failures are sticky: once the scheduler is gone or the job was aborted, health() and every
// later call return the error, and the DataHandler hears of it through OnShutdown. The death of
// another worker is not a failure of this node (the job goes on without it); the DataHandler
// hears of every death through OnNodeFailed.
//
// Routing: the node routes by one immutable snapshot of the cluster view (routing()), which
// it swaps whole as soon as the scheduler's new view arrives (kViewChange; the DataHandler hears of
// it through OnViewChanged on the data thread, in its place among the data messages, and the
// scheduler gets a kViewChangeReply once the data received before the view was handled) or --
// on a worker -- when a server's redirect carries a newer view (AdoptView). A view
// never goes back: an older or equal epoch is ignored. A server holds a request routed with a
// newer epoch than its own until it learns that view, keeping each sender's order (a sender's
// later requests wait behind it); after options.view_timeout without it the request is answered
// with kUnavailable.
//
// Data channels: every data request goes out through its receiver's outbound queue (QueueData,
// which never blocks, then FlushData, which sends without holding any lock of its caller's and
// stamps each request with the next sequence number of the channel as it leaves), and received
// requests pass ChannelOrder (cluster/channel_order.h), so each peer's requests reach the
// DataHandler exactly once and in the order sent, whatever a network or proxy duplicates or
// reorders. A gap that
// stays open for options.view_timeout fails the node with kUnavailable naming the peer (a lost
// request would otherwise be a lost update). Replies are not sequenced: the worker matches each
// to its request part and ignores repeats, and a lost one fails that request's Wait.
//
// Who is believed: control messages only from the scheduler's connection -- the connection
// presenting the identity this node asked the scheduler to present (RegisterRequest), not
// whatever sender id a header claims -- and data messages only from a node of the cluster view
// of the other role (servers hear workers, workers hear servers), over a connection presenting
// that node's identity (NodeInfo::identity). Anything else is dropped, counted
// (refused_messages()) and logged (rate-limited), and never acted on, also during registration.
// A node that ends because of a shutdown logs why and from whom.
//
// Thread safety: all public methods are thread-safe. DataHandler callbacks run on the data
// thread, one at a time (OnShutdown may also run on the thread that ends the job); they should
// not block for long: the node's later data messages wait behind them.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "base/mutex.h"
#include "cluster/control_messages.h"
#include "cluster/channel_order.h"
#include "cluster/ring.h"
#include "cluster/routing.h"
#include "pserver/options.h"
#include "transport/transport.h"

namespace pserver::cluster {

const char* BarrierGroupName(BarrierGroup group);

// Implemented by the KV layer to receive the data plane.
class DataHandler {
 public:
  virtual ~DataHandler() = default;
  // Every callback but OnShutdown runs on the node's data thread, in the order of the messages
  // that caused it.
  // A data message (request on a server, reply on a worker).
  virtual void OnData(transport::Message&& msg) = 0;
  // The scheduler declared `failure.id` dead; requests to it will never be answered.
  virtual void OnNodeFailed(const NodeFailure& failure) = 0;
  // The job ended (OK) or the node can no longer take part (error); pending work must fail.
  virtual void OnShutdown(const Status& why) = 0;
  // The node routes by `routing` now (a newer view the scheduler announced); the scheduler hears
  // that the node took the view once this returns. Must not block.
  virtual void OnViewChanged(const std::shared_ptr<const Routing>& routing) { (void)routing; }
  // Server: the scheduler announces a newly declared table (kTableAnnounce), before any data
  // request for it can arrive; `spec` is the declaration's spec bytes, which only the kv layer
  // reads (kv/table_catalog.h). Called before the answer to the scheduler is sent; must not
  // block. Return OK to take the table; an error (a spec that does not decode or check, an
  // unknown update rule or params, a rule that does not fit the table) refuses it: the
  // declaration then fails at the declaring nodes with this error, naming this server, and the
  // runtime does not keep the spec. A table announced before the handler was attached is not
  // replayed: the runtime keeps its spec, so the handler finds it with NodeRuntime::FindTable.
  virtual Status OnTableDeclared(TableId id, const transport::Bytes& spec) {
    (void)id;
    (void)spec;
    return Status::Ok();
  }
  // Server: a phase of membership change `change` that the scheduler orders from this server, a
  // donor (see MigratePhase and docs/elasticity.md). Must not block: the work runs elsewhere and
  // kCopy, kFinal and kCommit end with NodeRuntime::ReportMigration; kCancel is not answered. An error returned here is reported at once (the default: this handler cannot
  // move rows).
  virtual Status OnMigrate(int64_t change, MigratePhase phase, const MigrateOrder& order) {
    (void)change;
    (void)phase;
    (void)order;
    return Status::Unavailable("this node's data handler cannot move rows");
  }
  // A node left the job on purpose (a worker that finished its work).
  virtual void OnNodeLeft(const NodeFailure& who) { (void)who; }
  // Server: what it holds of each table, for `pserver status` (the scheduler's kAdmin). Must
  // not block.
  virtual std::vector<TableStats> OnStats() { return {}; }
  // Server: write a checkpoint file of every table it holds at `path` (the scheduler's
  // kCheckpoint order, docs/durability.md). Must not block for the writing: `done` is called once,
  // from any thread, with what was written or why not (the default: this handler cannot).
  virtual void OnCheckpoint(const std::string& path, std::function<void(Result<CheckpointWritten>)> done) {
    (void)path;
    done(Status::Unavailable("this node's data handler cannot write checkpoints"));
  }
};

// The transport's counts as metrics families (pserver_transport_*; docs/metrics.md), for the
// runtime's and the scheduler's scrapes.
void AppendTransportMetrics(const transport::TransportStats& stats, std::vector<prometheus::MetricFamily>* out);

class NodeRuntime {
 public:
  // Blocks until registered or options.register_timeout passes. `transport` is taken over.
  // kDeadlineExceeded naming the scheduler address when it does not answer in time;
  // kInvalidArgument for a bad role or address; kAborted if the scheduler refused the node.
  // `clock` is borrowed and outlives the runtime.
  // `metrics`: where the node's metrics go (null: none); the runtime adds its own (the routing
  // epoch, queue depths, traffic, heartbeats missed; docs/metrics.md), and the KV layer's cores
  // theirs through metrics().
  static Result<std::unique_ptr<NodeRuntime>> Start(const NodeOptions& options,
                                                    std::unique_ptr<transport::Transport> transport,
                                                    Clock* clock = SteadyClock::Default(),
                                                    std::shared_ptr<metrics::NodeMetrics> metrics = nullptr);
  NodeRuntime(const NodeRuntime&) = delete;
  NodeRuntime& operator=(const NodeRuntime&) = delete;
  // Stops the threads. Does not tell the scheduler (call Finalize first for a clean exit).
  ~NodeRuntime();

  NodeId id() const { return id_; }
  Role role() const { return options_.role; }
  Rank rank() const { return rank_; }
  const std::string& address() const { return address_; }
  // The current routing snapshot; never null after Start. Take it once per request and use
  // that snapshot throughout.
  std::shared_ptr<const Routing> routing() const ABSL_LOCKS_EXCLUDED(routing_mu_) {
    MutexLock lock(&routing_mu_);
    return routing_;
  }
  std::string DescribeNode(NodeId id) const;
  transport::Transport& transport() { return *transport_; }
  transport::TransportStats traffic() const { return transport_->stats(); }
  // The node's metrics; null when it serves none.
  const std::shared_ptr<metrics::NodeMetrics>& metrics() const { return metrics_; }

  // A data request whose send failed, whichever thread queued it.
  struct SendFailure {
    transport::Header header;  // as it was to be sent
    Status error;
  };
  // Appends the data request `msg` to the outbound queue of msg.header.receiver; never blocks
  // (see "Data channels"). Requests queued by one thread go out in the order queued.
  void QueueData(transport::Message msg);
  // Sends what the outbound queues hold, each in order, a request at a time with no lock held
  // across the send (a send blocks like Transport::Send, at most options.send_timeout). A queue
  // another thread is sending already is left to it, unless it holds kMaxOutbound requests: then
  // this call waits until that thread made room (back-pressure on a peer that reads slowly).
  // Call it holding no lock a reply path may need. Returns the sends that failed (each took no
  // sequence number, and the requests after it still go out), whichever thread queued them, and
  // those a SendData call sent for others.
  std::vector<SendFailure> FlushData();
  // Sends a data message to msg.header.receiver: a reply at once and unsequenced; a request by
  // QueueData then FlushData, returning its own send's failure. Failures of requests queued by
  // others that it sent are kept for the next FlushData, never dropped.
  Status SendData(transport::Message msg);
  // Requests an outbound queue holds before FlushData waits for the thread sending it.
  static constexpr size_t kMaxOutbound = 4096;
  // How often a node sends heartbeats while the connection to a scheduler with a store (which
  // may be restarted) is broken, until a scheduler answers.
  static constexpr std::chrono::milliseconds kSilentSchedulerProbe{20};
  // Worker: routes by `view` from now on if it is newer than the current view (from a server's
  // redirect), connecting to the servers it adds. Returns the routing in force afterwards.
  // kCorruption if the view is malformed or lacks this node.
  Result<std::shared_ptr<const Routing>> AdoptView(const ClusterView& view);

  // The node's data-plane handler: the one attached earlier, or a new one from `make`, which
  // is attached at once. The runtime co-owns it until destruction, after its threads stopped.
  // Data messages are held, in order, until the handler is attached and -- on a server -- until
  // StartServing, so that no request meets a half-configured server.
  std::shared_ptr<DataHandler> AttachDataHandler(const std::function<std::shared_ptr<DataHandler>()>& make);

  // Waits until every live node of `group` has entered the barrier; a worker that dies (before
  // or during the barrier) is not waited for. kDeadlineExceeded naming the barrier after
  // `timeout`; kUnavailable when a server died (the job is aborted then); the sticky error if any.
  Status Barrier(BarrierGroup group, std::chrono::milliseconds timeout);

  // Declares a table by name at the scheduler and keeps its spec bytes locally. Returns once
  // every live server has taken the spec (see Scheduler). kInvalidArgument for a name that is
  // empty or over kMaxTableName bytes, or a declaration whose spec differs from an earlier one of
  // the name; the error of a server that refused the spec, naming it; kDeadlineExceeded after
  // `timeout`; the sticky error if any. (kv::DeclareTable checks and encodes a TableSpec first.)
  Result<TableId> DeclareTable(const TableDeclaration& declaration, std::chrono::milliseconds timeout);
  // The spec bytes of a table this node declared or -- on a server -- that was announced to it
  // and accepted (they never change once taken). kNotFound otherwise.
  Result<transport::Bytes> FindTable(TableId id) const;

  // Server: every handler is configured; deliver the held requests and those to come.
  void StartServing();
  // Server: tells the scheduler how phase `phase` of change `change` went here (see
  // DataHandler::OnMigrate). Never blocks.
  void ReportMigration(int64_t change, MigratePhase phase, const Result<MigrateReport>& outcome);
  // Worker: tells the scheduler this worker does the work of worker `lost`, which died before it
  // finished, so that the job may end well without it. Returns the scheduler's answer
  // (kInvalidArgument: `lost` is no such worker); kDeadlineExceeded after `timeout`.
  Status TakeOver(NodeId lost, std::chrono::milliseconds timeout);
  // Worker or server: asks the scheduler to checkpoint the job into `dir` (absolute) and waits
  // for the end: the scheduler's one-line summary, or its error (docs/durability.md, section 2).
  Result<std::string> Checkpoint(const std::string& dir, std::chrono::milliseconds timeout);
  // Server: asks the scheduler to drain this server (move its keys to the others, then end its
  // part in the job, which WaitForShutdown then sees as a normal end). Returns once asked; a
  // refusal (the last server) is logged when it comes and the server goes on serving.
  Status RequestDrain();
  // Server, with replication: every row this server owns under the view of `epoch` is on every
  // server of its chains (docs/durability.md). Tells the scheduler at once (a heartbeat that
  // carries it, as every later heartbeat does): only then may the scheduler hand this server's
  // keys to its replicas if it dies. Never blocks.
  void ReportReplicasSynced(Epoch epoch);
  // The epoch of the last ReportReplicasSynced; nullopt before the first.
  std::optional<Epoch> replicas_synced() const {
    const uint64_t v = replicas_synced_.load(std::memory_order_relaxed);
    return v == 0 ? std::nullopt : std::optional<Epoch>(Epoch(v - 1));
  }

  // Worker: tells the scheduler this worker is done and waits until the job ends.
  Status Finalize(std::chrono::milliseconds timeout);
  // Worker: tells the scheduler this worker cannot do its part (`why`), so that the scheduler
  // ends the job for every node with an error naming this worker and `why`; waits until the
  // job ends. Returns the job's error.
  Status FinalizeWithError(const Status& why, std::chrono::milliseconds timeout);
  // Waits until the job ends: OK when it ended normally, the error otherwise.
  Status WaitForShutdown(std::chrono::milliseconds timeout);

  // Ends the node's part in the job: waits and pending requests fail with kAborted.
  void Stop() { EndJob(Status::Aborted("the node was stopped")); }

  // OK while the node takes part in a live job; otherwise the sticky error.
  Status health() const;
  // The scheduler said this node was declared dead (it was silent for the heartbeat timeout)
  // and the job goes on without it.
  bool declared_dead() const;
  // kUnavailable naming the node when the scheduler declared it dead; OK otherwise.
  Status PeerStatus(NodeId id) const;

  // Messages dropped because their connection may not send them (see above), since Start.
  uint64_t refused_messages() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct ControlCall {
    bool done = false;
    transport::Message request;  // asked again of a resumed scheduler
    transport::Message reply;
  };
  // The outbound queue of the data requests to one peer, stamped and sent in one order by one
  // thread at a time (the one that found it idle).
  struct OutChannel {
    Mutex mu;
    CondVar cv;  // signalled when a request left the queue and when the sending thread stops
    std::deque<transport::Message> queue ABSL_GUARDED_BY(mu);
    bool sending ABSL_GUARDED_BY(mu) = false;
    uint32_t next_seq ABSL_GUARDED_BY(mu) = 1;
  };
  // What the receive thread hands to the data thread: a data message, or control work that must
  // keep its place among them (run with data_mu_ held).
  struct DataItem {
    explicit DataItem(transport::Message m) : msg(std::move(m)) {}
    explicit DataItem(std::function<void()> t) : task(std::move(t)) {}
    transport::Message msg;
    std::function<void()> task;
  };
  struct Parked {
    transport::Message msg;
    Clock::TimePoint since;
  };

  NodeRuntime(const NodeOptions& options, std::unique_ptr<transport::Transport> transport, Clock* clock);

  Status Register();
  // Adds the runtime's values to the scrapes of metrics_ (after Register: they name the node).
  void AddMetrics();
  Status ApplyView(const RegisterReply& reply);
  // Connects to the peers `view` adds and makes it the routing, unless it is not newer than the
  // current one. Serialised by view_mu_.
  Result<std::shared_ptr<const Routing>> InstallView(const ClusterView& view) ABSL_LOCKS_EXCLUDED(view_mu_);
  void HandleViewChange(const transport::Message& msg);
  OutChannel* Channel(NodeId peer) ABSL_LOCKS_EXCLUDED(channels_mu_);
  // Sends `channel`'s queue unless another thread does (see FlushData).
  void Drain(OutChannel* channel, std::vector<SendFailure>* failed);
  void ReceiveLoop(std::stop_token stop);
  // The data thread: hands queued data messages to the DataHandler in arrival order, and expires
  // parked requests.
  void DataLoop() ABSL_LOCKS_EXCLUDED(queue_mu_, data_mu_);
  // Queues an item for the data thread. Blocks while options.data_queue_limit items wait (the
  // peers' sends then back up, as they would on a node that reads slowly); when the data thread
  // takes none for heartbeat_timeout, fails the node and drops this and later items.
  void Enqueue(DataItem item) ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // Has the data thread look at its state (the handler attached, serving started).
  void WakeDataThread() ABSL_LOCKS_EXCLUDED(queue_mu_);
  void HeartbeatLoop(std::stop_token stop) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleControl(transport::Message&& msg);
  // Whether `msg` came over the scheduler's connection.
  bool FromScheduler(const transport::Message& msg) const { return msg.origin == scheduler_identity_; }
  // Whether data message `msg` came from a peer of the view that may send it: servers hear
  // workers and, for rows moving between them (kMigrateRows) or replicated (kReplicate), servers; workers hear servers.
  bool FromDataPeer(const transport::Message& msg) const;
  // Drops `msg`: counts it and logs it (the first ten, then every 1000th).
  void Refuse(const transport::Message& msg, const char* why);
  void HandleTableAnnounce(const transport::Message& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  // Hands `msg` to the handler, or keeps it until the handler is attached and serves.
  void DeliverData(transport::Message&& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  // Server: holds requests routed with a newer view than this node's (see "Routing"), and
  // delivers those the current view admits.
  void DeliverOrPark(transport::Message&& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  void ReleaseParked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  // Answers parked requests older than view_timeout with kUnavailable.
  void ExpireParked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  // Fails the node when a gap in a peer's requests is older than view_timeout. Receive thread.
  void CheckGaps();
  void FlushEarlyData() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_);
  void Fail(const Status& why);
  Status HealthLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJob(const Status& why) ABSL_LOCKS_EXCLUDED(mu_, data_mu_);
  Result<transport::Message> Call(transport::Message request, std::chrono::milliseconds timeout,
                                  const std::string& what) ABSL_LOCKS_EXCLUDED(mu_);
  transport::Message ToScheduler(transport::MessageType type) const;

  const NodeOptions options_;
  Clock* const clock_;  // the liveness times (see the top of this file)
  std::unique_ptr<transport::Transport> transport_;
  // What the scheduler's connection to this node presents (sent in the registration).
  const transport::ConnectionId scheduler_identity_ = transport::ConnectionId::Random();
  std::atomic<uint64_t> refused_{0};
  std::string address_;
  NodeId id_;
  Rank rank_;
  // The snapshot in force, swapped whole. A mutex held only to copy or swap the pointer, not
  // std::atomic<std::shared_ptr>: libstdc++ 12's lock bit in the pointer is invisible to
  // ThreadSanitizer, which then reports every swap as a race.
  mutable Mutex routing_mu_;
  std::shared_ptr<const Routing> routing_ ABSL_GUARDED_BY(routing_mu_);
  Mutex view_mu_;  // serialises InstallView
  // Nodes that earlier views listed and the current one does not (a drained server), by the
  // identity they presented: their replies still in flight (a redirect sent before they left)
  // are believed.
  mutable Mutex departed_mu_;
  absl::flat_hash_map<NodeId, transport::ConnectionId> departed_ ABSL_GUARDED_BY(departed_mu_);

  // Send failures of other callers' requests that SendData came across, for FlushData.
  Mutex unclaimed_mu_;
  std::vector<SendFailure> unclaimed_failures_ ABSL_GUARDED_BY(unclaimed_mu_);
  Mutex channels_mu_;
  absl::flat_hash_map<NodeId, std::unique_ptr<OutChannel>> out_channels_ ABSL_GUARDED_BY(channels_mu_);
  ChannelOrder in_order_;  // receive thread only

  mutable Mutex mu_;
  CondVar cv_;
  Status error_ ABSL_GUARDED_BY(mu_);  // sticky, set only by a failure
  bool job_ended_ ABSL_GUARDED_BY(mu_) = false;  // the job ended, normally or not
  bool declared_dead_ ABSL_GUARDED_BY(mu_) = false;  // see declared_dead()
  int64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<int64_t, ControlCall> calls_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TableId, transport::Bytes> tables_ ABSL_GUARDED_BY(mu_);  // spec bytes
  absl::flat_hash_map<NodeId, std::string> dead_nodes_ ABSL_GUARDED_BY(mu_);
  // The dead nodes again, for the transport's sending threads (which must not take mu_).
  Mutex given_up_mu_;
  absl::flat_hash_set<NodeId> given_up_ ABSL_GUARDED_BY(given_up_mu_);
  Clock::TimePoint last_ack_ ABSL_GUARDED_BY(mu_);
  // The scheduler's generation, from its heartbeat answers: nonzero when it keeps the job's
  // state in a store, so that a new one resumes the job if it dies (NodeOptions::store). The
  // node then waits up to scheduler_grace for a silent scheduler, and asks a new generation
  // again for what it asked the dead one (its unanswered calls, its Finalize).
  uint64_t scheduler_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool told_waiting_ ABSL_GUARDED_BY(mu_) = false;  // the wait for a silent scheduler was logged
  // A control request could not be sent to a scheduler with a store: everything unanswered is
  // sent again at the next heartbeat answer, whatever its generation.
  bool resend_needed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<transport::Message> finalize_ ABSL_GUARDED_BY(mu_);  // sent, the job not ended yet
  // Sends this worker's kFinalize (kept in finalize_); OK when sent, or when the scheduler keeps
  // the job's state in a store (the next one is sent it again), else the error for `what`.
  Status SendFinalize(transport::Message finalize, const char* what);
  // The answer to a Call (matched by request_id): wakes its caller, if it still waits.
  void CompleteCall(transport::Message&& reply);

  // The data queue, from the receive thread to the data thread.
  Mutex queue_mu_;
  CondVar queue_cv_;  // signalled when items arrive, when room frees up, and at stop
  std::deque<DataItem> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool stalled_ ABSL_GUARDED_BY(queue_mu_) = false;  // the data thread stopped taking items
  bool wake_ ABSL_GUARDED_BY(queue_mu_) = false;     // the data thread has work besides the queue
  std::atomic<uint64_t> data_progress_{0};            // items the data thread handled
  // The receive thread waits for room in the data queue: the scheduler's answers go unread, and
  // that wait, not the heartbeat timer, decides whether the node failed.
  std::atomic<bool> receive_blocked_{false};
  std::atomic<uint64_t> replicas_synced_{0};  // ReportReplicasSynced's epoch + 1; 0: never

  // Data dispatch: held by the data thread around each batch it hands over, and by
  // AttachDataHandler, StartServing and EndJob. Lock order: data_mu_, then mu_.
  Mutex data_mu_;
  std::shared_ptr<DataHandler> data_handler_ ABSL_GUARDED_BY(data_mu_);
  bool serving_ ABSL_GUARDED_BY(data_mu_) = false;
  std::vector<transport::Message> early_data_ ABSL_GUARDED_BY(data_mu_);
  std::deque<Parked> parked_ ABSL_GUARDED_BY(data_mu_);  // in arrival order
  absl::flat_hash_map<NodeId, size_t> parked_by_sender_ ABSL_GUARDED_BY(data_mu_);

  std::jthread receive_thread_;
  std::jthread data_thread_;
  std::jthread heartbeat_thread_;

  // Metrics (null: none). Heartbeat turns that found the scheduler's last answer older than two
  // heartbeat intervals.
  std::shared_ptr<metrics::NodeMetrics> metrics_;
  std::atomic<uint64_t> heartbeats_missed_{0};
  metrics::NodeMetrics::Scraped scraped_;  // the runtime's scraped values; reset first at destruction
};

}  // namespace pserver::cluster
