#include "apps/linear/job_stats.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <string>
#include <vector>

#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace pserver::linear {
namespace {

// A stats row: the figures, the worker's wire bytes sent and received in the pass (kWire, kWire
// + 1), then which shares the figures cover (bit r: share r) and which workers added them in
// (bit r: worker r), each of the 62-bit sets split in two halves so that every sum stays an exact
// double.
constexpr uint32_t kWire = JobStats::kFigures;
constexpr uint32_t kBits = kWire + 2;
constexpr uint32_t kStatsWidth = kBits + 4;
constexpr uint32_t kMaxWorkers = 62;
// Stats keys: share r's feature count, rows and first worker at r; attempt a of pass p at
// kPassKeyBase + p * kMaxAttempts + a (a pass is done again each time shares were lost).
constexpr Key kPassKeyBase = 1000;
constexpr uint32_t kMaxAttempts = 64;
// MaxOverWorkers call c: worker r's value at kMaxKeyBase + c * 64 + r.
constexpr Key kMaxKeyBase = Key{1} << 39;

// `<prefix>_model`: in attempt a of the collection, worker r's row at kRankBase * (a * 64 + r)
// holds (the shares it holds, number of weights it handed in), its weights follow at that key
// + 1 + i as (feature, weight bits).
constexpr Key kRankBase = Key{1} << 40;
constexpr uint64_t kChunk = 1 << 20;  // keys per pull when collecting the model

void AppendBits(std::vector<double>& row, uint64_t bits) {
  row.push_back(static_cast<double>(bits & 0x7fffffffu));
  row.push_back(static_cast<double>(bits >> 31));
}

uint64_t BitsOf(double low, double high) {
  return static_cast<uint64_t>(low) | (static_cast<uint64_t>(high) << 31);
}

Key HeadKey(uint32_t attempt, uint32_t rank) { return kRankBase * (Key{attempt} * 64 + rank); }

}  // namespace

Result<std::unique_ptr<JobStats>> JobStats::Create(Node& node, const std::string& prefix,
                                                   const std::vector<uint64_t>& features, uint64_t rows,
                                                   uint64_t nonzeros, std::chrono::milliseconds timeout,
                                                   DataDescriber describe_data,
                                                   Adopter adopt) {
  if (node.num_workers() > kMaxWorkers) {
    return Status::InvalidArgument(fmt::format("linear models support at most {} workers", kMaxWorkers));
  }
  std::unique_ptr<JobStats> js(new JobStats(node, timeout, std::move(describe_data), std::move(adopt)));
  TableSpec stats{.name = prefix + "_stats", .value_type = ValueType::kFloat64, .width = kStatsWidth, .checkpointed = false};
  PSERVER_ASSIGN_OR_RETURN(js->stats_table_, node.DeclareTable(stats, timeout));
  TableSpec presence{.name = prefix + "_presence", .value_type = ValueType::kInt64, .width = 1, .checkpointed = false};
  PSERVER_ASSIGN_OR_RETURN(js->presence_table_, node.DeclareTable(presence, timeout));
  TableSpec model{.name = prefix + "_model", .value_type = ValueType::kInt64, .width = 2, .checkpointed = false};
  PSERVER_ASSIGN_OR_RETURN(js->model_table_, node.DeclareTable(model, timeout));

  const uint32_t rank = node.rank().value;
  const uint32_t workers = node.num_workers();
  js->workers_ = workers;
  js->shares_ = uint64_t{1} << rank;
  // Key r of the stats table: share r's feature count (max id + 1, which fits 64 bits because
  // a Dataset's ids are at most 2^64 - 2) and its row count, each in two exact 32-bit halves,
  // the node id of its worker, its non-zero count (two halves), and the share and worker bits.
  // Which shares hold each feature: bit r added by worker r -- first, so that a share counted in
  // the stats row below has its features marked (a worker lost between the two pushes is
  // missing from the row too).
  if (!features.empty()) {
    std::vector<int64_t> held(features.size(), int64_t{1} << rank);
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, js->ints_.Push(js->presence_table_, std::vector<Key>(features), std::move(held)));
    PSERVER_RETURN_IF_ERROR(js->ints_.Wait(ts, timeout));
  }
  const uint64_t count = features.empty() ? 0 : features.back() + 1;
  std::vector<double> mine(kBits, 0.0);
  static_assert(kFigures >= 7);
  mine[0] = static_cast<double>(count >> 32);
  mine[1] = static_cast<double>(count & 0xffffffffu);
  mine[2] = static_cast<double>(rows >> 32);
  mine[3] = static_cast<double>(rows & 0xffffffffu);
  mine[4] = static_cast<double>(node.id().value);
  mine[5] = static_cast<double>(nonzeros >> 32);
  mine[6] = static_cast<double>(nonzeros & 0xffffffffu);
  AppendBits(mine, js->shares_);
  AppendBits(mine, js->shares_);
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, js->stats_.Push(js->stats_table_, std::vector<Key>{Key{rank}}, std::move(mine)));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers, timeout));
  std::vector<Key> ranks(workers);
  for (uint32_t r = 0; r < workers; ++r) ranks[r] = r;
  SharedArray<double> counts;
  PSERVER_ASSIGN_OR_RETURN(ts, js->stats_.Pull(js->stats_table_, std::move(ranks), &counts));
  PSERVER_RETURN_IF_ERROR(js->stats_.Wait(ts, timeout));
  uint64_t seen = 0;
  js->node_ids_.resize(workers);
  for (uint32_t r = 0; r < workers; ++r) {
    const double* row = &counts[kStatsWidth * r];
    const uint64_t n = (static_cast<uint64_t>(row[0]) << 32) | static_cast<uint64_t>(row[1]);
    js->num_features_ = std::max(js->num_features_, n);
    js->num_rows_ += (static_cast<uint64_t>(row[2]) << 32) | static_cast<uint64_t>(row[3]);
    js->num_nonzeros_ += (static_cast<uint64_t>(row[5]) << 32) | static_cast<uint64_t>(row[6]);
    js->node_ids_[r] = NodeId(static_cast<uint32_t>(row[4]));
    seen += BitsOf(row[kBits], row[kBits + 1]);
  }
  PSERVER_RETURN_IF_ERROR(js->CheckEveryWorker(seen, "before training started"));
  PSERVER_RETURN_IF_ERROR(js->SetFeatures(features));
  return js;
}

