// The scheduler's part of the control plane over the inproc transport: registration and ranks,
// barriers, the end of a job, and a cluster that does not form. The scheduler's transport is
// observed (cluster_test_util.h), so the tests wait for protocol events, never for time.
#include "cluster/scheduler.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "cluster/cluster_test_util.h"
#include "kv/table_catalog.h"  // the tests read the spec bytes the cluster layer carries
#include "testing/test_util.h"

namespace pserver::cluster {
namespace {

using pserver::testing::InprocJob;
using pserver::testing::ObservingTransport;
using pserver::testing::StatusIs;
using std::chrono::milliseconds;
using std::chrono::seconds;
using transport::Message;
using transport::MessageType;

using pserver::testing::FastHeartbeats;
using pserver::testing::kServer;
using pserver::testing::kWorker;
using pserver::testing::Server;
using pserver::testing::Worker;

// Options for tests that do not exercise failure detection: no heartbeat falls due during the
// test, so the only control messages are the test's own.
NodeOptions Quiet() {
  NodeOptions o;
  o.heartbeat_interval = seconds(60);
  o.heartbeat_timeout = seconds(120);
  o.register_timeout = seconds(30);
  return o;
}

TableSpec SomeTable() {
  TableSpec s;
  s.name = "probe";
  return s;
}

// A server's data handler that records the tables announced to it and may refuse some (those
// whose update rule is in `refused`) or hold the announcement until a gate opens.
class TableHandler final : public DataHandler {
 public:
  explicit TableHandler(std::set<std::string> refused = {}, testing::Gate* hold = nullptr)
      : refused_(std::move(refused)), hold_(hold) {}
  void OnData(Message&&) override {}
  void OnNodeFailed(const NodeFailure&) override {}
  void OnShutdown(const Status&) override {}
  Status OnTableDeclared(TableId id, const transport::Bytes& bytes) override ABSL_LOCKS_EXCLUDED(mu_) {
    entered_.Open();
    PSERVER_ASSIGN_OR_RETURN(TableSpec spec, kv::DecodeTableSpec(bytes));
    // Test only: a real handler must not block; this one holds the announcement (bounded) so
    // that the test can make other declarations meet it pending.
    if (hold_ != nullptr && !hold_->Wait(seconds(30))) return Status::Internal("the test never opened the gate");
    if (refused_.contains(spec.updater.name)) {
      return Status::InvalidArgument(fmt::format("unknown update rule '{}'", spec.updater.name));
    }
    MutexLock lock(&mu_);
    declared_[id] = spec;
    return Status::Ok();
  }
  std::optional<TableSpec> Declared(TableId id) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto it = declared_.find(id);
    if (it == declared_.end()) return std::nullopt;
    return it->second;
  }
  // Opens once an announcement reached the handler.
  testing::Gate& entered() { return entered_; }

 private:
  const std::set<std::string> refused_;
  testing::Gate* const hold_;
  testing::Gate entered_;
  Mutex mu_;
  std::map<TableId, TableSpec> declared_ ABSL_GUARDED_BY(mu_);
};

// Counts, per message type, what the scheduler received and sent, and lets a test wait for a
// count to be reached.
class Traffic {
 public:
  ObservingTransport::Observer OnSend() {
    return [this](const Message& m) { Record(/*sent=*/true, m); };
  }
  ObservingTransport::Observer OnReceive() {
    return [this](const Message& m) { Record(/*sent=*/false, m); };
  }
  // Messages of `type` (and barrier group `aux`, for barrier messages) so far.
  int Received(MessageType type, uint64_t aux = 0) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return Count(received_, type, aux);
  }
  int Sent(MessageType type, uint64_t aux = 0) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return Count(sent_, type, aux);
  }
  // Receivers of the messages of `type` sent so far.
  std::vector<NodeId> SentTo(MessageType type) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    std::vector<NodeId> out;
    for (const auto& h : sent_) {
      if (h.type == type) out.push_back(h.receiver);
    }
    return out;
  }
  // Blocks until the scheduler received `n` messages of `type` (and `aux`); false after a
  // generous bound (the test then fails instead of hanging).
  bool AwaitReceived(MessageType type, int n, uint64_t aux = 0) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return cv_.WaitFor(&mu_, seconds(30),
                       [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Count(received_, type, aux) >= n; });
  }
  // Blocks until the scheduler sent `n` messages of `type` (and `aux`); false after a generous bound.
  bool AwaitSent(MessageType type, int n, uint64_t aux = 0) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return cv_.WaitFor(&mu_, seconds(30),
                       [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Count(sent_, type, aux) >= n; });
  }

 private:
  void Record(bool sent, const Message& m) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    (sent ? sent_ : received_).push_back(m.header);
    cv_.SignalAll();
  }
  static bool Matches(const transport::Header& h, MessageType type, uint64_t aux) {
    if (h.type != type) return false;
    const bool grouped = type == MessageType::kBarrier || type == MessageType::kBarrierRelease;
    return !grouped || h.aux == aux;
  }
  static int Count(const std::vector<transport::Header>& log, MessageType type, uint64_t aux) {
    return static_cast<int>(
        std::count_if(log.begin(), log.end(), [&](const transport::Header& h) { return Matches(h, type, aux); }));
  }

  Mutex mu_;
  CondVar cv_;
  std::vector<transport::Header> received_ ABSL_GUARDED_BY(mu_);
  std::vector<transport::Header> sent_ ABSL_GUARDED_BY(mu_);
};

