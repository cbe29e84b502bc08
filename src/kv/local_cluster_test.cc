// The in-process cluster harness itself: a job runs to its end over either transport, errors of
// worker bodies come back naming the worker, server setups live as long as the servers run, and
// a cluster destroyed without RunWorkers stops cleanly.
#include "kv/local_cluster.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <vector>

#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

LocalClusterOptions Options(bool inproc, uint32_t servers, uint32_t workers) {
  LocalClusterOptions o;
  o.inproc = inproc;
  o.num_servers = servers;
  o.num_workers = workers;
  return o;
}

class LocalClusterTest : public ::testing::TestWithParam<bool> {};

TEST_P(LocalClusterTest, RunsAJobToItsEnd) {
  auto c = LocalCluster::Start(Options(GetParam(), 2, 3));
  ASSERT_OK(c);
  LocalCluster& cluster = **c;
  ASSERT_EQ(cluster.num_workers(), 3u);
  std::set<uint32_t> ranks;
  for (uint32_t i = 0; i < cluster.num_workers(); ++i) {
    EXPECT_EQ(cluster.worker(i).role(), Role::kWorker);
    EXPECT_EQ(cluster.worker(i).num_servers(), 2u);
    ranks.insert(cluster.worker(i).rank().value);
  }
  EXPECT_EQ(ranks, (std::set<uint32_t>{0, 1, 2}));
  std::atomic<int> bodies{0};
  ASSERT_OK(cluster.RunWorkers([&](Node& node) -> Status {
    bodies.fetch_add(1);
    TableSpec spec;
    spec.name = "t";
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(spec));
    KVWorker<float> w(node);
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>{1, 2}, std::vector<float>{1, 2}));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    return node.Barrier(BarrierGroup::kWorkers);
  }));
  EXPECT_EQ(bodies.load(), 3);
  for (uint32_t i = 0; i < cluster.num_workers(); ++i) {
    EXPECT_EQ(cluster.worker(i).health().code(), StatusCode::kAborted);  // the job has ended
  }
}

TEST_P(LocalClusterTest, RunWorkersReturnsTheErrorOfABodyNamingTheWorker) {
  auto c = LocalCluster::Start(Options(GetParam(), 1, 2));
  ASSERT_OK(c);
  Status s = (*c)->RunWorkers([](Node& node) -> Status {
    if (node.rank().value == 1) return Status::NotFound("the thing worker 1 looked for");
    return Status::Ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("worker 1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("the thing worker 1 looked for"), std::string::npos) << s;
}

TEST_P(LocalClusterTest, ServerSetupRunsOncePerServerAndLivesUntilTheServerEnds) {
  struct Tracker {
    explicit Tracker(std::atomic<int>* alive) : alive(alive) { alive->fetch_add(1); }
    ~Tracker() { alive->fetch_sub(1); }
    std::atomic<int>* alive;
  };
  std::atomic<int> setups{0}, alive{0};
  auto c = LocalCluster::Start(Options(GetParam(), 3, 1), [&](Node& server) -> std::shared_ptr<void> {
    setups.fetch_add(1);
    EXPECT_EQ(server.role(), Role::kServer);
    return std::make_shared<Tracker>(&alive);
  });
  ASSERT_OK(c);
  EXPECT_EQ(setups.load(), 3);
  EXPECT_EQ(alive.load(), 3);
  ASSERT_OK((*c)->RunWorkers([&](Node&) -> Status {
    EXPECT_EQ(alive.load(), 3);  // the servers still run while the workers work
    return Status::Ok();
  }));
  EXPECT_EQ(alive.load(), 0);  // released when the servers' Run returned
}

TEST_P(LocalClusterTest, DestroyingWithoutRunWorkersStopsTheJob) {
  auto c = LocalCluster::Start(Options(GetParam(), 2, 2));
  ASSERT_OK(c);
  EXPECT_OK((*c)->worker(0).health());
  c = Status::Aborted("dropped");  // destroys the cluster: every node is stopped and joined
}

TEST_P(LocalClusterTest, StartRefusesAJobWithoutServers) {
  auto c = LocalCluster::Start(Options(GetParam(), 0, 1));
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << c.status();
}

INSTANTIATE_TEST_SUITE_P(Transports, LocalClusterTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "inproc" : "zmq");
                         });

}  // namespace
}  // namespace pserver::kv
