#include "cluster/node_runtime.h"

#include <algorithm>

#include <fmt/format.h>

#include "absl/container/inlined_vector.h"
#include "base/logging.h"

namespace pserver::cluster {

using transport::Message;
using transport::MessageType;
using RealClock = std::chrono::steady_clock;  // registration only (see node_runtime.h)
using std::chrono::milliseconds;

const char* BarrierGroupName(BarrierGroup group) {
  switch (group) {
    case BarrierGroup::kAll: return "all";
    case BarrierGroup::kServers: return "servers";
    case BarrierGroup::kWorkers: return "workers";
  }
  return "unknown";
}

NodeRuntime::NodeRuntime(const NodeOptions& options, std::unique_ptr<transport::Transport> transport, Clock* clock)
    : options_(options), clock_(clock), transport_(std::move(transport)) {
  // A send blocked on a peer the scheduler declared dead ends then, not a send timeout later.
  transport_->SetGiveUp([this](NodeId peer) {
    MutexLock lock(&given_up_mu_);
    return given_up_.contains(peer);
  });
}

Result<std::unique_ptr<NodeRuntime>> NodeRuntime::Start(const NodeOptions& options,
                                                        std::unique_ptr<transport::Transport> transport,
                                                        Clock* clock,
                                                        std::shared_ptr<metrics::NodeMetrics> metrics) {
  if (options.role == Role::kScheduler) {
    return Status::InvalidArgument("NodeRuntime is for servers and workers; the scheduler is cluster::Scheduler");
  }
  if (options.scheduler_address.empty()) return Status::InvalidArgument("no scheduler address given");
  std::unique_ptr<NodeRuntime> node(new NodeRuntime(options, std::move(transport), clock));
  node->metrics_ = std::move(metrics);
  std::string listen = options.scheduler_address.rfind("inproc://", 0) == 0
                           ? std::string("inproc://0")
                           : fmt::format("tcp://{}:0", options.host);
  PSERVER_ASSIGN_OR_RETURN(node->address_, node->transport_->Listen(listen));
  PSERVER_RETURN_IF_ERROR(node->transport_->Connect(kSchedulerId, options.scheduler_address));
  node->transport_->NamePeer(kSchedulerId, node->DescribeNode(kSchedulerId));
  PSERVER_LOG_INFO("{} listening at {}; registering with the scheduler at {}", RoleName(options.role), node->address_,
                   options.scheduler_address);
  PSERVER_RETURN_IF_ERROR(node->Register());
  node->AddMetrics();
  {
    MutexLock lock(&node->mu_);
    node->last_ack_ = node->clock_->Now();
  }
  node->data_thread_ = std::jthread([n = node.get()] { n->DataLoop(); });
  node->receive_thread_ = std::jthread([n = node.get()](std::stop_token st) { n->ReceiveLoop(st); });
  node->heartbeat_thread_ = std::jthread([n = node.get()](std::stop_token st) { n->HeartbeatLoop(st); });
  return node;
}

NodeRuntime::~NodeRuntime() {
  scraped_.Reset();  // no scrape reads this runtime from here on
  heartbeat_thread_.request_stop();
  receive_thread_.request_stop();
  cv_.SignalAll();
  {
    // First, so that a receive thread waiting for room in the data queue is let go.
    MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  queue_cv_.SignalAll();
  transport_->Shutdown();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (receive_thread_.joinable()) receive_thread_.join();
  if (data_thread_.joinable()) data_thread_.join();
}

void AppendTransportMetrics(const transport::TransportStats& t, std::vector<prometheus::MetricFamily>* out) {
  using metrics::Counter;
  out->push_back(Counter("pserver_transport_messages_total", "Messages sent and received, every kind.",
                         {{{{"direction", "sent"}}, double(t.messages_sent)},
                          {{{"direction", "received"}}, double(t.messages_received)}}));
  out->push_back(Counter("pserver_transport_bytes_total", "Wire bytes sent and received, every kind of message.",
                         {{{{"direction", "sent"}}, double(t.bytes_sent)},
                          {{{"direction", "received"}}, double(t.bytes_received)}}));
  out->push_back(Counter("pserver_transport_malformed_total", "Malformed frame sequences received and dropped.",
                         {{{}, double(t.dropped_malformed)}}));
}

void NodeRuntime::AddMetrics() {
  if (!metrics_) return;
  const prometheus::Labels node = {{"role", std::string(RoleName(options_.role))},
                                   {"node_id", std::to_string(id_.value)},
                                   {"rank", std::to_string(rank_.value)}};
  scraped_ = metrics_->AddScraped([this, node](std::vector<prometheus::MetricFamily>* out) {
    using metrics::Counter;
    using metrics::Gauge;
    out->push_back(Gauge("pserver_node_info", "This node: its role, id and rank (always 1).", {{node, 1}}));
    out->push_back(Gauge("pserver_routing_epoch", "The epoch of the cluster view this node routes by.",
                         {{{}, double(routing()->epoch().value)}}));
    size_t queued = 0;
    {
      MutexLock lock(&queue_mu_);
      queued = queue_.size();
    }
    out->push_back(Gauge("pserver_data_queue_depth",
                         "Data messages received and waiting for the node's data thread (with the control work kept "
                         "in order with them).",
                         {{{}, double(queued)}}));
    size_t outbound = 0;
    {
      MutexLock lock(&channels_mu_);
      for (const auto& [peer, channel] : out_channels_) {
        MutexLock channel_lock(&channel->mu);
        outbound += channel->queue.size();
      }
    }
    out->push_back(Gauge("pserver_outbound_queue_depth", "Data requests queued for sending, over all peers.",
                         {{{}, double(outbound)}}));
    AppendTransportMetrics(transport_->stats(), out);
    out->push_back(Counter("pserver_refused_messages_total",
                           "Messages refused because they came from an identity the view does not give their sender.",
                           {{{}, double(refused_.load(std::memory_order_relaxed))}}));
    out->push_back(Counter("pserver_heartbeats_missed_total",
                           "Heartbeat turns that found the scheduler's last answer older than two heartbeat intervals.",
                           {{{}, double(heartbeats_missed_.load(std::memory_order_relaxed))}}));
  });
}

void NodeRuntime::ReportMigration(int64_t change, MigratePhase phase, const Result<MigrateReport>& outcome) {
  Message reply = ToScheduler(MessageType::kMigrateReply);
  reply.header.flags = transport::kFlagReply;
  reply.header.request_id = change;
  reply.header.aux = static_cast<uint64_t>(phase);
  if (outcome.ok()) {
    reply.frames.push_back(Encode(*outcome));
  } else {
    reply.header.flags |= transport::kFlagError;
    reply.header.status = static_cast<uint8_t>(outcome.status().code());
    reply.frames.push_back(transport::BytesFromString(outcome.status().message()));
  }
  if (Status s = transport_->Send(std::move(reply)); !s.ok()) {
    PSERVER_LOG_WARN("{}: could not report migration {} to the scheduler: {}", DescribeNode(id_), change, s.ToString());
  }
}

Status NodeRuntime::RequestDrain() {
  if (options_.role != Role::kServer) return Status::InvalidArgument("only a server can be drained");
  Message ask = ToScheduler(MessageType::kAdmin);
  ask.frames.push_back(Encode(AdminRequest{AdminOp::kDrain, id_, "", ""}));
  return transport_->Send(std::move(ask));
}

Status NodeRuntime::TakeOver(NodeId lost, milliseconds timeout) {
  if (options_.role != Role::kWorker) return Status::InvalidArgument("only a worker takes over a lost worker's work");
  Message ask = ToScheduler(MessageType::kAdmin);
  ask.frames.push_back(Encode(AdminRequest{AdminOp::kTakeOver, lost, "", ""}));
  return Call(std::move(ask), timeout, fmt::format("{}: taking over the work of {}", DescribeNode(id_), DescribeNode(lost)))
      .status();
}

bool NodeRuntime::declared_dead() const {
  MutexLock lock(&mu_);
  return declared_dead_;
}

Result<std::string> NodeRuntime::Checkpoint(const std::string& dir, milliseconds timeout) {
  Message ask = ToScheduler(MessageType::kAdmin);
  ask.frames.push_back(Encode(AdminRequest{AdminOp::kCheckpoint, NodeId(), "", dir}));
  PSERVER_ASSIGN_OR_RETURN(Message reply, Call(std::move(ask), timeout,
                                               fmt::format("{}: checkpoint into {}", DescribeNode(id_), dir)));
  if (reply.frames.empty()) return std::string();
  return std::string(reinterpret_cast<const char*>(reply.frames[0].data()), reply.frames[0].size());
}

void NodeRuntime::ReportReplicasSynced(Epoch epoch) {
  replicas_synced_.store(epoch.value + 1, std::memory_order_relaxed);
  Message beat = ToScheduler(MessageType::kHeartbeat);
  beat.header.aux = epoch.value + 1;
  (void)transport_->SendNoWait(std::move(beat));
}

Message NodeRuntime::ToScheduler(MessageType type) const {
  Message m;
  m.header.type = type;
  m.header.sender = id_;
  m.header.receiver = kSchedulerId;
  return m;
}

Status NodeRuntime::Register() {
  RegisterRequest req{options_.role, address_, options_.rank_hint, scheduler_identity_};
  auto deadline = RealClock::now() + options_.register_timeout;
  const std::string& where = options_.scheduler_address;
  Message m = ToScheduler(MessageType::kRegister);
  m.frames.push_back(Encode(req));
  // The scheduler may not be up yet: retry until the connection takes the message or the
  // registration time is spent. (A non-blocking send fails at once while no connection exists;
  // the short pause between tries waits for an outside process, not for one of ours.)
  for (;;) {
    Status sent = transport_->SendNoWait(m);
    if (sent.ok()) break;
    if (RealClock::now() >= deadline) {
      return Status::DeadlineExceeded(fmt::format("cannot reach the scheduler at {} within {} ms: {}", where,
                                                  options_.register_timeout.count(), sent.message()));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - RealClock::now());
    Result<Message> reply = transport_->Receive(std::max(left, milliseconds(0)));
    if (!reply.ok()) {
      if (reply.status().code() == StatusCode::kDeadlineExceeded) {
        return Status::DeadlineExceeded(fmt::format(
            "the scheduler at {} did not complete registration within {} ms (the cluster may be missing nodes)",
            where, options_.register_timeout.count()));
      }
      return reply.status();
    }
    const Message& msg = *reply;
    if (!FromScheduler(msg)) {
      Refuse(msg, "during registration, from a connection that is not the scheduler's");
      continue;
    }
    if (msg.header.type == MessageType::kShutdown) {
      PSERVER_LOG_WARN("{} at {}: the scheduler at {} ended the job during registration", RoleName(options_.role),
                       address_, where);
      return Status::Aborted(fmt::format("the scheduler at {} ended the job during registration: {}", where,
                                         CarriedError(msg).message()));
    }
    if (msg.header.type != MessageType::kRegisterReply) continue;
    if (msg.header.is_error()) return CarriedError(msg).WithContext("registration refused");
    if (msg.frames.size() != 1) return Status::Corruption("register-reply without a body");
    PSERVER_ASSIGN_OR_RETURN(RegisterReply rr, DecodeRegisterReply(msg.frames[0]));
    {
      MutexLock lock(&mu_);
      scheduler_generation_ = msg.header.aux;  // as in heartbeat answers
    }
    // A scheduler that keeps the job in a store may die and be started again: its connection
    // is watched, so that the heartbeats find the new one at once (HeartbeatLoop).
    if (msg.header.aux != 0) transport_->Watch(kSchedulerId);
    return ApplyView(rr);
  }
}

Status NodeRuntime::ApplyView(const RegisterReply& reply) {
  id_ = reply.your_id;
  const NodeInfo* self = nullptr;
  for (const NodeInfo& n : reply.view.nodes) {
    if (n.id == id_) self = &n;
  }
  if (self == nullptr) return Status::Corruption("this node is missing from the cluster view");
  rank_ = self->rank;
  PSERVER_RETURN_IF_ERROR(InstallView(reply.view).status());
  PSERVER_LOG_INFO("{} registered at {}: {} servers, {} workers", DescribeNode(id_), address_,
                   reply.view.num_servers, reply.view.num_workers);
  return Status::Ok();
}

Result<std::shared_ptr<const Routing>> NodeRuntime::InstallView(const ClusterView& view) {
  MutexLock lock(&view_mu_);
  std::shared_ptr<const Routing> old = routing();
  if (old && view.epoch <= old->epoch()) return old;
  bool found_self = false;
  for (const NodeInfo& n : view.nodes) found_self |= n.id == id_;
  if (!found_self) {
    return Status::Corruption(fmt::format("the view of epoch {} lacks this node (node {})", view.epoch.value, id_.value));
  }
  PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const Routing> next, Routing::Build(view));
  // Workers talk to servers and servers answer workers and hand rows to servers; the scheduler
  // talks to everyone.
  for (const NodeInfo& n : view.nodes) {
    const bool peer = n.role != options_.role || options_.role == Role::kServer;
    if (n.id == id_ || !peer || (old && old->Find(n.id) != nullptr)) continue;
    PSERVER_RETURN_IF_ERROR(transport_->Connect(n.id, n.address));
    transport_->NamePeer(n.id, NodeName(n.role, n.rank, n.id));
  }
  if (old) {
    MutexLock departed_lock(&departed_mu_);
    for (const NodeInfo& n : old->view().nodes) {
      if (next->Find(n.id) == nullptr) departed_[n.id] = n.identity;
    }
  }
  {
    MutexLock swap_lock(&routing_mu_);
    routing_ = next;
  }
  if (old) {
    PSERVER_LOG_INFO("{}: routes by the view of epoch {} now ({} of {} servers own keys; {} workers)", DescribeNode(id_),
                     view.epoch.value, next->ring().servers().size(), view.num_servers, view.num_workers);
  }
  return next;
}

Result<std::shared_ptr<const Routing>> NodeRuntime::AdoptView(const ClusterView& view) {
  return InstallView(view);
}

std::string NodeRuntime::DescribeNode(NodeId id) const {
  if (id == kSchedulerId) return NodeName(Role::kScheduler, Rank(), kSchedulerId);
  std::shared_ptr<const Routing> r = routing();
  const NodeInfo* n = r ? r->Find(id) : nullptr;
  if (n == nullptr) return fmt::format("node {}", id.value);
  return NodeName(n->role, n->rank, id);
}

void NodeRuntime::ReceiveLoop(std::stop_token stop) {
  std::vector<Message> ready;
  while (!stop.stop_requested()) {
    Result<Message> msg = transport_->Receive(options_.heartbeat_interval);
    if (!msg.ok()) {
      if (msg.status().code() == StatusCode::kDeadlineExceeded) {
        CheckGaps();
        continue;
      }
      return;  // shut down
    }
    if (transport::IsDataMessage(msg->header.type)) {
      if (!FromDataPeer(*msg)) {
        Refuse(*msg, "data message from a connection that is not the claimed peer's");
        continue;
      }
      if (msg->header.is_reply()) {  // replies are matched to their requests, not ordered
        Enqueue(DataItem(std::move(*msg)));
        continue;
      }
      ready.clear();
      const NodeId sender = msg->header.sender;
      [[maybe_unused]] const uint32_t seq = msg->header.seq;
      switch (in_order_.Accept(std::move(*msg), clock_->Now(), &ready)) {
        case ChannelOrder::Outcome::kDelivered:
          for (Message& m : ready) Enqueue(DataItem(std::move(m)));
          break;
        case ChannelOrder::Outcome::kHeld: break;
        case ChannelOrder::Outcome::kDuplicate:
          PSERVER_LOG_DEBUG("{}: dropped a repeated data message {} from {}", DescribeNode(id_), seq,
                            DescribeNode(sender));
          break;
        case ChannelOrder::Outcome::kOverflow:
          Fail(Status::Unavailable(fmt::format("{} holds {} data messages of {} that overtook a missing one",
                                            DescribeNode(id_), ChannelOrder::kMaxHeld, DescribeNode(sender))));
          return;
      }
    } else {
      if (!FromScheduler(*msg)) {
        Refuse(*msg, "control message from a connection that is not the scheduler's");
        continue;
      }
      HandleControl(std::move(*msg));
    }
    CheckGaps();
  }
}

void NodeRuntime::Enqueue(DataItem item) {
  MutexLock lock(&queue_mu_);
  // Bounded: a peer that sends faster than this node applies is slowed down (its sends block
  // in the transport) instead of filling this node's memory.
  const size_t limit = std::max<size_t>(options_.data_queue_limit, 1);
  auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) { return queue_.size() < limit || stopping_ || stalled_; };
  if (!room()) {
    receive_blocked_ = true;
    // A data thread that makes progress, however slowly, is waited for; one that handles
    // nothing for heartbeat_timeout is stuck.
    uint64_t seen = data_progress_.load();
    auto progressed = clock_->Now();
    while (!clock_->WaitFor(&queue_mu_, &queue_cv_, options_.heartbeat_interval, room)) {
      if (const uint64_t p = data_progress_.load(); p != seen) {
        seen = p;
        progressed = clock_->Now();
      } else if (clock_->Now() - progressed >= options_.heartbeat_timeout) {
        stalled_ = true;  // receive_blocked_ stays set: this wait, not the heartbeat timer, fails the node
        const size_t queued = queue_.size();
        lock.Unlock();
        Fail(Status::Unavailable(fmt::format(
            "{}: the data thread took none of its {} queued messages for {} ms (an apply or callback does not "
            "return); the node stops",
            DescribeNode(id_), queued, options_.heartbeat_timeout.count())));
        return;
      }
    }
    receive_blocked_ = false;
    lock.Unlock();
    {
      // The scheduler's answers went unread meanwhile: its silence counts from now.
      MutexLock state(&mu_);
      last_ack_ = clock_->Now();
    }
    lock.Lock();
  }
  if (stalled_ || stopping_) return;  // the node failed or stops: nothing more is handled
  queue_.push_back(std::move(item));
  if (queue_.size() == 1) queue_cv_.SignalAll();
}

