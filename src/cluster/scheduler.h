// Scheduler: the control plane of one job.
//
// It listens at a known address, waits for the configured number of servers and workers to
// register, assigns node ids and ranks, places the servers on the ring (PartitionPlacement: it
// owns the placement) and sends every node the cluster view. While the job runs it answers
// heartbeats and declares a node dead when it stays silent longer than heartbeat_timeout,
// releases barriers, keeps the table registry (name -> id and spec), and ends the job once every
// worker has finalized. A dead server that owns keys is replaced by the next server of each of
// its replica chains when the job keeps replicas (NodeOptions::replicas >= 2, docs/durability.md)
// and its replicas were complete; otherwise (no replication, or a second death before the
// chains were restored) its death aborts the job: every node is told why, and Run returns the
// error.
//
// Membership changes (docs/elasticity.md), one at a time, in the order asked:
//   - a server registering after formation joins: it gets a rank never used before, the
//     tables, and the partitions the placement gives it, which move from their owners with
//     their rows in phases (MigratePhase): copy while the job goes on, switch (the donors take
//     the new view and redirect), final (the rows changed meanwhile), commit (the new view for
//     everyone; the donors erase what they handed over). A joiner that dies before the commit
//     cancels the change: the donors kept every row and own them again;
//   - a drain (kAdmin from `pserver drain`, or the server asking for itself) moves the server's
//     partitions to the least loaded others in the same phases, then tells it to exit. The
//     last server is never drained (its keys would have nowhere to go);
//   - a worker registering after formation joins with a new rank (servers admit it to their
//     stale-synchronous clocks at their current clock); a worker that finalizes leaves:
//     barriers no longer wait for it and servers drop it from their clocks (kNodeLeft).
// `pserver status` (kAdmin) is answered with the view, the members and the placement.
//
// Who is believed: a registration from any connection that presents a pserver identity (the
// transport is not authenticated yet; see docs/wire_format.md), and every later message claiming
// a node only from the connection that registered it (NodeInfo::identity). Anything else is
// dropped, counted (refused_messages()) and logged (rate-limited).
//
// Thread safety: Start and address() from any thread; Run from one thread, and all the work
// happens on it. Stop() is thread-safe and makes Run return kAborted.
#pragma once

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "base/metrics.h"
#include "base/mutex.h"
#include "cluster/checkpoint_manifest.h"
#include "cluster/control_messages.h"
#include "cluster/node_runtime.h"
#include "cluster/partition_placement.h"
#include "cluster/store.h"
#include "pserver/options.h"
#include "transport/transport.h"

namespace pserver::cluster {

class Scheduler {
 public:
  // Listens at options.scheduler_address. kUnavailable if the address cannot be bound.
  // `metrics`: where the scheduler's metrics go (null: none; docs/metrics.md).
  static Result<std::unique_ptr<Scheduler>> Start(const NodeOptions& options,
                                                  std::unique_ptr<transport::Transport> transport,
                                                  std::shared_ptr<metrics::NodeMetrics> metrics = nullptr);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // The address nodes should register at.
  const std::string& address() const { return address_; }

  // Runs the job to its end. OK when every worker finalized; kUnavailable when a server died,
  // or when a worker died before it finalized -- the others go on without it to the end, but
  // its share of the work is missing, so the job ends with an error naming it (every node's
  // Run and Finalize return it); kDeadlineExceeded when the cluster did not form within
  // register_timeout; kAborted after Stop().
  Status Run();

  // Makes Run return soon; thread-safe.
  void Stop() { transport_->Shutdown(); }

