// Metrics (docs/metrics.md) as Prometheus reads them: every node of an in-process cluster serves
// /metrics over HTTP, and the counters match what the workers did, exactly -- requests by table
// and operation, one latency observation per request, the bytes one side sent equal to the
// bytes the other received, the rows the servers hold, the routing epoch, the members. Also the
// endpoint's errors (a bad or taken port) and an application's own instrument.
#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "kv/local_cluster.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

// One sample of the text format: name{label="value",...} value.
struct Series {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

std::vector<Series> Parse(const std::string& text) {
  std::vector<Series> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Series s;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    if (brace != std::string::npos && brace < space) {
      s.name = line.substr(0, brace);
      const std::string labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
      size_t pos = 0;
      while (pos < labels.size()) {
        const size_t eq = labels.find('=', pos);
        const size_t close = labels.find('"', eq + 2);
        s.labels[labels.substr(pos, eq - pos)] = labels.substr(eq + 2, close - eq - 2);
        pos = close + 2;  // past '",'
      }
    } else {
      s.name = line.substr(0, space);
    }
    s.value = std::stod(line.substr(space + 1));
    out.push_back(std::move(s));
  }
  return out;
}

// What a node's endpoint serves now.
std::vector<Series> Scrape(const Node& node) {
  const std::string& address = node.metrics_address();
  const size_t colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  httplib::Result r = client.Get("/metrics");
  EXPECT_TRUE(r) << "no answer from " << address;
  if (!r) return {};
  EXPECT_EQ(r->status, 200);
  return Parse(r->body);
}

// The sum of the samples named `name` that carry every label of `labels`.
double Sum(const std::vector<Series>& all, const std::string& name, const std::map<std::string, std::string>& labels = {}) {
  double sum = 0;
  for (const Series& s : all) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) sum += s.value;
  }
  return sum;
}

bool Has(const std::vector<Series>& all, const std::string& name) {
  for (const Series& s : all) {
    if (s.name == name) return true;
  }
  return false;
}

LocalClusterOptions WithMetrics(uint32_t servers, uint32_t workers) {
  LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = servers;
  o.num_workers = workers;
  o.node.metrics_port = 0;  // each node on a free port
  return o;
}

// NodeMetrics itself: a scrape is the registry's families, then the readers'; a reader leaves the
// scrapes with its handle, and the handle keeps the NodeMetrics alive.
TEST(NodeMetricsTest, CollectsTheRegistryThenTheScrapedValues) {
  auto m = std::make_shared<metrics::NodeMetrics>();
  prometheus::BuildGauge().Name("a_gauge").Help("h").Register(m->registry()).Add({}).Set(1);
  int reads = 0;
  metrics::NodeMetrics::Scraped scraped = m->AddScraped([&](std::vector<prometheus::MetricFamily>* out) {
    ++reads;
    out->push_back(metrics::Counter("b_total", "h", {{{{"x", "1"}}, 5}, {{{"x", "2"}}, 6}}));
  });
  std::vector<prometheus::MetricFamily> families = m->Collect();
  ASSERT_EQ(families.size(), 2u);
  EXPECT_EQ(families[0].name, "a_gauge");
  EXPECT_EQ(families[1].name, "b_total");
  EXPECT_EQ(families[1].type, prometheus::MetricType::Counter);
  ASSERT_EQ(families[1].metric.size(), 2u);
  EXPECT_EQ(families[1].metric[1].counter.value, 6);
  EXPECT_EQ(families[1].metric[1].label[0].value, "2");
  EXPECT_EQ(reads, 1);

  metrics::NodeMetrics::Scraped moved = std::move(scraped);
  EXPECT_EQ(m->Collect().size(), 2u);  // moving the handle keeps the reader
  std::weak_ptr<metrics::NodeMetrics> weak = m;
  m.reset();
  EXPECT_FALSE(weak.expired());  // the handle holds it
  moved.Reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(reads, 2);
}

