// KVWorkerCore, reply assembly: taking each part's reply (or redirect, or failure) on the
// node's data thread, putting pulled values together in key order, finishing a request
// (result, callback, remembered error) and waiting for one.
#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <thread>

#include "base/logging.h"
#include "kv/worker/kv_worker_core.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;
using transport::Pulls;

namespace {

std::string ReplyText(const Message& m) {
  if (m.frames.empty()) return "(no message)";
  return std::string(reinterpret_cast<const char*>(m.frames[0].data()), m.frames[0].size());
}

}  // namespace

void KVWorkerCore::OnData(Message&& msg) {
  const auto& h = msg.header;
  if (!h.is_reply()) {
    PSERVER_LOG_WARN("worker {}: ignored a request sent to a worker: {}", runtime_->rank().value, transport::Describe(h));
    return;
  }
  if (metrics_) {
    if (KvMetrics::Table* t = metrics_->Find(h.table)) t->bytes_received->Increment(KvMetrics::Bytes(msg));
  }
  // Undone before anything reads a frame, and outside the lock (decompression takes time).
  Status unfiltered;
  std::shared_ptr<const FilterChain> chain;
  if ((h.flags & transport::kFlagFiltered) && !h.is_error()) {
    Result<std::shared_ptr<const FilterChain>> found = catalog_.Filters(h.table);
    unfiltered = found.ok() ? (*found)->Decode(msg) : found.status();
    if (found.ok()) chain = std::move(*found);
  }
  // A pull reply that left keys out (a copy frame: kv/filter/significant_filter.h).
  const bool copied = unfiltered.ok() && Pulls(h.type) && !h.is_error() && !h.is_redirect() &&
                      !(h.flags & transport::kFlagKeysMissing) && !msg.frames.empty() && !msg.frames[0].empty();
  if (copied && !chain) {
    Result<std::shared_ptr<const FilterChain>> found = catalog_.Filters(h.table);
    if (found.ok()) {
      chain = std::move(*found);
    } else {
      unfiltered = found.status();
    }
  }
  std::unique_lock lock(mu_);
  // The request of the reply, while its part waits for it.
  auto awaiting = [&]() -> Pending* {
    auto it = pending_.find(h.request_id);
    if (it == pending_.end()) return nullptr;  // already failed (e.g. its server was declared dead)
    if (h.part >= it->second.parts.size()) return nullptr;
    const Part& part = it->second.parts[h.part];
    if (part.node != h.sender || part.answered) return nullptr;  // a stray or repeated reply
    return &it->second;
  };
  Pending* pending = awaiting();
  if (!pending) return;
  // The keys the server left out, put back from this worker's copy of what it sent: outside
  // the lock (a lookup a key), and on this thread, so that the copy follows the server's replies
  // one by one in the order they arrive.
  Status filled;
  if (copied && chain) {
    const SharedArray<Key> keys = PartKeys(*pending, h.part);
    lock.unlock();
    filled = chain->Fill(h, keys, msg.frames);
    lock.lock();
    if (!awaiting()) return;
  }
  if (((h.flags & transport::kFlagKeysMissing) && !h.is_error()) || IsCopyMiss(filled)) {
    // The server's key cache lacked the part's keys and applied nothing, or this worker's copy
    // lacks what the reply left out: the part goes again, as a resend (which carries its keys),
    // by the view this worker routes by now (and asks the server to start its replies over).
    if (IsCopyMiss(filled)) {
      PSERVER_LOG_DEBUG("worker {}: pulling part {} of request {} again: {}", runtime_->rank().value, h.part,
                        h.request_id, filled.ToString());
    }
    Unsent resend = Reslice(lock, h.request_id, h.part, *runtime_->routing(), h.sender, NodeId());
    if (resend.empty()) return;
    lock.unlock();
    std::unique_lock send_lock(send_mu_);
    SendAll(send_lock, std::move(resend));
    return;
  }
  if (h.is_redirect()) {
    Unsent resend = Reroute(lock, h.request_id, h.part, msg);
    if (resend.empty()) return;
    lock.unlock();
    std::unique_lock send_lock(send_mu_);
    SendAll(send_lock, std::move(resend));
    return;
  }
  Status error;
  if (!unfiltered.ok()) {
    error = unfiltered.WithContext(fmt::format("the reply of {}", runtime_->DescribeNode(h.sender)));
  } else if (!filled.ok()) {
    error = filled.WithContext(fmt::format("the reply of {}", runtime_->DescribeNode(h.sender)));
  } else if (h.is_error()) {
    error = Status(static_cast<StatusCode>(h.status), ReplyText(msg))
                .WithContext(fmt::format("{}", runtime_->DescribeNode(h.sender)));
  }
  Answer(lock, h.request_id, h.part, &msg, error);
}