  // View changes by hand, without moving rows (tests of routing: a harness that moves rows
  // itself). Both are thread-safe: they run on Run's thread (at its next turn, within one
  // heartbeat interval) and wait for it up to `timeout` (kDeadlineExceeded), or fail with
  // kAborted when the job ended first.
  //
  // Makes the placement of the servers `ring` (ranks) the ring of a new view, whose epoch is one
  // after the current one, and returns that epoch: the servers the current placement lacks join
  // it and those `ring` lacks leave it, in ascending rank order (PartitionPlacement). Sends it to
  // no one: SendView does. kInvalidArgument if `ring` is empty, repeats a rank or names one that
  // is not a live server; kUnavailable while a membership change runs.
  // `resync`: the view's ClusterView::resync (every owner sends its replicas all of its rows).
  Result<Epoch> NewView(std::vector<uint32_t> ring, std::chrono::milliseconds timeout, bool resync = false);
  // Sends the current view to `nodes` (every live server and worker when empty) and returns once
  // each live one of them routes by it (a node declared dead meanwhile is not waited for).
  // kDeadlineExceeded naming the nodes that did not confirm.
  Status SendView(std::vector<NodeId> nodes, std::chrono::milliseconds timeout);

  // Drains server `rank` (as `pserver drain` does) and returns once it has left: its keys moved
  // and it was told to exit. Thread-safe. kInvalidArgument for a rank that is no live server and
  // for the last server; kDeadlineExceeded after `timeout`.
  Status Drain(uint32_t rank, std::chrono::milliseconds timeout);
  // Checkpoints the job into `dir` (as `pserver checkpoint` does; docs/durability.md) and
  // returns the one-line summary once the manifest is written. Thread-safe. The checkpoint's
  // error if it failed; kDeadlineExceeded after `timeout` (it may still complete).
  Result<std::string> Checkpoint(const std::string& dir, std::chrono::milliseconds timeout);
  // What `pserver status` prints. Thread-safe.
  Result<std::string> StatusText(std::chrono::milliseconds timeout);
  // Membership changes completed since Start. Thread-safe.
  uint64_t changes_done() const { return changes_done_.load(); }
  // What each completed change moved and how long it took.
  struct ChangeReport {
    bool join = true;
    uint32_t server = 0;              // its rank
    uint32_t servers_after = 0;       // servers owning keys once it was done
    MigrateReport copied, changed;    // rows copied while serving; rows sent again after the switch
    double total_ms = 0, from_switch_ms = 0;
  };
  // Thread-safe; waits for Run's thread up to `timeout`.
  Result<std::vector<ChangeReport>> ChangeReports(std::chrono::milliseconds timeout);

  // How long a member's connection may stay broken before it is declared dead (one whose
  // reconnection is refused, a process that died, is declared at once); see CheckLiveness.
  static constexpr std::chrono::milliseconds kReconnectGrace{300};
  // The longest the scheduler's loop waits for a message before it looks at its members again.
  static constexpr std::chrono::milliseconds kTurn{20};
  // How long an admin answer the asker's connection does not take at once is tried again.
  static constexpr std::chrono::milliseconds kAnswerPatience{2000};

  // Messages dropped because their connection may not send them. Call from Run's thread or
  // after Run returned.
  uint64_t refused_messages() const { return refused_; }

