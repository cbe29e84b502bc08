// Writes the seed corpus of message_fuzz (fuzz/corpus/message_fuzz) with this build's codec, so
// that every seed is exactly what a pserver node sends today: one message of each control type
// (with a well-formed body where the type has one: kViewChange carries a ClusterView), data
// requests and replies (a push with inline and one with out-of-line frames, a variable-length
// push, a stale-synchronous pull, a clock tick, a pull reply, an error reply, a redirect and
// the resend that follows it), and a bare header.
//
//   message_corpus DIR           writes the seeds into DIR (other files there are left alone)
//   message_corpus --check DIR   exits 1, naming them, when DIR lacks a seed or holds one with
//                                other bytes (ctest runs this over the checked-in corpus)
//
// A seed is message_fuzz's input form (see its header comment): a mode byte, then the
// message's wire frames, each a 2-byte little-endian length and its bytes. The mode byte is 3
// (repair magic, version and reserved bytes, so that mutations of them still reach the deeper
// checks), which leaves these seeds as they are; raw_header_only has mode 0.
//
// Rerun it (and commit the result) whenever the wire format or a control body changes:
//   build/fuzz/message_corpus fuzz/corpus/message_fuzz
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cluster/control_messages.h"
#include "kv/filter/filter.h"
#include "kv/table_catalog.h"
#include "transport/message.h"

namespace {

namespace cluster = pserver::cluster;
namespace kv = pserver::kv;
namespace transport = pserver::transport;
using pserver::Epoch;
using pserver::NodeId;
using pserver::Rank;
using pserver::Role;
using pserver::StatusCode;
using pserver::TableId;
using pserver::TableSpec;
using pserver::ValueType;
using transport::Bytes;
using transport::Message;
using transport::MessageType;

constexpr NodeId kScheduler(0);
constexpr NodeId kServer0(1);  // server rank 0
constexpr NodeId kServer2(2);  // server rank 2 (ranks are stable names, not dense indices)
constexpr NodeId kWorker0(3);
constexpr NodeId kWorker1(4);
constexpr TableId kTable(1);

template <typename T>
Bytes ArrayOf(const std::vector<T>& v) {
  return Bytes::CopyOf(std::as_bytes(std::span<const T>(v)));
}

cluster::ClusterView View(uint64_t epoch, std::vector<uint32_t> ring) {
  cluster::ClusterView v;
  v.epoch = Epoch(epoch);
  v.num_servers = 2;
  v.num_workers = 2;
  v.nodes = {
      {kServer0, Role::kServer, Rank(0), "tcp://10.0.0.1:7001", {0x1111, 0x1001}},
      {kServer2, Role::kServer, Rank(2), "tcp://10.0.0.2:7002", {0x2222, 0x2002}},
      {kWorker0, Role::kWorker, Rank(0), "tcp://10.0.0.3:7003", {0x3333, 0x3003}},
      {kWorker1, Role::kWorker, Rank(1), "tcp://10.0.0.4:7004", {0x4444, 0x4004}},
  };
  // Server ring[i] owns the i-th of ring.size() equal parts of the routing-key space.
  for (size_t i = 0; i < ring.size(); ++i) {
    const uint64_t first = i == 0 ? 0 : (~uint64_t{0} / ring.size()) * i;
    v.ring.push_back(cluster::RingSegment{pserver::KeyRange{first, 0}, ring[i]});
  }
  return v;
}

pserver::TableSpec Spec() {
  pserver::TableSpec s;
  s.name = "weights";
  s.width = 1;
  s.updater.name = "sgd";
  s.updater.params = {{"learning_rate", 0.1}};
  s.initializer.kind = pserver::InitializerSpec::Kind::kUniform;
  s.initializer.scale = 0.01;
  s.initializer.seed = 7;
  return s;
}

Message Control(MessageType type, NodeId from, NodeId to) {
  Message m;
  m.header.type = type;
  m.header.sender = from;
  m.header.receiver = to;
  return m;
}

// A data message of table kTable (float32), part `part` of request `request_id`.
Message Data(MessageType type, uint8_t flags, NodeId from, NodeId to, uint64_t epoch, int64_t request_id,
             uint32_t seq, uint32_t part) {
  Message m;
  m.header.type = type;
  m.header.flags = flags;
  m.header.sender = from;
  m.header.receiver = to;
  m.header.table = kTable;
  m.header.value_type = ValueType::kFloat32;
  m.header.width = 1;
  m.header.request_id = request_id;
  m.header.epoch = Epoch(epoch);
  m.header.seq = seq;
  m.header.part = part;
  return m;
}

struct Seed {
  std::string name;
  uint8_t mode;
  Message msg;
};

std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  auto add = [&](std::string name, Message m, uint8_t mode = 3) { seeds.push_back({std::move(name), mode, std::move(m)}); };