void KVWorkerCore::Answer(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index, Message* reply,
                          const Status& error) {
  auto it = pending_.find(ts);
  if (it == pending_.end() || index >= it->second.parts.size()) return;
  Pending& p = it->second;
  Part& part = p.parts[index];
  if (part.answered) return;
  part.answered = true;
  if (reply) part.reply = std::move(*reply);
  if (!error.ok() && p.status.ok()) p.status = error;
  if (--p.unanswered > 0) return;
  Pending done = std::move(p);
  pending_.erase(it);
  completing_.insert(ts);
  lock.unlock();
  Complete(ts, std::move(done));
  lock.lock();
}

void KVWorkerCore::MergeIncludes(const Pending& p) const {
  // Frame 3 of a pull reply: per worker rank, the newest timestamp the pulled range includes.
  std::vector<Timestamp>& out = *p.call.includes;
  out.assign(runtime_->routing()->view().num_workers, Timestamp(std::numeric_limits<int64_t>::max()));
  bool any = false;
  for (const Part& part : p.parts) {
    if (part.rerouted || part.reply.frames.size() < 4) continue;
    const Bytes& f = part.reply.frames[3];
    const size_t n = std::min(out.size(), f.size() / sizeof(int64_t));
    for (size_t w = 0; w < n; ++w) {
      int64_t v;
      std::memcpy(&v, f.data() + w * sizeof(int64_t), sizeof v);
      out[w] = Timestamp(std::min(out[w].value, v));
    }
    any = true;
  }
  if (!any) out.assign(out.size(), Timestamp(0));
}

bool KVWorkerCore::Finish(int64_t ts, Pending&& p) {
  Status status = p.status;
  if (status.ok() && Pulls(p.call.type)) {
    Bytes vals;
    SharedArray<int32_t> lens;
    status = Assemble(p, &vals, &lens);
    if (status.ok() && p.call.on_values) p.call.on_values(std::move(vals), std::move(lens));
    if (status.ok() && p.call.includes) MergeIncludes(p);
  }
  if (prometheus::Histogram* h = p.metrics ? p.metrics->Seconds(p.call.type) : nullptr) {
    h->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - p.submitted).count());
  }
  if (!status.ok()) {
    status = status.WithContext(fmt::format("{} request {} of table '{}'", transport::MessageTypeName(p.call.type), ts,
                                            p.spec->name));
  }
  if (p.call.callback) p.call.callback(status);
  std::lock_guard lock(mu_);
  if (!status.ok()) Remember(ts, status);
  completing_.erase(ts);
  unfinished_.Remove(ts);
  completions_.fetch_add(1, std::memory_order_release);
  if (waiters_.contains(ts)) done_cv_.notify_all();
  return !held_.empty();
}

SharedArray<Key> KVWorkerCore::PartKeys(const Pending& p, size_t index) {
  const Part& part = p.parts[index];
  std::vector<Key> keys;
  keys.reserve(part.num_keys);
  if (!p.order.empty()) {  // the parts before it hold the order's first keys
    size_t at = 0;
    for (size_t i = 0; i < index; ++i) at += p.parts[i].num_keys;
    for (size_t j = 0; j < part.num_keys; ++j) keys.push_back(p.call.keys[p.order[at + j]]);
  } else {
    for (const IndexRun& r : part.runs) {
      for (uint32_t i = r.begin; i < r.end; ++i) keys.push_back(p.call.keys[i]);
    }
  }
  return SharedArray<Key>(std::move(keys));
}