TEST(SchedulerTest, RegistrationAssignsDistinctRanksHonouringHints) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(3, 2));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(2), Server(0), Server(1), Worker(1), Worker(0)}));
  const std::vector<uint32_t> want = {2, 0, 1, 1, 0};
  std::set<uint32_t> ids;
  for (size_t i = 0; i < want.size(); ++i) {
    Node& n = *job.node(i);
    EXPECT_EQ(n.rank().value, want[i]) << "node " << i;
    EXPECT_NE(n.id(), kSchedulerId);
    ids.insert(n.id().value);
    EXPECT_EQ(n.num_servers(), 3u);
    EXPECT_EQ(n.num_workers(), 2u);
    EXPECT_OK(n.health());
  }
  EXPECT_EQ(ids.size(), want.size());
}

TEST(SchedulerTest, RegistrationFillsFreeRanksWhenHintsCollideOrAreOutOfRange) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(2, 3));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kServer, Worker(7), Worker(1), Worker(1)}));
  std::multiset<uint32_t> server_ranks, worker_ranks;
  for (size_t i = 0; i < 2; ++i) server_ranks.insert(job.node(i)->rank().value);
  for (size_t i = 2; i < 5; ++i) worker_ranks.insert(job.node(i)->rank().value);
  EXPECT_EQ(server_ranks, (std::multiset<uint32_t>{0, 1}));
  EXPECT_EQ(worker_ranks, (std::multiset<uint32_t>{0, 1, 2}));
  // One of the two workers that asked for rank 1 has it.
  EXPECT_TRUE(job.node(3)->rank().value == 1 || job.node(4)->rank().value == 1);
}

TEST(SchedulerTest, RegistrationAfterFormationJoinsTheRunningJob) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  // The cluster has formed; one more worker joins it with the next rank (its hint is ignored),
  // and the job goes on with both.
  std::vector<Status> extra = job.StartNodes({job.OptionsFor(Worker(0))});
  ASSERT_OK(extra[0]);
  EXPECT_EQ(job.node(2)->rank(), Rank(1));
  EXPECT_EQ(job.node(2)->num_workers(), 2u);
  EXPECT_OK(job.node(1)->DeclareTable(SomeTable(), seconds(30)));
  EXPECT_OK(job.node(2)->DeclareTable(SomeTable(), seconds(30)));
}

TEST(SchedulerTest, StartRefusesAJobWithoutServersOrWorkers) {
  for (auto [servers, workers] : {std::pair{0u, 1u}, std::pair{1u, 0u}}) {
    InprocJob job(Quiet());
    EXPECT_TRUE(StatusIs(job.StartScheduler(servers, workers), StatusCode::kInvalidArgument,
                         "at least one server and one worker"));
  }
}

class SchedulerBarrierTest : public ::testing::TestWithParam<BarrierGroup> {};

