// JobStats: what the workers of a linear-model job agree on through the parameter server --
// the job's feature count, which worker counts each feature in the regulariser, the sums of
// per-pass figures (loss, regulariser, non-zeros, traffic, waiting), and the trained model.
//
// Every worker constructs one (Create is collective: it includes a barrier of the workers),
// calls EndPass for every pass, in the same order, and CollectWeights once at the end.
//
// A worker that leaves the job (it died, or the scheduler declared it dead) takes its share of
// the data with it: the cluster goes on without it, but a model trained on the rest is not the
// model the user asked for. Every pass therefore checks that each worker contributed to it, and
// EndPass and CollectWeights fail with kUnavailable naming the missing workers and their data
// (see DataDescriber) rather than return figures or weights that look complete.
//
// Every cost here is in the features the data holds, whatever their ids: feature ids may be
// any 64-bit value (the model's dimension is the largest id + 1).
//
// Thread-compatible: use from the worker's training thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
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

// Describes the share of the data worker `rank` trains on, for the error that says it was lost
// (e.g. "bytes [0, 4096) of a.svm"). Empty: errors name the worker only.
using DataDescriber = std::function<std::string(uint32_t rank)>;

class JobStats {
 public:
  // The figures of one pass that a worker adds in: loss, regulariser, non-zeros, features
  // computed, bytes sent, seconds waited.
  static constexpr uint32_t kFigures = 6;
  using Row = std::array<double, kFigures>;

  // `features`: this worker's feature ids, sorted and unique; `rows`: its data rows. Declares
  // the tables `<prefix>_stats`, `<prefix>_presence` and `<prefix>_model`. kInvalidArgument for
  // more than 62 workers.
  static Result<std::unique_ptr<JobStats>> Create(Node& node, const std::string& prefix,
                                                  const std::vector<uint64_t>& features, uint64_t rows,
                                                  std::chrono::milliseconds timeout,
                                                  DataDescriber describe_data = {});

  // Max feature id + 1 over every worker (exact for any 64-bit id).
  uint64_t num_features() const { return num_features_; }
  // The rows of every worker's data together.
  uint64_t num_rows() const { return num_rows_; }
  // owned()[j]: this worker is the lowest-ranked holder of features[j], so it alone counts it.
  const std::vector<bool>& owned() const { return owned_; }

  // Adds `mine` into the row of `pass`, waits for every worker (barrier) and returns the sum
  // as a PassReport timed from `start`. `*waited` grows by the time spent in the barrier.
  // kUnavailable naming the workers (and their data) that did not contribute to the pass.
  Result<PassReport> EndPass(int pass, const Row& mine, std::chrono::steady_clock::time_point start,
                             std::chrono::steady_clock::duration* waited);

  // Collective, after the last pass: the non-zero weights of `table` (value 0 of each row of
  // `width` values), sorted by feature, on worker 0; empty on the others. Each worker pulls the
  // features it owns and hands the non-zero ones to worker 0 through `<prefix>_model`.
  // kUnavailable naming the workers (and their data) whose weights are missing.
  Result<std::vector<std::pair<uint64_t, double>>> CollectWeights(KVWorker<double>& kv, TableId table,
                                                                  uint32_t width);

 private:
  JobStats(Node& node, std::chrono::milliseconds timeout, DataDescriber describe_data)
      : node_(node), stats_(node), ints_(node), timeout_(timeout), describe_data_(std::move(describe_data)) {}

  // OK when `ranks_seen` (bit r: worker r) names every worker; else the error for `when`.
  Status CheckEveryWorker(uint64_t ranks_seen, const std::string& when) const;
  std::vector<uint64_t> OwnedFeatures() const;

  Node& node_;
  KVWorker<double> stats_;
  KVWorker<int64_t> ints_;
  std::chrono::milliseconds timeout_;
  DataDescriber describe_data_;
  TableId stats_table_, presence_table_, model_table_;
  std::vector<uint64_t> features_;
  uint64_t num_features_ = 0;
  uint64_t num_rows_ = 0;
  std::vector<bool> owned_;
};

}  // namespace pserver::linear
