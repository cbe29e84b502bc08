#include "cluster/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/logging.h"

namespace pserver::cluster {

using transport::Message;
using transport::MessageType;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Result<std::unique_ptr<Scheduler>> Scheduler::Start(const NodeOptions& options,
                                                    std::unique_ptr<transport::Transport> transport) {
  if (options.num_servers == 0 || options.num_workers == 0) {
    return Status::InvalidArgument("a job needs at least one server and one worker");
  }
  if (options.scheduler_address.empty()) return Status::InvalidArgument("no scheduler address to listen at");
  std::unique_ptr<Scheduler> s(new Scheduler(options, std::move(transport)));
  PSERVER_ASSIGN_OR_RETURN(s->address_, s->transport_->Listen(options.scheduler_address));
  PSERVER_LOG_INFO("scheduler listening at {} for {} servers and {} workers", s->address_, options.num_servers,
                   options.num_workers);
  return s;
}

std::string Scheduler::Describe(NodeId id) const {
  auto it = member_index_.find(id);
  if (it == member_index_.end()) return fmt::format("node {}", id.value);
  const NodeInfo& n = members_[it->second].info;
  return NodeName(n.role, n.rank, n.id);
}

Status Scheduler::Run() {
  const auto started = Clock::now();
  while (!ended_) {
    Result<Message> msg = transport_->Receive(options_.heartbeat_interval);
    if (msg.ok()) {
      Handle(std::move(*msg));
    } else if (msg.status().code() != StatusCode::kDeadlineExceeded) {
      return msg.status();
    }
    if (!formed_ && Clock::now() - started > options_.register_timeout) {
      uint32_t servers = 0, workers = 0;
      for (const Member& m : members_) (m.info.role == Role::kServer ? servers : workers)++;
      Abort(Status::DeadlineExceeded(fmt::format(
          "only {} of {} servers and {} of {} workers registered within {} ms", servers, options_.num_servers,
          workers, options_.num_workers, options_.register_timeout.count())));
    }
    if (formed_) CheckLiveness();
  }
  Status done = FinishShutdown();
  if (!outcome_.ok()) return outcome_;
  return done;
}

void Scheduler::Handle(Message&& msg) {
  const auto& h = msg.header;
  if (h.type == MessageType::kRegister) return HandleRegister(std::move(msg));
  auto it = member_index_.find(h.sender);
  if (it == member_index_.end()) {
    PSERVER_LOG_WARN("scheduler: ignored {} from an unregistered node", transport::Describe(h));
    return;
  }
  Member& member = members_[it->second];
  member.last_seen = Clock::now();
  switch (h.type) {
    case MessageType::kHeartbeat: {
      Message ack;
      ack.header.type = MessageType::kHeartbeatAck;
      ack.header.receiver = h.sender;
      (void)transport_->SendNoWait(std::move(ack));
      return;
    }
    case MessageType::kBarrier: return HandleBarrier(msg);
    case MessageType::kDeclareTable: return HandleDeclareTable(msg);
    case MessageType::kFinalize: return HandleFinalize(msg);
    case MessageType::kShutdown:
      if (h.is_reply()) member.shutdown_acked = true;
      return;
    default:
      PSERVER_LOG_WARN("scheduler: ignored unexpected {}", transport::Describe(h));
  }
}

void Scheduler::HandleRegister(Message&& msg) {
  if (msg.frames.size() != 1) return;
  Result<RegisterRequest> req = DecodeRegisterRequest(msg.frames[0]);
  if (!req.ok()) {
    PSERVER_LOG_WARN("scheduler: {}", req.status().ToString());
    return;
  }
  for (const Member& m : members_) {
    if (m.info.address == req->address) return;  // a resent registration
  }
  NodeId id(next_id_++);
  if (Status s = transport_->Connect(id, req->address); !s.ok()) {
    PSERVER_LOG_WARN("scheduler: cannot connect back to {}: {}", req->address, s.ToString());
    return;
  }
  uint32_t of_role = 0;
  for (const Member& m : members_) of_role += m.info.role == req->role;
  uint32_t wanted = req->role == Role::kServer ? options_.num_servers : options_.num_workers;
  if (formed_ || of_role >= wanted) {
    Message from_node;  // the request as if it had come from the refused node's new id
    from_node.header.sender = id;
    ReplyError(from_node, MessageType::kRegisterReply,
               Status::Aborted(fmt::format("the job already has its {} {}s", wanted, RoleName(req->role))));
    return;
  }
  Member m;
  m.info = NodeInfo{id, req->role, Rank(), req->address};
  m.rank_hint = req->rank_hint;
  member_index_[id] = members_.size();
  members_.push_back(std::move(m));
  PSERVER_LOG_INFO("scheduler: {} registered from {} ({}/{})", RoleName(req->role), req->address, members_.size(),
                   options_.num_servers + options_.num_workers);
  if (members_.size() == options_.num_servers + options_.num_workers) FormCluster();
}

void Scheduler::FormCluster() {
  // Ranks: honour hints that are in range and unique, then fill the gaps in registration order.
  for (Role role : {Role::kServer, Role::kWorker}) {
    uint32_t count = role == Role::kServer ? options_.num_servers : options_.num_workers;
    std::vector<bool> taken(count, false);
    std::vector<Member*> unranked;
    for (Member& m : members_) {
      if (m.info.role != role) continue;
      if (m.rank_hint >= 0 && m.rank_hint < count && !taken[m.rank_hint]) {
        m.info.rank = Rank(static_cast<uint32_t>(m.rank_hint));
        taken[m.rank_hint] = true;
      } else {
        unranked.push_back(&m);
      }
    }
    uint32_t next = 0;
    for (Member* m : unranked) {
      while (taken[next]) ++next;
      m->info.rank = Rank(next);
      taken[next] = true;
    }
  }
  view_.epoch = Epoch(1);
  view_.num_servers = options_.num_servers;
  view_.num_workers = options_.num_workers;
  view_.virtual_nodes = options_.virtual_nodes;
  for (const Member& m : members_) view_.nodes.push_back(m.info);
  std::sort(view_.nodes.begin(), view_.nodes.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  auto now = Clock::now();
  for (Member& m : members_) {
    m.last_seen = now;
    Message reply;
    reply.header.type = MessageType::kRegisterReply;
    reply.header.receiver = m.info.id;
    reply.header.epoch = view_.epoch;
    reply.frames.push_back(Encode(RegisterReply{m.info.id, view_}));
    // Blocking: the connection to the node that registered last may still be forming.
    if (Status s = transport_->Send(std::move(reply)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not send the cluster view to {}: {}", Describe(m.info.id), s.ToString());
    }
  }
  formed_ = true;
  PSERVER_LOG_INFO("scheduler: cluster formed: {} servers, {} workers", options_.num_servers, options_.num_workers);
}

void Scheduler::CheckLiveness() {
  auto now = Clock::now();
  for (Member& m : members_) {
    if (m.finalized || m.dead) continue;
    auto silent = std::chrono::duration_cast<milliseconds>(now - m.last_seen);
    if (silent <= options_.heartbeat_timeout) continue;
    std::string reason = fmt::format("no heartbeat for {} ms (limit {} ms)", silent.count(),
                                     options_.heartbeat_timeout.count());
    PSERVER_LOG_ERROR("scheduler: {} is dead: {}", Describe(m.info.id), reason);
    m.dead = true;
    Message failed;
    failed.header.type = MessageType::kNodeFailed;
    failed.frames.push_back(Encode(NodeFailure{m.info.id, m.info.role, m.info.rank, reason}));
    Broadcast(std::move(failed));
    Abort(Status::Unavailable(fmt::format("{} died: {}", Describe(m.info.id), reason)));
    return;
  }
}

bool Scheduler::InGroup(const Member& m, BarrierGroup group) const {
  switch (group) {
    case BarrierGroup::kAll: return true;
    case BarrierGroup::kServers: return m.info.role == Role::kServer;
    case BarrierGroup::kWorkers: return m.info.role == Role::kWorker;
  }
  return false;
}

void Scheduler::HandleBarrier(const Message& msg) {
  if (msg.header.aux > static_cast<uint64_t>(BarrierGroup::kWorkers)) {
    ReplyError(msg, MessageType::kBarrierRelease, Status::InvalidArgument("unknown barrier group"));
    return;
  }
  auto group = static_cast<BarrierGroup>(msg.header.aux);
  barriers_[msg.header.aux].arrived[msg.header.sender] = msg.header.request_id;
  TryReleaseBarrier(group);
}

void Scheduler::TryReleaseBarrier(BarrierGroup group) {
  BarrierState& b = barriers_[static_cast<size_t>(group)];
  for (const Member& m : members_) {
    if (InGroup(m, group) && !b.arrived.contains(m.info.id)) return;
  }
  for (const auto& [node, call_id] : b.arrived) {
    Message release;
    release.header.type = MessageType::kBarrierRelease;
    release.header.receiver = node;
    release.header.request_id = call_id;
    release.header.aux = static_cast<uint64_t>(group);
    (void)transport_->SendNoWait(std::move(release));
  }
  b.arrived.clear();
}

void Scheduler::HandleDeclareTable(const Message& msg) {
  if (msg.frames.size() != 1) return;
  Result<TableSpec> spec = DecodeTableSpec(msg.frames[0]);
  Status valid = spec.ok() ? ValidateTableSpec(*spec) : spec.status();
  if (!valid.ok()) return ReplyError(msg, MessageType::kDeclareTableReply, valid);
  auto it = tables_.find(spec->name);
  if (it == tables_.end()) {
    it = tables_.emplace(spec->name, std::make_pair(TableId(next_table_++), *spec)).first;
    PSERVER_LOG_INFO("scheduler: table '{}' is id {} ({}, width {}{})", spec->name, it->second.first.value,
                     ValueTypeName(spec->value_type), spec->width, spec->variable_length ? ", variable length" : "");
  } else if (!(it->second.second == *spec)) {
    const TableSpec& old = it->second.second;
    return ReplyError(msg, MessageType::kDeclareTableReply,
                      Status::InvalidArgument(fmt::format(
                          "table '{}' was already declared differently ({}, width {}, {} length)", spec->name,
                          ValueTypeName(old.value_type), old.width, old.variable_length ? "variable" : "fixed")));
  }
  Message reply;
  reply.header.table = it->second.first;
  Reply(msg, MessageType::kDeclareTableReply, std::move(reply));
}

void Scheduler::HandleFinalize(const Message& msg) {
  Member& m = members_[member_index_.at(msg.header.sender)];
  if (m.info.role != Role::kWorker || m.finalized) return;
  m.finalized = true;
  for (const Member& w : members_) {
    if (w.info.role == Role::kWorker && !w.finalized) return;
  }
  PSERVER_LOG_INFO("scheduler: all {} workers finished; ending the job", options_.num_workers);
  Message shutdown;
  shutdown.header.type = MessageType::kShutdown;
  Broadcast(std::move(shutdown));
  ended_ = true;
}

void Scheduler::Abort(const Status& why) {
  if (ended_) return;
  outcome_ = why;
  Message shutdown;
  shutdown.header.type = MessageType::kShutdown;
  shutdown.header.flags = transport::kFlagError;
  shutdown.header.status = static_cast<uint8_t>(why.code());
  shutdown.frames.push_back(transport::BytesFromString(why.message()));
  Broadcast(std::move(shutdown));
  ended_ = true;
}

Status Scheduler::FinishShutdown() {
  // Wait (bounded) for the nodes to confirm, so that they exit before the scheduler does.
  auto deadline = Clock::now() + options_.shutdown_timeout;
  // A node that has stopped talking (e.g. a worker that already exited) is not waited for.
  auto pending = [&] {
    auto now = Clock::now();
    return std::count_if(members_.begin(), members_.end(), [&](const Member& m) {
      return !m.shutdown_acked && !m.dead && now - m.last_seen <= options_.heartbeat_timeout;
    });
  };
  while (pending() > 0 && Clock::now() < deadline) {
    auto left = std::min(options_.heartbeat_interval,
                         std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
    Result<Message> msg = transport_->Receive(std::max(left, milliseconds(0)));
    if (!msg.ok()) {
      if (msg.status().code() == StatusCode::kDeadlineExceeded) continue;
      break;
    }
    auto it = member_index_.find(msg->header.sender);
    if (it == member_index_.end()) continue;
    members_[it->second].last_seen = Clock::now();
    if (msg->header.type == MessageType::kShutdown && msg->header.is_reply()) members_[it->second].shutdown_acked = true;
  }
  if (pending() > 0 && outcome_.ok()) {
    PSERVER_LOG_WARN("scheduler: {} nodes did not confirm the shutdown within {} ms", pending(),
                     options_.shutdown_timeout.count());
  }
  return Status::Ok();
}

void Scheduler::Broadcast(Message msg) {
  for (const Member& m : members_) {
    if (m.dead) continue;
    Message copy = msg;
    copy.header.receiver = m.info.id;
    if (Status s = transport_->SendNoWait(std::move(copy)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not tell {}: {}", Describe(m.info.id), s.ToString());
    }
  }
}

void Scheduler::Reply(const Message& request, MessageType type, Message reply) {
  reply.header.type = type;
  reply.header.flags |= transport::kFlagReply;
  reply.header.receiver = request.header.sender;
  reply.header.request_id = request.header.request_id;
  // A registration reply may go to a connection still forming, so it may wait for it; every
  // other reply goes to a node that is connected, and a node gone must not stall the scheduler.
  if (type == MessageType::kRegisterReply) {
    (void)transport_->Send(std::move(reply));
  } else {
    (void)transport_->SendNoWait(std::move(reply));
  }
}

void Scheduler::ReplyError(const Message& request, MessageType type, const Status& error) {
  Message reply;
  reply.header.flags = transport::kFlagError;
  reply.header.status = static_cast<uint8_t>(error.code());
  reply.frames.push_back(transport::BytesFromString(error.message()));
  Reply(request, type, std::move(reply));
}

}  // namespace pserver::cluster
