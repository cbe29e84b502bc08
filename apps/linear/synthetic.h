// A seeded generator of synthetic click-style data for sparse logistic regression, of any
// size, whose true model is known.
//
// The model: a sparse weight vector w over `num_features` features (each feature's weight is
// non-zero with probability `weight_density`, then drawn from N(0, weight_stddev^2)) and a
// `bias`. A row has a number of distinct features drawn uniformly from
// [1, 2 * nnz_per_row - 1] (mean nnz_per_row); the features are drawn by frequency rank from a
// Zipf law P(rank k) ~ k^-zipf_exponent, and ranks map to feature ids by a fixed seeded
// bijection (so frequent features are spread over the id space, as hashed real features are).
// Values are 1 (binary, like clicks) or, with binary_values = false, uniform in (0, 1].
// The label is +1 with probability sigmoid(bias + w.x), else -1.
//
// Every row and every weight is a pure function of (options, index): the output is the same
// on every run and every machine, and any range of rows can be generated independently
// (e.g. one range per worker) without generating the rows before it. No state grows with
// num_features, so paper-scale sizes (10^7 rows x 10^6+ features) stream to a file.
//
// Thread-safe: all methods are const and share no mutable state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/linear/dataset.h"
#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::linear {

struct SyntheticOptions {
  uint64_t num_rows = 10000;
  uint64_t num_features = 100000;
  double nnz_per_row = 20;      // mean distinct features per row; at least 1
  double zipf_exponent = 1.0;   // >= 0; 0 means uniform feature frequencies
  double weight_density = 0.1;  // fraction of features with a non-zero true weight, in [0, 1]
  double weight_stddev = 1.0;   // of the non-zero true weights
  double bias = 0.0;            // the true intercept
  bool binary_values = true;
  uint64_t seed = 1;
};

class SyntheticData {
 public:
  // Validates `options` (kInvalidArgument naming the bad field: num_features >= 1,
  // nnz_per_row >= 1, zipf_exponent >= 0, weight_density in [0, 1], weight_stddev >= 0,
  // all finite).
  static Result<SyntheticData> Create(const SyntheticOptions& options);

  const SyntheticOptions& options() const { return options_; }

  // The true weight of a (0-based) feature id; 0 for ids >= num_features.
  float TrueWeight(uint64_t feature) const;
  // All true weights, dense (num_features floats: mind the memory for huge feature counts).
  std::vector<float> TrueWeights() const;

  // Appends row `row` (any index, also >= num_rows) to `out`.
  void AppendRow(uint64_t row, Dataset* out) const;

  // Rows [first_row, first_row + count).
  Dataset Generate(uint64_t first_row, uint64_t count) const;
  // All num_rows rows (mind the memory).
  Dataset Generate() const { return Generate(0, options_.num_rows); }

  // Streams rows [first_row, first_row + count) as libsvm text to `path` (written to a
  // temporary file, then renamed), using memory independent of the row count.
  // Returns kUnavailable (kNotFound for a missing directory) on I/O errors.
  Status WriteLibsvm(const std::string& path, uint64_t first_row, uint64_t count) const;
  Status WriteLibsvm(const std::string& path) const {
    return WriteLibsvm(path, 0, options_.num_rows);
  }

 private:
  explicit SyntheticData(const SyntheticOptions& options);
  uint64_t SampleRank(uint64_t* state) const;  // Zipf rank in [1, num_features]
  uint64_t RankToFeature(uint64_t rank) const;

  SyntheticOptions options_;
  // Rejection-inversion Zipf sampler constants (Hörmann & Derflinger 1996).
  double h_integral_x1_ = 0;
  double h_integral_n_ = 0;
  double s_ = 0;
  // rank -> id bijection: id = (rank - 1) * multiplier_ + offset_ mod num_features.
  uint64_t multiplier_ = 1;
  uint64_t offset_ = 0;
};

}  // namespace pserver::linear
