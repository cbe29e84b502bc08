// Control-plane bodies (table specs are the kv layer's: kv/table_catalog_test.cc): round trips, and that every truncated or mutated body from a peer
// either decodes or is refused with kCorruption, never crashes.
#include "cluster/control_messages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/wire_io.h"
#include "testing/test_util.h"
#include "transport/transport_test_util.h"

namespace pserver::cluster {
namespace {

using transport::Bytes;

using transport::testing::ExactCopy;
using transport::testing::Text;

ClusterView SampleView() {
  ClusterView v;
  v.epoch = Epoch(3);
  v.num_servers = 2;
  v.num_workers = 1;
  v.nodes = {
      {NodeId(1), Role::kServer, Rank(0), "tcp://10.0.0.1:5000", {1, 0xFFFFFFFFFFFFFFFF}},
      {NodeId(2), Role::kServer, Rank(1), "tcp://10.0.0.2:5000", {2, 0x8000000000000000}},
      {NodeId(3), Role::kWorker, Rank(0), "tcp://10.0.0.3:5000", {3, 3}},
  };
  v.ring = {{KeyRange{0, 999}, 1}, {KeyRange{1000, ~uint64_t{0}}, 0}};
  v.replicas = 2;
  v.resync = true;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(ControlMessagesTest, RoundTripsRegisterRequest) {
  for (Role role : {Role::kServer, Role::kWorker}) {
    for (int64_t hint : {int64_t{-1}, int64_t{0}, int64_t{7}, std::numeric_limits<int64_t>::max(),
                         std::numeric_limits<int64_t>::min()}) {
      RegisterRequest m;
      m.role = role;
      m.address = "tcp://127.0.0.1:4242";
      m.rank_hint = hint;
      m.scheduler_identity = transport::ConnectionId{0x0102030405060708, 0xF1F2F3F4F5F6F7F8};
      Result<RegisterRequest> d = DecodeRegisterRequest(Encode(m));
      ASSERT_OK(d);
      EXPECT_EQ(d->role, role);
      EXPECT_EQ(d->address, m.address);
      EXPECT_EQ(d->rank_hint, hint);
      EXPECT_EQ(d->scheduler_identity, m.scheduler_identity);
    }
  }
}

TEST(ControlMessagesTest, RoundTripsRegisterReply) {
  RegisterReply m;
  m.your_id = NodeId(3);
  m.view = SampleView();
  Result<RegisterReply> d = DecodeRegisterReply(Encode(m));
  ASSERT_OK(d);
  EXPECT_EQ(d->your_id, NodeId(3));
  EXPECT_EQ(d->view, m.view);

  RegisterReply empty;  // no nodes at all
  empty.your_id = NodeId(std::numeric_limits<uint32_t>::max());
  empty.view.epoch = Epoch(std::numeric_limits<uint64_t>::max());
  Result<RegisterReply> e = DecodeRegisterReply(Encode(empty));
  ASSERT_OK(e);
  EXPECT_EQ(e->your_id, empty.your_id);
  EXPECT_EQ(e->view, empty.view);
}

TEST(ControlMessagesTest, RoundTripsNodeFailure) {
  for (Role role : {Role::kScheduler, Role::kServer, Role::kWorker}) {
    NodeFailure m{NodeId(9), role, Rank(4), "no heartbeat for 3000 ms"};
    Result<NodeFailure> d = DecodeNodeFailure(Encode(m));
    ASSERT_OK(d);
    EXPECT_EQ(d->id, m.id);
    EXPECT_EQ(d->role, m.role);
    EXPECT_EQ(d->rank, m.rank);
    EXPECT_EQ(d->reason, m.reason);
  }
  NodeFailure no_reason{NodeId(1), Role::kWorker, Rank(0), ""};
  Result<NodeFailure> d = DecodeNodeFailure(Encode(no_reason));
  ASSERT_OK(d);
  EXPECT_EQ(d->reason, "");
}

TEST(ControlMessagesTest, EncodesNodeFailureLittleEndian) {
  Bytes b = Encode(NodeFailure{NodeId(0x01020304), Role::kServer, Rank(5), "ab"});
  EXPECT_EQ(Text(b), std::string("\x04\x03\x02\x01" "\x01" "\x05\x00\x00\x00" "\x02\x00\x00\x00" "ab", 15));
}

// ---------------------------------------------------------------------------------------------
// Refusals

// One decoder, seen as "decode these bytes, then re-encode what came out".
struct Codec {
  const char* name;  // as in the refusal message: "malformed <name> body"
  std::function<Status(const Bytes&, std::string*)> decode_and_reencode;
};

std::vector<Codec> AllCodecs() {
  auto wrap = [](auto decode) {
    return [decode](const Bytes& body, std::string* again) -> Status {
      auto r = decode(body);
      if (!r.ok()) return r.status();
      *again = Text(Encode(*r));
      return Status::Ok();
    };
  };
  return {
      {"register", wrap(DecodeRegisterRequest)},
      {"register-reply", wrap(DecodeRegisterReply)},
      {"declare-table", wrap(DecodeTableDeclaration)},
      {"node-failed", wrap(DecodeNodeFailure)},
      {"cluster-view", wrap(DecodeClusterView)},
      {"migrate", wrap(DecodeMigrateOrder)},
      {"migrate-reply", wrap(DecodeMigrateReport)},
      {"admin", wrap(DecodeAdminRequest)},
      {"table-stats", wrap(DecodeTableStats)},
      {"checkpoint-written", wrap(DecodeCheckpointWritten)},
  };
}

// Valid bodies of each codec, in AllCodecs() order.
std::vector<std::vector<std::string>> ValidBodies() {
  RegisterReply reply{NodeId(3), SampleView()};
  RegisterReply lonely{NodeId(1), ClusterView{Epoch(1), 1, 0, {{NodeId(1), Role::kServer, Rank(0), "x", {}}}, {RingSegment{KeyRange{0, ~uint64_t{0}}, 0}}}};
  return {
      {Text(Encode(RegisterRequest{Role::kWorker, "tcp://127.0.0.1:1234", -1, {1, 2}})),
       Text(Encode(RegisterRequest{Role::kServer, "ipc:///tmp/s", 3, {0, 1}}))},
      {Text(Encode(reply)), Text(Encode(lonely))},
      {Text(Encode(TableDeclaration{"t", "float32, width 1", ExactCopy("opaque \x01\x02 spec")})),
       Text(Encode(TableDeclaration{std::string(128, 'n'), "", Bytes()}))},
      {Text(Encode(NodeFailure{NodeId(9), Role::kWorker, Rank(4), "gone"})),
       Text(Encode(NodeFailure{NodeId(1), Role::kServer, Rank(0), ""}))},
      {Text(Encode(reply.view)), Text(Encode(lonely.view))},
      {Text(Encode(MigrateOrder{{MigrateTarget{NodeId(4), {KeyRange{0, 9}, KeyRange{20, ~uint64_t{0}}}},
                                 MigrateTarget{NodeId(2), {KeyRange{10, 10}}}}})),
       Text(Encode(MigrateOrder{}))},
      {Text(Encode(MigrateReport{12345, 678910})), Text(Encode(MigrateReport{}))},
      {Text(Encode(AdminRequest{AdminOp::kDrain, NodeId(7), "tcp://127.0.0.1:9", ""})),
       Text(Encode(AdminRequest{AdminOp::kStatus, NodeId(), "", ""})),
       Text(Encode(AdminRequest{AdminOp::kStatusJson, NodeId(), "tcp://127.0.0.1:9", ""})),
       Text(Encode(AdminRequest{AdminOp::kCheckpoint, NodeId(), "", "/data/ckpt/ckpt-000001/server-0.psckpt"})),
       Text(Encode(AdminRequest{AdminOp::kTakeOver, NodeId(12), "", ""}))},
      {Text(Encode(std::vector<TableStats>{{TableId(1), 10, 400}, {TableId(3), 0, 0}})),
       Text(Encode(std::vector<TableStats>{}))},
      {Text(Encode(CheckpointWritten{123456, 789, 0xfedcba9876543210ULL})), Text(Encode(CheckpointWritten{}))},
  };
}

void ExpectRefused(const Codec& codec, const std::string& body, const std::string& why) {
  std::string again;
  Status s = codec.decode_and_reencode(ExactCopy(body), &again);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << codec.name << " " << why << ": " << s;
  EXPECT_EQ(s.message(), std::string("malformed ") + codec.name + " body") << why;
}

TEST(ControlMessagesTest, RefusesEveryTruncation) {
  const std::vector<Codec> codecs = AllCodecs();
  const std::vector<std::vector<std::string>> bodies = ValidBodies();
  for (size_t c = 0; c < codecs.size(); ++c) {
    for (const std::string& body : bodies[c]) {
      for (size_t len = 0; len < body.size(); ++len) {
        ExpectRefused(codecs[c], body.substr(0, len), "truncated to " + std::to_string(len));
      }
    }
  }
}

TEST(ControlMessagesTest, RefusesTrailingBytes) {
  const std::vector<Codec> codecs = AllCodecs();
  const std::vector<std::vector<std::string>> bodies = ValidBodies();
  for (size_t c = 0; c < codecs.size(); ++c) {
    for (const std::string& body : bodies[c]) {
      ExpectRefused(codecs[c], body + '\0', "one trailing byte");
      ExpectRefused(codecs[c], body + body, "doubled");
    }
  }
}

TEST(ControlMessagesTest, RefusesOutOfRangeValues) {
  const std::vector<Codec> codecs = AllCodecs();
  auto body = [](auto fill) {
    base::WireWriter w;
    fill(w);
    return w.Take();
  };
  // register: the scheduler does not register, role 3 does not exist, an address and a
  // scheduler identity are required.
  auto reg = [&](uint8_t role, const char* address, uint64_t id_hi, uint64_t id_lo) {
    return body([&](auto& w) {
      w.U8(role);
      w.Str(address);
      w.I64(-1);
      w.U64(id_hi);
      w.U64(id_lo);
    });
  };
  ExpectRefused(codecs[0], reg(0, "tcp://h:1", 1, 1), "scheduler role");
  ExpectRefused(codecs[0], reg(3, "tcp://h:1", 1, 1), "role 3");
  ExpectRefused(codecs[0], reg(2, "", 1, 1), "empty address");
  ExpectRefused(codecs[0], reg(2, "tcp://h:1", 0, 0), "anonymous scheduler identity");
  // register-reply: the node count must match the view, and stay under the limit.
  auto reply = [&](uint32_t servers, uint32_t workers, uint32_t count, uint8_t role) {
    return body([&](auto& w) {
      w.U32(1);
      w.U64(1);
      w.U32(servers);
      w.U32(workers);
      w.U32(8);
      w.U32(count);
      for (uint32_t i = 0; i < std::min<uint32_t>(count, 2); ++i) {
        w.U32(i);
        w.U8(role);
        w.U32(i);
        w.Str("a");
        w.U64(1);
        w.U64(1);
      }
    });
  };
  ExpectRefused(codecs[1], reply(1, 1, 1, 1), "count below the view");
  ExpectRefused(codecs[1], reply(1, 0, 2, 1), "count above the view");
  ExpectRefused(codecs[1], reply(1u << 16, 1, (1u << 16) + 1, 1), "count over the limit");
  ExpectRefused(codecs[1], reply(0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFEu, 1), "count that only matches by overflow");
  ExpectRefused(codecs[1], reply(1, 1, 2, 3), "node role 3");
  ExpectRefused(codecs[1], reply(20000, 20000, 40000, 1), "count far beyond the bytes present");
  // cluster-view: ids and server ranks unique; the ring non-empty (with servers), its segments
  // beginning at 0 and ascending, owned by servers of the view, neighbours by different ones.
  auto view = [&](std::vector<std::pair<uint32_t, uint8_t>> nodes,
                  std::vector<std::pair<uint64_t, uint32_t>> ring, uint32_t replicas = 1, uint8_t resync = 0) {
    return body([&](auto& w) {
      uint32_t servers = 0;
      for (auto [rank, role] : nodes) servers += role == 1;
      w.U64(2);
      w.U32(servers);
      w.U32(static_cast<uint32_t>(nodes.size()) - servers);
      w.U32(static_cast<uint32_t>(nodes.size()));
      uint32_t id = 1;
      for (auto [rank, role] : nodes) {
        w.U32(id++);
        w.U8(role);
        w.U32(rank);
        w.Str("a");
        w.U64(1);
        w.U64(1);
      }
      w.U32(static_cast<uint32_t>(ring.size()));
      for (auto [first, server] : ring) {
        w.U64(first);
        w.U32(server);
      }
      w.U32(replicas);
      w.U8(resync);
    });
  };
  const std::vector<std::pair<uint32_t, uint8_t>> nodes = {{0, 1}, {4, 1}, {0, 2}};
  std::string ok_view = view(nodes, {{0, 4}, {100, 0}, {200, 4}});
  std::string again;
  EXPECT_TRUE(codecs[4].decode_and_reencode(ExactCopy(ok_view), &again).ok());
  EXPECT_TRUE(codecs[4].decode_and_reencode(ExactCopy(view(nodes, {{0, 0}})), &again).ok()) << "server 4 owns nothing";
  ExpectRefused(codecs[4], view(nodes, {}), "no server on the ring");
  EXPECT_TRUE(codecs[4].decode_and_reencode(ExactCopy(view(nodes, {{0, 0}}, kMaxReplicas)), &again).ok());
  ExpectRefused(codecs[4], view(nodes, {{0, 0}}, 0), "replicas 0");
  ExpectRefused(codecs[4], view(nodes, {{0, 0}}, kMaxReplicas + 1), "more replicas than allowed");
  EXPECT_TRUE(codecs[4].decode_and_reencode(ExactCopy(view(nodes, {{0, 0}}, 2, 1)), &again).ok()) << "resync 1";
  ExpectRefused(codecs[4], view(nodes, {{0, 0}}, 2, 2), "resync 2");
  ExpectRefused(codecs[4], view(nodes, {{1, 4}}), "a ring that does not begin at 0");
  ExpectRefused(codecs[4], view(nodes, {{0, 4}, {200, 0}, {100, 4}}), "segments out of order");
  ExpectRefused(codecs[4], view(nodes, {{0, 4}, {0, 0}}), "two segments beginning at 0");
  ExpectRefused(codecs[4], view(nodes, {{0, 4}, {100, 4}}), "neighbours of one owner");
  ExpectRefused(codecs[4], view(nodes, {{0, 3}}), "a ring owner that is no server");
  ExpectRefused(codecs[4], view({{0, 1}, {0, 1}, {0, 2}}, {{0, 0}}), "a server rank twice");
  // declare-table: a name of 1..128 bytes, a summary of at most 1 KiB, a spec of at most 1 MiB.
  auto declaration = [&](const std::string& name, const std::string& summary, const std::string& spec) {
    return body([&](auto& w) {
      w.Str(name);
      w.Str(summary);
      w.Str(spec);
    });
  };
  EXPECT_TRUE(codecs[2].decode_and_reencode(ExactCopy(declaration("t", std::string(1024, 's'), std::string(1 << 20, 'b'))),
                                            &again)
                  .ok());
  ExpectRefused(codecs[2], declaration("", "s", "b"), "an empty name");
  ExpectRefused(codecs[2], declaration(std::string(129, 'n'), "s", "b"), "a 129-byte name");
  ExpectRefused(codecs[2], declaration("t", std::string(1025, 's'), "b"), "a 1025-byte summary");
  ExpectRefused(codecs[2], declaration("t", "s", std::string((1 << 20) + 1, 'b')), "a spec over 1 MiB");
  // node-failed: role 3 does not exist.
  ExpectRefused(codecs[3], body([](auto& w) { w.U32(1); w.U8(3); w.U32(0); w.Str("x"); }), "role 3");
  // An invalid role byte that ends the body: the decoder must not stop early and take the
  // fields it did not read as defaults (regression: ReadRole failed without failing the reader).
  ExpectRefused(codecs[3], body([](auto& w) { w.U32(1); w.U8(7); }), "node-failed ending at a bad role");
  ExpectRefused(codecs[0], body([](auto& w) { w.U8(7); }), "register ending at a bad role");
  ExpectRefused(codecs[1], body([](auto& w) {
                  w.U32(1);
                  w.U64(1);
                  w.U32(1);
                  w.U32(0);
                  w.U32(8);
                  w.U32(1);
                  w.U32(1);
                  w.U8(0xE0);
                }),
                "register-reply ending at a bad role");
  // A string length far beyond the body.
  ExpectRefused(codecs[3], body([](auto& w) { w.U32(1); w.U8(1); w.U32(0); w.U32(0xFFFFFFFFu); }), "huge string");
}

// ---------------------------------------------------------------------------------------------
// Random mutations

std::string MutateBody(std::mt19937_64& rng, std::string s) {
  const int mutations = 1 + static_cast<int>(rng() % 3);
  for (int m = 0; m < mutations; ++m) {
    switch (rng() % 7) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1:  // set a byte
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 2:  // insert a byte
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(rng() % (s.size() + 1)), static_cast<char>(rng()));
        break;
      case 3:  // delete a byte
        if (!s.empty()) s.erase(rng() % s.size(), 1);
        break;
      case 4:  // truncate
        s.resize(rng() % (s.size() + 1));
        break;
      case 5:  // append junk
        for (int i = static_cast<int>(rng() % 8); i >= 0; --i) s.push_back(static_cast<char>(rng()));
        break;
      default: {  // overwrite four bytes (a length or count) with a small or huge number
        if (s.size() < 4) break;
        size_t at = rng() % (s.size() - 3);
        uint32_t v = rng() % 2 ? static_cast<uint32_t>(rng() % 8) : static_cast<uint32_t>(rng());
        for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>(v >> (8 * i));
      }
    }
  }
  return s;
}

TEST(ControlMessagesTest, RoundTripsMembershipBodies) {
  const MigrateOrder order{{MigrateTarget{NodeId(4), {KeyRange{0, 9}, KeyRange{20, 30}}}}};
  Result<MigrateOrder> o = DecodeMigrateOrder(Encode(order));
  ASSERT_OK(o);
  EXPECT_EQ(*o, order);
  Result<MigrateReport> r = DecodeMigrateReport(Encode(MigrateReport{5, 6}));
  ASSERT_OK(r);
  EXPECT_EQ(*r, (MigrateReport{5, 6}));
  const AdminRequest admin{AdminOp::kDrain, NodeId(7), "tcp://h:1", ""};
  Result<AdminRequest> a = DecodeAdminRequest(Encode(admin));
  ASSERT_OK(a);
  EXPECT_EQ(*a, admin);
  const AdminRequest checkpoint{AdminOp::kCheckpoint, NodeId(), "tcp://h:1", "/tmp/ckpt"};
  Result<AdminRequest> c = DecodeAdminRequest(Encode(checkpoint));
  ASSERT_OK(c);
  EXPECT_EQ(*c, checkpoint);
  Result<CheckpointWritten> w = DecodeCheckpointWritten(Encode(CheckpointWritten{1, 2, 3}));
  ASSERT_OK(w);
  EXPECT_EQ(*w, (CheckpointWritten{1, 2, 3}));
  const std::vector<TableStats> stats = {{TableId(2), 7, 8}};
  Result<std::vector<TableStats>> t = DecodeTableStats(Encode(stats));
  ASSERT_OK(t);
  EXPECT_EQ(*t, stats);
  // A target without ranges, ranges out of order or overlapping, an inverted range, an unknown op.
  const std::vector<Codec> codecs = AllCodecs();
  ExpectRefused(codecs[5], Text(Encode(MigrateOrder{{MigrateTarget{NodeId(1), {}}}})), "a target without ranges");
  ExpectRefused(codecs[5], Text(Encode(MigrateOrder{{MigrateTarget{NodeId(1), {KeyRange{5, 9}, KeyRange{9, 12}}}}})),
                "overlapping ranges");
  ExpectRefused(codecs[5], Text(Encode(MigrateOrder{{MigrateTarget{NodeId(1), {KeyRange{9, 5}}}}})), "first > last");
  std::string bad_op = Text(Encode(admin));
  bad_op[0] = 6;
  ExpectRefused(codecs[7], bad_op, "op 6");
}

TEST(ControlMessagesTest, RandomMutationsNeverCrashAndDecodeOrRefuse) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  const std::vector<Codec> codecs = AllCodecs();
  const std::vector<std::vector<std::string>> bodies = ValidBodies();
  for (size_t c = 0; c < codecs.size(); ++c) {
    int decoded = 0, refused = 0;
    for (int i = 0; i < 25000; ++i) {
      const std::vector<std::string>& valid = bodies[c];
      const std::string body = MutateBody(rng, valid[rng() % valid.size()]);
      std::string again;
      Status s = codecs[c].decode_and_reencode(ExactCopy(body), &again);
      if (!s.ok()) {
        ++refused;
        ASSERT_EQ(s.code(), StatusCode::kCorruption) << codecs[c].name << " iteration " << i << ": " << s;
        continue;
      }
      ++decoded;
      // The encoding is canonical: what decodes re-encodes to exactly the bytes received.
      ASSERT_EQ(again, body) << codecs[c].name << " iteration " << i;
    }
    std::printf("[ mutated  ] %s: %d decoded, %d refused\n", codecs[c].name, decoded, refused);
    EXPECT_GT(refused, 0);
  }
}

TEST(ControlMessagesTest, NodeNameSaysRoleRankAndId) {
  EXPECT_EQ(NodeName(Role::kScheduler, Rank(0), NodeId(0)), "the scheduler (node 0)");
  EXPECT_EQ(NodeName(Role::kServer, Rank(1), NodeId(2)), "server 1 (node 2)");
  EXPECT_EQ(NodeName(Role::kWorker, Rank(0), NodeId(5)), "worker 0 (node 5)");
}

}  // namespace
}  // namespace pserver::cluster
