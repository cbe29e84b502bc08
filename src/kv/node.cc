// The public Node: a scheduler, or a server or worker runtime, behind one face. It lives with
// the kv layer because declaring a table reads the table's spec (kv/table_catalog.h).
#include "pserver/node.h"

#include <fmt/format.h>

#include <filesystem>
#include <system_error>

#include "base/logging.h"
#include "base/metrics.h"
#include "cluster/scheduler.h"
#include "kv/node_access.h"
#include "kv/table_catalog.h"
#include "kv/metrics_endpoint.h"
#include "transport/zmq/zmq_transport.h"

namespace pserver {

Result<std::unique_ptr<Node>> internal::NodeAccess::StartWithTransport(
    const NodeOptions& options, std::unique_ptr<transport::Transport> transport, Clock* clock) {
  std::unique_ptr<Node> node(new Node());
  node->role_ = options.role;
  if (options.metrics_port >= 0) {
    // Up before the cluster forms: a node that waits for its peers answers probes.
    node->metrics_ = std::make_shared<metrics::NodeMetrics>();
    PSERVER_ASSIGN_OR_RETURN(node->endpoint_,
                             kv::MetricsEndpoint::Start(options.host, options.metrics_port, node->metrics_));
    node->metrics_address_ = fmt::format("{}:{}", options.host, node->endpoint_->port());
    PSERVER_LOG_INFO("{} serves metrics at http://{}/metrics", RoleName(options.role), node->metrics_address_);
  } else if (options.metrics_port != -1) {
    return Status::InvalidArgument(
        fmt::format("metrics port {}: give -1 (none), 0 (any free port) or a port up to 65535", options.metrics_port));
  }
  if (options.role == Role::kScheduler) {
    PSERVER_ASSIGN_OR_RETURN(node->scheduler_, cluster::Scheduler::Start(options, std::move(transport), node->metrics_));
  } else {
    PSERVER_ASSIGN_OR_RETURN(node->runtime_,
                             cluster::NodeRuntime::Start(options, std::move(transport), clock, node->metrics_));
  }
  return node;
}

namespace {

// One admin request to the scheduler and its answer (see JobStatus).
Result<std::string> AskScheduler(const std::string& scheduler_address, cluster::AdminRequest request,
                                 std::chrono::milliseconds timeout, const std::string& host) {
  if (scheduler_address.empty()) return Status::InvalidArgument("no scheduler address");
  transport::zmq::ZmqOptions zopts;
  zopts.send_timeout = timeout;
  PSERVER_ASSIGN_OR_RETURN(auto t, transport::zmq::ZmqTransport::Create(zopts));
  PSERVER_ASSIGN_OR_RETURN(request.reply_address, t->Listen(fmt::format("tcp://{}:0", host)));
  PSERVER_RETURN_IF_ERROR(t->Connect(kSchedulerId, scheduler_address));
  t->NamePeer(kSchedulerId, fmt::format("the scheduler at {}", scheduler_address));
  transport::Message ask;
  ask.header.type = transport::MessageType::kAdmin;
  ask.header.receiver = kSchedulerId;
  ask.header.request_id = 1;
  ask.frames.push_back(cluster::Encode(request));
  PSERVER_RETURN_IF_ERROR(t->Send(std::move(ask)));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    Result<transport::Message> reply = t->Receive(left);
    if (!reply.ok()) {
      if (reply.status().code() == StatusCode::kDeadlineExceeded) break;
      return reply.status();
    }
    const transport::Header& h = reply->header;
    if (h.type != transport::MessageType::kAdminReply || h.request_id != 1) continue;
    if (h.is_error()) return cluster::CarriedError(*reply);
    if (reply->frames.empty()) return std::string();
    return std::string(reinterpret_cast<const char*>(reply->frames[0].data()), reply->frames[0].size());
  }
  return Status::DeadlineExceeded(fmt::format("the scheduler at {} did not answer within {} ms (is the job running, "
                                              "and can it reach {}?)",
                                              scheduler_address, timeout.count(), request.reply_address));
}

}  // namespace

Result<std::string> JobStatus(const std::string& scheduler_address, std::chrono::milliseconds timeout,
                              const std::string& host, StatusFormat format) {
  const cluster::AdminOp op = format == StatusFormat::kJson ? cluster::AdminOp::kStatusJson : cluster::AdminOp::kStatus;
  return AskScheduler(scheduler_address, cluster::AdminRequest{op, NodeId(), "", ""}, timeout, host);
}

Result<std::string> DrainServer(const std::string& scheduler_address, NodeId node, std::chrono::milliseconds timeout,
                                const std::string& host) {
  return AskScheduler(scheduler_address, cluster::AdminRequest{cluster::AdminOp::kDrain, node, "", ""}, timeout, host);
}

