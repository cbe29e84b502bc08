// The table catalog: the one place that reads a table's spec (pserver/table.h) -- its check,
// its wire encoding, its placement, and the lookup of a declared table's spec by id.
//
// Below the kv layer a table is opaque: the cluster layer carries a cluster::TableDeclaration
// (the table's name, a summary for error messages and the bytes EncodeTableSpec makes), the
// scheduler matches declarations of one name by those bytes and the runtime keeps them by table
// id. A spec is checked where it enters, by the one check below: by DeclareTable on the
// declaring node (the user's spec) and by each server when the scheduler announces it (a peer's
// bytes: decoded, then checked with the table's rule when its store is built).
//
// Thread safety: the free functions are thread-safe; TableCatalog is thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "cluster/key_placement.h"
#include "cluster/node_runtime.h"
#include "kv/filter/filter.h"
#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/updater.h"
#include "transport/message.h"

namespace pserver::kv {

// The wire form of a spec: canonical (one encoding per spec, so equal specs have equal bytes).
transport::Bytes EncodeTableSpec(const TableSpec& spec);
// kCorruption ("malformed table spec") for bytes that are truncated, have trailing bytes or
// hold out-of-range enum values; never crashes on bad input. Does not check the spec.
Result<TableSpec> DecodeTableSpec(const transport::Bytes& body);

// The one check of a table spec, with kInvalidArgument naming the table and the field: name
// 1..128 bytes; a known value type; width >= 1 unless variable length; a non-empty key range for
// placement kRange; storage kDense only with placement kRange, fixed width and at most 2^32 keys
// in the range; push_arity 1 or 2; updater name 1..64 bytes with at most 32 params, each named by
// 1..64 bytes and finite; a known initializer kind with a finite scale >= 0, uniform only for
// float and double tables; filters this node knows, each once, with params they take, in range
// (MakeFilterChain: a server that lacks a filter refuses the table). With `rule` (the table's update rule, built from spec.updater; a
// server has it), also that the rule fits: it takes the value type (Updater::Supports), the push
// arity and the width (Updater::FitsWidth), and a row with its state stays under 2^31 values.
// Called where a spec enters: by DeclareTable (the user's spec, no rule) and by TableStore::Create
// on each server (a peer's spec, with the rule).
Status ValidateTableSpec(const TableSpec& spec, const Updater* rule = nullptr);

// "float64, width 1, fixed length, updater 'sgd', push_arity 1": what a conflicting declaration
// of the same name is told about the first.
std::string SummarizeTableSpec(const TableSpec& spec);

// The placement a table's spec declares.
inline cluster::Placement PlacementOf(const TableSpec& spec) {
  return cluster::Placement{static_cast<cluster::PlacementKind>(spec.placement), spec.key_range};
}

// Checks `spec` and declares it through `runtime` (cluster::NodeRuntime::DeclareTable): the
// table's id once every live server took it; kInvalidArgument for a bad spec (nothing is sent)
// or one that conflicts with an earlier declaration of its name; a server's refusal, naming it.
Result<TableId> DeclareTable(cluster::NodeRuntime& runtime, const TableSpec& spec, std::chrono::milliseconds timeout);

// The specs of the tables a node knows (declared by it, or announced to it as a server),
// decoded once from the runtime's bytes and shared: a worker looks its table up on every request.
class TableCatalog {
 public:
  // `runtime` is borrowed and outlives the catalog.
  explicit TableCatalog(const cluster::NodeRuntime* runtime) : runtime_(runtime) {}

  // kNotFound for a table the node does not know; kCorruption or kInvalidArgument, naming the
  // table, for one whose bytes do not hold a good spec.
  Result<std::shared_ptr<const TableSpec>> Find(TableId id) const ABSL_LOCKS_EXCLUDED(mu_);
  // The table's filter chain (kv/filter/filter.h), built once from its spec; errors as Find's.
  Result<std::shared_ptr<const FilterChain>> Filters(TableId id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Has the chains built so far forget what they keep for node `peer` (FilterChain::Forget).
  void ForgetPeer(NodeId peer) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::shared_ptr<const TableSpec> spec;
    std::shared_ptr<const FilterChain> filters;
  };
  Result<Entry> Lookup(TableId id) const ABSL_LOCKS_EXCLUDED(mu_);

  const cluster::NodeRuntime* const runtime_;
  mutable Mutex mu_;
  mutable absl::flat_hash_map<TableId, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pserver::kv
