// Views changing under a push-heavy run: servers leave and join the ring while workers push,
// the harness moves each changing range's rows from server to server through the store
// (KVServerCore::ListRows / InsertRows / EraseRows) and has the scheduler announce each view in
// the order a move needs -- first to the servers that lose keys (so that they stop applying
// them and redirect), then, once the rows moved, to everyone. Every stale request must be
// redirected and resent, and the final sums must be exact: nothing lost, nothing applied twice.
// The same run is repeated with the fault-injecting transport duplicating, delaying and
// reordering the workers' requests and duplicating the servers' replies (seeded; the seed is
// printed).
//
// Also here: the redirect of a single stale request, seen on the wire, and the ownership check
// that applies nothing of a request the server does not wholly own.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <cstdio>
#include <latch>
#include <random>
#include <thread>

#include "cluster/cluster_test_util.h"
#include "cluster/key_placement.h"
#include "cluster/scheduler.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"
#include "kv/table_catalog.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/intercepting_transport.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::Direction;
using pserver::testing::FaultPolicy;
using pserver::testing::InprocJob;
using pserver::testing::InterceptingTransport;
using pserver::testing::StatusIs;
using std::chrono::seconds;
using transport::Message;

constexpr uint32_t kServers = 3;
constexpr uint32_t kWorkers = 2;
constexpr Key kKeys = 1500;
constexpr uint32_t kWidth = 2;

NodeOptions Options() {
  NodeOptions o = pserver::testing::FastHeartbeats();
  return o;
}

// What worker `w` pushes to key `k` in round `r` (0 or an exact small integer, so float sums
// are exact): every key gets something from every worker over the run.
float Delta(uint64_t seed, uint32_t w, int r, Key k) {
  const uint64_t h = cluster::MixKey(seed ^ (uint64_t{w} << 48) ^ (uint64_t(r) << 24) ^ k);
  return (h % 3 == 0) ? 0.0f : static_cast<float>(1 + h % 5);
}

// A job of kServers servers and kWorkers workers over the inproc transport, every server and
// worker behind an InterceptingTransport; the servers serve floats with the built-in stores.
struct Job {
  explicit Job(uint64_t seed, bool faults) : job(Options()) {
    EXPECT_OK(job.StartScheduler(kServers, kWorkers));
    job.RunScheduler();
    std::vector<NodeOptions> options;
    std::vector<std::unique_ptr<transport::Transport>> transports;
    for (uint32_t i = 0; i < kServers + kWorkers; ++i) {
      const bool server = i < kServers;
      options.push_back(job.OptionsFor(server ? pserver::testing::Server(i) : pserver::testing::Worker(i - kServers)));
      auto t = std::make_unique<InterceptingTransport>(job.NewTransport());
      if (faults) {
        FaultPolicy p;
        p.seed = seed + i;
        p.duplicate = server ? 0.1 : 0.1;
        if (!server) {  // requests only: a delayed reply could strand a waiting worker
          p.delay = 0.1;
          p.reorder = 0.1;
          // Not the resends, which the receive thread sends while the worker waits: nothing
          // would send after a delayed one to let it go. (The worker flushes its own delayed
          // requests before each wait.)
          p.applies = [](const Message& m) {
            return transport::IsDataMessage(m.header.type) && !(m.header.flags & transport::kFlagResend);
          };
        }
        t->SetFaults(p);
      }
      wires.push_back(t.get());
      transports.push_back(std::move(t));
    }
    for (const Status& s : job.StartNodes(options, std::move(transports))) EXPECT_OK(s);
    for (uint32_t i = 0; i < kServers; ++i) {
      servers.push_back(std::make_unique<KVServer<float>>(*job.node(i)));
      cluster::NodeRuntime* rt = internal::NodeAccess::Runtime(*job.node(i));
      cores.push_back(std::static_pointer_cast<KVServerCore>(rt->AttachDataHandler([] { return nullptr; })));
      job.Spawn([this, i] { return job.node(i)->Run(); });
    }
  }

