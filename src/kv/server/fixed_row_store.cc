// The fixed-width layouts of TableStore (table_store.h): sparse rows in SparseRows shards, and
// dense rows in one array per owned key range (allocated when the range is taken, freed when
// it is given up).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "kv/server/sparse_rows.h"
#include "kv/server/table_store_internal.h"

namespace pserver::kv::table_store_internal {

using transport::MessageType;

namespace {

// Lookups prefetched ahead of the one being done (hides the cache misses of random keys).
constexpr size_t kPrefetchDistance = 16;
// Pushed rows applied per Updater::ApplyBatch call.
constexpr size_t kBatch = 32;

// The shard of a key: the low half of its mix, range-reduced (SparseRows places keys by the high
// bits of the same mix, so a shard's keys still spread over its whole table).
uint32_t ShardOf(uint64_t mix, uint32_t num_shards) {
  return static_cast<uint32_t>(((mix & 0xffffffffULL) * num_shards) >> 32);
}

uint64_t Mix(uint64_t x) { return MixKey(x); }

bool StrictlyIncreasing(const SharedArray<Key>& keys) {
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i - 1] >= keys[i]) return false;
  }
  return true;
}

// A key of a request: its mix and its position in the request.
struct Item {
  uint64_t mix;
  size_t index;
};

// Items kept across requests: grows, never shrinks, and is never zeroed (every item used is
// written first).
struct ItemBuffer {
  std::unique_ptr<Item[]> items;
  size_t capacity = 0;
  size_t size = 0;

  // Makes room for exactly n items (their values unspecified).
  void Resize(size_t n) {
    if (n > capacity) {
      items = std::make_unique_for_overwrite<Item[]>(n);
      capacity = n;
    }
    size = n;
  }
  std::span<const Item> view() const { return {items.get(), size}; }
};

// The keys of a whole request, in order.
class AllKeys {
 public:
  explicit AllKeys(const SharedArray<Key>& keys) : keys_(keys.data()), n_(keys.size()) {}
  size_t size() const { return n_; }
  uint64_t mix(size_t j) const { return Mix(keys_[j]); }
  size_t index(size_t j) const { return j; }

 private:
  const Key* keys_;
  size_t n_;
};

// Some keys of a request (one shard's part of it), their mixes computed already.
class SomeKeys {
 public:
  explicit SomeKeys(std::span<const Item> items) : items_(items) {}
  size_t size() const { return items_.size(); }
  uint64_t mix(size_t j) const { return items_[j].mix; }
  size_t index(size_t j) const { return items_[j].index; }

 private:
  std::span<const Item> items_;
};

// Collects pushed rows and applies them kBatch at a time (one virtual call per batch). The
// owner calls Flush when done; the destructor applies what is still queued all the same.
template <typename T>
class PushBatch {
 public:
  PushBatch(const Updater& rule, const UpdateContext& ctx, uint32_t width, uint32_t push_len, const T* push)
      : rule_(rule), ctx_(ctx), width_(width), push_len_(push_len), push_(push) {}
  ~PushBatch() { Flush(); }
  PushBatch(const PushBatch&) = delete;
  PushBatch& operator=(const PushBatch&) = delete;

  // Queues the push of request position `index` into `row` (values, then state).
  void Add(T* row, size_t index) {
    entries_[used_++] = {row, row + width_, push_ + index * push_len_};
    if (used_ == kBatch) Flush();
  }
  // Applies the queued rows. Before anything may move rows (a SparseRows insertion).
  void Flush() {
    if (used_ == 0) return;
    rule_.ApplyBatch(ctx_, width_, std::span<const RowUpdate<T>>(entries_, used_));
    used_ = 0;
  }

 private:
  const Updater& rule_;
  const UpdateContext& ctx_;
  const uint32_t width_;
  const uint32_t push_len_;
  const T* const push_;
  size_t used_ = 0;
  RowUpdate<T> entries_[kBatch];
};

