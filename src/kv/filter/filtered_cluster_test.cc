// Filters in a running cluster (2 servers, 3 workers, over ZeroMQ and inproc): tables with the
// key cache, zstd, lz4 and filters stacked -- float vectors, double matrix rows, variable-length
// int64 rows -- end with exactly the sums the workers pushed (every worker pushes known values, so
// the sum is known), pulls and push-pulls return them, and the workers send and receive fewer wire
// bytes than the same job without filters. Over inproc, the workers' transports damage the
// signature of every third key-cache reference on its way: the servers miss, answer
// kFlagKeysMissing, the workers send those parts again with their keys, and the sums stay exact,
// also with 2 replicas of every key (3 servers). With the lossy filters (sigmod, q8, fp16) and
// PushHeld at the end, the sums are what was pushed, to rounding in the last bits. With sigmod on
// pull replies, every pull returns exactly the sums pushed so far while the replies leave out the
// rows that did not change; when replies go missing, the workers pull again and stay exact.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "kv/local_cluster.h"
#include "testing/intercepting_transport.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

constexpr uint32_t kWorkers = 3;
constexpr int kRounds = 4;
constexpr Key kKeys = 20000;

// The value worker `rank` pushes for key k, element e, in every round.
template <typename T>
T Pushed(uint32_t rank, Key k, uint32_t e) {
  return static_cast<T>((rank + 1) * ((k + e) % 13));
}
template <typename T>
T Expected(Key k, uint32_t e) {
  T sum = 0;
  for (uint32_t r = 0; r < kWorkers; ++r) sum += Pushed<T>(r, k, e);
  return static_cast<T>(kRounds) * sum;
}

// Key k of the variable-length table has 1 + k % 3 values.
int32_t Length(Key k) { return static_cast<int32_t>(1 + k % 3); }

TableSpec Spec(std::string name, ValueType type, std::vector<FilterSpec> filters) {
  TableSpec s;
  s.name = std::move(name);
  s.value_type = type;
  s.filters = std::move(filters);
  return s;
}

// A key-cache reference: frame 0 of 24 bytes, named in the trailer by code 3 (docs/wire_format.md
// section 5.3).
bool IsReference(const transport::Message& m) {
  if (!(m.header.flags & transport::kFlagFiltered) || m.frames.size() < 2 || m.frames[0].size() != 24) return false;
  const transport::Bytes& trailer = m.frames.back();
  return trailer.size() >= 2 && std::to_integer<uint8_t>(trailer[0]) == 3;
}

// The wrapped transports of a job's nodes of one role, kept for counting what went through them.
// With `every` > 0, frame 0 of the every-th message `match` picks (count % every == `at`) goes
// through `change` on its way out.
struct Wires {
  void Wrap(LocalClusterOptions& o, Role only, uint64_t every, uint64_t at,
            std::function<bool(const transport::Message&)> match, std::function<void(std::vector<std::byte>&)> change) {
    o.wrap_transport = [=, this](Role role, uint32_t, std::unique_ptr<transport::Transport> inner)
        -> std::unique_ptr<transport::Transport> {
      if (role != only) return inner;
      auto wire = std::make_unique<pserver::testing::InterceptingTransport>(std::move(inner));
      if (every > 0) {
        auto seen = std::make_shared<std::atomic<uint64_t>>(0);
        wire->SetRewriter([=](transport::Message& m) {
          if (!match(m) || seen->fetch_add(1) % every != at) return;
          std::vector<std::byte> bytes(m.frames[0].begin(), m.frames[0].end());
          change(bytes);
          m.frames[0] = transport::Bytes::CopyOf(bytes);
        });
      }
      std::lock_guard lock(mu);
      list.push_back(wire.get());
      return wire;
    };
  }
  // The messages that matched `match` in `direction`, over every wire.
  uint64_t Count(pserver::testing::Direction direction, const pserver::testing::InterceptingTransport::HeaderMatch& match) {
    uint64_t n = 0;
    for (auto* wire : list) n += wire->Count(direction, match);
    return n;
  }

  std::vector<pserver::testing::InterceptingTransport*> list;
  std::mutex mu;
};

struct JobResult {
  uint64_t wire_bytes = 0;      // all workers sent and received
  uint64_t keys_missing = 0;    // kFlagKeysMissing replies the workers received
};

