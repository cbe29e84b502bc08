// KVWorker<T> (and KVServer<T> behind it) over an in-process cluster, parameterised over the
// transport (inproc, ZeroMQ on loopback) x servers (1, 3) x workers (1, 2). Every value checked
// is known in closed form: workers push small integers, so even float sums are exact.
#include "pserver/kv_worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "pserver/kv_server.h"
#include "kv/local_cluster.h"
#include "testing/test_util.h"

namespace pserver {
namespace {

using pserver::testing::Gate;
using pserver::kv::LocalCluster;
using pserver::kv::LocalClusterOptions;
using pserver::testing::OpenOnExit;
using pserver::kv::ServerSetup;
using pserver::testing::StatusIs;
using pserver::testing::TestSeed;

// `n` distinct keys drawn uniformly from [lo, hi], sorted.
std::vector<Key> RandomKeys(std::mt19937_64& rng, size_t n, Key lo, Key hi) {
  std::uniform_int_distribution<Key> dist(lo, hi);
  std::set<Key> keys;
  while (keys.size() < n) keys.insert(dist(rng));
  return {keys.begin(), keys.end()};
}

template <typename T>
std::vector<T> ToVector(const SharedArray<T>& a) {
  return {a.begin(), a.end()};
}

TableSpec Spec(std::string name, ValueType type, uint32_t width = 1) {
  TableSpec s;
  s.name = std::move(name);
  s.value_type = type;
  s.width = width;
  return s;
}

TableSpec VarSpec(std::string name, ValueType type) {
  TableSpec s = Spec(std::move(name), type);
  s.variable_length = true;
  return s;
}

// A server setup whose float handler sums pushes (like the default) and counts the keys of every
// request that reaches it, so that a test can tell exactly what was sent.
struct CountingServers {
  std::shared_ptr<std::atomic<uint64_t>> keys_received = std::make_shared<std::atomic<uint64_t>>(0);

  ServerSetup Setup() const {
    auto counter = keys_received;
    return [counter](Node& node) -> std::shared_ptr<void> {
      auto store = std::make_shared<std::map<std::pair<uint32_t, Key>, float>>();  // receive thread only
      return std::make_shared<KVServer<float>>(
          node, [counter, store](const RequestMeta& meta, const KVPairs<float>& req, KVPairs<float>* resp) {
            counter->fetch_add(req.keys.size());
            if (meta.width != 1) return Status::InvalidArgument("the counting server holds width-1 tables only");
            if (meta.push) {
              for (size_t i = 0; i < req.keys.size(); ++i) (*store)[{meta.table.value, req.keys[i]}] += req.vals[i];
            }
            if (meta.pull) {
              SharedArray<float> out(req.keys.size());
              for (size_t i = 0; i < req.keys.size(); ++i) out[i] = (*store)[{meta.table.value, req.keys[i]}];
              resp->vals = out;
            }
            return Status::Ok();
          });
    };
  }
};

class KVWorkerTest : public ::testing::TestWithParam<std::tuple<bool, uint32_t, uint32_t>> {
 protected:
  bool inproc() const { return std::get<0>(GetParam()); }
  uint32_t servers() const { return std::get<1>(GetParam()); }
  uint32_t workers() const { return std::get<2>(GetParam()); }

