// TableStore: one table's rows on one server -- storage, update rule and initial values. Every
// table of a server lives in one (KVServerCore builds it when the server meets the table).
//
// A push applies the table's Updater to each pushed row (creating the row from the table's
// InitializerSpec, with zeroed rule state, the first time a key is seen); a pull answers the
// rows of the requested keys in request order, a never-pushed key reading as its initial value
// (without being stored). A push-pull applies the whole push first, then answers the pull.
// Keys may come in any order and repeat (a repeated key is applied once per occurrence, in
// request order), though requests normally carry them sorted and unique. The rule's per-value
// state lives beside the value, so that listing a table's rows (ListRows) carries it: migration,
// replication and checkpoints move exactly what ListRows gives and InsertRows takes.
//
// Storage, chosen from the TableSpec at creation (the rule is the same for each):
//   * sparse (StorageKind::kSparse, fixed width, rows under kLargeRowBytes): an open-addressing
//     hash table (kv/server/sparse_rows.h: only touched keys stored; keys and rows in parallel
//     arrays, so that a float SGD parameter costs about 12 bytes / load factor, 14-19 bytes);
//   * dense (StorageKind::kDense): one array per key range the server owns (all of the declared
//     key range unless Create is given owned ranges), every row existing from the start at its
//     initial value; a key outside the owned ranges is refused;
//   * large rows (kSparse, rows of at least kLargeRowBytes values): one buffer per key, shared
//     copy-on-write with pull replies -- a one-key pull sends the stored buffer itself (no copy;
//     a key never pushed of a zero-initialised table sends one shared row of zeros), and a push
//     to a row a reply still holds writes the result into a fresh buffer (the add rule in one
//     pass, old + delta, the memory traffic of an in-place add). Freed buffers are recycled
//     through a small pool, so that steady traffic does not page-fault in fresh memory;
//   * variable length (TableSpec::variable_length, kSparse only): one array per key, its length
//     set by the key's first push (or InsertRows); a later push must carry the same length. A
//     push carries lens[i] * push_arity values for key i (the rule's blocks, as for fixed
//     widths); a pull answers each key's length (0 for a key never pushed) and values.
//
// Large requests (at least kParallelMinKeys keys) to sparse and dense tables are applied on the
// ApplyPool given at creation: a sparse table's rows are split into pool->size() shards by a
// hash of the key, each shard its own hash table that exactly one pool thread touches during a
// request, so the hot path takes no lock. A request takes two runs of the pool: first each
// thread sorts one contiguous chunk of the request's keys by shard (one pass, into per-shard
// scratch kept between requests), then each thread handles its shard's keys from every chunk,
// in request order, and writes their pull answers at the keys' positions in the reply (disjoint
// writes). A dense table splits a request of strictly increasing keys into contiguous chunks
// instead. Small requests, every request of a one-shard store, and every request to large-row
// and variable-length tables run inline on the calling thread. Results are bit-identical
// whatever the number of shards.
//
// The hot loop: sparse lookups prefetch the slots of the keys a few positions ahead (random keys
// miss the cache; the prefetches let those misses overlap), and pushed rows go to the rule a
// batch at a time (Updater::ApplyBatch: one virtual call per batch, a new key's insertion ending
// a batch early since it may move stored rows).
//
// Thread safety: thread-compatible -- one call at a time (the server node's data thread); const
// methods may run concurrently with each other. The Updater's Apply runs on the pool's threads.
// Pull replies may share large rows' buffers: they stay valid (and unchanged) for as long as the
// reply holds them, on any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kv/server/apply_pool.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/range_clock.h"
#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/updater.h"

namespace pserver::kv {

// Rows of one table with their rule state, as ListRows gives them and InsertRows takes them.
// Laid out as a message's frames would carry them: a key array, the values of every row one
// after the other, their states likewise, and (variable length only) each row's length.
struct RowBatch {
  ValueType value_type = ValueType::kFloat32;
  uint32_t width = 0;            // values per row; 0: variable length (see lens)
  uint32_t state_per_value = 0;  // the rule's state values per value (Updater::state_per_value)
  SharedArray<Key> keys;         // sorted ascending, unique (as ListRows makes them)
  SharedArray<int32_t> lens;     // variable length: the values of each row; empty otherwise
  transport::Bytes values;       // row i: width (or lens[i]) values of value_type
  transport::Bytes states;       // row i: that many values times state_per_value

