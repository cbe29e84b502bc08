// Delayed block proximal gradient (DBPG) for L1-regularised logistic regression, the
// algorithm of Li et al. (NIPS 2014) on the parameter server:
//
//   minimise  sum_i log(1 + exp(-y_i <x_i, w>)) + l1 |w|_1 + l2 |w|_2^2      (no bias term)
//
// Features are split into blocks of contiguous ids (BlocksFor below, unless num_blocks is set).
// Iteration t works on block t mod B: every worker computes, on its own rows, the gradient g_j
// and a curvature bound u_j of each feature j of the block -- valid for any joint step of the
// block and the blocks in flight within each feature's trust region (docs/linear.md) -- and
// pushes them to the weight table; the servers sum the pushes of the iteration and apply the
// proximal Newton step -- the built-in "prox" rule with gradient=1 adaptive=1 (pserver/table.h;
// the step is pserver::ProxStep, clamped to the weight's trust region, pserver::ProxTrustRegion),
// whose rows are (w_j, G_j); each worker then pulls the block's new weights, with the iteration's full
// gradients for the KKT filter, and updates its margins. With delay bound tau a worker
// computes iteration t with margins that include every iteration <= t - tau - 1 (the pulls of
// the last tau iterations may still be in flight), which is the paper's bounded delay: tau = 0
// is sequential block coordinate descent. The pulls are stale-synchronous pulls with staleness
// 0 at clock t + 1, so they return only once every live worker pushed iteration t. A block is
// never recomputed before its own previous step reached the margins, so the effective delay is
// min(tau, B - 1).
//
// Stop rule: at the end of each pass the workers sum the objective and a dual objective; training
// stops when their relative gap (RelativeGap) is at most gap_tol, when the objective stalls
// (rel_tol), or at max_passes (DbpgResult says which; docs/linear.md, section 3).
//
// KKT filter: a feature whose weight is 0 and whose full gradient lies inside the L1 band
// with a margin (|G_j| <= (1 - kkt_margin) * l1) stays 0 under the next step; it is dropped
// from later passes -- neither computed nor sent. Every kkt_full_pass_every passes, and before
// stopping, a pass over every feature re-checks the filtered ones (training goes on if that
// pass changes the objective by more than the tolerance).
//
// Every worker of the job calls TrainDbpg with its own rows (SPMD); they must agree on the
// options. Any server serves it: the rule is built in.
//
// A lost worker (killed, or declared dead): with `load_share`, at the end of the pass a live
// worker loads the lost worker's rows (job_stats.h), pulls the weights of their features,
// computes their margins, and trains on them from then on, so that the model is trained on
// every row. The lost worker's last pushes may or may not have been applied: the step of that
// iteration was taken on the rows of the workers that pushed (a block step on part of the
// data, within the trust region), and the passes after it use every row, so training goes on
// to the same optimum.
//
// Thread safety: TrainDbpg blocks its calling thread; progress callbacks run on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "apps/linear/dataset.h"
#include "apps/linear/job_stats.h"
#include "apps/linear/pass_checkpoints.h"
#include "pserver/node.h"
#include "pserver/result.h"
#include "pserver/table.h"

