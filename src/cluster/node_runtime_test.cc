// A server's or worker's runtime over the inproc transport: registration without a scheduler,
// failure detection (a stopped node, a lost scheduler) and how it reaches pending barriers and
// requests, Stop, table declarations and role misuse. Failure detection runs with short
// heartbeats (every 50 ms, dead after 1.5 s); nothing waits on time except the nodes' own timers.
#include "cluster/node_runtime.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <random>
#include <memory>
#include <mutex>
#include <string>

#include "cluster/cluster_test_util.h"
#include "cluster/scheduler.h"
#include "testing/fake_clock.h"
#include "testing/intercepting_transport.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"
#include "transport/transport_test_util.h"

namespace pserver::cluster {
namespace {

using pserver::testing::InprocJob;
using pserver::testing::StatusIs;
using std::chrono::milliseconds;
using std::chrono::seconds;

using pserver::testing::FastHeartbeats;
using pserver::testing::kServer;
using pserver::testing::kWorker;
using pserver::testing::Server;
using pserver::testing::Worker;

TableSpec Table(std::string name) {
  TableSpec s;
  s.name = std::move(name);
  return s;
}

// The smallest key of `table` that the server of rank `server` holds.
Result<Key> KeyOn(const KVWorkerBase& w, TableId table, uint32_t server) {
  for (Key k = 0; k < 100000; ++k) {
    PSERVER_ASSIGN_OR_RETURN(uint32_t owner, w.ServerOf(table, k));
    if (owner == server) return k;
  }
  return Status::NotFound("no key for server " + std::to_string(server));
}

TEST(NodeRuntimeTest, StartRefusesTheSchedulerRoleAndAMissingAddress) {
  transport::inproc::InprocHub hub;
  NodeOptions o;
  o.role = Role::kScheduler;
  o.scheduler_address = "inproc://x";
  EXPECT_TRUE(StatusIs(NodeRuntime::Start(o, std::make_unique<transport::inproc::InprocTransport>(
                                                 &hub, transport::inproc::InprocOptions{}))
                           .status(),
                       StatusCode::kInvalidArgument, "cluster::Scheduler"));
  o.role = Role::kWorker;
  o.scheduler_address = "";
  EXPECT_TRUE(StatusIs(NodeRuntime::Start(o, std::make_unique<transport::inproc::InprocTransport>(
                                                 &hub, transport::inproc::InprocOptions{}))
                           .status(),
                       StatusCode::kInvalidArgument, "no scheduler address"));
}

TEST(NodeRuntimeTest, RegistrationWithoutASchedulerTimesOutNamingItsAddress) {
  transport::inproc::InprocHub hub;
  NodeOptions o;
  o.role = Role::kWorker;
  o.scheduler_address = "inproc://nobody-listens-here";
  o.register_timeout = milliseconds(100);
  auto started = internal::NodeAccess::StartWithTransport(
      o, std::make_unique<transport::inproc::InprocTransport>(&hub, transport::inproc::InprocOptions{}));
  EXPECT_TRUE(StatusIs(started.status(), StatusCode::kDeadlineExceeded, "inproc://nobody-listens-here"));
  EXPECT_TRUE(StatusIs(started.status(), StatusCode::kDeadlineExceeded, "within 100 ms"));
}

// A loopback TCP port that nobody listens on (bound, read back, released).
Result<int> UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::Internal("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) return Status::Internal("bind");
  return static_cast<int>(ntohs(addr.sin_port));
}

TEST(NodeRuntimeTest, RegistrationWithoutASchedulerTimesOutOverZeroMQ) {
  Result<int> port = UnusedPort();
  ASSERT_OK(port);
  NodeOptions o;
  o.role = Role::kServer;
  o.scheduler_address = "tcp://127.0.0.1:" + std::to_string(*port);
  o.register_timeout = milliseconds(200);  // shorter than the send timeout: registration keeps to it
  auto started = Node::Start(o);
  EXPECT_TRUE(StatusIs(started.status(), StatusCode::kDeadlineExceeded, o.scheduler_address));
}

TEST(NodeRuntimeTest, StoppedServerIsDeclaredDeadAndFailsThePendingWorkOfOthers) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(2, 2));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Server(1), Worker(0), Worker(1)}));
  Node& server0 = *job.node(0);
  Node& worker0 = *job.node(2);
  Node& worker1 = *job.node(3);
  // Server 1 serves nothing (no KVServer): requests to it stay pending until it is declared dead.
  KVServer<float> served(server0);
  auto server0_run = job.Spawn([&] { return server0.Run(); });
  Result<TableId> t = worker0.DeclareTable(Table("t"));
  ASSERT_OK(t);
  KVWorker<float> w(worker0);
  Result<Key> on0 = KeyOn(w, *t, 0), on1 = KeyOn(w, *t, 1);
  ASSERT_OK(on0);
  ASSERT_OK(on1);
  Status from_callback;
  Result<Timestamp> pending =
      w.Push(*t, std::vector<Key>{*on1}, std::vector<float>{1}, [&](const Status& s) { from_callback = s; });
  ASSERT_OK(pending);
  Result<Timestamp> answered = w.Push(*t, std::vector<Key>{*on0}, std::vector<float>{1});
  ASSERT_OK(answered);
  EXPECT_OK(w.Wait(*answered));  // server 0 is fine
  auto barrier = job.Spawn([&] { return worker1.Barrier(BarrierGroup::kAll, seconds(30)); });

  job.Destroy(1);  // server 1 stops and is gone; it sends no more heartbeats

  Status s = w.Wait(*pending, seconds(30));
  EXPECT_TRUE(StatusIs(s, StatusCode::kUnavailable, "server 1 (node "));
  EXPECT_TRUE(StatusIs(s, StatusCode::kUnavailable, "died: no heartbeat"));
  EXPECT_EQ(from_callback, s);
  EXPECT_TRUE(StatusIs(barrier.get(), StatusCode::kUnavailable, "server 1 (node "));
  EXPECT_TRUE(StatusIs(server0_run.get(), StatusCode::kUnavailable, "server 1 (node "));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kUnavailable, "server 1 (node "));
  // The failure is sticky on the survivors.
  EXPECT_TRUE(StatusIs(worker0.health(), StatusCode::kUnavailable, "server 1 (node "));
  EXPECT_TRUE(StatusIs(w.Push(*t, std::vector<Key>{*on0}, std::vector<float>{1}).status(), StatusCode::kUnavailable,
                       "server 1 (node "));
  EXPECT_TRUE(StatusIs(worker0.Finalize(seconds(30)), StatusCode::kUnavailable, "server 1 (node "));
  EXPECT_TRUE(
      StatusIs(worker1.Barrier(BarrierGroup::kWorkers, seconds(30)), StatusCode::kUnavailable, "server 1 (node "));
}

