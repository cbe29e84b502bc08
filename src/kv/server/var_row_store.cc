// The variable-length layout of TableStore (table_store.h): one array per key, its length set
// by the key's first push.
#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/server/table_store_internal.h"

namespace pserver::kv::table_store_internal {

using transport::MessageType;

namespace {

template <typename T>
class VarRowStore final : public TableStore {
 public:
  VarRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater)
      : TableStore(table, spec),
        state_per_value_(updater->state_per_value()),
        push_arity_(spec.push_arity),
        updater_(std::move(updater)) {}

  Status Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) override;
  size_t num_keys() const override { return rows_.size(); }
  size_t memory_bytes() const override;
  void ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const override;
  void ForKeys(std::span<const Key> keys, const RowVisitor& fn) const override {
    for (Key key : keys) {
      auto it = rows_.find(key);
      if (it == rows_.end()) continue;
      const size_t len = LengthOf(it->second);
      fn(key, std::as_bytes(std::span<const T>(it->second.data(), len)),
         std::as_bytes(std::span<const T>(it->second.data() + len, len * state_per_value_)));
    }
  }
  Status PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) override;
  size_t EraseRows(const KeyPredicate& pred) override {
    return absl::erase_if(rows_, [&pred](const auto& kv) { return !pred || pred(kv.first); });
  }
  uint32_t state_per_value() const override { return state_per_value_; }

 private:
  // A row of `len` values holds len * (1 + state_per_value_) values: the values, then the state.
  size_t LengthOf(const std::vector<T>& row) const { return row.size() / (1 + size_t{state_per_value_}); }
  // Refuses (naming the key) a push whose length for a key differs from the key's stored length;
  // checked before anything changes.
  Status CheckLengths(const ServerRequest& req) const;
  void Pull(const ServerRequest& req, ServerResponse* resp) const;

  const uint32_t state_per_value_;
  const uint32_t push_arity_;
  const std::unique_ptr<Updater> updater_;
  absl::flat_hash_map<Key, std::vector<T>> rows_;
};

template <typename T>
Status VarRowStore<T>::CheckLengths(const ServerRequest& req) const {
  for (size_t i = 0; i < req.keys.size(); ++i) {  // unique keys: a new key has no length yet
    const Key key = req.keys[i];
    const int32_t len = req.lens[i];
    auto it = rows_.find(key);
    const int32_t held = it == rows_.end() ? len : static_cast<int32_t>(LengthOf(it->second));
    if (held != len) {
      return Status::InvalidArgument(
          fmt::format("key {} holds {} values; a push of {} cannot be added to it", key, held, len));
    }
  }
  return Status::Ok();
}

template <typename T>
Status VarRowStore<T>::Handle(const ServerRequest& req, const UpdateContext& ctx, ServerResponse* resp) {
  AssertChecked(*this, req, 0, push_arity_);
  if (req.type != MessageType::kPull) {
    PSERVER_RETURN_IF_ERROR(CheckLengths(req));
    SharedArray<T> aligned;
    const T* src = PushedValues<T>(req, &aligned);
    const InitializerSpec& init = spec().initializer;
    for (size_t i = 0; i < req.keys.size(); ++i) {
      const size_t len = static_cast<size_t>(req.lens[i]);
      auto [it, fresh] = rows_.try_emplace(req.keys[i]);
      std::vector<T>& row = it->second;
      if (fresh) {
        row.assign(len * (1 + size_t{state_per_value_}), T{});
        for (uint32_t c = 0; c < len; ++c) row[c] = Initial<T>(init, req.keys[i], c);
      }
      updater_->Apply(ctx, std::span<T>(row.data(), len), std::span<T>(row.data() + len, len * state_per_value_),
                      std::span<const T>(src, len * push_arity_));
      src += len * push_arity_;
    }
  }
  if (req.type != MessageType::kPush) Pull(req, resp);
  return Status::Ok();
}

template <typename T>
void VarRowStore<T>::Pull(const ServerRequest& req, ServerResponse* resp) const {
  const size_t n = req.keys.size();
  SharedArray<int32_t> lens = SharedArray<int32_t>::Uninitialized(n);
  std::vector<const std::vector<T>*> found(n, nullptr);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    auto it = rows_.find(req.keys[i]);
    found[i] = it == rows_.end() ? nullptr : &it->second;
    const size_t len = found[i] ? LengthOf(*found[i]) : 0;  // a key never pushed has no values
    lens[i] = static_cast<int32_t>(len);
    total += len;
  }
  auto out = SharedArray<T>::Uninitialized(total);
  T* dst = out.data();
  for (size_t i = 0; i < n; ++i) {
    if (found[i] == nullptr) continue;
    const size_t len = static_cast<size_t>(lens[i]);
    if (len > 0) std::memcpy(dst, found[i]->data(), len * sizeof(T));
    dst += len;
  }
  resp->vals = transport::AsBytes(out);
  resp->lens = std::move(lens);
}

template <typename T>
size_t VarRowStore<T>::memory_bytes() const {
  size_t bytes = sizeof(*this) + rows_.capacity() * (sizeof(std::pair<const Key, std::vector<T>>) + 1);
  for (const auto& [key, row] : rows_) bytes += row.capacity() * sizeof(T);
  return bytes;
}

template <typename T>
void VarRowStore<T>::ForEachIf(const KeyPredicate& pred, const RowVisitor& fn) const {
  for (const auto& [key, row] : rows_) {
    if (pred && !pred(key)) continue;
    const size_t len = LengthOf(row);
    fn(key, std::as_bytes(std::span<const T>(row.data(), len)),
       std::as_bytes(std::span<const T>(row.data() + len, len * state_per_value_)));
  }
}

template <typename T>
Status VarRowStore<T>::PutRow(Key key, std::span<const std::byte> value, std::span<const std::byte> state) {
  if (value.size() % sizeof(T) != 0 || value.size() / sizeof(T) > 0x7fffffffULL ||
      state.size() != value.size() * state_per_value_) {
    return Status::InvalidArgument(fmt::format(
        "table {}: a row of {} value and {} state bytes; expected whole values of {} bytes and {} state values each",
        spec().name, value.size(), state.size(), sizeof(T), state_per_value_));
  }
  std::vector<T>& row = rows_[key];
  row.resize((value.size() + state.size()) / sizeof(T));
  if (!value.empty()) std::memcpy(row.data(), value.data(), value.size());
  if (!state.empty()) std::memcpy(reinterpret_cast<std::byte*>(row.data()) + value.size(), state.data(), state.size());
  return Status::Ok();
}

}  // namespace

std::unique_ptr<TableStore> NewVarRowStore(TableId table, const TableSpec& spec, std::unique_ptr<Updater> updater) {
  switch (spec.value_type) {
    case ValueType::kFloat32: return std::make_unique<VarRowStore<float>>(table, spec, std::move(updater));
    case ValueType::kFloat64: return std::make_unique<VarRowStore<double>>(table, spec, std::move(updater));
    case ValueType::kInt32: return std::make_unique<VarRowStore<int32_t>>(table, spec, std::move(updater));
    case ValueType::kInt64: return std::make_unique<VarRowStore<int64_t>>(table, spec, std::move(updater));
  }
  return nullptr;
}

}  // namespace pserver::kv::table_store_internal
