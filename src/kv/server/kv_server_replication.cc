// KVServerCore's part in replication (docs/durability.md, section 3): the owner of a key range
// sends the pushes it applied to the other servers of the range's chain and answers the workers
// once they applied them; a replica applies what it is sent, in the owner's order, and remembers
// which pushes it holds, so that after a failover a worker's resend is applied exactly once.
//
// Owner. A push applied here is noted, per replica of its keys' chains, in the open round: its
// record (origin, worker, timestamp, iteration clock) and its keys and values for that replica
// (NoteReplicatedPush). FlushReplicas closes the round -- at most kRoundsInFlight rounds are
// unanswered at a time, so under load one message carries many workers' pushes (aggregation,
// then replication) -- by sending each replica, per table, one kReplicate. A reply to a worker
// (push or pull) is held until every round up to the one its request's effects are in was
// applied by every replica (DeferReply), so no worker learns of a value that a failover could
// lose. Rows moved in here by a membership change go as rows (NoteReplicatedRows), listed when
// they come; a round's rows precede its pushes, so a round that holds pushes is sent first.
//
// Replica. A kReplicate's rows replace the replica's (InsertRows); its pushes are applied by the
// table's store as the owner applied them (the same rule, context and order: the channel keeps
// the owner's order, so the replica's rows equal the owner's bit for bit). Every push it carries
// is remembered per (owner, worker), at most kRememberedPushes each (older ones are forgotten,
// and a resend that old is refused rather than guessed at).
//
// View changes (ReplicasForView). Rounds sent to servers that left the view count as applied
// (the chain is shorter now). For every range this server owns under the new view, each replica
// that is new to its chain -- or every replica, where this server was not the owner before (a
// failover or a membership change made it one), or where the view says so (ClusterView::resync:
// it calls off a change whose switch, which this server may never have seen, could have dropped a
// replica's rows) -- is sent all of the range's rows. Once every
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
#include "kv/key_deltas.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/kv_server_replication.h"
#include "kv/server/row_frames.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"
#include "kv/worker/slicer.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;