TEST(NodeRuntimeTest, StoppedWorkerIsDeclaredDeadTheOthersGoOnAndTheJobEndsNamingIt) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 2));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1)}));
  Node& server = *job.node(0);
  Node& worker0 = *job.node(1);
  KVServer<float> served(server);
  auto server_run = job.Spawn([&] { return server.Run(); });
  Result<TableId> t = worker0.DeclareTable(Table("t"));
  ASSERT_OK(t);
  KVWorker<float> w(worker0);
  Result<Timestamp> pending = w.Pull(*t, std::vector<Key>{1, 2, 3}, nullptr);
  EXPECT_TRUE(StatusIs(pending.status(), StatusCode::kInvalidArgument));  // no place for the values
  // Worker 0 waits for worker 1 in a barrier of the workers...
  auto barrier = job.Spawn([&] { return worker0.Barrier(BarrierGroup::kWorkers, seconds(30)); });

  job.Destroy(2);  // ...when worker 1 stops and goes silent

  // The barrier completes without it, and the job goes on: the survivor's requests are served.
  EXPECT_OK(barrier.get());
  EXPECT_OK(worker0.health());
  Result<Timestamp> push = w.Push(*t, std::vector<Key>{1, 2, 3}, std::vector<float>{1, 2, 3});
  ASSERT_OK(push);
  EXPECT_OK(w.Wait(*push, seconds(30)));
  SharedArray<float> vals;
  Result<Timestamp> pull = w.Pull(*t, std::vector<Key>{1, 2, 3}, &vals);
  ASSERT_OK(pull);
  EXPECT_OK(w.Wait(*pull, seconds(30)));
  EXPECT_EQ(std::vector<float>(vals.begin(), vals.end()), (std::vector<float>{1, 2, 3}));
  // Once the live worker finalized, the job ends -- with an error naming the lost worker, whose
  // share of the work is missing, at every node.
  const std::string lost = "the job lost 1 of 2 workers before they finished: worker 1 (node";
  EXPECT_TRUE(StatusIs(worker0.Finalize(seconds(30)), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(server_run.get(), StatusCode::kUnavailable, lost));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kUnavailable, lost));
}

TEST(NodeRuntimeTest, AWorkerThatTookOverTheLostWorkersWorkLetsTheJobEndWell) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 3));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, Worker(0), Worker(1), Worker(2)}));
  Node& server = *job.node(0);
  Node& worker0 = *job.node(1);
  Node& worker1 = *job.node(2);
  KVServer<float> served(server);
  auto server_run = job.Spawn([&] { return server.Run(); });
  const NodeId lost = job.node(3)->id();
  auto barrier0 = job.Spawn([&] { return worker0.Barrier(BarrierGroup::kWorkers, seconds(30)); });
  auto barrier1 = job.Spawn([&] { return worker1.Barrier(BarrierGroup::kWorkers, seconds(30)); });
  job.Destroy(3);  // worker 2 stops and goes silent
  ASSERT_OK(barrier0.get());  // released once the scheduler declared it dead
  ASSERT_OK(barrier1.get());
  // Only a worker that died can be taken over, and only by a worker.
  EXPECT_TRUE(StatusIs(worker0.TakeOver(worker1.id(), seconds(30)), StatusCode::kInvalidArgument,
                       "no worker that died before it finished"));
  EXPECT_TRUE(StatusIs(server.TakeOver(lost, seconds(30)), StatusCode::kInvalidArgument, "only a worker"));
  EXPECT_OK(worker0.TakeOver(lost, seconds(30)));
  EXPECT_OK(worker1.TakeOver(lost, seconds(30)));  // a second taker (as when the first dies too)
  auto finalize1 = job.Spawn([&] { return worker1.Finalize(seconds(30)); });
  EXPECT_OK(worker0.Finalize(seconds(30)));
  EXPECT_OK(finalize1.get());
  EXPECT_OK(server_run.get());
  EXPECT_OK(job.SchedulerOutcome());
}