Status JobStats::SetFeatures(std::vector<uint64_t> features) {
  features_ = std::move(features);
  owned_.assign(features_.size(), false);
  if (features_.empty()) return Status::Ok();
  SharedArray<int64_t> holders;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, ints_.Pull(presence_table_, std::vector<Key>(features_), &holders));
  PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
  for (size_t j = 0; j < features_.size(); ++j) {
    const auto holders_of = static_cast<uint64_t>(holders[j]);
    if (holders_of == 0 || holders_of >= (uint64_t{1} << workers_)) {
      // Every share's features were marked before its stats row (Create): never a guess.
      return Status::Internal(fmt::format("feature {}: its holders {:#x} are not a set of the job's {} shares",
                                          features_[j], holders_of, workers_));
    }
    owned_[j] = (shares_ >> std::countr_zero(holders_of)) & 1;
  }
  return Status::Ok();
}

Status JobStats::CheckEveryWorker(uint64_t shares_seen, const std::string& when) const {
  const uint64_t all = (uint64_t{1} << workers_) - 1;
  if (shares_seen > all) {
    // A share was added twice (the sums carried into other shares' bits): the figures are
    // not the job's.
    return Status::Internal(fmt::format("the workers' contributions {} do not add up: {:#x} is more than every share ({:#x})",
                                        when, shares_seen, all));
  }
  std::vector<std::string> lost;
  for (uint32_t r = 0; r < workers_; ++r) {
    if (shares_seen >> r & 1) continue;
    std::string data = describe_data_ ? describe_data_(r) : std::string();
    lost.push_back(data.empty() ? fmt::format("worker {}", r) : fmt::format("worker {} (data: {})", r, data));
  }
  if (lost.empty()) return Status::Ok();
  return Status::Unavailable(fmt::format(
      "{} of {} workers left the job {}: {}; their data is not in the model, so training stops here",
      lost.size(), workers_, when, fmt::join(lost, ", ")));
}

