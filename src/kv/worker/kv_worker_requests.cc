// KVWorkerCore, request building: checking a call against its table, slicing it by the
// routing snapshot into parts, building each part's message, and re-slicing a redirected part.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/logging.h"
#include "cluster/key_placement.h"
#include "kv/worker/kv_worker_core.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::Pulls;
using transport::Pushes;

namespace {

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
      if (total * spec.push_arity * elem != call.vals.size()) {
        return Status::InvalidArgument(fmt::format("lengths add up to {} values{} but {} values were given", total,
                                                   spec.push_arity > 1 ? fmt::format(" x push arity {}", spec.push_arity)
                                                                       : "",
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
  if (call.exact && Pulls(call.type)) m.header.flags |= transport::kFlagExact;
  if (part.origin.value != 0) {
    m.header.flags |= transport::kFlagFailover;
    m.header.origin = part.origin;
  }
  const bool gathered = !p.order.empty();  // by SplitBySlice, for a hashed request
  m.frames.push_back(gathered ? std::move(keys) : Gather(transport::AsBytes(call.keys), part.runs, sizeof(Key), nullptr, 0));
  if (Pushes(call.type)) {
    if (p.spec->variable_length) {
      // A key of length l carries l * push_arity values (push_arity blocks of l).
      m.frames.push_back(Gather(call.vals, part.runs, 0, &offsets, elem * p.spec->push_arity));
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
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> found, catalog_.Find(call.table));
  const TableSpec& spec = *found;
  PSERVER_RETURN_IF_ERROR(Validate(call, spec));
  PSERVER_RETURN_IF_ERROR(CheckOptions(call));
  // Lossy filters round a push once, here, after every check a caller's mistake can fail (the
  // filters' state changes): its parts, and any part sent again, go from the result.
  if (Pushes(call.type) && !call.unrounded) {
    PSERVER_RETURN_IF_ERROR(CheckSliceable({call.keys.data(), call.keys.size()}, PlacementOf(spec)));
    PSERVER_RETURN_IF_ERROR(RoundPush(call, spec));
  }
  // Fixed-width rows of a hashed request over several servers move by order; variable rows
  // go by runs.
  std::vector<uint32_t> order;
  const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
  PSERVER_ASSIGN_OR_RETURN(Slices slices,
                           SliceKeys({call.keys.data(), call.keys.size()}, PlacementOf(spec), routing->ring(),
                                     spec.variable_length ? nullptr : &order));
  Pending p;
  if (metrics_) {
    p.metrics = &metrics_->Add(call.table, spec.name);
    if (prometheus::Counter* c = p.metrics->Requests(call.type)) c->Increment();
    p.submitted = std::chrono::steady_clock::now();
  }
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
  return Reslice(lock, ts, index, **routing, from, NodeId());
}

KVWorkerCore::Unsent KVWorkerCore::Reslice(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index,
                                           const cluster::Routing& routing, NodeId from, NodeId failover_from) {
  Pending& p = pending_.at(ts);
  auto fail = [&](const Status& why) {
    Answer(lock, ts, index, nullptr, why.WithContext(runtime_->DescribeNode(from)));
    return Unsent();
  };
  const NodeId origin = p.parts[index].origin.value != 0 ? p.parts[index].origin
                        : p.parts[index].undelivered     ? NodeId()
                                                         : failover_from;
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
  Result<Slices> slices = SliceKeys(keys, PlacementOf(*p.spec), routing.ring());
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
    part.node = routing.Server(s.server)->id;
    part.num_keys = s.num_keys;
    part.epoch = routing.epoch();
    part.origin = origin;
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
  PSERVER_LOG_DEBUG("worker {}: request {} part {} {} {}; resent by the view of epoch {} as {} part(s)",
                    runtime_->rank().value, ts, index, failover_from.value != 0 ? "went to" : "redirected by",
                    runtime_->DescribeNode(from), routing.epoch().value, out.size());
  return out;
}

Status KVWorkerCore::CheckOptions(const KVWorkerBase::Call& call) const {
  if (call.max_delay && *call.max_delay < kEventual) {
    return Status::InvalidArgument(fmt::format("delay bound {} is below -1 (kEventual)", *call.max_delay));
  }
  // Timestamps only grow: a dependency issued before now is one before the call's own.
  std::lock_guard lock(mu_);
  for (Timestamp d : call.after) {
    if (d.value <= 0 || d.value >= next_ts_) {
      return Status::InvalidArgument(fmt::format("dependency {} is not a request this worker issued", d.value));
    }
  }
  return Status::Ok();
}

Result<Timestamp> KVWorkerCore::PushHeld(KVWorkerBase::Call&& call) {
  // Every check first: what is held, once taken, is pushed.
  PSERVER_RETURN_IF_ERROR(runtime_->health());
  PSERVER_RETURN_IF_ERROR(CheckOptions(call));
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> spec, catalog_.Find(call.table));
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const FilterChain> chain, catalog_.Filters(call.table));
  const std::map<Key, std::vector<double>> held = chain->TakeHeld();
  std::vector<Key> keys;
  keys.reserve(held.size());
  for (const auto& entry : held) keys.push_back(entry.first);
  auto values = [&]<typename T>(T) {
    std::vector<T> out;
    out.reserve(held.size() * spec->width * spec->push_arity);
    for (const auto& entry : held) out.insert(out.end(), entry.second.begin(), entry.second.end());
    return transport::AsBytes(SharedArray<T>(std::move(out)));
  };
  call.type = transport::MessageType::kPush;
  call.value_type = spec->value_type;
  call.keys = SharedArray<Key>(std::move(keys));
  call.vals = spec->value_type == ValueType::kFloat64 ? values(0.0) : values(0.0f);
  call.unrounded = true;
  return Submit(std::move(call));
}

Result<uint32_t> KVWorkerCore::ServerOf(TableId table, Key key) const {
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> found, catalog_.Find(table));
  const TableSpec& spec = *found;
  cluster::Placement placement = PlacementOf(spec);
  if (placement.kind == cluster::PlacementKind::kRange && !placement.range.Contains(key)) {
    return Status::InvalidArgument(fmt::format("key {} lies outside table '{}' range [{}, {}]", key, spec.name,
                                               placement.range.first, placement.range.last));
  }
  return runtime_->routing()->ring().Owner(cluster::RoutingKey(placement, key));
}

}  // namespace pserver::kv
