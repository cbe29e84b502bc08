#include "apps/linear/job_stats.h"

#include <bit>

namespace pserver::linear {

Result<std::unique_ptr<JobStats>> JobStats::Create(Node& node, const std::string& prefix,
                                                   const std::vector<uint64_t>& features,
                                                   std::chrono::milliseconds timeout) {
  if (node.num_workers() > 62) return Status::InvalidArgument("linear models support at most 62 workers");
  std::unique_ptr<JobStats> js(new JobStats(node, timeout));
  TableSpec stats{.name = prefix + "_stats", .value_type = ValueType::kFloat64, .width = kWidth};
  PSERVER_ASSIGN_OR_RETURN(js->stats_table_, node.DeclareTable(stats, timeout));
  TableSpec presence{.name = prefix + "_presence", .value_type = ValueType::kInt64, .width = 1};
  PSERVER_ASSIGN_OR_RETURN(js->presence_table_, node.DeclareTable(presence, timeout));

  const uint32_t rank = node.rank().value;
  const uint32_t workers = node.num_workers();
  // Key r of the stats table (passes use keys from 1000 on): worker r's feature count.
  std::vector<double> mine(kWidth, 0.0);
  mine[0] = features.empty() ? 0.0 : static_cast<double>(features.back()) + 1;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, js->stats_.Push(js->stats_table_, std::vector<Key>{Key{rank}}, std::move(mine)));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  // Which workers hold each feature: bit r added by worker r.
  if (!features.empty()) {
    std::vector<int64_t> bits(features.size(), int64_t{1} << rank);
    PSERVER_ASSIGN_OR_RETURN(ts, js->presence_.Push(js->presence_table_, std::vector<Key>(features), std::move(bits)));
    PSERVER_RETURN_IF_ERROR(js->presence_.Wait(ts, timeout));
  }
  PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers, timeout));
  std::vector<Key> ranks(workers);
  for (uint32_t r = 0; r < workers; ++r) ranks[r] = r;
  SharedArray<double> counts;
  PSERVER_ASSIGN_OR_RETURN(ts, js->stats_.Pull(js->stats_table_, std::move(ranks), &counts));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  for (uint32_t r = 0; r < workers; ++r) {
    js->num_features_ = std::max(js->num_features_, static_cast<uint64_t>(counts[kWidth * r]));
  }
  js->owned_.assign(features.size(), false);
  if (!features.empty()) {
    SharedArray<int64_t> holders;
    PSERVER_ASSIGN_OR_RETURN(ts, js->presence_.Pull(js->presence_table_, std::vector<Key>(features), &holders));
    PSERVER_RETURN_IF_ERROR(js->presence_.Wait(ts, timeout));
    for (size_t j = 0; j < features.size(); ++j) {
      js->owned_[j] = std::countr_zero(static_cast<uint64_t>(holders[j])) == static_cast<int>(rank);
    }
  }
  return js;
}

Result<JobStats::Row> JobStats::Sum(int pass, const Row& mine, std::chrono::steady_clock::duration* waited) {
  const Key key = 1000 + static_cast<Key>(pass);
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts,
                           stats_.Push(stats_table_, std::vector<Key>{key}, std::vector<double>(mine.begin(), mine.end())));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  const auto start = std::chrono::steady_clock::now();
  PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
  if (waited) *waited += std::chrono::steady_clock::now() - start;
  SharedArray<double> sum;
  PSERVER_ASSIGN_OR_RETURN(ts, stats_.Pull(stats_table_, std::vector<Key>{key}, &sum));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  Row out{};
  for (uint32_t i = 0; i < kWidth && i < sum.size(); ++i) out[i] = sum[i];
  return out;
}

Result<PassReport> JobStats::EndPass(int pass, const Row& mine, std::chrono::steady_clock::time_point start,
                                     std::chrono::steady_clock::duration* waited) {
  PSERVER_ASSIGN_OR_RETURN(Row sum, Sum(pass, mine, waited));
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

Result<std::vector<std::pair<uint64_t, double>>> JobStats::CollectWeights(KVWorker<double>& kv, TableId table,
                                                                          uint32_t width) {
  std::vector<std::pair<uint64_t, double>> out;
  constexpr uint64_t kChunk = 1 << 20;
  for (uint64_t first = 0; first < num_features_; first += kChunk) {
    const uint64_t last = std::min(num_features_, first + kChunk);
    std::vector<Key> keys(last - first);
    for (uint64_t f = first; f < last; ++f) keys[f - first] = f;
    SharedArray<double> vals;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, std::move(keys), &vals));
    PSERVER_RETURN_IF_ERROR(kv.Wait(ts, timeout_));
    for (uint64_t f = first; f < last; ++f) {
      const double w = vals[width * (f - first)];
      if (w != 0) out.emplace_back(f, w);
    }
  }
  return out;
}

}  // namespace pserver::linear
