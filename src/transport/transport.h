// Transport: sends and receives Messages between node ids.
//
// The public methods are non-virtual: they validate, encode the header, count and log; the
// protected virtuals (implemented by zmq::ZmqTransport and inproc::InprocTransport) only move
// frames. A malformed frame sequence received from a peer is dropped, counted in
// Stats::dropped_malformed and logged -- it never reaches the caller and never stops Receive.
//
// Identity: every received Message carries `origin`, the ConnectionId its connection presented
// (see message.h). A transport presents its own random local_id() on the connections Connect
// makes, unless Connect is given another identity for that peer. The layers above decide whom to
// believe by origin, never by the header's `sender` field, which any peer can write.
//
// Ordering: messages from one sender to one receiver arrive in the order sent.
// Thread safety: Connect and Send are thread-safe (any thread). Receive must be called by one
// thread at a time (the node's receive loop). Shutdown is thread-safe and wakes Receive.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "pserver/result.h"
#include "transport/message.h"

namespace pserver::transport {

// Counts since the transport was created. Bytes are wire bytes: each message's head (header,
// frame table, padded inline frames) plus its out-of-line frames (see message.h).
struct TransportStats {
  uint64_t messages_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t messages_received = 0;
  uint64_t bytes_received = 0;  // of well-formed messages; dropped ones are only counted below
  uint64_t dropped_malformed = 0;
};

class Transport {
 public:
  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;
  virtual ~Transport() = default;

  // Starts accepting messages at `address` (implementation-specific form, e.g.
  // "tcp://127.0.0.1:0" for any free port). Returns the address peers should connect to.
  // Called once, before Receive. kInvalidArgument for a malformed address, kUnavailable when
  // it cannot be bound.
  Result<std::string> Listen(const std::string& address);

  // Makes `peer` reachable at `address` (as returned by its Listen). Messages sent to it arrive
  // there with origin `present_as`, or local_id() when `present_as` is anonymous. Connecting the
  // same peer again to the same address with the same identity is a no-op; otherwise it replaces
  // the connection.
  Status Connect(NodeId peer, const std::string& address, const ConnectionId& present_as = {});

  // The identity this transport presents on its connections (random, fixed at construction).
  const ConnectionId& local_id() const { return local_id_; }

  // How errors name `peer` ("the scheduler (node 0)", "server 1 (node 2)"); "node N" until
  // named. Thread-safe; the name is read only when a send fails.
  void NamePeer(NodeId peer, std::string name) ABSL_LOCKS_EXCLUDED(names_mu_);
  std::string PeerName(NodeId peer) const ABSL_LOCKS_EXCLUDED(names_mu_);

  // Sends `msg` to msg.header.receiver; sets header.num_frames from msg.frames. Frames are
  // sent without copying; their owners are kept alive until the transport is done with them.
  // kNotFound if the receiver was never connected; kUnavailable if the message could not be
  // queued within the send timeout (peer gone or not accepting); kAborted after Shutdown. Errors
  // name the receiver by PeerName.
  Status Send(Message msg);

  // Sends that block on a peer for which `given_up` returns true (the node learned it died) end
  // with kUnavailable within about kGiveUpCheck instead of waiting out the send timeout. Set
  // once, before the first send; `given_up` is called from sending threads.
  void SetGiveUp(std::function<bool(NodeId)> given_up) { given_up_ = std::move(given_up); }
  // A blocked send looks this often: a server's data thread blocked on a replica that died holds
  // every request behind it, so it must end soon after the death is known (a poll every 5 ms
  // costs nothing measurable).
  static constexpr std::chrono::milliseconds kGiveUpCheck{5};

  // As Send, but never blocks: kUnavailable at once when the peer's queue is full or the peer
  // is not connected. For control messages whose sender must not stall (heartbeats, the
  // scheduler's replies and broadcasts).
  Status SendNoWait(Message msg);

  // Blocks until a well-formed message arrives (returned), `timeout` passes
  // (kDeadlineExceeded) or Shutdown is called (kAborted). When malformed messages are dropped
  // meanwhile, the timeout restarts once, at the first of them (so the wait lasts at most about
  // twice `timeout`): the common case then reads no clock.
  Result<Message> Receive(std::chrono::milliseconds timeout);

  // Wakes a blocked Receive; later Receive and Send calls return kAborted.
  void Shutdown();

  // Forgets `peer`: its connection is closed (what is queued to it is still delivered, within the
  // transport's linger) and sends to it fail with kNotFound until it is connected again. For
  // peers met once (a tool's answer address), so that they do not pile up. No effect on a peer
  // never connected.
  void Disconnect(NodeId peer) { DoDisconnect(peer); }

  // Watches the connection to `peer` (connected before) for PeersDown. Transports that cannot
  // tell (inproc) ignore it.
  void Watch(NodeId peer) { DoWatch(peer); }

  // The watched peers whose connection from this transport broke and has not come back for at least
  // `for_at_least`, or whose reconnection was refused since: a peer process that died (its
  // connections reset, its port closed) shows here at its first reconnection attempt, long
  // before its heartbeats are missed; one that only stopped
  // (SIGSTOP, a partition) does not -- heartbeats find it. Transports that cannot watch (inproc) report
  // none. Call from one thread only, always the same one (the scheduler's loop; a node's
  // heartbeat thread).
  std::vector<NodeId> PeersDown(std::chrono::milliseconds for_at_least) { return DoPeersDown(for_at_least); }

  TransportStats stats() const;

 protected:
  // Whether sends to `peer` are given up (SetGiveUp).
  bool GivenUp(NodeId peer) const { return given_up_ && given_up_(peer); }

  // A received wire frame sequence (see message.h): frames[0] should be the head.
  struct RawFrames {
    Frames frames;
    ConnectionId origin;  // the identity the connection presented; anonymous if none
  };

  virtual Result<std::string> DoListen(const std::string& address) = 0;
  // `present_as` is never anonymous here (Connect substitutes local_id()).
  virtual Status DoConnect(NodeId peer, const std::string& address, const ConnectionId& present_as) = 0;
  // Sends `wire`'s head (written with WireMessage::EncodeHead) and then its out-of-line frames.
  // With !may_block, fails at once where it would block (transports that never block ignore
  // the flag).
  virtual Status DoSend(NodeId receiver, const WireMessage& wire, bool may_block) = 0;
  // Returns the next frame sequence; kDeadlineExceeded on timeout, kAborted after shutdown.
  virtual Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) = 0;
  virtual void DoShutdown() = 0;
  virtual void DoDisconnect(NodeId peer) = 0;
  virtual void DoWatch(NodeId peer) { (void)peer; }
  virtual std::vector<NodeId> DoPeersDown(std::chrono::milliseconds for_at_least) {
    (void)for_at_least;
    return {};
  }

 private:
  Status SendImpl(Message msg, bool may_block);

  const ConnectionId local_id_ = ConnectionId::Random();
  std::function<bool(NodeId)> given_up_;  // set before the first send, read-only after
  mutable Mutex names_mu_;
  absl::flat_hash_map<NodeId, std::string> names_ ABSL_GUARDED_BY(names_mu_);
  std::atomic<bool> shut_down_{false};
  std::atomic<uint64_t> messages_sent_{0}, bytes_sent_{0}, messages_received_{0},
      bytes_received_{0}, dropped_malformed_{0};
};

}  // namespace pserver::transport
