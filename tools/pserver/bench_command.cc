#include "pserver/bench_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench_report.h"
#include "cluster_workloads.h"
#include "raw_zmq.h"

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
  std::string json;
};

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
  return Status::InvalidArgument(fmt::format("unknown workload '{}' (push, pull, pushpull, rtt)", s));
}

// Throughput of one cell: repetitions alternate between the bound and pserver so that both
// see the same machine load.
Result<BenchResult> ThroughputCell(const BenchFlags& f, Shape shape, size_t bytes, int servers, int workers) {
  std::vector<double> ours, bound;
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
    bench::ClusterWorkloadOptions c;
    c.shape = shape;
    c.bytes = bytes;
    c.window = f.window;
    c.num_servers = servers;
    c.num_workers = workers;
    c.min_duration = raw.min_duration;
    PSERVER_ASSIGN_OR_RETURN(bench::ThroughputResult r, bench::MeasureClusterThroughput(c));
    ours.push_back(r.requests_per_sec);
  }
  std::string name = fmt::format("{}/{}/{}s{}w", bench::ShapeName(shape), bytes >= (1 << 20) ? fmt::format("{}MiB", bytes >> 20)
                                                                          : fmt::format("{}KiB", bytes >> 10),
                                 servers, workers);
  return bench::MakeBenchResult(name, "req/s", ours, bench::Summarize(bound).median, "raw_zmq", true);
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

int Run(const BenchFlags& f) {
  std::vector<BenchResult> results;
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
    Result<Shape> shape = ParseShape(w);
    if (!shape.ok()) return std::fprintf(stderr, "pserver bench: %s\n", shape.status().ToString().c_str()), 2;
    for (const std::string& t : f.topologies) {
      Result<std::pair<int, int>> topo = ParseTopology(t);
      if (!topo.ok()) return std::fprintf(stderr, "pserver bench: %s\n", topo.status().ToString().c_str()), 2;
      for (const std::string& s : f.sizes) {
        Result<size_t> bytes = ParseSize(s);
        if (!bytes.ok()) return std::fprintf(stderr, "pserver bench: %s\n", bytes.status().ToString().c_str()), 2;
        Result<BenchResult> r = ThroughputCell(f, *shape, *bytes, topo->first, topo->second);
        if (!r.ok()) {
          std::fprintf(stderr, "pserver bench: %s %s %s: %s\n", w.c_str(), s.c_str(), t.c_str(),
                       r.status().ToString().c_str());
          return 1;
        }
        report(*r);
      }
    }
  }
  std::printf("\nsummary (ratio = fraction of the raw ZeroMQ bound reached; latency: bound/value)\n");
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
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Run named workloads on an in-process cluster (nodes as threads over loopback TCP) and, in the same run, the "
      "raw ZeroMQ bound for the same shape; print each result with its ratio to the bound");
  cmd->add_option("--workloads", f->workloads, "push, pull, pushpull (one key per request, 32 in flight), rtt")
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
  cmd->add_option("--json", f->json, "Also write the results as a JSON array to this file");
  cmd->callback([=] { *run = [=] { return Run(*f); }; });
}

}  // namespace pserver::tools
