#include "sparse_workloads.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <malloc.h>
#include <random>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/server/apply_pool.h"
#include "kv/server/sparse_rows.h"
#include "kv/server/table_store.h"
#include "kv/server/updaters.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "run_span.h"
#include "kv/local_cluster.h"
#include "base/process_memory.h"

namespace pserver::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kLr = 0.01;

TableSpec SparseSgdSpec(const std::vector<FilterSpec>& filters = {}) {
  TableSpec spec;
  spec.filters = filters;
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

// Pushes this worker's share of every key of the key space (ScatterKey'd or not) once, in
// requests of keys_per_request sorted keys, `window` in flight.
Status Prefill(const SparseWorkloadOptions& o, Node& node, KVWorker<float>& kv, TableId table) {
  const uint64_t workers = static_cast<uint64_t>(o.num_workers);
  const uint64_t me = node.rank().value;
  const uint64_t first = o.key_space * me / workers, end = o.key_space * (me + 1) / workers;
  const size_t window = static_cast<size_t>(o.window);
  std::vector<Timestamp> in_flight;
  for (uint64_t begin = first; begin < end; begin += o.keys_per_request) {
    std::vector<Key> keys(std::min<uint64_t>(o.keys_per_request, end - begin));
    for (size_t i = 0; i < keys.size(); ++i) keys[i] = o.scatter_keys ? ScatterKey(begin + i) : begin + i;
    std::sort(keys.begin(), keys.end());
    const size_t n = keys.size();
    if (in_flight.size() == window) {
      PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight.front()));
      in_flight.erase(in_flight.begin());
    }
    // Not zeros: a filter may leave a zero out (sigmod), and the table must hold every key.
    PSERVER_ASSIGN_OR_RETURN(
        Timestamp ts, kv.Push(table, SharedArray<Key>(std::move(keys)), SharedArray<float>(std::vector<float>(n, 1e-3f))));
    in_flight.push_back(ts);
  }
  for (Timestamp ts : in_flight) PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
  return Status::Ok();
}

}  // namespace