TEST(NodeRuntimeTest, StopAbortsTheNodesOwnPendingCallsAndPeersSeeItDie) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  Node& server = *job.node(0);
  Node& worker = *job.node(1);
  auto server_run = job.Spawn([&] { return server.Run(); });
  Result<TableId> t = worker.DeclareTable(Table("t"));
  ASSERT_OK(t);
  KVWorker<float> w(worker);
  Status from_callback;
  Result<Timestamp> pending =
      w.Push(*t, std::vector<Key>{7}, std::vector<float>{1}, [&](const Status& s) { from_callback = s; });
  ASSERT_OK(pending);
  auto barrier = job.Spawn([&] { return worker.Barrier(BarrierGroup::kAll, seconds(30)); });

  worker.Stop();

  EXPECT_TRUE(StatusIs(barrier.get(), StatusCode::kAborted, "the node was stopped"));
  EXPECT_TRUE(StatusIs(w.Wait(*pending, seconds(30)), StatusCode::kAborted, "the node was stopped"));
  EXPECT_TRUE(StatusIs(from_callback, StatusCode::kAborted, "the node was stopped"));
  EXPECT_TRUE(StatusIs(worker.health(), StatusCode::kAborted, "the node was stopped"));
  EXPECT_TRUE(StatusIs(w.Push(*t, std::vector<Key>{7}, std::vector<float>{1}).status(), StatusCode::kAborted));
  EXPECT_TRUE(StatusIs(worker.Finalize(seconds(30)), StatusCode::kAborted, "the node was stopped"));
  EXPECT_TRUE(StatusIs(worker.DeclareTable(Table("u"), seconds(30)).status(), StatusCode::kAborted));
  // The stopped worker no longer sends heartbeats: the scheduler declares it dead, and as it was
  // the only worker, aborts the job.
  EXPECT_TRUE(StatusIs(server_run.get(), StatusCode::kUnavailable, "every worker died"));
  EXPECT_TRUE(StatusIs(server_run.get(), StatusCode::kUnavailable, "worker 0 (node "));
  EXPECT_TRUE(StatusIs(job.SchedulerOutcome(), StatusCode::kUnavailable, "worker 0 (node "));
}

TEST(NodeRuntimeTest, LostSchedulerFailsNodesWithUnavailableNamingIt) {
  InprocJob job(FastHeartbeats());
  std::promise<void> barrier_arrived;
  auto on_receive = [&barrier_arrived, once = std::make_shared<std::once_flag>()](const transport::Message& m) {
    if (m.header.type == transport::MessageType::kBarrier) std::call_once(*once, [&] { barrier_arrived.set_value(); });
  };
  ASSERT_OK(job.StartScheduler(1, 1, nullptr, on_receive));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  Node& server = *job.node(0);
  Node& worker = *job.node(1);
  auto server_run = job.Spawn([&] { return server.Run(); });
  // The worker waits in a barrier the scheduler knows of (the server never comes)...
  auto barrier = job.Spawn([&] { return worker.Barrier(BarrierGroup::kAll, seconds(30)); });
  ASSERT_EQ(barrier_arrived.get_future().wait_for(seconds(30)), std::future_status::ready);

  job.DestroyScheduler();  // ...when the scheduler goes away

  // The error names the scheduler by role and id, and says where it was.
  const std::string what = "the scheduler (node 0) has not answered heartbeats";
  const Status barrier_status = barrier.get();
  EXPECT_TRUE(StatusIs(barrier_status, StatusCode::kUnavailable, what));
  EXPECT_TRUE(StatusIs(barrier_status, StatusCode::kUnavailable, "(the scheduler at inproc://scheduler)"));
  EXPECT_TRUE(StatusIs(server_run.get(), StatusCode::kUnavailable, what));
  EXPECT_TRUE(StatusIs(worker.health(), StatusCode::kUnavailable, what));
  EXPECT_TRUE(StatusIs(worker.Finalize(seconds(30)), StatusCode::kUnavailable, what));
}

transport::Message Forged(transport::MessageType type, NodeId claimed, NodeId receiver) {
  transport::Message m;
  m.header.type = type;
  m.header.sender = claimed;
  m.header.receiver = receiver;
  return m;
}

