// Asynchronous minibatch SGD and FTRL-proximal for the same model as DBPG (apps/linear/dbpg.h):
// the online alternative, for data too large to revisit often. Each worker walks its rows in
// minibatches: it pulls the weights of the minibatch's features, computes the gradient of the
// minibatch's logistic loss and pushes it; the servers apply the table's rule:
//   "sgd" (shrink=1): w -= lr_k g, g the minibatch's mean gradient plus 1/N of the L2 term's,
//     at pass k's rate lr_k = lr SgdRate(k) (1/sqrt(k): the iterates settle at the optimum
//     rather than circle it); at the end of each pass every weight is soft-thresholded by
//     lr_k l1 / |B|, the L1 penalty of the pass's N / |B| proximal steps at once, so that
//     weights become exactly 0.
//   "ftrl" (scaled=1): FTRL-proximal with alpha = learning rate and beta = 1, whose per-weight
//     rate alpha / (beta + sqrt(sum of g^2)) falls as the weight's gradients add up (its
//     schedule). FTRL regularises the sum of every gradient it received, which after p passes
//     is p times the loss's: each push says the passes done so far (this worker's rows walked,
//     as a fraction of its share), and the servers use l1 p and l2 p for it; at the end of a
//     pass every weight is recomputed with exactly p = pass. So the model after any pass is
//     regularised as the objective is, and training may stop at any pass.
// With delay bound tau no more than tau + 1 of a worker's requests are in flight
// (KVWorker::SetMaxDelay): tau = 0 waits for each push before the next pull.
//
// After each pass the workers agree on the objective, its non-zeros and the duality gap
// (RelativeGap, dbpg.h; the loss's gradient at the pass's end is summed over the workers for
// it). Training stops when the gap is at most gap_tol (converged), or when the objective
// changed by less than rel_tol in a pass (stopped: another pass would buy less than that), or
// at max_passes; OnlineResult says which.
//
// SPMD like TrainDbpg: every worker calls TrainOnline with its own rows and the same options.
// A lost worker, with `load_share`: at the end of the pass a live worker loads its rows and
// walks them too from the next pass on (the lost worker's pushes of that pass that reached the
// servers stay applied; those that did not are lost, as any unacknowledged update of an
// asynchronous solver, and the later passes make up for them).
// Thread safety: blocks the calling thread; `on_pass` runs on it.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "apps/linear/dataset.h"
#include "apps/linear/dbpg.h"
#include "pserver/node.h"
#include "pserver/result.h"

namespace pserver::linear {

struct OnlineOptions {
  std::string rule = "ftrl";   // "sgd" or "ftrl"
  double l1 = 1.0;
  double l2 = 0.0;
  int64_t tau = 0;
  double learning_rate = 0.1;  // sgd step, ftrl alpha
  uint32_t minibatch = 1000;
  int max_passes = 20;
  double gap_tol = 1e-4;  // stop when the duality gap (RelativeGap) is at most this
  double rel_tol = 1e-4;  // stop when a pass changed the objective by less than this (relative)
  std::string table_prefix = "online";
  std::vector<FilterSpec> filters;  // the weight table's (docs/filters.md); none by default
  std::chrono::milliseconds wait_timeout{300000};
  DataDescriber describe_data;  // names a lost worker's data in errors (job_stats.h)
  ShareLoader load_share;       // a lost worker's rows are trained on by another (below)
  // Checkpoints at the end of passes, and resuming from one (pass_checkpoints.h): the weights
  // and the rule's state (FTRL's accumulators) are the servers'; a resumed job goes on from the
  // pass after the checkpoint's (with any max_passes).
  CheckpointOptions checkpoints;
};

struct OnlineResult {
  std::vector<PassReport> passes;
  uint64_t num_features = 0;
  std::vector<std::pair<uint64_t, double>> weights;  // non-zero weights (the lead only)
  bool lead = false;  // this worker is the job's lead (job_stats.h)
  int resumed_from_pass = 0;  // the checkpoint's pass the job resumed after (0: started afresh)
  bool stopped = false;       // a stop rule ended training, not max_passes
  bool converged = false;     // the duality gap's rule did (not the objective's change)
  std::string stopped_by;     // which rule ended training, with its figures, for the user
};

// SGD's learning-rate schedule: pass k (from 1) steps at learning_rate / sqrt(k), which makes
// the iterates settle at the optimum rather than circle it at a fixed step's distance.
double SgdRate(int pass);

Result<OnlineResult> TrainOnline(Node& node, const Dataset& local, const OnlineOptions& options,
                                 const std::function<void(const PassReport&)>& on_pass = {});

}  // namespace pserver::linear
