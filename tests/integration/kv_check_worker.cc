// kv_check_worker: a worker program for the multi-process tests, written against the public
// API only (pserver/pserver.h). Run it under `pserver launch` (or with the PSERVER_* environment
// of pserver/launch_env.h); --scenario picks what it checks:
//
//   sum           every worker pushes (rank+1) * f(key) to the same random sparse keys of a
//                 float32, a float64 and an int64 table; after a barrier every worker pulls and
//                 checks the closed-form sum f(key) * W(W+1)/2 (and zeros for keys never pushed)
//   matrix        the same for rows of width 8, and for a width-1 table of dense ids 0..9999
//                 placed by KeyPlacement::kRange (checking that the ids reach every server)
//   varlen        a variable-length table, each key with its own length: values and lengths
//   empty         Push, Pull and PushPull with no keys complete OK (callback before return)
//   big           one Push and one Pull of >= 64 MiB of values, checked exactly
//   order         push/pull pairs of the same keys without Wait between them: pull i sees
//                 exactly pushes 0..i (values alternate in sign, so a stale read shows)
//   errors        bad calls fail at the call with kInvalidArgument/kNotFound naming the
//                 problem, and nothing of them reaches a server
//   delay         the bounded-delay model with tau = --max-delay (2 workers): push/pull pairs
//                 without Wait, and a pending bulk-synchronous pull that lets only tau requests
//                 behind it start (see DelayScenario)
//   ssp           stale-synchronous rounds, staleness 1, the last worker stopping after
//                 --slow-clock clocks and blocking until killed (see SspScenario)
//   ssp_join      a worker joining a running stale-synchronous job at worker 0's clock
//                 --joined-after (see SspJoinScenario)
//   checkpoint    --phase 1: pushes, a checkpoint, one more push recorded, then waits to be
//                 killed; --phase 2 (a job resumed from the checkpoint): the values, and the
//                 same push giving bit-identical values (see CheckpointScenario)
//   rules         every built-in update rule against a plain double reference of its formula
//   custom_rule   a table with the user rule "scaled_add" (servers: custom_rule_server), and
//                 a table naming an unknown rule refused with an error naming it
//   failover      pushes without waiting (up to 32 in flight) to 2000 keys of a float64 table,
//                 printing "failover: pushing" once under way, until --stop-file exists, then 200
//                 more; publishes its count, and after a barrier checks that every key holds
//                 f(key) * sum over workers of (rank+1) * count: the test SIGKILLs servers of a
//                 replicated job meanwhile, and no push may be lost or applied twice
//   wait_forever  pushes and waits in a loop; prints "pushing" after the first round. Used by
//                 the fault tests: once the cluster fails, it prints the error, waits (bounded)
//                 for the end of the job with Finalize, prints its outcome and exits 3
//
// Exit status: 0 the scenario passed; 1 a check failed or a call failed unexpectedly; 2 the
// program could not start (flags, environment, Node::Start); 3 wait_forever saw the cluster
// fail with kUnavailable or kAborted. Every failure is explained by a line on stderr.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>

#include "pserver/atomic_file.h"
#include "pserver/pserver.h"

// The scenarios spell table specs with designated initializers (`TableSpec{.name = "t", .width = 4}`),
// on purpose leaving every other field at its documented default; GCC's -Wextra would flag each
// field left out, and TableSpec grows fields over time.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {

using namespace pserver;  // NOLINT(google-build-using-namespace): a test program of the API

struct Context {
  Node& node;
  uint32_t rank;
  uint32_t workers;
  uint32_t servers;
  uint64_t seed;
  uint32_t iterations;     // order: push/pull pairs; ssp_join: worker 0's most clocks
  bool expect_wrong_sums;  // test of the test: expect every sum off by one worker weight
  int64_t max_delay;       // delay: the delay bound tau
  uint32_t rounds;         // ssp: rounds of the fast workers; ssp_join: the joiner's clocks
  uint32_t slow_clock;     // ssp: the clock the slow (last) worker stops at
  uint64_t joined_after;   // ssp_join: worker 0's clock when the joiner was started
  int phase;               // checkpoint: 1 or 2
  uint32_t phase1_workers; // checkpoint: workers of phase 1
  std::string checkpoint_dir;
  std::string expect_file;
  std::string stop_file;   // failover: stop pushing once it exists
};

// ---- helpers ---------------------------------------------------------------------------------

Status Mismatch(std::string what) { return Status::Internal("check failed: " + std::move(what)); }

template <typename T>
Result<T> In(Result<T> r, std::string_view what) {
  if (!r.ok()) return r.status().WithContext(what);
  return r;
}
Status In(const Status& s, std::string_view what) { return s.WithContext(what); }

// Exactly `n` distinct keys, sorted, the same for every worker given the same seed and stream.
// If `owner` is set, every key's low byte is `*owner`, so sets of different owners are disjoint.
SharedArray<Key> RandomKeys(uint64_t seed, uint64_t stream, size_t n, const uint32_t* owner = nullptr) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(stream)};
  std::mt19937_64 rng(seq);
  std::set<Key> keys;
  while (keys.size() < n) {
    Key k = rng();
    if (owner) k = (k & ~Key{0xFF}) | (*owner & 0xFF);
    keys.insert(k);
  }
  return SharedArray<Key>(std::vector<Key>(keys.begin(), keys.end()));
}

// The sum of (rank+1) over all workers: what W workers pushing (rank+1) * v add up to.
int64_t WorkerWeight(const Context& c) {
  return int64_t{c.workers} * (c.workers + 1) / 2 + (c.expect_wrong_sums ? 1 : 0);
}

template <typename T>
std::string Show(T v) {
  return fmt::format("{}", v);
}

// A table and the per-value function f(key, column) its test pushes (scaled by rank+1).
template <typename T>
struct SumCase {
  TableSpec spec;
  SharedArray<Key> keys;
  std::function<T(Key, uint32_t)> f;
  bool pull_into_buffer = false;  // exercise the copy-into-caller's-array path of Pull

  TableId table;
  SharedArray<T> pulled;
  Timestamp push_ts, pull_ts;
};

template <typename T>
Status DeclareAndPush(Context& c, KVWorker<T>& kv, SumCase<T>& sc) {
  PSERVER_ASSIGN_OR_RETURN(sc.table, In(c.node.DeclareTable(sc.spec), "declaring table '" + sc.spec.name + "'"));
  const uint32_t w = sc.spec.width;
  std::vector<T> vals(sc.keys.size() * w);
  for (size_t i = 0; i < sc.keys.size(); ++i) {
    for (uint32_t j = 0; j < w; ++j) vals[i * w + j] = static_cast<T>(sc.f(sc.keys[i], j) * static_cast<T>(c.rank + 1));
  }
  PSERVER_ASSIGN_OR_RETURN(
      sc.push_ts, In(kv.Push(sc.table, sc.keys, SharedArray<T>(std::move(vals))), "push to '" + sc.spec.name + "'"));
  return Status::Ok();
}

template <typename T>
Status PullAndCheck(Context& c, KVWorker<T>& kv, SumCase<T>& sc) {
  const uint32_t w = sc.spec.width;
  if (sc.pull_into_buffer) sc.pulled = SharedArray<T>(sc.keys.size() * w);
  PSERVER_ASSIGN_OR_RETURN(sc.pull_ts, In(kv.Pull(sc.table, sc.keys, &sc.pulled), "pull from '" + sc.spec.name + "'"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(sc.pull_ts), "waiting for the pull from '" + sc.spec.name + "'"));
  if (sc.pulled.size() != sc.keys.size() * w) {
    return Mismatch(fmt::format("table '{}': pulled {} values for {} keys of width {}", sc.spec.name, sc.pulled.size(),
                                sc.keys.size(), w));
  }
  const T weight = static_cast<T>(WorkerWeight(c));
  for (size_t i = 0; i < sc.keys.size(); ++i) {
    for (uint32_t j = 0; j < w; ++j) {
      const T want = static_cast<T>(sc.f(sc.keys[i], j) * weight);
      const T got = sc.pulled[i * w + j];
      if (got != want) {
        return Mismatch(fmt::format("table '{}': key {} (index {}) column {} holds {}, expected {} (= f * {})",
                                    sc.spec.name, sc.keys[i], i, j, Show(got), Show(want), WorkerWeight(c)));
      }
    }
  }
  return Status::Ok();
}

// Keys nobody pushed read as zero.
template <typename T>
Status CheckZeros(KVWorker<T>& kv, TableId table, const std::string& name, const SharedArray<Key>& keys,
                  uint32_t width) {
  SharedArray<T> vals;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(table, keys, &vals), "pull of unpushed keys"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull of unpushed keys"));
  if (vals.size() != keys.size() * width) {
    return Mismatch(fmt::format("table '{}': {} values for {} unpushed keys", name, vals.size(), keys.size()));
  }
  for (size_t i = 0; i < vals.size(); ++i) {
    if (vals[i] != T{0}) {
      return Mismatch(
          fmt::format("table '{}': key {} was never pushed but holds {}", name, keys[i / width], Show(vals[i])));
    }
  }
  return Status::Ok();
}

// ---- scenarios -------------------------------------------------------------------------------

Status SumScenario(Context& c) {
  SumCase<float> f32;
  f32.spec = TableSpec{.name = "sum_f32", .value_type = ValueType::kFloat32, .width = 1};
  f32.keys = RandomKeys(c.seed, 1, 2000);
  f32.f = [](Key k, uint32_t) { return static_cast<float>(k % 1000 + 1); };

  SumCase<double> f64;
  f64.spec = TableSpec{.name = "sum_f64", .value_type = ValueType::kFloat64, .width = 3};
  f64.keys = RandomKeys(c.seed, 2, 1000);
  f64.f = [](Key k, uint32_t j) { return static_cast<double>(k % 1000003) * 0.25 + j; };
  f64.pull_into_buffer = true;

  SumCase<int64_t> i64;
  i64.spec = TableSpec{.name = "sum_i64", .value_type = ValueType::kInt64, .width = 1};
  i64.keys = RandomKeys(c.seed, 3, 1500);
  // Up to 2^47 in magnitude and of both signs: integer sums must be exact.
  i64.f = [](Key k, uint32_t) { return static_cast<int64_t>(k >> 16) - (int64_t{1} << 47); };

  KVWorker<float> kv_f32(c.node);
  KVWorker<double> kv_f64(c.node);
  KVWorker<int64_t> kv_i64(c.node);
  PSERVER_RETURN_IF_ERROR(DeclareAndPush(c, kv_f32, f32));
  PSERVER_RETURN_IF_ERROR(DeclareAndPush(c, kv_f64, f64));
  PSERVER_RETURN_IF_ERROR(DeclareAndPush(c, kv_i64, i64));
  if (f32.table == f64.table || f64.table == i64.table || f32.table == i64.table) {
    return Mismatch(
        fmt::format("three table names share ids: {} {} {}", f32.table.value, f64.table.value, i64.table.value));
  }
  PSERVER_RETURN_IF_ERROR(In(kv_f32.Wait(f32.push_ts), "waiting for the push to sum_f32"));
  PSERVER_RETURN_IF_ERROR(In(kv_f64.Wait(f64.push_ts), "waiting for the push to sum_f64"));
  PSERVER_RETURN_IF_ERROR(In(kv_i64.Wait(i64.push_ts), "waiting for the push to sum_i64"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv_f32, f32));
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv_f64, f64));
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv_i64, i64));
  PSERVER_RETURN_IF_ERROR(CheckZeros(kv_f32, f32.table, "sum_f32", RandomKeys(c.seed, 4, 300), 1));
  PSERVER_RETURN_IF_ERROR(CheckZeros(kv_i64, i64.table, "sum_i64", RandomKeys(c.seed, 5, 300), 1));
  std::printf("worker %u: sum: 3 tables, %zu + %zu + %zu keys, every sum exact\n", c.rank, f32.keys.size(),
              f64.keys.size(), i64.keys.size());
  return Status::Ok();
}