TEST_P(SchedulerBarrierTest, ReleasesOnlyWhenEveryMemberArrived) {
  const BarrierGroup group = GetParam();
  const auto aux = static_cast<uint64_t>(group);
  Traffic traffic;
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(2, 3, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kServer, kWorker, kWorker, kWorker}));
  std::vector<Node*> members;
  std::set<NodeId> member_ids;
  for (size_t i = 0; i < job.num_nodes(); ++i) {
    Node* n = job.node(i);
    const bool in = group == BarrierGroup::kAll || (group == BarrierGroup::kServers) == (n->role() == Role::kServer);
    if (!in) continue;
    members.push_back(n);
    member_ids.insert(n->id());
  }
  const int m = static_cast<int>(members.size());

  for (int round = 0; round < 2; ++round) {  // a barrier can be used again
    std::vector<Status> results(members.size(), Status::Internal("did not return"));
    std::atomic<int> returned{0};
    {
      std::vector<std::jthread> early;
      for (int i = 0; i + 1 < m; ++i) {
        early.emplace_back([&, i] {
          results[i] = members[i]->Barrier(group, seconds(30));
          returned.fetch_add(1);
        });
      }
      // All but the last member have entered...
      EXPECT_TRUE(traffic.AwaitReceived(MessageType::kBarrier, round * m + m - 1, aux));
      // ...and the scheduler has handled their arrival: it answers a later request of the last
      // member, so it would have released the barrier by now if it were going to.
      EXPECT_OK(members.back()->DeclareTable(SomeTable(), seconds(30)));
      EXPECT_EQ(traffic.Sent(MessageType::kBarrierRelease, aux), round * m);
      EXPECT_EQ(returned.load(), 0);
      results.back() = members.back()->Barrier(group, seconds(30));
    }
    for (int i = 0; i < m; ++i)
      EXPECT_TRUE(results[i].ok()) << "member " << i << " round " << round << ": " << results[i];
    EXPECT_EQ(traffic.Sent(MessageType::kBarrierRelease, aux), (round + 1) * m);
  }
  // Only members were released.
  for (NodeId id : traffic.SentTo(MessageType::kBarrierRelease)) EXPECT_TRUE(member_ids.contains(id)) << id.value;
}

INSTANTIATE_TEST_SUITE_P(Groups, SchedulerBarrierTest,
                         ::testing::Values(BarrierGroup::kAll, BarrierGroup::kServers, BarrierGroup::kWorkers),
                         [](const ::testing::TestParamInfo<BarrierGroup>& info) {
                           return std::string(BarrierGroupName(info.param));
                         });

TEST(SchedulerTest, BarrierThatCannotCompleteTimesOutNamingIt) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 2));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker, kWorker}));
  // The other members never come.
  EXPECT_TRUE(StatusIs(job.node(1)->Barrier(BarrierGroup::kAll, milliseconds(20)), StatusCode::kDeadlineExceeded,
                       "barrier of all: no answer from the scheduler (node 0) within 20 ms"));
  // A group whose members all came is not held up by the others.
  EXPECT_OK(job.node(0)->Barrier(BarrierGroup::kServers, seconds(30)));
  EXPECT_TRUE(StatusIs(job.node(2)->Barrier(BarrierGroup::kWorkers, milliseconds(20)), StatusCode::kDeadlineExceeded,
                       "barrier of workers"));
  // A timeout is not an error of the job.
  EXPECT_OK(job.node(1)->health());
}

TEST(SchedulerTest, RunReturnsOkOnceEveryWorkerFinalized) {
  Traffic traffic;
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 2, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker, kWorker}));
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  auto first = job.Spawn([&] { return job.node(1)->Finalize(seconds(30)); });
  ASSERT_TRUE(traffic.AwaitReceived(MessageType::kFinalize, 1));
  // The job does not end while a worker is still working.
  EXPECT_OK(job.node(2)->DeclareTable(SomeTable(), seconds(30)));
  EXPECT_EQ(traffic.Sent(MessageType::kShutdown), 0);
  EXPECT_OK(job.node(2)->Finalize(seconds(30)));
  EXPECT_OK(first.get());
  EXPECT_OK(server.get());
  EXPECT_OK(job.SchedulerOutcome());
  EXPECT_EQ(traffic.Sent(MessageType::kShutdown), 3);
  // Afterwards the nodes report the ended job.
  EXPECT_TRUE(StatusIs(job.node(1)->health(), StatusCode::kAborted, "the job has ended"));
  EXPECT_TRUE(StatusIs(job.node(1)->Barrier(BarrierGroup::kAll, seconds(1)), StatusCode::kAborted));
}

