#include "cluster_workloads.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/local_cluster.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "run_span.h"

namespace pserver::bench {
namespace {

using Clock = std::chrono::steady_clock;

// One key per server: the smallest keys that land on each server.
Result<std::vector<Key>> KeyPerServer(const KVWorker<float>& kv, TableId table, uint32_t servers) {
  std::vector<Key> keys(servers, 0);
  std::vector<bool> found(servers, false);
  uint32_t missing = servers;
  for (Key k = 0; missing > 0 && k < 1000000; ++k) {
    PSERVER_ASSIGN_OR_RETURN(uint32_t s, kv.ServerOf(table, k));
    if (!found[s]) {
      found[s] = true;
      keys[s] = k;
      --missing;
    }
  }
  if (missing > 0) return Status::Internal("some server owns none of the first million keys");
  return keys;
}

Result<TableId> DeclareBenchTable(Node& node, size_t bytes) {
  TableSpec spec;
  spec.name = "bench";
  spec.value_type = ValueType::kFloat32;
  spec.width = static_cast<uint32_t>(bytes / sizeof(float));
  return node.DeclareTable(spec);
}

kv::LocalClusterOptions ClusterOptions(int servers, int workers, uint32_t replicas = 1, bool metrics = false) {
  kv::LocalClusterOptions o;
  o.num_servers = static_cast<uint32_t>(servers);
  o.num_workers = static_cast<uint32_t>(workers);
  o.node.replicas = replicas;
  o.node.metrics_port = metrics ? 0 : -1;
  return o;
}

Result<Timestamp> Issue(KVWorker<float>& kv, Shape shape, TableId table, const SharedArray<Key>& key,
                        const SharedArray<float>& vals, SharedArray<float>* out) {
  out->Clear();  // receive into the network buffer (zero copy)
  switch (shape) {
    case Shape::kPush: return kv.Push(table, key, vals);
    case Shape::kPull: return kv.Pull(table, key, out);
    case Shape::kPushPull: return kv.PushPull(table, key, vals, out);
  }
  return Status::Internal("unknown shape");
}

// ServerWork::kNone: a float server whose handler stores nothing. A pull is answered with a row
// of zeros shared by every reply of its size (handlers run one at a time on the receive thread,
// so the cache needs no lock).
std::shared_ptr<void> NoWorkServers(Node& server) {
  auto zeros = std::make_shared<absl::flat_hash_map<size_t, SharedArray<float>>>();
  return std::make_shared<KVServer<float>>(
      server, [zeros](const RequestMeta& meta, const KVPairs<float>& request, KVPairs<float>* response) {
        if (!meta.pull) return Status::Ok();
        const size_t n = request.keys.size() * meta.width;
        auto [it, fresh] = zeros->try_emplace(n);
        if (fresh) it->second = SharedArray<float>(n);
        response->vals = it->second;
        return Status::Ok();
      });
}

}  // namespace

std::function<std::shared_ptr<void>(Node& server)> ServerSetupFor(ServerWork work) {
  return work == ServerWork::kNone ? NoWorkServers : kv::DefaultServers;
}

Result<ThroughputResult> MeasureClusterThroughput(const ClusterWorkloadOptions& o) {
  if (o.bytes == 0 || o.bytes % sizeof(float) != 0) return Status::InvalidArgument("bytes must be a multiple of 4");
  PSERVER_ASSIGN_OR_RETURN(auto cluster, kv::LocalCluster::Start(ClusterOptions(o.num_servers, o.num_workers, o.replicas, o.metrics),
                                                                      ServerSetupFor(o.server_work)));
  std::atomic<uint64_t> total_requests{0};
  RunSpan span;
  Status s = cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId table, DeclareBenchTable(node, o.bytes));
    KVWorker<float> kv(node);
    PSERVER_ASSIGN_OR_RETURN(std::vector<Key> keys, KeyPerServer(kv, table, node.num_servers()));
    std::vector<SharedArray<Key>> key_arrays;
    for (Key k : keys) key_arrays.push_back(SharedArray<Key>(std::vector<Key>{k}));
    SharedArray<float> vals(o.bytes / sizeof(float));
    std::fill(vals.begin(), vals.end(), 1.0f);
    if (o.shape == Shape::kPull) {
      // Pull stored rows, as a model's parameters are, not the shared zeros of keys never pushed.
      for (const SharedArray<Key>& key : key_arrays) {
        PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, key, vals));
        PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
      }
    }
    const size_t window = static_cast<size_t>(o.window);
    std::vector<Timestamp> in_flight(window);
    std::vector<SharedArray<float>> outs(window);
    uint64_t issued = 0, counted = 0;
    Clock::time_point start{}, deadline{};
    double cpu_start = 0;
    bool measuring = false;
    for (;;) {
      size_t slot = issued % window;
      if (issued >= window) {
        PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight[slot]));
        if (o.verify && o.shape != Shape::kPush && outs[slot].size() != vals.size()) {
          return Status::Internal("pulled value has the wrong size");
        }
        if (measuring) ++counted;
      }
      if (!measuring && issued >= static_cast<uint64_t>(o.warmup_requests) + window) {
        measuring = true;
        start = Clock::now();
        cpu_start = ProcessCpuSeconds();
        deadline = start + o.min_duration;
      }
      if (measuring && Clock::now() >= deadline) break;
      PSERVER_ASSIGN_OR_RETURN(in_flight[slot], Issue(kv, o.shape, table, key_arrays[issued % keys.size()], vals,
                                                      &outs[slot]));
      ++issued;
    }
    auto end = Clock::now();
    const double cpu_end = ProcessCpuSeconds();
    for (uint64_t i = issued - std::min<uint64_t>(issued, window); i < issued; ++i) {
      PSERVER_RETURN_IF_ERROR(kv.Wait(in_flight[i % window]));
    }
    total_requests += counted;
    span.Record(start, end, cpu_start, cpu_end);
    return node.Barrier(BarrierGroup::kWorkers);
  });
  PSERVER_RETURN_IF_ERROR(s);
  ThroughputResult r;
  r.requests = total_requests.load();
  r.seconds = span.seconds();
  r.cpu_seconds = span.cpu_seconds();
  r.requests_per_sec = r.requests / r.seconds;
  r.bytes_per_sec = r.requests_per_sec * static_cast<double>(PayloadBytesPerRequest(o.shape, o.bytes));
  return r;
}

