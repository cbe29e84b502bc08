// The typed facade KVWorker<T> over KVWorkerCore, instantiated for the four value types.
#include "pserver/kv_worker.h"

#include "cluster/node_access.h"
#include "kv/worker/kv_worker_core.h"

namespace pserver {

using transport::Bytes;
using transport::MessageType;

KVWorkerBase::KVWorkerBase(Node& node) {
  cluster::NodeRuntime* runtime = internal::NodeAccess::Runtime(node);
  // A KVWorker on a non-worker node is a programming error; fail every call clearly instead.
  if (runtime == nullptr || runtime->role() != Role::kWorker) return;
  core_ = std::static_pointer_cast<kv::KVWorkerCore>(
      runtime->AttachDataHandler([runtime] { return std::make_shared<kv::KVWorkerCore>(runtime); }));
}

KVWorkerBase::~KVWorkerBase() = default;

Result<Timestamp> KVWorkerBase::Submit(Call&& call) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->Submit(std::move(call));
}

Status KVWorkerBase::Wait(Timestamp ts, std::chrono::milliseconds timeout) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->Wait(ts, timeout);
}

Result<uint32_t> KVWorkerBase::ServerOf(TableId table, Key key) const {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->ServerOf(table, key);
}

namespace {

template <typename T>
SharedArray<T> FromBytes(const Bytes& b) {
  return SharedArray<T>(b.owner(), reinterpret_cast<T*>(b.data()), b.size() / sizeof(T));
}

}  // namespace

namespace {

template <typename T>
KVWorkerBase::Call MakeCall(MessageType type, TableId table, const SharedArray<Key>& keys, const SharedArray<T>* vals,
                            const SharedArray<int32_t>* lens, KVWorkerBase::Callback cb) {
  KVWorkerBase::Call c;
  c.type = type;
  c.table = table;
  c.value_type = ValueTypeOf<T>::value;
  c.keys = keys;
  if (vals) c.vals = transport::AsBytes(*vals);
  if (lens) {
    c.lens = *lens;
    c.has_lens = true;
  }
  c.callback = std::move(cb);
  return c;
}

// Where a pull's result goes: *vals (and *lens) are set on the receive thread before the
// callback runs; a non-empty *vals is the caller's buffer and is filled in place.
template <typename T>
void SetOutput(KVWorkerBase::Call* c, SharedArray<T>* vals, SharedArray<int32_t>* lens) {
  c->out_vals = transport::AsBytes(*vals);
  c->on_values = [vals, lens](Bytes v, SharedArray<int32_t> l) {
    *vals = FromBytes<T>(v);
    if (lens) *lens = std::move(l);
  };
}

}  // namespace

template <typename T>
Result<Timestamp> KVWorker<T>::Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                    Callback cb) {
  return Submit(MakeCall<T>(MessageType::kPush, table, keys, &vals, nullptr, std::move(cb)));
}

template <typename T>
Result<Timestamp> KVWorker<T>::Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                    const SharedArray<int32_t>& lens, Callback cb) {
  return Submit(MakeCall<T>(MessageType::kPush, table, keys, &vals, &lens, std::move(cb)));
}

template <typename T>
Result<Timestamp> KVWorker<T>::Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals, Callback cb) {
  return Pull(table, keys, vals, nullptr, std::move(cb));
}

template <typename T>
Result<Timestamp> KVWorker<T>::Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals,
                                    SharedArray<int32_t>* lens, Callback cb) {
  if (vals == nullptr) return Status::InvalidArgument("Pull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPull, table, keys, nullptr, nullptr, std::move(cb));
  SetOutput(&c, vals, lens);
  return Submit(std::move(c));
}

template <typename T>
Result<Timestamp> KVWorker<T>::PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                        SharedArray<T>* out, Callback cb) {
  if (out == nullptr) return Status::InvalidArgument("PushPull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPushPull, table, keys, &vals, nullptr, std::move(cb));
  SetOutput<T>(&c, out, nullptr);
  return Submit(std::move(c));
}

template <typename T>
Result<Timestamp> KVWorker<T>::PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                        const SharedArray<int32_t>& lens, SharedArray<T>* out,
                                        SharedArray<int32_t>* out_lens, Callback cb) {
  if (out == nullptr) return Status::InvalidArgument("PushPull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPushPull, table, keys, &vals, &lens, std::move(cb));
  SetOutput(&c, out, out_lens);
  return Submit(std::move(c));
}

template class KVWorker<float>;
template class KVWorker<double>;
template class KVWorker<int32_t>;
template class KVWorker<int64_t>;

}  // namespace pserver
