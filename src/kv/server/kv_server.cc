// The typed facade KVServer<T> over KVServerCore, instantiated for the four value types.
#include "pserver/kv_server.h"

#include "kv/node_access.h"
#include "kv/server/kv_server_core.h"

namespace pserver {

namespace {

template <typename T>
SharedArray<T> View(const transport::Bytes& b) {
  return SharedArray<T>(b.owner(), reinterpret_cast<T*>(b.data()), b.size() / sizeof(T));
}

std::shared_ptr<kv::KVServerCore> AttachCore(Node& node, const ServerOptions* options) {
  cluster::NodeRuntime* runtime = internal::NodeAccess::Runtime(node);
  if (runtime == nullptr || runtime->role() != Role::kServer) return nullptr;
  // The first KVServer of the node creates the core with its options.
  return std::static_pointer_cast<kv::KVServerCore>(runtime->AttachDataHandler(
      [&] { return std::make_shared<kv::KVServerCore>(runtime, options ? *options : ServerOptions{}); }));
}

}  // namespace

template <typename T>
KVServer<T>::KVServer(Node& node, const ServerOptions& options) : core_(AttachCore(node, &options)) {
  if (core_) core_->ServeDefault(ValueTypeOf<T>::value, true);
}

template <typename T>
KVServer<T>::KVServer(Node& node, Handler handler) : core_(AttachCore(node, nullptr)) {
  if (!core_) return;
  core_->SetHandler(ValueTypeOf<T>::value, [handler = std::move(handler)](const kv::ServerRequest& req,
                                                                         kv::ServerResponse* resp) {
    RequestMeta meta;
    meta.table = req.table;
    meta.sender = req.sender;
    meta.timestamp = req.timestamp;
    meta.push = req.type != transport::MessageType::kPull;
    meta.pull = req.type != transport::MessageType::kPush;
    meta.width = req.width;
    KVPairs<T> in{req.keys, View<T>(req.vals), req.lens};
    KVPairs<T> out;
    PSERVER_RETURN_IF_ERROR(handler(meta, in, &out));
    resp->vals = transport::AsBytes(out.vals);
    resp->lens = std::move(out.lens);
    return Status::Ok();
  });
}

template <typename T>
KVServer<T>::~KVServer() {
  if (!core_) return;
  core_->SetHandler(ValueTypeOf<T>::value, nullptr);
  core_->ServeDefault(ValueTypeOf<T>::value, false);
}

template <typename T>
Status KVServer<T>::status() const {
  return core_ ? Status::Ok() : Status::InvalidArgument("KVServer needs a server node");
}

template class KVServer<float>;
template class KVServer<double>;
template class KVServer<int32_t>;
template class KVServer<int64_t>;

}  // namespace pserver
