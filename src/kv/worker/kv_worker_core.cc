#include "kv/worker/kv_worker_core.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <numeric>
#include <thread>

#include "base/logging.h"
#include "cluster/key_placement.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;

namespace {

using cluster::PlacementOf;

bool Pushes(MessageType t) { return t == MessageType::kPush || t == MessageType::kPushPull; }
bool Pulls(MessageType t) { return t == MessageType::kPull || t == MessageType::kPushPull; }

// Offsets (in values) of each key's first value: offsets[i] = lens[0] + ... + lens[i-1].
std::vector<uint64_t> Offsets(const SharedArray<int32_t>& lens) {
  std::vector<uint64_t> off(lens.size() + 1, 0);
  for (size_t i = 0; i < lens.size(); ++i) off[i + 1] = off[i] + static_cast<uint64_t>(lens[i]);
  return off;
}

// Copies the given index runs of `src` (rows of `row` bytes, or variable rows by `offsets`
// scaled by `elem`) into one new contiguous buffer, or aliases `src` when there is one run.
Bytes Gather(const Bytes& src, const IndexRuns& runs, size_t row, const std::vector<uint64_t>* offsets,
             size_t elem) {
  auto begin_of = [&](uint32_t i) { return offsets ? (*offsets)[i] * elem : uint64_t{i} * row; };
  if (runs.size() == 1) {
    uint64_t b = begin_of(runs[0].begin), e = begin_of(runs[0].end);
    return src.Slice(b, e);
  }
  uint64_t total = 0;
  for (const IndexRun& r : runs) total += begin_of(r.end) - begin_of(r.begin);
  Bytes out = Bytes::Uninitialized(total);
  if (!offsets) {
    GatherRows(src.data(), runs, row, out.data());
    return out;
  }
  uint64_t pos = 0;
  for (const IndexRun& r : runs) {
    uint64_t b = begin_of(r.begin), n = begin_of(r.end) - b;
    if (n) std::memcpy(out.data() + pos, src.data() + b, n);
    pos += n;
  }
  return out;
}

// Bytes pushed per key of a fixed-width table.
size_t PushRowBytes(const TableSpec& spec) {
  return size_t{spec.width} * spec.push_arity * ValueTypeSize(spec.value_type);
}

// Splits `src` (rows of `row` bytes, one per key) into one new buffer per slice by `order`
// (see SliceKeys): slice s takes the next keys_per_slice[s] entries of it.
std::vector<Bytes> SplitBySlice(const Bytes& src, std::span<const uint32_t> order, size_t row,
                                const absl::InlinedVector<uint32_t, 4>& keys_per_slice) {
  std::vector<Bytes> out;
  out.reserve(keys_per_slice.size());
  for (uint32_t n : keys_per_slice) {
    out.push_back(Bytes::Uninitialized(size_t{n} * row));
    GatherByOrder(src.data(), order.first(n), row, out.back().data());
    order = order.subspan(n);
  }
  return out;
}

std::string ReplyText(const Message& m) {
  if (m.frames.empty()) return "(no message)";
  return std::string(reinterpret_cast<const char*>(m.frames[0].data()), m.frames[0].size());
}

}  // namespace

