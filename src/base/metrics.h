// NodeMetrics: the Prometheus metrics of one node (prometheus-cpp; the list is in docs/metrics.md).
//
// A node started with a metrics port (NodeOptions::metrics_port) owns one NodeMetrics, and its
// HTTP endpoint serves what Collect returns. Each layer adds its own metrics when it starts, of
// two kinds:
//   - instruments updated where the event happens, in registry(): counters and histograms,
//     touched once per request or message, never per key;
//   - values read when Prometheus scrapes (AddScraped): queue depths, rows held, the routing
//     epoch -- they cost nothing between scrapes.
// A node without a metrics port has no NodeMetrics: the layers hold a null pointer and skip
// their instruments, so metrics cost nothing unless asked for.
//
// Thread safety: thread-safe. A scrape runs on the endpoint's thread; the readers given to
// AddScraped run there, with this object's lock held, and must only take locks that are never
// held while a Scraped handle is destroyed.
#pragma once

#include <functional>
#include <iterator>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/labels.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace pserver::metrics {

// Bucket bounds, in seconds, of the latency histograms: 25 us to 10 s, about 2.5x apart.
const std::vector<double>& LatencyBuckets();

// One sample of a family read at scrape time.
struct Sample {
  prometheus::Labels labels;
  double value = 0;
};

// A gauge (or counter) family of `samples`, for AddScraped's readers.
prometheus::MetricFamily Gauge(std::string name, std::string help, std::vector<Sample> samples);
prometheus::MetricFamily Counter(std::string name, std::string help, std::vector<Sample> samples);

class NodeMetrics final : public prometheus::Collectable, public std::enable_shared_from_this<NodeMetrics> {
 public:
  using Reader = std::function<void(std::vector<prometheus::MetricFamily>* out)>;

  // Keeps a reader in the scrapes while it lives; its destructor waits for a scrape that is
  // running the reader, so the reader's captures may die right after it. It keeps the
  // NodeMetrics alive (whichever of its holders goes last).
  class Scraped {
   public:
    Scraped() = default;
    Scraped(Scraped&& other) noexcept : owner_(std::move(other.owner_)), it_(other.it_) {}
    Scraped& operator=(Scraped&& other) noexcept;
    Scraped(const Scraped&) = delete;
    Scraped& operator=(const Scraped&) = delete;
    ~Scraped() { Reset(); }
    void Reset();

   private:
    friend class NodeMetrics;
    Scraped(std::shared_ptr<NodeMetrics> owner, std::list<Reader>::iterator it) : owner_(std::move(owner)), it_(it) {}
    std::shared_ptr<NodeMetrics> owner_;
    std::list<Reader>::iterator it_;
  };

  // Made by std::make_shared (AddScraped's handles share it).
  NodeMetrics() = default;
  NodeMetrics(const NodeMetrics&) = delete;
  NodeMetrics& operator=(const NodeMetrics&) = delete;

  // Where instruments live (prometheus::BuildCounter().Name(...).Register(registry())). Also
  // what the public Node::metrics() hands to applications for their own.
  prometheus::Registry& registry() { return *registry_; }
  const std::shared_ptr<prometheus::Registry>& shared_registry() const { return registry_; }

  // Adds `read` to every scrape until the handle is destroyed. Outlive the handle.
  [[nodiscard]] Scraped AddScraped(Reader read) ABSL_LOCKS_EXCLUDED(mu_);

  // The registry's families, then the readers' (prometheus::Collectable).
  std::vector<prometheus::MetricFamily> Collect() const override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  mutable Mutex mu_;
  std::list<Reader> readers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pserver::metrics
