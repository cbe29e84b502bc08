#include "kv/server/kv_server_core.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "base/logging.h"
#include "kv/filter/filter.h"
#include "kv/server/apply_pool.h"
#include "kv/server/kv_server_replication.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"
#include "kv/worker/slicer.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;
using transport::Pulls;
using transport::Pushes;

namespace {

// The runs of consecutive keys of `ranges` (sorted, disjoint) that `keep` chooses.
std::vector<KeyRange> RunsWhere(const std::vector<KeyRange>& ranges, const std::function<bool(Key)>& keep) {
  std::vector<KeyRange> runs;
  for (const KeyRange& r : ranges) {
    for (Key k = r.first;; ++k) {
      if (keep(k)) {
        if (!runs.empty() && runs.back().last + 1 == k && runs.back().last != ~Key{0}) {
          runs.back().last = k;
        } else {
          runs.push_back(KeyRange{k, k});
        }
      }
      if (k == r.last) break;
    }
  }
  return runs;
}

// The runs of consecutive keys among sorted `keys`.
std::vector<KeyRange> RunsOfKeys(const SharedArray<Key>& keys) {
  std::vector<KeyRange> runs;
  for (Key k : keys) {
    if (!runs.empty() && runs.back().last != ~Key{0} && runs.back().last + 1 == k) {
      runs.back().last = k;
    } else {
      runs.push_back(KeyRange{k, k});
    }
  }
  return runs;
}

// Whether `bytes` is exactly `count` items of `per` bytes, without computing count * per (which
// can pass 2^64 for counts a peer sends: n lengths of up to 2^31 values each).
bool HoldsExactly(uint64_t bytes, uint64_t count, uint64_t per) {
  return per != 0 && bytes % per == 0 && bytes / per == count;
}

uint32_t ApplyThreads(uint32_t requested) {
  if (requested != 0) return requested;
  return std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

}  // namespace

struct KVServerCore::Table {
  explicit Table(const TableSpec& s) : spec(s) {}
  TableSpec spec;
  FilterChain filters;                // the spec's: undone on requests, run on pull replies
  KvMetrics::Table* metrics = nullptr;  // its instruments; null without metrics
  std::unique_ptr<TableStore> store;  // never null
  Epoch view_epoch;  // dense: the view whose ranges the store took last (TakeViewRanges)
};

KVServerCore::KVServerCore(cluster::NodeRuntime* runtime, const ServerOptions& options)
    : runtime_(runtime),
      options_(options),
      pool_(std::make_unique<ApplyPool>(ApplyThreads(options.apply_threads))),
      metrics_(runtime->metrics() ? std::make_unique<KvMetrics>(runtime->metrics(), Role::kServer) : nullptr) {
  if (metrics_) {
    // Never waits for the apply lock (a long apply, a checkpoint's snapshot, a table resumed
    // from a checkpoint hold it): a scrape then shows the rows of the last one that got it, so
    // that a liveness probe reading the metrics is answered at once.
    scraped_ = runtime->metrics()->AddScraped([this](std::vector<prometheus::MetricFamily>* out) {
      if (apply_mu_.TryLock()) {
        std::vector<metrics::Sample> rows, bytes;
        for (const auto& [id, t] : tables_) {
          rows.push_back({{{"table", t->spec.name}}, double(t->store->num_keys())});
          bytes.push_back({{{"table", t->spec.name}}, double(t->store->memory_bytes())});
        }
        apply_mu_.Unlock();
        last_rows_ = std::move(rows);
        last_bytes_ = std::move(bytes);
      }
      out->push_back(metrics::Gauge("pserver_table_rows", "Rows (keys) this server stores, by table.", last_rows_));
      out->push_back(metrics::Gauge("pserver_table_bytes",
                                    "Bytes of memory this server's store holds, by table (values and updater state).",
                                    last_bytes_));
    });
  }
  {
    MutexLock lock(&apply_mu_);
    if (!options_.resume_from.empty()) resume_point_ = cluster::LatestCheckpoint(options_.resume_from);
    if (resume_point_ && resume_point_->ok()) {
      PSERVER_LOG_INFO("{}: resumes from checkpoint {} (epoch {}, {} files)", runtime_->DescribeNode(runtime_->id()),
                       (*resume_point_)->directory, (*resume_point_)->manifest.epoch,
                       (*resume_point_)->manifest.files.size());
    }
    SetWorkers(runtime_->routing()->view());
    for (const auto& [id, w] : workers_) worker_clock_[id] = 0;
    StartReplication();
  }
  PSERVER_LOG_INFO("{}: applies large requests on {} shard thread(s)", runtime_->DescribeNode(runtime_->id()),
                   pool_->size());
  mover_ = std::jthread([this](std::stop_token stop) { MoverLoop(stop); });
}

KVServerCore::~KVServerCore() {
  scraped_.Reset();
  {
    MutexLock lock(&mover_mu_);
    if (mover_stop_.ok()) mover_stop_ = Status::Aborted("the server is shutting down");
  }
  mover_cv_.SignalAll();
  if (mover_.joinable()) mover_.join();
  MutexLock lock(&apply_mu_);
  if (replication_ && replication_->replicate_messages > 0) {
    const Replication& r = *replication_;
    PSERVER_LOG_INFO("{}: replication sent {} bytes in {} messages ({} of them rounds of pushes sent as rows) for {} "
                     "bytes of workers' pushes applied here ({:.3f} of them)",
                     r.name, r.replicated_bytes, r.replicate_messages, r.aggregated_messages, r.push_bytes,
                     r.push_bytes > 0 ? double(r.replicated_bytes) / double(r.push_bytes) : 0.0);
  }
}

void KVServerCore::SetWorkers(const cluster::ClusterView& view) {
  const bool first = workers_.empty() && worker_clock_.empty();
  // A worker new to this server after the start joined a running job: it is admitted at the
  // current clock, the least of the live workers' (docs/elasticity.md).
  uint64_t now = 0;
  bool any = false;
  for (const auto& [id, clock] : worker_clock_) {
    now = any ? std::min(now, clock) : clock;
    any = true;
  }
  absl::flat_hash_map<NodeId, WorkerIncarnation> before = std::move(workers_);
  workers_.clear();
  workers_by_rank_.clear();
  for (const cluster::NodeInfo& n : view.nodes) {
    if (n.role != Role::kWorker) continue;
    const WorkerIncarnation w{n.id, n.identity};
    workers_[n.id] = w;
    if (workers_by_rank_.size() <= n.rank.value) workers_by_rank_.resize(n.rank.value + 1);
    workers_by_rank_[n.rank.value] = w;
    if (!first && !before.contains(n.id)) {
      worker_clock_[n.id] = now;
      clock_base_[n.id] = now;
      PSERVER_LOG_INFO("{}: worker {} joined; its clock starts at {}", runtime_->DescribeNode(runtime_->id()),
                       n.rank.value, now);
    }
  }
}

uint64_t KVServerCore::ClockBase(NodeId worker) const {
  auto it = clock_base_.find(worker);
  return it == clock_base_.end() ? 0 : it->second;
}

void KVServerCore::OnViewChanged(const std::shared_ptr<const cluster::Routing>& routing) {
  MutexLock lock(&apply_mu_);
  SetWorkers(routing->view());
  for (auto& [id, table] : tables_) TakeViewRanges(*table, *routing);
  ReplicasForView(routing);
}

void KVServerCore::TakeViewRanges(Table& table, const cluster::Routing& routing) {
  // Dense tables take the ranges the view gives this server; those it gave up stay until their
  // rows are handed over (EraseRows).
  if (table.spec.storage != StorageKind::kDense || table.view_epoch >= routing.epoch()) return;
  table.view_epoch = routing.epoch();
  std::vector<KeyRange> ranges = OwnedKeyRanges(table.spec, routing);
  std::vector<KeyRange> held = table.store->owned_ranges();
  ranges.insert(ranges.end(), held.begin(), held.end());
  if (Status s = table.store->SetOwnedRanges(std::move(ranges)); !s.ok()) {  // the ranges come from the spec's own range
    PSERVER_LOG_ERROR("{}: table '{}': {}", runtime_->DescribeNode(runtime_->id()), table.spec.name, s.ToString());
  }
}

std::vector<KeyRange> KVServerCore::OwnedKeyRanges(const TableSpec& spec, const cluster::Routing& routing) const {
  return KeyRangesOfRouting(spec, routing.ring().RangesOf(runtime_->rank().value));
}

void KVServerCore::SetHandler(ValueType type, ServerHandler handler) {
  std::lock_guard lock(mu_);
  if (handler) {
    handlers_[type] = std::make_shared<const ServerHandler>(std::move(handler));
  } else {
    handlers_.erase(type);
  }
}

void KVServerCore::ServeDefault(ValueType type, bool serve) {
  std::lock_guard lock(mu_);
  defaults_[type] = serve;
}

Result<std::unique_ptr<KVServerCore::Table>> KVServerCore::MakeTable(TableId id, const transport::Bytes& spec_bytes) {
  // A peer's bytes: decoded here, and checked once, with the rule, by TableStore::Create.
  Result<TableSpec> decoded = DecodeTableSpec(spec_bytes);
  if (!decoded.ok()) return decoded.status().WithContext(fmt::format("server {}: table {}", runtime_->rank().value, id.value));
  const TableSpec& spec = *decoded;
  auto table = std::make_unique<Table>(spec);
  // An error names the server, and the table unless it does already.
  const auto where = [&, named = fmt::format("table '{}'", spec.name)](const Status& s) {
    return s.WithContext(s.message().starts_with(named) ? fmt::format("server {}", runtime_->rank().value)
                                                        : fmt::format("server {}: {}", runtime_->rank().value, named));
  };
  Result<std::unique_ptr<Updater>> updater = options_.updaters.Create(spec.updater);
  if (!updater.ok()) return where(updater.status());
  // A dense table allocates the key ranges this server owns under its view, no more.
  std::optional<std::vector<KeyRange>> owned;
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  if (spec.storage == StorageKind::kDense) {
    if (Status valid = ValidateTableSpec(spec, updater->get()); !valid.ok()) return where(valid);
    owned = OwnedKeyRanges(spec, *routing);
    table->view_epoch = routing->epoch();
  }
  Result<std::unique_ptr<TableStore>> store = TableStore::Create(id, spec, std::move(*updater), pool_.get(), owned);
  if (!store.ok()) return where(store.status());
  Result<FilterChain> filters = MakeFilterChain(spec);  // checked by TableStore::Create: a filter it lacks is refused
  if (!filters.ok()) return where(filters.status());
  table->filters = std::move(*filters);
  table->store = std::move(*store);
  if (metrics_) table->metrics = &metrics_->Add(id, spec.name);
  // A scratch table starts empty: no checkpoint holds it.
  if (!options_.resume_from.empty() && spec.checkpointed) PSERVER_RETURN_IF_ERROR(where(ResumeRows(table->store.get(), *routing)));
  return table;
}

Status KVServerCore::OnTableDeclared(TableId id, const transport::Bytes& spec) {
  MutexLock lock(&apply_mu_);
  if (tables_.contains(id)) return Status::Ok();
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Table> table, MakeTable(id, spec));
  tables_.emplace(id, std::move(table));
  return Status::Ok();
}