  std::unique_ptr<LocalCluster> StartCluster(ServerSetup setup = pserver::kv::DefaultServers) {
    LocalClusterOptions o;
    o.inproc = inproc();
    o.num_servers = servers();
    o.num_workers = workers();
    auto c = LocalCluster::Start(o, std::move(setup));
    EXPECT_OK(c);
    return c.ok() ? std::move(c).value() : nullptr;
  }
};

TEST_P(KVWorkerTest, PushesOfAllWorkersSumExactly) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const uint32_t num_workers = workers();
  constexpr int kRounds = 3;
  const std::vector<Key> pool = RandomKeys(rng, 300, 0, ~Key{0});
  const std::vector<Key> absent = RandomKeys(rng, 20, 0, ~Key{0});  // not in the pool (or summed if so)
  struct Round {
    std::vector<Key> keys;
    std::vector<float> f32;
    std::vector<int64_t> i64;
  };
  std::vector<std::vector<Round>> plan(num_workers, std::vector<Round>(kRounds));
  std::map<Key, int64_t> expected;
  for (Key k : pool) expected[k] = 0;
  for (Key k : absent) expected[k] += 0;
  for (uint32_t w = 0; w < num_workers; ++w) {
    for (Round& r : plan[w]) {
      for (Key k : pool) {
        if (rng() % 2 == 0) continue;  // a random sparse half of the pool
        const int64_t v = static_cast<int64_t>(rng() % 200) - 100;
        r.keys.push_back(k);
        r.f32.push_back(static_cast<float>(v));
        r.i64.push_back(v * 1'000'000'007LL);
        expected[k] += v;
      }
    }
  }
  std::vector<Key> all;
  for (const auto& [k, v] : expected) all.push_back(k);

  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId f, node.DeclareTable(Spec("sum_f32", ValueType::kFloat32)));
    PSERVER_ASSIGN_OR_RETURN(TableId i, node.DeclareTable(Spec("sum_i64", ValueType::kInt64)));
    KVWorker<float> wf(node);
    KVWorker<int64_t> wi(node);
    std::vector<Timestamp> pending_f, pending_i;
    for (const Round& r : plan[node.rank().value]) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp a, wf.Push(f, std::vector<Key>(r.keys), std::vector<float>(r.f32)));
      PSERVER_ASSIGN_OR_RETURN(Timestamp b, wi.Push(i, std::vector<Key>(r.keys), std::vector<int64_t>(r.i64)));
      pending_f.push_back(a);
      pending_i.push_back(b);
    }
    for (Timestamp ts : pending_f) PSERVER_RETURN_IF_ERROR(wf.Wait(ts));
    for (Timestamp ts : pending_i) PSERVER_RETURN_IF_ERROR(wi.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<float> got_f;
    SharedArray<int64_t> got_i;
    PSERVER_ASSIGN_OR_RETURN(Timestamp a, wf.Pull(f, std::vector<Key>(all), &got_f));
    PSERVER_ASSIGN_OR_RETURN(Timestamp b, wi.Pull(i, std::vector<Key>(all), &got_i));
    PSERVER_RETURN_IF_ERROR(wf.Wait(a));
    PSERVER_RETURN_IF_ERROR(wi.Wait(b));
    PSERVER_RETURN_IF_FALSE(got_f.size() == all.size() && got_i.size() == all.size());
    for (size_t k = 0; k < all.size(); ++k) {
      EXPECT_EQ(got_f[k], static_cast<float>(expected.at(all[k]))) << "key " << all[k];
      EXPECT_EQ(got_i[k], expected.at(all[k]) * 1'000'000'007LL) << "key " << all[k];
    }
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, PullReassemblesKeyOrderForEveryPlacement) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const KeyRange range{5'000'000, 5'000'000 + 99'999};
  struct Case {
    KeyPlacement placement;
    std::vector<Key> keys;
  };
  const std::vector<Case> cases = {
      {KeyPlacement::kHashed, RandomKeys(rng, 500, 0, 9'999)},  // dense small ids
      {KeyPlacement::kRange, RandomKeys(rng, 500, range.first, range.last)},
      {KeyPlacement::kIdentity, RandomKeys(rng, 500, 0, ~Key{0})},  // already spread
  };
  const int64_t weight = int64_t{workers()} * (workers() + 1) / 2;  // sum of (w + 1)
  auto value_of = [](Key k) { return static_cast<int64_t>(k % 1'000'003) + 1; };

  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const uint32_t num_servers = servers();
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    KVWorker<int64_t> w(node);
    const int64_t mine = node.rank().value + 1;
    std::vector<TableId> tables;
    for (const Case& c : cases) {
      TableSpec spec = Spec("order_" + std::to_string(static_cast<int>(c.placement)), ValueType::kInt64);
      spec.placement = c.placement;
      spec.key_range = c.placement == KeyPlacement::kRange ? range : KeyRange{0, ~Key{0}};
      PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(spec));
      tables.push_back(t);
      // The request must really be spread over every server for the reassembly to matter.
      std::set<uint32_t> owners;
      for (Key k : c.keys) {
        PSERVER_ASSIGN_OR_RETURN(uint32_t s, w.ServerOf(t, k));
        owners.insert(s);
      }
      EXPECT_EQ(owners.size(), num_servers) << "placement " << static_cast<int>(c.placement);
      std::vector<int64_t> vals;
      for (Key k : c.keys) vals.push_back(value_of(k) * mine);
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(c.keys), std::move(vals)));
      PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    }
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    for (size_t i = 0; i < cases.size(); ++i) {
      SharedArray<int64_t> got;
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Pull(tables[i], std::vector<Key>(cases[i].keys), &got));
      PSERVER_RETURN_IF_ERROR(w.Wait(ts));
      PSERVER_RETURN_IF_FALSE(got.size() == cases[i].keys.size());
      for (size_t k = 0; k < got.size(); ++k) {
        EXPECT_EQ(got[k], value_of(cases[i].keys[k]) * weight)
            << "placement " << static_cast<int>(cases[i].placement) << " index " << k;
      }
    }
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, WideRowsRoundTrip) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  constexpr uint32_t kWidth = 5;
  const std::vector<Key> shared = RandomKeys(rng, 200, 0, ~Key{0});
  auto row_value = [](uint32_t worker, Key k, uint32_t j) {
    return static_cast<double>((worker + 1) * (j + 1)) + static_cast<double>(k % 100);
  };
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const uint32_t num_workers = workers();
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("wide", ValueType::kFloat64, kWidth)));
    KVWorker<double> w(node);
    const uint32_t me = node.rank().value;
    std::vector<double> vals;
    for (Key k : shared) {
      for (uint32_t j = 0; j < kWidth; ++j) vals.push_back(row_value(me, k, j));
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(shared), std::move(vals)));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<double> got;
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>(shared), &got));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_FALSE(got.size() == shared.size() * kWidth);
    for (size_t i = 0; i < shared.size(); ++i) {
      for (uint32_t j = 0; j < kWidth; ++j) {
        double want = 0;
        for (uint32_t v = 0; v < num_workers; ++v) want += row_value(v, shared[i], j);
        EXPECT_EQ(got[i * kWidth + j], want) << "key " << shared[i] << " column " << j;
      }
    }
    // PushPull on keys only this worker touches: the answer is the row after the push.
    std::vector<Key> own;
    for (Key k = 0; k < 50; ++k) own.push_back((Key{me + 1} << 48) + k * 7919);
    std::vector<double> first(own.size() * kWidth, 1.0), second(own.size() * kWidth);
    for (size_t i = 0; i < second.size(); ++i) second[i] = static_cast<double>(i);
    PSERVER_ASSIGN_OR_RETURN(ts, w.Push(t, std::vector<Key>(own), std::move(first)));
    SharedArray<double> after;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pp, w.PushPull(t, std::vector<Key>(own), std::move(second), &after));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(w.Wait(pp));
    PSERVER_RETURN_IF_FALSE(after.size() == own.size() * kWidth);
    for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], 1.0 + static_cast<double>(i)) << "index " << i;
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, VariableLengthRowsRoundTrip) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<Key> keys = RandomKeys(rng, 150, 0, ~Key{0});
  auto len_of = [](Key k) { return static_cast<int32_t>(k % 4); };  // 0..3, some empty rows
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const int32_t weight = static_cast<int32_t>(workers() * (workers() + 1) / 2);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(VarSpec("var", ValueType::kInt32)));
    KVWorker<int32_t> w(node);
    const int32_t mine = static_cast<int32_t>(node.rank().value) + 1;
    std::vector<int32_t> lens, vals;
    for (Key k : keys) {
      lens.push_back(len_of(k));
      for (int32_t j = 0; j < len_of(k); ++j) vals.push_back(mine * (j + 1));
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(keys), std::move(vals), std::move(lens)));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<int32_t> got, got_lens;
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>(keys), &got, &got_lens));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_FALSE(got_lens.size() == keys.size());
    std::vector<int32_t> want_vals;
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(got_lens[i], len_of(keys[i])) << "key " << keys[i];
      for (int32_t j = 0; j < len_of(keys[i]); ++j) want_vals.push_back(weight * (j + 1));
    }
    EXPECT_EQ(ToVector(got), want_vals);
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));  // everyone has read the sums

    // A push of another length to a stored key is refused by its server, and changes nothing.
    const Key k = *std::find_if(keys.begin(), keys.end(), [&](Key x) { return len_of(x) == 2; });
    if (node.rank().value == 0) {
      PSERVER_ASSIGN_OR_RETURN(ts,
                               w.Push(t, std::vector<Key>{k}, std::vector<int32_t>{1, 1, 1}, std::vector<int32_t>{3}));
      EXPECT_TRUE(StatusIs(w.Wait(ts), StatusCode::kInvalidArgument,
                           "key " + std::to_string(k) + " holds 2 values; a push of 3 cannot be added"));
      SharedArray<int32_t> row, row_len;
      PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>{k}, &row, &row_len));
      PSERVER_RETURN_IF_ERROR(w.Wait(ts));
      EXPECT_EQ(ToVector(row), (std::vector<int32_t>{weight, 2 * weight}));
      EXPECT_EQ(ToVector(row_len), (std::vector<int32_t>{2}));
    }
    // PushPull on keys only this worker touches.
    std::vector<Key> own = {(Key{node.rank().value} << 40) + 1, (Key{node.rank().value} << 40) + 2};
    PSERVER_ASSIGN_OR_RETURN(
        ts, w.Push(t, std::vector<Key>(own), std::vector<int32_t>{5, 6, 7}, std::vector<int32_t>{1, 2}));
    SharedArray<int32_t> after, after_lens;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pp, w.PushPull(t, std::vector<Key>(own), std::vector<int32_t>{1, 1, 1},
                                                      std::vector<int32_t>{1, 2}, &after, &after_lens));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(w.Wait(pp));
    EXPECT_EQ(ToVector(after), (std::vector<int32_t>{6, 7, 8}));
    EXPECT_EQ(ToVector(after_lens), (std::vector<int32_t>{1, 2}));
    return Status::Ok();
  }));
}

