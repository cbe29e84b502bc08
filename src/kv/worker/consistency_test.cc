// The worker's consistency models (pserver/kv_worker.h, "Consistency") on an in-process
// cluster: bounded delay and explicit dependencies, observed as the order of events -- a
// request reaching the server versus a request completing at the worker -- recorded in one
// log shared by the server's handler and the worker's callbacks; and stale-synchronous pulls
// across two workers. No sleeps and no timed assertions: the checks are on event order.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/local_cluster.h"
#include "testing/test_util.h"

namespace pserver {
namespace {

using pserver::testing::Gate;
using pserver::testing::LocalCluster;
using pserver::testing::LocalClusterOptions;
using pserver::testing::OpenOnExit;
using pserver::testing::StatusIs;

// Which requests of the (one) worker reached the server, and which completed at the worker.
class EventLog {
 public:
  void Arrived(int64_t ts) {
    std::lock_guard lock(mu_);
    // Record, per arriving request, the requests finished at that moment.
    arrivals_.push_back({ts, done_});
  }
  void Done(int64_t ts) {
    std::lock_guard lock(mu_);
    done_.insert(ts);
  }
  // The first arrival of a request t while some request <= t - tau - 1 was unfinished.
  std::string FirstViolation(int64_t tau) const {
    std::lock_guard lock(mu_);
    for (const auto& [ts, done] : arrivals_) {
      for (int64_t d = 1; d <= ts - tau - 1; ++d) {
        if (!done.contains(d)) return "request " + std::to_string(ts) + " started before " + std::to_string(d) + " finished";
      }
    }
    return "";
  }
  // The largest number of requests started and unfinished at any arrival.
  int64_t MaxInFlight() const {
    std::lock_guard lock(mu_);
    int64_t most = 0;
    for (const auto& [ts, done] : arrivals_) {
      int64_t unfinished = 0;
      for (int64_t d = 1; d <= ts; ++d) unfinished += done.contains(d) ? 0 : 1;
      most = std::max(most, unfinished);
    }
    return most;
  }
  // Whether request `dep` had finished when request `ts` arrived.
  bool FinishedBeforeArrival(int64_t dep, int64_t ts) const {
    std::lock_guard lock(mu_);
    for (const auto& [t, done] : arrivals_) {
      if (t == ts) return done.contains(dep);
    }
    return false;
  }
  size_t num_arrivals() const {
    std::lock_guard lock(mu_);
    return arrivals_.size();
  }

 private:
  mutable std::mutex mu_;
  std::set<int64_t> done_;
  std::vector<std::pair<int64_t, std::set<int64_t>>> arrivals_;
};

// A server that logs each arrival and then answers like the sum store: pushes are ignored,
// pulls return zeros (the order of events is what these tests check).
std::unique_ptr<LocalCluster> StartLoggedCluster(EventLog* log, uint32_t workers = 1) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_workers = workers;
  auto c = LocalCluster::Start(o, [log](Node& server) -> std::shared_ptr<void> {
    return std::make_shared<KVServer<float>>(
        server, [log](const RequestMeta& meta, const KVPairs<float>& req, KVPairs<float>* resp) {
          log->Arrived(meta.timestamp.value);
          if (meta.pull) resp->vals = SharedArray<float>(req.keys.size() * meta.width);
          return Status::Ok();
        });
  });
  EXPECT_OK(c.status());
  return c.ok() ? std::move(c).value() : nullptr;
}

TableSpec FloatTable(std::string name) {
  TableSpec s;
  s.name = std::move(name);
  return s;
}

class BoundedDelayTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(BoundedDelayTest, NoRequestStartsBeforeItsDelayBoundAllows) {
  const int64_t tau = GetParam();
  EventLog log;
  auto cluster = StartLoggedCluster(&log);
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetMaxDelay(t, tau));
    std::vector<Timestamp> issued;
    for (int i = 0; i < 64; ++i) {
      // Requests are numbered from 1 in issue order on a fresh worker (DeclareTable issues none).
      const int64_t expected_ts = i + 1;
      RequestOptions opts([&log, expected_ts](const Status&) { log.Done(expected_ts); });
      Result<Timestamp> ts = i % 2 == 0
                                 ? kv.Push(t, std::vector<Key>{static_cast<Key>(i)}, std::vector<float>{1}, opts)
                                 : kv.Push(t, std::vector<Key>{static_cast<Key>(i), static_cast<Key>(i + 1000)},
                                           std::vector<float>{1, 2}, opts);
      PSERVER_RETURN_IF_ERROR(ts.status());
      PSERVER_RETURN_IF_FALSE(ts->value == expected_ts);
      issued.push_back(*ts);
    }
    for (Timestamp ts : issued) PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    return Status::Ok();
  }));
  EXPECT_EQ(log.num_arrivals(), 64u);
  EXPECT_EQ(log.FirstViolation(tau), "");
  EXPECT_LE(log.MaxInFlight(), tau + 1);
}

