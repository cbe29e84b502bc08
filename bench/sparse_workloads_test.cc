// The sparse workloads of `pserver bench` do the work they claim: after known pushes the values
// the workload pulls are the SGD closed form (every key of every request set, on one and on two
// servers, pushes and pulls), and the bound runs on as many threads as a server applies on.
// Durations are tiny and nothing is asserted about speed.
#include "sparse_workloads.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "testing/test_util.h"

namespace pserver::bench {
namespace {

using std::chrono::milliseconds;

struct Cell {
  bool push;
  int servers;
  int workers;
};

class SparseWorkloadTest : public ::testing::TestWithParam<Cell> {};

// Known pushes: every worker pushes every set once (the warm-up), then a push workload issues
// exactly R requests per worker, request i pushing set i mod S. The table's rule is plain SGD
// with lr 0.01 from zero, so key k ends at -0.01 * sum over its pushes of g -- summed here in
// double, independently of the workload.
TEST_P(SparseWorkloadTest, PulledValuesEqualTheSgdClosedForm) {
  const Cell c = GetParam();
  SparseWorkloadOptions o;
  o.push = c.push;
  o.num_servers = c.servers;
  o.num_workers = c.workers;
  o.apply_threads = 2;  // a request's keys split over two shard threads on every server
  o.keys_per_request = 3000;
  o.key_space = 8000;  // sets overlap: some keys are in several
  o.request_sets = 3;
  o.window = 2;
  o.exact_requests = 7;  // sets 0, 1, 2, 0, 1, 2, 0
  o.collect_values = true;
  o.min_duration = milliseconds(0);
  o.seed = pserver::testing::TestSeed(4242);
  Result<SparseRequests> req = MakeSparseRequests(o);
  ASSERT_OK(req);
  Result<SparseThroughput> r = MeasureClusterSparse(o, *req);
  ASSERT_OK(r);
  const size_t sets = req->keys.size();
  std::vector<int> pushes_of_set(sets, c.workers);  // the warm-up
  if (c.push) {
    for (uint64_t i = 0; i < o.exact_requests; ++i) pushes_of_set[i % sets] += c.workers;
  }
  EXPECT_EQ(pushes_of_set[0], c.workers * (c.push ? 4 : 1));
  std::map<Key, double> sum;    // of the gradients pushed, by key
  std::map<Key, double> scale;  // of their magnitudes, for the float rounding allowance
  for (size_t s = 0; s < sets; ++s) {
    for (size_t i = 0; i < req->keys[s].size(); ++i) {
      sum[req->keys[s][i]] += pushes_of_set[s] * static_cast<double>(req->grads[s][i]);
      scale[req->keys[s][i]] += pushes_of_set[s] * std::abs(static_cast<double>(req->grads[s][i]));
    }
  }
  ASSERT_EQ(r->values.size(), sets);
  size_t checked = 0, wrong = 0;
  for (size_t s = 0; s < sets; ++s) {
    ASSERT_EQ(r->values[s].size(), req->keys[s].size()) << "set " << s;
    for (size_t i = 0; i < req->keys[s].size(); ++i) {
      const Key k = req->keys[s][i];
      const double want = -0.01 * sum[k];
      const double tol = 1e-6 * (0.01 * scale[k]) + 1e-9;  // float steps: about 2^-24 each
      const double got = r->values[s][i];
      if (std::abs(got - want) > tol && ++wrong <= 5) {
        ADD_FAILURE() << "set " << s << " key " << k << ": pulled " << got << ", SGD closed form " << want;
      }
      ++checked;
    }
  }
  std::printf("checked %zu pulled values against the closed form; %zu wrong\n", checked, wrong);
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(checked, sets * o.keys_per_request);
}

INSTANTIATE_TEST_SUITE_P(Cells, SparseWorkloadTest,
                         ::testing::Values(Cell{true, 1, 1}, Cell{true, 2, 2}, Cell{false, 1, 1}, Cell{false, 2, 2}),
                         [](const auto& info) {
                           return std::string(info.param.push ? "push" : "pull") + "_" +
                                  std::to_string(info.param.servers) + "s" + std::to_string(info.param.workers) + "w";
                         });

TEST(SparseWorkloadTest, RefusesAnExactCountWithinTheWindow) {
  SparseWorkloadOptions o;
  o.keys_per_request = 10;
  o.key_space = 100;
  o.window = 4;
  o.exact_requests = 4;
  Result<SparseRequests> req = MakeSparseRequests(o);
  ASSERT_OK(req);
  EXPECT_EQ(MeasureClusterSparse(o, *req).status().code(), StatusCode::kInvalidArgument);
}

TEST(SparseApplyThreadsTest, SharesTheHardwareThreadsAmongTheServers) {
  const uint32_t hw = std::max(1u, std::thread::hardware_concurrency());
  SparseWorkloadOptions o;
  o.num_servers = 1;
  EXPECT_EQ(SparseApplyThreads(o), hw);
  o.num_servers = 2;
  EXPECT_EQ(SparseApplyThreads(o), std::max(1u, hw / 2));
  o.num_servers = static_cast<int>(hw) + 1;
  EXPECT_EQ(SparseApplyThreads(o), 1u);
  o.apply_threads = 3;
  EXPECT_EQ(SparseApplyThreads(o), 3u);
}

// The bound runs on a server's apply threads and gets through keys (push and pull).
TEST(SparseBoundTest, RunsOnAsManyThreadsAsAServerAppliesOn) {
  for (bool push : {true, false}) {
    SparseWorkloadOptions o;
    o.push = push;
    o.apply_threads = 3;
    o.keys_per_request = 1000;
    o.key_space = 5000;
    o.request_sets = 2;
    o.min_duration = milliseconds(0);  // the bound times at least 200 ms
    Result<SparseRequests> req = MakeSparseRequests(o);
    ASSERT_OK(req);
    const SparseBound b = MeasureSparseBound(o, *req);
    EXPECT_EQ(b.threads, 3u);
    EXPECT_GT(b.keys_per_sec, 0.0);
    EXPECT_GT(b.cpu_us_per_request, 0.0);
  }
}

}  // namespace
}  // namespace pserver::bench
