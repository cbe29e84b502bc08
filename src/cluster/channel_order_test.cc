// ChannelOrder: per-channel exactly-once, in-order delivery -- reordering undone, repeats
// dropped, channels told apart by sender and connection identity, unsequenced messages passed
// through, the 2^32 wrap, and how long a gap has waited.
#include "cluster/channel_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace pserver::cluster {
namespace {

using transport::ConnectionId;
using transport::Message;
using Clock = std::chrono::steady_clock;

const ConnectionId kA{1, 1};
const ConnectionId kB{2, 2};

Message Msg(uint32_t sender, uint32_t seq, ConnectionId origin = kA) {
  Message m;
  m.header.type = transport::MessageType::kPush;
  m.header.sender = NodeId(sender);
  m.header.seq = seq;
  m.header.request_id = seq;  // to tell messages apart after delivery
  m.origin = origin;
  return m;
}

std::vector<int64_t> Ids(const std::vector<Message>& ms) {
  std::vector<int64_t> ids;
  for (const Message& m : ms) ids.push_back(m.header.request_id);
  return ids;
}

TEST(ChannelOrderTest, DeliversInOrderAndHoldsWhatCameEarly) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  EXPECT_EQ(order.Accept(Msg(1, 1), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(order.Accept(Msg(1, 3), t0, &out), ChannelOrder::Outcome::kHeld);
  EXPECT_EQ(order.Accept(Msg(1, 4), t0, &out), ChannelOrder::Outcome::kHeld);
  EXPECT_EQ(order.num_held(), 2u);
  EXPECT_EQ(Ids(out), (std::vector<int64_t>{1}));
  EXPECT_EQ(order.Accept(Msg(1, 2), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(Ids(out), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(order.num_held(), 0u);
  EXPECT_FALSE(order.OldestGap().has_value());
}

TEST(ChannelOrderTest, RepeatsAreDroppedWhetherDeliveredOrHeld) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  order.Accept(Msg(1, 1), t0, &out);
  EXPECT_EQ(order.Accept(Msg(1, 1), t0, &out), ChannelOrder::Outcome::kDuplicate);
  EXPECT_EQ(order.Accept(Msg(1, 3), t0, &out), ChannelOrder::Outcome::kHeld);
  EXPECT_EQ(order.Accept(Msg(1, 3), t0, &out), ChannelOrder::Outcome::kDuplicate);
  order.Accept(Msg(1, 2), t0, &out);
  EXPECT_EQ(order.Accept(Msg(1, 2), t0, &out), ChannelOrder::Outcome::kDuplicate);
  EXPECT_EQ(Ids(out), (std::vector<int64_t>{1, 2, 3}));
}

TEST(ChannelOrderTest, SendersAndIncarnationsHaveChannelsOfTheirOwn) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  order.Accept(Msg(1, 1, kA), t0, &out);
  // Another sender, and the same sender over another connection (a restarted process), start
  // at 1 again: neither is a repeat.
  EXPECT_EQ(order.Accept(Msg(2, 1, kA), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(order.Accept(Msg(1, 1, kB), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(out.size(), 3u);
}

TEST(ChannelOrderTest, UnsequencedMessagesPassAtOnce) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  EXPECT_EQ(order.Accept(Msg(1, 2), t0, &out), ChannelOrder::Outcome::kHeld);
  EXPECT_EQ(order.Accept(Msg(1, 0), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(order.Accept(Msg(1, 0), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(out.size(), 2u);
}

TEST(ChannelOrderTest, ShuffledAndRepeatedStreamComesOutExactlyOnceInOrder) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  std::vector<uint32_t> arrivals;
  for (uint32_t s = 1; s <= 500; ++s) {
    arrivals.push_back(s);
    if (rng() % 4 == 0) arrivals.push_back(s);  // a repeat
  }
  // Local shuffles only (a message overtakes at most a few others), as a delaying link does.
  for (size_t i = 0; i + 1 < arrivals.size(); ++i) {
    const size_t j = std::min(arrivals.size() - 1, i + rng() % 6);
    std::swap(arrivals[i], arrivals[j]);
  }
  ChannelOrder order;
  std::vector<Message> out;
  for (uint32_t s : arrivals) order.Accept(Msg(7, s), Clock::now(), &out);
  ASSERT_EQ(out.size(), 500u);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].header.seq, i + 1);
}

TEST(ChannelOrderTest, SerialArithmeticTellsRepeatsFromEarlyNumbers) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  // The serial arithmetic that makes the wrap work: numbers up to 2^31 behind the next one are
  // repeats, those up to 2^31 ahead are early (so after 0xFFFFFFFF, 1 is ahead, not behind).
  uint32_t seq = 1;
  for (; seq < 5; ++seq) order.Accept(Msg(1, seq), t0, &out);
  // Numbers far behind (by serial distance) are repeats, far ahead are held.
  EXPECT_EQ(order.Accept(Msg(1, 5u - 0x40000000u), t0, &out), ChannelOrder::Outcome::kDuplicate);
  EXPECT_EQ(order.Accept(Msg(1, 5u + 0x40000000u), t0, &out), ChannelOrder::Outcome::kHeld);
  EXPECT_EQ(out.size(), 4u);
}

TEST(ChannelOrderTest, OldestGapNamesTheChannelAndWhenItBeganToWait) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  const auto t1 = t0 + std::chrono::seconds(1);
  order.Accept(Msg(1, 1), t0, &out);
  order.Accept(Msg(1, 3), t1, &out);           // sender 1 waits for 2 since t1
  order.Accept(Msg(2, 2), t0, &out);           // sender 2 waits for 1 since t0
  order.Accept(Msg(2, 4), t1, &out);
  std::optional<ChannelOrder::Gap> gap = order.OldestGap();
  ASSERT_TRUE(gap.has_value());
  EXPECT_EQ(gap->sender, NodeId(2));
  EXPECT_EQ(gap->expected, 1u);
  EXPECT_EQ(gap->first_held, 2u);
  EXPECT_EQ(gap->held, 2u);
  EXPECT_EQ(gap->since, t0);
  order.Accept(Msg(2, 1), t1, &out);  // fills 1 and releases 2; still waits for 3 (since t1)
  gap = order.OldestGap();
  ASSERT_TRUE(gap.has_value());
  EXPECT_EQ(gap->since, t1);
}

TEST(ChannelOrderTest, AChannelHoldsAtMostKMaxHeld) {
  ChannelOrder order;
  std::vector<Message> out;
  const auto t0 = Clock::now();
  for (uint32_t s = 2; s < 2 + ChannelOrder::kMaxHeld; ++s) {
    ASSERT_EQ(order.Accept(Msg(1, s), t0, &out), ChannelOrder::Outcome::kHeld);
  }
  EXPECT_EQ(order.Accept(Msg(1, 2 + ChannelOrder::kMaxHeld), t0, &out), ChannelOrder::Outcome::kOverflow);
  EXPECT_EQ(order.Accept(Msg(1, 1), t0, &out), ChannelOrder::Outcome::kDelivered);
  EXPECT_EQ(out.size(), ChannelOrder::kMaxHeld + 1);
}

}  // namespace
}  // namespace pserver::cluster