Result<KVServerCore::Table*> KVServerCore::FindTable(TableId id) {
  auto it = tables_.find(id);
  if (it != tables_.end()) return it->second.get();
  // Announced before this core was attached: build it now.
  Result<transport::Bytes> spec = runtime_->FindTable(id);
  if (!spec.ok()) return Status::NotFound(fmt::format("table {} was never declared to this server", id.value));
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Table> table, MakeTable(id, *spec));
  return tables_.emplace(id, std::move(table)).first->second.get();
}

Result<ServerRequest> KVServerCore::Decode(Message& msg, const TableSpec& spec) {
  const auto& h = msg.header;
  if (msg.frames.size() != 3) {
    return Status::Corruption(fmt::format("data request with {} frames, expected 3", msg.frames.size()));
  }
  const uint32_t width = spec.variable_length ? 0 : spec.width;
  if (h.value_type != spec.value_type || h.width != width) {
    return Status::InvalidArgument(fmt::format("table '{}' holds {} values of width {}, the request has {} of width {}",
                                               spec.name, ValueTypeName(spec.value_type), width,
                                               ValueTypeName(h.value_type), h.width));
  }
  ServerRequest r;
  r.type = h.type;
  r.table = h.table;
  r.sender = h.sender;
  r.timestamp = Timestamp(h.request_id);
  r.clock = h.clock;
  r.value_type = h.value_type;
  r.width = h.width;
  const size_t elem = ValueTypeSize(h.value_type);
  const Bytes& keys = msg.frames[0];
  if (keys.size() % sizeof(Key) != 0) return Status::Corruption(fmt::format("key frame of {} bytes", keys.size()));
  r.keys = SharedArray<Key>(keys.owner(), reinterpret_cast<Key*>(keys.data()), keys.size() / sizeof(Key));
  const size_t n = r.keys.size();
  if (n > 0xffffffffULL) return Status::Corruption(fmt::format("a request of {} keys (at most 2^32 - 1)", n));
  for (size_t i = 1; i < n; ++i) {
    if (r.keys[i - 1] >= r.keys[i]) {
      return Status::Corruption(fmt::format("keys not sorted ascending and unique at index {} ({} then {})", i,
                                            r.keys[i - 1], r.keys[i]));
    }
  }
  const bool push = Pushes(h.type);
  const Bytes& lens = msg.frames[2];
  if (push && h.width == 0) {
    if (lens.size() != n * sizeof(int32_t)) {
      return Status::Corruption(fmt::format("{} bytes of lengths for {} keys", lens.size(), n));
    }
    r.lens = SharedArray<int32_t>(lens.owner(), reinterpret_cast<int32_t*>(lens.data()), n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      if (r.lens[i] < 0) return Status::Corruption(fmt::format("negative length {} for key {}", r.lens[i], r.keys[i]));
      total += static_cast<uint64_t>(r.lens[i]);
    }
    if (!HoldsExactly(msg.frames[1].size(), total, uint64_t{spec.push_arity} * elem)) {
      return Status::Corruption(fmt::format("{} value bytes where the lengths say {} values (push arity {})",
                                            msg.frames[1].size(), total, spec.push_arity));
    }
  } else if (push) {
    if (!HoldsExactly(msg.frames[1].size(), uint64_t{n} * h.width, uint64_t{spec.push_arity} * elem)) {
      return Status::Corruption(fmt::format("{} value bytes for {} keys of width {} (push arity {})",
                                            msg.frames[1].size(), n, h.width, spec.push_arity));
    }
  } else if (!msg.frames[1].empty() || !lens.empty()) {
    return Status::Corruption("a pull request carries values");
  }
  r.vals = std::move(msg.frames[1]);
  return r;
}