void NodeRuntime::WakeDataThread() {
  {
    MutexLock lock(&queue_mu_);
    wake_ = true;
  }
  queue_cv_.SignalAll();
}

void NodeRuntime::DataLoop() {
  // Taken a few at a time, so that a receive thread waiting for room gets it while the data
  // thread works through a long queue.
  constexpr size_t kBatch = 256;
  std::vector<DataItem> batch;
  for (;;) {
    {
      MutexLock lock(&queue_mu_);
      // Timed: parked requests expire even when nothing arrives.
      clock_->WaitFor(&queue_mu_, &queue_cv_, options_.heartbeat_interval, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return !queue_.empty() || stopping_ || wake_;
      });
      if (stopping_ || stalled_) return;  // the node stops, or failed: nothing more is handled
      wake_ = false;
      const bool was_full = queue_.size() >= std::max<size_t>(options_.data_queue_limit, 1);
      const size_t n = std::min(queue_.size(), kBatch);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (was_full) queue_cv_.SignalAll();
    }
    MutexLock lock(&data_mu_);
    // What arrived before the handler was attached and serving goes first, on this thread.
    FlushEarlyData();
    for (DataItem& item : batch) {
      if (item.task) {
        item.task();
      } else {
        DeliverData(std::move(item.msg));
      }
      data_progress_.fetch_add(1, std::memory_order_relaxed);
    }
    batch.clear();
    ExpireParked();
  }
}

