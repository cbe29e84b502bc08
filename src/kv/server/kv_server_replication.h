// The state of KVServerCore's replication (kv_server_replication.cc, which describes it),
// internal to the server core's files.
#pragma once

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "cluster/partition_placement.h"
#include "cluster/routing.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"
#include "transport/message.h"

namespace pserver::kv {

// A push as replicas remember it: the server its worker first sent it to (its origin: the
// owner then, which may have died since), the worker and the request's timestamp.
struct ReplicatedPush {
  NodeId origin;
  NodeId worker;
  int64_t ts = 0;
  friend bool operator==(const ReplicatedPush&, const ReplicatedPush&) = default;
};

// A push as a kReplicate carries it: who pushed (ReplicatedPush), the worker's iteration clock
// (UpdateContext::clock), the epoch of the view under which its owner applied it, and how many
// of the message's push keys are its own (0: a record only, of a push whose effects the replica
// holds already or gets in rows).
struct PushRecord {
  ReplicatedPush push;
  uint64_t clock = 0;
  uint64_t epoch = 0;
  uint32_t keys = 0;
  bool dropped = false;  // replica: its keys (or the rows standing for it) were left out, in part
};

// What an owner sends one replica of one table in a round: rows first (moved in here since the
// round opened, as InsertRows takes them), then pushes in the order they were applied here, their
// keys, values and lengths one after the other. The replica stores the rows, then applies the
// pushes in that order.
struct OutgoingRound {
  RowBatch rows;
  uint64_t rows_epoch = 0;  // of the view under which the rows were listed
  std::vector<PushRecord> records;
  // The records' keys, values and lengths (variable length only), as runs of the requests'
  // own buffers (shared, not copied: the message copies them once, or sends a lone run as it is).
  struct Run {
    SharedArray<Key> keys;
    transport::Bytes values;
    SharedArray<int32_t> lens;
  };
  std::vector<Run> runs;
  size_t num_keys = 0;
  size_t value_bytes = 0;
  bool empty() const { return rows.size() == 0 && records.empty(); }
};

struct KVServerCore::Replication {
  // The view the state below follows.
  std::shared_ptr<const cluster::Routing> routing;

  // Owner: the open round, per replica and table.
  using Outgoing = OutgoingRound;
  absl::flat_hash_map<NodeId, absl::flat_hash_map<TableId, Outgoing>> open;
  int64_t round = 1;                  // the open round's number
  std::map<int64_t, size_t> unstored;  // round -> its messages not yet stored
  struct Sent {
    int64_t round = 0;
    NodeId to;
  };
  absl::flat_hash_map<int64_t, Sent> sent;  // by request id
  int64_t next_request = 1;
  // What replication costs, logged when the server ends: the bytes of the workers' pushes this
  // server applied as owner, and of the kReplicate messages it sent (rows and push lists).
  uint64_t push_bytes = 0;
  uint64_t replicated_bytes = 0;
  uint64_t replicate_messages = 0;
  uint64_t aggregated_messages = 0;  // of them, rounds of many pushes sent as rows (smaller)
  std::string name;  // this server's, for that log line
  std::deque<std::pair<int64_t, transport::Message>> held;  // replies, with the round they wait for
  Status failure;  // a replica refused what was sent to it: the replies held fail with it

  // One message of `round` was answered (or given up).
  void Answered(int64_t round);
  // The rounds up to this one were stored by every replica.
  int64_t Stored() const { return unstored.empty() ? round - 1 : unstored.begin()->first - 1; }
  // The round holding everything applied so far.
  int64_t Needed() const { return open.empty() ? round - 1 : round; }

  // Synced: the resync of `epoch` went out in round `resync_round`; reported once stored.
  Epoch epoch;
  int64_t resync_round = 0;
  bool reported = false;

  // Replica: the pushes held per origin and worker (ReplicatedPush). A resync hands a replica
  // all of them: the rows it sends hold their effects.
  struct Held {
    absl::flat_hash_set<int64_t> ids;
    std::deque<int64_t> order;
    int64_t forgotten = 0;  // the newest timestamp forgotten (0: none)
  };
  absl::flat_hash_map<NodeId, absl::flat_hash_map<NodeId, Held>> pushes;
  // Origins whose pushes this server can tell apart: owners whose chains held it, and origins it
  // was told of.
  absl::flat_hash_set<NodeId> replica_of;
  // Per partition of the routing-key space, the epoch from which this server's rows of it come:
  // that of a view that gave the partition's chain a new owner or took this server into it or
  // out of it, and of rows replicated to it. What an owner sent under an earlier view and
  // arrives later is not applied: the rows of the newer view hold its effects (an old owner's
  // last round travels on another channel than the new owner's rows, and may come after them).
  std::vector<uint64_t> base;
  uint64_t newest_base = 0;
  void Raise(uint32_t partition, uint64_t epoch) {
    base[partition] = std::max(base[partition], epoch);
    newest_base = std::max(newest_base, epoch);
  }
  void Remember(const ReplicatedPush& p);
};

}  // namespace pserver::kv
