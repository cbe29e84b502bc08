#include "kv/server/apply_pool.h"

namespace pserver::kv {

ApplyPool::ApplyPool(uint32_t num_shards) : num_shards_(num_shards < 1 ? 1 : num_shards) {
  threads_.reserve(num_shards_ - 1);
  for (uint32_t shard = 1; shard < num_shards_; ++shard) {
    threads_.emplace_back([this, shard] { WorkerLoop(shard); });
  }
}

ApplyPool::~ApplyPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  threads_.clear();  // joins
}

void ApplyPool::Run(const std::function<void(uint32_t shard)>& fn) {
  if (num_shards_ == 1) {
    fn(0);
    return;
  }
  task_ = &fn;
  pending_.store(num_shards_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);  // publishes task_ and pending_
  generation_.notify_all();
  fn(0);
  for (uint32_t left = pending_.load(std::memory_order_acquire); left != 0;
       left = pending_.load(std::memory_order_acquire)) {
    pending_.wait(left, std::memory_order_acquire);
  }
  task_ = nullptr;
}

void ApplyPool::WorkerLoop(uint32_t shard) {
  uint64_t seen = 0;
  for (;;) {
    generation_.wait(seen, std::memory_order_acquire);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_relaxed)) return;
    (*task_)(shard);
    // The last shard to finish wakes the caller; acq_rel orders this shard's writes before it.
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

}  // namespace pserver::kv