void NodeRuntime::CheckGaps() {
  const auto now = clock_->Now();
  if (std::optional<ChannelOrder::Gap> gap = in_order_.OldestGap(); gap && now - gap->since > options_.view_timeout) {
    Fail(Status::Unavailable(fmt::format(
        "{}: data message {} of {} never arrived within {} ms, while {} later ones (from {}) did; a lost request "
        "or reply would be a lost update",
        DescribeNode(id_), gap->expected, DescribeNode(gap->sender), options_.view_timeout.count(), gap->held,
        gap->first_held)));
  }
}

void NodeRuntime::ExpireParked() {
  const auto now = clock_->Now();
  while (!parked_.empty() && now - parked_.front().since > options_.view_timeout) {
    Message m = std::move(parked_.front().msg);
    parked_.pop_front();
    if (--parked_by_sender_[m.header.sender] == 0) parked_by_sender_.erase(m.header.sender);
    const Epoch mine = routing()->epoch();
    PSERVER_LOG_WARN("{}: {} was routed with the view of epoch {}, but this server learned no view newer than {} "
                     "within {} ms",
                     DescribeNode(id_), transport::Describe(m.header), m.header.epoch.value, mine.value,
                     options_.view_timeout.count());
    Message reply;
    reply.header = m.header;
    reply.header.flags = transport::kFlagReply | transport::kFlagError;
    reply.header.sender = id_;
    reply.header.receiver = m.header.sender;
    reply.header.status = static_cast<uint8_t>(StatusCode::kUnavailable);
    reply.frames.push_back(transport::BytesFromString(fmt::format(
        "routed with the view of epoch {}, but {} learned no view newer than epoch {} within {} ms",
        m.header.epoch.value, DescribeNode(id_), mine.value, options_.view_timeout.count())));
    (void)SendData(std::move(reply));
  }
}

