// Bodies of the control-plane messages exchanged with the scheduler, and their encoding.
// Every Decode* returns kCorruption (naming the message) for a body that is truncated, has
// trailing bytes or holds out-of-range values; none of them can crash on bad input.
#pragma once

#include <string>
#include <vector>

#include "cluster/ring.h"
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
// not a dense index (a view may lack ranks, and the ring may hold only some of the servers: a
// server joining before its keys moved, or leaving after they did, owns none).
struct ClusterView {
  Epoch epoch;
  uint32_t num_servers = 0;
  uint32_t num_workers = 0;
  std::vector<NodeInfo> nodes;  // servers and workers (not the scheduler)
  // The placement (cluster/partition_placement.h) as the ring's segments, ascending, the first
  // beginning at routing key 0, each ending where the next begins (the last at 2^64-1; the wire
  // carries only the beginnings), neighbours owned by different servers of the view.
  std::vector<RingSegment> ring;
  // The job's replication factor k (1..kMaxReplicas): each key range is held by a chain of
  // min(k, servers) servers, its owner and the next distinct servers in the ring's order
  // (Routing::Chain; docs/durability.md, section 3).
  uint32_t replicas = 1;
  // Every owner sends its replicas all of its rows, whatever its chains were: set on the view
  // that calls off a membership change after its switch, which only the change's donors saw (a
  // donor may have dropped rows it held as a replica under it, unseen by their owners).
  bool resync = false;
  friend bool operator==(const ClusterView&, const ClusterView&) = default;
};
inline constexpr uint32_t kMaxReplicas = 8;
// Segments a view may carry: one per partition at most.
inline constexpr size_t kMaxRingSegments = size_t{1} << 16;

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
// kShutdown's header.aux, with kFlagError: the receiver was declared dead (it was silent for the
// heartbeat timeout) and the job goes on without it (docs/wire_format.md).
inline constexpr uint64_t kShutdownDeclaredDead = 1;
// kShutdown's header.aux, without kFlagError: the receiver is a drained server; its keys are on
// the other servers and the job goes on without it.
inline constexpr uint64_t kShutdownDrained = 2;

inline constexpr size_t kMaxTableName = 128;
inline constexpr size_t kMaxTableSummary = 1024;
inline constexpr size_t kMaxTableSpec = 1 << 20;

struct NodeFailure {
  NodeId id;
  Role role = Role::kWorker;
  Rank rank;
  std::string reason;
};

// A membership change (docs/elasticity.md) as the scheduler orders it from each donor server:
// kMigrate's header.aux is the phase, header.request_id the change.
enum class MigratePhase : uint8_t {
  kCopy = 1,    // copy the moving rows to their new owners while serving; note changes to them
  kFinal = 2,   // the donor routes by the new view now: copy the rows changed since kCopy began
  kCommit = 3,  // the new view is everyone's: erase the rows handed over (answered once done)
  kCancel = 4,  // the change is off (a recipient is gone): forget it, keep every row
};
inline constexpr uint8_t kMaxMigratePhase = 4;
// Where a donor's moving rows go: the routing-key ranges (inclusive) each recipient takes.
struct MigrateTarget {
  NodeId to;
  std::vector<KeyRange> ranges;
  friend bool operator==(const MigrateTarget&, const MigrateTarget&) = default;
};
struct MigrateOrder {
  std::vector<MigrateTarget> targets;
  friend bool operator==(const MigrateOrder&, const MigrateOrder&) = default;
};
// What a donor moved in one phase (kMigrateReply's body).
struct MigrateReport {
  uint64_t rows = 0;
  uint64_t bytes = 0;
  friend bool operator==(const MigrateReport&, const MigrateReport&) = default;
};
inline constexpr size_t kMaxMigrateRanges = size_t{1} << 16;

