// InterceptingTransport: a Transport decorator for tests that sees, holds, rewrites, re-sends
// and (with a seeded policy) damages the messages of one node.
//
//   - Log: the header of every message sent (when it is handed to the inner transport) and
//     received (before the node sees it) is logged, so that a test can count protocol events
//     (Count) or wait for one (WaitFor) instead of sleeping. Only headers are kept: the wrapper
//     never holds a payload longer than the node would (a kept reply buffer would change what a
//     copy-on-write store does).
//   - Hold: outgoing messages that match a predicate are kept back until Release(); with
//     HoldMode::kKeepOrder every later message to the same receiver waits behind a held one
//     (the transport's per-sender order stays intact); with kOnlyMatching later ones overtake.
//   - Record and Inject: outgoing messages that match a predicate are kept whole (Recorded());
//     Inject sends a message as if the node sent it now (e.g. a copy of a recorded push, or a
//     key sub-range of it made by KeySubRange): a resend on the wire.
//   - Rewrite: a function may change each outgoing message first (corrupt what a well-behaved
//     node sends).
//   - Faults: a seeded policy drops, duplicates, delays (by a number of later sends, not by
//     time) or corrupts outgoing messages that match it, each with its own probability. The
//     choices depend only on the seed and the sequence of matching messages.
//
// Order of an outgoing message: rewrite, then faults, then hold, then the log and the inner send.
// Sends, releases and injections are serialised by one lock held across the inner send, so the
// wrapper itself never reorders what it does not hold or delay (a test tool: a blocking inner
// send stalls this node's other senders for at most the inner transport's send timeout).
//
// Thread safety: thread-safe. Predicates, the rewriter and the observer run on the sending or
// receiving thread, under the wrapper's lock: they must not block and must not call into this
// wrapper.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace pserver::testing {

enum class Direction { kSend, kReceive };

enum class HoldMode {
  kOnlyMatching,  // only matching messages wait; later ones overtake them
  kKeepOrder,     // a held message also holds every later message to the same receiver
};

// Seeded faults on outgoing messages that `applies` selects (all data messages when empty).
// Each probability is in [0, 1]; at most one fault per message, tried in the order below.
struct FaultPolicy {
  uint64_t seed = 1;
  double drop = 0;
  double duplicate = 0;
  double delay = 0;  // the message is sent after the next 1..max_delay_sends sends of this node
  uint32_t max_delay_sends = 3;
  double corrupt = 0;  // one byte of a copy of one payload frame is flipped
  std::function<bool(const transport::Message&)> applies;
};

struct FaultCounts {
  uint64_t dropped = 0;
  uint64_t duplicated = 0;
  uint64_t delayed = 0;
  uint64_t corrupted = 0;
};

class InterceptingTransport final : public transport::Transport {
 public:
  using MessageMatch = std::function<bool(const transport::Message&)>;
  using HeaderMatch = std::function<bool(const transport::Header&)>;
  using Rewriter = std::function<void(transport::Message&)>;
  using Observer = std::function<void(Direction, const transport::Message&)>;

  explicit InterceptingTransport(std::unique_ptr<transport::Transport> inner);
  ~InterceptingTransport() override;

  void SetRewriter(Rewriter rewrite);
  // Called with every message sent (as handed to the inner transport) and received.
  void SetObserver(Observer observe);

  // Holds later outgoing messages that match (replacing an earlier hold predicate).
  void Hold(MessageMatch match, HoldMode mode = HoldMode::kOnlyMatching);
  // Stops holding and sends every held message in the order it was held. Returns how many were
  // sent, or the first inner send error (the rest stay held).
  Result<size_t> Release();
  size_t num_held() const;

  // Keeps later outgoing messages that match, whole (they share their payload frames).
  void Record(MessageMatch match);
  std::vector<transport::Message> Recorded() const;
  // Sends `msg` now, through the inner transport, after everything sent before it.
  Status Inject(transport::Message msg);

  void SetFaults(FaultPolicy policy);
  FaultCounts fault_counts() const;

  // Messages logged so far in `direction` whose header matches.
  size_t Count(Direction direction, const HeaderMatch& match) const;
  // Blocks until Count(direction, match) >= n; false if `timeout` passes first (a hang guard of
  // a test, not a timed assertion).
  bool WaitFor(Direction direction, const HeaderMatch& match, size_t n,
               std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;

 protected:
  Result<std::string> DoListen(const std::string& address) override;
  Status DoConnect(NodeId peer, const std::string& address, const transport::ConnectionId& present_as) override;
  Status DoSend(NodeId receiver, const transport::WireMessage& wire, bool may_block) override;
  Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) override;
  void DoShutdown() override;

 private:
  struct Held {
    transport::Message msg;
    bool may_block = true;
  };
  struct Delayed {
    transport::Message msg;
    uint32_t sends_left = 0;
  };

  // Sends through the inner transport and logs. REQUIRES: send_mu_ held.
  Status SendInner(transport::Message msg, bool may_block);
  // Sends delayed messages whose turn has come. REQUIRES: send_mu_ held.
  void TickDelayed();
  void Log(Direction direction, const transport::Message& msg);
  bool Chance(double p);  // REQUIRES: send_mu_ held

  const std::unique_ptr<transport::Transport> inner_;

  // Lock order: send_mu_, then mu_.
  std::mutex send_mu_;
  Rewriter rewrite_;                   // guarded by send_mu_
  MessageMatch hold_;                  // guarded by send_mu_
  HoldMode hold_mode_ = HoldMode::kOnlyMatching;  // guarded by send_mu_
  std::deque<Held> held_;              // guarded by send_mu_
  MessageMatch record_;                // guarded by send_mu_
  FaultPolicy faults_;                 // guarded by send_mu_
  bool faults_on_ = false;             // guarded by send_mu_
  std::mt19937_64 rng_;                // guarded by send_mu_
  std::vector<Delayed> delayed_;       // guarded by send_mu_

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Observer observe_;                                       // guarded by mu_
  std::vector<std::pair<Direction, transport::Header>> log_;  // guarded by mu_
  std::vector<transport::Message> recorded_;               // guarded by mu_
  FaultCounts counts_;                                     // guarded by mu_
  size_t held_count_ = 0;                                  // guarded by mu_ (mirror of held_.size())
};

// A copy of the fixed-width push (or pull) `msg` restricted to its keys [begin, end): the key
// frame and the value frame are sliced (sharing the buffers), the lengths frame is kept.
// REQUIRES: begin < end <= number of keys; msg is a fixed-width data request of 3 frames.
transport::Message KeySubRange(const transport::Message& msg, size_t begin, size_t end);

// Header predicates for Count and WaitFor.
inline InterceptingTransport::HeaderMatch IsRequest(transport::MessageType type) {
  return [type](const transport::Header& h) { return h.type == type && !h.is_reply(); };
}
inline InterceptingTransport::HeaderMatch IsReply(transport::MessageType type) {
  return [type](const transport::Header& h) { return h.type == type && h.is_reply(); };
}

}  // namespace pserver::testing
