// The duality gap of the online solvers (online.h), measured at the weights a pass ended with,
// as a bound: RelativeGap (dbpg.h) of P and a dual objective D <= P*.
//
// With P(w) = sum_i loss_i + l1 |w|_1 + l2 |w|^2, each row's dual variable a_i = sigmoid(-y_i m_i)
// and the loss's gradient G = -X^T (y a) summed over the workers at those weights, Fenchel
// duality gives, for any a' in [0, 1]^N with gradient G',
//   P* >= D(a') = sum_i H(a'_i) - sum_j c(G'_j),
// H the binary entropy and c the conjugate of l1 |v| + l2 v^2: max(|g| - l1, 0)^2 / (4 l2) for
// l2 > 0 (DualPenalty); for l2 = 0, 0 when |g| <= l1 and infinite otherwise. So with l2 > 0
// a' = a, and with l2 = 0 a' = s a, s = min(1, l1 / max_j |G_j|) (DualScale), which makes every
// |G'_j| <= l1. The bound is loose for l2 = 0 while a single feature's gradient is far outside
// the L1 band (s scales every row); it is exact at the optimum.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apps/linear/job_stats.h"
#include "pserver/kv_worker.h"
#include "pserver/node.h"
#include "pserver/result.h"

namespace pserver::linear {

// s: 1 when l2 > 0 or max_abs_gradient <= l1, else l1 / max_abs_gradient.
double DualScale(double max_abs_gradient, double l1, double l2);
// H(scale * sigmoid(-ym)) for a row whose label times margin is ym (exact in the tails).
double DualEntropy(double ym, double scale);

// This worker's share of the dual objective: the entropy of its rows and the penalty of the
// features it owns (JobStats::owned), which JobStats sums over the workers.
struct DualShare {
  double entropy = 0;
  double penalty = 0;
  uint64_t bytes_sent = 0;  // by this worker, for it
};

// Thread safety: one thread (the solver's).
class DualMeter {
 public:
  // Declares `<prefix>_grad`, a scratch table (not checkpointed) that is 0 between Measures.
  static Result<std::unique_ptr<DualMeter>> Create(Node& node, const std::string& prefix,
                                                   std::chrono::milliseconds timeout);

  // Collective, from JobStats::EndPass's figures() (every worker calls it alike). `features`:
  // this worker's (JobStats', sorted); `gradient`: its rows' part of the loss's gradient for
  // each of them; `ym`: label times margin of each of its rows, at the same weights. Every
  // worker adds its part into the table; each feature's owner reads the sum and subtracts it
  // again. A worker lost meanwhile may leave the sums of the features it owned behind for one
  // Measure (EndPass then computes the figures again, and the solver does not trust that
  // pass's gap).
  Result<DualShare> Measure(JobStats& stats, const std::vector<uint64_t>& features, std::vector<double> gradient,
                            const std::vector<double>& ym, double l1, double l2);

 private:
  DualMeter(Node& node, std::chrono::milliseconds timeout) : node_(node), kv_(node), timeout_(timeout) {}

  Node& node_;
  KVWorker<double> kv_;
  TableId table_;
  std::chrono::milliseconds timeout_;
};

}  // namespace pserver::linear