Status KVWorkerCore::Validate(const KVWorkerBase::Call& call, const TableSpec& spec) const {
  if (spec.value_type != call.value_type) {
    return Status::InvalidArgument(fmt::format("table '{}' holds {} values, not {}", spec.name,
                                               ValueTypeName(spec.value_type), ValueTypeName(call.value_type)));
  }
  PSERVER_RETURN_IF_ERROR(CheckSortedUnique({call.keys.data(), call.keys.size()}));
  const size_t elem = ValueTypeSize(spec.value_type);
  const size_t n = call.keys.size();
  if (spec.variable_length) {
    if (Pushes(call.type)) {
      if (!call.has_lens) {
        return Status::InvalidArgument(fmt::format("table '{}' has variable-length values: pass a lengths array",
                                                   spec.name));
      }
      if (call.lens.size() != n) {
        return Status::InvalidArgument(fmt::format("{} lengths for {} keys", call.lens.size(), n));
      }
      uint64_t total = 0;
      for (size_t i = 0; i < n; ++i) {
        if (call.lens[i] < 0) {
          return Status::InvalidArgument(fmt::format("negative length {} for key {} at index {}", call.lens[i],
                                                     call.keys[i], i));
        }
        total += static_cast<uint64_t>(call.lens[i]);
      }
      if (total * elem != call.vals.size()) {
        return Status::InvalidArgument(fmt::format("lengths add up to {} values but {} values were given", total,
                                                   call.vals.size() / elem));
      }
    }
    return Status::Ok();
  }
  if (call.has_lens) {
    return Status::InvalidArgument(fmt::format("table '{}' has fixed width {}: do not pass lengths", spec.name,
                                               spec.width));
  }
  const uint64_t expected = uint64_t{n} * spec.width * elem;
  const uint64_t pushed = expected * spec.push_arity;
  if (Pushes(call.type) && call.vals.size() != pushed) {
    return Status::InvalidArgument(fmt::format("{} keys of width {} need {} values{}, {} were given", n, spec.width,
                                               pushed / elem,
                                               spec.push_arity > 1 ? fmt::format(" ({} per value: table '{}' rule '{}')",
                                                                                 spec.push_arity, spec.name,
                                                                                 spec.updater.name)
                                                                   : "",
                                               call.vals.size() / elem));
  }
  if (Pulls(call.type) && !call.out_vals.empty() && call.out_vals.size() != expected) {
    return Status::InvalidArgument(fmt::format("the pull buffer holds {} values, {} keys of width {} need {}",
                                               call.out_vals.size() / elem, n, spec.width,
                                               uint64_t{n} * spec.width));
  }
  return Status::Ok();
}

Message KVWorkerCore::BuildMessage(const Pending& p, const Part& part, int64_t ts,
                                   const std::vector<uint64_t>& offsets, Bytes keys, Bytes vals) const {
  const KVWorkerBase::Call& call = p.call;
  const size_t elem = ValueTypeSize(p.spec->value_type);
  Message m;
  m.header.type = call.type;
  m.header.sender = runtime_->id();
  m.header.receiver = part.node;
  m.header.table = call.table;
  m.header.value_type = p.spec->value_type;
  m.header.width = p.spec->variable_length ? 0 : p.spec->width;
  m.header.request_id = ts;
  m.header.epoch = part.epoch;
  m.header.part = static_cast<uint32_t>(&part - p.parts.data());
  m.header.clock = p.clock;
  m.header.aux = p.aux;
  const bool gathered = !p.order.empty();  // by SplitBySlice, for a hashed request
  m.frames.push_back(gathered ? std::move(keys) : Gather(transport::AsBytes(call.keys), part.runs, sizeof(Key), nullptr, 0));
  if (Pushes(call.type)) {
    if (p.spec->variable_length) {
      m.frames.push_back(Gather(call.vals, part.runs, 0, &offsets, elem));
      m.frames.push_back(Gather(transport::AsBytes(call.lens), part.runs, sizeof(int32_t), nullptr, 0));
    } else {
      m.frames.push_back(gathered ? std::move(vals)
                                  : Gather(call.vals, part.runs, PushRowBytes(*p.spec), nullptr, 0));
      m.frames.emplace_back();
    }
  } else {
    m.frames.emplace_back();
    m.frames.emplace_back();
  }
  return m;
}

