// Micro benchmarks of SliceKeys (kv/worker/slicer.h) on random sorted requests, and of the
// whole split of a hashed push (BM_SplitPush).
//
// The bound, measured in the same run over the same keys, is a single-thread in-memory pass
// that routes every key with one std::lower_bound into the ring's segment starts (what a
// per-key Owner() slicer would do, minus building the result). Each SliceKeys result reports
// `vs_bound` = its time / the bound's time, so below 1 means faster than routing key by key.
// Both sides of the ratio are process CPU time (std::clock), which the other jobs of a shared
// machine disturb less than wall time; the code measured is single-threaded.
//
//   slicer_bench --benchmark_counters_tabular=true
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <random>
#include <span>
#include <vector>

#include "benchmark/benchmark.h"
#include "cluster/key_placement.h"
#include "cluster/ring.h"
#include "kv/worker/slicer.h"

namespace pserver::kv {
namespace {

constexpr uint32_t kVirtualNodes = 64;
constexpr uint64_t kSeed = 42;

std::vector<Key> RandomSortedKeys(size_t n) {
  std::mt19937_64 rng(kSeed);
  std::vector<Key> keys(n);
  for (Key& k : keys) k = rng();
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

cluster::Ring MakeRing(uint32_t servers) {
  std::vector<uint32_t> ranks(servers);
  for (uint32_t i = 0; i < servers; ++i) ranks[i] = i;
  return std::move(cluster::Ring::Build(ranks, kVirtualNodes)).value();
}

// The bound: one lower_bound per key into the segment starts. Returns a checksum.
uint64_t LowerBoundPass(const std::vector<Key>& keys, const std::vector<uint64_t>& starts) {
  uint64_t sum = 0;
  for (Key k : keys) sum += std::upper_bound(starts.begin(), starts.end(), k) - starts.begin();
  return sum;
}

std::vector<uint64_t> SegmentStarts(const cluster::Ring& ring) {
  std::vector<uint64_t> starts;
  for (const cluster::RingSegment& s : ring.segments()) starts.push_back(s.range.first);
  return starts;
}

double CpuSeconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// CPU seconds per LowerBoundPass, averaged over at least 0.2 s.
double BoundSeconds(const std::vector<Key>& keys, const std::vector<uint64_t>& starts) {
  const double t0 = CpuSeconds();
  int reps = 0;
  double elapsed = 0;
  do {
    benchmark::DoNotOptimize(LowerBoundPass(keys, starts));
    ++reps;
    elapsed = CpuSeconds() - t0;
  } while (elapsed < 0.2);
  return elapsed / reps;
}

// Args: number of keys, placement kind, number of servers.
void BM_SliceKeys(benchmark::State& state) {
  const std::vector<Key> keys = RandomSortedKeys(static_cast<size_t>(state.range(0)));
  const auto kind = static_cast<cluster::PlacementKind>(state.range(1));
  const cluster::Ring ring = MakeRing(static_cast<uint32_t>(state.range(2)));
  const cluster::Placement placement{kind, {0, UINT64_MAX}};
  size_t runs = 0;
  const double t0 = CpuSeconds();
  for (auto _ : state) {
    Result<Slices> slices = SliceKeys(keys, placement, ring);
    if (!slices.ok()) {
      state.SkipWithError(slices.status().ToString().c_str());
      return;
    }
    runs = 0;
    for (const Slice& s : *slices) runs += s.runs.size();
    benchmark::DoNotOptimize(slices);
  }
  const double per_iteration = (CpuSeconds() - t0) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(keys.size()));
  state.counters["runs"] = static_cast<double>(runs);
  state.counters["vs_bound"] = per_iteration / BoundSeconds(keys, SegmentStarts(ring));
}

// What a worker does to a fixed-width push over several servers of a kHashed table: slice
// with an order, then gather each slice's keys and 4-byte values into its own buffer.
// `vs_bound` compares with copying the same bytes once (memcpy of keys and values): below 10
// means the split costs less than ten plain copies. Args: number of keys, number of servers.
void BM_SplitPush(benchmark::State& state) {
  const std::vector<Key> keys = RandomSortedKeys(static_cast<size_t>(state.range(0)));
  const std::vector<float> vals(keys.size(), 1.0f);
  const cluster::Ring ring = MakeRing(static_cast<uint32_t>(state.range(1)));
  const cluster::Placement placement{cluster::PlacementKind::kHashed, {0, UINT64_MAX}};
  std::vector<Key> key_out(keys.size());
  std::vector<float> val_out(keys.size());
  std::vector<uint32_t> order;
  const double t0 = CpuSeconds();
  for (auto _ : state) {
    Result<Slices> slices = SliceKeys(keys, placement, ring, &order);
    if (!slices.ok() || order.size() != keys.size()) {
      state.SkipWithError("SliceKeys did not split the request by order");
      return;
    }
    size_t first = 0;
    for (const Slice& s : *slices) {
      const std::span<const uint32_t> part = std::span<const uint32_t>(order).subspan(first, s.num_keys);
      GatherByOrder(reinterpret_cast<const std::byte*>(keys.data()), part, sizeof(Key),
                    reinterpret_cast<std::byte*>(key_out.data() + first));
      GatherByOrder(reinterpret_cast<const std::byte*>(vals.data()), part, sizeof(float),
                    reinterpret_cast<std::byte*>(val_out.data() + first));
      first += s.num_keys;
    }
    benchmark::DoNotOptimize(key_out.data());
    benchmark::DoNotOptimize(val_out.data());
  }
  const double per_iteration = (CpuSeconds() - t0) / static_cast<double>(state.iterations());
  // The bound: one plain copy of the same keys and values.
  const double b0 = CpuSeconds();
  int reps = 0;
  do {
    std::memcpy(key_out.data(), keys.data(), keys.size() * sizeof(Key));
    std::memcpy(val_out.data(), vals.data(), vals.size() * sizeof(float));
    benchmark::DoNotOptimize(key_out.data());
    benchmark::DoNotOptimize(val_out.data());
    ++reps;
  } while (CpuSeconds() - b0 < 0.2);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(keys.size()));
  state.counters["ns_per_key"] = per_iteration * 1e9 / static_cast<double>(keys.size());
  state.counters["vs_bound"] = per_iteration / ((CpuSeconds() - b0) / reps);
}

// The bound on its own, for reading its items/s. Args: number of keys, number of servers.
void BM_LowerBoundPass(benchmark::State& state) {
  const std::vector<Key> keys = RandomSortedKeys(static_cast<size_t>(state.range(0)));
  const std::vector<uint64_t> starts =
      SegmentStarts(MakeRing(static_cast<uint32_t>(state.range(1))));
  for (auto _ : state) benchmark::DoNotOptimize(LowerBoundPass(keys, starts));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(keys.size()));
}

constexpr int64_t kHashed = static_cast<int64_t>(cluster::PlacementKind::kHashed);
constexpr int64_t kRange = static_cast<int64_t>(cluster::PlacementKind::kRange);
constexpr int64_t kIdentity = static_cast<int64_t>(cluster::PlacementKind::kIdentity);

BENCHMARK(BM_SliceKeys)
    ->ArgNames({"keys", "kind", "servers"})
    ->ArgsProduct({{100'000, 1'000'000}, {kHashed, kIdentity, kRange}, {2, 8}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SplitPush)
    ->ArgNames({"keys", "servers"})
    ->ArgsProduct({{100'000, 1'000'000}, {2, 8}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LowerBoundPass)
    ->ArgNames({"keys", "servers"})
    ->ArgsProduct({{100'000, 1'000'000}, {2, 8}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pserver::kv

BENCHMARK_MAIN();
