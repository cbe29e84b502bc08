#include "pserver/demo_worker.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "pserver/kv_worker.h"

namespace pserver::tools {
namespace {

// The round's keys: `n` distinct random 64-bit keys, sorted; the same on every worker.
SharedArray<Key> RoundKeys(uint64_t seed, uint32_t round, uint32_t n) {
  std::mt19937_64 rng(seed * 1000003 + round);
  std::vector<Key> keys(n);
  for (Key& k : keys) k = rng();
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return SharedArray<Key>(std::move(keys));
}

}  // namespace

Status RunDemoWorker(Node& node, const DemoOptions& o) {
  const uint32_t rank = node.rank().value;
  const uint32_t workers = node.num_workers();
  TableSpec spec;
  spec.name = "demo";
  spec.value_type = ValueType::kFloat32;
  spec.width = o.width;
  PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(spec));
  TableSpec control_spec;
  control_spec.name = "demo_stop";
  TableId control;
  if (!o.stop_file.empty()) {
    PSERVER_ASSIGN_OR_RETURN(control, node.DeclareTable(control_spec));
  }
  KVWorker<float> kv(node);
  std::printf("worker %u: %u rounds of %u keys x %u values, %u servers, %u workers (seed %llu)\n", rank, o.rounds,
              o.keys, o.width, node.num_servers(), workers, static_cast<unsigned long long>(o.seed));
  std::fflush(stdout);
  // Every worker pushes rank+1 to each value of the round's keys, once per round that uses
  // the key set; key sets cycle over 4 seeds so values accumulate across rounds.
  constexpr uint32_t kKeySets = 4;
  const double per_round = double(workers) * double(workers + 1) / 2 * o.pushes;
  // Sums stay exact in float up to 2^24.
  if (per_round * ((o.rounds + kKeySets - 1) / kKeySets) > double(1 << 24)) {
    return Status::InvalidArgument(fmt::format("{} rounds of {} pushes by {} workers add up to sums above 2^24, which "
                                               "a float does not hold exactly: ask for fewer",
                                               o.rounds, o.pushes, workers));
  }
  const auto start = std::chrono::steady_clock::now();
  uint64_t bytes = 0;
  for (uint32_t r = 0; r < o.rounds; ++r) {
    const auto round_start = std::chrono::steady_clock::now();
    SharedArray<Key> keys = RoundKeys(o.seed, r % kKeySets, o.keys);
    SharedArray<float> vals(std::vector<float>(keys.size() * o.width, static_cast<float>(rank + 1)));
    std::vector<Timestamp> pushes;
    for (uint32_t p = 0; p < o.pushes; ++p) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp push, kv.Push(table, keys, vals));
      pushes.push_back(push);
    }
    for (Timestamp push : pushes) PSERVER_RETURN_IF_ERROR(kv.Wait(push));
    if (!o.stop_file.empty() && rank == 0 && std::filesystem::exists(o.stop_file)) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp stop, kv.Push(control, SharedArray<Key>(std::vector<Key>{0}),
                                                       SharedArray<float>(std::vector<float>{1.0f})));
      PSERVER_RETURN_IF_ERROR(kv.Wait(stop));
    }
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    bool last = r + 1 == o.rounds;
    if (!o.stop_file.empty()) {  // every worker reads worker 0's decision after the barrier
      SharedArray<float> stop;
      PSERVER_ASSIGN_OR_RETURN(Timestamp asked, kv.Pull(control, SharedArray<Key>(std::vector<Key>{0}), &stop));
      PSERVER_RETURN_IF_ERROR(kv.Wait(asked));
      last = last || stop[0] > 0;
    }
    SharedArray<float> pulled;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pull, kv.Pull(table, keys, &pulled));
    PSERVER_RETURN_IF_ERROR(kv.Wait(pull));
    const auto expected = static_cast<float>(per_round * (r / kKeySets + 1));
    for (size_t i = 0; i < pulled.size(); ++i) {
      if (pulled[i] != expected) {
        return Status::Internal(fmt::format("round {}: key {} holds {}, expected {}", r, keys[i / o.width],
                                            pulled[i], expected));
      }
    }
    bytes += (o.pushes + 1) * (keys.size_bytes() + keys.size() * o.width * sizeof(float));
    // Nobody pushes the next round's keys before everyone has checked this round's.
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    if (o.progress_times) {
      auto ns = [](std::chrono::steady_clock::time_point t) {
        return static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
      };
      std::printf("progress %u %u %lld %lld\n", rank, r, ns(round_start), ns(std::chrono::steady_clock::now()));
      std::fflush(stdout);
      if (last) break;
      continue;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("worker %u: round %u/%u: %zu keys pushed and pulled, every sum = %.0f as expected (%.1f MB/s)\n",
                rank, r + 1, o.rounds, keys.size(), expected, bytes / secs / 1e6);
    std::fflush(stdout);
    if (last) break;
  }
  return node.Finalize();
}

}  // namespace pserver::tools
