#include "kv/server/sum_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <mutex>

namespace pserver::kv {

using transport::Bytes;
using transport::MessageType;

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static constexpr size_t kMaxFree = 4;
  explicit BufferPool(size_t bytes) : bytes_(bytes) {}

  // A buffer of `bytes_` bytes (unspecified contents) that returns here when released.
  std::shared_ptr<void> Get() {
    void* p = nullptr;
    {
      std::lock_guard lock(mu_);
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
  bool Put(void* p) {
    std::lock_guard lock(mu_);
    if (free_.size() >= kMaxFree) return false;
    free_.push_back(p);
    return true;
  }

  const size_t bytes_;
  std::mutex mu_;
  std::vector<void*> free_;  // guarded by mu_
};

template <typename T>
Status SumStore<T>::Handle(const ServerRequest& req, ServerResponse* resp) {
  const bool push = req.type != MessageType::kPull;
  const bool pull = req.type != MessageType::kPush;
  if (req.width == 0) {
    VarTable& t = var_[req.table];
    if (push) PSERVER_RETURN_IF_ERROR(PushVar(t, req));
    if (pull) PullVar(t, req, resp);
  } else {
    FixedTable& t = fixed_[req.table];
    t.width = req.width;
    if (push) PSERVER_RETURN_IF_ERROR(PushFixed(t, req));
    if (pull) PullFixed(t, req, resp);
  }
  return Status::Ok();
}

template <typename T>
SharedArray<T> SumStore<T>::NewLargeRow(FixedTable& t) {
  const size_t bytes = size_t{t.width} * sizeof(T);
  if (!t.pool) t.pool = std::make_shared<BufferPool>(bytes);
  std::shared_ptr<void> buf = t.pool->Get();
  T* data = static_cast<T*>(buf.get());
  return SharedArray<T>(std::move(buf), data, t.width);
}

template <typename T>
void SumStore<T>::PushLarge(FixedTable& t, const ServerRequest& req) {
  const size_t w = t.width;
  const T* src = reinterpret_cast<const T*>(req.vals.data());
  for (size_t i = 0; i < req.keys.size(); ++i, src += w) {
    SharedArray<T>& row = t.large_rows[req.keys[i]];
    if (row.empty()) {
      row = NewLargeRow(t);
      std::memcpy(row.data(), src, w * sizeof(T));
    } else if (row.owner().use_count() == 1) {
      T* dst = row.data();
      for (size_t j = 0; j < w; ++j) dst[j] += src[j];
    } else {  // a pull reply still holds the row: write the sum into a fresh buffer
      SharedArray<T> fresh = NewLargeRow(t);
      const T* old = row.data();
      T* dst = fresh.data();
      for (size_t j = 0; j < w; ++j) dst[j] = old[j] + src[j];
      row = std::move(fresh);
    }
  }
}

template <typename T>
Status SumStore<T>::PushFixed(FixedTable& t, const ServerRequest& req) {
  const size_t w = t.width;
  if (w * sizeof(T) >= kLargeRowBytes) {
    PushLarge(t, req);
    return Status::Ok();
  }
  const T* src = reinterpret_cast<const T*>(req.vals.data());
  for (size_t i = 0; i < req.keys.size(); ++i, src += w) {
    auto [it, fresh] = t.rows.try_emplace(req.keys[i], t.values.size() / w);
    if (fresh) {
      t.values.insert(t.values.end(), src, src + w);
      continue;
    }
    T* dst = t.values.data() + it->second * w;
    for (size_t j = 0; j < w; ++j) dst[j] += src[j];
  }
  return Status::Ok();
}

template <typename T>
void SumStore<T>::PullFixed(const FixedTable& t, const ServerRequest& req, ServerResponse* resp) const {
  const size_t w = t.width;
  const bool large = w * sizeof(T) >= kLargeRowBytes;
  if (large && req.keys.size() == 1) {
    if (auto it = t.large_rows.find(req.keys[0]); it != t.large_rows.end()) {
      resp->vals = transport::AsBytes(it->second);  // shared, not copied: see PushLarge
      return;
    }
    if (t.zero_row.empty()) t.zero_row = SharedArray<T>(w);
    resp->vals = transport::AsBytes(t.zero_row);
    return;
  }
  auto out = SharedArray<T>::Uninitialized(req.keys.size() * w);
  for (size_t i = 0; i < req.keys.size(); ++i) {
    T* dst = out.data() + i * w;
    const T* src = nullptr;
    if (large) {
      if (auto it = t.large_rows.find(req.keys[i]); it != t.large_rows.end()) src = it->second.data();
    } else if (auto it = t.rows.find(req.keys[i]); it != t.rows.end()) {
      src = t.values.data() + it->second * w;
    }
    if (src) {
      std::memcpy(dst, src, w * sizeof(T));
    } else {
      std::fill(dst, dst + w, T{});  // the value of a key never pushed
    }
  }
  resp->vals = transport::AsBytes(out);
}

template <typename T>
Status SumStore<T>::PushVar(VarTable& t, const ServerRequest& req) {
  // Check every length first so that a refused request changes nothing.
  for (size_t i = 0; i < req.keys.size(); ++i) {
    auto it = t.rows.find(req.keys[i]);
    if (it != t.rows.end() && it->second.size() != static_cast<size_t>(req.lens[i])) {
      return Status::InvalidArgument(fmt::format("key {} holds {} values; a push of {} cannot be added to it",
                                                 req.keys[i], it->second.size(), req.lens[i]));
    }
  }
  const T* src = reinterpret_cast<const T*>(req.vals.data());
  for (size_t i = 0; i < req.keys.size(); ++i) {
    const size_t len = static_cast<size_t>(req.lens[i]);
    auto [it, fresh] = t.rows.try_emplace(req.keys[i]);
    if (fresh) {
      it->second.assign(src, src + len);
    } else {
      for (size_t j = 0; j < len; ++j) it->second[j] += src[j];
    }
    src += len;
  }
  return Status::Ok();
}

template <typename T>
void SumStore<T>::PullVar(const VarTable& t, const ServerRequest& req, ServerResponse* resp) const {
  SharedArray<int32_t> lens(req.keys.size());
  size_t total = 0;
  for (size_t i = 0; i < req.keys.size(); ++i) {
    auto it = t.rows.find(req.keys[i]);
    lens[i] = it == t.rows.end() ? 0 : static_cast<int32_t>(it->second.size());
    total += static_cast<size_t>(lens[i]);
  }
  SharedArray<T> out(total);
  T* dst = out.data();
  for (size_t i = 0; i < req.keys.size(); ++i) {
    auto it = t.rows.find(req.keys[i]);
    if (it == t.rows.end()) continue;
    std::memcpy(dst, it->second.data(), it->second.size() * sizeof(T));
    dst += it->second.size();
  }
  resp->vals = transport::AsBytes(out);
  resp->lens = std::move(lens);
}

template <typename T>
size_t SumStore<T>::size(TableId table) const {
  if (auto it = fixed_.find(table); it != fixed_.end()) return it->second.rows.size() + it->second.large_rows.size();
  if (auto it = var_.find(table); it != var_.end()) return it->second.rows.size();
  return 0;
}

template class SumStore<float>;
template class SumStore<double>;
template class SumStore<int32_t>;
template class SumStore<int64_t>;

namespace {

template <typename T>
ServerHandler SumHandler() {
  auto store = std::make_shared<SumStore<T>>();
  return [store](const ServerRequest& req, ServerResponse* resp) { return store->Handle(req, resp); };
}

}  // namespace

ServerHandler MakeSumHandler(ValueType type) {
  switch (type) {
    case ValueType::kFloat32: return SumHandler<float>();
    case ValueType::kFloat64: return SumHandler<double>();
    case ValueType::kInt32: return SumHandler<int32_t>();
    case ValueType::kInt64: return SumHandler<int64_t>();
  }
  return {};
}

}  // namespace pserver::kv
