// The large-row layout of TableStore (table_store.h): sparse rows of at least kLargeRowBytes,
// one buffer per key, shared copy-on-write with pull replies.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "kv/server/table_store_internal.h"
#include "kv/server/updaters.h"

namespace pserver::kv::table_store_internal {

using transport::MessageType;

namespace {

// A few recycled buffers of one size. Thread-safe: buffers come back from ZeroMQ's threads
// (a reply that shared a row is released after its send).
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static constexpr size_t kMaxFree = 4;
  explicit BufferPool(size_t bytes) : bytes_(bytes) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of `bytes_` bytes (unspecified contents), 64-byte aligned, that returns here when
  // released (or is freed if the pool is full or gone).
  std::shared_ptr<void> Get() ABSL_LOCKS_EXCLUDED(mu_) {
    void* p = nullptr;
    {
      MutexLock lock(&mu_);
      if (!free_.empty()) {
        p = free_.back();
        free_.pop_back();
      }
    }
    if (p == nullptr) p = ::operator new(bytes_, std::align_val_t{64});
    std::weak_ptr<BufferPool> weak = weak_from_this();
    return std::shared_ptr<void>(p, [weak](void* q) {
      if (auto pool = weak.lock(); pool && pool->Put(q)) return;
      ::operator delete(q, std::align_val_t{64});
    });
  }

  ~BufferPool() {
    for (void* p : free_) ::operator delete(p, std::align_val_t{64});
  }

 private:
  bool Put(void* p) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (free_.size() >= kMaxFree) return false;
    free_.push_back(p);
    return true;
  }

  const size_t bytes_;
  Mutex mu_;
  std::vector<void*> free_ ABSL_GUARDED_BY(mu_);
};

// dst = a + b, as the built-in add rule computes it (integers wrap modulo 2^bits).
template <typename T>
void AddInto(T* dst, const T* a, const T* b, size_t n) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(static_cast<U>(a[i]) + static_cast<U>(b[i]));
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
  }
}

template <typename T>
class LargeRowStore final : public TableStore {
 public:
  LargeRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater)
      : TableStore(table, spec),
        width_(spec.width),
        state_len_(size_t{spec.width} * updater->state_per_value()),
        push_len_(size_t{spec.width} * spec.push_arity),
        add_(IsAddRule(*updater) && spec.initializer.kind == InitializerSpec::Kind::kZero),
        updater_(std::move(updater)),
        pool_(std::make_shared<BufferPool>(size_t{spec.width} * sizeof(T))) {}

  Status Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) override;
  size_t num_keys() const override { return rows_.size(); }
  size_t memory_bytes() const override;
  void ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const override;
  void ForKeys(std::span<const Key> keys, const RowVisitor& fn) const override {
    for (Key key : keys) {
      auto it = rows_.find(key);
      if (it == rows_.end()) continue;
      fn(key, std::as_bytes(std::span<const T>(it->second.value.data(), width_)),
         std::as_bytes(std::span<const T>(it->second.state.get(), state_len_)));
    }
  }
  Status PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) override;
  size_t EraseRows(const KeyPredicate& pred) override;
  uint32_t state_per_value() const override { return updater_->state_per_value(); }

 private:
  struct Row {
    SharedArray<T> value;          // width_ values; shared with pull replies
    std::unique_ptr<T[]> state;    // state_len_ values (null when the rule keeps none); never shared
  };

  SharedArray<T> NewBuffer() {
    std::shared_ptr<void> buf = pool_->Get();
    T* data = static_cast<T*>(buf.get());
    return SharedArray<T>(std::move(buf), data, width_);
  }
  void InitValue(Key key, T* dst) const {
    for (uint32_t c = 0; c < width_; ++c) dst[c] = Initial<T>(spec().initializer, key, c);
  }
  // A row's value buffer that no reply holds, for writing: the row's own, or a fresh one with
  // its values copied in.
  T* Writable(Row& row) {
    if (row.value.owner().use_count() != 1) {
      SharedArray<T> fresh = NewBuffer();
      std::memcpy(fresh.data(), row.value.data(), size_t{width_} * sizeof(T));
      row.value = std::move(fresh);
    }
    return row.value.data();
  }
  void Push(const UpdateContext& ctx, Key key, const T* src);
  // The value row of `key` as a reply may share it (a never-pushed key reads as its initial
  // value).
  SharedArray<T> Read(Key key) const;

  const uint32_t width_;
  const size_t state_len_;
  const size_t push_len_;
  // The built-in add rule on zero initial values: a push to a shared row writes old + push into
  // the fresh buffer in one pass, and a key's first push stores the pushed row as it is.
  const bool add_;
  const std::unique_ptr<Updater> updater_;
  const std::shared_ptr<BufferPool> pool_;
  absl::flat_hash_map<Key, Row> rows_;
  // A row of zeros, made at the first pull of a never-pushed key of a zero-initialised table
  // and sent, shared, to every such pull (replies never change it).
  mutable SharedArray<T> zero_row_;
};

