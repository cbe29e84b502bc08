// JobStats: what the workers of a linear-model job agree on through the parameter server --
// the job's feature count, which worker counts each feature in the regulariser, and the sums of
// per-pass figures (loss, regulariser, non-zeros, traffic, waiting).
//
// Every worker constructs one (Create is collective: it includes a barrier of the workers) and
// calls Sum for every pass, in the same order.
//
// Thread-compatible: use from the worker's training thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pserver/kv_worker.h"
#include "pserver/node.h"
#include "pserver/result.h"

namespace pserver::linear {

// One pass of training as every worker sees it (the sums over all workers).
struct PassReport {
  int pass = 0;                  // 1-based
  double objective = 0;          // over all workers' rows
  uint64_t nnz = 0;              // non-zero weights
  double seconds = 0;            // since training started
  uint64_t bytes_sent = 0;       // payload all workers sent so far (pushed keys and values, pulled keys)
  double idle_fraction = 0;      // workers' mean share of the elapsed time spent waiting (pulls, barriers)
  uint64_t active_features = 0;  // features computed in this pass (over all workers)
};

class JobStats {
 public:
  static constexpr uint32_t kWidth = 6;
  using Row = std::array<double, kWidth>;

  // `features`: this worker's feature ids, sorted and unique. Declares the tables
  // `<prefix>_stats` and `<prefix>_presence`. kInvalidArgument for more than 62 workers.
  static Result<std::unique_ptr<JobStats>> Create(Node& node, const std::string& prefix,
                                                  const std::vector<uint64_t>& features,
                                                  std::chrono::milliseconds timeout);

  // Max feature id + 1 over every worker.
  uint64_t num_features() const { return num_features_; }
  // owned()[j]: this worker is the lowest-ranked holder of features[j], so it alone counts it.
  const std::vector<bool>& owned() const { return owned_; }

  // Adds `mine` into the row of `pass`, waits for every worker (barrier) and returns the sum.
  // `*waited` grows by the time spent in the barrier.
  Result<Row> Sum(int pass, const Row& mine, std::chrono::steady_clock::duration* waited);

  // Sum() for the row {loss, regulariser, non-zeros, features computed, bytes sent, seconds
  // waited}, as a PassReport timed from `start`.
  Result<PassReport> EndPass(int pass, const Row& mine, std::chrono::steady_clock::time_point start,
                             std::chrono::steady_clock::duration* waited);

  // The non-zero weights of `table` (value i of each row of `width` values) over every
  // feature of the job, pulled in chunks: the model to save.
  Result<std::vector<std::pair<uint64_t, double>>> CollectWeights(KVWorker<double>& kv, TableId table,
                                                                  uint32_t width);

 private:
  JobStats(Node& node, std::chrono::milliseconds timeout) : node_(node), stats_(node), presence_(node), timeout_(timeout) {}

  Node& node_;
  KVWorker<double> stats_;
  KVWorker<int64_t> presence_;
  std::chrono::milliseconds timeout_;
  TableId stats_table_, presence_table_;
  uint64_t num_features_ = 0;
  std::vector<bool> owned_;
};

}  // namespace pserver::linear
