// SumStore<T>: the default server-side storage and update rule -- in-memory tables where a push
// adds its values to the stored ones and a pull reads them (a key never pushed reads as zero).
//
// Fixed-width tables of small rows keep all rows in one contiguous array indexed through a hash
// map (key -> row), so a parameter costs its values plus one map slot. Rows of at least
// kLargeRowBytes are kept one buffer each and shared copy-on-write with pull replies: a
// one-key pull of a large row sends the stored buffer itself (no copy; a key never pushed
// sends one shared row of zeros), and a push to a row
// that a reply still holds writes old + delta into a fresh buffer (the same memory traffic as
// an in-place add). Freed row buffers are recycled through a small pool, so steady traffic
// does not page-fault in fresh memory. Variable-length tables keep one array per key; a push
// must match the key's stored length (or set it the first time).
//
// Thread-compatible: used from the server's receive thread only.
#pragma once

#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/server/kv_server_core.h"

namespace pserver::kv {

// A few recycled buffers of one size; thread-safe (buffers come back from ZeroMQ's threads).
class BufferPool;

template <typename T>
class SumStore {
 public:
  static constexpr size_t kLargeRowBytes = 64 * 1024;

  // Applies a push (adds) and/or answers a pull of `req` into `resp`.
  Status Handle(const ServerRequest& req, ServerResponse* resp);

  // Number of keys stored in `table` (0 for an unknown table).
  size_t size(TableId table) const;

 private:
  struct FixedTable {
    uint32_t width = 1;
    absl::flat_hash_map<Key, uint64_t> rows;  // small rows: key -> row index in values
    std::vector<T> values;
    absl::flat_hash_map<Key, SharedArray<T>> large_rows;  // large rows, copy-on-write
    std::shared_ptr<BufferPool> pool;                     // large rows' recycled buffers
    // A large row of zeros, made at the first pull of a large key never pushed and sent, shared,
    // to every such pull (replies never change it).
    mutable SharedArray<T> zero_row;
  };
  struct VarTable {
    absl::flat_hash_map<Key, std::vector<T>> rows;
  };

  Status PushFixed(FixedTable& t, const ServerRequest& req);
  void PushLarge(FixedTable& t, const ServerRequest& req);
  SharedArray<T> NewLargeRow(FixedTable& t);
  void PullFixed(const FixedTable& t, const ServerRequest& req, ServerResponse* resp) const;
  Status PushVar(VarTable& t, const ServerRequest& req);
  void PullVar(const VarTable& t, const ServerRequest& req, ServerResponse* resp) const;

  absl::flat_hash_map<TableId, FixedTable> fixed_;
  absl::flat_hash_map<TableId, VarTable> var_;
};

// A handler over one SumStore of value type `type` (every table of that type).
ServerHandler MakeSumHandler(ValueType type);

}  // namespace pserver::kv
