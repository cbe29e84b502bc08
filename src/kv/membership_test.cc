// Servers and workers joining and leaving a running job (docs/elasticity.md), with the
// scheduler placing the ring and moving the keys itself: servers join (started while the job
// runs) and are drained at seeded random moments while workers push known values, and the final
// sums must be exact -- nothing lost, nothing applied twice; two servers join at once; a joining
// server that dies while rows move to it changes nothing; the last server cannot be drained; a
// worker joins a stale-synchronous job mid-way and another leaves without stalling it.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <future>
#include <random>
#include <thread>

#include "cluster/cluster_test_util.h"
#include "cluster/key_placement.h"
#include "cluster/scheduler.h"
#include "kv/node_access.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/intercepting_transport.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::InprocJob;
using pserver::testing::InterceptingTransport;
using pserver::testing::StatusIs;
using std::chrono::seconds;

constexpr Key kKeys = 2000;
constexpr uint32_t kWidth = 2;

// What worker `w` pushes to key `k` in round `r`: small integers, so float sums are exact.
float Delta(uint64_t seed, uint32_t w, int r, Key k) {
  const uint64_t h = cluster::MixKey(seed ^ (uint64_t{w} << 48) ^ (uint64_t(r) << 24) ^ k);
  return (h % 3 == 0) ? 0.0f : static_cast<float>(1 + h % 5);
}

