#include "transport/inproc/inproc_transport.h"

#include <fmt/format.h>

namespace pserver::transport::inproc {

Status Mailbox::Put(Letter letter, std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  if (!cv_.WaitFor(&mu_, timeout,
                   [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || queue_.size() < capacity_; })) {
    return Status::Unavailable(timeout.count() == 0 ? std::string("receiver's queue is full")
                                                    : fmt::format("receiver's queue stayed full for {} ms", timeout.count()));
  }
  if (closed_) return Status::Unavailable("receiver has shut down");
  queue_.push_back(std::move(letter));
  cv_.SignalAll();
  return Status::Ok();
}

Result<Mailbox::Letter> Mailbox::Take(std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  if (!cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || !queue_.empty(); })) {
    return Status::DeadlineExceeded(fmt::format("no message within {} ms", timeout.count()));
  }
  if (closed_) return Status::Aborted("transport shut down");
  Letter letter = std::move(queue_.front());
  queue_.pop_front();
  cv_.SignalAll();
  return letter;
}

void Mailbox::Close() {
  MutexLock lock(&mu_);
  closed_ = true;
  queue_.clear();
  cv_.SignalAll();
}

Result<std::shared_ptr<Mailbox>> InprocHub::Bind(const std::string& address, size_t capacity,
                                                 std::string* actual) {
  if (address.rfind("inproc://", 0) != 0) {
    return Status::InvalidArgument(fmt::format("'{}' is not an inproc:// address", address));
  }
  MutexLock lock(&mu_);
  std::string name = address;
  if (address == "inproc://0") name = fmt::format("inproc://node-{}", next_name_++);
  if (mailboxes_.contains(name)) return Status::Unavailable(fmt::format("{} is already bound", name));
  auto box = std::make_shared<Mailbox>(capacity);
  mailboxes_.emplace(name, box);
  *actual = name;
  return box;
}

std::shared_ptr<Mailbox> InprocHub::Find(const std::string& address) {
  MutexLock lock(&mu_);
  auto it = mailboxes_.find(address);
  return it == mailboxes_.end() ? nullptr : it->second;
}

void InprocHub::Unbind(const std::string& address) {
  MutexLock lock(&mu_);
  mailboxes_.erase(address);
}

InprocTransport::~InprocTransport() {
  if (inbox_) {
    inbox_->Close();
    hub_->Unbind(address_);
  }
}

Result<std::string> InprocTransport::DoListen(const std::string& address) {
  if (inbox_) return Status::InvalidArgument("already listening at " + address_);
  PSERVER_ASSIGN_OR_RETURN(inbox_, hub_->Bind(address, options_.queue_capacity, &address_));
  return address_;
}

Status InprocTransport::DoConnect(NodeId peer, const std::string& address, const ConnectionId& present_as) {
  if (address.rfind("inproc://", 0) != 0) {
    return Status::InvalidArgument(fmt::format("'{}' is not an inproc:// address", address));
  }
  MutexLock lock(&peers_mu_);
  peers_[peer] = Peer{address, present_as};
  return Status::Ok();
}

void InprocTransport::DoDisconnect(NodeId peer) {
  MutexLock lock(&peers_mu_);
  peers_.erase(peer);
}

Status InprocTransport::DoSend(NodeId receiver, const WireMessage& wire, bool may_block) {
  Peer peer;
  {
    MutexLock lock(&peers_mu_);
    auto it = peers_.find(receiver);
    if (it == peers_.end()) return Status::NotFound("the peer is not connected");
    peer = it->second;
  }
  std::shared_ptr<Mailbox> box = hub_->Find(peer.address);
  if (!box) return Status::Unavailable(fmt::format("nobody listens at {}", peer.address));
  // SendNoWait: a full queue refuses at once (a zero wait) instead of waiting for room.
  return box->Put(Mailbox::Letter{EncodeWire(wire), peer.identity},
                  may_block ? options_.send_timeout : std::chrono::milliseconds(0));
}

Result<Transport::RawFrames> InprocTransport::DoReceive(std::chrono::milliseconds timeout) {
  if (!inbox_) return Status::InvalidArgument("Receive before Listen");
  PSERVER_ASSIGN_OR_RETURN(Mailbox::Letter letter, inbox_->Take(timeout));
  return RawFrames{std::move(letter.frames), letter.origin};
}

void InprocTransport::DoShutdown() {
  if (inbox_) inbox_->Close();
}

}  // namespace pserver::transport::inproc
