#include "apps/linear/dbpg.h"

#include <absl/container/flat_hash_map.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <string>

#include "apps/linear/duality_gap.h"
#include "apps/linear/job_stats.h"
#include "apps/linear/logistic.h"
#include "pserver/kv_worker.h"
#include "pserver/table.h"
#include "pserver/updater.h"

namespace pserver::linear {
namespace {

using Clock = std::chrono::steady_clock;


// The worker's rows by feature (compressed sparse columns), features in ascending id order.
struct Columns {
  std::vector<uint64_t> ids;       // local feature ids, sorted
  std::vector<uint64_t> offsets;   // ids.size() + 1
  std::vector<uint32_t> rows;
  std::vector<float> vals;
};

// Fills `c` from the rows of `d`, given where each column starts: `next(f)` is the position
// the next non-zero of feature f goes to (moved on by one each time).
template <typename NextOf>
void ScatterRows(const Dataset& d, NextOf&& next, Columns& c) {
  c.rows.resize(d.feature_ids().size());
  c.vals.resize(d.feature_ids().size());
  for (uint64_t i = 0; i + 1 < d.offsets().size(); ++i) {
    for (uint64_t k = d.offsets()[i]; k < d.offsets()[i + 1]; ++k) {
      uint64_t& pos = next(d.feature_ids()[k]);
      c.rows[pos] = static_cast<uint32_t>(i);
      c.vals[pos] = d.values()[k];
      ++pos;
    }
  }
}

// Ids up to this many per non-zero (plus 2^20) are counted in an array indexed by id (libsvm
// files number their features from 1), which then costs at most 8 bytes a non-zero for the
// transposition (the columns themselves take 8); larger ones (hashed ids) in a hash map. Both
// replace two std::unordered_map lookups per non-zero, which made most of pass 1 on 10 M rows of
// 1 M features (measured: pass 1 from the data cache 30.5-31.0 s before, 19.3-19.6 s after).
constexpr uint64_t kDenseIdsPerNonzero = 1;

Columns ToColumns(const Dataset& d) {
  Columns c;
  const std::vector<uint64_t>& features = d.feature_ids();
  const uint64_t max_id = features.empty() ? 0 : *std::max_element(features.begin(), features.end());
  if (max_id < kDenseIdsPerNonzero * features.size() + (uint64_t{1} << 20)) {
    std::vector<uint64_t> next(max_id + 1, 0);  // the count of each id, then its column's next position
    for (uint64_t f : features) ++next[f];
    c.offsets.push_back(0);
    for (uint64_t f = 0; f <= max_id; ++f) {
      if (next[f] == 0) continue;
      c.ids.push_back(f);
      const uint64_t count = next[f];
      next[f] = c.offsets.back();
      c.offsets.push_back(c.offsets.back() + count);
    }
    ScatterRows(d, [&](uint64_t f) -> uint64_t& { return next[f]; }, c);
    return c;
  }
  absl::flat_hash_map<uint64_t, uint64_t> next;  // as above
  for (uint64_t f : features) ++next[f];
  c.ids.reserve(next.size());
  for (const auto& [f, count] : next) c.ids.push_back(f);
  std::sort(c.ids.begin(), c.ids.end());
  c.offsets.assign(c.ids.size() + 1, 0);
  for (size_t j = 0; j < c.ids.size(); ++j) {
    uint64_t& slot = next[c.ids[j]];
    c.offsets[j + 1] = c.offsets[j] + slot;
    slot = c.offsets[j];
  }
  ScatterRows(d, [&](uint64_t f) -> uint64_t& { return next[f]; }, c);
  return c;
}

// A pull of one iteration's block, in flight.
struct InFlight {
  int64_t iteration = 0;
  std::vector<uint32_t> local;  // local column of each pulled key
  SharedArray<double> vals;     // (w, G) per key
  Timestamp ts;
};

class Trainer {
 public:
  Trainer(Node& node, const Dataset& data, const DbpgOptions& o)
      : node_(node), data_(&data), o_(o), kv_(node) {}