// Waits (bounded) until `done` holds, checking it every millisecond: the tests wait for events
// (rounds pushed, changes made), never for time.
bool WaitUntil(const std::function<bool()>& done, seconds limit = seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A job over the inproc transport whose servers serve floats; servers can be added while it
// runs.
struct Job {
  Job(uint32_t servers, uint32_t workers, uint32_t replicas = 1) : job(WithReplicas(replicas)) {
    EXPECT_OK(job.StartScheduler(servers, workers));
    job.RunScheduler();
    std::vector<NodeOptions> options;
    std::vector<std::unique_ptr<transport::Transport>> transports;
    for (uint32_t i = 0; i < servers; ++i) {
      options.push_back(job.OptionsFor(pserver::testing::Server(i)));
      auto wire = std::make_unique<InterceptingTransport>(job.NewTransport());
      server_wires.push_back(wire.get());
      transports.push_back(std::move(wire));
    }
    for (uint32_t i = 0; i < workers; ++i) options.push_back(job.OptionsFor(pserver::testing::Worker(i)));
    for (const Status& s : job.StartNodes(options, std::move(transports))) EXPECT_OK(s);
    for (uint32_t i = 0; i < servers; ++i) Serve(job.node(i));
    for (uint32_t i = 0; i < workers; ++i) worker_nodes.push_back(job.node(servers + i));
  }

  void Serve(Node* node) {
    servers.push_back(std::make_unique<KVServer<float>>(*node));
    job.Spawn([node] { return node->Run(); });
    server_nodes.push_back(node);
  }

  // Starts `n` servers at once while the job runs; they register, and the scheduler queues
  // their joins.
  Status AddServers(size_t n) {
    const size_t first = job.num_nodes();
    std::vector<NodeOptions> options(n, job.OptionsFor(pserver::testing::kServer));
    for (const Status& s : job.StartNodes(options)) PSERVER_RETURN_IF_ERROR(s);
    for (size_t i = 0; i < n; ++i) Serve(job.node(first + i));
    return Status::Ok();
  }

  cluster::Scheduler& scheduler() { return *internal::NodeAccess::Scheduler(job.scheduler()); }

  static NodeOptions WithReplicas(uint32_t replicas) {
    NodeOptions o = pserver::testing::FastHeartbeats();
    o.replicas = replicas;
    return o;
  }

  InprocJob job;
  std::vector<std::unique_ptr<KVServer<float>>> servers;
  std::vector<Node*> server_nodes;
  std::vector<Node*> worker_nodes;
  std::vector<InterceptingTransport*> server_wires;  // of the servers the job started with
};

// A server started while the job runs that holds its answers to the rows moved to it
// (kMigrateRows), so that its join stays in its copy step until Release(). Stop() -- or the
// destructor -- stops it, waits for its Run to return and lets it go, its KVServer first.
class HeldJoiner {
 public:
  explicit HeldJoiner(Job& job) {
    auto wire = std::make_unique<InterceptingTransport>(job.job.NewTransport());
    wire_ = wire.get();
    wire_->Hold([](const transport::Message& m) { return m.header.type == transport::MessageType::kMigrateRows; });
    Result<std::unique_ptr<Node>> node =
        internal::NodeAccess::StartWithTransport(job.job.OptionsFor(pserver::testing::kServer), std::move(wire));
    if (!node.ok()) {
      started_ = node.status();
      return;
    }
    node_ = std::move(*node);
    server_ = std::make_unique<KVServer<float>>(*node_);
    Node* n = node_.get();
    run_ = job.job.Spawn([n] { return n->Run(); });
  }
  ~HeldJoiner() { Stop(); }
  HeldJoiner(const HeldJoiner&) = delete;
  HeldJoiner& operator=(const HeldJoiner&) = delete;

  const Status& started() const { return started_; }
  // True once the joiner holds an answer to moved rows (false after a generous bound).
  bool HoldsRows() const { return wire_->WaitForHeld(1); }
  // Answers the rows held, and those to come.
  Status Release() {
    wire_->Hold([](const transport::Message&) { return false; });
    return wire_->Release().status();
  }
  void Stop() {
    if (!node_) return;
    node_->Stop();
    run_.wait();
    server_.reset();
    node_.reset();
  }

 private:
  Status started_;
  InterceptingTransport* wire_ = nullptr;
  std::unique_ptr<Node> node_;
  std::unique_ptr<KVServer<float>> server_;
  std::shared_future<Status> run_;
};

// Pushes of every worker, round after round, until `stop`; each round adds Delta to every key.
struct Pushers {
  Pushers(Job& job, TableId table, uint64_t seed, const std::vector<Key>& keys) : rounds(job.worker_nodes.size()) {
    for (uint32_t w = 0; w < job.worker_nodes.size(); ++w) {
      runs.push_back(job.job.Spawn([&, w, table, seed]() -> Status {
        KVWorker<float> kv(*job.worker_nodes[w]);
        std::deque<Timestamp> window;
        int r = 0;
        for (; !stop.load(); ++r) {
          std::vector<float> vals(keys.size() * kWidth);
          for (size_t i = 0; i < keys.size(); ++i) {
            for (uint32_t c = 0; c < kWidth; ++c) vals[i * kWidth + c] = Delta(seed, w, r, keys[i]) * (c + 1);
          }
          PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::vector<Key>(keys), std::move(vals)));
          window.push_back(ts);
          if (window.size() > 8) {  // many requests in flight
            PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
            window.pop_front();
          }
          rounds[w].store(r + 1);
        }
        for (; !window.empty(); window.pop_front()) PSERVER_RETURN_IF_ERROR(kv.Wait(window.front()));
        return Status::Ok();
      }));
    }
  }
  int MinRounds() const {
    int least = rounds[0].load();
    for (const auto& r : rounds) least = std::min(least, r.load());
    return least;
  }
  Status Finish() {
    stop = true;
    for (auto& run : runs) PSERVER_RETURN_IF_ERROR(run.get());
    return Status::Ok();
  }

  std::atomic<bool> stop{false};
  std::vector<std::atomic<int>> rounds;
  std::vector<std::shared_future<Status>> runs;
};

// Checks every key holds the sum of every round every worker pushed.
void ExpectExactSums(Job& job, TableId table, uint64_t seed, const std::vector<Key>& keys, const Pushers& pushers) {
  KVWorker<float> kv(*job.worker_nodes[0]);
  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(table, std::vector<Key>(keys), &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  ASSERT_EQ(got.size(), keys.size() * kWidth);
  size_t wrong = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    float want = 0;
    for (uint32_t w = 0; w < pushers.rounds.size(); ++w) {
      for (int r = 0; r < pushers.rounds[w].load(); ++r) want += Delta(seed, w, r, keys[i]);
    }
    for (uint32_t c = 0; c < kWidth; ++c) {
      if (got[i * kWidth + c] != want * (c + 1) && ++wrong <= 5) {
        ADD_FAILURE() << "key " << keys[i] << " column " << c << ": " << got[i * kWidth + c] << ", want "
                      << want * (c + 1);
      }
    }
  }
  EXPECT_EQ(wrong, 0u);
}

