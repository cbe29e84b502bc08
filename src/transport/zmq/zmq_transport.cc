#include "transport/zmq/zmq_transport.h"

#include <fmt/format.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>

#if defined(__SANITIZE_THREAD__)
#define PSERVER_ZMQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PSERVER_ZMQ_TSAN 1
#endif
#endif
#ifdef PSERVER_ZMQ_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace pserver::transport::zmq {
namespace {

std::string ZmqError() { return zmq_strerror(zmq_errno()); }

// A zero-copy frame's owner is handed to ZeroMQ's I/O thread, which calls ReleaseOwner, through
// ZeroMQ's own lock-free queues: libzmq is not built with ThreadSanitizer, so TSan cannot see
// that hand-over and would report the owner's creation and its release as a race. These two
// calls tell it (no-ops in other builds).
void HandOverToZmq([[maybe_unused]] void* p) {
#ifdef PSERVER_ZMQ_TSAN
  __tsan_release(p);
#endif
}
void TakeOverFromZmq([[maybe_unused]] void* p) {
#ifdef PSERVER_ZMQ_TSAN
  __tsan_acquire(p);
#endif
}

// A message is received after it was sent, which TSan cannot see through libzmq either: every
// send releases, and every receive acquires, this one object. In a process that holds both ends
// (the tests' clusters) that orders each send before every later receive -- coarser than the
// truth, but without it TSan reports as races the accesses a message exchange orders (a test's
// read before a request, and the reply's callback writing the same variable).
[[maybe_unused]] char wire_order;

// Keeps a frame's owner alive while ZeroMQ holds the bytes.
void ReleaseOwner(void* /*data*/, void* hint) {
  TakeOverFromZmq(hint);
  delete static_cast<std::shared_ptr<void>*>(hint);
}

// Owns one received zmq_msg_t.
struct ReceivedMsg {
  zmq_msg_t msg;
  ~ReceivedMsg() { zmq_msg_close(&msg); }
};

// "tcp://host:0" asks for any free port; ZeroMQ spells that "tcp://host:*".
std::string ZmqBindAddress(const std::string& address) {
  if (address.rfind("tcp://", 0) == 0 && address.size() > 2 && address.compare(address.size() - 2, 2, ":0") == 0) {
    return address.substr(0, address.size() - 1) + "*";
  }
  return address;
}

constexpr size_t kRoutingIdSize = 21;
constexpr unsigned char kRoutingIdTag = 'P';  // a routing id must not start with 0 (ZeroMQ's own)

// `serial` tells apart two connections of one identity to the same ROUTER (which would refuse
// the second one if their routing ids were equal); it is not part of the identity.
void EncodeRoutingId(const ConnectionId& id, uint32_t serial, unsigned char* out) {
  out[0] = kRoutingIdTag;
  for (int i = 0; i < 8; ++i) {
    out[1 + i] = static_cast<unsigned char>(id.hi >> (8 * i));
    out[9 + i] = static_cast<unsigned char>(id.lo >> (8 * i));
  }
  for (int i = 0; i < 4; ++i) out[17 + i] = static_cast<unsigned char>(serial >> (8 * i));
}

ConnectionId DecodeRoutingId(const zmq_msg_t* frame) {
  ConnectionId id;
  if (zmq_msg_size(frame) != kRoutingIdSize) return id;
  const auto* p = static_cast<const unsigned char*>(zmq_msg_data(const_cast<zmq_msg_t*>(frame)));
  if (p[0] != kRoutingIdTag) return id;
  for (int i = 0; i < 8; ++i) {
    id.hi |= uint64_t{p[1 + i]} << (8 * i);
    id.lo |= uint64_t{p[9 + i]} << (8 * i);
  }
  return id;
}

// Closes a DEALER and its monitor: the monitoring stops first, so that no event of the closing
// socket (it may linger) is sent to a monitor nobody reads (ZeroMQ's I/O thread would block).
void CloseWatched(void* socket, void* monitor) {
  if (monitor != nullptr) zmq_socket_monitor(socket, nullptr, 0);
  zmq_close(socket);
  if (monitor != nullptr) zmq_close(monitor);
}

}  // namespace