 private:
  struct Member {
    NodeInfo info;
    int64_t rank_hint = -1;
    std::chrono::steady_clock::time_point last_seen;
    bool finalized = false;
    bool shutdown_acked = false;
    bool dead = false;
    bool joining = false;   // a server admitted late whose keys have not moved to it yet
    bool draining = false;  // a server whose keys are moving away
    bool left = false;      // a server drained and told to exit: no part of the job any more
    // The identity the node asked the scheduler to present on its connection back
    // (RegisterRequest): kept so that a resumed scheduler can connect back too.
    transport::ConnectionId scheduler_identity;
    // A server's replicas were complete at this epoch (its heartbeats say so, docs/durability.md):
    // every row it owns was on every server of its chains, so those can take over if it dies
    // (while the chains stay as they were: synced >= ring_epoch_).
    Epoch synced;
  };
  // A membership change waiting for its turn or running.
  struct Change {
    enum Kind { kJoin, kDrain } kind = kJoin;
    NodeId server;
    // Told the outcome (OK once done) when the change ends; may be empty.
    std::function<void(const Status&)> answer;
  };
  // The change running: its placements, the transfers between them, and the phase.
  struct Migration {
    explicit Migration(PartitionPlacement placement) : after(std::move(placement)) {}
    Change change;
    int64_t id = 0;
    PartitionPlacement after;
    std::vector<Transfer> transfers;
    enum Step { kTables, kCopy, kSwitch, kFinal, kCommitting, kLeaving, kDeparting } step = kTables;
    absl::flat_hash_set<NodeId> donors;
    absl::flat_hash_set<NodeId> awaiting;    // donors (or the joiner, for kTables) yet to answer
    absl::flat_hash_map<int64_t, TableId> table_announces;  // kTables: announce id -> table
    Epoch switch_epoch;  // the donors' view from kSwitch on (kLeaving: the view without the leaver)
    std::chrono::steady_clock::time_point started, switched;
    std::chrono::steady_clock::time_point step_started;  // see CheckMigrationDeadline
    MigrateReport copied, finals;
  };
  // A registration that came while the donors of a change route by a view the others must not
  // see yet (see AdmitLate).
  struct HeldRegistration {
    RegisterRequest request;
    NodeId id;
    transport::ConnectionId origin;
  };
  struct BarrierState {
    absl::flat_hash_map<NodeId, int64_t> arrived;  // node -> its call id
  };
  // A declaration waiting for the servers' answers to the announcement of a new table.
  struct PendingTable {
    TableId id;
    TableDeclaration declaration;
    std::vector<transport::Header> declarers;   // the requests to answer (sender, request_id)
    absl::flat_hash_set<NodeId> awaiting;       // live servers that have not answered yet
  };

  // A SendView waiting for confirmations.
  struct ViewDelivery {
    Epoch epoch;
    absl::flat_hash_set<NodeId> awaiting;
    std::shared_ptr<std::promise<Status>> done;
  };

  Scheduler(const NodeOptions& options, std::unique_ptr<transport::Transport> transport)
      : options_(options), transport_(std::move(transport)) {}

  // Runs `command` on Run's thread at its next turn and waits for the value it sets.
  template <typename T>
  Result<T> OnRunThread(std::function<void(std::promise<Result<T>>&)> command, std::chrono::milliseconds timeout,
                        const char* what);
  void RunCommands();
  void HandleViewChangeReply(const transport::Message& msg);
  void CheckViewDeliveries();

  void Handle(transport::Message&& msg);
  void HandleRegister(transport::Message&& msg);
  void HandleBarrier(const transport::Message& msg);
  void HandleDeclareTable(const transport::Message& msg);
  void HandleTableAnnounceReply(const transport::Message& msg);
  void AnnounceTable(PendingTable& pending);
  void FailPendingTable(const std::string& name, const Status& why);
  void CompletePendingTable(const std::string& name);
  void HandleFinalize(const transport::Message& msg);
  void FormCluster();

