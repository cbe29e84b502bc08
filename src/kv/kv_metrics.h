// KvMetrics: the data plane's metrics of one worker or server, by table (docs/metrics.md).
//
// Requests by table and operation, bytes by table and direction (wire bytes of the data
// messages, after the table's filters), and a latency histogram by table and operation: on a
// worker the time from a request's submission to its completion, on a server the time its
// apply (or pull) took. Instruments are made for a table the first time it is seen, and
// touched once per request or message, never per key.
//
// Thread safety: thread-safe.
#pragma once

#include <array>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/metrics.h"
#include "base/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "pserver/types.h"
#include "transport/message.h"

namespace pserver::kv {

class KvMetrics {
 public:
  // One table's instruments.
  struct Table {
    std::array<prometheus::Counter*, 3> requests{};  // by Op
    prometheus::Counter* bytes_sent = nullptr;
    prometheus::Counter* bytes_received = nullptr;
    std::array<prometheus::Histogram*, 3> seconds{};  // by Op

    // The instruments of a data request's type (push, pull, push-pull); nullptr for another.
    prometheus::Counter* Requests(transport::MessageType type) const;
    prometheus::Histogram* Seconds(transport::MessageType type) const;
  };

  // `role`: kWorker or kServer (whose latency the histogram measures).
  KvMetrics(std::shared_ptr<metrics::NodeMetrics> metrics, Role role);

  // The instruments of table `id`, made (labelled `name`) when first asked for. Their address
  // is stable: a server keeps it with its table, a worker with each request.
  Table& Add(TableId id, const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Those of a table already added; nullptr for another (a worker's sent and received messages).
  Table* Find(TableId id) const ABSL_LOCKS_EXCLUDED(mu_);

  // The wire bytes of `m`'s frames (what the table's filters left).
  static double Bytes(const transport::Message& m);

 private:
  const std::shared_ptr<metrics::NodeMetrics> metrics_;  // keeps the families alive
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  mutable Mutex mu_;
  absl::flat_hash_map<TableId, std::unique_ptr<Table>> tables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pserver::kv
