// KVServerCore's part in replication (docs/durability.md, section 3): the owner of a key range
// sends the rows its pushes changed to the other servers of the range's chain and answers the
// workers once they stored them; a replica stores what it is sent and remembers which pushes it
// holds, so that after a failover a worker's resend is applied exactly once.
//
// Owner. A push applied here notes its keys, per replica of their chains, in the open round
// (NoteReplicated). FlushReplicas closes the round -- at most kRoundsInFlight rounds are
// unanswered at a time, so under load one message carries the rows of many pushes (aggregation,
// then replication) -- by sending each replica, per table, the current rows (values and rule
// state) of the keys noted for it and the (worker, timestamp) of every push they include
// (kReplicate). A reply to a worker (push or pull) is held until every round up to the one its
// request's effects are in was stored by every replica (DeferReply), so no worker learns of a
// value that a failover could lose.
//
// Replica. A kReplicate request's rows replace the replica's (InsertRows: idempotent, and the
// channel keeps the owner's order); its pushes are remembered per (owner, worker), at most
// kRememberedPushes each (older ones are forgotten, and a resend that old is refused rather than
// guessed at).
//
// View changes (ReplicasForView). Rounds sent to servers that left the view count as stored
// (the chain is shorter now). For every range this server owns under the new view, each replica
// that is new to its chain -- or every replica, where this server was not the owner before (a
// failover or a membership change made it one) -- is sent all of the range's rows. Once every
// replica stored them this server tells the scheduler its replicas are complete at that epoch
// (NodeRuntime::ReportReplicasSynced): only then may the scheduler fail over from it. Rows of
// ranges this server held only as a replica and no longer does are erased.
//
// Failover resends (AppliedBeforeFailover): a worker sends again, with kFlagFailover and the
// dead server as header.origin, the parts that server never answered. This server applies one
// unless its replica of the dead server's pushes holds it.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>

#include "base/failpoint.h"
#include "base/logging.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/kv_server_replication.h"
#include "kv/server/row_frames.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;

namespace {

// One push a kReplicate carries (ReplicatedPush): origin node id (u32), worker node id (u32),
// timestamp (i64), little-endian.
constexpr size_t kPushEntryBytes = 16;

void PutPush(const ReplicatedPush& push, std::byte* p) {
  std::memcpy(p, &push.origin.value, 4);
  std::memcpy(p + 4, &push.worker.value, 4);
  std::memcpy(p + 8, &push.ts, 8);
}

ReplicatedPush GetPush(const std::byte* p) {
  ReplicatedPush push;
  std::memcpy(&push.origin.value, p, 4);
  std::memcpy(&push.worker.value, p + 4, 4);
  std::memcpy(&push.ts, p + 8, 8);
  return push;
}

Bytes EncodePushes(const std::vector<ReplicatedPush>& pushes) {
  Bytes out = Bytes::Uninitialized(pushes.size() * kPushEntryBytes);
  for (size_t i = 0; i < pushes.size(); ++i) PutPush(pushes[i], out.data() + i * kPushEntryBytes);
  return out;
}

// Every push `held` remembers, for a replica that is sent all of its rows.
template <typename Held>
Bytes EncodeAllPushes(const Held& held) {
  std::vector<ReplicatedPush> all;
  for (const auto& [origin, workers] : held) {
    for (const auto& [worker, h] : workers) {
      for (int64_t ts : h.order) all.push_back(ReplicatedPush{origin, worker, ts});
    }
  }
  return EncodePushes(all);
}

}  // namespace

void KVServerCore::StartReplication() {
  replication_ = std::make_unique<Replication>();
  replication_->name = runtime_->DescribeNode(runtime_->id());
  replication_->routing = runtime_->routing();
  replication_->epoch = replication_->routing->epoch();
  NoteReplicaOf(*replication_->routing);
  if (replication_->routing->chain_length() >= 2) {
    // Nothing is stored yet: the (empty) replicas are complete.
    replication_->reported = true;
    runtime_->ReportReplicasSynced(replication_->epoch);
  }
}

void KVServerCore::NoteReplicaOf(const cluster::Routing& routing) {
  const uint32_t me = runtime_->rank().value;
  for (size_t i = 0; i < routing.ring().segments().size(); ++i) {
    std::span<const uint32_t> chain = routing.ChainOfSegment(i);
    if (std::find(chain.begin() + 1, chain.end(), me) == chain.end()) continue;
    if (const cluster::NodeInfo* owner = routing.Server(chain[0])) replication_->replica_of.insert(owner->id);
  }
}

void KVServerCore::Replication::Remember(const ReplicatedPush& p) {
  replica_of.insert(p.origin);
  Held& h = pushes[p.origin][p.worker];
  if (!h.ids.insert(p.ts).second) return;
  h.order.push_back(p.ts);
  while (h.order.size() > kRememberedPushes) {
    h.forgotten = std::max(h.forgotten, h.order.front());
    h.ids.erase(h.order.front());
    h.order.pop_front();
  }
}