  // Membership (scheduler_membership.cc).
  // A node registering after formation (`id` connected already).
  void AdmitLate(const RegisterRequest& req, NodeId id, const transport::ConnectionId& origin);
  void QueueChange(Change change);
  // Starts the next queued change unless one runs, a checkpoint runs, or a live server's
  // connection is broken (it may have died: it is judged first). Called every turn too.
  void StartNextChange();
  void SendMigrate(const Migration& m, NodeId donor, MigratePhase phase);
  void HandleMigrateReply(const transport::Message& msg);
  // The running change's next step, once everyone it waits for answered.
  void AdvanceMigration();
  void FinishMigration(const Status& outcome);
  // The running change cannot go on (`why`): donors forget it and own their keys again.
  void CancelMigration(const Status& why);
  // Sends kCancel to the change's live donors.
  void CancelDonors(const Migration& m);
  // A server died while the change ran, before its switch (no node routes by the change's
  // placement yet): the donors stop, and the change goes back to the front of the queue, to
  // start again from the placement the failover makes. Announces no view.
  void CallOffChange(const Status& why);
  // Server members_[index] died: cancels the change it was joining by, or aborts the job if it
  // held keys.
  void ServerDied(size_t index, const std::string& reason);
  // With replication: the next server of each chain of the dead server members_[index] takes
  // its partitions (a new view; no row moves). An error, and nothing changed, when that cannot
  // be done without losing rows.
  Status FailOver(size_t index, const std::string& reason);
  // Admits the registrations held during a change's switch (Run's loop, once it is done).
  void AdmitHeldRegistrations();
  // A step that waits longer than its limit for answers (a lost message, a node that stopped
  // reading) does not hang the changes behind it: before the commit the change is cancelled
  // (every row is still where it was); from the commit on it is finished, with an error logged.
  void CheckMigrationDeadline();
  static constexpr std::chrono::minutes kMoveStepLimit{10};      // copy and final: they move rows
  static constexpr std::chrono::seconds kControlStepLimit{60};  // the other steps
  void HandleAdmin(const transport::Message& msg);
  // Sends the admin answers that could not go at once; gives up on those past their time.
  void RetryUnsentAnswers();
  // A status: asks every live server what it holds (kAdmin), then answers with DescribeStatus
  // once all did, or after a deadline (those that did not are shown so).
  // `json`: answer with StatusDocument as JSON (AdminOp::kStatusJson), else as text.
  void StartStatus(bool json, std::function<void(const std::string&)> answer);
  void HandleStatsReply(const transport::Message& msg);
  void CheckStatuses();
  // Checkpoints (scheduler_checkpoint.cc; docs/durability.md): one at a time, never while a
  // membership change runs (and no change starts while one runs). Each asks every live server
  // to write its file into a new directory of `dir`, then writes the manifest; `answer` gets the
  // outcome and a one-line summary.
  void QueueCheckpoint(std::string dir, std::function<void(const Status&, const std::string&)> answer);
  void StartNextCheckpoint();
  void HandleCheckpointReply(const transport::Message& msg);
  // Ends the running checkpoint when every server answered (writing the manifest), one died, or
  // it ran past its limit; queues a periodic one when its time came (NodeOptions).
  void CheckCheckpoints();
  void FinishCheckpoint(const Status& outcome);
  static constexpr std::chrono::minutes kCheckpointLimit{30};
  // The job's state for `pserver status --json` (fields: docs/elasticity.md, section 5), and
  // the text `pserver status` prints of it.
  nlohmann::json StatusDocument(const absl::flat_hash_map<NodeId, std::vector<TableStats>>& stats) const;
  static std::string StatusTextOf(const nlohmann::json& doc);
  // Sends the current view to the live members that `to` chooses (no confirmation awaited).
  void AnnounceView(const std::function<bool(const Member&)>& to);
  // view_ with `ring` and the nodes of the live members that are not left, at the next epoch.
  void NextView(std::vector<RingSegment> ring);
  Member* FindServer(uint32_t rank);
  Member* FindMember(NodeId id);
  // Credits every member with the part of one loop turn (`turn`) that the scheduler itself was
  // stalled, beyond the wait for a message (see the definition).
  void CreditOwnStall(std::chrono::steady_clock::duration turn);
  // Declares dead the members silent for longer than heartbeat_timeout, and those in `down`:
  // their connection broke and was refused when reconnecting, or did not come back within
  // kReconnectGrace (Transport::PeersDown: a process that died is seen at once, not a heartbeat
  // timeout later).
  void CheckLiveness(const std::vector<NodeId>& down);
  void WorkerDied(const Member& m);
  // Live worker `taker` does the work of worker `lost`, which died before it finished
  // (kTakeOver): the job may end well without it. kInvalidArgument if `taker` is no live worker
  // or `lost` no worker that died before finishing.
  Status TakeOver(NodeId taker, NodeId lost);
  void EndIfWorkersDone();
  void TryReleaseBarrier(BarrierGroup group);
  void Abort(const Status& why);
  Status FinishShutdown();
  bool InGroup(const Member& m, BarrierGroup group) const;
  void Reply(const transport::Message& request, transport::MessageType type, transport::Message reply);
  void ReplyError(const transport::Message& request, transport::MessageType type, const Status& error);
  void ReplyTo(const transport::Header& request, transport::MessageType type, transport::Message reply);
  void Broadcast(transport::Message msg);
  void Refuse(const transport::Message& msg, const char* why);

