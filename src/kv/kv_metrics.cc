#include "kv/kv_metrics.h"

namespace pserver::kv {

namespace {

using transport::MessageType;

constexpr std::array<const char*, 3> kOps = {"push", "pull", "push_pull"};

// The index of a data request's type in kOps; -1 for another type.
int OpIndex(MessageType type) {
  switch (type) {
    case MessageType::kPush: return 0;
    case MessageType::kPull: return 1;
    case MessageType::kPushPull: return 2;
    default: return -1;
  }
}

}  // namespace

prometheus::Counter* KvMetrics::Table::Requests(MessageType type) const {
  const int i = OpIndex(type);
  return i < 0 ? nullptr : requests[static_cast<size_t>(i)];
}

prometheus::Histogram* KvMetrics::Table::Seconds(MessageType type) const {
  const int i = OpIndex(type);
  return i < 0 ? nullptr : seconds[static_cast<size_t>(i)];
}

KvMetrics::KvMetrics(std::shared_ptr<metrics::NodeMetrics> metrics, Role role)
    : metrics_(std::move(metrics)),
      requests_(prometheus::BuildCounter()
                    .Name("pserver_requests_total")
                    .Help(role == Role::kWorker ? "Data requests this worker submitted, by table and operation."
                                                : "Data request parts this server took, by table and operation.")
                    .Register(metrics_->registry())),
      bytes_(prometheus::BuildCounter()
                 .Name("pserver_data_bytes_total")
                 .Help("Frame bytes of data messages (after the table's filters), by table and direction.")
                 .Register(metrics_->registry())),
      seconds_(prometheus::BuildHistogram()
                   .Name(role == Role::kWorker ? "pserver_request_duration_seconds" : "pserver_apply_duration_seconds")
                   .Help(role == Role::kWorker
                             ? "Seconds from a request's submission to its completion (every part answered)."
                             : "Seconds a request part's apply or pull took on this server, its checks excluded.")
                   .Register(metrics_->registry())) {}

KvMetrics::Table& KvMetrics::Add(TableId id, const std::string& name) {
  MutexLock lock(&mu_);
  std::unique_ptr<Table>& t = tables_[id];
  if (t) return *t;
  t = std::make_unique<Table>();
  for (size_t i = 0; i < kOps.size(); ++i) {
    t->requests[i] = &requests_.Add({{"table", name}, {"op", kOps[i]}});
    t->seconds[i] = &seconds_.Add({{"table", name}, {"op", kOps[i]}}, metrics::LatencyBuckets());
  }
  t->bytes_sent = &bytes_.Add({{"table", name}, {"direction", "sent"}});
  t->bytes_received = &bytes_.Add({{"table", name}, {"direction", "received"}});
  return *t;
}

KvMetrics::Table* KvMetrics::Find(TableId id) const {
  MutexLock lock(&mu_);
  auto it = tables_.find(id);
  return it == tables_.end() ? nullptr : it->second.get();
}

double KvMetrics::Bytes(const transport::Message& m) {
  size_t n = 0;
  for (const transport::Bytes& f : m.frames) n += f.size();
  return static_cast<double>(n);
}

}  // namespace pserver::kv