Status MatrixScenario(Context& c) {
  SumCase<float> rows;
  rows.spec = TableSpec{.name = "matrix_w8", .value_type = ValueType::kFloat32, .width = 8};
  rows.keys = RandomKeys(c.seed, 10, 1000);
  rows.f = [](Key k, uint32_t j) { return static_cast<float>((k % 1009) * 8 + j); };
  rows.pull_into_buffer = true;

  SumCase<float> ids;
  ids.spec = TableSpec{.name = "dense_ids",
                       .value_type = ValueType::kFloat32,
                       .width = 1,
                       .placement = KeyPlacement::kRange,
                       .key_range = KeyRange{0, 9999}};
  std::vector<Key> all_ids(10000);
  for (Key i = 0; i < all_ids.size(); ++i) all_ids[i] = i;
  ids.keys = SharedArray<Key>(std::move(all_ids));
  ids.f = [](Key k, uint32_t) { return static_cast<float>(k + 1); };

  KVWorker<float> kv(c.node);
  PSERVER_RETURN_IF_ERROR(DeclareAndPush(c, kv, rows));
  PSERVER_RETURN_IF_ERROR(DeclareAndPush(c, kv, ids));
  // Dense small ids must not all land on one server: each server holds some of [0, 9999].
  std::vector<size_t> per_server(c.servers, 0);
  for (Key k : ids.keys) {
    PSERVER_ASSIGN_OR_RETURN(uint32_t s, In(kv.ServerOf(ids.table, k), "ServerOf"));
    if (s >= c.servers) return Mismatch(fmt::format("ServerOf({}) = {} but there are {} servers", k, s, c.servers));
    ++per_server[s];
  }
  for (uint32_t s = 0; s < c.servers; ++s) {
    if (per_server[s] == 0) {
      return Mismatch(
          fmt::format("no id of [0, 9999] is placed on server {} of {} (KeyPlacement::kRange)", s, c.servers));
    }
  }
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(rows.push_ts), "waiting for the push to matrix_w8"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ids.push_ts), "waiting for the push to dense_ids"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv, rows));
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv, ids));

  // A strided subset of the rows: non-contiguous runs on each server.
  SumCase<float> subset = rows;
  std::vector<Key> every_third;
  for (size_t i = 0; i < rows.keys.size(); i += 3) every_third.push_back(rows.keys[i]);
  subset.keys = SharedArray<Key>(std::move(every_third));
  subset.pulled = SharedArray<float>();
  subset.pull_into_buffer = false;
  PSERVER_RETURN_IF_ERROR(PullAndCheck(c, kv, subset));

  std::string spread;
  for (uint32_t s = 0; s < c.servers; ++s) spread += fmt::format("{}{}", s ? "/" : "", per_server[s]);
  std::printf("worker %u: matrix: %zu rows of 8 and 10000 dense ids (per server %s) exact\n", c.rank, rows.keys.size(),
              spread.c_str());
  return Status::Ok();
}