// Variable-length rows of a rule taking two values per stored value ("prox": a key of length l
// carries l gradients, then l curvatures): requests split over the servers by key carry each
// key's 2 l values. Every worker pushes gradient j + 1 and curvature 1 for value j of every key in
// one iteration, so the step from 0 is -G / U = -(j + 1) for each value.
TEST_P(KVWorkerTest, VariableLengthRowsOfPushArityTwoSplitOverServers) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<Key> keys = RandomKeys(rng, 120, 0, ~Key{0});
  auto len_of = [](Key k) { return static_cast<int32_t>(k % 3 + 1); };
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    TableSpec spec = VarSpec("prox_var", ValueType::kFloat64);
    spec.updater = {.name = "prox", .params = {{"delta", 100}}};
    spec.push_arity = 2;
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(spec));
    KVWorker<double> w(node);
    std::vector<int32_t> lens;
    std::vector<double> vals;
    for (Key k : keys) {
      lens.push_back(len_of(k));
      for (int32_t j = 0; j < len_of(k); ++j) vals.push_back(j + 1);  // gradients
      for (int32_t j = 0; j < len_of(k); ++j) vals.push_back(1);      // curvatures
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(keys), std::move(vals), std::move(lens)));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<double> got;
    SharedArray<int32_t> got_lens;
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>(keys), &got, &got_lens));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    std::vector<double> want;
    for (Key k : keys) {
      for (int32_t j = 0; j < len_of(k); ++j) want.push_back(-(j + 1.0));
    }
    EXPECT_EQ(ToVector(got), want) << "seed " << seed;
    // The worker counts push_arity too: lengths adding up to 3 stored values need 6 values.
    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{1}, std::vector<double>{1, 2, 3}, std::vector<int32_t>{3}).status(),
                         StatusCode::kInvalidArgument, "lengths add up to 3 values x push arity 2 but 3 values"));
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, EmptyRequestsRunTheCallbackAndWaitIsOk) {
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("empty", ValueType::kFloat32, 3)));
    PSERVER_ASSIGN_OR_RETURN(TableId v, node.DeclareTable(VarSpec("empty_var", ValueType::kFloat32)));
    KVWorker<float> w(node);
    int calls = 0;
    Status seen = Status::Internal("callback not run");
    auto cb = [&](const Status& s) {
      ++calls;
      seen = s;
    };
    SharedArray<float> pulled, push_pulled, var_pulled;
    SharedArray<int32_t> var_lens;
    // Each empty request runs its callback, in this thread, before its call returns.
    std::vector<Result<Timestamp>> issued;
    issued.push_back(w.Push(t, {}, {}, cb));
    EXPECT_EQ(calls, 1);
    issued.push_back(w.Pull(t, {}, &pulled, cb));
    EXPECT_EQ(calls, 2);
    issued.push_back(w.PushPull(t, {}, {}, &push_pulled, cb));
    EXPECT_EQ(calls, 3);
    issued.push_back(w.Push(v, {}, {}, SharedArray<int32_t>(), cb));
    EXPECT_EQ(calls, 4);
    issued.push_back(w.Pull(v, {}, &var_pulled, &var_lens, cb));
    EXPECT_EQ(calls, 5);
    for (const Result<Timestamp>& ts : issued) PSERVER_RETURN_IF_ERROR(ts.status());
    for (const Result<Timestamp>& ts : issued) EXPECT_OK(w.Wait(*ts));
    EXPECT_EQ(calls, 5);
    EXPECT_OK(seen);
    EXPECT_TRUE(pulled.empty());
    EXPECT_TRUE(push_pulled.empty());
    EXPECT_TRUE(var_pulled.empty());
    EXPECT_TRUE(var_lens.empty());
    // A pull buffer must have the request's size: zero values here.
    SharedArray<float> five(5);
    EXPECT_TRUE(StatusIs(w.Pull(t, {}, &five, cb).status(), StatusCode::kInvalidArgument, "the pull buffer holds 5"));
    EXPECT_EQ(calls, 5);
    SharedArray<float> none;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Pull(t, {}, &none));
    EXPECT_OK(w.Wait(ts));
    EXPECT_TRUE(none.empty());
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, PullFillsCallerBufferOfTheRightSizeAndRefusesOtherSizes) {
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  const float weight = static_cast<float>(workers());
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("buffer", ValueType::kFloat32, 2)));
    KVWorker<float> w(node);
    std::vector<Key> keys;
    for (Key k = 0; k < 64; ++k) keys.push_back(k * 1000003);
    std::vector<float> vals;
    for (size_t i = 0; i < keys.size() * 2; ++i) vals.push_back(static_cast<float>(i));
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(keys), std::move(vals)));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));

    SharedArray<float> buffer(keys.size() * 2);
    float* const where = buffer.data();
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>(keys), &buffer));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    EXPECT_EQ(buffer.data(), where);  // filled in place
    EXPECT_EQ(buffer.size(), keys.size() * 2);
    for (size_t i = 0; i < buffer.size(); ++i) EXPECT_EQ(where[i], weight * static_cast<float>(i)) << i;

    SharedArray<float> out(keys.size() * 2);
    PSERVER_ASSIGN_OR_RETURN(ts,
                             w.PushPull(t, std::vector<Key>(keys), std::vector<float>(keys.size() * 2, 0.0f), &out));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    EXPECT_EQ(ToVector(out), ToVector(buffer));

    for (size_t wrong : {keys.size() * 2 - 1, keys.size() * 2 + 1, keys.size()}) {
      SharedArray<float> bad(wrong);
      std::fill(bad.begin(), bad.end(), 7.0f);
      bool called = false;
      Result<Timestamp> r = w.Pull(t, std::vector<Key>(keys), &bad, [&](const Status&) { called = true; });
      EXPECT_TRUE(StatusIs(r.status(), StatusCode::kInvalidArgument, "the pull buffer holds"));
      EXPECT_FALSE(called);
      EXPECT_EQ(bad.size(), wrong);
      EXPECT_TRUE(std::all_of(bad.begin(), bad.end(), [](float x) { return x == 7.0f; }));
      r = w.PushPull(t, std::vector<Key>(keys), std::vector<float>(keys.size() * 2), &bad);
      EXPECT_TRUE(StatusIs(r.status(), StatusCode::kInvalidArgument, "the pull buffer holds"));
    }
    EXPECT_TRUE(StatusIs(w.Pull(t, std::vector<Key>(keys), nullptr).status(), StatusCode::kInvalidArgument));
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, CallbacksRunExactlyOncePerRequest) {
  constexpr size_t kRequests = 60;
  const uint32_t num_workers = workers();
  std::vector<std::atomic<int>> calls(num_workers * kRequests);
  std::vector<std::atomic<int>> failed(num_workers * kRequests);
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("callbacks", ValueType::kFloat32)));
    PSERVER_ASSIGN_OR_RETURN(TableId v, node.DeclareTable(VarSpec("callbacks_var", ValueType::kFloat32)));
    KVWorker<float> w(node);
    const uint32_t me = node.rank().value;
    // Keys this worker alone uses in the variable-length table, with length 1.
    const std::vector<Key> own = {Key{me} * 3 + 1, Key{me} * 3 + 2};
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                             w.Push(v, std::vector<Key>(own), std::vector<float>{1, 1}, std::vector<int32_t>{1, 1}));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    std::vector<Timestamp> issued;
    std::vector<SharedArray<float>> outs(kRequests);
    for (size_t i = 0; i < kRequests; ++i) {
      const size_t slot = me * kRequests + i;
      auto cb = [&calls, &failed, slot](const Status& s) {
        calls[slot].fetch_add(1);
        if (!s.ok()) failed[slot].fetch_add(1);
      };
      std::vector<Key> keys;
      for (Key k = 0; k < i % 7; ++k) keys.push_back(k * 77 + i);  // some requests are empty
      const size_t n = keys.size();
      Result<Timestamp> r = Status::Internal("unset");
      switch (i % 4) {
        case 0:
          r = w.Push(t, std::move(keys), std::vector<float>(n, 1.0f), cb);
          break;
        case 1:
          r = w.Pull(t, std::move(keys), &outs[i], cb);
          break;
        case 2:
          r = w.PushPull(t, std::move(keys), std::vector<float>(n, 1.0f), &outs[i], cb);
          break;
        case 3:  // refused by the server: the stored rows have length 1
          r = w.Push(v, std::vector<Key>(own), std::vector<float>{1, 1, 1, 1}, std::vector<int32_t>{2, 2}, cb);
          break;
      }
      PSERVER_RETURN_IF_ERROR(r.status());
      issued.push_back(*r);
    }
    for (size_t i = 0; i < issued.size(); ++i) {
      Status s = w.Wait(issued[i]);
      if (i % 4 == 3) {
        EXPECT_TRUE(StatusIs(s, StatusCode::kInvalidArgument, "holds 1 values"));
      } else {
        EXPECT_OK(s);
      }
      // Wait returns after the callback ran.
      EXPECT_EQ(calls[me * kRequests + i].load(), 1) << "request " << i;
    }
    return Status::Ok();
  }));
  // Still exactly once after the job ended (no late or repeated calls).
  for (size_t slot = 0; slot < calls.size(); ++slot) {
    EXPECT_EQ(calls[slot].load(), 1) << "slot " << slot;
    EXPECT_EQ(failed[slot].load(), slot % kRequests % 4 == 3 ? 1 : 0) << "slot " << slot;
  }
}

