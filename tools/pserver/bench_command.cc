#include "pserver/bench_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_report.h"
#include "run_span.h"
#include "cluster_workloads.h"
#include "pserver/atomic_file.h"
#include "pserver/flag_checks.h"
#include "pserver/logging.h"
#include "raw_zmq.h"
#include "sparse_workloads.h"

namespace pserver::tools {
namespace {

using bench::BenchResult;
using bench::Shape;

struct BenchFlags {
  std::vector<std::string> workloads = {"push", "pull", "pushpull", "rtt"};
  std::vector<std::string> sizes = {"4KiB", "64KiB", "1MiB", "16MiB"};
  std::vector<std::string> topologies = {"1x1", "2x1", "1x2", "2x2"};  // servers x workers
  int repetitions = 3;
  int64_t min_duration_ms = 1000;
  int window = 32;
  std::string server_work = "store";  // push, pull, pushpull cells: store or none
  // Sparse workloads (sparse_push, sparse_pull) and the memory figure.
  size_t sparse_keys = 100'000;
  uint64_t sparse_key_space = 10'000'000;
  int sparse_window = 4;
  bool sparse_scatter = false;
  bool sparse_prefill = false;
  std::vector<size_t> memory_keys = {10'000'000};
  std::vector<std::string> memory_rules = {"sgd"};
  // filter_push, filter_pull: the chains measured against none, in ParseFilters' form.
  std::vector<std::string> filter_chains = {"zstd", "lz4"};
  std::string json;
  bool quiet_logs = true;  // no --log-level given: the bench lowers the library's logs to warn
};

// Target for the memory figure: bytes per stored float parameter of a sparse SGD table, all
// resident memory counted, and the allowance for the peak while the table grows. Tables whose
// rule keeps state are held to the same overhead: 16/12 of their key and row.
constexpr double kMemoryTargetBytes = 16;
constexpr double kMemoryPeakAllowance = 1.25;

Result<size_t> ParseSize(const std::string& s) {
  size_t n = 0, pos = 0;
  while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) n = n * 10 + (s[pos++] - '0');
  std::string unit = s.substr(pos);
  if (pos == 0) return Status::InvalidArgument(fmt::format("size '{}' does not start with a number", s));
  if (unit == "KiB") return n << 10;
  if (unit == "MiB") return n << 20;
  if (unit == "B" || unit.empty()) return n;
  return Status::InvalidArgument(fmt::format("size '{}': use B, KiB or MiB", s));
}

Result<std::pair<int, int>> ParseTopology(const std::string& s) {
  int servers = 0, workers = 0;
  if (std::sscanf(s.c_str(), "%dx%d", &servers, &workers) != 2 || servers < 1 || workers < 1) {
    return Status::InvalidArgument(fmt::format("topology '{}': use SERVERSxWORKERS, e.g. 2x1", s));
  }
  return std::make_pair(servers, workers);
}

Result<Shape> ParseShape(const std::string& s) {
  if (s == "push") return Shape::kPush;
  if (s == "pull") return Shape::kPull;
  if (s == "pushpull") return Shape::kPushPull;
  return Status::InvalidArgument(
      fmt::format("unknown workload '{}' (push, pull, pushpull, rtt, sparse_push, sparse_pull, memory, replicated_push, "
                  "replicated_sparse_push, filter_push, filter_pull, metrics_push, metrics_pull, metrics_pushpull)",
                  s));
}

// The in-process cluster of one throughput cell, as the flags set it up.
bench::ClusterWorkloadOptions ClusterCell(const BenchFlags& f, Shape shape, size_t bytes, int servers, int workers) {
  bench::ClusterWorkloadOptions c;
  c.shape = shape;
  c.bytes = bytes;
  c.window = f.window;
  c.num_servers = servers;
  c.num_workers = workers;
  c.min_duration = std::chrono::milliseconds(f.min_duration_ms);
  return c;
}

// Throughput of one cell against two bounds: plain raw ZeroMQ and raw ZeroMQ whose servers do
// the sum store's arithmetic (raw_zmq.h). Repetitions alternate between the plain bound, the
// arithmetic bound and pserver so that all three see the same machine load.
Result<BenchResult> ThroughputCell(const BenchFlags& f, Shape shape, size_t bytes, int servers, int workers) {
  std::vector<double> ours, bound, arith, ours_cpu, bound_cpu, arith_cpu;
  for (int rep = 0; rep < f.repetitions; ++rep) {
    bench::RawZmqOptions raw;
    raw.shape = shape;
    raw.bytes = bytes;
    raw.window = f.window;
    raw.num_clients = workers;
    raw.num_servers = servers;
    raw.min_duration = std::chrono::milliseconds(f.min_duration_ms);
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult b, bench::MeasureRawZmqThroughput(raw));
    bound.push_back(b.requests_per_sec);
    bound_cpu.push_back(bench::CpuMicrosPerRequest(b.cpu_seconds, b.requests));
    raw.work = bench::BoundWork::kSum;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult a, bench::MeasureRawZmqThroughput(raw));
    arith.push_back(a.requests_per_sec);
    arith_cpu.push_back(bench::CpuMicrosPerRequest(a.cpu_seconds, a.requests));
    bench::ClusterWorkloadOptions c = ClusterCell(f, shape, bytes, servers, workers);
    c.server_work = f.server_work == "none" ? bench::ServerWork::kNone : bench::ServerWork::kStore;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult r, bench::MeasureClusterThroughput(c));
    ours.push_back(r.requests_per_sec);
    ours_cpu.push_back(bench::CpuMicrosPerRequest(r.cpu_seconds, r.requests));
  }
  std::string name = fmt::format("{}/{}/{}s{}w", bench::ShapeName(shape), bench::SizeName(bytes), servers, workers);
  // Results without the server's work never share a name with the real ones.
  if (f.server_work != "store") name += "/server-" + f.server_work;
  BenchResult result = bench::MakeBenchResult(name, "req/s", ours, bench::Summarize(bound).median,
                                              std::string(bench::BoundName(bench::BoundWork::kNone)), true);
  result.cpu_us = bench::Summarize(ours_cpu).median;
  result.bound_cpu_us = bench::Summarize(bound_cpu).median;
  bench::SetArithmeticBound(&result, arith, std::string(bench::BoundName(bench::BoundWork::kSum)),
                            bench::Summarize(arith_cpu).median);
  return result;
}

