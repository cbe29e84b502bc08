#include "apps/linear/duality_gap.h"

#include <algorithm>
#include <cmath>

#include "apps/linear/dbpg.h"
#include "apps/linear/logistic.h"

namespace pserver::linear {

double DualScale(double max_abs_gradient, double l1, double l2) {
  return l2 > 0 || max_abs_gradient <= l1 ? 1.0 : l1 / max_abs_gradient;
}

double DualEntropy(double ym, double scale) {
  // a = sigmoid(-ym), with -log a = log(1 + e^{ym}) and -log(1 - a) = log(1 + e^{-ym}) (the
  // row's loss): exact in the tails, where a or 1 - a rounds to 0.
  const double a = Sigmoid(-ym);
  if (scale == 1.0) return a * Log1pExp(ym) + (1 - a) * Log1pExp(-ym);
  const double b = scale * a;
  if (!(b > 0)) return 0.0;
  return -b * (std::log(scale) - Log1pExp(ym)) - (1 - b) * std::log1p(-b);
}

Result<std::unique_ptr<DualMeter>> DualMeter::Create(Node& node, const std::string& prefix,
                                                     std::chrono::milliseconds timeout) {
  std::unique_ptr<DualMeter> meter(new DualMeter(node, timeout));
  TableSpec spec{.name = prefix + "_grad", .value_type = ValueType::kFloat64, .width = 1, .checkpointed = false};
  PSERVER_ASSIGN_OR_RETURN(meter->table_, node.DeclareTable(spec, timeout));
  return meter;
}

Result<DualShare> DualMeter::Measure(JobStats& stats, const std::vector<uint64_t>& features,
                                     std::vector<double> gradient, const std::vector<double>& ym, double l1,
                                     double l2) {
  DualShare share;
  if (!features.empty()) {
    share.bytes_sent += features.size() * (sizeof(Key) + sizeof(double));
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Push(table_, std::vector<Key>(features), std::move(gradient)));
    PSERVER_RETURN_IF_ERROR(kv_.Wait(ts, timeout_));
  }
  PSERVER_RETURN_IF_ERROR(node_.Barrier(BarrierGroup::kWorkers, timeout_));
  std::vector<Key> owned = stats.OwnedFeatures();
  double most = 0;
  if (!owned.empty()) {
    SharedArray<double> sums;
    share.bytes_sent += owned.size() * sizeof(Key);
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Pull(table_, std::vector<Key>(owned), &sums));
    PSERVER_RETURN_IF_ERROR(kv_.Wait(ts, timeout_));
    std::vector<double> minus(sums.size());
    for (size_t j = 0; j < sums.size(); ++j) {
      // With l2 > 0 the conjugate at G_j (the weight's argument plays no part then).
      if (l2 > 0) share.penalty += DualPenalty(0.0, sums[j], l1, l2);
      most = std::max(most, std::abs(sums[j]));
      minus[j] = -sums[j];
    }
    share.bytes_sent += owned.size() * (sizeof(Key) + sizeof(double));
    PSERVER_ASSIGN_OR_RETURN(ts, kv_.Push(table_, std::move(owned), std::move(minus)));
    PSERVER_RETURN_IF_ERROR(kv_.Wait(ts, timeout_));
  }
  double scale = 1.0;
  if (!(l2 > 0)) {
    PSERVER_ASSIGN_OR_RETURN(const double max_abs_gradient, stats.MaxOverWorkers(most));
    scale = DualScale(max_abs_gradient, l1, l2);
  }
  for (double v : ym) share.entropy += DualEntropy(v, scale);
  return share;
}

}  // namespace pserver::linear
