// Sparse workloads of `pserver bench`: many random keys per request into a sparse float SGD
// table, the shape of a sparse model's gradient push and weight pull.
//
// The table: float, width 1, sparse storage, hashed placement, built-in "sgd" rule (lr 0.01).
// Each request carries `keys_per_request` distinct, sorted keys drawn (seeded) from
// [0, key_space); a few such request key sets are generated once and cycled through. Before
// timing, every worker pushes each set once, so the measured pushes update stored rows and the
// pulls read stored rows (the steady state, not the inserts). Each server applies on its share
// of the machine's hardware threads (at least one), as `pserver launch` gives its local servers.
//
// The bound, measured in the same process over the same key sets: the same sparse table without
// a parameter server -- one thread, an in-memory absl::flat_hash_map from key to value holding
// every key the requests touch, doing w[k] -= lr * g for a push and out[i] = w[k] for a pull
// (no messages, no slicing, no copies).
//
// The memory figure builds the server's store (kv::TableStore, sparse, built-in "sgd") directly
// and pushes `num_keys` random 64-bit keys into it, 100k per request.
//
// Thread safety: the functions are thread-compatible; each builds its own state.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/types.h"

namespace pserver::bench {

struct SparseWorkloadOptions {
  bool push = true;  // false: pull
  int num_servers = 1;
  int num_workers = 1;
  size_t keys_per_request = 100'000;  // REQUIRES: 0 < keys_per_request <= key_space
  Key key_space = 10'000'000;         // keys are drawn from [0, key_space)
  int request_sets = 4;               // distinct request key sets, cycled through
  int window = 4;                     // requests in flight per worker
  std::chrono::milliseconds min_duration{1000};
  uint64_t seed = 42;
};

// The pre-generated requests: keys[i] sorted and distinct, grads[i] of the same length.
struct SparseRequests {
  std::vector<SharedArray<Key>> keys;
  std::vector<SharedArray<float>> grads;
};

// kInvalidArgument if keys_per_request is 0 or above key_space, or request_sets < 1.
Result<SparseRequests> MakeSparseRequests(const SparseWorkloadOptions& options);

struct SparseThroughput {
  uint64_t requests = 0;
  double seconds = 0;
  double cpu_seconds = 0;              // process CPU time (all threads) over the measured span
  double keys_per_sec = 0;             // over all servers
  double keys_per_sec_per_server = 0;  // keys_per_sec / num_servers
};

// Runs the workload on an in-process cluster (ZeroMQ over loopback TCP, like the dense cells).
Result<SparseThroughput> MeasureClusterSparse(const SparseWorkloadOptions& options, const SparseRequests& requests);

// Keys per second of the single-thread flat_hash_map bound (push: SGD step; pull: gather) over the
// same requests, timed for at least options.min_duration.
double MeasureSparseBound(const SparseWorkloadOptions& options, const SparseRequests& requests);

struct SparseMemory {
  size_t keys = 0;
  size_t bytes = 0;  // TableStore::memory_bytes()
  double bytes_per_param = 0;
  uint32_t shards = 0;
};

// Bytes per stored float parameter of a sparse "sgd" TableStore holding `num_keys` random keys,
// with `shards` shards (the server default is min(hardware threads, 4)).
Result<SparseMemory> MeasureSparseMemory(size_t num_keys, uint32_t shards, uint64_t seed);

}  // namespace pserver::bench
