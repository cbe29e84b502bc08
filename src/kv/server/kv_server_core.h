// KVServerCore: the type-independent engine behind KVServer<T>, one per server node.
//
// On the node's data thread it checks each data request against its table's spec (frame layout,
// value type, width, sorted unique keys, values and lengths for the push arity) -- the one check
// of a request on the server, which the stores and handlers rely on -- passes it to the table's
// store -- or to a custom handler registered for the value type -- checks the answer and replies. A bad request gets an error
// reply naming what was wrong; it never crashes the server.
//
// Tables: the scheduler announces every declared table (OnTableDeclared) with its spec bytes;
// the core decodes and checks them (kv/table_catalog.h) and builds the table's store then, so a
// bad spec, or a table whose update rule this server does not know (or whose parameters are
// bad), fails the worker's DeclareTable. Every table is kept by a TableStore
// (kv/server/table_store.h: its update rule, the rule's state beside the value, sparse, dense,
// large-row or variable-length storage, multi-threaded apply), whose rows can be listed and
// inserted. A custom handler (SetHandler), where one is set for the table's value type, takes
// the table's requests instead; without one, ServeDefault(type, true) lets the stores answer.
//
// Ownership: a request is applied only when this server owns every one of its keys under its
// current view (cluster/routing.h); otherwise nothing of it is applied and the worker gets a
// redirect (transport::kFlagRedirect) carrying this server's view, by which it re-slices and
// resends the request (kFlagResend). A request routed with a newer view than this server's
// never reaches the core before the server learns that view (cluster::NodeRuntime holds it); it
// may reach the core before OnViewChanged does, so each request is checked against the runtime's
// routing of the moment, and a dense table takes that view's ranges first.
//
// Vector clocks: each table's store keeps a RangeClock beside its rows, keyed by worker
// incarnation (the worker's node id and the identity the view gives it). A push that the clock
// shows as applied already (a duplicate of an earlier request: same worker incarnation, not newer
// timestamp, same range) is not applied again; pull replies carry the clock of the pulled range,
// per worker rank, as a fourth frame.
//
// Stale-synchronous pulls: a pull whose header carries a staleness (aux = s + 1) issued at
// clock c waits until every live worker's clock (kClock messages) reached c - s. While a
// request of a worker waits, that worker's later requests wait behind it, so each worker's
// requests stay in order. A worker the scheduler declares dead, or that finished (kNodeLeft),
// is dropped from the clock. A worker that joins a running job is admitted at this server's
// current clock (the least of the live workers'): its own clocks count from there.
//
// Membership changes (docs/elasticity.md): as a donor this server hands rows over to their new
// owners on its mover thread, ordered by the scheduler phase by phase (OnMigrate): kCopy lists
// the moving rows of every table, with their rule state, and sends them (kMigrateRows, in
// batches of at most kMigrateBatchRows) while requests go on being applied -- and from then on
// notes every key a push changes; kFinal (this server routes by the new view now, so nothing
// moving changes any more) sends the noted rows again; kCommit erases what was handed over;
// kCancel forgets the change, keeping every row. As a recipient it stores the rows of each
// kMigrateRows request (InsertRows: a row sent again replaces the earlier copy) and answers it.
// Range vector clocks stay with the donor (a recipient starts the moved keys' clocks afresh).
//
// Replication (kv_server_replication.cc; docs/durability.md, section 3): with a view of
// replicas k >= 2 the owner of a key range sends the pushes it applied to the other servers of
// the range's chain (kReplicate, many pushes in one message per round) and holds its replies to
// workers until they applied them; a replica applies them in the owner's order and remembers
// them, so that a worker's resend after a failover (kFlagFailover) is applied exactly once. On a
// view change each range's new replicas get all of its rows, and the scheduler is told once
// they are complete.
//
// Thread safety: SetHandler, ServeDefault and the row calls (ListRows, ...) are thread-safe;
// the DataHandler calls run on the node's data thread (NodeRuntime), one at a time.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/mutex.h"
#include "cluster/checkpoint_manifest.h"
#include "cluster/node_runtime.h"
#include "kv/kv_metrics.h"
#include "kv/server/range_clock.h"
#include "pserver/kv_server.h"
#include "pserver/updater.h"
#include "transport/message.h"