  cluster::Scheduler& scheduler() { return *internal::NodeAccess::Scheduler(job.scheduler()); }
  Node& worker(uint32_t w) { return *job.node(kServers + w); }
  NodeId server_id(uint32_t s) { return job.node(s)->id(); }

  // Makes `ring` the ring: the servers that lose keys learn it first, the rows of every key that
  // changes owner move from its old owner to its new one, then every node learns it.
  Status ChangeRing(TableId table, const TableSpec& spec, std::vector<uint32_t> ring) {
    const cluster::Ring old_ring = internal::NodeAccess::Runtime(*job.node(0))->routing()->ring();
    const cluster::Placement placement = kv::PlacementOf(spec);
    auto owner = [&](const cluster::Ring& r, Key k) { return r.Owner(cluster::RoutingKey(placement, k)); };
    // One join or one leave: a joining server takes keys from any of the others, which only
    // lose; a leaving one only loses, and the others only gain.
    std::vector<NodeId> losers;
    std::vector<uint32_t> loser_ranks;
    const std::vector<uint32_t>& before = old_ring.servers();
    const std::vector<uint32_t>& after = ring;
    const bool join = after.size() > before.size();
    for (uint32_t s : before) {
      if (join || std::find(after.begin(), after.end(), s) == after.end()) {
        losers.push_back(server_id(s));
        loser_ranks.push_back(s);
      }
    }
    const auto is_redirect = [](const transport::Header& h) { return h.is_redirect(); };
    InterceptingTransport* worker0 = wires[kServers];
    const size_t redirects_before = worker0->Count(Direction::kReceive, is_redirect);
    PSERVER_ASSIGN_OR_RETURN(Epoch epoch, scheduler().NewView(ring, seconds(30)));
    PSERVER_RETURN_IF_ERROR(scheduler().SendView(losers, seconds(30)));
    // The scheduler placed the new ring: a loser routes by it now (servers are nodes 0.. by rank).
    const cluster::Ring new_ring = internal::NodeAccess::Runtime(*job.node(loser_ranks.front()))->routing()->ring();
    // Worker 0 pushes to every server all the time: its next request to a loser is stale. Move
    // the rows once it was redirected, so that every change meets requests in flight.
    if (!worker0->WaitFor(Direction::kReceive, is_redirect, redirects_before + 1)) {
      return Status::DeadlineExceeded("worker 0 got no redirect from the servers that lost keys");
    }
    size_t moved = 0;
    for (uint32_t from : old_ring.servers()) {
      for (uint32_t to : new_ring.servers()) {
        if (from == to) continue;
        auto moves = [&, from, to](Key k) { return owner(old_ring, k) == from && owner(new_ring, k) == to; };
        PSERVER_ASSIGN_OR_RETURN(RowBatch rows, cores[from]->ListRows(table, moves));
        PSERVER_RETURN_IF_ERROR(cores[to]->InsertRows(table, rows));
        PSERVER_ASSIGN_OR_RETURN(size_t erased, cores[from]->EraseRows(table, moves));
        if (erased != rows.size()) return Status::Internal("erased a different number of rows than moved");
        moved += rows.size();
      }
    }
    PSERVER_RETURN_IF_ERROR(scheduler().SendView({}, seconds(30)));
    std::printf("epoch %llu: ring of %zu servers, %zu rows moved\n", static_cast<unsigned long long>(epoch.value),
                ring.size(), moved);
    return Status::Ok();
  }

  InprocJob job;
  std::vector<InterceptingTransport*> wires;  // servers, then workers
  std::vector<std::unique_ptr<KVServer<float>>> servers;
  std::vector<std::shared_ptr<KVServerCore>> cores;
};

