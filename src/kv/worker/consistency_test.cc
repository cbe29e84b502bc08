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
#include "kv/node_access.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/intercepting_transport.h"
#include "kv/local_cluster.h"
#include "testing/test_util.h"

namespace pserver {
namespace {

using pserver::testing::Direction;
using pserver::testing::Gate;
using pserver::testing::InterceptingTransport;
using pserver::testing::IsRequest;
using pserver::kv::LocalCluster;
using pserver::kv::LocalClusterOptions;
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

template <typename T>
std::vector<T> ToVector(const SharedArray<T>& a) {
  return {a.begin(), a.end()};
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

// ---- with an intercepting transport under every server and worker ----------------------------

// A LocalCluster over inproc whose servers' and workers' transports are InterceptingTransports,
// indexed by rank (the rank hints the harness gives are honoured).
struct Intercepted {
  std::vector<InterceptingTransport*> servers;
  std::vector<InterceptingTransport*> workers;
};

std::unique_ptr<LocalCluster> StartIntercepted(uint32_t servers, uint32_t workers, Intercepted* out) {
  out->servers.assign(servers, nullptr);
  out->workers.assign(workers, nullptr);
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = servers;
  o.num_workers = workers;
  o.wrap_transport = [out](Role role, uint32_t hint, std::unique_ptr<transport::Transport> inner)
      -> std::unique_ptr<transport::Transport> {
    if (role == Role::kScheduler) return inner;
    auto t = std::make_unique<InterceptingTransport>(std::move(inner));
    (role == Role::kServer ? out->servers : out->workers)[hint] = t.get();
    return t;
  };
  auto c = LocalCluster::Start(o);
  EXPECT_OK(c.status());
  if (!c.ok()) return nullptr;
  for (uint32_t i = 0; i < workers; ++i) EXPECT_EQ((*c)->worker(i).rank().value, i) << "rank hint not honoured";
  return std::move(c).value();
}

// Counts, at the server, the pull replies it sends, and remembers whether each was sent only
// after the server had received the slow worker's tick to `need` (observed in the server's own
// receive/send order, which is the order it processed them in). The slow worker names itself
// (set_slow) before it sends anything.
class PullReplyWitness {
 public:
  PullReplyWitness(InterceptingTransport* server, uint64_t need) : need_(need) {
    server->SetObserver([this](Direction d, const transport::Message& m) {
      const transport::Header& h = m.header;
      if (d == Direction::kReceive && h.type == transport::MessageType::kClock && h.sender.value == slow_ &&
          h.clock >= need_) {
        ticked_ = true;
      }
      if (d == Direction::kSend && h.type == transport::MessageType::kPull && h.is_reply()) {
        ++replies_;
        if (!ticked_) ++before_tick_;
      }
    });
  }
  int replies() const { return replies_; }
  int before_tick() const { return before_tick_; }
  void set_slow(NodeId id) { slow_ = id.value; }

 private:
  const uint64_t need_;
  std::atomic<uint32_t> slow_{0};
  // Written by the observer (under the wrapper's lock, one at a time), read by test threads.
  std::atomic<bool> ticked_{false};
  std::atomic<int> replies_{0}, before_tick_{0};
};

// Item 12 of issue 11, deterministically. Worker 0 is at clock c = s + 2 and pulls with
// staleness s: the pull needs every worker at clock >= c - s = 2. Worker 1 (the slow one) is at
// clock 0. The server must hold the pull -- counted by the pull replies the server sends -- while
// worker 1 pushes, ticks to 1 (still < 2), pushes again, and answer it only after worker 1's
// tick to 2; the value must include both pushes worker 1 made before that tick. Each step of
// worker 1 is a point in the server's order: worker 1 Waits for its push's reply, and the server
// handles one receive thread's messages in order, so once that reply is in, the server has
// handled everything that arrived before the push (the pull, the previous tick).
class StaleSynchronousTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(StaleSynchronousTest, HeldPullIsAnsweredOnlyAfterTheSlowWorkersTickAndIncludesItsPushes) {
  const int64_t s = GetParam();
  const uint64_t c = static_cast<uint64_t>(s) + 2;
  Intercepted net;
  auto cluster = StartIntercepted(1, 2, &net);
  ASSERT_NE(cluster, nullptr);
  InterceptingTransport* server = net.servers[0];
  PullReplyWitness witness(server, c - static_cast<uint64_t>(s));
  Gate pull_issued;
  std::atomic<int> replies_at_first_push{-1}, replies_at_first_tick{-1};
  SharedArray<float> pulled;
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    OpenOnExit open(pull_issued);
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetStaleness(t, s));
    if (node.rank().value == 0) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp own, kv.Push(t, std::vector<Key>{1}, std::vector<float>{1}));
      PSERVER_RETURN_IF_ERROR(kv.Wait(own));
      for (uint64_t i = 0; i < c; ++i) PSERVER_RETURN_IF_ERROR(kv.Clock().status());
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Pull(t, std::vector<Key>{1, 2}, &pulled));
      pull_issued.Open();
      PSERVER_RETURN_IF_ERROR(kv.Wait(p));
      return node.Barrier(BarrierGroup::kWorkers);
    }
    witness.set_slow(internal::NodeAccess::Runtime(node)->id());
    PSERVER_RETURN_IF_FALSE(pull_issued.Wait(std::chrono::seconds(60)));
    // The pull reached the server (logged before the server handles it).
    PSERVER_RETURN_IF_FALSE(server->WaitFor(
        Direction::kReceive, [c](const transport::Header& h) { return h.type == transport::MessageType::kPull && h.clock == c; },
        1));
    PSERVER_ASSIGN_OR_RETURN(Timestamp q1, kv.Push(t, std::vector<Key>{2}, std::vector<float>{10}));
    PSERVER_RETURN_IF_ERROR(kv.Wait(q1));  // the server handled the pull before this push
    replies_at_first_push = witness.replies();
    PSERVER_RETURN_IF_ERROR(kv.Clock().status());  // to c - s - 1: not enough
    PSERVER_ASSIGN_OR_RETURN(Timestamp q2, kv.Push(t, std::vector<Key>{2}, std::vector<float>{100}));
    PSERVER_RETURN_IF_ERROR(kv.Wait(q2));  // ... and that tick before this push
    replies_at_first_tick = witness.replies();
    PSERVER_RETURN_IF_ERROR(kv.Clock().status());  // to c - s: releases the pull
    return node.Barrier(BarrierGroup::kWorkers);
  }));
  EXPECT_EQ(replies_at_first_push, 0) << "the server answered the held pull before the slow worker ticked";
  EXPECT_EQ(replies_at_first_tick, 0) << "the server answered the pull at clock " << c << " (staleness " << s
                                      << ") when the slow worker was at clock " << c - s - 1;
  EXPECT_EQ(witness.replies(), 1);
  EXPECT_EQ(witness.before_tick(), 0) << "a pull reply left the server before the slow worker's tick to " << c - s;
  EXPECT_EQ(ToVector(pulled), (std::vector<float>{1, 110}));
}