Result<bool> JobStats::TakeOverLost(uint64_t shares_seen, uint64_t workers_seen, const std::string& when) {
  const uint64_t all = (uint64_t{1} << workers_) - 1;
  if (shares_seen == all) {
    lead_ = static_cast<uint32_t>(std::countr_zero(workers_seen));
    return true;
  }
  if (!adopt_ || shares_seen > all) {
    PSERVER_RETURN_IF_ERROR(CheckEveryWorker(shares_seen, when));
  }
  const uint32_t rank = node_.rank().value;
  if (!(workers_seen >> rank & 1)) {
    return Status::Internal(fmt::format("worker {} is missing from the workers that contributed {}", rank, when));
  }
  // Every live worker sees the same sums, so they all hand the missing shares out alike: the
  // i-th missing share to the (i mod live)-th live worker.
  std::vector<uint32_t> live;
  for (uint32_t r = 0; r < workers_; ++r) {
    if (workers_seen >> r & 1) live.push_back(r);
  }
  std::vector<uint32_t> mine;
  size_t turn = 0;
  for (uint32_t s = 0; s < workers_; ++s) {
    if (shares_seen >> s & 1) continue;
    if (live[turn++ % live.size()] == rank) mine.push_back(s);
  }
  if (mine.empty()) return false;
  PSERVER_ASSIGN_OR_RETURN(std::vector<uint64_t> features, adopt_(mine));
  for (uint32_t s : mine) {
    PSERVER_RETURN_IF_ERROR(node_.TakeOver(node_ids_[s], timeout_));
    shares_ |= uint64_t{1} << s;
  }
  PSERVER_RETURN_IF_ERROR(SetFeatures(std::move(features)));
  return false;
}

Result<PassReport> JobStats::EndPass(int pass, const std::function<Result<Row>()>& figures,
                                     std::chrono::steady_clock::time_point start,
                                     std::chrono::steady_clock::duration* waited) {
  for (uint32_t attempt = 0;; ++attempt) {
    if (attempt == kMaxAttempts) {
      return Status::Internal(fmt::format("pass {}: shares were still lost after {} attempts", pass, kMaxAttempts));
    }
    const Key key = kPassKeyBase + static_cast<Key>(pass) * kMaxAttempts + attempt;
    PSERVER_ASSIGN_OR_RETURN(const Row mine, figures());
    std::vector<double> row(mine.begin(), mine.end());
    // Bytes go in as this pass's, so that a lost worker's earlier ones stay in the total.
    row[4] -= bytes_reported_;
    const Node::Traffic traffic = node_.traffic();
    row.push_back(static_cast<double>(traffic.bytes_sent - wire_reported_.bytes_sent));
    row.push_back(static_cast<double>(traffic.bytes_received - wire_reported_.bytes_received));
    AppendBits(row, shares_);
    AppendBits(row, uint64_t{1} << node_.rank().value);
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
    const uint64_t workers_seen = BitsOf(sum[kBits + 2], sum[kBits + 3]);
    PSERVER_ASSIGN_OR_RETURN(bool complete, TakeOverLost(BitsOf(sum[kBits], sum[kBits + 1]), workers_seen,
                                                         fmt::format("during pass {}", pass)));
    if (!complete) continue;
    PassReport r;
    r.pass = pass;
    r.objective = sum[0] + sum[1];
    r.nnz = static_cast<uint64_t>(sum[2]);
    r.active_features = static_cast<uint64_t>(sum[3]);
    bytes_reported_ = mine[4];
    bytes_total_ += sum[4];
    r.bytes_sent = static_cast<uint64_t>(bytes_total_);
    wire_reported_ = traffic;
    wire_sent_total_ += sum[kWire];
    wire_received_total_ += sum[kWire + 1];
    r.wire_bytes_sent = static_cast<uint64_t>(wire_sent_total_);
    r.wire_bytes_received = static_cast<uint64_t>(wire_received_total_);
    r.rows = static_cast<uint64_t>(sum[6]);
    r.skipped_features = static_cast<uint64_t>(sum[7]);
    r.dual_entropy = sum[8];
    r.dual_penalty = sum[9];
    r.workers = static_cast<uint32_t>(std::popcount(workers_seen));
    r.lead = lead_;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.idle_fraction = r.seconds > 0 ? sum[5] / (r.workers * r.seconds) : 0;
    return r;
  }
}