// `dense`: the table is stored densely over a declared key range (kRange placement), each
// server allocating only the ranges it owns, growing as rows move in and freeing what it handed
// over; otherwise sparse, hashed.
void RunPushesThroughViewChanges(bool faults, bool dense = false) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu (faults %s, %s)\n", static_cast<unsigned long long>(seed), faults ? "on" : "off",
              dense ? "dense" : "sparse");
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  // What the worker threads use outlives the job, which joins them.
  // Each worker pushes until the views stopped changing (at least kMinRounds rounds).
  constexpr int kMinRounds = 20;
  std::atomic<bool> changing{true};
  std::vector<int> rounds(kWorkers, 0);
  std::vector<Key> keys(kKeys);
  for (Key k = 0; k < kKeys; ++k) keys[k] = dense ? k * 3 + 1 : k * 7919 + 3;
  std::latch pushed(kWorkers);
  pserver::testing::Gate flushed;
  Job job(seed, faults);
  struct EndOnExit {  // a failed assertion must not leave the workers pushing or waiting
    std::atomic<bool>& changing;
    pserver::testing::Gate& flushed;
    ~EndOnExit() {
      changing = false;
      flushed.Open();
    }
  } end_on_exit{changing, flushed};
  TableSpec spec;
  spec.name = "sums";
  spec.width = kWidth;
  if (dense) {
    spec.storage = StorageKind::kDense;
    spec.placement = KeyPlacement::kRange;
    spec.key_range = {0, 3 * kKeys};
  }
  Result<TableId> table = job.worker(0).DeclareTable(spec);
  ASSERT_OK(table);
  ASSERT_OK(job.worker(1).DeclareTable(spec).status());

  std::vector<std::shared_future<Status>> runs;
  for (uint32_t w = 0; w < kWorkers; ++w) {
    runs.push_back(job.job.Spawn([&, w]() -> Status {
      KVWorker<float> kv(job.worker(w));
      std::deque<Timestamp> window;
      int r = 0;
      for (; r < kMinRounds || changing.load(); ++r) {
        std::vector<float> vals(keys.size() * kWidth);
        for (size_t i = 0; i < keys.size(); ++i) {
          for (uint32_t c = 0; c < kWidth; ++c) vals[i * kWidth + c] = Delta(seed, w, r, keys[i]) * (c + 1);
        }
        PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(*table, std::vector<Key>(keys), std::move(vals)));
        window.push_back(ts);
        // Keep many requests in flight.
        if (window.size() > 16) {
          PSERVER_RETURN_IF_ERROR(job.wires[kServers + w]->Release().status());
          PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
          window.pop_front();
        }
      }
      rounds[w] = r;
      InterceptingTransport* wire = job.wires[kServers + w];
      wire->SetFaults(FaultPolicy{});
      PSERVER_RETURN_IF_ERROR(wire->Release().status());  // nothing delayed stays stranded
      pushed.count_down();
      if (!flushed.Wait(seconds(120))) return Status::DeadlineExceeded("the servers' wires were not flushed");
      while (!window.empty()) {
        PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
        window.pop_front();
      }
      return Status::Ok();
    }));
  }
  // Leave and join while the workers push: 2 leaves, joins back, 0 leaves, joins back.
  for (const std::vector<uint32_t>& ring :
       std::vector<std::vector<uint32_t>>{{0, 1}, {0, 1, 2}, {1, 2}, {0, 1, 2}}) {
    ASSERT_OK(job.ChangeRing(*table, spec, ring));
  }
  changing = false;
  pushed.wait();
  for (uint32_t s = 0; s < kServers; ++s) {
    job.wires[s]->SetFaults(FaultPolicy{});
    ASSERT_OK(job.wires[s]->Release().status());
  }
  flushed.Open();
  for (auto& run : runs) ASSERT_OK(run.get());

  // The closed form: every push of every round of every worker, once.
  KVWorker<float> kv(job.worker(0));
  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(*table, std::vector<Key>(keys), &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  ASSERT_EQ(got.size(), keys.size() * kWidth);
  size_t wrong = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    float want = 0;
    for (uint32_t w = 0; w < kWorkers; ++w) {
      for (int r = 0; r < rounds[w]; ++r) want += Delta(seed, w, r, keys[i]);
    }
    for (uint32_t c = 0; c < kWidth; ++c) {
      if (got[i * kWidth + c] != want * (c + 1) && ++wrong <= 5) {
        ADD_FAILURE() << "key " << keys[i] << " column " << c << ": " << got[i * kWidth + c] << ", want "
                      << want * (c + 1);
      }
    }
  }
  EXPECT_EQ(wrong, 0u);
  if (dense) {
    // Each key of the range is held by exactly one server: its owner under the last view. None
    // kept a range it handed over, none lacks one it owns.
    const std::shared_ptr<const cluster::Routing> routing = internal::NodeAccess::Runtime(*job.job.node(0))->routing();
    const cluster::Ring& ring = routing->ring();
    size_t held = 0;
    for (uint32_t s = 0; s < kServers; ++s) {
      Result<RowBatch> rows = job.cores[s]->ListRows(*table, {});
      ASSERT_OK(rows);
      const KeyPredicate owns = RoutingRangePredicate(spec, ring.RangesOf(s));
      for (size_t i = 0; i < rows->size(); ++i) ASSERT_TRUE(owns(rows->keys[i])) << "server " << s;
      held += rows->size();
    }
    EXPECT_EQ(held, spec.key_range.last - spec.key_range.first + 1);
  }
  // Every redirect reached its worker and was followed by a resend of its keys.
  size_t redirects = 0, resends = 0;
  for (uint32_t w = 0; w < kWorkers; ++w) {
    redirects += job.wires[kServers + w]->Count(Direction::kReceive,
                                                [](const transport::Header& h) { return h.is_redirect(); });
    resends += job.wires[kServers + w]->Count(
        Direction::kSend, [](const transport::Header& h) { return (h.flags & transport::kFlagResend) != 0; });
  }
  std::printf("rounds pushed: %d and %d; %zu redirects received, %zu resent parts sent\n", rounds[0], rounds[1],
              redirects, resends);
  EXPECT_GE(redirects, 4u);  // at least one per view change (ChangeRing waits for it)
  EXPECT_GE(resends, 4u);
  if (faults) {
    uint64_t duplicated = 0, delayed = 0, reordered = 0;
    for (InterceptingTransport* w : job.wires) {
      duplicated += w->fault_counts().duplicated;
      delayed += w->fault_counts().delayed;
      reordered += w->fault_counts().reordered;
    }
    std::printf("faults: %llu duplicated, %llu delayed, %llu reordered\n", static_cast<unsigned long long>(duplicated),
                static_cast<unsigned long long>(delayed), static_cast<unsigned long long>(reordered));
    EXPECT_GT(duplicated, 0u);
    EXPECT_GT(delayed + reordered, 0u);
  }
}