INSTANTIATE_TEST_SUITE_P(Staleness, StaleSynchronousTest, ::testing::Values(0, 1, 3),
                         [](const auto& info) {
                           std::string name = "staleness";
                           name += std::to_string(info.param);
                           return name;
                         });

// ClockTo jumps a worker's clock (a job resumed from a checkpoint goes on at its clock): a
// bulk-synchronous pull at clock 1000 is answered once both workers jumped there, and includes
// what each pushed before its jump; a clock never goes back.
TEST(ConsistencyTest, ClockToJumpsForwardOnlyAndReleasesStalePulls) {
  Intercepted net;
  auto cluster = StartIntercepted(1, 2, &net);
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetStaleness(t, 0));
    const Key mine = node.rank().value;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pushed, kv.Push(t, std::vector<Key>{mine}, std::vector<float>{1}));
    PSERVER_ASSIGN_OR_RETURN(uint64_t now, kv.ClockTo(1000));
    PSERVER_RETURN_IF_FALSE(now == 1000 && kv.clock() == 1000);
    Result<uint64_t> back = kv.ClockTo(999);
    PSERVER_RETURN_IF_FALSE(back.status().code() == StatusCode::kInvalidArgument);
    PSERVER_RETURN_IF_ERROR(kv.Wait(pushed));
    SharedArray<float> pulled;
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Pull(t, std::vector<Key>{0, 1}, &pulled));
    PSERVER_RETURN_IF_ERROR(kv.Wait(p));
    PSERVER_RETURN_IF_FALSE(ToVector(pulled) == (std::vector<float>{1, 1}));
    return node.Barrier(BarrierGroup::kWorkers);
  }));
}