Status VarlenScenario(Context& c) {
  TableSpec spec{.name = "varlen", .value_type = ValueType::kFloat32, .variable_length = true};
  PSERVER_ASSIGN_OR_RETURN(TableId table, In(c.node.DeclareTable(spec), "declaring table 'varlen'"));
  KVWorker<float> kv(c.node);
  SharedArray<Key> keys = RandomKeys(c.seed, 20, 800);
  // A key's length is fixed by the key (the same on every worker); 0 is a valid length.
  auto len_of = [](Key k) { return static_cast<int32_t>(k % 6); };
  auto f = [](Key k, int32_t j) { return static_cast<float>(k % 1000 + 3 * j + 1); };
  std::vector<int32_t> lens(keys.size());
  std::vector<float> vals;
  for (size_t i = 0; i < keys.size(); ++i) {
    lens[i] = len_of(keys[i]);
    for (int32_t j = 0; j < lens[i]; ++j) vals.push_back(f(keys[i], j) * static_cast<float>(c.rank + 1));
  }
  const size_t total = vals.size();
  PSERVER_ASSIGN_OR_RETURN(Timestamp push, In(kv.Push(table, keys, SharedArray<float>(std::move(vals)),
                                                      SharedArray<int32_t>(std::move(lens))),
                                              "variable-length push"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(push), "waiting for the variable-length push"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));

  SharedArray<float> got;
  SharedArray<int32_t> got_lens;
  PSERVER_ASSIGN_OR_RETURN(Timestamp pull, In(kv.Pull(table, keys, &got, &got_lens), "variable-length pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(pull), "waiting for the variable-length pull"));
  if (got_lens.size() != keys.size()) {
    return Mismatch(fmt::format("varlen: {} lengths returned for {} keys", got_lens.size(), keys.size()));
  }
  if (got.size() != total) return Mismatch(fmt::format("varlen: {} values returned, expected {}", got.size(), total));
  const float weight = static_cast<float>(WorkerWeight(c));
  size_t pos = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (got_lens[i] != len_of(keys[i])) {
      return Mismatch(fmt::format("varlen: key {} (index {}) has length {}, expected {}", keys[i], i, got_lens[i],
                                  len_of(keys[i])));
    }
    for (int32_t j = 0; j < got_lens[i]; ++j, ++pos) {
      if (got[pos] != f(keys[i], j) * weight) {
        return Mismatch(
            fmt::format("varlen: key {} value {} is {}, expected {}", keys[i], j, got[pos], f(keys[i], j) * weight));
      }
    }
  }
  // Keys never pushed have length 0.
  SharedArray<Key> unpushed = RandomKeys(c.seed, 21, 200);
  SharedArray<float> none;
  SharedArray<int32_t> none_lens;
  PSERVER_ASSIGN_OR_RETURN(Timestamp pull0, In(kv.Pull(table, unpushed, &none, &none_lens), "pull of unpushed keys"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(pull0), "waiting for the pull of unpushed keys"));
  if (!none.empty() || none_lens.size() != unpushed.size() ||
      std::any_of(none_lens.begin(), none_lens.end(), [](int32_t l) { return l != 0; })) {
    return Mismatch(fmt::format("varlen: unpushed keys returned {} values and {} lengths (expected 0 and {} zeros)",
                                none.size(), none_lens.size(), unpushed.size()));
  }
  std::printf("worker %u: varlen: %zu keys, %zu values, lengths and values exact\n", c.rank, keys.size(), total);
  return Status::Ok();
}

Status EmptyScenario(Context& c) {
  PSERVER_ASSIGN_OR_RETURN(
      TableId fixed, In(c.node.DeclareTable(TableSpec{.name = "empty_w4", .width = 4}), "declaring table 'empty_w4'"));
  PSERVER_ASSIGN_OR_RETURN(TableId var, In(c.node.DeclareTable(TableSpec{.name = "empty_var", .variable_length = true}),
                                           "declaring table 'empty_var'"));
  KVWorker<float> kv(c.node);
  const SharedArray<Key> no_keys;
  // A request without keys completes (and runs its callback) before the call returns.
  auto expect_done = [&](const char* what, Result<Timestamp> ts, const bool& called, const Status& cb_status) {
    if (!ts.ok()) return ts.status().WithContext(what);
    if (!called) return Mismatch(fmt::format("{}: the callback did not run before the call returned", what));
    if (!cb_status.ok()) return cb_status.WithContext(fmt::format("{}: callback", what));
    return In(kv.Wait(*ts), fmt::format("{}: Wait", what));
  };
  struct Done {
    bool called = false;
    Status status;
    KVWorker<float>::Callback cb() {
      return [this](const Status& s) {
        called = true;
        status = s;
      };
    }
  };
  Done d1, d2, d3, d4, d5;
  PSERVER_RETURN_IF_ERROR(
      expect_done("empty push", kv.Push(fixed, no_keys, SharedArray<float>(), d1.cb()), d1.called, d1.status));
  SharedArray<float> vals;
  PSERVER_RETURN_IF_ERROR(expect_done("empty pull", kv.Pull(fixed, no_keys, &vals, d2.cb()), d2.called, d2.status));
  if (!vals.empty()) return Mismatch(fmt::format("empty pull returned {} values", vals.size()));
  SharedArray<float> out;
  PSERVER_RETURN_IF_ERROR(expect_done(
      "empty pushpull", kv.PushPull(fixed, no_keys, SharedArray<float>(), &out, d3.cb()), d3.called, d3.status));
  if (!out.empty()) return Mismatch(fmt::format("empty pushpull returned {} values", out.size()));
  PSERVER_RETURN_IF_ERROR(expect_done("empty variable-length push",
                                      kv.Push(var, no_keys, SharedArray<float>(), SharedArray<int32_t>(), d4.cb()),
                                      d4.called, d4.status));
  SharedArray<float> vvals;
  SharedArray<int32_t> vlens;
  PSERVER_RETURN_IF_ERROR(
      expect_done("empty variable-length pull", kv.Pull(var, no_keys, &vvals, &vlens, d5.cb()), d5.called, d5.status));
  if (!vvals.empty() || !vlens.empty()) {
    return Mismatch(
        fmt::format("empty variable-length pull returned {} values, {} lengths", vvals.size(), vlens.size()));
  }
  // The worker still works after empty requests.
  SharedArray<Key> one(std::vector<Key>{42});
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(fixed, one, &vals), "pull after empty requests"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull after empty requests"));
  if (vals.size() != 4) return Mismatch(fmt::format("pull of one key of width 4 returned {} values", vals.size()));
  std::printf("worker %u: empty: push, pull, pushpull and variable-length requests without keys are OK\n", c.rank);
  return Status::Ok();
}

Status BigScenario(Context& c) {
  constexpr uint32_t kWidth = 4096;
  constexpr size_t kKeys = 4096;  // 4096 * 4096 floats = 64 MiB in one request
  static_assert(kKeys * kWidth * sizeof(float) >= (size_t{64} << 20));
  PSERVER_ASSIGN_OR_RETURN(TableId table,
                           In(c.node.DeclareTable(TableSpec{.name = "big", .width = kWidth}), "declaring table 'big'"));
  KVWorker<float> kv(c.node);
  SharedArray<Key> keys = RandomKeys(c.seed, 30, kKeys);
  auto f = [](size_t i, uint32_t j) { return static_cast<float>((i * 31 + j) % 65521); };
  std::vector<float> vals(kKeys * kWidth);
  for (size_t i = 0; i < kKeys; ++i) {
    for (uint32_t j = 0; j < kWidth; ++j) vals[i * kWidth + j] = f(i, j) * static_cast<float>(c.rank + 1);
  }
  const size_t bytes = vals.size() * sizeof(float);
  PSERVER_ASSIGN_OR_RETURN(Timestamp push, In(kv.Push(table, keys, SharedArray<float>(std::move(vals))), "big push"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(push), "waiting for the big push"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));
  SharedArray<float> got;
  PSERVER_ASSIGN_OR_RETURN(Timestamp pull, In(kv.Pull(table, keys, &got), "big pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(pull), "waiting for the big pull"));
  if (got.size() != kKeys * kWidth) {
    return Mismatch(fmt::format("big: pulled {} values, expected {}", got.size(), kKeys * kWidth));
  }
  const float weight = static_cast<float>(WorkerWeight(c));
  for (size_t i = 0; i < kKeys; ++i) {
    for (uint32_t j = 0; j < kWidth; ++j) {
      if (got[i * kWidth + j] != f(i, j) * weight) {
        return Mismatch(fmt::format("big: key {} (index {}) column {} holds {}, expected {}", keys[i], i, j,
                                    got[i * kWidth + j], f(i, j) * weight));
      }
    }
  }
  std::printf("worker %u: big: one push and one pull of %zu MiB, exact\n", c.rank, bytes >> 20);
  return Status::Ok();
}

Status OrderScenario(Context& c) {
  constexpr uint32_t kWidth = 4;
  PSERVER_ASSIGN_OR_RETURN(
      TableId table,
      In(c.node.DeclareTable(TableSpec{.name = "order", .value_type = ValueType::kInt64, .width = kWidth}),
         "declaring table 'order'"));
  KVWorker<int64_t> kv(c.node);
  // Each worker its own keys (low byte = rank), spread over every server, so what a pull sees
  // depends only on this worker's own pushes.
  SharedArray<Key> keys = RandomKeys(c.seed, 40 + c.rank, 64, &c.rank);
  auto base = [](Key k, uint32_t j) { return static_cast<int64_t>(k % 97) + j + 1; };
  // Push i adds sign_i * (i+1) * base: the running coefficient goes 1, -1, 2, -2, 3, ...
  std::vector<int64_t> coef(c.iterations);
  std::vector<Timestamp> push_ts(c.iterations), pull_ts(c.iterations);
  std::deque<SharedArray<int64_t>> pulled(c.iterations);  // stable addresses for the Pull outputs
  int64_t running = 0;
  for (uint32_t i = 0; i < c.iterations; ++i) {
    const int64_t delta = (i % 2 == 0 ? 1 : -1) * static_cast<int64_t>(i + 1);
    running += delta;
    coef[i] = running;
    std::vector<int64_t> vals(keys.size() * kWidth);
    for (size_t k = 0; k < keys.size(); ++k) {
      for (uint32_t j = 0; j < kWidth; ++j) vals[k * kWidth + j] = delta * base(keys[k], j);
    }
    PSERVER_ASSIGN_OR_RETURN(
        push_ts[i], In(kv.Push(table, keys, SharedArray<int64_t>(std::move(vals))), fmt::format("push {}", i)));
    // No Wait: the pull is issued right behind the push.
    PSERVER_ASSIGN_OR_RETURN(pull_ts[i], In(kv.Pull(table, keys, &pulled[i]), fmt::format("pull {}", i)));
  }
  for (uint32_t i = 0; i < c.iterations; ++i) {
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(push_ts[i]), fmt::format("waiting for push {}", i)));
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(pull_ts[i]), fmt::format("waiting for pull {}", i)));
    if (pulled[i].size() != keys.size() * kWidth) {
      return Mismatch(fmt::format("order: pull {} returned {} values", i, pulled[i].size()));
    }
    for (size_t k = 0; k < keys.size(); ++k) {
      for (uint32_t j = 0; j < kWidth; ++j) {
        const int64_t want = coef[i] * base(keys[k], j);
        if (pulled[i][k * kWidth + j] != want) {
          return Mismatch(fmt::format("order: pull {} of key {} column {} saw {}, expected {} (pushes 0..{} applied)",
                                      i, keys[k], j, pulled[i][k * kWidth + j], want, i));
        }
      }
    }
  }
  // PushPull returns the values after its own push.
  std::vector<int64_t> vals(keys.size() * kWidth);
  for (size_t k = 0; k < keys.size(); ++k) {
    for (uint32_t j = 0; j < kWidth; ++j) vals[k * kWidth + j] = 1000 * base(keys[k], j);
  }
  SharedArray<int64_t> out;
  PSERVER_ASSIGN_OR_RETURN(Timestamp pp,
                           In(kv.PushPull(table, keys, SharedArray<int64_t>(std::move(vals)), &out), "pushpull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(pp), "waiting for the pushpull"));
  const int64_t after = running + 1000;
  for (size_t k = 0; k < keys.size(); ++k) {
    for (uint32_t j = 0; j < kWidth; ++j) {
      if (out.size() != keys.size() * kWidth || out[k * kWidth + j] != after * base(keys[k], j)) {
        return Mismatch(fmt::format("order: pushpull of key {} column {} returned {}, expected {}", keys[k], j,
                                    out.size() == keys.size() * kWidth ? out[k * kWidth + j] : -1,
                                    after * base(keys[k], j)));
      }
    }
  }
  std::printf("worker %u: order: %u push/pull pairs without Wait, each pull saw exactly the pushes before it\n", c.rank,
              c.iterations);
  return Status::Ok();
}

// OK if `got` is an error with `code` whose message contains `needle`.
Status ExpectError(const Status& got, StatusCode code, std::string_view needle, std::string_view what) {
  if (got.code() == code && got.message().find(needle) != std::string::npos) {
    std::printf("  %s: refused as expected: %s\n", std::string(what).c_str(), got.ToString().c_str());
    return Status::Ok();
  }
  return Mismatch(fmt::format("errors: {}: expected {} mentioning \"{}\", got {}", what, StatusCodeName(code), needle,
                              got.ToString()));
}

Status ErrorsScenario(Context& c) {
  PSERVER_ASSIGN_OR_RETURN(
      TableId fixed, In(c.node.DeclareTable(TableSpec{.name = "errors", .width = 2}), "declaring table 'errors'"));
  PSERVER_ASSIGN_OR_RETURN(TableId var,
                           In(c.node.DeclareTable(TableSpec{.name = "errors_var", .variable_length = true}),
                              "declaring table 'errors_var'"));
  PSERVER_ASSIGN_OR_RETURN(
      TableId ranged, In(c.node.DeclareTable(TableSpec{
                             .name = "errors_range", .placement = KeyPlacement::kRange, .key_range = KeyRange{0, 99}}),
                         "declaring table 'errors_range'"));
  KVWorker<float> kv(c.node);
  // This worker's own keys (low byte = rank) with a known baseline.
  SharedArray<Key> keys = RandomKeys(c.seed, 50 + c.rank, 8, &c.rank);
  std::vector<float> base(keys.size() * 2);
  for (size_t i = 0; i < base.size(); ++i) base[i] = static_cast<float>(i + 1);
  const std::vector<float> baseline = base;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                           In(kv.Push(fixed, keys, SharedArray<float>(std::move(base))), "baseline push"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the baseline push"));
  std::vector<int32_t> var_lens(keys.size(), 2);
  PSERVER_ASSIGN_OR_RETURN(ts, In(kv.Push(var, keys, SharedArray<float>(std::vector<float>(baseline)),
                                          SharedArray<int32_t>(std::vector<int32_t>(var_lens))),
                                  "baseline variable-length push"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the baseline variable-length push"));

  const std::vector<Key> sorted(keys.begin(), keys.end());
  std::vector<Key> unsorted = sorted;
  std::swap(unsorted[2], unsorted[5]);
  std::vector<Key> duplicate = sorted;
  duplicate[4] = duplicate[3];
  auto big = [&](size_t n) { return SharedArray<float>(std::vector<float>(n, 1e6f)); };
  auto lens = [](std::vector<int32_t> v) { return SharedArray<int32_t>(std::move(v)); };
  const size_t n = sorted.size();
  std::vector<int32_t> twos(n, 2);

  const StatusCode kInvalid = StatusCode::kInvalidArgument;
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(fixed, SharedArray<Key>(std::vector<Key>(unsorted)), big(2 * n)).status(),
                                      kInvalid, "not sorted", "push with unsorted keys"));
  SharedArray<float> pull_out;
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Pull(fixed, SharedArray<Key>(std::vector<Key>(unsorted)), &pull_out).status(),
                                      kInvalid, "not sorted", "pull with unsorted keys"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Push(fixed, SharedArray<Key>(std::vector<Key>(duplicate)), big(2 * n)).status(), kInvalid,
                  "duplicate key", "push with duplicate keys"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Push(fixed, keys, big(2 * n - 1)).status(), kInvalid, "values", "push with one value too few"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Push(fixed, keys, big(2 * n + 2)).status(), kInvalid, "values", "push with one row too many"));
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(fixed, keys, big(2 * n), lens(twos)).status(), kInvalid, "length",
                                      "push with lengths to a fixed-width table"));
  SharedArray<float> wrong_buffer(2 * n + 1);
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Pull(fixed, keys, &wrong_buffer).status(), kInvalid, "pull buffer",
                                      "pull into a buffer of the wrong size"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Push(var, keys, big(2 * n)).status(), kInvalid, "length", "variable-length push without lengths"));
  std::vector<int32_t> short_lens(n - 1, 2);
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(var, keys, big(2 * n), lens(short_lens)).status(), kInvalid, "lengths",
                                      "variable-length push with too few lengths"));
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(var, keys, big(2 * n + 1), lens(twos)).status(), kInvalid, "lengths",
                                      "variable-length push whose lengths do not add up"));
  std::vector<int32_t> negative = twos;
  negative[1] = -2;
  negative[2] = 6;
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(var, keys, big(2 * n), lens(negative)).status(), kInvalid,
                                      "negative length", "variable-length push with a negative length"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Push(TableId(fixed.value + var.value + ranged.value + 1000), keys, big(2 * n)).status(),
                  StatusCode::kNotFound, "not declared", "push to an undeclared table"));
  KVWorker<double> wrong_type(c.node);
  PSERVER_RETURN_IF_ERROR(
      ExpectError(wrong_type.Push(fixed, keys, SharedArray<double>(std::vector<double>(2 * n, 1e6))).status(), kInvalid,
                  "float32", "push of float64 values to a float32 table"));
  SharedArray<double> wrong_out;
  PSERVER_RETURN_IF_ERROR(ExpectError(wrong_type.Pull(fixed, keys, &wrong_out).status(), kInvalid, "float32",
                                      "pull of float64 values from a float32 table"));
  PSERVER_RETURN_IF_ERROR(ExpectError(kv.Push(ranged, SharedArray<Key>(std::vector<Key>{5, 99, 100}), big(3)).status(),
                                      kInvalid, "outside", "push of a key outside the declared range"));
  PSERVER_RETURN_IF_ERROR(
      ExpectError(kv.Wait(Timestamp(1 << 30)), kInvalid, "never issued", "Wait for a timestamp never issued"));
  PSERVER_RETURN_IF_ERROR(ExpectError(c.node.DeclareTable(TableSpec{.name = "errors", .width = 3}).status(), kInvalid,
                                      "errors", "redeclaring a table with another width"));
  PSERVER_RETURN_IF_ERROR(ExpectError(c.node.DeclareTable(TableSpec{.name = ""}).status(), kInvalid, "name",
                                      "declaring a table without a name"));
  if (!pull_out.empty() || !wrong_out.empty()) {
    return Mismatch("errors: a refused pull wrote to its output array");
  }

  // Nothing of the refused calls reached a server: the values are still the baseline.
  SharedArray<float> now;
  PSERVER_ASSIGN_OR_RETURN(ts, In(kv.Pull(fixed, keys, &now), "pull after the refused calls"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull after the refused calls"));
  SharedArray<float> var_now;
  SharedArray<int32_t> var_now_lens;
  PSERVER_ASSIGN_OR_RETURN(ts, In(kv.Pull(var, keys, &var_now, &var_now_lens), "variable-length pull after them"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the variable-length pull after them"));
  SharedArray<float> range_now;
  SharedArray<Key> range_keys(std::vector<Key>{5, 99});
  PSERVER_ASSIGN_OR_RETURN(ts, In(kv.Pull(ranged, range_keys, &range_now), "range pull after them"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the range pull after them"));
  for (size_t i = 0; i < baseline.size(); ++i) {
    if (now.size() != baseline.size() || now[i] != baseline[i]) {
      return Mismatch(
          fmt::format("errors: value {} of table 'errors' changed to {} (baseline {}): a refused call "
                      "reached a server",
                      i, now.size() == baseline.size() ? now[i] : -1.0f, baseline[i]));
    }
    if (var_now.size() != baseline.size() || var_now[i] != baseline[i]) {
      return Mismatch(
          fmt::format("errors: value {} of table 'errors_var' changed: a refused call reached a server", i));
    }
  }
  if (var_now_lens.size() != n ||
      std::any_of(var_now_lens.begin(), var_now_lens.end(), [](int32_t l) { return l != 2; })) {
    return Mismatch("errors: lengths of table 'errors_var' changed: a refused call reached a server");
  }
  if (range_now.size() != 2 || range_now[0] != 0 || range_now[1] != 0) {
    return Mismatch("errors: table 'errors_range' changed: a refused call reached a server");
  }
  PSERVER_RETURN_IF_ERROR(In(c.node.health(), "node health after the refused calls"));
  std::printf("worker %u: errors: every bad call was refused at the call and changed nothing\n", c.rank);
  return Status::Ok();
}

// Pushes and waits until something fails; returns that failure (never OK).
Status WaitForeverScenario(Context& c) {
  PSERVER_ASSIGN_OR_RETURN(
      TableId table, In(c.node.DeclareTable(TableSpec{.name = "forever", .width = 16}), "declaring table 'forever'"));
  KVWorker<float> kv(c.node);
  SharedArray<Key> keys = RandomKeys(c.seed, 60, 256);
  // Every server must take part, so that killing any one of them is felt by every push.
  std::vector<bool> reached(c.servers, false);
  for (Key k : keys) {
    PSERVER_ASSIGN_OR_RETURN(uint32_t s, In(kv.ServerOf(table, k), "ServerOf"));
    if (s < c.servers) reached[s] = true;
  }
  if (std::count(reached.begin(), reached.end(), true) != static_cast<long>(c.servers)) {
    return Mismatch("wait_forever: the keys do not reach every server");
  }
  for (uint64_t i = 0;; ++i) {
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                             In(kv.Push(table, keys, SharedArray<float>(std::vector<float>(keys.size() * 16, 1.0f))),
                                fmt::format("push {}", i)));
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts, std::chrono::seconds(30)), fmt::format("waiting for push {}", i)));
    if (i == 0) {
      std::printf("worker %u: pushing\n", c.rank);
      std::fflush(stdout);
    }
  }
}

Status OutliveScenario(Context& c) {
  const std::string name = fmt::format("outlive-{}", c.rank);
  PSERVER_ASSIGN_OR_RETURN(TableId table,
                           In(c.node.DeclareTable(TableSpec{.name = name, .width = 4}), "declaring table '" + name + "'"));
  KVWorker<float> kv(c.node);
  SharedArray<Key> keys = RandomKeys(c.seed, 70 + c.rank, 64);
  const float v = static_cast<float>(c.rank + 1);
  auto push = [&](int round) -> Status {
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                             In(kv.Push(table, keys, SharedArray<float>(std::vector<float>(keys.size() * 4, v))),
                                fmt::format("push {}", round)));
    return In(kv.Wait(ts), fmt::format("waiting for push {}", round));
  };
  PSERVER_RETURN_IF_ERROR(push(0));
  std::printf("worker %u: pushing\n", c.rank);
  std::fflush(stdout);
  PSERVER_RETURN_IF_ERROR(
      In(c.node.Barrier(BarrierGroup::kWorkers, std::chrono::seconds(120)), "barrier after the others died"));
  std::printf("worker %u: the barrier completed\n", c.rank);
  std::fflush(stdout);
  PSERVER_RETURN_IF_ERROR(push(1));
  SharedArray<float> pulled;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(table, keys, &pulled), "pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull"));
  if (pulled.size() != keys.size() * 4) {
    return Mismatch(fmt::format("outlive: pulled {} values for {} keys of width 4", pulled.size(), keys.size()));
  }
  for (size_t i = 0; i < pulled.size(); ++i) {
    if (pulled[i] != 2 * v) return Mismatch(fmt::format("outlive: value {} is {}, expected {}", i, pulled[i], 2 * v));
  }
  return Status::Ok();
}

