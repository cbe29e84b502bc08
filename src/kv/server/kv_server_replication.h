// The state of KVServerCore's replication (kv_server_replication.cc, which describes it),
// internal to the server core's files.
#pragma once

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

struct KVServerCore::Replication {
  // The view the state below follows.
  std::shared_ptr<const cluster::Routing> routing;

  // Owner: the open round, per replica and table.
  struct Outgoing {
    std::vector<Key> keys;  // changed since the last round (may repeat)
    bool sorted = true;     // keys ascending and unique (one push's keys, or pushes in key order)
    std::vector<ReplicatedPush> pushes;  // the pushes whose effects they hold
  };
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
  std::string name;  // this server's, for that log line
  std::deque<std::pair<int64_t, transport::Message>> held;  // replies, with the round they wait for
  Status failure;  // a replica refused rows: the replies held fail with it

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
  void Remember(const ReplicatedPush& p);
};

}  // namespace pserver::kv