  add("raw_header_only", Control(MessageType::kHeartbeat, kWorker0, kScheduler), 0);

  Message m = Control(MessageType::kRegister, NodeId(0), kScheduler);
  m.frames.push_back(cluster::Encode(cluster::RegisterRequest{Role::kWorker, "tcp://10.0.0.3:7003", -1, {0x5555, 0x5005}}));
  add("control_1", std::move(m));
  m = Control(MessageType::kRegisterReply, kScheduler, kWorker0);
  m.header.epoch = Epoch(1);
  m.frames.push_back(cluster::Encode(cluster::RegisterReply{kWorker0, View(1, {0, 2})}));
  add("control_2", std::move(m));
  m = Control(MessageType::kBarrier, kWorker0, kScheduler);
  m.header.aux = 2;  // the workers' barrier
  m.header.request_id = 5;
  add("control_3", std::move(m));
  m = Control(MessageType::kBarrierRelease, kScheduler, kWorker0);
  m.header.aux = 2;
  m.header.request_id = 5;
  add("control_4", std::move(m));
  add("control_5", Control(MessageType::kHeartbeat, kServer0, kScheduler));
  add("control_6", Control(MessageType::kHeartbeatAck, kScheduler, kServer0));
  m = Control(MessageType::kDeclareTable, kWorker0, kScheduler);
  m.header.request_id = 6;
  m.frames.push_back(cluster::Encode(cluster::TableDeclaration{Spec().name, kv::SummarizeTableSpec(Spec()),
                                                               kv::EncodeTableSpec(Spec())}));
  add("control_7", std::move(m));
  m = Control(MessageType::kDeclareTableReply, kScheduler, kWorker0);
  m.header.flags = transport::kFlagReply;
  m.header.table = kTable;
  m.header.request_id = 6;
  add("control_8", std::move(m));
  add("control_9", Control(MessageType::kFinalize, kWorker0, kScheduler));
  add("control_10", Control(MessageType::kShutdown, kScheduler, kWorker0));
  m = Control(MessageType::kNodeFailed, kScheduler, kServer0);
  m.frames.push_back(cluster::Encode(cluster::NodeFailure{kWorker1, Role::kWorker, Rank(1), "no heartbeat for 5012 ms"}));
  add("control_11", std::move(m));
  m = Control(MessageType::kTableAnnounce, kScheduler, kServer0);
  m.header.table = kTable;
  m.header.request_id = 1;
  m.frames.push_back(kv::EncodeTableSpec(Spec()));
  add("control_12", std::move(m));
  m = Control(MessageType::kTableAnnounceReply, kServer0, kScheduler);
  m.header.flags = transport::kFlagReply;
  m.header.table = kTable;
  m.header.request_id = 1;
  add("control_13", std::move(m));
  m = Control(MessageType::kViewChange, kScheduler, kWorker0);  // a view of epoch 3
  m.header.epoch = Epoch(3);
  m.frames.push_back(cluster::Encode(View(3, {2, 0})));
  add("control_14", std::move(m));
  m = Control(MessageType::kViewChangeReply, kWorker0, kScheduler);
  m.header.flags = transport::kFlagReply;
  m.header.epoch = Epoch(3);
  add("control_15", std::move(m));
  m = Control(MessageType::kShutdown, kScheduler, kWorker0);
  m.header.flags = transport::kFlagError;
  m.header.status = static_cast<uint8_t>(StatusCode::kAborted);
  m.frames.push_back(transport::BytesFromString("the job was aborted"));
  add("shutdown_error", std::move(m));