Result<LatencyResult> MeasureClusterRoundTrip(size_t bytes, std::chrono::milliseconds min_duration, int warmup) {
  PSERVER_ASSIGN_OR_RETURN(auto cluster, kv::LocalCluster::Start(ClusterOptions(1, 1)));
  std::vector<double> samples;
  Status s = cluster->RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId table, DeclareBenchTable(node, bytes));
    KVWorker<float> kv(node);
    SharedArray<Key> key(std::vector<Key>{0});
    SharedArray<float> vals(bytes / sizeof(float));
    SharedArray<float> out;
    Clock::time_point deadline{};
    for (int i = 0;; ++i) {
      if (i == warmup) deadline = Clock::now() + min_duration;
      if (i >= warmup && Clock::now() >= deadline) break;
      auto t0 = Clock::now();
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, Issue(kv, Shape::kPushPull, table, key, vals, &out));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
      if (i >= warmup) samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    return Status::Ok();
  });
  PSERVER_RETURN_IF_ERROR(s);
  if (samples.empty()) return Status::Internal("no round trips measured");
  std::sort(samples.begin(), samples.end());
  LatencyResult r;
  r.samples = samples.size();
  auto rank = [&](double q) { return samples[std::min(samples.size() - 1, static_cast<size_t>(q * samples.size()))]; };
  r.p50_us = rank(0.50);
  r.p99_us = rank(0.99);
  double sum = 0;
  for (double v : samples) sum += v;
  r.mean_us = sum / samples.size();
  return r;
}

}  // namespace pserver::bench