TEST_P(KVWorkerTest, PullSeesPushWithoutWait) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<Key> keys = RandomKeys(rng, 100, 0, ~Key{0});
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    // A table of this worker alone, so that the others' pushes do not matter.
    PSERVER_ASSIGN_OR_RETURN(TableId t,
                             node.DeclareTable(Spec("own_" + std::to_string(node.rank().value), ValueType::kFloat32)));
    KVWorker<float> w(node);
    std::vector<Timestamp> pushes;
    for (int round = 1; round <= 5; ++round) {
      std::vector<float> vals(keys.size());
      for (size_t i = 0; i < keys.size(); ++i) vals[i] = static_cast<float>(round * (i % 13 + 1));
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, w.Push(t, std::vector<Key>(keys), std::move(vals)));
      pushes.push_back(p);
      SharedArray<float> got;
      PSERVER_ASSIGN_OR_RETURN(Timestamp q, w.Pull(t, std::vector<Key>(keys), &got));
      PSERVER_RETURN_IF_ERROR(w.Wait(q));  // only the pull
      const float sum_of_rounds = static_cast<float>(round * (round + 1) / 2);
      PSERVER_RETURN_IF_FALSE(got.size() == keys.size());
      for (size_t i = 0; i < keys.size(); ++i) {
        EXPECT_EQ(got[i], sum_of_rounds * static_cast<float>(i % 13 + 1)) << "round " << round << " index " << i;
      }
    }
    for (Timestamp p : pushes) PSERVER_RETURN_IF_ERROR(w.Wait(p));
    return Status::Ok();
  }));
}

