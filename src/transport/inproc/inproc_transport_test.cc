// InprocTransport: what only the in-process transport does -- its inproc:// names, frames handed
// over without a copy, letters without an identity, its queue's capacity, a receiver that shut
// down, and malformed frame sequences put straight into its mailbox. The contract it shares with
// every transport is tested once, in testing/transport_conformance_test.cc.
#include "transport/inproc/inproc_transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "transport/transport_test_util.h"

namespace pserver::transport::inproc {
namespace {

using std::chrono::milliseconds;

using testing::Data;
using testing::kA;
using testing::kB;
using testing::kLongWait;
using testing::Text;

Bytes EncodedHeader(Header h) {
  Bytes b(kHeaderSize);
  EncodeHeader(h, b.data());
  return b;
}

// Two transports, A and B, each listening and each connected to the other.
class InprocTransportTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(InprocOptions{}); }

  void Start(const InprocOptions& options) {
    b_.reset();
    a_.reset();
    a_ = std::make_unique<InprocTransport>(&hub_, options);
    b_ = std::make_unique<InprocTransport>(&hub_, options);
    Result<std::string> a_addr = a_->Listen("inproc://0");
    Result<std::string> b_addr = b_->Listen("inproc://0");
    ASSERT_OK(a_addr);
    ASSERT_OK(b_addr);
    a_address_ = *a_addr;
    b_address_ = *b_addr;
    ASSERT_OK(a_->Connect(kB, b_address_));
    ASSERT_OK(b_->Connect(kA, a_address_));
  }

  InprocHub hub_;  // outlives the transports (declared first, destroyed last)
  std::unique_ptr<InprocTransport> a_, b_;
  std::string a_address_, b_address_;
};

TEST_F(InprocTransportTest, ListenPicksFreshConcreteNames) {
  EXPECT_EQ(a_address_.rfind("inproc://", 0), 0u);
  EXPECT_NE(a_address_, "inproc://0");
  EXPECT_NE(a_address_, b_address_);
  InprocTransport c(&hub_, {});
  Result<std::string> named = c.Listen("inproc://alpha");
  ASSERT_OK(named);
  EXPECT_EQ(*named, "inproc://alpha");
}

TEST_F(InprocTransportTest, ListenRefusesBadOrTakenAddress) {
  InprocTransport c(&hub_, {});
  EXPECT_EQ(c.Listen("tcp://127.0.0.1:0").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Listen(b_address_).status().code(), StatusCode::kUnavailable);  // already bound
  ASSERT_OK(c.Listen("inproc://c"));
  EXPECT_EQ(c.Listen("inproc://c2").status().code(), StatusCode::kInvalidArgument);  // listens already
}

TEST_F(InprocTransportTest, AddressIsFreedWhenTransportIsDestroyed) {
  {
    InprocTransport c(&hub_, {});
    ASSERT_OK(c.Listen("inproc://reused"));
  }
  InprocTransport d(&hub_, {});
  EXPECT_OK(d.Listen("inproc://reused"));
}

TEST_F(InprocTransportTest, ReceiveBeforeListenIsRefused) {
  InprocTransport c(&hub_, {});
  EXPECT_EQ(c.Receive(milliseconds(0)).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(InprocTransportTest, LargeFrameArrivesWithoutCopy) {
  constexpr size_t kSize = 8 << 20;
  SharedArray<std::byte> big(kSize);
  big[0] = std::byte{1};
  big[kSize - 1] = std::byte{2};
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {big})));
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  ASSERT_EQ(got->frames.size(), 1u);
  EXPECT_EQ(got->frames[0].data(), big.data());  // the sender's buffer itself
  EXPECT_EQ(got->frames[0].owner(), big.owner());
  EXPECT_EQ(got->frames[0].size(), kSize);
}

