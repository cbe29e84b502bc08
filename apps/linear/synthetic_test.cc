#include "apps/linear/synthetic.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "apps/linear/libsvm_reader.h"

namespace pserver::linear {
namespace {

TEST(SyntheticTest, RefusesBadOptions) {
  EXPECT_EQ(SyntheticData::Create({.num_features = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(SyntheticData::Create({.nnz_per_row = 0.5}).ok());
  EXPECT_FALSE(SyntheticData::Create({.zipf_exponent = -1}).ok());
  EXPECT_FALSE(SyntheticData::Create({.weight_density = 1.5}).ok());
  EXPECT_FALSE(SyntheticData::Create({.weight_density = NAN}).ok());
}

TEST(SyntheticTest, IsDeterministicAndRangesAreIndependent) {
  const SyntheticOptions o{
      .num_rows = 2000, .num_features = 50000, .nnz_per_row = 15, .zipf_exponent = 1.1, .seed = 42};
  auto a = SyntheticData::Create(o);
  auto b = SyntheticData::Create(o);
  ASSERT_TRUE(a.ok() && b.ok());
  const Dataset da = a->Generate();
  EXPECT_TRUE(da == b->Generate());
  // Rows [500, 1500) generated alone equal the same rows of the whole.
  Dataset head = a->Generate(0, 500), mid = a->Generate(500, 1000), tail = a->Generate(1500, 500);
  head.Append(mid);
  head.Append(tail);
  EXPECT_TRUE(head == da);
  // A pinned fingerprint: the same output on every run and machine.
  uint64_t fp = 1469598103934665603ULL;
  for (uint64_t id : da.feature_ids()) fp = (fp ^ id) * 1099511628211ULL;
  for (float l : da.labels()) fp = (fp ^ (l > 0 ? 1u : 2u)) * 1099511628211ULL;
  std::printf("fingerprint %016llx nnz %zu\n", static_cast<unsigned long long>(fp), da.nnz());
  EXPECT_EQ(fp, 0xe5de6981ad6a6541ULL);
  EXPECT_EQ(da.nnz(), 30091u);
  // Another seed gives other data.
  SyntheticOptions o2 = o;
  o2.seed = 43;
  EXPECT_FALSE(SyntheticData::Create(o2)->Generate() == da);
}

TEST(SyntheticTest, ShapeFollowsOptions) {
  const SyntheticOptions o{.num_rows = 20000,
                           .num_features = 100000,
                           .nnz_per_row = 30,
                           .zipf_exponent = 1.0,
                           .weight_density = 0.2,
                           .seed = 5};
  auto g = SyntheticData::Create(o);
  ASSERT_TRUE(g.ok());
  const Dataset d = g->Generate();
  ASSERT_EQ(d.num_rows(), o.num_rows);
  EXPECT_LT(d.num_features(), o.num_features + 1);
  const double mean_nnz = static_cast<double>(d.nnz()) / static_cast<double>(d.num_rows());
  EXPECT_GT(mean_nnz, 25);  // a few draws collide on frequent features
  EXPECT_LT(mean_nnz, 31);
  // Power law: the most frequent feature is far more frequent than the median feature.
  std::vector<uint64_t> counts(o.num_features);
  for (uint64_t id : d.feature_ids()) ++counts[id];
  std::sort(counts.begin(), counts.end(), std::greater<>());
  EXPECT_GT(counts[0], 50 * std::max<uint64_t>(1, counts[1000]));
  // Weight density.
  const std::vector<float> w = g->TrueWeights();
  const double nonzero =
      static_cast<double>(std::count_if(w.begin(), w.end(), [](float x) { return x != 0; }));
  EXPECT_NEAR(nonzero / static_cast<double>(w.size()), 0.2, 0.01);
  EXPECT_EQ(g->TrueWeight(o.num_features), 0.f);
}

TEST(SyntheticTest, LabelsAgreeWithTheTrueWeights) {
  const SyntheticOptions o{.num_rows = 20000,
                           .num_features = 20000,
                           .nnz_per_row = 20,
                           .weight_density = 0.3,
                           .weight_stddev = 1.0,
                           .seed = 11};
  auto g = SyntheticData::Create(o);
  ASSERT_TRUE(g.ok());
  const Dataset d = g->Generate();
  const std::vector<float> w = g->TrueWeights();
  size_t agree = 0, positives = 0;
  double expected_agree = 0;  // sum over rows of max(p, 1 - p): the Bayes accuracy
  for (size_t r = 0; r < d.num_rows(); ++r) {
    const RowView row = d.row(r);
    double margin = o.bias;
    for (size_t k = 0; k < row.feature_ids.size(); ++k)
      margin += w[row.feature_ids[k]] * row.values[k];
    const double p = 1 / (1 + std::exp(-margin));
    expected_agree += std::max(p, 1 - p);
    if ((margin > 0) == (row.label > 0)) ++agree;
    if (row.label > 0) ++positives;
  }
  const double n = static_cast<double>(d.num_rows());
  const double accuracy = static_cast<double>(agree) / n;
  std::printf("true-model accuracy %.4f (Bayes expectation %.4f), positives %.3f\n", accuracy,
              expected_agree / n, static_cast<double>(positives) / n);
  EXPECT_GT(accuracy, 0.7);
  EXPECT_NEAR(accuracy, expected_agree / n, 0.02);  // labels follow the logistic model
  EXPECT_GT(static_cast<double>(positives) / n, 0.2);
  EXPECT_LT(static_cast<double>(positives) / n, 0.8);
}

TEST(SyntheticTest, WriteLibsvmStreamsTheSameRows) {
  const SyntheticOptions o{.num_rows = 10000,
                           .num_features = 1000000,
                           .nnz_per_row = 8,
                           .binary_values = false,
                           .seed = 9};
  auto g = SyntheticData::Create(o);
  ASSERT_TRUE(g.ok());
  const std::string path = (std::filesystem::temp_directory_path() /
                            fmt::format("pserver_linear_synth_{}.svm", ::getpid()))
                               .string();
  ASSERT_TRUE(g->WriteLibsvm(path).ok());
  auto back = ReadLibsvm(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == g->Generate());
}

}  // namespace
}  // namespace pserver::linear
