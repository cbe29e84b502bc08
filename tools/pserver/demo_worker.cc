#include "pserver/demo_worker.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "pserver/atomic_file.h"
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

constexpr uint32_t kKeySets = 4;  // key sets cycle over 4 seeds, so values accumulate across rounds

int64_t NowNs(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// What the slot's earlier workers left in the state directory (DemoOptions, slot mode).
struct SlotState {
  std::vector<uint32_t> predecessors;  // every earlier worker of the slot (node ids), all dead
  // The last one that wrote its base (0: none did; then no worker pushed): the values it started
  // from per key set, its first round, and the rounds it began pushing, in order. The workers
  // after it died before their first push.
  uint32_t node = 0;
  uint32_t first_round = 0;
  std::vector<std::vector<float>> base;
  std::vector<uint32_t> rounds;
};

std::string SlotPath(const DemoOptions& o, const char* what) {
  return fmt::format("{}/slot-{}.{}", o.state_dir, o.slot, what);
}

// Appends `line` to `path` (one write, flushed: a worker killed afterwards leaves it whole).
Status AppendLine(const std::string& path, const std::string& line) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "a"), &std::fclose);
  if (!f || std::fputs(line.c_str(), f.get()) < 0 || std::fflush(f.get()) != 0) {
    return Status::Unavailable(fmt::format("{}: cannot append: {}", path, std::strerror(errno)));
  }
  return Status::Ok();
}

// The slot's state as the workers before `me` left it; kCorruption when a file is malformed
// (named, with what was wrong).
Result<SlotState> ReadSlotState(const DemoOptions& o, uint32_t me, const std::vector<size_t>& set_sizes) {
  SlotState st;
  const std::string nodes_path = SlotPath(o, "nodes");
  std::ifstream nodes(nodes_path);
  std::string word;
  uint32_t id = 0;
  while (nodes >> word >> id && id != me) {
    if (word != "node") return Status::Corruption(fmt::format("{}: expected 'node ID' lines", nodes_path));
    st.predecessors.push_back(id);
  }
  for (size_t n : set_sizes) st.base.emplace_back(n, 0.0f);
  const std::string base_path = SlotPath(o, "base");
  std::ifstream base(base_path);
  if (!base) return st;  // no worker of the slot pushed
  std::string word2;
  if (!(base >> word >> st.node >> word2 >> st.first_round) || word != "node" || word2 != "first") {
    return Status::Corruption(fmt::format("{}: expected 'node ID first ROUND' first", base_path));
  }
  for (std::vector<float>& values : st.base) {
    for (float& v : values) {
      if (!(base >> v)) return Status::Corruption(fmt::format("{}: fewer values than the key sets hold", base_path));
    }
  }
  const std::string rounds_path = SlotPath(o, "rounds");
  std::ifstream rounds(rounds_path);
  if (!rounds) return st;  // its writer died before its first round
  uint32_t node = 0, round = 0;
  while (rounds >> word >> node >> round) {
    if (word != "round") return Status::Corruption(fmt::format("{}: expected 'round NODE R' lines", rounds_path));
    if (node == st.node) st.rounds.push_back(round);
  }
  if (!rounds.eof()) return Status::Corruption(fmt::format("{}: a line is not 'round NODE R'", rounds_path));
  return st;
}

