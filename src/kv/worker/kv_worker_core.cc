#include "kv/worker/kv_worker_core.h"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "base/logging.h"
#include "cluster/key_placement.h"

namespace pserver::kv {

using transport::Bytes;
using transport::Message;
using transport::MessageType;

namespace {

cluster::Placement PlacementOf(const TableSpec& spec) {
  cluster::Placement p;
  p.kind = static_cast<cluster::PlacementKind>(spec.placement);
  p.range = spec.key_range;
  return p;
}

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
Bytes Gather(const Bytes& src, const std::vector<IndexRun>& runs, size_t row, const std::vector<uint64_t>* offsets,
             size_t elem) {
  auto begin_of = [&](uint32_t i) { return offsets ? (*offsets)[i] * elem : uint64_t{i} * row; };
  if (runs.size() == 1) {
    uint64_t b = begin_of(runs[0].begin), e = begin_of(runs[0].end);
    return src.Slice(b, e);
  }
  uint64_t total = 0;
  for (const IndexRun& r : runs) total += begin_of(r.end) - begin_of(r.begin);
  Bytes out(total);
  uint64_t pos = 0;
  for (const IndexRun& r : runs) {
    uint64_t b = begin_of(r.begin), n = begin_of(r.end) - b;
    if (n) std::memcpy(out.data() + pos, src.data() + b, n);
    pos += n;
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
  if (Pushes(call.type) && call.vals.size() != expected) {
    return Status::InvalidArgument(fmt::format("{} keys of width {} need {} values, {} were given", n, spec.width,
                                               uint64_t{n} * spec.width, call.vals.size() / elem));
  }
  if (Pulls(call.type) && !call.out_vals.empty() && call.out_vals.size() != expected) {
    return Status::InvalidArgument(fmt::format("the pull buffer holds {} values, {} keys of width {} need {}",
                                               call.out_vals.size() / elem, n, spec.width,
                                               uint64_t{n} * spec.width));
  }
  return Status::Ok();
}

Message KVWorkerCore::BuildMessage(const Pending& p, const Part& part, int64_t ts,
                                   const std::vector<uint64_t>& offsets) const {
  const KVWorkerBase::Call& call = p.call;
  const size_t elem = ValueTypeSize(p.spec.value_type);
  Message m;
  m.header.type = call.type;
  m.header.sender = runtime_->id();
  m.header.receiver = part.node;
  m.header.table = call.table;
  m.header.value_type = p.spec.value_type;
  m.header.width = p.spec.variable_length ? 0 : p.spec.width;
  m.header.request_id = ts;
  m.header.epoch = runtime_->view().epoch;
  m.frames.push_back(Gather(transport::AsBytes(call.keys), part.runs, sizeof(Key), nullptr, 0));
  if (Pushes(call.type)) {
    if (p.spec.variable_length) {
      m.frames.push_back(Gather(call.vals, part.runs, 0, &offsets, elem));
      m.frames.push_back(Gather(transport::AsBytes(call.lens), part.runs, sizeof(int32_t), nullptr, 0));
    } else {
      m.frames.push_back(Gather(call.vals, part.runs, size_t{p.spec.width} * elem, nullptr, 0));
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
  PSERVER_ASSIGN_OR_RETURN(TableSpec spec, runtime_->FindTable(call.table));
  PSERVER_RETURN_IF_ERROR(Validate(call, spec));
  PSERVER_ASSIGN_OR_RETURN(std::vector<Slice> slices,
                           SliceKeys({call.keys.data(), call.keys.size()}, PlacementOf(spec), runtime_->ring()));
  Pending p;
  p.spec = std::move(spec);
  for (Slice& s : slices) {
    Part part;
    part.server = s.server;
    part.node = runtime_->ServerNode(s.server);
    part.runs = std::move(s.runs);
    part.num_keys = s.num_keys;
    p.parts.push_back(std::move(part));
  }
  p.call = std::move(call);
  p.unanswered = p.parts.size();

  std::vector<Message> messages;
  messages.reserve(p.parts.size());
  const std::vector<uint64_t> offsets =
      p.spec.variable_length && Pushes(p.call.type) ? Offsets(p.call.lens) : std::vector<uint64_t>();
  int64_t ts;
  {
    std::unique_lock lock(mu_);
    ts = next_ts_++;
    for (const Part& part : p.parts) messages.push_back(BuildMessage(p, part, ts, offsets));
    if (p.parts.empty()) {
      completing_.insert(ts);
      lock.unlock();
      Complete(ts, std::move(p));
      return Timestamp(ts);
    }
    pending_.emplace(ts, std::move(p));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    NodeId node = messages[i].header.receiver;
    Status s = runtime_->PeerStatus(node);
    if (s.ok()) s = runtime_->transport().Send(std::move(messages[i]));
    if (!s.ok()) {
      std::unique_lock lock(mu_);
      Answer(lock, ts, i, nullptr, s.WithContext(runtime_->DescribeNode(node)));
    }
  }
  return Timestamp(ts);
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
  for (size_t i = 0; i < it->second.parts.size(); ++i) {
    Part& part = it->second.parts[i];
    if (part.node != h.sender || part.answered) continue;
    Status error;
    if (h.is_error()) {
      error = Status(static_cast<StatusCode>(h.status), ReplyText(msg))
                  .WithContext(fmt::format("{}", runtime_->DescribeNode(h.sender)));
    }
    Answer(lock, h.request_id, i, &msg, error);
    return;
  }
}

void KVWorkerCore::Answer(std::unique_lock<std::mutex>& lock, int64_t ts, size_t index, Message* reply,
                          const Status& error) {
  auto it = pending_.find(ts);
  if (it == pending_.end()) return;
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
  Status status = p.status;
  if (status.ok() && Pulls(p.call.type)) {
    Bytes vals;
    SharedArray<int32_t> lens;
    status = Assemble(p, &vals, &lens);
    if (status.ok() && p.call.on_values) p.call.on_values(std::move(vals), std::move(lens));
  }
  if (!status.ok()) {
    status = status.WithContext(fmt::format("{} request {} of table '{}'", transport::MessageTypeName(p.call.type), ts,
                                            p.spec.name));
  }
  if (p.call.callback) p.call.callback(status);
  std::lock_guard lock(mu_);
  if (!status.ok()) Remember(ts, status);
  completing_.erase(ts);
  done_cv_.notify_all();
}

Status KVWorkerCore::Assemble(Pending& p, Bytes* vals, SharedArray<int32_t>* lens) const {
  const size_t elem = ValueTypeSize(p.spec.value_type);
  const size_t n = p.call.keys.size();
  const bool var = p.spec.variable_length;
  for (const Part& part : p.parts) {
    if (part.reply.frames.size() != 3) {
      return Status::Corruption(fmt::format("{} sent a pull reply with {} frames, expected 3",
                                            runtime_->DescribeNode(part.node), part.reply.frames.size()));
    }
  }
  // Lengths first: they give each key's place in the values.
  SharedArray<int32_t> out_lens;
  std::vector<uint64_t> offsets;
  if (var) {
    out_lens = SharedArray<int32_t>(n);
    for (const Part& part : p.parts) {
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
  const size_t row = var ? 0 : size_t{p.spec.width} * elem;
  auto begin_of = [&](uint32_t i) { return var ? offsets[i] * elem : uint64_t{i} * row; };
  const uint64_t total = begin_of(static_cast<uint32_t>(n));
  // Check each part's value bytes before touching the output.
  for (const Part& part : p.parts) {
    uint64_t want = 0;
    for (const IndexRun& r : part.runs) want += begin_of(r.end) - begin_of(r.begin);
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
  Bytes out = p.call.out_vals.empty() ? Bytes(total) : p.call.out_vals;
  for (const Part& part : p.parts) {
    const std::byte* src = part.reply.frames[1].data();
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
  PSERVER_ASSIGN_OR_RETURN(TableSpec spec, runtime_->FindTable(table));
  cluster::Placement placement = PlacementOf(spec);
  if (placement.kind == cluster::PlacementKind::kRange && !placement.range.Contains(key)) {
    return Status::InvalidArgument(fmt::format("key {} lies outside table '{}' range [{}, {}]", key, spec.name,
                                               placement.range.first, placement.range.last));
  }
  return runtime_->ring().Owner(cluster::RoutingKey(placement, key));
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
  bool finished = done_cv_.wait_for(
      lock, timeout, [&] { return !pending_.contains(ts.value) && !completing_.contains(ts.value); });
  if (!finished && !pending_.contains(ts.value)) {
    return Status::DeadlineExceeded(fmt::format("request {}: its callback did not return within {} ms", ts.value,
                                                timeout.count()));
  }
  if (!finished) {
    const Pending& p = pending_.at(ts.value);
    std::string waiting;
    for (const Part& part : p.parts) {
      if (part.answered) continue;
      if (!waiting.empty()) waiting += ", ";
      waiting += runtime_->DescribeNode(part.node);
    }
    return Status::DeadlineExceeded(fmt::format("{} request {} of table '{}' not complete after {} ms; waiting for {}",
                                                transport::MessageTypeName(p.call.type), ts.value, p.spec.name,
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
