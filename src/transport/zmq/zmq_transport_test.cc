// ZmqTransport: what only the ZeroMQ transport does -- TCP addresses, zero-copy frames released
// after the write, raw sockets without a pserver identity, its error wording, and raw malformed
// input from a plain ZeroMQ DEALER. The contract it shares with every transport (over tcp and
// ipc) is tested once, in testing/transport_conformance_test.cc.
#include "transport/zmq/zmq_transport.h"

#include <gtest/gtest.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
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

// The address of a TCP listener on port 0 names the port it got (that other transports reach it
// there is tested in the conformance suite).
TEST_F(ZmqTransportTest, ListenOnPortZeroReturnsConcreteAddress) {
  const std::string prefix = "tcp://127.0.0.1:";
  ASSERT_EQ(b_address_.rfind(prefix, 0), 0u) << b_address_;
  const std::string port = b_address_.substr(prefix.size());
  ASSERT_FALSE(port.empty());
  EXPECT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << b_address_;
  EXPECT_GT(std::stoi(port), 0);
  EXPECT_NE(a_address_, b_address_);
}

// A peer whose process is gone (here: its transport destroyed, which closes its sockets and its
// port as a killed process's are) is reported down once its connection broke and a reconnection
// was refused; a live one never.
TEST_F(ZmqTransportTest, APeerThatIsGoneIsReportedDownAndALiveOneNot) {
  a_->Watch(kB);
  // A message each way: both connections are up.
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  ASSERT_OK(b_->Receive(kLongWait).status());
  ASSERT_OK(b_->Send(Data(kB, kA, 2, {})));
  ASSERT_OK(a_->Receive(kLongWait).status());
  EXPECT_TRUE(a_->PeersDown(milliseconds(0)).empty());
  b_.reset();
  // The disconnect, then ZeroMQ's refused reconnection, reach A's monitor within its I/O
  // (polled, bounded): B is down for good long before the hour asked for.
  std::vector<NodeId> down;
  const auto deadline = std::chrono::steady_clock::now() + kLongWait;
  while (down.empty() && std::chrono::steady_clock::now() < deadline) {
    down = a_->PeersDown(std::chrono::hours(1));
    if (down.empty()) (void)a_->Receive(milliseconds(5));
  }
  EXPECT_EQ(down, std::vector<NodeId>{kB});
}

// Waits (driving A's receive loop, which reads the connection events) until A sees B down.
void AwaitDown(ZmqTransport& a, NodeId b) {
  const auto deadline = std::chrono::steady_clock::now() + kLongWait;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::vector<NodeId> down = a.PeersDown(std::chrono::hours(1));
    if (std::find(down.begin(), down.end(), b) != down.end()) return;
    (void)a.Receive(milliseconds(5));
  }
  ADD_FAILURE() << "the peer never showed down";
}

// Connects `a` (listening already) to a new peer B, watches it and exchanges a message with it,
// then destroys B as a killed process's sockets and port go.
void ConnectToAPeerThatThenDies(ZmqTransport& a) {
  std::unique_ptr<ZmqTransport> b = MakeTransport();
  ASSERT_NE(b, nullptr);
  Result<std::string> b_address = b->Listen("tcp://127.0.0.1:0");
  ASSERT_OK(b_address);
  ASSERT_OK(a.Connect(kB, *b_address));
  a.Watch(kB);
  ASSERT_OK(a.Send(Data(kA, kB, 1, {})));
  ASSERT_OK(b->Receive(kLongWait).status());
}

// Sends to B until a send fails (while ZeroMQ still has the connection sends queue; the first
// after it is gone blocks), and returns that failure.
Status SendToBUntilOneFails(ZmqTransport& a) {
  Status sent;
  for (int i = 2; sent.ok() && i < 1000000; ++i) sent = a.Send(Data(kA, kB, i, {}));
  return sent;
}

// The scheduler's option: a send blocked on a peer whose connection broke and whose
// reconnection is refused (a process that died) gives up then, not a send timeout later.
TEST(ZmqTransportGiveUpTest, ASendToAPeerThatDiedGivesUpWhenItsConnectionIsDown) {
  ZmqOptions options = TestOptions();
  options.send_timeout = std::chrono::minutes(10);  // never reached: the test would hang instead
  options.give_up_when_down_for = std::chrono::hours(1);  // only a refused reconnection counts
  std::unique_ptr<ZmqTransport> a = MakeTransport(options);
  ASSERT_NE(a, nullptr);
  ASSERT_OK(a->Listen("tcp://127.0.0.1:0").status());
  ASSERT_NO_FATAL_FAILURE(ConnectToAPeerThatThenDies(*a));
  // The blocked send ends once the reconnection was refused.
  const Status sent = SendToBUntilOneFails(*a);
  EXPECT_EQ(sent.code(), StatusCode::kUnavailable) << sent.ToString();
  EXPECT_NE(sent.message().find("the connection to the peer broke and did not come back"), std::string::npos)
      << sent.ToString();
}