// Another program that reaches the nodes' ports sends well-formed control messages in the
// scheduler's name, and data messages in the worker's: none is acted on, each is counted, and
// the job finishes with the right values.
TEST(NodeRuntimeTest, ForgedControlAndDataMessagesAreDroppedAndTheJobGoesOn) {
  using transport::MessageType;
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  Node& server = *job.node(0);
  Node& worker = *job.node(1);
  NodeRuntime* server_rt = internal::NodeAccess::Runtime(server);
  NodeRuntime* worker_rt = internal::NodeAccess::Runtime(worker);
  KVServer<float> serve(server);
  auto server_run = job.Spawn([&] { return server.Run(); });
  Result<TableId> t = worker.DeclareTable(Table("w"));
  ASSERT_OK(t);
  KVWorker<float> w(worker);

  std::unique_ptr<transport::Transport> forger = job.NewTransport();
  ASSERT_OK(forger->Listen("inproc://0").status());
  ASSERT_OK(forger->Connect(server.id(), server_rt->address()));
  ASSERT_OK(forger->Connect(worker.id(), worker_rt->address()));
  const NodeId targets[] = {server.id(), worker.id()};
  for (NodeId to : targets) {
    for (MessageType type : {MessageType::kShutdown, MessageType::kNodeFailed, MessageType::kBarrierRelease,
                             MessageType::kHeartbeatAck, MessageType::kTableAnnounce}) {
      ASSERT_OK(forger->Send(Forged(type, kSchedulerId, to)));
    }
    transport::Message abort = Forged(MessageType::kShutdown, kSchedulerId, to);
    abort.header.flags = transport::kFlagError;
    abort.header.status = static_cast<uint8_t>(StatusCode::kUnavailable);
    abort.frames.push_back(transport::BytesFromString("forged"));
    ASSERT_OK(forger->Send(std::move(abort)));
  }
  // A push in the worker's name, with real keys and values, and a pull reply in the server's.
  transport::Message push = Forged(MessageType::kPush, worker.id(), server.id());
  push.header.table = *t;
  push.header.width = 1;
  push.frames.push_back(transport::AsBytes(SharedArray<Key>(std::vector<Key>{1, 2, 3})));
  push.frames.push_back(transport::AsBytes(SharedArray<float>(std::vector<float>{100, 100, 100})));
  ASSERT_OK(forger->Send(std::move(push)));
  transport::Message reply = Forged(MessageType::kPull, server.id(), worker.id());
  reply.header.flags = transport::kFlagReply;
  reply.header.request_id = 1;
  ASSERT_OK(forger->Send(std::move(reply)));

  // Each node takes its messages in order from one queue: once the worker's round trip below is
  // answered, both nodes have seen every forged message.
  Result<Timestamp> pushed = w.Push(*t, std::vector<Key>{1, 2, 3}, std::vector<float>{1, 2, 3});
  ASSERT_OK(pushed);
  EXPECT_OK(w.Wait(*pushed, seconds(30)));
  SharedArray<float> vals;
  Result<Timestamp> pulled = w.Pull(*t, std::vector<Key>{1, 2, 3}, &vals);
  ASSERT_OK(pulled);
  EXPECT_OK(w.Wait(*pulled, seconds(30)));
  EXPECT_EQ(std::vector<float>(vals.begin(), vals.end()), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(server_rt->refused_messages(), 7u);
  EXPECT_EQ(worker_rt->refused_messages(), 7u);
  EXPECT_OK(server.health());
  EXPECT_OK(worker.health());
  EXPECT_OK(server_rt->PeerStatus(worker.id()));
  EXPECT_OK(worker.Finalize(seconds(30)));
  EXPECT_OK(server_run.get());
  EXPECT_OK(job.SchedulerOutcome());
}

// During registration too: a shutdown in the scheduler's name reaches each node after it sent
// its registration and before the scheduler answered; both nodes still join the job.
TEST(NodeRuntimeTest, ForgedShutdownDuringRegistrationIsDropped) {
  using transport::MessageType;
  InprocJob job(FastHeartbeats());
  std::unique_ptr<transport::Transport> forger = job.NewTransport();
  ASSERT_OK(forger->Listen("inproc://0").status());
  std::mutex mu;
  uint32_t next_peer = 100;
  // Runs on the scheduler's receive thread, before it handles the registration.
  auto on_receive = [&](const transport::Message& m) {
    if (m.header.type != MessageType::kRegister || m.frames.size() != 1) return;
    Result<RegisterRequest> req = DecodeRegisterRequest(m.frames[0]);
    if (!req.ok()) return;
    std::lock_guard lock(mu);
    const NodeId peer(next_peer++);
    if (!forger->Connect(peer, req->address).ok()) return;
    transport::Message abort = Forged(MessageType::kShutdown, kSchedulerId, peer);
    abort.header.flags = transport::kFlagError;
    abort.header.status = static_cast<uint8_t>(StatusCode::kAborted);
    abort.frames.push_back(transport::BytesFromString("forged"));
    (void)forger->Send(std::move(abort));
  };
  ASSERT_OK(job.StartScheduler(1, 1, nullptr, on_receive));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  for (size_t i = 0; i < 2; ++i) {
    NodeRuntime* rt = internal::NodeAccess::Runtime(*job.node(i));
    EXPECT_EQ(rt->refused_messages(), 1u) << i;
    EXPECT_OK(rt->health());
  }
  auto server_run = job.Spawn([&] { return job.node(0)->Run(); });
  EXPECT_OK(job.node(1)->Finalize(seconds(30)));
  EXPECT_OK(server_run.get());
  EXPECT_OK(job.SchedulerOutcome());
}

// The runtime carries a table as an opaque declaration (the kv layer encodes and checks specs:
// kv/table_catalog_test.cc): it checks the name, matches declarations of one name by their spec
// bytes and remembers the bytes by table id.
TEST(NodeRuntimeTest, DeclareTableMatchesDeclarationsByNameAndBytesAndRemembersThem) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  ASSERT_NE(worker, nullptr);
  EXPECT_TRUE(StatusIs(worker->FindTable(TableId(1)).status(), StatusCode::kNotFound, "table 1 was not declared"));

  const TableDeclaration declaration{"embeddings", "sixteen doubles", transport::BytesFromString("spec bytes v1")};
  Result<TableId> id = worker->DeclareTable(declaration, seconds(30));
  ASSERT_OK(id);
  Result<transport::Bytes> found = worker->FindTable(*id);
  ASSERT_OK(found);
  EXPECT_EQ(transport::testing::Text(*found), "spec bytes v1");
  // Servers may declare too, and get the same id; the bytes are then known on the server (it
  // took them from the announcement, having no handler to ask).
  Result<TableId> on_server = server->DeclareTable(declaration, seconds(30));
  ASSERT_OK(on_server);
  EXPECT_EQ(*on_server, *id);
  ASSERT_OK(server->FindTable(*id));
  EXPECT_EQ(transport::testing::Text(*server->FindTable(*id)), "spec bytes v1");

  TableDeclaration bad = declaration;
  bad.name = std::string(129, 'x');
  EXPECT_TRUE(StatusIs(worker->DeclareTable(bad, seconds(30)).status(), StatusCode::kInvalidArgument, "1 to 128"));
  bad.name.clear();
  EXPECT_TRUE(StatusIs(worker->DeclareTable(bad, seconds(30)).status(), StatusCode::kInvalidArgument, "1 to 128"));
  bad = declaration;
  bad.spec = transport::BytesFromString("spec bytes v2");
  EXPECT_TRUE(StatusIs(worker->DeclareTable(bad, seconds(30)).status(), StatusCode::kInvalidArgument,
                       "table 'embeddings' was already declared differently (sixteen doubles)"));
  // A refused declaration leaves the remembered bytes alone.
  found = worker->FindTable(*id);
  ASSERT_OK(found);
  EXPECT_EQ(transport::testing::Text(*found), "spec bytes v1");
}

