// Chain replication (docs/durability.md, section 3) seen from the rows: replicas apply the pushes
// their owner forwards, in the owner's order and with the pusher's context -- or, for a round of
// many pushes of few keys, store the owner's rows -- so every row is the same, bit for bit, on
// every server of its chain: for update rules with state (adagrad), with per-iteration sums
// (prox, whose pushes carry the worker's clock), variable length and dense storage. A replica
// refuses a malformed message whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "cluster/routing.h"
#include "cluster/scheduler.h"
#include "kv/local_cluster.h"
#include "kv/node_access.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "cluster/cluster_test_util.h"
#include "testing/intercepting_transport.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;

// A row as a server lists it: values and rule state, as bytes.
struct Row {
  std::vector<std::byte> value, state;
  friend bool operator==(const Row&, const Row&) = default;
};

// Every row of `table` on `core`, by key.
std::map<Key, Row> RowsOf(KVServerCore& core, TableId table) {
  Result<RowBatch> rows = core.ListRows(table, {});
  EXPECT_OK(rows);
  std::map<Key, Row> out;
  if (!rows.ok()) return out;
  const size_t elem = ValueTypeSize(rows->value_type);
  size_t at = 0;
  for (size_t i = 0; i < rows->size(); ++i) {
    const size_t n = rows->width == 0 ? static_cast<size_t>(rows->lens[i]) : rows->width;
    const std::byte* v = rows->values.data() + at * elem;
    const std::byte* s = rows->states.data() + at * elem * rows->state_per_value;
    out[rows->keys[i]] = Row{{v, v + n * elem}, {s, s + n * elem * rows->state_per_value}};
    at += n;
  }
  return out;
}

// An inproc cluster whose servers serve doubles, with each server's core (to list its rows).
struct Cluster {
  std::unique_ptr<LocalCluster> local;
  std::vector<std::shared_ptr<KVServerCore>> cores;
};
Result<Cluster> StartCluster(uint32_t servers, uint32_t workers, uint32_t replicas) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = servers;
  o.num_workers = workers;
  o.node = pserver::testing::FastHeartbeats();
  o.node.replicas = replicas;
  auto cores = std::make_shared<std::vector<std::shared_ptr<KVServerCore>>>();
  auto mu = std::make_shared<std::mutex>();
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> local,
                           LocalCluster::Start(o, [cores, mu](Node& n) -> std::shared_ptr<void> {
                             auto server = std::make_shared<KVServer<double>>(n);
                             std::lock_guard lock(*mu);
                             cores->push_back(std::static_pointer_cast<KVServerCore>(
                                 internal::NodeAccess::Runtime(n)->AttachDataHandler([] { return nullptr; })));
                             return server;
                           }));
  return Cluster{std::move(local), std::move(*cores)};
}

// The rows of `table` on every core (held[s]: server s's rows by key), and the servers holding
// each key.
struct Holdings {
  std::vector<std::map<Key, Row>> held;
  std::map<Key, std::vector<size_t>> holders;
};
Holdings HoldingsOf(const std::vector<std::shared_ptr<KVServerCore>>& cores, TableId table) {
  Holdings h;
  for (const auto& core : cores) h.held.push_back(RowsOf(*core, table));
  for (size_t s = 0; s < h.held.size(); ++s) {
    for (const auto& [key, row] : h.held[s]) h.holders[key].push_back(s);
  }
  return h;
}