// A message claiming to come from node `claimed`, sent by a transport of the job's hub that is
// not that node's: it presents another identity.
Message Forged(MessageType type, NodeId claimed, NodeId receiver) {
  Message m;
  m.header.type = type;
  m.header.sender = claimed;
  m.header.receiver = receiver;
  return m;
}

TEST(SchedulerTest, MessagesClaimingANodeFromAnotherConnectionAreIgnored) {
  Traffic traffic;
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 1, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  Node& worker = *job.node(1);
  // Another program reaches the scheduler and speaks for the worker: it finalizes, enters a
  // barrier and confirms a shutdown in the worker's name.
  std::unique_ptr<transport::Transport> forger = job.NewTransport();
  ASSERT_OK(forger->Listen("inproc://0").status());
  ASSERT_OK(forger->Connect(kSchedulerId, InprocJob::kSchedulerAddress));
  for (MessageType type : {MessageType::kFinalize, MessageType::kBarrier, MessageType::kHeartbeat}) {
    ASSERT_OK(forger->Send(Forged(type, worker.id(), kSchedulerId)));
  }
  ASSERT_TRUE(traffic.AwaitReceived(MessageType::kFinalize, 1));
  // The job did not end: the worker still works (the scheduler answers its calls, which it
  // takes after the forged ones), and only its own Finalize ends the job.
  EXPECT_OK(worker.DeclareTable(SomeTable(), seconds(30)));
  EXPECT_OK(worker.Barrier(BarrierGroup::kWorkers, seconds(30)));
  EXPECT_EQ(traffic.Sent(MessageType::kShutdown), 0);
  EXPECT_OK(worker.health());
  EXPECT_OK(worker.Finalize(seconds(30)));
  EXPECT_OK(server.get());
  EXPECT_OK(job.SchedulerOutcome());
}

TEST(SchedulerTest, RunReturnsDeadlineExceededWhenTheClusterDoesNotForm) {
  NodeOptions o = Quiet();
  o.heartbeat_interval = milliseconds(50);
  o.register_timeout = milliseconds(300);
  o.shutdown_timeout = milliseconds(300);
  InprocJob job(o);
  ASSERT_OK(job.StartScheduler(1, 2));
  // One worker registers before the scheduler runs (its register message is observed leaving),
  // the other worker and the server never come.
  std::promise<void> registered;
  auto on_send = [&registered, once = std::make_shared<std::once_flag>()](const Message& m) {
    if (m.header.type == MessageType::kRegister) std::call_once(*once, [&] { registered.set_value(); });
  };
  NodeOptions wo = job.OptionsFor({Role::kWorker, -1});
  wo.register_timeout = seconds(30);
  auto worker = std::async(std::launch::async, [&] {
    return internal::NodeAccess::StartWithTransport(
        wo, std::make_unique<ObservingTransport>(job.NewTransport(), on_send, nullptr));
  });
  ASSERT_EQ(registered.get_future().wait_for(seconds(30)), std::future_status::ready);
  job.RunScheduler();
  Result<std::unique_ptr<Node>> started = worker.get();
  EXPECT_TRUE(StatusIs(started.status(), StatusCode::kAborted, "ended the job during registration"));
  EXPECT_TRUE(StatusIs(started.status(), StatusCode::kAborted, "only 0 of 1 servers and 1 of 2 workers"));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kDeadlineExceeded,
                       "only 0 of 1 servers and 1 of 2 workers registered within 300 ms"));
}


NodeRuntime& RuntimeOf(Node* node) { return *internal::NodeAccess::Runtime(*node); }

// The spec a node keeps for table `id` (the runtime keeps the bytes; the kv layer reads them).
Result<TableSpec> FoundSpec(const NodeRuntime& runtime, TableId id) {
  PSERVER_ASSIGN_OR_RETURN(transport::Bytes bytes, runtime.FindTable(id));
  return kv::DecodeTableSpec(bytes);
}