TEST(NodeRuntimeTest, RequestsArrivingBeforeTheServerServesAreDeliveredInOrder) {
  InprocJob job(FastHeartbeats());
  std::promise<void> both_arrived;
  auto on_receive = [&both_arrived, n = std::make_shared<int>(0)](const transport::Message& m) {
    if (transport::IsDataMessage(m.header.type) && ++*n == 2) both_arrived.set_value();
  };
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  std::vector<std::unique_ptr<transport::Transport>> transports;
  transports.push_back(std::make_unique<pserver::testing::ObservingTransport>(job.NewTransport(), nullptr, on_receive));
  for (const Status& s : job.StartNodes({job.OptionsFor(kServer), job.OptionsFor(kWorker)}, std::move(transports))) {
    ASSERT_OK(s);
  }
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  Node& worker = *job.node(1);
  Result<TableId> t = worker.DeclareTable(Table("t"));
  ASSERT_OK(t);
  KVWorker<float> w(worker);
  Result<Timestamp> push = w.Push(*t, std::vector<Key>{1, 2}, std::vector<float>{3, 4});
  ASSERT_OK(push);
  SharedArray<float> vals;
  Result<Timestamp> pull = w.Pull(*t, std::vector<Key>{1, 2}, &vals);
  ASSERT_OK(pull);
  // Both requests reached the server's receive loop before it had a handler or ran...
  ASSERT_EQ(both_arrived.get_future().wait_for(seconds(30)), std::future_status::ready);
  auto recorder = std::make_shared<pserver::testing::RecordingDataHandler>();
  server->AttachDataHandler([&] { return recorder; });
  auto run = job.Spawn([&] { return job.node(0)->Run(); });  // a server may hold requests until it runs
  // ...and are handed to the handler once it is attached and serves, in the order they were sent.
  std::optional<transport::Message> first = recorder->Next();
  std::optional<transport::Message> second = recorder->Next();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(first->header.type, transport::MessageType::kPush);
  EXPECT_EQ(first->header.request_id, push->value);
  EXPECT_EQ(second->header.type, transport::MessageType::kPull);
  EXPECT_EQ(second->header.request_id, pull->value);
  // A second attach keeps the first handler.
  auto other = std::make_shared<pserver::testing::RecordingDataHandler>();
  EXPECT_EQ(server->AttachDataHandler([&] { return other; }), recorder);
}

