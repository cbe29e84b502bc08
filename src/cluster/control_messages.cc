#include "cluster/control_messages.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "base/wire_io.h"

namespace pserver::cluster {
namespace {

using base::WireReader;
using base::WireWriter;

constexpr uint32_t kMaxNodes = 1 << 16;
// Bounds of a table spec on the wire (looser than ValidateTableSpec's, which names the problem).
constexpr size_t kMaxWireName = 1024;
constexpr uint32_t kMaxWireParams = 1024;
constexpr uint32_t kMaxUpdaterParams = 32;
constexpr size_t kMaxUpdaterName = 64;
constexpr Key kMaxDenseKeys = Key{1} << 32;

// Doubles travel as the u64 of their IEEE-754 bits.
void F64(WireWriter& w, double v) { w.U64(std::bit_cast<uint64_t>(v)); }
bool F64(WireReader& r, double* v) {
  uint64_t bits = 0;
  if (!r.U64(&bits)) return false;
  *v = std::bit_cast<double>(bits);
  return true;
}

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

transport::Bytes Encode(const TableSpec& m) {
  WireWriter w;
  w.Str(m.name);
  w.U8(static_cast<uint8_t>(m.value_type));
  w.U32(m.width);
  w.U8(m.variable_length ? 1 : 0);
  w.U8(static_cast<uint8_t>(m.placement));
  w.U64(m.key_range.first);
  w.U64(m.key_range.last);
  w.U8(static_cast<uint8_t>(m.storage));
  w.Str(m.updater.name);
  w.U32(static_cast<uint32_t>(m.updater.params.size()));
  for (const auto& [name, value] : m.updater.params) {  // std::map: sorted, unique
    w.Str(name);
    F64(w, value);
  }
  w.U32(m.push_arity);
  w.U8(static_cast<uint8_t>(m.initializer.kind));
  F64(w, m.initializer.scale);
  w.U64(m.initializer.seed);
  return transport::BytesFromString(w.Take());
}

Result<TableSpec> DecodeTableSpec(const transport::Bytes& body) {
  WireReader r = ReaderOf(body);
  TableSpec m;
  uint8_t vt = 0, var = 0, placement = 0, storage = 0, init_kind = 0;
  uint32_t num_params = 0;
  bool ok = r.Str(&m.name, kMaxWireName) && r.U8(&vt) && r.U32(&m.width) && r.U8(&var) && r.U8(&placement) &&
            r.U64(&m.key_range.first) && r.U64(&m.key_range.last) && r.U8(&storage) &&
            r.Str(&m.updater.name, kMaxWireName) && r.U32(&num_params);
  if (!ok || num_params > kMaxWireParams) return Malformed("declare-table");
  for (uint32_t i = 0; i < num_params; ++i) {
    std::string name;
    double value = 0;
    if (!r.Str(&name, kMaxWireName) || !F64(r, &value)) return Malformed("declare-table");
    // Strictly ascending names: the encoding of a std::map, so that it is canonical.
    if (!m.updater.params.empty() && !(m.updater.params.rbegin()->first < name)) return Malformed("declare-table");
    m.updater.params.emplace_hint(m.updater.params.end(), std::move(name), value);
  }
  ok = r.U32(&m.push_arity) && r.U8(&init_kind) && F64(r, &m.initializer.scale) && r.U64(&m.initializer.seed);
  if (!ok || !r.Done() || var > 1 || placement > static_cast<uint8_t>(KeyPlacement::kIdentity) ||
      storage > static_cast<uint8_t>(StorageKind::kDense) ||
      init_kind > static_cast<uint8_t>(InitializerSpec::Kind::kUniform)) {
    return Malformed("declare-table");
  }
  m.value_type = static_cast<ValueType>(vt);
  m.variable_length = var == 1;
  m.placement = static_cast<KeyPlacement>(placement);
  m.storage = static_cast<StorageKind>(storage);
  m.initializer.kind = static_cast<InitializerSpec::Kind>(init_kind);
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

Status ValidateTableSpec(const TableSpec& spec) {
  if (spec.name.empty() || spec.name.size() > 128) {
    return Status::InvalidArgument(fmt::format("table name must be 1 to 128 bytes, got {}", spec.name.size()));
  }
  if (ValueTypeSize(spec.value_type) == 0) {
    return Status::InvalidArgument(fmt::format("table '{}': unknown value type {}", spec.name,
                                               static_cast<int>(spec.value_type)));
  }
  if (!spec.variable_length && spec.width == 0) {
    return Status::InvalidArgument(fmt::format("table '{}': width must be at least 1", spec.name));
  }
  if (spec.placement == KeyPlacement::kRange && spec.key_range.first > spec.key_range.last) {
    return Status::InvalidArgument(fmt::format("table '{}': key range [{}, {}] is empty", spec.name,
                                               spec.key_range.first, spec.key_range.last));
  }
  if (spec.storage == StorageKind::kDense) {
    if (spec.placement != KeyPlacement::kRange) {
      return Status::InvalidArgument(
          fmt::format("table '{}': dense storage needs key placement kRange (a declared key range)", spec.name));
    }
    if (spec.key_range.last - spec.key_range.first >= kMaxDenseKeys) {
      return Status::InvalidArgument(fmt::format("table '{}': dense storage allows at most 2^32 keys, the range [{}, {}] "
                                                 "has more",
                                                 spec.name, spec.key_range.first, spec.key_range.last));
    }
  } else if (spec.storage != StorageKind::kSparse) {
    return Status::InvalidArgument(
        fmt::format("table '{}': unknown storage kind {}", spec.name, static_cast<int>(spec.storage)));
  }
  if (spec.push_arity != 1 && spec.push_arity != 2) {
    return Status::InvalidArgument(
        fmt::format("table '{}': push_arity must be 1 or 2, got {}", spec.name, spec.push_arity));
  }
  if (spec.updater.name.empty() || spec.updater.name.size() > kMaxUpdaterName) {
    return Status::InvalidArgument(fmt::format("table '{}': updater name must be 1 to {} bytes, got {}", spec.name,
                                               kMaxUpdaterName, spec.updater.name.size()));
  }
  if (spec.updater.params.size() > kMaxUpdaterParams) {
    return Status::InvalidArgument(fmt::format("table '{}': updater '{}' has {} params, at most {} allowed", spec.name,
                                               spec.updater.name, spec.updater.params.size(), kMaxUpdaterParams));
  }
  for (const auto& [name, value] : spec.updater.params) {
    if (name.empty() || name.size() > kMaxUpdaterName) {
      return Status::InvalidArgument(fmt::format("table '{}': updater param names must be 1 to {} bytes, got {}",
                                                 spec.name, kMaxUpdaterName, name.size()));
    }
    if (!std::isfinite(value)) {
      return Status::InvalidArgument(
          fmt::format("table '{}': updater param '{}' is {}, not a finite number", spec.name, name, value));
    }
  }
  if (spec.initializer.kind != InitializerSpec::Kind::kZero &&
      spec.initializer.kind != InitializerSpec::Kind::kUniform) {
    return Status::InvalidArgument(fmt::format("table '{}': unknown initializer kind {}", spec.name,
                                               static_cast<int>(spec.initializer.kind)));
  }
  if (!std::isfinite(spec.initializer.scale) || spec.initializer.scale < 0) {
    return Status::InvalidArgument(fmt::format("table '{}': initializer scale must be finite and >= 0, got {}",
                                               spec.name, spec.initializer.scale));
  }
  return Status::Ok();
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
