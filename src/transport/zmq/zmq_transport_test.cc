// ZmqTransport over loopback TCP: delivery, ordering, zero-copy ownership, alignment, timeouts,
// shutdown, unreachable peers, and raw malformed input from a plain ZeroMQ DEALER.
#include "transport/zmq/zmq_transport.h"

#include <gtest/gtest.h>
#include <zmq.h>

#include <algorithm>
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

namespace pserver::transport::zmq {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

using testing::Data;
using testing::kA;
using testing::kB;
using testing::kLongWait;
using testing::Text;

std::string EncodedHeader(Header h) {
  std::string b(kHeaderSize, '\0');
  EncodeHeader(h, reinterpret_cast<std::byte*>(b.data()));
  return b;
}

// A frame-table entry (docs/wire_format.md): the length, and bit 63 for a frame out of line.
std::string TableEntry(uint64_t size, bool out_of_line) {
  std::string e(8, '\0');
  const uint64_t v = size | (out_of_line ? kOutOfLine : 0);
  for (int i = 0; i < 8; ++i) e[i] = static_cast<char>(v >> (8 * i));
  return e;
}

// Bytes 0, 1, 2, ... (mod 251) so that a shifted or truncated copy is noticed.
Bytes Pattern(size_t n, unsigned seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i + seed) % 251);
  return b;
}

bool HasPattern(const Bytes& b, size_t n, unsigned seed) {
  if (b.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != static_cast<std::byte>((i + seed) % 251)) return false;
  }
  return true;
}

ZmqOptions TestOptions() {
  ZmqOptions o;
  o.send_timeout = milliseconds(5000);
  o.linger = milliseconds(0);  // nothing is left in flight when a test ends
  return o;
}

std::unique_ptr<ZmqTransport> MakeTransport(const ZmqOptions& options = TestOptions()) {
  Result<std::unique_ptr<ZmqTransport>> t = ZmqTransport::Create(options);
  EXPECT_OK(t);
  return t.ok() ? std::move(t).value() : nullptr;
}

// A plain ZeroMQ DEALER with its own context: sends whatever frames a test wants.
class RawDealer {
 public:
  explicit RawDealer(const std::string& address) {
    context_ = zmq_ctx_new();
    socket_ = zmq_socket(context_, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof(zero));
    connected_ = zmq_connect(socket_, address.c_str()) == 0;
  }
  ~RawDealer() {
    zmq_close(socket_);
    zmq_ctx_term(context_);
  }
  RawDealer(const RawDealer&) = delete;
  RawDealer& operator=(const RawDealer&) = delete;

  bool connected() const { return connected_; }

  // Presents `routing_id` on the connection (call before Connect).
  RawDealer(const std::string& address, const std::string& routing_id) {
    context_ = zmq_ctx_new();
    socket_ = zmq_socket(context_, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(socket_, ZMQ_ROUTING_ID, routing_id.data(), routing_id.size());
    connected_ = zmq_connect(socket_, address.c_str()) == 0;
  }

  // Sends `frames` as one multipart message; false if ZeroMQ refused it.
  bool Send(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
      if (zmq_send(socket_, frames[i].data(), frames[i].size(), flags) < 0) return false;
    }
    return true;
  }

 private:
  void* context_ = nullptr;
  void* socket_ = nullptr;
  bool connected_ = false;
};

// Two transports on loopback TCP, A and B, each connected to the other.
class ZmqTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = MakeTransport();
    b_ = MakeTransport();
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    Result<std::string> a_addr = a_->Listen("tcp://127.0.0.1:0");
    Result<std::string> b_addr = b_->Listen("tcp://127.0.0.1:0");
    ASSERT_OK(a_addr);
    ASSERT_OK(b_addr);
    a_address_ = *a_addr;
    b_address_ = *b_addr;
    ASSERT_OK(a_->Connect(kB, b_address_));
    ASSERT_OK(b_->Connect(kA, a_address_));
  }

  std::unique_ptr<ZmqTransport> a_, b_;
  std::string a_address_, b_address_;
};

TEST_F(ZmqTransportTest, ListenOnPortZeroReturnsConcreteAddress) {
  const std::string prefix = "tcp://127.0.0.1:";
  ASSERT_EQ(b_address_.rfind(prefix, 0), 0u) << b_address_;
  const std::string port = b_address_.substr(prefix.size());
  ASSERT_FALSE(port.empty());
  EXPECT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << b_address_;
  EXPECT_GT(std::stoi(port), 0);
  EXPECT_NE(a_address_, b_address_);
  // Usable: a third transport reaches B there.
  std::unique_ptr<ZmqTransport> c = MakeTransport();
  ASSERT_OK(c->Connect(kB, b_address_));
  Status sent = c->Send(Data(NodeId(3), kB, 5, {}));
  ASSERT_OK(sent);
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.sender, NodeId(3));
}