TEST(NodeRuntimeTest, CallsThatDoNotFitTheRoleAreInvalidArgument) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  Node& scheduler = job.scheduler();
  Node& server = *job.node(0);
  Node& worker = *job.node(1);
  EXPECT_EQ(scheduler.id(), kSchedulerId);
  EXPECT_EQ(scheduler.role(), Role::kScheduler);
  EXPECT_TRUE(StatusIs(scheduler.Barrier(BarrierGroup::kAll, seconds(1)), StatusCode::kInvalidArgument));
  EXPECT_TRUE(StatusIs(scheduler.DeclareTable(Table("t"), seconds(1)).status(), StatusCode::kInvalidArgument));
  EXPECT_TRUE(StatusIs(scheduler.Finalize(seconds(1)), StatusCode::kInvalidArgument));
  EXPECT_TRUE(StatusIs(server.Finalize(seconds(1)), StatusCode::kInvalidArgument, "only workers finalize"));
  EXPECT_TRUE(StatusIs(worker.Run(), StatusCode::kInvalidArgument, "workers do not Run"));

  KVServer<float> server_on_worker(worker);
  EXPECT_TRUE(StatusIs(server_on_worker.status(), StatusCode::kInvalidArgument, "KVServer needs a server node"));
  KVServer<float> server_on_scheduler(scheduler);
  EXPECT_TRUE(StatusIs(server_on_scheduler.status(), StatusCode::kInvalidArgument));
  KVWorker<float> worker_on_server(server);
  EXPECT_TRUE(StatusIs(worker_on_server.Push(TableId(1), std::vector<Key>{1}, std::vector<float>{1}).status(),
                       StatusCode::kInvalidArgument, "KVWorker needs a worker node"));
  EXPECT_TRUE(StatusIs(worker_on_server.Wait(Timestamp(1)), StatusCode::kInvalidArgument));
  EXPECT_TRUE(StatusIs(worker_on_server.ServerOf(TableId(1), 1).status(), StatusCode::kInvalidArgument));
  // None of this hurt the job.
  EXPECT_OK(server.health());
  EXPECT_OK(worker.health());
}

// A data message from `from` to `to`, as a worker's request of table 1 routed with `epoch`.
transport::Message Request(NodeRuntime& from, NodeId to, Epoch epoch, int64_t id) {
  transport::Message m;
  m.header.type = transport::MessageType::kPull;
  m.header.sender = from.id();
  m.header.receiver = to;
  m.header.table = TableId(1);
  m.header.request_id = id;
  m.header.epoch = epoch;
  m.frames.resize(3);
  return m;
}

Scheduler& SchedulerOf(InprocJob& job) { return *internal::NodeAccess::Scheduler(job.scheduler()); }

TEST(NodeRuntimeTest, ViewChangesSwapTheRoutingWhileReadersRoute) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(3, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Server(1), Server(2), Worker(0)}));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(3));
  EXPECT_EQ(worker->routing()->epoch(), Epoch(1));
  EXPECT_EQ(worker->routing()->ring().servers(), (std::vector<uint32_t>{0, 1, 2}));
  // Readers take snapshots while the views change under them: each snapshot is whole (its ring
  // is its view's ring) and epochs never go back.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, torn{0}, backwards{0};
  std::vector<std::jthread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      uint64_t last = 0;
      while (!stop.load()) {
        std::shared_ptr<const Routing> snap = worker->routing();
        std::vector<uint32_t> owners;
        for (const RingSegment& seg : snap->view().ring) owners.push_back(seg.server);
        std::sort(owners.begin(), owners.end());
        owners.erase(std::unique(owners.begin(), owners.end()), owners.end());
        if (owners != snap->ring().servers()) ++torn;
        if (snap->epoch().value < last) ++backwards;
        last = snap->epoch().value;
        ++reads;
      }
    });
  }
  const std::vector<std::vector<uint32_t>> rings = {{0, 1}, {1, 2}, {2}, {0, 1, 2}, {0}};
  for (size_t i = 0; i < rings.size(); ++i) {
    Result<Epoch> e = SchedulerOf(job).NewView(rings[i], seconds(30));
    ASSERT_OK(e);
    EXPECT_EQ(*e, Epoch(2 + i));
    ASSERT_OK(SchedulerOf(job).SendView({}, seconds(30)));
    // SendView returned: every node confirmed it routes by the new view.
    for (size_t n = 0; n < 4; ++n) {
      EXPECT_EQ(internal::NodeAccess::Runtime(*job.node(n))->routing()->epoch(), *e);
    }
    std::vector<uint32_t> want = rings[i];
    std::sort(want.begin(), want.end());
    EXPECT_EQ(worker->routing()->ring().servers(), want);
  }
  stop = true;
  readers.clear();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(backwards.load(), 0u);
  // An older view is ignored; a bad ring is refused before anything is sent.
  cluster::ClusterView old = worker->routing()->view();
  old.epoch = Epoch(2);
  old.ring = {RingSegment{KeyRange{0, ~uint64_t{0}}, 1}};
  ASSERT_OK(worker->AdoptView(old));
  EXPECT_EQ(worker->routing()->epoch(), Epoch(6));
  EXPECT_TRUE(StatusIs(SchedulerOf(job).NewView({5}, seconds(30)).status(), StatusCode::kInvalidArgument,
                       "server 5 is not in the cluster"));
}

TEST(NodeRuntimeTest, AServerHoldsRequestsOfANewerViewUntilItLearnsItInEachSendersOrder) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Worker(0)}));
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto recorder = std::make_shared<pserver::testing::RecordingDataHandler>();
  server->AttachDataHandler([&] { return recorder; });
  server->StartServing();
  // Request 1 comes routed by epoch 2, which the server does not know yet; request 2 (epoch 1)
  // must wait behind it, and request 3 too.
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(2), 1)));
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), 2)));
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(2), 3)));
  ASSERT_OK(SchedulerOf(job).NewView({0}, seconds(30)));
  ASSERT_OK(SchedulerOf(job).SendView({server->id()}, seconds(30)));
  for (int64_t id : {1, 2, 3}) {
    std::optional<transport::Message> m = recorder->Next();
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->header.request_id, id);
  }
}

