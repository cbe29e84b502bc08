// InterceptingTransport between two inproc transports: what it logs, holds, records, re-sends
// and -- under a seeded fault policy -- drops, duplicates, delays, reorders and corrupts.
#include "testing/intercepting_transport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "transport/inproc/inproc_transport.h"
#include "transport/transport_test_util.h"

namespace pserver::testing {
namespace {

using transport::Bytes;
using transport::Message;
using transport::MessageType;
using transport::testing::Data;
using transport::testing::kA;
using transport::testing::kB;
using transport::testing::kLongWait;

Bytes KeysOf(std::vector<Key> keys) { return transport::AsBytes(SharedArray<Key>(std::move(keys))); }
Bytes FloatsOf(std::vector<float> v) { return transport::AsBytes(SharedArray<float>(std::move(v))); }

std::vector<Key> KeysIn(const Message& m) {
  std::vector<Key> k(m.frames[0].size() / sizeof(Key));
  if (!k.empty()) std::memcpy(k.data(), m.frames[0].data(), m.frames[0].size());
  return k;
}
std::vector<float> FloatsIn(const Message& m) {
  std::vector<float> v(m.frames[1].size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), m.frames[1].data(), m.frames[1].size());
  return v;
}

// A (node kA, wrapped) -> B (plain) pair on one hub.
class InterceptingTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto inner = std::make_unique<transport::inproc::InprocTransport>(&hub_, transport::inproc::InprocOptions{});
    a_ = std::make_unique<InterceptingTransport>(std::move(inner));
    b_ = std::make_unique<transport::inproc::InprocTransport>(&hub_, transport::inproc::InprocOptions{});
    Result<std::string> addr_a = a_->Listen("inproc://0");
    Result<std::string> addr_b = b_->Listen("inproc://0");
    ASSERT_OK(addr_a);
    ASSERT_OK(addr_b);
    ASSERT_OK(a_->Connect(kB, *addr_b));
    ASSERT_OK(b_->Connect(kA, *addr_a));
  }

  // A push from A to B with request id `id`: keys and values id*10 + 0..2.
  static Message Push(int64_t id) {
    const Key k = static_cast<Key>(id * 10);
    const float v = static_cast<float>(id * 10);
    return Data(kA, kB, id, {KeysOf({k, k + 1, k + 2}), FloatsOf({v, v + 1, v + 2}), Bytes()});
  }

  // The request ids B receives until none arrives within `wait` (the wait only ends the read
  // of a sequence already sent; nothing is asserted about time).
  std::vector<int64_t> ReceivedIds(size_t n) {
    std::vector<int64_t> ids;
    for (size_t i = 0; i < n; ++i) {
      Result<Message> m = b_->Receive(kLongWait);
      if (!m.ok()) break;
      ids.push_back(m->header.request_id);
    }
    return ids;
  }

  transport::inproc::InprocHub hub_;
  std::unique_ptr<InterceptingTransport> a_;
  std::unique_ptr<transport::inproc::InprocTransport> b_;
};

TEST_F(InterceptingTransportTest, LogsSendsAndReceivesForCountAndWaitFor) {
  ASSERT_OK(a_->Send(Push(1)));
  ASSERT_OK(a_->Send(Push(2)));
  EXPECT_EQ(a_->Count(Direction::kSend, IsRequest(MessageType::kPush)), 2u);
  EXPECT_EQ(a_->Count(Direction::kReceive, IsRequest(MessageType::kPush)), 0u);
  EXPECT_EQ(ReceivedIds(2), (std::vector<int64_t>{1, 2}));
  Message reply = Data(kB, kA, 7, {});
  reply.header.flags = transport::kFlagReply;
  ASSERT_OK(b_->Send(std::move(reply)));
  Result<Message> got = a_->Receive(kLongWait);
  ASSERT_OK(got);
  EXPECT_EQ(got->header.request_id, 7);
  EXPECT_TRUE(a_->WaitFor(Direction::kReceive, IsReply(MessageType::kPush), 1, kLongWait));
  EXPECT_EQ(a_->Count(Direction::kReceive, [](const transport::Header& h) { return h.request_id == 7; }), 1u);
}