Status KVWorkerCore::Assemble(Pending& p, Bytes* vals, SharedArray<int32_t>* lens) const {
  const size_t elem = ValueTypeSize(p.spec->value_type);
  const size_t n = p.call.keys.size();
  const bool var = p.spec->variable_length;
  for (const Part& part : p.parts) {
    if (part.rerouted) continue;
    if (part.reply.frames.size() != 3 && part.reply.frames.size() != 4) {
      return Status::Corruption(fmt::format("{} sent a pull reply with {} frames, expected 3 or 4",
                                            runtime_->DescribeNode(part.node), part.reply.frames.size()));
    }
  }
  // Lengths first: they give each key's place in the values.
  SharedArray<int32_t> out_lens;
  std::vector<uint64_t> offsets;
  if (var) {
    out_lens = SharedArray<int32_t>(n);
    for (const Part& part : p.parts) {
      if (part.rerouted) continue;
      const Bytes& f = part.reply.frames[2];
      if (f.size() != part.num_keys * sizeof(int32_t)) {
        return Status::Corruption(fmt::format("{} returned {} bytes of lengths for {} keys",
                                              runtime_->DescribeNode(part.node), f.size(), part.num_keys));
      }
      const auto* src = reinterpret_cast<const int32_t*>(f.data());
      for (const IndexRun& r : part.runs) {
        for (uint32_t i = r.begin; i < r.end; ++i) {
          if (*src < 0) return Status::Corruption(fmt::format("negative length from {}", runtime_->DescribeNode(part.node)));
          out_lens[i] = *src++;
        }
      }
    }
    offsets = Offsets(out_lens);
  }
  const size_t row = var ? 0 : size_t{p.spec->width} * elem;
  auto begin_of = [&](uint32_t i) { return var ? offsets[i] * elem : uint64_t{i} * row; };
  const uint64_t total = begin_of(static_cast<uint32_t>(n));
  // Check each part's value bytes before touching the output.
  for (const Part& part : p.parts) {
    if (part.rerouted) continue;
    uint64_t want = var ? 0 : uint64_t{part.num_keys} * row;  // (a request split by order has no runs)
    if (var) {
      for (const IndexRun& r : part.runs) want += begin_of(r.end) - begin_of(r.begin);
    }
    if (part.reply.frames[1].size() != want) {
      return Status::Corruption(fmt::format("{} returned {} value bytes, expected {}",
                                            runtime_->DescribeNode(part.node), part.reply.frames[1].size(), want));
    }
  }
  if (!p.call.out_vals.empty() && p.call.out_vals.size() != total) {
    return Status::InvalidArgument(fmt::format("the pull buffer holds {} values, the reply has {}",
                                               p.call.out_vals.size() / elem, total / elem));
  }
  // One part that is the whole request in order: hand over the received buffer itself.
  if (p.call.out_vals.empty() && p.parts.size() == 1 && p.parts[0].runs.size() == 1 &&
      p.parts[0].runs[0].begin == 0 && p.parts[0].runs[0].end == n) {
    *vals = p.parts[0].reply.frames[1];
    *lens = std::move(out_lens);
    return Status::Ok();
  }
  // Every key is some part's (the slices cover the request), so the buffer needs no zeroing.
  Bytes out = p.call.out_vals.empty() ? Bytes::Uninitialized(total) : p.call.out_vals;
  if (!p.order.empty()) {  // fixed width, hashed over several servers: each part by order
    std::span<const uint32_t> order = p.order;
    for (const Part& part : p.parts) {
      ScatterByOrder(part.reply.frames[1].data(), order.first(part.num_keys), row, out.data());
      order = order.subspan(part.num_keys);
    }
    *vals = std::move(out);
    *lens = std::move(out_lens);
    return Status::Ok();
  }
  for (const Part& part : p.parts) {
    if (part.rerouted) continue;
    const std::byte* src = part.reply.frames[1].data();
    if (!var) {
      ScatterRows(src, part.runs, row, out.data());
      continue;
    }
    for (const IndexRun& r : part.runs) {
      uint64_t b = begin_of(r.begin), bytes = begin_of(r.end) - b;
      if (bytes) std::memcpy(out.data() + b, src, bytes);
      src += bytes;
    }
  }
  *vals = std::move(out);
  *lens = std::move(out_lens);
  return Status::Ok();
}