std::vector<Key> SomeKeys(bool dense) {
  std::vector<Key> keys(kKeys);
  for (Key k = 0; k < kKeys; ++k) keys[k] = dense ? k * 3 + 1 : k * 7919 + 3;
  return keys;
}

TableSpec SumsSpec(bool dense) {
  TableSpec spec;
  spec.name = "sums";
  spec.width = kWidth;
  if (dense) {
    spec.storage = StorageKind::kDense;
    spec.placement = KeyPlacement::kRange;
    spec.key_range = {0, 3 * kKeys};
  }
  return spec;
}

// At least 12 membership changes at seeded random moments while two workers push: joins (one
// of them two servers at once) and drains of random servers, then exact sums.
void RunPushesThroughJoinsAndDrains(bool dense, uint32_t replicas = 1) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu (%s, %u replicas)\n", static_cast<unsigned long long>(seed), dense ? "dense" : "sparse",
              replicas);
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  Job job(2, 2, replicas);
  const TableSpec spec = SumsSpec(dense);
  const std::vector<Key> keys = SomeKeys(dense);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(spec);
  ASSERT_OK(table);
  ASSERT_OK(job.worker_nodes[1]->DeclareTable(spec).status());
  Pushers pushers(job, *table, seed, keys);
  struct StopOnExit {
    Pushers& p;
    ~StopOnExit() { p.stop = true; }
  } stop_on_exit{pushers};

  std::vector<uint32_t> live = {0, 1};
  uint32_t next_rank = 2;
  uint64_t changes = 0;
  for (int step = 0; step < 12; ++step) {
    // A random moment: after 1-3 more rounds of every worker.
    const int target = pushers.MinRounds() + 1 + static_cast<int>(rng() % 3);
    ASSERT_TRUE(WaitUntil([&] { return pushers.MinRounds() >= target; })) << "the workers stopped pushing";
    const bool join = live.size() < 2 || (live.size() < 5 && rng() % 2 == 0);
    if (join) {
      const size_t n = step == 3 ? 2 : 1;  // once, two at once
      ASSERT_OK(job.AddServers(n));
      changes += n;
      ASSERT_TRUE(WaitUntil([&] { return job.scheduler().changes_done() >= changes; })) << "the join did not complete";
      for (size_t i = 0; i < n; ++i) live.push_back(next_rank++);
      std::printf("step %d: %zu server(s) joined; %zu servers\n", step, n, live.size());
    } else {
      const size_t pick = rng() % live.size();
      const uint32_t rank = live[pick];
      ASSERT_OK(job.scheduler().Drain(rank, seconds(120)));
      ++changes;
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
      std::printf("step %d: server %u drained; %zu servers\n", step, rank, live.size());
    }
  }
  ASSERT_GE(job.scheduler().changes_done(), 12u);
  ASSERT_OK(pushers.Finish());
  std::printf("rounds pushed: %d and %d\n", pushers.rounds[0].load(), pushers.rounds[1].load());
  ExpectExactSums(job, *table, seed, keys, pushers);
  Result<std::string> status = job.scheduler().StatusText(seconds(10));
  ASSERT_OK(status);
  std::printf("%s", status->c_str());
}

TEST(MembershipTest, PushesThroughJoinsAndDrainsSumExactly) { RunPushesThroughJoinsAndDrains(false); }

TEST(MembershipTest, DenseTableMovesThroughJoinsAndDrains) { RunPushesThroughJoinsAndDrains(true); }

// With two replicas every change also rebuilds chains: new replicas get their ranges' rows, donors
// that stay replicas keep theirs, and pushes are answered only once replicated.
TEST(MembershipTest, ReplicatedJobThroughJoinsAndDrainsSumsExactly) { RunPushesThroughJoinsAndDrains(false, 2); }

