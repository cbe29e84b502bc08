#include "apps/linear/online.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "apps/linear/duality_gap.h"
#include "apps/linear/job_stats.h"
#include "apps/linear/logistic.h"
#include "apps/linear/pass_checkpoints.h"
#include "pserver/kv_worker.h"

namespace pserver::linear {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<uint64_t> SortedFeatures(const Dataset& d, size_t first_row, size_t end_row) {
  std::vector<uint64_t> f(d.feature_ids().begin() + static_cast<ptrdiff_t>(d.offsets()[first_row]),
                          d.feature_ids().begin() + static_cast<ptrdiff_t>(d.offsets()[end_row]));
  std::sort(f.begin(), f.end());
  f.erase(std::unique(f.begin(), f.end()), f.end());
  return f;
}

// Index of each feature of `keys` (sorted), for looking weights up by feature.
std::unordered_map<uint64_t, size_t> IndexOf(const std::vector<uint64_t>& keys) {
  std::unordered_map<uint64_t, size_t> index;
  index.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], i);
  return index;
}

// Adds rows [first, end)'s gradient of the logistic loss at weights `w` (of the features
// `index` maps to) into `grad`, and returns each row's label times margin.
std::vector<double> AddGradient(const Dataset& d, size_t first, size_t end, const SharedArray<double>& w,
                                const std::unordered_map<uint64_t, size_t>& index, std::vector<double>& grad) {
  std::vector<double> ym(end - first);
  std::vector<size_t> at;
  for (size_t r = first; r < end; ++r) {
    RowView row = d.row(r);
    at.resize(row.feature_ids.size());
    double m = 0;
    for (size_t k = 0; k < row.feature_ids.size(); ++k) {
      at[k] = index.at(row.feature_ids[k]);
      m += w[at[k]] * row.values[k];
    }
    ym[r - first] = row.label * m;
    const double coef = -row.label * Sigmoid(-ym[r - first]);  // d/dm log(1 + e^{-y m})
    for (size_t k = 0; k < row.feature_ids.size(); ++k) grad[at[k]] += coef * row.values[k];
  }
  return ym;
}

}  // namespace

double SgdRate(int pass) { return 1.0 / std::sqrt(static_cast<double>(std::max(pass, 1))); }

