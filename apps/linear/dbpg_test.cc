// DBPG on an in-process cluster against an independent reference: plain proximal gradient
// (ISTA with a fixed step 1/L) run to convergence on the whole of a tiny data set. Also the KKT
// filter (it changes the traffic, never the result) and the rule's closed form.
#include "apps/linear/dbpg.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <cstdio>
#include <mutex>
#include <random>

#include "apps/linear/dbpg_rule.h"
#include "apps/linear/logistic.h"
#include "apps/linear/online.h"
#include "pserver/kv_server.h"
#include "testing/local_cluster.h"
#include "testing/test_util.h"

namespace pserver::linear {
namespace {

using pserver::testing::LocalCluster;
using pserver::testing::LocalClusterOptions;

// A tiny data set with correlated, partly irrelevant features; labels from a sparse true model.
Dataset TinyData(uint32_t seed, size_t rows, size_t features) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<double> truth(features, 0.0);
  for (size_t j = 0; j < features; j += 3) truth[j] = unit(rng) * 4 - 2;
  Dataset d;
  for (size_t r = 0; r < rows; ++r) {
    std::vector<uint64_t> ids;
    std::vector<float> vals;
    double margin = 0;
    for (size_t j = 0; j < features; ++j) {
      if (unit(rng) < 0.5) continue;
      const float v = static_cast<float>(0.25 + unit(rng));
      ids.push_back(j);
      vals.push_back(v);
      margin += truth[j] * v;
    }
    const float label = unit(rng) < Sigmoid(margin) ? 1.0f : -1.0f;
    EXPECT_OK(d.AppendRow(label, ids, vals));
  }
  return d;
}

double Objective(const Dataset& d, const std::vector<double>& w, double l1, double l2) {
  double f = 0;
  for (size_t r = 0; r < d.num_rows(); ++r) {
    RowView row = d.row(r);
    double m = 0;
    for (size_t k = 0; k < row.feature_ids.size(); ++k) m += w[row.feature_ids[k]] * row.values[k];
    f += Log1pExp(-row.label * m);
  }
  for (double x : w) f += l1 * std::abs(x) + l2 * x * x;
  return f;
}

// ISTA: w <- S(w - step * grad f(w), step * l1), step = 1 / L with L = ||X||_F^2 / 4 + 2 l2.
std::vector<double> ReferenceSolve(const Dataset& d, size_t features, double l1, double l2) {
  double frob = 0;
  for (float v : d.values()) frob += static_cast<double>(v) * v;
  const double step = 1 / (frob / 4 + 2 * l2);
  std::vector<double> w(features, 0.0), grad(features);
  double previous = 1e300;
  for (int it = 0; it < 200000; ++it) {
    std::fill(grad.begin(), grad.end(), 0.0);
    for (size_t r = 0; r < d.num_rows(); ++r) {
      RowView row = d.row(r);
      double m = 0;
      for (size_t k = 0; k < row.feature_ids.size(); ++k) m += w[row.feature_ids[k]] * row.values[k];
      const double coef = -row.label * (1 - Sigmoid(row.label * m));
      for (size_t k = 0; k < row.feature_ids.size(); ++k) grad[row.feature_ids[k]] += coef * row.values[k];
    }
    for (size_t j = 0; j < features; ++j) {
      const double z = w[j] - step * (grad[j] + 2 * l2 * w[j]);
      w[j] = z > step * l1 ? z - step * l1 : (z < -step * l1 ? z + step * l1 : 0.0);
    }
    if (it % 100 == 0) {
      const double f = Objective(d, w, l1, l2);
      if (std::abs(previous - f) < 1e-14 * std::abs(f)) break;
      previous = f;
    }
  }
  return w;
}

// Every worker runs `train` on rows r with r % workers == rank; returns worker 0's result.
template <typename R>
Result<R> RunOnCluster(const Dataset& all, uint32_t workers, uint32_t servers,
                       const std::function<Result<R>(Node&, const Dataset&)>& train) {
  LocalClusterOptions c;
  c.inproc = true;
  c.num_workers = workers;
  c.num_servers = servers;
  auto cluster = LocalCluster::Start(c, [](Node& server) -> std::shared_ptr<void> {
    ServerOptions so;
    EXPECT_OK(RegisterLinearRules(so.updaters));
    struct Both {
      Both(Node& n, const ServerOptions& so) : f64(n, so), i64(n) {}
      KVServer<double> f64;
      KVServer<int64_t> i64;
    };
    return std::make_shared<Both>(server, so);
  });
  PSERVER_RETURN_IF_ERROR(cluster.status());
  std::mutex mu;
  R first;
  Status s = (*cluster)->RunWorkers([&](Node& node) -> Status {
    Dataset mine;
    for (size_t r = node.rank().value; r < all.num_rows(); r += node.num_workers()) {
      RowView row = all.row(r);
      PSERVER_RETURN_IF_ERROR(mine.AppendRow(row.label, row.feature_ids, row.values));
    }
    PSERVER_ASSIGN_OR_RETURN(R res, train(node, mine));
    if (node.rank().value == 0) {
      std::lock_guard lock(mu);
      first = std::move(res);
    }
    return Status::Ok();
  });
  PSERVER_RETURN_IF_ERROR(s);
  return first;
}

Result<DbpgResult> TrainOnCluster(const Dataset& all, const DbpgOptions& o, uint32_t workers, uint32_t servers) {
  return RunOnCluster<DbpgResult>(all, workers, servers,
                                  [&](Node& node, const Dataset& mine) { return TrainDbpg(node, mine, o); });
}

struct Case {
  int64_t tau;
  uint32_t workers;
};

class DbpgTest : public ::testing::TestWithParam<Case> {};

TEST_P(DbpgTest, ReachesTheReferenceOptimum) {
  const uint32_t seed = 1234;
  std::printf("seed %u\n", seed);
  const size_t features = 12;
  const Dataset data = TinyData(seed, 80, features);
  const double l1 = 1.0, l2 = 0.01;
  const std::vector<double> ref = ReferenceSolve(data, features, l1, l2);
  const double ref_obj = Objective(data, ref, l1, l2);
  DbpgOptions o;
  o.l1 = l1;
  o.l2 = l2;
  o.tau = GetParam().tau;
  o.num_blocks = 6;
  o.max_passes = 3000;
  o.rel_tol = 1e-12;
  Result<DbpgResult> r = TrainOnCluster(data, o, GetParam().workers, 2);
  ASSERT_OK(r);
  ASSERT_FALSE(r->passes.empty());
  const double got = r->passes.back().objective;
  std::printf("reference objective %.10f, dbpg %.10f after %zu passes\n", ref_obj, got, r->passes.size());
  EXPECT_LE(std::abs(got - ref_obj) / ref_obj, 1e-4);
  // The model worker 0 collected gives the same objective.
  std::vector<double> w(features, 0.0);
  for (const auto& [f, v] : r->weights) w[f] = v;
  EXPECT_LE(std::abs(Objective(data, w, l1, l2) - ref_obj) / ref_obj, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Delays, DbpgTest, ::testing::Values(Case{0, 1}, Case{0, 2}, Case{4, 2}),
                         [](const auto& info) {
                           return "tau" + std::to_string(info.param.tau) + "_workers" +
                                  std::to_string(info.param.workers);
                         });

TEST(DbpgKktTest, FilterChangesTrafficNotTheResult) {
  const Dataset data = TinyData(99, 120, 30);
  DbpgOptions o;
  o.l1 = 4.0;  // a sparse optimum: many features stay zero
  o.num_blocks = 3;
  o.max_passes = 3000;
  o.rel_tol = 1e-12;
  o.kkt_filter = true;
  Result<DbpgResult> with = TrainOnCluster(data, o, 2, 1);
  o.kkt_filter = false;
  Result<DbpgResult> without = TrainOnCluster(data, o, 2, 1);
  ASSERT_OK(with);
  ASSERT_OK(without);
  const double a = with->passes.back().objective, b = without->passes.back().objective;
  std::printf("objective with KKT filter %.12f, without %.12f\n", a, b);
  EXPECT_LE(std::abs(a - b) / b, 1e-6);
  uint64_t active_with = 0, active_without = 0;
  for (const PassReport& p : with->passes) active_with += p.active_features;
  for (const PassReport& p : without->passes) active_without += p.active_features;
  const double per_pass_with = static_cast<double>(active_with) / with->passes.size();
  const double per_pass_without = static_cast<double>(active_without) / without->passes.size();
  std::printf("features computed per pass: %.1f with the filter, %.1f without\n", per_pass_with, per_pass_without);
  EXPECT_LT(per_pass_with, per_pass_without);
}

// The online solvers approach the same optimum (loosely: they are stochastic first-order
// methods) and their objective goes down.
TEST(OnlineTest, SgdAndFtrlApproachTheOptimum) {
  const size_t features = 12;
  const Dataset data = TinyData(1234, 80, features);
  const double l1 = 1.0, l2 = 0.01;
  const double ref_obj = Objective(data, ReferenceSolve(data, features, l1, l2), l1, l2);
  for (const char* rule : {"sgd", "ftrl"}) {
    OnlineOptions o;
    o.rule = rule;
    o.l1 = l1;
    o.l2 = l2;
    o.tau = 1;
    o.minibatch = 8;
    o.learning_rate = 0.5;
    o.max_passes = std::string(rule) == "sgd" ? 300 : 100;
    o.rel_tol = 1e-9;
    Result<OnlineResult> r = RunOnCluster<OnlineResult>(
        data, 2, 2, [&](Node& node, const Dataset& mine) { return TrainOnline(node, mine, o); });
    ASSERT_OK(r);
    const double first = r->passes.front().objective, last = r->passes.back().objective;
    std::printf("%s: objective %.6f after 1 pass, %.6f after %zu; optimum %.6f\n", rule, first, last,
                r->passes.size(), ref_obj);
    EXPECT_LT(last, first) << rule;
    EXPECT_LE((last - ref_obj) / ref_obj, 0.05) << rule;
  }
}

TEST(DbpgRuleTest, ProxStepClosedForm) {
  // No curvature: unchanged.
  EXPECT_EQ(ProxStep(0.5, 1, 0, 1, 0, 5), 0.5);
  // Inside the L1 band from zero: stays zero.
  EXPECT_EQ(ProxStep(0, 0.5, 2, 1, 0, 5), 0.0);
  // Newton step then shrink: (U w0 - G - l1) / U = (2*0 + 3 - 1) / 2 = 1.
  EXPECT_DOUBLE_EQ(ProxStep(0, -3, 2, 1, 0, 5), 1.0);
  // Clamped by the trust region.
  EXPECT_DOUBLE_EQ(ProxStep(0, -300, 2, 1, 0, 5), 5.0);
  // L2 adds to the curvature: (0 + 3 - 1) / (2 + 2) = 0.5.
  EXPECT_DOUBLE_EQ(ProxStep(0, -3, 2, 1, 2, 5), 0.5);
}

TEST(DbpgRuleTest, RefusesUnknownAndOutOfRangeParameters) {
  EXPECT_EQ(MakeDbpgRule({.name = "dbpg", .params = {{"lambda", 1}}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeDbpgRule({.name = "dbpg", .params = {{"l1", -1}}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeDbpgRule({.name = "dbpg", .params = {{"delta", 0}}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_OK(MakeDbpgRule({.name = "dbpg", .params = {{"l1", 1}, {"l2", 0.5}, {"delta", 2}}}).status());
}

}  // namespace
}  // namespace pserver::linear
