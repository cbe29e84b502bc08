// Bodies of the control-plane messages exchanged with the scheduler, and their encoding.
// Every Decode* returns kCorruption (naming the message) for a body that is truncated, has
// trailing bytes or holds out-of-range values; none of them can crash on bad input.
#pragma once

#include <string>
#include <vector>

#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/types.h"
#include "transport/message.h"

namespace pserver::cluster {

struct NodeInfo {
  NodeId id;
  Role role = Role::kWorker;
  Rank rank;
  std::string address;
  // The identity the node's connections present (the origin of its registration, as the
  // scheduler's transport saw it): peers accept data messages claiming this node only from it.
  transport::ConnectionId identity;
  friend bool operator==(const NodeInfo&, const NodeInfo&) = default;
};

// The membership and routing of the job at one routing epoch: what every node learns at
// registration and again with each kViewChange. Servers are named on the ring by their rank,
// which is the server's stable name: it is never given to another server of the job, so it is
// not a dense index (a view may lack ranks, and the ring may hold only some of the servers).
struct ClusterView {
  Epoch epoch;
  uint32_t num_servers = 0;
  uint32_t num_workers = 0;
  uint32_t virtual_nodes = 0;
  std::vector<NodeInfo> nodes;  // servers and workers (not the scheduler)
  std::vector<uint32_t> ring;   // ranks of the servers that own keys (on the ring), any order
  friend bool operator==(const ClusterView&, const ClusterView&) = default;
};

struct RegisterRequest {
  Role role = Role::kWorker;
  std::string address;
  int64_t rank_hint = -1;
  // The identity the scheduler must present on its connection back to this node: a random
  // secret the node makes, sent only over the connection the node opened to the scheduler's
  // address, so that the node believes control messages only from that connection. Never
  // anonymous (refused as malformed).
  transport::ConnectionId scheduler_identity;
};

struct RegisterReply {
  NodeId your_id;
  ClusterView view;
};

struct NodeFailure {
  NodeId id;
  Role role = Role::kWorker;
  Rank rank;
  std::string reason;
};

transport::Bytes Encode(const RegisterRequest& m);
transport::Bytes Encode(const RegisterReply& m);
// kViewChange's body, and frame 0 of a redirect (transport::kFlagRedirect).
transport::Bytes Encode(const ClusterView& m);
// The TableSpec body travels in kDeclareTable (worker -> scheduler) and in kTableAnnounce
// (scheduler -> server, with the table's id in the header), both as one frame.
transport::Bytes Encode(const TableSpec& m);
transport::Bytes Encode(const NodeFailure& m);

Result<RegisterRequest> DecodeRegisterRequest(const transport::Bytes& body);
Result<RegisterReply> DecodeRegisterReply(const transport::Bytes& body);
// Also refuses a view whose node count does not match its role counts, that names a node id or
// a server rank twice, or whose ring is empty (with servers), repeats a rank or names one that
// is not a server of the view.
Result<ClusterView> DecodeClusterView(const transport::Bytes& body);
Result<TableSpec> DecodeTableSpec(const transport::Bytes& body);
Result<NodeFailure> DecodeNodeFailure(const transport::Bytes& body);

// Checks a table spec a user or peer gave, with kInvalidArgument naming the table and the field:
// name 1..128 bytes; a known value type; width >= 1 unless variable length; a non-empty key range
// for placement kRange; storage kDense only with placement kRange and at most 2^32 keys in the
// range; push_arity 1 or 2; updater name 1..64 bytes with at most 32 params, each named by 1..64
// bytes and finite; a known initializer kind with a finite scale >= 0. Whether the updater's
// name and params are known is for the servers to say (see DataHandler::OnTableDeclared).
Status ValidateTableSpec(const TableSpec& spec);

// "server 1 (node 2)", "worker 0 (node 5)", "the scheduler (node 0)".
std::string NodeName(Role role, Rank rank, NodeId id);

// The error a control message carries (kFlagError): its status code (kInternal for kOk or a code
// out of range) and the message in frame 0, cut to 4 KiB (a peer's bytes).
Status CarriedError(const transport::Message& msg);

}  // namespace pserver::cluster