Status KVServerCore::CheckResponse(const ServerRequest& req, const ServerResponse& resp) const {
  const size_t elem = ValueTypeSize(req.value_type);
  const size_t n = req.keys.size();
  if (req.width == 0) {
    if (resp.lens.size() != n) {
      return Status::Internal(fmt::format("the handler returned {} lengths for {} keys", resp.lens.size(), n));
    }
    uint64_t total = 0;
    for (int32_t l : resp.lens) total += static_cast<uint64_t>(std::max(l, 0));
    if (resp.vals.size() != total * elem) {
      return Status::Internal(fmt::format("the handler returned {} values where its lengths say {}",
                                          resp.vals.size() / elem, total));
    }
    return Status::Ok();
  }
  if (resp.vals.size() != uint64_t{n} * req.width * elem) {
    return Status::Internal(fmt::format("the handler returned {} values for {} keys of width {}",
                                        resp.vals.size() / elem, n, req.width));
  }
  return Status::Ok();
}

bool KVServerCore::Admits(const transport::Header& h) const {
  const uint64_t admits = h.aux & ~transport::kPullHoldsNoCopy;
  if (!Pulls(h.type) || admits == 0) return true;
  const uint64_t staleness = admits - 1;
  const uint64_t clock = ClockBase(h.sender) + h.clock;
  if (clock <= staleness) return true;
  const uint64_t need = clock - staleness;
  for (const auto& [node, clock] : worker_clock_) {
    if (clock < need) return false;
  }
  return true;
}