uint32_t SparseApplyThreads(const SparseWorkloadOptions& o) {
  if (o.apply_threads > 0) return o.apply_threads;
  return std::max(1u, std::thread::hardware_concurrency() / static_cast<uint32_t>(std::max(1, o.num_servers)));
}

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
        keys.push_back(o.scatter_keys ? ScatterKey(k) : k);
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
  if (o.exact_requests > 0 && o.exact_requests <= static_cast<uint64_t>(o.window)) {
    return Status::InvalidArgument(fmt::format("sparse workload: exact_requests ({}) must exceed the window ({})",
                                               o.exact_requests, o.window));
  }
  base::ProcessMemory at_start, prefilled;  // prefilled: written by worker 0 only
  if (o.prefill) {
    PSERVER_RETURN_IF_ERROR(base::ResetPeakRss());
    PSERVER_ASSIGN_OR_RETURN(at_start, base::ReadProcessMemory());
  }
  kv::LocalClusterOptions co;
  co.node.replicas = o.replicas;
  co.num_servers = static_cast<uint32_t>(o.num_servers);
  co.num_workers = static_cast<uint32_t>(o.num_workers);
  // Each server applies on its share of the machine's hardware threads, as `pserver launch`
  // gives its local servers (LaunchOptions::hardware_threads).
  const uint32_t apply_threads = SparseApplyThreads(o);
  PSERVER_ASSIGN_OR_RETURN(auto cluster,
                           kv::LocalCluster::Start(co, [apply_threads](Node& server) -> std::shared_ptr<void> {
                             ServerOptions so;
                             so.apply_threads = apply_threads;
                             return std::make_shared<KVServer<float>>(server, so);
                           }));
  std::atomic<uint64_t> total_requests{0}, total_keys{0}, total_wire{0};
  RunSpan span;
  std::atomic<int64_t> prefill_ns{0};
  std::vector<std::vector<float>> values;  // written by worker 0 only
  Status s = cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(SparseSgdSpec(o.filters)));
    KVWorker<float> kv(node);
    const size_t sets = req.keys.size();
    const bool collect = o.collect_values && node.rank().value == 0;
    if (collect) values.assign(sets, {});
    if (o.prefill) {
      const auto begin = Clock::now();
      PSERVER_RETURN_IF_ERROR(Prefill(o, node, kv, table));
      const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count();
      for (int64_t seen = prefill_ns.load(); ns > seen && !prefill_ns.compare_exchange_weak(seen, ns);) {
      }
      PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
      if (node.rank().value == 0) {
        PSERVER_ASSIGN_OR_RETURN(base::ProcessMemory now, base::ReadProcessMemory());
        prefilled = now;
      }
    }
    // Warm-up: store every key of every set, so that the timed part is the steady state.
    for (size_t i = 0; i < sets; ++i) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, req.keys[i], req.grads[i]));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    }
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    const size_t window = static_cast<size_t>(o.window);
    std::vector<Timestamp> in_flight(window);
    std::vector<SharedArray<float>> outs(window);
    // Waits for request i and checks (and, collecting, keeps) a pull's answer.
    auto finish = [&](uint64_t i) -> Status {
      PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight[i % window]));
      if (o.push) return Status::Ok();
      const SharedArray<float>& answer = outs[i % window];
      if (answer.size() != req.keys[i % sets].size()) {
        return Status::Internal("sparse pull: answer has the wrong number of values");
      }
      if (collect) values[i % sets].assign(answer.data(), answer.data() + answer.size());
      return Status::Ok();
    };
    uint64_t issued = 0, done = 0, keys = 0;  // done, keys: answered while measuring
    Node::Traffic wire_at_start;
    Clock::time_point start{}, deadline{};
    double cpu_start = 0;
    bool measuring = false;
    for (;;) {
      const size_t slot = issued % window;
      if (issued >= window) {
        PSERVER_RETURN_IF_ERROR(finish(issued - window));
        if (measuring) {
          ++done;
          keys += req.keys[(issued - window) % sets].size();
        } else {
          // The pipeline is full from here on: start the clock (filling it is not measured).
          measuring = true;
          wire_at_start = node.traffic();
          start = Clock::now();
          cpu_start = ProcessCpuSeconds();
          deadline = start + o.min_duration;
        }
      }
      if (o.exact_requests > 0 ? issued == o.exact_requests : measuring && Clock::now() >= deadline) break;
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
    const Node::Traffic wire_at_end = node.traffic();
    total_wire += (wire_at_end.bytes_sent - wire_at_start.bytes_sent) +
                  (wire_at_end.bytes_received - wire_at_start.bytes_received);
    for (uint64_t i = issued - std::min<uint64_t>(issued, window); i < issued; ++i) {
      PSERVER_RETURN_IF_ERROR(finish(i));
    }
    total_requests += done;
    total_keys += keys;
    span.Record(start, end, cpu_start, cpu_end);
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    if (collect && o.push) {
      // Every worker's pushes were acknowledged before the barrier: the values now are final.
      for (size_t i = 0; i < sets; ++i) {
        SharedArray<float> answer;
        PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, req.keys[i], &answer));
        PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
        values[i].assign(answer.data(), answer.data() + answer.size());
      }
    }
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
  r.wire_bytes_per_request = r.requests > 0 ? static_cast<double>(total_wire.load()) / static_cast<double>(r.requests) : 0;
  r.values = std::move(values);
  if (o.prefill) {
    r.prefill_seconds = static_cast<double>(prefill_ns.load()) * 1e-9;
    r.prefill_resident_bytes = prefilled.rss_bytes > at_start.rss_bytes ? prefilled.rss_bytes - at_start.rss_bytes : 0;
    r.prefill_peak_bytes = prefilled.peak_bytes > at_start.rss_bytes ? prefilled.peak_bytes - at_start.rss_bytes : 0;
  }
  return r;
}