  // The store (scheduler_state.cc). Persist writes the job's state when it changed (`ended`:
  // the job is over, with outcome_); it ends the job if the store cannot take it. Resume loads
  // a job's state read from the store, for Start.
  void Persist(bool ended = false);
  nlohmann::json StateDocument(bool ended) const;
  // Opens options_.store and reads the job recorded there: its state if it has not ended (to
  // Resume), nullopt if there is none or it ended (a new job then replaces it).
  Status OpenStore(std::optional<nlohmann::json>* running);
  Status Resume(const nlohmann::json& state);
  std::string Describe(NodeId id) const;

  const NodeOptions options_;
  std::unique_ptr<transport::Transport> transport_;
  std::string address_;

  bool formed_ = false;
  Status outcome_;    // set when the job ends badly
  bool ended_ = false;
  uint32_t next_id_ = 1;
  std::vector<Member> members_;  // in registration order; index = position, not id
  absl::flat_hash_map<NodeId, size_t> member_index_;
  ClusterView view_;
  // The first epoch of view_'s ring: every view since has the same owners and so the same chains
  // (a view that only adds a joiner or drops a dead worker keeps them). A server that reported
  // its replicas complete at this epoch or later can be failed over from.
  Epoch ring_epoch_;
  BarrierState barriers_[3];
  absl::flat_hash_map<std::string, std::pair<TableId, TableDeclaration>> tables_;  // declared and accepted
  absl::flat_hash_map<std::string, PendingTable> pending_tables_;          // being announced
  uint32_t next_table_ = 1;
  int64_t next_announce_ = 1;  // request_id of the next announcement
  uint64_t refused_ = 0;
  // Workers declared dead before they finalized: who, why, and the live worker that took over
  // their work (Node::TakeOver), if one did. The job ends well only if every one was taken over.
  struct LostWorker {
    NodeId id;
    std::string description;
    NodeId taken_over_by;  // 0: nobody
  };
  std::vector<LostWorker> lost_workers_;
  std::vector<std::string> failovers_;     // servers failed over from, when and why
  std::vector<ViewDelivery> view_deliveries_;
  std::optional<PartitionPlacement> placement_;  // set at formation
  uint32_t next_rank_[2] = {0, 0};               // late joiners' ranks: servers, workers
  std::deque<Change> changes_;                   // waiting for their turn
  std::optional<Migration> migration_;           // running
  std::vector<HeldRegistration> held_registrations_;
  int64_t next_migration_ = 1;
  NodeId next_tool_id_{0x80000000u};             // connections back to tools (kAdmin)
  // Admin answers not sent yet (the asker's connection not up), tried again every turn until
  // `give_up`: the scheduler never blocks on a tool that may have gone away.
  struct UnsentAnswer {
    transport::Message reply;
    std::chrono::steady_clock::time_point give_up;
    bool tool = false;  // its connection goes once answered (or given up)
  };
  std::vector<UnsentAnswer> unsent_answers_;
  std::atomic<uint64_t> changes_done_{0};
  std::vector<ChangeReport> reports_;  // Run's thread