// Runs the job. `damage`: (inproc only) every third key-cache reference a worker sends has its
// signature damaged.
JobResult RunJob(bool inproc, bool filtered, bool damage, uint32_t replicas = 1) {
  LocalClusterOptions o;
  o.inproc = inproc;
  o.node.replicas = replicas;
  o.num_servers = replicas > 1 ? 3 : 2;
  o.num_workers = kWorkers;
  Wires wires;
  if (damage) {
    wires.Wrap(o, Role::kWorker, 3, 0, IsReference, [](std::vector<std::byte>& ref) { ref[3] ^= std::byte{0x5a}; });
  }
  auto c = LocalCluster::Start(o);
  EXPECT_OK(c);
  if (!c.ok()) return {};
  LocalCluster& cluster = **c;
  auto filters = [&](std::vector<FilterSpec> f) { return filtered ? f : std::vector<FilterSpec>{}; };
  EXPECT_OK(cluster.RunWorkers([&](Node& node) -> Status {
    const uint32_t rank = node.rank().value;
    TableSpec fs = Spec("floats", ValueType::kFloat32, filters({{"keycache", {}}, {"zstd", {}}}));
    TableSpec cs = Spec("cached", ValueType::kFloat32, filters({{"keycache", {}}, {"lz4", {}}}));
    TableSpec ds = Spec("rows", ValueType::kFloat64, filters({{"lz4", {}}}));
    ds.width = 4;
    TableSpec vs = Spec("var", ValueType::kInt64, filters({{"zstd", {{"level", 5}}}, {"lz4", {{"min_bytes", 0}}}}));
    vs.variable_length = true;
    PSERVER_ASSIGN_OR_RETURN(TableId ft, node.DeclareTable(fs));
    PSERVER_ASSIGN_OR_RETURN(TableId dt, node.DeclareTable(ds));
    PSERVER_ASSIGN_OR_RETURN(TableId vt, node.DeclareTable(vs));
    PSERVER_ASSIGN_OR_RETURN(TableId ct, node.DeclareTable(cs));
    // The cached table: worker r pushes the keys k with k % 3 != r (its own list).
    std::vector<Key> own;
    std::vector<float> own_vals;
    for (Key k = 0; k < kKeys; ++k) {
      if (k % kWorkers == rank) continue;
      own.push_back(k);
      own_vals.push_back(Pushed<float>(rank, k, 0));
    }
    const SharedArray<Key> ok(std::move(own));
    const SharedArray<float> ov(std::move(own_vals));
    std::vector<Key> keys(kKeys);
    std::vector<float> fv(kKeys);
    std::vector<double> dv(kKeys * 4);
    std::vector<int64_t> iv;
    std::vector<int32_t> lens(kKeys);
    for (Key k = 0; k < kKeys; ++k) {
      keys[k] = k;
      fv[k] = Pushed<float>(rank, k, 0);
      for (uint32_t e = 0; e < 4; ++e) dv[k * 4 + e] = Pushed<double>(rank, k, e);
      lens[k] = Length(k);
      for (int32_t e = 0; e < lens[k]; ++e) iv.push_back(Pushed<int64_t>(rank, k, static_cast<uint32_t>(e)));
    }
    const SharedArray<Key> k(std::move(keys));
    const SharedArray<float> f(std::move(fv));
    const SharedArray<double> d(std::move(dv));
    const SharedArray<int64_t> i(std::move(iv));
    const SharedArray<int32_t> l(std::move(lens));
    KVWorker<float> wf(node);
    KVWorker<double> wd(node);
    KVWorker<int64_t> wi(node);
    for (int round = 0; round < kRounds; ++round) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp a, wf.Push(ft, k, f));
      PSERVER_ASSIGN_OR_RETURN(Timestamp b, wd.Push(dt, k, d));
      PSERVER_ASSIGN_OR_RETURN(Timestamp c, wi.Push(vt, k, i, l));
      PSERVER_RETURN_IF_ERROR(wf.Wait(a));
      PSERVER_RETURN_IF_ERROR(wd.Wait(b));
      PSERVER_RETURN_IF_ERROR(wi.Wait(c));
      PSERVER_ASSIGN_OR_RETURN(Timestamp e, wf.Push(ct, ok, ov));
      PSERVER_RETURN_IF_ERROR(wf.Wait(e));
      PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    }
    SharedArray<float> fo;
    SharedArray<double> dout;
    SharedArray<int64_t> io;
    SharedArray<int32_t> lo;
    PSERVER_ASSIGN_OR_RETURN(Timestamp a, wf.Pull(ft, k, &fo));
    PSERVER_ASSIGN_OR_RETURN(Timestamp b, wd.Pull(dt, k, &dout));
    PSERVER_ASSIGN_OR_RETURN(Timestamp c, wi.Pull(vt, k, &io, &lo));
    PSERVER_RETURN_IF_ERROR(wf.Wait(a));
    PSERVER_RETURN_IF_ERROR(wd.Wait(b));
    PSERVER_RETURN_IF_ERROR(wi.Wait(c));
    size_t at = 0;
    for (Key key = 0; key < kKeys; ++key) {
      PSERVER_RETURN_IF_FALSE(fo[key] == Expected<float>(key, 0));
      for (uint32_t e = 0; e < 4; ++e) PSERVER_RETURN_IF_FALSE(dout[key * 4 + e] == Expected<double>(key, e));
      PSERVER_RETURN_IF_FALSE(lo[key] == Length(key));
      for (int32_t e = 0; e < lo[key]; ++e) {
        PSERVER_RETURN_IF_FALSE(io[at++] == Expected<int64_t>(key, static_cast<uint32_t>(e)));
      }
    }
    PSERVER_RETURN_IF_FALSE(at == io.size());
    SharedArray<float> co;
    PSERVER_ASSIGN_OR_RETURN(Timestamp cp, wf.Pull(ct, ok, &co));
    PSERVER_RETURN_IF_ERROR(wf.Wait(cp));
    for (size_t j = 0; j < ok.size(); ++j) {
      float want = 0;
      for (uint32_t r = 0; r < kWorkers; ++r) {
        if (ok[j] % kWorkers != r) want += Pushed<float>(r, ok[j], 0);
      }
      PSERVER_RETURN_IF_FALSE(co[j] == kRounds * want);
    }
    // A push-pull after everyone's pulls: each worker's reply includes its own push at least.
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<float> after;
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, wf.PushPull(ft, k, f, &after));
    PSERVER_RETURN_IF_ERROR(wf.Wait(p));
    for (Key key = 0; key < kKeys; ++key) {
      PSERVER_RETURN_IF_FALSE(after[key] >= Expected<float>(key, 0) + Pushed<float>(rank, key, 0));
      PSERVER_RETURN_IF_FALSE(after[key] <= Expected<float>(key, 0) * (kRounds + 1) / kRounds);
    }
    return Status::Ok();
  }));
  JobResult r;
  for (uint32_t w = 0; w < cluster.num_workers(); ++w) {
    r.wire_bytes += cluster.worker(w).traffic().bytes_sent + cluster.worker(w).traffic().bytes_received;
  }
  r.keys_missing = wires.Count(pserver::testing::Direction::kReceive, [](const transport::Header& h) {
    return (h.flags & transport::kFlagKeysMissing) != 0;
  });
  return r;
}

