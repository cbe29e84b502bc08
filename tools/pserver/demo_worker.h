// The built-in check workload of `pserver worker` (and of `pserver chaos`): every worker pushes
// known values to the same random sparse keys each round, and after a barrier pulls them back and
// checks the exact sum, printing progress. A wrong sum (an update lost or applied twice) or a
// failed request ends it with an error.
#pragma once

#include <cstdint>
#include <string>

#include "pserver/node.h"

namespace pserver::tools {

struct DemoOptions {
  uint32_t keys = 100000;  // keys per round
  uint32_t width = 1;      // values per key
  uint32_t rounds = 10;
  // Pushes of the round's keys each worker has in flight at once per round (all different
  // requests, each applied once).
  uint32_t pushes = 1;
  uint64_t seed = 1;
  // Print, instead of the progress line of each round, "progress RANK ROUND START_NS END_NS":
  // when the round's first push was sent and its check done, in nanoseconds of the monotonic
  // clock (the same for every process of the machine). `pserver chaos` reads these.
  bool progress_times = false;
  // When not empty: the workers stop after the round in which worker 0 found this file (it
  // tells the others through a one-key table, so that every worker does the same rounds).
  std::string stop_file;
};

// REQUIRES: `node` is a worker. Finalizes the node at the end.
Status RunDemoWorker(Node& node, const DemoOptions& options);

}  // namespace pserver::tools