Result<Timestamp> KVWorkerCore::Submit(KVWorkerBase::Call&& call) {
  PSERVER_RETURN_IF_ERROR(runtime_->health());
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> found, runtime_->FindTable(call.table));
  const TableSpec& spec = *found;
  PSERVER_RETURN_IF_ERROR(Validate(call, spec));
  if (call.max_delay && *call.max_delay < kEventual) {
    return Status::InvalidArgument(fmt::format("delay bound {} is below -1 (kEventual)", *call.max_delay));
  }
  // Fixed-width rows of a hashed request over several servers move by order; variable rows
  // go by runs.
  std::vector<uint32_t> order;
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  PSERVER_ASSIGN_OR_RETURN(Slices slices,
                           SliceKeys({call.keys.data(), call.keys.size()}, PlacementOf(spec), routing->ring(),
                                     spec.variable_length ? nullptr : &order));
  Pending p;
  p.spec = std::move(found);
  p.order = std::move(order);
  for (Slice& s : slices) {
    Part part;
    part.server = s.server;
    part.node = routing->Server(s.server)->id;  // the ring holds servers of the view only
    part.runs = std::move(s.runs);
    part.num_keys = s.num_keys;
    part.epoch = routing->epoch();
    p.parts.push_back(std::move(part));
  }
  p.call = std::move(call);
  p.unanswered = p.parts.size();

  const std::vector<uint64_t> offsets =
      p.spec->variable_length && Pushes(p.call.type) ? Offsets(p.call.lens) : std::vector<uint64_t>();
  // A hashed request over several servers: each part's keys and values in one pass each.
  std::vector<Bytes> part_keys, part_vals;
  if (!p.order.empty()) {
    absl::InlinedVector<uint32_t, 4> keys_per_part;
    for (const Part& part : p.parts) keys_per_part.push_back(part.num_keys);
    part_keys = SplitBySlice(transport::AsBytes(p.call.keys), p.order, sizeof(Key), keys_per_part);
    if (Pushes(p.call.type)) part_vals = SplitBySlice(p.call.vals, p.order, PushRowBytes(*p.spec), keys_per_part);
  }
  std::unique_lock send_lock(send_mu_);
  std::unique_lock lock(mu_);
  const int64_t ts = next_ts_;
  for (Timestamp d : p.call.after) {
    if (d.value <= 0 || d.value >= ts) {
      return Status::InvalidArgument(fmt::format("dependency {} is not a request this worker issued", d.value));
    }
  }
  ++next_ts_;
  const TableConsistency& tc = consistency_[p.call.table];
  p.max_delay = p.call.max_delay.value_or(tc.max_delay);
  if (Pulls(p.call.type) && tc.staleness >= 0) p.aux = static_cast<uint64_t>(tc.staleness) + 1;
  p.clock = clock_;
  Unsent messages;
  for (size_t i = 0; i < p.parts.size(); ++i) {
    messages.emplace_back(ts, BuildMessage(p, p.parts[i], ts, offsets,
                                           part_keys.empty() ? Bytes() : std::move(part_keys[i]),
                                           part_vals.empty() ? Bytes() : std::move(part_vals[i])));
  }
  unfinished_.Add(ts);
  if (!held_.empty() || !Ready(ts, p)) {
    for (auto& tm : messages) p.unsent.push_back(std::move(tm.second));
    pending_.emplace(ts, std::move(p));
    held_.push_back(Held{ts, {}});
    return Timestamp(ts);
  }
  if (p.parts.empty()) {
    completing_.insert(ts);
    lock.unlock();
    send_lock.unlock();
    Complete(ts, std::move(p));
    return Timestamp(ts);
  }
  pending_.emplace(ts, std::move(p));
  lock.unlock();
  SendAll(send_lock, std::move(messages));
  return Timestamp(ts);
}

bool KVWorkerCore::Ready(int64_t ts, const Pending& p) const {
  for (Timestamp d : p.call.after) {
    if (unfinished_.Contains(d.value)) return false;
  }
  // Every task <= ts - tau - 1 finished: the oldest unfinished task is at least ts - tau.
  return p.max_delay < 0 || unfinished_.empty() || unfinished_.oldest() >= ts - p.max_delay;
}

