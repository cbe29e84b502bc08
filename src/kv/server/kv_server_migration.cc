// KVServerCore's part in membership changes: the donor's mover thread (kCopy, kFinal, kCommit,
// kCancel) and the recipient's storing of moved rows. See kv_server_core.h and
// docs/elasticity.md.
#include <fmt/format.h>

#include <algorithm>
#include <deque>

#include "base/failpoint.h"
#include "base/logging.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/row_frames.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"

namespace pserver::kv {

using cluster::MigratePhase;
using transport::Bytes;
using transport::Message;
using transport::MessageType;

namespace {

// How long a donor waits for a recipient to store one batch.
constexpr std::chrono::seconds kBatchTimeout(120);

// A batch as a kMigrateRows request: the row frames (row_frames.h), then the donor's
// stale-synchronous clocks (EncodeWorkerClocks).
Message BatchMessage(NodeId to, TableId table, const RowBatch& rows, Bytes clocks) {
  Message m;
  m.header.type = MessageType::kMigrateRows;
  m.header.receiver = to;
  m.header.table = table;
  AppendRowFrames(rows, &m);
  m.frames.push_back(std::move(clocks));
  return m;
}

// One worker's clock entry of a batch: node id u32, base u64, clock u64 (little-endian).
constexpr size_t kClockEntryBytes = 20;

Result<RowBatch> BatchOf(const Message& m) {
  if (m.frames.size() != 5) return Status::Corruption(fmt::format("migrate-rows with {} frames, expected 5", m.frames.size()));
  if (m.frames[4].size() % kClockEntryBytes != 0) {
    return Status::Corruption(fmt::format("migrate-rows with a clock frame of {} bytes", m.frames[4].size()));
  }
  return RowFramesOf(m, "migrate-rows");
}

}  // namespace

Status KVServerCore::OnMigrate(int64_t change, MigratePhase phase, const cluster::MigrateOrder& order) {
  if (phase == MigratePhase::kCopy) {
    // From now on every push to this server's tables is noted: kFinal sends those of the moving
    // keys again. (Listing happens later, on the mover: a push between the two is in both.)
    MutexLock lock(&apply_mu_);
    Tracking fresh;
    fresh.change = change;
    fresh.order = order;
    tracking_ = std::move(fresh);
  }
  MutexLock lock(&mover_mu_);
  if (!mover_stop_.ok()) return mover_stop_;
  if (phase == MigratePhase::kCancel) {
    // The mover stops sending the change's rows, and stops waiting for answers: the batches it
    // waits for belong to the change (one runs at a time), and a recipient sent away never
    // answers them.
    cancelled_change_ = change;
    for (auto& [id, answer] : batch_answers_) {
      if (!answer.status) answer.status = Status::Aborted(fmt::format("change {} was cancelled", change));
    }
  }
  mover_jobs_.push_back(MoverJob{change, phase, order});
  mover_cv_.SignalAll();
  return Status::Ok();
}

void KVServerCore::MoverLoop(std::stop_token stop) {
  while (true) {
    MoverJob job;
    {
      MutexLock lock(&mover_mu_);
      while (mover_jobs_.empty() && mover_stop_.ok() && !stop.stop_requested()) mover_cv_.Wait(&mover_mu_);
      if (!mover_stop_.ok() || stop.stop_requested()) return;
      job = std::move(mover_jobs_.front());
      mover_jobs_.pop_front();
    }
    const std::string self = runtime_->DescribeNode(runtime_->id());
    switch (job.phase) {
      case MigratePhase::kCopy: {
        Result<cluster::MigrateReport> sent =
            SendMovingRows(job.change, job.order, [](TableId) { return KeyPredicate(); });
        if (sent.ok()) PSERVER_LOG_INFO("{}: change {}: copied {} rows ({} bytes)", self, job.change, sent->rows, sent->bytes);
        runtime_->ReportMigration(job.change, job.phase, sent);
        break;
      }
      case MigratePhase::kFinal: {
        absl::flat_hash_map<TableId, absl::flat_hash_set<Key>> touched;
        {
          MutexLock lock(&apply_mu_);
          if (tracking_ && tracking_->change == job.change) touched.swap(tracking_->touched);
        }
        auto changed = [&touched](TableId id) -> KeyPredicate {
          auto it = touched.find(id);
          if (it == touched.end() || it->second.empty()) return [](Key) { return false; };
          const absl::flat_hash_set<Key>* keys = &it->second;
          return [keys](Key k) { return keys->contains(k); };
        };
        Result<cluster::MigrateReport> sent = SendMovingRows(job.change, job.order, changed);
        if (sent.ok()) PSERVER_LOG_INFO("{}: change {}: sent {} changed rows again", self, job.change, sent->rows);
        runtime_->ReportMigration(job.change, job.phase, sent);
        break;
      }
      case MigratePhase::kCommit: {
        std::vector<KeyRange> ranges;
        for (const cluster::MigrateTarget& t : job.order.targets) ranges.insert(ranges.end(), t.ranges.begin(), t.ranges.end());
        std::vector<std::pair<TableId, TableSpec>> tables;
        {
          MutexLock lock(&apply_mu_);
          if (tracking_ && tracking_->change == job.change) tracking_.reset();
          tables = TableSpecs();
        }
        // Rows of ranges whose chains still hold this server stay: it is their replica now.
        const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
        const uint32_t me = runtime_->rank().value;
        size_t erased = 0;
        for (const auto& [id, spec] : tables) {
          const KeyPredicate moved = RoutingRangePredicate(spec, ranges);
          const cluster::Placement placement = PlacementOf(spec);
          Result<size_t> n = EraseRows(id, [&](Key k) {
            return moved(k) && !routing->InChain(me, cluster::RoutingKey(placement, k));
          });
          if (n.ok()) erased += *n;
        }
        PSERVER_LOG_INFO("{}: change {}: erased the {} rows handed over", self, job.change, erased);
        runtime_->ReportMigration(job.change, job.phase, cluster::MigrateReport{erased, 0});
        break;
      }
      case MigratePhase::kCancel: {
        MutexLock lock(&apply_mu_);
        if (tracking_ && tracking_->change == job.change) tracking_.reset();
        PSERVER_LOG_INFO("{}: change {} was cancelled; this server keeps every row", self, job.change);
        break;
      }
    }
  }
}

Result<cluster::MigrateReport> KVServerCore::SendMovingRows(int64_t change, const cluster::MigrateOrder& order,
                                                            const std::function<std::function<bool(Key)>(TableId)>& chosen) {
  std::vector<std::pair<TableId, TableSpec>> tables;
  {
    MutexLock lock(&apply_mu_);
    tables = TableSpecs();
  }
  cluster::MigrateReport report;
  std::deque<int64_t> in_flight;
  Status failed;
  for (const auto& [id, spec] : tables) {
    const KeyPredicate pick = chosen(id);
    for (const cluster::MigrateTarget& target : order.targets) {
      const KeyPredicate moving = RoutingRangePredicate(spec, target.ranges);
      PSERVER_ASSIGN_OR_RETURN(RowBatch rows,
                               ListRowsToMove(id, [&](Key k) { return (!pick || pick(k)) && moving(k); }));
      for (size_t first = 0; first < rows.size() && failed.ok(); first += kMigrateBatchRows) {
        const RowBatch batch = SliceRows(rows, first, std::min(rows.size(), first + kMigrateBatchRows));
        Result<int64_t> sent = SendBatch(change, target.to, id, batch);
        if (!sent.ok()) {
          failed = sent.status();
          break;
        }
        in_flight.push_back(*sent);
        report.rows += batch.size();
        report.bytes += batch.keys.size_bytes() + batch.values.size() + batch.states.size() + batch.lens.size_bytes();
        if (in_flight.size() >= kBatchesInFlight) {
          failed = AwaitBatch(in_flight.front());
          in_flight.pop_front();
        }
      }
    }
  }
  // Every batch sent is answered (or given up) before this returns, failed or not.
  for (int64_t batch : in_flight) {
    Status s = AwaitBatch(batch);
    if (failed.ok()) failed = s;
  }
  PSERVER_RETURN_IF_ERROR(failed);
  return report;
}

Bytes KVServerCore::EncodeWorkerClocks() {
  MutexLock lock(&apply_mu_);
  Bytes out = Bytes::Uninitialized(worker_clock_.size() * kClockEntryBytes);
  std::byte* p = out.data();
  auto put = [&p](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) *p++ = static_cast<std::byte>(v >> (8 * i));
  };
  for (const auto& [id, clock] : worker_clock_) {
    // The clock as the worker counts it (its own clocks, from this server's base for it): every
    // server's base for a worker may differ, its own count does not.
    const uint64_t base = ClockBase(id);
    put(id.value, 4);
    put(base, 8);
    put(clock > base ? clock - base : 0, 8);
  }
  return out;
}