void KVServerCore::OnData(Message&& msg) {
  if (msg.header.type == MessageType::kMigrateRows && msg.header.is_reply()) {
    // A recipient stored (or refused) a batch the mover sent.
    MutexLock lock(&mover_mu_);
    auto it = batch_answers_.find(msg.header.request_id);
    if (it != batch_answers_.end() && it->second.to == msg.header.sender && !it->second.status) {
      it->second.status = msg.header.is_error() ? cluster::CarriedError(msg).WithContext(fmt::format(
                                                      "{} refused moved rows", runtime_->DescribeNode(msg.header.sender)))
                                                : Status::Ok();
      mover_cv_.SignalAll();
    }
    return;
  }
  MutexLock lock(&apply_mu_);
  if (msg.header.type == MessageType::kReplicate) {
    if (msg.header.is_reply()) {
      ReplicaStored(msg);
    } else {
      TakeReplicated(msg);
    }
    return FlushReplicas();
  }
  if (msg.header.is_reply()) {
    return Reply(msg.header, Status::InvalidArgument("a server does not take replies"), nullptr, nullptr);
  }
  if (msg.header.type == MessageType::kMigrateRows) {
    TakeMovedRows(msg);
    return FlushReplicas();
  }
  const NodeId sender = msg.header.sender;
  auto w = waiting_.find(sender);
  if ((w != waiting_.end() && !w->second.empty()) || !Admits(msg.header)) {
    waiting_[sender].push_back(std::move(msg));
    ++num_waiting_;
    return;
  }
  Process(std::move(msg));
  if (num_waiting_ > 0) ReleaseWaiting();
  FlushReplicas();
}

