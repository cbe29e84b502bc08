// The scheduler's part of the control plane over the inproc transport: registration and ranks,
// barriers, the end of a job, and a cluster that does not form. The scheduler's transport is
// observed (cluster_test_util.h), so the tests wait for protocol events, never for time.
#include "cluster/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "cluster/cluster_test_util.h"
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

constexpr InprocJob::NodeSpec kServer{Role::kServer, -1};
constexpr InprocJob::NodeSpec kWorker{Role::kWorker, -1};
InprocJob::NodeSpec Server(int64_t hint) { return {Role::kServer, hint}; }
InprocJob::NodeSpec Worker(int64_t hint) { return {Role::kWorker, hint}; }

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

// Counts, per message type, what the scheduler received and sent, and lets a test wait for a
// count to be reached.
class Traffic {
 public:
  ObservingTransport::Observer OnSend() {
    return [this](const Message& m) { Record(sent_, m); };
  }
  ObservingTransport::Observer OnReceive() {
    return [this](const Message& m) { Record(received_, m); };
  }
  // Messages of `type` (and barrier group `aux`, for barrier messages) so far.
  int Received(MessageType type, uint64_t aux = 0) {
    std::lock_guard lock(mu_);
    return Count(received_, type, aux);
  }
  int Sent(MessageType type, uint64_t aux = 0) {
    std::lock_guard lock(mu_);
    return Count(sent_, type, aux);
  }
  // Receivers of the messages of `type` sent so far.
  std::vector<NodeId> SentTo(MessageType type) {
    std::lock_guard lock(mu_);
    std::vector<NodeId> out;
    for (const auto& h : sent_) {
      if (h.type == type) out.push_back(h.receiver);
    }
    return out;
  }
  // Blocks until the scheduler received `n` messages of `type` (and `aux`); false after a
  // generous bound (the test then fails instead of hanging).
  bool AwaitReceived(MessageType type, int n, uint64_t aux = 0) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(30), [&] { return Count(received_, type, aux) >= n; });
  }

 private:
  void Record(std::vector<transport::Header>& log, const Message& m) {
    std::lock_guard lock(mu_);
    log.push_back(m.header);
    cv_.notify_all();
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

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<transport::Header> received_;  // guarded by mu_
  std::vector<transport::Header> sent_;      // guarded by mu_
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

TEST(SchedulerTest, RegistrationBeyondTheJobSizeIsRefused) {
  InprocJob job(Quiet());
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  ASSERT_OK(job.StartAll({kServer, kWorker}));
  // The cluster has formed; one more worker is told so rather than left waiting.
  std::vector<Status> extra = job.StartNodes({job.OptionsFor(kWorker)});
  EXPECT_TRUE(StatusIs(extra[0], StatusCode::kAborted, "registration refused"));
  EXPECT_TRUE(StatusIs(extra[0], StatusCode::kAborted, "the job already has its 1 workers"));
  // The job goes on.
  EXPECT_OK(job.node(1)->DeclareTable(SomeTable(), seconds(30)));
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
                       "barrier of all: no answer from the scheduler within 20 ms"));
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

}  // namespace
}  // namespace pserver::cluster
