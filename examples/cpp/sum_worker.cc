// sum_worker: the smallest whole pserver worker. Run it under `pserver launch`:
//
//   pserver launch --servers 2 --workers 3 -- ./sum_worker [num_keys]
//
// Every worker pushes (rank + 1) * key to the same keys of a float64 table. After a barrier each
// pulls them back and checks the sum the servers must hold, key * W(W+1)/2 for W workers, which
// is exact in float64. A wrong sum ends the whole job with an error naming the key (so `pserver
// launch` fails), never exit status 0.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pserver/pserver.h"

using namespace pserver;

namespace {

// Prints what failed and exits 1; the launcher then stops the cluster.
[[noreturn]] void Fail(const std::string& what, const Status& status) {
  std::fprintf(stderr, "sum_worker: %s: %s\n", what.c_str(), status.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const long num_keys = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 100000;
  if (num_keys <= 0) {
    std::fprintf(stderr, "sum_worker: num_keys must be a positive number, not '%s'\n", argv[1]);
    return 2;
  }

  Result<NodeOptions> options = NodeOptionsFromEnvironment();  // set by `pserver launch`
  if (!options.ok()) Fail("reading the launcher's environment", options.status());
  Result<std::unique_ptr<Node>> started = Node::Start(*options);
  if (!started.ok()) Fail("joining the cluster", started.status());
  Node& node = **started;

  TableSpec spec{.name = "sums", .value_type = ValueType::kFloat64, .width = 1};
  Result<TableId> table = node.DeclareTable(spec);
  if (!table.ok()) Fail("declaring table 'sums'", table.status());

  // Keys spread over the key space (sorted and unique, as every request's keys must be).
  std::vector<Key> key_list(static_cast<size_t>(num_keys));
  std::vector<double> mine(key_list.size());
  const double factor = static_cast<double>(node.rank().value) + 1;
  for (size_t i = 0; i < key_list.size(); ++i) {
    key_list[i] = i * 7919;
    mine[i] = factor * static_cast<double>(key_list[i]);
  }
  SharedArray<Key> keys(std::move(key_list));

  KVWorker<double> kv(node);
  Result<Timestamp> ts = kv.Push(*table, keys, SharedArray<double>(std::move(mine)));
  if (!ts.ok()) Fail("pushing", ts.status());
  if (Status s = kv.Wait(*ts); !s.ok()) Fail("waiting for the push", s);
  if (Status s = node.Barrier(BarrierGroup::kWorkers); !s.ok()) Fail("barrier after the pushes", s);

  SharedArray<double> sums;
  ts = kv.Pull(*table, keys, &sums);
  if (!ts.ok()) Fail("pulling", ts.status());
  if (Status s = kv.Wait(*ts); !s.ok()) Fail("waiting for the pull", s);

  const double workers = node.num_workers();
  for (size_t i = 0; i < keys.size(); ++i) {
    const double want = static_cast<double>(keys[i]) * workers * (workers + 1) / 2;
    if (sums[i] != want) {
      // Ends the job for every node: the launcher exits non-zero, naming this worker.
      (void)node.FinalizeWithError(Status::Internal("key " + std::to_string(keys[i]) + " holds " +
                                              std::to_string(sums[i]) + ", not " + std::to_string(want)));
      return 1;
    }
  }
  std::printf("worker %u: %zu sums of %u workers' pushes are exact\n", node.rank().value, keys.size(),
              node.num_workers());
  if (Status s = node.Finalize(); !s.ok()) Fail("finishing", s);
  return 0;
}