TEST_F(ZmqTransportTest, ListenOnBadAddressIsAnError) {
  struct Case {
    std::string address;
    std::vector<StatusCode> codes;
  };
  const std::vector<Case> cases = {
      {"", {StatusCode::kInvalidArgument}},
      {"bogus://somewhere", {StatusCode::kInvalidArgument}},
      {"tcp://127.0.0.1:notaport", {StatusCode::kInvalidArgument, StatusCode::kUnavailable}},
      {"tcp://", {StatusCode::kInvalidArgument, StatusCode::kUnavailable}},
      {"no scheme at all", {StatusCode::kInvalidArgument, StatusCode::kUnavailable}},
      {b_address_, {StatusCode::kUnavailable}},  // the port is taken
  };
  for (const Case& c : cases) {
    std::unique_ptr<ZmqTransport> t = MakeTransport();
    Result<std::string> r = t->Listen(c.address);
    ASSERT_FALSE(r.ok()) << c.address << " gave " << *r;
    EXPECT_NE(std::find(c.codes.begin(), c.codes.end(), r.status().code()), c.codes.end())
        << c.address << ": " << r.status();
  }
}

TEST_F(ZmqTransportTest, ConnectRefusesMalformedAddress) {
  Status s = a_->Connect(NodeId(9), "not an address");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(a_->Connect(NodeId(9), "").code(), StatusCode::kInvalidArgument);
  // A failed connect leaves nothing behind.
  EXPECT_EQ(a_->Send(Data(kA, NodeId(9), 1, {})).code(), StatusCode::kNotFound);
}

TEST_F(ZmqTransportTest, ReconnectingToSameAddressIsNoOpAndToNewAddressReplaces) {
  ASSERT_OK(a_->Connect(kB, b_address_));  // the same again: no-op
  ASSERT_OK(a_->Connect(NodeId(7), "tcp://127.0.0.1:1"));
  ASSERT_OK(a_->Connect(NodeId(7), b_address_));  // now B's address answers for node 7
  Status sent = a_->Send(Data(kA, NodeId(7), 70, {}));
  ASSERT_OK(sent);
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 70);
  EXPECT_EQ(got->header.receiver, NodeId(7));
}

TEST_F(ZmqTransportTest, SendsAndReceivesSeveralFrames) {
  // Empty, small (copied into ZeroMQ) and large (zero-copy) frames in one message.
  std::vector<size_t> sizes = {0, 1, 1024, 1025, 100000};
  Frames frames;
  for (size_t i = 0; i < sizes.size(); ++i) frames.push_back(Pattern(sizes[i], static_cast<unsigned>(i)));
  Message m = Data(kA, kB, 41, frames);
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
  EXPECT_EQ(got->header.request_id, 41);
  EXPECT_EQ(got->header.epoch, Epoch(12));
  EXPECT_EQ(got->header.clock, 13u);
  EXPECT_EQ(got->header.aux, 14u);
  ASSERT_EQ(got->frames.size(), sizes.size());
  uint64_t payload = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(HasPattern(got->frames[i], sizes[i], static_cast<unsigned>(i))) << "frame " << i;
    payload += sizes[i];
  }
  // On the wire: the header, the frame table, the small frames inline (padded to 8 bytes) and
  // the 100000-byte frame out of line.
  const uint64_t wire_bytes = kHeaderSize + 8 * sizes.size() + (0 + 8 + 1024 + 1032) + 100000;
  ASSERT_EQ(payload, 0 + 1 + 1024 + 1025 + 100000u);
  EXPECT_EQ(a_->stats().messages_sent, 1u);
  EXPECT_EQ(a_->stats().bytes_sent, wire_bytes);
  EXPECT_EQ(b_->stats().messages_received, 1u);
  EXPECT_EQ(b_->stats().bytes_received, wire_bytes);
}

