// KVServerCore: the type-independent engine behind KVServer<T>, one per server node.
//
// On the receive thread it checks each data request (frame layout, sizes, the table's value
// type and width, which must not change from the first request of a table), passes it to the
// handler registered for the value type, checks the handler's answer and replies. A bad
// request gets an error reply naming what was wrong; it never crashes the server.
//
// Thread safety: SetHandler is thread-safe; everything else runs on the receive thread.
#pragma once

#include <functional>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "cluster/node_runtime.h"
#include "transport/message.h"

namespace pserver::kv {

// A data request as handlers see it (values as raw bytes of the table's type).
struct ServerRequest {
  transport::MessageType type = transport::MessageType::kPush;
  TableId table;
  NodeId sender;
  Timestamp timestamp;
  ValueType value_type = ValueType::kFloat32;
  uint32_t width = 1;  // 0: variable length
  SharedArray<Key> keys;
  transport::Bytes vals;
  SharedArray<int32_t> lens;
};

struct ServerResponse {
  transport::Bytes vals;
  SharedArray<int32_t> lens;
};

using ServerHandler = std::function<Status(const ServerRequest&, ServerResponse*)>;

class KVServerCore final : public cluster::DataHandler {
 public:
  explicit KVServerCore(cluster::NodeRuntime* runtime) : runtime_(runtime) {}

  // Installs (or with an empty function removes) the handler for tables of `type`.
  void SetHandler(ValueType type, ServerHandler handler);

  void OnData(transport::Message&& msg) override;
  void OnNodeFailed(const cluster::NodeFailure&) override {}
  void OnShutdown(const Status&) override {}

 private:
  struct TableShape {
    ValueType value_type;
    uint32_t width;
  };
  Result<ServerRequest> Decode(transport::Message& msg);
  Status CheckResponse(const ServerRequest& req, const ServerResponse& resp) const;
  void Reply(const transport::Header& request, const Status& status, ServerResponse* resp);

  cluster::NodeRuntime* const runtime_;
  std::mutex mu_;
  absl::flat_hash_map<ValueType, ServerHandler> handlers_;  // guarded by mu_
  absl::flat_hash_map<TableId, TableShape> tables_;         // receive thread only
};

// The default handler for value type `type`: in-memory tables that sum pushes.
ServerHandler MakeSumHandler(ValueType type);

}  // namespace pserver::kv
