#include "apps/linear/synthetic.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numbers>
#include <numeric>
#include <utility>

#include "apps/linear/io_util.h"
#include "apps/linear/libsvm_reader.h"
#include "pserver/atomic_file.h"

namespace pserver::linear {
namespace {

__extension__ using Uint128 = unsigned __int128;

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
// Distinct streams derived from the seed.
constexpr uint64_t kRowStream = 0x726f777300000001ULL;
constexpr uint64_t kWeightStream = 0x7765696700000002ULL;
constexpr uint64_t kPermStream = 0x7065726d00000003ULL;

inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
// splitmix64: a tiny, portable generator (std:: distributions differ between libraries).
inline uint64_t Next(uint64_t* state) { return Mix(*state += kGolden); }
// Uniform in (0, 1].
inline double Unit(uint64_t x) { return static_cast<double>((x >> 11) + 1) * 0x1.0p-53; }

// Helpers of the rejection-inversion Zipf sampler (as in Apache Commons RNG).
double Helper1(double x) {  // log1p(x) / x
  return std::abs(x) > 1e-8 ? std::log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}
double Helper2(double x) {  // expm1(x) / x
  return std::abs(x) > 1e-8 ? std::expm1(x) / x
                            : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}

}  // namespace

Result<SyntheticData> SyntheticData::Create(const SyntheticOptions& o) {
  auto bad = [](std::string_view what) {
    return Status::InvalidArgument(fmt::format("SyntheticOptions: {}", what));
  };
  if (o.num_features < 1) return bad("num_features must be >= 1");
  if (!std::isfinite(o.nnz_per_row) || o.nnz_per_row < 1) return bad("nnz_per_row must be >= 1");
  if (!std::isfinite(o.zipf_exponent) || o.zipf_exponent < 0) {
    return bad("zipf_exponent must be >= 0");
  }
  if (!(o.weight_density >= 0 && o.weight_density <= 1)) {
    return bad("weight_density must be in [0, 1]");
  }
  if (!std::isfinite(o.weight_stddev) || o.weight_stddev < 0) {
    return bad("weight_stddev must be >= 0");
  }
  if (!std::isfinite(o.bias)) return bad("bias must be finite");
  return SyntheticData(o);
}

SyntheticData::SyntheticData(const SyntheticOptions& options) : options_(options) {
  const double e = options_.zipf_exponent;
  auto h = [e](double x) { return std::exp(-e * std::log(x)); };
  auto h_integral = [e](double x) {
    const double log_x = std::log(x);
    return Helper2((1 - e) * log_x) * log_x;
  };
  auto h_integral_inverse = [e](double x) {
    double t = x * (1 - e);
    if (t < -1) t = -1;
    return std::exp(Helper1(t) * x);
  };
  const double n = static_cast<double>(options_.num_features);
  h_integral_x1_ = h_integral(1.5) - 1;
  h_integral_n_ = h_integral(n + 0.5);
  s_ = 2 - h_integral_inverse(h_integral(2.5) - h(2));

  const uint64_t nf = options_.num_features;
  uint64_t perm_state = options_.seed ^ kPermStream;
  if (nf > 1) {
    multiplier_ = Next(&perm_state) % nf;
    if (multiplier_ == 0) multiplier_ = 1;
    while (std::gcd(multiplier_, nf) != 1) multiplier_ = multiplier_ % (nf - 1) + 1;
    offset_ = Next(&perm_state) % nf;
  }
}

uint64_t SyntheticData::SampleRank(uint64_t* state) const {
  const double e = options_.zipf_exponent;
  const uint64_t n = options_.num_features;
  for (;;) {
    const double u = h_integral_n_ + Unit(Next(state)) * (h_integral_x1_ - h_integral_n_);
    double t = u * (1 - e);
    if (t < -1) t = -1;
    const double x = std::exp(Helper1(t) * u);
    double kd = std::floor(x + 0.5);
    if (kd < 1) kd = 1;
    if (kd > static_cast<double>(n)) kd = static_cast<double>(n);
    const uint64_t k = static_cast<uint64_t>(kd);
    const double log_k5 = std::log(kd + 0.5);
    const double h_int_k = Helper2((1 - e) * log_k5) * log_k5;
    if (kd - x <= s_ || u >= h_int_k - std::exp(-e * std::log(kd))) return k;
  }
}

uint64_t SyntheticData::RankToFeature(uint64_t rank) const {
  const uint64_t n = options_.num_features;
  return static_cast<uint64_t>((static_cast<Uint128>(rank - 1) * multiplier_ + offset_) % n);
}

float SyntheticData::TrueWeight(uint64_t feature) const {
  if (feature >= options_.num_features) return 0;
  const uint64_t h = Mix(Mix(options_.seed ^ kWeightStream) ^ Mix(feature + kGolden));
  if (!(Unit(h) <= options_.weight_density) || options_.weight_density == 0) return 0;
  const double u1 = Unit(Mix(h + 1)), u2 = Unit(Mix(h + 2));
  return static_cast<float>(options_.weight_stddev * std::sqrt(-2 * std::log(u1)) *
                            std::cos(2 * std::numbers::pi * u2));
}

std::vector<float> SyntheticData::TrueWeights() const {
  std::vector<float> w(options_.num_features);
  for (uint64_t j = 0; j < w.size(); ++j) w[j] = TrueWeight(j);
  return w;
}

void SyntheticData::AppendRow(uint64_t row, Dataset* out) const {
  uint64_t state = Mix(Mix(options_.seed ^ kRowStream) ^ Mix(row + kGolden));
  const uint64_t max_k = static_cast<uint64_t>(std::max(1.0, 2 * options_.nnz_per_row - 1));
  uint64_t k =
      1 + static_cast<uint64_t>((Unit(Next(&state)) - 0x1.0p-53) * static_cast<double>(max_k));
  k = std::min({k, max_k, options_.num_features});
  std::vector<uint64_t> ids;
  ids.reserve(k);
  // Draw until k distinct features (bounded: heavy Zipf laws repeat the top ranks often).
  for (int round = 0; round < 32 && ids.size() < k; ++round) {
    for (uint64_t need = k - ids.size(); need > 0; --need) {
      ids.push_back(RankToFeature(SampleRank(&state)));
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  }
  std::vector<float> values(ids.size(), 1.0f);
  if (!options_.binary_values) {
    for (float& v : values) v = static_cast<float>(Unit(Next(&state)));
  }
  double margin = options_.bias;
  for (size_t i = 0; i < ids.size(); ++i) margin += TrueWeight(ids[i]) * values[i];
  const double p = 1 / (1 + std::exp(-margin));
  const float label = Unit(Next(&state)) <= p ? 1.0f : -1.0f;
  const Status s = out->AppendRow(label, ids, values);
  (void)s;  // cannot fail: ids are sorted and distinct, label is +1 or -1
}

Dataset SyntheticData::Generate(uint64_t first_row, uint64_t count) const {
  Dataset out;
  out.Reserve(count, static_cast<size_t>(static_cast<double>(count) * options_.nnz_per_row));
  for (uint64_t r = first_row; r < first_row + count; ++r) AppendRow(r, &out);
  return out;
}

Status SyntheticData::WriteLibsvm(const std::string& path, uint64_t first_row,
                                  uint64_t count) const {
  // Atomic (pserver/atomic_file.h): a failed write leaves no partial file under `path`.
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, AtomicFileWriter::Open(path));
  constexpr uint64_t kBatchRows = 4096;
  Dataset batch;
  std::string text;
  for (uint64_t r = first_row; r < first_row + count; r += kBatchRows) {
    batch.Clear();
    const uint64_t n = std::min(kBatchRows, first_row + count - r);
    for (uint64_t i = 0; i < n; ++i) AppendRow(r + i, &batch);
    text.clear();
    for (size_t i = 0; i < batch.num_rows(); ++i) AppendLibsvmRow(batch.row(i), &text);
    PSERVER_RETURN_IF_ERROR(out->Append(text));
  }
  return out->Commit();
}

}  // namespace pserver::linear