  m = Data(MessageType::kClock, 0, kWorker0, kServer0, 3, 0, 4, 0);
  m.header.table = TableId(0);
  m.header.width = 0;
  m.header.clock = 7;
  add("clock", std::move(m));
  m = Data(MessageType::kPush, 0, kWorker0, kServer0, 3, 41, 1, 0);
  m.header.clock = 7;
  m.frames = {ArrayOf<uint64_t>({1, 2, 3}), ArrayOf<float>({1, 2, 3}), Bytes()};
  add("push_three_frames", std::move(m));
  m = Data(MessageType::kPush, 0, kWorker0, kServer0, 3, 43, 3, 0);
  m.header.width = 1100;  // 8800 bytes of values: more than kInlineLimit, so out of line
  m.frames = {ArrayOf<uint64_t>({10, 11}), ArrayOf<float>(std::vector<float>(2 * 1100, 0.5f)), Bytes()};
  add("push_out_of_line", std::move(m));
  m = Data(MessageType::kPush, 0, kWorker1, kServer2, 3, 44, 1, 1);
  m.header.width = 0;  // variable length: the lengths frame says how many values each key has
  m.frames = {ArrayOf<uint64_t>({4, 8}), ArrayOf<float>({1, 2, 3}), ArrayOf<int32_t>({1, 2})};
  add("push_variable_length", std::move(m));
  m = Data(MessageType::kPull, 0, kWorker1, kServer0, 3, 45, 2, 0);
  m.header.clock = 7;
  m.header.aux = 3;  // staleness 2
  m.frames = {ArrayOf<uint64_t>({5, 9}), Bytes(), Bytes()};
  add("pull_stale", std::move(m));
  m = Data(MessageType::kPull, transport::kFlagReply, kServer0, kWorker1, 3, 45, 0, 1);
  m.frames = {Bytes(), ArrayOf<float>({1, 2}), Bytes(), ArrayOf<int64_t>({5, 9})};
  add("pull_reply", std::move(m));
  m = Data(MessageType::kPush, transport::kFlagReply | transport::kFlagError, kServer0, kWorker0, 4, 46, 0, 0);
  m.header.status = static_cast<uint8_t>(StatusCode::kUnavailable);
  m.frames.push_back(transport::BytesFromString(
      "routed with the view of epoch 4, but server 0 (node 1) learned no view newer than epoch 3 within 60000 ms"));
  add("data_error_reply", std::move(m));
  // Server 0 no longer owns the keys of part 1 of push 42 (routed with epoch 3): it redirects
  // with its view of epoch 4, and the worker resends them, re-sliced, as part 2 to server 2.
  m = Data(MessageType::kPush, transport::kFlagReply | transport::kFlagRedirect, kServer0, kWorker0, 4, 42, 0, 1);
  m.frames.push_back(cluster::Encode(View(4, {2})));
  add("redirect_reply", std::move(m));
  m = Data(MessageType::kPush, transport::kFlagResend, kWorker0, kServer2, 4, 42, 9, 2);
  m.header.clock = 7;
  m.frames = {ArrayOf<uint64_t>({6, 7}), ArrayOf<float>({0.25f, 0.75f}), Bytes()};
  add("resend_request", std::move(m));
  // Server 0 died before answering push 43: the worker sends it again to server 2, the next
  // server of the chain, naming server 0 as its origin.
  m = Data(MessageType::kPush, transport::kFlagResend | transport::kFlagFailover, kWorker0, kServer2, 5, 43, 10, 3);
  m.header.origin = kServer0;
  m.frames = {ArrayOf<uint64_t>({3, 8}), ArrayOf<float>({1.5f, -2}), Bytes()};
  add("failover_request", std::move(m));
  // Server 0 sends its replica, server 2, rows (width 1, one state value per value) and pushes:
  // records of 40 bytes (origin, worker, timestamp, clock, epoch, keys), then their keys and values.
  m = Data(MessageType::kReplicate, 0, kServer0, kServer2, 4, 7, 0, 0);
  m.header.aux = 1;
  m.header.clock = 1;  // the epoch of its rows
  // Rows {3, 8}; then two pushes: (worker 0, 42, clock 0, epoch 1) with keys {5, 9}, and a record
  // only (worker 1, 17).
  m.frames = {ArrayOf<uint64_t>({3, 8}),
              ArrayOf<float>({0.5f, 1}),
              Bytes(),
              ArrayOf<float>({2, 3}),
              ArrayOf<uint32_t>({kServer0.value, kWorker0.value, 42, 0, 0, 0, 1, 0, 2, 0,  //
                                 kServer0.value, kWorker1.value, 17, 0, 0, 0, 1, 0, 0, 0}),
              ArrayOf<uint64_t>({5, 9}),
              ArrayOf<float>({1, 2}),
              Bytes()};
  add("replicate", std::move(m));
  m = Data(MessageType::kReplicate, transport::kFlagReply, kServer2, kServer0, 4, 7, 0, 0);
  add("replicate_reply", std::move(m));