bool NodeRuntime::FromDataPeer(const Message& msg) const {
  std::shared_ptr<const Routing> r = routing();
  const NodeInfo* n = r->Find(msg.header.sender);
  if (n == nullptr) {
    // A reply of a node that left the view since (a drained server's redirect in flight).
    if (!msg.header.is_reply()) return false;
    MutexLock lock(&departed_mu_);
    auto it = departed_.find(msg.header.sender);
    return it != departed_.end() && it->second == msg.origin;
  }
  if (n->identity != msg.origin) return false;
  return n->role != options_.role ||
         (options_.role == Role::kServer &&
          (msg.header.type == MessageType::kMigrateRows || msg.header.type == MessageType::kReplicate));
}

void NodeRuntime::Refuse(const Message& msg, const char* why) {
  const uint64_t n = refused_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n <= 10 || n % 1000 == 0) {
    // Before registration completes this node has no id yet: it is named by role and address.
    const std::string self = routing() ? DescribeNode(id_) : fmt::format("{} at {}", RoleName(options_.role), address_);
    PSERVER_LOG_WARN("{}: dropped {} (connection {}): {}; {} dropped so far", self,
                     transport::Describe(msg.header), msg.origin.ShortString(), why, n);
  }
}

void NodeRuntime::DeliverData(Message&& msg) {
  if (!data_handler_ || !serving_) {
    constexpr size_t kMaxEarly = 1 << 16;
    if (early_data_.size() < kMaxEarly) {
      early_data_.push_back(std::move(msg));
    } else {
      PSERVER_LOG_WARN("{}: dropped {} before a data handler was attached", DescribeNode(id_),
                       transport::Describe(msg.header));
    }
    return;
  }
  DeliverOrPark(std::move(msg));
}

void NodeRuntime::DeliverOrPark(Message&& msg) {
  if (options_.role == Role::kServer && !msg.header.is_reply()) {
    const NodeId sender = msg.header.sender;
    auto waiting = parked_by_sender_.find(sender);
    if (msg.header.epoch > routing()->epoch() || waiting != parked_by_sender_.end()) {
      ++parked_by_sender_[sender];
      parked_.push_back(Parked{std::move(msg), clock_->Now()});
      return;
    }
  }
  data_handler_->OnData(std::move(msg));
}

void NodeRuntime::ReleaseParked() {
  if (parked_.empty()) return;
  const Epoch now = routing()->epoch();
  std::deque<Parked> still;
  absl::flat_hash_map<NodeId, size_t> still_by_sender;
  for (Parked& p : parked_) {
    const NodeId sender = p.msg.header.sender;
    // A sender's requests stay in order: once one of them must wait, the rest wait behind it.
    if (p.msg.header.epoch > now || still_by_sender.contains(sender)) {
      ++still_by_sender[sender];
      still.push_back(std::move(p));
      continue;
    }
    data_handler_->OnData(std::move(p.msg));
  }
  parked_ = std::move(still);
  parked_by_sender_ = std::move(still_by_sender);
}

std::shared_ptr<DataHandler> NodeRuntime::AttachDataHandler(
    const std::function<std::shared_ptr<DataHandler>()>& make) {
  MutexLock lock(&data_mu_);
  if (data_handler_) return data_handler_;
  data_handler_ = make();
  if (options_.role == Role::kWorker) serving_ = true;
  {
    MutexLock state_lock(&mu_);
    if (Status h = HealthLocked(); !h.ok()) data_handler_->OnShutdown(h);
  }
  std::shared_ptr<DataHandler> handler = data_handler_;
  lock.Unlock();
  WakeDataThread();  // hands over what arrived before, on the data thread
  return handler;
}

void NodeRuntime::StartServing() {
  MutexLock lock(&data_mu_);
  serving_ = true;
  if (!data_handler_) {
    PSERVER_LOG_WARN("{}: serving without a KVServer; data requests will wait unanswered", DescribeNode(id_));
    return;
  }
  lock.Unlock();
  WakeDataThread();  // hands over what arrived before, on the data thread
}