void KVServerCore::NoteReplicated(const TableStore& store, const cluster::Routing& routing, std::span<const Key> keys,
                                  NodeId origin, NodeId worker, int64_t ts) {
  const std::optional<ReplicatedPush> push =
      worker.value != 0 ? std::optional(ReplicatedPush{origin, worker, ts}) : std::nullopt;
  // The owner remembers the pushes it applied too: a replica new to its chains gets them with
  // the rows (which hold their effects), or it would apply one again after this server's death.
  if (push) replication_->Remember(*push);
  if (routing.chain_length() < 2 || keys.empty()) return;
  const cluster::Placement placement = PlacementOf(store.spec());
  const uint32_t me = runtime_->rank().value;
  Replication& r = *replication_;
  // Most requests' keys share a segment: look the chain up once per run of one segment.
  size_t segment = ~size_t{0};
  std::span<const uint32_t> chain;
  std::vector<Replication::Outgoing*> to;
  for (Key k : keys) {
    const size_t s = routing.ring().SegmentIndex(cluster::RoutingKey(placement, k));
    if (s != segment) {
      segment = s;
      chain = routing.ChainOfSegment(s);
      to.clear();
      // Only the owner sends a range's rows (rows moved in before the view gives them here do
      // not go out: the view change sends them).
      for (size_t i = 1; i < chain.size() && chain[0] == me; ++i) {
        const cluster::NodeInfo* replica = routing.Server(chain[i]);
        if (replica == nullptr) continue;
        Replication::Outgoing& out = r.open[replica->id][store.table()];
        if (push && (out.pushes.empty() || out.pushes.back() != *push)) out.pushes.push_back(*push);
        to.push_back(&out);
      }
    }
    for (Replication::Outgoing* out : to) {
      if (!out->keys.empty() && out->keys.back() >= k) out->sorted = false;
      out->keys.push_back(k);
    }
  }
}

bool KVServerCore::SendReplicate(NodeId replica, TableId table, const RowBatch& rows, Bytes pushes, int64_t round) {
  Replication& r = *replication_;
  Message m;
  m.header.type = MessageType::kReplicate;
  m.header.sender = runtime_->id();
  m.header.receiver = replica;
  m.header.table = table;
  m.header.request_id = r.next_request++;
  AppendRowFrames(rows, &m);
  m.frames.push_back(std::move(pushes));
  for (const Bytes& f : m.frames) r.replicated_bytes += f.size();
  ++r.replicate_messages;
  const int64_t id = m.header.request_id;
  if (Status s = runtime_->SendData(std::move(m)); !s.ok()) {
    // A replica declared dead is dropped by the view that follows: nothing waits for it. One
    // that lives but cannot be sent to would leave the replies waiting: they fail instead.
    PSERVER_LOG_WARN("{}: could not send rows to its replica {}: {}", runtime_->DescribeNode(runtime_->id()),
                     runtime_->DescribeNode(replica), s.ToString());
    if (runtime_->PeerStatus(replica).ok() && r.failure.ok()) {
      r.failure = s.WithContext(fmt::format("replicating to {}", runtime_->DescribeNode(replica)));
    }
    return false;
  }
  r.sent[id] = Replication::Sent{round, replica};
  return true;
}

void KVServerCore::Replication::Answered(int64_t round) {
  if (auto u = unstored.find(round); u != unstored.end() && --u->second == 0) unstored.erase(u);
}

void KVServerCore::FlushReplicas(bool force) {
  Replication& r = *replication_;
  if (r.open.empty() || (!force && r.unstored.size() >= kRoundsInFlight)) return;
  const int64_t round = r.round++;
  size_t messages = 0;
  for (auto& [replica, tables] : r.open) {
    for (auto& [table, out] : tables) {
      Result<TableStore*> store = FindStore(table);
      if (!store.ok()) continue;  // the table was made when the push came
      if (!out.sorted) {  // several pushes: their keys interleave
        std::sort(out.keys.begin(), out.keys.end());
        out.keys.erase(std::unique(out.keys.begin(), out.keys.end()), out.keys.end());
      }
      messages += SendReplicate(replica, table, (*store)->ListRowsOf(out.keys), EncodePushes(out.pushes), round);
    }
  }
  r.open.clear();
  if (messages > 0) r.unstored[round] = messages;
}

bool KVServerCore::DeferReply(Message& reply) {
  Replication& r = *replication_;
  const int64_t needed = r.Needed();
  if (needed <= r.Stored()) return false;
  r.held.emplace_back(needed, std::move(reply));
  return true;
}