  // The job's state in a Store (NodeOptions::store; scheduler_state.cc, docs/durability.md
  // section 6): written after every change of it, and before any message that reveals it (a
  // view, a table's id, a barrier's release, the job's end), so that a scheduler started again
  // on the store resumes the job where the nodes are.
  std::unique_ptr<Store> store_;
  // What the store holds (as written by this scheduler or read at Start): every write is a
  // compare-and-swap over it, so that two schedulers never both write one job.
  std::optional<std::string> persisted_;
  // Counts the schedulers of the job (1 for the first, one more at each resume); 0 without a
  // store. Heartbeat answers carry it, so that nodes see a resumed scheduler and send it again
  // what they asked the dead one (NodeRuntime).
  uint64_t generation_ = 0;
  // The calls of the last release of each barrier group (node -> call id): a node that asks
  // again for a barrier a dead scheduler had released is released at once.
  absl::flat_hash_map<NodeId, int64_t> last_release_[3];
  // Messages of a resumed scheduler for nodes whose connection was not up when they were sent:
  // the current view for every node (the dead scheduler may have died before sending it), the
  // release of a barrier the dead one had released. Sent without blocking the loop, again at
  // every message heard from the node, until they leave.
  absl::flat_hash_map<NodeId, std::vector<transport::Message>> outbox_;
  void SendWhenUp(transport::Message msg);
  void FlushOutbox(NodeId node);
  struct PendingStatus {
    int64_t id = 0;
    absl::flat_hash_set<NodeId> awaiting;
    absl::flat_hash_map<NodeId, std::vector<TableStats>> stats;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(const std::string&)> answer;
    bool json = false;
  };
  std::vector<PendingStatus> pending_statuses_;
  std::string DescribeStatus(const PendingStatus& p) const;
  int64_t next_status_ = 1;  // request ids of status and checkpoint orders to servers
  struct CheckpointRequest {
    std::string dir;
    std::function<void(const Status&, const std::string&)> answer;
  };
  struct RunningCheckpoint {
    CheckpointRequest request;
    int64_t id = 0;
    std::string directory;  // dir/ckpt-N
    CheckpointManifest manifest;
    absl::flat_hash_map<NodeId, std::string> files;  // server -> its file's name
    absl::flat_hash_set<NodeId> awaiting;
    std::chrono::steady_clock::time_point started;
  };
  std::deque<CheckpointRequest> checkpoint_requests_;
  std::optional<RunningCheckpoint> checkpoint_;
  absl::flat_hash_map<std::string, uint64_t> last_checkpoint_;  // per directory: the number last begun
  std::chrono::steady_clock::time_point next_periodic_checkpoint_{};

  Mutex commands_mu_;
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(commands_mu_);  // for Run's thread

  // Metrics (null: none): what the run thread last published (PublishMetrics, each turn), read
  // by scrapes on the endpoint's thread.
  struct MetricsSnapshot {
    Epoch epoch;
    std::vector<metrics::Sample> members;         // by role and state
    std::vector<metrics::Sample> heartbeat_ages;  // seconds, by live member
    uint64_t declared_dead = 0;
  };
  static constexpr std::chrono::milliseconds kMetricsPeriod{200};
  using MemberCounts = std::array<std::array<uint32_t, 6>, 2>;
  void PublishMetrics();  // each turn
  std::shared_ptr<metrics::NodeMetrics> metrics_;
  MemberCounts published_counts_{};
  Epoch published_epoch_;
  std::chrono::steady_clock::time_point published_at_{};
  Mutex metrics_mu_;
  MetricsSnapshot published_ ABSL_GUARDED_BY(metrics_mu_);
  metrics::NodeMetrics::Scraped scraped_;  // last: gone before what it reads
};

template <typename T>
inline Result<T> Scheduler::OnRunThread(std::function<void(std::promise<Result<T>>&)> command,
                                 std::chrono::milliseconds timeout, const char* what) {
  auto done = std::make_shared<std::promise<Result<T>>>();
  std::future<Result<T>> result = done->get_future();
  {
    MutexLock lock(&commands_mu_);
    commands_.push_back([command = std::move(command), done] { command(*done); });
  }
  if (result.wait_for(timeout) != std::future_status::ready) {
    return Status::DeadlineExceeded(fmt::format("scheduler: {} did not complete within {} ms", what, timeout.count()));
  }
  return result.get();
}

}  // namespace pserver::cluster