TEST_F(InterceptingTransportTest, HeldMessageIsOvertakenAndReleasedLater) {
  a_->Hold([](const Message& m) { return m.header.request_id == 1; });
  ASSERT_OK(a_->Send(Push(1)));
  ASSERT_OK(a_->Send(Push(2)));
  ASSERT_OK(a_->Send(Push(3)));
  EXPECT_EQ(a_->num_held(), 1u);
  EXPECT_EQ(ReceivedIds(2), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a_->Count(Direction::kSend, IsRequest(MessageType::kPush)), 2u);  // logged when sent
  Result<size_t> released = a_->Release();
  ASSERT_OK(released);
  EXPECT_EQ(*released, 1u);
  EXPECT_EQ(a_->num_held(), 0u);
  ASSERT_OK(a_->Send(Push(4)));  // no longer holding
  EXPECT_EQ(ReceivedIds(2), (std::vector<int64_t>{1, 4}));
}

TEST_F(InterceptingTransportTest, KeepOrderHoldsEverythingBehindTheHeldMessage) {
  a_->Hold([](const Message& m) { return m.header.request_id == 2; }, HoldMode::kKeepOrder);
  for (int64_t id = 1; id <= 4; ++id) ASSERT_OK(a_->Send(Push(id)));
  EXPECT_EQ(a_->num_held(), 3u);
  EXPECT_EQ(ReceivedIds(1), (std::vector<int64_t>{1}));
  ASSERT_OK(a_->Release());
  EXPECT_EQ(ReceivedIds(3), (std::vector<int64_t>{2, 3, 4}));
}

TEST_F(InterceptingTransportTest, RecordedPushIsResentWholeAndAsAKeySubRange) {
  a_->Record([](const Message& m) { return m.header.type == MessageType::kPush; });
  ASSERT_OK(a_->Send(Push(1)));
  ASSERT_OK(a_->Send(Push(2)));
  std::vector<Message> recorded = a_->Recorded();
  ASSERT_EQ(recorded.size(), 2u);
  ASSERT_OK(a_->Inject(recorded[0]));
  ASSERT_OK(a_->Inject(KeySubRange(recorded[0], 1, 3)));
  std::vector<Message> got;
  for (int i = 0; i < 4; ++i) {
    Result<Message> m = b_->Receive(kLongWait);
    ASSERT_OK(m);
    got.push_back(std::move(*m));
  }
  EXPECT_EQ(got[2].header.request_id, 1);
  EXPECT_EQ(KeysIn(got[2]), (std::vector<Key>{10, 11, 12}));
  EXPECT_EQ(FloatsIn(got[2]), (std::vector<float>{10, 11, 12}));
  EXPECT_EQ(got[3].header.request_id, 1);
  EXPECT_EQ(KeysIn(got[3]), (std::vector<Key>{11, 12}));
  EXPECT_EQ(FloatsIn(got[3]), (std::vector<float>{11, 12}));
  EXPECT_EQ(got[3].frames.size(), 3u);
}

TEST_F(InterceptingTransportTest, RewriterChangesOutgoingMessages) {
  a_->SetRewriter([](Message& m) { m.header.aux = 99; });
  ASSERT_OK(a_->Send(Push(1)));
  Result<Message> m = b_->Receive(kLongWait);
  ASSERT_OK(m);
  EXPECT_EQ(m->header.aux, 99u);
}

// What B receives when A sends 200 pushes under `policy`, as (request id, first value) pairs.
std::vector<std::pair<int64_t, float>> UnderFaults(const FaultPolicy& policy, FaultCounts* counts) {
  transport::inproc::InprocHub hub;
  InterceptingTransport a(std::make_unique<transport::inproc::InprocTransport>(&hub, transport::inproc::InprocOptions{}));
  transport::inproc::InprocTransport b(&hub, transport::inproc::InprocOptions{});
  Result<std::string> addr_b = b.Listen("inproc://0");
  EXPECT_OK(addr_b);
  EXPECT_OK(a.Connect(kB, *addr_b));
  a.SetFaults(policy);
  for (int64_t id = 1; id <= 200; ++id) {
    Message m = Data(kA, kB, id, {FloatsOf({static_cast<float>(id)})});
    EXPECT_OK(a.Send(std::move(m)));
  }
  EXPECT_OK(a.Release());  // flushes what is still delayed
  *counts = a.fault_counts();
  std::vector<std::pair<int64_t, float>> got;
  const uint64_t sent = a.stats().messages_sent;  // (the wrapper counts the node's 200 sends)
  const uint64_t delivered = 200 - counts->dropped + counts->duplicated;
  EXPECT_EQ(sent, 200u);
  for (uint64_t i = 0; i < delivered; ++i) {
    Result<Message> m = b.Receive(kLongWait);
    if (!m.ok()) break;
    float v = 0;
    std::memcpy(&v, m->frames[0].data(), sizeof v);
    got.emplace_back(m->header.request_id, v);
  }
  return got;
}