template <typename T>
class FixedRowStore final : public TableStore {
 public:
  FixedRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater, ApplyPool* pool,
                std::vector<KeyRange> owned)
      : TableStore(table, spec),
        width_(spec.width),
        state_len_(spec.width * updater->state_per_value()),
        row_len_(width_ + state_len_),
        push_len_(spec.width * spec.push_arity),
        updater_(std::move(updater)),
        pool_(pool),
        num_shards_(pool == nullptr ? 1 : pool->size()),
        dense_(spec.storage == StorageKind::kDense) {
    if (dense_) {
      for (const KeyRange& r : owned) segments_.push_back(NewSegment(r));
      for (const Segment& seg : segments_) dense_keys_ += seg.size();
    } else {
      shards_.reserve(num_shards_);
      for (uint32_t s = 0; s < num_shards_; ++s) shards_.emplace_back(row_len_, num_shards_);
    }
  }

  Status Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) override;
  size_t num_keys() const override;
  size_t memory_bytes() const override;
  void ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const override;
  void ForKeys(std::span<const Key> keys, const RowVisitor& fn) const override;
  Status PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) override;
  size_t EraseRows(const KeyPredicate& pred) override;
  uint32_t state_per_value() const override { return updater_->state_per_value(); }
  std::vector<KeyRange> owned_ranges() const override;

 protected:
  Status CheckInsert(Key key) const override {
    return dense_ && DenseRowOf(key) == nullptr ? NotOwned(key) : Status::Ok();
  }
  void TakeOwnedRanges(std::vector<KeyRange> ranges) override;

 private:
  struct Shard {
    Shard(uint32_t row_len, uint32_t num_shards) : rows(row_len), parts(num_shards) {}
    SparseRows<T> rows;
    // Scratch of a parallel request: parts[d] holds the keys of this shard's chunk of the
    // request (in request order) that belong to shard d.
    std::vector<ItemBuffer> parts;
  };
  // Dense: the keys of owned range `range` have rows 0, 1, ... of `rows`.
  struct Segment {
    KeyRange range;
    std::unique_ptr<T[]> rows;
    size_t size() const { return static_cast<size_t>(range.last - range.first) + 1; }
    T* Row(Key key, uint32_t row_len) const { return rows.get() + static_cast<size_t>(key - range.first) * row_len; }
  };
  // What one request asks; the pointers stay valid during Handle.
  struct Job {
    const ServerRequest* req;
    const UpdateContext* ctx;
    const T* push;  // nullptr: no push
    T* out;         // nullptr: no pull
  };

  // Dense: the row of `key`, or nullptr when no owned range holds it.
  T* DenseRowOf(Key key) const {
    if (segments_.size() == 1) {  // the common case: one range, no search
      const Segment& seg = segments_[0];
      return seg.range.Contains(key) ? seg.Row(key, row_len_) : nullptr;
    }
    auto it = std::upper_bound(segments_.begin(), segments_.end(), key,
                               [](Key k, const Segment& seg) { return k < seg.range.first; });
    if (it == segments_.begin()) return nullptr;
    --it;
    return key <= it->range.last ? it->Row(key, row_len_) : nullptr;
  }
  // Dense: a segment for `range` with every row at its initial value.
  Segment NewSegment(KeyRange range) const {
    Segment seg{range, nullptr};
    seg.rows = std::make_unique_for_overwrite<T[]>(seg.size() * row_len_);
    for (Key k = range.first;; ++k) {
      InitRow(k, seg.Row(k, row_len_));
      if (k == range.last) break;
    }
    return seg;
  }
  Status NotOwned(Key key) const {
    std::vector<KeyRange> owned;
    for (const Segment& seg : segments_) owned.push_back(seg.range);
    return Status::InvalidArgument(fmt::format("key {} is outside the key ranges {} this server holds of dense table {}",
                                               key, RangesString(owned), spec().name));
  }
  T Initial(Key key, uint32_t column) const { return table_store_internal::Initial<T>(spec().initializer, key, column); }
  void InitRow(Key key, T* row) const {
    for (uint32_t c = 0; c < width_; ++c) row[c] = Initial(key, c);
    std::fill(row + width_, row + row_len_, T{});
  }
  void Answer(const Job& job, size_t i, Key key, const T* row) const {
    T* dst = job.out + i * width_;
    if (row != nullptr) {
      if (width_ <= 8) {  // no call to memcpy for narrow rows
        for (uint32_t c = 0; c < width_; ++c) dst[c] = row[c];
      } else {
        std::memcpy(dst, row, width_ * sizeof(T));
      }
    } else {
      for (uint32_t c = 0; c < width_; ++c) dst[c] = Initial(key, c);
    }
  }
  PushBatch<T> MakeBatch(const Job& job) const {
    return PushBatch<T>(*updater_, *job.ctx, width_, push_len_, job.push);
  }

  // Sparse: the push, or the pull, of the keys `src` gives (all of a request or one shard's
  // part of it), in order. `shard_of(mix)` is the Shard of a key.
  template <typename Source, typename ShardOfFn>
  void PushSparse(const Job& job, const Source& src, ShardOfFn shard_of);
  template <typename Source, typename ShardOfFn>
  void PullSparse(const Job& job, const Source& src, ShardOfFn shard_of) const;
  // Both, the whole push first.
  template <typename Source, typename ShardOfFn>
  void RunSparse(const Job& job, const Source& src, ShardOfFn shard_of) {
    if (job.push != nullptr) PushSparse(job, src, shard_of);
    if (job.out != nullptr) PullSparse(job, src, shard_of);
  }
  // Sparse, parallel: puts the keys of chunk `s` of the request into shards_[s].parts.
  void Partition(const Job& job, uint32_t s);
  // Dense: the push, then the pull, of request positions [begin, end).
  void RunDense(const Job& job, size_t begin, size_t end);

  const uint32_t width_;
  const uint32_t state_len_;
  const uint32_t row_len_;
  const uint32_t push_len_;
  const std::unique_ptr<Updater> updater_;
  ApplyPool* const pool_;
  const uint32_t num_shards_;
  const bool dense_;
  // Dense: one row per key of the owned ranges.
  std::vector<Segment> segments_;  // sorted, disjoint
  size_t dense_keys_ = 0;
  // Sparse: the shards.
  std::vector<Shard> shards_;
};

