#include "testing/intercepting_transport.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/logging.h"

namespace pserver::testing {

using transport::Bytes;
using transport::Message;

std::string FaultPolicy::Describe() const {
  return fmt::format(
      "seed={} drop={} duplicate={} delay={} (max {} sends) reorder={} (max distance {}) corrupt={}{}", seed, drop,
      duplicate, delay, max_delay_sends, reorder, max_reorder_distance, corrupt,
      applies ? " (to the messages a predicate selects)" : " (to data messages)");
}

InterceptingTransport::InterceptingTransport(std::unique_ptr<transport::Transport> inner)
    : inner_(std::move(inner)), rng_(1) {}

InterceptingTransport::~InterceptingTransport() = default;

void InterceptingTransport::SetRewriter(Rewriter rewrite) {
  MutexLock lock(&send_mu_);
  rewrite_ = std::move(rewrite);
}

void InterceptingTransport::SetObserver(Observer observe) {
  MutexLock lock(&mu_);
  observe_ = std::move(observe);
}

void InterceptingTransport::Hold(MessageMatch match, HoldMode mode) {
  MutexLock lock(&send_mu_);
  hold_ = std::move(match);
  hold_mode_ = mode;
}

Result<size_t> InterceptingTransport::Release() {
  MutexLock lock(&send_mu_);
  hold_ = nullptr;
  size_t sent = 0;
  while (!held_.empty()) {
    Held h = std::move(held_.front());
    held_.pop_front();
    {
      MutexLock state(&mu_);
      held_count_ = held_.size();
    }
    PSERVER_RETURN_IF_ERROR(SendPassing(std::move(h.msg), h.may_block));
    ++sent;
  }
  // Delayed and reordered messages wait for later sends; a release sends them too, so that none
  // is stranded.
  std::vector<Delayed> delayed = std::move(delayed_);
  delayed_.clear();
  for (Delayed& d : delayed) PSERVER_RETURN_IF_ERROR(SendPassing(std::move(d.msg), true));
  std::vector<Reordered> reordered = std::move(reordered_);
  reordered_.clear();
  for (Reordered& r : reordered) PSERVER_RETURN_IF_ERROR(SendInner(std::move(r.msg), true));
  return sent;
}

size_t InterceptingTransport::num_held() const {
  MutexLock lock(&mu_);
  return held_count_;
}

bool InterceptingTransport::WaitForHeld(size_t n, std::chrono::milliseconds timeout) const {
  MutexLock lock(&mu_);
  return cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_count_ >= n; });
}

void InterceptingTransport::Record(MessageMatch match) {
  MutexLock lock(&send_mu_);
  record_ = std::move(match);
}

std::vector<Message> InterceptingTransport::Recorded() const {
  MutexLock lock(&mu_);
  return recorded_;
}

Status InterceptingTransport::Inject(Message msg) {
  MutexLock lock(&send_mu_);
  return SendPassing(std::move(msg), true);
}

void InterceptingTransport::SetFaults(FaultPolicy policy) {
  PSERVER_LOG_INFO("InterceptingTransport: faults {}", policy.Describe());
  MutexLock lock(&send_mu_);
  rng_.seed(policy.seed);
  faults_ = std::move(policy);
  faults_on_ =
      faults_.drop > 0 || faults_.duplicate > 0 || faults_.delay > 0 || faults_.reorder > 0 || faults_.corrupt > 0;
}

FaultCounts InterceptingTransport::fault_counts() const {
  MutexLock lock(&mu_);
  return counts_;
}

size_t InterceptingTransport::Count(Direction direction, const HeaderMatch& match) const {
  MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [d, h] : log_) n += d == direction && match(h) ? 1 : 0;
  return n;
}

bool InterceptingTransport::WaitFor(Direction direction, const HeaderMatch& match, size_t n,
                                    std::chrono::milliseconds timeout) const {
  MutexLock lock(&mu_);
  size_t counted = 0;  // log_ only grows: count each entry once
  size_t seen = 0;
  return cv_.WaitFor(&mu_, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (; seen < log_.size(); ++seen) counted += log_[seen].first == direction && match(log_[seen].second) ? 1 : 0;
    return counted >= n;
  });
}

void InterceptingTransport::Log(Direction direction, const Message& msg) {
  MutexLock lock(&mu_);
  log_.emplace_back(direction, msg.header);
  if (observe_) observe_(direction, msg);
  cv_.SignalAll();
}

void InterceptingTransport::Tally(uint64_t FaultCounts::*which) {
  MutexLock lock(&mu_);
  ++(counts_.*which);
}

bool InterceptingTransport::Chance(double p) {
  if (p <= 0) return false;  // draws nothing: a policy without this fault replays as before
  return std::uniform_real_distribution<double>(0, 1)(rng_) < p;
}

Status InterceptingTransport::SendInner(Message msg, bool may_block) {
  if (record_ && record_(msg)) {
    MutexLock lock(&mu_);
    recorded_.push_back(msg);
  }
  Log(Direction::kSend, msg);
  return may_block ? inner_->Send(std::move(msg)) : inner_->SendNoWait(std::move(msg));
}

