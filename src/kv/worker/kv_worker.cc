// The typed facade KVWorker<T> over KVWorkerCore, instantiated for the four value types.
#include "pserver/kv_worker.h"

#include "kv/node_access.h"
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

Status KVWorkerBase::SetMaxDelay(TableId table, int64_t tau) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->SetMaxDelay(table, tau);
}

Status KVWorkerBase::SetStaleness(TableId table, int64_t staleness) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->SetStaleness(table, staleness);
}

Result<uint64_t> KVWorkerBase::Clock() {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->Clock();
}

Result<uint64_t> KVWorkerBase::ClockTo(uint64_t clock) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  return core_->ClockTo(clock);
}

uint64_t KVWorkerBase::clock() const { return core_ ? core_->clock() : 0; }

Result<Timestamp> KVWorkerBase::PushHeld(TableId table, const RequestOptions& opts) {
  if (!core_) return Status::InvalidArgument("KVWorker needs a worker node");
  Call c;
  c.table = table;
  c.callback = opts.callback;
  c.after = opts.after;
  c.max_delay = opts.max_delay;
  return core_->PushHeld(std::move(c));
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
                            const SharedArray<int32_t>* lens, const RequestOptions& opts) {
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
  c.callback = opts.callback;
  c.after = opts.after;
  c.max_delay = opts.max_delay;
  c.includes = opts.includes;
  c.exact = opts.exact;
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
                                    const RequestOptions& opts) {
  return Submit(MakeCall<T>(MessageType::kPush, table, keys, &vals, nullptr, opts));
}

template <typename T>
Result<Timestamp> KVWorker<T>::Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                    const SharedArray<int32_t>& lens, const RequestOptions& opts) {
  return Submit(MakeCall<T>(MessageType::kPush, table, keys, &vals, &lens, opts));
}

template <typename T>
Result<Timestamp> KVWorker<T>::Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals, const RequestOptions& opts) {
  return Pull(table, keys, vals, nullptr, opts);
}

template <typename T>
Result<Timestamp> KVWorker<T>::Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals,
                                    SharedArray<int32_t>* lens, const RequestOptions& opts) {
  if (vals == nullptr) return Status::InvalidArgument("Pull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPull, table, keys, nullptr, nullptr, opts);
  SetOutput(&c, vals, lens);
  return Submit(std::move(c));
}

template <typename T>
Result<Timestamp> KVWorker<T>::PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                        SharedArray<T>* out, const RequestOptions& opts) {
  if (out == nullptr) return Status::InvalidArgument("PushPull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPushPull, table, keys, &vals, nullptr, opts);
  SetOutput<T>(&c, out, nullptr);
  return Submit(std::move(c));
}

template <typename T>
Result<Timestamp> KVWorker<T>::PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                                        const SharedArray<int32_t>& lens, SharedArray<T>* out,
                                        SharedArray<int32_t>* out_lens, const RequestOptions& opts) {
  if (out == nullptr) return Status::InvalidArgument("PushPull needs somewhere to put the values");
  Call c = MakeCall<T>(MessageType::kPushPull, table, keys, &vals, &lens, opts);
  SetOutput(&c, out, out_lens);
  return Submit(std::move(c));
}

template class KVWorker<float>;
template class KVWorker<double>;
template class KVWorker<int32_t>;
template class KVWorker<int64_t>;

}  // namespace pserver
