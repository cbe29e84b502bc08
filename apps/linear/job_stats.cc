#include "apps/linear/job_stats.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>

namespace pserver::linear {
namespace {

// A stats row: the pass figures, then which workers added it in (bit r of the 62-bit rank set,
// split in two halves so that each sum stays an exact double).
constexpr uint32_t kStatsWidth = JobStats::kFigures + 2;
constexpr uint32_t kMaxWorkers = 62;
constexpr Key kPassKeyBase = 1000;  // stats keys: worker r's feature count at r, pass p at 1000 + p

// `<prefix>_model`: worker r's row at kRankBase * r holds (1, number of weights it handed in),
// its weights follow at kRankBase * r + 1 + i as (feature, weight bits).
constexpr Key kRankBase = Key{1} << 40;
constexpr uint64_t kChunk = 1 << 20;  // keys per pull when collecting the model

std::array<double, 2> RankBits(uint32_t rank) {
  if (rank < 31) return {static_cast<double>(uint64_t{1} << rank), 0.0};
  return {0.0, static_cast<double>(uint64_t{1} << (rank - 31))};
}

uint64_t RanksOf(double low, double high) {
  return static_cast<uint64_t>(low) | (static_cast<uint64_t>(high) << 31);
}

}  // namespace

Result<std::unique_ptr<JobStats>> JobStats::Create(Node& node, const std::string& prefix,
                                                   const std::vector<uint64_t>& features, uint64_t rows,
                                                   std::chrono::milliseconds timeout, DataDescriber describe_data) {
  if (node.num_workers() > kMaxWorkers) {
    return Status::InvalidArgument(fmt::format("linear models support at most {} workers", kMaxWorkers));
  }
  std::unique_ptr<JobStats> js(new JobStats(node, timeout, std::move(describe_data)));
  js->features_ = features;
  TableSpec stats{.name = prefix + "_stats", .value_type = ValueType::kFloat64, .width = kStatsWidth};
  PSERVER_ASSIGN_OR_RETURN(js->stats_table_, node.DeclareTable(stats, timeout));
  TableSpec presence{.name = prefix + "_presence", .value_type = ValueType::kInt64, .width = 1};
  PSERVER_ASSIGN_OR_RETURN(js->presence_table_, node.DeclareTable(presence, timeout));
  TableSpec model{.name = prefix + "_model", .value_type = ValueType::kInt64, .width = 2};
  PSERVER_ASSIGN_OR_RETURN(js->model_table_, node.DeclareTable(model, timeout));

  const uint32_t rank = node.rank().value;
  const uint32_t workers = node.num_workers();
  // Key r of the stats table: worker r's feature count (max id + 1, which fits 64 bits because
  // a Dataset's ids are at most 2^64 - 2) and its row count, each in two exact 32-bit halves,
  // and its rank bits.
  const uint64_t count = features.empty() ? 0 : features.back() + 1;
  std::vector<double> mine(kStatsWidth, 0.0);
  mine[0] = static_cast<double>(count >> 32);
  mine[1] = static_cast<double>(count & 0xffffffffu);
  mine[2] = static_cast<double>(rows >> 32);
  mine[3] = static_cast<double>(rows & 0xffffffffu);
  const auto bits = RankBits(rank);
  mine[kFigures] = bits[0];
  mine[kFigures + 1] = bits[1];
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, js->stats_.Push(js->stats_table_, std::vector<Key>{Key{rank}}, std::move(mine)));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  // Which workers hold each feature: bit r added by worker r.
  if (!features.empty()) {
    std::vector<int64_t> held(features.size(), int64_t{1} << rank);
    PSERVER_ASSIGN_OR_RETURN(ts, js->ints_.Push(js->presence_table_, std::vector<Key>(features), std::move(held)));
    PSERVER_RETURN_IF_ERROR(js->ints_.Wait(ts, timeout));
  }
  PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers, timeout));
  std::vector<Key> ranks(workers);
  for (uint32_t r = 0; r < workers; ++r) ranks[r] = r;
  SharedArray<double> counts;
  PSERVER_ASSIGN_OR_RETURN(ts, js->stats_.Pull(js->stats_table_, std::move(ranks), &counts));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  uint64_t seen = 0;
  for (uint32_t r = 0; r < workers; ++r) {
    const double* row = &counts[kStatsWidth * r];
    const uint64_t n = (static_cast<uint64_t>(row[0]) << 32) | static_cast<uint64_t>(row[1]);
    js->num_features_ = std::max(js->num_features_, n);
    js->num_rows_ += (static_cast<uint64_t>(row[2]) << 32) | static_cast<uint64_t>(row[3]);
    seen |= RanksOf(row[kFigures], row[kFigures + 1]);
  }
  PSERVER_RETURN_IF_ERROR(js->CheckEveryWorker(seen, "before training started"));
  js->owned_.assign(features.size(), false);
  if (!features.empty()) {
    SharedArray<int64_t> holders;
    PSERVER_ASSIGN_OR_RETURN(ts, js->ints_.Pull(js->presence_table_, std::vector<Key>(features), &holders));
    PSERVER_RETURN_IF_ERROR(js->ints_.Wait(ts, timeout));
    for (size_t j = 0; j < features.size(); ++j) {
      js->owned_[j] = std::countr_zero(static_cast<uint64_t>(holders[j])) == static_cast<int>(rank);
    }
  }
  return js;
}

