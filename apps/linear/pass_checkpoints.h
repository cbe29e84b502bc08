// Checkpoints of a linear-model job at the end of its passes, and training resumed from one
// (docs/durability.md, section 2).
//
// Taking them. With a checkpoint directory, every `every_passes` passes (and after pass
// max_passes, when training stops there rather than by converging) the lead -- the lowest-ranked live worker -- records
// the solver's progress in the table `<prefix>_progress` and asks the scheduler for a checkpoint
// of the job (Node::Checkpoint) while the other workers wait for it in a barrier. No worker
// pushes in between, so the checkpoint is a consistent cut of the job: the weights, the update
// rule's state and the progress, all of one pass's end. JobStats' tables are scratch tables
// (TableSpec::checkpointed false): not in it, started empty by a resumed job.
//
// Resuming. A job whose servers were started on a checkpoint directory (`pserver server
// --resume DIR`) gets every checkpointed table back as it was. With `resume`, Create reads the
// progress back; the solver then goes on from the pass after it, with the weights it pulls, and
// counts passes from there (max_passes stays the total). The data must be the data the
// checkpoint was trained on (its rows and feature count are recorded and compared); the number
// of workers and servers may differ. A checkpoint made from outside the job (`pserver
// checkpoint`) while the workers push holds each server's rows of its own moment and the progress
// of the last pass recorded, if any: training resumes from those weights, which the solver takes
// like any other starting point: the servers reset the update rule's iteration marks when they
// load a checkpoint (Updater::OnResume), so the resumed job's clocks, which start at 0 again,
// never add into a step of the checkpointed job.
//
// Every worker must be given the same CheckpointOptions (as the solvers' other options): the
// workers meet in the checkpoint's barrier only when they agree that one is due.
//
// Thread-compatible: use from the worker's training thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "pserver/kv_worker.h"
#include "pserver/node.h"
#include "pserver/result.h"

namespace pserver::linear {

struct CheckpointOptions {
  std::string dir;        // where checkpoints go (every server and the scheduler reach it); empty: none
  int every_passes = 10;  // a checkpoint after every this many passes
  bool resume = false;    // the servers resumed the job from a checkpoint: read the progress back
  // Called on the lead after each checkpoint with the scheduler's summary (naming its directory)
  // and the seconds training waited for it.
  std::function<void(int pass, const std::string& summary, double seconds)> on_checkpoint;
};

// Where training stands at the end of a pass.
struct TrainingProgress {
  int pass = 0;  // passes done; 0: none recorded
  double objective = std::numeric_limits<double>::infinity();  // of pass `pass`
  bool full_pass_next = false;  // dbpg: the next pass computes every feature (no KKT filter)
  bool verifying = false;       // dbpg: and it confirms convergence
};

class PassCheckpoints {
 public:
  // Collective (every worker calls it, after JobStats::Create). Declares `<prefix>_progress`.
  // With options.resume: reads the recorded progress; kInvalidArgument when the checkpoint
  // was trained on other data (`rows`, `features`: the job's, from JobStats) and
  // when it is at pass `max_passes` or later (nothing to train), and the servers' error when
  // the checkpoint lacks the table (not a checkpoint of this kind of job).
  static Result<std::unique_ptr<PassCheckpoints>> Create(Node& node, const std::string& prefix,
                                                         const CheckpointOptions& options, uint64_t rows,
                                                         uint64_t features, int max_passes,
                                                         std::chrono::milliseconds timeout);

  // The progress the job resumed from (pass 0 when it starts afresh).
  const TrainingProgress& resumed() const { return resumed_; }

  // Collective, at the end of every pass that training goes on after (or pass max_passes,
  // `last`): when
  // a checkpoint is due, the lead (`lead`) records `progress` and checkpoints the job while the
  // others wait. An error of the checkpoint (a full disk) ends training: a job asked to be
  // recoverable that no longer is must say so rather than run on.
  Status AfterPass(const TrainingProgress& progress, bool last, bool lead);

  // AfterPass checkpoints after pass `pass` (pass max_passes: `last`): a solver with state of
  // its own to put in tables first knows when.
  bool Due(int pass, bool last) const {
    return !options_.dir.empty() && (pass % options_.every_passes == 0 || last);
  }

 private:
  PassCheckpoints(Node& node, const CheckpointOptions& options, uint64_t rows, uint64_t features,
                  std::chrono::milliseconds timeout)
      : node_(node), kv_(node), options_(options), rows_(rows), features_(features), timeout_(timeout) {}

  Status ReadBack();

  Node& node_;
  KVWorker<int64_t> kv_;
  const CheckpointOptions options_;
  const uint64_t rows_, features_;
  const std::chrono::milliseconds timeout_;
  TableId table_;
  TrainingProgress resumed_;
};

}  // namespace pserver::linear