  size_t size() const { return keys.size(); }
};

// Rows `rows` (ascending indices) of `all`, copied into a batch of their own.
RowBatch SelectRows(const RowBatch& all, const std::vector<size_t>& rows);

// Chooses keys (ListRows, EraseRows, ForEachIf). An empty function chooses every key.
using KeyPredicate = std::function<bool(Key)>;

// The keys of a table of `spec` whose routing key (cluster/key_placement.h: the position on
// the ring that decides which server holds the key) lies in one of `routing_ranges` (inclusive
// ranges of routing keys, e.g. the ring segments a server hands over). For kRange placement a
// key outside the declared key range is never chosen.
KeyPredicate RoutingRangePredicate(const TableSpec& spec, std::vector<KeyRange> routing_ranges);

// The keys of a kRange table whose routing keys lie in `routing_ranges` (e.g. the ring segments
// a server owns: cluster::Ring::RangesOf), as key ranges, sorted and merged: routing keys keep
// key order under kRange, so each routing range is one run of keys (or none). A dense table
// allocates exactly these. Empty for the other placements.
std::vector<KeyRange> KeyRangesOfRouting(const TableSpec& spec, const std::vector<KeyRange>& routing_ranges);

class TableStore {
 public:
  // Requests with fewer keys run inline on the calling thread.
  static constexpr size_t kParallelMinKeys = 4096;
  // Sparse fixed-width rows of at least this many bytes of values are kept one buffer each and
  // shared with pull replies (see above).
  static constexpr size_t kLargeRowBytes = 64 * 1024;

  // A store for table `table` of `spec`, applying `updater` (owned by the store) and running
  // large requests on `pool` (borrowed: it must outlive the store; nullptr: one shard, every
  // request inline). The pool's size fixes the store's number of shards for its lifetime.
  // `owned_ranges`: for a dense table, the key ranges (inclusive, within spec.key_range, in any
  // order; overlapping or adjacent ones are merged) this server owns -- only their rows are
  // allocated (here, each initialised) and only their keys accepted; nullopt: the whole
  // declared key range. Ignored by the other storage kinds, which allocate rows as keys come.
  // kInvalidArgument, saying why, when updater is null, the spec fails ValidateTableSpec(spec,
  // updater) (kv/table_catalog.h: the one check of a spec, the rule's fit included), or an owned
  // range is empty or not within the key range.
  static Result<std::unique_ptr<TableStore>> Create(TableId table, const TableSpec& spec,
                                                    std::unique_ptr<Updater> updater, ApplyPool* pool,
                                                    std::optional<std::vector<KeyRange>> owned_ranges = std::nullopt);

  virtual ~TableStore() = default;

  // Applies a push and/or answers a pull (per req.type) of `req`, passing `ctx` to the rule.
  // A pull's answer (the rows of the keys in request order, values of the table's type) goes
  // into resp->vals, and for a variable-length table each key's length into resp->lens (left
  // empty otherwise). kInvalidArgument, with nothing changed, for a variable-length push whose
  // length for a key differs from the key's stored one (naming the key), or (dense) a key
  // outside the owned ranges (the message names the key and the ranges).
  // REQUIRES: `req` has this table's shape -- its id and value type, width spec.width (0 for
  // variable length), at most 2^32 - 1 sorted unique keys, pushed values of keys x width x
  // push_arity (variable length: a non-negative length per key) -- as KVServerCore checks every
  // request once where it comes off the wire (debug builds assert it here).
  // Blocks until the pool's threads are done with the request; no timeout (no peer is awaited).
  virtual Status Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) = 0;

  // Keys stored: those pushed or inserted so far (dense: every key of the owned ranges).
  virtual size_t num_keys() const = 0;
  // Bytes held by the store: rows, state, hash-table overhead and per-shard scratch space.
  virtual size_t memory_bytes() const = 0;