Status JobStats::CheckEveryWorker(uint64_t ranks_seen, const std::string& when) const {
  const uint32_t workers = node_.num_workers();
  const uint64_t all = (uint64_t{1} << workers) - 1;
  if (ranks_seen > all) {
    // A worker added its row twice (the sums carried into other ranks' bits): the figures are
    // not the job's.
    return Status::Internal(fmt::format("the workers' contributions {} do not add up: {:#x} is more than every worker ({:#x})",
                                        when, ranks_seen, all));
  }
  std::vector<std::string> lost;
  for (uint32_t r = 0; r < workers; ++r) {
    if (ranks_seen >> r & 1) continue;
    std::string data = describe_data_ ? describe_data_(r) : std::string();
    lost.push_back(data.empty() ? fmt::format("worker {}", r) : fmt::format("worker {} (data: {})", r, data));
  }
  if (lost.empty()) return Status::Ok();
  return Status::Unavailable(fmt::format(
      "{} of {} workers left the job {}: {}; their data is not in the model, so training stops here",
      lost.size(), workers, when, fmt::join(lost, ", ")));
}

Result<PassReport> JobStats::EndPass(int pass, const Row& mine, std::chrono::steady_clock::time_point start,
                                     std::chrono::steady_clock::duration* waited) {
  const Key key = kPassKeyBase + static_cast<Key>(pass);
  std::vector<double> row(mine.begin(), mine.end());
  const auto bits = RankBits(node_.rank().value);
  row.push_back(bits[0]);
  row.push_back(bits[1]);
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, stats_.Push(stats_table_, std::vector<Key>{key}, std::move(row)));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  const auto barrier_start = std::chrono::steady_clock::now();
  PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
  if (waited) *waited += std::chrono::steady_clock::now() - barrier_start;
  SharedArray<double> sum;
  PSERVER_ASSIGN_OR_RETURN(ts, stats_.Pull(stats_table_, std::vector<Key>{key}, &sum));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  if (sum.size() != kStatsWidth) {
    return Status::Internal(fmt::format("pass {}: the stats row has {} values, not {}", pass, sum.size(), kStatsWidth));
  }
  PSERVER_RETURN_IF_ERROR(
      CheckEveryWorker(RanksOf(sum[kFigures], sum[kFigures + 1]), fmt::format("during pass {}", pass)));
  PassReport r;
  r.pass = pass;
  r.objective = sum[0] + sum[1];
  r.nnz = static_cast<uint64_t>(sum[2]);
  r.active_features = static_cast<uint64_t>(sum[3]);
  r.bytes_sent = static_cast<uint64_t>(sum[4]);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.idle_fraction = r.seconds > 0 ? sum[5] / (node_.num_workers() * r.seconds) : 0;
  return r;
}