namespace {

// One push a kReplicate carries (PushRecord), 40 bytes, little-endian: origin node id u32,
// worker node id u32, timestamp i64, iteration clock u64, epoch u64, its keys u32, reserved u32 (0).
constexpr size_t kRecordBytes = 40;

void PutRecord(const PushRecord& r, std::byte* p) {
  const uint32_t reserved = 0;
  std::memcpy(p, &r.push.origin.value, 4);
  std::memcpy(p + 4, &r.push.worker.value, 4);
  std::memcpy(p + 8, &r.push.ts, 8);
  std::memcpy(p + 16, &r.clock, 8);
  std::memcpy(p + 24, &r.epoch, 8);
  std::memcpy(p + 32, &r.keys, 4);
  std::memcpy(p + 36, &reserved, 4);
}

PushRecord GetRecord(const std::byte* p) {
  PushRecord r;
  std::memcpy(&r.push.origin.value, p, 4);
  std::memcpy(&r.push.worker.value, p + 4, 4);
  std::memcpy(&r.push.ts, p + 8, 8);
  std::memcpy(&r.clock, p + 16, 8);
  std::memcpy(&r.epoch, p + 24, 8);
  std::memcpy(&r.keys, p + 32, 4);
  return r;
}

// kReplicate's aux: the rows' state values per value (RowFramesOf) in its low 32 bits, and in
// bit 32 how its push keys are written: raw (0), or as deltas (kv/key_deltas.h), where those are
// at most three quarters of the raw bytes.
constexpr uint64_t kPushKeysAsDeltas = uint64_t{1} << 32;

Bytes EncodeRecords(const std::vector<PushRecord>& records) {
  Bytes out = Bytes::Uninitialized(records.size() * kRecordBytes);
  for (size_t i = 0; i < records.size(); ++i) PutRecord(records[i], out.data() + i * kRecordBytes);
  return out;
}

// Every push `held` remembers, as records only, for a replica that is sent all of its rows.
template <typename Held>
std::vector<PushRecord> AllRemembered(const Held& held) {
  std::vector<PushRecord> all;
  for (const auto& [origin, workers] : held) {
    for (const auto& [worker, h] : workers) {
      for (int64_t ts : h.order) all.push_back(PushRecord{ReplicatedPush{origin, worker, ts}});
    }
  }
  return all;
}

// The kReplicate of `out` (rows, then pushes), table and sender left to the caller.
Message Frame(OutgoingRound&& out) {
  Message m;
  m.header.type = MessageType::kReplicate;
  m.header.clock = out.rows_epoch;
  AppendRowFrames(out.rows, &m);
  m.frames.push_back(EncodeRecords(out.records));
  SharedArray<Key> keys;
  if (out.runs.size() == 1) {  // one run: its buffers as they are
    keys = out.runs[0].keys;
    m.frames.push_back(out.runs[0].values);
    m.frames.push_back(transport::AsBytes(out.runs[0].lens));
  } else {
    size_t num_lens = 0;
    for (const OutgoingRound::Run& run : out.runs) num_lens += run.lens.size();
    keys = SharedArray<Key>::Uninitialized(out.num_keys);
    Bytes values = Bytes::Uninitialized(out.value_bytes);
    SharedArray<int32_t> lens = SharedArray<int32_t>::Uninitialized(num_lens);
    size_t k = 0, v = 0, l = 0;
    for (const OutgoingRound::Run& run : out.runs) {
      if (!run.keys.empty()) std::memcpy(keys.data() + k, run.keys.data(), run.keys.size_bytes());
      if (!run.values.empty()) std::memcpy(values.data() + v, run.values.data(), run.values.size());
      if (!run.lens.empty()) std::memcpy(lens.data() + l, run.lens.data(), run.lens.size_bytes());
      k += run.keys.size();
      v += run.values.size();
      l += run.lens.size();
    }
    m.frames.push_back(std::move(values));
    m.frames.push_back(transport::AsBytes(lens));
  }
  // Deltas where they take at most three quarters of the raw bytes.
  if (!keys.empty() && KeyDeltasSize(keys.span()) * 4 <= keys.size_bytes() * 3) {
    m.header.aux |= kPushKeysAsDeltas;
    m.frames.insert(m.frames.begin() + 5, EncodeKeyDeltas(keys.span()));
  } else {
    m.frames.insert(m.frames.begin() + 5, transport::AsBytes(keys));
  }
  return m;
}

// `msg` with aux's low 32 bits alone (the rows' state values per value), as RowFramesOf reads it.
Message WithoutKeyForm(const Message& msg) {
  Message m = msg;
  m.header.aux &= kPushKeysAsDeltas - 1;
  return m;
}

// The push `req` with only the keys at indices `kept` (ascending), and their values.
ServerRequest KeepKeys(const ServerRequest& req, const std::vector<size_t>& kept, uint32_t push_arity) {
  const size_t per_value = ValueTypeSize(req.value_type) * push_arity;
  const std::vector<uint64_t> offsets = req.width == 0 ? Offsets(req.lens) : std::vector<uint64_t>();
  auto at = [&](size_t i) { return (req.width == 0 ? offsets[i] : i * req.width) * per_value; };
  ServerRequest out = req;
  std::vector<Key> keys;
  std::vector<std::byte> vals;
  std::vector<int32_t> lens;
  for (size_t i : kept) {
    keys.push_back(req.keys[i]);
    vals.insert(vals.end(), req.vals.begin() + at(i), req.vals.begin() + at(i + 1));
    if (req.width == 0) lens.push_back(req.lens[i]);
  }
  out.keys = SharedArray<Key>(std::move(keys));
  out.vals = Bytes(std::move(vals));
  out.lens = SharedArray<int32_t>(std::move(lens));
  return out;
}

// The replicas of the chains of `keys` (sorted) under `routing` that `me`, their owner, sends
// to, each with the runs of `keys` (index ranges [first, last)) that it gets.
std::vector<std::pair<NodeId, std::vector<std::pair<size_t, size_t>>>> ReplicaRuns(
    const cluster::Routing& routing, cluster::Placement placement, uint32_t me, std::span<const Key> keys) {
  std::vector<std::pair<NodeId, std::vector<std::pair<size_t, size_t>>>> out;
  // Most requests' keys share a segment: look the chain up once per run of one segment.
  size_t i = 0;
  while (i < keys.size()) {
    const size_t s = routing.ring().SegmentIndex(cluster::RoutingKey(placement, keys[i]));
    size_t j = i + 1;
    while (j < keys.size() && routing.ring().SegmentIndex(cluster::RoutingKey(placement, keys[j])) == s) ++j;
    std::span<const uint32_t> chain = routing.ChainOfSegment(s);
    // Only the owner sends (rows moved in before the view gives them here go with the view change).
    for (size_t c = 1; c < chain.size() && chain[0] == me; ++c) {
      const cluster::NodeInfo* replica = routing.Server(chain[c]);
      if (replica == nullptr) continue;
      auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == replica->id; });
      if (it == out.end()) it = out.insert(out.end(), {replica->id, {}});
      if (!it->second.empty() && it->second.back().second == i) {
        it->second.back().second = j;
      } else {
        it->second.emplace_back(i, j);
      }
    }
    i = j;
  }
  return out;
}

}  // namespace

