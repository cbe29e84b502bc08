// The built-in check workload of `pserver worker` (and of `pserver chaos`): every worker pushes
// known values to the same random sparse keys each round, and after a barrier pulls them back and
// checks the exact sum, printing progress. A wrong sum (an update lost or applied twice) or a
// failed request ends it with an error. In slot mode (below) workers may die and be started
// again: each checks its own values, and a successor checks what its predecessor left.
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

  // Slot mode (`pserver chaos` killing workers), when `slots` > 0: the table holds `slots` values
  // per key, one per slot (a worker's launch index, `slot`; a worker started again in a dead
  // one's place gets its slot). Each worker adds 1 to its own slot's value of the round's keys,
  // `pushes` times a round, and checks only that value, so it needs no barrier and no other
  // worker: rounds are its own, and it stops after the round in which it finds `stop_file`. It
  // notes in `state_dir` who it is and what it pushed (slot-S.nodes: "node ID", first thing;
  // slot-S.base: its node id, first round and the values it started from, before its first
  // push; slot-S.rounds: "round NODE R" before pushing round R), so that its successor in the
  // slot takes the work of every earlier worker of the slot over (Node::TakeOver, asked again
  // until the scheduler declared them dead), pulls the slot's values, checks each lies between
  // what was acknowledged and what was sent (nothing acknowledged lost, nothing applied twice; a
  // round in flight at the death may be applied in part), and carries on from them.
  uint32_t slots = 0;
  int64_t slot = -1;  // REQUIRES in slot mode: 0 <= slot < slots
  std::string state_dir;
};

// REQUIRES: `node` is a worker. Finalizes the node at the end.
Status RunDemoWorker(Node& node, const DemoOptions& options);

}  // namespace pserver::tools