template <typename T>
Status FixedRowStore<T>::Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) {
  const TableSpec& s = spec();
  AssertChecked(*this, req, width_, s.push_arity);
  const size_t n = req.keys.size();
  const bool push = req.type != MessageType::kPull;
  const bool pull = req.type != MessageType::kPush;
  SharedArray<T> aligned;  // the pushed values, copied only if the bytes are misaligned for T
  const T* push_vals = push ? PushedValues<T>(req, &aligned) : nullptr;
  if (dense_) {
    for (size_t i = 0; i < n; ++i) {
      if (DenseRowOf(req.keys[i]) == nullptr) return NotOwned(req.keys[i]);
    }
  }
  SharedArray<T> out;
  if (pull) out = SharedArray<T>::Uninitialized(n * width_);
  const Job job{&req, &ctx, push_vals, pull ? out.data() : nullptr};
  const bool parallel = n >= kParallelMinKeys && num_shards_ > 1;
  if (n == 0) {
    // nothing to do
  } else if (dense_) {
    if (parallel && StrictlyIncreasing(req.keys)) {  // a contiguous chunk of positions per shard
      pool_->Run([this, &job, n](uint32_t shard) {
        RunDense(job, n * shard / num_shards_, n * (shard + 1) / num_shards_);
      });
    } else {
      RunDense(job, 0, n);
    }
  } else if (num_shards_ == 1) {
    RunSparse(job, AllKeys(req.keys), [this](uint64_t) -> Shard& { return shards_[0]; });
  } else if (!parallel) {
    RunSparse(job, AllKeys(req.keys), [this](uint64_t mix) -> Shard& { return shards_[ShardOf(mix, num_shards_)]; });
  } else {
    // Two passes over the pool: each thread sorts its chunk of the request by shard, then each
    // applies its shard's keys, taking the chunks' parts in chunk (= request) order.
    pool_->Run([this, &job](uint32_t shard) { Partition(job, shard); });
    pool_->Run([this, &job](uint32_t shard) {
      Shard& mine = shards_[shard];
      const auto shard_of = [&mine](uint64_t) -> Shard& { return mine; };
      if (job.push != nullptr) {
        for (const Shard& chunk : shards_) PushSparse(job, SomeKeys(chunk.parts[shard].view()), shard_of);
      }
      if (job.out != nullptr) {
        for (const Shard& chunk : shards_) PullSparse(job, SomeKeys(chunk.parts[shard].view()), shard_of);
      }
    });
  }
  if (pull) resp->vals = transport::AsBytes(out);
  return Status::Ok();
}

