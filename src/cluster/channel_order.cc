#include "cluster/channel_order.h"

namespace pserver::cluster {

void ChannelOrder::Advance(Channel& c) {
  if (++c.next == 0) c.next = 1;  // senders skip 0, which means unsequenced
}

ChannelOrder::Outcome ChannelOrder::Accept(transport::Message&& msg, TimePoint now,
                                           std::vector<transport::Message>* out) {
  const uint32_t seq = msg.header.seq;
  if (seq == 0) {
    out->push_back(std::move(msg));
    return Outcome::kDelivered;
  }
  Channel& c = channels_[Key{msg.header.sender, msg.origin}];
  // Serial-number distance: negative for numbers delivered already, positive for early ones.
  const int32_t ahead = static_cast<int32_t>(seq - c.next);
  if (ahead < 0) return Outcome::kDuplicate;
  if (ahead > 0) {
    if (c.held.contains(seq)) return Outcome::kDuplicate;
    if (c.held.size() >= kMaxHeld) return Outcome::kOverflow;
    if (c.held.empty()) c.holding_since = now;
    c.held.emplace(seq, std::move(msg));
    ++num_held_;
    return Outcome::kHeld;
  }
  out->push_back(std::move(msg));
  Advance(c);
  // Release the held messages that follow without a gap.
  for (auto it = c.held.find(c.next); it != c.held.end(); it = c.held.find(c.next)) {
    out->push_back(std::move(it->second));
    c.held.erase(it);
    --num_held_;
    Advance(c);
  }
  if (!c.held.empty()) c.holding_since = now;  // the next gap starts waiting now
  return Outcome::kDelivered;
}

std::optional<ChannelOrder::Gap> ChannelOrder::OldestGap() const {
  std::optional<Gap> oldest;
  for (const auto& [key, c] : channels_) {
    if (c.held.empty()) continue;
    if (oldest && oldest->since <= c.holding_since) continue;
    // The lowest held number by serial distance (the map's order is by raw number, which
    // differs only across a wrap of 2^32).
    uint32_t lowest = c.held.begin()->first;
    for (const auto& [seq, m] : c.held) {
      if (static_cast<int32_t>(seq - c.next) < static_cast<int32_t>(lowest - c.next)) lowest = seq;
    }
    oldest = Gap{key.sender, c.next, lowest, c.held.size(), c.holding_since};
  }
  return oldest;
}

}  // namespace pserver::cluster