void KVServerCore::ReleaseWaiting() {
  bool progress = true;
  while (progress && num_waiting_ > 0) {
    progress = false;
    for (auto& [sender, queue] : waiting_) {
      while (!queue.empty() && Admits(queue.front().header)) {
        Message m = std::move(queue.front());
        queue.pop_front();
        --num_waiting_;
        Process(std::move(m));  // a clock tick may admit more: go round again
        progress = true;
      }
    }
  }
}

void KVServerCore::OnNodeFailed(const cluster::NodeFailure& failure) {
  if (failure.role != Role::kWorker) {
    // A recipient of rows this server is sending died: the batches waiting for it fail now.
    MutexLock lock(&mover_mu_);
    for (auto& [id, answer] : batch_answers_) {
      if (answer.to == failure.id && !answer.status) {
        answer.status = Status::Unavailable(fmt::format("{} died: {}", runtime_->DescribeNode(failure.id), failure.reason));
      }
    }
    mover_cv_.SignalAll();
    return;
  }
  MutexLock lock(&apply_mu_);
  fenced_.emplace(failure.id, failure.reason);
  DropWorker(failure.id, fmt::format("it was declared dead ({})", failure.reason));
}

void KVServerCore::OnNodeLeft(const cluster::NodeFailure& who) {
  if (who.role != Role::kWorker) return;
  MutexLock lock(&apply_mu_);
  DropWorker(who.id, who.reason);
}

void KVServerCore::DropWorker(NodeId worker, const std::string& why) {
  for (const auto& [id, table] : tables_) table->filters.Forget(worker);  // what they kept for it
  if (worker_clock_.erase(worker) > 0) {
    PSERVER_LOG_INFO("{}: dropped {} from the stale-synchronous clock: {}", runtime_->DescribeNode(runtime_->id()),
                     runtime_->DescribeNode(worker), why);
  }
  auto it = waiting_.find(worker);
  if (it != waiting_.end()) {
    num_waiting_ -= it->second.size();
    waiting_.erase(it);
  }
  if (num_waiting_ > 0) ReleaseWaiting();
  FlushReplicas();  // what the released requests changed
}

