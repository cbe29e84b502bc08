#include "sparse_workloads.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/server/apply_pool.h"
#include "kv/server/table_store.h"
#include "kv/server/updaters.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "run_span.h"
#include "testing/local_cluster.h"

namespace pserver::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kLr = 0.01;

TableSpec SparseSgdSpec() {
  TableSpec spec;
  spec.name = "bench_sparse_sgd";
  spec.value_type = ValueType::kFloat32;
  spec.width = 1;
  spec.storage = StorageKind::kSparse;
  spec.placement = KeyPlacement::kHashed;
  spec.updater = {"sgd", {{"lr", kLr}}};
  return spec;
}

// Keeps the compiler from dropping the bound's loads and stores.
void Escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

}  // namespace

Result<SparseRequests> MakeSparseRequests(const SparseWorkloadOptions& o) {
  if (o.keys_per_request == 0 || o.keys_per_request > o.key_space) {
    return Status::InvalidArgument(
        fmt::format("sparse workload: keys per request ({}) must be in [1, key space = {}]", o.keys_per_request, o.key_space));
  }
  if (o.request_sets < 1) return Status::InvalidArgument("sparse workload: request_sets must be at least 1");
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<float> grad(-0.5f, 0.5f);
  SparseRequests r;
  std::vector<bool> taken(o.key_space);
  for (int set = 0; set < o.request_sets; ++set) {
    std::fill(taken.begin(), taken.end(), false);
    std::vector<Key> keys;
    keys.reserve(o.keys_per_request);
    while (keys.size() < o.keys_per_request) {
      const Key k = rng() % o.key_space;
      if (!taken[k]) {
        taken[k] = true;
        keys.push_back(k);
      }
    }
    std::sort(keys.begin(), keys.end());
    std::vector<float> g(keys.size());
    for (float& x : g) x = grad(rng);
    r.keys.push_back(SharedArray<Key>(std::move(keys)));
    r.grads.push_back(SharedArray<float>(std::move(g)));
  }
  return r;
}

Result<SparseThroughput> MeasureClusterSparse(const SparseWorkloadOptions& o, const SparseRequests& req) {
  if (req.keys.empty()) return Status::InvalidArgument("sparse workload: no requests");
  testing::LocalClusterOptions co;
  co.num_servers = static_cast<uint32_t>(o.num_servers);
  co.num_workers = static_cast<uint32_t>(o.num_workers);
  // Each server applies on its share of the machine's hardware threads, as `pserver launch`
  // gives its local servers (LaunchOptions::hardware_threads).
  const uint32_t apply_threads =
      std::max(1u, std::thread::hardware_concurrency() / static_cast<uint32_t>(std::max(1, o.num_servers)));
  PSERVER_ASSIGN_OR_RETURN(auto cluster,
                           testing::LocalCluster::Start(co, [apply_threads](Node& server) -> std::shared_ptr<void> {
                             ServerOptions so;
                             so.apply_threads = apply_threads;
                             return std::make_shared<KVServer<float>>(server, so);
                           }));
  std::atomic<uint64_t> total_requests{0}, total_keys{0};
  RunSpan span;
  Status s = cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(SparseSgdSpec()));
    KVWorker<float> kv(node);
    const size_t sets = req.keys.size();
    // Warm-up: store every key of every set, so that the timed part is the steady state.
    for (size_t i = 0; i < sets; ++i) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, req.keys[i], req.grads[i]));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    }
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    const size_t window = static_cast<size_t>(o.window);
    std::vector<Timestamp> in_flight(window);
    std::vector<SharedArray<float>> outs(window);
    uint64_t issued = 0, done = 0, keys = 0;  // done, keys: answered while measuring
    Clock::time_point start{}, deadline{};
    double cpu_start = 0;
    bool measuring = false;
    for (;;) {
      const size_t slot = issued % window;
      if (issued >= window) {
        PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight[slot]));
        if (!o.push && outs[slot].size() != req.keys[(issued - window) % sets].size()) {
          return Status::Internal("sparse pull: answer has the wrong number of values");
        }
        if (measuring) {
          ++done;
          keys += req.keys[(issued - window) % sets].size();
        } else {
          // The pipeline is full from here on: start the clock (filling it is not measured).
          measuring = true;
          start = Clock::now();
          cpu_start = ProcessCpuSeconds();
          deadline = start + o.min_duration;
        }
      }
      if (measuring && Clock::now() >= deadline) break;
      const size_t set = issued % sets;
      if (o.push) {
        PSERVER_ASSIGN_OR_RETURN(in_flight[slot], kv.Push(table, req.keys[set], req.grads[set]));
      } else {
        outs[slot].Clear();
        PSERVER_ASSIGN_OR_RETURN(in_flight[slot], kv.Pull(table, req.keys[set], &outs[slot]));
      }
      ++issued;
    }
    // Answers that arrive after the deadline are waited for but neither counted nor timed.
    const Clock::time_point end = Clock::now();
    const double cpu_end = ProcessCpuSeconds();
    for (uint64_t i = issued - std::min<uint64_t>(issued, window); i < issued; ++i) {
      PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight[i % window]));
    }
    total_requests += done;
    total_keys += keys;
    span.Record(start, end, cpu_start, cpu_end);
    return node.Barrier(BarrierGroup::kWorkers);
  });
  PSERVER_RETURN_IF_ERROR(s);
  SparseThroughput r;
  r.requests = total_requests.load();
  r.seconds = span.seconds();
  r.cpu_seconds = span.cpu_seconds();
  if (r.seconds <= 0) return Status::Internal("sparse workload: no time measured");
  r.keys_per_sec = static_cast<double>(total_keys.load()) / r.seconds;
  r.keys_per_sec_per_server = r.keys_per_sec / o.num_servers;
  return r;
}