// ---- consistency ------------------------------------------------------------------------------

// delay: the bounded-delay model with tau = --max-delay (0: sequential). Needs 2 workers.
//  1. Push/pull pairs without Wait on this worker's own keys: pull i sees exactly pushes 0..i.
//  2. A gate: worker 0 advances its clock and issues a bulk-synchronous pull (staleness 0) that
//     the servers hold until worker 1 ticks its clock too; behind it, without waiting, N
//     PushPulls that each add 1 to a counter key. With the delay bound, only the first tau of
//     them may start while the gate is pending. After a barrier worker 1 reads the counter
//     (it must be <= tau; with no bound it would read N), then ticks its clock, which releases
//     the gate. In worker 0 every callback checks that all tasks <= t - tau - 1 had finished
//     when task t finished, and PushPull k returns exactly k.
Status DelayScenario(Context& c) {
  if (c.workers != 2) return Mismatch("delay: needs exactly 2 workers");
  const int64_t tau = c.max_delay;
  PSERVER_ASSIGN_OR_RETURN(TableId pairs, In(c.node.DeclareTable(TableSpec{.name = "delay_pairs",
                                                                           .value_type = ValueType::kInt64}),
                                             "declaring table 'delay_pairs'"));
  PSERVER_ASSIGN_OR_RETURN(TableId counter, In(c.node.DeclareTable(TableSpec{.name = "delay_counter",
                                                                             .value_type = ValueType::kInt64}),
                                               "declaring table 'delay_counter'"));
  PSERVER_ASSIGN_OR_RETURN(TableId gate, In(c.node.DeclareTable(TableSpec{.name = "delay_gate",
                                                                          .value_type = ValueType::kInt64}),
                                            "declaring table 'delay_gate'"));
  KVWorker<int64_t> kv(c.node);
  for (TableId t : {pairs, counter, gate}) PSERVER_RETURN_IF_ERROR(In(kv.SetMaxDelay(t, tau), "SetMaxDelay"));

  // 1. Pairs.
  SharedArray<Key> keys = RandomKeys(c.seed, 80 + c.rank, 32, &c.rank);
  const uint32_t n_pairs = 50;
  std::vector<Timestamp> pair_ts;
  std::deque<SharedArray<int64_t>> pulled(n_pairs);
  for (uint32_t i = 0; i < n_pairs; ++i) {
    std::vector<int64_t> vals(keys.size());
    for (size_t k = 0; k < keys.size(); ++k) vals[k] = static_cast<int64_t>((keys[k] % 13 + 1) * (i + 1));
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, In(kv.Push(pairs, keys, SharedArray<int64_t>(std::move(vals))),
                                             fmt::format("pair push {}", i)));
    PSERVER_ASSIGN_OR_RETURN(Timestamp q, In(kv.Pull(pairs, keys, &pulled[i]), fmt::format("pair pull {}", i)));
    pair_ts.push_back(p);
    pair_ts.push_back(q);
  }
  for (Timestamp t : pair_ts) PSERVER_RETURN_IF_ERROR(In(kv.Wait(t), "waiting for a pair"));
  for (uint32_t i = 0; i < n_pairs; ++i) {
    if (pulled[i].size() != keys.size()) return Mismatch(fmt::format("delay: pull {} returned {} values", i, pulled[i].size()));
    for (size_t k = 0; k < keys.size(); ++k) {
      const int64_t want = static_cast<int64_t>((keys[k] % 13 + 1) * (i + 1) * (i + 2) / 2);
      if (pulled[i][k] != want) {
        return Mismatch(fmt::format("delay: pull {} of key {} saw {}, expected {} (pushes 0..{})", i, keys[k],
                                    pulled[i][k], want, i));
      }
    }
  }

  // 2. The gate. The counter must live on another server than the gate: a server holds a
  // worker's later requests behind its held pull, so a counter on the gate's server would read 0
  // whatever the worker's delay bound, and the check below would prove nothing.
  SharedArray<Key> gate_key(std::vector<Key>{11});
  PSERVER_ASSIGN_OR_RETURN(uint32_t gate_server, In(kv.ServerOf(gate, gate_key[0]), "ServerOf (gate)"));
  Key counter_at = 7;
  for (;; ++counter_at) {
    PSERVER_ASSIGN_OR_RETURN(uint32_t s, In(kv.ServerOf(counter, counter_at), "ServerOf (counter)"));
    if (s != gate_server) break;
    if (counter_at > 7 + 10000) {
      return Mismatch(fmt::format("delay: no counter key on another server than the gate's (server {}); {} servers",
                                  gate_server, c.servers));
    }
  }
  SharedArray<Key> counter_key(std::vector<Key>{counter_at});
  PSERVER_ASSIGN_OR_RETURN(uint32_t counter_server, In(kv.ServerOf(counter, counter_at), "ServerOf (counter)"));
  if (counter_server == gate_server) return Mismatch("delay: the counter and the gate live on the same server");
  std::printf("worker %u: delay: gate key %llu on server %u, counter key %llu on server %u\n", c.rank,
              static_cast<unsigned long long>(gate_key[0]), gate_server, static_cast<unsigned long long>(counter_at),
              counter_server);
  const int64_t n_tasks = 20;
  if (c.rank == 0) {
    PSERVER_RETURN_IF_ERROR(In(kv.SetStaleness(gate, 0), "SetStaleness"));
    PSERVER_RETURN_IF_ERROR(In(kv.Clock().status(), "Clock"));
    struct Shared {
      std::mutex mu;
      std::map<int64_t, bool> done;  // timestamp -> finished
      std::vector<std::string> errors;
    };
    auto sh = std::make_shared<Shared>();
    std::deque<SharedArray<int64_t>> outs(n_tasks + 1);
    std::vector<Timestamp> ts(n_tasks + 1);
    // Task k (0: the gate, 1..n_tasks: the PushPulls) finished: every task <= k - tau - 1 must
    // have finished before it (it could not even start before).
    auto on_done = [sh, tau](int64_t k) {
      return [sh, tau, k](const Status& s) {
        std::lock_guard lock(sh->mu);
        if (!s.ok()) sh->errors.push_back(fmt::format("task {} failed: {}", k, s.ToString()));
        for (int64_t j = 0; j <= k - tau - 1; ++j) {
          if (!sh->done[j]) {
            sh->errors.push_back(fmt::format("task {} finished before task {} (delay bound {})", k, j, tau));
          }
        }
        sh->done[k] = true;
      };
    };
    SharedArray<int64_t> gate_out;
    RequestOptions gate_opts = on_done(0);
    PSERVER_ASSIGN_OR_RETURN(ts[0], In(kv.Pull(gate, gate_key, &gate_out, gate_opts), "gate pull"));
    for (int64_t k = 1; k <= n_tasks; ++k) {
      RequestOptions o = on_done(k);
      PSERVER_ASSIGN_OR_RETURN(ts[k], In(kv.PushPull(counter, counter_key, SharedArray<int64_t>(std::vector<int64_t>{1}),
                                                     &outs[k], o),
                                         fmt::format("counter PushPull {}", k)));
      if (ts[k].value != ts[0].value + k) {
        return Mismatch(fmt::format("delay: timestamps not consecutive: gate {}, task {} got {}", ts[0].value, k,
                                    ts[k].value));
      }
    }
    std::printf("worker 0: delay: gate and %lld PushPulls issued\n", static_cast<long long>(n_tasks));
    std::fflush(stdout);
    PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after issuing"));
    for (int64_t k = 0; k <= n_tasks; ++k) PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts[k]), fmt::format("waiting for task {}", k)));
    std::lock_guard lock(sh->mu);
    if (!sh->errors.empty()) return Mismatch("delay: " + sh->errors.front());
    // PushPull k applied pushes 1..k (one worker's requests to a server are applied in order).
    for (int64_t k = 1; k <= n_tasks; ++k) {
      if (outs[k].size() != 1 || outs[k][0] != k) {
        return Mismatch(fmt::format("delay: PushPull {} returned {}, expected {}", k,
                                    outs[k].size() == 1 ? outs[k][0] : -1, k));
      }
    }
  } else {
    PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after issuing"));
    // Worker 0's gate is pending (this worker is still at clock 0): at most tau of its
    // PushPulls can have reached the counter.
    SharedArray<int64_t> now;
    PSERVER_ASSIGN_OR_RETURN(Timestamp t, In(kv.Pull(counter, counter_key, &now), "counter pull"));
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(t), "waiting for the counter pull"));
    if (now.size() != 1 || now[0] > tau) {
      return Mismatch(fmt::format("delay: while worker 0's gate was pending the counter read {}, but at most {} "
                                  "tasks may start behind it (delay bound {})",
                                  now.size() == 1 ? now[0] : -1, tau, tau));
    }
    std::printf("worker 1: delay: counter %lld while the gate was pending (bound %lld)\n",
                static_cast<long long>(now[0]), static_cast<long long>(tau));
    PSERVER_RETURN_IF_ERROR(In(kv.Clock().status(), "Clock (releases the gate)"));
  }
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "final barrier"));
  SharedArray<int64_t> fin;
  PSERVER_ASSIGN_OR_RETURN(Timestamp t, In(kv.Pull(counter, counter_key, &fin), "final counter pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(t), "waiting for the final counter pull"));
  if (fin.size() != 1 || fin[0] != n_tasks) {
    return Mismatch(fmt::format("delay: final counter {}, expected {}", fin.size() == 1 ? fin[0] : -1, n_tasks));
  }
  std::printf("worker %u: delay: bound %lld held\n", c.rank, static_cast<long long>(tau));
  return Status::Ok();
}

// ssp: stale-synchronous rounds with staleness 1 and a slow last worker. Every worker w adds 1
// per clock to its own key w, then ticks its clock and pulls all keys at the new clock C (the
// servers answer once every live worker reached C - 1). The last worker stops after
// --slow-clock clocks, prints "stuck at clock", and blocks (the test kills it). The others run
// --rounds rounds; once the first pull that needs the slow worker past its last clock is sent
// and not answered at once, they print "waiting for the slow worker". Every pull at clock C checks that it includes each worker's
// pushes of clocks < C - s (the slow worker's: of clocks < min(C - s, --slow-clock), as it may
// be dead by then), at most the slow worker's --slow-clock pushes, and exactly this worker's C
// pushes. A pull at C answered means every live worker reached C - s: no worker runs more
// than s clocks ahead of the slowest live one (the test checks that no pull needing the slow
// worker past its last clock completes before the test kills it).
Status SspScenario(Context& c) {
  constexpr int64_t kStaleness = 1;
  const uint32_t slow = c.workers - 1;
  PSERVER_ASSIGN_OR_RETURN(TableId table, In(c.node.DeclareTable(TableSpec{.name = "ssp", .value_type = ValueType::kFloat64}),
                                             "declaring table 'ssp'"));
  KVWorker<double> kv(c.node);
  PSERVER_RETURN_IF_ERROR(In(kv.SetStaleness(table, kStaleness), "SetStaleness"));
  std::vector<Key> all(c.workers);
  for (uint32_t w = 0; w < c.workers; ++w) all[w] = 1000 + w;
  SharedArray<Key> all_keys{std::vector<Key>(all)};
  SharedArray<Key> own(std::vector<Key>{all[c.rank]});
  const uint32_t rounds = c.rank == slow ? c.slow_clock : c.rounds;
  for (uint32_t r = 0; r < rounds; ++r) {
    PSERVER_ASSIGN_OR_RETURN(Timestamp p, In(kv.Push(table, own, SharedArray<double>(std::vector<double>{1.0})),
                                             fmt::format("push at clock {}", r)));
    PSERVER_ASSIGN_OR_RETURN(uint64_t clock, In(kv.Clock(), "Clock"));
    const int64_t C = static_cast<int64_t>(clock);
    SharedArray<double> got;
    PSERVER_ASSIGN_OR_RETURN(Timestamp q, In(kv.Pull(table, all_keys, &got), fmt::format("pull at clock {}", C)));
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(p), "waiting for the push"));
    if (c.rank != slow && C - kStaleness == static_cast<int64_t>(c.slow_clock) + 1) {
      // The first pull that needs the slow worker past its last clock. It is sent (and the push
      // before it answered, so the pull is at or on its way to the servers). The test kills the
      // slow worker only after every fast worker printed the line below, so until then the slow
      // worker lives at clock --slow-clock and no server may answer this pull: one answered in
      // the first moments is a broken clock, said here (the window only catches it early; a
      // correct server never answers, whatever the timing). Later pulls come after the kill.
      Status early = kv.Wait(q, std::chrono::milliseconds(300));
      if (early.ok()) {
        return Mismatch(fmt::format("ssp: the pull at clock {} was answered while the slow worker was at clock {} "
                                    "(staleness {})",
                                    C, c.slow_clock, kStaleness));
      }
      if (early.code() != StatusCode::kDeadlineExceeded) return In(early, fmt::format("pull at clock {}", C));
      std::printf("worker %u: ssp: waiting for the slow worker at clock %lld\n", c.rank, static_cast<long long>(C));
      std::fflush(stdout);
    }
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(q), fmt::format("waiting for the pull at clock {}", C)));
    if (got.size() != c.workers) return Mismatch(fmt::format("ssp: pull at clock {}: {} values", C, got.size()));
    std::string seen;
    for (uint32_t w = 0; w < c.workers; ++w) {
      const double v = got[w];
      seen += fmt::format(" {}", v);
      // Worker w pushes 1 at each clock 0..; at clock C - s it must have pushed C - s times.
      const double lower = w == slow ? std::min<double>(C - kStaleness, c.slow_clock) : C - kStaleness;
      if (v < lower) {
        return Mismatch(fmt::format("ssp: pull at clock {} saw {} pushes of worker {}, expected at least {} "
                                    "(staleness {})",
                                    C, v, w, lower, kStaleness));
      }
      if (w == slow && v > c.slow_clock) {
        return Mismatch(fmt::format("ssp: saw {} pushes of the slow worker, it made {}", v, c.slow_clock));
      }
      if (w == c.rank && v != C) {
        return Mismatch(fmt::format("ssp: pull at clock {} saw {} of this worker's own pushes, expected {}", C, v, C));
      }
    }
    std::printf("worker %u: ssp: clock %lld pulled%s\n", c.rank, static_cast<long long>(C), seen.c_str());
    std::fflush(stdout);
  }
  if (c.rank == slow) {
    std::printf("worker %u: ssp: stuck at clock %u\n", c.rank, c.slow_clock);
    std::fflush(stdout);
    // Nobody else enters this barrier: the worker blocks until the test kills it.
    Status s = c.node.Barrier(BarrierGroup::kWorkers, std::chrono::hours(1));
    return Mismatch("ssp: the slow worker's barrier returned: " + s.ToString());
  }
  std::printf("worker %u: ssp: %u rounds done\n", c.rank, c.rounds);
  return Status::Ok();
}

