#include "apps/linear/dataset.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace pserver::linear {
namespace {

TEST(DatasetTest, AppendRowBuildsCsr) {
  Dataset d;
  EXPECT_EQ(d.num_rows(), 0u);
  EXPECT_EQ(d.num_features(), 0u);
  const std::vector<uint64_t> ids{2, 5, 9};
  const std::vector<float> vals{1.f, 0.5f, -2.f};
  ASSERT_TRUE(d.AppendRow(1, ids, vals).ok());
  ASSERT_TRUE(d.AppendRow(-1, {}, {}).ok());
  ASSERT_TRUE(d.AppendRow(-1, std::vector<uint64_t>{0}, std::vector<float>{3.f}).ok());
  EXPECT_EQ(d.num_rows(), 3u);
  EXPECT_EQ(d.nnz(), 4u);
  EXPECT_EQ(d.max_feature_id(), 9u);
  EXPECT_EQ(d.num_features(), 10u);
  EXPECT_EQ(d.offsets(), (std::vector<uint64_t>{0, 3, 3, 4}));
  RowView r = d.row(0);
  EXPECT_EQ(r.label, 1.f);
  EXPECT_EQ(std::vector<uint64_t>(r.feature_ids.begin(), r.feature_ids.end()), ids);
  EXPECT_TRUE(d.row(1).feature_ids.empty());
}

TEST(DatasetTest, AppendRowRefusesBadRows) {
  Dataset d;
  EXPECT_EQ(d.AppendRow(0.5f, {}, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(d.AppendRow(1, std::vector<uint64_t>{3, 3}, std::vector<float>{1, 1}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(d.AppendRow(1, std::vector<uint64_t>{3}, std::vector<float>{}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(d.num_rows(), 0u);
  EXPECT_EQ(d, Dataset());
}

TEST(DatasetTest, FromArraysChecksInvariants) {
  auto ok = Dataset::FromArrays({1, -1}, {0, 2, 3}, {1, 4, 0}, {1, 1, 1});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->num_features(), 5u);
  EXPECT_FALSE(Dataset::FromArrays({1, -1}, {0, 2}, {1, 4}, {1, 1}).ok());    // offsets size
  EXPECT_FALSE(Dataset::FromArrays({1}, {0, 2}, {4, 1}, {1, 1}).ok());        // unsorted
  EXPECT_FALSE(Dataset::FromArrays({1}, {0, 3}, {1, 4}, {1, 1}).ok());        // last offset
  EXPECT_FALSE(Dataset::FromArrays({2}, {0, 1}, {1}, {1}).ok());              // label
  EXPECT_FALSE(Dataset::FromArrays({1, 1}, {0, 2, 1}, {1, 4}, {1, 1}).ok());  // decreasing
}

// A non-finite value or a feature id of 2^64 - 1 (whose num_features() would wrap to 0) breaks
// the solvers: refused wherever a Dataset is built, also from a data cache whose checksum is
// right (issue 11).
TEST(DatasetTest, RefusesNonFiniteValuesAndTheLargestId) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const uint64_t top = std::numeric_limits<uint64_t>::max();
  for (float bad : {nan, inf, -inf}) {
    Dataset d;
    Status s = d.AppendRow(1, std::vector<uint64_t>{3, 4}, std::vector<float>{1.f, bad});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("feature 4"), std::string::npos) << s.ToString();
    EXPECT_TRUE(d.empty());
    Result<Dataset> r = Dataset::FromArrays({1.f}, {0, 1}, {7}, {bad});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("row 0: feature 7"), std::string::npos) << r.status().ToString();
  }
  Dataset d;
  EXPECT_EQ(d.AppendRow(1, std::vector<uint64_t>{top}, std::vector<float>{1.f}).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(d.AppendRow(1, std::vector<uint64_t>{top - 1}, std::vector<float>{1.f}).ok());
  EXPECT_EQ(d.num_features(), top);
  EXPECT_EQ(Dataset::FromArrays({1.f}, {0, 1}, {top}, {1.f}).status().code(), StatusCode::kInvalidArgument);
}

TEST(DatasetTest, AppendConcatenates) {
  Dataset a, b, all;
  ASSERT_TRUE(a.AppendRow(1, std::vector<uint64_t>{1}, std::vector<float>{2}).ok());
  ASSERT_TRUE(b.AppendRow(-1, std::vector<uint64_t>{0, 7}, std::vector<float>{3, 4}).ok());
  ASSERT_TRUE(all.AppendRow(1, std::vector<uint64_t>{1}, std::vector<float>{2}).ok());
  ASSERT_TRUE(all.AppendRow(-1, std::vector<uint64_t>{0, 7}, std::vector<float>{3, 4}).ok());
  a.Append(b);
  EXPECT_EQ(a, all);
  EXPECT_EQ(a.num_features(), 8u);
}

}  // namespace
}  // namespace pserver::linear