class FilteredClusterTest : public ::testing::TestWithParam<bool> {};

TEST_P(FilteredClusterTest, StackedLosslessFiltersKeepTheSumsExactAndSendLess) {
  const uint64_t plain = RunJob(GetParam(), false, false).wire_bytes;
  const uint64_t filtered = RunJob(GetParam(), true, false).wire_bytes;
  std::printf("workers' wire bytes: %llu without filters, %llu with (%.1fx fewer)\n",
              static_cast<unsigned long long>(plain), static_cast<unsigned long long>(filtered),
              filtered > 0 ? static_cast<double>(plain) / static_cast<double>(filtered) : 0.0);
  EXPECT_GT(plain, 0u);
  EXPECT_LT(filtered * 3, plain);  // consecutive keys and small integers compress well
}

TEST(FilteredClusterMissTest, KeyCacheMissesAreSentAgainWithTheirKeysAndTheSumsStayExact) {
  const JobResult r = RunJob(/*inproc=*/true, /*filtered=*/true, /*damage=*/true);
  std::printf("kFlagKeysMissing replies: %llu\n", static_cast<unsigned long long>(r.keys_missing));
  EXPECT_GT(r.keys_missing, 0u);  // the damaged references missed (the sums were checked in the job)
}

TEST(FilteredClusterReplicasTest, FilteredPushesReachTheReplicasAndRepliesWaitForThem) {
  // 3 servers, 2 replicas: pull replies are filtered, then held until the replicas hold what
  // they include; the sums are exact (checked in the job).
  const JobResult r = RunJob(/*inproc=*/true, /*filtered=*/true, /*damage=*/true, /*replicas=*/2);
  EXPECT_GT(r.wire_bytes, 0u);
  EXPECT_GT(r.keys_missing, 0u);
}

