#include "kv/table_catalog.h"

#include <fmt/format.h>

#include <cmath>

#include "base/wire_io.h"
#include "kv/filter/filter.h"

namespace pserver::kv {
namespace {

using base::WireReader;
using base::WireWriter;

// Bounds of a table spec on the wire (looser than ValidateTableSpec's, which names the problem).
constexpr size_t kMaxWireName = 1024;
constexpr uint32_t kMaxWireParams = 1024;
constexpr uint32_t kMaxUpdaterParams = 32;
constexpr uint32_t kMaxWireFilters = 64;
constexpr size_t kMaxUpdaterName = 64;
constexpr Key kMaxDenseKeys = Key{1} << 32;

Status Malformed() { return Status::Corruption("malformed table spec"); }

// Reads `count` (name, value) params, strictly ascending by name (a std::map's encoding, so
// that it is canonical).
bool ReadParams(WireReader& r, std::map<std::string, double>* params) {
  uint32_t count = 0;
  if (!r.U32(&count) || count > kMaxWireParams) return false;
  for (uint32_t i = 0; i < count; ++i) {
    std::string name;
    double value = 0;
    if (!r.Str(&name, kMaxWireName) || !r.F64(&value)) return false;
    if (!params->empty() && !(params->rbegin()->first < name)) return false;
    params->emplace_hint(params->end(), std::move(name), value);
  }
  return true;
}

}  // namespace

transport::Bytes EncodeTableSpec(const TableSpec& m) {
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
    w.F64(value);
  }
  w.U32(m.push_arity);
  w.U8(static_cast<uint8_t>(m.initializer.kind));
  w.F64(m.initializer.scale);
  w.U64(m.initializer.seed);
  w.U8(m.checkpointed ? 1 : 0);
  w.U32(static_cast<uint32_t>(m.filters.size()));
  for (const FilterSpec& f : m.filters) {
    w.Str(f.name);
    w.U32(static_cast<uint32_t>(f.params.size()));
    for (const auto& [name, value] : f.params) {
      w.Str(name);
      w.F64(value);
    }
  }
  return transport::BytesFromString(w.Take());
}

Result<TableSpec> DecodeTableSpec(const transport::Bytes& body) {
  WireReader r({body.data(), body.size()});
  TableSpec m;
  uint8_t vt = 0, var = 0, placement = 0, storage = 0, init_kind = 0, checkpointed = 0;
  bool ok = r.Str(&m.name, kMaxWireName) && r.U8(&vt) && r.U32(&m.width) && r.U8(&var) && r.U8(&placement) &&
            r.U64(&m.key_range.first) && r.U64(&m.key_range.last) && r.U8(&storage) &&
            r.Str(&m.updater.name, kMaxWireName) && ReadParams(r, &m.updater.params);
  if (!ok) return Malformed();
  ok = r.U32(&m.push_arity) && r.U8(&init_kind) && r.F64(&m.initializer.scale) && r.U64(&m.initializer.seed) &&
       r.U8(&checkpointed);
  uint32_t num_filters = 0;
  ok = ok && r.U32(&num_filters) && num_filters <= kMaxWireFilters;
  for (uint32_t i = 0; ok && i < num_filters; ++i) {
    FilterSpec& f = m.filters.emplace_back();
    ok = r.Str(&f.name, kMaxWireName) && ReadParams(r, &f.params);
  }
  if (!ok || !r.Done() || var > 1 || checkpointed > 1 || placement > static_cast<uint8_t>(KeyPlacement::kIdentity) ||
      storage > static_cast<uint8_t>(StorageKind::kDense) ||
      init_kind > static_cast<uint8_t>(InitializerSpec::Kind::kUniform)) {
    return Malformed();
  }
  m.value_type = static_cast<ValueType>(vt);
  m.variable_length = var == 1;
  m.checkpointed = checkpointed == 1;
  m.placement = static_cast<KeyPlacement>(placement);
  m.storage = static_cast<StorageKind>(storage);
  m.initializer.kind = static_cast<InitializerSpec::Kind>(init_kind);
  return m;
}

