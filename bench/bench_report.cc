#include "bench_report.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "pserver/atomic_file.h"

namespace pserver::bench {
namespace {

bool PositiveFinite(double x) { return std::isfinite(x) && x > 0; }

// Fixed-point with a precision that suits the magnitude: 123456, 123.4, 1.23, 0.0123.
std::string FormatNumber(double x) {
  if (!std::isfinite(x)) return "-";
  const double a = std::fabs(x);
  if (a >= 1000) return fmt::format("{:.0f}", x);
  if (a >= 10) return fmt::format("{:.1f}", x);
  if (a >= 1 || a == 0) return fmt::format("{:.2f}", x);
  return fmt::format("{:.3g}", x);
}

}  // namespace

std::string SizeName(size_t bytes) {
  if (bytes >= (size_t{1} << 20)) return std::to_string(bytes >> 20) + "MiB";
  if (bytes >= (size_t{1} << 10)) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

Summary Summarize(std::vector<double> samples) {
  if (samples.empty()) return Summary{};
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  Summary s;
  s.min = samples.front();
  s.max = samples.back();
  s.median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  return s;
}

double Percentile(std::vector<double>& samples, double percent) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  percent = std::clamp(percent, 0.0, 100.0);
  const double rank = std::ceil(percent / 100.0 * static_cast<double>(samples.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return samples[std::min(index, samples.size() - 1)];
}

double ComputeRatio(double value, double bound, bool higher_is_better) {
  if (!PositiveFinite(value) || !PositiveFinite(bound)) return 0;
  return higher_is_better ? value / bound : bound / value;
}

BenchResult MakeBenchResult(std::string name, std::string unit, const std::vector<double>& reps,
                            double bound, std::string bound_name, bool higher_is_better) {
  const Summary s = Summarize(reps);
  BenchResult r;
  r.name = std::move(name);
  r.unit = std::move(unit);
  r.value = s.median;
  r.min = s.min;
  r.max = s.max;
  r.repetitions = static_cast<int>(reps.size());
  r.bound = bound;
  r.bound_name = std::move(bound_name);
  r.higher_is_better = higher_is_better;
  r.ratio = ComputeRatio(r.value, r.bound, higher_is_better);
  return r;
}

void SetArithmeticBound(BenchResult* result, const std::vector<double>& reps, std::string name, double cpu_us) {
  const Summary s = Summarize(reps);
  result->arith_bound = s.median;
  result->arith_bound_min = s.min;
  result->arith_bound_max = s.max;
  result->arith_bound_name = std::move(name);
  result->arith_bound_cpu_us = cpu_us;
  result->arith_ratio = ComputeRatio(result->value, s.median, result->higher_is_better);
}

BenchResult MakeTargetResult(std::string name, std::string unit, double value, double target) {
  BenchResult r = MakeBenchResult(std::move(name), std::move(unit), {value}, target, "target_max", false);
  r.ratio = ComputeRatio(value, target, true);  // value / target: <= 1 meets the target
  return r;
}

void PrintTable(const std::vector<BenchResult>& results, std::FILE* out) {
  static constexpr size_t kColumns = 11;
  using Row = std::array<std::string, kColumns>;
  std::vector<Row> rows;
  rows.reserve(results.size() + 1);
  rows.push_back({"name", "value", "unit", "bound", "ratio", "arith_bound", "arith_ratio", "range", "cpu_us/req",
                  "bound_cpu_us/req", "arith_cpu_us/req"});
  auto cpu = [](double us) { return PositiveFinite(us) ? fmt::format("{:.1f}", us) : std::string("-"); };
  auto number = [](double x) { return PositiveFinite(x) ? FormatNumber(x) : std::string("-"); };
  auto ratio = [](double x) { return PositiveFinite(x) ? fmt::format("{:.2f}x", x) : std::string("-"); };
  for (const BenchResult& r : results) {
    rows.push_back({r.name, FormatNumber(r.value), r.unit, number(r.bound), ratio(r.ratio), number(r.arith_bound),
                    ratio(r.arith_ratio), fmt::format("[{}, {}]", FormatNumber(r.min), FormatNumber(r.max)),
                    cpu(r.cpu_us), cpu(r.bound_cpu_us), cpu(r.arith_bound_cpu_us)});
  }
  std::array<size_t, kColumns> width{};
  for (const Row& row : rows) {
    for (size_t c = 0; c < kColumns; ++c) width[c] = std::max(width[c], row[c].size());
  }
  // Text columns (name, unit, range) align left, numbers right.
  constexpr std::array<bool, kColumns> kLeft = {true, false, true, false, false, false, false, true, false, false, false};
  for (const Row& row : rows) {
    std::string line;
    for (size_t c = 0; c < kColumns; ++c) {
      if (c > 0) line += "  ";
      line += kLeft[c] ? fmt::format("{:<{}}", row[c], width[c]) : fmt::format("{:>{}}", row[c], width[c]);
    }
    fmt::print(out, "{}\n", line);
  }
  std::fflush(out);
}

Status WriteJson(const std::vector<BenchResult>& results, const std::string& path) {
  std::string text;
  try {
    nlohmann::json array = nlohmann::json::array();
    for (const BenchResult& r : results) {
      array.push_back({{"name", r.name},
                       {"value", r.value},
                       {"unit", r.unit},
                       {"bound", r.bound},
                       {"ratio", r.ratio},
                       {"higher_is_better", r.higher_is_better},
                       {"min", r.min},
                       {"max", r.max},
                       {"repetitions", r.repetitions},
                       {"bound_name", r.bound_name},
                       {"cpu_us", r.cpu_us},
                       {"bound_cpu_us", r.bound_cpu_us},
                       {"arith_bound", r.arith_bound},
                       {"arith_bound_min", r.arith_bound_min},
                       {"arith_bound_max", r.arith_bound_max},
                       {"arith_ratio", r.arith_ratio},
                       {"arith_bound_name", r.arith_bound_name},
                       {"arith_bound_cpu_us", r.arith_bound_cpu_us}});
    }
    text = array.dump(2);
    text += '\n';
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(
        fmt::format("cannot encode benchmark results for '{}': {}", path, e.what()));
  }
  return WriteFileAtomically(path, text);
}

}  // namespace pserver::bench