// The value worker `rank` pushes for key k, element e, in round `round` of the lossy job: of
// varied sign and size, so that rounding and the threshold both bite.
double LossyPushed(uint32_t rank, Key k, uint32_t e, int round) {
  return std::sin(rank * 7.0 + static_cast<double>(k) * 0.37 + e * 2.1 + round * 1.3) * static_cast<double>(1 + k % 5);
}

TEST(FilteredClusterLossyTest, LossyFiltersLoseNothingOncePushHeldIsSent) {
  // Table "grads" (double rows of 2): sigmod holds back changes below 1.5, q8 rounds pushes to 8
  // bits, then the key cache and zstd; pulls go exact. Table "weights" (float): fp16 both ways.
  // After PushHeld every worker's pushes are on the servers in full; fp16 pulls are within 2^-9.
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 2;
  o.num_workers = kWorkers;
  auto c = LocalCluster::Start(o);
  ASSERT_OK(c);
  constexpr Key kLossyKeys = 3000;
  constexpr int kLossyRounds = 6;
  ASSERT_OK((*c)->RunWorkers([&](Node& node) -> Status {
    const uint32_t rank = node.rank().value;
    TableSpec gs = Spec("grads", ValueType::kFloat64,
                        {{"sigmod", {{"threshold", 1.5}}}, {"q8", {{"pull", 0}}}, {"keycache", {}}, {"zstd", {}}});
    gs.width = 2;
    TableSpec ws = Spec("weights", ValueType::kFloat32, {{"fp16", {}}});
    PSERVER_ASSIGN_OR_RETURN(TableId gt, node.DeclareTable(gs));
    PSERVER_ASSIGN_OR_RETURN(TableId wt, node.DeclareTable(ws));
    std::vector<Key> keys(kLossyKeys);
    for (Key k = 0; k < kLossyKeys; ++k) keys[k] = k * 5;
    const SharedArray<Key> k(std::move(keys));
    KVWorker<double> wd(node);
    KVWorker<float> wf(node);
    for (int round = 0; round < kLossyRounds; ++round) {
      std::vector<double> g(kLossyKeys * 2);
      std::vector<float> w(kLossyKeys);
      for (Key i = 0; i < kLossyKeys; ++i) {
        for (uint32_t e = 0; e < 2; ++e) g[i * 2 + e] = LossyPushed(rank, i, e, round);
        w[i] = static_cast<float>(LossyPushed(rank, i, 0, round));
      }
      PSERVER_ASSIGN_OR_RETURN(Timestamp a, wd.Push(gt, k, SharedArray<double>(std::move(g))));
      PSERVER_ASSIGN_OR_RETURN(Timestamp b, wf.Push(wt, k, SharedArray<float>(std::move(w))));
      PSERVER_RETURN_IF_ERROR(wd.Wait(a));
      PSERVER_RETURN_IF_ERROR(wf.Wait(b));
    }
    // A NaN is refused before anything is sent, naming the key; nothing of it is kept.
    Result<Timestamp> nan = wd.Push(gt, SharedArray<Key>(std::vector<Key>{5}),
                                    SharedArray<double>(std::vector<double>{std::nan(""), 1.0}));
    PSERVER_RETURN_IF_FALSE(!nan.ok() && nan.status().code() == StatusCode::kInvalidArgument &&
                            nan.status().message().find("key 5 holds nan") != std::string::npos);
    PSERVER_ASSIGN_OR_RETURN(Timestamp a, wd.PushHeld(gt));
    PSERVER_ASSIGN_OR_RETURN(Timestamp b, wf.PushHeld(wt));
    PSERVER_RETURN_IF_ERROR(wd.Wait(a));
    PSERVER_RETURN_IF_ERROR(wf.Wait(b));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<double> gout;
    SharedArray<float> wout;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pa, wd.Pull(gt, k, &gout));
    PSERVER_ASSIGN_OR_RETURN(Timestamp pb, wf.Pull(wt, k, &wout));
    PSERVER_RETURN_IF_ERROR(wd.Wait(pa));
    PSERVER_RETURN_IF_ERROR(wf.Wait(pb));
    // The same pull with RequestOptions::exact: the values as stored, not rounded.
    SharedArray<float> wexact;
    RequestOptions exact;
    exact.exact = true;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pc, wf.Pull(wt, k, &wexact, exact));
    PSERVER_RETURN_IF_ERROR(wf.Wait(pc));
    size_t rounded = 0;
    for (Key i = 0; i < kLossyKeys; ++i) rounded += wexact[i] != wout[i];
    PSERVER_RETURN_IF_FALSE(rounded > 0);  // else the exact pull proves nothing
    for (Key i = 0; i < kLossyKeys; ++i) {
      for (uint32_t e = 0; e < 2; ++e) {
        double want = 0, scale = 0;
        for (uint32_t r = 0; r < kWorkers; ++r) {
          for (int round = 0; round < kLossyRounds; ++round) {
            want += LossyPushed(r, i, e, round);
            scale += std::fabs(LossyPushed(r, i, e, round));
          }
        }
        if (std::fabs(gout[i * 2 + e] - want) > scale * 1e-9) {
          return Status::Internal(fmt::format("grads key {} element {}: {} on the servers, {} pushed", i * 5, e,
                                              gout[i * 2 + e], want));
        }
        if (e == 0 && std::fabs(wout[i] - want) > std::ldexp(std::fabs(want), -9) + scale * 1e-6) {
          return Status::Internal(fmt::format("weights key {}: pulled {}, {} pushed", i * 5, wout[i], want));
        }
        if (e == 0 && std::fabs(wexact[i] - want) > scale * 1e-5) {
          return Status::Internal(fmt::format("weights key {}: pulled exactly {}, {} pushed", i * 5, wexact[i], want));
        }
      }
    }
    return Status::Ok();
  }));
}