TEST(MembershipTest, ReplicatedDenseTableThroughJoinsAndDrains) { RunPushesThroughJoinsAndDrains(true, 2); }

TEST(MembershipTest, TheLastServerIsNotDrained) {
  Job job(1, 1);
  EXPECT_TRUE(StatusIs(job.scheduler().Drain(0, seconds(30)), StatusCode::kInvalidArgument,
                       "it is the last server, and no other could hold its keys"));
  EXPECT_TRUE(StatusIs(job.scheduler().Drain(7, seconds(30)), StatusCode::kInvalidArgument,
                       "server 7 is no live server"));
  ASSERT_OK(job.worker_nodes[0]->Finalize());
}

// A joining server that dies while rows move to it: the change is cancelled, the donors keep
// every row and own them again, and the job goes on exactly.
TEST(MembershipTest, AJoinerThatDiesWhileRowsMoveChangesNothing) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  Job job(2, 1);
  const TableSpec spec = SumsSpec(false);
  const std::vector<Key> keys = SomeKeys(false);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(spec);
  ASSERT_OK(table);
  Pushers pushers(job, *table, seed, keys);
  struct StopOnExit {
    Pushers& p;
    ~StopOnExit() { p.stop = true; }
  } stop_on_exit{pushers};
  ASSERT_TRUE(WaitUntil([&] { return pushers.MinRounds() >= 2; }));

  // The joiner never answers the rows sent to it: it holds its answers, then dies.
  HeldJoiner joiner(job);
  ASSERT_OK(joiner.started());
  ASSERT_TRUE(joiner.HoldsRows()) << "no rows reached the joiner";
  joiner.Stop();  // it stops heartbeating: declared dead, the change is cancelled
  // Declared dead (or, had a donor's send to it failed first, sent away): the change is off.
  ASSERT_TRUE(WaitUntil([&] {
    Result<std::string> s = job.scheduler().StatusText(seconds(10));
    return s.ok() && (s->find("dead") != std::string::npos || s->find("left") != std::string::npos) &&
           s->find("change running") == std::string::npos;
  }));
  EXPECT_EQ(job.scheduler().changes_done(), 0u);
  const int target = pushers.MinRounds() + 3;
  ASSERT_TRUE(WaitUntil([&] { return pushers.MinRounds() >= target; })) << "the job did not go on";
  ASSERT_OK(pushers.Finish());
  ExpectExactSums(job, *table, seed, keys, pushers);
}

// With replicas, a server that dies while a join copies rows (before its switch: no node routes by
// the new placement yet) is failed over from; the join is called off and starts again from the
// failover's placement, and completes. (Inproc sends to a stopped node fail at once, where TCP's
// wait until it is declared dead: so the workers are idle while it dies.)
TEST(MembershipTest, AServerDyingWhileRowsMoveIsFailedOverFromAndTheJoinStartsAgain) {
  Job job(3, 1, /*replicas=*/2);
  const TableSpec spec = SumsSpec(false);
  const std::vector<Key> keys = SomeKeys(false);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(spec);
  ASSERT_OK(table);
  KVWorker<float> kv(*job.worker_nodes[0]);
  auto push_rounds = [&](int n) -> Status {
    for (int r = 0; r < n; ++r) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(*table, std::vector<Key>(keys),
                                                     std::vector<float>(keys.size() * kWidth, 1.0f)));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    }
    return Status::Ok();
  };
  ASSERT_OK(push_rounds(5));

  // The joiner holds its answers to the rows sent to it: the change stays in its copy step.
  HeldJoiner joiner(job);
  ASSERT_OK(joiner.started());
  ASSERT_TRUE(joiner.HoldsRows()) << "no rows reached the joiner";

  // Server 1 falls silent, as a killed one does (nothing it sends leaves): declared dead.
  job.server_wires[1]->Hold([](const transport::Message&) { return true; });
  ASSERT_TRUE(WaitUntil([&] {
    Result<std::string> s = job.scheduler().StatusText(seconds(10));
    return s.ok() && s->find("dead") != std::string::npos;
  })) << "server 1 was not declared dead";
  ASSERT_OK(joiner.Release());
  ASSERT_TRUE(WaitUntil([&] { return job.scheduler().changes_done() >= 1; })) << "the join did not complete";
  Result<std::string> status = job.scheduler().StatusText(seconds(10));
  ASSERT_OK(status);
  std::printf("%s", status->c_str());

  // Every push before and after, exactly once, wherever its keys are now.
  ASSERT_OK(push_rounds(5));
  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(*table, std::vector<Key>(keys), &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  ASSERT_EQ(got.size(), keys.size() * kWidth);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], 10.0f) << "key " << keys[i / kWidth];
}

