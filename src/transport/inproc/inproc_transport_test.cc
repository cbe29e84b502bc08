// InprocTransport: the in-process Transport used by unit tests and local clusters. It runs the
// same header validation as the network transport, so it is tested to the same contract.
#include "transport/inproc/inproc_transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "testing/test_util.h"
#include "transport/transport_test_util.h"

namespace pserver::transport::inproc {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

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
  EXPECT_EQ(c.Listen("").status().code(), StatusCode::kInvalidArgument);
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

TEST_F(InprocTransportTest, ConnectRefusesNonInprocAddress) {
  EXPECT_EQ(a_->Connect(NodeId(9), "tcp://127.0.0.1:5555").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a_->Connect(NodeId(9), "").code(), StatusCode::kInvalidArgument);
}

TEST_F(InprocTransportTest, ReceiveBeforeListenIsRefused) {
  InprocTransport c(&hub_, {});
  EXPECT_EQ(c.Receive(milliseconds(0)).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(InprocTransportTest, SendsAndReceivesSeveralFrames) {
  Bytes keys = AsBytes(SharedArray<uint64_t>(std::vector<uint64_t>{3, 5, 8}));
  Bytes vals = AsBytes(SharedArray<float>(std::vector<float>{0.5f, 1.5f, 2.5f}));
  Bytes lens;
  Message m = Data(kA, kB, 77, {keys, vals, lens});
  m.header.epoch = Epoch(12);
  m.header.clock = 13;
  m.header.aux = 14;
  ASSERT_OK(a_->Send(std::move(m)));
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.type, MessageType::kPush);
  EXPECT_EQ(got->header.sender, kA);
  EXPECT_EQ(got->header.receiver, kB);
  EXPECT_EQ(got->header.table, TableId(4));
  EXPECT_EQ(got->header.request_id, 77);
  EXPECT_EQ(got->header.epoch, Epoch(12));
  EXPECT_EQ(got->header.clock, 13u);
  EXPECT_EQ(got->header.aux, 14u);
  EXPECT_EQ(got->header.num_frames, 3);
  ASSERT_EQ(got->frames.size(), 3u);
  ASSERT_EQ(got->frames[0].size(), 3 * sizeof(uint64_t));
  EXPECT_EQ(reinterpret_cast<const uint64_t*>(got->frames[0].data())[2], 8u);
  ASSERT_EQ(got->frames[1].size(), 3 * sizeof(float));
  EXPECT_EQ(reinterpret_cast<const float*>(got->frames[1].data())[1], 1.5f);
  EXPECT_TRUE(got->frames[2].empty());

  TransportStats sent = a_->stats();
  EXPECT_EQ(sent.messages_sent, 1u);
  // The wire form: header, 3 frame-table entries, keys, values padded to 16 bytes.
  const uint64_t wire_bytes = kHeaderSize + 3 * 8 + 24 + 16;
  EXPECT_EQ(sent.bytes_sent, wire_bytes);
  TransportStats received = b_->stats();
  EXPECT_EQ(received.messages_received, 1u);
  EXPECT_EQ(received.bytes_received, wire_bytes);
  EXPECT_EQ(received.dropped_malformed, 0u);
}

TEST_F(InprocTransportTest, RepliesFlowBothWays) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  Result<Message> req = b_->Receive(kLongWait);
  ASSERT_OK(req);
  Message reply = Data(kB, kA, req->header.request_id, {});
  reply.header.flags = kFlagReply | kFlagError;
  reply.header.status = static_cast<uint8_t>(StatusCode::kNotFound);
  reply.frames.push_back(BytesFromString("no table 4"));
  ASSERT_OK(b_->Send(std::move(reply)));
  Result<Message> got = a_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_TRUE(got->header.is_reply());
  EXPECT_TRUE(got->header.is_error());
  EXPECT_EQ(got->header.status, static_cast<uint8_t>(StatusCode::kNotFound));
  ASSERT_EQ(got->frames.size(), 1u);
  EXPECT_EQ(Text(got->frames[0]), "no table 4");
}

TEST_F(InprocTransportTest, PreservesOrderFromOneSender) {
  constexpr int kMessages = 10000;
  std::jthread sender([&] {
    for (int i = 0; i < kMessages; ++i) {
      Status s = a_->Send(Data(kA, kB, i, {BytesFromString(std::to_string(i))}));
      if (!s.ok()) {
        ADD_FAILURE() << "send " << i << ": " << s;
        return;
      }
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    Result<Message> got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    ASSERT_EQ(got->header.request_id, i);
    ASSERT_EQ(Text(got->frames.at(0)), std::to_string(i));
  }
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

TEST_F(InprocTransportTest, ReceiveTimesOut) {
  Result<Message> got = b_->Receive(milliseconds(10));
  EXPECT_EQ(got.status().code(), StatusCode::kDeadlineExceeded);
  got = b_->Receive(milliseconds(0));
  EXPECT_EQ(got.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(InprocTransportTest, ShutdownWakesBlockedReceive) {
  std::promise<void> started;
  auto receiving = std::async(std::launch::async, [&] {
    started.set_value();
    return b_->Receive(kLongWait);
  });
  started.get_future().wait();
  b_->Shutdown();
  Result<Message> got = receiving.get();  // kLongWait if the wake-up were lost
  EXPECT_EQ(got.status().code(), StatusCode::kAborted);
  // Stays shut down.
  EXPECT_EQ(b_->Receive(milliseconds(0)).status().code(), StatusCode::kAborted);
  EXPECT_EQ(b_->Send(Data(kB, kA, 1, {})).code(), StatusCode::kAborted);
}

TEST_F(InprocTransportTest, ReceivedMessagesCarryTheIdentityTheirConnectionPresented) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->origin, a_->local_id());
  const ConnectionId chosen = ConnectionId::Random();
  ASSERT_OK(a_->Connect(NodeId(7), b_address_, chosen));
  ASSERT_OK(a_->Send(Data(kA, NodeId(7), 2, {})));
  got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->origin, chosen);
  // Frames put into the mailbox without an identity are anonymous.
  std::shared_ptr<Mailbox> inbox = hub_.Find(b_address_);
  ASSERT_NE(inbox, nullptr);
  Message m = Data(kA, kB, 3, {});
  m.header.num_frames = 0;
  ASSERT_OK(inbox->Put({EncodeWire(WireMessage(m)), {}}, kLongWait));
  got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 3);
  EXPECT_TRUE(got->origin.anonymous());
}

TEST_F(InprocTransportTest, SendToNeverConnectedNodeIsNotFound) {
  Status s = a_->Send(Data(kA, NodeId(99), 1, {}));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("99"), std::string::npos) << s;
  EXPECT_EQ(a_->stats().messages_sent, 0u);
}

TEST_F(InprocTransportTest, SendToAddressNobodyListensAtIsUnavailable) {
  ASSERT_OK(a_->Connect(NodeId(9), "inproc://nobody"));
  EXPECT_EQ(a_->Send(Data(kA, NodeId(9), 1, {})).code(), StatusCode::kUnavailable);
}

TEST_F(InprocTransportTest, SendToPeerThatWentAwayIsUnavailable) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  b_->Shutdown();
  EXPECT_EQ(a_->Send(Data(kA, kB, 2, {})).code(), StatusCode::kUnavailable);
  b_.reset();
  EXPECT_EQ(a_->Send(Data(kA, kB, 3, {})).code(), StatusCode::kUnavailable);
}

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

TEST_F(InprocTransportTest, SendAfterShutdownIsAborted) {
  a_->Shutdown();
  EXPECT_EQ(a_->Send(Data(kA, kB, 1, {})).code(), StatusCode::kAborted);
}

TEST_F(InprocTransportTest, SendRefusesTooManyFrames) {
  Frames frames(kMaxFrames + 1);
  EXPECT_EQ(a_->Send(Data(kA, kB, 1, std::move(frames))).code(), StatusCode::kInvalidArgument);
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
