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
//     time), reorders (lets the next messages to the same receiver overtake it) or corrupts
//     outgoing messages that match it, each with its own probability. The choices depend only
//     on the seed and the sequence of matching messages; Describe() prints the policy with its
//     seed, and SetFaults logs it, so that a failing run can be replayed.
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
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
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
  // The message is held back until the next 1..max_reorder_distance messages this node sends to
  // the same receiver have been sent: they overtake it, and it follows right after the last of
  // them. (A delay counts sends to any receiver, so it need not reorder what one receiver sees.)
  double reorder = 0;
  uint32_t max_reorder_distance = 3;
  double corrupt = 0;  // one byte of a copy of one payload frame is flipped
  std::function<bool(const transport::Message&)> applies;

  // "seed=... drop=... duplicate=... ..." for a test's output: what replays this policy.
  std::string Describe() const;
};

struct FaultCounts {
  uint64_t dropped = 0;
  uint64_t duplicated = 0;
  uint64_t delayed = 0;
  uint64_t reordered = 0;
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

  void SetRewriter(Rewriter rewrite) ABSL_LOCKS_EXCLUDED(send_mu_);
  // Called with every message sent (as handed to the inner transport) and received.
  void SetObserver(Observer observe) ABSL_LOCKS_EXCLUDED(mu_);

  // Holds later outgoing messages that match (replacing an earlier hold predicate).
  void Hold(MessageMatch match, HoldMode mode = HoldMode::kOnlyMatching) ABSL_LOCKS_EXCLUDED(send_mu_);
  // Stops holding and sends every held message in the order it was held, then the messages that
  // faults delayed or held back for reordering (so that none is stranded). Returns how many
  // held messages were sent, or the first inner send error (the rest of the held ones stay held).
  Result<size_t> Release() ABSL_LOCKS_EXCLUDED(send_mu_, mu_);
  size_t num_held() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until num_held() >= n; false if `timeout` passes first (a test's hang guard).
  bool WaitForHeld(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(60)) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Keeps later outgoing messages that match, whole (they share their payload frames).
  void Record(MessageMatch match) ABSL_LOCKS_EXCLUDED(send_mu_);
  std::vector<transport::Message> Recorded() const ABSL_LOCKS_EXCLUDED(mu_);
  // Sends `msg` now, through the inner transport, after everything sent before it.
  Status Inject(transport::Message msg) ABSL_LOCKS_EXCLUDED(send_mu_, mu_);

  // Applies `policy` to later outgoing messages, with its random sequence started from its seed.
  // Logs policy.Describe().
  void SetFaults(FaultPolicy policy) ABSL_LOCKS_EXCLUDED(send_mu_);
  FaultCounts fault_counts() const ABSL_LOCKS_EXCLUDED(mu_);

  // Messages logged so far in `direction` whose header matches.
  size_t Count(Direction direction, const HeaderMatch& match) const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until Count(direction, match) >= n; false if `timeout` passes first (a hang guard of
  // a test, not a timed assertion).
  bool WaitFor(Direction direction, const HeaderMatch& match, size_t n,
               std::chrono::milliseconds timeout = std::chrono::seconds(60)) const ABSL_LOCKS_EXCLUDED(mu_);

 protected:
  Result<std::string> DoListen(const std::string& address) override;
  Status DoConnect(NodeId peer, const std::string& address, const transport::ConnectionId& present_as) override;
  void DoDisconnect(NodeId peer) override { inner_->Disconnect(peer); }
  void DoWatch(NodeId peer) override { inner_->Watch(peer); }
  std::vector<NodeId> DoPeersDown(std::chrono::milliseconds for_at_least) override {
    return inner_->PeersDown(for_at_least);
  }
  Status DoSend(NodeId receiver, const transport::WireMessage& wire, bool may_block) override
      ABSL_LOCKS_EXCLUDED(send_mu_, mu_);
  Result<RawFrames> DoReceive(std::chrono::milliseconds timeout) override ABSL_LOCKS_EXCLUDED(mu_);
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
  struct Reordered {
    transport::Message msg;
    uint32_t passes_left = 0;  // messages to msg's receiver still to overtake it
  };

  // Sends through the inner transport and logs.
  Status SendInner(transport::Message msg, bool may_block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // As SendInner; once sent, the message has overtaken the ones held back for its receiver, and
  // those whose turn has come follow it.
  Status SendPassing(transport::Message msg, bool may_block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Sends delayed messages whose turn has come.
  void TickDelayed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  void Tally(uint64_t FaultCounts::*which) ABSL_LOCKS_EXCLUDED(mu_);  // ++counts_.*which
  void Log(Direction direction, const transport::Message& msg) ABSL_LOCKS_EXCLUDED(mu_);
  bool Chance(double p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);

  const std::unique_ptr<transport::Transport> inner_;

  // Lock order: send_mu_, then mu_.
  Mutex send_mu_;
  Rewriter rewrite_ ABSL_GUARDED_BY(send_mu_);
  MessageMatch hold_ ABSL_GUARDED_BY(send_mu_);
  HoldMode hold_mode_ ABSL_GUARDED_BY(send_mu_) = HoldMode::kOnlyMatching;
  std::deque<Held> held_ ABSL_GUARDED_BY(send_mu_);
  MessageMatch record_ ABSL_GUARDED_BY(send_mu_);
  FaultPolicy faults_ ABSL_GUARDED_BY(send_mu_);
  bool faults_on_ ABSL_GUARDED_BY(send_mu_) = false;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(send_mu_);
  std::vector<Delayed> delayed_ ABSL_GUARDED_BY(send_mu_);
  std::vector<Reordered> reordered_ ABSL_GUARDED_BY(send_mu_);  // in the order held back

  mutable Mutex mu_;
  mutable CondVar cv_;
  Observer observe_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<Direction, transport::Header>> log_ ABSL_GUARDED_BY(mu_);
  std::vector<transport::Message> recorded_ ABSL_GUARDED_BY(mu_);
  FaultCounts counts_ ABSL_GUARDED_BY(mu_);
  size_t held_count_ ABSL_GUARDED_BY(mu_) = 0;  // a mirror of held_.size()
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