double MeasureSparseBound(const SparseWorkloadOptions& o, const SparseRequests& req) {
  // The same sparse table without a parameter server: Abseil's flat_hash_map from key to
  // value, holding every key the requests touch, one thread.
  absl::flat_hash_map<Key, float> w;
  for (const SharedArray<Key>& k : req.keys) {
    for (Key key : k) w.emplace(key, 0.5f);
  }
  std::vector<float> out(o.keys_per_request);
  const float lr = static_cast<float>(kLr);
  const auto t0 = Clock::now();
  const auto min_duration = std::max<Clock::duration>(o.min_duration, std::chrono::milliseconds(200));
  uint64_t keys = 0;
  Clock::duration elapsed{};
  for (size_t r = 0;; ++r) {
    const SharedArray<Key>& k = req.keys[r % req.keys.size()];
    const size_t n = k.size();
    const Key* kp = k.data();
    if (o.push) {
      const float* g = req.grads[r % req.keys.size()].data();
      for (size_t i = 0; i < n; ++i) w[kp[i]] -= lr * g[i];
      Escape(&w);
    } else {
      for (size_t i = 0; i < n; ++i) out[i] = w.find(kp[i])->second;
      Escape(out.data());
    }
    keys += n;
    elapsed = Clock::now() - t0;
    if (elapsed >= min_duration) break;
  }
  return static_cast<double>(keys) / std::chrono::duration<double>(elapsed).count();
}

Result<SparseMemory> MeasureSparseMemory(size_t num_keys, uint32_t shards, uint64_t seed) {
  constexpr size_t kPerRequest = 100'000;
  constexpr TableId kTable{1};
  const TableSpec spec = SparseSgdSpec();
  kv::ApplyPool pool(shards);
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Updater> sgd, kv::MakeSgdUpdater(spec.updater));
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<kv::TableStore> store, kv::TableStore::Create(kTable, spec, std::move(sgd), &pool));
  std::mt19937_64 rng(seed);
  for (size_t done = 0; done < num_keys; done += kPerRequest) {
    std::vector<Key> keys(std::min(kPerRequest, num_keys - done));
    for (Key& k : keys) k = rng();
    std::sort(keys.begin(), keys.end());
    kv::ServerRequest r;
    r.type = transport::MessageType::kPush;
    r.table = kTable;
    r.value_type = ValueType::kFloat32;
    r.width = 1;
    const size_t n = keys.size();
    r.keys = SharedArray<Key>(std::move(keys));
    r.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(n, 1.0f)));
    kv::ServerResponse resp;
    PSERVER_RETURN_IF_ERROR(store->Handle(r, UpdateContext{}, &resp));
  }
  SparseMemory m;
  m.keys = store->num_keys();
  m.bytes = store->memory_bytes();
  m.shards = pool.size();
  if (m.keys == 0) return Status::Internal("sparse memory: the store holds no keys");
  m.bytes_per_param = static_cast<double>(m.bytes) / static_cast<double>(m.keys);
  return m;
}

}  // namespace pserver::bench
