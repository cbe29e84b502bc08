#include "cluster/control_messages.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "base/wire_io.h"

namespace pserver::cluster {
namespace {

using base::WireReader;
using base::WireWriter;

constexpr uint32_t kMaxNodes = 1 << 16;

bool ReadRole(WireReader& r, Role* role) {
  uint8_t v;
  if (!r.U8(&v) || v > static_cast<uint8_t>(Role::kWorker)) return false;
  *role = static_cast<Role>(v);
  return true;
}

WireReader ReaderOf(const transport::Bytes& body) { return WireReader({body.data(), body.size()}); }

Status Malformed(const char* what) { return Status::Corruption(fmt::format("malformed {} body", what)); }

}  // namespace

std::string NodeName(Role role, Rank rank, NodeId id) {
  if (role == Role::kScheduler) return fmt::format("the scheduler (node {})", id.value);
  return fmt::format("{} {} (node {})", RoleName(role), rank.value, id.value);
}

transport::Bytes Encode(const RegisterRequest& m) {
  WireWriter w;
  w.U8(static_cast<uint8_t>(m.role));
  w.Str(m.address);
  w.I64(m.rank_hint);
  w.U64(m.scheduler_identity.hi);
  w.U64(m.scheduler_identity.lo);
  return transport::BytesFromString(w.Take());
}

Result<RegisterRequest> DecodeRegisterRequest(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  RegisterRequest m;
  // ReadRole can fail on a bad value without failing the reader: keep the chain's result.
  bool ok = ReadRole(r, &m.role) && r.Str(&m.address) && r.I64(&m.rank_hint) && r.U64(&m.scheduler_identity.hi) &&
            r.U64(&m.scheduler_identity.lo);
  if (!ok || !r.Done() || m.role == Role::kScheduler || m.address.empty() || m.scheduler_identity.anonymous()) {
    return Malformed("register");
  }
  return m;
}

namespace {

void WriteView(WireWriter& w, const ClusterView& v) {
  w.U64(v.epoch.value);
  w.U32(v.num_servers);
  w.U32(v.num_workers);
  w.U32(static_cast<uint32_t>(v.nodes.size()));
  for (const NodeInfo& n : v.nodes) {
    w.U32(n.id.value);
    w.U8(static_cast<uint8_t>(n.role));
    w.U32(n.rank.value);
    w.Str(n.address);
    w.U64(n.identity.hi);
    w.U64(n.identity.lo);
  }
  w.U32(static_cast<uint32_t>(v.ring.size()));
  for (const RingSegment& s : v.ring) {
    w.U64(s.range.first);
    w.U32(s.server);
  }
  w.U32(v.replicas);
  w.U8(v.resync ? 1 : 0);
}

// Reads a view and checks what a node relies on: the node count matches the role counts, every
// server rank and node id is unique, and the ring's segments tile the routing-key space in
// order, each owned by a server of the view and none by the same as its neighbour (at least one
// segment when there are servers).
bool ReadView(WireReader& r, ClusterView* v) {
  uint32_t count = 0;
  r.U64(&v->epoch.value) && r.U32(&v->num_servers) && r.U32(&v->num_workers) &&
      r.U32(&count);
  if (!r.ok() || count > kMaxNodes || uint64_t{count} != uint64_t{v->num_servers} + v->num_workers) return false;
  v->nodes.resize(count);
  absl::flat_hash_set<uint32_t> ids, server_ranks;
  uint32_t servers = 0;
  for (NodeInfo& n : v->nodes) {
    if (!(r.U32(&n.id.value) && ReadRole(r, &n.role) && r.U32(&n.rank.value) && r.Str(&n.address) &&
          r.U64(&n.identity.hi) && r.U64(&n.identity.lo))) {
      return false;
    }
    if (n.role == Role::kScheduler || !ids.insert(n.id.value).second) return false;
    if (n.role == Role::kServer) {
      ++servers;
      if (!server_ranks.insert(n.rank.value).second) return false;
    }
  }
  if (servers != v->num_servers || !r.U32(&count) || count > kMaxRingSegments) return false;
  if (count == 0 && v->num_servers > 0) return false;
  v->ring.resize(count);
  for (size_t i = 0; i < v->ring.size(); ++i) {
    RingSegment& s = v->ring[i];
    if (!r.U64(&s.range.first) || !r.U32(&s.server) || !server_ranks.contains(s.server)) return false;
    if (i == 0 ? s.range.first != 0
               : s.range.first <= v->ring[i - 1].range.first || s.server == v->ring[i - 1].server) {
      return false;
    }
    if (i > 0) v->ring[i - 1].range.last = s.range.first - 1;
  }
  if (!v->ring.empty()) v->ring.back().range.last = ~uint64_t{0};
  uint8_t resync = 0;
  if (!r.U32(&v->replicas) || v->replicas < 1 || v->replicas > kMaxReplicas || !r.U8(&resync) || resync > 1) {
    return false;
  }
  v->resync = resync == 1;
  return true;
}

}  // namespace

transport::Bytes Encode(const ClusterView& m) {
  WireWriter w;
  WriteView(w, m);
  return transport::BytesFromString(w.Take());
}

Result<ClusterView> DecodeClusterView(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  ClusterView m;
  if (!ReadView(r, &m) || !r.Done()) return Malformed("cluster-view");
  return m;
}

transport::Bytes Encode(const RegisterReply& m) {
  WireWriter w;
  w.U32(m.your_id.value);
  WriteView(w, m.view);
  return transport::BytesFromString(w.Take());
}

Result<RegisterReply> DecodeRegisterReply(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  RegisterReply m;
  if (!r.U32(&m.your_id.value) || !ReadView(r, &m.view) || !r.Done()) return Malformed("register-reply");
  return m;
}

transport::Bytes Encode(const TableDeclaration& m) {
  WireWriter w;
  w.Str(m.name);
  w.Str(m.summary);
  w.Str(std::string_view(reinterpret_cast<const char*>(m.spec.data()), m.spec.size()));
  return transport::BytesFromString(w.Take());
}

Result<TableDeclaration> DecodeTableDeclaration(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  TableDeclaration m;
  std::string spec;
  if (!r.Str(&m.name, kMaxTableName) || !r.Str(&m.summary, kMaxTableSummary) || !r.Str(&spec, kMaxTableSpec) ||
      !r.Done() || m.name.empty()) {
    return Malformed("declare-table");
  }
  m.spec = transport::BytesFromString(std::move(spec));
  return m;
}

transport::Bytes Encode(const NodeFailure& m) {
  WireWriter w;
  w.U32(m.id.value);
  w.U8(static_cast<uint8_t>(m.role));
  w.U32(m.rank.value);
  w.Str(m.reason);
  return transport::BytesFromString(w.Take());
}

Result<NodeFailure> DecodeNodeFailure(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  NodeFailure m;
  bool ok = r.U32(&m.id.value) && ReadRole(r, &m.role) && r.U32(&m.rank.value) && r.Str(&m.reason);
  if (!ok || !r.Done()) return Malformed("node-failed");
  return m;
}

transport::Bytes Encode(const MigrateOrder& m) {
  WireWriter w;
  w.U32(static_cast<uint32_t>(m.targets.size()));
  for (const MigrateTarget& t : m.targets) {
    w.U32(t.to.value);
    w.U32(static_cast<uint32_t>(t.ranges.size()));
    for (const KeyRange& r : t.ranges) {
      w.U64(r.first);
      w.U64(r.last);
    }
  }
  return transport::BytesFromString(w.Take());
}

Result<MigrateOrder> DecodeMigrateOrder(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  MigrateOrder m;
  uint32_t targets = 0;
  size_t total = 0;
  if (!r.U32(&targets) || targets > kMaxNodes) return Malformed("migrate");
  for (uint32_t i = 0; i < targets; ++i) {
    MigrateTarget t;
    uint32_t ranges = 0;
    if (!r.U32(&t.to.value) || !r.U32(&ranges) || ranges == 0 || (total += ranges) > kMaxMigrateRanges) {
      return Malformed("migrate");
    }
    t.ranges.resize(ranges);
    for (size_t j = 0; j < t.ranges.size(); ++j) {
      KeyRange& k = t.ranges[j];
      if (!r.U64(&k.first) || !r.U64(&k.last) || k.first > k.last ||
          (j > 0 && k.first <= t.ranges[j - 1].last)) {
        return Malformed("migrate");
      }
    }
    m.targets.push_back(std::move(t));
  }
  if (!r.Done()) return Malformed("migrate");
  return m;
}

transport::Bytes Encode(const MigrateReport& m) {
  WireWriter w;
  w.U64(m.rows);
  w.U64(m.bytes);
  return transport::BytesFromString(w.Take());
}

Result<MigrateReport> DecodeMigrateReport(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  MigrateReport m;
  if (!r.U64(&m.rows) || !r.U64(&m.bytes) || !r.Done()) return Malformed("migrate-reply");
  return m;
}

transport::Bytes Encode(const AdminRequest& m) {
  WireWriter w;
  w.U8(static_cast<uint8_t>(m.op));
  w.U32(m.node.value);
  w.Str(m.reply_address);
  w.Str(m.path);
  return transport::BytesFromString(w.Take());
}

Result<AdminRequest> DecodeAdminRequest(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  AdminRequest m;
  uint8_t op = 0;
  if (!r.U8(&op) || op < static_cast<uint8_t>(AdminOp::kStatus) || op > static_cast<uint8_t>(AdminOp::kTakeOver) ||
      !r.U32(&m.node.value) || !r.Str(&m.reply_address, 1024) || !r.Str(&m.path, 4096) || !r.Done()) {
    return Malformed("admin");
  }
  m.op = static_cast<AdminOp>(op);
  return m;
}

transport::Bytes Encode(const CheckpointWritten& m) {
  WireWriter w;
  w.U64(m.bytes);
  w.U64(m.rows);
  w.U64(m.checksum);
  return transport::BytesFromString(w.Take());
}

Result<CheckpointWritten> DecodeCheckpointWritten(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  CheckpointWritten m;
  if (!r.U64(&m.bytes) || !r.U64(&m.rows) || !r.U64(&m.checksum) || !r.Done()) return Malformed("checkpoint-written");
  return m;
}

transport::Bytes Encode(const std::vector<TableStats>& m) {
  WireWriter w;
  w.U32(static_cast<uint32_t>(m.size()));
  for (const TableStats& t : m) {
    w.U32(t.table.value);
    w.U64(t.rows);
    w.U64(t.bytes);
  }
  return transport::BytesFromString(w.Take());
}

Result<std::vector<TableStats>> DecodeTableStats(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  uint32_t n = 0;
  if (!r.U32(&n) || n > kMaxTableStats) return Malformed("table-stats");
  std::vector<TableStats> m(n);
  for (TableStats& t : m) {
    if (!r.U32(&t.table.value) || !r.U64(&t.rows) || !r.U64(&t.bytes)) return Malformed("table-stats");
  }
  if (!r.Done()) return Malformed("table-stats");
  return m;
}

Status CarriedError(const transport::Message& msg) {
  constexpr size_t kMaxText = 4096;
  std::string text = msg.frames.empty()
                         ? std::string("(no message)")
                         : std::string(reinterpret_cast<const char*>(msg.frames[0].data()),
                                       std::min(msg.frames[0].size(), kMaxText));
  auto code = static_cast<StatusCode>(msg.header.status);
  if (code == StatusCode::kOk || code > StatusCode::kInternal) code = StatusCode::kInternal;
  return Status(code, std::move(text));
}

}  // namespace pserver::cluster
