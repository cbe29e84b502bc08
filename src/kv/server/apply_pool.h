// ApplyPool: a fixed set of threads for fork-join work over shards.
//
// A TableStore splits a large request into `size()` shards and calls Run once per request:
// shard 0 runs on the calling thread and shards 1..size()-1 on the pool's own threads, one
// shard per thread, so a shard's data is touched by exactly one thread during a Run and needs
// no lock. A pool of size 1 has no threads at all: Run calls fn(0) inline.
//
// The threads are std::jthreads, started by the constructor and joined by the destructor; they
// sleep (futex wait, no spinning) between runs.
//
// Thread safety: thread-compatible. Run may be called from any one thread at a time (the
// server node's data thread); it must not be called concurrently nor from inside `fn`. Several
// TableStores may share one pool as long as their requests are handled one at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace pserver::kv {

class ApplyPool {
 public:
  // A pool of `num_shards` shards (values below 1 are taken as 1): num_shards - 1 threads.
  explicit ApplyPool(uint32_t num_shards);
  ~ApplyPool();

  ApplyPool(const ApplyPool&) = delete;
  ApplyPool& operator=(const ApplyPool&) = delete;

  // The number of shards Run calls fn for (threads + the caller).
  uint32_t size() const { return num_shards_; }

  // Calls fn(0), ..., fn(size() - 1), fn(0) on the calling thread and the others on the pool's
  // threads, and returns when all have returned. Blocks for as long as the slowest fn runs, with
  // no timeout: the work is our own computation, never a wait on a peer. `fn` must not throw
  // (an exception on a pool thread ends the process). Memory written by each fn is visible to
  // the caller when Run returns.
  void Run(const std::function<void(uint32_t shard)>& fn);

 private:
  void WorkerLoop(uint32_t shard);

  const uint32_t num_shards_;
  // The task of the current run; written by Run before `generation_` is bumped.
  const std::function<void(uint32_t)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped once per run (and at shutdown)
  std::atomic<uint32_t> pending_{0};     // pool shards of the current run not yet finished
  std::atomic<bool> stop_{false};
  std::vector<std::jthread> threads_;    // last member: joined before the fields above die
};

}  // namespace pserver::kv