namespace pserver::linear {

// Loads share `share` of the job's data -- the rows worker `share` started with -- for a worker
// that takes it over when that worker is lost (job_stats.h). Empty: a lost worker ends the job.
using ShareLoader = std::function<Result<Dataset>(uint32_t share)>;
// `rows` followed by the rows of `shares`, loaded by `load`.
Result<Dataset> WithShares(const Dataset& rows, const std::vector<uint32_t>& shares, const ShareLoader& load);

struct DbpgOptions {
  double l1 = 1.0;
  double l2 = 0.0;
  int64_t tau = 0;             // delay bound (iterations)
  uint32_t num_blocks = 0;     // feature blocks per pass; 0: BlocksFor the job's data
  int max_passes = 100;
  double gap_tol = 1e-4;       // stop when the duality gap (RelativeGap) is at most this
  double rel_tol = 1e-9;       // or when the objective changes less than this (relative): stalled
  bool kkt_filter = true;
  double kkt_margin = 0.5;     // filter when |G_j| <= (1 - margin) * l1
  int kkt_full_pass_every = 5; // every this many passes, a pass over every feature
  double trust_region = 5.0;   // the largest |w_j - w0_j| of an iteration (the rule's delta)
  double trust_region_min = 0.1;  // a feature's trust region is min(trust_region, 2 |last step| + this)
  // The servers' rule the weight table names, with the params l1, l2, delta, gradient=1: the
  // built-in "prox", or one a server registered under another name that takes the same params
  // and layout (e.g. a wrapper of "prox" that instruments it; the tests count rows with one).
  std::string rule = "prox";
  std::string table_prefix = "dbpg";
  // The filters of the weight table, which carries nearly all of the job's traffic
  // (docs/filters.md); none by default.
  std::vector<FilterSpec> filters;
  std::chrono::milliseconds wait_timeout{300000};
  DataDescriber describe_data;  // names a lost worker's data in errors (job_stats.h)
  ShareLoader load_share;       // a lost worker's rows are trained on by another (above)
  // Checkpoints at the end of passes, and resuming from one (pass_checkpoints.h). A resumed
  // job's first pass computes every feature when the checkpointed job's next pass would have;
  // otherwise its KKT verdicts are those every worker reaches from the pulled (w, G).
  CheckpointOptions checkpoints;
};

struct DbpgResult {
  std::vector<PassReport> passes;
  uint64_t num_features = 0;  // the job's feature count (max feature id + 1)
  uint32_t num_blocks = 0;    // feature blocks per pass
  std::vector<std::pair<uint64_t, double>> weights;  // non-zero weights, by feature (the lead only)
  bool lead = false;  // this worker is the job's lead: the lowest-ranked live worker (job_stats.h)
  int resumed_from_pass = 0;  // the checkpoint's pass the job resumed after (0: started afresh)
  bool stopped = false;       // a stop rule ended training, not max_passes
  bool converged = false;     // the duality gap's rule did (not the stall's)
  std::string stopped_by;     // which rule ended training, with its figures, for the user
};

// The stop rule's duality gap. Each pass's figures give the objective P(w) and a dual
// objective D = sum_i H(a_i) - sum_j DualPenalty(w_j, G_j) at each row's dual variable
// a_i = 1 - P(y_i | x_i) (H the binary entropy), G_j the full gradient of feature j's last
// iteration. By Fenchel duality the optimum P* >= sum_i H(a_i) + sum_j min_v (G_j v + l1 |v| +
// l2 v^2) for the gradient G at the rows' margins, which is sum_i H(a_i) minus
// sum_j max(|G_j| - l1, 0)^2 / (4 l2) with l2 > 0; with l2 = 0 the minimum is over the optimum's
// weights and is bounded by -max(|G_j| - l1, 0) |w*_j|, which the current |w_j| stands in for.
// RelativeGap is (P - D) / P: an estimate of how far above the optimum the objective is, exact
// as a bound for l2 > 0 once the gradients are those of the final weights (they are of each
// feature's last iteration), and above the true distance in every measured run for l2 = 0
// (docs/linear.md).
double DualPenalty(double w, double gradient, double l1, double l2);
double RelativeGap(const PassReport& r);

// Blocks sized by the data. A pass costs a round trip per block, so a block should hold enough
// of a worker's non-zeros that computing it outweighs waiting for its round trip: at least
// ceil(nonzeros / workers / kNonzerosPerBlock) blocks. And a block's step bounds the coupling of
// the features a row has in the block (the curvature's row sums s_i): the fewer a row has, the
// longer the steps, so at least ceil(kBlocksPerRowNonzero * nonzeros / rows) blocks (a row has
// then under one feature per block on average). And with delay bound tau the tau blocks in flight
// make every step more conservative (the curvature covers their steps too), so at least
// kBlocksPerDelay * tau blocks keep them a small share of the features (measured on 1 M rows:
// tau 4 with 40 blocks took 37 passes to within 1e-4 of the optimum, with 128 blocks 16, as tau
// 0 with 40 takes 13). The largest of the three, at least 1, at most the feature count and
// kMaxAutoBlocks. The same on every worker (the arguments are job-wide).
inline constexpr uint64_t kNonzerosPerBlock = 250000;
inline constexpr double kBlocksPerRowNonzero = 1.6;
inline constexpr uint64_t kBlocksPerDelay = 32;
inline constexpr uint64_t kMaxAutoBlocks = 4096;
uint32_t BlocksFor(uint64_t nonzeros, uint64_t rows, uint32_t workers, uint64_t features, int64_t tau = 0);

// `on_pass` runs on every worker after each pass (with the same objective everywhere).
Result<DbpgResult> TrainDbpg(Node& node, const Dataset& local, const DbpgOptions& options,
                             const std::function<void(const PassReport&)>& on_pass = {});

}  // namespace pserver::linear