template <typename T>
void FixedRowStore<T>::Partition(const Job& job, uint32_t s) {
  const SharedArray<Key>& keys = job.req->keys;
  const size_t n = keys.size();
  const size_t begin = n * s / num_shards_;
  const size_t end = n * (s + 1) / num_shards_;
  std::vector<ItemBuffer>& parts = shards_[s].parts;
  // Two passes, mixing each key twice (a few multiplies): count, then place each item at its
  // part's exact position. For two shards both cursors stay in registers and the key's random
  // shard picks one without a branch (a mispredicted branch per key would cost more).
  if (num_shards_ == 2) {
    size_t second = 0;  // a sum, vectorised
    for (size_t i = begin; i < end; ++i) second += ShardOf(Mix(keys[i]), 2);
    parts[0].Resize(end - begin - second);
    parts[1].Resize(second);
    Item* const base[2] = {parts[0].items.get(), parts[1].items.get()};
    size_t next0 = 0, next1 = 0;  // in registers
    for (size_t i = begin; i < end; ++i) {
      const uint64_t mix = Mix(keys[i]);
      const size_t d = ShardOf(mix, 2);
      base[d][next0 ^ ((next0 ^ next1) & (0 - d))] = {mix, i};
      next0 += 1 - d;
      next1 += d;
    }
    return;
  }
  std::vector<size_t> count(num_shards_, 0);
  for (size_t i = begin; i < end; ++i) ++count[ShardOf(Mix(keys[i]), num_shards_)];
  std::vector<Item*> next(num_shards_);
  for (uint32_t d = 0; d < num_shards_; ++d) {
    parts[d].Resize(count[d]);
    next[d] = parts[d].items.get();
  }
  for (size_t i = begin; i < end; ++i) {
    const uint64_t mix = Mix(keys[i]);
    *next[ShardOf(mix, num_shards_)]++ = {mix, i};
  }
}

// Calls visit(j, mix) for each key of `src` in order, the slots of the key kPrefetchDistance
// positions ahead prefetched first (shard_of(mix).rows holds a key's row).
template <typename Source, typename ShardOfFn, typename Visit>
void VisitPrefetched(const Source& src, ShardOfFn shard_of, Visit visit) {
  const size_t m = src.size();
  const auto prefetch = [&](size_t j) {
    const uint64_t mix = src.mix(j);
    shard_of(mix).rows.Prefetch(mix);
  };
  for (size_t j = 0; j < std::min(kPrefetchDistance, m); ++j) prefetch(j);
  for (size_t j = 0; j < m; ++j) {
    if (j + kPrefetchDistance < m) prefetch(j + kPrefetchDistance);
    visit(j, src.mix(j));
  }
}

