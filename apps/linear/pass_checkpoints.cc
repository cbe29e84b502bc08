#include "apps/linear/pass_checkpoints.h"

#include <fmt/format.h>

#include <bit>
#include <vector>

namespace pserver::linear {
namespace {

// `<prefix>_progress`, key 0, rule "assign": the pass, the objective's bits, flags (bit 0:
// full pass next, bit 1: verifying), the job's rows and feature count.
constexpr uint32_t kWidth = 5;
constexpr Key kProgressKey = 0;

}  // namespace

Result<std::unique_ptr<PassCheckpoints>> PassCheckpoints::Create(Node& node, const std::string& prefix,
                                                                 const CheckpointOptions& options, uint64_t rows,
                                                                 uint64_t features, int max_passes,
                                                                 std::chrono::milliseconds timeout) {
  if (!options.dir.empty() && options.every_passes < 1) {
    return Status::InvalidArgument(fmt::format("checkpoints every {} passes: must be at least 1", options.every_passes));
  }
  std::unique_ptr<PassCheckpoints> c(new PassCheckpoints(node, options, rows, features, timeout));
  TableSpec spec{.name = prefix + "_progress", .value_type = ValueType::kInt64, .width = kWidth};
  spec.updater.name = "assign";
  Result<TableId> table = node.DeclareTable(spec, timeout);
  if (!table.ok() && options.resume) return table.status().WithContext("resuming the training");
  PSERVER_RETURN_IF_ERROR(table.status());
  c->table_ = *table;
  if (options.resume) PSERVER_RETURN_IF_ERROR(c->ReadBack());
  if (options.resume && c->resumed_.pass >= max_passes) {
    return Status::InvalidArgument(fmt::format(
        "the checkpoint is at pass {}, and training stops at pass {} (max passes): nothing to train; raise max passes "
        "to train on",
        c->resumed_.pass, max_passes));
  }
  return c;
}

Status PassCheckpoints::ReadBack() {
  SharedArray<int64_t> row;
  PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Pull(table_, std::vector<Key>{kProgressKey}, &row));
  PSERVER_RETURN_IF_ERROR(kv_.Wait(ts, timeout_));
  if (row.size() != kWidth) return Status::Internal(fmt::format("the progress row has {} values, not {}", row.size(), kWidth));
  if (row[0] == 0) return Status::Ok();  // a checkpoint from before the first recorded pass: weights only
  const auto rows = static_cast<uint64_t>(row[3]), features = static_cast<uint64_t>(row[4]);
  if (row[0] < 0 || row[2] < 0 || row[2] > 3) {
    return Status::Corruption(fmt::format("the checkpoint's training progress is not one this build writes: pass {}, flags {}",
                                          row[0], row[2]));
  }
  if (rows != rows_ || features != features_) {
    return Status::InvalidArgument(fmt::format(
        "the checkpoint was trained on {} rows of {} features, but the data now has {} rows of {} features: resume "
        "with the data it was trained on",
        rows, features, rows_, features_));
  }
  resumed_.pass = static_cast<int>(row[0]);
  resumed_.objective = std::bit_cast<double>(row[1]);
  resumed_.full_pass_next = row[2] & 1;
  resumed_.verifying = row[2] & 2;
  return Status::Ok();
}

Status PassCheckpoints::AfterPass(const TrainingProgress& progress, bool last, bool lead) {
  if (!Due(progress.pass, last)) return Status::Ok();
  if (lead) {
    const auto started = std::chrono::steady_clock::now();
    const std::vector<int64_t> row = {progress.pass, std::bit_cast<int64_t>(progress.objective),
                                      (progress.full_pass_next ? 1 : 0) | (progress.verifying ? 2 : 0),
                                      static_cast<int64_t>(rows_), static_cast<int64_t>(features_)};
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv_.Push(table_, std::vector<Key>{kProgressKey}, std::vector<int64_t>(row)));
    PSERVER_RETURN_IF_ERROR(kv_.Wait(ts, timeout_));
    Result<std::string> summary = node_.Checkpoint(options_.dir, timeout_);
    if (!summary.ok()) return summary.status().WithContext(fmt::format("checkpoint after pass {}", progress.pass));
    if (options_.on_checkpoint) {
      options_.on_checkpoint(progress.pass, *summary,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
  }
  // The others push nothing until the checkpoint is complete: one barrier, which the lead
  // enters once it is.
  return node_.Barrier(BarrierGroup::kWorkers, timeout_);
}

}  // namespace pserver::linear