void KVServerCore::AdoptWorkerClocks(const Bytes& frame) {
  auto get = [&frame](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(frame[at + static_cast<size_t>(i)]);
    return v;
  };
  for (size_t at = 0; at + kClockEntryBytes <= frame.size(); at += kClockEntryBytes) {
    const NodeId id(static_cast<uint32_t>(get(at, 4)));
    const uint64_t base = get(at + 4, 8), own = get(at + 12, 8);
    auto it = worker_clock_.find(id);
    if (it == worker_clock_.end()) continue;  // not a live worker of this server's view
    // A worker this server met in its first view (a joiner's) counts from 0 here until told
    // otherwise; one that joined while this server ran has a base of this server's own.
    if (base > 0 && !clock_base_.contains(id)) clock_base_[id] = base;
    // The donor saw it reach its own clock `own`: that, counted from this server's base.
    it->second = std::max(it->second, ClockBase(id) + own);
  }
}

Result<int64_t> KVServerCore::SendBatch(int64_t change, NodeId to, TableId table, const RowBatch& rows) {
  Message m = BatchMessage(to, table, rows, EncodeWorkerClocks());
  int64_t id;
  {
    MutexLock lock(&mover_mu_);
    if (cancelled_change_ == change) return Status::Aborted(fmt::format("change {} was cancelled", change));
    id = next_batch_++;
    batch_answers_[id] = BatchAnswer{to, std::nullopt};
  }
  m.header.sender = runtime_->id();
  m.header.request_id = id;
  if (Status sent = runtime_->SendData(std::move(m)); !sent.ok()) {
    MutexLock lock(&mover_mu_);
    batch_answers_.erase(id);
    return sent;
  }
  return id;
}