template <typename T>
template <typename Source, typename ShardOfFn>
void FixedRowStore<T>::PushSparse(const Job& job, const Source& src, ShardOfFn shard_of) {
  const SharedArray<Key>& keys = job.req->keys;
  PushBatch<T> batch = MakeBatch(job);
  VisitPrefetched(src, shard_of, [&](size_t j, uint64_t mix) {
    SparseRows<T>& rows = shard_of(mix).rows;
    T* row = rows.FindMixed(mix);
    if (row == nullptr) {  // a new key: its insertion may move the queued rows
      batch.Flush();
      row = rows.FindOrInsertMixed(mix).row;
      InitRow(keys[src.index(j)], row);
    }
    batch.Add(row, src.index(j));
  });
  batch.Flush();
}

template <typename T>
template <typename Source, typename ShardOfFn>
void FixedRowStore<T>::PullSparse(const Job& job, const Source& src, ShardOfFn shard_of) const {
  const SharedArray<Key>& keys = job.req->keys;
  VisitPrefetched(src, shard_of, [&](size_t j, uint64_t mix) {
    const size_t i = src.index(j);
    Answer(job, i, keys[i], std::as_const(shard_of(mix).rows).FindMixed(mix));
  });
}

template <typename T>
void FixedRowStore<T>::RunDense(const Job& job, size_t begin, size_t end) {
  const SharedArray<Key>& keys = job.req->keys;
  if (job.push != nullptr) {
    PushBatch<T> batch = MakeBatch(job);
    for (size_t i = begin; i < end; ++i) batch.Add(DenseRowOf(keys[i]), i);
    batch.Flush();
  }
  if (job.out != nullptr) {
    for (size_t i = begin; i < end; ++i) Answer(job, i, keys[i], DenseRowOf(keys[i]));
  }
}

template <typename T>
size_t FixedRowStore<T>::num_keys() const {
  if (dense_) return dense_keys_;
  size_t n = 0;
  for (const Shard& s : shards_) n += s.rows.size();
  return n;
}

template <typename T>
size_t FixedRowStore<T>::memory_bytes() const {
  size_t bytes = sizeof(*this) + dense_keys_ * row_len_ * sizeof(T) + segments_.capacity() * sizeof(Segment) +
                 shards_.capacity() * sizeof(Shard);
  for (const Shard& s : shards_) {
    bytes += s.rows.memory_bytes() - sizeof(s.rows) + s.parts.capacity() * sizeof(s.parts[0]);
    for (const ItemBuffer& part : s.parts) bytes += part.capacity * sizeof(Item);
  }
  return bytes;
}

template <typename T>
void FixedRowStore<T>::ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const {
  const auto visit = [&](Key key, const T* row) {
    if (pred && !pred(key)) return;
    fn(key, std::as_bytes(std::span<const T>(row, width_)), std::as_bytes(std::span<const T>(row + width_, state_len_)));
  };
  if (dense_) {
    for (const Segment& seg : segments_) {
      for (Key k = seg.range.first;; ++k) {
        visit(k, seg.Row(k, row_len_));
        if (k == seg.range.last) break;
      }
    }
    return;
  }
  for (const Shard& s : shards_) s.rows.ForEach(visit);
}

template <typename T>
void FixedRowStore<T>::ForKeys(std::span<const Key> keys, const RowVisitor& fn) const {
  for (Key key : keys) {
    const T* row = nullptr;
    if (dense_) {
      row = DenseRowOf(key);
    } else {
      const uint64_t mix = Mix(key);
      row = shards_[ShardOf(mix, num_shards_)].rows.FindMixed(mix);
    }
    if (row == nullptr) continue;
    fn(key, std::as_bytes(std::span<const T>(row, width_)), std::as_bytes(std::span<const T>(row + width_, state_len_)));
  }
}

template <typename T>
Status FixedRowStore<T>::PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) {
  if (value.size() != width_ * sizeof(T) || state.size() != state_len_ * sizeof(T)) {
    return Status::InvalidArgument(fmt::format("table {}: a row of {} value and {} state bytes, expected {} and {}",
                                               spec().name, value.size(), state.size(), width_ * sizeof(T),
                                               state_len_ * sizeof(T)));
  }
  T* row = nullptr;
  if (dense_) {
    row = DenseRowOf(key);
    if (row == nullptr) return NotOwned(key);
  } else {
    const uint64_t mix = Mix(key);
    row = shards_[ShardOf(mix, num_shards_)].rows.FindOrInsertMixed(mix).row;
  }
  if (!value.empty()) std::memcpy(row, value.data(), value.size());
  if (!state.empty()) std::memcpy(row + width_, state.data(), state.size());
  return Status::Ok();
}