INSTANTIATE_TEST_SUITE_P(Taus, BoundedDelayTest, ::testing::Values(0, 1, 4),
                         [](const auto& info) { return "tau" + std::to_string(info.param); });

TEST(ConsistencyTest, SequentialPullSeesOwnPreviousPushWithDefaultStores) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 2;
  auto cluster = LocalCluster::Start(o);
  ASSERT_OK(cluster);
  ASSERT_OK((*cluster)->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetMaxDelay(t, 0));
    std::vector<Key> keys{3, 17, 99, 1000};
    std::vector<Timestamp> all;
    std::vector<SharedArray<float>> pulled(10);
    for (int round = 0; round < 10; ++round) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Push(t, std::vector<Key>(keys), std::vector<float>{1, 1, 1, 1}));
      PSERVER_ASSIGN_OR_RETURN(Timestamp q, kv.Pull(t, std::vector<Key>(keys), &pulled[round]));
      all.push_back(p);
      all.push_back(q);
    }
    for (Timestamp ts : all) PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    for (int round = 0; round < 10; ++round) {
      for (float v : pulled[round]) PSERVER_RETURN_IF_FALSE(v == static_cast<float>(round + 1));
    }
    return Status::Ok();
  }));
}

TEST(ConsistencyTest, ExplicitDependencyHoldsTheRequestAndThoseAfterIt) {
  EventLog log;
  auto cluster = StartLoggedCluster(&log);
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    // 1 and 2 eventual; 3 after 1; 4 eventual but after 3 in start order.
    std::vector<Timestamp> ts;
    for (int i = 0; i < 4; ++i) {
      RequestOptions opts([&log, i](const Status&) { log.Done(i + 1); });
      if (i == 2) opts.after = {Timestamp(1)};
      PSERVER_ASSIGN_OR_RETURN(Timestamp t_i, kv.Push(t, std::vector<Key>{static_cast<Key>(i)}, std::vector<float>{1}, opts));
      ts.push_back(t_i);
    }
    for (Timestamp x : ts) PSERVER_RETURN_IF_ERROR(kv.Wait(x));
    // A dependency on a request never issued is refused at the call.
    RequestOptions bad;
    bad.after = {Timestamp(1000)};
    Result<Timestamp> r = kv.Push(t, std::vector<Key>{1}, std::vector<float>{1}, bad);
    PSERVER_RETURN_IF_FALSE(StatusIs(r.status(), StatusCode::kInvalidArgument, "dependency 1000"));
    return Status::Ok();
  }));
  EXPECT_EQ(log.num_arrivals(), 4u);
  // Request 3 arrived only after 1 finished, and so did 4, which may not overtake 3.
  EXPECT_TRUE(log.FinishedBeforeArrival(1, 3));
  EXPECT_TRUE(log.FinishedBeforeArrival(1, 4));
}

