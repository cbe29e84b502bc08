#include "transport/transport.h"

#include <fmt/format.h>

#include <optional>

#include "base/logging.h"

namespace pserver::transport {

Result<std::string> Transport::Listen(const std::string& address) {
  if (address.empty()) return Status::InvalidArgument("empty listen address");
  return DoListen(address);
}

Status Transport::Connect(NodeId peer, const std::string& address, const ConnectionId& present_as) {
  if (address.empty()) return Status::InvalidArgument(fmt::format("empty address for {}", PeerName(peer)));
  return DoConnect(peer, address, present_as.anonymous() ? local_id_ : present_as);
}

void Transport::NamePeer(NodeId peer, std::string name) {
  MutexLock lock(&names_mu_);
  names_[peer] = std::move(name);
}

std::string Transport::PeerName(NodeId peer) const {
  MutexLock lock(&names_mu_);
  auto it = names_.find(peer);
  if (it == names_.end()) return fmt::format("node {}", peer.value);
  return it->second;
}

Status Transport::Send(Message msg) { return SendImpl(std::move(msg), true); }

Status Transport::SendNoWait(Message msg) { return SendImpl(std::move(msg), false); }

Status Transport::SendImpl(Message msg, bool may_block) {
  if (shut_down_.load(std::memory_order_relaxed)) return Status::Aborted("transport shut down");
  if (msg.frames.size() > kMaxFrames) {
    return Status::InvalidArgument(fmt::format("{} frames in one message, at most {}", msg.frames.size(), kMaxFrames));
  }
  msg.header.num_frames = static_cast<uint16_t>(msg.frames.size());
  const WireMessage wire(msg);
  uint64_t bytes = wire.head_size();
  for (const Bytes* f : wire.out_of_line()) bytes += f->size();
  Status s = DoSend(msg.header.receiver, wire, may_block);
  if (!s.ok()) {
    const Header& h = msg.header;
    return s.WithContext(fmt::format("sending {}{} to {}", MessageTypeName(h.type), h.is_reply() ? " reply" : "",
                                     PeerName(h.receiver)));
  }
  messages_sent_.fetch_add(1, std::memory_order_relaxed);
  bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
  return Status::Ok();
}

Result<Message> Transport::Receive(std::chrono::milliseconds timeout) {
  // The clock is read only once a malformed message was dropped: a message that arrives in
  // time costs no clock reads.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  for (;;) {
    if (shut_down_.load(std::memory_order_relaxed)) return Status::Aborted("transport shut down");
    std::chrono::milliseconds left = timeout;
    if (deadline) {
      left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) left = std::chrono::milliseconds(0);
    }
    PSERVER_ASSIGN_OR_RETURN(RawFrames raw, DoReceive(left));
    uint64_t bytes = 0;
    for (const Bytes& f : raw.frames) bytes += f.size();
    Result<Message> msg = DecodeWire(std::move(raw.frames));
    if (!msg.ok()) {
      uint64_t n = dropped_malformed_.fetch_add(1, std::memory_order_relaxed) + 1;
      PSERVER_LOG_WARN("dropped a malformed message ({} bytes from connection {}; {} dropped so far): {}", bytes,
                       raw.origin.ShortString(), n, msg.status().message());
      if (!deadline) deadline = std::chrono::steady_clock::now() + timeout;
      continue;
    }
    messages_received_.fetch_add(1, std::memory_order_relaxed);
    bytes_received_.fetch_add(bytes, std::memory_order_relaxed);
    msg->origin = raw.origin;
    return msg;
  }
}

void Transport::Shutdown() {
  if (shut_down_.exchange(true)) return;
  DoShutdown();
}

TransportStats Transport::stats() const {
  TransportStats s;
  s.messages_sent = messages_sent_.load(std::memory_order_relaxed);
  s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  s.messages_received = messages_received_.load(std::memory_order_relaxed);
  s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  s.dropped_malformed = dropped_malformed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace pserver::transport
