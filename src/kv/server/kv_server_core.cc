#include "kv/server/kv_server_core.h"

#include <fmt/format.h>

#include "base/logging.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;

void KVServerCore::SetHandler(ValueType type, ServerHandler handler) {
  std::lock_guard lock(mu_);
  if (handler) {
    handlers_[type] = std::move(handler);
  } else {
    handlers_.erase(type);
  }
}

Result<ServerRequest> KVServerCore::Decode(Message& msg) {
  const auto& h = msg.header;
  if (h.is_reply()) return Status::InvalidArgument("a server does not take replies");
  if (msg.frames.size() != 3) {
    return Status::Corruption(fmt::format("data request with {} frames, expected 3", msg.frames.size()));
  }
  ServerRequest r;
  r.type = h.type;
  r.table = h.table;
  r.sender = h.sender;
  r.timestamp = Timestamp(h.request_id);
  r.value_type = h.value_type;
  r.width = h.width;
  const size_t elem = ValueTypeSize(h.value_type);
  const Bytes& keys = msg.frames[0];
  if (keys.size() % sizeof(Key) != 0) return Status::Corruption(fmt::format("key frame of {} bytes", keys.size()));
  r.keys = SharedArray<Key>(keys.owner(), reinterpret_cast<Key*>(keys.data()), keys.size() / sizeof(Key));
  const size_t n = r.keys.size();
  const bool push = h.type != MessageType::kPull;
  const Bytes& lens = msg.frames[2];
  if (push && h.width == 0) {
    if (lens.size() != n * sizeof(int32_t)) {
      return Status::Corruption(fmt::format("{} bytes of lengths for {} keys", lens.size(), n));
    }
    r.lens = SharedArray<int32_t>(lens.owner(), reinterpret_cast<int32_t*>(lens.data()), n);
    uint64_t total = 0;
    for (int32_t l : r.lens) {
      if (l < 0) return Status::Corruption(fmt::format("negative length {}", l));
      total += static_cast<uint64_t>(l);
    }
    if (msg.frames[1].size() != total * elem) {
      return Status::Corruption(fmt::format("{} value bytes where the lengths say {}", msg.frames[1].size(), total * elem));
    }
  } else if (push) {
    if (msg.frames[1].size() != uint64_t{n} * h.width * elem) {
      return Status::Corruption(fmt::format("{} value bytes for {} keys of width {}", msg.frames[1].size(), n, h.width));
    }
  } else if (!msg.frames[1].empty() || !lens.empty()) {
    return Status::Corruption("a pull request carries values");
  }
  r.vals = std::move(msg.frames[1]);
  // A table's shape is fixed by its first request.
  auto [it, fresh] = tables_.try_emplace(h.table, TableShape{h.value_type, h.width});
  if (!fresh && (it->second.value_type != h.value_type || it->second.width != h.width)) {
    return Status::InvalidArgument(fmt::format("table {} holds {} values of width {}, the request has {} of width {}",
                                               h.table.value, ValueTypeName(it->second.value_type), it->second.width,
                                               ValueTypeName(h.value_type), h.width));
  }
  return r;
}

Status KVServerCore::CheckResponse(const ServerRequest& req, const ServerResponse& resp) const {
  const size_t elem = ValueTypeSize(req.value_type);
  const size_t n = req.keys.size();
  if (req.width == 0) {
    if (resp.lens.size() != n) {
      return Status::Internal(fmt::format("the handler returned {} lengths for {} keys", resp.lens.size(), n));
    }
    uint64_t total = 0;
    for (int32_t l : resp.lens) total += static_cast<uint64_t>(std::max(l, 0));
    if (resp.vals.size() != total * elem) {
      return Status::Internal(fmt::format("the handler returned {} values where its lengths say {}",
                                          resp.vals.size() / elem, total));
    }
    return Status::Ok();
  }
  if (resp.vals.size() != uint64_t{n} * req.width * elem) {
    return Status::Internal(fmt::format("the handler returned {} values for {} keys of width {}",
                                        resp.vals.size() / elem, n, req.width));
  }
  return Status::Ok();
}

void KVServerCore::OnData(Message&& msg) {
  const transport::Header header = msg.header;
  Result<ServerRequest> req = Decode(msg);
  if (!req.ok()) return Reply(header, req.status(), nullptr);
  ServerHandler handler;
  {
    std::lock_guard lock(mu_);
    auto it = handlers_.find(req->value_type);
    if (it != handlers_.end()) handler = it->second;
  }
  if (!handler) {
    return Reply(header, Status::Unavailable(fmt::format("this server has no handler for {} tables",
                                                         ValueTypeName(req->value_type))), nullptr);
  }
  ServerResponse resp;
  Status s = handler(*req, &resp);
  if (s.ok() && req->type != MessageType::kPush) s = CheckResponse(*req, resp);
  Reply(header, s, req->type == MessageType::kPush ? nullptr : &resp);
}

void KVServerCore::Reply(const transport::Header& request, const Status& status, ServerResponse* resp) {
  Message m;
  m.header.type = request.type;
  m.header.flags = transport::kFlagReply;
  m.header.sender = runtime_->id();
  m.header.receiver = request.sender;
  m.header.table = request.table;
  m.header.value_type = request.value_type;
  m.header.width = request.width;
  m.header.request_id = request.request_id;
  m.header.epoch = request.epoch;
  if (!status.ok()) {
    m.header.flags |= transport::kFlagError;
    m.header.status = static_cast<uint8_t>(status.code());
    m.frames.push_back(transport::BytesFromString(status.message()));
    PSERVER_LOG_DEBUG("server: refused {}: {}", transport::Describe(request), status.ToString());
  } else if (resp) {
    m.frames.emplace_back();
    m.frames.push_back(std::move(resp->vals));
    m.frames.push_back(transport::AsBytes(resp->lens));
  }
  if (Status s = runtime_->transport().Send(std::move(m)); !s.ok()) {
    PSERVER_LOG_WARN("server {}: could not answer {}: {}", runtime_->rank().value, transport::Describe(request),
                     s.ToString());
  }
}

}  // namespace pserver::kv