// Per-sender order on the zero-copy path: a row of 1 MiB is pulled, pushed and pulled again,
// three times over, with no Wait between any of them. The servers keep such a row as one
// buffer shared copy-on-write with pull replies, and a one-key pull of it sends that buffer
// itself: each pull must see exactly the pushes issued before it, and a pulled row must keep
// its value after later pushes (a push that wrote into a buffer a reply still holds would
// change it).
TEST_P(KVWorkerTest, LargeRowPulledPushedAndPulledWithoutWaitIsExactAtEveryStep) {
  constexpr uint32_t kWidth = 256 * 1024;  // 1 MiB of float32
  constexpr int kRounds = 3;
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(
        TableId t, node.DeclareTable(Spec("big_" + std::to_string(node.rank().value), ValueType::kFloat32, kWidth)));
    KVWorker<float> w(node);
    const std::vector<Key> key{42};
    auto delta = [](int round, uint32_t j) { return static_cast<float>((j % 17 + 1) * (round + 1)); };
    std::vector<SharedArray<float>> pulled(kRounds + 1);
    std::vector<Timestamp> ts;
    for (int round = 0; round <= kRounds; ++round) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp q, w.Pull(t, std::vector<Key>(key), &pulled[round]));
      ts.push_back(q);
      if (round == kRounds) break;
      std::vector<float> vals(kWidth);
      for (uint32_t j = 0; j < kWidth; ++j) vals[j] = delta(round, j);
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, w.Push(t, std::vector<Key>(key), std::move(vals)));
      ts.push_back(p);
    }
    for (Timestamp x : ts) PSERVER_RETURN_IF_ERROR(w.Wait(x));
    // Pull r saw pushes 0 .. r-1: (j % 17 + 1) * (1 + 2 + ... + r).
    for (int round = 0; round <= kRounds; ++round) {
      PSERVER_RETURN_IF_FALSE(pulled[round].size() == kWidth);
      const float sum = static_cast<float>(round * (round + 1) / 2);
      for (uint32_t j = 0; j < kWidth; ++j) {
        if (pulled[round][j] != static_cast<float>(j % 17 + 1) * sum) {
          return Status::Internal("pull " + std::to_string(round) + " column " + std::to_string(j) + " holds " +
                                  std::to_string(pulled[round][j]) + ", expected " +
                                  std::to_string(static_cast<float>(j % 17 + 1) * sum));
        }
      }
    }
    return Status::Ok();
  }));
}

