// Sparse workloads of `pserver bench`: many random keys per request into a sparse float SGD
// table, the shape of a sparse model's gradient push and weight pull.
//
// The table: float, width 1, sparse storage, hashed placement, built-in "sgd" rule (lr 0.01),
// zero initial values. Each request carries `keys_per_request` distinct, sorted keys drawn
// (seeded) from [0, key_space); a few such request key sets are generated once and cycled
// through (request i uses set i mod request_sets). Before timing, every worker pushes each set
// once, so the measured pushes update stored rows and the pulls read stored rows (the steady
// state, not the inserts). Each server applies on SparseApplyThreads(options) threads: its share
// of the machine's hardware threads (at least one), as `pserver launch` gives its local servers.
//
// The bound, measured in the same process over the same key sets: the same sparse table without
// a parameter server, sharded over as many threads as one server applies on
// (SparseApplyThreads), so that the ratio compares like with like on any number of cores -- a
// one-thread bound would let the ratio grow with the core count. Each thread owns the keys
// that hash to it (an absl::flat_hash_map from key to value holding every key of its shard the
// requests touch) and walks every request's share of its shard, doing w[k] -= lr * g for a push
// and out[i] = w[k] for a pull: no messages, no slicing, no copies, and no join between
// requests (each thread runs free; a request's keys are split by shard once, before timing,
// where a server splits every request). Everything it leaves out makes the bound higher, never
// lower. Its figure is keys per second summed over its threads: the bound for one server.
//
// The memory figure builds the server's store (kv::TableStore, sparse) directly and pushes
// `num_keys` random 64-bit keys into it, 100k per request, measuring the process's resident
// memory (see SparseMemory).
//
// Thread safety: the functions are thread-compatible; each builds its own state.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/table.h"
#include "pserver/types.h"

namespace pserver::bench {

struct SparseWorkloadOptions {
  bool push = true;  // false: pull
  int num_servers = 1;
  int num_workers = 1;
  size_t keys_per_request = 100'000;  // REQUIRES: 0 < keys_per_request <= key_space
  Key key_space = 10'000'000;         // keys are drawn from [0, key_space), or ScatterKey of it
  // Keys are ScatterKey(i) for i drawn from [0, key_space): spread over the whole 64-bit space.
  bool scatter_keys = false;
  // Before the warm-up, the workers push every key of the key space once (each its share, in
  // requests of keys_per_request, `window` in flight): the table then holds key_space keys, and
  // the measured requests hit stored rows among all of them.
  bool prefill = false;
  int request_sets = 4;               // distinct request key sets, cycled through
  int window = 4;                     // requests in flight per worker
  std::chrono::milliseconds min_duration{1000};
  uint64_t seed = 42;
  // Threads each server applies on; 0: hardware threads / num_servers, at least 1
  // (SparseApplyThreads).
  uint32_t apply_threads = 0;
  // The job's replication factor (NodeOptions::replicas).
  uint32_t replicas = 1;
  // The table's filters (docs/filters.md); none by default.
  std::vector<FilterSpec> filters;
  // For correctness tests. exact_requests > 0: each worker issues exactly this many requests
  // after the warm-up (REQUIRES: > window) and stops, whatever min_duration says; the first
  // `window` are not timed. collect_values: worker 0 returns the values it pulled (see
  // SparseThroughput::values).
  uint64_t exact_requests = 0;
  bool collect_values = false;
};

// Threads each server of the workload applies on, and the bound's threads: options.apply_threads,
// or when 0 the machine's hardware threads divided among the servers (at least 1).
uint32_t SparseApplyThreads(const SparseWorkloadOptions& options);

// A bijection of the 64-bit keys that spreads the small ones over the whole space.
constexpr Key ScatterKey(uint64_t i) {
  uint64_t x = i * 0x9e3779b97f4a7c15ULL;  // odd: a bijection
  return x ^ (x >> 29);                     // an xorshift: a bijection
}

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
  // The workers' wire bytes, sent and received, per request (about: the span's requests in flight
  // at its ends count in the bytes or not): what filters save.
  double wire_bytes_per_request = 0;
  // With options.prefill: its duration (the slowest worker's), and the process's resident memory
  // (VmRSS) after it less before the cluster started, and its peak (VmHWM) until then, less the
  // same. The process holds every node: this is the whole in-process cluster's memory (servers,
  // workers, scheduler, transport buffers; times the replicas).
  double prefill_seconds = 0;
  size_t prefill_resident_bytes = 0;
  size_t prefill_peak_bytes = 0;
  // With options.collect_values, per request set (values[i] for keys[i]): for a pull workload
  // the answer to worker 0's last pull of the set; for a push workload what worker 0 pulls
  // after every worker's last push was acknowledged. Empty otherwise.
  std::vector<std::vector<float>> values;
};