TEST(ViewChangeTest, PushesThroughLeavesAndJoinsSumExactly) { RunPushesThroughViewChanges(false); }

TEST(ViewChangeTest, PushesThroughLeavesAndJoinsSumExactlyOverAFaultyNetwork) { RunPushesThroughViewChanges(true); }

TEST(ViewChangeTest, DenseTableHoldsOnlyWhatItsServerOwnsThroughLeavesAndJoins) {
  RunPushesThroughViewChanges(true, /*dense=*/true);
}

// One stale request, on the wire: a worker that routes by epoch 1 sends a push for a key that
// server 0 gave up at epoch 2. Server 0 answers with a redirect carrying its view and applies
// nothing; the worker adopts the view, resends the keys to their owner, and the push completes.
TEST(ViewChangeTest, AStaleRequestIsRedirectedResentAndAppliedOnce) {
  Job job(1, false);
  TableSpec spec;
  spec.name = "t";
  Result<TableId> table = job.worker(0).DeclareTable(spec);
  ASSERT_OK(table);
  ASSERT_OK(job.worker(1).DeclareTable(spec).status());
  KVWorker<float> kv(job.worker(0));
  // A key of server 0 under the full ring that moves to another server when 0 leaves.
  Key key = 0;
  for (;; ++key) {
    Result<uint32_t> s = kv.ServerOf(*table, key);
    ASSERT_OK(s);
    if (*s == 0) break;
  }
  // Server 0 alone learns that it left (as the first step of a move would have it).
  ASSERT_OK(job.scheduler().NewView({1, 2}, seconds(30)).status());
  ASSERT_OK(job.scheduler().SendView({job.server_id(0)}, seconds(30)));
  // The worker still routes by epoch 1: its push goes to server 0, which redirects it.
  Result<Timestamp> push = kv.Push(*table, std::vector<Key>{key}, std::vector<float>{5});
  ASSERT_OK(push);
  InterceptingTransport* wire = job.wires[kServers];
  ASSERT_TRUE(wire->WaitFor(Direction::kReceive, [](const transport::Header& h) { return h.is_redirect(); }, 1));
  // The resend (routed by epoch 2) waits at the new owner until it learns epoch 2 too.
  ASSERT_OK(job.scheduler().SendView({}, seconds(30)));
  ASSERT_OK(kv.Wait(*push));
  EXPECT_EQ(internal::NodeAccess::Runtime(job.worker(0))->routing()->epoch(), Epoch(2));
  EXPECT_EQ(wire->Count(Direction::kSend, [](const transport::Header& h) { return (h.flags & transport::kFlagResend) != 0; }),
            1u);
  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(*table, std::vector<Key>{key}, &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  EXPECT_EQ(got[0], 5.0f);
  // Server 0 applied nothing: it stores no row of the table.
  Result<RowBatch> left = job.cores[0]->ListRows(*table, {});
  ASSERT_OK(left);
  EXPECT_EQ(left->size(), 0u);
}

// The ownership check applies nothing of a request the server does not wholly own: a push whose
// keys span two servers' ranges, sent whole to one of them (as a worker with a wrong ring would),
// is redirected, and neither key is stored there.
TEST(ViewChangeTest, ARequestNotWhollyOwnedIsRedirectedAndNothingOfItApplied) {
  Job job(1, false);
  TableSpec spec;
  spec.name = "t";
  Result<TableId> table = job.worker(0).DeclareTable(spec);
  ASSERT_OK(table);
  KVWorker<float> kv(job.worker(0));
  std::optional<Key> on0, on1;  // a key of server 0 and one of server 1
  for (Key k = 0; !on0 || !on1; ++k) {
    Result<uint32_t> s = kv.ServerOf(*table, k);
    ASSERT_OK(s);
    if (*s == 0 && !on0) on0 = k;
    if (*s == 1 && !on1) on1 = k;
  }
  cluster::NodeRuntime* worker = internal::NodeAccess::Runtime(job.worker(0));
  Message m;
  m.header.type = transport::MessageType::kPush;
  m.header.sender = worker->id();
  m.header.receiver = job.server_id(0);
  m.header.table = *table;
  m.header.value_type = ValueType::kFloat32;
  m.header.width = 1;
  m.header.request_id = 1000;
  m.header.epoch = Epoch(1);
  std::vector<Key> both = {std::min(*on0, *on1), std::max(*on0, *on1)};
  m.frames.push_back(transport::AsBytes(SharedArray<Key>(std::move(both))));
  m.frames.push_back(transport::AsBytes(SharedArray<float>(std::vector<float>{1, 2})));
  m.frames.emplace_back();
  ASSERT_OK(worker->SendData(std::move(m)));
  InterceptingTransport* wire = job.wires[kServers];
  ASSERT_TRUE(wire->WaitFor(Direction::kReceive, [](const transport::Header& h) { return h.is_redirect(); }, 1));
  Result<RowBatch> rows = job.cores[0]->ListRows(*table, {});
  ASSERT_OK(rows);
  EXPECT_EQ(rows->size(), 0u);
  EXPECT_TRUE(StatusIs(job.cores[0]->ListRows(TableId(99), {}).status(), StatusCode::kNotFound));
}

}  // namespace
}  // namespace pserver::kv