void KVServerCore::Process(Message&& msg) {
  const transport::Header header = msg.header;
  const transport::ConnectionId origin = msg.origin;
  if (header.type == MessageType::kClock) {
    auto it = worker_clock_.find(header.sender);
    if (it != worker_clock_.end()) it->second = std::max(it->second, ClockBase(header.sender) + header.clock);
    return;
  }
  if (auto fenced = fenced_.find(header.sender); fenced != fenced_.end()) {
    return Reply(header,
                 Status::Unavailable(fmt::format("{} was declared dead ({}); it is no longer part of the job, and its "
                                                 "requests are refused",
                                                 runtime_->DescribeNode(header.sender), fenced->second)),
                 nullptr, nullptr);
  }
  Result<Table*> table = FindTable(header.table);
  if (!table.ok()) return Reply(header, table.status(), nullptr, nullptr);
  KvMetrics::Table* const metrics = (*table)->metrics;
  if (metrics) metrics->bytes_received->Increment(KvMetrics::Bytes(msg));  // every data message, as on the wire
  if (Status undone = (*table)->filters.Decode(msg); !undone.ok()) {
    if (IsKeyCacheMiss(undone)) return AskForKeys(header, undone);
    return Reply(header, undone, nullptr, nullptr);
  }
  Result<ServerRequest> req = Decode(msg, (*table)->spec);
  if (!req.ok()) return Reply(header, req.status(), nullptr, nullptr);
  Table& t = **table;

  // Ownership: nothing is applied unless this server owns every key under its view; a request
  // routed by an older view is redirected with this one (requests of newer views wait in the
  // runtime until this server has their view).
  if (!req->keys.empty()) {
    std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
    if (std::optional<size_t> miss = FirstNotOwned({req->keys.data(), req->keys.size()}, PlacementOf(t.spec),
                                                   routing->ring(), runtime_->rank().value)) {
      return Redirect(header, *routing, req->keys[*miss]);
    }
    // The runtime swaps the view on its receive thread and tells this core later, in order on
    // this thread: a request routed by the new view can come first. A dense table takes the
    // ranges of the view this request was checked against before the store sees it.
    TakeViewRanges(t, *routing);
  }
  // A part this server handles (one it redirected or whose keys its cache lacked comes again).
  if (metrics) {
    if (prometheus::Counter* c = metrics->Requests(header.type)) c->Increment();
  }

  // Shared, not copied: a std::function copy may allocate, and SetHandler may replace the
  // handler while this request still runs it.
  std::shared_ptr<const ServerHandler> handler;
  bool serve_default = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = handlers_.find(req->value_type); it != handlers_.end()) handler = it->second;
    if (auto it = defaults_.find(req->value_type); it != defaults_.end()) serve_default = it->second;
  }
  if (!handler && !serve_default) {
    return Reply(header, Status::Unavailable(fmt::format("this server has no handler for {} tables",
                                                         ValueTypeName(req->value_type))),
                 nullptr, nullptr);
  }

  // Vector clock: a push this range already includes is a duplicate; do not apply it again.
  // The keys are sorted (Decode checked), so the first and last bound the request's range.
  const bool has_keys = !req->keys.empty();
  const KeyRange range = has_keys ? KeyRange{req->keys[0], req->keys[req->keys.size() - 1]} : KeyRange{};
  // The pusher as the clocks know it: the identity its message came with (the runtime admits a
  // worker's data only from the identity its view gives it), so a restarted worker is new.
  const bool from_worker = workers_.contains(req->sender);
  const WorkerIncarnation worker{req->sender, origin};
  RangeClock& clocks = t.store->clocks();
  bool duplicate = false;
  // A resend after a redirect was applied nowhere (the redirect applied nothing), and may come
  // after newer requests of its worker: the clock would take it for a duplicate.
  const bool resend = header.flags & transport::kFlagResend;
  if (Pushes(req->type) && has_keys && from_worker && (header.flags & transport::kFlagFailover)) {
    // Sent to a server that died before answering: applied there (and so here, its replica) or not.
    Result<bool> applied = AppliedBeforeFailover(header);
    if (!applied.ok()) return Reply(header, applied.status(), nullptr, nullptr);
    duplicate = *applied;
    if (duplicate) {
      // Its replicas learn that this server holds it too (a second failover must not apply it).
      NoteReplicatedPush(*t.store, *runtime_->routing(), *req,
                         ReplicatedPush{header.origin, req->sender, req->timestamp.value}, /*with_values=*/false);
      PSERVER_LOG_DEBUG("server {}: request {} of node {} reached the replicas of node {} before it died; not "
                        "applying it again",
                        runtime_->rank().value, req->timestamp.value, worker.worker.value, header.origin.value);
      if (req->type == MessageType::kPush) return Reply(header, Status::Ok(), nullptr, nullptr);
      req->type = MessageType::kPull;  // answer the pull part only
      req->vals = Bytes();
    }
  } else if (Pushes(req->type) && has_keys && from_worker && !resend) {
    duplicate = clocks.Covers(range, worker, req->timestamp.value);
    if (duplicate) {
      PSERVER_LOG_DEBUG("server {}: request {} of node {} was applied before; not applying it again",
                        runtime_->rank().value, req->timestamp.value, worker.worker.value);
      if (req->type == MessageType::kPush) return Reply(header, Status::Ok(), nullptr, nullptr);
      req->type = MessageType::kPull;  // answer the pull part only
      req->vals = Bytes();
    }
  }
  if (replication_ && Pushes(req->type) && has_keys && from_worker && !duplicate) {
    for (const Bytes& f : msg.frames) replication_->push_bytes += f.size();
  }

  ServerResponse resp;
  Status s;
  const auto apply_start = metrics ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  if (handler) {
    s = (*handler)(*req, &resp);
  } else {
    UpdateContext ctx{req->sender, req->timestamp, req->clock};
    s = t.store->Handle(*req, ctx, &resp);
  }
  if (metrics) {
    if (prometheus::Histogram* h = metrics->Seconds(header.type)) {
      h->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - apply_start).count());
    }
  }
  if (s.ok() && Pulls(req->type)) s = CheckResponse(*req, resp);
  if (s.ok() && Pushes(header.type) && has_keys && from_worker && !duplicate) {
    clocks.Set(range, worker, req->timestamp.value);
    const NodeId origin = (header.flags & transport::kFlagFailover) ? header.origin : runtime_->id();
    // A custom handler's state is its own: its replicas learn of the push, not its values.
    NoteReplicatedPush(*t.store, *runtime_->routing(), *req, ReplicatedPush{origin, req->sender, req->timestamp.value},
                       /*with_values=*/!handler);
    if (tracking_) {  // a membership change is moving rows away: note what changed (kFinal)
      absl::flat_hash_set<Key>& touched = tracking_->touched[header.table];
      for (size_t i = 0; i < req->keys.size(); ++i) touched.insert(req->keys[i]);
    }
  }
  if (!Pulls(header.type)) return Reply(header, s, nullptr, nullptr);
  resp.copy = Bytes();  // the filters' alone, never a handler's
  if (s.ok() && t.filters.rounds_replies() && !(header.flags & transport::kFlagExact)) {
    Rounding r{.reply = true,
               .peer = header.sender,
               .may_drop = header.type == MessageType::kPull,
               .no_copy = (header.aux & transport::kPullHoldsNoCopy) != 0,
               .value_type = t.spec.value_type,
               .columns = t.spec.width,
               .keys = req->keys,
               .vals = resp.vals,
               .copy_frame = {}};
    if (Status rounded = t.filters.Round(r); rounded.ok()) {
      resp.vals = std::move(r.vals);
      resp.copy = std::move(r.copy_frame);
    } else {
      PSERVER_LOG_WARN("server {}: answered {} unrounded: {}", runtime_->rank().value, transport::Describe(header),
                       rounded.ToString());
    }
  }
  std::vector<int64_t> clock = has_keys ? clocks.Get(range, workers_by_rank_) : std::vector<int64_t>();
  Reply(header, s, &resp, has_keys ? &clock : nullptr);
}