Result<OnlineResult> TrainOnline(Node& node, const Dataset& data, const OnlineOptions& o,
                                 const std::function<void(const PassReport&)>& on_pass) {
  if (o.rule != "sgd" && o.rule != "ftrl") {
    return Status::InvalidArgument(fmt::format("online rule must be sgd or ftrl, not '{}'", o.rule));
  }
  if (o.minibatch == 0 || o.tau < 0 || o.l1 < 0 || o.l2 < 0 || !(o.learning_rate > 0)) {
    return Status::InvalidArgument("online training needs minibatch >= 1, tau >= 0, l1, l2 >= 0, learning rate > 0");
  }
  const std::function<void(const PassReport&)> report = WithPassMetrics(node, on_pass);
  const auto start = Clock::now();
  Clock::duration idle{};
  KVWorker<double> kv(node);
  TableSpec spec{.name = o.table_prefix + "_w", .value_type = ValueType::kFloat64, .width = 1};
  if (o.rule == "sgd") {
    // Pushes are (g, s): a gradient step, then an L1 shrink (the pass's end, below).
    spec.updater = {.name = "sgd", .params = {{"lr", o.learning_rate}, {"shrink", 1.0}}};
    spec.push_arity = 2;
  } else {
    // Pushes are (g, s): the gradients, and the passes over the data they sum so far (the scale
    // of the penalties, see the header).
    spec.updater = {.name = "ftrl",
                    .params = {{"alpha", o.learning_rate}, {"beta", 1.0}, {"l1", o.l1}, {"l2", 2 * o.l2}, {"scaled", 1.0}}};
    spec.push_arity = 2;
  }
  spec.filters = o.filters;
  PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(spec, o.wait_timeout));
  PSERVER_RETURN_IF_ERROR(kv.SetMaxDelay(table, o.tau));
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<DualMeter> dual, DualMeter::Create(node, o.table_prefix, o.wait_timeout));
  const Dataset* rows = &data;  // the caller's rows, or adopted
  Dataset adopted;               // the caller's rows and those of the shares taken over
  std::vector<uint64_t> all_features = SortedFeatures(data, 0, data.num_rows());
  Adopter adopt;
  if (o.load_share) {
    adopt = [&](const std::vector<uint32_t>& shares) -> Result<std::vector<uint64_t>> {
      PSERVER_ASSIGN_OR_RETURN(adopted, WithShares(*rows, shares, o.load_share));
      rows = &adopted;
      all_features = SortedFeatures(*rows, 0, rows->num_rows());
      return all_features;
    };
  }
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<JobStats> stats,
                           JobStats::Create(node, o.table_prefix, all_features, data.num_rows(), data.feature_ids().size(), o.wait_timeout,
                                            o.describe_data, std::move(adopt)));
  auto wait = [&](Timestamp ts) {
    const auto t0 = Clock::now();
    Status s = kv.Wait(ts, o.wait_timeout);
    idle += Clock::now() - t0;
    return s;
  };

  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<PassCheckpoints> checkpoints,
                           PassCheckpoints::Create(node, o.table_prefix, o.checkpoints, stats->num_rows(),
                                                   stats->num_features(), o.max_passes, o.wait_timeout));
  const TrainingProgress& from = checkpoints->resumed();

  OnlineResult result;
  result.num_features = stats->num_features();
  result.resumed_from_pass = from.pass;
  uint64_t bytes_sent = 0;
  double previous = from.objective;
  uint32_t workers_before = node.num_workers();
  std::vector<Timestamp> pushes;  // completed by the table's delay bound; collected each pass
  // Pushes (0, second) to every feature this worker owns (each feature once in the job), and
  // waits for them.
  auto push_to_owned = [&](double second) -> Status {
    std::vector<Key> owned = stats->OwnedFeatures();
    if (owned.empty()) return Status::Ok();
    std::vector<double> push(2 * owned.size(), 0.0);
    for (size_t j = 0; j < owned.size(); ++j) push[2 * j + 1] = second;  // a key's (g, s) side by side
    bytes_sent += owned.size() * (sizeof(Key) + 2 * sizeof(double));
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::move(owned), std::move(push)));
    // Not left to the next pass by a lossy filter: the pass's model is complete.
    PSERVER_ASSIGN_OR_RETURN(Timestamp held, kv.PushHeld(table));
    PSERVER_RETURN_IF_ERROR(wait(ts));
    return wait(held);
  };
  for (int pass = from.pass + 1; pass <= o.max_passes; ++pass) {
    for (size_t first = 0; first < rows->num_rows(); first += o.minibatch) {
      const size_t end = std::min(rows->num_rows(), first + o.minibatch);
      std::vector<uint64_t> keys = SortedFeatures(*rows, first, end);
      SharedArray<double> w;
      PSERVER_ASSIGN_OR_RETURN(Timestamp pulled, kv.Pull(table, std::vector<Key>(keys), &w));
      bytes_sent += keys.size() * sizeof(Key);
      PSERVER_RETURN_IF_ERROR(wait(pulled));
      const auto index = IndexOf(keys);
      std::vector<double> grad(keys.size(), 0.0);
      AddGradient(*rows, first, end, w, index, grad);
      // SGD steps on the mean gradient of the minibatch plus 1/N of the L2 term's gradient,
      // at the pass's rate (SgdRate), without shrinking (the L1 penalty comes at the pass's
      // end). FTRL takes the summed gradient and the passes it completes, and applies its own
      // l1, l2 at that scale (see the header).
      std::vector<double> push;
      if (o.rule == "sgd") {
        const double scale = 1.0 / static_cast<double>(end - first);
        // 1/N with N the job's rows (not this worker's): over a pass the workers take N / |B|
        // steps together, so the regulariser counts once, whatever the number of workers.
        const double reg_scale = 1.0 / static_cast<double>(std::max<uint64_t>(stats->num_rows(), 1));
        const double rate = SgdRate(pass);
        push.reserve(2 * keys.size());
        for (size_t j = 0; j < keys.size(); ++j) {
          push.push_back(rate * (grad[j] * scale + reg_scale * 2 * o.l2 * w[j]));
          push.push_back(0.0);
        }
      } else {
        // The passes the job's gradients sum once this one is in, as this worker sees them.
        const double scale = (pass - 1) + static_cast<double>(end) / static_cast<double>(rows->num_rows());
        push.reserve(2 * keys.size());
        for (size_t j = 0; j < keys.size(); ++j) {
          push.push_back(grad[j]);
          push.push_back(scale);
        }
      }
      bytes_sent += keys.size() * sizeof(Key) + push.size() * sizeof(double);
      PSERVER_ASSIGN_OR_RETURN(Timestamp pushed, kv.Push(table, std::move(keys), std::move(push)));
      pushes.push_back(pushed);
    }
    // What the table's lossy filters held back (docs/filters.md, 2.2) joins the pass it was
    // pushed in; with no such filter this pushes no key.
    PSERVER_ASSIGN_OR_RETURN(Timestamp held, kv.PushHeld(table));
    pushes.push_back(held);
    for (Timestamp ts : pushes) PSERVER_RETURN_IF_ERROR(wait(ts));
    pushes.clear();
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers, o.wait_timeout));  // every push applied
    // Each weight as the pass left it: SGD's L1 penalty of the pass's N / |B| steps, each
    // lr_k l1 / N, as one proximal shrink by lr_k l1 / |B| (truncated gradient with the pass as
    // its period; the soft threshold makes weights exactly 0); FTRL's weights recomputed with
    // the penalties of exactly `pass` passes (a worker's own pushes count its own rows).
    if (o.rule == "ftrl" || o.l1 > 0) {
      PSERVER_RETURN_IF_ERROR(push_to_owned(o.rule == "sgd" ? SgdRate(pass) * o.l1 / static_cast<double>(o.minibatch)
                                                            : static_cast<double>(pass)));
      PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers, o.wait_timeout));
    }
    // The figures at the pass's end: this worker's loss, its share of the regulariser and of
    // the dual objective (duality_gap.h), at the weights the pass ended with.
    auto figures = [&]() -> Result<JobStats::Row> {
      SharedArray<double> w;
      RequestOptions exact;
      exact.exact = true;  // the figures of the model itself, past any lossy filter
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, std::vector<Key>(all_features), &w, exact));
      PSERVER_RETURN_IF_ERROR(wait(ts));
      const auto index = IndexOf(all_features);
      double loss = 0, reg = 0, nnz = 0;
      std::vector<double> grad(all_features.size(), 0.0);
      const std::vector<double> ym = AddGradient(*rows, 0, rows->num_rows(), w, index, grad);
      for (double v : ym) loss += Log1pExp(-v);
      for (size_t j = 0; j < all_features.size(); ++j) {
        if (!stats->owned()[j]) continue;
        reg += o.l1 * std::abs(w[j]) + o.l2 * w[j] * w[j];
        nnz += w[j] != 0 ? 1 : 0;
      }
      PSERVER_ASSIGN_OR_RETURN(const DualShare d, dual->Measure(*stats, all_features, std::move(grad), ym, o.l1, o.l2));
      bytes_sent += d.bytes_sent;
      const double idle_s = std::chrono::duration<double>(idle).count();
      return JobStats::Row{loss, reg, nnz, static_cast<double>(all_features.size()), static_cast<double>(bytes_sent),
                           idle_s, static_cast<double>(rows->num_rows()), 0.0, d.entropy, d.penalty};
    };
    PSERVER_ASSIGN_OR_RETURN(PassReport r, stats->EndPass(pass, figures, start, &idle));
    r.gap = RelativeGap(r);
    result.passes.push_back(r);
    if (report) report(r);
    const double change = std::abs(previous - r.objective) / std::max(std::abs(r.objective), 1e-300);
    previous = r.objective;
    // A pass in which a worker was lost: the gradient sums its owned features held may have
    // been left in the table for the measure that EndPass did again, so its gap does not count.
    const bool lost = r.workers < workers_before;
    workers_before = r.workers;
    const bool small_gap = o.gap_tol > 0 && r.gap <= o.gap_tol && !lost;
    if (small_gap || change < o.rel_tol) {
      result.stopped = true;
      result.converged = small_gap;
      result.stopped_by = small_gap ? fmt::format("the duality gap {:.2g} is at most {:.2g}", r.gap, o.gap_tol)
                                    : fmt::format("the objective changed by {:.2g} in the last pass, less than {:.2g}, "
                                                  "with the duality gap at {:.2g} (converged means at most {:.2g})",
                                                  change, o.rel_tol, r.gap, o.gap_tol);
      break;
    }
    PSERVER_RETURN_IF_ERROR(checkpoints->AfterPass({pass, r.objective}, pass == o.max_passes, stats->lead()));
  }
  if (!result.stopped) {
    const double gap = result.passes.empty() ? std::numeric_limits<double>::quiet_NaN() : result.passes.back().gap;
    result.stopped_by = fmt::format("the pass limit ({}) came first: the objective may be up to {:.2g} above the "
                                    "optimum (the duality gap; converged means at most {:.2g})",
                                    o.max_passes, gap, o.gap_tol);
  }
  PSERVER_ASSIGN_OR_RETURN(result.weights, stats->CollectWeights(kv, table, 1));
  result.lead = stats->lead();
  return result;
}

}  // namespace pserver::linear