Result<double> JobStats::MaxOverWorkers(double mine) {
  const Key base = kMaxKeyBase + max_calls_++ * 64;
  std::vector<double> row(kStatsWidth, 0.0);
  row[0] = mine;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, stats_.Push(stats_table_, std::vector<Key>{base + node_.rank().value}, std::move(row)));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
  std::vector<Key> keys(workers_);
  for (uint32_t r = 0; r < workers_; ++r) keys[r] = base + r;
  SharedArray<double> rows;
  PSERVER_ASSIGN_OR_RETURN(ts, stats_.Pull(stats_table_, std::move(keys), &rows));
  PSERVER_RETURN_IF_ERROR(stats_.Wait(ts, timeout_));
  double most = mine;
  for (uint32_t r = 0; r < workers_; ++r) most = std::max(most, rows[size_t{r} * kStatsWidth]);
  return most;
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
  for (uint32_t attempt = 0; attempt < kMaxAttempts; ++attempt) {
    // This worker's share: the non-zero weights of the features it owns (every feature of the
    // data is owned by exactly one worker; a feature in no worker's data never moved from 0).
    const std::vector<uint64_t> owned = OwnedFeatures();
    // Each chunk's non-zero weights are handed in as they are pulled; the head row with their
    // count goes last, so that a head row means every weight before it was handed in.
    const Key head = HeadKey(attempt, node_.rank().value);
    uint64_t handed_in = 0;
    for (size_t first = 0; first < owned.size(); first += kChunk) {
      const size_t last = std::min(owned.size(), first + kChunk);
      SharedArray<double> w;
      RequestOptions exact;
      exact.exact = true;  // the model as the servers hold it, past any lossy filter
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, std::vector<Key>(owned.begin() + first, owned.begin() + last), &w, exact));
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
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts2, ints_.Push(model_table_, std::move(keys), std::move(vals)));
      PSERVER_RETURN_IF_ERROR(ints_.Wait(ts2, timeout_));
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, ints_.Push(model_table_, std::vector<Key>{head},
                                                      std::vector<int64_t>{static_cast<int64_t>(shares_),
                                                                           static_cast<int64_t>(handed_in)}));
    PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
    PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
    // Every worker reads the heads, so that all of them see the same lost shares, if any.
    std::vector<Key> heads(workers_);
    for (uint32_t r = 0; r < workers_; ++r) heads[r] = HeadKey(attempt, r);
    SharedArray<int64_t> counts;
    PSERVER_ASSIGN_OR_RETURN(ts, ints_.Pull(model_table_, std::move(heads), &counts));
    PSERVER_RETURN_IF_ERROR(ints_.Wait(ts, timeout_));
    uint64_t shares_seen = 0, workers_seen = 0;
    for (uint32_t r = 0; r < workers_; ++r) {
      if (counts[2 * r] == 0) continue;
      shares_seen += static_cast<uint64_t>(counts[2 * r]);
      workers_seen |= uint64_t{1} << r;
    }
    PSERVER_ASSIGN_OR_RETURN(bool complete, TakeOverLost(shares_seen, workers_seen, "before handing in their weights"));
    if (!complete) continue;
    std::vector<std::pair<uint64_t, double>> out;
    if (!lead()) return out;
    for (uint32_t r = 0; r < workers_; ++r) {
      const uint64_t n = static_cast<uint64_t>(counts[2 * r + 1]);
      for (uint64_t first = 0; first < n; first += kChunk) {
        const uint64_t last = std::min(n, first + kChunk);
        std::vector<Key> at(last - first);
        for (uint64_t i = first; i < last; ++i) at[i - first] = HeadKey(attempt, r) + 1 + i;
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
  return Status::Internal(fmt::format("collecting the model: shares were still lost after {} attempts", kMaxAttempts));
}

std::function<void(const PassReport&)> WithPassMetrics(Node& node, std::function<void(const PassReport&)> on_pass) {
  prometheus::Registry* registry = node.metrics();
  if (registry == nullptr) return on_pass;
  auto gauge = [registry](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add({});
  };
  struct Gauges {
    prometheus::Gauge *pass, *objective, *nnz, *gap, *active, *seconds;
  };
  const Gauges g{gauge("pserver_train_pass", "Training passes done (1-based; 0 before the first ends)."),
                 gauge("pserver_train_objective", "The objective after the last pass, over all workers' rows."),
                 gauge("pserver_train_nnz", "Non-zero weights of the model after the last pass."),
                 gauge("pserver_train_duality_gap", "The solver's relative duality gap after the last pass (NaN: none)."),
                 gauge("pserver_train_active_features", "Features the last pass computed (over all workers)."),
                 gauge("pserver_train_seconds", "Seconds from the start of training to the end of the last pass.")};
  return [g, on_pass = std::move(on_pass)](const PassReport& r) {
    g.pass->Set(r.pass);
    g.objective->Set(r.objective);
    g.nnz->Set(static_cast<double>(r.nnz));
    g.gap->Set(r.gap);
    g.active->Set(static_cast<double>(r.active_features));
    g.seconds->Set(r.seconds);
    if (on_pass) on_pass(r);
  };
}

}  // namespace pserver::linear
