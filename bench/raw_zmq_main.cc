// raw_zmq_bench: prints the raw ZeroMQ bound that `pserver bench` compares against, so the
// numbers can be checked on their own. Push, pull and push-pull of one 4 KiB, 64 KiB, 1 MiB
// and 16 MiB value (--sizes) with 32 requests in flight per client, for 1 server x 1 client and
// 2 servers x 2 clients, plus the 4 KiB one-in-flight round trip; each figure is the median
// of --repetitions runs with its range. --work sum measures the arithmetic bound instead
// (servers that store a row per key, add pushes and copy pulls; raw_zmq.h), without the round
// trip.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_report.h"
#include "raw_zmq.h"

namespace pserver::bench {
namespace {

struct Flags {
  int repetitions = 3;
  int min_duration_ms = 1000;
  int window = 32;
  std::string json;  // also write the results here when set
  std::string work = "none";  // none: the plain bound; sum: the arithmetic bound
  std::vector<size_t> sizes = {4 << 10, 64 << 10, 1 << 20, 16 << 20};
};

// Appends req/s and MiB/s rows for one workload. Both are summaries of the same runs.
Status MeasureThroughput(const Flags& flags, Shape shape, size_t bytes, int servers, int clients,
                         std::vector<BenchResult>* out) {
  RawZmqOptions options;
  options.shape = shape;
  options.bytes = bytes;
  options.window = flags.window;
  options.num_servers = servers;
  options.num_clients = clients;
  options.min_duration = std::chrono::milliseconds(flags.min_duration_ms);
  options.work = flags.work == "sum" ? BoundWork::kSum : BoundWork::kNone;
  std::vector<double> rps;
  std::vector<double> mibps;
  for (int i = 0; i < flags.repetitions; ++i) {
    PSERVER_ASSIGN_OR_RETURN(ThroughputResult r, MeasureRawZmqThroughput(options));
    rps.push_back(r.requests_per_sec);
    mibps.push_back(r.bytes_per_sec / (1 << 20));
  }
  const std::string name = std::string(ShapeName(shape)) + "/" + SizeName(bytes) + "/" +
                           std::to_string(servers) + "s" + std::to_string(clients) + "w" +
                           (options.work == BoundWork::kSum ? "/arith" : "");
  out->push_back(MakeBenchResult(name, "req/s", rps, 0, "", true));
  out->push_back(MakeBenchResult(name, "MiB/s", mibps, 0, "", true));
  return Status::Ok();
}

Status MeasureRoundTrip(const Flags& flags, size_t bytes, std::vector<BenchResult>* out) {
  std::vector<double> p50;
  std::vector<double> p99;
  for (int i = 0; i < flags.repetitions; ++i) {
    PSERVER_ASSIGN_OR_RETURN(
        LatencyResult r,
        MeasureRawZmqRoundTrip(bytes, std::chrono::milliseconds(flags.min_duration_ms), 100));
    p50.push_back(r.p50_us);
    p99.push_back(r.p99_us);
  }
  const std::string name = "rtt/" + SizeName(bytes) + "/1s1w";
  out->push_back(MakeBenchResult(name + "/p50", "us", p50, 0, "", false));
  out->push_back(MakeBenchResult(name + "/p99", "us", p99, 0, "", false));
  return Status::Ok();
}

Status Run(const Flags& flags) {
  std::vector<BenchResult> results;
  constexpr Shape kShapes[] = {Shape::kPush, Shape::kPull, Shape::kPushPull};
  constexpr int kTopologies[] = {1, 2};  // servers = clients
  for (int n : kTopologies) {
    for (Shape shape : kShapes) {
      for (size_t bytes : flags.sizes) {
        PSERVER_RETURN_IF_ERROR(MeasureThroughput(flags, shape, bytes, n, n, &results));
      }
    }
  }
  if (flags.work == "none") PSERVER_RETURN_IF_ERROR(MeasureRoundTrip(flags, 4 << 10, &results));
  std::printf(
      "raw ZeroMQ bound (%s): window %d per client, %d repetitions of >= %d ms; value is "
      "the median\n",
      flags.work == "sum" ? "arithmetic" : "plain", flags.window, flags.repetitions, flags.min_duration_ms);
  PrintTable(results, stdout);
  if (!flags.json.empty()) PSERVER_RETURN_IF_ERROR(WriteJson(results, flags.json));
  return Status::Ok();
}

}  // namespace
}  // namespace pserver::bench

int main(int argc, char** argv) {
  pserver::bench::Flags flags;
  CLI::App app{"Measures the raw ZeroMQ bound used by `pserver bench`."};
  app.add_option("--repetitions", flags.repetitions, "runs per figure")->check(CLI::Range(1, 1000));
  app.add_option("--min_duration_ms", flags.min_duration_ms, "measured time per run")
      ->check(CLI::Range(1, 3600 * 1000));
  app.add_option("--window", flags.window, "requests in flight per client")
      ->check(CLI::Range(1, pserver::bench::kMaxWindow));
  app.add_option("--json", flags.json, "also write the results to this JSON file");
  app.add_option("--work", flags.work, "none: plain ZeroMQ; sum: servers that store, add and copy rows")
      ->check(CLI::IsMember({"none", "sum"}));
  app.add_option("--sizes", flags.sizes, "value sizes in bytes (a multiple of 4 for --work sum)")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  const pserver::Status status = pserver::bench::Run(flags);
  if (!status.ok()) {
    std::fprintf(stderr, "raw_zmq_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