TableSpec Spec(std::string name, std::string updater = "add") {
  TableSpec s;
  s.name = std::move(name);
  s.updater.name = std::move(updater);
  return s;
}

TEST(SchedulerTableTest, AnnouncementReachesEveryServerBeforeTheDeclarationReturns) {
  Traffic traffic;
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(3, 1, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Server(1), Server(2), kWorker}));
  // Servers 0 and 1 have a data handler; server 2 has none yet (it only keeps the spec).
  std::vector<std::shared_ptr<TableHandler>> handlers;
  for (size_t i = 0; i < 2; ++i) {
    auto h = std::make_shared<TableHandler>();
    RuntimeOf(job.node(i)).AttachDataHandler([&] { return h; });
    handlers.push_back(h);
  }
  TableSpec spec = Spec("weights", "sgd");
  spec.updater.params = {{"lr", 0.1}};
  spec.value_type = ValueType::kFloat64;
  spec.placement = KeyPlacement::kRange;
  spec.key_range = {0, 999};
  spec.storage = StorageKind::kDense;
  spec.initializer = {InitializerSpec::Kind::kUniform, 0.01, 7};
  Result<TableId> id = job.node(3)->DeclareTable(spec, seconds(30));
  ASSERT_OK(id);
  // By the time the worker has its id, every server has answered the announcement...
  EXPECT_EQ(traffic.Sent(MessageType::kTableAnnounce), 3);
  EXPECT_EQ(traffic.Received(MessageType::kTableAnnounceReply), 3);
  std::set<NodeId> announced;
  for (NodeId n : traffic.SentTo(MessageType::kTableAnnounce)) announced.insert(n);
  EXPECT_EQ(announced, (std::set<NodeId>{job.node(0)->id(), job.node(1)->id(), job.node(2)->id()}));
  // ...and holds the whole spec: its handler heard of it, and FindTable finds it.
  for (size_t i = 0; i < 3; ++i) {
    Result<TableSpec> found = FoundSpec(RuntimeOf(job.node(i)), *id);
    ASSERT_OK(found);
    EXPECT_EQ(*found, spec) << "server " << i;
  }
  for (auto& h : handlers) {
    std::optional<TableSpec> heard = h->Declared(*id);
    ASSERT_TRUE(heard.has_value());
    EXPECT_EQ(*heard, spec);
  }
  // A second declaration of the same spec is answered from the registry: no new announcement.
  EXPECT_EQ(*job.node(3)->DeclareTable(spec, seconds(30)), *id);
  EXPECT_EQ(traffic.Sent(MessageType::kTableAnnounce), 3);
  // A different spec under the same name is refused, naming what was declared.
  TableSpec other = spec;
  other.updater.name = "adagrad";
  EXPECT_TRUE(StatusIs(job.node(3)->DeclareTable(other, seconds(30)).status(), StatusCode::kInvalidArgument,
                       "already declared differently (float64, width 1, fixed length, updater 'sgd'"));
}

TEST(SchedulerTableTest, ServerRefusingTheSpecFailsTheDeclarationNamingIt) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(2, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Server(1), kWorker}));
  auto accepting = std::make_shared<TableHandler>();
  auto refusing = std::make_shared<TableHandler>(std::set<std::string>{"mystery"});
  RuntimeOf(job.node(0)).AttachDataHandler([&] { return accepting; });
  RuntimeOf(job.node(1)).AttachDataHandler([&] { return refusing; });
  Node& worker = *job.node(2);

  Result<TableId> refused = worker.DeclareTable(Spec("t", "mystery"), seconds(30));
  const std::string server1 = fmt::format("server 1 (node {})", job.node(1)->id().value);
  EXPECT_TRUE(StatusIs(refused.status(), StatusCode::kInvalidArgument, server1 + " refused table 't'"));
  EXPECT_TRUE(StatusIs(refused.status(), StatusCode::kInvalidArgument, "unknown update rule 'mystery'"));
  EXPECT_TRUE(StatusIs(refused.status(), StatusCode::kInvalidArgument, "declaring table 't'"));

  // The scheduler forgot the table: the name can be declared again, with a spec the servers take.
  Result<TableId> id = worker.DeclareTable(Spec("t", "add"), seconds(30));
  ASSERT_OK(id);
  EXPECT_TRUE(accepting->Declared(*id).has_value());
  EXPECT_TRUE(refusing->Declared(*id).has_value());
  Result<TableSpec> on_refuser = FoundSpec(RuntimeOf(job.node(1)), *id);
  ASSERT_OK(on_refuser);
  EXPECT_EQ(on_refuser->updater.name, "add");
  Result<TableSpec> on_worker = FoundSpec(RuntimeOf(&worker), *id);
  ASSERT_OK(on_worker);
  EXPECT_EQ(on_worker->updater.name, "add");
  // The job is unharmed.
  EXPECT_OK(worker.health());
  EXPECT_OK(job.node(1)->health());
}

