// KVWorker<T>: the worker's side of the key-value API.
//
// Push, Pull and PushPull take a table, a sorted list of keys and values of type T, slice the
// request by the servers' key ranges, send each server its part, and return a Timestamp at
// once. Wait(ts) blocks until that request completed; an optional callback runs when it does.
// Values travel without copies: a SharedArray built from a std::vector takes it over, and a
// pulled array may alias the received network buffer.
//
// Rows: a table of width d carries d values per key (keys.size() * d values). A table
// declared with variable_length carries a lengths array instead (lens[i] values for key i).
//
// Order: requests of this worker to one server are applied in the order they were issued, so a
// Pull issued after a Push of the same keys sees that push even without a Wait between them.
//
// Errors at the call (nothing is sent): kInvalidArgument for unsorted or duplicate keys, value
// or length arrays whose size does not match, a table whose value type is not T; kNotFound for
// a table this node did not declare; the node's sticky error once the job failed. Errors of a
// request (a server died, the job ended) are returned by Wait and passed to the callback.
//
// Thread safety: all methods are thread-safe. Callbacks run on the node's receive thread (or,
// for a request with no keys, in the calling thread before the call returns); they must not
// block or call Wait. Arrays passed to Push must not be modified until the request completes;
// `*vals` of a Pull must not be touched until it completes.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "pserver/node.h"
#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/types.h"

namespace pserver {

namespace kv {
class KVWorkerCore;
}  // namespace kv

inline constexpr std::chrono::milliseconds kDefaultWaitTimeout{120000};

// The type-independent part of KVWorker<T>; use KVWorker<T>.
class KVWorkerBase {
 public:
  using Callback = std::function<void(const Status&)>;

  // REQUIRES: `node` is a worker and outlives this object.
  explicit KVWorkerBase(Node& node);
  ~KVWorkerBase();
  KVWorkerBase(const KVWorkerBase&) = delete;
  KVWorkerBase& operator=(const KVWorkerBase&) = delete;

  // Blocks until request `ts` completed: its status, or kDeadlineExceeded naming the request
  // and the servers that have not answered when `timeout` passes (the request stays pending).
  // kInvalidArgument for a timestamp this worker never issued.
  Status Wait(Timestamp ts, std::chrono::milliseconds timeout = kDefaultWaitTimeout);

  // The rank of the server that holds `key` of `table` under the current routing.
  // kNotFound for a table this node did not declare; kInvalidArgument for a key outside a
  // range-placed table's range.
  Result<uint32_t> ServerOf(TableId table, Key key) const;

  // One request in type-erased form; defined and used inside the library only.
  struct Call;

 protected:
  Result<Timestamp> Submit(Call&& call);
  std::shared_ptr<kv::KVWorkerCore> core_;
};

template <typename T>
class KVWorker : public KVWorkerBase {
 public:
  using KVWorkerBase::Callback;
  explicit KVWorker(Node& node) : KVWorkerBase(node) {}

  // Adds (by the server's update rule) `vals` to the values of `keys`.
  Result<Timestamp> Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                         Callback cb = {});
  // The same for a variable-length table: key i carries lens[i] values.
  Result<Timestamp> Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                         const SharedArray<int32_t>& lens, Callback cb = {});

  // Fetches the values of `keys` into *vals. If *vals is empty it is set to a new (possibly
  // aliased) array; otherwise it must have the right size and the values are copied into it.
  Result<Timestamp> Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals, Callback cb = {});
  // The same for a variable-length table; *lens receives each key's length.
  Result<Timestamp> Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals,
                         SharedArray<int32_t>* lens, Callback cb = {});

  // Push then pull in one round trip: *out receives the values after the push was applied.
  Result<Timestamp> PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                             SharedArray<T>* out, Callback cb = {});
  Result<Timestamp> PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                             const SharedArray<int32_t>& lens, SharedArray<T>* out, SharedArray<int32_t>* out_lens,
                             Callback cb = {});
};

extern template class KVWorker<float>;
extern template class KVWorker<double>;
extern template class KVWorker<int32_t>;
extern template class KVWorker<int64_t>;

}  // namespace pserver