Status ValidateTableSpec(const TableSpec& spec, const Updater* rule) {
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
    if (spec.variable_length) {
      return Status::InvalidArgument(
          fmt::format("table '{}': variable-length rows need sparse storage, not dense", spec.name));
    }
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
  if (spec.initializer.kind == InitializerSpec::Kind::kUniform && spec.value_type != ValueType::kFloat32 &&
      spec.value_type != ValueType::kFloat64) {
    return Status::InvalidArgument(fmt::format("table '{}': the uniform initializer needs a float or double table, not {}",
                                               spec.name, ValueTypeName(spec.value_type)));
  }
  if (Result<FilterChain> chain = MakeFilterChain(spec); !chain.ok()) return chain.status();
  if (rule == nullptr) return Status::Ok();
  // The rule: its value types, push arity and widths, and rows that fit a request's int32 sizes
  // (a variable-length row's width comes from an int32 length and is checked per push).
  if (!rule->Supports(spec.value_type)) {
    return Status::InvalidArgument(fmt::format("table '{}': updater '{}' does not take {} values", spec.name,
                                               spec.updater.name, ValueTypeName(spec.value_type)));
  }
  if (rule->push_arity() != spec.push_arity) {
    return Status::InvalidArgument(fmt::format("table '{}': updater '{}' takes pushes of arity {}, the table declares {}",
                                               spec.name, spec.updater.name, rule->push_arity(), spec.push_arity));
  }
  if (Status s = rule->FitsWidth(spec.width, spec.variable_length); !s.ok()) {
    return Status(s.code(), fmt::format("table '{}': updater '{}': {}", spec.name, spec.updater.name, s.message()));
  }
  const uint64_t width = spec.variable_length ? 1 : spec.width;
  const uint64_t row_len = width * (uint64_t{rule->state_per_value()} + 1);
  if (row_len > 0x7fffffffULL || width * spec.push_arity > 0x7fffffffULL) {
    return Status::InvalidArgument(fmt::format("table '{}': rows of {} values (with the rule's state) are too wide",
                                               spec.name, row_len));
  }
  return Status::Ok();
}

std::string SummarizeTableSpec(const TableSpec& spec) {
  std::string filters;
  for (const FilterSpec& f : spec.filters) filters += fmt::format("{}{}", filters.empty() ? ", filters " : " ", f.name);
  return fmt::format("{}, width {}, {} length, updater '{}', push_arity {}{}{}", ValueTypeName(spec.value_type),
                     spec.width, spec.variable_length ? "variable" : "fixed", spec.updater.name, spec.push_arity,
                     spec.checkpointed ? "" : ", not checkpointed", filters);
}

Result<TableId> DeclareTable(cluster::NodeRuntime& runtime, const TableSpec& spec, std::chrono::milliseconds timeout) {
  PSERVER_RETURN_IF_ERROR(ValidateTableSpec(spec));
  cluster::TableDeclaration declaration{spec.name, SummarizeTableSpec(spec), EncodeTableSpec(spec)};
  return runtime.DeclareTable(declaration, timeout);
}

Result<TableCatalog::Entry> TableCatalog::Lookup(TableId id) const {
  {
    MutexLock lock(&mu_);
    if (auto it = entries_.find(id); it != entries_.end()) return it->second;
  }
  PSERVER_ASSIGN_OR_RETURN(transport::Bytes body, runtime_->FindTable(id));
  Result<TableSpec> spec = DecodeTableSpec(body);
  Status valid = spec.ok() ? ValidateTableSpec(*spec) : spec.status();
  Result<FilterChain> chain = valid.ok() ? MakeFilterChain(*spec) : valid;
  if (!chain.ok()) return chain.status().WithContext(fmt::format("table {}", id.value));
  Entry entry{std::make_shared<const TableSpec>(std::move(*spec)), std::make_shared<const FilterChain>(std::move(*chain))};
  MutexLock lock(&mu_);
  return entries_.try_emplace(id, std::move(entry)).first->second;
}

Result<std::shared_ptr<const TableSpec>> TableCatalog::Find(TableId id) const {
  PSERVER_ASSIGN_OR_RETURN(Entry entry, Lookup(id));
  return entry.spec;
}

Result<std::shared_ptr<const FilterChain>> TableCatalog::Filters(TableId id) const {
  PSERVER_ASSIGN_OR_RETURN(Entry entry, Lookup(id));
  return entry.filters;
}

void TableCatalog::ForgetPeer(NodeId peer) const {
  MutexLock lock(&mu_);
  for (const auto& [id, entry] : entries_) entry.filters->Forget(peer);
}

}  // namespace pserver::kv