template <typename T>
Status LargeRowStore<T>::Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) {
  AssertChecked(*this, req, width_, spec().push_arity);
  const size_t n = req.keys.size();
  const bool push = req.type != MessageType::kPull;
  const bool pull = req.type != MessageType::kPush;
  if (push) {
    SharedArray<T> aligned;
    const T* src = PushedValues<T>(req, &aligned);
    for (size_t i = 0; i < n; ++i) Push(ctx, req.keys[i], src + i * push_len_);
  }
  if (!pull) return Status::Ok();
  if (n == 1) {
    resp->vals = transport::AsBytes(Read(req.keys[0]));  // shared, not copied: see Push
    return Status::Ok();
  }
  auto out = SharedArray<T>::Uninitialized(n * width_);
  for (size_t i = 0; i < n; ++i) {
    T* dst = out.data() + i * width_;
    if (auto it = rows_.find(req.keys[i]); it != rows_.end()) {
      std::memcpy(dst, it->second.value.data(), size_t{width_} * sizeof(T));
    } else {
      InitValue(req.keys[i], dst);
    }
  }
  resp->vals = transport::AsBytes(out);
  return Status::Ok();
}

template <typename T>
void LargeRowStore<T>::Push(const UpdateContext& ctx, Key key, const T* src) {
  auto [it, fresh] = rows_.try_emplace(key);
  Row& row = it->second;
  if (fresh) {
    row.value = NewBuffer();
    if (state_len_ > 0) row.state = std::make_unique<T[]>(state_len_);  // zeroed
    if (add_) {
      std::memcpy(row.value.data(), src, size_t{width_} * sizeof(T));  // 0 + push
      return;
    }
    InitValue(key, row.value.data());
  } else if (add_ && row.value.owner().use_count() != 1) {
    // A pull reply still holds the row: write the sum into a fresh buffer.
    SharedArray<T> sum = NewBuffer();
    AddInto(sum.data(), row.value.data(), src, width_);
    row.value = std::move(sum);
    return;
  }
  T* value = Writable(row);
  updater_->Apply(ctx, std::span<T>(value, width_), std::span<T>(row.state.get(), state_len_),
                  std::span<const T>(src, push_len_));
}

template <typename T>
SharedArray<T> LargeRowStore<T>::Read(Key key) const {
  if (auto it = rows_.find(key); it != rows_.end()) return it->second.value;
  if (spec().initializer.kind == InitializerSpec::Kind::kZero) {
    if (zero_row_.empty()) zero_row_ = SharedArray<T>(width_);
    return zero_row_;
  }
  auto row = SharedArray<T>::Uninitialized(width_);
  InitValue(key, row.data());
  return row;
}

template <typename T>
size_t LargeRowStore<T>::memory_bytes() const {
  return sizeof(*this) + rows_.capacity() * (sizeof(std::pair<const Key, Row>) + 1) +
         rows_.size() * (size_t{width_} + state_len_) * sizeof(T) + zero_row_.size_bytes();
}

template <typename T>
void LargeRowStore<T>::ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const {
  for (const auto& [key, row] : rows_) {
    if (pred && !pred(key)) continue;
    fn(key, std::as_bytes(std::span<const T>(row.value.data(), width_)),
       std::as_bytes(std::span<const T>(row.state.get(), state_len_)));
  }
}

template <typename T>
Status LargeRowStore<T>::PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) {
  if (value.size() != width_ * sizeof(T) || state.size() != state_len_ * sizeof(T)) {
    return Status::InvalidArgument(fmt::format("table {}: a row of {} value and {} state bytes, expected {} and {}",
                                               spec().name, value.size(), state.size(), width_ * sizeof(T),
                                               state_len_ * sizeof(T)));
  }
  Row& row = rows_[key];
  // Never into a buffer a reply still holds.
  if (row.value.empty() || row.value.owner().use_count() != 1) row.value = NewBuffer();
  std::memcpy(row.value.data(), value.data(), value.size());
  if (state_len_ > 0) {
    if (!row.state) row.state = std::make_unique_for_overwrite<T[]>(state_len_);
    std::memcpy(row.state.get(), state.data(), state.size());
  }
  return Status::Ok();
}

template <typename T>
size_t LargeRowStore<T>::EraseRows(const KeyPredicate& pred) {
  return absl::erase_if(rows_, [&pred](const auto& kv) { return !pred || pred(kv.first); });
}

}  // namespace

std::unique_ptr<TableStore> NewLargeRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater) {
  switch (spec.value_type) {
    case ValueType::kFloat32: return std::make_unique<LargeRowStore<float>>(table, spec, std::move(updater));
    case ValueType::kFloat64: return std::make_unique<LargeRowStore<double>>(table, spec, std::move(updater));
    case ValueType::kInt32: return std::make_unique<LargeRowStore<int32_t>>(table, spec, std::move(updater));
    case ValueType::kInt64: return std::make_unique<LargeRowStore<int64_t>>(table, spec, std::move(updater));
  }
  return nullptr;
}

}  // namespace pserver::kv::table_store_internal