void KVServerCore::ReleaseHeldReplies() {
  Replication& r = *replication_;
  const int64_t stored = r.Stored();
  while (!r.held.empty() && r.held.front().first <= stored) {
    Message m = std::move(r.held.front().second);
    r.held.pop_front();
    if (!r.failure.ok()) {  // the request was applied here, but its replicas do not hold it
      m.header.flags |= transport::kFlagError;
      m.header.status = static_cast<uint8_t>(r.failure.code());
      m.frames.clear();
      m.frames.push_back(transport::BytesFromString(r.failure.message()));
    }
    if (Status s = runtime_->SendData(std::move(m)); !s.ok()) {
      PSERVER_LOG_WARN("{}: could not answer a request once replicated: {}", runtime_->DescribeNode(runtime_->id()),
                       s.ToString());
    }
  }
  if (!r.reported && r.resync_round <= stored) {
    r.reported = true;
    PSERVER_LOG_INFO("{}: its replicas are complete at epoch {}", runtime_->DescribeNode(runtime_->id()), r.epoch.value);
    runtime_->ReportReplicasSynced(r.epoch);
  }
}

void KVServerCore::ReplicaStored(const Message& msg) {
  Replication& r = *replication_;
  auto it = r.sent.find(msg.header.request_id);
  if (it == r.sent.end() || it->second.to != msg.header.sender) return;  // a round given up at a view change
  if (msg.header.is_error()) {
    Status refused = cluster::CarriedError(msg).WithContext(
        fmt::format("replica {} refused rows of table {}", runtime_->DescribeNode(msg.header.sender), msg.header.table.value));
    PSERVER_LOG_ERROR("{}: {}", runtime_->DescribeNode(runtime_->id()), refused.ToString());
    if (r.failure.ok()) r.failure = refused;
  }
  const int64_t round = it->second.round;
  r.sent.erase(it);
  r.Answered(round);
  ReleaseHeldReplies();
}

void KVServerCore::TakeReplicated(const Message& msg) {
  Replication& r = *replication_;
  const cluster::NodeInfo* owner = r.routing->Find(msg.header.sender);
  Status stored;
  Result<RowBatch> rows = RowFramesOf(msg, "replicate");
  if (owner == nullptr || owner->role != Role::kServer) {
    stored = Status::InvalidArgument(fmt::format("{} is no server of this server's view (epoch {})",
                                                 runtime_->DescribeNode(msg.header.sender), r.routing->epoch().value));
  } else if (msg.frames.size() != 5 || msg.frames[4].size() % kPushEntryBytes != 0) {
    stored = Status::Corruption(fmt::format("replicate with {} frames", msg.frames.size()));
  } else if (!rows.ok()) {
    stored = rows.status();
  } else if (FailpointActive("replica-stores-nothing")) {  // for the fault tests: see docs/errors.md
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      PSERVER_LOG_WARN("{}: failpoint replica-stores-nothing: answers rows replicated to it as stored, stores none",
                       runtime_->DescribeNode(runtime_->id()));
    }
  } else {
    Result<TableStore*> store = FindStore(msg.header.table);
    stored = store.ok() ? InsertRowsLocked(*store, *rows) : store.status();
  }
  if (stored.ok()) {
    r.replica_of.insert(msg.header.sender);
    const Bytes& f = msg.frames[4];
    for (size_t at = 0; at + kPushEntryBytes <= f.size(); at += kPushEntryBytes) r.Remember(GetPush(f.data() + at));
  } else {
    PSERVER_LOG_WARN("{}: refused rows replicated from {}: {}", runtime_->DescribeNode(runtime_->id()),
                     runtime_->DescribeNode(msg.header.sender), stored.ToString());
  }
  AnswerRows(msg, stored);
}

Result<bool> KVServerCore::AppliedBeforeFailover(const transport::Header& h) {
  Replication& r = *replication_;
  const std::string what = fmt::format("request {} of {}, first sent to {} (which died)", h.request_id,
                                       runtime_->DescribeNode(h.sender), runtime_->DescribeNode(h.origin));
  if (!r.replica_of.contains(h.origin)) {
    return Status::Unavailable(fmt::format("{}: this server never held that server's replicas, so it cannot tell "
                                           "whether the request was applied",
                                           what));
  }
  auto owner = r.pushes.find(h.origin);
  if (owner == r.pushes.end()) return false;
  auto worker = owner->second.find(h.sender);
  if (worker == owner->second.end()) return false;
  if (worker->second.ids.contains(h.request_id)) return true;
  if (h.request_id <= worker->second.forgotten) {
    return Status::Unavailable(fmt::format("{}: too old to tell whether it was applied (this server remembers the last "
                                        "{} pushes of each worker per server)",
                                        what, kRememberedPushes));
  }
  return false;
}