// A server reports its replicas complete for a view only once every resync it sent was stored,
// also when the view keeps the ring (here: a worker admitted) and so sends nothing new: had it
// reported, the scheduler could fail over from it to a server that still lacks the rows.
TEST(MembershipTest, AViewThatKeepsTheRingDoesNotReportAResyncStillUnstored) {
  Job job(2, 1, /*replicas=*/2);
  const std::vector<Key> keys = SomeKeys(false);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(SumsSpec(false));
  ASSERT_OK(table);
  {
    KVWorker<float> kv(*job.worker_nodes[0]);
    Result<Timestamp> pushed = kv.Push(*table, std::vector<Key>(keys), std::vector<float>(keys.size() * kWidth, 1.0f));
    ASSERT_OK(pushed);
    ASSERT_OK(kv.Wait(*pushed));
  }
  // A joiner that holds its answers to replicated rows: the resyncs the owners send it stay
  // unstored.
  auto wire = std::make_unique<InterceptingTransport>(job.job.NewTransport());
  InterceptingTransport* joiner_wire = wire.get();
  joiner_wire->Hold([](const transport::Message& m) {
    return m.header.type == transport::MessageType::kReplicate && m.header.is_reply();
  });
  Result<std::unique_ptr<Node>> joiner =
      internal::NodeAccess::StartWithTransport(job.job.OptionsFor(pserver::testing::kServer), std::move(wire));
  ASSERT_OK(joiner);
  auto joiner_server = std::make_unique<KVServer<float>>(**joiner);
  Node* joiner_node = joiner->get();
  std::shared_future<Status> joiner_run = job.job.Spawn([joiner_node] { return joiner_node->Run(); });
  struct StopJoiner {  // a failed assertion returns early: the joiner's Run ends before it goes
    Node* node;
    std::shared_future<Status> run;
    ~StopJoiner() {
      if (node == nullptr) return;
      node->Stop();
      run.wait();
    }
  } stop_joiner{joiner_node, joiner_run};
  ASSERT_TRUE(WaitUntil([&] { return job.scheduler().changes_done() == 1; }));
  ASSERT_TRUE(joiner_wire->WaitForHeld(1)) << "no rows were replicated to the joiner";

  auto epoch_of = [](Node* n) { return internal::NodeAccess::Runtime(*n)->routing()->epoch(); };
  auto behind = [](Node* n) {  // its replicas not reported complete at the view it routes by
    cluster::NodeRuntime* rt = internal::NodeAccess::Runtime(*n);
    const std::optional<Epoch> synced = rt->replicas_synced();
    return !synced || *synced < rt->routing()->epoch();
  };
  std::vector<Node*> owners;  // those whose resync to the joiner is held
  for (Node* s : job.server_nodes) {
    if (behind(s)) owners.push_back(s);
  }
  ASSERT_FALSE(owners.empty()) << "no server waits for the joiner's answers";
  Epoch before;
  for (Node* s : job.server_nodes) before = std::max(before, epoch_of(s));

  // A worker admitted: a view of a new epoch with the same ring, so the same chains.
  const size_t first = job.job.num_nodes();
  for (const Status& s : job.job.StartNodes({job.job.OptionsFor(pserver::testing::kWorker)})) ASSERT_OK(s);
  Node* late_worker = job.job.node(first);
  ASSERT_TRUE(WaitUntil([&] {
    return std::all_of(owners.begin(), owners.end(), [&](Node* s) { return epoch_of(s) > before; });
  }));
  // A table declared now is announced to each server after that view, in order with it on its
  // data thread (a request would not do: its answer waits for the resync too): once every
  // server took the table, every owner handled the view.
  TableSpec marker = SumsSpec(false);
  marker.name = "after_the_view";
  ASSERT_OK(job.worker_nodes[0]->DeclareTable(marker).status());
  for (Node* s : owners) EXPECT_TRUE(behind(s)) << "reported complete while its resync was unstored";

  joiner_wire->Hold([](const transport::Message&) { return false; });
  ASSERT_OK(joiner_wire->Release().status());
  ASSERT_TRUE(WaitUntil([&] { return std::none_of(owners.begin(), owners.end(), behind); }))
      << "the owners never reported once the joiner answered";
  std::shared_future<Status> late_final = job.job.Spawn([late_worker] { return late_worker->Finalize(); });
  ASSERT_OK(job.worker_nodes[0]->Finalize());
  ASSERT_OK(late_final.get());
  joiner_run.wait();
  stop_joiner.node = nullptr;
  joiner_server.reset();
  joiner->reset();
}