// Per-sender order on the parallel apply path: pushes of 8,192 keys per server to a table with
// an update rule (SGD, lr 0.5) are applied on the servers' shard threads; pulls of the same keys
// issued between them without Wait must see exactly the pushes before them. Gradients are small
// integers, so every value is exact: after r pushes, w = -0.5 * g * r.
TEST_P(KVWorkerTest, UpdateRulePushesOf8192KeysInterleavedWithPullsAreExact) {
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<Key> keys = RandomKeys(rng, 8192 * servers(), 0, ~Key{0});
  constexpr int kRounds = 4;
  // Four apply threads whatever the machine, so that the shards really run in parallel.
  auto cluster = StartCluster([](Node& n) -> std::shared_ptr<void> {
    ServerOptions o;
    o.apply_threads = 4;
    return std::make_shared<KVServer<float>>(n, o);
  });
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    TableSpec spec = Spec("sgd_" + std::to_string(node.rank().value), ValueType::kFloat32);
    spec.updater = {.name = "sgd", .params = {{"lr", 0.5}}};
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(spec));
    KVWorker<float> w(node);
    std::vector<float> grads(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) grads[i] = static_cast<float>(i % 7 + 1);
    std::vector<SharedArray<float>> pulled(kRounds);
    std::vector<Timestamp> ts;
    for (int round = 0; round < kRounds; ++round) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, w.Push(t, std::vector<Key>(keys), std::vector<float>(grads)));
      PSERVER_ASSIGN_OR_RETURN(Timestamp q, w.Pull(t, std::vector<Key>(keys), &pulled[round]));
      ts.push_back(p);
      ts.push_back(q);
    }
    for (Timestamp x : ts) PSERVER_RETURN_IF_ERROR(w.Wait(x));
    for (int round = 0; round < kRounds; ++round) {
      PSERVER_RETURN_IF_FALSE(pulled[round].size() == keys.size());
      for (size_t i = 0; i < keys.size(); ++i) {
        const float want = -0.5f * grads[i] * static_cast<float>(round + 1);
        if (pulled[round][i] != want) {
          return Status::Internal("pull " + std::to_string(round) + " of key " + std::to_string(keys[i]) + " holds " +
                                  std::to_string(pulled[round][i]) + ", expected " + std::to_string(want));
        }
      }
    }
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, CallErrorsAreReturnedAtTheCallAndSendNothing) {
  CountingServers counting;
  auto cluster = StartCluster(counting.Setup());
  ASSERT_NE(cluster, nullptr);
  const std::vector<Key> keys = {3, 1000, 77777, 1'000'000'007, 0x7fff'ffff'ffff'ffffULL};
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("errors", ValueType::kFloat32)));
    PSERVER_ASSIGN_OR_RETURN(TableId v, node.DeclareTable(VarSpec("errors_var", ValueType::kFloat32)));
    TableSpec ranged = Spec("errors_range", ValueType::kFloat32);
    ranged.placement = KeyPlacement::kRange;
    ranged.key_range = {100, 199};
    PSERVER_ASSIGN_OR_RETURN(TableId r, node.DeclareTable(ranged));
    KVWorker<float> w(node);
    KVWorker<double> wd(node);
    int callbacks = 0;
    auto cb = [&callbacks](const Status&) { ++callbacks; };
    SharedArray<float> out;
    SharedArray<double> out_d;

    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{5, 3}, std::vector<float>{1, 1}, cb).status(),
                         StatusCode::kInvalidArgument, "not sorted ascending at index 1"));
    EXPECT_TRUE(
        StatusIs(w.Pull(t, std::vector<Key>{1, 9, 2}, &out, cb).status(), StatusCode::kInvalidArgument, "not sorted"));
    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{3, 3}, std::vector<float>{1, 1}, cb).status(),
                         StatusCode::kInvalidArgument, "duplicate key 3 at index 1"));
    EXPECT_TRUE(StatusIs(w.PushPull(t, std::vector<Key>{4, 4}, std::vector<float>{1, 1}, &out, cb).status(),
                         StatusCode::kInvalidArgument, "duplicate key 4"));
    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{1, 2}, std::vector<float>{1, 1, 1}, cb).status(),
                         StatusCode::kInvalidArgument, "2 keys of width 1 need 2 values, 3 were given"));
    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{1, 2}, std::vector<float>{1}, cb).status(),
                         StatusCode::kInvalidArgument, "need 2 values, 1 were given"));
    EXPECT_TRUE(StatusIs(w.Push(t, std::vector<Key>{1}, std::vector<float>{1}, std::vector<int32_t>{1}, cb).status(),
                         StatusCode::kInvalidArgument, "do not pass lengths"));
    EXPECT_TRUE(StatusIs(w.Push(TableId(9999), std::vector<Key>{1}, std::vector<float>{1}, cb).status(),
                         StatusCode::kNotFound, "table 9999"));
    EXPECT_TRUE(StatusIs(w.Pull(TableId(9999), std::vector<Key>{1}, &out, cb).status(), StatusCode::kNotFound));
    EXPECT_TRUE(StatusIs(wd.Push(t, std::vector<Key>{1}, std::vector<double>{1}, cb).status(),
                         StatusCode::kInvalidArgument, "holds float32 values, not float64"));
    EXPECT_TRUE(
        StatusIs(wd.Pull(t, std::vector<Key>{1}, &out_d, cb).status(), StatusCode::kInvalidArgument, "not float64"));
    // Variable-length tables: lengths are required, one per key, not negative, and add up.
    EXPECT_TRUE(StatusIs(w.Push(v, std::vector<Key>{1}, std::vector<float>{1}, cb).status(),
                         StatusCode::kInvalidArgument, "pass a lengths array"));
    EXPECT_TRUE(StatusIs(w.Push(v, std::vector<Key>{1, 2}, std::vector<float>{1}, std::vector<int32_t>{1}, cb).status(),
                         StatusCode::kInvalidArgument, "1 lengths for 2 keys"));
    EXPECT_TRUE(
        StatusIs(w.Push(v, std::vector<Key>{1, 2}, std::vector<float>{1}, std::vector<int32_t>{2, -1}, cb).status(),
                 StatusCode::kInvalidArgument, "negative length -1 for key 2 at index 1"));
    EXPECT_TRUE(
        StatusIs(w.Push(v, std::vector<Key>{1, 2}, std::vector<float>{1, 2}, std::vector<int32_t>{1, 2}, cb).status(),
                 StatusCode::kInvalidArgument, "lengths add up to 3 values but 2 values were given"));
    // A range-placed table refuses keys outside its range.
    EXPECT_TRUE(StatusIs(w.Push(r, std::vector<Key>{150, 200}, std::vector<float>{1, 1}, cb).status(),
                         StatusCode::kInvalidArgument, "200"));
    EXPECT_TRUE(StatusIs(w.ServerOf(r, 99).status(), StatusCode::kInvalidArgument, "outside"));
    EXPECT_TRUE(StatusIs(w.ServerOf(TableId(9999), 1).status(), StatusCode::kNotFound));
    EXPECT_EQ(callbacks, 0);
    EXPECT_TRUE(out.empty());
    EXPECT_TRUE(out_d.empty());

    // Now one valid push and one valid pull: exactly their keys reach the servers (checked after
    // the job).
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>(keys), std::vector<float>(keys.size(), 1.0f)));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>{1, 2, 3, 4, 5}, &out));
    PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    const float n = static_cast<float>(node.num_workers());
    EXPECT_EQ(ToVector(out), (std::vector<float>{0, 0, n, 0, 0}));  // the refused pushes added nothing
    return Status::Ok();
  }));
  EXPECT_EQ(counting.keys_received->load(), uint64_t{workers()} * (keys.size() + 5));
}