TEST(ConsistencyTest, BadDelayBoundsAndUnknownTablesAreRefused) {
  LocalClusterOptions o;
  o.inproc = true;
  auto cluster = LocalCluster::Start(o);
  ASSERT_OK(cluster);
  ASSERT_OK((*cluster)->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_FALSE(StatusIs(kv.SetMaxDelay(t, -2), StatusCode::kInvalidArgument, "below -1"));
    PSERVER_RETURN_IF_FALSE(StatusIs(kv.SetStaleness(t, -5), StatusCode::kInvalidArgument, "below -1"));
    PSERVER_RETURN_IF_FALSE(kv.SetMaxDelay(TableId(99), 1).code() == StatusCode::kNotFound);
    RequestOptions opts;
    opts.max_delay = -3;
    Result<Timestamp> r = kv.Push(t, std::vector<Key>{1}, std::vector<float>{1}, opts);
    PSERVER_RETURN_IF_FALSE(StatusIs(r.status(), StatusCode::kInvalidArgument, "delay bound -3"));
    return Status::Ok();
  }));
}

// Two workers; worker 1 is slow: it advances its clock only once worker 0's stale pull is
// issued. With staleness 1, worker 0's pull at clock 2 needs every worker at clock >= 1, so it
// cannot complete before worker 1 ticks.
TEST(ConsistencyTest, StalePullWaitsForTheSlowestWorker) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_workers = 2;
  o.num_servers = 2;
  auto cluster = LocalCluster::Start(o);
  ASSERT_OK(cluster);
  Gate pull_issued;
  std::atomic<bool> slow_ticked{false};
  std::atomic<bool> pull_done_before_tick{false};
  ASSERT_OK((*cluster)->RunWorkers([&](Node& node) -> Status {
    OpenOnExit open(pull_issued);
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetStaleness(t, 1));
    if (node.rank().value == 1) {
      PSERVER_RETURN_IF_FALSE(pull_issued.Wait(std::chrono::seconds(60)));
      slow_ticked = true;
      PSERVER_RETURN_IF_ERROR(kv.Clock().status());
      return node.Barrier(BarrierGroup::kWorkers);
    }
    PSERVER_ASSIGN_OR_RETURN(uint64_t c1, kv.Clock());
    PSERVER_ASSIGN_OR_RETURN(uint64_t c2, kv.Clock());
    PSERVER_RETURN_IF_FALSE(c1 == 1 && c2 == 2 && kv.clock() == 2);
    SharedArray<float> vals;
    std::vector<Timestamp> includes;
    RequestOptions opts([&](const Status&) {
      if (!slow_ticked) pull_done_before_tick = true;
    });
    opts.includes = &includes;
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Pull(t, std::vector<Key>{1, 2, 3, 500, 7000}, &vals, opts));
    pull_issued.Open();
    PSERVER_RETURN_IF_ERROR(kv.Wait(p));
    PSERVER_RETURN_IF_FALSE(vals.size() == 5);
    PSERVER_RETURN_IF_FALSE(includes.size() == 2);
    return node.Barrier(BarrierGroup::kWorkers);
  }));
  EXPECT_FALSE(pull_done_before_tick);
}

// The servers' vector clocks, as a pull sees them: after worker pushes numbered 1..n covering the
// pulled keys, the pull includes n for that worker.
TEST(ConsistencyTest, PullReportsWhichPushesItIncludes) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 3;
  auto cluster = LocalCluster::Start(o);
  ASSERT_OK(cluster);
  ASSERT_OK((*cluster)->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    std::vector<Key> keys;
    for (Key k = 0; k < 200; ++k) keys.push_back(k);
    Timestamp last;
    for (int i = 0; i < 3; ++i) {
      PSERVER_ASSIGN_OR_RETURN(last, kv.Push(t, std::vector<Key>(keys), std::vector<float>(keys.size(), 1.0f)));
    }
    SharedArray<float> vals;
    std::vector<Timestamp> includes;
    RequestOptions opts;
    opts.includes = &includes;
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Pull(t, std::vector<Key>(keys), &vals, opts));
    PSERVER_RETURN_IF_ERROR(kv.Wait(p));
    PSERVER_RETURN_IF_FALSE(includes.size() == 1);
    PSERVER_RETURN_IF_FALSE(includes[0] == last);
    for (float v : vals) PSERVER_RETURN_IF_FALSE(v == 3.0f);
    return Status::Ok();
  }));
}

}  // namespace
}  // namespace pserver