struct Case {
  std::string name;
  TableSpec spec;
  uint32_t servers;
  bool hot = false;  // every push of every worker to the same 64 keys: rounds go as rows
  uint32_t replicas = 2;  // 3: every round goes as rows
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ReplicationTest : public ::testing::TestWithParam<Case> {};

// Workers push seeded random rows with many requests in flight and clocks advancing; once
// every push is acknowledged each key's row is held by exactly the servers of
// its chain, all bit-identical.
TEST_P(ReplicationTest, EveryServerOfAChainHoldsTheSameRowsBitForBit) {
  const Case& c = GetParam();
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  constexpr uint32_t kWorkers = 2;
  const uint32_t kReplicas = c.replicas;
  constexpr int kRounds = 40;
  constexpr Key kKeys = 3000;

  Result<Cluster> cluster = StartCluster(c.servers, kWorkers, kReplicas);
  ASSERT_OK(cluster);
  std::atomic<uint32_t> table_id{0};
  const bool variable = c.spec.variable_length;
  const uint32_t width = c.spec.width;

  auto push_rounds = [&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(const TableId table, node.DeclareTable(c.spec));
    table_id = table.value;
    KVWorker<double> kv(node);
    const uint32_t w = internal::NodeAccess::Runtime(node)->rank().value;
    std::mt19937_64 rng(seed ^ (uint64_t{w} << 32));
    std::deque<Timestamp> window;
    for (int r = 0; r < kRounds; ++r) {
      // A random subset of the keys, sorted: each round touches other chains.
      std::vector<Key> keys;
      std::vector<int32_t> lens;
      std::vector<double> vals;
      for (Key k = c.hot ? 0 : rng() % 7; k < (c.hot ? 64 : kKeys); k += c.hot ? 1 : 1 + rng() % 13) {
        const Key key = c.spec.placement == KeyPlacement::kRange ? k : k * 0x9E3779B97F4A7C15ULL;
        keys.push_back(key);
        const uint32_t n = variable ? 1 + static_cast<uint32_t>(key % 3) : width;
        if (variable) lens.push_back(static_cast<int32_t>(n));
        for (uint32_t j = 0; j < n * c.spec.push_arity; ++j) {
          vals.push_back(std::uniform_real_distribution<double>(-1, 1)(rng));
        }
      }
      if (c.spec.placement != KeyPlacement::kRange) {  // sort the keys, their values with them
        std::vector<size_t> order(keys.size());
        std::vector<size_t> at(keys.size() + 1, 0);
        for (size_t i = 0; i < keys.size(); ++i) {
          order[i] = i;
          at[i + 1] = at[i] + (variable ? static_cast<size_t>(lens[i]) : width) * c.spec.push_arity;
        }
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
        std::vector<Key> sorted_keys;
        std::vector<int32_t> sorted_lens;
        std::vector<double> sorted_vals;
        for (size_t i : order) {
          sorted_keys.push_back(keys[i]);
          if (variable) sorted_lens.push_back(lens[i]);
          sorted_vals.insert(sorted_vals.end(), vals.begin() + at[i], vals.begin() + at[i + 1]);
        }
        keys = std::move(sorted_keys);
        lens = std::move(sorted_lens);
        vals = std::move(sorted_vals);
      }
      Result<Timestamp> ts = variable ? kv.Push(table, std::move(keys), std::move(vals), std::move(lens))
                                      : kv.Push(table, std::move(keys), std::move(vals));
      PSERVER_RETURN_IF_ERROR(ts.status());
      window.push_back(*ts);
      if (window.size() > 6) {
        PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
        window.pop_front();
      }
      if (r % 4 == 3) PSERVER_RETURN_IF_ERROR(kv.Clock().status());  // prox: a new iteration
    }
    for (; !window.empty(); window.pop_front()) PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
    return Status::Ok();
  };
  ASSERT_OK(cluster->local->RunWorkers([&](Node& node) {
    Status s = push_rounds(node);
    if (!s.ok()) std::printf("worker: %s\n", s.ToString().c_str());
    return s;
  }));

  // The rows of every server, and the servers that hold each key.
  const auto [held, holders] = HoldingsOf(cluster->cores, TableId(table_id.load()));
  ASSERT_FALSE(holders.empty());
  const size_t copies = std::min<size_t>(kReplicas, c.servers);
  size_t checked = 0;
  for (const auto& [key, servers] : holders) {
    if (c.spec.storage == StorageKind::kDense && servers.size() < copies) {
      // A dense owner lists every key of its ranges; a replica holds those it was sent. A key
      // nobody pushed is at its initial value (zero), which a new owner's ranges start at.
      const Row& row = held[servers[0]].at(key);
      ASSERT_TRUE(std::all_of(row.value.begin(), row.value.end(), [](std::byte b) { return b == std::byte{0}; }))
          << "key " << key << " was changed, and is on one server only";
      continue;
    }
    ASSERT_EQ(servers.size(), copies) << "key " << key << " is held by " << servers.size() << " servers";
    for (size_t i = 1; i < servers.size(); ++i) {
      ASSERT_TRUE(held[servers[i]].at(key) == held[servers[0]].at(key))
          << "key " << key << ": the row of server " << servers[i] << " differs from that of server " << servers[0];
    }
    ++checked;
  }
  std::printf("%zu keys, each on %zu servers, bit-identical\n", checked, copies);
}

// A replica refuses a malformed kReplicate whole, applying nothing of it, with an error that
// says what was wrong; a well-formed one is applied; what an old owner sent under an older view
// than the rows it holds is left out. The core under test runs on server 0 of a
// two-server cluster, detached (the test hands it messages "from" server 1, whose runtime has a
// recording handler and so sees each answer).
TEST(ReplicaTest, RefusesAMalformedReplicateWholeAndAppliesAWellFormedOne) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 2;
  o.node.replicas = 2;
  std::vector<Node*> servers;
  std::mutex mu;
  Result<std::unique_ptr<LocalCluster>> cluster = LocalCluster::Start(o, [&](Node& n) -> std::shared_ptr<void> {
    std::lock_guard lock(mu);
    servers.push_back(&n);
    return nullptr;
  });
  ASSERT_OK(cluster);
  ASSERT_EQ(servers.size(), 2u);
  cluster::NodeRuntime* target = internal::NodeAccess::Runtime(*servers[0]);
  cluster::NodeRuntime* owner = internal::NodeAccess::Runtime(*servers[1]);
  auto recorder = std::make_shared<pserver::testing::RecordingDataHandler>();
  owner->AttachDataHandler([&] { return recorder; });
  KVServerCore core(target);
  core.ServeDefault(ValueType::kFloat32, true);
  const TableId table(7);
  TableSpec spec;
  spec.name = "t";
  spec.width = 2;
  ASSERT_OK(core.OnTableDeclared(table, EncodeTableSpec(spec)));