TEST(SchedulerTableTest, ConcurrentDeclarationsOfOneNameGetOneId) {
  Traffic traffic;
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 3, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker, kWorker, kWorker}));
  testing::Gate hold;
  testing::OpenOnExit release(hold);
  auto handler = std::make_shared<TableHandler>(std::set<std::string>{}, &hold);
  RuntimeOf(job.node(0)).AttachDataHandler([&] { return handler; });

  // Worker 1's declaration is announced; the server holds its answer...
  auto first = job.Spawn([&] { return job.node(1)->DeclareTable(Spec("shared"), seconds(30)).status(); });
  ASSERT_TRUE(handler->entered().Wait(seconds(30)));
  // ...while worker 2 declares the same table: the scheduler has it pending once it received it,
  // as the server's answer can only come after (the scheduler handles messages in order).
  Result<TableId> second_id = Status::Internal("not returned");
  auto second = job.Spawn([&] {
    second_id = job.node(2)->DeclareTable(Spec("shared"), seconds(30));
    return second_id.status();
  });
  ASSERT_TRUE(traffic.AwaitReceived(MessageType::kDeclareTable, 2));
  // A conflicting declaration meanwhile is refused at once, without waiting for the servers.
  TableSpec conflicting = Spec("shared");
  conflicting.width = 4;
  EXPECT_TRUE(StatusIs(job.node(3)->DeclareTable(conflicting, seconds(30)).status(), StatusCode::kInvalidArgument,
                       "already declared differently"));
  EXPECT_EQ(traffic.Sent(MessageType::kDeclareTableReply), 1);  // only the conflicting one
  hold.Open();
  EXPECT_OK(first.get());
  EXPECT_OK(second.get());
  Result<TableSpec> on_first = FoundSpec(RuntimeOf(job.node(1)), *second_id);
  ASSERT_OK(on_first);  // worker 1 got the same id as worker 2
  EXPECT_EQ(*on_first, Spec("shared"));
  EXPECT_EQ(traffic.Sent(MessageType::kTableAnnounce), 1);  // announced once
  EXPECT_TRUE(handler->Declared(*second_id).has_value());
}