// The value worker `rank` pushes for key k, element e, in round r of the copy job: integers, so
// sums are exact; only a fifth of the keys change in a round.
double CopyPushed(uint32_t rank, Key k, uint32_t e, int r) {
  return (k + static_cast<Key>(r)) % 5 == 0 ? static_cast<double>((rank + 1) * (e + 1) + k % 7) : 0.0;
}

struct CopyJob {
  uint64_t received = 0;     // the workers' wire bytes received
  uint64_t start_overs = 0;  // pulls the servers received with kPullHoldsNoCopy
};

// Rounds of: every worker pushes a fifth of the keys; barrier; two pulls in flight at once (all
// keys, the even keys), each checked against the exact sums so far; barrier. `damage`: each
// server's transport adds one to the sequence number of every fourth reply that carries a copy
// frame, as if the reply before it had been lost.
CopyJob RunCopyJob(bool filtered, bool damage) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 2;
  o.num_workers = kWorkers;
  Wires wires;
  auto filtered_reply = [](const transport::Message& m) {
    return m.header.is_reply() && m.header.type == transport::MessageType::kPull && !m.frames.empty() &&
           m.frames[0].size() >= 24;
  };
  wires.Wrap(o, Role::kServer, damage ? 4 : 0, 3, filtered_reply, [](std::vector<std::byte>& copy) {
    uint64_t seq;
    std::memcpy(&seq, copy.data() + 8, 8);  // docs/filters.md, section 2.3: generation, seq, rows
    ++seq;
    std::memcpy(copy.data() + 8, &seq, 8);
  });
  auto c = LocalCluster::Start(o);
  EXPECT_OK(c);
  if (!c.ok()) return {};
  LocalCluster& cluster = **c;
  constexpr Key kCopyKeys = 6000;
  constexpr int kCopyRounds = 8;
  EXPECT_OK(cluster.RunWorkers([&](Node& node) -> Status {
    const uint32_t rank = node.rank().value;
    TableSpec ms = Spec("model", ValueType::kFloat64,
                        filtered ? std::vector<FilterSpec>{{"sigmod", {{"push", 0}, {"pull", 1}}}, {"keycache", {}}}
                                 : std::vector<FilterSpec>{});
    ms.width = 2;
    PSERVER_ASSIGN_OR_RETURN(TableId mt, node.DeclareTable(ms));
    std::vector<Key> all(kCopyKeys), even;
    for (Key k = 0; k < kCopyKeys; ++k) {
      all[k] = k;
      if (k % 2 == 0) even.push_back(k);
    }
    const SharedArray<Key> ak(std::move(all)), ek(std::move(even));
    KVWorker<double> kv(node);
    for (int round = 0; round < kCopyRounds; ++round) {
      std::vector<Key> keys;
      std::vector<double> vals;
      for (Key k = 0; k < kCopyKeys; ++k) {
        if (CopyPushed(rank, k, 0, round) == 0) continue;
        keys.push_back(k);
        for (uint32_t e = 0; e < 2; ++e) vals.push_back(CopyPushed(rank, k, e, round));
      }
      PSERVER_ASSIGN_OR_RETURN(Timestamp p, kv.Push(mt, std::move(keys), std::move(vals)));
      PSERVER_RETURN_IF_ERROR(kv.Wait(p));
      PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
      SharedArray<double> a, b;
      PSERVER_ASSIGN_OR_RETURN(Timestamp ta, kv.Pull(mt, ak, &a));
      PSERVER_ASSIGN_OR_RETURN(Timestamp tb, kv.Pull(mt, ek, &b));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ta));
      PSERVER_RETURN_IF_ERROR(kv.Wait(tb));
      auto expected = [&](Key k, uint32_t e) {
        double sum = 0;
        for (uint32_t r = 0; r < kWorkers; ++r) {
          for (int q = 0; q <= round; ++q) sum += CopyPushed(r, k, e, q);
        }
        return sum;
      };
      for (Key k = 0; k < kCopyKeys; ++k) {
        for (uint32_t e = 0; e < 2; ++e) {
          const double even = k % 2 == 0 ? b[k / 2 * 2 + e] : expected(k, e);  // b: the even keys
          if (a[k * 2 + e] != expected(k, e) || even != expected(k, e)) {
            return Status::Internal(fmt::format("round {}: key {} element {} pulled as {} and {}, the sum is {}",
                                                round, k, e, a[k * 2 + e], even, expected(k, e)));
          }
        }
      }
      PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    }
    return Status::Ok();
  }));
  CopyJob r;
  for (uint32_t w = 0; w < cluster.num_workers(); ++w) r.received += cluster.worker(w).traffic().bytes_received;
  r.start_overs = wires.Count(pserver::testing::Direction::kReceive, [](const transport::Header& h) {
    return h.type == transport::MessageType::kPull && (h.aux & transport::kPullHoldsNoCopy) != 0;
  });
  return r;
}