// A worker joining a running stale-synchronous job (docs/elasticity.md, section 4). The job
// forms with one worker (rank 0): it pushes 1 to every key of the sums table each clock, pulls
// with staleness 1, counts its clocks in control key 0, and goes on until control key 1 is set.
// The test starts a second worker (rank 1) once rank 0 printed clock --joined-after: the joiner
// is admitted at the servers' least clock (at least that one), so after its first clock rank 0
// can go two clocks further; admitted at clock 0 instead, rank 0 would wait for it to reach
// --joined-after: the joiner says so after 60 s. The joiner does --rounds clocks, sets key 1 and
// leaves; rank 0 then checks every sum: its own clocks plus the joiner's --rounds.
Status SspJoinScenario(Context& c) {
  constexpr int64_t kStaleness = 1;
  constexpr std::chrono::seconds kPatience(60);
  PSERVER_ASSIGN_OR_RETURN(
      TableId sums, In(c.node.DeclareTable(TableSpec{.name = "ssp_join", .value_type = ValueType::kFloat64}),
                       "declaring table 'ssp_join'"));
  PSERVER_ASSIGN_OR_RETURN(
      TableId control,
      In(c.node.DeclareTable(TableSpec{.name = "ssp_join_control", .value_type = ValueType::kFloat64}),
         "declaring table 'ssp_join_control'"));
  KVWorker<double> kv(c.node);
  PSERVER_RETURN_IF_ERROR(In(kv.SetStaleness(sums, kStaleness), "SetStaleness"));
  const SharedArray<Key> keys = RandomKeys(c.seed, 31, 500);
  auto add = [&](TableId table, SharedArray<Key> k, double v) -> Status {
    PSERVER_ASSIGN_OR_RETURN(Timestamp t, kv.Push(table, k, SharedArray<double>(std::vector<double>(k.size(), v))));
    return kv.Wait(t);
  };
  auto read = [&](TableId table, SharedArray<Key> k) -> Result<SharedArray<double>> {
    SharedArray<double> got;
    PSERVER_ASSIGN_OR_RETURN(Timestamp t, kv.Pull(table, k, &got));
    PSERVER_RETURN_IF_ERROR(kv.Wait(t));
    return got;
  };
  const SharedArray<Key> progress_key(std::vector<Key>{0}), stop_key(std::vector<Key>{1});
  // One clock: push 1 to every key, advance the clock, pull with staleness 1.
  auto one_clock = [&]() -> Result<uint64_t> {
    PSERVER_RETURN_IF_ERROR(In(add(sums, keys, 1.0), "push"));
    PSERVER_ASSIGN_OR_RETURN(uint64_t clock, In(kv.Clock(), "Clock"));
    PSERVER_RETURN_IF_ERROR(In(read(sums, keys).status(), fmt::format("pull at clock {}", clock)));
    return clock;
  };
  if (c.rank == 0) {
    uint64_t clocks = 0;
    for (;;) {
      PSERVER_ASSIGN_OR_RETURN(clocks, one_clock());
      PSERVER_RETURN_IF_ERROR(In(add(control, progress_key, 1.0), "counting the clock"));
      std::printf("worker 0: ssp_join: clock %llu\n", static_cast<unsigned long long>(clocks));
      std::fflush(stdout);
      PSERVER_ASSIGN_OR_RETURN(SharedArray<double> stop, In(read(control, stop_key), "reading the stop key"));
      if (stop[0] > 0) break;
      if (clocks >= c.iterations) return Mismatch(fmt::format("ssp_join: no worker joined in {} clocks", clocks));
    }
    const double expected = static_cast<double>(clocks + c.rounds);
    PSERVER_ASSIGN_OR_RETURN(SharedArray<double> got, In(read(sums, keys), "the final pull"));
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] != expected) {
        return Mismatch(fmt::format("ssp_join: key {} holds {}, expected {} ({} clocks of worker 0, {} of the joiner)",
                                    keys[i], got[i], expected, clocks, c.rounds));
      }
    }
    std::printf("worker 0: ssp_join: every sum is %.0f as expected\n", expected);
    return Status::Ok();
  }
  for (uint32_t r = 0; r < c.rounds; ++r) {
    PSERVER_ASSIGN_OR_RETURN(uint64_t clock, one_clock());
    std::printf("worker %u: ssp_join: clock %llu\n", c.rank, static_cast<unsigned long long>(clock));
    std::fflush(stdout);
    if (r > 0) continue;
    // Worker 0 must get two clocks past the one it had reached before this worker joined.
    const double target = static_cast<double>(c.joined_after + 2);
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    for (;;) {
      PSERVER_ASSIGN_OR_RETURN(SharedArray<double> done, In(read(control, progress_key), "reading worker 0's clock"));
      if (done[0] >= target) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return Mismatch(fmt::format("ssp_join: worker 0 stays at clock {} (it joined at {}, this worker is at clock "
                                    "{}): this worker was not admitted at the current clock",
                                    done[0], c.joined_after, clock));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a poll, not a synchronisation
    }
  }
  PSERVER_RETURN_IF_ERROR(In(add(control, stop_key, 1.0), "setting the stop key"));
  std::printf("worker %u: ssp_join: %u clocks done\n", c.rank, c.rounds);
  return Status::Ok();
}

