// The scheduler's part in checkpoints (docs/durability.md, section 2): it numbers them, orders
// every live server to write its file into the new directory, and writes the manifest -- which
// makes the checkpoint complete -- once all of them did. A checkpoint never overlaps a
// membership change, so every row is in exactly one server's file.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "base/logging.h"
#include "cluster/scheduler.h"
#include "pserver/atomic_file.h"

namespace pserver::cluster {

using transport::Message;
using transport::MessageType;
using Clock = std::chrono::steady_clock;

void Scheduler::QueueCheckpoint(std::string dir, std::function<void(const Status&, const std::string&)> answer) {
  checkpoint_requests_.push_back(CheckpointRequest{std::move(dir), std::move(answer)});
  StartNextCheckpoint();
}

void Scheduler::StartNextCheckpoint() {
  while (!checkpoint_ && !migration_ && !checkpoint_requests_.empty() && !ended_ && formed_) {
    CheckpointRequest req = std::move(checkpoint_requests_.front());
    checkpoint_requests_.pop_front();
    auto refuse = [&req](const Status& why) {
      PSERVER_LOG_WARN("scheduler: no checkpoint: {}", why.ToString());
      req.answer(why, "");
    };
    if (Status writable = CheckWritableDirectory(req.dir); !writable.ok()) {
      refuse(writable.WithContext("the checkpoint directory"));
      continue;
    }
    Result<std::vector<uint64_t>> numbers = ListCheckpoints(req.dir);
    if (!numbers.ok()) {
      refuse(numbers.status());
      continue;
    }
    // Never a number used before, also when a failed checkpoint's directory is gone (a late
    // writer of that one must not land in a new one).
    RunningCheckpoint c;
    uint64_t& last = last_checkpoint_[req.dir];
    last = std::max(last, numbers->empty() ? uint64_t{0} : numbers->back()) + 1;
    c.directory = CheckpointDirectory(req.dir, last);
    std::error_code ec;
    if (!std::filesystem::create_directory(c.directory, ec)) {
      refuse(Status::Unavailable(fmt::format("cannot create {}: {}", c.directory, ec ? ec.message() : "it exists")));
      continue;
    }
    c.request = std::move(req);
    c.id = next_status_++;
    c.started = Clock::now();
    c.manifest.epoch = view_.epoch.value;
    Status sent;
    for (const Member& m : members_) {
      if (m.info.role != Role::kServer || m.dead || m.left) continue;
      const std::string name = fmt::format("server-{}.psckpt", m.info.rank.value);
      Message order;
      order.header.type = MessageType::kAdmin;
      order.header.receiver = m.info.id;
      order.header.request_id = c.id;
      order.frames.push_back(
          Encode(AdminRequest{AdminOp::kCheckpoint, NodeId(), "", (std::filesystem::path(c.directory) / name).string()}));
      sent = transport_->Send(std::move(order));
      if (!sent.ok()) {
        sent = sent.WithContext(fmt::format("ordering {} to write its checkpoint file", Describe(m.info.id)));
        break;
      }
      c.files[m.info.id] = name;
      c.awaiting.insert(m.info.id);
    }
    PSERVER_LOG_INFO("scheduler: checkpoint {} of the view of epoch {}: {} servers write their files",
                     c.directory, c.manifest.epoch, c.files.size());
    checkpoint_ = std::move(c);
    if (!sent.ok()) return FinishCheckpoint(sent);
    CheckCheckpoints();
  }
}

void Scheduler::HandleCheckpointReply(const Message& msg) {
  if (!checkpoint_ || !checkpoint_->awaiting.contains(msg.header.sender)) return;
  if (msg.header.is_error()) return FinishCheckpoint(CarriedError(msg));
  Result<CheckpointWritten> written = msg.frames.size() == 1 ? DecodeCheckpointWritten(msg.frames[0])
                                                              : Status::Corruption("checkpoint answer without a body");
  if (!written.ok()) {
    return FinishCheckpoint(written.status().WithContext(fmt::format("the answer of {}", Describe(msg.header.sender))));
  }
  checkpoint_->awaiting.erase(msg.header.sender);
  checkpoint_->manifest.files.push_back(
      CheckpointManifest::File{checkpoint_->files[msg.header.sender], written->bytes, written->rows, written->checksum});
  CheckCheckpoints();
}

void Scheduler::CheckCheckpoints() {
  const auto now = Clock::now();
  if (!options_.checkpoint_dir.empty() && options_.checkpoint_interval.count() > 0 && formed_ && !ended_) {
    if (next_periodic_checkpoint_ == Clock::time_point{}) {
      next_periodic_checkpoint_ = now + options_.checkpoint_interval;
    } else if (now >= next_periodic_checkpoint_) {
      next_periodic_checkpoint_ = now + options_.checkpoint_interval;
      if (checkpoint_requests_.empty()) {  // one waiting is enough
        QueueCheckpoint(options_.checkpoint_dir, [](const Status&, const std::string&) {});  // logged either way
      }
    }
  }
  StartNextCheckpoint();
  if (!checkpoint_) return;
  for (NodeId id : checkpoint_->awaiting) {
    const Member* m = FindMember(id);
    if (m == nullptr || m->dead || m->left) {
      return FinishCheckpoint(Status::Unavailable(fmt::format("{} left before it wrote its checkpoint file", Describe(id))));
    }
  }
  if (now - checkpoint_->started > kCheckpointLimit) {
    return FinishCheckpoint(Status::DeadlineExceeded(fmt::format(
        "{} server(s) did not write their checkpoint files within {} min", checkpoint_->awaiting.size(),
        kCheckpointLimit.count())));
  }
  if (!checkpoint_->awaiting.empty()) return;
  // Every file is written: the manifest, written last, makes the checkpoint complete -- once the
  // files are where the scheduler looks (a directory that is not shared would make a checkpoint
  // nobody can resume from).
  std::sort(checkpoint_->manifest.files.begin(), checkpoint_->manifest.files.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const CheckpointManifest::File& f : checkpoint_->manifest.files) {
    const std::filesystem::path file = std::filesystem::path(checkpoint_->directory) / f.name;
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(file, ec);
    if (ec || size != f.bytes) {
      return FinishCheckpoint(Status::Unavailable(fmt::format(
          "the scheduler finds {} {} (its server wrote {} bytes): is the directory shared by every node?",
          file.string(), ec ? "missing: " + ec.message() : fmt::format("with {} bytes", size), f.bytes)));
    }
  }
  const std::string path = (std::filesystem::path(checkpoint_->directory) / kManifestName).string();
  FinishCheckpoint(WriteFileAtomically(path, EncodeManifest(checkpoint_->manifest)));
}

void Scheduler::FinishCheckpoint(const Status& outcome) {
  RunningCheckpoint c = std::move(*checkpoint_);
  checkpoint_.reset();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - c.started).count();
  if (!outcome.ok()) {
    // Without a manifest the directory is never used; its files only take room.
    std::error_code ec;
    std::filesystem::remove_all(c.directory, ec);
    const Status why = outcome.WithContext(fmt::format("checkpoint {} failed", c.directory));
    PSERVER_LOG_WARN("scheduler: {}", why.ToString());
    c.request.answer(why, "");
  } else {
    uint64_t rows = 0, bytes = 0;
    for (const auto& f : c.manifest.files) {
      rows += f.rows;
      bytes += f.bytes;
    }
    const std::string summary = fmt::format("checkpoint {} complete: {} files, {} rows, {} bytes, in {:.1f} ms",
                                            c.directory, c.manifest.files.size(), rows, bytes, ms);
    PSERVER_LOG_INFO("scheduler: {}", summary);
    c.request.answer(Status::Ok(), summary);
  }
  StartNextChange();
  StartNextCheckpoint();
}

Result<std::string> Scheduler::Checkpoint(const std::string& dir, std::chrono::milliseconds timeout) {
  auto written = std::make_shared<std::promise<Result<std::string>>>();
  std::future<Result<std::string>> result = written->get_future();
  Result<bool> queued = OnRunThread<bool>(
      [this, dir, written](std::promise<Result<bool>>& done) {
        if (ended_ || !formed_) {
          done.set_value(Status::Aborted(ended_ ? "the job has ended" : "the cluster has not formed yet"));
          return;
        }
        QueueCheckpoint(dir, [written](const Status& outcome, const std::string& summary) {
          written->set_value(outcome.ok() ? Result<std::string>(summary) : Result<std::string>(outcome));
        });
        done.set_value(true);
      },
      timeout, "queueing a checkpoint");
  PSERVER_RETURN_IF_ERROR(queued.status());
  if (result.wait_for(timeout) != std::future_status::ready) {
    return Status::DeadlineExceeded(fmt::format("the checkpoint into {} did not complete within {} ms", dir, timeout.count()));
  }
  return result.get();
}

}  // namespace pserver::cluster