  const uint64_t epoch = owner->routing()->epoch().value;
  // A kReplicate of two pushes (keys {1, 2} then {3}), frames as docs/wire_format.md lays them out.
  auto replicate = [&](std::vector<Key> keys, std::vector<float> vals, std::vector<uint32_t> counts, int64_t id) {
    transport::Message m;
    m.header.type = transport::MessageType::kReplicate;
    m.header.sender = owner->id();
    m.origin = owner->routing()->Find(owner->id())->identity;
    m.header.receiver = target->id();
    m.header.table = table;
    m.header.value_type = ValueType::kFloat32;
    m.header.width = 2;
    m.header.request_id = id;
    m.header.clock = epoch;
    for (int i = 0; i < 4; ++i) m.frames.emplace_back();  // no rows
    std::vector<std::byte> records(counts.size() * 40, std::byte{0});
    for (size_t i = 0; i < counts.size(); ++i) {
      const uint32_t worker = 99;
      const int64_t ts = static_cast<int64_t>(i + 1);
      std::memcpy(records.data() + i * 40 + 4, &worker, 4);
      std::memcpy(records.data() + i * 40 + 8, &ts, 8);
      std::memcpy(records.data() + i * 40 + 24, &epoch, 8);
      std::memcpy(records.data() + i * 40 + 32, &counts[i], 4);
    }
    m.frames.push_back(transport::Bytes(std::move(records)));
    m.frames.push_back(transport::AsBytes(SharedArray<Key>(std::move(keys))));
    m.frames.push_back(transport::AsBytes(SharedArray<float>(std::move(vals))));
    m.frames.emplace_back();
    return m;
  };
  auto answer = [&](transport::Message m) {
    core.OnData(std::move(m));
    std::optional<transport::Message> r = recorder->Next();
    if (!r) return Status::Internal("no answer");
    EXPECT_TRUE(r->header.is_reply());
    return r->header.is_error() ? cluster::CarriedError(*r) : Status::Ok();
  };
  auto rows = [&] {
    Result<RowBatch> b = core.ListRows(table, {});
    EXPECT_OK(b);
    return b.ok() ? b->size() : 0;
  };