void KVWorkerCore::Remember(int64_t ts, const Status& s) {
  errors_[ts] = s;
  while (errors_.size() > kMaxRememberedErrors) errors_.erase(errors_.begin());
}

Status KVWorkerCore::Wait(Timestamp ts, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (ts.value <= 0 || ts.value >= next_ts_) {
    return Status::InvalidArgument(fmt::format("timestamp {} was never issued by this worker", ts.value));
  }
  auto done = [&] { return !pending_.contains(ts.value) && !completing_.contains(ts.value); };
  // Finish wakes waiters only for a request somebody waits on (a wake-up is a scheduler round
  // trip; with several servers replies complete out of order).
  ++waiters_[ts.value];
  struct Unregister {
    absl::flat_hash_map<int64_t, int>& waiters;
    int64_t ts;
    ~Unregister() {
      if (auto it = waiters.find(ts); it != waiters.end() && --it->second == 0) waiters.erase(it);
    }
  } unregister{waiters_, ts.value};  // runs with mu_ held: `lock` is declared before it
  // A caller with one request in flight is latency bound, and its reply is often tens of
  // microseconds away: it yields a few times (watching the completion count, without the lock)
  // before sleeping on the condition variable, whose wake-up costs a scheduler round trip. With
  // more in flight, yielding would take the CPU from the threads that move the other requests.
  for (int spin = 0; spin < kWaitSpins && unfinished_.size() == 1 && !done(); ++spin) {
    const uint64_t seen = completions_.load(std::memory_order_acquire);
    lock.unlock();
    for (int i = 0; i < 64 && completions_.load(std::memory_order_acquire) == seen; ++i) std::this_thread::yield();
    lock.lock();
  }
  bool finished = done_cv_.wait_for(lock, timeout, done);
  if (!finished && !pending_.contains(ts.value)) {
    return Status::DeadlineExceeded(fmt::format("request {}: its callback did not return within {} ms", ts.value,
                                                timeout.count()));
  }
  if (!finished) {
    const Pending& p = pending_.at(ts.value);
    if (!p.unsent.empty()) {
      return Status::DeadlineExceeded(fmt::format(
          "{} request {} of table '{}' not started after {} ms: held by its dependencies (delay bound {}, {} "
          "explicit); oldest unfinished request is {}",
          transport::MessageTypeName(p.call.type), ts.value, p.spec->name, timeout.count(), p.max_delay,
          p.call.after.size(), unfinished_.empty() ? 0 : unfinished_.oldest()));
    }
    std::string waiting;
    for (const Part& part : p.parts) {
      if (part.answered) continue;
      if (!waiting.empty()) waiting += ", ";
      waiting += runtime_->DescribeNode(part.node);
    }
    return Status::DeadlineExceeded(fmt::format("{} request {} of table '{}' not complete after {} ms; waiting for {}",
                                                transport::MessageTypeName(p.call.type), ts.value, p.spec->name,
                                                timeout.count(), waiting));
  }
  auto err = errors_.find(ts.value);
  if (err == errors_.end()) return Status::Ok();
  Status s = err->second;
  errors_.erase(err);
  return s;
}