// A checkpoint, the whole cluster killed, and a job resumed from it (docs/durability.md): run
// once with --phase 1 (W workers) and once with --phase 2 (one worker) on a cluster resumed
// from --dir. Tables: "ck_sums" (float64, add) and "ck_ada" (float32 rows of width 2, AdaGrad).
// Phase 1: every worker pushes (rank+1) * G(r, key) for 3 rounds; worker 0 checkpoints the job
// into --dir, pushes round 3 alone, pulls both tables and writes their bytes to --expect-file,
// says "phase 1 done"; then every worker waits to be killed. Phase 2: the sums are the closed
// form W(W+1)/2 * sum of G over rounds 0..2 (W = --phase1-workers); then the same round 3 push
// gives values bit-identical to --expect-file's (AdaGrad's accumulators came back too).
double CheckpointGradient(uint64_t seed, int round, Key key) {
  return static_cast<double>((seed ^ (key * 0x9E3779B97F4A7C15ULL) ^ (uint64_t(round) * 0xBF58476D1CE4E5B9ULL)) % 17) - 8;
}

Status CheckpointScenario(Context& c) {
  PSERVER_ASSIGN_OR_RETURN(TableId sums, In(c.node.DeclareTable(TableSpec{.name = "ck_sums", .value_type = ValueType::kFloat64}),
                                            "declaring table 'ck_sums'"));
  TableSpec ada_spec{.name = "ck_ada", .width = 2};
  ada_spec.updater = UpdaterSpec{"adagrad", {{"lr", 0.25}}};
  PSERVER_ASSIGN_OR_RETURN(TableId ada, In(c.node.DeclareTable(ada_spec), "declaring table 'ck_ada'"));
  KVWorker<double> kv64(c.node);
  KVWorker<float> kv32(c.node);
  const SharedArray<Key> keys = RandomKeys(c.seed, 41, 3000);
  auto push_round = [&](int r, double weight) -> Status {
    std::vector<double> g64(keys.size());
    std::vector<float> g32(keys.size() * 2);
    for (size_t i = 0; i < keys.size(); ++i) {
      g64[i] = weight * CheckpointGradient(c.seed, r, keys[i]);
      g32[2 * i] = static_cast<float>(g64[i]) / 3;
      g32[2 * i + 1] = -static_cast<float>(g64[i]);
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp a, kv64.Push(sums, keys, SharedArray<double>(std::move(g64))));
    PSERVER_ASSIGN_OR_RETURN(Timestamp b, kv32.Push(ada, keys, SharedArray<float>(std::move(g32))));
    PSERVER_RETURN_IF_ERROR(kv64.Wait(a));
    return kv32.Wait(b);
  };
  // Both tables' values, as bytes.
  auto pull_bytes = [&]() -> Result<std::string> {
    SharedArray<double> v64;
    SharedArray<float> v32;
    PSERVER_ASSIGN_OR_RETURN(Timestamp a, kv64.Pull(sums, keys, &v64));
    PSERVER_ASSIGN_OR_RETURN(Timestamp b, kv32.Pull(ada, keys, &v32));
    PSERVER_RETURN_IF_ERROR(kv64.Wait(a));
    PSERVER_RETURN_IF_ERROR(kv32.Wait(b));
    return std::string(reinterpret_cast<const char*>(v64.data()), v64.size_bytes()) +
           std::string(reinterpret_cast<const char*>(v32.data()), v32.size_bytes());
  };
  if (c.phase == 1) {
    for (int r = 0; r < 3; ++r) PSERVER_RETURN_IF_ERROR(In(push_round(r, c.rank + 1), fmt::format("round {}", r)));
    PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));
    if (c.rank == 0) {
      const char* scheduler = std::getenv("PSERVER_SCHEDULER");
      PSERVER_ASSIGN_OR_RETURN(std::string summary, In(CheckpointJob(scheduler ? scheduler : "", c.checkpoint_dir,
                                                                     std::chrono::minutes(5)),
                                                       "checkpoint"));
      std::printf("worker 0: %s\n", summary.c_str());
      PSERVER_RETURN_IF_ERROR(In(push_round(3, 1), "round 3"));
      PSERVER_ASSIGN_OR_RETURN(std::string bytes, In(pull_bytes(), "pull after round 3"));
      PSERVER_RETURN_IF_ERROR(In(WriteFileAtomically(c.expect_file, bytes), "writing the expected values"));
    }
    std::printf("worker %u: checkpoint: phase 1 done, waiting to be killed\n", c.rank);
    std::fflush(stdout);
    for (;;) pause();  // until the test kills the cluster
  }
  // Phase 2: resumed.
  SharedArray<double> got;
  PSERVER_ASSIGN_OR_RETURN(Timestamp t, kv64.Pull(sums, keys, &got));
  PSERVER_RETURN_IF_ERROR(kv64.Wait(t));
  const double w = c.phase1_workers;
  for (size_t i = 0; i < keys.size(); ++i) {
    double expected = 0;
    for (int r = 0; r < 3; ++r) expected += w * (w + 1) / 2 * CheckpointGradient(c.seed, r, keys[i]);
    if (got[i] != expected) {
      return Mismatch(fmt::format("checkpoint: resumed key {} holds {}, expected {}", keys[i], got[i], expected));
    }
  }
  PSERVER_RETURN_IF_ERROR(In(push_round(3, 1), "round 3"));
  PSERVER_ASSIGN_OR_RETURN(std::string bytes, In(pull_bytes(), "pull after round 3"));
  std::ifstream in(c.expect_file, std::ios::binary);
  const std::string want((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (want.size() != bytes.size() || want != bytes) {
    return Mismatch(fmt::format("checkpoint: after round 3 the resumed job's values differ from the first job's "
                                "({} bytes, {} expected)",
                                bytes.size(), want.size()));
  }
  std::printf("worker 0: checkpoint: resumed values and state are bit-identical\n");
  return Status::Ok();
}

// ---- update rules -----------------------------------------------------------------------------

// Plain double references of the built-in rules (from the formulas in pserver/table.h).
struct RefState {
  double w = 0, a = 0, b = 0, t = 0;  // value and up to three state values
};

double Param(const UpdaterSpec& u, const char* name) { return u.params.at(name); }

void RefApply(const UpdaterSpec& u, RefState& s, double g) {
  if (u.name == "add") {
    s.w += g;
  } else if (u.name == "assign") {
    s.w = g;
  } else if (u.name == "sgd") {
    s.w -= Param(u, "lr") * g;
  } else if (u.name == "adagrad") {
    s.a += g * g;
    s.w -= Param(u, "lr") * g / (std::sqrt(s.a) + Param(u, "eps"));
  } else if (u.name == "adam") {
    const double b1 = Param(u, "beta1"), b2 = Param(u, "beta2");
    s.t += 1;
    s.a = b1 * s.a + (1 - b1) * g;      // m
    s.b = b2 * s.b + (1 - b2) * g * g;  // v
    const double mh = s.a / (1 - std::pow(b1, s.t));
    const double vh = s.b / (1 - std::pow(b2, s.t));
    s.w -= Param(u, "lr") * mh / (std::sqrt(vh) + Param(u, "eps"));
  } else if (u.name == "ftrl") {
    const double alpha = Param(u, "alpha"), beta = Param(u, "beta"), l1 = Param(u, "l1"), l2 = Param(u, "l2");
    const double n_new = s.b + g * g;  // a = z, b = n
    const double sigma = (std::sqrt(n_new) - std::sqrt(s.b)) / alpha;
    s.a += g - sigma * s.w;
    s.b = n_new;
    if (std::abs(s.a) <= l1) {
      s.w = 0;
    } else {
      const double sign = s.a > 0 ? 1.0 : -1.0;
      s.w = -(s.a - sign * l1) / ((beta + std::sqrt(n_new)) / alpha + l2);
    }
  }
}

// One prox iteration from the summed gradient g and curvature u of the iteration.
double RefProx(const UpdaterSpec& p, double w0, double g, double u) {
  const double l1 = Param(p, "l1"), l2 = Param(p, "l2"), delta = Param(p, "delta");
  if (!(u + l2 > 0)) return w0;
  const double a = u * w0 - g;
  double x = 0;
  if (a > l1) x = (a - l1) / (u + l2);
  if (a < -l1) x = (a + l1) / (u + l2);
  return std::min(std::max(x, w0 - delta), w0 + delta);
}

bool Close(double got, double want) { return std::abs(got - want) <= 1e-6 * std::max(1.0, std::abs(want)); }

// A seeded gradient in [-1, 1) for (worker, rule, push, key index, column).
double Grad(uint64_t seed, uint32_t worker, uint32_t rule, uint32_t push, size_t key, uint32_t col) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), worker, rule, push,
                    static_cast<uint32_t>(key), col};
  std::mt19937_64 rng(seq);
  return std::uniform_real_distribution<double>(-1.0, 1.0)(rng);
}