TEST_F(ZmqTransportTest, RepliesFlowBothWays) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  Result<Message> req = b_->Receive(kLongWait);
  ASSERT_OK(req);
  Message reply = Data(kB, kA, req->header.request_id, {BytesFromString("no table 4")});
  reply.header.flags = kFlagReply | kFlagError;
  reply.header.status = static_cast<uint8_t>(StatusCode::kNotFound);
  ASSERT_OK(b_->Send(std::move(reply)));
  Result<Message> got = a_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_TRUE(got->header.is_error());
  EXPECT_EQ(got->header.status, static_cast<uint8_t>(StatusCode::kNotFound));
  ASSERT_EQ(got->frames.size(), 1u);
  EXPECT_EQ(Text(got->frames[0]), "no table 4");
}

TEST_F(ZmqTransportTest, PreservesOrderFromOneSender) {
  constexpr int kMessages = 10000;
  std::jthread sender([&] {
    for (int i = 0; i < kMessages; ++i) {
      // Every 100th message carries a zero-copy frame, so both send paths are interleaved.
      Bytes frame = i % 100 == 0 ? Pattern(2000, static_cast<unsigned>(i)) : BytesFromString(std::to_string(i));
      Status s = a_->Send(Data(kA, kB, i, {frame}));
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
    if (i % 100 == 0) {
      ASSERT_TRUE(HasPattern(got->frames.at(0), 2000, static_cast<unsigned>(i)));
    } else {
      ASSERT_EQ(Text(got->frames.at(0)), std::to_string(i));
    }
  }
}

TEST_F(ZmqTransportTest, ReleasesLargeFrameOwnerAfterDelivery) {
  constexpr size_t kSize = 8 << 20;
  auto released = std::make_shared<std::promise<void>>();
  std::future<void> done = released->get_future();
  std::byte* data = nullptr;
  {
    SharedArray<std::byte> buffer(kSize);
    for (size_t i = 0; i < kSize; i += 4096) buffer[i] = static_cast<std::byte>(i / 4096);
    data = buffer.data();
    // An owner whose destruction we can observe; it keeps the real buffer alive until then.
    std::shared_ptr<void> owner(data, [keep = buffer.owner(), released](void*) { released->set_value(); });
    ASSERT_OK(a_->Send(Data(kA, kB, 1, {Bytes(std::move(owner), data, kSize)})));
  }
  // Only the transport holds the owner now.
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  ASSERT_EQ(got->frames.size(), 1u);
  ASSERT_EQ(got->frames[0].size(), kSize);
  EXPECT_NE(got->frames[0].data(), data);  // crossed a socket
  for (size_t i = 0; i < kSize; i += 4096) {
    ASSERT_EQ(got->frames[0][i], static_cast<std::byte>(i / 4096)) << i;
  }
  EXPECT_EQ(done.wait_for(kLongWait), std::future_status::ready) << "ZeroMQ never released the frame";
}

TEST_F(ZmqTransportTest, ReceivedFramesAreEightByteAligned) {
  std::vector<size_t> sizes = {0, 1, 3, 7, 8, 9, 31, 33, 63, 64, 65, 1023, 1024, 1025, 4095, 4097, 65537};
  for (int round = 0; round < 4; ++round) {
    Frames frames;
    for (size_t i = 0; i < sizes.size(); ++i) frames.push_back(Pattern(sizes[i] + round, static_cast<unsigned>(i)));
    ASSERT_OK(a_->Send(Data(kA, kB, round, frames)));
  }
  for (int round = 0; round < 4; ++round) {
    Result<Message> got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    ASSERT_EQ(got->header.request_id, round);
    ASSERT_EQ(got->frames.size(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Bytes& f = got->frames[i];
      EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data()) % 8, 0u) << "size " << f.size();
      EXPECT_TRUE(HasPattern(f, sizes[i] + round, static_cast<unsigned>(i))) << "size " << f.size();
    }
  }
}

TEST_F(ZmqTransportTest, ReceiveTimesOut) {
  Result<Message> got = b_->Receive(milliseconds(10));
  EXPECT_EQ(got.status().code(), StatusCode::kDeadlineExceeded);
  got = b_->Receive(milliseconds(0));
  EXPECT_EQ(got.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(ZmqTransportTest, ShutdownWakesBlockedReceive) {
  std::promise<void> started;
  auto receiving = std::async(std::launch::async, [&] {
    started.set_value();
    return b_->Receive(kLongWait);
  });
  started.get_future().wait();
  b_->Shutdown();
  Result<Message> got = receiving.get();  // kLongWait if the wake-up were lost
  EXPECT_EQ(got.status().code(), StatusCode::kAborted);
  EXPECT_EQ(b_->Receive(milliseconds(0)).status().code(), StatusCode::kAborted);
  EXPECT_EQ(b_->Send(Data(kB, kA, 1, {})).code(), StatusCode::kAborted);
  b_->Shutdown();  // twice is harmless
}

TEST_F(ZmqTransportTest, ReceivedMessagesCarryTheIdentityTheirConnectionPresented) {
  EXPECT_FALSE(a_->local_id().anonymous());
  EXPECT_FALSE(a_->local_id() == b_->local_id());
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->origin, a_->local_id());

  // A connection made to present another identity (as the scheduler does towards each node).
  const ConnectionId chosen = ConnectionId::Random();
  ASSERT_OK(a_->Connect(NodeId(7), b_address_, chosen));
  ASSERT_OK(a_->Send(Data(kA, NodeId(7), 2, {})));
  got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 2);
  EXPECT_EQ(got->origin, chosen);

  // Raw sockets without a pserver identity are anonymous, whatever the header claims, also
  // when their routing id has another form than a pserver identity's.
  Header h;
  h.type = MessageType::kShutdown;
  h.sender = kA;
  h.receiver = kB;
  for (const std::string& routing_id : {std::string(), std::string("P-but-too-short"), std::string(21, 'Q')}) {
    auto raw = routing_id.empty() ? std::make_unique<RawDealer>(b_address_)
                                  : std::make_unique<RawDealer>(b_address_, routing_id);
    ASSERT_TRUE(raw->connected());
    ASSERT_TRUE(raw->Send({EncodedHeader(h)}));
    got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    EXPECT_EQ(got->header.type, MessageType::kShutdown);
    EXPECT_EQ(got->header.sender, kA);
    EXPECT_TRUE(got->origin.anonymous()) << got->origin.ShortString();
  }
}

TEST(ZmqTransportUnreachableTest, SendErrorsNameThePeerByItsRole) {
  ZmqOptions options = TestOptions();
  options.send_timeout = milliseconds(50);
  std::unique_ptr<ZmqTransport> t = MakeTransport(options);
  ASSERT_NE(t, nullptr);
  ASSERT_OK(t->Connect(NodeId(0), "tcp://127.0.0.1:1"));
  t->NamePeer(NodeId(0), "the scheduler (node 0)");
  Status s = t->Send(Data(NodeId(3), NodeId(0), 1, {}));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("to the scheduler (node 0): the peer did not accept the message within 50 ms"),
            std::string::npos)
      << s;
  s = t->SendNoWait(Data(NodeId(3), NodeId(0), 1, {}));
  EXPECT_NE(s.message().find("the scheduler (node 0)"), std::string::npos) << s;
  EXPECT_EQ(t->PeerName(NodeId(4)), "node 4");  // not named
}