namespace {

// `dir` as the scheduler and the servers are to find it.
Result<std::string> AbsoluteCheckpointDirectory(const std::string& dir) {
  if (dir.empty()) return Status::InvalidArgument("a checkpoint needs a directory");
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(dir, ec);
  if (ec) return Status::InvalidArgument(fmt::format("checkpoint directory {}: {}", dir, ec.message()));
  return absolute.lexically_normal().string();
}

}  // namespace

Result<std::string> CheckpointJob(const std::string& scheduler_address, const std::string& dir,
                                  std::chrono::milliseconds timeout, const std::string& host) {
  PSERVER_ASSIGN_OR_RETURN(std::string absolute, AbsoluteCheckpointDirectory(dir));
  return AskScheduler(scheduler_address, cluster::AdminRequest{cluster::AdminOp::kCheckpoint, NodeId(), "", absolute},
                      timeout, host);
}

Result<std::string> Node::Checkpoint(const std::string& dir, std::chrono::milliseconds timeout) {
  if (role_ == Role::kScheduler || !runtime_) return Status::InvalidArgument("only a worker or a server asks with Node::Checkpoint; tools use CheckpointJob");
  PSERVER_ASSIGN_OR_RETURN(std::string absolute, AbsoluteCheckpointDirectory(dir));
  return runtime_->Checkpoint(absolute, timeout);
}

Status Node::TakeOver(NodeId lost, std::chrono::milliseconds timeout) {
  if (role_ != Role::kWorker || !runtime_) return Status::InvalidArgument("only a worker takes over a lost worker's work");
  return runtime_->TakeOver(lost, timeout);
}

Status Node::Leave() {
  if (role_ != Role::kServer || !runtime_) return Status::InvalidArgument("only a server can leave the job");
  return runtime_->RequestDrain();
}

Result<std::unique_ptr<Node>> Node::Start(const NodeOptions& options) {
  transport::zmq::ZmqOptions zopts;
  zopts.send_timeout = options.send_timeout;
  // The scheduler never stalls on one member that died: a view sent to it before its death was
  // seen gives up as soon as the death shows, and the next turn declares it dead.
  if (options.role == Role::kScheduler) zopts.give_up_when_down_for = cluster::Scheduler::kReconnectGrace;
  PSERVER_ASSIGN_OR_RETURN(auto transport, transport::zmq::ZmqTransport::Create(zopts));
  return internal::NodeAccess::StartWithTransport(options, std::move(transport));
}

Node::~Node() = default;

prometheus::Registry* Node::metrics() const { return metrics_ ? &metrics_->registry() : nullptr; }

NodeId Node::id() const { return runtime_ ? runtime_->id() : kSchedulerId; }
Rank Node::rank() const { return runtime_ ? runtime_->rank() : Rank(0); }
uint32_t Node::num_servers() const { return runtime_ ? runtime_->routing()->view().num_servers : 0; }
uint32_t Node::num_workers() const { return runtime_ ? runtime_->routing()->view().num_workers : 0; }
const std::string& Node::address() const { return runtime_ ? runtime_->address() : scheduler_->address(); }

Status Node::Barrier(BarrierGroup group, std::chrono::milliseconds timeout) {
  if (!runtime_) return Status::InvalidArgument("the scheduler does not take part in barriers");
  return runtime_->Barrier(group, timeout);
}

Result<TableId> Node::DeclareTable(const TableSpec& spec, std::chrono::milliseconds timeout) {
  if (!runtime_) return Status::InvalidArgument("declare tables from servers or workers, not the scheduler");
  return kv::DeclareTable(*runtime_, spec, timeout);
}

Status Node::Finalize(std::chrono::milliseconds timeout) {
  if (role_ != Role::kWorker) return Status::InvalidArgument("only workers finalize; servers and the scheduler Run");
  return runtime_->Finalize(timeout);
}

Status Node::FinalizeWithError(const Status& why, std::chrono::milliseconds timeout) {
  if (role_ != Role::kWorker) return Status::InvalidArgument("only workers finalize; servers and the scheduler Run");
  return runtime_->FinalizeWithError(why, timeout);
}

Status Node::Run() {
  if (scheduler_) return scheduler_->Run();
  if (role_ != Role::kServer) return Status::InvalidArgument("workers do not Run; they Finalize");
  runtime_->StartServing();
  // Not a silent hang: the heartbeat timer ends the job if the scheduler goes away.
  return runtime_->WaitForShutdown(std::chrono::hours(24 * 365));
}

void Node::Stop() {
  if (scheduler_) scheduler_->Stop();
  if (runtime_) runtime_->Stop();
}

Status Node::health() const { return runtime_ ? runtime_->health() : Status::Ok(); }

bool Node::declared_dead() const { return runtime_ && runtime_->declared_dead(); }

Node::Traffic Node::traffic() const {
  if (!runtime_) return {};
  const transport::TransportStats s = runtime_->traffic();
  return {s.messages_sent, s.bytes_sent, s.messages_received, s.bytes_received};
}

}  // namespace pserver