Message KVServerCore::ReplyTo(const transport::Header& request, uint8_t flags) const {
  Message m;
  m.header.type = request.type;
  m.header.flags = flags;
  m.header.sender = runtime_->id();
  m.header.receiver = request.sender;
  m.header.table = request.table;
  m.header.value_type = request.value_type;
  m.header.width = request.width;
  m.header.request_id = request.request_id;
  m.header.epoch = request.epoch;
  m.header.part = request.part;
  return m;
}

void KVServerCore::Reply(const transport::Header& request, const Status& status, ServerResponse* resp,
                         std::vector<int64_t>* clock) {
  Message m = ReplyTo(request, transport::kFlagReply);
  if (!status.ok()) {
    m.header.flags |= transport::kFlagError;
    m.header.status = static_cast<uint8_t>(status.code());
    m.frames.push_back(transport::BytesFromString(status.message()));
    PSERVER_LOG_DEBUG("server: refused {}: {}", transport::Describe(request), status.ToString());
  } else if (resp) {
    m.frames.reserve(4);
    m.frames.push_back(std::move(resp->copy));
    m.frames.push_back(std::move(resp->vals));
    m.frames.push_back(transport::AsBytes(resp->lens));
    if (clock) m.frames.push_back(transport::AsBytes(SharedArray<int64_t>(std::move(*clock))));
    // The table's filters, as on the request (a table found: the request was decoded).
    if (Result<Table*> table = FindTable(request.table); table.ok()) {
      if (Status s = (*table)->filters.Encode(m); !s.ok()) {
        PSERVER_LOG_WARN("server {}: answered {} unfiltered: {}", runtime_->rank().value, transport::Describe(request),
                         s.ToString());
      }
    }
  }
  // With replicas, a worker learns of nothing its replicas do not hold yet.
  if (status.ok() && DeferReply(m)) return;
  if (Status s = SendReply(std::move(m)); !s.ok()) {
    PSERVER_LOG_WARN("server {}: could not answer {}: {}", runtime_->rank().value, transport::Describe(request),
                     s.ToString());
  }
}

Status KVServerCore::SendReply(Message&& m) {
  if (auto it = tables_.find(m.header.table); it != tables_.end() && it->second->metrics) {
    it->second->metrics->bytes_sent->Increment(KvMetrics::Bytes(m));
  }
  return runtime_->SendData(std::move(m));
}

void KVServerCore::Redirect(const transport::Header& request, const cluster::Routing& routing,
                            [[maybe_unused]] Key not_owned) {
  PSERVER_LOG_DEBUG("server {}: redirected {} routed with epoch {} (key {} is not this server's at epoch {})",
                    runtime_->rank().value, transport::Describe(request), request.epoch.value, not_owned,
                    routing.epoch().value);
  Message m = ReplyTo(request, transport::kFlagReply | transport::kFlagRedirect);
  m.header.epoch = routing.epoch();  // the server's, not the request's
  m.frames.push_back(cluster::Encode(routing.view()));
  if (Status s = SendReply(std::move(m)); !s.ok()) {
    PSERVER_LOG_WARN("server {}: could not redirect {}: {}", runtime_->rank().value, transport::Describe(request),
                     s.ToString());
  }
}

