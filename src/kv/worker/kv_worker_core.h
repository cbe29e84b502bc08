// KVWorkerCore: the type-independent engine behind KVWorker<T>, one per worker node.
//
// Submit validates a request, slices it by the ring (kv/worker/slicer.h), records it under a
// new timestamp and -- once its dependencies allow (see "Consistency" in pserver/kv_worker.h)
// -- sends one message per server. Tasks start in timestamp order: their messages and clock
// ticks are queued for sending (cluster::NodeRuntime::QueueData) under send_mu_, and sent after
// it is released, so no lock is held across a send; and a task that may not start yet is held, with
// everything after it, in held_ until a completion releases it (on whichever thread completed
// the blocking task, usually the node's data thread). So every server sees this worker's
// requests in timestamp order, which the servers' vector clocks rely on. Replies arrive on the
// node's data thread (OnData); when the last part of a request is in, pulled values are assembled in key order,
// the result sink and the callback run, and waiters are woken.
//
// Routing: each request is sliced by one routing snapshot (cluster/routing.h) and each part
// carries that snapshot's epoch and its index in the request (header.part; replies echo it). A
// server that does not own every key of a part under its (newer) view applies nothing of it and
// answers with a redirect carrying its view: the worker adopts that view, re-slices the part's
// keys by it and sends them again as new parts of the same request (kFlagResend), so a request
// completes across any number of view changes.
//
// Failover: with replication (docs/durability.md) a server's death fails none of the parts sent
// to it. They wait for the view in which the next servers of its chains own its keys, and go out
// again re-sliced by it, marked kFlagFailover with the dead server as their origin (the new owner
// applies such a part only if its replica of the dead server's pushes lacks it); parts sent to a
// dead server after that view are re-sliced as they fail or as it comes.
//
// Bounded state: a request is forgotten as soon as it completes; only failed requests keep
// their status until Wait collects it (at most kMaxRememberedErrors, oldest dropped first).
//
// The class lives in three files, by job: kv_worker_requests.cc (checking, slicing and
// building requests, re-slicing redirected parts), kv_worker_gate.cc (the consistency gate:
// which task may start, sending in timestamp order, clock ticks) and kv_worker_replies.cc
// (taking replies, assembling pulled values, finishing and waiting).
//
// Thread safety: thread-safe. Lock order: cluster::NodeRuntime's data lock, then send_mu_,
// then mu_. Callbacks run without any of this class's locks held.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "cluster/node_runtime.h"
#include "kv/kv_metrics.h"
#include "kv/table_catalog.h"
#include "kv/worker/slicer.h"
#include "kv/worker/unfinished_tasks.h"
#include "pserver/kv_worker.h"
#include "transport/message.h"

namespace pserver {

// One request as the typed facade hands it to the core.
struct KVWorkerBase::Call {
  transport::MessageType type = transport::MessageType::kPush;
  TableId table;
  ValueType value_type = ValueType::kFloat32;
  SharedArray<Key> keys;
  transport::Bytes vals;           // pushed values
  SharedArray<int32_t> lens;       // pushed lengths (variable-length tables)
  bool has_lens = false;           // the caller passed a lengths array
  transport::Bytes out_vals;       // the caller's buffer for pulled values; empty: allocate/alias
  // Receives the pulled values and lengths before the callback runs (the node's data thread).
  std::function<void(transport::Bytes vals, SharedArray<int32_t> lens)> on_values;
  Callback callback;
  std::vector<Timestamp> after;                // tasks to finish first
  std::optional<int64_t> max_delay;            // overrides the table's bound
  std::vector<Timestamp>* includes = nullptr;  // pulls: the vector clock of the values
  bool unrounded = false;                      // pushes: past the table's lossy filters (PushHeld)
  bool exact = false;                          // pulls: replies past them (kFlagExact)
};

namespace kv {

class KVWorkerCore final : public cluster::DataHandler {
 public:
  static constexpr size_t kMaxRememberedErrors = 1 << 16;
  // Rounds of yielding (each up to 64 yields) that Wait spends before it sleeps.
  static constexpr int kWaitSpins = 2;

  // `runtime` is borrowed and outlives the core (it co-owns it).
  explicit KVWorkerCore(cluster::NodeRuntime* runtime)
      : runtime_(runtime),
        catalog_(runtime),
        metrics_(runtime->metrics() ? std::make_unique<KvMetrics>(runtime->metrics(), Role::kWorker) : nullptr) {}

