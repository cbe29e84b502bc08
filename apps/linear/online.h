// Asynchronous minibatch SGD and FTRL-proximal for the same model as DBPG (apps/linear/dbpg.h):
// the online alternative. Each worker walks its rows in minibatches: it pulls the weights of
// the minibatch's features, computes the gradient of the minibatch's logistic loss and pushes
// it; the servers apply the table's rule -- "sgd" with shrink=1 (w -= lr_k g, g the minibatch's
// mean gradient plus 1/N of the L2 term's, at pass k's rate lr_k = lr SgdRate(k); at the end of
// each pass, every weight is soft-thresholded by lr_k l1 / |B|, the L1 penalty of the pass's
// N / |B| proximal steps at once, so that the model is sparse) or "ftrl" (FTRL-proximal with
// alpha = learning rate, beta = 1 and the job's l1, l2 applied on the server). With delay bound tau no more than
// tau + 1 of a worker's requests are in flight (KVWorker::SetMaxDelay): tau = 0 waits for each
// push before the next pull. After each pass the workers agree on the objective (JobStats).
// FTRL regularises against the sum of every gradient it received, which after P passes is P
// times the objective's: its l1 and l2 are therefore max_passes times the job's, and FTRL
// always runs max_passes passes (earlier passes are over-regularised; the last matches the
// objective). SGD stops early on rel_tol.
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
  double rel_tol = 1e-4;
  std::string table_prefix = "online";
  std::chrono::milliseconds wait_timeout{300000};
  DataDescriber describe_data;  // names a lost worker's data in errors (job_stats.h)
  ShareLoader load_share;       // a lost worker's rows are trained on by another (below)
  // Checkpoints at the end of passes, and resuming from one (pass_checkpoints.h): the weights
  // and the rule's state (FTRL's accumulators) are the servers'; a resumed job goes on from the
  // pass after the checkpoint's. FTRL's l1 and l2 depend on max_passes, so it resumes with the
  // same max_passes (another is refused as another spec of the weight table).
  CheckpointOptions checkpoints;
};

struct OnlineResult {
  std::vector<PassReport> passes;
  uint64_t num_features = 0;
  std::vector<std::pair<uint64_t, double>> weights;  // non-zero weights (the lead only)
  bool lead = false;  // this worker is the job's lead (job_stats.h)
  int resumed_from_pass = 0;  // the checkpoint's pass the job resumed after (0: started afresh)
};

// SGD's learning-rate schedule: pass k (from 1) steps at learning_rate / sqrt(k), which makes
// the iterates settle at the optimum rather than circle it at a fixed step's distance.
double SgdRate(int pass);

Result<OnlineResult> TrainOnline(Node& node, const Dataset& local, const OnlineOptions& options,
                                 const std::function<void(const PassReport&)>& on_pass = {});

}  // namespace pserver::linear