Result<std::unique_ptr<ZmqTransport>> ZmqTransport::Create(const ZmqOptions& options) {
  std::unique_ptr<ZmqTransport> t(new ZmqTransport(options));
  PSERVER_RETURN_IF_ERROR(t->Init());
  return t;
}

Status ZmqTransport::Init() {
  context_ = zmq_ctx_new();
  if (context_ == nullptr) return Status::Internal("zmq_ctx_new: " + ZmqError());
  // Before the transport is shared the lock costs nothing, and it lets the analysis see the
  // guarded wake_sender_ written under it.
  MutexLock wake_lock(&wake_mu_);
  router_ = zmq_socket(context_, ZMQ_ROUTER);
  wake_receiver_ = zmq_socket(context_, ZMQ_PAIR);
  wake_sender_ = zmq_socket(context_, ZMQ_PAIR);
  if (!router_ || !wake_receiver_ || !wake_sender_) return Status::Internal("zmq_socket: " + ZmqError());
  int zero = 0;
  zmq_setsockopt(router_, ZMQ_LINGER, &zero, sizeof(zero));
  zmq_setsockopt(router_, ZMQ_RCVHWM, &options_.receive_hwm, sizeof(int));
  // Peers present fixed routing ids (their identity): a peer whose TCP connection broke and
  // reconnects presents the same id, and the ROUTER must take the new connection over the old
  // one, which it may not yet know to be dead (it never writes on it), instead of ignoring it.
  int one_handover = 1;
  zmq_setsockopt(router_, ZMQ_ROUTER_HANDOVER, &one_handover, sizeof(one_handover));
  zmq_setsockopt(wake_receiver_, ZMQ_LINGER, &zero, sizeof(zero));
  zmq_setsockopt(wake_sender_, ZMQ_LINGER, &zero, sizeof(zero));
  std::string wake = fmt::format("inproc://pserver-wake-{}", static_cast<const void*>(this));
  if (zmq_bind(wake_receiver_, wake.c_str()) != 0 || zmq_connect(wake_sender_, wake.c_str()) != 0) {
    return Status::Internal("wake-up socket: " + ZmqError());
  }
  return Status::Ok();
}

ZmqTransport::~ZmqTransport() {
  {
    WriterMutexLock lock(&peers_mu_);
    for (auto& [id, peer] : peers_) {
      MutexLock peer_lock(&peer->mu);
      CloseWatched(peer->socket, peer->monitor);
    }
    peers_.clear();
  }
  if (router_) zmq_close(router_);
  if (wake_receiver_) zmq_close(wake_receiver_);
  {
    MutexLock lock(&wake_mu_);
    if (wake_sender_) zmq_close(wake_sender_);
  }
  if (context_) zmq_ctx_term(context_);
}

Result<std::string> ZmqTransport::DoListen(const std::string& address) {
  std::string bind = ZmqBindAddress(address);
  if (zmq_bind(router_, bind.c_str()) != 0) {
    int err = zmq_errno();
    std::string what = fmt::format("cannot listen at {}: {}", address, zmq_strerror(err));
    if (err == EINVAL || err == EPROTONOSUPPORT) return Status::InvalidArgument(what);
    return Status::Unavailable(what);
  }
  char endpoint[256];
  size_t size = sizeof(endpoint);
  if (zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, endpoint, &size) != 0) {
    return Status::Internal("ZMQ_LAST_ENDPOINT: " + ZmqError());
  }
  return std::string(endpoint);
}

