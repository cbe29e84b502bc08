#include "cluster/scheduler.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/logging.h"

namespace pserver::cluster {

using transport::Message;
using transport::MessageType;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Result<std::unique_ptr<Scheduler>> Scheduler::Start(const NodeOptions& options,
                                                    std::unique_ptr<transport::Transport> transport,
                                                    std::shared_ptr<metrics::NodeMetrics> metrics) {
  if (options.num_servers == 0 || options.num_workers == 0) {
    return Status::InvalidArgument("a job needs at least one server and one worker");
  }
  if (options.scheduler_address.empty()) return Status::InvalidArgument("no scheduler address to listen at");
  if (options.replicas < 1 || options.replicas > kMaxReplicas) {
    return Status::InvalidArgument(fmt::format("replicas {}: a job keeps 1 to {} copies of each key", options.replicas,
                                               kMaxReplicas));
  }
  std::unique_ptr<Scheduler> s(new Scheduler(options, std::move(transport)));
  if (metrics) {
    s->metrics_ = std::move(metrics);
    s->scraped_ = s->metrics_->AddScraped([sched = s.get()](std::vector<prometheus::MetricFamily>* out) {
      MetricsSnapshot p;
      {
        MutexLock lock(&sched->metrics_mu_);
        p = sched->published_;
      }
      out->push_back(metrics::Gauge("pserver_node_info", "This node: its role, id and rank (always 1).",
                                    {{{{"role", "scheduler"}, {"node_id", "0"}, {"rank", "0"}}, 1}}));
      out->push_back(metrics::Gauge("pserver_routing_epoch", "The epoch of the cluster view the scheduler announced last.",
                                    {{{}, double(p.epoch.value)}}));
      out->push_back(metrics::Gauge("pserver_members", "The job's servers and workers, by role and state.", p.members));
      out->push_back(metrics::Gauge("pserver_member_heartbeat_age_seconds",
                                    "Seconds since each live member was last heard from.", p.heartbeat_ages));
      out->push_back(metrics::Counter("pserver_members_declared_dead_total",
                                      "Members declared dead (silent past the heartbeat timeout, or gone).",
                                      {{{}, double(p.declared_dead)}}));
      AppendTransportMetrics(sched->transport_->stats(), out);
    });
  }
  if (options.store.empty()) {
    PSERVER_ASSIGN_OR_RETURN(s->address_, s->transport_->Listen(options.scheduler_address));
    PSERVER_LOG_INFO("scheduler listening at {} for {} servers and {} workers", s->address_, options.num_servers,
                     options.num_workers);
    return s;
  }
  std::optional<nlohmann::json> running;
  PSERVER_RETURN_IF_ERROR(s->OpenStore(&running));
  if (!running) {
    s->generation_ = 1;
    PSERVER_ASSIGN_OR_RETURN(s->address_, s->transport_->Listen(options.scheduler_address));
    PSERVER_LOG_INFO("scheduler listening at {} for {} servers and {} workers; the job's state goes to {}", s->address_,
                     options.num_servers, options.num_workers, s->store_->Describe());
    return s;
  }
  // A job that has not ended: go on with it, where its nodes reconnect.
  std::string recorded;
  try {
    recorded = running->at("address").get<std::string>();
    const uint32_t servers = running->at("num_servers").get<uint32_t>(), workers = running->at("num_workers").get<uint32_t>(),
                   replicas = running->at("replicas").get<uint32_t>();
    if (servers != options.num_servers || workers != options.num_workers || replicas != options.replicas) {
      return Status::InvalidArgument(fmt::format(
          "{} holds a running job of {} servers, {} workers and {} replicas, not the {}, {} and {} this scheduler was "
          "started for",
          s->store_->Describe(), servers, workers, replicas, options.num_servers, options.num_workers, options.replicas));
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(fmt::format("{}: the recorded job state cannot be read: {}", s->store_->Describe(), e.what()));
  }
  PSERVER_ASSIGN_OR_RETURN(s->address_, s->transport_->Listen(recorded));
  PSERVER_RETURN_IF_ERROR(s->Resume(*running).WithContext(s->store_->Describe()));
  s->Persist();  // the new generation: from now on only this scheduler writes the job
  if (s->ended_) return s->outcome_;
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
  auto last_turn = Clock::now();
  while (!ended_) {
    // A turn at least every kTurn: a member whose connection broke is judged within kTurn of
    // ZeroMQ's refused reconnection (and commands from other threads wait no longer than that).
    Result<Message> msg = transport_->Receive(std::min<milliseconds>(options_.heartbeat_interval, kTurn));
    CreditOwnStall(Clock::now() - last_turn);
    last_turn = Clock::now();
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
    // Read every turn, so that the connections' events never pile up unread.
    const std::vector<NodeId> down = transport_->PeersDown(kReconnectGrace);
    if (formed_) CheckLiveness(down);
    StartNextChange();  // one may wait for a broken connection to be judged
    RunCommands();
    CheckViewDeliveries();
    CheckStatuses();
    AdmitHeldRegistrations();
    CheckMigrationDeadline();
    CheckCheckpoints();
    RetryUnsentAnswers();
    Persist();  // whatever this turn changed
    PublishMetrics();
  }
  for (ViewDelivery& d : view_deliveries_) d.done->set_value(Status::Aborted("the job ended"));
  view_deliveries_.clear();
  const Status over = Status::Aborted("the job ended before the change was done");
  if (migration_ && migration_->change.answer) migration_->change.answer(over);
  migration_.reset();
  for (Change& c : changes_) {
    if (c.answer) c.answer(over);
  }
  changes_.clear();
  for (PendingStatus& p : pending_statuses_) p.answer(DescribeStatus(p));
  pending_statuses_.clear();
  if (checkpoint_) FinishCheckpoint(Status::Aborted("the job ended before every server wrote its checkpoint file"));
  for (CheckpointRequest& r : checkpoint_requests_) r.answer(Status::Aborted("the job ended before the checkpoint"), "");
  checkpoint_requests_.clear();
  RunCommands();  // each command sees ended_ and says the job ended
  Status done = FinishShutdown();
  if (!outcome_.ok()) return outcome_;
  return done;
}

void Scheduler::Handle(Message&& msg) {
  const auto& h = msg.header;
  if (h.type == MessageType::kRegister) return HandleRegister(std::move(msg));
  if (h.type == MessageType::kAdmin) return HandleAdmin(msg);  // from tools too (checked there)
  auto it = member_index_.find(h.sender);
  if (it == member_index_.end()) return Refuse(msg, "from an unregistered node");
  Member& member = members_[it->second];
  // The header's sender is only a claim: the connection must present that node's identity.
  if (msg.origin != member.info.identity) return Refuse(msg, "from a connection that is not the claimed node's");
  if (member.left) {
    if (h.type == MessageType::kShutdown && h.is_reply()) member.shutdown_acked = true;
    return;  // drained and told to exit: its last words are not acted on
  }
  if (member.dead) {
    // Declared dead but still talking (it was only silent): it is no part of the job any more,
    // and is told so, so that it ends instead of waiting for answers that never come. (Its
    // confirmation of that shutdown is not answered again.)
    if (h.type == MessageType::kShutdown && h.is_reply()) return;
    PSERVER_LOG_WARN("scheduler: ignored {} from {}, which was declared dead", transport::Describe(h),
                     Describe(h.sender));
    Message gone;
    gone.header.type = MessageType::kShutdown;
    gone.header.receiver = h.sender;
    gone.header.flags = transport::kFlagError;
    gone.header.status = static_cast<uint8_t>(StatusCode::kUnavailable);
    gone.header.aux = kShutdownDeclaredDead;
    gone.frames.push_back(transport::BytesFromString(
        fmt::format("the scheduler declared {} dead; it is no longer part of the job", Describe(h.sender))));
    (void)transport_->SendNoWait(std::move(gone));
    return;
  }
  member.last_seen = Clock::now();
  if (!outbox_.empty()) FlushOutbox(h.sender);
  switch (h.type) {
    case MessageType::kHeartbeat: {
      // A server's heartbeat says the last epoch at which its replicas were complete (+1).
      if (member.info.role == Role::kServer && h.aux > 0) {
        member.synced = Epoch(std::max(member.synced.value, h.aux - 1));
      }
      Message ack;
      ack.header.type = MessageType::kHeartbeatAck;
      ack.header.receiver = h.sender;
      ack.header.aux = generation_;  // nonzero: the job's state is in a store (NodeRuntime waits for a resume)
      (void)transport_->SendNoWait(std::move(ack));
      return;
    }
    case MessageType::kBarrier: return HandleBarrier(msg);
    case MessageType::kDeclareTable: return HandleDeclareTable(msg);
    case MessageType::kTableAnnounceReply: return HandleTableAnnounceReply(msg);
    case MessageType::kViewChangeReply: return HandleViewChangeReply(msg);
    case MessageType::kMigrateReply: return HandleMigrateReply(msg);
    case MessageType::kAdminReply:
      if (checkpoint_ && h.request_id == checkpoint_->id) return HandleCheckpointReply(msg);
      return HandleStatsReply(msg);
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
  if (msg.origin.anonymous()) return Refuse(msg, "registration from a connection without a pserver identity");
  for (const Member& m : members_) {
    if (m.info.address == req->address) return;  // a resent registration
  }
  NodeId id(next_id_++);
  // Back to the node over a connection presenting the identity it asked for: the node believes
  // control messages only from that connection.
  if (Status s = transport_->Connect(id, req->address, req->scheduler_identity); !s.ok()) {
    PSERVER_LOG_WARN("scheduler: cannot connect back to {}: {}", req->address, s.ToString());
    return;
  }
  transport_->Watch(id);  // a process that dies is seen when its connection resets
  if (formed_) return AdmitLate(*req, id, msg.origin);
  uint32_t of_role = 0;
  for (const Member& m : members_) of_role += m.info.role == req->role;
  uint32_t wanted = req->role == Role::kServer ? options_.num_servers : options_.num_workers;
  if (of_role >= wanted) {
    Message from_node;  // the request as if it had come from the refused node's new id
    from_node.header.sender = id;
    ReplyError(from_node, MessageType::kRegisterReply,
               Status::Aborted(fmt::format("the job already has its {} {}s", wanted, RoleName(req->role))));
    return;
  }
  Member m;
  m.info = NodeInfo{id, req->role, Rank(), req->address, msg.origin};
  m.scheduler_identity = req->scheduler_identity;
  transport_->NamePeer(id, fmt::format("{} (node {})", RoleName(req->role), id.value));
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
  ring_epoch_ = view_.epoch;
  view_.num_servers = options_.num_servers;
  view_.num_workers = options_.num_workers;
  view_.replicas = options_.replicas;
  std::vector<uint32_t> server_ranks;
  for (const Member& m : members_) {
    if (m.info.role == Role::kServer) server_ranks.push_back(m.info.rank.value);
    view_.nodes.push_back(m.info);
    transport_->NamePeer(m.info.id, Describe(m.info.id));
  }
  next_rank_[0] = options_.num_servers;
  next_rank_[1] = options_.num_workers;
  // Ranks are 0..N-1 of a count checked at Start (and at most the partitions, PartitionPlacement).
  Result<PartitionPlacement> placement = PartitionPlacement::Initial(server_ranks);
  if (!placement.ok()) return Abort(placement.status().WithContext("placing the servers"));
  placement_ = std::move(*placement);
  view_.ring = placement_->Segments();
  std::sort(view_.nodes.begin(), view_.nodes.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  formed_ = true;
  Persist();  // the job is recorded before any node hears of it
  if (ended_) return;
  auto now = Clock::now();
  for (Member& m : members_) {
    m.last_seen = now;
    Message reply;
    reply.header.type = MessageType::kRegisterReply;
    reply.header.receiver = m.info.id;
    reply.header.epoch = view_.epoch;
    reply.header.aux = generation_;
    reply.frames.push_back(Encode(RegisterReply{m.info.id, view_}));
    // Blocking: the connection to the node that registered last may still be forming.
    if (Status s = transport_->Send(std::move(reply)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not send the cluster view to {}: {}", Describe(m.info.id), s.ToString());
    }
  }
  PSERVER_LOG_INFO("scheduler: cluster formed: {} servers, {} workers", options_.num_servers, options_.num_workers);
}


void Scheduler::RunCommands() {
  std::vector<std::function<void()>> commands;
  {
    MutexLock lock(&commands_mu_);
    commands.swap(commands_);
  }
  for (auto& c : commands) c();
}

Result<Epoch> Scheduler::NewView(std::vector<uint32_t> ring, std::chrono::milliseconds timeout, bool resync) {
  return OnRunThread<Epoch>(
      [this, ring = std::move(ring), resync](std::promise<Result<Epoch>>& done) mutable {
        if (ended_ || !formed_) {
          done.set_value(Status::Aborted(ended_ ? "the job has ended" : "the cluster has not formed yet"));
          return;
        }
        if (migration_) {
          done.set_value(Status::Unavailable("a membership change is running"));
          return;
        }
        if (ring.empty()) {
          done.set_value(Status::InvalidArgument("a view needs at least one server on its ring"));
          return;
        }
        std::sort(ring.begin(), ring.end());
        if (auto dup = std::adjacent_find(ring.begin(), ring.end()); dup != ring.end()) {
          done.set_value(Status::InvalidArgument(fmt::format("server {} is on the ring twice", *dup)));
          return;
        }
        for (uint32_t rank : ring) {
          Member* m = FindServer(rank);
          if (m == nullptr || m->left) {
            done.set_value(Status::InvalidArgument(fmt::format("server {} is not in the cluster", rank)));
            return;
          }
          if (m->dead) {
            done.set_value(Status::InvalidArgument(fmt::format("{} is dead", Describe(m->info.id))));
            return;
          }
        }
        PartitionPlacement next = *placement_;
        for (uint32_t rank : placement_->servers()) {
          if (!std::binary_search(ring.begin(), ring.end(), rank)) next = std::move(next.WithoutServer(rank)).value();
        }
        for (uint32_t rank : ring) {
          if (next.PartitionsOf(rank) == 0) next = std::move(next.WithServer(rank)).value();
        }
        placement_ = std::move(next);
        NextView(placement_->Segments());
        view_.resync = resync;
        PSERVER_LOG_INFO("scheduler: view of epoch {}: {} of {} servers on the ring", view_.epoch.value,
                         ring.size(), view_.num_servers);
        done.set_value(view_.epoch);
      },
      timeout, "a new view");
}

Status Scheduler::SendView(std::vector<NodeId> nodes, std::chrono::milliseconds timeout) {
  auto delivered = std::make_shared<std::promise<Status>>();
  std::future<Status> result = delivered->get_future();
  Result<bool> started = OnRunThread<bool>(
      [this, nodes = std::move(nodes), delivered](std::promise<Result<bool>>& done) {
        if (ended_ || !formed_) {
          done.set_value(Status::Aborted(ended_ ? "the job has ended" : "the cluster has not formed yet"));
          return;
        }
        ViewDelivery d{view_.epoch, {}, delivered};
        AnnounceView([&](const Member& m) {
          const bool chosen = nodes.empty() || std::find(nodes.begin(), nodes.end(), m.info.id) != nodes.end();
          if (chosen) d.awaiting.insert(m.info.id);
          return chosen;
        });
        view_deliveries_.push_back(std::move(d));
        done.set_value(true);
      },
      timeout, "sending a view");
  PSERVER_RETURN_IF_ERROR(started.status());
  if (result.wait_for(timeout) == std::future_status::ready) return result.get();
  Result<std::string> silent = OnRunThread<std::string>(
      [this, delivered](std::promise<Result<std::string>>& done) {
        std::vector<std::string> names;
        for (const ViewDelivery& d : view_deliveries_) {
          if (d.done != delivered) continue;
          for (NodeId id : d.awaiting) names.push_back(Describe(id));
        }
        std::sort(names.begin(), names.end());
        done.set_value(fmt::format("{}", fmt::join(names, ", ")));
      },
      std::chrono::seconds(5), "listing the nodes that did not confirm a view");
  return Status::DeadlineExceeded(fmt::format("scheduler: {} did not confirm the view within {} ms",
                                              silent.ok() ? *silent : std::string("some nodes"), timeout.count()));
}

void Scheduler::HandleViewChangeReply(const Message& msg) {
  for (ViewDelivery& d : view_deliveries_) {
    if (msg.header.epoch >= d.epoch) d.awaiting.erase(msg.header.sender);
  }
  CheckViewDeliveries();
  if (migration_ &&
      (migration_->step == Migration::kSwitch || migration_->step == Migration::kLeaving ||
       migration_->step == Migration::kDeparting || migration_->step == Migration::kCommitting) &&
      msg.header.epoch >= migration_->switch_epoch &&
      migration_->awaiting.erase(msg.header.sender) > 0) {
    AdvanceMigration();
  }
}

void Scheduler::CheckViewDeliveries() {
  for (auto it = view_deliveries_.begin(); it != view_deliveries_.end();) {
    absl::erase_if(it->awaiting, [&](NodeId id) {
      auto m = member_index_.find(id);
      return m == member_index_.end() || members_[m->second].dead || members_[m->second].left;
    });
    if (it->awaiting.empty()) {
      it->done->set_value(Status::Ok());
      it = view_deliveries_.erase(it);
    } else {
      ++it;
    }
  }
}

void Scheduler::PublishMetrics() {
  if (!metrics_) return;
  constexpr std::array<std::string_view, 6> kStates = {"running", "joining", "draining", "finalized", "left", "dead"};
  MemberCounts counts{};  // [server, worker][state]
  for (const Member& m : members_) {
    ++counts[m.info.role == Role::kServer ? 0 : 1][m.dead ? 5 : m.left ? 4 : m.finalized ? 3 : m.joining ? 1 : m.draining ? 2 : 0];
  }
  // Published at once when a member or the view changed; otherwise a few times a second, which
  // is fresh enough for the heartbeat ages and keeps a big job's turns cheap.
  const auto now = Clock::now();
  if (counts == published_counts_ && view_.epoch == published_epoch_ && now - published_at_ < kMetricsPeriod) return;
  published_counts_ = counts;
  published_epoch_ = view_.epoch;
  published_at_ = now;
  MetricsSnapshot p;
  p.epoch = view_.epoch;
  p.declared_dead = counts[0][5] + counts[1][5];
  for (const Member& m : members_) {
    if (m.dead || m.left || m.finalized) continue;
    p.heartbeat_ages.push_back({{{"role", std::string(RoleName(m.info.role))}, {"rank", std::to_string(m.info.rank.value)}},
                                std::chrono::duration<double>(now - m.last_seen).count()});
  }
  for (size_t r = 0; r < 2; ++r) {
    for (size_t i = 0; i < kStates.size(); ++i) {
      p.members.push_back({{{"role", r == 0 ? "server" : "worker"}, {"state", std::string(kStates[i])}}, double(counts[r][i])});
    }
  }
  MutexLock lock(&metrics_mu_);
  published_ = std::move(p);
}

void Scheduler::CreditOwnStall(Clock::duration turn) {
  // A turn of the loop waits at most one heartbeat interval for a message and then handles it.
  // Much longer, and the scheduler itself was not running (starved of CPU, stopped, swapped):
  // the members' heartbeats of that time wait in its queue, unread. That silence is the
  // scheduler's, not theirs, so each member is credited with it before liveness is judged --
  // otherwise a scheduler that wakes from a stall declares every live node dead at once. A node
  // that really died meanwhile is declared dead that much later.
  const Clock::duration expected = 2 * options_.heartbeat_interval;
  if (turn <= expected) return;
  for (Member& m : members_) m.last_seen += turn - expected;
}

void Scheduler::CheckLiveness(const std::vector<NodeId>& down) {
  auto now = Clock::now();
  // Members whose connection broke and stayed broken: their process is gone (its sockets were
  // reset), declared dead now rather than a heartbeat timeout later.
  const absl::flat_hash_set<NodeId> gone(down.begin(), down.end());
  // Every member found dead in this turn is marked first, so that nothing sent on behalf of one
  // (a failover's view) waits on another that died at the same time. By index: a member may be
  // added meanwhile (never removed), which would move the others.
  std::vector<std::pair<size_t, std::string>> died;
  for (size_t i = 0; i < members_.size(); ++i) {
    Member& m = members_[i];
    if (m.finalized || m.dead || m.left) continue;
    auto silent = std::chrono::duration_cast<milliseconds>(now - m.last_seen);
    std::string reason;
    if (silent > options_.heartbeat_timeout) {
      reason = fmt::format("no heartbeat for {} ms (limit {} ms)", silent.count(), options_.heartbeat_timeout.count());
    } else if (gone.contains(m.info.id)) {
      reason = fmt::format("its connection broke and was refused when reconnecting (or stayed down for {} ms): "
                           "the process is gone",
                           kReconnectGrace.count());
    } else {
      continue;
    }
    m.dead = true;
    died.emplace_back(i, std::move(reason));
  }
  for (const auto& [i, reason] : died) {
    const Member& m = members_[i];
    Message failed;
    failed.header.type = MessageType::kNodeFailed;
    failed.frames.push_back(Encode(NodeFailure{m.info.id, m.info.role, m.info.rank, reason}));
    Broadcast(std::move(failed));
    if (migration_ && migration_->step >= Migration::kCommitting &&
        migration_->awaiting.erase(m.info.id) > 0 && m.info.role == Role::kWorker) {
      AdvanceMigration();
    }
    if (members_[i].info.role == Role::kServer) {
      ServerDied(i, reason);
      if (ended_) return;
      continue;
    }
    const Member& dead = members_[i];
    PSERVER_LOG_WARN("scheduler: {} is dead: {}; the job goes on without it", Describe(dead.info.id), reason);
    lost_workers_.push_back({dead.info.id, fmt::format("{} ({})", Describe(dead.info.id), reason), NodeId()});
    WorkerDied(dead);
    if (ended_) return;
  }
}

void Scheduler::WorkerDied(const Member& m) {
  bool all_dead = true;
  for (const Member& w : members_) {
    if (w.info.role == Role::kWorker && (!w.dead || w.finalized)) all_dead = false;
  }
  if (all_dead) {
    Abort(Status::Unavailable(
        fmt::format("every worker died (the last, {}: no heartbeat within {} ms)", Describe(m.info.id),
                    options_.heartbeat_timeout.count())));
    return;
  }
  // A barrier its live peers have all entered is released; the dead worker's own arrival, if
  // any, is forgotten (nobody is left to answer).
  for (BarrierGroup group : {BarrierGroup::kAll, BarrierGroup::kWorkers}) {
    barriers_[static_cast<size_t>(group)].arrived.erase(m.info.id);
    TryReleaseBarrier(group);
  }
  EndIfWorkersDone();
}

Status Scheduler::TakeOver(NodeId taker, NodeId lost) {
  const Member* t = FindMember(taker);
  if (t == nullptr || t->info.role != Role::kWorker || t->dead || t->finalized) {
    return Status::InvalidArgument(fmt::format("{} is no live worker: it cannot take over work", Describe(taker)));
  }
  for (LostWorker& w : lost_workers_) {
    if (w.id != lost) continue;
    // A second taker (the first died too) replaces the first.
    w.taken_over_by = taker;
    PSERVER_LOG_INFO("scheduler: {} took over the work of {}", Describe(taker), w.description);
    Persist();  // recorded before the taker is told: it will not ask again
    if (ended_) return Status::Aborted("the job ended");
    return Status::Ok();
  }
  return Status::InvalidArgument(
      fmt::format("{} is no worker that died before it finished: there is no work of it to take over", Describe(lost)));
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
  // Asked again (a resumed scheduler): the dead one released it already.
  if (auto it = last_release_[msg.header.aux].find(msg.header.sender);
      it != last_release_[msg.header.aux].end() && it->second == msg.header.request_id) {
    Message release;
    release.header.type = MessageType::kBarrierRelease;
    release.header.flags = transport::kFlagReply;
    release.header.receiver = msg.header.sender;
    release.header.request_id = msg.header.request_id;
    release.header.aux = msg.header.aux;
    return SendWhenUp(std::move(release));
  }
  barriers_[msg.header.aux].arrived[msg.header.sender] = msg.header.request_id;
  PSERVER_LOG_VERBOSE("scheduler: {} entered the barrier of {} ({} arrived)", Describe(msg.header.sender),
                    BarrierGroupName(group), barriers_[msg.header.aux].arrived.size());
  TryReleaseBarrier(group);
}

void Scheduler::TryReleaseBarrier(BarrierGroup group) {
  BarrierState& b = barriers_[static_cast<size_t>(group)];
  if (b.arrived.empty()) return;
  for (const Member& m : members_) {
    // Nobody waits for a node gone (dead, or drained) or for a worker that finished.
    if (InGroup(m, group) && !m.dead && !m.left && !(m.finalized && m.info.role == Role::kWorker) &&
        !b.arrived.contains(m.info.id)) {
      return;
    }
  }
  last_release_[static_cast<size_t>(group)] = b.arrived;
  Persist();  // recorded before any node is released
  if (ended_) return;
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

namespace {

// Specs are matched by their canonical bytes (kv/table_catalog.h).
bool SameSpec(const TableDeclaration& a, const TableDeclaration& b) {
  return a.spec.size() == b.spec.size() &&
         (a.spec.size() == 0 || std::memcmp(a.spec.data(), b.spec.data(), a.spec.size()) == 0);
}

Status DeclaredDifferently(const TableDeclaration& old) {
  return Status::InvalidArgument(fmt::format("table '{}' was already declared differently ({})", old.name, old.summary));
}

}  // namespace

void Scheduler::HandleDeclareTable(const Message& msg) {
  Result<TableDeclaration> declaration = msg.frames.size() == 1
                                             ? DecodeTableDeclaration(msg.frames[0])
                                             : Status::Corruption(fmt::format("declare-table with {} frames, expected 1",
                                                                              msg.frames.size()));
  if (!declaration.ok()) return ReplyError(msg, MessageType::kDeclareTableReply, declaration.status());
  const std::string& name = declaration->name;
  if (auto it = tables_.find(name); it != tables_.end()) {
    if (!SameSpec(it->second.second, *declaration)) {
      return ReplyError(msg, MessageType::kDeclareTableReply, DeclaredDifferently(it->second.second));
    }
    Message reply;
    reply.header.table = it->second.first;
    return Reply(msg, MessageType::kDeclareTableReply, std::move(reply));
  }
  if (auto it = pending_tables_.find(name); it != pending_tables_.end()) {
    if (!SameSpec(it->second.declaration, *declaration)) {
      return ReplyError(msg, MessageType::kDeclareTableReply, DeclaredDifferently(it->second.declaration));
    }
    it->second.declarers.push_back(msg.header);  // answered with the first declarer
    return;
  }
  PendingTable& pending = pending_tables_[name];
  pending.id = TableId(next_table_++);
  pending.declaration = std::move(*declaration);
  pending.declarers.push_back(msg.header);
  Persist();  // a resumed scheduler never gives this id to another table
  if (ended_) return;
  AnnounceTable(pending);
}

void Scheduler::AnnounceTable(PendingTable& pending) {
  const std::string name = pending.declaration.name;
  std::vector<NodeId> servers;
  for (const Member& m : members_) {
    if (m.info.role == Role::kServer && !m.dead && !m.left) servers.push_back(m.info.id);
  }
  pending.awaiting.insert(servers.begin(), servers.end());
  const int64_t announce_id = next_announce_++;
  for (NodeId server : servers) {
    Message announce;
    announce.header.type = MessageType::kTableAnnounce;
    announce.header.receiver = server;
    announce.header.table = pending.id;
    announce.header.request_id = announce_id;
    announce.frames.push_back(pending.declaration.spec);
    // Never blocks: a server that does not take the announcement fails the declaration.
    if (Status s = transport_->SendNoWait(std::move(announce)); !s.ok()) {
      return FailPendingTable(name, Status::Unavailable(fmt::format("table '{}' could not be announced to {}: {}",
                                                                    name, Describe(server), s.message())));
    }
  }
  if (pending.awaiting.empty()) CompletePendingTable(name);
}

void Scheduler::HandleTableAnnounceReply(const Message& msg) {
  const NodeId server = msg.header.sender;
  if (migration_ && migration_->step == Migration::kTables && migration_->change.server == server &&
      migration_->table_announces.erase(msg.header.request_id) > 0) {
    if (msg.header.is_error()) {
      const Status why = CarriedError(msg);
      return CancelMigration(
          Status(why.code(), fmt::format("{} refused table {}: {}", Describe(server), msg.header.table.value, why.message())));
    }
    if (migration_->table_announces.empty()) {
      migration_->awaiting.erase(server);
      AdvanceMigration();
    }
    return;
  }
  auto it = std::find_if(pending_tables_.begin(), pending_tables_.end(),
                         [&](const auto& entry) { return entry.second.id == msg.header.table; });
  // A late answer for a table already forgotten (another server refused it) is dropped.
  if (it == pending_tables_.end() || !it->second.awaiting.contains(server)) return;
  const std::string name = it->first;
  if (msg.header.is_error()) {
    const Status why = CarriedError(msg);
    return FailPendingTable(name, Status(why.code(), fmt::format("{} refused table '{}': {}", Describe(server), name,
                                                                 why.message())));
  }
  it->second.awaiting.erase(server);
  if (it->second.awaiting.empty()) CompletePendingTable(name);
}

void Scheduler::FailPendingTable(const std::string& name, const Status& why) {
  auto it = pending_tables_.find(name);
  if (it == pending_tables_.end()) return;
  PSERVER_LOG_WARN("scheduler: declaration of table '{}' failed: {}", name, why.ToString());
  PendingTable pending = std::move(it->second);
  pending_tables_.erase(it);
  for (const transport::Header& declarer : pending.declarers) {
    Message reply;
    reply.header.flags = transport::kFlagError;
    reply.header.status = static_cast<uint8_t>(why.code());
    reply.frames.push_back(transport::BytesFromString(why.message()));
    ReplyTo(declarer, MessageType::kDeclareTableReply, std::move(reply));
  }
}

void Scheduler::CompletePendingTable(const std::string& name) {
  auto it = pending_tables_.find(name);
  if (it == pending_tables_.end()) return;
  PendingTable pending = std::move(it->second);
  pending_tables_.erase(it);
  PSERVER_LOG_INFO("scheduler: table '{}' is id {} ({})", name, pending.id.value, pending.declaration.summary);
  tables_.emplace(name, std::make_pair(pending.id, pending.declaration));
  Persist();  // the id is recorded before any node uses it
  if (ended_) return;
  for (const transport::Header& declarer : pending.declarers) {
    Message reply;
    reply.header.table = pending.id;
    ReplyTo(declarer, MessageType::kDeclareTableReply, std::move(reply));
  }
}

void Scheduler::HandleFinalize(const Message& msg) {
  Member& m = members_[member_index_.at(msg.header.sender)];
  if (m.info.role != Role::kWorker) return;
  if (msg.header.is_error()) {
    // The worker cannot do its part (Node::FinalizeWithError) -- even one that finalized before
    // and failed afterwards: the job cannot be complete, so it ends now, for every node, with the
    // worker's reason.
    m.finalized = true;
    const Status why = CarriedError(msg);
    PSERVER_LOG_ERROR("scheduler: {} failed: {}", Describe(m.info.id), why.message());
    Abort(Status(why.code(), fmt::format("{} failed: {}", Describe(m.info.id), why.message())));
    return;
  }
  if (m.finalized) return;
  m.finalized = true;
  EndIfWorkersDone();
  if (ended_) return;
  // It leaves while others work on: barriers stop waiting for it, servers drop it from their
  // stale-synchronous clocks.
  for (BarrierGroup group : {BarrierGroup::kAll, BarrierGroup::kWorkers}) TryReleaseBarrier(group);
  Message left;
  left.header.type = MessageType::kNodeLeft;
  left.frames.push_back(Encode(NodeFailure{m.info.id, m.info.role, m.info.rank, "it finished its work"}));
  Broadcast(std::move(left));
}

void Scheduler::EndIfWorkersDone() {
  uint32_t finished = 0;
  for (const Member& w : members_) {
    if (w.info.role != Role::kWorker || w.dead) continue;
    if (!w.finalized) return;
    ++finished;
  }
  std::vector<std::string> missing;
  for (const LostWorker& w : lost_workers_) {
    if (w.taken_over_by == NodeId()) missing.push_back(w.description);
  }
  if (!missing.empty()) {
    // The job went on without them, but their share of the work is not in its result (no live
    // worker said it took it over): the job ends with an error, so that no process reports
    // success for it.
    const Status lost = Status::Unavailable(fmt::format(
        "the job lost {} of {} workers before they finished: {}; the {} live workers finished, but the lost "
        "workers' share of the work is missing from the result",
        missing.size(), options_.num_workers, fmt::join(missing, "; "), finished));
    PSERVER_LOG_ERROR("scheduler: {}", lost.message());
    Abort(lost);
    return;
  }
  PSERVER_LOG_INFO("scheduler: all {} workers finished; ending the job", options_.num_workers);
  Persist(/*ended=*/true);
  Message shutdown;
  shutdown.header.type = MessageType::kShutdown;
  Broadcast(std::move(shutdown));
  ended_ = true;
}

void Scheduler::Abort(const Status& why) {
  if (ended_) return;
  outcome_ = why;
  Persist(/*ended=*/true);
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
      return !m.shutdown_acked && !m.dead && !m.left && now - m.last_seen <= options_.heartbeat_timeout;
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
    if (it == member_index_.end() || msg->origin != members_[it->second].info.identity) {
      Refuse(*msg, "from a connection that is not the claimed node's");
      continue;
    }
    members_[it->second].last_seen = Clock::now();
    if (msg->header.type == MessageType::kShutdown && msg->header.is_reply()) members_[it->second].shutdown_acked = true;
  }
  if (pending() > 0 && outcome_.ok()) {
    PSERVER_LOG_WARN("scheduler: {} nodes did not confirm the shutdown within {} ms", pending(),
                     options_.shutdown_timeout.count());
  }
  return Status::Ok();
}

void Scheduler::Refuse(const Message& msg, const char* why) {
  ++refused_;
  if (refused_ <= 10 || refused_ % 1000 == 0) {
    PSERVER_LOG_WARN("scheduler: dropped {} (connection {}): {}; {} dropped so far", transport::Describe(msg.header),
                     msg.origin.ShortString(), why, refused_);
  }
}

void Scheduler::Broadcast(Message msg) {
  for (const Member& m : members_) {
    if (m.dead || m.left) continue;
    Message copy = msg;
    copy.header.receiver = m.info.id;
    if (Status s = transport_->SendNoWait(std::move(copy)); !s.ok()) {
      PSERVER_LOG_WARN("scheduler: could not tell {}: {}", Describe(m.info.id), s.ToString());
    }
  }
}

void Scheduler::Reply(const Message& request, MessageType type, Message reply) {
  ReplyTo(request.header, type, std::move(reply));
}

void Scheduler::SendWhenUp(Message msg) {
  const NodeId to = msg.header.receiver;
  if (Status s = transport_->SendNoWait(msg); s.ok()) return;
  outbox_[to].push_back(std::move(msg));
}

void Scheduler::FlushOutbox(NodeId node) {
  auto it = outbox_.find(node);
  if (it == outbox_.end()) return;
  std::vector<Message> left;
  for (Message& m : it->second) {
    if (!transport_->SendNoWait(m).ok()) left.push_back(std::move(m));
  }
  if (left.empty()) {
    outbox_.erase(it);
  } else {
    it->second = std::move(left);
  }
}

void Scheduler::ReplyTo(const transport::Header& request, MessageType type, Message reply) {
  reply.header.type = type;
  reply.header.flags |= transport::kFlagReply;
  reply.header.receiver = request.sender;
  reply.header.request_id = request.request_id;
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