void KVServerCore::ReplicasForView(const std::shared_ptr<const cluster::Routing>& after) {
  Replication& r = *replication_;
  const std::shared_ptr<const cluster::Routing> before = r.routing;
  if (after->epoch() <= before->epoch()) return;
  r.routing = after;
  NoteReplicaOf(*after);
  // Rounds sent to servers that left the view count as stored: their chains are shorter now.
  for (auto it = r.sent.begin(); it != r.sent.end();) {
    if (after->Find(it->second.to) != nullptr) {
      ++it;
      continue;
    }
    r.Answered(it->second.round);
    r.sent.erase(it++);
  }
  const bool was_open = !r.open.empty();
  for (auto it = r.open.begin(); it != r.open.end();) {
    if (after->Find(it->first) == nullptr) {
      r.open.erase(it++);
    } else {
      ++it;
    }
  }
  if (was_open && r.open.empty()) {
    ++r.round;  // the open round had only servers gone: it is closed, with nothing to wait for
  } else {
    FlushReplicas(/*force=*/true);
  }

  // The resync: per partition, the replicas that must get all of its rows from this server.
  const uint32_t me = runtime_->rank().value;
  constexpr uint32_t kParts = cluster::PartitionPlacement::kPartitions;
  absl::flat_hash_map<NodeId, std::vector<bool>> resync;  // replica -> partitions
  std::vector<bool> dropped(kParts, false);               // held as a replica, no longer
  bool any_dropped = false;
  for (uint32_t p = 0; p < kParts; ++p) {
    const uint64_t rk = cluster::PartitionPlacement::RangeOfPartition(p).first;
    std::span<const uint32_t> now = after->Chain(rk);
    std::span<const uint32_t> was = before->Chain(rk);
    const bool was_replica = std::find(was.begin() + 1, was.end(), me) != was.end();
    if (now[0] != me) {
      if (was_replica && std::find(now.begin(), now.end(), me) == now.end()) dropped[p] = any_dropped = true;
      continue;
    }
    for (size_t i = 1; i < now.size(); ++i) {
      const bool kept = was[0] == me && std::find(was.begin(), was.end(), now[i]) != was.end();
      if (kept) continue;
      const cluster::NodeInfo* replica = after->Server(now[i]);
      if (replica == nullptr) continue;
      std::vector<bool>& parts = resync[replica->id];
      if (parts.empty()) parts.assign(kParts, false);
      parts[p] = true;
    }
  }
  // A resync of an earlier view not yet stored gates this view's report too: a view that keeps
  // the ring (a joiner admitted, a leaver's last step) sends nothing new, and its replicas may
  // still lack those rows.
  const int64_t pending = r.reported ? 0 : r.resync_round;
  r.epoch = after->epoch();
  r.resync_round = pending;
  r.reported = after->chain_length() < 2;
  const int64_t round = r.round;
  size_t messages = 0, rows_sent = 0;
  // The first message to a replica carries every push this server remembers (the rows hold
  // their effects); with no rows to send it goes with none.
  const Bytes all_pushes = EncodeAllPushes(r.pushes);
  const std::vector<std::pair<TableId, TableSpec>> specs = TableSpecs();
  for (const auto& [replica, chosen] : resync) {
    const std::vector<bool>& parts = chosen;  // (a lambda cannot capture a structured binding)
    Bytes pushes = all_pushes;
    for (const auto& [id, spec] : specs) {
      const cluster::Placement placement = PlacementOf(spec);
      Result<TableStore*> store = FindStore(id);
      if (!store.ok()) continue;
      const RowBatch rows = (*store)->ListRows([&](Key k) {
        return parts[cluster::PartitionPlacement::PartitionOf(cluster::RoutingKey(placement, k))];
      });
      const bool last_table = id == specs.back().first;
      for (size_t first = 0; first < rows.size() || (!pushes.empty() && last_table && first == 0);
           first += kMigrateBatchRows) {
        messages += SendReplicate(replica, id, SliceRows(rows, first, std::min(rows.size(), first + kMigrateBatchRows)),
                                  std::move(pushes), round);
        pushes = Bytes();
      }
      rows_sent += rows.size();
    }
  }
  if (messages > 0) {
    r.unstored[round] = messages;
    r.resync_round = round;
    ++r.round;
    PSERVER_LOG_INFO("{}: epoch {}: sends {} rows to {} replica(s) new to its chains",
                     runtime_->DescribeNode(runtime_->id()), after->epoch().value, rows_sent, resync.size());
  }
  if (any_dropped) {
    for (const auto& [id, spec] : TableSpecs()) {
      const cluster::Placement placement = PlacementOf(spec);
      Result<TableStore*> store = FindStore(id);
      if (!store.ok()) continue;
      EraseRowsLocked(*store, [&](Key k) {
        return dropped[cluster::PartitionPlacement::PartitionOf(cluster::RoutingKey(placement, k))];
      });
    }
  }
  ReleaseHeldReplies();
}

}  // namespace pserver::kv