// Frames put into the mailbox without an identity are anonymous (origin and chosen identities
// are tested in the conformance suite).
TEST_F(InprocTransportTest, LettersWithoutAnIdentityAreAnonymous) {
  std::shared_ptr<Mailbox> inbox = hub_.Find(b_address_);
  ASSERT_NE(inbox, nullptr);
  Message m = Data(kA, kB, 3, {});
  m.header.num_frames = 0;
  ASSERT_OK(inbox->Put({EncodeWire(WireMessage(m)), {}}, kLongWait));
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 3);
  EXPECT_TRUE(got->origin.anonymous());
}

// The mailbox closes at Shutdown already, so sends fail at once, not once a queue fills up.
TEST_F(InprocTransportTest, SendToPeerThatShutDownOrWentAwayIsUnavailableAtOnce) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  b_->Shutdown();
  EXPECT_EQ(a_->Send(Data(kA, kB, 2, {})).code(), StatusCode::kUnavailable);
  b_.reset();
  EXPECT_EQ(a_->Send(Data(kA, kB, 3, {})).code(), StatusCode::kUnavailable);
}

// The queue takes exactly queue_capacity messages.
TEST_F(InprocTransportTest, SendToFullQueueIsUnavailableAfterTimeout) {
  InprocOptions options;
  options.queue_capacity = 2;
  options.send_timeout = milliseconds(20);
  Start(options);
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  ASSERT_OK(a_->Send(Data(kA, kB, 2, {})));
  Status s = a_->Send(Data(kA, kB, 3, {}));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  // Draining makes room again.
  Result<Message> drained = b_->Receive(kLongWait);
  ASSERT_OK(drained);
  EXPECT_OK(a_->Send(Data(kA, kB, 4, {})));
}

// Frame sequences no correct sender produces, put straight into B's mailbox.
std::vector<Frames> MalformedSequences() {
  Header valid;
  valid.type = MessageType::kPush;
  valid.sender = kA;
  valid.receiver = kB;
  valid.value_type = ValueType::kInt64;

  Bytes wrong_version = EncodedHeader(valid);
  wrong_version[4] = static_cast<std::byte>(kWireVersion + 1);  // a future version
  Bytes truncated = Bytes::CopyOf(EncodedHeader(valid).span().first(40));
  Header one = valid;
  one.num_frames = 1;
  Header two = valid;
  two.num_frames = 2;
  Header too_many = valid;
  too_many.num_frames = kMaxFrames + 1;
  Bytes garbage = BytesFromString("this is not a pserver message");

  return {
      {},                                                                  // nothing at all
      {garbage},                                                           // not a header
      {wrong_version},                                                     // a future version
      {truncated},                                                         // cut short
      {EncodedHeader(one), garbage, garbage, garbage},                     // more frames than announced
      {EncodedHeader(two), garbage},                                       // fewer frames than announced
      {EncodedHeader(too_many), garbage},                                  // over the frame limit
      {garbage, EncodedHeader(valid)},                                     // header not first
  };
}

TEST_F(InprocTransportTest, DropsAndCountsMalformedInputAndKeepsReceiving) {
  std::shared_ptr<Mailbox> inbox = hub_.Find(b_address_);
  ASSERT_NE(inbox, nullptr);
  const std::vector<Frames> bad = MalformedSequences();
  for (int round = 1; round <= 3; ++round) {
    for (const Frames& frames : bad) ASSERT_OK(inbox->Put({frames, {}}, kLongWait));
    ASSERT_OK(a_->Send(Data(kA, kB, round, {BytesFromString("ok")})));
    Result<Message> got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    EXPECT_EQ(got->header.request_id, round);
    EXPECT_EQ(Text(got->frames.at(0)), "ok");
    TransportStats stats = b_->stats();
    EXPECT_EQ(stats.dropped_malformed, round * bad.size());
    EXPECT_EQ(stats.messages_received, static_cast<uint64_t>(round));
  }
  // Only malformed input pending: Receive still times out normally instead of failing.
  for (const Frames& frames : bad) ASSERT_OK(inbox->Put({frames, {}}, kLongWait));
  EXPECT_EQ(b_->Receive(milliseconds(10)).status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(b_->stats().dropped_malformed, 4 * bad.size());
}

}  // namespace
}  // namespace pserver::transport::inproc