TEST_F(ZmqTransportTest, SendToNeverConnectedNodeIsNotFound) {
  Status s = a_->Send(Data(kA, NodeId(99), 1, {}));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("99"), std::string::npos) << s;
  EXPECT_EQ(a_->stats().messages_sent, 0u);
}

TEST(ZmqTransportUnreachableTest, SendToAddressNobodyListensAtIsUnavailable) {
  ZmqOptions options = TestOptions();
  options.send_timeout = milliseconds(100);
  std::unique_ptr<ZmqTransport> t = MakeTransport(options);
  ASSERT_NE(t, nullptr);
  // Port 1 is never handed out as an ephemeral port, so no other test can be listening there.
  ASSERT_OK(t->Connect(NodeId(8), "tcp://127.0.0.1:1"));
  ASSERT_OK(t->Connect(NodeId(9), "ipc:///nonexistent-pserver-dir/nobody.sock"));
  for (NodeId peer : {NodeId(8), NodeId(9)}) {
    for (size_t frame_size : {size_t{0}, size_t{100000}}) {
      Status s = t->Send(Data(NodeId(1), peer, 1, {Bytes(frame_size)}));
      EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
    }
  }
  EXPECT_EQ(t->stats().messages_sent, 0u);
}

TEST(ZmqTransportUnreachableTest, SendToPeerThatWentAwayBecomesUnavailable) {
  ZmqOptions options = TestOptions();
  options.send_timeout = milliseconds(100);
  std::unique_ptr<ZmqTransport> a = MakeTransport(options);
  std::unique_ptr<ZmqTransport> b = MakeTransport(options);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  Result<std::string> b_addr = b->Listen("tcp://127.0.0.1:0");
  ASSERT_OK(b_addr);
  ASSERT_OK(a->Connect(kB, *b_addr));
  Status first = a->Send(Data(kA, kB, 0, {}));
  ASSERT_OK(first);
  Result<Message> got = b->Receive(kLongWait);
  ASSERT_OK(got);
  b.reset();
  // Sends may still be queued until ZeroMQ notices the closed connection; after that (at the
  // latest when the send queue is full) Send fails within its timeout instead of hanging.
  constexpr int kBound = 100000;
  Status s;
  int sent = 0;
  while (sent < kBound && (s = a->Send(Data(kA, kB, sent + 1, {}))).ok()) ++sent;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s << " after " << sent << " sends";
}