  Result<Timestamp> Submit(KVWorkerBase::Call&& call);
  // Pushes what the table's lossy filters kept back (KVWorkerBase::PushHeld); `call` carries
  // the table and the request options.
  Result<Timestamp> PushHeld(KVWorkerBase::Call&& call);
  Status Wait(Timestamp ts, std::chrono::milliseconds timeout);
  Status SetMaxDelay(TableId table, int64_t tau);
  Status SetStaleness(TableId table, int64_t staleness);
  Result<uint64_t> Clock() { return ClockTo(std::nullopt); }
  // To `clock` (>= the current one), or by one.
  Result<uint64_t> ClockTo(std::optional<uint64_t> clock);
  uint64_t clock() const;
  Result<uint32_t> ServerOf(TableId table, Key key) const;

  void OnData(transport::Message&& msg) override;
  void OnNodeFailed(const cluster::NodeFailure& failure) override;
  void OnNodeLeft(const cluster::NodeFailure& who) override;
  void OnViewChanged(const std::shared_ptr<const cluster::Routing>& routing) override;
  void OnShutdown(const Status& why) override;

 private:
  struct Part {
    uint32_t server = 0;
    NodeId node;
    IndexRuns runs;
    uint32_t num_keys = 0;
    Epoch epoch;            // of the routing the part was sliced by
    bool answered = false;
    bool rerouted = false;  // redirected: its keys went out again as later parts (no reply)
    // A part sent again because the server it went to died (kFlagFailover): that server, the
    // first one, kept through later redirects. 0 otherwise.
    NodeId origin;
    // Its send failed before any of it left (the server was declared dead): no server saw it,
    // so it goes out again as a plain resend, not as a failover from that server.
    bool undelivered = false;
    transport::Message reply;
  };
  struct Pending {
    KVWorkerBase::Call call;
    std::shared_ptr<const TableSpec> spec;  // never null
    absl::InlinedVector<Part, 1> parts;       // most requests go to one server
    std::vector<uint32_t> order;              // fixed-width hashed request over several servers:
                                              // key indices grouped by part (SliceKeys); else empty
    std::vector<transport::Message> unsent;  // by part, while the task is held
    int64_t max_delay = -1;
    uint64_t clock = 0;  // the header fields every part carries
    uint64_t aux = 0;
    size_t unanswered = 0;
    Status status;
    KvMetrics::Table* metrics = nullptr;  // with metrics: the table's, and when it was submitted
    std::chrono::steady_clock::time_point submitted;
  };
  // A held item: a task, or (ts == 0) a clock tick's messages.
  struct Held {
    int64_t ts = 0;
    std::vector<transport::Message> tick;
  };
  struct TableConsistency {
    int64_t max_delay = -1;
    int64_t staleness = -1;
  };
  using Unsent = absl::InlinedVector<std::pair<int64_t, transport::Message>, 1>;  // (ts or 0, message)