template <typename T>
size_t FixedRowStore<T>::EraseRows(const KeyPredicate& pred) {
  size_t erased = 0;
  if (dense_) {
    for (const Segment& seg : segments_) {
      for (Key k = seg.range.first;; ++k) {
        if (!pred || pred(k)) {
          InitRow(k, seg.Row(k, row_len_));
          ++erased;
        }
        if (k == seg.range.last) break;
      }
    }
    return erased;
  }
  for (Shard& s : shards_) erased += s.rows.EraseIf([&pred](Key k) { return !pred || pred(k); });
  return erased;
}

template <typename T>
std::vector<KeyRange> FixedRowStore<T>::owned_ranges() const {
  std::vector<KeyRange> out;  // adjacent segments reported as one range
  for (const Segment& seg : segments_) {
    if (!out.empty() && out.back().last + 1 == seg.range.first) {
      out.back().last = seg.range.last;
    } else {
      out.push_back(seg.range);
    }
  }
  return out;
}

template <typename T>
void FixedRowStore<T>::TakeOwnedRanges(std::vector<KeyRange> ranges) {
  if (!dense_) return;
  // A segment inside the new ranges is kept as it is; one that reaches out of them is cut to
  // its part inside (a copy of those rows); the gaps between kept rows become new segments at
  // initial values. Both lists are sorted and disjoint, so one walk does it.
  std::vector<Segment> next;
  size_t old = 0;
  for (const KeyRange& r : ranges) {
    while (old < segments_.size() && segments_[old].range.last < r.first) ++old;
    Key cursor = r.first;
    bool covered = false;
    for (size_t i = old; i < segments_.size() && segments_[i].range.first <= r.last; ++i) {
      Segment& held = segments_[i];
      const KeyRange inside{std::max(held.range.first, r.first), std::min(held.range.last, r.last)};
      if (inside.first > cursor) next.push_back(NewSegment({cursor, inside.first - 1}));
      if (inside == held.range) {
        next.push_back(std::move(held));
      } else {
        Segment cut{inside, std::make_unique_for_overwrite<T[]>(
                                (static_cast<size_t>(inside.last - inside.first) + 1) * row_len_)};
        std::memcpy(cut.rows.get(), held.Row(inside.first, row_len_), cut.size() * row_len_ * sizeof(T));
        next.push_back(std::move(cut));
      }
      if (inside.last == r.last) {
        covered = true;
        break;
      }
      cursor = inside.last + 1;
    }
    if (!covered) next.push_back(NewSegment({cursor, r.last}));
  }
  segments_ = std::move(next);
  dense_keys_ = 0;
  for (const Segment& seg : segments_) dense_keys_ += seg.size();
}

}  // namespace

std::unique_ptr<TableStore> NewFixedRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater,
                                             ApplyPool* pool, std::vector<KeyRange> owned) {
  switch (spec.value_type) {
    case ValueType::kFloat32:
      return std::make_unique<FixedRowStore<float>>(table, spec, std::move(updater), pool, std::move(owned));
    case ValueType::kFloat64:
      return std::make_unique<FixedRowStore<double>>(table, spec, std::move(updater), pool, std::move(owned));
    case ValueType::kInt32:
      return std::make_unique<FixedRowStore<int32_t>>(table, spec, std::move(updater), pool, std::move(owned));
    case ValueType::kInt64:
      return std::make_unique<FixedRowStore<int64_t>>(table, spec, std::move(updater), pool, std::move(owned));
  }
  return nullptr;
}

}  // namespace pserver::kv::table_store_internal