// Frame sequences no correct sender produces, sent from a raw DEALER (ZeroMQ adds the routing
// id frame at B's ROUTER, exactly as for a real peer).
std::vector<std::vector<std::string>> MalformedSequences() {
  Header valid;
  valid.type = MessageType::kPush;
  valid.sender = NodeId(5);
  valid.receiver = kB;
  valid.value_type = ValueType::kInt64;

  std::string wrong_version = EncodedHeader(valid);
  wrong_version[4] = static_cast<uint8_t>(kWireVersion + 1);  // a future version
  std::string bad_magic = EncodedHeader(valid);
  bad_magic[0] = 'X';
  Header one = valid;
  one.num_frames = 1;
  Header two = valid;
  two.num_frames = 2;
  const std::string garbage_entry = TableEntry(29, true);
  Header over_limit = valid;
  over_limit.num_frames = kMaxFrames + 1;
  const std::string garbage = "this is not a pserver message";  // 29 bytes

  std::vector<std::string> many(kMaxFrames + 2, "x");
  many[0] = EncodedHeader(over_limit);
  return {
      {garbage},                                               // not a header
      {""},                                                    // one empty frame
      {wrong_version},                                         // a future version
      {bad_magic},                                             // not our protocol
      {EncodedHeader(valid).substr(0, 40)},                    // cut short
      {EncodedHeader(valid) + "!"},                            // one byte too long
      {EncodedHeader(one)},                                    // no frame table
      {EncodedHeader(one) + TableEntry(9, false) + "12345678"},  // inline frame overruns the head
      {EncodedHeader(one) + garbage_entry, garbage, garbage, garbage},      // more frames than announced
      {EncodedHeader(two) + garbage_entry + garbage_entry, garbage},        // fewer frames than announced
      {EncodedHeader(one) + TableEntry(30, true), garbage},    // out-of-line frame of the wrong size
      many,                                                    // over the frame limit
      {garbage, EncodedHeader(valid)},                         // header not first
  };
}

TEST_F(ZmqTransportTest, DropsAndCountsMalformedInputAndKeepsReceiving) {
  RawDealer raw(b_address_);
  ASSERT_TRUE(raw.connected());
  const std::vector<std::vector<std::string>> bad = MalformedSequences();
  Header valid;
  valid.type = MessageType::kPush;
  valid.sender = NodeId(5);
  valid.receiver = kB;
  valid.value_type = ValueType::kInt64;
  valid.num_frames = 1;
  for (int round = 1; round <= 3; ++round) {
    for (const std::vector<std::string>& frames : bad) ASSERT_TRUE(raw.Send(frames));
    valid.request_id = round;
    ASSERT_TRUE(raw.Send({EncodedHeader(valid) + TableEntry(8, false) + "from raw"}));
    // One connection keeps its order: the valid message comes after all the malformed ones.
    Result<Message> got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    EXPECT_EQ(got->header.sender, NodeId(5));
    EXPECT_EQ(got->header.request_id, round);
    EXPECT_EQ(Text(got->frames.at(0)), "from raw");
    EXPECT_EQ(b_->stats().dropped_malformed, round * bad.size());
    // And a regular peer is still heard.
    Status sent = a_->Send(Data(kA, kB, 100 + round, {BytesFromString("from A")}));
    ASSERT_OK(sent);
    Result<Message> next = b_->Receive(kLongWait);
    ASSERT_OK(next);
    EXPECT_EQ(next->header.sender, kA);
    EXPECT_EQ(next->header.request_id, 100 + round);
  }
  EXPECT_EQ(b_->stats().messages_received, 6u);
  EXPECT_EQ(b_->stats().dropped_malformed, 3 * bad.size());
}

}  // namespace
}  // namespace pserver::transport::zmq
