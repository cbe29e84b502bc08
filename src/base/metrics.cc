#include "base/metrics.h"

#include <utility>

#include "prometheus/client_metric.h"

namespace pserver::metrics {

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> buckets = {25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
                                              25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
  return buckets;
}

namespace {

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type,
                                std::vector<Sample> samples) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  f.metric.reserve(samples.size());
  for (Sample& s : samples) {
    prometheus::ClientMetric m;
    for (auto& [k, v] : s.labels) m.label.push_back({k, v});
    if (type == prometheus::MetricType::Counter) {
      m.counter.value = s.value;
    } else {
      m.gauge.value = s.value;
    }
    f.metric.push_back(std::move(m));
  }
  return f;
}

}  // namespace

prometheus::MetricFamily Gauge(std::string name, std::string help, std::vector<Sample> samples) {
  return Family(std::move(name), std::move(help), prometheus::MetricType::Gauge, std::move(samples));
}

prometheus::MetricFamily Counter(std::string name, std::string help, std::vector<Sample> samples) {
  return Family(std::move(name), std::move(help), prometheus::MetricType::Counter, std::move(samples));
}

NodeMetrics::Scraped& NodeMetrics::Scraped::operator=(Scraped&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = std::move(other.owner_);
    it_ = other.it_;
  }
  return *this;
}

void NodeMetrics::Scraped::Reset() {
  if (owner_ == nullptr) return;
  {
    MutexLock lock(&owner_->mu_);
    owner_->readers_.erase(it_);
  }
  owner_.reset();
}

NodeMetrics::Scraped NodeMetrics::AddScraped(Reader read) {
  MutexLock lock(&mu_);
  readers_.push_back(std::move(read));
  return Scraped(shared_from_this(), std::prev(readers_.end()));
}

std::vector<prometheus::MetricFamily> NodeMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  MutexLock lock(&mu_);
  for (const Reader& read : readers_) read(&out);
  return out;
}

}  // namespace pserver::metrics