TEST(InterceptingTransportFaultTest, SeededFaultsAreReproducibleAndDoWhatTheySay) {
  const uint64_t seed = TestSeed(20261203);
  FaultPolicy p;
  p.seed = seed;
  p.drop = 0.1;
  p.duplicate = 0.1;
  p.delay = 0.1;
  p.corrupt = 0.1;
  FaultCounts c1, c2;
  const auto first = UnderFaults(p, &c1);
  const auto second = UnderFaults(p, &c2);
  EXPECT_EQ(first, second);
  EXPECT_EQ(c1.dropped, c2.dropped);
  EXPECT_GT(c1.dropped, 0u);
  EXPECT_GT(c1.duplicated, 0u);
  EXPECT_GT(c1.delayed, 0u);
  EXPECT_GT(c1.corrupted, 0u);
  ASSERT_EQ(first.size(), 200 - c1.dropped + c1.duplicated);
  // Each kind shows in what arrived: ids missing, ids twice, ids out of order, values changed.
  std::map<int64_t, int> times;
  size_t out_of_order = 0, changed = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    ++times[first[i].first];
    if (i > 0 && first[i].first < first[i - 1].first) ++out_of_order;
    if (first[i].second != static_cast<float>(first[i].first)) ++changed;
  }
  EXPECT_EQ(times.size(), 200 - c1.dropped);
  size_t twice = 0;
  for (const auto& [id, n] : times) twice += n == 2 ? 1 : 0;
  EXPECT_EQ(twice, c1.duplicated);
  EXPECT_GT(out_of_order, 0u);
  EXPECT_EQ(changed, c1.corrupted);
  EXPECT_EQ(c1.reordered, 0u);  // not asked for
  // No policy: everything arrives once, in order, unchanged.
  FaultCounts none;
  const auto clean = UnderFaults(FaultPolicy{}, &none);
  ASSERT_EQ(clean.size(), 200u);
  for (size_t i = 0; i < clean.size(); ++i) EXPECT_EQ(clean[i], (std::pair<int64_t, float>(i + 1, i + 1.0f)));
}