  // The second push's keys are not sorted: the first, well-formed, is not applied either.
  EXPECT_TRUE(StatusIs(answer(replicate({1, 2, 5, 3}, std::vector<float>(8, 1.0f), {2, 2}, 1)),
                       StatusCode::kCorruption, "keys not sorted ascending and unique"));
  EXPECT_EQ(rows(), 0u);
  // Records naming more keys than the message carries, or fewer; values short of the keys.
  EXPECT_TRUE(StatusIs(answer(replicate({1, 2, 3}, std::vector<float>(6, 1.0f), {2, 2}, 2)),
                       StatusCode::kCorruption, "records name more than its 3 keys"));
  EXPECT_TRUE(StatusIs(answer(replicate({1, 2, 3}, std::vector<float>(6, 1.0f), {2}, 3)), StatusCode::kCorruption,
                       "1 keys and 8 value bytes its records do not name"));
  EXPECT_TRUE(StatusIs(answer(replicate({1, 2, 3}, std::vector<float>(5, 1.0f), {2, 1}, 4)),
                       StatusCode::kCorruption, "need more than its 20 value bytes"));
  // Push keys as deltas (bit 32 of aux) that are cut short; a key form this build does not know.
  transport::Message cut = replicate({1, 2, 3}, std::vector<float>(6, 1.0f), {2, 1}, 5);
  cut.header.aux |= uint64_t{1} << 32;
  cut.frames[5] = transport::Bytes(std::vector<std::byte>{std::byte{0x02}, std::byte{0x02}, std::byte{0x80}});
  EXPECT_TRUE(StatusIs(answer(std::move(cut)), StatusCode::kCorruption, "key delta 2 of 3 is cut short"));
  transport::Message unknown = replicate({1, 2, 3}, std::vector<float>(6, 1.0f), {2, 1}, 6);
  unknown.header.aux |= uint64_t{2} << 32;
  EXPECT_TRUE(StatusIs(answer(std::move(unknown)), StatusCode::kCorruption, "push keys in an unknown form (2)"));
  EXPECT_EQ(rows(), 0u);
  // Well formed: both pushes applied (the table adds), key 2 twice over.
  ASSERT_OK(answer(replicate({1, 2, 2, 3}, {1, 2, 3, 4, 5, 6, 7, 8}, {2, 2}, 7)));
  Result<RowBatch> b = core.ListRows(table, {});
  ASSERT_OK(b);
  ASSERT_EQ(b->size(), 3u);
  std::vector<float> got(6);
  std::memcpy(got.data(), b->values.data(), 6 * sizeof(float));
  EXPECT_EQ(got, (std::vector<float>{1, 2, 3 + 5, 4 + 6, 7, 8}));

  // Rows of a newer view for key 1 (as a new owner's resync), then a push the old owner sent
  // under the older view, arriving late: the push is left out, the rows stand.
  transport::Message newer = replicate({}, {}, {}, 8);
  newer.header.clock = epoch + 1;
  newer.frames[0] = transport::AsBytes(SharedArray<Key>(std::vector<Key>{1}));
  newer.frames[1] = transport::AsBytes(SharedArray<float>(std::vector<float>{100, 200}));
  ASSERT_OK(answer(std::move(newer)));
  ASSERT_OK(answer(replicate({1}, {5, 5}, {1}, 9)));  // its record: the older epoch
  b = core.ListRows(table, {});
  ASSERT_OK(b);
  std::memcpy(got.data(), b->values.data(), 2 * sizeof(float));
  EXPECT_EQ(got[0], 100);
  EXPECT_EQ(got[1], 200);
}