void KVServerCore::StartReplication() {
  replication_ = std::make_unique<Replication>();
  replication_->name = runtime_->DescribeNode(runtime_->id());
  replication_->routing = runtime_->routing();
  replication_->epoch = replication_->routing->epoch();
  replication_->base.assign(cluster::PartitionPlacement::kPartitions, 0);
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

void KVServerCore::NoteReplicatedPush(const TableStore& store, const cluster::Routing& routing,
                                      const ServerRequest& req, const ReplicatedPush& push, bool with_values) {
  Replication& r = *replication_;
  // The owner remembers the pushes it applied too: a replica new to its chains gets them with
  // the rows (which hold their effects), or it would apply one again after this server's death.
  r.Remember(push);
  if (routing.chain_length() < 2 || req.keys.empty()) return;
  const TableSpec& spec = store.spec();
  // Push values per key: width * push_arity (variable length: lens[i] * push_arity).
  const size_t elem = ValueTypeSize(spec.value_type);
  const size_t per_value = elem * spec.push_arity;
  const bool variable = req.width == 0;
  const std::vector<uint64_t> offsets = with_values && variable ? Offsets(req.lens) : std::vector<uint64_t>();
  auto value_at = [&](size_t i) { return (variable ? offsets[i] : i * req.width) * per_value; };
  for (const auto& [replica, runs] : ReplicaRuns(routing, PlacementOf(spec), runtime_->rank().value,
                                                  {req.keys.data(), req.keys.size()})) {
    OutgoingRound& out = r.open[replica][store.table()];
    if (out.empty()) out.rows = store.ListRowsOf({});  // no rows: the table's layout for the header
    PushRecord record{push, req.clock, routing.epoch().value, 0};
    if (with_values) {
      for (const auto& [first, last] : runs) {
        record.keys += static_cast<uint32_t>(last - first);
        OutgoingRound::Run run{req.keys.Slice(first, last), req.vals.Slice(value_at(first), value_at(last)),
                               variable ? req.lens.Slice(first, last) : SharedArray<int32_t>()};
        out.num_keys += run.keys.size();
        out.value_bytes += run.values.size();
        out.runs.push_back(std::move(run));
      }
    }
    out.records.push_back(record);
  }
}

void KVServerCore::NoteReplicatedRows(const TableStore& store, const cluster::Routing& routing,
                                      std::span<const Key> keys) {
  if (routing.chain_length() < 2 || keys.empty()) return;
  const auto to = ReplicaRuns(routing, PlacementOf(store.spec()), runtime_->rank().value, keys);
  // The rows are listed now, so they hold every push applied so far: pushes of the open round
  // go first, or a replica would apply them on top of rows that hold them.
  Replication& r = *replication_;
  for (const auto& [replica, runs] : to) {
    auto tables = r.open.find(replica);
    if (tables != r.open.end() && tables->second.contains(store.table())) {
      FlushReplicas(/*force=*/true);
      break;
    }
  }
  for (const auto& [replica, runs] : to) {
    std::vector<Key> chosen;
    for (const auto& [first, last] : runs) chosen.insert(chosen.end(), keys.begin() + first, keys.begin() + last);
    OutgoingRound& out = r.open[replica][store.table()];
    out.rows = store.ListRowsOf(chosen);
    out.rows_epoch = routing.epoch().value;
  }
}

bool KVServerCore::SendReplicate(NodeId replica, Message m, int64_t round) {
  Replication& r = *replication_;
  m.header.type = MessageType::kReplicate;
  m.header.sender = runtime_->id();
  m.header.receiver = replica;
  m.header.request_id = r.next_request++;
  for (const Bytes& f : m.frames) r.replicated_bytes += f.size();
  ++r.replicate_messages;
  const int64_t id = m.header.request_id;
  if (Status s = runtime_->SendData(std::move(m)); !s.ok()) {
    // A replica declared dead is dropped by the view that follows: nothing waits for it. One
    // that lives but cannot be sent to would leave the replies waiting: they fail instead.
    PSERVER_LOG_WARN("{}: could not send to its replica {}: {}", runtime_->DescribeNode(runtime_->id()),
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
      // Chains of three or more servers replicate rows: a replica that got a dead owner's last
      // round while the heir did not holds rows the heir's resync does not replace; a row the heir
      // sends later (it applies the workers' resends) does, where a push would be applied twice.
      if (Result<TableStore*> store = FindStore(table); store.ok()) {
        AggregateIfSmaller(**store, out, /*always=*/r.routing->chain_length() >= 3);
      }
      Message m = Frame(std::move(out));
      m.header.table = table;
      messages += SendReplicate(replica, std::move(m), round);
    }
  }
  r.open.clear();
  if (messages > 0) r.unstored[round] = messages;
}

void KVServerCore::AggregateIfSmaller(const TableStore& store, OutgoingRound& out, bool always) {
  // Rows listed now hold every push applied here so far to these keys: this round's, and earlier
  // rounds'.
  const TableSpec& spec = store.spec();
  if (out.runs.empty() || (out.rows.size() > 0 && !always)) return;
  // The rows go under the oldest view of the round's pushes and rows: a replica whose rows of a
  // partition come from a newer view leaves them out, and its owner's resync of that view,
  // which follows on this channel, holds them (the partition's owner, or the replica, changed).
  uint64_t epoch = out.rows.size() > 0 ? out.rows_epoch : out.records.front().epoch;
  for (const PushRecord& p : out.records) epoch = std::min(epoch, p.epoch);
  const size_t elem = ValueTypeSize(spec.value_type);
  const size_t row_bytes = sizeof(Key) + size_t{spec.width} * elem * (1 + store.state_per_value());
  const size_t push_bytes = out.num_keys * sizeof(Key) + out.value_bytes;
  if (!always && (spec.variable_length || out.runs.size() < 2)) return;
  // An estimate first, from a sample of each run's keys looked up in the (up to 8) runs before
  // it (each run is sorted): pushes of distinct keys -- most sparse rounds -- are not merged for
  // nothing.
  constexpr size_t kSample = 32;
  constexpr size_t kLookBack = 8;
  double distinct = 0;
  for (size_t j = 0; !always && j < out.runs.size(); ++j) {
    const SharedArray<Key>& run = out.runs[j].keys;
    const size_t step = std::max<size_t>(1, run.size() / kSample);
    size_t seen = 0, sampled = 0;
    for (size_t i = 0; j > 0 && i < run.size(); i += step, ++sampled) {
      for (size_t e = j > kLookBack ? j - kLookBack : 0; e < j; ++e) {
        const SharedArray<Key>& earlier = out.runs[e].keys;
        if (std::binary_search(earlier.begin(), earlier.end(), run[i])) {
          ++seen;
          break;
        }
      }
    }
    distinct += sampled == 0 ? double(run.size()) : double(run.size()) * double(sampled - seen) / double(sampled);
  }
  // Rows must halve the bytes to pay for listing them here and storing them there (a replica
  // applying a push costs about what storing its row does).
  if (!always && distinct * double(row_bytes) >= 0.6 * double(push_bytes)) return;
  // The distinct keys: merging the sorted runs pairwise sorts them all.
  std::vector<Key> keys(out.rows.keys.begin(), out.rows.keys.end());  // rows moved in: a sorted run too
  keys.reserve(keys.size() + out.num_keys);
  std::vector<size_t> bounds{0};
  if (!keys.empty()) bounds.push_back(keys.size());
  for (const OutgoingRound::Run& run : out.runs) {
    keys.insert(keys.end(), run.keys.begin(), run.keys.end());
    bounds.push_back(keys.size());
  }
  while (bounds.size() > 2) {
    std::vector<size_t> merged{0};
    for (size_t i = 0; i + 1 < bounds.size(); i += 2) {
      if (i + 2 < bounds.size()) {
        std::inplace_merge(keys.begin() + bounds[i], keys.begin() + bounds[i + 1], keys.begin() + bounds[i + 2]);
        merged.push_back(bounds[i + 2]);
      } else {
        merged.push_back(bounds[i + 1]);
      }
    }
    bounds = std::move(merged);
  }
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  if (!always && 2 * keys.size() * row_bytes >= push_bytes) return;
  // Rows: many pushes of few keys, which is what aggregation is for (or chains of three or more).
  out.rows = store.ListRowsOf(keys);
  out.rows_epoch = epoch;
  ++replication_->aggregated_messages;
  for (PushRecord& p : out.records) p.keys = 0;
  out.runs.clear();
  out.num_keys = out.value_bytes = 0;
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
      // An error reply is never filtered (the reply's own filtering is undone with its frames).
      m.header.flags = static_cast<uint8_t>((m.header.flags & ~transport::kFlagFiltered) | transport::kFlagError);
      m.header.status = static_cast<uint8_t>(r.failure.code());
      m.frames.clear();
      m.frames.push_back(transport::BytesFromString(r.failure.message()));
    }
    if (Status s = SendReply(std::move(m)); !s.ok()) {
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
        fmt::format("replica {} refused what was replicated to it of table {}", runtime_->DescribeNode(msg.header.sender), msg.header.table.value));
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
  const uint64_t key_form = msg.header.aux >> 32;
  Result<RowBatch> rows = RowFramesOf(WithoutKeyForm(msg), "replicate");
  std::vector<PushRecord> records;
  if (owner == nullptr || owner->role != Role::kServer) {
    stored = Status::InvalidArgument(fmt::format("{} is no server of this server's view (epoch {})",
                                                 runtime_->DescribeNode(msg.header.sender), r.routing->epoch().value));
  } else if (msg.frames.size() != 8 || msg.frames[4].size() % kRecordBytes != 0) {
    stored = Status::Corruption(fmt::format("replicate with {} frames", msg.frames.size()));
  } else if (key_form > 1) {
    stored = Status::Corruption(fmt::format("replicate with push keys in an unknown form ({})", key_form));
  } else if (!rows.ok()) {
    stored = rows.status();
  } else if (FailpointActive("replica-stores-nothing")) {  // for the fault tests: see docs/errors.md
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      PSERVER_LOG_WARN("{}: failpoint replica-stores-nothing: answers what is replicated to it as applied, "
                       "applies none",
                       runtime_->DescribeNode(runtime_->id()));
    }
  } else {
    const Bytes& f = msg.frames[4];
    for (size_t at = 0; at + kRecordBytes <= f.size(); at += kRecordBytes) records.push_back(GetRecord(f.data() + at));
    Result<TableStore*> store = FindStore(msg.header.table);
    stored = store.ok() ? ApplyReplicated(*store, *rows, records, msg) : store.status();
  }
  if (stored.ok()) {
    r.replica_of.insert(msg.header.sender);
    for (const PushRecord& p : records) {
      if (!p.dropped) r.Remember(p.push);
    }
  } else {
    PSERVER_LOG_WARN("{}: refused what {} replicated to it: {}", runtime_->DescribeNode(runtime_->id()),
                     runtime_->DescribeNode(msg.header.sender), stored.ToString());
  }
  AnswerRows(msg, stored);
}