TEST(SchedulerWorkerLossTest, DeadWorkerDoesNotStopTheOthersButTheJobEndsNamingIt) {
  Traffic traffic;
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 3, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1), Worker(2)}));
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  // Workers 0 and 1 wait in barriers of the workers and of all nodes that worker 2 never enters.
  auto workers0 = job.Spawn([&] { return job.node(1)->Barrier(BarrierGroup::kWorkers, seconds(30)); });
  auto workers1 = job.Spawn([&] { return job.node(2)->Barrier(BarrierGroup::kWorkers, seconds(30)); });
  ASSERT_TRUE(traffic.AwaitReceived(MessageType::kBarrier, 2, static_cast<uint64_t>(BarrierGroup::kWorkers)));
  EXPECT_EQ(traffic.Sent(MessageType::kBarrierRelease, static_cast<uint64_t>(BarrierGroup::kWorkers)), 0);

  job.Destroy(3);  // worker 2 stops; it sends no more heartbeats

  EXPECT_OK(workers0.get());
  EXPECT_OK(workers1.get());
  // Every live node was told of the death.
  EXPECT_EQ(traffic.Sent(MessageType::kNodeFailed), 3);
  // Barriers of all nodes count only the live ones from now on.
  auto all0 = job.Spawn([&] { return job.node(0)->Barrier(BarrierGroup::kAll, seconds(30)); });
  auto all1 = job.Spawn([&] { return job.node(1)->Barrier(BarrierGroup::kAll, seconds(30)); });
  EXPECT_OK(job.node(2)->Barrier(BarrierGroup::kAll, seconds(30)));
  EXPECT_OK(all0.get());
  EXPECT_OK(all1.get());
  // Tables can still be declared (the server is alive). Once the live workers finalized the job
  // ends, with an error naming the lost worker (its share of the work is missing).
  EXPECT_OK(job.node(1)->DeclareTable(SomeTable(), seconds(30)));
  auto finalize0 = job.Spawn([&] { return job.node(1)->Finalize(seconds(30)); });
  const std::string lost = "the job lost 1 of 3 workers before they finished: worker 2 (node";
  EXPECT_TRUE(StatusIs(job.node(2)->Finalize(seconds(30)), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(finalize0.get(), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(server.get(), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kUnavailable, lost));
}

// A server that joins after a worker was declared dead hears of that death too, so that it
// fences the worker (one only stopped may wake and send to it).
TEST(SchedulerWorkerLossTest, AServerJoiningLaterHearsOfWorkersDeclaredDeadBefore) {
  Traffic traffic;
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 2, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1)}));
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  const NodeId lost = job.node(2)->id();
  job.Destroy(2);  // worker 1 stops; it sends no more heartbeats
  ASSERT_TRUE(traffic.AwaitSent(MessageType::kNodeFailed, 2));  // the live server and worker
  std::vector<Status> joined = job.StartNodes({job.OptionsFor(kServer)});
  ASSERT_OK(joined[0]);
  const NodeId joiner = job.node(3)->id();
  ASSERT_TRUE(traffic.AwaitSent(MessageType::kNodeFailed, 3));
  const std::vector<NodeId> told = traffic.SentTo(MessageType::kNodeFailed);
  EXPECT_EQ(std::count(told.begin(), told.end(), joiner), 1) << "the joiner was not told of node " << lost.value;
}

// A worker that cannot do its part ends the job at once for every node, with its reason and its
// status code -- also after it finalized (a failure after its last step, e.g. writing output).
TEST(SchedulerWorkerLossTest, WorkerFinalizingWithAnErrorEndsTheJobForEveryNodeWithItsReason) {
  for (bool finalized_first : {false, true}) {
    SCOPED_TRACE(finalized_first ? "after Finalize" : "instead of Finalize");
    Traffic traffic;
    InprocJob job(FastHeartbeats());
    ASSERT_OK(job.StartScheduler(1, 3, traffic.OnSend(), traffic.OnReceive()));
    job.RunScheduler();
    // Worker 1 has finished, worker 2 is still busy (so the job has not ended) when worker 0 fails.
    ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1), Worker(2)}));
    auto server = job.Spawn([&] { return job.node(0)->Run(); });
    auto other = job.Spawn([&] { return job.node(2)->Finalize(seconds(30)); });
    ASSERT_TRUE(traffic.AwaitReceived(MessageType::kFinalize, 1));
    std::shared_future<Status> own;
    if (finalized_first) {
      own = job.Spawn([&] { return job.node(1)->Finalize(seconds(30)); });
      ASSERT_TRUE(traffic.AwaitReceived(MessageType::kFinalize, 2));  // the scheduler has both
    }
    const std::string why = "worker 0 (node";
    Status failed = job.node(1)->FinalizeWithError(Status::InvalidArgument("its data is unreadable"), seconds(30));
    EXPECT_TRUE(StatusIs(failed, StatusCode::kInvalidArgument, "failed: its data is unreadable")) << failed.ToString();
    EXPECT_TRUE(StatusIs(failed, StatusCode::kInvalidArgument, why));
    EXPECT_TRUE(StatusIs(other.get(), StatusCode::kInvalidArgument, "failed: its data is unreadable"));
    EXPECT_TRUE(StatusIs(server.get(), StatusCode::kInvalidArgument, "failed: its data is unreadable"));
    EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kInvalidArgument, "failed: its data is unreadable"));
    if (finalized_first) {
      EXPECT_TRUE(StatusIs(own.get(), StatusCode::kInvalidArgument, "its data is unreadable"));
    }
    EXPECT_TRUE(StatusIs(job.node(3)->Finalize(seconds(30)), StatusCode::kInvalidArgument, "its data is unreadable"));
  }
}

