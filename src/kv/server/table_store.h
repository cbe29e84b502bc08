// TableStore: one table's rows on one server -- storage, update rule and initial values.
//
// Created from the table's TableSpec when the server meets the table (KVServerCore). A push
// applies the table's Updater to each pushed row (creating the row from the table's
// InitializerSpec, with zeroed rule state, the first time a key is seen); a pull answers the
// rows of the requested keys in request order, a never-pushed key reading as its initial value
// (without being stored). A push-pull applies the whole push first, then answers the pull.
// Keys may come in any order and repeat (a repeated key is applied once per occurrence, in
// request order), though requests normally carry them sorted and unique. The rule's per-value
// state lives beside the value in the same storage slot, so that later replication, migration
// and checkpoints carry it.
//
// Storage is chosen by TableSpec::storage: a sparse open-addressing hash table (kv/server/
// sparse_rows.h: only touched keys stored; keys and rows in parallel arrays so that a float SGD
// parameter costs about 12 bytes / load factor, 14-19 bytes) or a dense array over the declared
// key range (every row exists from the start, holding its initial value).
//
// Large requests (at least kParallelMinKeys keys) are applied on the ApplyPool given at creation:
// a sparse table's rows are split into pool->size() shards by a hash of the key, each shard its
// own hash table that exactly one pool thread touches during a request, so the hot path takes no
// lock. A request takes two runs of the pool: first each thread sorts one contiguous chunk of
// the request's keys by shard (one pass, into per-shard scratch kept between requests), then
// each thread handles its shard's keys from every chunk, in request order, and writes their pull
// answers at the keys' positions in the reply (disjoint writes). A dense table splits a request
// of strictly increasing keys into contiguous chunks instead. Small requests, and every request
// of a one-shard store, run inline on the calling thread. Results are bit-identical whatever the
// number of shards.
//
// The hot loop: sparse lookups prefetch the slots of the keys a few positions ahead (random keys
// miss the cache; the prefetches let those misses overlap), and pushed rows go to the rule a
// batch at a time (Updater::ApplyBatch: one virtual call per batch, a new key's insertion ending
// a batch early since it may move stored rows).
//
// Variable-length tables are not handled here (they stay on SumStore with the add rule).
//
// Thread safety: thread-compatible -- one call at a time (the server's receive thread); const
// methods may run concurrently with each other. The Updater's Apply runs on the pool's threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "kv/server/apply_pool.h"
#include "kv/server/kv_server_core.h"
#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/updater.h"

namespace pserver::kv {

class TableStore {
 public:
  // Requests with fewer keys run inline on the calling thread.
  static constexpr size_t kParallelMinKeys = 4096;

  // A store for table `table` of `spec`, applying `updater` (owned by the store) and running
  // large requests on `pool` (borrowed: it must outlive the store; nullptr: one shard, every
  // request inline). The pool's size fixes the store's number of shards for its lifetime.
  // A dense table allocates and initialises all its rows here.
  // kInvalidArgument, saying why, when:
  //   - updater is null, or spec.variable_length is set, or spec.width is 0;
  //   - the rule does not support spec.value_type (Updater::Supports), or spec.push_arity
  //     differs from updater->push_arity();
  //   - the initializer is kUniform with a negative or non-finite scale, or for an integer table;
  //   - storage is kDense and the placement is not kRange, or the key range is empty (first >
  //     last) or holds more than 2^32 keys.
  static Result<std::unique_ptr<TableStore>> Create(TableId table, const TableSpec& spec,
                                                    std::unique_ptr<Updater> updater, ApplyPool* pool);

  virtual ~TableStore() = default;

  // Applies a push and/or answers a pull (per req.type) of `req`, passing `ctx` to the rule.
  // A pull's answer (keys x width values of the table's type, in request order) goes into
  // resp->vals; resp->lens is left empty. kInvalidArgument, with nothing changed, if the request
  // does not fit the table: another table id or value type, a width other than spec.width, a
  // push whose values are not keys x width x push_arity, more than 2^32 - 1 keys, or (dense) a
  // key outside the key range (the message names the key and the range).
  // Blocks until the pool's threads are done with the request; no timeout (no peer is awaited).
  virtual Status Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) = 0;

  // Keys stored: those pushed so far (sparse) or the key range's size (dense).
  virtual size_t num_keys() const = 0;
  // Bytes held by the store: rows, state, hash-table overhead and per-shard scratch space.
  virtual size_t memory_bytes() const = 0;

  // A stored row as raw bytes of the table's type: `value` holds width values and `state`
  // width * state_per_value values. The spans are valid only during the call.
  using RowVisitor =
      std::function<void(Key key, std::span<const std::byte> value, std::span<const std::byte> state)>;
  // Calls fn for every stored row (every key of the range for a dense table), in an
  // unspecified but deterministic order. For checkpoints and state transfer. `fn` must not call
  // back into the store.
  virtual void ForEach(const RowVisitor& fn) const = 0;
  // Stores a row as ForEach reports it (restoring a checkpoint or a transferred range),
  // replacing the key's row if it is stored. kInvalidArgument if a span has the wrong size or
  // (dense) the key is outside the range.
  virtual Status PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) = 0;

  TableId table() const { return table_; }
  const TableSpec& spec() const { return spec_; }

 protected:
  TableStore(TableId table, const TableSpec& spec) : table_(table), spec_(spec) {}

 private:
  const TableId table_;
  const TableSpec spec_;
};

// The initial value of column `column` of key `key`: 0 for kZero; for kUniform a number in
// [-scale, scale] that is a pure function of (init.seed, key, column) through a 64-bit hash,
// identical on every run, server and cluster layout. Tables of float round it to float.
double InitialValue(const InitializerSpec& init, Key key, uint32_t column);

}  // namespace pserver::kv