Result<std::vector<BenchResult>> RoundTripCells(const BenchFlags& f) {
  std::vector<double> p50, p99, bp50, bp99;
  auto duration = std::chrono::milliseconds(f.min_duration_ms);
  for (int rep = 0; rep < f.repetitions; ++rep) {
    PSERVER_ASSIGN_OR_RETURN(bench::LatencyResult b, bench::MeasureRawZmqRoundTrip(4096, duration, 200));
    bp50.push_back(b.p50_us);
    bp99.push_back(b.p99_us);
    PSERVER_ASSIGN_OR_RETURN(bench::LatencyResult r, bench::MeasureClusterRoundTrip(4096, duration, 200));
    p50.push_back(r.p50_us);
    p99.push_back(r.p99_us);
  }
  return std::vector<BenchResult>{
      bench::MakeBenchResult("rtt/4KiB/p50", "us", p50, bench::Summarize(bp50).median, "raw_zmq_req_rep", false),
      bench::MakeBenchResult("rtt/4KiB/p99", "us", p99, bench::Summarize(bp99).median, "raw_zmq_req_rep", false)};
}

bench::SparseWorkloadOptions SparseOptions(const BenchFlags& f, bool push, int servers, int workers) {
  bench::SparseWorkloadOptions o;
  o.push = push;
  o.num_servers = servers;
  o.num_workers = workers;
  o.keys_per_request = f.sparse_keys;
  o.key_space = f.sparse_key_space;
  o.scatter_keys = f.sparse_scatter;
  o.prefill = f.sparse_prefill;
  o.window = f.sparse_window;
  o.min_duration = std::chrono::milliseconds(f.min_duration_ms);
  return o;
}

std::string KeyCount(uint64_t n) {
  if (n >= 1'000'000 && n % 1'000'000 == 0) return fmt::format("{}M", n / 1'000'000);
  if (n >= 1000 && n % 1000 == 0) return fmt::format("{}k", n / 1000);
  return fmt::format("{}", n);
}