// A view that reached only some servers, as a membership change's switch reaches only its
// donors: server 2 alone learns a ring without itself -- it drops the rows it held as a replica
// -- then everyone learns the old ring again, at a later epoch, as the view that calls the change
// off (ClusterView::resync). The owners never saw server 2 leave their chains, but that view
// has them send their replicas all of their rows again: every key ends on its chain's servers,
// bit-identical, and a push after it is applied on top of whole rows.
TEST(ReplicaTest, AViewThatCallsOffAChangeMakesOwnersResyncTheirReplicas) {
  Result<Cluster> cluster = StartCluster(3, 1, 2);
  ASSERT_OK(cluster);
  cluster::Scheduler* scheduler = internal::NodeAccess::Scheduler(cluster->local->scheduler());
  NodeId third;
  for (uint32_t i = 0; i < 3; ++i) {
    if (cluster->local->server(i).rank().value == 2) third = cluster->local->server(i).id();
  }
  ASSERT_NE(third.value, 0u);
  TableSpec spec;
  spec.name = "t";
  spec.value_type = ValueType::kFloat64;
  std::atomic<uint32_t> table_id{0};
  ASSERT_OK(cluster->local->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(const TableId table, node.DeclareTable(spec));
    table_id = table.value;
    KVWorker<double> kv(node);
    std::vector<Key> keys;
    for (Key k = 0; k < 3000; ++k) keys.push_back(k * 0x9E3779B97F4A7C15ULL);
    std::sort(keys.begin(), keys.end());
    auto push = [&](double v) -> Status {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::vector<Key>(keys), std::vector<double>(keys.size(), v)));
      return kv.Wait(ts);
    };
    PSERVER_RETURN_IF_ERROR(push(1.0));
    PSERVER_RETURN_IF_ERROR(scheduler->NewView({0, 1}, std::chrono::seconds(30)).status());
    PSERVER_RETURN_IF_ERROR(scheduler->SendView({third}, std::chrono::seconds(30)));
    PSERVER_RETURN_IF_ERROR(scheduler->NewView({0, 1, 2}, std::chrono::seconds(30), /*resync=*/true).status());
    PSERVER_RETURN_IF_ERROR(scheduler->SendView({}, std::chrono::seconds(30)));
    return push(2.0);
  }));
  const auto [held, holders] = HoldingsOf(cluster->cores, TableId(table_id.load()));
  ASSERT_EQ(holders.size(), 3000u);
  for (const auto& [key, servers] : holders) {
    ASSERT_EQ(servers.size(), 2u) << "key " << key << " is held by " << servers.size() << " servers";
    ASSERT_TRUE(held[servers[1]].at(key) == held[servers[0]].at(key))
        << "key " << key << ": the row of server " << servers[1] << " differs from that of server " << servers[0];
  }
}