void KVWorkerCore::FailAll(const Status& why, const NodeId* only) {
  std::unique_lock lock(mu_);
  std::vector<std::pair<int64_t, size_t>> victims;
  for (const auto& [ts, p] : pending_) {
    // A task still held by the consistency gate sends its parts when it starts (SendAll then
    // re-slices those for dead servers).
    if (!p.unsent.empty()) continue;
    for (size_t i = 0; i < p.parts.size(); ++i) {
      if (!p.parts[i].answered && (only == nullptr || p.parts[i].node == *only)) victims.emplace_back(ts, i);
    }
  }
  for (const auto& [ts, i] : victims) Answer(lock, ts, i, nullptr, why);
}

KVWorkerCore::Unsent KVWorkerCore::ResendOrphans(std::unique_lock<std::mutex>& lock, const cluster::Routing& routing) {
  Unsent out;
  if (failed_servers_.empty()) return out;
  // Wanted first, then looked: the SendAll that brings sends_in_progress_ to 0 after this look
  // sees the wish (both sequentially consistent).
  resend_wanted_.store(true);
  if (sends_in_progress_.load() > 0) return out;
  resend_wanted_.store(false);
  for (uint32_t rank : routing.ring().servers()) {
    const cluster::NodeInfo* n = routing.Server(rank);
    if (n != nullptr && failed_servers_.contains(n->id)) return out;  // not the failover view yet
  }
  std::vector<std::pair<int64_t, size_t>> orphans;
  for (const auto& [ts, p] : pending_) {
    // A task still held by the consistency gate sends its parts when it starts (SendAll then
    // re-slices those for dead servers).
    if (!p.unsent.empty()) continue;
    for (size_t i = 0; i < p.parts.size(); ++i) {
      const Part& part = p.parts[i];
      if (!part.answered && !part.rerouted && failed_servers_.contains(part.node)) orphans.emplace_back(ts, i);
    }
  }
  for (const auto& [ts, i] : orphans) {
    auto it = pending_.find(ts);  // Reslice may release the lock (a part it fails completes)
    if (it == pending_.end() || it->second.parts[i].answered || it->second.parts[i].rerouted) continue;
    const NodeId dead = it->second.parts[i].node;
    Unsent resent = Reslice(lock, ts, i, routing, dead, dead);
    for (auto& m : resent) out.push_back(std::move(m));
  }
  if (!out.empty()) {
    PSERVER_LOG_INFO("worker {}: sends {} part(s) of requests to dead servers again, by the view of epoch {}",
                     runtime_->rank().value, out.size(), routing.epoch().value);
  }
  return out;
}

void KVWorkerCore::OnViewChanged(const std::shared_ptr<const cluster::Routing>& routing) {
  Unsent resend;
  {
    std::unique_lock lock(mu_);
    resend = ResendOrphans(lock, *routing);
  }
  if (resend.empty()) return;
  std::unique_lock send_lock(send_mu_);
  SendAll(send_lock, std::move(resend));
}

void KVWorkerCore::OnNodeLeft(const cluster::NodeFailure& who) {
  if (who.role == Role::kServer) catalog_.ForgetPeer(who.id);  // the filters' copies of its replies
}

void KVWorkerCore::OnNodeFailed(const cluster::NodeFailure& failure) {
  if (failure.role == Role::kServer) catalog_.ForgetPeer(failure.id);
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  if (failure.role == Role::kServer && routing->view().replicas >= 2) {
    // Its keys go to the next servers of its chains: what was sent to it goes there instead.
    Unsent resend;
    {
      std::unique_lock lock(mu_);
      failed_servers_.insert(failure.id);
      any_failed_servers_.store(true);
      resend = ResendOrphans(lock, *routing);
    }
    if (resend.empty()) return;
    std::unique_lock send_lock(send_mu_);
    SendAll(send_lock, std::move(resend));
    return;
  }
  Status why = Status::Unavailable(fmt::format("{} died: {}", cluster::NodeName(failure.role, failure.rank, failure.id),
                                               failure.reason));
  FailAll(why, &failure.id);
}

void KVWorkerCore::OnShutdown(const Status& why) { FailAll(why, nullptr); }

}  // namespace pserver::kv