  Result<DbpgResult> Run(const std::function<void(const PassReport&)>& on_pass);

 private:
  Status Setup();
  // The blocks and the per-row and per-column state of the rows in data_ (columns cols_), from
  // zero.
  void BuildLocal();
  // Takes over `shares` of lost workers (JobStats' Adopter): adds their rows, pulls the current
  // weights of every local feature and computes the margins from them.
  Result<std::vector<uint64_t>> Adopt(const std::vector<uint32_t>& shares);
  // Sets the weights, margins and KKT verdicts of the local columns from the weight table
  // (weights and full gradients as every worker's margins hold them: between passes).
  Status PullWeights();
  // Writes the trust regions of the features this worker owns to the trust table, and waits
  // for every worker's (before a checkpoint); reads those of its features back (on resume).
  Status PushTrust();
  Status PullTrust();
  JobStats::Row Figures() const;
  Status StartIteration(int64_t t);
  Status FinishPull(InFlight& p);
  Status DrainUpTo(int64_t last);  // completes every pull of an iteration <= last
  Result<PassReport> EndPass(int pass);
  Status Wait(Timestamp ts) {
    const auto start = Clock::now();
    Status s = kv_.Wait(ts, o_.wait_timeout);
    idle_ += Clock::now() - start;
    return s;
  }

  Node& node_;
  const Dataset* data_;  // the caller's rows, or adopted_
  Dataset adopted_;      // the caller's rows and those of the shares taken over
  const DbpgOptions o_;
  KVWorker<double> kv_;
  TableId w_table_;
  TableId trust_table_;
  std::unique_ptr<JobStats> stats_;
  std::unique_ptr<PassCheckpoints> checkpoints_;

  Columns cols_;
  uint64_t num_features_ = 0;
  uint32_t blocks_ = 0;  // feature blocks per pass (options.num_blocks, or BlocksFor the data)
  std::vector<uint64_t> block_begin_;  // local column where each block starts (+ end)
  std::vector<double> margin_;         // <x_i, w> per local row
  std::vector<double> weight_;         // current weight per local column
  std::vector<bool> active_;           // not filtered out by the KKT filter
  std::vector<bool> next_active_;
  std::vector<double> trust_;          // per local column: its trust region (the servers' Delta)
  std::vector<double> last_step_;      // per local column: the step of its last iteration
  std::vector<double> grad_;           // per local column: the full gradient of its last iteration
  std::vector<double> d_, h_, s_;      // per row: loss derivative, curvature bound, block row |x| sum
  std::vector<double> reach_;          // per row: how far the steps in flight may move its margin
  std::vector<int64_t> stamp_;         // per row: iteration + 1 whose d_, h_ it holds
  std::deque<InFlight> inflight_;
  uint64_t bytes_sent_ = 0;
  Clock::time_point start_;
  Clock::duration idle_{};
  uint64_t active_this_pass_ = 0;
};

Status Trainer::Setup() {
  if (o_.l1 < 0 || o_.l2 < 0) return Status::InvalidArgument("l1 and l2 must be >= 0");
  if (o_.tau < 0) return Status::InvalidArgument("tau must be >= 0");
  // The built-in "prox" rule in its gradient layout: a row is (w, G), a push (g, u). The
  // objective's l2 |w|^2 is the rule's (l2/2) x^2 with twice the weight.
  TableSpec w{.name = o_.table_prefix + "_w", .value_type = ValueType::kFloat64, .width = 2};
  w.updater = {.name = o_.rule,
               .params = {{"l1", o_.l1},
                          {"l2", 2 * o_.l2},
                          {"delta", o_.trust_region},
                          {"delta_min", o_.trust_region_min},
                          {"adaptive", 1},
                          {"gradient", 1}}};
  w.push_arity = 1;
  w.filters = o_.filters;
  PSERVER_ASSIGN_OR_RETURN(w_table_, node_.DeclareTable(w, o_.wait_timeout));
  PSERVER_RETURN_IF_ERROR(kv_.SetStaleness(w_table_, 0));
  // The workers' copy of each feature's trust region and last step (the servers keep theirs in
  // the rule's state), written before each checkpoint so that a resumed job goes on exactly.
  TableSpec trust{.name = o_.table_prefix + "_trust", .value_type = ValueType::kFloat64, .width = 2};
  trust.updater.name = "assign";
  PSERVER_ASSIGN_OR_RETURN(trust_table_, node_.DeclareTable(trust, o_.wait_timeout));
  Adopter adopt;
  if (o_.load_share) adopt = [this](const std::vector<uint32_t>& shares) { return Adopt(shares); };
  cols_ = ToColumns(*data_);
  PSERVER_ASSIGN_OR_RETURN(stats_, JobStats::Create(node_, o_.table_prefix, cols_.ids, data_->num_rows(),
                                                    data_->feature_ids().size(), o_.wait_timeout,
                                                    o_.describe_data, std::move(adopt)));
  num_features_ = stats_->num_features();
  blocks_ = o_.num_blocks > 0 ? o_.num_blocks : BlocksFor(stats_->num_nonzeros(), stats_->num_rows(), stats_->num_shares(), num_features_, o_.tau);
  BuildLocal();
  PSERVER_ASSIGN_OR_RETURN(checkpoints_,
                           PassCheckpoints::Create(node_, o_.table_prefix, o_.checkpoints, stats_->num_rows(),
                                                   num_features_, o_.max_passes, o_.wait_timeout));
  if (o_.checkpoints.resume) {
    PSERVER_RETURN_IF_ERROR(PullWeights());
    PSERVER_RETURN_IF_ERROR(PullTrust());
    // No worker pushes before every worker pulled the checkpoint's weights: a pull after another
    // worker's first push would see a step taken on part of the gradient.
    PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, o_.wait_timeout));
  }
  return Status::Ok();
}

