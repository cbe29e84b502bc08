// ChannelOrder: exactly-once, in-order delivery of the data requests of each peer, on the
// receiving node.
//
// A node stamps every data request it sends with the next sequence number of its channel to
// the receiver (1, 2, 3, ...: NodeRuntime::SendData). The transport keeps one sender's order
// and sends each message once, but a network, a proxy or the fault-injecting test transport
// may duplicate, delay or reorder. ChannelOrder undoes that: per channel -- a sender and the
// connection identity it presents, so that a restarted node (a new incarnation, a new
// identity) starts a channel of its own -- it delivers message n only after 1 .. n-1, holds
// the ones that came early, and drops every copy of a number it delivered already. A message
// with sequence number 0 is unsequenced (tests and tools that hand-craft messages) and is
// delivered at once.
//
// Sequence numbers are 32 bits and compared by serial-number arithmetic (RFC 1982), so a
// channel may carry any number of messages as long as fewer than 2^31 are in flight.
//
// A message that never comes leaves a gap that holds everything after it. OldestGap tells how
// long the longest-waiting channel has waited, so that the owner can give up loudly (the node
// fails with kUnavailable) instead of waiting for ever.
//
// Thread safety: thread-compatible (the node's receive thread owns it: it orders requests before the data thread sees them).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "transport/message.h"

namespace pserver::cluster {

class ChannelOrder {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Messages one channel may hold back; beyond this Accept reports kResourceExhausted.
  static constexpr size_t kMaxHeld = 1 << 16;

  enum class Outcome {
    kDelivered,  // `msg` and any held messages it released were appended to `out`, in order
    kHeld,       // `msg` came early and is held
    kDuplicate,  // `msg` repeats a number already delivered or held: dropped
    kOverflow,   // the channel holds kMaxHeld messages already: `msg` dropped
  };

  // Takes `msg`, received at `now`, and appends what may be delivered now to `out`.
  Outcome Accept(transport::Message&& msg, TimePoint now, std::vector<transport::Message>* out);

  struct Gap {
    NodeId sender;
    uint32_t expected = 0;   // the missing sequence number
    uint32_t first_held = 0; // the lowest held one
    size_t held = 0;
    TimePoint since;         // when the channel began to hold (the oldest held arrival)
  };
  // The channel that has held messages the longest, if any holds some.
  std::optional<Gap> OldestGap() const;

  // Messages held over all channels.
  size_t num_held() const { return num_held_; }

 private:
  struct Key {
    NodeId sender;
    transport::ConnectionId origin;
    friend bool operator==(const Key&, const Key&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.sender.value, k.origin.hi, k.origin.lo);
    }
  };
  struct Channel {
    uint32_t next = 1;  // the next sequence number to deliver
    std::map<uint32_t, transport::Message> held;  // by sequence number, all after `next`
    TimePoint holding_since{};
  };

  static void Advance(Channel& c);

  absl::flat_hash_map<Key, Channel> channels_;
  size_t num_held_ = 0;
};

}  // namespace pserver::cluster
