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
// Consistency (the paper's flexible consistency, as task dependencies): every request is a task
// of this worker, numbered by its timestamp. A task starts -- is sent -- only when
//   - every task named in RequestOptions::after has finished (execute-after-finished), and
//   - with a delay bound tau >= 0 (per table by SetMaxDelay, or per request), every task
//     <= t - tau - 1 of this worker has finished: tau = 0 is sequential, kEventual (the
//     default) never waits, and no more than tau + 1 tasks are ever in flight.
// Tasks start in timestamp order: a held task holds back the tasks issued after it, so the
// per-server order above still holds. Calls never block for this; Wait does.
//
// Stale-synchronous clocks (across workers): Clock() advances this worker's iteration clock
// and tells every server. With staleness s for a table (SetStaleness), a pull issued at clock c
// is answered only once every live worker has reached clock c - s (s = 0: bulk-synchronous).
// A worker that dies is dropped from the clock when the scheduler declares it dead.
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
#include <optional>
#include <type_traits>
#include <vector>

#include "pserver/node.h"
#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/types.h"

namespace pserver {

namespace kv {
class KVWorkerCore;
}  // namespace kv

inline constexpr std::chrono::milliseconds kDefaultWaitTimeout{120000};
// A delay bound or staleness of "no limit".
inline constexpr int64_t kEventual = -1;

// Per-request settings. A callable taking `const Status&` converts to it (a plain callback).
struct RequestOptions {
  using Callback = std::function<void(const Status&)>;
  RequestOptions() = default;
  template <typename F>
    requires std::is_invocable_v<F&, const Status&>
  RequestOptions(F&& f) : callback(std::forward<F>(f)) {}  // NOLINT: implicit on purpose

  // Runs once when the request completed (see the thread note above).
  Callback callback;
  // Tasks of this worker that must finish before this one starts. Each must be a timestamp
  // this worker already issued (kInvalidArgument otherwise).
  std::vector<Timestamp> after;
  // The delay bound tau for this request, overriding the table's (kEventual: none).
  std::optional<int64_t> max_delay;
  // Pulls: if set, receives per worker rank the newest timestamp of that worker whose pushes
  // every pulled value includes (the servers' range vector clocks, minimum over the pulled
  // ranges). Set before the callback runs; must stay valid until then.
  std::vector<Timestamp>* includes = nullptr;
  // Pulls: the values exactly as the servers hold them, past the table's lossy filters
  // ("fp16", "q8" round pull replies otherwise; docs/filters.md). For a final model.
  bool exact = false;
};

// The type-independent part of KVWorker<T>; use KVWorker<T>.
class KVWorkerBase {
 public:
  using Callback = RequestOptions::Callback;

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

  // The delay bound tau of later requests of `table` (0 sequential, kEventual none; the
  // default). kNotFound for an undeclared table; kInvalidArgument for tau < -1.
  Status SetMaxDelay(TableId table, int64_t tau);

  // The staleness s of later pulls of `table` (kEventual, the default: no clock wait).
  // kNotFound for an undeclared table; kInvalidArgument for s < -1.
  Status SetStaleness(TableId table, int64_t staleness);

  // Advances this worker's clock by one and tells every server, in order with this worker's
  // requests (pushes issued before Clock() count for the old clock). Returns the new clock.
  // The node's sticky error once the job failed.
  Result<uint64_t> Clock();
  // Clock(), but to `clock` at once (>= the current clock; kInvalidArgument otherwise): e.g. a
  // job resumed from a checkpoint goes on at the clock its update rules' state was written at.
  Result<uint64_t> ClockTo(uint64_t clock);
  // This worker's current clock (0 at the start).
  uint64_t clock() const;

  // Pushes what the lossy filters of `table` kept back from this worker's earlier pushes
  // (docs/filters.md): the changes "sigmod" delayed and what "fp16" or "q8" rounded off, summed
  // per key and not rounded again. Once it completed, everything pushed is on the servers (to
  // the table type's precision). A table with nothing kept back pushes no key.
  Result<Timestamp> PushHeld(TableId table, const RequestOptions& opts = {});

  // One request in type-erased form; defined and used inside the library only.
  struct Call;

 protected:
  Result<Timestamp> Submit(Call&& call);
  std::shared_ptr<kv::KVWorkerCore> core_;
};

template <typename T>
class KVWorker : public KVWorkerBase {
 public:
  explicit KVWorker(Node& node) : KVWorkerBase(node) {}

  // Adds (by the server's update rule) `vals` to the values of `keys`.
  Result<Timestamp> Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                         const RequestOptions& opts = {});
  // The same for a variable-length table: key i has lens[i] values, and carries lens[i] times the
  // table's push_arity of them (push_arity blocks of lens[i]).
  Result<Timestamp> Push(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                         const SharedArray<int32_t>& lens, const RequestOptions& opts = {});

  // Fetches the values of `keys` into *vals. If *vals is empty it is set to a new (possibly
  // aliased) array; otherwise it must have the right size and the values are copied into it.
  Result<Timestamp> Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals, const RequestOptions& opts = {});
  // The same for a variable-length table; *lens receives each key's length.
  Result<Timestamp> Pull(TableId table, const SharedArray<Key>& keys, SharedArray<T>* vals,
                         SharedArray<int32_t>* lens, const RequestOptions& opts = {});

  // Push then pull in one round trip: *out receives the values after the push was applied.
  Result<Timestamp> PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                             SharedArray<T>* out, const RequestOptions& opts = {});
  Result<Timestamp> PushPull(TableId table, const SharedArray<Key>& keys, const SharedArray<T>& vals,
                             const SharedArray<int32_t>& lens, SharedArray<T>* out, SharedArray<int32_t>* out_lens,
                             const RequestOptions& opts = {});
};

extern template class KVWorker<float>;
extern template class KVWorker<double>;
extern template class KVWorker<int32_t>;
extern template class KVWorker<int64_t>;

}  // namespace pserver