// A send blocked on one peer holds that peer only: connecting to another and sending to it go on
// meanwhile (a worker's receive thread connects to a joining server while its main thread's
// push waits on a server that died).
TEST(ZmqTransportGiveUpTest, ASendBlockedOnOnePeerDoesNotHoldUpConnectingToAnother) {
  ZmqOptions options = TestOptions();
  options.send_timeout = std::chrono::minutes(10);
  std::unique_ptr<ZmqTransport> a = MakeTransport(options);
  std::unique_ptr<ZmqTransport> c = MakeTransport();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(c, nullptr);
  std::atomic<bool> given_up{false};
  std::atomic<bool> waiting{false};  // a send to B waits: it asks whether B is given up
  a->SetGiveUp([&](NodeId peer) {
    if (peer == kB) waiting = true;
    return peer == kB && given_up.load();
  });
  ASSERT_OK(a->Listen("tcp://127.0.0.1:0").status());
  Result<std::string> c_address = c->Listen("tcp://127.0.0.1:0");
  ASSERT_OK(c_address);
  ASSERT_NO_FATAL_FAILURE(ConnectToAPeerThatThenDies(*a));
  AwaitDown(*a, kB);
  // Another thread sends to B until a send fails: it blocks, with B gone, until B is given up.
  std::future<Status> blocked = std::async(std::launch::async, [&] { return SendToBUntilOneFails(*a); });
  const auto deadline = std::chrono::steady_clock::now() + kLongWait;
  while (!waiting && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(waiting) << "the send to B never waited";
  const NodeId kC(7);
  std::future<Status> connected = std::async(std::launch::async, [&] {
    Status s = a->Connect(kC, *c_address);
    return s.ok() ? a->Send(Data(kA, kC, 1, {})) : s;
  });
  const bool in_time = connected.wait_for(kLongWait) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "connecting to another peer waited for the send blocked on B";
  EXPECT_EQ(blocked.wait_for(milliseconds(0)), std::future_status::timeout) << "the send to B ended early";
  given_up = true;  // ends the blocked send (and so, were it held up, the connect)
  ASSERT_OK(connected.get());
  Result<Message> got = c->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 1);
  const Status sent = blocked.get();
  EXPECT_EQ(sent.code(), StatusCode::kUnavailable) << sent.ToString();
  EXPECT_NE(sent.message().find("declared dead"), std::string::npos) << sent.ToString();
}

// A peer disconnected is forgotten: sends to it fail as to a peer never connected, until it is
// connected again; what was sent before the disconnect still arrives.
TEST_F(ZmqTransportTest, ADisconnectedPeerIsForgottenUntilConnectedAgain) {
  ASSERT_OK(a_->Send(Data(kA, kB, 1, {})));
  a_->Disconnect(kB);
  Result<Message> got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 1);
  EXPECT_EQ(a_->Send(Data(kA, kB, 2, {})).code(), StatusCode::kNotFound);
  a_->Disconnect(kB);  // again: no effect
  ASSERT_OK(a_->Connect(kB, b_address_));
  ASSERT_OK(a_->Send(Data(kA, kB, 3, {})));
  got = b_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 3);
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

// Raw sockets without a pserver identity are anonymous, whatever the header claims, also when
// their routing id has another form than a pserver identity's (origins of pserver connections
// are tested in the conformance suite).
TEST_F(ZmqTransportTest, RawSocketsWithoutAPserverIdentityAreAnonymous) {
  Header h;
  h.type = MessageType::kShutdown;
  h.sender = kA;
  h.receiver = kB;
  for (const std::string& routing_id : {std::string(), std::string("P-but-too-short"), std::string(21, 'Q')}) {
    auto raw = routing_id.empty() ? std::make_unique<RawDealer>(b_address_)
                                  : std::make_unique<RawDealer>(b_address_, routing_id);
    ASSERT_TRUE(raw->connected());
    ASSERT_TRUE(raw->Send({EncodedHeader(h)}));
    Result<Message> got = b_->Receive(kLongWait);
    ASSERT_OK(got);
    EXPECT_EQ(got->header.type, MessageType::kShutdown);
    EXPECT_EQ(got->header.sender, kA);
    EXPECT_TRUE(got->origin.anonymous()) << got->origin.ShortString();
  }
}

// The wording of a send timeout: the peer by its role, and how long it did not accept (the
// names of peers in every transport's errors are tested in the conformance suite).
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
  EXPECT_NE(s.message().find("to the scheduler (node 0): the peer is not connected or its queue is full"),
            std::string::npos)
      << s;
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