Status KVServerCore::AwaitBatch(int64_t id) {
  MutexLock lock(&mover_mu_);
  auto answered = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mover_mu_) {
    return batch_answers_[id].status.has_value() || !mover_stop_.ok();
  };
  Status outcome;
  if (!mover_cv_.WaitFor(&mover_mu_, kBatchTimeout, answered)) {
    outcome = Status::DeadlineExceeded(fmt::format("a recipient did not store moved rows (batch {}) within {} s", id,
                                                   kBatchTimeout.count()));
  } else {
    outcome = batch_answers_[id].status.has_value() ? *batch_answers_[id].status : mover_stop_;
  }
  batch_answers_.erase(id);
  return outcome;
}

Result<RowBatch> KVServerCore::ListRowsToMove(TableId id, const KeyPredicate& choose) {
  MutexLock lock(&apply_mu_);
  // The pushes applied so far go to this server's replicas first: a recipient that is one of
  // them must get a push before rows that hold it (a push after them would be applied again).
  FlushReplicas(/*force=*/true);
  PSERVER_ASSIGN_OR_RETURN(TableStore * store, FindStore(id));
  return store->ListRows(choose);
}

void KVServerCore::TakeMovedRows(const Message& msg) {
  if (FailpointActive("migrate-rows-unanswered")) {  // for the fault tests: see docs/errors.md
    PSERVER_LOG_WARN("{}: failpoint migrate-rows-unanswered: leaves rows moved from {} unstored and unanswered",
                     runtime_->DescribeNode(runtime_->id()), runtime_->DescribeNode(msg.header.sender));
    return;
  }
  Result<TableStore*> store = FindStore(msg.header.table);
  Result<RowBatch> rows = BatchOf(msg);
  if (rows.ok()) {
    AdoptWorkerClocks(msg.frames[4]);
    if (num_waiting_ > 0) ReleaseWaiting();  // clocks may have risen
  }
  const Status stored = !store.ok()  ? store.status()
                        : !rows.ok() ? rows.status()
                                     : InsertRowsLocked(*store, *rows);
  if (stored.ok()) {
    // Rows this server owns already (the final phase comes after the switch) go on to its replicas.
    NoteReplicatedRows(**store, *runtime_->routing(), {rows->keys.data(), rows->keys.size()});
  } else {
    PSERVER_LOG_WARN("{}: refused rows moved from {}: {}", runtime_->DescribeNode(runtime_->id()),
                     runtime_->DescribeNode(msg.header.sender), stored.ToString());
  }
  AnswerRows(msg, stored);
}

void KVServerCore::AnswerRows(const Message& request, const Status& stored) {
  Message reply;
  reply.header.type = request.header.type;
  reply.header.flags = transport::kFlagReply;
  reply.header.sender = runtime_->id();
  reply.header.receiver = request.header.sender;
  reply.header.table = request.header.table;
  reply.header.value_type = request.header.value_type;
  reply.header.request_id = request.header.request_id;
  if (!stored.ok()) {
    reply.header.flags |= transport::kFlagError;
    reply.header.status = static_cast<uint8_t>(stored.code());
    reply.frames.push_back(transport::BytesFromString(stored.message()));
  }
  (void)runtime_->SendData(std::move(reply));
}

void KVServerCore::OnShutdown(const Status& why) {
  MutexLock lock(&mover_mu_);
  if (mover_stop_.ok()) mover_stop_ = why.ok() ? Status::Aborted("the job ended") : why;
  mover_cv_.SignalAll();
}

}  // namespace pserver::kv