namespace pserver::kv {

class ApplyPool;
class TableStore;
struct RowBatch;
struct ReplicatedPush;
struct PushRecord;
struct OutgoingRound;

// A data request as handlers see it (values as raw bytes of the table's type).
struct ServerRequest {
  transport::MessageType type = transport::MessageType::kPush;
  TableId table;
  NodeId sender;
  Timestamp timestamp;
  uint64_t clock = 0;  // the worker's iteration clock
  ValueType value_type = ValueType::kFloat32;
  uint32_t width = 1;  // 0: variable length
  SharedArray<Key> keys;
  transport::Bytes vals;
  SharedArray<int32_t> lens;
};

struct ServerResponse {
  transport::Bytes vals;
  SharedArray<int32_t> lens;
  // A pull reply that left keys out (kv/filter/significant_filter.h): its copy frame, sent as
  // the reply's frame 0; set by the table's filters, never by a handler.
  transport::Bytes copy;
};

using ServerHandler = std::function<Status(const ServerRequest&, ServerResponse*)>;

class KVServerCore final : public cluster::DataHandler {
 public:
  explicit KVServerCore(cluster::NodeRuntime* runtime, const ServerOptions& options = {});
  ~KVServerCore() override;

  // Installs (or with an empty function removes) a custom handler for tables of `type`.
  void SetHandler(ValueType type, ServerHandler handler);
  // Serves tables of `type` with the built-in stores (or stops serving them).
  void ServeDefault(ValueType type, bool serve);

  void OnData(transport::Message&& msg) override ABSL_LOCKS_EXCLUDED(apply_mu_);
  void OnNodeFailed(const cluster::NodeFailure& failure) override ABSL_LOCKS_EXCLUDED(apply_mu_);
  void OnNodeLeft(const cluster::NodeFailure& who) override ABSL_LOCKS_EXCLUDED(apply_mu_);
  std::vector<cluster::TableStats> OnStats() override ABSL_LOCKS_EXCLUDED(apply_mu_);
  // Lists every row of every table (one snapshot, between two requests), then writes them on a
  // thread of its own (kv_server_checkpoint.cc).
  void OnCheckpoint(const std::string& path, std::function<void(Result<cluster::CheckpointWritten>)> done) override
      ABSL_LOCKS_EXCLUDED(apply_mu_, checkpoint_mu_);
  void OnShutdown(const Status& why) override ABSL_LOCKS_EXCLUDED(mover_mu_);
  Status OnMigrate(int64_t change, cluster::MigratePhase phase, const cluster::MigrateOrder& order) override
      ABSL_LOCKS_EXCLUDED(apply_mu_, mover_mu_);
  // Rows per kMigrateRows request.
  static constexpr size_t kMigrateBatchRows = 1 << 16;
  Status OnTableDeclared(TableId id, const transport::Bytes& spec) override ABSL_LOCKS_EXCLUDED(apply_mu_);
  // A new view may bring workers (a restarted one with a new identity) the clocks must know.
  void OnViewChanged(const std::shared_ptr<const cluster::Routing>& routing) override ABSL_LOCKS_EXCLUDED(apply_mu_);

  // Moving rows between servers (the tests' harness today; transfer between servers,
  // replication and checkpoints later): the rows of table `id` whose keys `choose` picks (every
  // row when empty), with their rule state; inserting such rows; erasing them. Each runs between
  // two requests (thread-safe). kNotFound for a table this server never met; InsertRows refuses
  // (kInvalidArgument, changing nothing) rows that do not fit the table.
  // A dense table holds the key ranges its server owns under the current view (allocated when
  // the table is made, and when a view gives it more), plus the ranges of rows inserted (rows
  // may move in before the view that gives them), and frees a range it no longer owns once its
  // rows were erased (handed over) -- never before, so a view change loses no rows.
  Result<RowBatch> ListRows(TableId id, const std::function<bool(Key)>& choose) ABSL_LOCKS_EXCLUDED(apply_mu_);
  Status InsertRows(TableId id, const RowBatch& rows) ABSL_LOCKS_EXCLUDED(apply_mu_);
  Result<size_t> EraseRows(TableId id, const std::function<bool(Key)>& choose) ABSL_LOCKS_EXCLUDED(apply_mu_);

