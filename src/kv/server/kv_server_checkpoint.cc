// KVServerCore's part in checkpoints (docs/durability.md, section 2): writing this server's
// checkpoint file when the scheduler orders it, and filling tables from a checkpoint when the
// server resumes a job.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "base/logging.h"
#include "cluster/checkpoint_manifest.h"
#include "kv/server/checkpoint_file.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"

namespace pserver::kv {
namespace {

template <typename T>
void ForEachRowState(const RowBatch& rows, std::byte* states, const Updater& rule) {
  const size_t spv = rows.state_per_value;
  size_t at = 0;  // values before row i
  for (size_t i = 0; i < rows.size(); ++i) {
    const size_t n = rows.width == 0 ? static_cast<size_t>(rows.lens[i]) : rows.width;
    rule.OnResume(std::span<T>(reinterpret_cast<T*>(states) + at * spv, n * spv));
    at += n;
  }
}

// `rows` with the rule's OnResume applied to every row's state (a copy: the batch may share its
// states with others).
RowBatch ForResume(const Updater& rule, RowBatch rows) {
  if (rows.state_per_value == 0 || rows.size() == 0) return rows;
  if (rows.value_type != ValueType::kFloat32 && rows.value_type != ValueType::kFloat64) return rows;
  transport::Bytes states = transport::Bytes::Uninitialized(rows.states.size());
  std::memcpy(states.data(), rows.states.data(), rows.states.size());
  if (rows.value_type == ValueType::kFloat32) {
    ForEachRowState<float>(rows, states.data(), rule);
  } else {
    ForEachRowState<double>(rows, states.data(), rule);
  }
  rows.states = std::move(states);
  return rows;
}

}  // namespace

void KVServerCore::OnCheckpoint(const std::string& path,
                                std::function<void(Result<cluster::CheckpointWritten>)> done) {
  {
    MutexLock lock(&checkpoint_mu_);
    // An earlier order still being written (it failed elsewhere, or ran out of time): this
    // one is refused at once rather than the data thread waiting for the disk.
    if (checkpoint_writing_) {
      return done(Status::Unavailable("this server is still writing the previous checkpoint file"));
    }
    if (checkpoint_writer_.joinable()) checkpoint_writer_.join();  // done: returns at once
    checkpoint_writing_ = true;
  }
  // One snapshot of every table, between two requests: the file is this server's state at one
  // moment (the writing then goes on while the server serves). Only the rows the server owns:
  // rows left over from a cancelled change are no part of the job's state.
  std::vector<CheckpointTable> tables;
  {
    MutexLock lock(&apply_mu_);
    const std::shared_ptr<const cluster::Routing> routing = runtime_->routing();
    const std::vector<KeyRange> mine = routing->ring().RangesOf(runtime_->rank().value);
    tables.reserve(tables_.size());
    for (const auto& [id, table] : tables_) {
      Result<TableStore*> store = FindStore(id);
      if (!store.ok()) continue;
      const TableSpec& spec = (*store)->spec();
      if (!spec.checkpointed) continue;  // a scratch table: no part of the job's state
      tables.push_back({spec, (*store)->ListRows(RoutingRangePredicate(spec, mine))});
    }
  }
  std::sort(tables.begin(), tables.end(),
            [](const CheckpointTable& a, const CheckpointTable& b) { return a.spec.name < b.spec.name; });
  MutexLock lock(&checkpoint_mu_);
  const std::string who = runtime_->DescribeNode(runtime_->id());
  checkpoint_writer_ = std::jthread([this, path, who, tables = std::move(tables), done = std::move(done)] {
    const auto started = std::chrono::steady_clock::now();
    Result<std::unique_ptr<AtomicFileWriter>> out = AtomicFileWriter::Open(path);
    Result<CheckpointFileInfo> info = out.ok() ? WriteCheckpointFile(**out, tables) : out.status();
    {
      MutexLock lock(&checkpoint_mu_);
      checkpoint_writing_ = false;
    }
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
  // The rows of every range whose chain holds this server: its own, and those it is a replica of.
  const std::vector<KeyRange> ranges = routing.ChainRangesOf(runtime_->rank().value);
  if (ranges.empty()) return Status::Ok();  // a joiner: its rows come from the others
  if (!resume_point_) return Status::Internal("resume_point_ is chosen when the server starts");
  if (!resume_point_->ok()) return resume_point_->status().WithContext("resuming");
  const cluster::FoundCheckpoint& found = **resume_point_;
  const KeyPredicate mine = RoutingRangePredicate(spec, ranges);
  PSERVER_ASSIGN_OR_RETURN(const std::unique_ptr<Updater> rule, options_.updaters.Create(spec.updater));
  uint64_t rows = 0;
  bool seen = false;
  std::vector<Key> kept;  // every key taken, to find one taken twice
  std::vector<std::string> names;
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
      if (names.size() < 16 && std::find(names.begin(), names.end(), t.spec.name) == names.end()) {
        names.push_back(t.spec.name);
      }
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
      const RowBatch rows_kept = ForResume(*rule, keep.size() == t.rows.size() ? t.rows : SelectRows(t.rows, keep));
      PSERVER_RETURN_IF_ERROR(InsertRowsLocked(store, rows_kept)
                                  .WithContext(fmt::format("checkpoint {}: table '{}'", path, t.spec.name)));
      kept.insert(kept.end(), rows_kept.keys.begin(), rows_kept.keys.end());
      rows += keep.size();
    }
  }
  // Each server's file holds only the rows it owned: a key in two files is a broken checkpoint
  // (which copy is right cannot be known), and the table is refused.
  std::sort(kept.begin(), kept.end());
  if (auto twice = std::adjacent_find(kept.begin(), kept.end()); twice != kept.end()) {
    return Status::Corruption(fmt::format("checkpoint {}: table '{}': key {} is in two of its files",
                                          found.directory, spec.name, *twice));
  }
  if (!seen) {
    std::string held;
    for (const std::string& n : names) held += (held.empty() ? "'" : ", '") + n + "'";
    return Status::NotFound(fmt::format("checkpoint {} holds no table '{}' (it holds {}); a resumed job declares the "
                                        "tables it was checkpointed with",
                                        found.directory, spec.name, held.empty() ? "none" : held));
  }
  PSERVER_LOG_INFO("{}: table '{}': {} rows from checkpoint {}", runtime_->DescribeNode(runtime_->id()), spec.name, rows,
                   found.directory);
  return Status::Ok();
}

}  // namespace pserver::kv