void Trainer::BuildLocal() {
  const size_t n = cols_.ids.size();
  // Blocks: contiguous feature-id ranges [F b / B, F (b+1) / B).
  block_begin_.resize(blocks_ + 1);
  for (uint32_t b = 0; b <= blocks_; ++b) {
    // floor(F b / B) without overflow.
    const uint64_t first = num_features_ / blocks_ * b + num_features_ % blocks_ * b / blocks_;
    block_begin_[b] = std::lower_bound(cols_.ids.begin(), cols_.ids.end(), first) - cols_.ids.begin();
  }
  const size_t rows = data_->num_rows();
  margin_.assign(rows, 0.0);
  weight_.assign(n, 0.0);
  // Until a step of its own is seen, a feature's trust region is taken at its largest: never
  // smaller than the servers' (which is what keeps the curvature bound a bound).
  trust_.assign(n, o_.trust_region);
  grad_.assign(n, 0.0);
  last_step_.assign(n, 0.0);
  active_.assign(n, true);
  next_active_.assign(n, true);
  d_.assign(rows, 0.0);
  h_.assign(rows, 0.0);
  s_.assign(rows, 0.0);
  reach_.assign(rows, 0.0);
  stamp_.assign(rows, 0);
}

Result<std::vector<uint64_t>> Trainer::Adopt(const std::vector<uint32_t>& shares) {
  if (!inflight_.empty()) return Status::Internal("shares taken over while pulls are in flight");
  PSERVER_ASSIGN_OR_RETURN(adopted_, WithShares(*data_, shares, o_.load_share));
  data_ = &adopted_;
  cols_ = ToColumns(*data_);
  BuildLocal();
  // Every worker finished the pass: the weights are those every worker's margins include.
  PSERVER_RETURN_IF_ERROR(PullWeights());
  return cols_.ids;
}