// What replication costs: the same push cell with 2 replicas against 1, repetitions alternating
// so that both see the same machine load (ratio = k2 / k1).
Result<BenchResult> ReplicationCell(const BenchFlags& f, size_t bytes, int servers, int workers) {
  std::vector<double> one, two;
  for (int rep = 0; rep < f.repetitions; ++rep) {
    bench::ClusterWorkloadOptions c = ClusterCell(f, Shape::kPush, bytes, servers, workers);
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult a, bench::MeasureClusterThroughput(c));
    one.push_back(a.requests_per_sec);
    c.replicas = 2;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult b, bench::MeasureClusterThroughput(c));
    two.push_back(b.requests_per_sec);
  }
  return bench::MakeBenchResult(fmt::format("replicated_push/{}/{}s{}w/k2", bench::SizeName(bytes), servers, workers),
                                "req/s", two,
                                bench::Summarize(one).median, "pserver_k1", true);
}

// The same for sparse pushes (--sparse-keys random keys per request): keys/s per server.
Result<BenchResult> SparseReplicationCell(const BenchFlags& f, const bench::SparseRequests& requests, int servers,
                                          int workers) {
  std::vector<double> one, two;
  for (int rep = 0; rep < f.repetitions; ++rep) {
    bench::SparseWorkloadOptions o = SparseOptions(f, true, servers, workers);
    PSERVER_ASSIGN_OR_RETURN(bench::SparseThroughput a, bench::MeasureClusterSparse(o, requests));
    one.push_back(a.keys_per_sec_per_server);
    o.replicas = 2;
    PSERVER_ASSIGN_OR_RETURN(bench::SparseThroughput b, bench::MeasureClusterSparse(o, requests));
    two.push_back(b.keys_per_sec_per_server);
  }
  return bench::MakeBenchResult(fmt::format("replicated_sparse_push/{}keys/{}s{}w/k2", KeyCount(f.sparse_keys), servers,
                                            workers),
                                "keys/s/server", two, bench::Summarize(one).median, "pserver_k1", true);
}

// Keys per second per server of a sparse workload; repetitions alternate between the hash-map
// bound and pserver so that both see the same machine load.
Result<BenchResult> SparseCell(const BenchFlags& f, const bench::SparseRequests& requests, bool push, int servers,
                               int workers) {
  const bench::SparseWorkloadOptions o = SparseOptions(f, push, servers, workers);
  std::vector<double> ours, bound, ours_cpu, bound_cpu;
  uint32_t bound_threads = 0;
  for (int rep = 0; rep < f.repetitions; ++rep) {
    const bench::SparseBound b = bench::MeasureSparseBound(o, requests);
    bound.push_back(b.keys_per_sec);
    bound_cpu.push_back(b.cpu_us_per_request);
    bound_threads = b.threads;
    PSERVER_ASSIGN_OR_RETURN(bench::SparseThroughput r, bench::MeasureClusterSparse(o, requests));
    ours.push_back(r.keys_per_sec_per_server);
    ours_cpu.push_back(bench::CpuMicrosPerRequest(r.cpu_seconds, r.requests));
    if (o.prefill) {
      const auto keys = static_cast<double>(o.key_space);
      std::printf("  prefill of %s keys on %d servers: %.1f s (%.2f M keys/s); the process's resident memory +%.2f GB "
                  "(%.2f B/param), peak +%.2f GB (%.2f B/param)\n",
                  KeyCount(o.key_space).c_str(), servers, r.prefill_seconds, keys / r.prefill_seconds / 1e6,
                  static_cast<double>(r.prefill_resident_bytes) / 1e9, static_cast<double>(r.prefill_resident_bytes) / keys,
                  static_cast<double>(r.prefill_peak_bytes) / 1e9, static_cast<double>(r.prefill_peak_bytes) / keys);
      std::fflush(stdout);
    }
  }
  std::string name = fmt::format("{}/{}keys/{}s{}w", push ? "sparse_push" : "sparse_pull", KeyCount(f.sparse_keys),
                                 servers, workers);
  const std::string bound_name =
      fmt::format("flat_hash_map_{}_{}thread{}", push ? "sgd" : "gather", bound_threads, bound_threads == 1 ? "" : "s");
  BenchResult result =
      bench::MakeBenchResult(name, "keys/s/server", ours, bench::Summarize(bound).median, bound_name, true);
  result.cpu_us = bench::Summarize(ours_cpu).median;
  result.bound_cpu_us = bench::Summarize(bound_cpu).median;
  return result;
}

