// KVWorkerCore, the consistency gate: which task may start (dependencies and the delay bound),
// starting held tasks in timestamp order, sending their messages and clock ticks through the
// runtime's outbound queues with no lock held across a send, and the per-table bounds.
#include <fmt/format.h>

#include "base/logging.h"
#include "kv/worker/kv_worker_core.h"

namespace pserver::kv {

using transport::Message;
using transport::MessageType;

bool KVWorkerCore::Ready(int64_t ts, const Pending& p) const {
  for (Timestamp d : p.call.after) {
    if (unfinished_.Contains(d.value)) return false;
  }
  // Every task <= ts - tau - 1 finished: the oldest unfinished task is at least ts - tau.
  return p.max_delay < 0 || unfinished_.empty() || unfinished_.oldest() >= ts - p.max_delay;
}

void KVWorkerCore::Filter(Message& m) const {
  if (m.header.type == MessageType::kClock) return;
  Result<std::shared_ptr<const FilterChain>> chain = catalog_.Filters(m.header.table);
  Status s = chain.ok() ? (*chain)->Encode(m) : chain.status();
  // Sent as it is: the server reads an unfiltered message as well (no filter is needed to read one).
  if (!s.ok()) PSERVER_LOG_WARN("worker {}: sent {} unfiltered: {}", runtime_->rank().value, transport::Describe(m.header), s.ToString());
  if (metrics_) {
    if (KvMetrics::Table* t = metrics_->Find(m.header.table)) t->bytes_sent->Increment(KvMetrics::Bytes(m));
  }
}

Status KVWorkerCore::RoundPush(KVWorkerBase::Call& call, const TableSpec& spec) const {
  Result<std::shared_ptr<const FilterChain>> chain = catalog_.Filters(call.table);
  if (!chain.ok() || !(*chain)->rounds_pushes()) return Status::Ok();  // no chain: Filter sends it as it is
  Rounding r{.reply = false,
             .peer = NodeId(),
             .may_drop = call.type == MessageType::kPush,
             .no_copy = false,
             .value_type = spec.value_type,
             .columns = size_t{spec.width} * spec.push_arity,
             .keys = call.keys,
             .vals = call.vals,
             .copy_frame = {}};
  PSERVER_RETURN_IF_ERROR((*chain)->Round(r));
  call.keys = std::move(r.keys);
  call.vals = std::move(r.vals);
  return Status::Ok();
}

void KVWorkerCore::SendAll(std::unique_lock<std::mutex>& send_lock, Unsent msgs) {
  // Queued under send_mu_, so that every server's queue holds this worker's requests in
  // timestamp order; sent after it is released, so that no lock of this class is held across a
  // send that may block (a server blocked replying to this worker then never waits for it).
  sends_in_progress_.fetch_add(1);
  bool to_dead = false;  // a part for a server declared dead (sliced by a view older than the failover)
  if (any_failed_servers_.load()) {
    std::lock_guard lock(mu_);
    for (const auto& entry : msgs) to_dead = to_dead || failed_servers_.contains(entry.second.header.receiver);
  }
  for (auto& entry : msgs) {
    Filter(entry.second);
    runtime_->QueueData(std::move(entry.second));
  }
  send_lock.unlock();
  // A failure (a dead peer, a send that timed out) may be of a request another thread queued:
  // it is answered here all the same.
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  const bool replicated = routing->view().replicas >= 2;
  for (cluster::NodeRuntime::SendFailure& f : runtime_->FlushData()) {
    const transport::Header& h = f.header;
    if (h.type == MessageType::kClock) {
      PSERVER_LOG_WARN("worker {}: clock tick to {} not sent: {}", runtime_->rank().value,
                       runtime_->DescribeNode(h.receiver), f.error.ToString());
      continue;
    }
    if (replicated && !runtime_->PeerStatus(h.receiver).ok()) {
      // A server declared dead: the part goes to the next server of its chain once the
      // scheduler fails over from it (or the job ends, failing it).
      PSERVER_LOG_WARN("worker {}: part {} of request {} not sent to {} ({}); it waits for the failover",
                       runtime_->rank().value, h.part, h.request_id, runtime_->DescribeNode(h.receiver),
                       f.error.ToString());
      std::lock_guard lock(mu_);
      if (auto it = pending_.find(h.request_id); it != pending_.end() && h.part < it->second.parts.size()) {
        it->second.parts[h.part].undelivered = true;
      }
      continue;
    }
    std::unique_lock lock(mu_);
    Answer(lock, h.request_id, h.part, nullptr, f.error.WithContext(runtime_->DescribeNode(h.receiver)));
  }
  // Requests that went to servers declared dead after the failover view came, and those a
  // failover left while this or another SendAll ran: sent again now, once no send is in progress.
  const bool last = sends_in_progress_.fetch_sub(1) == 1;
  Unsent orphans;
  if (to_dead || (last && resend_wanted_.load())) {
    std::unique_lock lock(mu_);
    orphans = ResendOrphans(lock, *runtime_->routing());
  }
  if (orphans.empty()) return;
  send_lock.lock();
  SendAll(send_lock, std::move(orphans));
}

void KVWorkerCore::StartReady() {
  std::unique_lock send_lock(send_mu_);
  Unsent unsent;
  std::vector<std::pair<int64_t, Pending>> empty_done;  // released tasks without parts
  {
    std::lock_guard lock(mu_);
    while (!held_.empty()) {
      Held& h = held_.front();
      if (h.ts == 0) {
        for (Message& m : h.tick) unsent.emplace_back(0, std::move(m));
        held_.pop_front();
        continue;
      }
      auto it = pending_.find(h.ts);
      if (it == pending_.end()) {  // failed while held
        held_.pop_front();
        continue;
      }
      if (!Ready(h.ts, it->second)) break;
      Pending& p = it->second;
      const int64_t ts = h.ts;
      held_.pop_front();
      if (p.parts.empty()) {
        completing_.insert(ts);
        empty_done.emplace_back(ts, std::move(p));
        pending_.erase(it);
        continue;
      }
      for (size_t i = 0; i < p.parts.size(); ++i) {
        if (!p.parts[i].answered) unsent.emplace_back(ts, std::move(p.unsent[i]));
      }
      p.unsent.clear();
    }
  }
  SendAll(send_lock, std::move(unsent));
  for (auto& [ts, p] : empty_done) Complete(ts, std::move(p));
}

void KVWorkerCore::Complete(int64_t ts, Pending&& p) {
  // Nothing held: nothing to start (a task held later sees this one finished, or is started
  // by the completion it waits for).
  if (Finish(ts, std::move(p))) StartReady();
}

std::vector<Message> KVWorkerCore::TickMessages(uint64_t clock) const {
  std::vector<Message> out;
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  for (uint32_t s : routing->server_ranks()) {
    Message m;
    m.header.type = MessageType::kClock;
    m.header.sender = runtime_->id();
    m.header.receiver = routing->Server(s)->id;
    m.header.epoch = routing->epoch();
    m.header.clock = clock;
    out.push_back(std::move(m));
  }
  return out;
}

Result<uint64_t> KVWorkerCore::ClockTo(std::optional<uint64_t> to) {
  PSERVER_RETURN_IF_ERROR(runtime_->health());
  std::unique_lock send_lock(send_mu_);
  std::unique_lock lock(mu_);
  if (to && *to < clock_) {
    return Status::InvalidArgument(fmt::format("a clock goes forward only: {} is before this worker's clock {}", *to, clock_));
  }
  clock_ = to ? *to : clock_ + 1;
  const uint64_t clock = clock_;
  std::vector<Message> tick = TickMessages(clock);
  if (!held_.empty()) {
    held_.push_back(Held{0, std::move(tick)});
    return clock;
  }
  lock.unlock();
  Unsent unsent;
  for (Message& m : tick) unsent.emplace_back(0, std::move(m));
  SendAll(send_lock, std::move(unsent));
  return clock;
}

uint64_t KVWorkerCore::clock() const {
  std::lock_guard lock(mu_);
  return clock_;
}

Status KVWorkerCore::SetMaxDelay(TableId table, int64_t tau) {
  PSERVER_RETURN_IF_ERROR(catalog_.Find(table).status());
  if (tau < kEventual) return Status::InvalidArgument(fmt::format("delay bound {} is below -1 (kEventual)", tau));
  {
    std::lock_guard lock(mu_);
    consistency_[table].max_delay = tau;
  }
  return Status::Ok();
}

Status KVWorkerCore::SetStaleness(TableId table, int64_t staleness) {
  PSERVER_RETURN_IF_ERROR(catalog_.Find(table).status());
  if (staleness < kEventual) {
    return Status::InvalidArgument(fmt::format("staleness {} is below -1 (kEventual)", staleness));
  }
  std::lock_guard lock(mu_);
  consistency_[table].staleness = staleness;
  return Status::Ok();
}

}  // namespace pserver::kv
