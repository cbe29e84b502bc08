// Routing: a snapshot built from a view (the ring of its segments, lookups by stable name) and
// the checks on malformed views.
#include "cluster/routing.h"

#include <gtest/gtest.h>

#include "cluster/cluster_test_util.h"

namespace pserver::cluster {
namespace {

ClusterView ThreeServers() {
  ClusterView v;
  v.epoch = Epoch(4);
  v.num_servers = 3;
  v.num_workers = 1;
  // Server ranks need not be dense: rank 7 is a server's stable name like any other.
  v.nodes = {
      {NodeId(1), Role::kServer, Rank(0), "inproc://a", {1, 1}},
      {NodeId(2), Role::kServer, Rank(7), "inproc://b", {2, 2}},
      {NodeId(5), Role::kServer, Rank(2), "inproc://c", {3, 3}},
      {NodeId(3), Role::kWorker, Rank(0), "inproc://w", {4, 4}},
  };
  v.ring = {{KeyRange{0, 0}, 7}, {KeyRange{uint64_t{1} << 62, 0}, 0}, {KeyRange{uint64_t{1} << 63, 0}, 7}};
  return v;
}

TEST(RoutingTest, BuildsTheRingOfTheViewsRingServersOnly) {
  Result<std::shared_ptr<const Routing>> r = Routing::Build(ThreeServers());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Routing& routing = **r;
  EXPECT_EQ(routing.epoch(), Epoch(4));
  EXPECT_EQ(routing.ring().servers(), (std::vector<uint32_t>{0, 7}));
  EXPECT_EQ(routing.server_ranks(), (std::vector<uint32_t>{0, 2, 7}));
  ASSERT_NE(routing.Server(7), nullptr);
  EXPECT_EQ(routing.Server(7)->id, NodeId(2));
  EXPECT_EQ(routing.Server(2)->id, NodeId(5));
  EXPECT_EQ(routing.Server(1), nullptr);
  EXPECT_EQ(routing.Find(NodeId(3))->role, Role::kWorker);
  EXPECT_EQ(routing.Find(NodeId(9)), nullptr);
  // Every routing key is owned by exactly one ring server, and never by server 2 (off the ring).
  for (uint64_t k : {uint64_t{0}, uint64_t{1} << 63, ~uint64_t{0}, uint64_t{0x1234567890abcdef}}) {
    const int owners = routing.Owns(0, k) + routing.Owns(7, k) + routing.Owns(2, k);
    EXPECT_EQ(owners, 1) << k;
    EXPECT_FALSE(routing.Owns(2, k));
  }
}

TEST(RoutingTest, ChainsAreTheOwnerThenTheNextDistinctServersOfTheRing) {
  ClusterView v = ThreeServers();
  // Four segments: 0 | 7 | 2 | 7.
  v.ring = {{KeyRange{0, 0}, 0}, {KeyRange{100, 0}, 7}, {KeyRange{200, 0}, 2}, {KeyRange{300, 0}, 7}};
  using Chain = std::vector<uint32_t>;
  auto chain = [](const Routing& r, uint64_t key) {
    std::span<const uint32_t> c = r.Chain(key);
    return Chain(c.begin(), c.end());
  };
  {
    Result<std::shared_ptr<const Routing>> r = Routing::Build(v);  // replicas 1: the owner alone
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->chain_length(), 1u);
    EXPECT_EQ(chain(**r, 150), Chain{7});
  }
  v.replicas = 2;
  Result<std::shared_ptr<const Routing>> two = Routing::Build(v);
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_EQ(chain(**two, 0), (Chain{0, 7}));
  EXPECT_EQ(chain(**two, 150), (Chain{7, 2}));
  EXPECT_EQ(chain(**two, 250), (Chain{2, 7}));
  EXPECT_EQ(chain(**two, 350), (Chain{7, 0}));  // wraps round
  EXPECT_TRUE((*two)->InChain(0, 350));
  EXPECT_FALSE((*two)->InChain(2, 350));
  EXPECT_EQ((*two)->ChainRangesOf(2), (std::vector<KeyRange>{{100, 299}}));
  EXPECT_EQ((*two)->ChainRangesOf(0), (std::vector<KeyRange>{{0, 99}, {300, ~uint64_t{0}}}));
  v.replicas = 3;
  Result<std::shared_ptr<const Routing>> three = Routing::Build(v);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(chain(**three, 150), (Chain{7, 2, 0}));  // the second 7 is passed over
  EXPECT_EQ(chain(**three, 350), (Chain{7, 0, 2}));
  // More replicas than ring servers: every server, once.
  v.replicas = 8;
  Result<std::shared_ptr<const Routing>> all = Routing::Build(v);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)->chain_length(), 3u);
  EXPECT_EQ(chain(**all, 0), (Chain{0, 7, 2}));
}

TEST(RoutingTest, RefusesViewsItCannotRouteBy) {
  ClusterView v = ThreeServers();
  v.ring.clear();
  EXPECT_TRUE(testing::StatusIs(Routing::Build(v).status(), StatusCode::kCorruption, "no server on its ring"));
  v = ThreeServers();
  v.ring[1].server = 9;
  EXPECT_TRUE(testing::StatusIs(Routing::Build(v).status(), StatusCode::kCorruption, "names server 9"));
  v = ThreeServers();
  v.ring[0].range.first = 5;
  EXPECT_TRUE(testing::StatusIs(Routing::Build(v).status(), StatusCode::kCorruption, "epoch 4: ring: the first"));
  v = ThreeServers();
  v.nodes[2].id = NodeId(1);
  EXPECT_TRUE(testing::StatusIs(Routing::Build(v).status(), StatusCode::kCorruption, "names node 1 twice"));
  v = ThreeServers();
  v.nodes[2].rank = Rank(7);
  EXPECT_TRUE(testing::StatusIs(Routing::Build(v).status(), StatusCode::kCorruption, "names server 7 twice"));
}

}  // namespace
}  // namespace pserver::cluster