Status ZmqTransport::DoConnect(NodeId peer_id, const std::string& address, const ConnectionId& present_as) {
  WriterMutexLock lock(&peers_mu_);
  auto it = peers_.find(peer_id);
  if (it != peers_.end()) {
    {
      MutexLock peer_lock(&it->second->mu);
      if (it->second->address == address && it->second->identity == present_as) return Status::Ok();
      CloseWatched(it->second->socket, it->second->monitor);
      it->second->socket = nullptr;
    }
    // A DoSend that holds the Peer finds its socket gone (null) and fails.
    peers_.erase(it);
  }
  void* s = zmq_socket(context_, ZMQ_DEALER);
  if (s == nullptr) return Status::Internal("zmq_socket: " + ZmqError());
  int one = 1;
  int timeout = static_cast<int>(options_.send_timeout.count());
  int linger = static_cast<int>(options_.linger.count());
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(s, ZMQ_SNDHWM, &options_.send_hwm, sizeof(int));
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof(timeout));
  // Queue only on live connections, so that a send to a peer that is gone times out instead
  // of piling up in a queue nobody drains.
  zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof(one));
  // A broken connection is tried again after 20 ms, backing off to 100 ms: a peer that died is
  // refused (and so seen dead, PeersDown) 20 ms after its death instead of ZeroMQ's default 100,
  // and a process started again at the same address (a scheduler resuming the job from its
  // store) is reached within 100 ms of its start (with a backoff to 1 s, measured: 420 ms).
  const int reconnect_ms = 20, reconnect_max_ms = 100;
  zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof(reconnect_ms));
  zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &reconnect_max_ms, sizeof(reconnect_max_ms));
  unsigned char routing_id[kRoutingIdSize];
  EncodeRoutingId(present_as, next_serial_++, routing_id);
  zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, sizeof(routing_id));
  if (zmq_connect(s, address.c_str()) != 0) {
    std::string what = fmt::format("cannot connect to {} at {}: {}", PeerName(peer_id), address, ZmqError());
    zmq_close(s);
    return Status::InvalidArgument(what);
  }
  auto peer = std::make_shared<Peer>();
  {
    MutexLock peer_lock(&peer->mu);  // not shared yet; for the analysis
    peer->socket = s;
  }
  peer->address = address;
  peer->identity = present_as;
  peers_.emplace(peer_id, std::move(peer));
  return Status::Ok();
}

Status ZmqTransport::SendFrame(void* socket, const Bytes& frame, bool more, bool may_block) {
  zmq_msg_t msg;
  if (frame.size() <= options_.copy_threshold) {
    zmq_msg_init_size(&msg, frame.size());
    if (frame.size() > 0) std::memcpy(zmq_msg_data(&msg), frame.data(), frame.size());
  } else {
    auto* hint = new std::shared_ptr<void>(frame.owner());
    HandOverToZmq(hint);
    zmq_msg_init_data(&msg, frame.data(), frame.size(), &ReleaseOwner, hint);
  }
  return SendMsg(socket, &msg, more, may_block);
}

Status ZmqTransport::SendMsg(void* socket, zmq_msg_t* msg, bool more, bool may_block, bool* would_block) {
  int flags = (more ? ZMQ_SNDMORE : 0) | (may_block ? 0 : ZMQ_DONTWAIT);
  HandOverToZmq(&wire_order);
  if (zmq_msg_send(msg, socket, flags) < 0) {
    int err = zmq_errno();
    zmq_msg_close(msg);
    if (err == EAGAIN) {
      if (would_block != nullptr) *would_block = true;
      if (!may_block) return Status::Unavailable("the peer is not connected or its queue is full");
      return Status::Unavailable(fmt::format("the peer did not accept the message within {} ms",
                                             options_.send_timeout.count()));
    }
    if (err == ETERM) return Status::Aborted("transport shut down");
    return Status::Unavailable(std::string("zmq_msg_send: ") + zmq_strerror(err));
  }
  return Status::Ok();
}