// `iterations` times: push 1 to every key of `table`, advance the clock, pull with staleness
// `staleness` (a pull held longer than 60 s is a stall, and fails); `after(i)` runs after
// iteration i (from 1) and may end the loop with an error.
Status StaleSynchronousIterations(Node& node, TableId table, const std::vector<Key>& keys, int64_t staleness,
                                  int iterations, const std::function<Status(int)>& after) {
  KVWorker<float> kv(node);
  PSERVER_RETURN_IF_ERROR(kv.SetStaleness(table, staleness));
  for (int i = 0; i < iterations; ++i) {
    PSERVER_ASSIGN_OR_RETURN(Timestamp push, kv.Push(table, std::vector<Key>(keys),
                                                     std::vector<float>(keys.size() * kWidth, 1.0f)));
    PSERVER_RETURN_IF_ERROR(kv.Wait(push));
    PSERVER_RETURN_IF_ERROR(kv.Clock().status());
    SharedArray<float> got;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pull, kv.Pull(table, std::vector<Key>(keys), &got));
    PSERVER_RETURN_IF_ERROR(kv.Wait(pull, std::chrono::seconds(60)));
    PSERVER_RETURN_IF_ERROR(after(i + 1));
  }
  return Status::Ok();
}

// A worker joins a stale-synchronous job mid-way: it is admitted at the current clock, so the
// first worker does not wait for it to catch up from clock 0, and it does not wait for the
// first either beyond the staleness; when the first finishes early it leaves the clock at once.
TEST(MembershipTest, AWorkerJoinsAStaleSynchronousJobMidWay) {
  Job job(2, 1);
  TableSpec spec = SumsSpec(false);
  const std::vector<Key> keys = SomeKeys(false);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(spec);
  ASSERT_OK(table);
  constexpr int kIterations = 30;
  constexpr int64_t kStaleness = 1;
  std::atomic<int> first_done{0};
  auto iterate = [&](Node* node, int iterations, const std::function<Status(int)>& after) {
    return StaleSynchronousIterations(*node, *table, keys, kStaleness, iterations, after);
  };
  std::shared_future<Status> first = job.job.Spawn([&] {
    return iterate(job.worker_nodes[0], kIterations, [&](int done) {
      first_done.store(done);
      return Status::Ok();
    });
  });
  ASSERT_TRUE(WaitUntil([&] { return first_done.load() >= kIterations / 2; }));
  // The second worker joins at the first's clock c (about 15). After its first iteration it
  // waits until the first has gone two iterations further: the first can, because the second's
  // clock counts from c (admitted at 0, the second would be at clock 1 and the first would wait
  // for it to reach c - 1: this test would time out). Then it goes on to 20 iterations; the
  // first finishing (and leaving) does not keep it waiting.
  // The servers admit it at their least clock, at least the first's clock now (`before`): the
  // first can then reach before + 2 (the second at before + 1, staleness 1).
  const int before = first_done.load();
  const size_t index = job.job.num_nodes();
  for (const Status& s : job.job.StartNodes({job.job.OptionsFor(pserver::testing::kWorker)})) ASSERT_OK(s);
  Node* second = job.job.node(index);
  EXPECT_EQ(second->rank(), Rank(1));
  std::shared_future<Status> joined = job.job.Spawn([&]() -> Status {
    PSERVER_RETURN_IF_ERROR(second->DeclareTable(spec).status());  // as every worker of the job does
    return iterate(second, 20, [&](int done) {
      if (done == 1 && !WaitUntil([&] { return first_done.load() >= before + 2; }, seconds(30))) {
        return Status::DeadlineExceeded("the first worker waits for the joined one: it was not admitted at the current clock");
      }
      return Status::Ok();
    });
  });
  ASSERT_OK(first.get());
  std::shared_future<Status> first_final = job.job.Spawn([&] { return job.worker_nodes[0]->Finalize(); });
  ASSERT_OK(joined.get());
  KVWorker<float> kv(*second);
  SharedArray<float> got;
  Result<Timestamp> pull = kv.Pull(*table, std::vector<Key>(keys), &got);
  ASSERT_OK(pull);
  ASSERT_OK(kv.Wait(*pull));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], float(kIterations + 20)) << "value " << i;
  ASSERT_OK(second->Finalize());
  ASSERT_OK(first_final.get());
}