void NodeRuntime::FlushEarlyData() {
  if (!data_handler_ || !serving_ || early_data_.empty()) return;
  for (Message& m : early_data_) DeliverOrPark(std::move(m));
  early_data_.clear();
}

void NodeRuntime::CompleteCall(Message&& reply) {
  MutexLock lock(&mu_);
  auto it = calls_.find(reply.header.request_id);
  if (it == calls_.end()) return;  // the caller timed out and left
  it->second.done = true;
  it->second.reply = std::move(reply);
  cv_.SignalAll();
}

void NodeRuntime::HandleControl(Message&& msg) {
  const auto& h = msg.header;
  switch (h.type) {
    case MessageType::kHeartbeatAck: {
      std::vector<Message> again;
      {
        MutexLock lock(&mu_);
        last_ack_ = clock_->Now();
        if (told_waiting_) {
          told_waiting_ = false;
          PSERVER_LOG_INFO("{}: {} answers again", DescribeNode(id_), DescribeNode(kSchedulerId));
        }
        const bool resumed = h.aux != 0 && h.aux != scheduler_generation_ && scheduler_generation_ != 0;
        if (resumed || resend_needed_) {
          resend_needed_ = false;
          // A new scheduler resumed the job, or a request could not be sent: everything
          // unanswered is asked again (a scheduler answers a call it had answered already -- a
          // released barrier, a declared table -- from the job's recorded state, and takes a
          // second Finalize or barrier arrival alike).
          for (const auto& [id, call] : calls_) {
            if (!call.done) again.push_back(call.request);
          }
          if (finalize_) again.push_back(*finalize_);
          if (resumed) {
            PSERVER_LOG_INFO("{}: a new scheduler (generation {}) resumed the job; asking it again for {} request(s)",
                             DescribeNode(id_), h.aux, again.size());
          }
        }
        if (h.aux != 0) scheduler_generation_ = h.aux;
      }
      // Never blocks the receive thread. The connection to the scheduler just carried the
      // heartbeat this answers, so it is most likely up; if a request cannot go, the next answer
      // asks everything again.
      bool all_sent = true;
      for (Message& m : again) all_sent = transport_->SendNoWait(std::move(m)).ok() && all_sent;
      if (!all_sent) {
        MutexLock lock(&mu_);
        resend_needed_ = true;
      }
      return;
    }
    case MessageType::kBarrierRelease:
    case MessageType::kDeclareTableReply: return CompleteCall(std::move(msg));
    case MessageType::kTableAnnounce:
      // In order with the data: the handler hears of the table before any request for it.
      Enqueue(DataItem(std::function<void()>([this, announce = std::move(msg)]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
                         HandleTableAnnounce(announce);
                       })));
      return;
    case MessageType::kViewChange: return HandleViewChange(msg);
    case MessageType::kMigrate: {
      Result<MigrateOrder> order = msg.frames.size() == 1 ? DecodeMigrateOrder(msg.frames[0])
                                                           : Status::Corruption("migrate without its order");
      const int64_t change = h.request_id;
      if (h.aux == 0 || h.aux > kMaxMigratePhase) order = Status::Corruption(fmt::format("migrate phase {}", h.aux));
      if (!order.ok()) {
        PSERVER_LOG_WARN("{}: {}", DescribeNode(id_), order.status().ToString());
        return ReportMigration(change, static_cast<MigratePhase>(h.aux), order.status());
      }
      // In order with the data: kFinal comes after the view that stops the moving keys' pushes.
      Enqueue(DataItem(std::function<void()>(
          [this, change, phase = static_cast<MigratePhase>(h.aux), order = std::move(*order)]()
              ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
                Status taken = data_handler_ ? data_handler_->OnMigrate(change, phase, order)
                                             : Status::Unavailable("no data handler is attached");
                if (!taken.ok() && phase != MigratePhase::kCancel) {
                  ReportMigration(change, phase, taken);
                }
              })));
      return;
    }
    case MessageType::kNodeLeft: {
      Result<NodeFailure> who = msg.frames.size() == 1 ? DecodeNodeFailure(msg.frames[0])
                                                        : Status::Corruption("node-left without a body");
      if (!who.ok()) {
        PSERVER_LOG_WARN("{}: {}", DescribeNode(id_), who.status().ToString());
        return;
      }
      PSERVER_LOG_INFO("{}: {} left the job: {}", DescribeNode(id_), NodeName(who->role, who->rank, who->id), who->reason);
      Enqueue(DataItem(std::function<void()>([this, who = *who]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
        if (data_handler_) data_handler_->OnNodeLeft(who);
      })));
      return;
    }
    case MessageType::kAdmin: {
      if (!msg.frames.empty()) {  // the scheduler's kCheckpoint order: taken in order with the data
        Result<AdminRequest> order = DecodeAdminRequest(msg.frames[0]);
        if (!order.ok() || order->op != AdminOp::kCheckpoint) {
          PSERVER_LOG_WARN("{}: dropped an admin order it cannot follow: {}", DescribeNode(id_),
                           order.ok() ? "not a checkpoint" : order.status().ToString());
          return;
        }
        Enqueue(DataItem(std::function<void()>([this, request_id = h.request_id, path = order->path]()
                                                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
          auto done = [this, request_id](Result<CheckpointWritten> written) {
            Message reply = ToScheduler(MessageType::kAdminReply);
            reply.header.flags = transport::kFlagReply;
            reply.header.request_id = request_id;
            if (written.ok()) {
              reply.frames.push_back(Encode(*written));
            } else {
              reply.header.flags |= transport::kFlagError;
              reply.header.status = static_cast<uint8_t>(written.status().code());
              reply.frames.push_back(transport::BytesFromString(
                  fmt::format("{}: {}", DescribeNode(id_), written.status().message())));
            }
            if (Status s = transport_->Send(std::move(reply)); !s.ok()) {
              PSERVER_LOG_WARN("{}: could not report its checkpoint to the scheduler: {}", DescribeNode(id_), s.ToString());
            }
          };
          if (data_handler_) {
            data_handler_->OnCheckpoint(path, std::move(done));
          } else {
            done(Status::Unavailable("this node has no data handler to write a checkpoint"));
          }
        })));
        return;
      }
      // The scheduler asks what this server holds (`pserver status`): answered in order with
      // the data, from the handler's tables.
      Enqueue(DataItem(std::function<void()>([this, request_id = h.request_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
        Message reply = ToScheduler(MessageType::kAdminReply);
        reply.header.flags = transport::kFlagReply;
        reply.header.request_id = request_id;
        reply.frames.push_back(Encode(data_handler_ ? data_handler_->OnStats() : std::vector<TableStats>()));
        (void)transport_->SendNoWait(std::move(reply));
      })));
      return;
    }
    case MessageType::kAdminReply:
      if (h.request_id != 0) return CompleteCall(std::move(msg));  // an answer to a Call (TakeOver)
      if (h.is_error()) {
        PSERVER_LOG_WARN("{}: the scheduler refused: {}", DescribeNode(id_), CarriedError(msg).message());
      } else if (!msg.frames.empty()) {
        PSERVER_LOG_INFO("{}: the scheduler answered: {}", DescribeNode(id_), transport::Describe(h));
      }
      return;
    case MessageType::kNodeFailed: {
      if (msg.frames.size() != 1) return;
      Result<NodeFailure> f = DecodeNodeFailure(msg.frames[0]);
      if (!f.ok()) {
        PSERVER_LOG_WARN("{}: {}", DescribeNode(id_), f.status().ToString());
        return;
      }
      PSERVER_LOG_WARN("{}: the scheduler declared {} dead: {}", DescribeNode(id_),
                       NodeName(f->role, f->rank, f->id), f->reason);
      {
        MutexLock lock(&mu_);
        dead_nodes_[f->id] = f->reason;
      }
      {
        MutexLock lock(&given_up_mu_);
        given_up_.insert(f->id);
      }
      Enqueue(DataItem(std::function<void()>([this, failure = *f]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
                         if (data_handler_) data_handler_->OnNodeFailed(failure);
                       })));
      return;
    }
    case MessageType::kShutdown: {
      Status why = h.is_error() ? CarriedError(msg).WithContext("the scheduler aborted the job") : Status::Ok();
      if (why.ok() && h.aux == kShutdownDrained) {
        PSERVER_LOG_INFO("{}: drained: its keys are on the other servers; it leaves the job, which goes on",
                         DescribeNode(id_));
      } else if (why.ok()) {
        PSERVER_LOG_INFO("{}: the scheduler (node 0) ended the job", DescribeNode(id_));
      } else {
        PSERVER_LOG_WARN("{}: the scheduler (node 0) ended the job: {}", DescribeNode(id_), why.ToString());
      }
      if (h.is_error() && h.aux == kShutdownDeclaredDead) {
        MutexLock lock(&mu_);
        declared_dead_ = true;
      }
      Message ack = ToScheduler(MessageType::kShutdown);
      ack.header.flags = transport::kFlagReply;
      (void)transport_->SendNoWait(std::move(ack));  // best effort: the scheduler times out otherwise
      EndJob(why);
      return;
    }
    default:
      PSERVER_LOG_WARN("{}: ignored unexpected {}", DescribeNode(id_), transport::Describe(h));
  }
}

