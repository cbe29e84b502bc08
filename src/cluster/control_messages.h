// Bodies of the control-plane messages exchanged with the scheduler, and their encoding.
// Every Decode* returns kCorruption (naming the message) for a body that is truncated, has
// trailing bytes or holds out-of-range values; none of them can crash on bad input.
#pragma once

#include <string>
#include <vector>

#include "pserver/result.h"
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

// A table as the cluster layer carries it: its name (what declarations are matched by), a
// one-line summary for error messages, and its spec, encoded by the kv layer
// (kv/table_catalog.h) and opaque here: the scheduler matches declarations of one name by
// these bytes and hands them to the servers, which decode and check them.
struct TableDeclaration {
  std::string name;      // 1..kMaxTableName bytes
  std::string summary;   // at most kMaxTableSummary bytes
  transport::Bytes spec; // at most kMaxTableSpec bytes
};
inline constexpr size_t kMaxTableName = 128;
inline constexpr size_t kMaxTableSummary = 1024;
inline constexpr size_t kMaxTableSpec = 1 << 20;

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
// kDeclareTable's body (worker -> scheduler). kTableAnnounce (scheduler -> server, the table's
// id in the header) carries the declaration's spec bytes alone as its frame.
transport::Bytes Encode(const TableDeclaration& m);
transport::Bytes Encode(const NodeFailure& m);

Result<RegisterRequest> DecodeRegisterRequest(const transport::Bytes& body);
Result<RegisterReply> DecodeRegisterReply(const transport::Bytes& body);
// Also refuses a view whose node count does not match its role counts, that names a node id or
// a server rank twice, or whose ring is empty (with servers), repeats a rank or names one that
// is not a server of the view.
Result<ClusterView> DecodeClusterView(const transport::Bytes& body);
// Also refuses an empty name or one, or a summary or spec, over its bound.
Result<TableDeclaration> DecodeTableDeclaration(const transport::Bytes& body);
Result<NodeFailure> DecodeNodeFailure(const transport::Bytes& body);

// "server 1 (node 2)", "worker 0 (node 5)", "the scheduler (node 0)".
std::string NodeName(Role role, Rank rank, NodeId id);

// The error a control message carries (kFlagError): its status code (kInternal for kOk or a code
// out of range) and the message in frame 0, cut to 4 KiB (a peer's bytes).
Status CarriedError(const transport::Message& msg);

}  // namespace pserver::cluster
