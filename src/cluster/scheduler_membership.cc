// The scheduler's membership changes: late joins, drains, the phases of moving a server's keys,
// their cancellation, and the admin requests (`pserver status`, `pserver drain`). See
// scheduler.h and docs/elasticity.md.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "base/logging.h"
#include "cluster/scheduler.h"

namespace pserver::cluster {

using transport::Message;
using transport::MessageType;
using Clock = std::chrono::steady_clock;

namespace {

const char* StepName(int step) {
  switch (step) {
    case 0: return "announcing the tables";
    case 1: return "copying";
    case 2: return "switching views";
    case 3: return "copying the last changes";
    case 4: return "committing";
    case 5: return "waiting for every node to route by a view where the leaver owns nothing";
    case 6: return "waiting for every node to route by a view without the leaver";
  }
  return "?";
}

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

Scheduler::Member* Scheduler::FindServer(uint32_t rank) {
  for (Member& m : members_) {
    if (m.info.role == Role::kServer && m.info.rank.value == rank) return &m;
  }
  return nullptr;
}

Scheduler::Member* Scheduler::FindMember(NodeId id) {
  auto it = member_index_.find(id);
  return it == member_index_.end() ? nullptr : &members_[it->second];
}

void Scheduler::NextView(std::vector<RingSegment> ring) {
  ClusterView v;
  v.epoch = Epoch(view_.epoch.value + 1);
  for (const Member& m : members_) {
    // Only the members that take part: not a server that left (a leaver is listed, owning
    // nothing, until every node routes without it) or died (it owned no keys, else the job
    // ended), nor a worker that died or finished (a server joining later must not wait for its
    // clock).
    if (m.left || m.dead || (m.finalized && m.info.role == Role::kWorker)) continue;
    v.nodes.push_back(m.info);
    ++(m.info.role == Role::kServer ? v.num_servers : v.num_workers);
  }
  std::sort(v.nodes.begin(), v.nodes.end(), [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  v.ring = std::move(ring);
  v.replicas = view_.replicas;
  if (v.ring != view_.ring) ring_epoch_ = v.epoch;
  view_ = std::move(v);
}

void Scheduler::AnnounceView(const std::function<bool(const Member&)>& to) {
  Persist();  // recorded before any node routes by it
  if (ended_) return;
  for (const Member& m : members_) {
    if (m.dead || m.left || (m.finalized && m.info.role == Role::kWorker) || !to(m)) continue;
    Message msg;
    msg.header.type = MessageType::kViewChange;
    msg.header.receiver = m.info.id;
    msg.header.epoch = view_.epoch;
    msg.frames.push_back(Encode(view_));
    // Blocking (at most send_timeout): a membership change must not lose a view to a full queue.
    if (Status s = transport_->Send(std::move(msg)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not send the view of epoch {} to {}: {}", view_.epoch.value,
                       Describe(m.info.id), s.ToString());
    }
  }
}

void Scheduler::AdmitLate(const RegisterRequest& req, NodeId id, const transport::ConnectionId& origin) {
  if (migration_ && migration_->step >= Migration::kSwitch) {
    // The donors route by a view the others must not see yet: admit it once the change is done.
    held_registrations_.push_back(HeldRegistration{req, id, origin});
    return;
  }
  const bool server = req.role == Role::kServer;
  Member m;
  m.info = NodeInfo{id, req.role, Rank(next_rank_[server ? 0 : 1]++), req.address, origin};
  m.scheduler_identity = req.scheduler_identity;
  m.last_seen = Clock::now();
  m.joining = server;
  member_index_[id] = members_.size();
  members_.push_back(std::move(m));
  transport_->NamePeer(id, Describe(id));
  NextView(view_.ring);
  PSERVER_LOG_INFO("scheduler: {} joins the running job from {} (view of epoch {}: {} servers, {} workers)",
                   Describe(id), req.address, view_.epoch.value, view_.num_servers, view_.num_workers);
  Persist();
  if (ended_) return;
  Message reply;
  reply.header.type = MessageType::kRegisterReply;
  reply.header.receiver = id;
  reply.header.epoch = view_.epoch;
  reply.header.aux = generation_;
  reply.frames.push_back(Encode(RegisterReply{id, view_}));
  if (Status s = transport_->Send(std::move(reply)); !s.ok()) {
    // It will not heartbeat, and is declared dead: a server that never owned keys is dropped.
    PSERVER_LOG_WARN("scheduler: could not send the cluster view to {}: {}", Describe(id), s.ToString());
  }
  AnnounceView([id](const Member& other) { return other.info.id != id; });
  if (!server) return;
  // A server joining now never heard of the workers declared dead before: it fences them too
  // (one only stopped or cut off may wake and send to it).
  for (const Member& other : members_) {
    if (other.info.role != Role::kWorker || !other.dead) continue;
    Message failed;
    failed.header.type = MessageType::kNodeFailed;
    failed.header.receiver = id;
    failed.frames.push_back(Encode(NodeFailure{other.info.id, other.info.role, other.info.rank,
                                               "declared dead before this server joined"}));
    if (Status s = transport_->SendNoWait(std::move(failed)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not tell {} of {}'s death: {}", Describe(id), Describe(other.info.id),
                       s.ToString());
    }
  }
  // Tables being declared now are the joiner's too: the declaration completes once it took them.
  for (auto& [name, pending] : pending_tables_) {
    Message announce;
    announce.header.type = MessageType::kTableAnnounce;
    announce.header.receiver = id;
    announce.header.table = pending.id;
    announce.header.request_id = next_announce_++;
    announce.frames.push_back(pending.declaration.spec);
    if (transport_->Send(std::move(announce)).ok()) pending.awaiting.insert(id);
  }
  QueueChange(Change{Change::kJoin, id, {}});
}

void Scheduler::QueueChange(Change change) {
  changes_.push_back(std::move(change));
  StartNextChange();
}

void Scheduler::StartNextChange() {
  if (migration_ || checkpoint_ || changes_.empty() || ended_) return;  // the common turn: nothing to start
  // No change starts while a server's connection is broken (PeersDown(0)): perhaps it died and is
  // not declared dead yet. One that died before it is failed over from first; with replicas, one
  // that dies during a change before its switch calls the change off (it starts again after the
  // failover); otherwise a death during a change ends the job.
  const std::vector<NodeId> broken = transport_->PeersDown(std::chrono::milliseconds(0));
  const bool server_broken = std::any_of(broken.begin(), broken.end(), [this](NodeId id) {
    Member* m = FindMember(id);
    return m != nullptr && m->info.role == Role::kServer && !m->dead && !m->left;
  });
  if (server_broken) return;
  while (!migration_ && !checkpoint_ && !changes_.empty() && !ended_) {
    Change c = std::move(changes_.front());
    changes_.pop_front();
    Member* s = FindMember(c.server);
    auto refuse = [&c](const Status& why) {
      PSERVER_LOG_WARN("scheduler: {}", why.message());
      if (c.answer) c.answer(why);
    };
    if (s == nullptr || s->dead || s->left) {
      refuse(Status::Unavailable(fmt::format("{} is gone", Describe(c.server))));
      continue;
    }
    const uint32_t rank = s->info.rank.value;
    Result<PartitionPlacement> after =
        c.kind == Change::kJoin ? placement_->WithServer(rank) : placement_->WithoutServer(rank);
    if (!after.ok()) {
      if (c.kind == Change::kDrain && placement_->servers().size() == 1 && placement_->PartitionsOf(rank) > 0) {
        refuse(Status::InvalidArgument(fmt::format(
            "cannot drain {}: it is the last server, and no other could hold its keys", Describe(c.server))));
      } else {
        refuse(Status(after.status().code(),
                      fmt::format("cannot {} {}: {}", c.kind == Change::kJoin ? "place" : "drain", Describe(c.server),
                                  after.status().message())));
      }
      continue;
    }
    Migration m(std::move(*after));
    m.change = std::move(c);
    m.id = next_migration_++;
    m.transfers = TransfersBetween(*placement_, m.after);
    m.started = m.step_started = Clock::now();
    for (const Transfer& t : m.transfers) m.donors.insert(FindServer(t.from)->info.id);
    if (m.change.kind == Change::kDrain) s->draining = true;
    PSERVER_LOG_INFO("scheduler: {} {}: {} partitions of {} move from {} server(s)", Describe(s->info.id),
                     m.change.kind == Change::kJoin ? "joins" : "is drained",
                     m.change.kind == Change::kJoin ? m.after.PartitionsOf(rank) : placement_->PartitionsOf(rank),
                     PartitionPlacement::kPartitions, m.donors.size());
    migration_ = std::move(m);
    Persist();  // recorded as running before any server hears of it
    if (ended_) return;
    if (migration_->change.kind == Change::kJoin) {
      // The joiner takes every table before any row of it arrives.
      for (const auto& [name, table] : tables_) {
        const int64_t announce_id = next_announce_++;
        Message announce;
        announce.header.type = MessageType::kTableAnnounce;
        announce.header.receiver = s->info.id;
        announce.header.table = table.first;
        announce.header.request_id = announce_id;
        announce.frames.push_back(table.second.spec);
        if (Status st = transport_->Send(std::move(announce)); !st.ok()) {
          CancelMigration(st.WithContext(fmt::format("announcing table '{}' to the joining {}", name, Describe(s->info.id))));
          break;
        }
        migration_->table_announces[announce_id] = table.first;
        migration_->awaiting = {s->info.id};
      }
      if (!migration_) continue;
    }
    AdvanceMigration();
  }
}

void Scheduler::SendMigrate(const Migration& m, NodeId donor, MigratePhase phase) {
  Message msg;
  msg.header.type = MessageType::kMigrate;
  msg.header.receiver = donor;
  msg.header.request_id = m.id;
  msg.header.aux = static_cast<uint64_t>(phase);
  MigrateOrder order;
  const uint32_t donor_rank = FindMember(donor)->info.rank.value;
  for (const Transfer& t : m.transfers) {
    if (t.from == donor_rank) order.targets.push_back(MigrateTarget{FindServer(t.to)->info.id, t.ranges});
  }
  msg.frames.push_back(Encode(order));
  if (Status s = transport_->Send(std::move(msg)); !s.ok()) {
    PSERVER_LOG_WARN("scheduler: could not send a migration order to {}: {}", Describe(donor), s.ToString());
  }
}

void Scheduler::CheckMigrationDeadline() {
  if (!migration_ || ended_) return;
  const Migration& m = *migration_;
  const bool moving = m.step == Migration::kCopy || m.step == Migration::kFinal;
  const auto limit = moving ? std::chrono::duration_cast<std::chrono::seconds>(kMoveStepLimit) : kControlStepLimit;
  if (Clock::now() - m.step_started < limit) return;
  std::vector<std::string> silent;
  for (NodeId id : m.awaiting) silent.push_back(Describe(id));
  std::sort(silent.begin(), silent.end());
  const Status late = Status::DeadlineExceeded(fmt::format("{} did not answer within {} s while {}",
                                                           fmt::join(silent, ", "), limit.count(), StepName(m.step)));
  if (m.step < Migration::kCommitting) return CancelMigration(late);
  PSERVER_LOG_ERROR("scheduler: the change of {} is finished without them: {}", Describe(m.change.server),
                    late.message());
  if (m.step == Migration::kLeaving || m.step == Migration::kDeparting) {
    migration_->awaiting.clear();
    return AdvanceMigration();
  }
  FinishMigration(Status::Ok());
}

void Scheduler::AdvanceMigration() {
  while (migration_ && migration_->awaiting.empty() && !ended_) {
    Migration& m = *migration_;
    m.step_started = Clock::now();
    switch (m.step) {
      case Migration::kTables:
        // Copy: the donors send the moving rows while they go on serving, noting changes.
        m.step = Migration::kCopy;
        for (NodeId d : m.donors) SendMigrate(m, d, MigratePhase::kCopy);
        m.awaiting = m.donors;
        break;
      case Migration::kCopy:
        // Switch: the donors route by the new view (and redirect requests for what moves); the
        // others learn it at the commit, so that no recipient applies a moving key before its
        // last changes arrived (requests routed by the new view wait for it there).
        m.step = Migration::kSwitch;
        m.switched = Clock::now();
        NextView(m.after.Segments());
        m.switch_epoch = view_.epoch;
        AnnounceView([&m](const Member& x) { return m.donors.contains(x.info.id); });
        m.awaiting = m.donors;
        break;
      case Migration::kSwitch:
        m.step = Migration::kFinal;
        for (NodeId d : m.donors) SendMigrate(m, d, MigratePhase::kFinal);
        m.awaiting = m.donors;
        break;
      case Migration::kFinal: {
        // Commit: the placement is the new one, and everyone routes by it.
        placement_ = m.after;
        Member* subject = FindMember(m.change.server);
        if (m.change.kind == Change::kJoin) {
          // The donors erase what they handed over, and answer once done (a change after this
          // one may send them rows of the same keys); the joiner confirms it serves them.
          m.step = Migration::kCommitting;
          subject->joining = false;
          AnnounceView([&m](const Member& x) { return !m.donors.contains(x.info.id); });
          for (NodeId d : m.donors) SendMigrate(m, d, MigratePhase::kCommit);
          m.awaiting = m.donors;
          m.awaiting.insert(subject->info.id);
          break;
        }
        // The leaver goes on redirecting until every other node routes by a view in which it
        // owns nothing (it stays listed there, so that its redirects are still believed), so
        // that no request sent by an older view goes unanswered.
        m.step = Migration::kLeaving;
        subject->draining = false;
        NextView(placement_->Segments());  // still lists the leaver (not left yet), owning nothing
        subject->left = true;
        m.switch_epoch = view_.epoch;
        AnnounceView([](const Member&) { return true; });
        m.awaiting.clear();
        for (const Member& x : members_) {
          if (!x.dead && !x.left && !(x.finalized && x.info.role == Role::kWorker)) m.awaiting.insert(x.info.id);
        }
        break;
      }
      case Migration::kCommitting:
        FinishMigration(Status::Ok());
        return;
      case Migration::kLeaving:
        // Then a view without it at all, so that nothing (not even a clock tick) is sent to
        // it once it is gone.
        m.step = Migration::kDeparting;
        NextView(placement_->Segments());
        m.switch_epoch = view_.epoch;
        AnnounceView([](const Member&) { return true; });
        for (const Member& x : members_) {
          if (!x.dead && !x.left && !(x.finalized && x.info.role == Role::kWorker)) m.awaiting.insert(x.info.id);
        }
        break;
      case Migration::kDeparting: {
        Message bye;
        bye.header.type = MessageType::kShutdown;
        bye.header.receiver = m.change.server;
        bye.header.aux = kShutdownDrained;
        // Blocking (at most send_timeout): the leaver is alive and reading, and must hear it.
        if (Status sent = transport_->Send(std::move(bye)); !sent.ok()) {
          PSERVER_LOG_ERROR("scheduler: could not tell the drained {} to exit: {}", Describe(m.change.server),
                            sent.ToString());
        } else {
          PSERVER_LOG_INFO("scheduler: told the drained {} to exit", Describe(m.change.server));
        }
        FinishMigration(Status::Ok());
        return;
      }
    }
  }
}

void Scheduler::FinishMigration(const Status& outcome) {
  Migration m = std::move(*migration_);
  migration_.reset();
  if (outcome.ok()) {
    const auto now = Clock::now();
    reports_.push_back(ChangeReport{m.change.kind == Change::kJoin, FindMember(m.change.server)->info.rank.value,
                                    static_cast<uint32_t>(placement_->servers().size()), m.copied, m.finals,
                                    Millis(now - m.started), Millis(now - m.switched)});
    ++changes_done_;
    PSERVER_LOG_INFO(
        "scheduler: {} {} at epoch {}: {} rows ({} bytes) copied, then {} changed rows; {:.1f} ms in all, {:.1f} ms "
        "from the switch",
        Describe(m.change.server), m.change.kind == Change::kJoin ? "joined" : "was drained", view_.epoch.value,
        m.copied.rows, m.copied.bytes, m.finals.rows, Millis(now - m.started), Millis(now - m.switched));
  }
  if (m.change.answer) m.change.answer(outcome);
  StartNextChange();
}

void Scheduler::AdmitHeldRegistrations() {
  if (held_registrations_.empty() || (migration_ && migration_->step >= Migration::kSwitch)) return;
  std::vector<HeldRegistration> held;
  held.swap(held_registrations_);
  for (HeldRegistration& r : held) AdmitLate(r.request, r.id, r.origin);
}

void Scheduler::CancelDonors(const Migration& m) {
  for (NodeId d : m.donors) {
    Member* donor = FindMember(d);
    if (donor != nullptr && !donor->dead) SendMigrate(m, d, MigratePhase::kCancel);
  }
}

void Scheduler::CancelMigration(const Status& why) {
  Migration& m = *migration_;
  PSERVER_LOG_WARN("scheduler: the change of {} is cancelled while {}: {}", Describe(m.change.server),
                   StepName(m.step), why.message());
  CancelDonors(m);
  Member* subject = FindMember(m.change.server);
  if (m.change.kind == Change::kJoin && !subject->dead) {
    // A joiner that cannot take its keys (it refused a table, or a send to it failed) is sent
    // away, and everyone hears of it as of a death: requests sent to it fail instead of waiting.
    subject->left = true;
    Message gone;
    gone.header.type = MessageType::kNodeFailed;
    gone.frames.push_back(Encode(NodeFailure{subject->info.id, subject->info.role, subject->info.rank,
                                             fmt::format("sent away: {}", why.message())}));
    Broadcast(std::move(gone));
    Message bye;
    bye.header.type = MessageType::kShutdown;
    bye.header.receiver = subject->info.id;
    bye.header.flags = transport::kFlagError;
    bye.header.status = static_cast<uint8_t>(why.code());
    bye.frames.push_back(transport::BytesFromString(fmt::format("could not join the job: {}", why.message())));
    (void)transport_->SendNoWait(std::move(bye));
  }
  subject->draining = false;
  // Everyone routes by the old placement again, at a new epoch (the donors switched already,
  // perhaps), and without a joiner that died. After the switch, which only the donors saw, every
  // owner resyncs its replicas: a donor may have dropped rows it held as one under it.
  NextView(placement_->Segments());
  view_.resync = m.step >= Migration::kSwitch;
  AnnounceView([](const Member&) { return true; });
  FinishMigration(why);
}

void Scheduler::CallOffChange(const Status& why) {
  Migration m = std::move(*migration_);
  migration_.reset();
  PSERVER_LOG_WARN("scheduler: the change of {} is called off while {}, to start again after the failover: {}",
                   Describe(m.change.server), StepName(m.step), why.message());
  CancelDonors(m);
  changes_.push_front(std::move(m.change));  // a drain's subject stays marked draining
  Persist();
}

void Scheduler::HandleMigrateReply(const Message& msg) {
  if (!migration_ || msg.header.request_id != migration_->id || !migration_->awaiting.contains(msg.header.sender)) {
    return;  // late: the change ended (cancelled) meanwhile
  }
  Migration& m = *migration_;
  const MigratePhase phase = m.step == Migration::kCopy    ? MigratePhase::kCopy
                             : m.step == Migration::kFinal ? MigratePhase::kFinal
                                                           : MigratePhase::kCommit;
  if (msg.header.aux != static_cast<uint64_t>(phase)) return;
  if (msg.header.is_error()) {
    const Status why = CarriedError(msg);
    return CancelMigration(Status(why.code(), fmt::format("{}: {}", Describe(msg.header.sender), why.message())));
  }
  Result<MigrateReport> report = msg.frames.size() == 1 ? DecodeMigrateReport(msg.frames[0])
                                                         : Status::Corruption("migrate-reply without its report");
  if (report.ok()) {
    if (phase != MigratePhase::kCommit) {
      MigrateReport& sum = phase == MigratePhase::kCopy ? m.copied : m.finals;
      sum.rows += report->rows;
      sum.bytes += report->bytes;
    }
  }
  m.awaiting.erase(msg.header.sender);
  AdvanceMigration();
}

void Scheduler::ServerDied(size_t index, const std::string& reason) {
  const Member& m = members_[index];
  const bool subject = migration_ && migration_->change.server == m.info.id;
  // Before the commit the donors hold every row: the join is called off. From the commit on
  // the joiner holds keys (the donors erase them), so its death is any server's.
  if (subject && migration_->change.kind == Change::kJoin && migration_->step < Migration::kCommitting) {
    PSERVER_LOG_WARN("scheduler: {} died while joining ({}); its change is cancelled", Describe(m.info.id), reason);
    return CancelMigration(
        Status::Unavailable(fmt::format("{} died while joining: {}", Describe(m.info.id), reason)));
  }
  if (m.joining && !subject) {  // queued: it owned nothing yet, and the job goes on without it
    PSERVER_LOG_WARN("scheduler: {} died before it joined ({}); the job goes on without it", Describe(m.info.id), reason);
    return;
  }
  if (view_.replicas >= 2 && migration_ && migration_->step < Migration::kSwitch) {
    CallOffChange(Status::Unavailable(fmt::format("{} died: {}", Describe(m.info.id), reason)));
  }
  if (view_.replicas >= 2) {
    Status failed_over = FailOver(index, reason);
    if (failed_over.ok()) return;
    PSERVER_LOG_ERROR("scheduler: {} is dead: {}; {}", Describe(m.info.id), reason, failed_over.message());
    return Abort(Status::Unavailable(fmt::format("{} died: {}; {}", Describe(m.info.id), reason, failed_over.message())));
  }
  PSERVER_LOG_ERROR("scheduler: {} is dead: {}", Describe(m.info.id), reason);
  Abort(Status::Unavailable(fmt::format("{} died: {}", Describe(m.info.id), reason)));
}

Status Scheduler::FailOver(size_t index, const std::string& reason) {
  const Member& m = members_[index];
  if (migration_) {
    return Status::Unavailable(fmt::format("it died while a membership change ran (change {}), and failover waits for none",
                                           migration_->id));
  }
  if (m.synced < ring_epoch_) {
    return Status::Unavailable(fmt::format(
        "its replicas were not complete for the chains of epoch {} (last complete at epoch {}): the servers of its "
        "chains may lack rows, so none can take its place",
        ring_epoch_.value, m.synced.value));
  }
  const uint32_t rank = m.info.rank.value;
  for (const Member& other : members_) {
    if (&other != &m && other.dead && other.info.role == Role::kServer && placement_->PartitionsOf(other.info.rank.value) > 0) {
      return Status::Unavailable(fmt::format(
          "{} died too, before the replicas of either were restored: the servers of their chains may lack rows, so "
          "none can take their place",
          Describe(other.info.id)));
    }
  }
  Result<std::shared_ptr<const Routing>> routing = Routing::Build(view_);
  if (!routing.ok()) return routing.status();
  if ((*routing)->chain_length() < 2) return Status::Unavailable("no other server holds its rows");
  auto heir = [&](uint32_t partition) {
    return (*routing)->Chain(PartitionPlacement::RangeOfPartition(partition).first)[1];
  };
  Result<PartitionPlacement> after = placement_->WithoutServerTo(rank, heir);
  if (!after.ok()) return after.status();
  placement_ = std::move(*after);
  NextView(placement_->Segments());
  PSERVER_LOG_WARN("scheduler: {} is dead: {}; the next server of each of its chains serves its keys from epoch {}",
                   Describe(m.info.id), reason, view_.epoch.value);
  failovers_.push_back(fmt::format("{} at epoch {} ({})", Describe(m.info.id), view_.epoch.value, reason));
  AnnounceView([](const Member&) { return true; });
  return Status::Ok();
}

void Scheduler::HandleAdmin(const Message& msg) {
  if (msg.origin.anonymous()) return Refuse(msg, "admin request from a connection without a pserver identity");
  Result<AdminRequest> req = msg.frames.size() == 1 ? DecodeAdminRequest(msg.frames[0])
                                                     : Status::Corruption("admin request without its body");
  if (!req.ok()) return Refuse(msg, "malformed admin request");
  transport::Header to = msg.header;
  if (req->reply_address.empty()) {
    // A member: believed only over its own connection.
    Member* m = FindMember(msg.header.sender);
    if (m == nullptr || m->info.identity != msg.origin) return Refuse(msg, "admin request from an unknown member");
  } else {
    to.sender = next_tool_id_;
    next_tool_id_ = NodeId(next_tool_id_.value + 1);
    if (Status s = transport_->Connect(to.sender, req->reply_address); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: cannot answer the admin request from {}: {}", req->reply_address, s.ToString());
      return;
    }
    transport_->NamePeer(to.sender, fmt::format("the tool at {}", req->reply_address));
  }
  const auto asked = Clock::now();
  const bool is_tool = !req->reply_address.empty();
  auto answer = [this, to, asked, is_tool](const Status& outcome, const std::string& text) {
    Message reply;
    if (!outcome.ok()) {
      reply.header.flags = transport::kFlagError;
      reply.header.status = static_cast<uint8_t>(outcome.code());
      reply.frames.push_back(transport::BytesFromString(outcome.message()));
    } else {
      reply.frames.push_back(transport::BytesFromString(text));
    }
    reply.header.type = MessageType::kAdminReply;
    reply.header.flags |= transport::kFlagReply;
    reply.header.receiver = to.sender;
    reply.header.request_id = to.request_id;
    // A tool that went away (Ctrl-C during a long drain, or a poll that timed out) must not
    // stall the scheduler; one that asked just now may still be connecting: its answer is tried
    // again every turn, for 2 s from its question.
    Status s = transport_->SendNoWait(reply);
    if (!s.ok() && Clock::now() - asked < kAnswerPatience) {
      unsent_answers_.push_back(UnsentAnswer{std::move(reply), asked + kAnswerPatience, is_tool});
      return;
    }
    if (!s.ok()) PSERVER_LOG_WARN("scheduler: could not answer {}: {}", transport_->PeerName(to.sender), s.ToString());
    // A tool is answered once: its connection goes (the answer still reaches it, within the
    // transport's linger), so that tools polling a long job do not pile up connections.
    if (is_tool) transport_->Disconnect(to.sender);
  };
  if (!formed_) return answer(Status::Unavailable("the cluster has not formed yet"), "");
  if (req->op == AdminOp::kStatus || req->op == AdminOp::kStatusJson) {
    return StartStatus(req->op == AdminOp::kStatusJson,
                       [answer](const std::string& text) { answer(Status::Ok(), text); });
  }
  if (req->op == AdminOp::kCheckpoint) {
    if (req->path.empty()) return answer(Status::InvalidArgument("a checkpoint needs a directory"), "");
    PSERVER_LOG_INFO("scheduler: {} asked for a checkpoint into {}",
                     req->reply_address.empty() ? Describe(msg.header.sender) : req->reply_address, req->path);
    return QueueCheckpoint(req->path, answer);
  }
  if (req->op == AdminOp::kTakeOver) {
    if (!req->reply_address.empty()) return answer(Status::InvalidArgument("only a worker of the job takes over work"), "");
    return answer(TakeOver(msg.header.sender, req->node), "");
  }
  Member* s = FindMember(req->node);
  if (s == nullptr || s->info.role != Role::kServer || s->dead || s->left) {
    return answer(Status::InvalidArgument(fmt::format("node {} is no live server of the job", req->node.value)), "");
  }
  if (s->draining) return answer(Status::InvalidArgument(fmt::format("{} is being drained already", Describe(s->info.id))), "");
  PSERVER_LOG_INFO("scheduler: {} asked to drain {}", req->reply_address.empty() ? Describe(msg.header.sender)
                                                                                  : req->reply_address,
                   Describe(s->info.id));
  const std::string name = Describe(s->info.id);
  QueueChange(Change{Change::kDrain, s->info.id, [answer, name](const Status& outcome) {
                       answer(outcome, fmt::format("{} was drained and exits", name));
                     }});
}

void Scheduler::RetryUnsentAnswers() {
  if (unsent_answers_.empty()) return;
  const auto now = Clock::now();
  std::vector<UnsentAnswer> left;
  for (UnsentAnswer& a : unsent_answers_) {
    const NodeId to = a.reply.header.receiver;
    Status s = transport_->SendNoWait(a.reply);
    if (!s.ok() && now < a.give_up) {
      left.push_back(std::move(a));
      continue;
    }
    if (!s.ok()) PSERVER_LOG_WARN("scheduler: could not answer {}: {}", transport_->PeerName(to), s.ToString());
    if (a.tool) transport_->Disconnect(to);
  }
  unsent_answers_ = std::move(left);
}

void Scheduler::StartStatus(bool json, std::function<void(const std::string&)> answer) {
  PendingStatus p;
  p.json = json;
  p.id = next_status_++;
  p.deadline = Clock::now() + std::min<std::chrono::milliseconds>(options_.heartbeat_timeout, std::chrono::seconds(5));
  p.answer = std::move(answer);
  for (const Member& m : members_) {
    if (m.info.role != Role::kServer || m.dead || m.left) continue;
    Message ask;
    ask.header.type = MessageType::kAdmin;
    ask.header.receiver = m.info.id;
    ask.header.request_id = p.id;
    if (transport_->SendNoWait(std::move(ask)).ok()) p.awaiting.insert(m.info.id);
  }
  pending_statuses_.push_back(std::move(p));
  CheckStatuses();
}

void Scheduler::HandleStatsReply(const Message& msg) {
  for (PendingStatus& p : pending_statuses_) {
    if (p.id != msg.header.request_id || p.awaiting.erase(msg.header.sender) == 0) continue;
    Result<std::vector<TableStats>> stats = msg.frames.size() == 1 ? DecodeTableStats(msg.frames[0])
                                                                   : Status::Corruption("table stats without a body");
    if (stats.ok()) p.stats[msg.header.sender] = std::move(*stats);
  }
  CheckStatuses();
}

void Scheduler::CheckStatuses() {
  const auto now = Clock::now();
  for (auto it = pending_statuses_.begin(); it != pending_statuses_.end();) {
    absl::erase_if(it->awaiting, [&](NodeId id) {
      const Member* m = FindMember(id);
      return m == nullptr || m->dead || m->left;
    });
    if (it->awaiting.empty() || now >= it->deadline) {
      PendingStatus done = std::move(*it);
      it = pending_statuses_.erase(it);
      done.answer(DescribeStatus(done));
    } else {
      ++it;
    }
  }
}

nlohmann::json Scheduler::StatusDocument(const absl::flat_hash_map<NodeId, std::vector<TableStats>>& stats) const {
  nlohmann::json doc = {{"epoch", view_.epoch.value},
                        {"servers", view_.num_servers},
                        {"workers", view_.num_workers},
                        {"partitions", PartitionPlacement::kPartitions},
                        {"replicas", view_.replicas},
                        {"changes_done", changes_done_.load()},
                        {"changes_waiting", changes_.size()},
                        {"change_running", nullptr},
                        {"failovers", failovers_}};
  if (migration_) {
    doc["change_running"] = {{"server", Describe(migration_->change.server)},
                             {"kind", migration_->change.kind == Change::kJoin ? "join" : "drain"},
                             {"step", StepName(migration_->step)}};
  }
  nlohmann::json members = nlohmann::json::array();
  for (Role role : {Role::kServer, Role::kWorker}) {
    for (const Member& m : members_) {
      if (m.info.role != role) continue;
      const char* state = m.dead       ? "dead"
                          : m.left     ? "left"
                          : m.joining  ? "joining"
                          : m.draining ? "draining"
                          : m.finalized ? "finished"
                          : role == Role::kServer ? "serving" : "working";
      nlohmann::json member = {{"id", m.info.id.value},
                               {"name", Describe(m.info.id)},
                               {"role", role == Role::kServer ? "server" : "worker"},
                               {"state", state},
                               {"address", m.info.address}};
      if (role == Role::kServer && placement_) {
        member["partitions"] = placement_->PartitionsOf(m.info.rank.value);
        if (view_.replicas >= 2 && !m.dead && !m.left && !m.joining) member["replicas_in_sync"] = m.synced >= ring_epoch_;
      }
      if (role == Role::kServer && !m.dead && !m.left) {
        auto held = stats.find(m.info.id);
        member["tables"] = nullptr;  // it did not say what it holds
        if (held != stats.end()) {
          member["tables"] = nlohmann::json::array();
          for (const TableStats& t : held->second) {
            member["tables"].push_back({{"table", t.table.value}, {"rows", t.rows}, {"bytes", t.bytes}});
          }
        }
      }
      members.push_back(std::move(member));
    }
  }
  doc["members"] = std::move(members);
  nlohmann::json tables = nlohmann::json::array();
  for (const auto& [name, t] : tables_) {
    tables.push_back({{"id", t.first.value}, {"name", name}, {"spec", t.second.summary}});
  }
  std::sort(tables.begin(), tables.end(), [](const nlohmann::json& a, const nlohmann::json& b) { return a["id"] < b["id"]; });
  doc["tables"] = std::move(tables);
  return doc;
}

std::string Scheduler::StatusTextOf(const nlohmann::json& doc) {
  std::string out = fmt::format("epoch {}: {} servers, {} workers; {} partitions of the routing-key space\n",
                                doc["epoch"].get<uint64_t>(), doc["servers"].get<uint32_t>(),
                                doc["workers"].get<uint32_t>(), doc["partitions"].get<uint32_t>());
  if (const nlohmann::json& c = doc["change_running"]; !c.is_null()) {
    out += fmt::format("change running: {} {} ({})\n", c["server"].get<std::string>(),
                       c["kind"] == "join" ? "joins" : "is drained", c["step"].get<std::string>());
  }
  out += fmt::format("changes done: {}, waiting: {}\n", doc["changes_done"].get<int64_t>(),
                     doc["changes_waiting"].get<size_t>());
  if (doc["replicas"].get<uint32_t>() >= 2) {
    out += fmt::format("replicas: {} per key\n", doc["replicas"].get<uint32_t>());
    for (const auto& f : doc["failovers"]) out += fmt::format("failed over from {}\n", f.get<std::string>());
  }
  for (const char* role : {"server", "worker"}) {
    out += std::string(role) + "s:\n";
    for (const nlohmann::json& m : doc["members"]) {
      if (m["role"] != role) continue;
      out += fmt::format("  {:<24} {:<9} {}", m["name"].get<std::string>(), m["state"].get<std::string>(),
                         m["address"].get<std::string>());
      if (m.contains("partitions")) {
        const auto parts = m["partitions"].get<uint32_t>();
        out += fmt::format("  share {:.4f} ({} partitions)", double(parts) / doc["partitions"].get<uint32_t>(), parts);
      }
      if (m.contains("replicas_in_sync")) out += m["replicas_in_sync"].get<bool>() ? "  replicas in sync" : "  replicas syncing";
      out += "\n";
      if (!m.contains("tables")) continue;
      if (m["tables"].is_null()) out += "      (did not say what it holds)\n";
      for (const nlohmann::json& t : m["tables"]) {
        out += fmt::format("      table {}: {} rows, {} bytes\n", t["table"].get<uint32_t>(), t["rows"].get<uint64_t>(),
                           t["bytes"].get<uint64_t>());
      }
    }
  }
  out += "tables:\n";
  for (const nlohmann::json& t : doc["tables"]) {
    out += fmt::format("  {}: {} ({})\n", t["id"].get<uint32_t>(), t["name"].get<std::string>(),
                       t["spec"].get<std::string>());
  }
  return out;
}

std::string Scheduler::DescribeStatus(const PendingStatus& p) const {
  nlohmann::json doc = StatusDocument(p.stats);
  // Names and addresses come from nodes: bytes that are not UTF-8 are replaced, not thrown on.
  return p.json ? doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n" : StatusTextOf(doc);
}

Status Scheduler::Drain(uint32_t rank, std::chrono::milliseconds timeout) {
  auto drained = std::make_shared<std::promise<Status>>();
  std::future<Status> result = drained->get_future();
  Result<bool> queued = OnRunThread<bool>(
      [this, rank, drained](std::promise<Result<bool>>& done) {
        Member* s = ended_ ? nullptr : FindServer(rank);
        if (ended_ || !formed_) {
          done.set_value(Status::Aborted(ended_ ? "the job has ended" : "the cluster has not formed yet"));
        } else if (s == nullptr || s->dead || s->left) {
          done.set_value(Status::InvalidArgument(fmt::format("server {} is no live server of the job", rank)));
        } else {
          QueueChange(Change{Change::kDrain, s->info.id, [drained](const Status& st) { drained->set_value(st); }});
          done.set_value(true);
        }
      },
      timeout, "queueing a drain");
  PSERVER_RETURN_IF_ERROR(queued.status());
  if (result.wait_for(timeout) != std::future_status::ready) {
    return Status::DeadlineExceeded(fmt::format("server {} was not drained within {} ms", rank, timeout.count()));
  }
  return result.get();
}

Result<std::vector<Scheduler::ChangeReport>> Scheduler::ChangeReports(std::chrono::milliseconds timeout) {
  return OnRunThread<std::vector<ChangeReport>>(
      [this](std::promise<Result<std::vector<ChangeReport>>>& done) { done.set_value(reports_); }, timeout,
      "listing the changes");
}

Result<std::string> Scheduler::StatusText(std::chrono::milliseconds timeout) {
  auto described = std::make_shared<std::promise<std::string>>();
  std::future<std::string> text = described->get_future();
  PSERVER_RETURN_IF_ERROR(OnRunThread<bool>(
                              [this, described](std::promise<Result<bool>>& done) {
                                StartStatus(false, [described](const std::string& t) { described->set_value(t); });
                                done.set_value(true);
                              },
                              timeout, "describing the job")
                              .status());
  if (text.wait_for(timeout) != std::future_status::ready) {
    return Status::DeadlineExceeded(fmt::format("scheduler: no status within {} ms", timeout.count()));
  }
  return text.get();
}

}  // namespace pserver::cluster