  // Filtered data messages (docs/wire_format.md, section 5.3), made by the filters themselves:
  // a push of sorted keys compressed by zstd, the same push as a key-cache reference, and a pull
  // reply compressed by lz4; values rounded by q8 and fp16. message_fuzz undoes them with the
  // same chains.
  TableSpec spec;
  spec.name = "fuzz";
  spec.filters = {{"keycache", {}}, {"zstd", {{"min_bytes", 0}}}};
  const kv::FilterChain worker = *kv::MakeFilterChain(spec);
  std::vector<uint64_t> keys(64);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = 1000 + 3 * i;
  for (const char* name : {"push_zstd", "push_keycache_reference"}) {
    m = Data(MessageType::kPush, 0, kWorker0, kServer0, 3, 47, 5, 0);
    m.frames = {ArrayOf<uint64_t>(keys), ArrayOf<float>(std::vector<float>(keys.size(), 0.25f)), Bytes()};
    if (!worker.Encode(m).ok()) return {};
    add(name, std::move(m));
  }
  spec.filters = {{"lz4", {{"min_bytes", 0}}}};
  m = Data(MessageType::kPull, transport::kFlagReply, kServer0, kWorker1, 3, 48, 0, 0);
  m.frames = {Bytes(), ArrayOf<float>(std::vector<float>(200, 1.5f)), Bytes(), ArrayOf<int64_t>({5, 9})};
  if (!kv::MakeFilterChain(spec)->Encode(m).ok()) return {};
  add("pull_reply_lz4", std::move(m));
  // Rounded values (quantize_filter.h): a push rounded to 8 bits then compressed, and a pull
  // reply in halves.
  spec.filters = {{"q8", {}}, {"zstd", {{"min_bytes", 0}}}};
  m = Data(MessageType::kPush, 0, kWorker0, kServer0, 3, 49, 6, 0);
  m.frames = {ArrayOf<uint64_t>(keys), ArrayOf<float>(std::vector<float>(keys.size(), -0.5f)), Bytes()};
  if (!kv::MakeFilterChain(spec)->Encode(m).ok() || !(m.header.flags & transport::kFlagFiltered)) return {};
  add("push_q8_zstd", std::move(m));
  spec.filters = {{"fp16", {}}};
  m = Data(MessageType::kPull, transport::kFlagReply, kServer0, kWorker1, 3, 50, 0, 0);
  m.frames = {Bytes(), ArrayOf<float>({0.5f, -3.0f, 1024.0f, 0.0f, 1.5f, -0.25f, 7.0f, 3.0f, 0.125f, 2.0f, -64.0f, 9.0f}),
              Bytes(), ArrayOf<int64_t>({5, 9})};
  if (!kv::MakeFilterChain(spec)->Encode(m).ok() || !(m.header.flags & transport::kFlagFiltered)) return {};
  add("pull_reply_fp16", std::move(m));
  // A pull reply that left rows out (significant_filter.h): its copy frame, made by the
  // server's filter (the second reply to the worker: rows 1 and 3 of 12 changed).
  spec.filters = {{"sigmod", {{"push", 0}, {"pull", 1}}}};
  const kv::FilterChain server = *kv::MakeFilterChain(spec);
  std::vector<float> rows(12, 0.5f);
  for (float changed : {0.5f, 2.0f}) {
    rows[1] = rows[3] = changed;
    kv::Rounding r{.reply = true,
                   .peer = kWorker1,
                   .may_drop = true,
                   .no_copy = false,
                   .value_type = ValueType::kFloat32,
                   .columns = 1,
                   .keys = pserver::SharedArray<uint64_t>(std::vector<uint64_t>(keys.begin(), keys.begin() + 12)),
                   .vals = ArrayOf<float>(rows),
                   .copy_frame = {}};
    if (!server.Round(r).ok() || r.copy_frame.empty()) return {};
    // The generation (the first 8 bytes) comes from the clock; a seed must not change.
    std::vector<std::byte> copy(r.copy_frame.begin(), r.copy_frame.end());
    std::fill(copy.begin(), copy.begin() + 8, std::byte{0});
    copy[0] = std::byte{1};
    m = Data(MessageType::kPull, transport::kFlagReply, kServer0, kWorker1, 3, 51, 0, 0);
    m.frames = {Bytes::CopyOf(copy), r.vals, Bytes(), ArrayOf<int64_t>({5, 9})};
  }
  add("pull_reply_sigmod", std::move(m));
  return seeds;
}