// Runs the workload on an in-process cluster (ZeroMQ over loopback TCP, like the dense cells).
// kInvalidArgument for no requests, or exact_requests in [1, window]; a node's error otherwise;
// kInternal if a pull's answer has the wrong number of values.
Result<SparseThroughput> MeasureClusterSparse(const SparseWorkloadOptions& options, const SparseRequests& requests);

struct SparseBound {
  double keys_per_sec = 0;        // over all its threads
  double cpu_us_per_request = 0;  // process CPU over its span per keys_per_request keys
  uint32_t threads = 0;           // SparseApplyThreads(options)
};

// The sharded flat_hash_map bound (push: SGD step; pull: gather) over the same requests, every
// thread timed for at least options.min_duration (and 200 ms).
SparseBound MeasureSparseBound(const SparseWorkloadOptions& options, const SparseRequests& requests);

struct SparseMemory {
  std::string rule;
  size_t keys = 0;           // keys stored at the end
  size_t keys_measured = 0;  // keys added after the baseline: all but the first request's
  uint32_t shards = 0;
  uint32_t row_bytes = 0;    // a stored row: its values and its rule's state (the key excluded)
  size_t store_bytes = 0;    // TableStore::memory_bytes() at the end: the store's own count
  // The process's resident memory (VmRSS) after the fill, less the baseline's. Both are read
  // after malloc_trim(0), so they leave out what the allocator holds free (glibc keeps freed
  // request buffers: a few MB that depend on the requests' size, not on the table); the
  // untrimmed figure is also given.
  size_t resident_bytes = 0;
  size_t untrimmed_bytes = 0;
  // The process's peak resident memory (VmHWM) during the fill, untrimmed, less the baseline.
  size_t peak_bytes = 0;
  // Everything: the resident memory after the fill, untrimmed, less that before the store was
  // made (the first request's keys, the store's scratch and the allocator's slack included); per
  // parameter over all `keys`.
  size_t whole_bytes = 0;
  double fill_seconds = 0;

  // Bytes per key added after the baseline.
  double PerParam(size_t bytes) const {
    return keys_measured == 0 ? 0 : static_cast<double>(bytes) / static_cast<double>(keys_measured);
  }
};

// The memory per stored parameter of a sparse float width-1 TableStore with the built-in rule
// `rule` (default parameters) holding `num_keys` random 64-bit keys, pushed in requests of 100k
// keys, with `shards` shards (the server default is min(hardware threads, 4)). The resident
// figures are the process's (/proc/self/status), so the process should be doing nothing else.
// Their baseline is taken after a warm-up store of 800k keys was filled and dropped, and the
// first request (100k keys) was pushed into the measured store: that sets up what does not grow
// with the table (the allocator's heap at its working size for requests of this shape, the
// pool's threads, the store's per-request scratch), so the figures are what each further
// parameter costs. kInvalidArgument for fewer than 1 M keys (too few for the figures to mean
// anything).
Result<SparseMemory> MeasureSparseMemory(size_t num_keys, uint32_t shards, const std::string& rule, uint64_t seed);

}  // namespace pserver::bench
