// Reporting for the cluster benchmark: summaries of repeated measurements, results stated as
// a ratio to a bound measured in the same run, an aligned text table and a JSON file.
//
// Everything here is a pure function or writes only where it is told; all of it is
// thread-compatible. Nothing throws across this interface.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "pserver/status.h"

namespace pserver::bench {

// One reported figure and the bound it is compared with.
struct BenchResult {
  std::string name;  // workload, e.g. "push/1MiB/2s2w"
  double value = 0;  // median over repetitions
  std::string unit;  // e.g. "req/s", "MiB/s", "us"
  double bound = 0;  // the same figure for the bound (median); 0 when there is none
  // Always "fraction of the bound reached", so 1.0 is as good as the bound and smaller is
  // worse, whatever the unit:
  //   higher_is_better (throughput): ratio = value / bound
  //   lower is better (latency):     ratio = bound / value
  // 0 when bound or value is not positive and finite (see ComputeRatio).
  // The one exception is a ceiling that is a target rather than a measured bound
  // (bound_name "target_max", e.g. the memory figure in bytes per parameter): there the ratio
  // is value / bound and at most 1.0 meets the target (built by MakeTargetResult).
  double ratio = 0;
  bool higher_is_better = true;
  double min = 0;  // range of `value` over the repetitions
  double max = 0;
  int repetitions = 1;
  std::string bound_name;  // e.g. "raw_zmq"; empty when there is no bound
  // Process CPU time (all threads, user + system) per request, in microseconds: medians over
  // the repetitions for the measured figure and for its bound. It shows how much of the
  // machine each side needs per request, which the shared machine's noise hardly moves.
  // 0 where it was not measured.
  double cpu_us = 0;
  double bound_cpu_us = 0;
  // A second bound, for the figures that have one (push, pull and push-pull cells: the same
  // plain ZeroMQ doing the server's arithmetic, "raw_zmq_arith"; raw_zmq.h). Its median, its
  // range over the repetitions, the ratio to it (as `ratio`: value / arith_bound for
  // higher_is_better), its name and its CPU time per request (median). All 0 or empty where the
  // figure has no second bound (see SetArithmeticBound).
  double arith_bound = 0;
  double arith_bound_min = 0;
  double arith_bound_max = 0;
  double arith_ratio = 0;
  std::string arith_bound_name;
  double arith_bound_cpu_us = 0;
};

// A request size as the results name it: "16MiB", "4KiB", "512B" (whole units, rounded down).
std::string SizeName(size_t bytes);

// Median, min and max over the repetitions of one measurement.
struct Summary {
  double median = 0;
  double min = 0;
  double max = 0;
};

// The median (mean of the two middle values for an even count), min and max of `samples`.
// An empty vector gives all zeros.
Summary Summarize(std::vector<double> samples);

// Nearest-rank percentile: the smallest sample such that at least `percent`% of the samples
// are <= it. `percent` is clamped to [0, 100]; 0 gives the minimum. An empty vector gives 0.
// Sorts `samples` in place (pass a copy to keep the order).
double Percentile(std::vector<double>& samples, double percent);

// The ratio documented on BenchResult::ratio: value/bound if higher_is_better, else
// bound/value; 0 if either is not positive and finite.
double ComputeRatio(double value, double bound, bool higher_is_better);

// Builds a BenchResult from the repetitions of the measured figure and the median of its
// bound (0 for none), filling value/min/max/repetitions and the ratio.
BenchResult MakeBenchResult(std::string name, std::string unit, const std::vector<double>& reps,
                            double bound, std::string bound_name, bool higher_is_better);

// Sets the second bound of `result` from its repetitions `reps` (median, min, max, the ratio of
// result->value to the median) with the name `name` and CPU time per request `cpu_us`.
// REQUIRES: result != nullptr.
void SetArithmeticBound(BenchResult* result, const std::vector<double>& reps, std::string name, double cpu_us);

// A single figure against a fixed ceiling `target` (lower is better): value = min = max =
// `value`, one repetition, bound = target, bound_name "target_max", ratio = value / target
// (0 if either is not positive and finite), so a ratio of at most 1.0 meets the target.
BenchResult MakeTargetResult(std::string name, std::string unit, double value, double target);

// Writes a header and one row per result to `out`, columns aligned:
//   name  value  unit  bound  ratio  arith_bound  arith_ratio  range  cpu_us/req
//   bound_cpu_us/req  arith_cpu_us/req
// (the arith_ columns are the second bound's median, the ratio to it and its CPU time per
// request). Ratios print as e.g. "0.87x" and `range` (of the value) as "[min, max]"; a missing
// bound, ratio or CPU time prints as "-". Write errors on `out` are ignored (it is a report for humans).
// REQUIRES: out != nullptr.
void PrintTable(const std::vector<BenchResult>& results, std::FILE* out);

// Writes `results` to `path` as a JSON array of objects with the keys name, value, unit,
// bound, ratio, higher_is_better, min, max, repetitions, bound_name, cpu_us, bound_cpu_us,
// arith_bound, arith_bound_min, arith_bound_max, arith_ratio, arith_bound_name,
// arith_bound_cpu_us (non-finite numbers are written as null). Written atomically (pserver/atomic_file.h), so a
// reader never sees a partial file.
// Returns kNotFound if the directory of `path` does not exist, kInvalidArgument if a string is
// not valid UTF-8, kUnavailable for any other I/O failure (permissions, full disk); the
// message names the path and the errno text. On failure the temporary file is removed and
// `path` is left as it was.
Status WriteJson(const std::vector<BenchResult>& results, const std::string& path);

}  // namespace pserver::bench