// A message held back for reordering is overtaken by exactly the next `distance` messages to its
// own receiver; messages to other receivers do not count, and it follows right after the last of
// its overtakers.
TEST_F(InterceptingTransportTest, ReorderedMessageIsOvertakenByTheNextMessagesToItsReceiver) {
  transport::inproc::InprocTransport c(&hub_, transport::inproc::InprocOptions{});
  Result<std::string> addr_c = c.Listen("inproc://0");
  ASSERT_OK(addr_c);
  constexpr NodeId kC(3);
  ASSERT_OK(a_->Connect(kC, *addr_c));
  FaultPolicy p;
  p.seed = TestSeed(7);
  p.reorder = 1;
  p.max_reorder_distance = 2;  // the distance drawn is 1 or 2
  p.applies = [](const Message& m) { return m.header.request_id == 2; };
  a_->SetFaults(p);
  // To B: 1, 2 (held back), then 5, 6, 7; to C in between: 3, 4.
  for (int64_t id : {1, 2}) ASSERT_OK(a_->Send(Push(id)));
  EXPECT_EQ(ReceivedIds(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(b_->Receive(std::chrono::milliseconds(0)).status().code(), StatusCode::kDeadlineExceeded);  // 2 waits
  for (int64_t id : {3, 4}) ASSERT_OK(a_->Send(Data(kA, kC, id, {})));
  EXPECT_EQ(b_->Receive(std::chrono::milliseconds(0)).status().code(), StatusCode::kDeadlineExceeded);  // still
  for (int64_t id : {5, 6, 7}) ASSERT_OK(a_->Send(Push(id)));
  EXPECT_EQ(a_->fault_counts().reordered, 1u);
  const std::vector<int64_t> at_b = ReceivedIds(4);
  ASSERT_EQ(at_b.size(), 4u);
  const auto two = std::find(at_b.begin(), at_b.end(), 2);
  ASSERT_NE(two, at_b.end());
  const auto overtaken_by = two - at_b.begin();  // messages sent after 2 that arrived before it
  EXPECT_TRUE(overtaken_by == 1 || overtaken_by == 2) << overtaken_by;
  std::vector<int64_t> expected = {5, 6, 7};
  expected.insert(expected.begin() + overtaken_by, 2);
  EXPECT_EQ(at_b, expected);
  for (int64_t id : {3, 4}) {  // C's messages, in order and not held
    Result<Message> m = c.Receive(kLongWait);
    ASSERT_OK(m);
    EXPECT_EQ(m->header.request_id, id);
  }
  EXPECT_EQ(a_->Count(Direction::kSend, IsRequest(MessageType::kPush)), 7u);  // logged when sent
}

TEST_F(InterceptingTransportTest, ReleaseSendsAMessageHeldBackForReordering) {
  FaultPolicy p;
  p.seed = TestSeed(8);
  p.reorder = 1;
  a_->SetFaults(p);
  ASSERT_OK(a_->Send(Push(1)));  // nothing follows it: it waits
  EXPECT_EQ(b_->Receive(std::chrono::milliseconds(0)).status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a_->Count(Direction::kSend, IsRequest(MessageType::kPush)), 0u);
  Result<size_t> released = a_->Release();
  ASSERT_OK(released);
  EXPECT_EQ(*released, 0u);  // (it counts held messages, not faults)
  EXPECT_EQ(ReceivedIds(1), (std::vector<int64_t>{1}));
}

TEST(InterceptingTransportFaultTest, SeededReorderIsReproducibleAndLosesNothing) {
  FaultPolicy p;
  p.seed = TestSeed(20261204);
  p.reorder = 0.2;
  p.max_reorder_distance = 4;
  FaultCounts c1, c2;
  const auto first = UnderFaults(p, &c1);
  const auto second = UnderFaults(p, &c2);
  EXPECT_EQ(first, second);
  EXPECT_EQ(c1.reordered, c2.reordered);
  EXPECT_GT(c1.reordered, 0u);
  EXPECT_EQ(c1.dropped + c1.duplicated + c1.delayed + c1.corrupted, 0u);
  // Every message arrives once and unchanged; only the order differs.
  ASSERT_EQ(first.size(), 200u);
  std::vector<int64_t> ids;
  size_t out_of_order = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].second, static_cast<float>(first[i].first));
    if (i > 0 && first[i].first < first[i - 1].first) ++out_of_order;
    ids.push_back(first[i].first);
  }
  EXPECT_GT(out_of_order, 0u);
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], static_cast<int64_t>(i + 1));
  // Another seed, another order (the policy is not ignored).
  FaultPolicy other = p;
  other.seed = p.seed + 1;
  FaultCounts c3;
  EXPECT_NE(UnderFaults(other, &c3), first);
}

TEST(InterceptingTransportFaultTest, DescribeNamesTheSeedAndEveryFault) {
  FaultPolicy p;
  p.seed = 12345;
  p.drop = 0.5;
  p.reorder = 0.25;
  p.max_reorder_distance = 9;
  const std::string d = p.Describe();
  EXPECT_NE(d.find("seed=12345"), std::string::npos) << d;
  EXPECT_NE(d.find("drop=0.5"), std::string::npos) << d;
  EXPECT_NE(d.find("reorder=0.25 (max distance 9)"), std::string::npos) << d;
  for (const char* fault : {"duplicate=", "delay=", "corrupt="}) EXPECT_NE(d.find(fault), std::string::npos) << d;
}

}  // namespace
}  // namespace pserver::testing