Status Trainer::PullWeights() {
  if (!cols_.ids.empty()) {
    SharedArray<double> vals;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Pull(w_table_, std::vector<Key>(cols_.ids), &vals));
    PSERVER_RETURN_IF_ERROR(Wait(ts));
    bytes_sent_ += cols_.ids.size() * sizeof(Key);
    const double band = (1 - o_.kkt_margin) * o_.l1;
    for (size_t j = 0; j < cols_.ids.size(); ++j) {
      weight_[j] = vals[2 * j];
      grad_[j] = vals[2 * j + 1];
      // The KKT filter's verdict every worker holding the feature reached from the same (w, G)
      // at its last pull: the taker pushes and pulls the same features as they do (a feature
      // pushed by some workers only would step on part of its gradient, and the others' margins
      // would miss the step).
      next_active_[j] = active_[j] = !(o_.kkt_filter && weight_[j] == 0 && std::abs(vals[2 * j + 1]) <= band);
      if (weight_[j] == 0) continue;
      for (uint64_t k = cols_.offsets[j]; k < cols_.offsets[j + 1]; ++k) {
        margin_[cols_.rows[k]] += weight_[j] * cols_.vals[k];
      }
    }
  }
  return Status::Ok();
}

Status Trainer::StartIteration(int64_t t) {
  const uint32_t b = static_cast<uint32_t>(t % blocks_);
  const uint64_t begin = block_begin_[b], end = block_begin_[b + 1];
  // Row coefficients at the current margins (loss derivative and curvature), computed only
  // for the rows this block touches: an iteration costs the block's non-zeros, not all rows.
  // The curvature coefficient is the largest p (1 - p) over the margins within reach_i of the
  // current one (the steps in flight move it at most that far, see below): p (1 - p) =
  // e^-|m| / (1 + e^-|m|)^2 falls with |m|, so it is taken at |m| - reach_i (at 0 if within reach).
  auto coefficients = [&](uint32_t i) {
    if (stamp_[i] == t + 1) return;
    stamp_[i] = t + 1;
    const double y = data_->labels()[i];
    d_[i] = -y * Sigmoid(-y * margin_[i]);  // -y (1 - p), p the probability of the true label
    const double e = std::exp(-std::max(std::abs(margin_[i]) - reach_[i], 0.0));
    h_[i] = e / ((1 + e) * (1 + e));
  };
  const int64_t delay = std::min<int64_t>(o_.tau, blocks_ - 1);
  auto for_window = [&](auto&& fn) {
    for (int64_t q = std::max<int64_t>(0, t - delay); q <= t; ++q) {
      const uint32_t qb = static_cast<uint32_t>(q % blocks_);
      for (uint64_t j = block_begin_[qb]; j < block_begin_[qb + 1]; ++j) {
        if (!active_[j]) continue;
        for (uint64_t k = cols_.offsets[j]; k < cols_.offsets[j + 1]; ++k) fn(j, k);
      }
    }
  };
  for_window([&](uint64_t j, uint64_t k) {
    const double ax = std::abs(cols_.vals[k]);
    s_[cols_.rows[k]] += ax;
    reach_[cols_.rows[k]] += ax * trust_[j];
  });
  InFlight pull;
  pull.iteration = t;
  std::vector<Key> keys;
  std::vector<double> vals;
  for (uint64_t j = begin; j < end; ++j) {
    if (!active_[j]) continue;
    // g_j and a bound u_j on the loss's second derivative along feature j for any joint step of
    // the blocks in flight within their trust regions: row i's margin moves by at most reach_i,
    // and its share of the joint curvature is at most s_i times the diagonal (Gershgorin).
    double g = 0, u = 0;
    for (uint64_t k = cols_.offsets[j]; k < cols_.offsets[j + 1]; ++k) {
      const uint32_t i = cols_.rows[k];
      const double x = cols_.vals[k];
      coefficients(i);
      g += d_[i] * x;
      u += h_[i] * std::abs(x) * s_[i];
    }
    keys.push_back(cols_.ids[j]);
    vals.push_back(g);
    vals.push_back(u);
    pull.local.push_back(static_cast<uint32_t>(j));
  }
  for_window([&](uint64_t, uint64_t k) { s_[cols_.rows[k]] = reach_[cols_.rows[k]] = 0; });
  active_this_pass_ += keys.size();
  bytes_sent_ += keys.size() * (sizeof(Key) + 2 * sizeof(double));
  SharedArray<Key> shared_keys(std::move(keys));
  // An empty push still marks the iteration; the clock tick after it lets the others go on.
  PSERVER_ASSIGN_OR_RETURN(Timestamp pushed, kv_.Push(w_table_, shared_keys, SharedArray<double>(std::move(vals))));
  (void)pushed;  // completion is implied by the pull after it (per-server order)
  PSERVER_RETURN_IF_ERROR(kv_.Clock().status());
  bytes_sent_ += shared_keys.size() * sizeof(Key);
  // The pull writes its values into the queued entry (a deque keeps elements in place).
  InFlight& queued = inflight_.emplace_back(std::move(pull));
  Result<Timestamp> ts = kv_.Pull(w_table_, shared_keys, &queued.vals);
  if (!ts.ok()) {
    inflight_.pop_back();
    return ts.status();
  }
  queued.ts = *ts;
  return Status::Ok();
}