// The seed's bytes; empty (after saying why) when the codec does not take back what it wrote.
std::string Render(Seed& seed) {
  seed.msg.header.num_frames = static_cast<uint16_t>(seed.msg.frames.size());
  const transport::Frames wire = transport::EncodeWire(transport::WireMessage(seed.msg));
  std::string out(1, static_cast<char>(seed.mode));
  for (const Bytes& f : wire) {
    if (f.size() > 0xFFFF) {
      std::fprintf(stderr, "message_corpus: %s: a wire frame of %zu bytes does not fit the input form\n",
                   seed.name.c_str(), f.size());
      return {};
    }
    out.push_back(static_cast<char>(f.size() & 0xFF));
    out.push_back(static_cast<char>(f.size() >> 8));
    out.append(reinterpret_cast<const char*>(f.data()), f.size());
  }
  auto decoded = transport::DecodeWire(wire);
  pserver::Status body;  // a body a node would refuse would make a poor seed
  if (decoded.ok() && !decoded->frames.empty()) {
    const Bytes& f = decoded->frames[0];
    switch (decoded->header.type) {
      case MessageType::kRegister: body = cluster::DecodeRegisterRequest(f).status(); break;
      case MessageType::kRegisterReply: body = cluster::DecodeRegisterReply(f).status(); break;
      case MessageType::kDeclareTable: {
        auto declaration = cluster::DecodeTableDeclaration(f);
        auto spec = declaration.ok() ? kv::DecodeTableSpec(declaration->spec) : declaration.status();
        body = spec.ok() ? kv::ValidateTableSpec(*spec) : spec.status();
        break;
      }
      case MessageType::kTableAnnounce: {
        auto spec = kv::DecodeTableSpec(f);
        body = spec.ok() ? kv::ValidateTableSpec(*spec) : spec.status();
        break;
      }
      case MessageType::kNodeFailed: body = cluster::DecodeNodeFailure(f).status(); break;
      case MessageType::kViewChange: body = cluster::DecodeClusterView(f).status(); break;
      default:
        if (decoded->header.is_redirect()) body = cluster::DecodeClusterView(f).status();
    }
  }
  if (!decoded.ok() || !body.ok()) {
    std::fprintf(stderr, "message_corpus: %s does not decode: %s\n", seed.name.c_str(),
                 (decoded.ok() ? body : decoded.status()).ToString().c_str());
    return {};
  }
  return out;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  const bool check = argc == 3 && std::strcmp(argv[1], "--check") == 0;
  if (argc != 2 && !check) {
    std::fprintf(stderr, "usage: %s [--check] DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[argc - 1];
  int failed = 0;
  for (Seed& seed : Seeds()) {
    const std::string bytes = Render(seed);
    if (bytes.empty()) return 1;
    const std::filesystem::path path = dir / seed.name;
    if (check) {
      if (!std::filesystem::exists(path) || ReadFile(path) != bytes) {
        std::fprintf(stderr, "message_corpus: %s is missing or differs from what this build's codec writes\n",
                     path.c_str());
        ++failed;
      }
      continue;
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::fprintf(stderr, "message_corpus: cannot write %s\n", path.c_str());
      return 1;
    }
  }
  if (failed > 0) {
    std::fprintf(stderr, "message_corpus: %d seed(s) are stale; regenerate them: %s %s\n", failed, argv[0],
                 dir.c_str());
    return 1;
  }
  return 0;
}