// rules: every built-in rule on its own float64 table of width 4. Each worker pushes
// kPushes seeded gradient rows to its own keys (the order across workers does not matter),
// then after a barrier every worker pulls every worker's keys and compares with the reference.
// prox: both workers push the same keys, one clock per round with a barrier between rounds;
// the reference steps from the round's summed gradients and curvatures.
Status RulesScenario(Context& c) {
  constexpr uint32_t kWidth = 4, kPushes = 6, kKeys = 40;
  const std::vector<UpdaterSpec> rules = {
      {"add", {}},
      {"assign", {}},
      {"sgd", {{"lr", 0.1}}},
      {"adagrad", {{"lr", 0.5}, {"eps", 1e-6}}},
      {"adam", {{"lr", 0.05}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}}},
      {"ftrl", {{"alpha", 0.1}, {"beta", 1.0}, {"l1", 0.05}, {"l2", 0.1}}},
  };
  KVWorker<double> kv(c.node);
  std::vector<SharedArray<Key>> keys_of(c.workers);
  for (uint32_t w = 0; w < c.workers; ++w) keys_of[w] = RandomKeys(c.seed, 90 + w, kKeys, &w);
  std::vector<TableId> tables;
  std::vector<Timestamp> pending;
  for (uint32_t r = 0; r < rules.size(); ++r) {
    const std::string name = "rule_" + rules[r].name;
    PSERVER_ASSIGN_OR_RETURN(TableId t, In(c.node.DeclareTable(TableSpec{.name = name,
                                                                         .value_type = ValueType::kFloat64,
                                                                         .width = kWidth,
                                                                         .updater = rules[r]}),
                                           "declaring table '" + name + "'"));
    tables.push_back(t);
    const SharedArray<Key>& keys = keys_of[c.rank];
    for (uint32_t p = 0; p < kPushes; ++p) {
      std::vector<double> vals(keys.size() * kWidth);
      for (size_t k = 0; k < keys.size(); ++k) {
        for (uint32_t j = 0; j < kWidth; ++j) vals[k * kWidth + j] = Grad(c.seed, c.rank, r, p, k, j);
      }
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Push(t, keys, SharedArray<double>(std::move(vals))),
                                                fmt::format("push {} to '{}'", p, name)));
      pending.push_back(ts);
    }
  }
  // prox: shared keys, one clock per round.
  const UpdaterSpec prox{"prox", {{"l1", 0.1}, {"l2", 0.5}, {"delta", 1.0}}};
  PSERVER_ASSIGN_OR_RETURN(TableId prox_table,
                           In(c.node.DeclareTable(TableSpec{.name = "rule_prox",
                                                            .value_type = ValueType::kFloat64,
                                                            .width = kWidth,
                                                            .updater = prox,
                                                            .push_arity = 2}),
                              "declaring table 'rule_prox'"));
  const uint32_t prox_id = static_cast<uint32_t>(rules.size());
  SharedArray<Key> shared = RandomKeys(c.seed, 99, kKeys);
  auto curvature = [&](uint32_t w, uint32_t p, size_t k, uint32_t j) {
    return 0.5 + 0.5 * (1.0 + Grad(c.seed, w, prox_id + 1, p, k, j));  // in [0.5, 1.5)
  };
  for (Timestamp ts : pending) PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for a push"));
  for (uint32_t p = 0; p < kPushes; ++p) {
    std::vector<double> vals(shared.size() * kWidth * 2);
    for (size_t k = 0; k < shared.size(); ++k) {
      for (uint32_t j = 0; j < kWidth; ++j) {
        vals[k * kWidth * 2 + j] = 3.0 * Grad(c.seed, c.rank, prox_id, p, k, j);
        vals[k * kWidth * 2 + kWidth + j] = curvature(c.rank, p, k, j);
      }
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Push(prox_table, shared, SharedArray<double>(std::move(vals))),
                                              fmt::format("prox push {}", p)));
    PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), fmt::format("waiting for prox push {}", p)));
    PSERVER_RETURN_IF_ERROR(In(kv.Clock().status(), "Clock"));
    PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), fmt::format("barrier after prox round {}", p)));
  }

  // Check every rule on every worker's keys.
  for (uint32_t r = 0; r < rules.size(); ++r) {
    for (uint32_t w = 0; w < c.workers; ++w) {
      const SharedArray<Key>& keys = keys_of[w];
      SharedArray<double> got;
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(tables[r], keys, &got), "pull of rule_" + rules[r].name));
      PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull of rule_" + rules[r].name));
      if (got.size() != keys.size() * kWidth) return Mismatch(fmt::format("rules: {} values pulled", got.size()));
      for (size_t k = 0; k < keys.size(); ++k) {
        for (uint32_t j = 0; j < kWidth; ++j) {
          RefState s;
          for (uint32_t p = 0; p < kPushes; ++p) RefApply(rules[r], s, Grad(c.seed, w, r, p, k, j));
          if (!Close(got[k * kWidth + j], s.w)) {
            return Mismatch(fmt::format("rules: '{}' key {} of worker {} column {} holds {:.17g}, the reference "
                                        "gives {:.17g}",
                                        rules[r].name, keys[k], w, j, got[k * kWidth + j], s.w));
          }
        }
      }
    }
  }
  SharedArray<double> got;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(prox_table, shared, &got), "pull of rule_prox"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull of rule_prox"));
  if (got.size() != shared.size() * kWidth) return Mismatch(fmt::format("rules: prox: {} values pulled", got.size()));
  size_t clamped = 0;
  for (size_t k = 0; k < shared.size(); ++k) {
    for (uint32_t j = 0; j < kWidth; ++j) {
      double w = 0;
      for (uint32_t p = 0; p < kPushes; ++p) {
        double g = 0, u = 0;
        for (uint32_t v = 0; v < c.workers; ++v) {
          g += 3.0 * Grad(c.seed, v, prox_id, p, k, j);
          u += curvature(v, p, k, j);
        }
        const double next = RefProx(prox, w, g, u);
        if (std::abs(next - w) >= Param(prox, "delta") - 1e-12) ++clamped;
        w = next;
      }
      if (!Close(got[k * kWidth + j], w)) {
        return Mismatch(fmt::format("rules: 'prox' key {} column {} holds {:.17g}, the reference gives {:.17g}",
                                    shared[k], j, got[k * kWidth + j], w));
      }
    }
  }
  std::printf("worker %u: rules: %zu rules + prox match the reference (%zu prox steps clamped)\n", c.rank,
              rules.size(), clamped);
  return Status::Ok();
}

// custom_rule: run against servers that registered "scaled_add" (w += k * push), e.g.
// custom_rule_server. Every worker pushes (rank+1) * f(key) to the same keys 3 times with
// k = 3; after a barrier the sum is 3 * 3 * f * W(W+1)/2. A table naming an unknown rule must
// fail to declare with an error naming the rule.
Status CustomRuleScenario(Context& c) {
  constexpr uint32_t kWidth = 2, kPushes = 3;
  constexpr float kK = 3.0f;
  PSERVER_ASSIGN_OR_RETURN(TableId table,
                           In(c.node.DeclareTable(TableSpec{.name = "scaled",
                                                            .width = kWidth,
                                                            .updater = UpdaterSpec{"scaled_add", {{"k", kK}}}}),
                              "declaring table 'scaled'"));
  KVWorker<float> kv(c.node);
  SharedArray<Key> keys = RandomKeys(c.seed, 100, 500);
  auto f = [](Key k, uint32_t j) { return static_cast<float>(k % 100 + j + 1); };
  std::vector<Timestamp> pending;
  for (uint32_t p = 0; p < kPushes; ++p) {
    std::vector<float> vals(keys.size() * kWidth);
    for (size_t i = 0; i < keys.size(); ++i) {
      for (uint32_t j = 0; j < kWidth; ++j) vals[i * kWidth + j] = f(keys[i], j) * static_cast<float>(c.rank + 1);
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Push(table, keys, SharedArray<float>(std::move(vals))), "push"));
    pending.push_back(ts);
  }
  for (Timestamp ts : pending) PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for a push"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier after the pushes"));
  SharedArray<float> got;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Pull(table, keys, &got), "pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), "waiting for the pull"));
  if (got.size() != keys.size() * kWidth) return Mismatch(fmt::format("custom_rule: {} values pulled", got.size()));
  const float weight = static_cast<float>(WorkerWeight(c));
  for (size_t i = 0; i < keys.size(); ++i) {
    for (uint32_t j = 0; j < kWidth; ++j) {
      const float want = kK * kPushes * f(keys[i], j) * weight;
      if (got[i * kWidth + j] != want) {
        return Mismatch(fmt::format("custom_rule: key {} column {} holds {}, expected {} (= k * pushes * f * {})",
                                    keys[i], j, got[i * kWidth + j], want, WorkerWeight(c)));
      }
    }
  }
  Result<TableId> bad = c.node.DeclareTable(
      TableSpec{.name = "unknown_rule", .updater = UpdaterSpec{"no_such_rule", {}}});
  if (bad.ok() || bad.status().message().find("no_such_rule") == std::string::npos) {
    return Mismatch(fmt::format("custom_rule: declaring a table with rule 'no_such_rule' gave {}, expected an error "
                                "naming the rule",
                                bad.ok() ? std::string("OK") : bad.status().ToString()));
  }
  std::printf("worker %u: custom_rule: scaled_add exact; unknown rule refused: %s\n", c.rank,
              bad.status().ToString().c_str());
  return Status::Ok();
}