Status Trainer::FinishPull(InFlight& p) {
  PSERVER_RETURN_IF_ERROR(Wait(p.ts));
  const double band = (1 - o_.kkt_margin) * o_.l1;
  for (size_t k = 0; k < p.local.size(); ++k) {
    const uint32_t j = p.local[k];
    const double w = p.vals[2 * k], grad = p.vals[2 * k + 1];
    grad_[j] = grad;
    const double delta = w - weight_[j];
    // The servers' rule sets the feature's trust region from this step the same way.
    trust_[j] = ProxTrustRegion(last_step_[j], delta, o_.trust_region, o_.trust_region_min);
    last_step_[j] = delta;
    if (delta != 0) {
      for (uint64_t q = cols_.offsets[j]; q < cols_.offsets[j + 1]; ++q) {
        margin_[cols_.rows[q]] += delta * cols_.vals[q];
      }
      weight_[j] = w;
    }
    next_active_[j] = !(o_.kkt_filter && w == 0 && std::abs(grad) <= band);
  }
  return Status::Ok();
}

Status Trainer::DrainUpTo(int64_t last) {
  while (!inflight_.empty() && inflight_.front().iteration <= last) {
    PSERVER_RETURN_IF_ERROR(FinishPull(inflight_.front()));
    inflight_.pop_front();
  }
  return Status::Ok();
}

Status Trainer::PushTrust() {
  std::vector<Key> keys;
  std::vector<double> vals;
  for (size_t j = 0; j < cols_.ids.size(); ++j) {
    if (!stats_->owned()[j]) continue;
    keys.push_back(cols_.ids[j]);
    vals.push_back(trust_[j]);
    vals.push_back(last_step_[j]);
  }
  if (!keys.empty()) {
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Push(trust_table_, std::move(keys), std::move(vals)));
    PSERVER_RETURN_IF_ERROR(Wait(ts));
  }
  // Every worker's rows are in before the lead checkpoints.
  return node_.Barrier(BarrierGroup::kWorkers, o_.wait_timeout);
}

Status Trainer::PullTrust() {
  if (cols_.ids.empty()) return Status::Ok();
  SharedArray<double> vals;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Pull(trust_table_, std::vector<Key>(cols_.ids), &vals));
  PSERVER_RETURN_IF_ERROR(Wait(ts));
  for (size_t j = 0; j < cols_.ids.size(); ++j) {
    // A trust region is never 0: a feature without a row was not checkpointed (kept at the largest).
    if (vals[2 * j] > 0) {
      trust_[j] = vals[2 * j];
      last_step_[j] = vals[2 * j + 1];
    }
  }
  return Status::Ok();
}

