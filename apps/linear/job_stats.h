// JobStats: what the workers of a linear-model job agree on through the parameter server --
// the job's feature count, which worker counts each feature in the regulariser, the sums of
// per-pass figures (loss, regulariser, non-zeros, traffic, waiting, rows), and the trained
// model.
//
// Every worker constructs one (Create is collective: it includes a barrier of the workers),
// calls EndPass for every pass, in the same order, and CollectWeights once at the end.
//
// Shares. The job's data is in shares, one per worker it started with: share r is the data
// worker r loaded. A worker that leaves the job (it died, or the scheduler declared it dead)
// takes nothing with it when the job can load a share again (an Adopter): at the next EndPass
// or CollectWeights the live workers see the shares nobody holds, hand each to one of them
// (share s to the live worker s' turn in rank order), and each taker loads its new shares, tells
// the scheduler it took over the lost worker's work (Node::TakeOver), and the step is done
// again with every share. Without an Adopter, a model trained on the rest is not the model the
// user asked for: EndPass and CollectWeights fail with kUnavailable naming the missing workers
// and their data (see DataDescriber) rather than return figures or weights that look complete.
// A worker lost before Create returns ends the job the same way.
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
#include <limits>
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
  // What all workers sent and received on the wire so far, every message included, after the
  // tables' filters (Node::traffic): with one server and no replicas, what the servers received
  // and sent.
  uint64_t wire_bytes_sent = 0;
  uint64_t wire_bytes_received = 0;
  double idle_fraction = 0;      // workers' mean share of the elapsed time spent waiting (pulls, barriers)
  uint64_t active_features = 0;  // features computed in this pass (over all workers)
  uint64_t rows = 0;             // data rows the figures cover: every row of the job
  uint32_t workers = 0;          // live workers that took part
  uint32_t lead = 0;             // the lowest-ranked of them, who speaks for the job (prints, writes)
  uint64_t skipped_features = 0; // features a filter left out of this pass (over all workers)
  // For the solver's duality gap (dbpg.h): the sum over rows of the entropy of each row's dual
  // variable, and the sum over features of the dual's penalty term.
  double dual_entropy = 0;
  double dual_penalty = 0;
  // The solver's estimate of (objective - optimum) / objective; NaN where it has none.
  double gap = std::numeric_limits<double>::quiet_NaN();
};

// Describes the share of the data worker `rank` trains on, for the error that says it was lost
// (e.g. "bytes [0, 4096) of a.svm"). Empty: errors name the worker only.
using DataDescriber = std::function<std::string(uint32_t rank)>;

// Called on a worker that is to take over `shares` (ascending; their workers were lost): loads
// their data, adds it to the rows it trains on, and returns this worker's features over every
// share it holds now (sorted, unique). An error ends the job.
using Adopter = std::function<Result<std::vector<uint64_t>>(const std::vector<uint32_t>& shares)>;

// `on_pass` (may be empty), after the pass's figures went to the node's training gauges when it
// serves metrics (Node::metrics(); docs/metrics.md): pserver_train_pass, _objective, _nnz,
// _duality_gap, _active_features and _seconds. The solvers wrap their callers' on_pass with it.
std::function<void(const PassReport&)> WithPassMetrics(Node& node, std::function<void(const PassReport&)> on_pass);

class JobStats {
 public:
  // The figures of one pass that a worker adds in: loss, regulariser, non-zeros, features
  // computed, bytes sent and seconds waited (both since it started), rows, features skipped,
  // dual entropy, dual penalty.
  static constexpr uint32_t kFigures = 10;
  using Row = std::array<double, kFigures>;

  // `features`: this worker's feature ids, sorted and unique; `rows`: its data rows;
  // `nonzeros`: their non-zero values. Declares
  // the tables `<prefix>_stats`, `<prefix>_presence` and `<prefix>_model`: scratch tables, which
  // no checkpoint holds (pass_checkpoints.h). `adopt` (may be
  // empty): lost workers' shares are taken over with it. kInvalidArgument for more than 62
  // workers.
  static Result<std::unique_ptr<JobStats>> Create(Node& node, const std::string& prefix,
                                                  const std::vector<uint64_t>& features, uint64_t rows,
                                                  uint64_t nonzeros, std::chrono::milliseconds timeout,
                                                  DataDescriber describe_data = {}, Adopter adopt = {});