void KVServerCore::AskForKeys(const transport::Header& request, [[maybe_unused]] const Status& miss) {
  PSERVER_LOG_DEBUG("server {}: asked for the keys of {}: {}", runtime_->rank().value, transport::Describe(request),
                    miss.ToString());
  Message m = ReplyTo(request, transport::kFlagReply | transport::kFlagKeysMissing);
  if (Status s = SendReply(std::move(m)); !s.ok()) {
    PSERVER_LOG_WARN("server {}: could not ask for the keys of {}: {}", runtime_->rank().value,
                     transport::Describe(request), s.ToString());
  }
}

Result<TableStore*> KVServerCore::FindStore(TableId id) {
  PSERVER_ASSIGN_OR_RETURN(Table * table, FindTable(id));
  return table->store.get();
}

Result<RowBatch> KVServerCore::ListRows(TableId id, const std::function<bool(Key)>& choose) {
  MutexLock lock(&apply_mu_);
  PSERVER_ASSIGN_OR_RETURN(TableStore * store, FindStore(id));
  return store->ListRows(choose);
}

Status KVServerCore::InsertRows(TableId id, const RowBatch& rows) {
  MutexLock lock(&apply_mu_);
  PSERVER_ASSIGN_OR_RETURN(TableStore * store, FindStore(id));
  return InsertRowsLocked(store, rows);
}

std::vector<cluster::TableStats> KVServerCore::OnStats() {
  MutexLock lock(&apply_mu_);
  std::vector<cluster::TableStats> out;
  for (const auto& [id, t] : tables_) out.push_back({id, t->store->num_keys(), t->store->memory_bytes()});
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.table < b.table; });
  return out;
}

std::vector<std::pair<TableId, TableSpec>> KVServerCore::TableSpecs() const {
  std::vector<std::pair<TableId, TableSpec>> out;
  for (const auto& [id, t] : tables_) out.emplace_back(id, t->spec);
  return out;
}

Status KVServerCore::CoverKeys(TableStore* store, const SharedArray<Key>& keys) {
  if (store->spec().storage != StorageKind::kDense || keys.empty()) return Status::Ok();
  const std::vector<KeyRange> held = store->owned_ranges();  // sorted, disjoint
  auto covered = [&held](KeyRange run) {
    auto it = std::upper_bound(held.begin(), held.end(), run.first, [](Key k, KeyRange r) { return k < r.first; });
    return it != held.begin() && std::prev(it)->last >= run.last;
  };
  std::vector<KeyRange> runs = RunsOfKeys(keys);
  if (std::all_of(runs.begin(), runs.end(), covered)) return Status::Ok();
  runs.insert(runs.end(), held.begin(), held.end());
  return store->SetOwnedRanges(std::move(runs));
}

Status KVServerCore::InsertRowsLocked(TableStore* store, const RowBatch& rows) {
  // Rows moving in (before the view that gives them to this server, perhaps): a dense table
  // takes their ranges first. A batch refused takes nothing.
  const std::vector<KeyRange> before = store->owned_ranges();
  PSERVER_RETURN_IF_ERROR(CoverKeys(store, rows.keys));
  Status inserted = store->InsertRows(rows);
  if (!inserted.ok() && store->spec().storage == StorageKind::kDense) (void)store->SetOwnedRanges(before);
  return inserted;
}

Result<size_t> KVServerCore::EraseRows(TableId id, const std::function<bool(Key)>& choose) {
  MutexLock lock(&apply_mu_);
  PSERVER_ASSIGN_OR_RETURN(TableStore * store, FindStore(id));
  return EraseRowsLocked(store, choose);
}

size_t KVServerCore::EraseRowsLocked(TableStore* store, const std::function<bool(Key)>& choose) {
  const size_t erased = store->EraseRows(choose);
  if (store->spec().storage == StorageKind::kDense) {
    // Rows handed over: a dense table frees the erased keys its view does not give it.
    const std::vector<KeyRange> view = OwnedKeyRanges(store->spec(), *runtime_->routing());  // sorted, disjoint
    auto owned = [&view](Key k) {
      auto it = std::upper_bound(view.begin(), view.end(), k, [](Key key, KeyRange r) { return key < r.first; });
      return it != view.begin() && std::prev(it)->last >= k;
    };
    if (Status s = store->SetOwnedRanges(
            RunsWhere(store->owned_ranges(), [&](Key k) { return (choose && !choose(k)) || owned(k); }));
        !s.ok()) {  // the ranges are those the store held, or parts of them
      PSERVER_LOG_ERROR("{}: table '{}': {}", runtime_->DescribeNode(runtime_->id()), store->spec().name, s.ToString());
    }
  }
  return erased;
}

}  // namespace pserver::kv