SparseBound MeasureSparseBound(const SparseWorkloadOptions& o, const SparseRequests& req) {
  // The same sparse table without a parameter server, sharded like a server's store over as
  // many threads as one server applies on: thread t owns the keys with MixKey(key) mod T == t,
  // in its own Abseil flat_hash_map holding every such key the requests touch, and walks its
  // share of every request (split once, here, not per request).
  const uint32_t threads = SparseApplyThreads(o);
  const size_t sets = req.keys.size();
  struct Shard {
    std::vector<std::vector<Key>> keys;     // by request set
    std::vector<std::vector<float>> grads;  // by request set
    uint64_t keys_done = 0;
    Clock::time_point end;
  };
  std::vector<Shard> shards(threads);
  for (Shard& sh : shards) {
    sh.keys.resize(sets);
    sh.grads.resize(sets);
  }
  for (size_t set = 0; set < sets; ++set) {
    const SharedArray<Key>& k = req.keys[set];
    const SharedArray<float>& g = req.grads[set];
    for (size_t i = 0; i < k.size(); ++i) {
      Shard& sh = shards[kv::MixKey(k[i]) % threads];
      sh.keys[set].push_back(k[i]);
      sh.grads[set].push_back(g[i]);
    }
  }
  const float lr = static_cast<float>(kLr);
  const auto min_duration = std::max<Clock::duration>(o.min_duration, std::chrono::milliseconds(200));
  std::latch built(threads);  // every thread has built its map
  std::latch go(1);           // the clock has started
  std::atomic<int64_t> start_ns{0};
  auto run = [&](Shard& sh) {
    absl::flat_hash_map<Key, float> w;  // built by the thread that uses it
    for (const std::vector<Key>& k : sh.keys) {
      for (Key key : k) w.emplace(key, 0.5f);
    }
    std::vector<float> out(o.keys_per_request);
    built.count_down();
    go.wait();
    const Clock::time_point t0(Clock::duration(start_ns.load()));
    for (size_t r = 0;; ++r) {
      const std::vector<Key>& k = sh.keys[r % sets];
      const size_t n = k.size();
      const Key* kp = k.data();
      if (o.push) {
        const float* g = sh.grads[r % sets].data();
        for (size_t i = 0; i < n; ++i) w[kp[i]] -= lr * g[i];
        Escape(&w);
      } else {
        for (size_t i = 0; i < n; ++i) out[i] = w.find(kp[i])->second;
        Escape(out.data());
      }
      sh.keys_done += n;
      sh.end = Clock::now();
      if (sh.end - t0 >= min_duration) break;
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(threads);
  double cpu_start = 0;
  for (Shard& sh : shards) pool.emplace_back(run, std::ref(sh));
  built.wait();
  cpu_start = ProcessCpuSeconds();
  start_ns = Clock::now().time_since_epoch().count();
  go.count_down();
  for (std::jthread& t : pool) t.join();
  const double cpu_seconds = ProcessCpuSeconds() - cpu_start;
  const Clock::time_point t0(Clock::duration(start_ns.load()));
  uint64_t keys = 0;
  Clock::duration elapsed{};
  for (const Shard& sh : shards) {
    keys += sh.keys_done;
    elapsed = std::max(elapsed, sh.end - t0);
  }
  SparseBound b;
  b.threads = threads;
  const double seconds = std::chrono::duration<double>(elapsed).count();
  b.keys_per_sec = seconds > 0 ? static_cast<double>(keys) / seconds : 0.0;
  const double requests = static_cast<double>(keys) / static_cast<double>(std::max<size_t>(1, o.keys_per_request));
  b.cpu_us_per_request = requests > 0 ? cpu_seconds * 1e6 / requests : 0.0;
  return b;
}

Result<SparseMemory> MeasureSparseMemory(size_t num_keys, uint32_t shards, const std::string& rule, uint64_t seed) {
  constexpr size_t kPerRequest = 100'000;
  constexpr size_t kWarmUpRequests = 8;
  constexpr TableId kTable{1};
  if (num_keys < 10 * kPerRequest) {
    return Status::InvalidArgument(fmt::format(
        "sparse memory: {} keys is too few to measure: at least {} (the first {} set the baseline)", num_keys,
        10 * kPerRequest, kPerRequest));
  }
  TableSpec spec = SparseSgdSpec();
  spec.updater = rule == "sgd" ? spec.updater : UpdaterSpec{rule, {}};
  SparseMemory m;
  m.rule = rule;
  kv::ApplyPool pool(shards);
  m.shards = pool.size();
  const auto make_store = [&]() -> Result<std::unique_ptr<kv::TableStore>> {
    PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Updater> updater, UpdaterRegistry().Create(spec.updater));
    m.row_bytes = static_cast<uint32_t>(sizeof(float) * (1 + updater->state_per_value()));
    return kv::TableStore::Create(kTable, spec, std::move(updater), &pool);
  };
  std::mt19937_64 rng(seed);
  // Pushes `n` random keys into `store`, kPerRequest per request.
  const auto fill = [&](kv::TableStore& store, size_t n) -> Status {
    for (size_t done = 0; done < n; done += kPerRequest) {
      const size_t count = std::min(kPerRequest, n - done);
      std::vector<Key> keys(count);
      for (Key& k : keys) k = rng();
      std::sort(keys.begin(), keys.end());
      kv::ServerRequest r;
      r.type = transport::MessageType::kPush;
      r.table = kTable;
      r.value_type = ValueType::kFloat32;
      r.width = 1;
      r.keys = SharedArray<Key>(std::move(keys));
      r.vals = transport::AsBytes(SharedArray<float>(std::vector<float>(count, 0.5f)));
      kv::ServerResponse resp;
      PSERVER_RETURN_IF_ERROR(store.Handle(r, UpdateContext{}, &resp));
    }
    return Status::Ok();
  };
  // A warm-up store, filled and dropped, sets up what does not grow with the table: the
  // allocator's heap at its working size for requests of this shape (glibc keeps what request
  // buffers free), the pool's threads. What the process holds after it is the baseline.
  {
    PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<kv::TableStore> warm_up, make_store());
    PSERVER_RETURN_IF_ERROR(fill(*warm_up, kWarmUpRequests * kPerRequest));
  }
  PSERVER_ASSIGN_OR_RETURN(const base::ProcessMemory empty, base::ReadProcessMemory());
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<kv::TableStore> store, make_store());
  const auto start = Clock::now();
  PSERVER_RETURN_IF_ERROR(fill(*store, std::min(kPerRequest, num_keys)));  // its scratch
  const size_t keys_before = store->num_keys();
  malloc_trim(0);
  PSERVER_RETURN_IF_ERROR(base::ResetPeakRss());
  PSERVER_ASSIGN_OR_RETURN(base::ProcessMemory before, base::ReadProcessMemory());
  PSERVER_RETURN_IF_ERROR(fill(*store, num_keys - keys_before));
  m.fill_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  PSERVER_ASSIGN_OR_RETURN(base::ProcessMemory untrimmed, base::ReadProcessMemory());
  malloc_trim(0);
  PSERVER_ASSIGN_OR_RETURN(base::ProcessMemory after, base::ReadProcessMemory());
  m.keys = store->num_keys();
  m.keys_measured = m.keys - keys_before;
  m.store_bytes = store->memory_bytes();
  const auto growth = [&before](size_t bytes) { return bytes > before.rss_bytes ? bytes - before.rss_bytes : 0; };
  m.resident_bytes = growth(after.rss_bytes);
  m.untrimmed_bytes = growth(untrimmed.rss_bytes);
  m.peak_bytes = growth(untrimmed.peak_bytes);
  m.whole_bytes = untrimmed.rss_bytes > empty.rss_bytes ? untrimmed.rss_bytes - empty.rss_bytes : 0;
  if (m.keys == 0) return Status::Internal("sparse memory: the store holds no keys");
  return m;
}

}  // namespace pserver::bench