void NodeRuntime::HandleTableAnnounce(const Message& msg) {
  const TableId id = msg.header.table;
  Status taken;
  if (msg.frames.size() != 1) {
    taken = Status::Corruption(fmt::format("table-announce of table {} with {} frames, expected 1", id.value,
                                           msg.frames.size()));
  } else {
    // Under data_mu_ (held by the data thread; then mu_, the lock order of AttachDataHandler): a
    // handler attached later finds the spec with FindTable; one attached already hears of it here.
    if (data_handler_) taken = data_handler_->OnTableDeclared(id, msg.frames[0]);
    if (taken.ok()) {
      MutexLock lock(&mu_);
      tables_[id] = msg.frames[0];
    }
  }
  if (!taken.ok()) {
    PSERVER_LOG_WARN("{}: refused table {}: {}", DescribeNode(id_), id.value, taken.ToString());
  }
  Message reply = ToScheduler(MessageType::kTableAnnounceReply);
  reply.header.flags = transport::kFlagReply;
  reply.header.table = id;
  reply.header.request_id = msg.header.request_id;
  if (!taken.ok()) {
    reply.header.flags |= transport::kFlagError;
    reply.header.status = static_cast<uint8_t>(taken.code());
    reply.frames.push_back(transport::BytesFromString(taken.message()));
  }
  // Never blocks the receive loop: if the scheduler does not take the answer, its declarers time out.
  (void)transport_->SendNoWait(std::move(reply));
}

void NodeRuntime::HandleViewChange(const Message& msg) {
  Result<ClusterView> view =
      msg.frames.size() == 1 ? DecodeClusterView(msg.frames[0]) : Status::Corruption("view-change without a body");
  Result<std::shared_ptr<const Routing>> routing = view.ok() ? InstallView(*view) : view.status();
  if (!routing.ok()) {
    // A view this node cannot route by: it can no longer take part correctly.
    Fail(routing.status().WithContext("the scheduler announced a new view"));
    return;
  }
  // The data thread answers once every data message before the view was handled: from then
  // on this node applies nothing by an older view.
  Enqueue(DataItem(std::function<void()>([this, routing = *routing, request_id = msg.header.request_id]()
                           ABSL_EXCLUSIVE_LOCKS_REQUIRED(data_mu_) {
                             if (data_handler_) data_handler_->OnViewChanged(routing);
                             if (data_handler_ && serving_) ReleaseParked();
                             Message ack = ToScheduler(MessageType::kViewChangeReply);
                             ack.header.flags = transport::kFlagReply;
                             ack.header.request_id = request_id;
                             ack.header.epoch = routing->epoch();
                             // Never blocks: the scheduler's caller times out otherwise.
                             (void)transport_->SendNoWait(std::move(ack));
                           })));
}

NodeRuntime::OutChannel* NodeRuntime::Channel(NodeId peer) {
  MutexLock lock(&channels_mu_);
  std::unique_ptr<OutChannel>& c = out_channels_[peer];
  if (!c) c = std::make_unique<OutChannel>();
  return c.get();
}

void NodeRuntime::QueueData(Message msg) {
  OutChannel* channel = Channel(msg.header.receiver);
  MutexLock lock(&channel->mu);
  channel->queue.push_back(std::move(msg));
}

