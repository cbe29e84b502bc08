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
  w.U32(v.virtual_nodes);
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
  for (uint32_t rank : v.ring) w.U32(rank);
}

// Reads a view and checks what a node relies on: the node count matches the role counts, every
// server rank and node id is unique, and the ring lists distinct ranks of servers of the view
// (at least one when there are servers).
bool ReadView(WireReader& r, ClusterView* v) {
  uint32_t count = 0;
  r.U64(&v->epoch.value) && r.U32(&v->num_servers) && r.U32(&v->num_workers) && r.U32(&v->virtual_nodes) &&
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
  if (servers != v->num_servers || !r.U32(&count) || count > v->num_servers) return false;
  if (count == 0 && v->num_servers > 0) return false;
  v->ring.resize(count);
  absl::flat_hash_set<uint32_t> on_ring;
  for (uint32_t& rank : v->ring) {
    if (!r.U32(&rank) || !server_ranks.contains(rank) || !on_ring.insert(rank).second) return false;
  }
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