// kAdmin: a request to the scheduler from a tool (`pserver status`, `pserver drain`,
// `pserver checkpoint`) or from a member (a server asked to leave, e.g. by SIGTERM; a worker
// that took over a lost worker's work); and the
// scheduler's kCheckpoint order to a server (a kAdmin without a body asks a server for its
// TableStats).
enum class AdminOp : uint8_t {
  kStatus = 1,      // answer with the view, members and tables, as text
  kDrain = 2,       // move server `node`'s keys to the others, then let it exit
  kCheckpoint = 3,  // to the scheduler: checkpoint the job into directory `path`;
                    // to a server: write its checkpoint file `path` (answered with CheckpointWritten)
  kStatusJson = 4,  // as kStatus, as one JSON object
  kTakeOver = 5,    // from a worker: it does the work of lost worker `node` (Node::TakeOver)
};
struct AdminRequest {
  AdminOp op = AdminOp::kStatus;
  NodeId node;  // kDrain: the server to drain; kTakeOver: the lost worker
  // Where the answer goes: the address a tool listens at (the scheduler connects to it there).
  // Empty from a member, which is answered like its other requests.
  std::string reply_address;
  std::string path;  // kCheckpoint: see AdminOp (at most 4096 bytes)
  friend bool operator==(const AdminRequest&, const AdminRequest&) = default;
};

// A server's answer to a kCheckpoint order: the file it wrote (for the manifest).
struct CheckpointWritten {
  uint64_t bytes = 0;
  uint64_t rows = 0;
  uint64_t checksum = 0;
  friend bool operator==(const CheckpointWritten&, const CheckpointWritten&) = default;
};

// What a server holds of one table (its answer to the scheduler's kAdmin status request: a list
// of these).
struct TableStats {
  TableId table;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  friend bool operator==(const TableStats&, const TableStats&) = default;
};
inline constexpr size_t kMaxTableStats = 1 << 16;

transport::Bytes Encode(const CheckpointWritten& m);
Result<CheckpointWritten> DecodeCheckpointWritten(const transport::Bytes& body);

transport::Bytes Encode(const std::vector<TableStats>& m);
Result<std::vector<TableStats>> DecodeTableStats(const transport::Bytes& body);

transport::Bytes Encode(const RegisterRequest& m);
transport::Bytes Encode(const RegisterReply& m);
// kViewChange's body, and frame 0 of a redirect (transport::kFlagRedirect).
transport::Bytes Encode(const ClusterView& m);
// kDeclareTable's body (worker -> scheduler). kTableAnnounce (scheduler -> server, the table's
// id in the header) carries the declaration's spec bytes alone as its frame.
transport::Bytes Encode(const TableDeclaration& m);
transport::Bytes Encode(const NodeFailure& m);

transport::Bytes Encode(const MigrateOrder& m);
transport::Bytes Encode(const MigrateReport& m);
transport::Bytes Encode(const AdminRequest& m);

Result<RegisterRequest> DecodeRegisterRequest(const transport::Bytes& body);
Result<RegisterReply> DecodeRegisterReply(const transport::Bytes& body);
// Also refuses a view whose node count does not match its role counts, that names a node id or
// a server rank twice, or whose ring is empty (with servers), does not begin at 0, is not
// ascending, has neighbours of one owner or names an owner that is not a server of the view.
Result<ClusterView> DecodeClusterView(const transport::Bytes& body);
// Also refuses an empty name or one, or a summary or spec, over its bound.
Result<TableDeclaration> DecodeTableDeclaration(const transport::Bytes& body);
Result<NodeFailure> DecodeNodeFailure(const transport::Bytes& body);
// Also refuses a target without ranges, a range with first > last, ranges not ascending and
// disjoint, or more than kMaxMigrateRanges in all.
Result<MigrateOrder> DecodeMigrateOrder(const transport::Bytes& body);
Result<MigrateReport> DecodeMigrateReport(const transport::Bytes& body);
// Also refuses an unknown op.
Result<AdminRequest> DecodeAdminRequest(const transport::Bytes& body);

// "server 1 (node 2)", "worker 0 (node 5)", "the scheduler (node 0)".
std::string NodeName(Role role, Rank rank, NodeId id);

// The error a control message carries (kFlagError): its status code (kInternal for kOk or a code
// out of range) and the message in frame 0, cut to 4 KiB (a peer's bytes).
Status CarriedError(const transport::Message& msg);

}  // namespace pserver::cluster