// Item 14 of issue 11: per-sender order behind a held stale-synchronous pull. Worker 0's pull of
// key 1 at clock 2 (staleness 1) waits at the server for worker 1; behind it, without Wait,
// worker 0 pushes key 1 and pulls it again, and pushes and pulls key 5 of a table without
// staleness, all to the same (only) server. The first pull must not see the push issued after
// it, the second must, and nothing of worker 0 may be answered before the held pull.
TEST(ConsistencyTest, PushAndPullBehindAHeldStalePullKeepTheirOrder) {
  Intercepted net;
  auto cluster = StartIntercepted(1, 2, &net);
  ASSERT_NE(cluster, nullptr);
  InterceptingTransport* server = net.servers[0];
  Gate issued;
  std::atomic<uint32_t> fast_id{0};
  std::atomic<int> answered_while_held{-1};
  std::vector<SharedArray<float>> got(3);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    OpenOnExit open(issued);
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("ssp")));
    PSERVER_ASSIGN_OR_RETURN(TableId u, node.DeclareTable(FloatTable("plain")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetStaleness(t, 1));
    if (node.rank().value == 0) {
      fast_id = internal::NodeAccess::Runtime(node)->id().value;
      PSERVER_ASSIGN_OR_RETURN(Timestamp first, kv.Push(t, std::vector<Key>{1}, std::vector<float>{1}));
      PSERVER_RETURN_IF_ERROR(kv.Wait(first));
      PSERVER_RETURN_IF_ERROR(kv.Clock().status());
      PSERVER_RETURN_IF_ERROR(kv.Clock().status());
      std::vector<Timestamp> ts;
      auto keep = [&ts](Result<Timestamp> r) -> Status {
        PSERVER_RETURN_IF_ERROR(r.status());
        ts.push_back(*r);
        return Status::Ok();
      };
      PSERVER_RETURN_IF_ERROR(keep(kv.Pull(t, std::vector<Key>{1}, &got[0])));  // held
      PSERVER_RETURN_IF_ERROR(keep(kv.Push(t, std::vector<Key>{1}, std::vector<float>{2})));
      PSERVER_RETURN_IF_ERROR(keep(kv.Pull(t, std::vector<Key>{1}, &got[1])));
      PSERVER_RETURN_IF_ERROR(keep(kv.Push(u, std::vector<Key>{5}, std::vector<float>{7})));
      PSERVER_RETURN_IF_ERROR(keep(kv.Pull(u, std::vector<Key>{5}, &got[2])));
      issued.Open();
      for (Timestamp x : ts) PSERVER_RETURN_IF_ERROR(kv.Wait(x));
      return node.Barrier(BarrierGroup::kWorkers);
    }
    PSERVER_RETURN_IF_FALSE(issued.Wait(std::chrono::seconds(60)));
    const uint32_t fast = fast_id;
    // All five of worker 0's requests reached the server; then worker 1's own push is a point
    // in the server's order after them.
    PSERVER_RETURN_IF_FALSE(server->WaitFor(
        Direction::kReceive,
        [fast](const transport::Header& h) {
          return h.sender.value == fast && transport::IsDataMessage(h.type) && h.type != transport::MessageType::kClock;
        },
        6));  // the first push and the five behind the pull
    PSERVER_ASSIGN_OR_RETURN(Timestamp mine, kv.Push(u, std::vector<Key>{9}, std::vector<float>{1}));
    PSERVER_RETURN_IF_ERROR(kv.Wait(mine));
    answered_while_held = static_cast<int>(server->Count(Direction::kSend, [fast](const transport::Header& h) {
      return h.receiver.value == fast && h.is_reply();
    }));
    PSERVER_RETURN_IF_ERROR(kv.Clock().status());  // releases the held pull and what waits behind it
    return node.Barrier(BarrierGroup::kWorkers);
  }));
  EXPECT_EQ(answered_while_held, 1) << "only worker 0's first push may be answered while its pull is held";
  EXPECT_EQ(ToVector(got[0]), (std::vector<float>{1})) << "the held pull saw a push issued after it";
  EXPECT_EQ(ToVector(got[1]), (std::vector<float>{3}));
  EXPECT_EQ(ToVector(got[2]), (std::vector<float>{7}));
}

