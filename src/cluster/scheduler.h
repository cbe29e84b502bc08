// Scheduler: the control plane of one job.
//
// It listens at a known address, waits for the configured number of servers and workers to
// register, assigns node ids and ranks, and sends every node the cluster view (from which each
// node builds the same consistent-hashing ring). While the job runs it answers heartbeats and
// declares a node dead when it stays silent longer than heartbeat_timeout, releases barriers,
// keeps the table registry (name -> id and spec), and ends the job once every worker has
// finalized. Without replication (a later layer) a dead node cannot be replaced, so a death
// aborts the job: every node is told why, and Run returns the error.
//
// Who is believed: a registration from any connection that presents a pserver identity (the
// transport is not authenticated yet; see docs/wire_format.md), and every later message claiming
// a node only from the connection that registered it (NodeInfo::identity). Anything else is
// dropped, counted (refused_messages()) and logged (rate-limited).
//
// Thread safety: Start and address() from any thread; Run from one thread, and all the work
// happens on it. Stop() is thread-safe and makes Run return kAborted.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "base/mutex.h"
#include "cluster/control_messages.h"
#include "cluster/node_runtime.h"
#include "pserver/options.h"
#include "transport/transport.h"

namespace pserver::cluster {

class Scheduler {
 public:
  // Listens at options.scheduler_address. kUnavailable if the address cannot be bound.
  static Result<std::unique_ptr<Scheduler>> Start(const NodeOptions& options,
                                                  std::unique_ptr<transport::Transport> transport);
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

  // View changes, for whoever moves key ranges between servers (today the tests' harness; the
  // scheduler's own join and leave later). Both are thread-safe: they run on Run's thread (at its
  // next turn, within one heartbeat interval) and wait for it up to `timeout`
  // (kDeadlineExceeded), or fail with kAborted when the job ended first.
  //
  // Makes `ring` (server ranks) the ring of a new view, whose epoch is one after the current one,
  // and returns that epoch. Sends it to no one: SendView does, in the order the move needs (e.g.
  // first to the servers that lose keys, so that they stop applying them, then -- after their rows
  // moved -- to everyone). kInvalidArgument if `ring` is empty, repeats a rank or names one that
  // is not a live server.
  Result<Epoch> NewView(std::vector<uint32_t> ring, std::chrono::milliseconds timeout);
  // Sends the current view to `nodes` (every live server and worker when empty) and returns once
  // each live one of them routes by it (a node declared dead meanwhile is not waited for).
  // kDeadlineExceeded naming the nodes that did not confirm.
  Status SendView(std::vector<NodeId> nodes, std::chrono::milliseconds timeout);

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
  // Credits every member with the part of one loop turn (`turn`) that the scheduler itself was
  // stalled, beyond the wait for a message (see the definition).
  void CreditOwnStall(std::chrono::steady_clock::duration turn);
  void CheckLiveness();
  void WorkerDied(const Member& m);
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
  BarrierState barriers_[3];
  absl::flat_hash_map<std::string, std::pair<TableId, TableDeclaration>> tables_;  // declared and accepted
  absl::flat_hash_map<std::string, PendingTable> pending_tables_;          // being announced
  uint32_t next_table_ = 1;
  int64_t next_announce_ = 1;  // request_id of the next announcement
  uint64_t refused_ = 0;
  std::vector<std::string> lost_workers_;  // workers declared dead before they finalized, and why
  std::vector<ViewDelivery> view_deliveries_;

  Mutex commands_mu_;
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(commands_mu_);  // for Run's thread
};

}  // namespace pserver::cluster