// A worker's push to a server that dies, whose send fails only after the failover view reached
// the worker (another thread's send, blocked on the dead server, reports it late): none of it
// left the worker, so it goes to the heir as a plain resend, not as a failover from the dead
// server -- a new owner that never held the dead server's replicas would refuse a failover it
// cannot check, ending the job. Every key ends at the closed-form sum.
TEST(FailoverResendTest, ASendThatFailsAfterTheFailoverViewIsResentPlainly) {
  constexpr uint32_t kServers = 3;
  NodeOptions base = pserver::testing::FastHeartbeats();
  base.replicas = 2;
  // What the worker's send gate (below) uses outlives the job, whose nodes it serves.
  std::atomic<uint32_t> victim_id{0};
  std::atomic<bool> stalled_once{false};
  pserver::testing::Gate stalled, release;
  pserver::testing::InprocJob job(base);
  ASSERT_OK(job.StartScheduler(kServers, 1));
  job.RunScheduler();
  std::vector<NodeOptions> options;
  std::vector<std::unique_ptr<transport::Transport>> transports;
  for (uint32_t i = 0; i < kServers; ++i) {
    options.push_back(job.OptionsFor(pserver::testing::Server(i)));
    transports.push_back(nullptr);
  }
  options.push_back(job.OptionsFor(pserver::testing::Worker(0)));
  // The worker's sends are logged (wire); the first push to the victim, once chosen, stalls in
  // its send until released, then fails as a send given up on a dead peer does.
  auto logged = std::make_unique<pserver::testing::InterceptingTransport>(job.NewTransport());
  pserver::testing::InterceptingTransport* wire = logged.get();
  transports.push_back(std::make_unique<pserver::testing::ObservingTransport>(
      std::move(logged), nullptr, nullptr, nullptr, [&](const transport::Message& m) {
        const transport::Header& h = m.header;
        if (h.type != transport::MessageType::kPush || h.is_reply() || h.receiver.value != victim_id.load() ||
            stalled_once.exchange(true)) {
          return Status::Ok();
        }
        stalled.Open();
        if (!release.Wait(std::chrono::seconds(60))) return Status::DeadlineExceeded("the test never released the send");
        return Status::Unavailable("given up by the test");
      }));
  for (const Status& s : job.StartNodes(options, std::move(transports))) ASSERT_OK(s);
  std::vector<std::unique_ptr<KVServer<float>>> servers;
  std::vector<std::shared_future<Status>> runs;
  for (uint32_t i = 0; i < kServers; ++i) {
    servers.push_back(std::make_unique<KVServer<float>>(*job.node(i)));
    Node* n = job.node(i);
    runs.push_back(job.Spawn([n] { return n->Run(); }));
  }
  Node& worker = *job.node(kServers);
  TableSpec spec;
  spec.name = "sums";
  Result<TableId> table = worker.DeclareTable(spec);
  ASSERT_OK(table);
  std::vector<Key> keys;
  for (Key k = 0; k < 300; ++k) keys.push_back(k);
  KVWorker<float> kv(worker);
  Result<Timestamp> first = kv.Push(*table, std::vector<Key>(keys), std::vector<float>(keys.size(), 1.0f));
  ASSERT_OK(first);
  ASSERT_OK(kv.Wait(*first));

  // A push to server 2's keys only (no other server replicates to it after it died, which the
  // inproc transport would refuse at once) stalls in its send; server 2 dies meanwhile.
  std::vector<Key> its_keys;
  for (Key k : keys) {
    Result<uint32_t> owner = kv.ServerOf(*table, k);
    ASSERT_OK(owner);
    if (*owner == 2) its_keys.push_back(k);
  }
  ASSERT_FALSE(its_keys.empty());
  victim_id = job.node(2)->id().value;
  const auto is_view_ack = [](const transport::Header& h) { return h.type == transport::MessageType::kViewChangeReply; };
  const size_t views_before = wire->Count(pserver::testing::Direction::kSend, is_view_ack);
  std::shared_future<Status> second = job.Spawn([&]() -> Status {
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                             kv.Push(*table, std::vector<Key>(its_keys), std::vector<float>(its_keys.size(), 2.0f)));
    return kv.Wait(ts);
  });
  pserver::testing::OpenOnExit release_on_exit(release);  // a failed assertion strands no thread
  ASSERT_TRUE(stalled.Wait(std::chrono::seconds(60)));
  // Server 2 dies: it stops, its Run returns, and it goes.
  job.node(2)->Stop();
  runs[2].wait();
  servers[2].reset();
  job.Destroy(2);
  // The worker handled the failover view (it acknowledges a view once its handler saw it)...
  ASSERT_TRUE(wire->WaitFor(pserver::testing::Direction::kSend, is_view_ack, views_before + 1));
  // ...and only then learns that the stalled send failed.
  release.Open();
  ASSERT_OK(second.get());
  const auto failover = [](const transport::Header& h) {
    return h.type == transport::MessageType::kPush && (h.flags & transport::kFlagFailover) != 0;
  };
  const auto resend = [](const transport::Header& h) {
    return h.type == transport::MessageType::kPush && (h.flags & transport::kFlagResend) != 0;
  };
  EXPECT_EQ(wire->Count(pserver::testing::Direction::kSend, failover), 0u);
  EXPECT_GE(wire->Count(pserver::testing::Direction::kSend, resend), 1u);

  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(*table, std::vector<Key>(keys), &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  ASSERT_EQ(got.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const bool twice = std::binary_search(its_keys.begin(), its_keys.end(), keys[i]);
    EXPECT_EQ(got[i], twice ? 3.0f : 1.0f) << "key " << keys[i];
  }
}

TableSpec Spec(std::string updater, std::map<std::string, double> params, uint32_t width = 3) {
  TableSpec s;
  s.name = "t_" + updater;
  s.value_type = ValueType::kFloat64;
  s.width = width;
  s.updater = UpdaterSpec{std::move(updater), std::move(params)};
  return s;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"adagrad_2_servers", Spec("adagrad", {{"lr", 0.1}}), 2});
  cases.push_back({"adagrad_3_servers", Spec("adagrad", {{"lr", 0.1}}), 3});
  cases.push_back({"adagrad_hot_keys_3_servers", Spec("adagrad", {{"lr", 0.1}}), 3, /*hot=*/true});
  cases.push_back({"adagrad_3_replicas_4_servers", Spec("adagrad", {{"lr", 0.1}}), 4, false, 3});
  TableSpec prox = Spec("prox", {{"l1", 0.01}, {"delta", 0.5}}, 1);
  prox.push_arity = 2;
  cases.push_back({"prox_3_servers", prox, 3});
  TableSpec var = Spec("adam", {}, 1);
  var.variable_length = true;
  cases.push_back({"adam_variable_length_3_servers", var, 3});
  TableSpec dense = Spec("add", {});
  dense.storage = StorageKind::kDense;
  dense.placement = KeyPlacement::kRange;
  dense.key_range = KeyRange{0, 2999};
  cases.push_back({"add_dense_3_servers", dense, 3});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Rules, ReplicationTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace pserver::kv