TEST_P(KVWorkerTest, WaitOnATimestampNeverIssuedIsInvalidArgument) {
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("never", ValueType::kFloat32)));
    KVWorker<float> w(node);
    EXPECT_TRUE(StatusIs(w.Wait(Timestamp(1)), StatusCode::kInvalidArgument, "timestamp 1 was never issued"));
    EXPECT_TRUE(StatusIs(w.Wait(Timestamp(0)), StatusCode::kInvalidArgument, "never issued"));
    EXPECT_TRUE(StatusIs(w.Wait(Timestamp(-3)), StatusCode::kInvalidArgument, "never issued"));
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>{1}, std::vector<float>{1}));
    EXPECT_TRUE(StatusIs(w.Wait(Timestamp(ts.value + 1)), StatusCode::kInvalidArgument, "never issued"));
    EXPECT_OK(w.Wait(ts));
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, WaitTimesOutNamingTheBlockedServerAndLaterSucceeds) {
  constexpr Key kSlowKey = 0xDEAD'BEEF;
  auto gate = std::make_shared<Gate>();
  auto handled = std::make_shared<std::atomic<int>>(0);
  ServerSetup setup = [gate, handled](Node& node) -> std::shared_ptr<void> {
    return std::make_shared<KVServer<float>>(
        node, [gate, handled](const RequestMeta& meta, const KVPairs<float>& req, KVPairs<float>* resp) {
          if (req.keys.size() == 1 && req.keys[0] == kSlowKey && !gate->Wait(std::chrono::seconds(60))) {
            return Status::Internal("the test never opened the gate");
          }
          handled->fetch_add(1);
          if (meta.pull) resp->vals = SharedArray<float>(req.keys.size() * meta.width);
          return Status::Ok();
        });
  };
  auto cluster = StartCluster(setup);
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    if (node.rank().value != 0) return Status::Ok();
    OpenOnExit open(*gate);
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("slow", ValueType::kFloat32)));
    KVWorker<float> w(node);
    PSERVER_ASSIGN_OR_RETURN(uint32_t owner, w.ServerOf(t, kSlowKey));
    int calls = 0;
    PSERVER_ASSIGN_OR_RETURN(
        Timestamp ts, w.Push(t, std::vector<Key>{kSlowKey}, std::vector<float>{1}, [&](const Status&) { ++calls; }));
    Status s = w.Wait(ts, std::chrono::milliseconds(1));
    EXPECT_TRUE(StatusIs(s, StatusCode::kDeadlineExceeded, "waiting for server " + std::to_string(owner) + " "));
    EXPECT_TRUE(
        StatusIs(s, StatusCode::kDeadlineExceeded, "push request " + std::to_string(ts.value) + " of table 'slow'"));
    EXPECT_EQ(calls, 0);
    gate->Open();
    EXPECT_OK(w.Wait(ts));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(handled->load(), 1);
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, ServerWithoutHandlerForTheValueTypeFailsTheRequest) {
  auto cluster = StartCluster([](Node& node) -> std::shared_ptr<void> {
    return std::make_shared<KVServer<float>>(node);  // float tables only
  });
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId d, node.DeclareTable(Spec("doubles", ValueType::kFloat64)));
    PSERVER_ASSIGN_OR_RETURN(TableId f, node.DeclareTable(Spec("floats", ValueType::kFloat32)));
    KVWorker<double> wd(node);
    KVWorker<float> wf(node);
    PSERVER_ASSIGN_OR_RETURN(uint32_t owner, wd.ServerOf(d, 42));
    Status from_callback;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, wd.Push(d, std::vector<Key>{42}, std::vector<double>{1},
                                                   [&](const Status& s) { from_callback = s; }));
    Status s = wd.Wait(ts);
    EXPECT_TRUE(StatusIs(s, StatusCode::kUnavailable, "no handler for float64 tables"));
    EXPECT_TRUE(StatusIs(s, StatusCode::kUnavailable, "server " + std::to_string(owner) + " "));
    EXPECT_EQ(from_callback, s);
    SharedArray<double> got;
    PSERVER_ASSIGN_OR_RETURN(ts, wd.Pull(d, std::vector<Key>{42}, &got));
    EXPECT_TRUE(StatusIs(wd.Wait(ts), StatusCode::kUnavailable, "no handler for float64 tables"));
    EXPECT_TRUE(got.empty());
    // The server goes on serving the types it has.
    PSERVER_ASSIGN_OR_RETURN(ts, wf.Push(f, std::vector<Key>{42}, std::vector<float>{1}));
    EXPECT_OK(wf.Wait(ts));
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, HandlerAnsweringTheWrongNumberOfValuesFailsThePull) {
  auto cluster = StartCluster([](Node& node) -> std::shared_ptr<void> {
    return std::make_shared<KVServer<float>>(
        node, [](const RequestMeta& meta, const KVPairs<float>& req, KVPairs<float>* resp) {
          if (meta.pull) resp->vals = SharedArray<float>(req.keys.size() * meta.width + 1);  // one too many
          return Status::Ok();
        });
  });
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(Spec("bad_handler", ValueType::kFloat32, 2)));
    KVWorker<float> w(node);
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, std::vector<Key>{1, 2}, std::vector<float>{1, 2, 3, 4}));
    EXPECT_OK(w.Wait(ts));  // a push's answer carries no values
    SharedArray<float> got;
    Status from_callback;
    PSERVER_ASSIGN_OR_RETURN(ts, w.Pull(t, std::vector<Key>{1}, &got, [&](const Status& s) { from_callback = s; }));
    Status s = w.Wait(ts);
    EXPECT_TRUE(StatusIs(s, StatusCode::kInternal, "the handler returned 3 values for 1 keys of width 2"));
    EXPECT_EQ(from_callback, s);
    EXPECT_TRUE(got.empty());
    return Status::Ok();
  }));
}