// A server joins a stale-synchronous job after a worker joined it late: the joiner meets both
// workers in its first view, and learns their clocks -- the late one's base among them -- with
// the rows moved to it. (Counting the late worker from clock 0 there, it would hold the first
// worker's pulls for keys it now owns forever: the workers would stall, and this test time out.)
TEST(MembershipTest, AServerJoiningAfterALateWorkerKnowsItsClock) {
  Job job(1, 1);
  const TableSpec spec = SumsSpec(false);
  const std::vector<Key> keys = SomeKeys(false);
  Result<TableId> table = job.worker_nodes[0]->DeclareTable(spec);
  ASSERT_OK(table);
  constexpr int64_t kStaleness = 1;
  std::atomic<int> first_done{0}, second_done{0};
  std::atomic<bool> joined{false};
  // Then each finalizes, leaving the clocks.
  auto iterate = [&](Node* node, int iterations, std::atomic<int>& done, const std::function<void(int)>& after) -> Status {
    PSERVER_RETURN_IF_ERROR(StaleSynchronousIterations(*node, *table, keys, kStaleness, iterations, [&](int i) {
      done.store(i);
      after(i);
      return Status::Ok();
    }));
    return node->Finalize();
  };
  std::shared_future<Status> first =
      job.job.Spawn([&] { return iterate(job.worker_nodes[0], 80, first_done, [](int) {}); });
  ASSERT_TRUE(WaitUntil([&] { return first_done.load() >= 10; }));
  const size_t index = job.job.num_nodes();
  for (const Status& s : job.job.StartNodes({job.job.OptionsFor(pserver::testing::kWorker)})) ASSERT_OK(s);
  Node* second = job.job.node(index);
  // The late worker pauses after 5 iterations (the first one soon waits for it) until the
  // server has joined; then both go on through keys the joiner owns.
  std::shared_future<Status> late = job.job.Spawn([&]() -> Status {
    PSERVER_RETURN_IF_ERROR(second->DeclareTable(spec).status());
    return iterate(second, 40, second_done, [&](int done) {
      if (done == 5) WaitUntil([&] { return joined.load(); });
    });
  });
  ASSERT_TRUE(WaitUntil([&] { return second_done.load() >= 5; }));
  ASSERT_OK(job.AddServers(1));
  ASSERT_TRUE(WaitUntil([&] { return job.scheduler().changes_done() >= 1; })) << "the join did not complete";
  joined = true;
  ASSERT_EQ(late.wait_for(seconds(120)), std::future_status::ready) << "the workers stalled after the join";
  ASSERT_OK(late.get());
  ASSERT_EQ(first.wait_for(seconds(120)), std::future_status::ready) << "the first worker stalled after the join";
  ASSERT_OK(first.get());
}

}  // namespace
}  // namespace pserver::kv