Status KVServerCore::ApplyReplicated(TableStore* store, const RowBatch& rows, std::vector<PushRecord>& records,
                                     const Message& msg) {
  // Every push is cut out of the message and checked as a worker's request is (Decode) before
  // any is applied: a malformed message changes nothing.
  const TableSpec& spec = store->spec();
  const uint32_t width = spec.variable_length ? 0 : spec.width;
  const size_t per_value = ValueTypeSize(spec.value_type) * spec.push_arity;
  Bytes keys = msg.frames[5];
  const Bytes& values = msg.frames[6];
  const Bytes& lens = msg.frames[7];
  if (msg.header.aux & kPushKeysAsDeltas) {
    uint64_t named = 0;
    for (const PushRecord& p : records) named += p.keys;
    PSERVER_ASSIGN_OR_RETURN(SharedArray<Key> decoded, DecodeKeyDeltas({keys.data(), keys.size()}, named));
    keys = transport::AsBytes(decoded);
  }
  if (keys.size() % sizeof(Key) != 0 || lens.size() % sizeof(int32_t) != 0) {
    return Status::Corruption(fmt::format("replicate with {} key bytes and {} length bytes", keys.size(), lens.size()));
  }
  const size_t num_keys = keys.size() / sizeof(Key);
  std::vector<ServerRequest> pushes;
  size_t key_at = 0, value_at = 0;
  for (const PushRecord& p : records) {
    if (p.keys == 0) continue;  // a record only
    if (p.keys > num_keys - key_at) {
      return Status::Corruption(fmt::format("replicate whose records name more than its {} keys", num_keys));
    }
    Message one;
    one.header.type = MessageType::kPush;
    one.header.table = msg.header.table;
    one.header.sender = p.push.worker;
    one.header.request_id = p.push.ts;
    one.header.clock = p.clock;
    one.header.value_type = spec.value_type;
    one.header.width = width;
    const size_t left = values.size() - value_at;
    size_t value_bytes = 0;
    Bytes own_lens;
    if (width > 0) {
      const size_t per_key = size_t{width} * per_value;
      if (p.keys > left / per_key) {
        return Status::Corruption(fmt::format("replicate whose pushes need more than its {} value bytes", values.size()));
      }
      value_bytes = p.keys * per_key;
    } else {
      if (lens.size() / sizeof(int32_t) != num_keys) {
        return Status::Corruption(fmt::format("replicate with {} lengths for {} keys", lens.size() / sizeof(int32_t), num_keys));
      }
      own_lens = lens.Slice(key_at * sizeof(int32_t), (key_at + p.keys) * sizeof(int32_t));
      value_bytes = 0;
      for (size_t i = 0; i < p.keys; ++i) {
        int32_t len;
        std::memcpy(&len, own_lens.data() + i * sizeof(int32_t), sizeof(len));
        if (len < 0) return Status::Corruption(fmt::format("replicate with a negative length ({})", len));
        value_bytes += static_cast<size_t>(len) * per_value;
        if (value_bytes > left) {
          return Status::Corruption(fmt::format("replicate whose pushes need more than its {} value bytes", values.size()));
        }
      }
    }
    one.frames.push_back(keys.Slice(key_at * sizeof(Key), (key_at + p.keys) * sizeof(Key)));
    one.frames.push_back(values.Slice(value_at, value_at + value_bytes));
    one.frames.push_back(std::move(own_lens));
    key_at += p.keys;
    value_at += value_bytes;
    PSERVER_ASSIGN_OR_RETURN(ServerRequest req, Decode(one, spec));
    pushes.push_back(std::move(req));
  }
  if (key_at != num_keys || value_at != values.size()) {
    return Status::Corruption(fmt::format("replicate with {} keys and {} value bytes its records do not name",
                                          num_keys - key_at, values.size() - value_at));
  }
  // What an owner sent under a view older than the one this server's rows of a partition come
  // from is left out (Replication::base).
  Replication& r = *replication_;
  const cluster::Placement placement = PlacementOf(spec);
  auto partition = [placement](Key k) {
    return cluster::PartitionPlacement::PartitionOf(cluster::RoutingKey(placement, k));
  };
  auto current = [&](Key k, uint64_t epoch) { return r.base[partition(k)] <= epoch; };
  // A push left out, wholly or in part, is not remembered as held: a resend of it after a
  // failover is applied (the rows that replaced it may lack it). Records without keys stand for
  // the rows' effects, and fall with any row left out.
  const uint64_t rows_epoch = msg.header.clock;
  RowBatch taken = rows;
  if (rows.size() > 0 && rows_epoch < r.newest_base) {
    std::vector<size_t> kept;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (current(rows.keys[i], rows_epoch)) kept.push_back(i);
    }
    if (kept.size() < rows.size()) {
      taken = SelectRows(rows, kept);
      for (PushRecord& p : records) p.dropped = p.keys == 0;
    }
  }
  size_t next = 0;
  for (PushRecord& p : records) {
    if (p.keys == 0) continue;
    ServerRequest& req = pushes[next++];
    if (p.epoch >= r.newest_base) continue;
    std::vector<size_t> kept;
    for (size_t i = 0; i < req.keys.size(); ++i) {
      if (current(req.keys[i], p.epoch)) kept.push_back(i);
    }
    if (kept.size() < req.keys.size()) {
      req = KeepKeys(req, kept, spec.push_arity);
      p.dropped = true;
    }
  }
  // A dense table takes every key's range first, so that nothing is applied when one fails.
  for (const ServerRequest& req : pushes) PSERVER_RETURN_IF_ERROR(CoverKeys(store, req.keys));
  if (taken.size() > 0) {
    PSERVER_RETURN_IF_ERROR(InsertRowsLocked(store, taken));
    for (Key k : taken.keys) r.Raise(partition(k), rows_epoch);
  }
  for (const ServerRequest& req : pushes) {
    if (req.keys.empty()) continue;
    const UpdateContext ctx{req.sender, req.timestamp, req.clock};
    ServerResponse unused;
    PSERVER_RETURN_IF_ERROR(store->Handle(req, ctx, &unused));
  }
  return Status::Ok();
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

  // The resync: per partition, the replicas that must get all of its rows from this server. A
  // view that calls off a membership change after its switch (ClusterView::resync) follows one
  // that only the change's donors saw: it may have taken replicas out of this server's chains and
  // put them back, dropping their rows unseen, so every replica gets them again.
  const bool resync_all = after->view().resync;
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
    const bool in_was = std::find(was.begin(), was.end(), me) != was.end();
    const bool in_now = std::find(now.begin(), now.end(), me) != now.end();
    if (now[0] != was[0] || in_now != in_was) r.Raise(p, after->epoch().value);
    if (now[0] != me) {
      if (was_replica && std::find(now.begin(), now.end(), me) == now.end()) dropped[p] = any_dropped = true;
      continue;
    }
    for (size_t i = 1; i < now.size(); ++i) {
      const bool kept = !resync_all && was[0] == me && std::find(was.begin(), was.end(), now[i]) != was.end();
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
  // The first message to a replica carries every push this server remembers, as records only
  // (the rows hold their effects); with no rows to send it goes with none.
  const std::vector<PushRecord> all_pushes = AllRemembered(r.pushes);
  const std::vector<std::pair<TableId, TableSpec>> specs = TableSpecs();
  for (const auto& [replica, chosen] : resync) {
    const std::vector<bool>& parts = chosen;  // (a lambda cannot capture a structured binding)
    std::vector<PushRecord> pushes = all_pushes;
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
        OutgoingRound out;
        out.rows = SliceRows(rows, first, std::min(rows.size(), first + kMigrateBatchRows));
        out.rows_epoch = after->epoch().value;
        out.records = std::move(pushes);
        pushes.clear();
        Message m = Frame(std::move(out));
        m.header.table = id;
        messages += SendReplicate(replica, std::move(m), round);
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
