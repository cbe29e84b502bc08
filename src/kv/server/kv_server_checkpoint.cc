// KVServerCore's part in checkpoints (docs/durability.md, section 2): writing this server's
// checkpoint file when the scheduler orders it, and filling tables from a checkpoint when the
// server resumes a job.
#include <fmt/format.h>

#include <filesystem>

#include "base/logging.h"
#include "cluster/checkpoint_manifest.h"
#include "kv/server/checkpoint_file.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"

namespace pserver::kv {

void KVServerCore::OnCheckpoint(const std::string& path,
                                std::function<void(Result<cluster::CheckpointWritten>)> done) {
  // One snapshot of every table, between two requests: the file is this server's state at one
  // moment (the writing then goes on while the server serves).
  std::vector<CheckpointTable> tables;
  {
    MutexLock lock(&apply_mu_);
    tables.reserve(tables_.size());
    for (const auto& [id, unused] : tables_) {
      Result<TableStore*> store = FindStore(id);
      if (store.ok()) tables.push_back({(*store)->spec(), (*store)->ListRows()});
    }
  }
  std::sort(tables.begin(), tables.end(),
            [](const CheckpointTable& a, const CheckpointTable& b) { return a.spec.name < b.spec.name; });
  MutexLock lock(&checkpoint_mu_);
  if (checkpoint_writer_.joinable()) checkpoint_writer_.join();  // the order before this one
  const std::string who = runtime_->DescribeNode(runtime_->id());
  checkpoint_writer_ = std::jthread([path, who, tables = std::move(tables), done = std::move(done)] {
    const auto started = std::chrono::steady_clock::now();
    Result<std::unique_ptr<AtomicFileWriter>> out = AtomicFileWriter::Open(path);
    Result<CheckpointFileInfo> info = out.ok() ? WriteCheckpointFile(**out, tables) : out.status();
    if (!info.ok()) {
      PSERVER_LOG_WARN("{}: checkpoint {} not written: {}", who, path, info.status().ToString());
      return done(info.status());
    }
    PSERVER_LOG_INFO("{}: wrote checkpoint {}: {} tables, {} rows, {} bytes in {:.1f} ms", who, path, tables.size(),
                     info->rows, info->bytes,
                     std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    done(cluster::CheckpointWritten{info->bytes, info->rows, info->checksum});
  });
}

Status KVServerCore::ResumeRows(TableStore* store, const cluster::Routing& routing) {
  const TableSpec& spec = store->spec();
  if (!resume_point_) {
    resume_point_ = cluster::LatestCheckpoint(options_.resume_from);
    if (resume_point_->ok()) {
      PSERVER_LOG_INFO("{}: resumes from checkpoint {} (epoch {}, {} files)", runtime_->DescribeNode(runtime_->id()),
                       (*resume_point_)->directory, (*resume_point_)->manifest.epoch,
                       (*resume_point_)->manifest.files.size());
    }
  }
  if (!resume_point_->ok()) return resume_point_->status().WithContext("resuming");
  const cluster::FoundCheckpoint& found = **resume_point_;
  const KeyPredicate mine = RoutingRangePredicate(spec, routing.ring().RangesOf(runtime_->rank().value));
  uint64_t rows = 0;
  bool seen = false;
  for (const cluster::CheckpointManifest::File& f : found.manifest.files) {
    const std::string path = (std::filesystem::path(found.directory) / f.name).string();
    CheckpointFileInfo info;
    PSERVER_ASSIGN_OR_RETURN(std::vector<CheckpointTable> tables, ReadCheckpointFile(path, &info));
    if (info.bytes != f.bytes || info.checksum != f.checksum || info.rows != f.rows) {
      return Status::Corruption(fmt::format("checkpoint {}: holds {} bytes, {} rows, checksum {:016x}, but its "
                                            "manifest lists {} bytes, {} rows, checksum {:016x}",
                                            path, info.bytes, info.rows, info.checksum, f.bytes, f.rows, f.checksum));
    }
    for (const CheckpointTable& t : tables) {
      if (t.spec.name != spec.name) continue;
      if (!(t.spec == spec)) {
        return Status::InvalidArgument(fmt::format(
            "checkpoint {} holds table '{}' with another spec than the one declared now ({} there); a job resumes "
            "with the specs it was checkpointed with",
            path, t.spec.name, t.spec.updater.name));
      }
      seen = true;
      // The rows this server owns now (a checkpoint of N servers resumes on any number).
      std::vector<size_t> keep;
      for (size_t i = 0; i < t.rows.size(); ++i) {
        if (mine(t.rows.keys[i])) keep.push_back(i);
      }
      if (keep.empty()) continue;
      const RowBatch rows_kept = keep.size() == t.rows.size() ? t.rows : SelectRows(t.rows, keep);
      PSERVER_RETURN_IF_ERROR(InsertRowsLocked(store, rows_kept)
                                  .WithContext(fmt::format("checkpoint {}: table '{}'", path, t.spec.name)));
      rows += keep.size();
    }
  }
  PSERVER_LOG_INFO("{}: table '{}': {} rows from checkpoint {}{}", runtime_->DescribeNode(runtime_->id()),
                   spec.name, rows, found.directory, seen ? "" : " (which does not hold this table)");
  return Status::Ok();
}

}  // namespace pserver::kv
