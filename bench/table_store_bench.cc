// Micro benchmark of TableStore (kv/server/table_store.h): push and pull of 100k random keys per
// request into a sparse width-1 float table with plain SGD, and the memory per parameter.
// BM_Push applies a user rule (Apply only, so the default one-row-at-a-time ApplyBatch);
// BM_PushBuiltinSgd the built-in "sgd" rule (its own batched loop).
//
// The table holds a universe of 1M random 64-bit keys (pushed once before timing); each request
// is a sorted random 100k-key subset of it, so the figures are the steady state of updates, not
// of inserts. The bound, measured in the same run over the same requests, is a single-thread
// in-memory SGD loop into a pre-sized flat array indexed by each key's position in the universe
// (what an ideal store would do: no hashing, no lookup, no reply). Each store benchmark reports
// `vs_bound` = its wall time / the bound's wall time (below 1: faster than the bound, possible
// with several shards). Wall time, since the store runs on several threads.
//
// BM_Add* measure the built-in "add" rule (the default of every table) through TableStore:
// BM_AddSparsePush/Pull over the same 100k-key requests (one shard), BM_AddRowPush/Pull/
// HeldPullPush over one key per request whose row is `bytes` long (rows of 64 KiB and more are
// stored one buffer each and shared with pull replies; HeldPullPush pushes while the previous
// pull's reply still holds the row, the copy-on-write case). Bytes/s count the row's bytes once
// per request. (Until issue 12 plain add tables lived in a SumStore of their own; this file as of
// commit b6c1605 runs the same workloads through both, for a comparison in one run.)
//
// BM_MemoryPerParameter pushes 10M random keys (100 requests of 100k) and reports
// `bytes_per_param` = memory_bytes() / num_keys() (the store's own count; the acceptance
// figure, resident memory <= 16 bytes, is `pserver bench --workloads memory`) next to the 12
// bytes of a bare key and value.
//
//   table_store_bench --benchmark_counters_tabular=true --benchmark_repetitions=3
//                     --benchmark_report_aggregates_only=true
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kv/server/apply_pool.h"
#include "kv/server/table_store.h"
#include "kv/server/updaters.h"

namespace pserver::kv {
namespace {

constexpr uint64_t kSeed = 42;
constexpr size_t kUniverse = 1'000'000;
constexpr size_t kRequestKeys = 100'000;
constexpr size_t kRequests = 8;  // distinct requests cycled through
constexpr float kLr = 0.01f;
constexpr TableId kTable{1};

// value -= lr * push (the built-in "sgd" rule lives in updaters.cc; this one keeps the bench
// independent of it).
class SgdRule : public Updater {
 public:
  void Apply(const UpdateContext&, std::span<float> v, std::span<float>, std::span<const float> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] -= kLr * g[i];
  }
  void Apply(const UpdateContext&, std::span<double> v, std::span<double>, std::span<const double> g) const override {
    for (size_t i = 0; i < v.size(); ++i) v[i] -= kLr * g[i];
  }
};

struct Workload {
  std::vector<Key> universe;                  // random keys
  std::vector<std::vector<uint32_t>> picks;   // per request: sorted-by-key positions in universe
  std::vector<ServerRequest> pushes, pulls;
};

Workload MakeWorkload() {
  Workload wl;
  Workload* w = &wl;
  {
    std::mt19937_64 rng(kSeed);
    w->universe.resize(kUniverse);
    for (Key& k : w->universe) k = rng();
    std::sort(w->universe.begin(), w->universe.end());  // so that sorted positions = sorted keys
    std::vector<uint32_t> all(kUniverse);
    for (uint32_t i = 0; i < kUniverse; ++i) all[i] = i;
    for (size_t r = 0; r < kRequests; ++r) {
      std::vector<uint32_t> pick;
      std::sample(all.begin(), all.end(), std::back_inserter(pick), kRequestKeys, rng);
      std::vector<Key> keys(pick.size());
      std::vector<float> grads(pick.size());
      for (size_t i = 0; i < pick.size(); ++i) {
        keys[i] = w->universe[pick[i]];
        grads[i] = static_cast<float>(rng() % 1000) / 1000.0f - 0.5f;
      }
      ServerRequest push;
      push.type = transport::MessageType::kPush;
      push.table = kTable;
      push.keys = SharedArray<Key>(std::move(keys));
      push.vals = transport::AsBytes(SharedArray<float>(std::move(grads)));
      ServerRequest pull = push;
      pull.type = transport::MessageType::kPull;
      pull.vals = {};
      w->picks.push_back(std::move(pick));
      w->pushes.push_back(std::move(push));
      w->pulls.push_back(std::move(pull));
    }
  }
  return wl;
}

const Workload& GetWorkload() {
  static const Workload w = MakeWorkload();  // built once, on first use
  return w;
}

// builtin: the server's own "sgd" rule (batched apply); otherwise SgdRule above, a user rule
// with Apply only (the default ApplyBatch: one virtual call per row).
std::unique_ptr<TableStore> MakeStore(ApplyPool* pool, bool builtin = false) {
  TableSpec spec;
  spec.name = std::string("bench");
  spec.updater = {"sgd", {{"lr", kLr}}};
  std::unique_ptr<Updater> rule =
      builtin ? std::move(MakeSgdUpdater(spec.updater)).value() : std::make_unique<SgdRule>();
  return std::move(TableStore::Create(kTable, spec, std::move(rule), pool)).value();
}

// A store holding the whole universe.
std::unique_ptr<TableStore> FilledStore(ApplyPool* pool, bool builtin) {
  const Workload& w = GetWorkload();
  auto store = MakeStore(pool, builtin);
  ServerRequest fill;
  fill.type = transport::MessageType::kPush;
  fill.table = kTable;
  fill.keys = SharedArray<Key>(std::vector<Key>(w.universe));
  fill.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(kUniverse, 0.5f)));
  ServerResponse resp;
  if (!store->Handle(fill, UpdateContext{}, &resp).ok()) std::abort();
  return store;
}

