// InprocTransport: a Transport between nodes of one process, for unit tests and in-process
// clusters. Frames are handed over by reference (no copy, no serialisation of payloads); the
// header is still encoded and decoded, so the same validation runs as over the network.
//
// Transports find each other through an InprocHub that the caller owns and passes in (no
// process-wide registry). Addresses look like "inproc://name"; "inproc://0" picks a fresh name.
//
// Thread safety: as Transport; InprocHub is thread-safe. The hub must outlive its transports.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "transport/transport.h"

namespace pserver::transport::inproc {

class InprocTransport;

// The mailbox of one listening transport, shared so that a sender holding it stays safe when
// the receiver goes away (messages to a closed mailbox fail with kUnavailable).
class Mailbox {
 public:
  explicit Mailbox(size_t capacity) : capacity_(capacity) {}
  // A message's wire frames and the identity of the connection that sent them.
  struct Letter {
    Frames frames;
    ConnectionId origin;
  };
  Status Put(Letter letter, std::chrono::milliseconds timeout) ABSL_LOCKS_EXCLUDED(mu_);
  Result<Letter> Take(std::chrono::milliseconds timeout) ABSL_LOCKS_EXCLUDED(mu_);
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Mutex mu_;
  CondVar cv_;
  std::deque<Letter> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  const size_t capacity_;
};

class InprocHub {
 public:
  Result<std::shared_ptr<Mailbox>> Bind(const std::string& address, size_t capacity, std::string* actual)
      ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<Mailbox> Find(const std::string& address) ABSL_LOCKS_EXCLUDED(mu_);
  void Unbind(const std::string& address) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Mutex mu_;
  uint64_t next_name_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, std::shared_ptr<Mailbox>> mailboxes_ ABSL_GUARDED_BY(mu_);
};

struct InprocOptions {
  size_t queue_capacity = 65536;  // messages; Send waits for room up to send_timeout
  std::chrono::milliseconds send_timeout{10000};
};

class InprocTransport final : public Transport {
 public:
  // `hub` is borrowed and must outlive the transport.
  InprocTransport(InprocHub* hub, const InprocOptions& options) : hub_(hub), options_(options) {}
  ~InprocTransport() override;

 protected:
  Result<std::string> DoListen(const std::string& address) override;
  Status DoConnect(NodeId peer, const std::string& address, const ConnectionId& present_as) override;
  void DoDisconnect(NodeId peer) override;
  Status DoSend(NodeId receiver, const WireMessage& wire, bool may_block) override;
  Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) override;
  void DoShutdown() override;

 private:
  InprocHub* const hub_;
  const InprocOptions options_;
  std::string address_;
  std::shared_ptr<Mailbox> inbox_;
  Mutex peers_mu_;
  struct Peer {
    std::string address;
    ConnectionId identity;
  };
  absl::flat_hash_map<NodeId, Peer> peers_ ABSL_GUARDED_BY(peers_mu_);
};

}  // namespace pserver::transport::inproc