std::vector<NodeRuntime::SendFailure> NodeRuntime::FlushData() {
  absl::InlinedVector<OutChannel*, 8> channels;
  {
    MutexLock lock(&channels_mu_);
    for (const auto& [peer, channel] : out_channels_) channels.push_back(channel.get());
  }
  std::vector<SendFailure> failed;
  {
    MutexLock lock(&unclaimed_mu_);
    failed.swap(unclaimed_failures_);
  }
  for (OutChannel* channel : channels) Drain(channel, &failed);
  return failed;
}

void NodeRuntime::Drain(OutChannel* channel, std::vector<SendFailure>* failed) {
  OutChannel& c = *channel;
  MutexLock lock(&c.mu);
  // Back-pressure, bounded: the sending thread takes a request at least every send_timeout.
  c.cv.WaitFor(&c.mu, options_.send_timeout,
               [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.mu) { return !c.sending || c.queue.size() < kMaxOutbound; });
  if (c.sending || c.queue.empty()) return;  // the sending thread takes what this one queued
  c.sending = true;
  while (!c.queue.empty()) {
    Message m = std::move(c.queue.front());
    c.queue.pop_front();
    // Numbered as it leaves, by the one sending thread: a failed send takes no number, so the
    // receiver sees no gap.
    m.header.seq = c.next_seq;
    const transport::Header header = m.header;
    lock.Unlock();
    // A peer declared dead since the request was queued is not waited for.
    Status sent = PeerStatus(header.receiver);
    if (sent.ok()) sent = transport_->Send(std::move(m));
    lock.Lock();
    if (sent.ok()) {
      if (++c.next_seq == 0) c.next_seq = 1;  // 0 means unsequenced
    } else {
      failed->push_back(SendFailure{header, std::move(sent)});
    }
    c.cv.SignalAll();
  }
  c.sending = false;
  c.cv.SignalAll();
}

Status NodeRuntime::SendData(Message msg) {
  if (msg.header.is_reply()) return transport_->Send(std::move(msg));  // unsequenced
  const transport::Header mine = msg.header;
  QueueData(std::move(msg));
  Status result;
  std::vector<SendFailure> others;
  for (SendFailure& f : FlushData()) {
    const transport::Header& h = f.header;
    if (result.ok() && h.receiver == mine.receiver && h.type == mine.type && h.request_id == mine.request_id &&
        h.part == mine.part) {
      result = std::move(f.error);
    } else {
      others.push_back(std::move(f));
    }
  }
  if (!others.empty()) {
    MutexLock lock(&unclaimed_mu_);
    for (SendFailure& f : others) unclaimed_failures_.push_back(std::move(f));
  }
  return result;
}

void NodeRuntime::EndJob(const Status& why) {
  {
    MutexLock lock(&mu_);
    if (job_ended_) return;
    job_ended_ = true;
    if (!why.ok() && error_.ok()) error_ = why;
    cv_.SignalAll();
  }
  MutexLock lock(&data_mu_);
  if (data_handler_) data_handler_->OnShutdown(why.ok() ? Status::Aborted("the job has ended") : why);
}

void NodeRuntime::Fail(const Status& why) {
  PSERVER_LOG_ERROR("{}: {}", DescribeNode(id_), why.ToString());
  EndJob(why);
}

void NodeRuntime::HeartbeatLoop(std::stop_token stop) {
  MutexLock lock(&mu_);
  auto last_beat = clock_->Now(), last_turn = clock_->Now();
  Clock::TimePoint woke = last_turn;  // when this thread ran again after the node was suspended
  bool broken = false;        // the scheduler's connection was seen broken, at broken_at,
  Clock::TimePoint broken_at;  // and no answer came since
  while (!stop.stop_requested() && !job_ended_) {
    // A scheduler that keeps the job's state in a store may be restarted: its connection is
    // looked at every kSilentSchedulerProbe, and from its break until a scheduler answers again
    // heartbeats go at that pace, so that a new one is heard from, and the calls asked of it
    // again, within milliseconds of its start rather than a heartbeat interval later.
    const bool durable = scheduler_generation_ != 0;
    const milliseconds wait = durable ? std::min(options_.heartbeat_interval, kSilentSchedulerProbe)
                                      : options_.heartbeat_interval;
    clock_->WaitFor(&mu_, &cv_, wait,
                    [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop.stop_requested() || job_ended_; });
    if (stop.stop_requested() || job_ended_) return;
    // This thread ran later than its wait by half a heartbeat timeout or more: the node itself
    // was stopped (SIGSTOP) or starved, so the scheduler's silence meanwhile says nothing of the
    // scheduler. It is judged from now on, after a heartbeat that tells the scheduler this node
    // is back (it answers, or says the node was declared dead meanwhile). Shorter delays do not
    // count, so that a node on a loaded machine still finds a dead scheduler.
    const auto late = clock_->Now() - last_turn - wait;
    if (late > std::max<milliseconds>(milliseconds(500), options_.heartbeat_timeout / 2)) woke = clock_->Now();
    last_turn = clock_->Now();
    if (durable) {
      lock.Unlock();  // only this thread reads the watched connection's events
      const std::vector<NodeId> down = transport_->PeersDown(milliseconds(0));
      lock.Lock();
      const auto now = clock_->Now();
      if (std::find(down.begin(), down.end(), kSchedulerId) != down.end()) {
        broken = true;
        broken_at = now;
      }
      if (broken && last_ack_ > broken_at) broken = false;
      if (!broken && now - last_beat < options_.heartbeat_interval) continue;
    }
    last_beat = clock_->Now();
    auto silent = std::chrono::duration_cast<milliseconds>(clock_->Now() - std::max(last_ack_, woke));
    if (silent > 2 * options_.heartbeat_interval) heartbeats_missed_.fetch_add(1, std::memory_order_relaxed);
    const milliseconds limit = durable ? std::max(options_.scheduler_grace, options_.heartbeat_timeout)
                                       : options_.heartbeat_timeout;
    if (durable && silent > options_.heartbeat_timeout && !told_waiting_) {
      told_waiting_ = true;
      PSERVER_LOG_WARN("{}: {} has not answered heartbeats for {} ms; it keeps the job's state in a store, so this "
                       "node waits up to {} ms for it to come back",
                       DescribeNode(id_), DescribeNode(kSchedulerId), silent.count(), limit.count());
    }
    if (silent > limit && !receive_blocked_) {
      lock.Unlock();
      Fail(Status::Unavailable(fmt::format("{} has not answered heartbeats for {} ms (the scheduler at {}){}",
                                           DescribeNode(kSchedulerId), silent.count(), options_.scheduler_address,
                                           durable ? "; it keeps the job's state in a store, but no scheduler "
                                                     "resumed the job within the grace"
                                                   : "")));
      return;
    }
    lock.Unlock();
    // Never blocks: a scheduler that does not take heartbeats is caught by the check above.
    Message beat = ToScheduler(MessageType::kHeartbeat);
    beat.header.aux = replicas_synced_.load(std::memory_order_relaxed);
    (void)transport_->SendNoWait(std::move(beat));
    lock.Lock();
  }
}