TEST(MetricsTest, CountersMatchWhatTheWorkersDid) {
  constexpr uint32_t kServers = 2, kWorkers = 2;
  constexpr int kPushes = 7, kPulls = 3, kKeys = 100;
  auto c = LocalCluster::Start(WithMetrics(kServers, kWorkers));
  ASSERT_OK(c);
  LocalCluster& cluster = **c;
  std::vector<Key> key_list(kKeys);
  for (int i = 0; i < kKeys; ++i) key_list[i] = Key(i * 7919 + 1);
  const SharedArray<Key> keys(std::move(key_list));
  ASSERT_OK(cluster.RunWorkers([&](Node& node) -> Status {
    PSERVER_ASSIGN_OR_RETURN(TableId t, node.DeclareTable(TableSpec{.name = "weights"}));
    KVWorker<float> w(node);
    std::set<uint32_t> servers_hit;
    for (size_t i = 0; i < keys.size(); ++i) {
      PSERVER_ASSIGN_OR_RETURN(uint32_t s, w.ServerOf(t, keys[i]));
      servers_hit.insert(s);
    }
    for (int i = 0; i < kPushes; ++i) {
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Push(t, keys, SharedArray<float>(std::vector<float>(kKeys, 1.0f))));
      PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    }
    for (int i = 0; i < kPulls; ++i) {
      SharedArray<float> vals;
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, w.Pull(t, keys, &vals));
      PSERVER_RETURN_IF_ERROR(w.Wait(ts));
    }
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    if (node.rank().value != 0) return node.Barrier(BarrierGroup::kWorkers);

    // Every request of every worker is answered: the counters are final.
    double worker_sent = 0, worker_received = 0;
    for (uint32_t i = 0; i < kWorkers; ++i) {
      const std::vector<Series> m = Scrape(cluster.worker(i));
      EXPECT_EQ(Sum(m, "pserver_requests_total", {{"table", "weights"}, {"op", "push"}}), kPushes);
      EXPECT_EQ(Sum(m, "pserver_requests_total", {{"table", "weights"}, {"op", "pull"}}), kPulls);
      EXPECT_EQ(Sum(m, "pserver_requests_total", {{"table", "weights"}, {"op", "push_pull"}}), 0);
      EXPECT_EQ(Sum(m, "pserver_request_duration_seconds_count", {{"table", "weights"}, {"op", "push"}}), kPushes);
      EXPECT_EQ(Sum(m, "pserver_request_duration_seconds_count", {{"table", "weights"}, {"op", "pull"}}), kPulls);
      EXPECT_EQ(Sum(m, "pserver_request_duration_seconds_bucket", {{"op", "push"}, {"le", "+Inf"}}), kPushes);
      EXPECT_GT(Sum(m, "pserver_request_duration_seconds_sum", {{"op", "push"}}), 0);
      EXPECT_EQ(Sum(m, "pserver_node_info", {{"role", "worker"}}), 1);
      EXPECT_GE(Sum(m, "pserver_routing_epoch"), 1);
      EXPECT_GT(Sum(m, "pserver_transport_bytes_total", {{"direction", "sent"}}), 0);
      EXPECT_EQ(Sum(m, "pserver_heartbeats_missed_total"), 0);
      EXPECT_TRUE(Has(m, "pserver_data_queue_depth"));
      EXPECT_TRUE(Has(m, "pserver_outbound_queue_depth"));
      worker_sent += Sum(m, "pserver_data_bytes_total", {{"table", "weights"}, {"direction", "sent"}});
      worker_received += Sum(m, "pserver_data_bytes_total", {{"table", "weights"}, {"direction", "received"}});
    }
    // Each request went to every server holding one of its keys: one part each.
    const double parts = double(servers_hit.size()) * kWorkers;
    double server_pushes = 0, server_pulls = 0, applies = 0, rows = 0, sent = 0, received = 0;
    for (uint32_t i = 0; i < kServers; ++i) {
      const std::vector<Series> m = Scrape(cluster.server(i));
      server_pushes += Sum(m, "pserver_requests_total", {{"table", "weights"}, {"op", "push"}});
      server_pulls += Sum(m, "pserver_requests_total", {{"table", "weights"}, {"op", "pull"}});
      applies += Sum(m, "pserver_apply_duration_seconds_count", {{"table", "weights"}});
      rows += Sum(m, "pserver_table_rows", {{"table", "weights"}});
      EXPECT_GT(Sum(m, "pserver_table_bytes", {{"table", "weights"}}), 0);
      EXPECT_EQ(Sum(m, "pserver_node_info", {{"role", "server"}}), 1);
      sent += Sum(m, "pserver_data_bytes_total", {{"table", "weights"}, {"direction", "sent"}});
      received += Sum(m, "pserver_data_bytes_total", {{"table", "weights"}, {"direction", "received"}});
    }
    EXPECT_EQ(server_pushes, parts * kPushes);
    EXPECT_EQ(server_pulls, parts * kPulls);
    EXPECT_EQ(applies, parts * (kPushes + kPulls));
    EXPECT_EQ(rows, kKeys);
    // No filters: what one side sent is what the other received, byte for byte.
    EXPECT_EQ(worker_sent, received);
    EXPECT_EQ(worker_received, sent);
    EXPECT_GT(worker_sent, double(kWorkers) * kPushes * kKeys * (sizeof(Key) + sizeof(float)) - 1);

    const std::vector<Series> s = Scrape(cluster.scheduler());
    EXPECT_EQ(Sum(s, "pserver_node_info", {{"role", "scheduler"}}), 1);
    EXPECT_EQ(Sum(s, "pserver_members", {{"role", "server"}, {"state", "running"}}), kServers);
    EXPECT_EQ(Sum(s, "pserver_members", {{"role", "worker"}, {"state", "running"}}), kWorkers);
    EXPECT_EQ(Sum(s, "pserver_members_declared_dead_total"), 0);
    EXPECT_EQ(Sum(s, "pserver_routing_epoch"), Sum(Scrape(cluster.worker(0)), "pserver_routing_epoch"));
    return node.Barrier(BarrierGroup::kWorkers);
  }));
}