// The cost and gain of a filter chain on sparse pushes or pulls of `bytes` of values (bytes / 4
// random sorted keys from --sparse-key-space, uniform gradients): keys/s per server with the
// chain against none, repetitions alternating between the two; and the workers' wire bytes per
// request, whose "ratio" (unfiltered / filtered) is the compression factor.
Result<std::vector<BenchResult>> FilterCells(const BenchFlags& f, const std::string& chain, bool push, size_t bytes,
                                             int servers, int workers) {
  PSERVER_ASSIGN_OR_RETURN(std::vector<FilterSpec> filters, ParseFilters(chain));
  bench::SparseWorkloadOptions o = SparseOptions(f, push, servers, workers);
  o.keys_per_request = std::max<size_t>(1, bytes / sizeof(float));
  PSERVER_ASSIGN_OR_RETURN(bench::SparseRequests requests, bench::MakeSparseRequests(o));
  std::vector<double> plain, filtered, plain_wire, filtered_wire;
  for (int rep = 0; rep < f.repetitions; ++rep) {
    o.filters.clear();
    PSERVER_ASSIGN_OR_RETURN(bench::SparseThroughput a, bench::MeasureClusterSparse(o, requests));
    plain.push_back(a.keys_per_sec_per_server);
    plain_wire.push_back(a.wire_bytes_per_request);
    o.filters = filters;
    PSERVER_ASSIGN_OR_RETURN(bench::SparseThroughput b, bench::MeasureClusterSparse(o, requests));
    filtered.push_back(b.keys_per_sec_per_server);
    filtered_wire.push_back(b.wire_bytes_per_request);
  }
  const std::string cell =
      fmt::format("{}/{}/{}/{}s{}w", chain, push ? "push" : "pull", bench::SizeName(bytes), servers, workers);
  return std::vector<BenchResult>{
      bench::MakeBenchResult("filter_speed/" + cell, "keys/s/server", filtered, bench::Summarize(plain).median,
                             "no_filter", true),
      bench::MakeBenchResult("filter_bytes/" + cell, "B/req", filtered_wire, bench::Summarize(plain_wire).median,
                             "no_filter", false)};
}

// The cost of metrics: the same throughput cell with every node keeping and serving them (nobody
// scrapes: what the instruments cost the requests) against it without, alternating.
Result<BenchResult> MetricsCell(const BenchFlags& f, Shape shape, size_t bytes, int servers, int workers) {
  std::vector<double> off, on;
  bench::ClusterWorkloadOptions c = ClusterCell(f, shape, bytes, servers, workers);
  for (int rep = 0; rep < f.repetitions; ++rep) {
    c.metrics = false;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult a, bench::MeasureClusterThroughput(c));
    off.push_back(a.requests_per_sec);
    c.metrics = true;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult b, bench::MeasureClusterThroughput(c));
    on.push_back(b.requests_per_sec);
  }
  return bench::MakeBenchResult(
      fmt::format("metrics/{}/{}/{}s{}w", bench::ShapeName(shape), bench::SizeName(bytes), servers, workers), "req/s",
      on, bench::Summarize(off).median, "no_metrics", true);
}