  Status Validate(const KVWorkerBase::Call& call, const TableSpec& spec) const;
  // `offsets`: each key's first value for a variable-length push (see Offsets), else empty.
  // `keys` and `vals`: the part's frames when the request was split by order (p.order), else
  // empty (gathered here from the part's runs).
  transport::Message BuildMessage(const Pending& p, const Part& part, int64_t ts,
                                  const std::vector<uint64_t>& offsets, transport::Bytes keys,
                                  transport::Bytes vals) const;
  // Records a part's outcome; completes the request when it was the last. REQUIRES: mu_ held
  // by `lock`, which may be released and re-acquired.
  void Answer(std::unique_lock<std::mutex>& lock, int64_t ts, size_t part, transport::Message* reply,
              const Status& error);
  // A redirect of part `index` of request `ts` carrying a server's view: adopts the view and
  // re-slices the part's keys by it into new parts, returned for sending; or answers the part
  // with an error when the redirect cannot be followed. REQUIRES: mu_ held by `lock`, which
  // may be released and re-acquired.
  Unsent Reroute(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index, const transport::Message& redirect);
  // Re-slices part `index` of request `ts` by `routing` into new parts, returned for sending
  // (marked kFlagResend, and kFlagFailover with their origin when the part had one, or when
  // `failover_from` is set and the part was not `undelivered`). REQUIRES: mu_ held by `lock`,
  // which may be released and re-acquired.
  Unsent Reslice(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index, const cluster::Routing& routing,
                 NodeId from, NodeId failover_from);
  // With replication: the parts sent to servers that died, re-sliced by `routing` once it no
  // longer places keys on them (the failover view), for sending. Nothing while a SendAll runs
  // (sends_in_progress_): a send to the dead server it holds may yet fail, making its part a
  // plain resend rather than a failover; the last SendAll to finish calls this again
  // (resend_wanted_). REQUIRES: mu_ held by `lock`.
  Unsent ResendOrphans(std::unique_lock<std::mutex>& lock, const cluster::Routing& routing);
  // Finishes a request (result, callback, bookkeeping), then starts what it released.
  void Complete(int64_t ts, Pending&& p);
  // Returns whether tasks are held (so that the caller should try to start them).
  bool Finish(int64_t ts, Pending&& p);
  // Whether task `ts` may start now. REQUIRES: mu_ held.
  bool Ready(int64_t ts, const Pending& p) const;
  // Starts held tasks from the front of held_ while they are ready.
  void StartReady();
  // Queues `msgs` in order on the runtime's outbound queues, releases send_mu_, then sends them
  // (FlushData) and answers the parts whose send failed. REQUIRES: send_mu_ held by `send_lock`.
  void SendAll(std::unique_lock<std::mutex>& send_lock, Unsent msgs);
  // Runs the table's filters on a data request about to be sent (kv/filter/filter.h); one they
  // cannot run on goes as it is, with a warning.
  void Filter(transport::Message& m) const;
  // Runs the table's lossy filters on a push before it is sliced (FilterChain::Round):
  // `call` then holds the keys and values to send.
  Status RoundPush(KVWorkerBase::Call& call, const TableSpec& spec) const;
  // The request options' checks: the delay bound, and dependencies this worker issued.
  Status CheckOptions(const KVWorkerBase::Call& call) const;  // takes mu_
  std::vector<transport::Message> TickMessages(uint64_t clock) const;
  void MergeIncludes(const Pending& p) const;
  // The keys of part `index` of `p`, in the order its message sent them.
  static SharedArray<Key> PartKeys(const Pending& p, size_t index);
  Status Assemble(Pending& p, transport::Bytes* vals, SharedArray<int32_t>* lens) const;
  void Remember(int64_t ts, const Status& s);  // REQUIRES: mu_ held
  void FailAll(const Status& why, const NodeId* only);

  cluster::NodeRuntime* const runtime_;
  const TableCatalog catalog_;  // the specs of the tables this worker declared
  const std::unique_ptr<KvMetrics> metrics_;  // null without metrics
  std::mutex send_mu_;  // serialises starting tasks and clock ticks
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  int64_t next_ts_ = 1;                                 // guarded by mu_
  absl::flat_hash_map<int64_t, Pending> pending_;       // guarded by mu_
  absl::flat_hash_set<int64_t> completing_;             // guarded by mu_; callbacks running
  absl::flat_hash_map<int64_t, int> waiters_;           // guarded by mu_; ts -> threads in Wait(ts)
  std::map<int64_t, Status> errors_;                    // guarded by mu_
  UnfinishedTasks unfinished_;                          // guarded by mu_; issued, not finished
  std::deque<Held> held_;                               // guarded by mu_; not started, in order
  absl::flat_hash_map<TableId, TableConsistency> consistency_;  // guarded by mu_
  uint64_t clock_ = 0;                                  // guarded by mu_
  absl::flat_hash_set<NodeId> failed_servers_;          // guarded by mu_; with replication
  std::atomic<bool> any_failed_servers_{false};         // !failed_servers_.empty()
  // SendAll calls between queuing their messages and taking in the failed sends (of their own
  // messages or others'). While any runs, a part sent to a dead server may still turn out
  // undelivered, so ResendOrphans waits (setting resend_wanted_); the last to finish calls it
  // when wanted. (A send blocked on a live peer delays the resends up to the send timeout.)
  std::atomic<int> sends_in_progress_{0};
  std::atomic<bool> resend_wanted_{false};
  std::atomic<uint64_t> completions_{0};                // requests finished so far (Wait spins on it)
};

}  // namespace kv
}  // namespace pserver