TEST_P(KVWorkerTest, NamedTablesOfDifferentTypesAreIndependent) {
  const uint32_t num_workers = workers();
  std::vector<std::vector<TableId>> ids(num_workers);
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  ASSERT_OK(cluster->RunWorkers([&](Node& node) -> Status {
    TableSpec ranged = Spec("t_i64", ValueType::kInt64);
    ranged.placement = KeyPlacement::kRange;
    ranged.key_range = {0, 999};
    const std::vector<TableSpec> specs = {Spec("t_f32", ValueType::kFloat32), Spec("t_f64", ValueType::kFloat64, 2),
                                          VarSpec("t_i32", ValueType::kInt32), ranged};
    std::vector<TableId>& mine = ids[node.rank().value];
    for (const TableSpec& s : specs) {
      PSERVER_ASSIGN_OR_RETURN(TableId id, node.DeclareTable(s));
      mine.push_back(id);
    }
    // Declaring again with the same spec gives the same id; a different spec is refused.
    for (size_t i = 0; i < specs.size(); ++i) {
      PSERVER_ASSIGN_OR_RETURN(TableId again, node.DeclareTable(specs[i]));
      EXPECT_EQ(again, mine[i]) << specs[i].name;
    }
    std::vector<TableSpec> conflicts;
    for (int i = 0; i < 5; ++i) conflicts.push_back(specs[0]);
    conflicts[0].value_type = ValueType::kFloat64;
    conflicts[1].width = 2;
    conflicts[2].variable_length = true;
    conflicts[3].placement = KeyPlacement::kIdentity;
    conflicts[4].placement = KeyPlacement::kRange;
    conflicts[4].key_range = {0, 10};
    for (const TableSpec& c : conflicts) {
      EXPECT_TRUE(StatusIs(node.DeclareTable(c).status(), StatusCode::kInvalidArgument,
                           "table 't_f32' was already declared differently"));
    }
    // Invalid specs are refused before anything is declared.
    TableSpec bad = specs[0];
    bad.name = "";
    EXPECT_TRUE(StatusIs(node.DeclareTable(bad).status(), StatusCode::kInvalidArgument, "table name"));
    bad = Spec("zero_width", ValueType::kFloat32, 0);
    EXPECT_TRUE(StatusIs(node.DeclareTable(bad).status(), StatusCode::kInvalidArgument, "width"));
    bad = Spec("empty_range", ValueType::kFloat32);
    bad.placement = KeyPlacement::kRange;
    bad.key_range = {10, 9};
    EXPECT_TRUE(StatusIs(node.DeclareTable(bad).status(), StatusCode::kInvalidArgument, "empty"));

    // The same keys in each table hold that table's values.
    KVWorker<float> wf(node);
    KVWorker<double> wd(node);
    KVWorker<int32_t> wi(node);
    KVWorker<int64_t> wl(node);
    const std::vector<Key> keys = {1, 20, 300};
    std::vector<std::pair<KVWorkerBase*, Timestamp>> ts;  // each request with the worker that issued it
    auto keep = [&ts](KVWorkerBase& w, Result<Timestamp> r) -> Status {
      PSERVER_RETURN_IF_ERROR(r.status());
      ts.emplace_back(&w, *r);
      return Status::Ok();
    };
    PSERVER_RETURN_IF_ERROR(keep(wf, wf.Push(mine[0], std::vector<Key>(keys), std::vector<float>{1, 2, 3})));
    PSERVER_RETURN_IF_ERROR(
        keep(wd, wd.Push(mine[1], std::vector<Key>(keys), std::vector<double>{10, 11, 20, 21, 30, 31})));
    PSERVER_RETURN_IF_ERROR(keep(wi, wi.Push(mine[2], std::vector<Key>(keys), std::vector<int32_t>{100, 200, 201, 300},
                                             std::vector<int32_t>{1, 2, 1})));
    PSERVER_RETURN_IF_ERROR(keep(wl, wl.Push(mine[3], std::vector<Key>(keys), std::vector<int64_t>{1000, 2000, 3000})));
    for (auto [w, t] : ts) PSERVER_RETURN_IF_ERROR(w->Wait(t));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<float> f;
    SharedArray<double> d;
    SharedArray<int32_t> i, il;
    SharedArray<int64_t> l;
    ts.clear();
    PSERVER_RETURN_IF_ERROR(keep(wf, wf.Pull(mine[0], std::vector<Key>(keys), &f)));
    PSERVER_RETURN_IF_ERROR(keep(wd, wd.Pull(mine[1], std::vector<Key>(keys), &d)));
    PSERVER_RETURN_IF_ERROR(keep(wi, wi.Pull(mine[2], std::vector<Key>(keys), &i, &il)));
    PSERVER_RETURN_IF_ERROR(keep(wl, wl.Pull(mine[3], std::vector<Key>(keys), &l)));
    for (auto [w, t] : ts) PSERVER_RETURN_IF_ERROR(w->Wait(t));
    const int n = static_cast<int>(node.num_workers());
    EXPECT_EQ(ToVector(f), (std::vector<float>{1.0f * n, 2.0f * n, 3.0f * n}));
    EXPECT_EQ(ToVector(d), (std::vector<double>{10.0 * n, 11.0 * n, 20.0 * n, 21.0 * n, 30.0 * n, 31.0 * n}));
    EXPECT_EQ(ToVector(i), (std::vector<int32_t>{100 * n, 200 * n, 201 * n, 300 * n}));
    EXPECT_EQ(ToVector(il), (std::vector<int32_t>{1, 2, 1}));
    EXPECT_EQ(ToVector(l), (std::vector<int64_t>{1000 * n, 2000 * n, 3000 * n}));
    return Status::Ok();
  }));
  // Every worker got the same ids, and distinct tables have distinct ids.
  for (uint32_t w = 1; w < num_workers; ++w) EXPECT_EQ(ids[w], ids[0]) << "worker " << w;
  std::set<uint32_t> distinct;
  for (TableId id : ids[0]) distinct.insert(id.value);
  EXPECT_EQ(distinct.size(), ids[0].size());
}

std::string ClusterName(const ::testing::TestParamInfo<KVWorkerTest::ParamType>& info) {
  return std::string(std::get<0>(info.param) ? "inproc" : "zmq") + "_" + std::to_string(std::get<1>(info.param)) +
         "servers_" + std::to_string(std::get<2>(info.param)) + "workers";
}

INSTANTIATE_TEST_SUITE_P(Clusters, KVWorkerTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(1u, 3u), ::testing::Values(1u, 2u)),
                         ClusterName);

}  // namespace
}  // namespace pserver