TEST(MetricsTest, AnApplicationsOwnInstrumentIsServedWithTheNodes) {
  auto c = LocalCluster::Start(WithMetrics(1, 1));
  ASSERT_OK(c);
  LocalCluster& cluster = **c;
  ASSERT_OK(cluster.RunWorkers([&](Node& node) -> Status {
    prometheus::Registry* registry = node.metrics();
    if (registry == nullptr) return Status::Internal("no registry on a node with a metrics port");
    prometheus::BuildGauge().Name("my_app_epoch").Help("An application's gauge").Register(*registry).Add({}).Set(42);
    EXPECT_EQ(Sum(Scrape(node), "my_app_epoch"), 42);
    return Status::Ok();
  }));
}

TEST(MetricsTest, NoPortNoMetrics) {
  LocalClusterOptions o = WithMetrics(1, 1);
  o.node.metrics_port = -1;
  auto c = LocalCluster::Start(o);
  ASSERT_OK(c);
  EXPECT_EQ((*c)->worker(0).metrics(), nullptr);
  EXPECT_TRUE((*c)->worker(0).metrics_address().empty());
  EXPECT_TRUE((*c)->scheduler().metrics_address().empty());
  ASSERT_OK((*c)->RunWorkers([](Node&) { return Status::Ok(); }));
}

// A start that fails right after the endpoint began serving (here: a scheduler for a job of no
// servers) returns its error; stopping the endpoint never waits on its accept loop.
TEST(MetricsTest, AStartThatFailsAtOnceReturnsItsError) {
  NodeOptions o;
  o.role = Role::kScheduler;
  o.scheduler_address = "tcp://127.0.0.1:0";
  o.num_servers = 0;
  o.metrics_port = 0;
  for (int i = 0; i < 50; ++i) {
    Result<std::unique_ptr<Node>> node = Node::Start(o);
    ASSERT_FALSE(node.ok());
    EXPECT_EQ(node.status().code(), StatusCode::kInvalidArgument) << node.status().ToString();
  }
}

TEST(MetricsTest, ABadOrTakenPortIsAClearError) {
  NodeOptions o;
  o.role = Role::kScheduler;
  o.scheduler_address = "tcp://127.0.0.1:0";
  o.metrics_port = -2;
  Result<std::unique_ptr<Node>> bad = Node::Start(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("metrics port -2"), std::string::npos) << bad.status().ToString();
  o.metrics_port = 70000;
  bad = Node::Start(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);

  o.metrics_port = 0;
  Result<std::unique_ptr<Node>> first = Node::Start(o);
  ASSERT_OK(first);
  const std::string taken = (*first)->metrics_address();
  o.metrics_port = std::stoi(taken.substr(taken.rfind(':') + 1));
  Result<std::unique_ptr<Node>> second = Node::Start(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot serve metrics at " + taken), std::string::npos)
      << second.status().ToString();
}

}  // namespace
}  // namespace pserver::kv
