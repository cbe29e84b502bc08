// kv_bench_worker: the C++ side of the Python-against-C++ benchmark (python/bench/compare.sh),
// written against the public API only. Run it under `pserver launch --servers 1 --workers 1`.
// It does what python/bench/python_bench.py does, request for request -- the same tables, keys,
// values, windows and durations (see that file) -- and prints the same lines:
// `cpp_bench <workload> <requests/s> <keys/s> <MB/s>`.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "pserver/pserver.h"

using namespace pserver;

namespace {

struct Workload {
  const char* name;
  uint32_t width;
  size_t keys;
  size_t window;
};
constexpr Workload kWorkloads[] = {{"4k", 1024, 1, 32}, {"1m", 262144, 1, 8}, {"100k", 1, 100000, 4}};

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "kv_bench_worker: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// Requests of `push` or pull with `window` in flight for `seconds`: (requests done, seconds).
std::pair<size_t, double> Run(KVWorker<float>& kv, TableId table, const std::vector<SharedArray<Key>>& keys,
                              const std::vector<SharedArray<float>>& values, size_t window, double seconds,
                              bool push) {
  using Clock = std::chrono::steady_clock;
  std::vector<SharedArray<float>> outs;
  for (size_t i = 0; i < window; ++i) outs.push_back(SharedArray<float>::Uninitialized(values[0].size()));
  std::deque<Timestamp> in_flight;
  size_t done = 0;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (size_t i = 0;; ++i) {
    if (in_flight.size() == window) {
      if (Status s = kv.Wait(in_flight.front()); !s.ok()) Die("wait", s);
      in_flight.pop_front();
      ++done;
      if (Clock::now() >= deadline) break;
    }
    const size_t set = i % keys.size();
    Result<Timestamp> ts = push ? kv.Push(table, keys[set], values[set]) : kv.Pull(table, keys[set], &outs[i % window]);
    if (!ts.ok()) Die(push ? "push" : "pull", ts.status());
    in_flight.push_back(*ts);
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (Timestamp ts : in_flight) {
    if (Status s = kv.Wait(ts); !s.ok()) Die("wait", s);
  }
  return {done, elapsed};
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  if (argc == 3 && std::string(argv[1]) == "--seconds") seconds = std::strtod(argv[2], nullptr);
  if (!(seconds > 0)) {
    std::fprintf(stderr, "usage: kv_bench_worker [--seconds S]  (S > 0)\n");
    return 2;
  }
  Result<NodeOptions> options = NodeOptionsFromEnvironment();
  if (!options.ok()) Die("environment", options.status());
  Result<std::unique_ptr<Node>> node = Node::Start(*options);
  if (!node.ok()) Die("start", node.status());
  KVWorker<float> kv(**node);
  for (const Workload& w : kWorkloads) {
    TableSpec spec{.name = std::string("bench_") + w.name, .value_type = ValueType::kFloat32, .width = w.width};
    Result<TableId> table = (*node)->DeclareTable(spec);
    if (!table.ok()) Die("declare", table.status());
    std::vector<SharedArray<Key>> keys;
    std::vector<SharedArray<float>> values;
    const size_t sets = w.keys == 1 ? 1 : 4;
    for (size_t s = 0; s < sets; ++s) {
      std::vector<Key> k(w.keys);
      for (size_t j = 0; j < w.keys; ++j) k[j] = w.keys == 1 ? 0 : j * 97 + s;
      keys.emplace_back(std::move(k));
      values.emplace_back(std::vector<float>(w.keys * w.width, 0.5f));
    }
    for (bool push : {true, false}) {
      Run(kv, *table, keys, values, w.window, 0.2, push);  // warm-up (and the pulls' rows exist)
      auto [done, elapsed] = Run(kv, *table, keys, values, w.window, seconds, push);
      const double rate = static_cast<double>(done) / elapsed;
      std::printf("cpp_bench %s_%s %.1f %.0f %.1f\n", push ? "push" : "pull", w.name, rate,
                  rate * static_cast<double>(w.keys), rate * static_cast<double>(w.keys * w.width) * 4 / 1e6);
      std::fflush(stdout);
    }
  }
  if (Status s = (*node)->Finalize(); !s.ok()) Die("finalize", s);
  return 0;
}