  // Max feature id + 1 over every worker (exact for any 64-bit id).
  uint64_t num_features() const { return num_features_; }
  // The rows of every worker's data together.
  uint64_t num_rows() const { return num_rows_; }
  // Their non-zero values together.
  uint64_t num_nonzeros() const { return num_nonzeros_; }
  // The shares of the job's data: the workers it started with.
  uint32_t num_shares() const { return workers_; }
  // owned()[j]: this worker is the lowest-ranked holder of features[j], so it alone counts it.
  const std::vector<bool>& owned() const { return owned_; }
  // The features this worker owns (those of owned()), sorted.
  std::vector<uint64_t> OwnedFeatures() const;

  // Adds `figures()` (this worker's, over the shares it holds; an error is returned) into the
  // row of `pass`, waits
  // for every worker (barrier) and returns the sum as a PassReport timed from `start`; when
  // shares were lost, takes them over (see the header) and does it again, calling figures()
  // anew. `*waited` grows by the time spent in barriers. kUnavailable naming the workers (and
  // their data) that did not contribute to the pass, without an Adopter.
  Result<PassReport> EndPass(int pass, const std::function<Result<Row>()>& figures,
                             std::chrono::steady_clock::time_point start, std::chrono::steady_clock::duration* waited);

  // Collective: the largest of the values every worker passes (each calls it alike, in the same
  // order, e.g. inside EndPass's figures()); a worker lost before it added its value in is left
  // out (EndPass then does the pass again). Each call leaves a row per worker (112 bytes) in the
  // stats table on a server, for the job's life.
  Result<double> MaxOverWorkers(double mine);

  // Collective, after the last pass: the non-zero weights of `table` (value 0 of each row of
  // `width` values), sorted by feature, on worker 0; empty on the others. Each worker pulls the
  // features it owns and hands the non-zero ones to the lead through `<prefix>_model`; lost
  // shares are taken over first. kUnavailable naming the workers (and their data) whose
  // weights are missing, without an Adopter.
  Result<std::vector<std::pair<uint64_t, double>>> CollectWeights(KVWorker<double>& kv, TableId table,
                                                                  uint32_t width);

  // This worker is the lead of the last EndPass or CollectWeights (the lowest-ranked live
  // worker): it got the weights, and prints and writes for the job.
  bool lead() const { return lead_ == node_.rank().value; }

 private:
  JobStats(Node& node, std::chrono::milliseconds timeout, DataDescriber describe_data, Adopter adopt)
      : node_(node), stats_(node), ints_(node), timeout_(timeout), describe_data_(std::move(describe_data)),
        adopt_(std::move(adopt)) {}

  // OK when `shares_seen` (bit r: share r) names every share; else the error for `when`.
  Status CheckEveryWorker(uint64_t shares_seen, const std::string& when) const;
  // True when `shares_seen` names every share. Otherwise the missing shares are handed to the
  // live workers (`workers_seen`, bit r: worker r), this one takes over its part, and false says
  // the step must be done again; an error if they cannot be taken over (no Adopter).
  Result<bool> TakeOverLost(uint64_t shares_seen, uint64_t workers_seen, const std::string& when);
  // Sets this worker's features and which of them it counts: those whose lowest share (of the
  // `<prefix>_presence` table) it holds.
  Status SetFeatures(std::vector<uint64_t> features);

  Node& node_;
  KVWorker<double> stats_;
  KVWorker<int64_t> ints_;
  std::chrono::milliseconds timeout_;
  DataDescriber describe_data_;
  Adopter adopt_;
  uint32_t workers_ = 0;          // the workers the job started with: its shares
  uint64_t max_calls_ = 0;        // MaxOverWorkers calls so far: each has keys of its own
  uint64_t shares_ = 0;           // bit r: this worker holds share r
  std::vector<NodeId> node_ids_;  // of the worker each share started with
  uint32_t lead_ = 0;
  double bytes_reported_ = 0;  // this worker's bytes sent, as of its last pass
  double bytes_total_ = 0;     // every worker's, over the passes so far
  Node::Traffic wire_reported_;     // this worker's wire traffic, as of its last pass
  double wire_sent_total_ = 0;      // every worker's wire bytes sent, over the passes so far
  double wire_received_total_ = 0;  // and received
  TableId stats_table_, presence_table_, model_table_;
  std::vector<uint64_t> features_;
  uint64_t num_features_ = 0;
  uint64_t num_rows_ = 0;
  uint64_t num_nonzeros_ = 0;
  std::vector<bool> owned_;
};

}  // namespace pserver::linear