  // A stored row as raw bytes of the table's type: `value` holds the row's width values and
  // `state` width * state_per_value values. The spans stay valid until the next non-const call.
  using RowVisitor =
      std::function<void(Key key, std::span<const std::byte> value, std::span<const std::byte> state)>;
  // Calls fn for every stored row whose key `pred` chooses (dense: every key of the owned
  // ranges), in an unspecified but deterministic order. `fn` must not call back into the store.
  virtual void ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const = 0;
  void ForEach(const RowVisitor& fn) const { ForEachIf({}, fn); }
  // Calls fn for each of `keys` that is stored, in the order given (a key not stored is passed
  // over): O(keys), where ForEachIf visits every row. `fn` must not call back into the store.
  virtual void ForKeys(std::span<const Key> keys, const RowVisitor& fn) const = 0;
  // Stores a row as ForEach reports it, replacing the key's row if it is stored (a
  // variable-length row then takes the new length). kInvalidArgument, with nothing changed, if
  // a span has the wrong size (variable length: value not whole values, or state not
  // state_per_value times as long) or (dense) the key is outside the owned ranges.
  virtual Status PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) = 0;

  // The rows whose keys `pred` chooses (every row for an empty pred), sorted by key, with their
  // rule state: a copy, independent of the store. Stores of the same spec and rows list the same
  // batch, whatever their number of shards.
  RowBatch ListRows(const KeyPredicate& pred = {}) const;
  // The stored rows of `keys` (sorted ascending, unique) with their rule state, as ListRows
  // lists them: the replication path's O(keys) listing of the rows a push changed.
  RowBatch ListRowsOf(std::span<const Key> keys) const;
  // Stores every row of `batch` (as PutRow does), e.g. rows another server listed.
  // kInvalidArgument, with nothing changed, if the batch does not fit the table: another value
  // type, width or state_per_value, arrays whose sizes disagree (or a negative length), or
  // (dense) a key outside the owned ranges (named).
  Status InsertRows(const RowBatch& batch);
  // Removes the rows whose keys `pred` chooses (every row for an empty pred) -- those a server
  // handed over -- and returns how many it chose. A dense table keeps its arrays: its chosen
  // rows go back to their initial value with zeroed state. Sparse storage keeps its capacity.
  virtual size_t EraseRows(const KeyPredicate& pred) = 0;

  TableId table() const { return table_; }
  const TableSpec& spec() const { return spec_; }
  // The vector clocks of the pushes applied to this table's rows, kept beside them and keyed by
  // worker incarnation. The server's request path reads and sets them (Handle does not); they
  // make a resent push idempotent.
  RangeClock& clocks() { return clocks_; }
  const RangeClock& clocks() const { return clocks_; }
  // The rule's state values per value.
  virtual uint32_t state_per_value() const = 0;

  // Dense: the key ranges whose rows the store holds (sorted, disjoint). Empty for the other
  // storage kinds, which hold whatever keys come.
  virtual std::vector<KeyRange> owned_ranges() const { return {}; }
  // Dense: holds exactly `ranges` from now on (inclusive, within spec.key_range, in any order;
  // overlapping or adjacent ones are merged): a range held already keeps its rows, a new one
  // is allocated with its rows at their initial values -- but for the keys held before, whose
  // rows (and state) it takes over -- and the rows of ranges given up are freed. A server calls
  // it when its view changes (and, before rows move in, with the ranges they will fill).
  // kInvalidArgument, changing nothing, for a range that is empty or outside the key range.
  // Does nothing for the other storage kinds.
  Status SetOwnedRanges(std::vector<KeyRange> ranges);

 protected:
  TableStore(TableId table, const TableSpec& spec) : table_(table), spec_(spec) {}

  // Whether PutRow may store `key` (the dense layout refuses keys outside its owned ranges):
  // InsertRows checks every key first, so that a refused batch changes nothing.
  virtual Status CheckInsert(Key) const { return Status::Ok(); }
  // SetOwnedRanges, the ranges checked, sorted and merged.
  virtual void TakeOwnedRanges(std::vector<KeyRange> ranges) { (void)ranges; }

 private:
  // The rows listed (sorted by key), copied into one batch.
  template <typename Rows>
  RowBatch Batch(const Rows& rows) const;

  const TableId table_;
  const TableSpec spec_;
  RangeClock clocks_;
};

// The initial value of column `column` of key `key`: 0 for kZero; for kUniform a number in
// [-scale, scale] that is a pure function of (init.seed, key, column) through a 64-bit hash,
// identical on every run, server and cluster layout. Tables of float round it to float.
double InitialValue(const InitializerSpec& init, Key key, uint32_t column);

}  // namespace pserver::kv