// The bound: the SGD step of every request's keys into a flat array, one thread.
void BoundPass(std::vector<float>& flat, const std::vector<uint32_t>& pick, const float* grads) {
  for (size_t i = 0; i < pick.size(); ++i) flat[pick[i]] -= kLr * grads[i];
}

// Wall seconds per request of the bound, averaged over at least 0.2 s.
double BoundSeconds() {
  const Workload& w = GetWorkload();
  std::vector<float> flat(kUniverse, 0.5f);
  const auto t0 = std::chrono::steady_clock::now();
  size_t reps = 0;
  double elapsed = 0;
  do {
    const size_t r = reps % kRequests;
    BoundPass(flat, w.picks[r], reinterpret_cast<const float*>(w.pushes[r].vals.data()));
    benchmark::DoNotOptimize(flat.data());
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < 0.2);
  return elapsed / static_cast<double>(reps);
}

// Arg: shards (pool size). Pushes (push = true) or pulls 100k keys per request.
void RunStore(benchmark::State& state, bool push, bool builtin = false) {
  const Workload& w = GetWorkload();
  ApplyPool pool(static_cast<uint32_t>(state.range(0)));
  auto store = FilledStore(&pool, builtin);
  const double bound = BoundSeconds();
  size_t r = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    ServerResponse resp;
    const Status s = store->Handle(push ? w.pushes[r] : w.pulls[r], UpdateContext{}, &resp);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(resp);
    r = (r + 1) % kRequests;
  }
  const double per_request = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                             static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kRequestKeys));
  state.counters["vs_bound"] = per_request / bound;
  state.counters["bound_keys_per_s"] = static_cast<double>(kRequestKeys) / bound;
}

void BM_Push(benchmark::State& state) { RunStore(state, true); }
void BM_PushBuiltinSgd(benchmark::State& state) { RunStore(state, true, /*builtin=*/true); }
void BM_Pull(benchmark::State& state) { RunStore(state, false); }

// The bound on its own, for reading its items/s.
void BM_FlatArrayBound(benchmark::State& state) {
  const Workload& w = GetWorkload();
  std::vector<float> flat(kUniverse, 0.5f);
  size_t r = 0;
  for (auto _ : state) {
    BoundPass(flat, w.picks[r], reinterpret_cast<const float*>(w.pushes[r].vals.data()));
    benchmark::DoNotOptimize(flat.data());
    r = (r + 1) % kRequests;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kRequestKeys));
}