TEST(NodeRuntimeTest, ARequestOfAViewThatNeverComesIsRefusedAfterTheViewTimeout) {
  NodeOptions o = FastHeartbeats();
  o.view_timeout = milliseconds(200);
  InprocJob job(o);
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({Server(0), Worker(0)}));
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto on_server = std::make_shared<pserver::testing::RecordingDataHandler>();
  server->AttachDataHandler([&] { return on_server; });
  server->StartServing();
  auto on_worker = std::make_shared<pserver::testing::RecordingDataHandler>();
  worker->AttachDataHandler([&] { return on_worker; });
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(9), 1)));
  std::optional<transport::Message> reply = on_worker->Next();
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->header.is_reply());
  EXPECT_TRUE(StatusIs(CarriedError(*reply), StatusCode::kUnavailable,
                       "routed with the view of epoch 9, but " + server->DescribeNode(server->id()) +
                           " learned no view newer than epoch 1 within 200 ms"));
  EXPECT_OK(server->health());
}

TEST(NodeRuntimeTest, RepeatedAndReorderedDataMessagesReachTheHandlerOnceInOrder) {
  InprocJob job(FastHeartbeats());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  std::vector<std::unique_ptr<transport::Transport>> transports(2);
  auto faulty = std::make_unique<pserver::testing::InterceptingTransport>(job.NewTransport());
  pserver::testing::InterceptingTransport* faults = faulty.get();
  transports[1] = std::move(faulty);
  for (const Status& s : job.StartNodes({job.OptionsFor(Server(0)), job.OptionsFor(Worker(0))}, std::move(transports))) {
    ASSERT_OK(s);
  }
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto recorder = std::make_shared<pserver::testing::RecordingDataHandler>();
  server->AttachDataHandler([&] { return recorder; });
  server->StartServing();
  pserver::testing::FaultPolicy policy;
  policy.seed = std::random_device{}();
  std::printf("fault seed %llu\n", static_cast<unsigned long long>(policy.seed));
  policy.duplicate = 0.3;
  policy.delay = 0.3;
  faults->SetFaults(policy);
  constexpr int kRequests = 300;
  for (int i = 1; i <= kRequests; ++i) ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), i)));
  faults->SetFaults(pserver::testing::FaultPolicy{});  // flushes nothing: later sends move the delayed ones
  for (int i = kRequests + 1; i <= kRequests + 4; ++i) {
    ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), i)));
  }
  for (int i = 1; i <= kRequests + 4; ++i) {
    std::optional<transport::Message> m = recorder->Next();
    ASSERT_TRUE(m.has_value()) << i;
    ASSERT_EQ(m->header.request_id, i) << "seed " << policy.seed;
  }
  const pserver::testing::FaultCounts counts = faults->fault_counts();
  EXPECT_GT(counts.duplicated, 0u);
  EXPECT_GT(counts.delayed, 0u);
}

TEST(NodeRuntimeTest, ADataMessageThatNeverArrivesFailsTheReceiverAfterTheViewTimeout) {
  NodeOptions o = FastHeartbeats();
  o.view_timeout = milliseconds(200);
  InprocJob job(o);
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  std::vector<std::unique_ptr<transport::Transport>> transports(2);
  auto faulty = std::make_unique<pserver::testing::InterceptingTransport>(job.NewTransport());
  pserver::testing::InterceptingTransport* faults = faulty.get();
  transports[1] = std::move(faulty);
  for (const Status& s : job.StartNodes({job.OptionsFor(Server(0)), job.OptionsFor(Worker(0))}, std::move(transports))) {
    ASSERT_OK(s);
  }
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto recorder = std::make_shared<pserver::testing::RecordingDataHandler>();
  server->AttachDataHandler([&] { return recorder; });
  server->StartServing();
  pserver::testing::FaultPolicy drop_first;
  drop_first.drop = 1;
  drop_first.applies = [n = std::make_shared<int>(0)](const transport::Message& m) {
    return transport::IsDataMessage(m.header.type) && ++*n == 1;
  };
  faults->SetFaults(drop_first);
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), 1)));
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), 2)));
  Status ended = server->WaitForShutdown(seconds(30));
  EXPECT_TRUE(StatusIs(ended, StatusCode::kUnavailable,
                       "data message 1 of " + server->DescribeNode(worker->id()) + " never arrived within 200 ms"));
  EXPECT_EQ(faults->fault_counts().dropped, 1u);
}

// A data handler whose OnData blocks until `release` opens (a long apply).
class BlockingHandler final : public DataHandler {
 public:
  explicit BlockingHandler(pserver::testing::Gate& release) : release_(release) {}
  void OnData(transport::Message&&) override {
    entered.Open();
    release_.Wait(seconds(120));
    done.Open();
  }
  void OnNodeFailed(const NodeFailure&) override {}
  void OnShutdown(const Status&) override {}
  pserver::testing::Gate entered, done;