// Item 13 of issue 11: bounded delay tau, with request 1 held. The server's reply to request 1
// is held in the server's transport, so request 1 stays unfinished: exactly tau + 1 requests may
// reach the server (kEventual: all), request tau + 2 may be sent only once request 1 completes,
// which happens only when the test releases that reply.
class BoundedDelayHeldTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(BoundedDelayHeldTest, ExactlyTauPlusOneRequestsReachTheServerUntilTheFirstCompletes) {
  const int64_t tau = GetParam();
  constexpr int64_t kRequests = 8;
  const int64_t expected = tau == kEventual ? kRequests : std::min(kRequests, tau + 1);
  Intercepted net;
  auto cluster = StartIntercepted(1, 1, &net);
  ASSERT_NE(cluster, nullptr);
  InterceptingTransport* server = net.servers[0];
  InterceptingTransport* worker = net.workers[0];
  server->Hold([](const transport::Message& m) {
    return m.header.type == transport::MessageType::kPush && m.header.is_reply() && m.header.request_id == 1;
  });
  std::atomic<bool> first_done{false};
  std::atomic<int> next_sent_before_first_done{0};
  worker->SetObserver([&](Direction d, const transport::Message& m) {
    if (tau != kEventual && d == Direction::kSend && m.header.type == transport::MessageType::kPush &&
        m.header.request_id == tau + 2 && !first_done) {
      ++next_sent_before_first_done;
    }
  });
  size_t sent_while_held = 0, received_while_held = 0, held = 0;
  auto is_push = IsRequest(transport::MessageType::kPush);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(FloatTable("w")));
    KVWorker<float> kv(node);
    PSERVER_RETURN_IF_ERROR(kv.SetMaxDelay(t, tau));
    std::vector<Timestamp> ts;
    for (int64_t i = 1; i <= kRequests; ++i) {
      RequestOptions opts;
      if (i == 1) opts = RequestOptions([&first_done](const Status&) { first_done = true; });
      PSERVER_ASSIGN_OR_RETURN(Timestamp x, kv.Push(t, std::vector<Key>{static_cast<Key>(i)}, std::vector<float>{1}, opts));
      PSERVER_RETURN_IF_FALSE(x.value == i);  // requests are numbered from 1 on a fresh worker
      ts.push_back(x);
    }
    PSERVER_RETURN_IF_FALSE(server->WaitFor(Direction::kReceive, is_push, static_cast<size_t>(expected)));
    // The server applies on its data thread: its reply to request 1 is held once it is sent.
    PSERVER_RETURN_IF_FALSE(server->WaitForHeld(1));
    // Requests 2 .. expected complete; their completions may start nothing (request 1 is not
    // finished). A barrier is a point after those completions' work on the data thread.
    for (int64_t i = 2; i <= expected; ++i) PSERVER_RETURN_IF_ERROR(kv.Wait(ts[i - 1]));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    sent_while_held = worker->Count(Direction::kSend, is_push);
    received_while_held = server->Count(Direction::kReceive, is_push);
    held = server->num_held();
    PSERVER_RETURN_IF_ERROR(server->Release().status());
    for (Timestamp x : ts) PSERVER_RETURN_IF_ERROR(kv.Wait(x));
    return Status::Ok();
  }));
  EXPECT_EQ(sent_while_held, static_cast<size_t>(expected)) << "requests the worker sent while request 1 was unfinished";
  EXPECT_EQ(received_while_held, static_cast<size_t>(expected));
  EXPECT_EQ(held, 1u);
  EXPECT_EQ(next_sent_before_first_done, 0) << "request " << tau + 2 << " was sent before request 1 completed";
  EXPECT_EQ(server->Count(Direction::kReceive, is_push), static_cast<size_t>(kRequests));
}

INSTANTIATE_TEST_SUITE_P(Taus, BoundedDelayHeldTest, ::testing::Values(0, 1, 3, kEventual), [](const auto& info) {
  std::string name = info.param == kEventual ? "eventual" : "tau";
  if (info.param != kEventual) name += std::to_string(info.param);
  return name;
});

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