// Arg: shards. Memory per parameter after pushing 10M random keys.
void BM_MemoryPerParameter(benchmark::State& state) {
  constexpr size_t kKeys = 10'000'000;
  for (auto _ : state) {
    ApplyPool pool(static_cast<uint32_t>(state.range(0)));
    auto store = MakeStore(&pool);
    std::mt19937_64 rng(kSeed + 1);
    for (size_t done = 0; done < kKeys; done += kRequestKeys) {
      std::vector<Key> keys(kRequestKeys);
      for (Key& k : keys) k = rng();
      std::sort(keys.begin(), keys.end());
      ServerRequest req;
      req.type = transport::MessageType::kPush;
      req.table = kTable;
      req.keys = SharedArray<Key>(std::move(keys));
      req.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(kRequestKeys, 1.0f)));
      ServerResponse resp;
      if (!store->Handle(req, UpdateContext{}, &resp).ok()) std::abort();
    }
    state.counters["keys"] = static_cast<double>(store->num_keys());
    state.counters["bytes_per_param"] =
        static_cast<double>(store->memory_bytes()) / static_cast<double>(store->num_keys());
    state.counters["bare_key_value_bytes"] = sizeof(Key) + sizeof(float);
  }
}

// A float table of `width` with the built-in "add" rule, its requests applied on `pool`.
ServerHandler AddStore(ApplyPool* pool, uint32_t width) {
  TableSpec spec;
  spec.name = std::string("bench");
  spec.width = width;
  std::shared_ptr<TableStore> table =
      std::move(TableStore::Create(kTable, spec, std::move(MakeAddUpdater(spec.updater)).value(), pool)).value();
  return [table](const ServerRequest& req, ServerResponse* resp) { return table->Handle(req, UpdateContext{}, resp); };
}

// Adds, or pulls, 100k keys per request into a width-1 float table holding the universe.
void RunAddSparse(benchmark::State& state, bool push) {
  const Workload& w = GetWorkload();
  ApplyPool pool(1);
  ServerHandler store = AddStore(&pool, 1);
  ServerRequest fill;
  fill.type = transport::MessageType::kPush;
  fill.table = kTable;
  fill.keys = SharedArray<Key>(std::vector<Key>(w.universe));
  fill.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(kUniverse, 0.5f)));
  ServerResponse filled;
  if (!store(fill, &filled).ok()) std::abort();
  size_t r = 0;
  for (auto _ : state) {
    ServerResponse resp;
    const Status s = store(push ? w.pushes[r] : w.pulls[r], &resp);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(resp);
    r = (r + 1) % kRequests;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kRequestKeys));
}

void BM_AddSparsePush(benchmark::State& state) { RunAddSparse(state, true); }
void BM_AddSparsePull(benchmark::State& state) { RunAddSparse(state, false); }

enum class RowOp { kPush, kPull, kHeldPullPush };

// Arg: row bytes. One key per request.
void RunAddRow(benchmark::State& state, RowOp op) {
  const uint32_t width = static_cast<uint32_t>(state.range(0) / sizeof(float));
  ServerHandler store = AddStore(nullptr, width);
  ServerRequest push;
  push.type = transport::MessageType::kPush;
  push.table = kTable;
  push.width = width;
  push.keys = SharedArray<Key>(std::vector<Key>{7});
  push.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(width, 0.25f)));
  ServerRequest pull = push;
  pull.type = transport::MessageType::kPull;
  pull.vals = {};
  ServerResponse held;
  if (!store(push, &held).ok()) std::abort();
  for (auto _ : state) {
    ServerResponse resp;
    Status s;
    if (op == RowOp::kPush) {
      s = store(push, &resp);
    } else if (op == RowOp::kPull) {
      s = store(pull, &resp);
    } else {
      s = store(push, &resp);  // the previous reply still holds the row
      held = {};
      if (s.ok()) s = store(pull, &held);
    }
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(resp);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_AddRowPush(benchmark::State& state) { RunAddRow(state, RowOp::kPush); }
void BM_AddRowPull(benchmark::State& state) { RunAddRow(state, RowOp::kPull); }
void BM_AddRowHeldPullPush(benchmark::State& state) { RunAddRow(state, RowOp::kHeldPullPush); }

void AddRowArgs(benchmark::internal::Benchmark* b) {
  b->ArgName("bytes");
  for (int64_t bytes : {4 << 10, 64 << 10, 1 << 20}) b->Arg(bytes);
}

BENCHMARK(BM_Push)->ArgName("shards")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PushBuiltinSgd)->ArgName("shards")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Pull)->ArgName("shards")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AddSparsePush)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AddSparsePull)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AddRowPush)->Apply(AddRowArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_AddRowPull)->Apply(AddRowArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_AddRowHeldPullPush)->Apply(AddRowArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_FlatArrayBound)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MemoryPerParameter)->ArgName("shards")->Arg(1)->Arg(4)->Iterations(1)->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
}  // namespace pserver::kv

BENCHMARK_MAIN();