Status ZmqTransport::DoSend(NodeId receiver, const WireMessage& wire, bool may_block) {
  std::shared_ptr<Peer> found;
  {
    ReaderMutexLock lock(&peers_mu_);
    auto it = peers_.find(receiver);
    if (it == peers_.end()) return Status::NotFound("the peer is not connected");
    found = it->second;
  }
  Peer& peer = *found;
  const auto& rest = wire.out_of_line();
  MutexLock peer_lock(&peer.mu);
  if (peer.socket == nullptr) return Status::NotFound("the peer was disconnected");
  // Only the first frame can fail with EAGAIN without leaving a partial message: ZeroMQ
  // queues a multipart message atomically once its first part is accepted. A blocking send waits
  // for the peer in slices of kGiveUpCheck, so that it ends soon after the peer is given up.
  const auto deadline = std::chrono::steady_clock::now() + options_.send_timeout;
  while (true) {
    // The head is written straight into ZeroMQ's buffer: one allocation, one copy of the inline
    // frames.
    zmq_msg_t head;
    if (zmq_msg_init_size(&head, wire.head_size()) != 0) return Status::Internal("zmq_msg_init_size: " + ZmqError());
    wire.EncodeHead(static_cast<std::byte*>(zmq_msg_data(&head)));
    bool would_block = false;
    Status sent = SendMsg(peer.socket, &head, !rest.empty(), /*may_block=*/false, &would_block);
    if (sent.ok()) break;
    if (!may_block || !would_block) return sent;
    if (GivenUp(receiver)) return Status::Unavailable("the peer was declared dead");
    if (options_.give_up_when_down_for.count() > 0 &&
        Down(peer, std::chrono::steady_clock::now(), options_.give_up_when_down_for)) {
      return Status::Unavailable("the connection to the peer broke and did not come back (its process died?)");
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::Unavailable(fmt::format("the peer did not accept the message within {} ms",
                                             options_.send_timeout.count()));
    }
    zmq_pollitem_t item = {peer.socket, 0, ZMQ_POLLOUT, 0};
    if (zmq_poll(&item, 1, static_cast<long>(std::min(left, kGiveUpCheck).count())) < 0 && zmq_errno() == ETERM) {
      return Status::Aborted("transport shut down");
    }
  }
  for (size_t i = 0; i < rest.size(); ++i) {
    PSERVER_RETURN_IF_ERROR(SendFrame(peer.socket, *rest[i], i + 1 < rest.size(), true));
  }
  return Status::Ok();
}

Result<Transport::RawFrames> ZmqTransport::DoReceive(std::chrono::milliseconds timeout) {
  // Under load a message is usually queued already: take it without a poll system call.
  zmq_msg_t first;
  zmq_msg_init(&first);
  if (zmq_msg_recv(&first, router_, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&first);
    if (zmq_errno() != EAGAIN) return Status::Aborted("zmq_msg_recv: " + ZmqError());
    zmq_pollitem_t items[2] = {{router_, 0, ZMQ_POLLIN, 0}, {wake_receiver_, 0, ZMQ_POLLIN, 0}};
    int rc = zmq_poll(items, 2, static_cast<long>(timeout.count()));
    if (rc < 0) {
      if (zmq_errno() == EINTR) return Status::DeadlineExceeded("interrupted");
      return Status::Aborted("zmq_poll: " + ZmqError());
    }
    if (items[1].revents & ZMQ_POLLIN) return Status::Aborted("transport shut down");
    if (!(items[0].revents & ZMQ_POLLIN)) {
      return Status::DeadlineExceeded(fmt::format("no message within {} ms", timeout.count()));
    }
    zmq_msg_init(&first);
    if (zmq_msg_recv(&first, router_, 0) < 0) {
      zmq_msg_close(&first);
      return Status::Aborted("zmq_msg_recv: " + ZmqError());
    }
  }
  TakeOverFromZmq(&wire_order);
  // `first` is the ROUTER's routing-id frame (the sender's identity); the message's frames follow.
  RawFrames raw;
  raw.origin = DecodeRoutingId(&first);
  bool more = zmq_msg_more(&first);
  zmq_msg_close(&first);
  bool overflow = false;
  while (more) {
    ReceivedMsg part;
    zmq_msg_init(&part.msg);
    if (zmq_msg_recv(&part.msg, router_, 0) < 0) return Status::Aborted("zmq_msg_recv: " + ZmqError());
    more = zmq_msg_more(&part.msg);
    if (raw.frames.size() > kMaxFrames) {
      overflow = true;  // keep draining the message, then drop it whole
      continue;
    }
    auto* data = static_cast<std::byte*>(zmq_msg_data(&part.msg));
    size_t size = zmq_msg_size(&part.msg);
    // Small frames live inside the zmq_msg_t itself (their address changes when it moves):
    // those, and unaligned ones, are copied.
    if (size == 0) {
      raw.frames.emplace_back();
    } else if (size <= kHeaderSize || reinterpret_cast<uintptr_t>(data) % 8 != 0) {
      // One allocation for the buffer and its owner (operator new aligns it to 16).
      std::shared_ptr<std::byte[]> copy = std::make_shared_for_overwrite<std::byte[]>(size);
      std::memcpy(copy.get(), data, size);
      std::byte* p = copy.get();
      raw.frames.emplace_back(std::move(copy), p, size);
    } else {
      // Alias ZeroMQ's buffer (which stays put when the message moves into a holder the frame
      // co-owns).
      auto holder = std::make_shared<ReceivedMsg>();
      zmq_msg_init(&holder->msg);
      zmq_msg_move(&holder->msg, &part.msg);
      raw.frames.emplace_back(holder, static_cast<std::byte*>(zmq_msg_data(&holder->msg)), size);
    }
  }
  if (overflow) raw.frames.clear();  // DecodeWire refuses an empty sequence
  return raw;
}