 private:
  pserver::testing::Gate& release_;
};

// A slow apply does not delay heartbeats, on a fake clock: while the server's data thread is
// held in an apply, the server's clock moves three heartbeat timeouts on, one heartbeat interval
// at a time; each heartbeat goes out and its answer is read at once (the receive thread only
// receives), so the server never finds the scheduler silent. Were data handled on the receive
// thread, the answers would wait unread behind the apply: the count below would stall (the
// test's hang guard fails it) and the server would fail itself after one timeout.
TEST(NodeRuntimeTest, ASlowApplyDoesNotDelayHeartbeats) {
  // Declared before the job, which they outlive: its nodes' threads use them until it ends.
  pserver::testing::Gate release;
  pserver::testing::FakeClock clock;
  struct Acks {
    std::mutex mu;
    std::condition_variable cv;
    int n = 0;
    bool Await(int want) {  // a hang guard, not a timed assertion
      std::unique_lock lock(mu);
      return cv.wait_for(lock, seconds(30), [&] { return n >= want; });
    }
  };
  auto acks = std::make_shared<Acks>();
  // The scheduler (real time) waits long for heartbeats: the server sends them as the test moves
  // its fake clock. The server's own times are on that clock.
  NodeOptions patient = FastHeartbeats();
  patient.heartbeat_timeout = seconds(120);
  InprocJob job(patient);
  pserver::testing::OpenOnExit release_on_exit(release);
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  NodeOptions server_options = job.OptionsFor(Server(0));
  server_options.heartbeat_interval = milliseconds(100);
  server_options.heartbeat_timeout = milliseconds(1000);
  auto on_receive = [acks](const transport::Message& m) {
    if (m.header.type != transport::MessageType::kHeartbeatAck) return;
    {
      std::lock_guard lock(acks->mu);
      ++acks->n;
    }
    acks->cv.notify_all();
  };
  std::vector<std::unique_ptr<transport::Transport>> transports;
  transports.push_back(std::make_unique<pserver::testing::ObservingTransport>(job.NewTransport(), nullptr, on_receive));
  transports.push_back(nullptr);
  for (const Status& s : job.StartNodes({server_options, job.OptionsFor(Worker(0))}, std::move(transports),
                                        {&clock, nullptr})) {
    ASSERT_OK(s);
  }
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto handler = std::make_shared<BlockingHandler>(release);
  server->AttachDataHandler([&] { return handler; });
  server->StartServing();
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), 1)));
  ASSERT_TRUE(handler->entered.Wait(seconds(30)));
  int seen = 0;
  {
    std::lock_guard lock(acks->mu);
    seen = acks->n;
  }
  for (int beat = 1; beat <= 30; ++beat) {  // 3 s of the server's time: three heartbeat timeouts
    ASSERT_TRUE(clock.AwaitWaiters(1));     // the heartbeat timer waits for its next beat
    clock.Advance(milliseconds(100));
    ASSERT_TRUE(acks->Await(seen + beat)) << "beat " << beat << ": the heartbeat was not answered and read";
    ASSERT_OK(server->health()) << "beat " << beat;
  }
  EXPECT_FALSE(handler->done.Wait(milliseconds(0)));  // the apply lasted throughout
  release.Open();
  ASSERT_TRUE(handler->done.Wait(seconds(60)));
  EXPECT_OK(server->health());
  EXPECT_OK(worker->health());
}

// A data thread that takes nothing while the queue is full (an apply that never returns): the
// receive thread waits for room, and after heartbeat_timeout the node fails naming that, instead
// of hanging or blaming a scheduler whose answers it stopped reading.
TEST(NodeRuntimeTest, ADataThreadThatTakesNothingFailsTheNodeAfterHeartbeatTimeout) {
  pserver::testing::Gate release;  // outlives the job, whose data thread waits on it
  InprocJob job(FastHeartbeats());
  pserver::testing::OpenOnExit release_on_exit(release);
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  NodeOptions server_options = job.OptionsFor(Server(0));
  server_options.data_queue_limit = 2;
  for (const Status& s : job.StartNodes({server_options, job.OptionsFor(Worker(0))})) ASSERT_OK(s);
  NodeRuntime* server = internal::NodeAccess::Runtime(*job.node(0));
  NodeRuntime* worker = internal::NodeAccess::Runtime(*job.node(1));
  auto handler = std::make_shared<BlockingHandler>(release);
  server->AttachDataHandler([&] { return handler; });
  server->StartServing();
  ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), 1)));
  ASSERT_TRUE(handler->entered.Wait(seconds(30)));
  // Two fill the queue; the third keeps the receive thread waiting for room.
  for (int i = 2; i <= 4; ++i) ASSERT_OK(worker->SendData(Request(*worker, server->id(), Epoch(1), i)));
  Status ended = server->WaitForShutdown(seconds(60));
  EXPECT_TRUE(StatusIs(ended, StatusCode::kUnavailable,
                       "the data thread took none of its 2 queued messages for " +
                           std::to_string(server_options.heartbeat_timeout.count()) + " ms"));
  release.Open();
  EXPECT_TRUE(handler->done.Wait(seconds(60)));
}

}  // namespace
}  // namespace pserver::cluster