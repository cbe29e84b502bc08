// ZmqTransport: the Transport over ZeroMQ (tcp, ipc or inproc addresses).
//
// Each transport owns its own ZeroMQ context (no process-wide state, so several nodes can
// live in one process), one ROUTER socket that receives from every peer, and one DEALER
// socket per peer for sending. A DEALER->ROUTER connection preserves order, which gives the
// per-sender ordering the KV layer relies on. A message's head (header, frame table and small
// frames, see message.h) is written straight into a ZeroMQ buffer; the frames too large to go
// inline are sent zero-copy (above copy_threshold): ZeroMQ holds a reference to the frame's
// owner until the bytes are written.
// Each DEALER presents its ConnectionId in its ZeroMQ routing id (21 bytes: 'P', the id's 16
// bytes, little-endian hi then lo, and a 4-byte serial number of the connection, so that two
// connections of one transport to the same peer do not collide: a ROUTER refuses a second
// connection presenting a routing id already connected). The routing-id frame of each received
// message gives its origin (anonymous unless it has exactly that form).
// Received frames alias ZeroMQ's buffers when they are 8-byte aligned and are copied to an
// aligned buffer otherwise, so every delivered frame is 8-byte aligned.
//
// A watched peer's DEALER (Watch) has a socket monitor (an inproc PAIR) reporting its connects,
// disconnects and reconnection attempts, read by PeersDown: a peer process that
// died resets its connections and its port refuses ZeroMQ's next attempt (100 ms later), so it
// is down for good; a live peer's connection that broke comes back at that attempt.
//
// Thread safety: as Transport. Each peer socket has its own lock, so sends to different peers
// do not contend, and a send blocked on one peer holds only that peer's lock: connecting to
// others (a new view's servers, on the receive thread) goes on meanwhile. The owner must stop its
// Receive loop before destroying the transport. Lock order: peers_mu_ before a Peer's mu.
#pragma once

#include <zmq.h>

#include <chrono>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "transport/transport.h"

namespace pserver::transport::zmq {

struct ZmqOptions {
  // How long Send may block when the peer's queue is full or the peer is not connected;
  // after that Send fails with kUnavailable.
  std::chrono::milliseconds send_timeout{10000};
  // How long closing the transport waits to deliver messages still queued to live peers.
  std::chrono::milliseconds linger{1000};
  // ZeroMQ high-water marks, in messages, per peer.
  int send_hwm = 4096;
  int receive_hwm = 4096;
  // Out-of-line frames up to this size are copied into ZeroMQ; larger ones are sent zero-copy.
  size_t copy_threshold = 1024;
  // When positive: a send blocked on a watched peer (Watch) whose connection broke and is down
  // as PeersDown(give_up_when_down_for) would report it ends at once with kUnavailable, instead
  // of waiting out send_timeout for a process that died. Only for a transport whose blocking
  // sends all come from its receive thread (the scheduler's, which must never stall on one dead
  // member): the watch's state is that thread's.
  std::chrono::milliseconds give_up_when_down_for{0};
};

class ZmqTransport final : public Transport {
 public:
  // kInternal if ZeroMQ cannot create its context or sockets.
  static Result<std::unique_ptr<ZmqTransport>> Create(const ZmqOptions& options);
  ~ZmqTransport() override;

 protected:
  Result<std::string> DoListen(const std::string& address) override;
  Status DoConnect(NodeId peer, const std::string& address, const ConnectionId& present_as) override;
  Status DoSend(NodeId receiver, const WireMessage& wire, bool may_block) override;
  Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) override;
  void DoShutdown() override;
  void DoDisconnect(NodeId peer) override;
  void DoWatch(NodeId peer) override;
  std::vector<NodeId> DoPeersDown(std::chrono::milliseconds for_at_least) override;

 private:
  // address and identity are fixed from creation on (read under peers_mu_).
  struct Peer {
    Mutex mu;
    void* socket ABSL_GUARDED_BY(mu) = nullptr;  // DEALER
    std::string address;
    ConnectionId identity;
    // The DEALER's socket monitor (a PAIR; set by DoWatch, under peers_mu_ exclusively) and since
    // when its connection is down: read by one thread only -- the one that calls DoPeersDown (the
    // scheduler's loop, or a node's heartbeat thread) and, with give_up_when_down_for (the
    // scheduler only), DoSend, whose sends then all come from that same thread.
    void* monitor = nullptr;
    std::optional<std::chrono::steady_clock::time_point> down_since;
    int retries = 0;  // reconnection attempts ZeroMQ scheduled since the break
  };

  explicit ZmqTransport(const ZmqOptions& options) : options_(options) {}
  Status Init() ABSL_LOCKS_EXCLUDED(wake_mu_);
  // Sends one wire frame, copying it when small and zero-copy otherwise.
  Status SendFrame(void* socket, const Bytes& frame, bool more, bool may_block);
  // Sends `msg` (taking it over: it is closed on failure and emptied by ZeroMQ on success).
  Status SendMsg(void* socket, zmq_msg_t* msg, bool more, bool may_block, bool* would_block = nullptr);
  // Reads the watched peer's socket monitor: a disconnect starts its down time, a connection
  // ends it; a second reconnection attempt means the first one failed. Then whether it is down
  // (reconnection refused, or down for `for_at_least`). One thread only (see Peer::monitor).
  static bool Down(Peer& peer, std::chrono::steady_clock::time_point now, std::chrono::milliseconds for_at_least);

  const ZmqOptions options_;
  void* context_ = nullptr;
  void* router_ = nullptr;       // used by the receive thread only
  void* wake_receiver_ = nullptr;  // inproc PAIR polled beside the router
  Mutex wake_mu_;
  void* wake_sender_ ABSL_GUARDED_BY(wake_mu_) = nullptr;

  // Shared by DoSend while it finds its Peer (which it then keeps alive by its own reference
  // and uses under the Peer's lock alone), exclusive by DoConnect and DoDisconnect (which
  // close a Peer's socket under its lock, leaving it null, and drop the Peer from the map).
  SharedMutex peers_mu_;
  absl::flat_hash_map<NodeId, std::shared_ptr<Peer>> peers_ ABSL_GUARDED_BY(peers_mu_);
  uint32_t next_serial_ ABSL_GUARDED_BY(peers_mu_) = 1;
};

}  // namespace pserver::transport::zmq