JobStats::Row Trainer::Figures() const {
  double loss = 0, reg = 0, nnz = 0, entropy = 0, penalty = 0;
  for (size_t i = 0; i < margin_.size(); ++i) {
    // The row's dual variable a = 1 - P(y | x) = sigmoid(-y m) and its entropy H(a).
    const double ym = data_->labels()[i] * margin_[i];
    loss += Log1pExp(-ym);
    entropy += DualEntropy(ym, 1.0);
  }
  const double skipped = static_cast<double>(std::count(active_.begin(), active_.end(), false));
  for (size_t j = 0; j < weight_.size(); ++j) {
    if (!stats_->owned()[j]) continue;
    const double w = weight_[j];
    reg += o_.l1 * std::abs(w) + o_.l2 * w * w;
    nnz += w != 0 ? 1 : 0;
    penalty += DualPenalty(w, grad_[j], o_.l1, o_.l2);
  }
  const double idle = std::chrono::duration<double>(idle_).count();
  return {loss, reg, nnz, static_cast<double>(active_this_pass_), static_cast<double>(bytes_sent_), idle,
          static_cast<double>(data_->num_rows()), skipped, entropy, penalty};
}

Result<PassReport> Trainer::EndPass(int pass) {
  PSERVER_ASSIGN_OR_RETURN(PassReport r, stats_->EndPass(pass, [this]() -> Result<JobStats::Row> { return Figures(); }, start_, &idle_));
  active_this_pass_ = 0;
  return r;
}

Result<DbpgResult> Trainer::Run(const std::function<void(const PassReport&)>& on_pass) {
  start_ = Clock::now();
  PSERVER_RETURN_IF_ERROR(Setup());
  DbpgResult result;
  result.num_features = num_features_;
  result.num_blocks = blocks_;
  const TrainingProgress& from = checkpoints_->resumed();
  result.resumed_from_pass = from.pass;
  double previous = from.objective;
  bool verifying = from.verifying;  // this pass runs every feature to confirm the filtered optimum
  // Nothing recorded (a checkpoint from before the first recorded pass): rows never pushed hold
  // no gradient to judge them by, so the first pass computes every feature.
  if (from.full_pass_next || from.pass == 0) std::fill(active_.begin(), active_.end(), true);
  uint32_t workers_before = node_.num_workers();
  // The clocks start at 0 again in a resumed job: the servers reset the prox rule's iteration
  // marks when they load the checkpoint (Updater::OnResume), so no push of a new iteration is
  // taken for one of the checkpointed job's.
  int64_t t = int64_t{from.pass} * blocks_;
  for (int pass = from.pass + 1; pass <= o_.max_passes; ++pass) {
    for (uint32_t b = 0; b < blocks_; ++b, ++t) {
      // A block is never recomputed before its own previous step is in the margins: the
      // effective delay is min(tau, B - 1).
      const int64_t delay = std::min<int64_t>(o_.tau, blocks_ - 1);
      PSERVER_RETURN_IF_ERROR(DrainUpTo(t - delay - 1));
      PSERVER_RETURN_IF_ERROR(StartIteration(t));
    }
    PSERVER_RETURN_IF_ERROR(DrainUpTo(t));
    PSERVER_ASSIGN_OR_RETURN(PassReport r, EndPass(pass));
    r.gap = RelativeGap(r);
    result.passes.push_back(r);
    if (on_pass) on_pass(r);
    const double change = std::abs(previous - r.objective) / std::max(std::abs(r.objective), 1e-300);
    previous = r.objective;
    const bool small_gap = o_.gap_tol > 0 && r.gap <= o_.gap_tol;
    const bool converged = small_gap || change < o_.rel_tol;
    result.stopped_by = small_gap ? fmt::format("the duality gap {:.2g} is at most {:.2g}", r.gap, o_.gap_tol)
                                  : fmt::format("the objective stalled (it changed by {:.2g}, less than {:.2g}) with the "
                                                "duality gap at {:.2g} (converged means at most {:.2g})",
                                                change, o_.rel_tol, r.gap, o_.gap_tol);
    // Job-wide, so that every worker decides alike (a worker's own features may all be active
    // while another's are not).
    const bool filtered = r.skipped_features > 0;
    if (converged && (!o_.kkt_filter || verifying || !filtered)) {
      result.converged = small_gap;
      result.stopped = true;
      break;
    }
    // A worker was lost in this pass: the filter's verdicts came from gradients without its
    // rows, so the next pass computes every feature again (as the periodic full pass does).
    const bool lost = r.workers < workers_before;
    workers_before = r.workers;
    const bool full_pass = converged || lost || (o_.kkt_full_pass_every > 0 && pass % o_.kkt_full_pass_every == 0);
    if (full_pass) {
      verifying = converged;  // a pass over every feature (before stopping, or periodically)
      std::fill(active_.begin(), active_.end(), true);
    } else {
      verifying = false;
      active_ = next_active_;
    }
    if (checkpoints_->Due(pass, pass == o_.max_passes)) PSERVER_RETURN_IF_ERROR(PushTrust());
    PSERVER_RETURN_IF_ERROR(checkpoints_->AfterPass({pass, r.objective, full_pass, verifying}, pass == o_.max_passes,
                                                    stats_->lead()));
  }
  if (!result.stopped) {
    const double gap = result.passes.empty() ? std::numeric_limits<double>::quiet_NaN() : result.passes.back().gap;
    result.stopped_by = fmt::format("the pass limit ({}) came first: the objective may be up to {:.2g} above the "
                                    "optimum (the duality gap; converged means at most {:.2g})",
                                    o_.max_passes, gap, o_.gap_tol);
  }
  PSERVER_ASSIGN_OR_RETURN(result.weights, stats_->CollectWeights(kv_, w_table_, 2));
  result.lead = stats_->lead();
  return result;
}

}  // namespace