Result<Message> NodeRuntime::Call(Message request, milliseconds timeout, const std::string& what) {
  int64_t call_id;
  {
    MutexLock lock(&mu_);
    if (Status h = HealthLocked(); !h.ok()) return h;
    call_id = next_call_id_++;
    request.header.request_id = call_id;
    calls_.emplace(call_id, ControlCall{.done = false, .request = request, .reply = {}});
  }
  Status sent = transport_->Send(std::move(request));
  MutexLock lock(&mu_);
  if (!sent.ok()) {
    if (scheduler_generation_ == 0) {
      calls_.erase(call_id);
      return sent.WithContext(what);
    }
    // The scheduler may be dying and coming back: the call is asked again when one answers.
    resend_needed_ = true;
    PSERVER_LOG_WARN("{}: {}: {}; asking again when a scheduler answers", DescribeNode(id_), what, sent.ToString());
  }
  cv_.WaitFor(&mu_, timeout,
              [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_[call_id].done || !HealthLocked().ok(); });
  Message reply = std::move(calls_[call_id].reply);
  bool answered = calls_[call_id].done;
  calls_.erase(call_id);
  if (answered) {
    if (reply.header.is_error()) return CarriedError(reply).WithContext(what);
    return reply;
  }
  if (Status h = HealthLocked(); !h.ok()) return h.WithContext(what);
  return Status::DeadlineExceeded(
      fmt::format("{}: no answer from {} within {} ms", what, DescribeNode(kSchedulerId), timeout.count()));
}

Status NodeRuntime::Barrier(BarrierGroup group, milliseconds timeout) {
  Message m = ToScheduler(MessageType::kBarrier);
  m.header.aux = static_cast<uint64_t>(group);
  std::string what = fmt::format("{}: barrier of {}", DescribeNode(id_), BarrierGroupName(group));
  return Call(std::move(m), timeout, what).status();
}

Result<TableId> NodeRuntime::DeclareTable(const TableDeclaration& declaration, milliseconds timeout) {
  if (declaration.name.empty() || declaration.name.size() > kMaxTableName) {
    return Status::InvalidArgument(
        fmt::format("table name must be 1 to {} bytes, got {}", kMaxTableName, declaration.name.size()));
  }
  if (declaration.summary.size() > kMaxTableSummary || declaration.spec.size() > kMaxTableSpec) {
    return Status::InvalidArgument(fmt::format("table '{}': a summary of {} bytes or a spec of {} bytes is too long",
                                               declaration.name, declaration.summary.size(), declaration.spec.size()));
  }
  Message m = ToScheduler(MessageType::kDeclareTable);
  m.frames.push_back(Encode(declaration));
  PSERVER_ASSIGN_OR_RETURN(Message reply,
                           Call(std::move(m), timeout, fmt::format("declaring table '{}'", declaration.name)));
  TableId id = reply.header.table;
  MutexLock lock(&mu_);
  tables_[id] = declaration.spec;
  return id;
}

Result<transport::Bytes> NodeRuntime::FindTable(TableId id) const {
  MutexLock lock(&mu_);
  auto it = tables_.find(id);
  if (it == tables_.end()) {
    return Status::NotFound(fmt::format("table {} was not declared on this node", id.value));
  }
  return it->second;
}

Status NodeRuntime::Finalize(milliseconds timeout) {
  PSERVER_RETURN_IF_ERROR(SendFinalize(ToScheduler(MessageType::kFinalize), "finalize"));
  return WaitForShutdown(timeout);
}

Status NodeRuntime::SendFinalize(Message finalize, const char* what) {
  {
    MutexLock lock(&mu_);
    if (job_ended_) return error_;
    finalize_ = finalize;
  }
  Status sent = transport_->Send(std::move(finalize));
  MutexLock lock(&mu_);
  if (sent.ok() || job_ended_) return Status::Ok();
  if (scheduler_generation_ == 0) return sent.WithContext(what);
  // Sent again when a scheduler answers (see HandleControl).
  resend_needed_ = true;
  PSERVER_LOG_WARN("{}: {}: {}; sending it again when a scheduler answers", DescribeNode(id_), what, sent.ToString());
  return Status::Ok();
}

Status NodeRuntime::FinalizeWithError(const Status& why, milliseconds timeout) {
  {
    MutexLock lock(&mu_);
    if (job_ended_) return error_;
  }
  Message failed = ToScheduler(MessageType::kFinalize);
  failed.header.flags |= transport::kFlagError;
  failed.header.status = static_cast<uint8_t>(why.ok() ? StatusCode::kInternal : why.code());
  failed.frames.push_back(transport::BytesFromString(why.message()));
  PSERVER_RETURN_IF_ERROR(SendFinalize(std::move(failed), "reporting this worker's failure"));
  return WaitForShutdown(timeout);
}

Status NodeRuntime::WaitForShutdown(milliseconds timeout) {
  MutexLock lock(&mu_);
  if (!cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return job_ended_; })) {
    return Status::DeadlineExceeded(fmt::format("{}: the scheduler did not end the job within {} ms",
                                                DescribeNode(id_), timeout.count()));
  }
  return error_;
}

Status NodeRuntime::HealthLocked() const {
  if (!error_.ok()) return error_;
  if (job_ended_) return Status::Aborted("the job has ended");
  return Status::Ok();
}

Status NodeRuntime::health() const {
  MutexLock lock(&mu_);
  return HealthLocked();
}

Status NodeRuntime::PeerStatus(NodeId id) const {
  MutexLock lock(&mu_);
  auto it = dead_nodes_.find(id);
  if (it == dead_nodes_.end()) return Status::Ok();
  return Status::Unavailable(fmt::format("{} is dead: {}", DescribeNode(id), it->second));
}

}  // namespace pserver::cluster
