// The built-in check workload of `pserver worker`: every worker pushes known values to the
// same random sparse keys each round, and after a barrier pulls them back and checks the exact
// sum, printing progress. A wrong sum or a failed request ends it with an error.
#pragma once

#include <cstdint>
#include <string>

#include "pserver/node.h"

namespace pserver::tools {

struct DemoOptions {
  uint32_t keys = 100000;  // keys per round
  uint32_t width = 1;      // values per key
  uint32_t rounds = 10;
  uint64_t seed = 1;
  // When not empty: the workers stop after the round in which worker 0 found this file (it
  // tells the others through a one-key table, so that every worker does the same rounds).
  std::string stop_file;
};

// REQUIRES: `node` is a worker. Finalizes the node at the end.
Status RunDemoWorker(Node& node, const DemoOptions& options);

}  // namespace pserver::tools