TEST(FilteredClusterCopyTest, PullRepliesLeaveOutWhatDidNotChangeAndStayExact) {
  const CopyJob plain = RunCopyJob(/*filtered=*/false, /*damage=*/false);
  const CopyJob filtered = RunCopyJob(/*filtered=*/true, /*damage=*/false);
  std::printf("workers' wire bytes received: %llu without sigmod on pulls, %llu with (%.1fx fewer); %llu start-overs\n",
              static_cast<unsigned long long>(plain.received), static_cast<unsigned long long>(filtered.received),
              filtered.received > 0 ? static_cast<double>(plain.received) / static_cast<double>(filtered.received) : 0.0,
              static_cast<unsigned long long>(filtered.start_overs));
  EXPECT_LT(filtered.received * 3, plain.received);
  EXPECT_EQ(plain.start_overs, 0u);
  EXPECT_GT(filtered.start_overs, 0u);  // every worker's first pull of each server
}

TEST(FilteredClusterCopyTest, MissedRepliesArePulledAgainAndStayExact) {
  const CopyJob undamaged = RunCopyJob(/*filtered=*/true, /*damage=*/false);
  const CopyJob damaged = RunCopyJob(/*filtered=*/true, /*damage=*/true);
  std::printf("start-overs: %llu undamaged, %llu with every fourth copy's sequence number skipped\n",
              static_cast<unsigned long long>(undamaged.start_overs),
              static_cast<unsigned long long>(damaged.start_overs));
  EXPECT_GT(damaged.start_overs, undamaged.start_overs);  // the sums were checked in the job
}

INSTANTIATE_TEST_SUITE_P(Transports, FilteredClusterTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "inproc" : "zmq"; });

}  // namespace
}  // namespace pserver::kv