void KVWorkerCore::SendAll(std::unique_lock<std::mutex>& send_lock, Unsent msgs) {
  // Queued under send_mu_, so that every server's queue holds this worker's requests in
  // timestamp order; sent after it is released, so that no lock of this class is held across a
  // send that may block (a server blocked replying to this worker then never waits for it).
  for (auto& entry : msgs) runtime_->QueueData(std::move(entry.second));
  send_lock.unlock();
  // A failure (a dead peer, a send that timed out) may be of a request another thread queued:
  // it is answered here all the same.
  for (cluster::NodeRuntime::SendFailure& f : runtime_->FlushData()) {
    const transport::Header& h = f.header;
    if (h.type == MessageType::kClock) {
      PSERVER_LOG_WARN("worker {}: clock tick to {} not sent: {}", runtime_->rank().value,
                       runtime_->DescribeNode(h.receiver), f.error.ToString());
      continue;
    }
    std::unique_lock lock(mu_);
    Answer(lock, h.request_id, h.part, nullptr, f.error.WithContext(runtime_->DescribeNode(h.receiver)));
  }
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

Result<uint64_t> KVWorkerCore::Clock() {
  PSERVER_RETURN_IF_ERROR(runtime_->health());
  std::unique_lock send_lock(send_mu_);
  std::unique_lock lock(mu_);
  const uint64_t clock = ++clock_;
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
  PSERVER_RETURN_IF_ERROR(runtime_->FindTable(table).status());
  if (tau < kEventual) return Status::InvalidArgument(fmt::format("delay bound {} is below -1 (kEventual)", tau));
  {
    std::lock_guard lock(mu_);
    consistency_[table].max_delay = tau;
  }
  return Status::Ok();
}

Status KVWorkerCore::SetStaleness(TableId table, int64_t staleness) {
  PSERVER_RETURN_IF_ERROR(runtime_->FindTable(table).status());
  if (staleness < kEventual) {
    return Status::InvalidArgument(fmt::format("staleness {} is below -1 (kEventual)", staleness));
  }
  std::lock_guard lock(mu_);
  consistency_[table].staleness = staleness;
  return Status::Ok();
}

void KVWorkerCore::OnData(Message&& msg) {
  const auto& h = msg.header;
  if (!h.is_reply()) {
    PSERVER_LOG_WARN("worker {}: ignored a request sent to a worker: {}", runtime_->rank().value, transport::Describe(h));
    return;
  }
  std::unique_lock lock(mu_);
  auto it = pending_.find(h.request_id);
  if (it == pending_.end()) return;  // already failed (e.g. its server was declared dead)
  if (h.part >= it->second.parts.size()) return;
  Part& part = it->second.parts[h.part];
  if (part.node != h.sender || part.answered) return;  // a stray or repeated reply
  if (h.is_redirect()) {
    Unsent resend = Reroute(lock, h.request_id, h.part, msg);
    if (resend.empty()) return;
    lock.unlock();
    std::unique_lock send_lock(send_mu_);
    SendAll(send_lock, std::move(resend));
    return;
  }
  Status error;
  if (h.is_error()) {
    error = Status(static_cast<StatusCode>(h.status), ReplyText(msg))
                .WithContext(fmt::format("{}", runtime_->DescribeNode(h.sender)));
  }
  Answer(lock, h.request_id, h.part, &msg, error);
}

namespace {

// The maximal runs of consecutive values in ascending `indices`.
IndexRuns RunsOf(std::span<const uint32_t> indices) {
  IndexRuns runs;
  for (uint32_t i : indices) {
    if (!runs.empty() && runs.back().end == i) {
      ++runs.back().end;
    } else {
      runs.push_back(IndexRun{i, i + 1});
    }
  }
  return runs;
}

}  // namespace

KVWorkerCore::Unsent KVWorkerCore::Reroute(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index,
                                           const Message& redirect) {
  Pending& p = pending_.at(ts);
  const NodeId from = redirect.header.sender;
  auto fail = [&](const Status& why) {
    Answer(lock, ts, index, nullptr, why.WithContext(runtime_->DescribeNode(from)));
    return Unsent();
  };
  Result<cluster::ClusterView> view = redirect.frames.size() == 1 ? cluster::DecodeClusterView(redirect.frames[0])
                                                                   : Status::Corruption("a redirect without a view");
  if (!view.ok()) return fail(view.status());
  Result<std::shared_ptr<const cluster::Routing>> routing = runtime_->AdoptView(*view);
  if (!routing.ok()) return fail(routing.status());
  const Epoch sent_with = p.parts[index].epoch;
  if ((*routing)->epoch() <= sent_with) {
    return fail(Status::Internal(fmt::format(
        "redirected a request routed with the view of epoch {}, but its own view (epoch {}) is not newer",
        sent_with.value, view->epoch.value)));
  }
  // A request split by order: its parts become runs, so that new parts can join them.
  if (!p.order.empty()) {
    std::span<const uint32_t> order = p.order;
    for (Part& part : p.parts) {
      std::vector<uint32_t> mine(order.begin(), order.begin() + part.num_keys);
      std::sort(mine.begin(), mine.end());
      part.runs = RunsOf(mine);
      order = order.subspan(part.num_keys);
    }
    p.order.clear();
  }
  // The part's key indices and keys, re-sliced by the newer ring.
  std::vector<uint32_t> indices;
  for (const IndexRun& r : p.parts[index].runs) {
    for (uint32_t i = r.begin; i < r.end; ++i) indices.push_back(i);
  }
  std::vector<Key> keys(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) keys[i] = p.call.keys[indices[i]];
  Result<Slices> slices = SliceKeys(keys, PlacementOf(*p.spec), (*routing)->ring());
  if (!slices.ok()) return fail(slices.status());
  p.parts[index].answered = true;
  p.parts[index].rerouted = true;
  --p.unanswered;
  const std::vector<uint64_t> offsets =
      p.spec->variable_length && Pushes(p.call.type) ? Offsets(p.call.lens) : std::vector<uint64_t>();
  Unsent out;
  for (const Slice& s : *slices) {
    Part part;
    part.server = s.server;
    part.node = (*routing)->Server(s.server)->id;
    part.num_keys = s.num_keys;
    part.epoch = (*routing)->epoch();
    std::vector<uint32_t> mine;  // the slice's runs index `keys`; map them back to the request
    for (const IndexRun& r : s.runs) {
      for (uint32_t i = r.begin; i < r.end; ++i) mine.push_back(indices[i]);
    }
    part.runs = RunsOf(mine);
    p.parts.push_back(std::move(part));
    ++p.unanswered;
    Message m = BuildMessage(p, p.parts.back(), ts, offsets, Bytes(), Bytes());
    m.header.flags |= transport::kFlagResend;
    out.emplace_back(ts, std::move(m));
  }
  PSERVER_LOG_DEBUG("worker {}: request {} part {} redirected by {} to the view of epoch {}: resent as {} part(s)",
                    runtime_->rank().value, ts, index, runtime_->DescribeNode(from), (*routing)->epoch().value,
                    out.size());
  return out;
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

void KVWorkerCore::Complete(int64_t ts, Pending&& p) {
  // Nothing held: nothing to start (a task held later sees this one finished, or is started
  // by the completion it waits for).
  if (Finish(ts, std::move(p))) StartReady();
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

Result<uint32_t> KVWorkerCore::ServerOf(TableId table, Key key) const {
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> found, runtime_->FindTable(table));
  const TableSpec& spec = *found;
  cluster::Placement placement = PlacementOf(spec);
  if (placement.kind == cluster::PlacementKind::kRange && !placement.range.Contains(key)) {
    return Status::InvalidArgument(fmt::format("key {} lies outside table '{}' range [{}, {}]", key, spec.name,
                                               placement.range.first, placement.range.last));
  }
  return runtime_->routing()->ring().Owner(cluster::RoutingKey(placement, key));
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
    for (size_t i = 0; i < p.parts.size(); ++i) {
      if (!p.parts[i].answered && (only == nullptr || p.parts[i].node == *only)) victims.emplace_back(ts, i);
    }
  }
  for (const auto& [ts, i] : victims) Answer(lock, ts, i, nullptr, why);
}

void KVWorkerCore::OnNodeFailed(const cluster::NodeFailure& failure) {
  Status why = Status::Unavailable(fmt::format("{} died: {}", cluster::NodeName(failure.role, failure.rank, failure.id),
                                               failure.reason));
  FailAll(why, &failure.id);
}

void KVWorkerCore::OnShutdown(const Status& why) { FailAll(why, nullptr); }

}  // namespace pserver::kv