Status InterceptingTransport::SendPassing(Message msg, bool may_block) {
  const NodeId to = msg.header.receiver;
  PSERVER_RETURN_IF_ERROR(SendInner(std::move(msg), may_block));
  if (reordered_.empty()) return Status::Ok();
  std::vector<Message> due;  // in the order they were held back
  for (auto it = reordered_.begin(); it != reordered_.end();) {
    if (it->msg.header.receiver == to && --it->passes_left == 0) {
      due.push_back(std::move(it->msg));
      it = reordered_.erase(it);
    } else {
      ++it;
    }
  }
  for (Message& m : due) (void)SendInner(std::move(m), true);  // the node was told it was sent: a loss is the fault
  return Status::Ok();
}

void InterceptingTransport::TickDelayed() {
  for (size_t i = 0; i < delayed_.size();) {
    if (--delayed_[i].sends_left > 0) {
      ++i;
      continue;
    }
    Message m = std::move(delayed_[i].msg);
    delayed_.erase(delayed_.begin() + static_cast<std::ptrdiff_t>(i));
    (void)SendPassing(std::move(m), true);  // the node was told it was sent: a loss is the fault
  }
}

Status InterceptingTransport::DoSend(NodeId, const transport::WireMessage& wire, bool may_block) {
  Message m = wire.message();
  MutexLock lock(&send_mu_);
  if (rewrite_) rewrite_(m);
  const bool faulty = faults_on_ && (faults_.applies ? faults_.applies(m) : transport::IsDataMessage(m.header.type));
  bool copy_sent = false;  // a duplicate went out: the message was delivered, whatever follows
  if (faulty) {
    if (Chance(faults_.drop)) {
      Tally(&FaultCounts::dropped);
      return Status::Ok();
    }
    if (Chance(faults_.duplicate)) {
      Tally(&FaultCounts::duplicated);
      Message copy = m;
      PSERVER_RETURN_IF_ERROR(SendPassing(std::move(copy), may_block));
      copy_sent = true;
    } else if (Chance(faults_.delay)) {
      Tally(&FaultCounts::delayed);
      const uint32_t after = 1 + static_cast<uint32_t>(rng_() % std::max<uint32_t>(faults_.max_delay_sends, 1));
      delayed_.push_back(Delayed{std::move(m), after});
      return Status::Ok();
    } else if (Chance(faults_.reorder)) {
      Tally(&FaultCounts::reordered);
      const uint32_t passes = 1 + static_cast<uint32_t>(rng_() % std::max<uint32_t>(faults_.max_reorder_distance, 1));
      reordered_.push_back(Reordered{std::move(m), passes});
      return Status::Ok();
    } else if (Chance(faults_.corrupt)) {
      for (size_t tries = 0; tries < m.frames.size(); ++tries) {
        const size_t f = rng_() % m.frames.size();
        if (m.frames[f].empty()) continue;
        Bytes copy = Bytes::Uninitialized(m.frames[f].size());
        std::memcpy(copy.data(), m.frames[f].data(), copy.size());
        copy.data()[rng_() % copy.size()] ^= std::byte{0x5a};
        m.frames[f] = std::move(copy);
        Tally(&FaultCounts::corrupted);
        break;
      }
    }
  }
  bool hold = hold_ && hold_(m);
  if (!hold && hold_mode_ == HoldMode::kKeepOrder) {
    for (const Held& h : held_) hold = hold || h.msg.header.receiver == m.header.receiver;
  }
  if (hold) {
    held_.push_back(Held{std::move(m), may_block});
    MutexLock state(&mu_);
    held_count_ = held_.size();
    cv_.SignalAll();  // WaitForHeld
    return Status::Ok();
  }
  Status s = SendPassing(std::move(m), may_block);
  if (!delayed_.empty()) TickDelayed();
  // A sender told of a failure takes the message for unsent (a worker then sends it again as
  // new): not so once a copy of it arrived.
  return copy_sent ? Status::Ok() : s;
}

Result<std::string> InterceptingTransport::DoListen(const std::string& address) { return inner_->Listen(address); }

Status InterceptingTransport::DoConnect(NodeId peer, const std::string& address,
                                        const transport::ConnectionId& present_as) {
  return inner_->Connect(peer, address, present_as);  // the node presents this wrapper's identity
}

Result<transport::Transport::RawFrames> InterceptingTransport::DoReceive(std::chrono::milliseconds timeout) {
  PSERVER_ASSIGN_OR_RETURN(Message m, inner_->Receive(timeout));
  Log(Direction::kReceive, m);
  return RawFrames{transport::EncodeWire(transport::WireMessage(m)), m.origin};
}

void InterceptingTransport::DoShutdown() { inner_->Shutdown(); }

Message KeySubRange(const Message& msg, size_t begin, size_t end) {
  Message out;
  out.header = msg.header;
  const size_t n = msg.frames[0].size() / sizeof(Key);
  out.frames.push_back(msg.frames[0].Slice(begin * sizeof(Key), end * sizeof(Key)));
  const size_t row = n == 0 ? 0 : msg.frames[1].size() / n;
  out.frames.push_back(msg.frames[1].Slice(begin * row, end * row));
  out.frames.push_back(msg.frames[2]);
  return out;
}

}  // namespace pserver::testing