 private:
  struct Table;
  // A change this server is a donor of, from kCopy to kCommit or kCancel.
  struct Tracking {
    int64_t change = 0;
    cluster::MigrateOrder order;
    absl::flat_hash_map<TableId, absl::flat_hash_set<Key>> touched;  // keys pushes changed since kCopy
  };
  struct MoverJob {
    int64_t change = 0;
    cluster::MigratePhase phase = cluster::MigratePhase::kCopy;
    cluster::MigrateOrder order;
  };

  // The mover thread: runs the jobs OnMigrate queues, one at a time in order.
  void MoverLoop(std::stop_token stop) ABSL_LOCKS_EXCLUDED(mover_mu_);
  // Lists the rows `chosen` picks among those moving to each target of `order`, of every table,
  // and sends them; returns what was sent once every recipient stored it.
  Result<cluster::MigrateReport> SendMovingRows(int64_t change, const cluster::MigrateOrder& order,
                                                const std::function<std::function<bool(Key)>(TableId)>& chosen)
      ABSL_LOCKS_EXCLUDED(apply_mu_, mover_mu_);
  // The rows of table `id` that `choose` picks, listed to move, once the open replication round
  // was sent (its pushes precede the rows on every channel).
  Result<RowBatch> ListRowsToMove(TableId id, const std::function<bool(Key)>& choose) ABSL_LOCKS_EXCLUDED(apply_mu_);
  // Sends one batch to `to` and returns its id, to wait for with AwaitBatch (the recipient
  // stores it meanwhile: up to kBatchesInFlight go out before the oldest is waited for).
  // kAborted, sending nothing, once `change` was cancelled.
  Result<int64_t> SendBatch(int64_t change, NodeId to, TableId table, const RowBatch& rows)
      ABSL_LOCKS_EXCLUDED(mover_mu_);
  // Waits for batch `id`'s answer: OK once stored, the recipient's refusal, or an error.
  Status AwaitBatch(int64_t id) ABSL_LOCKS_EXCLUDED(mover_mu_);
  static constexpr size_t kBatchesInFlight = 4;
  // Answers a kMigrateRows or kReplicate request: the rows are stored, or `stored` says why not.
  void AnswerRows(const transport::Message& request, const Status& stored);
  // Recipient: stores the rows of a kMigrateRows request and answers it.
  void TakeMovedRows(const transport::Message& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The stale-synchronous clocks this server knows, sent with each batch of moved rows, and
  // taken by the recipient: a joiner meets every worker in its first view and would count each
  // one's clock from 0 -- wrong for a worker that joined late (its clocks count from its base),
  // and stale for all until their next request reaches it.
  transport::Bytes EncodeWorkerClocks() ABSL_LOCKS_EXCLUDED(apply_mu_);
  void AdoptWorkerClocks(const transport::Bytes& frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Every table this server built, with its spec.
  std::vector<std::pair<TableId, TableSpec>> TableSpecs() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // A dense table takes the runs of `keys` (sorted) into its owned ranges, where it lacks them:
  // rows moving in, or pushes replicated to it, may come before the view that gives it the keys.
  Status CoverKeys(TableStore* store, const SharedArray<Key>& keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // InsertRows and EraseRows with apply_mu_ held.
  Status InsertRowsLocked(TableStore* store, const RowBatch& rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  size_t EraseRowsLocked(TableStore* store, const std::function<bool(Key)>& choose) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  // Replication (kv_server_replication.cc).
  struct Replication;
  void StartReplication() ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Notes the owners whose chains hold this server under `routing`.
  void NoteReplicaOf(const cluster::Routing& routing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Owner: push `push` (`req`: its keys, values and lengths), applied here to table `store`,
  // goes to the replicas of its keys' chains under `routing` with the next round: with its keys
  // and values, or (`with_values` false) as a record only -- a resend after a failover that this
  // server held already, whose replicas must learn that it holds it too.
  void NoteReplicatedPush(const TableStore& store, const cluster::Routing& routing, const ServerRequest& req,
                          const ReplicatedPush& push, bool with_values) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Owner: the rows of `keys` (sorted, unique), moved in here, go to the replicas of their chains.
  void NoteReplicatedRows(const TableStore& store, const cluster::Routing& routing, std::span<const Key> keys)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Sends `m` (a kReplicate of one table, framed) to `replica` as a message of `round`; whether
  // it went (a failure to send to a live replica fails the held replies: Replication::failure).
  bool SendReplicate(NodeId replica, transport::Message m, int64_t round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // A round of many pushes of few keys goes as the rows of those keys (listed now: the owner's
  // aggregate of the pushes) where they take less than half the pushes' bytes -- or, `always`,
  // whatever they take -- its records kept without keys; otherwise `out` is left as it is.
  void AggregateIfSmaller(const TableStore& store, OutgoingRound& out, bool always)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Sends the open round, unless kRoundsInFlight rounds are unanswered (and not `force`).
  void FlushReplicas(bool force = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  static constexpr size_t kRoundsInFlight = 2;
  // Holds `reply` (taking it) until the replicas stored what it answers; false to send it now.
  bool DeferReply(transport::Message& reply) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Sends the replies held whose rounds were stored (and reports complete replicas).
  void ReleaseHeldReplies() ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // A replica's answer to a kReplicate; a kReplicate request (this server is a replica).
  void ReplicaStored(const transport::Message& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void TakeReplicated(const transport::Message& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Replica: stores `rows`, then applies the pushes `records` name (their keys, values and
  // lengths: frames 5..7 of `msg`) as their owner did; checks them all first, applying nothing
  // of a malformed message. Marks the records whose keys or rows were left out (dropped).
  Status ApplyReplicated(TableStore* store, const RowBatch& rows, std::vector<PushRecord>& records,
                         const transport::Message& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  static constexpr size_t kRememberedPushes = 1 << 16;  // per owner and worker
  // A kFlagFailover push: whether this server's replica of header.origin's pushes holds it
  // (true: applied already); an error when it cannot tell.
  Result<bool> AppliedBeforeFailover(const transport::Header& h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // A new view: rounds to servers gone are given up, new replicas get their ranges' rows, rows
  // held only as a replica and no longer are erased.
  void ReplicasForView(const std::shared_ptr<const cluster::Routing>& after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Drops a worker from the stale-synchronous clock (it died or left), saying why.
  void DropWorker(NodeId worker, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The clock a worker's own clock values count from (0 but for workers that joined late).
  uint64_t ClockBase(NodeId worker) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  // The table's state, built from its spec on first use. kNotFound for a table never announced.
  Result<Table*> FindTable(TableId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The store of FindTable's table.
  Result<TableStore*> FindStore(TableId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Decodes and checks the spec bytes, then builds the table's rule and store.
  Result<std::unique_ptr<Table>> MakeTable(TableId id, const transport::Bytes& spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // With ServerOptions::resume_from: fills a table just made with the rows of the table of its
  // name that the resumed checkpoint holds and this server owns under `routing`.
  Status ResumeRows(TableStore* store, const cluster::Routing& routing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  Result<ServerRequest> Decode(transport::Message& msg, const TableSpec& spec);
  Status CheckResponse(const ServerRequest& req, const ServerResponse& resp) const;
  // Applies one request and replies (or handles a clock tick).
  void Process(transport::Message&& msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Whether a request may be processed now (stale-synchronous pulls).
  bool Admits(const transport::Header& h) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Processes waiting requests that became admissible.
  void ReleaseWaiting() ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void Reply(const transport::Header& request, const Status& status, ServerResponse* resp,
             std::vector<int64_t>* clock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Takes the workers of `view` as the job's.
  void SetWorkers(const cluster::ClusterView& view) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Dense: has the table's store take the ranges `routing` gives this server (and keep those it
  // holds), once per view.
  void TakeViewRanges(Table& table, const cluster::Routing& routing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The key ranges of a dense (kRange) table that `routing` gives this server.
  std::vector<KeyRange> OwnedKeyRanges(const TableSpec& spec, const cluster::Routing& routing) const;
  // A data reply to `request` with `flags`: its type, table, value type, width, request id,
  // epoch and part echoed, from this server to its sender, without frames.
  transport::Message ReplyTo(const transport::Header& request, uint8_t flags) const;
  // Sends a reply to a worker (counting its bytes in the metrics).
  Status SendReply(transport::Message&& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Answers a request this server does not own (`not_owned` is one such key) with its view.
  void Redirect(const transport::Header& request, const cluster::Routing& routing, Key not_owned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Answers a request whose key list the table's key cache lacks (`miss`) with kFlagKeysMissing:
  // nothing was applied; the worker sends it again with its keys.
  void AskForKeys(const transport::Header& request, const Status& miss) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  cluster::NodeRuntime* const runtime_;
  std::mutex mu_;
  absl::flat_hash_map<ValueType, std::shared_ptr<const ServerHandler>> handlers_;  // guarded by mu_
  absl::flat_hash_map<ValueType, bool> defaults_;           // guarded by mu_
  const ServerOptions options_;
  std::unique_ptr<ApplyPool> pool_;
  const std::unique_ptr<KvMetrics> metrics_;  // null without metrics
  // The stored rows and bytes by table, read at scrapes (the last read, on the endpoint's
  // threads: a scrape at a time); reset first at destruction.
  std::vector<metrics::Sample> last_rows_, last_bytes_;
  metrics::NodeMetrics::Scraped scraped_;

  // Taken by the data thread around each message it hands over, and by the migration calls.
  Mutex apply_mu_;
  absl::flat_hash_map<TableId, std::unique_ptr<Table>> tables_ ABSL_GUARDED_BY(apply_mu_);
  // Every worker of the current view, by node id; and by rank, as pull replies list clocks.
  absl::flat_hash_map<NodeId, WorkerIncarnation> workers_ ABSL_GUARDED_BY(apply_mu_);
  std::vector<WorkerIncarnation> workers_by_rank_ ABSL_GUARDED_BY(apply_mu_);
  absl::flat_hash_map<NodeId, uint64_t> worker_clock_ ABSL_GUARDED_BY(apply_mu_);   // live workers only
  absl::flat_hash_map<NodeId, uint64_t> clock_base_ ABSL_GUARDED_BY(apply_mu_);  // workers that joined late
  // Workers the scheduler declared dead, and why: their data requests are refused from then on
  // (fenced), so that one that was only silent (stopped, partitioned) and wakes up cannot change
  // the model after its work was handed to another worker.
  absl::flat_hash_map<NodeId, std::string> fenced_ ABSL_GUARDED_BY(apply_mu_);
  absl::flat_hash_map<NodeId, std::deque<transport::Message>> waiting_ ABSL_GUARDED_BY(apply_mu_);
  size_t num_waiting_ ABSL_GUARDED_BY(apply_mu_) = 0;
  std::optional<Tracking> tracking_ ABSL_GUARDED_BY(apply_mu_);
  std::unique_ptr<Replication> replication_ ABSL_GUARDED_BY(apply_mu_);

  // The mover: its jobs, and the answers to the batches it sent (by request id).
  Mutex mover_mu_;
  CondVar mover_cv_;
  std::deque<MoverJob> mover_jobs_ ABSL_GUARDED_BY(mover_mu_);
  struct BatchAnswer {
    NodeId to;
    std::optional<Status> status;  // set when answered (or given up)
  };
  absl::flat_hash_map<int64_t, BatchAnswer> batch_answers_ ABSL_GUARDED_BY(mover_mu_);
  int64_t cancelled_change_ ABSL_GUARDED_BY(mover_mu_) = 0;
  int64_t next_batch_ ABSL_GUARDED_BY(mover_mu_) = 1;
  Status mover_stop_ ABSL_GUARDED_BY(mover_mu_);  // set when the job ends: sends in flight fail
  // The checkpoint this server resumes from (ServerOptions::resume_from), found when the
  // server starts and kept, so that every table comes from the same one.
  std::optional<Result<cluster::FoundCheckpoint>> resume_point_ ABSL_GUARDED_BY(apply_mu_);

  // Writes the checkpoint file last ordered; an order while it writes is refused.
  Mutex checkpoint_mu_;
  bool checkpoint_writing_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  std::jthread checkpoint_writer_ ABSL_GUARDED_BY(checkpoint_mu_);
  std::jthread mover_;  // last: stopped and joined first
};

}  // namespace pserver::kv