double DualPenalty(double w, double gradient, double l1, double l2) {
  const double excess = std::max(std::abs(gradient) - l1, 0.0);
  return l2 > 0 ? excess * excess / (4 * l2) : excess * std::abs(w);
}

double RelativeGap(const PassReport& r) {
  // Below 0 only while the gradients lag the weights (they are of each feature's last
  // iteration): then the figure is the size of that lag, not a bound, and counts as such.
  return std::abs(r.objective - (r.dual_entropy - r.dual_penalty)) / std::max(std::abs(r.objective), 1e-300);
}

uint32_t BlocksFor(uint64_t nonzeros, uint64_t rows, uint32_t workers, uint64_t features, int64_t tau) {
  const uint64_t per_worker = nonzeros / std::max<uint32_t>(workers, 1);
  const uint64_t by_work = (per_worker + kNonzerosPerBlock - 1) / kNonzerosPerBlock;
  const double per_row = static_cast<double>(nonzeros) / static_cast<double>(std::max<uint64_t>(rows, 1));
  const auto by_coupling = static_cast<uint64_t>(std::ceil(kBlocksPerRowNonzero * per_row));
  const uint64_t by_delay = kBlocksPerDelay * static_cast<uint64_t>(std::clamp<int64_t>(tau, 0, kMaxAutoBlocks));
  return static_cast<uint32_t>(std::clamp<uint64_t>(std::max({by_work, by_coupling, by_delay}), 1,
                                                    std::clamp<uint64_t>(features, 1, kMaxAutoBlocks)));
}

Result<Dataset> WithShares(const Dataset& rows, const std::vector<uint32_t>& shares, const ShareLoader& load) {
  Dataset merged = rows;
  for (uint32_t share : shares) {
    PSERVER_ASSIGN_OR_RETURN(Dataset more, load(share));
    merged.Append(more);
  }
  return merged;
}

Result<DbpgResult> TrainDbpg(Node& node, const Dataset& local, const DbpgOptions& options,
                             const std::function<void(const PassReport&)>& on_pass) {
  Trainer trainer(node, local, options);
  return trainer.Run(WithPassMetrics(node, on_pass));
}

}  // namespace pserver::linear