// Pushes from every worker, many in flight, while the test kills replicated servers; then the
// exact sum of what every worker says it pushed.
Status FailoverScenario(Context& c) {
  if (c.stop_file.empty()) return Status::InvalidArgument("failover needs --stop-file");
  PSERVER_ASSIGN_OR_RETURN(TableId table, In(c.node.DeclareTable(TableSpec{.name = "failover", .value_type = ValueType::kFloat64}),
                                             "declaring table 'failover'"));
  PSERVER_ASSIGN_OR_RETURN(TableId counts, In(c.node.DeclareTable(TableSpec{.name = "failover_counts", .value_type = ValueType::kFloat64}),
                                              "declaring table 'failover_counts'"));
  KVWorker<double> kv(c.node);
  const SharedArray<Key> keys = RandomKeys(c.seed, 41, 2000);
  auto f = [](Key k) { return static_cast<double>(1 + k % 7); };
  std::vector<double> mine(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) mine[i] = f(keys[i]) * (c.rank + 1);
  const SharedArray<double> vals(std::move(mine));
  constexpr size_t kInFlight = 32;
  constexpr uint64_t kAfterStop = 200, kMostPushes = 2000000;
  std::deque<Timestamp> in_flight;
  uint64_t pushed = 0, stop_at = 0;
  while (stop_at == 0 || pushed < stop_at) {
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, In(kv.Push(table, keys, vals), "push"));
    in_flight.push_back(ts);
    ++pushed;
    if (in_flight.size() > kInFlight) {
      PSERVER_RETURN_IF_ERROR(In(kv.Wait(in_flight.front()), fmt::format("push {}", in_flight.front().value)));
      in_flight.pop_front();
    }
    if (pushed == 100) {
      std::printf("failover: pushing\n");
      std::fflush(stdout);
    }
    if (stop_at == 0 && pushed % 16 == 0 && std::filesystem::exists(c.stop_file)) stop_at = pushed + kAfterStop;
    if (pushed > kMostPushes) return Mismatch(fmt::format("{} pushes and still no {}", pushed, c.stop_file));
  }
  for (Timestamp ts : in_flight) PSERVER_RETURN_IF_ERROR(In(kv.Wait(ts), fmt::format("push {}", ts.value)));
  // Every worker's count, under its rank.
  PSERVER_ASSIGN_OR_RETURN(Timestamp told, In(kv.Push(counts, SharedArray<Key>(std::vector<Key>{c.rank}),
                                                      SharedArray<double>(std::vector<double>{double(pushed)})),
                                              "push of the count"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(told), "push of the count"));
  PSERVER_RETURN_IF_ERROR(In(c.node.Barrier(BarrierGroup::kWorkers), "barrier"));
  std::vector<Key> ranks(c.workers);
  for (uint32_t w = 0; w < c.workers; ++w) ranks[w] = w;
  SharedArray<double> n;
  PSERVER_ASSIGN_OR_RETURN(Timestamp asked, In(kv.Pull(counts, SharedArray<Key>(std::move(ranks)), &n), "pull of the counts"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(asked), "pull of the counts"));
  double weight = 0;
  for (uint32_t w = 0; w < c.workers; ++w) weight += (w + 1) * n[w];
  if (c.expect_wrong_sums) weight += 1;
  SharedArray<double> got;
  PSERVER_ASSIGN_OR_RETURN(Timestamp pull, In(kv.Pull(table, keys, &got), "pull"));
  PSERVER_RETURN_IF_ERROR(In(kv.Wait(pull), "pull"));
  for (size_t i = 0; i < keys.size(); ++i) {
    if (got[i] != f(keys[i]) * weight) {
      return Mismatch(fmt::format("key {} holds {}, expected {} = {} x {} (pushes: {})", keys[i], got[i],
                                  f(keys[i]) * weight, f(keys[i]), weight, fmt::join(n, ", ")));
    }
  }
  std::printf("failover: worker %u pushed %llu times; every sum is exact (weight %.0f)\n", c.rank,
              static_cast<unsigned long long>(pushed), weight);
  std::fflush(stdout);
  // Nobody finalizes (ending its part) before every worker checked.
  return In(c.node.Barrier(BarrierGroup::kWorkers), "barrier");
}

using ScenarioFn = Status (*)(Context&);
const std::map<std::string, ScenarioFn>& Scenarios() {
  static const std::map<std::string, ScenarioFn> scenarios = {
      {"sum", SumScenario},       {"matrix", MatrixScenario},
      {"varlen", VarlenScenario}, {"empty", EmptyScenario},
      {"big", BigScenario},       {"order", OrderScenario},
      {"errors", ErrorsScenario}, {"wait_forever", WaitForeverScenario},
      {"outlive", OutliveScenario},
      {"delay", DelayScenario},   {"ssp", SspScenario},
      {"ssp_join", SspJoinScenario},   {"checkpoint", CheckpointScenario},
      {"rules", RulesScenario},   {"custom_rule", CustomRuleScenario},
      {"failover", FailoverScenario},
  };
  return scenarios;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Worker program of the pserver multi-process tests: runs one check scenario against the cluster "
      "given by the PSERVER_* environment (see pserver/launch_env.h)"};
  std::string scenario;
  uint64_t seed = 1;
  uint32_t iterations = 300;
  int64_t heartbeat_interval_ms = 0;
  int64_t send_timeout_ms = 0;
  std::string log_level;
  std::string tag;
  bool expect_wrong_sums = false;
  int64_t max_delay = 0;
  uint32_t rounds = 6;
  uint32_t slow_clock = 2;
  uint64_t joined_after = 0;
  int phase = 1;
  uint32_t phase1_workers = 1;
  std::string checkpoint_dir, expect_file, stop_file;
  std::vector<std::string> names;
  for (const auto& [name, fn] : Scenarios()) names.push_back(name);
  app.add_option("--scenario", scenario, "What to check")->required()->check(CLI::IsMember(names));
  app.add_option("--seed", seed, "Seed of the key sets (the same on every worker)")->capture_default_str();
  app.add_option("--iterations", iterations, "order: push/pull pairs; ssp_join: worker 0's most clocks")
      ->check(CLI::Range(1u, 100000u))
      ->capture_default_str();
  app.add_option("--max-delay", max_delay, "delay: the delay bound tau (0: sequential)")
      ->check(CLI::Range(int64_t{0}, int64_t{19}))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "ssp: rounds of the fast workers; ssp_join: the joiner's clocks")->check(CLI::Range(1u, 1000u))->capture_default_str();
  app.add_option("--slow-clock", slow_clock, "ssp: the clock the slow (last) worker stops at")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  app.add_option("--joined-after", joined_after, "ssp_join: worker 0's clock when the joiner was started")
      ->capture_default_str();
  app.add_option("--phase", phase, "checkpoint: 1 (push, checkpoint) or 2 (resumed: check)")
      ->check(CLI::Range(1, 2))
      ->capture_default_str();
  app.add_option("--phase1-workers", phase1_workers, "checkpoint: the workers of phase 1")->capture_default_str();
  app.add_option("--dir", checkpoint_dir, "checkpoint: the checkpoint directory");
  app.add_option("--expect-file", expect_file, "checkpoint: where phase 1 leaves the values phase 2 must match");
  app.add_option("--stop-file", stop_file, "failover: stop pushing (200 pushes later) once this file exists");
  app.add_option("--heartbeat-interval-ms", heartbeat_interval_ms, "Override the node's heartbeat interval")
      ->check(CLI::PositiveNumber);
  app.add_option("--send-timeout-ms", send_timeout_ms, "Override the node's send timeout")->check(CLI::PositiveNumber);
  app.add_option("--log-level", log_level, "Library log level: trace, debug, info, warn, error or off");
  app.add_option("--tag", tag, "Ignored; lets a test recognise its processes by their command line");
  app.add_flag("--expect-wrong-sums", expect_wrong_sums,
               "Test of the test: expect sums as if one more worker had pushed, so checks must fail");
  CLI11_PARSE(app, argc, argv);

  std::printf("kv_check_worker: scenario %s, seed %llu\n", scenario.c_str(), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  if (!log_level.empty() && !SetLogLevel(log_level)) {
    std::fprintf(stderr, "kv_check_worker: unknown log level '%s'\n", log_level.c_str());
    return 2;
  }
  Result<NodeOptions> options = NodeOptionsFromEnvironment();
  if (!options.ok()) {
    std::fprintf(stderr, "kv_check_worker: %s\n", options.status().ToString().c_str());
    return 2;
  }
  if (heartbeat_interval_ms > 0) options->heartbeat_interval = std::chrono::milliseconds(heartbeat_interval_ms);
  if (send_timeout_ms > 0) options->send_timeout = std::chrono::milliseconds(send_timeout_ms);
  Result<std::unique_ptr<Node>> node = Node::Start(*options);
  if (!node.ok()) {
    std::fprintf(stderr, "kv_check_worker: cannot join the cluster: %s\n", node.status().ToString().c_str());
    return 2;
  }
  Context ctx{**node,      (*node)->rank().value, (*node)->num_workers(), (*node)->num_servers(), seed,
              iterations, expect_wrong_sums,     max_delay,              rounds,                  slow_clock,
              joined_after, phase,         phase1_workers,         checkpoint_dir,          expect_file,
              stop_file};
  Status s = Scenarios().at(scenario)(ctx);
  if (scenario == "wait_forever") {
    if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kAborted) {
      std::fprintf(stderr, "kv_check_worker: worker %u: the cluster failed: %s\n", ctx.rank, s.ToString().c_str());
      // Wait (bounded) for the scheduler's verdict before leaving, so that the scheduler does not
      // wait its shutdown timeout for this worker's confirmation. Finalize returns the job's error.
      Status end = (*node)->Finalize(std::chrono::seconds(30));
      std::fprintf(stderr, "kv_check_worker: worker %u: the job ended: %s\n", ctx.rank, end.ToString().c_str());
      return 3;
    }
  }
  if (!s.ok()) {
    std::fprintf(stderr, "kv_check_worker: worker %u: scenario %s FAILED (seed %llu): %s\n", ctx.rank, scenario.c_str(),
                 static_cast<unsigned long long>(seed), s.ToString().c_str());
    return 1;
  }
  // The scenario's own checks passed; the job's verdict (Finalize) comes next: a job that lost a
  // worker ends with an error even when this worker's checks passed.
  std::printf("kv_check_worker: worker %u: scenario %s checks passed\n", ctx.rank, scenario.c_str());
  std::fflush(stdout);
  if (Status f = (*node)->Finalize(); !f.ok()) {
    std::fprintf(stderr, "kv_check_worker: worker %u: Finalize: %s\n", ctx.rank, f.ToString().c_str());
    return 1;
  }
  std::printf("kv_check_worker: worker %u: scenario %s passed\n", ctx.rank, scenario.c_str());
  return 0;
}