// A scheduler that was itself stalled longer than the heartbeat timeout (starved of CPU) finds
// the live nodes' heartbeats waiting in its queue when it wakes: it must not declare them dead.
// The stall is injected on the scheduler's receive path; the nodes judge the scheduler with a
// long timeout, so only the scheduler's judgement is tested.
TEST(SchedulerLivenessTest, AStalledSchedulerDoesNotDeclareLiveNodesDead) {
  Traffic traffic;
  std::atomic<bool> stall{false};
  const NodeOptions base = FastHeartbeats();
  auto observe = traffic.OnReceive();
  InprocJob job(base);
  ASSERT_OK(job.StartScheduler(1, 2, traffic.OnSend(), [&](const Message& m) {
    observe(m);
    // The fault under test: the scheduler's thread stops for twice the heartbeat timeout.
    if (stall.exchange(false)) std::this_thread::sleep_for(2 * base.heartbeat_timeout);
  }));
  job.RunScheduler();
  std::vector<NodeOptions> options;
  for (const auto& spec : {kServer, Worker(0), Worker(1)}) {
    NodeOptions o = job.OptionsFor(spec);
    o.heartbeat_timeout = std::chrono::seconds(120);
    options.push_back(o);
  }
  for (const Status& s : job.StartNodes(options)) ASSERT_OK(s);
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  // The next message the scheduler receives stalls it; the workers' Finalize messages queue
  // behind it, so the scheduler judges liveness after the stall before the job can end.
  stall = true;
  auto finalize0 = job.Spawn([&] { return job.node(1)->Finalize(seconds(60)); });
  EXPECT_OK(job.node(2)->Finalize(seconds(60)));
  EXPECT_OK(finalize0.get());
  EXPECT_FALSE(stall.load()) << "the stall was not injected";
  EXPECT_EQ(traffic.Sent(MessageType::kNodeFailed), 0);
  EXPECT_OK(server.get());
  EXPECT_OK(job.SchedulerOutcome());
}

TEST(SchedulerWorkerLossTest, WorkerDyingInsideABarrierIsNotWaitedFor) {
  Traffic traffic;
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 2, traffic.OnSend(), traffic.OnReceive()));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1)}));
  auto server = job.Spawn([&] { return job.node(0)->Run(); });
  const auto workers = static_cast<uint64_t>(BarrierGroup::kWorkers);
  // Worker 1 enters the barrier and then dies in it; worker 0 comes afterwards.
  auto doomed = job.Spawn([&] { return job.node(2)->Barrier(BarrierGroup::kWorkers, seconds(30)); });
  ASSERT_TRUE(traffic.AwaitReceived(MessageType::kBarrier, 1, workers));
  job.node(2)->Stop();  // it sends no more heartbeats
  EXPECT_TRUE(StatusIs(doomed.get(), StatusCode::kAborted, "the node was stopped"));
  // Once the scheduler has declared it dead (told the server and worker 0), worker 0 enters.
  ASSERT_TRUE(traffic.AwaitSent(MessageType::kNodeFailed, 2));
  EXPECT_OK(job.node(1)->Barrier(BarrierGroup::kWorkers, seconds(30)));
  // Only the live worker was released.
  EXPECT_EQ(traffic.SentTo(MessageType::kBarrierRelease), std::vector<NodeId>{job.node(1)->id()});
  // The job goes on to its end without worker 1, but its share of the work is missing: the job
  // ends with an error naming it, at every node, not with OK.
  const std::string lost = "the job lost 1 of 2 workers before they finished: worker 1 (node";
  EXPECT_TRUE(StatusIs(job.node(1)->Finalize(seconds(30)), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(server.get(), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kUnavailable, lost));
}

}  // namespace
}  // namespace pserver::cluster