std::vector<uint64_t> JobStats::OwnedFeatures() const {
  std::vector<uint64_t> out;
  for (size_t j = 0; j < features_.size(); ++j) {
    if (owned_[j]) out.push_back(features_[j]);
  }
  return out;
}

Result<std::vector<std::pair<uint64_t, double>>> JobStats::CollectWeights(KVWorker<double>& kv, TableId table,
                                                                          uint32_t width) {
  // This worker's share: the non-zero weights of the features it owns (every feature of the
  // data is owned by exactly one worker; a feature in no worker's data never moved from 0).
  const std::vector<uint64_t> owned = OwnedFeatures();
  // Each chunk's non-zero weights are handed in as they are pulled; the head row with their
  // count goes last, so that a head row means every weight before it was handed in.
  const Key head = kRankBase * node_.rank().value;
  uint64_t handed_in = 0;
  for (size_t first = 0; first < owned.size(); first += kChunk) {
    const size_t last = std::min(owned.size(), first + kChunk);
    SharedArray<double> w;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, std::vector<Key>(owned.begin() + first, owned.begin() + last), &w));
    PSERVER_RETURN_IF_ERROR(kv.Wait(ts, timeout_));
    std::vector<Key> keys;
    std::vector<int64_t> vals;
    for (size_t j = first; j < last; ++j) {
      const double weight = w[width * (j - first)];
      if (weight == 0) continue;
      keys.push_back(head + 1 + handed_in++);
      vals.push_back(static_cast<int64_t>(owned[j]));
      vals.push_back(std::bit_cast<int64_t>(weight));
    }
    if (keys.empty()) continue;
    PSERVER_ASSIGN_OR_RETURN(ts, ints_.Push(model_table_, std::move(keys), std::move(vals)));
    PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
  }
  PSERVER_ASSIGN_OR_RETURN(
      Timestamp ts, ints_.Push(model_table_, std::vector<Key>{head}, std::vector<int64_t>{1, static_cast<int64_t>(handed_in)}));
  PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
  PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
  std::vector<std::pair<uint64_t, double>> out;
  if (node_.rank().value != 0) return out;

  const uint32_t workers = node_.num_workers();
  std::vector<Key> heads(workers);
  for (uint32_t r = 0; r < workers; ++r) heads[r] = kRankBase * r;
  SharedArray<int64_t> counts;
  PSERVER_ASSIGN_OR_RETURN(ts, ints_.Pull(model_table_, std::move(heads), &counts));
  PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
  uint64_t seen = 0;
  for (uint32_t r = 0; r < workers; ++r) {
    if (counts[2 * r] == 1) seen |= uint64_t{1} << r;
  }
  PSERVER_RETURN_IF_ERROR(CheckEveryWorker(seen, "before handing in their weights"));
  for (uint32_t r = 0; r < workers; ++r) {
    const uint64_t n = static_cast<uint64_t>(counts[2 * r + 1]);
    for (uint64_t first = 0; first < n; first += kChunk) {
      const uint64_t last = std::min(n, first + kChunk);
      std::vector<Key> at(last - first);
      for (uint64_t i = first; i < last; ++i) at[i - first] = kRankBase * r + 1 + i;
      SharedArray<int64_t> got;
      PSERVER_ASSIGN_OR_RETURN(ts, ints_.Pull(model_table_, std::move(at), &got));
      PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
      for (uint64_t i = 0; i < last - first; ++i) {
        out.emplace_back(static_cast<uint64_t>(got[2 * i]), std::bit_cast<double>(got[2 * i + 1]));
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace pserver::linear
