// KVServer<T>: the server's side of the key-value API, for tables whose values are T.
//
// A server node holds the key ranges the ring gives it, for every table. Each request that
// reaches it (the part of a worker's Push/Pull/PushPull that falls in its ranges) is applied
// by the table's store: the table's update rule (TableSpec::updater; "add" by default) on its
// storage (sparse or dense), with the optimizer state of each key beside its value. A key never
// pushed reads as the table's initial value. A custom handler replaces the stores for all
// tables of its value type.
//
// Requests from one worker are handled one at a time in the order that worker issued them.
//
// Thread safety: handlers run on the node's receive thread, one request at a time; they must
// not block. Construct and destroy KVServer objects before Node::Run / after it returns.
#pragma once

#include <functional>
#include <memory>

#include "pserver/node.h"
#include "pserver/shared_array.h"
#include "pserver/status.h"
#include "pserver/types.h"
#include "pserver/updater.h"

namespace pserver {

// How a server node serves its tables. The first KVServer of a node sets them.
struct ServerOptions {
  // The update rules tables may name: the built-in ones plus those registered here.
  UpdaterRegistry updaters;
  // Threads that apply a large request (keys split into shards, one per thread, no lock):
  // 0 picks min(hardware threads, 4); 1 applies on the receive thread only.
  uint32_t apply_threads = 0;
  // A directory of checkpoints (`pserver checkpoint`, `pserver scheduler --checkpoint-every`;
  // docs/durability.md): each table this server makes is filled with the rows it owns of the
  // table of the same name in the latest complete checkpoint there, bit-identical (values and
  // update-rule state). A table whose spec differs from the checkpoint's, a checkpoint that is
  // missing or corrupt, refuse the table with an error saying so. Empty: start empty.
  std::string resume_from;
};

namespace kv {
class KVServerCore;
}  // namespace kv

struct RequestMeta {
  TableId table;
  NodeId sender;
  Timestamp timestamp;
  bool push = false;       // the request carries values to apply
  bool pull = false;       // the request wants values back
  uint32_t width = 1;      // values per key; 0 for a variable-length table
};

template <typename T>
struct KVPairs {
  SharedArray<Key> keys;
  SharedArray<T> vals;
  SharedArray<int32_t> lens;  // variable-length tables only: values per key
};

template <typename T>
class KVServer {
 public:
  // Fills `response` for pulls: the values of request.keys in the same order (and their
  // lengths for a variable-length table). A non-OK status is returned to the worker's Wait.
  using Handler = std::function<Status(const RequestMeta& meta, const KVPairs<T>& request, KVPairs<T>* response)>;

  // Serves tables of type T with the built-in stores and update rules.
  // REQUIRES: `node` is a server and outlives this object.
  explicit KVServer(Node& node, const ServerOptions& options = {});
  KVServer(Node& node, Handler handler);
  ~KVServer();
  KVServer(const KVServer&) = delete;
  KVServer& operator=(const KVServer&) = delete;

  // OK if attached to a server node; kInvalidArgument otherwise.
  Status status() const;

 private:
  std::shared_ptr<kv::KVServerCore> core_;
};

extern template class KVServer<float>;
extern template class KVServer<double>;
extern template class KVServer<int32_t>;
extern template class KVServer<int64_t>;

}  // namespace pserver
