// LinearModel: the sparse weights of a trained linear model, its file format and its use.
//
// File format (little-endian), written atomically (pserver/atomic_file.h):
//   magic "PSLM" (4 bytes) | version u32 (2) | num_features u64 | count u64 |
//   count x (feature u64, weight f64), features strictly increasing, weights finite |
//   checksum u64: XXH64 (seed 0) of every byte before it (version 1: FNV-1a 64; still read).
// Load refuses, with kCorruption naming the file and what is wrong, a file that is short,
// long, of another magic or version, unsorted, holding a NaN or infinite weight (naming the
// feature), or whose checksum does not match.
//
// Thread-compatible value type.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/linear/dataset.h"
#include "pserver/atomic_file.h"
#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::linear {

struct Metrics {
  double log_loss = 0;  // mean over rows
  double auc = 0;       // area under the ROC curve (0.5 when one class is missing)
  double accuracy = 0;  // sign of the score against the label
  size_t rows = 0;
};

class LinearModel {
 public:
  LinearModel() = default;
  // REQUIRES: `weights` sorted by feature, features < num_features.
  LinearModel(uint64_t num_features, std::vector<std::pair<uint64_t, double>> weights);

  static Result<LinearModel> Load(const std::string& path);
  // Writes the model atomically. kInvalidArgument (and nothing written) if a weight is NaN or
  // infinite; the errors of WriteFileAtomically (pserver/atomic_file.h) otherwise.
  // Writes the model file to `path` atomically (include/pserver/atomic_file.h). kInvalidArgument
  // for a non-finite weight; the writer's errors otherwise.
  Status Save(const std::string& path) const;
  // Save in two steps: the file written and synced beside `path`, to be put in place by the
  // returned writer's Commit() (a cheap rename) -- or dropped, with nothing left, if the writer
  // is destroyed first. Errors as Save.
  Result<std::unique_ptr<AtomicFileWriter>> Stage(const std::string& path) const;

  uint64_t num_features() const { return num_features_; }
  const std::vector<std::pair<uint64_t, double>>& weights() const { return weights_; }
  double Weight(uint64_t feature) const;

  // <x_r, w> for every row (features beyond the model count as weight 0).
  std::vector<double> Scores(const Dataset& data) const;

 private:
  uint64_t num_features_ = 0;
  std::vector<std::pair<uint64_t, double>> weights_;
};

// Log-loss, AUC and accuracy of `scores` (margins) against `labels` (+1/-1). Ends on any
// input: a NaN score ranks below every number (tied with the other NaNs) for the AUC.
Metrics Evaluate(const std::vector<double>& scores, const std::vector<float>& labels);

}  // namespace pserver::linear