// Bytes per stored parameter of the server's sparse store, with the server's default number of
// shards, for every --memory-rules and --memory-keys (deterministic: one repetition each): the
// resident figure against its target, and the peak while growing against the untrimmed one.
Result<std::vector<BenchResult>> MemoryCells(const BenchFlags& f) {
  const uint32_t shards = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
  std::vector<BenchResult> out;
  for (const std::string& rule : f.memory_rules) {
    for (size_t keys : f.memory_keys) {
      PSERVER_ASSIGN_OR_RETURN(bench::SparseMemory m, bench::MeasureSparseMemory(keys, shards, rule, 43));
      const std::string cell = fmt::format("sparse_{}/{}keys/{}shards", rule, KeyCount(keys), m.shards);
      const double target = kMemoryTargetBytes * (sizeof(Key) + m.row_bytes) / (sizeof(Key) + sizeof(float));
      const double resident = m.PerParam(m.resident_bytes);
      out.push_back(bench::MakeTargetResult("memory/" + cell, "B/param", resident, target));
      // The peak counts what the allocator holds free, so it is held to the untrimmed figure.
      out.push_back(bench::MakeTargetResult("memory_peak/" + cell, "B/param", m.PerParam(m.peak_bytes),
                                            kMemoryPeakAllowance * m.PerParam(m.untrimmed_bytes)));
      std::printf("  %s: resident %.2f B/param (untrimmed %.2f), peak %.2f B/param (over the last %zu keys); "
                  "everything %.2f B/param; the store's own count %.2f B/param; key and row %zu B; filled in %.1f s\n",
                  cell.c_str(), resident, m.PerParam(m.untrimmed_bytes), m.PerParam(m.peak_bytes), m.keys_measured,
                  static_cast<double>(m.whole_bytes) / static_cast<double>(m.keys),
                  static_cast<double>(m.store_bytes) / static_cast<double>(m.keys), sizeof(Key) + m.row_bytes,
                  m.fill_seconds);
    }
  }
  return out;
}

