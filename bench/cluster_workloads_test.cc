// The pserver side of `pserver bench`'s dense cells: every shape completes requests on a small
// cluster under either server setup, and the setups do what they claim -- the default servers
// store the pushed rows, the diagnostic ones (ServerWork::kNone) store nothing and answer
// pulls with zeros -- and the arithmetic raw ZeroMQ bound runs the same shapes and really sums.
// Durations are tiny and nothing is asserted about speed.
#include "cluster_workloads.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kv/local_cluster.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"

namespace pserver::bench {
namespace {

using std::chrono::milliseconds;

struct Cell {
  Shape shape;
  ServerWork work;
};

class ClusterThroughputTest : public ::testing::TestWithParam<Cell> {};

TEST_P(ClusterThroughputTest, CompletesRequestsOnTwoServers) {
  ClusterWorkloadOptions o;
  o.shape = GetParam().shape;
  o.server_work = GetParam().work;
  o.bytes = 4096;
  o.window = 8;
  o.num_servers = 2;
  o.min_duration = milliseconds(50);
  o.warmup_requests = 4;
  o.verify = true;
  Result<ThroughputResult> r = MeasureClusterThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->requests, 0u);
  EXPECT_GT(r->requests_per_sec, 0.0);
  EXPECT_GT(r->cpu_seconds, 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Cells, ClusterThroughputTest,
    ::testing::Values(Cell{Shape::kPush, ServerWork::kStore}, Cell{Shape::kPull, ServerWork::kStore},
                      Cell{Shape::kPushPull, ServerWork::kStore}, Cell{Shape::kPush, ServerWork::kNone},
                      Cell{Shape::kPull, ServerWork::kNone}, Cell{Shape::kPushPull, ServerWork::kNone}),
    [](const ::testing::TestParamInfo<Cell>& info) {
      return std::string(ShapeName(info.param.shape)) + (info.param.work == ServerWork::kNone ? "_none" : "_store");
    });

// The arithmetic bound that `pserver bench` prints beside each cell runs the cell's own shape:
// the same payload per request, the same servers and workers, and for pull a stored row per key
// (pushed once before timing, as the cluster cell does). Its servers really sum: the rows pulled
// after the run add up to what was pushed.
class ArithmeticBoundTest : public ::testing::TestWithParam<Shape> {};

TEST_P(ArithmeticBoundTest, RunsTheCellsShapeAndSums) {
  ClusterWorkloadOptions c;
  c.shape = GetParam();
  c.bytes = 4096;
  c.window = 8;
  c.num_servers = 2;
  c.num_workers = 2;
  c.min_duration = milliseconds(50);
  c.warmup_requests = 4;
  Result<ThroughputResult> ours = MeasureClusterThroughput(c);
  ASSERT_TRUE(ours.ok()) << ours.status();

  RawZmqOptions b;
  b.shape = c.shape;
  b.bytes = c.bytes;
  b.window = c.window;
  b.num_servers = c.num_servers;
  b.num_clients = c.num_workers;
  b.min_duration = c.min_duration;
  b.warmup_requests = c.warmup_requests;
  b.work = BoundWork::kSum;
  b.verify = true;
  Result<ThroughputResult> bound = MeasureRawZmqThroughput(b);
  ASSERT_TRUE(bound.ok()) << bound.status();

  // Byte rates per request rate are the same for both: ratios of either mean the same.
  EXPECT_DOUBLE_EQ(ours->bytes_per_sec / ours->requests_per_sec, bound->bytes_per_sec / bound->requests_per_sec);
  float stored = 0;
  for (const std::vector<float>& row : bound->pulled_rows) {
    ASSERT_EQ(row.size(), c.bytes / sizeof(float));
    stored += row.front();
    EXPECT_EQ(row.back(), row.front());
  }
  EXPECT_EQ(stored, static_cast<float>(bound->pushes_sent) * kPushedValue);
  EXPECT_GT(bound->pushes_sent, 0u);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ArithmeticBoundTest, ::testing::Values(Shape::kPush, Shape::kPull, Shape::kPushPull),
                         [](const ::testing::TestParamInfo<Shape>& info) { return std::string(ShapeName(info.param)); });

TEST(ClusterThroughputTest, RejectsASizeThatIsNotWholeFloats) {
  ClusterWorkloadOptions o;
  o.bytes = 4097;
  EXPECT_EQ(MeasureClusterThroughput(o).status().code(), StatusCode::kInvalidArgument);
}

// Pushes 1, 2 and 3 to two keys of a width-4 table, then pulls them back.
Result<std::vector<float>> PushThreeTimesAndPull(ServerWork work) {
  kv::LocalClusterOptions options;
  PSERVER_ASSIGN_OR_RETURN(auto cluster, kv::LocalCluster::Start(options, ServerSetupFor(work)));
  SharedArray<float> pulled;
  PSERVER_RETURN_IF_ERROR(cluster->RunWorkers([&](Node& node) -> Status {
    TableSpec spec;
    spec.name = "rows";
    spec.width = 4;
    PSERVER_ASSIGN_OR_RETURN(TableId table, node.DeclareTable(spec));
    KVWorker<float> kv(node);
    const SharedArray<Key> keys(std::vector<Key>{3, 70});
    for (float v : {1.0f, 2.0f, 3.0f}) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, keys, std::vector<float>(8, v)));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(table, keys, &pulled));
    return kv.Wait(ts);
  }));
  return std::vector<float>(pulled.begin(), pulled.end());
}

TEST(ServerSetupTest, StoreAddsThePushedRows) {
  Result<std::vector<float>> pulled = PushThreeTimesAndPull(ServerWork::kStore);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(*pulled, std::vector<float>(8, 6.0f));
}

TEST(ServerSetupTest, NoneStoresNothingAndAnswersZeros) {
  Result<std::vector<float>> pulled = PushThreeTimesAndPull(ServerWork::kNone);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(*pulled, std::vector<float>(8, 0.0f));
}

}  // namespace
}  // namespace pserver::bench