void ZmqTransport::DoDisconnect(NodeId peer_id) {
  WriterMutexLock lock(&peers_mu_);
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  {
    MutexLock peer_lock(&it->second->mu);
    CloseWatched(it->second->socket, it->second->monitor);  // lingers to deliver what is queued
    it->second->socket = nullptr;
  }
  peers_.erase(it);
}

void ZmqTransport::DoWatch(NodeId peer_id) {
  WriterMutexLock lock(&peers_mu_);
  auto it = peers_.find(peer_id);
  if (it == peers_.end() || it->second->monitor != nullptr) return;
  Peer& peer = *it->second;
  MutexLock peer_lock(&peer.mu);
  const std::string at = fmt::format("inproc://pserver-monitor-{}-{}", static_cast<const void*>(this), next_serial_++);
  if (zmq_socket_monitor(peer.socket, at.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED) != 0) {
    return;
  }
  void* monitor = zmq_socket(context_, ZMQ_PAIR);
  const int no_linger = 0;
  if (monitor != nullptr) zmq_setsockopt(monitor, ZMQ_LINGER, &no_linger, sizeof(no_linger));
  if (monitor == nullptr || zmq_connect(monitor, at.c_str()) != 0) {
    // A monitor nobody reads would block ZeroMQ's I/O thread at its first event.
    zmq_socket_monitor(peer.socket, nullptr, 0);
    if (monitor != nullptr) zmq_close(monitor);
    return;
  }
  peer.monitor = monitor;
}

bool ZmqTransport::Down(Peer& peer, std::chrono::steady_clock::time_point now, std::chrono::milliseconds for_at_least) {
  if (peer.monitor == nullptr) return false;
  // Each event: a frame of 6 bytes (u16 event, u32 value), then the endpoint.
  for (;;) {
    zmq_msg_t event;
    zmq_msg_init(&event);
    if (zmq_msg_recv(&event, peer.monitor, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&event);
      break;
    }
    uint16_t what = 0;
    if (zmq_msg_size(&event) >= sizeof(what)) std::memcpy(&what, zmq_msg_data(&event), sizeof(what));
    bool more = zmq_msg_more(&event);
    zmq_msg_close(&event);
    while (more) {
      zmq_msg_t part;
      zmq_msg_init(&part);
      const bool got = zmq_msg_recv(&part, peer.monitor, 0) >= 0;
      more = got && zmq_msg_more(&part);
      zmq_msg_close(&part);
    }
    if (what == ZMQ_EVENT_DISCONNECTED) {
      if (!peer.down_since) peer.down_since = now;
    } else if (what == ZMQ_EVENT_CONNECT_RETRIED) {
      // ZeroMQ says so when it schedules an attempt: the first after a break is scheduled at
      // once, each later one after an attempt failed.
      if (peer.down_since) ++peer.retries;
    } else if (what == ZMQ_EVENT_CONNECTED) {
      peer.down_since.reset();
      peer.retries = 0;
    }
  }
  return peer.down_since && (peer.retries >= 2 || now - *peer.down_since >= for_at_least);
}

std::vector<NodeId> ZmqTransport::DoPeersDown(std::chrono::milliseconds for_at_least) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<NodeId> down;
  ReaderMutexLock lock(&peers_mu_);
  for (auto& [id, peer] : peers_) {
    if (Down(*peer, now, for_at_least)) down.push_back(id);
  }
  return down;
}

void ZmqTransport::DoShutdown() {
  MutexLock lock(&wake_mu_);
  zmq_send(wake_sender_, "", 0, ZMQ_DONTWAIT);
}

}  // namespace pserver::transport::zmq