// Takes the work of `lost` over; until the scheduler declared it dead (the launcher starts a
// successor as soon as a worker's process is gone), it is no worker that "died", so asked again.
Status TakeOverWhenDeclaredDead(Node& node, NodeId lost) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    Status taken = node.TakeOver(lost);
    if (taken.ok()) return taken;
    const bool not_yet = taken.code() == StatusCode::kInvalidArgument &&
                         taken.message().find("is no worker that died") != std::string::npos;
    if (!not_yet || std::chrono::steady_clock::now() > deadline) {
      return taken.WithContext(fmt::format("taking over the work of node {}", lost.value));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Slot mode: see DemoOptions.
Status RunSlotWorker(Node& node, const DemoOptions& o) {
  if (o.slot < 0 || o.slot >= static_cast<int64_t>(o.slots)) {
    return Status::InvalidArgument(fmt::format("slot {} is not one of the {} slots (the launcher's PSERVER_RANK_HINT "
                                               "gives a worker its slot)",
                                               o.slot, o.slots));
  }
  if (o.state_dir.empty() || o.stop_file.empty()) {
    return Status::InvalidArgument("slot mode needs a state directory and a stop file");
  }
  const auto slot = static_cast<uint32_t>(o.slot);
  const uint32_t me = node.id().value;
  // Noted first: a successor takes over every worker the slot had, one that died before any push too.
  PSERVER_RETURN_IF_ERROR(AppendLine(SlotPath(o, "nodes"), fmt::format("node {}\n", me)));
  TableSpec spec;
  spec.name = "demo_slots";
  spec.value_type = ValueType::kFloat32;
  spec.width = o.slots;
  PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(spec));
  KVWorker<float> kv(node);
  std::vector<SharedArray<Key>> sets;
  std::vector<size_t> set_sizes;
  for (uint32_t j = 0; j < kKeySets; ++j) {
    sets.push_back(RoundKeys(o.seed, j, o.keys));
    set_sizes.push_back(sets.back().size());
  }
  PSERVER_ASSIGN_OR_RETURN(SlotState before, ReadSlotState(o, me, set_sizes));
  // What this worker expects its slot to hold, per key set and key.
  std::vector<std::vector<float>> expected = before.base;
  uint32_t first_round = 0;
  if (!before.predecessors.empty()) {
    for (uint32_t lost : before.predecessors) PSERVER_RETURN_IF_ERROR(TakeOverWhenDeclaredDead(node, NodeId(lost)));
    // Rounds before its last were acknowledged whole; its last may have been applied in part.
    std::vector<float> done(kKeySets, 0.0f);
    for (size_t i = 0; i + 1 < before.rounds.size(); ++i) done[before.rounds[i] % kKeySets] += float(o.pushes);
    // The key set of its last round (kKeySets: none).
    const uint32_t in_flight = before.rounds.empty() ? kKeySets : before.rounds.back() % kKeySets;
    for (uint32_t j = 0; j < kKeySets; ++j) {
      SharedArray<float> pulled;
      PSERVER_ASSIGN_OR_RETURN(Timestamp pull, kv.Pull(table, sets[j], &pulled));
      PSERVER_RETURN_IF_ERROR(kv.Wait(pull));
      for (size_t i = 0; i < set_sizes[j]; ++i) {
        const float v = pulled[i * o.slots + slot];
        const float low = before.base[j][i] + done[j];
        const float high = low + (in_flight == j ? float(o.pushes) : 0.0f);
        if (!(v >= low && v <= high) || v != std::floor(v)) {
          return Status::Internal(fmt::format("slot {}, taken over from node {}: key {} holds {}, expected {} (what "
                                              "its pushes acknowledged){}",
                                              slot, before.node, sets[j][i], v, low,
                                              high > low ? fmt::format(" to {} (with its last round's)", high) : ""));
        }
        expected[j][i] = v;
      }
    }
    first_round = before.rounds.empty() ? before.first_round : before.rounds.back() + 1;
    std::printf("worker in slot %u (node %u): took over from node %u (%zu rounds): every value lies between what "
                "its pushes acknowledged and what it sent\n",
                slot, me, before.predecessors.back(), before.rounds.size());
    std::fflush(stdout);
  }
  // The values this worker starts from, written before its first push.
  std::string base = fmt::format("node {} first {}\n", me, first_round);
  for (const std::vector<float>& values : expected) {
    for (float v : values) base += fmt::format("{} ", v);
    base += '\n';
  }
  PSERVER_RETURN_IF_ERROR(WriteFileAtomically(SlotPath(o, "base"), base));
  const std::string rounds_path = SlotPath(o, "rounds");
  for (uint32_t r = first_round;; ++r) {
    const auto round_start = std::chrono::steady_clock::now();
    const uint32_t j = r % kKeySets;
    const SharedArray<Key>& keys = sets[j];
    // Noted before anything is sent: a successor then knows this round may be applied in part.
    PSERVER_RETURN_IF_ERROR(AppendLine(rounds_path, fmt::format("round {} {}\n", me, r)));
    std::vector<float> vals(keys.size() * o.slots, 0.0f);
    for (size_t i = 0; i < keys.size(); ++i) vals[i * o.slots + slot] = 1.0f;
    SharedArray<float> shared(std::move(vals));
    std::vector<Timestamp> pushes;
    for (uint32_t p = 0; p < o.pushes; ++p) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp push, kv.Push(table, keys, shared));
      pushes.push_back(push);
    }
    for (Timestamp push : pushes) PSERVER_RETURN_IF_ERROR(kv.Wait(push));
    SharedArray<float> pulled;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pull, kv.Pull(table, keys, &pulled));
    PSERVER_RETURN_IF_ERROR(kv.Wait(pull));
    for (size_t i = 0; i < keys.size(); ++i) {
      expected[j][i] += float(o.pushes);
      if (expected[j][i] > float(1 << 24)) return Status::InvalidArgument("sums above 2^24: ask for fewer rounds");
      if (pulled[i * o.slots + slot] != expected[j][i]) {
        return Status::Internal(fmt::format("slot {}, round {}: key {} holds {}, expected {}", slot, r, keys[i],
                                            pulled[i * o.slots + slot], expected[j][i]));
      }
    }
    std::printf("progress %u %u %lld %lld\n", slot, r, static_cast<long long>(NowNs(round_start)),
                static_cast<long long>(NowNs(std::chrono::steady_clock::now())));
    std::fflush(stdout);
    if (std::filesystem::exists(o.stop_file) || r + 1 >= o.rounds) break;
  }
  return node.Finalize();
}

}  // namespace

Status RunDemoWorker(Node& node, const DemoOptions& o) {
  if (o.slots > 0) return RunSlotWorker(node, o);
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
  // the key set.
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