int Run(const BenchFlags& f) {
  if (f.quiet_logs) SetLogLevel("warn");  // the nodes' info lines would interleave with the table
  // A long run must not end unable to write its results.
  if (!f.json.empty()) {
    if (Status s = CheckWritableOutput(f.json).WithContext("--json"); !s.ok()) {
      return std::fprintf(stderr, "pserver bench: %s\n", s.ToString().c_str()), 2;
    }
  }
  std::vector<BenchResult> results;
  std::optional<bench::SparseRequests> sparse_requests;  // generated on first use, shared by the cells
  auto report = [&](const BenchResult& r) {
    bench::PrintTable({r}, stdout);
    std::fflush(stdout);
    results.push_back(r);
  };
  for (const std::string& w : f.workloads) {
    if (w == "rtt") {
      Result<std::vector<BenchResult>> rtt = RoundTripCells(f);
      if (!rtt.ok()) return std::fprintf(stderr, "pserver bench: rtt: %s\n", rtt.status().ToString().c_str()), 1;
      for (const BenchResult& r : *rtt) report(r);
      continue;
    }
    if (w == "memory") {
      Result<std::vector<BenchResult>> r = MemoryCells(f);
      if (!r.ok()) return std::fprintf(stderr, "pserver bench: memory: %s\n", r.status().ToString().c_str()), 1;
      for (const BenchResult& m : *r) report(m);
      continue;
    }
    if (w == "replicated_push" || w == "replicated_sparse_push") {
      const bool sparse = w == "replicated_sparse_push";
      if (sparse && !sparse_requests) {
        Result<bench::SparseRequests> reqs = bench::MakeSparseRequests(SparseOptions(f, true, 1, 1));
        if (!reqs.ok()) return std::fprintf(stderr, "pserver bench: %s\n", reqs.status().ToString().c_str()), 2;
        sparse_requests = std::move(*reqs);
      }
      for (const std::string& t : f.topologies) {
        Result<std::pair<int, int>> topo = ParseTopology(t);
        if (!topo.ok()) return std::fprintf(stderr, "pserver bench: %s\n", topo.status().ToString().c_str()), 2;
        if (topo->first < 2) continue;  // one server has no replica
        std::vector<std::string> sizes = sparse ? std::vector<std::string>{"-"} : f.sizes;
        for (const std::string& sz : sizes) {
          Result<BenchResult> r = Status::Ok();
          if (sparse) {
            r = SparseReplicationCell(f, *sparse_requests, topo->first, topo->second);
          } else {
            Result<size_t> bytes = ParseSize(sz);
            if (!bytes.ok()) return std::fprintf(stderr, "pserver bench: %s\n", bytes.status().ToString().c_str()), 2;
            r = ReplicationCell(f, *bytes, topo->first, topo->second);
          }
          if (!r.ok()) {
            std::fprintf(stderr, "pserver bench: %s %s: %s\n", w.c_str(), t.c_str(), r.status().ToString().c_str());
            return 1;
          }
          report(*r);
        }
      }
      continue;
    }
    if (w == "filter_push" || w == "filter_pull") {
      for (const std::string& chain : f.filter_chains) {
        for (const std::string& t : f.topologies) {
          Result<std::pair<int, int>> topo = ParseTopology(t);
          if (!topo.ok()) return std::fprintf(stderr, "pserver bench: %s\n", topo.status().ToString().c_str()), 2;
          for (const std::string& sz : f.sizes) {
            Result<size_t> bytes = ParseSize(sz);
            if (!bytes.ok()) return std::fprintf(stderr, "pserver bench: %s\n", bytes.status().ToString().c_str()), 2;
            Result<std::vector<BenchResult>> r = FilterCells(f, chain, w == "filter_push", *bytes, topo->first, topo->second);
            if (!r.ok()) {
              std::fprintf(stderr, "pserver bench: %s %s %s %s: %s\n", w.c_str(), chain.c_str(), t.c_str(), sz.c_str(),
                           r.status().ToString().c_str());
              return 1;
            }
            for (const BenchResult& cell : *r) report(cell);
          }
        }
      }
      continue;
    }
    if (w == "sparse_push" || w == "sparse_pull") {
      if (!sparse_requests) {
        Result<bench::SparseRequests> reqs = bench::MakeSparseRequests(SparseOptions(f, true, 1, 1));
        if (!reqs.ok()) return std::fprintf(stderr, "pserver bench: %s\n", reqs.status().ToString().c_str()), 2;
        sparse_requests = std::move(*reqs);
      }
      for (const std::string& t : f.topologies) {
        Result<std::pair<int, int>> topo = ParseTopology(t);
        if (!topo.ok()) return std::fprintf(stderr, "pserver bench: %s\n", topo.status().ToString().c_str()), 2;
        Result<BenchResult> r = SparseCell(f, *sparse_requests, w == "sparse_push", topo->first, topo->second);
        if (!r.ok()) {
          std::fprintf(stderr, "pserver bench: %s %s: %s\n", w.c_str(), t.c_str(), r.status().ToString().c_str());
          return 1;
        }
        report(*r);
      }
      continue;
    }
    // push, pull, pushpull against their bounds; metrics_<shape> with metrics against without.
    const bool metrics = w.starts_with("metrics_");
    Result<Shape> shape = ParseShape(metrics ? w.substr(8) : w);
    if (!shape.ok()) shape = ParseShape(w);  // the error names the workload as given
    if (!shape.ok()) return std::fprintf(stderr, "pserver bench: %s\n", shape.status().ToString().c_str()), 2;
    for (const std::string& t : f.topologies) {
      Result<std::pair<int, int>> topo = ParseTopology(t);
      if (!topo.ok()) return std::fprintf(stderr, "pserver bench: %s\n", topo.status().ToString().c_str()), 2;
      for (const std::string& s : f.sizes) {
        Result<size_t> bytes = ParseSize(s);
        if (!bytes.ok()) return std::fprintf(stderr, "pserver bench: %s\n", bytes.status().ToString().c_str()), 2;
        Result<BenchResult> r = metrics ? MetricsCell(f, *shape, *bytes, topo->first, topo->second)
                                        : ThroughputCell(f, *shape, *bytes, topo->first, topo->second);
        if (!r.ok()) {
          std::fprintf(stderr, "pserver bench: %s %s %s: %s\n", w.c_str(), s.c_str(), t.c_str(),
                       r.status().ToString().c_str());
          return 1;
        }
        report(*r);
      }
    }
  }
  std::printf(
      "\nsummary (ratio = fraction of the bound reached: raw ZeroMQ for push/pull/pushpull/rtt (latency: "
      "bound/value); arith_ratio, push/pull/pushpull only: the same raw ZeroMQ with servers that store a row per "
      "key, add pushes into it and copy pulls from it; a flat_hash_map loop over the same keys, sharded over a server's apply threads, for sparse_*; the same cell without filters for filter_speed (keys/s) and filter_bytes (wire bytes per request: ratio = compression factor); the same cell without metrics for metrics/*; memory: value/target, <= 1 "
      "meets it)\n");
  bench::PrintTable(results, stdout);
  if (!f.json.empty()) {
    if (Status s = bench::WriteJson(results, f.json); !s.ok()) {
      std::fprintf(stderr, "pserver bench: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, std::function<int()>* run) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* root = &app;
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Run named workloads on an in-process cluster (nodes as threads over loopback TCP) and, in the same run, their "
      "bound (raw ZeroMQ for the same shape, and for push, pull and pushpull also raw ZeroMQ whose servers do the "
      "sum store's arithmetic; an in-memory loop on a server's apply threads for the sparse ones); print each result "
      "with its ratio to the bound(s)");
  cmd->add_option("--workloads", f->workloads,
                  "push, pull, pushpull (one key per request, 32 in flight), rtt; also (not by default) "
                  "sparse_push, sparse_pull (--sparse-keys random keys per request into a sparse SGD table, keys/s "
                  "per server against a flat_hash_map loop over the same keys on as many threads as a server applies on) and memory (resident bytes per parameter "
                  "of a sparse store of --memory-keys keys with each --memory-rules rule, against 16 bytes for SGD and the "
                  "same overhead for the others, and the peak while it grew against 1.25x the figure before trimming the heap); replicated_push and "
                  "replicated_sparse_push (push and sparse_push with 2 replicas against 1, in the same run; topologies "
                  "of 2 or more servers); filter_push and filter_pull (sparse requests of --sizes of values through "
                  "each of --filter-chains against none, in the same run: keys/s per server, and wire bytes per "
                  "request, whose ratio is the compression factor); metrics_push, metrics_pull and metrics_pushpull "
                  "(those cells with every node keeping its metrics against none, in the same run)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--sizes", f->sizes, "Value sizes of the one key per request")->delimiter(',')->capture_default_str();
  cmd->add_option("--topologies", f->topologies, "SERVERSxWORKERS pairs")->delimiter(',')->capture_default_str();
  cmd->add_option("--repetitions", f->repetitions, "Repetitions per cell (median and range reported)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--min-duration-ms", f->min_duration_ms, "Measured time per repetition")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--window", f->window, "Requests in flight per worker")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--server-work", f->server_work,
                  "push, pull, pushpull: what the servers do. store: add pushed rows and read pulled ones (the "
                  "figure that counts). none: a diagnostic that acknowledges pushes without storing them and answers "
                  "pulls with zeros, to show the path's cost without the server's arithmetic; its results are named "
                  "with a /server-none suffix")
      ->check(CLI::IsMember({"store", "none"}))
      ->capture_default_str();
  cmd->add_option("--sparse-keys", f->sparse_keys, "sparse_*: distinct sorted keys per request")
      ->check(CLI::Range(size_t{1}, size_t{100'000'000}))
      ->capture_default_str();
  cmd->add_option("--sparse-key-space", f->sparse_key_space, "sparse_*: keys are drawn from [0, this)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{4'000'000'000}))
      ->capture_default_str();
  cmd->add_flag("--sparse-scatter", f->sparse_scatter,
                "sparse_*: spread the key space over the whole 64-bit space (a bijection of [0, --sparse-key-space))");
  cmd->add_flag("--sparse-prefill", f->sparse_prefill,
                "sparse_*: before measuring, push every key of the key space once (the table then holds them all); "
                "prints its time and the process's memory");
  cmd->add_option("--sparse-window", f->sparse_window, "sparse_*: requests in flight per worker")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--memory-keys", f->memory_keys, "memory: keys stored before measuring (a list: one store each)")
      ->delimiter(',')
      ->check(CLI::Range(size_t{1'000'000}, size_t{4'000'000'000}))
      ->capture_default_str();
  cmd->add_option("--memory-rules", f->memory_rules, "memory: the stores' update rules (sgd, adagrad, adam, ftrl)")
      ->delimiter(',')
      ->check(CLI::IsMember({"sgd", "adagrad", "adam", "ftrl"}))
      ->capture_default_str();
  cmd->add_option("--filter-chains", f->filter_chains,
                  "filter_*: the filter chains measured, separated by ';' (each as --filters of train takes it, e.g. "
                  "zstd:level=3,lz4)")
      ->delimiter(';')
      ->check(FilterChainText())
      ->capture_default_str();
  cmd->add_option("--json", f->json, "Also write the results as a JSON array to this file");
  cmd->callback([=] {
    const CLI::Option* level = root->get_option_no_throw("--log-level");
    f->quiet_logs = level == nullptr || level->count() == 0;
    *run = [=] { return Run(*f); };
  });
}

}  // namespace pserver::tools
