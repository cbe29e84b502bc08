#include "kv/filter/key_cache_filter.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <cmath>
#include <cstring>
#include <list>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"

namespace pserver::kv {
namespace {

using transport::Bytes;

constexpr size_t kReferenceBytes = 24;  // signature lo, hi; key count

struct Signature {
  uint64_t lo = 0, hi = 0;
  friend bool operator==(const Signature&, const Signature&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Signature& s) {
    return H::combine(std::move(h), s.lo, s.hi);
  }
};

Signature SignatureOf(const Bytes& keys) {
  const XXH128_hash_t h = XXH3_128bits(keys.data(), keys.size());
  return {h.low64, h.high64};
}

// Frame 0 of a request holds its keys.
bool CarriesKeys(const transport::Header& h, const transport::Frames& frames) {
  return !h.is_reply() && transport::IsDataMessage(h.type) && h.type != transport::MessageType::kClock &&
         !frames.empty();
}

// A least-recently-used set of key lists, bounded by the keys they hold. V: what an entry keeps
// (the sender: the key count; the receiver: the keys).
template <typename V>
class Lru {
 public:
  explicit Lru(uint64_t capacity) : capacity_(capacity) {}

  // The entry of `sig`, made the most recently used; null if absent.
  V* Find(const Signature& sig) {
    auto it = index_.find(sig);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->value;
  }
  // Inserts (or touches) `sig`, then evicts the least recently used entries beyond the capacity.
  void Put(const Signature& sig, V value, uint64_t keys) {
    if (Find(sig)) return;
    order_.push_front(Entry{sig, std::move(value), keys});
    index_.emplace(sig, order_.begin());
    held_ += keys;
    while (held_ > capacity_ && !order_.empty()) {
      held_ -= order_.back().keys;
      index_.erase(order_.back().sig);
      order_.pop_back();
    }
  }
  void Clear() {
    order_.clear();
    index_.clear();
    held_ = 0;
  }

 private:
  struct Entry {
    Signature sig;
    V value;
    uint64_t keys;
  };
  const uint64_t capacity_;
  uint64_t held_ = 0;
  std::list<Entry> order_;  // most recently used first
  absl::flat_hash_map<Signature, typename std::list<Entry>::iterator> index_;
};

class KeyCacheFilter final : public Filter {
 public:
  KeyCacheFilter(uint64_t min_keys, uint64_t capacity) : min_keys_(min_keys), capacity_(capacity) {}

  FilterCode code() const override { return FilterCode::kKeyCache; }
  std::string_view name() const override { return "keycache"; }

  void Forget(NodeId peer) const override {
    MutexLock lock(&mu_);
    held_.erase(peer.value);  // a server's, of a worker
    sent_.erase(peer.value);  // a worker's, of a server
  }

  Result<uint8_t> Encode(const transport::Header& h, transport::Frames& frames) const override {
    if (!CarriesKeys(h, frames) || frames[0].size() % sizeof(Key) != 0) return uint8_t{0};
    const uint64_t n = frames[0].size() / sizeof(Key);
    if (n < min_keys_ || n > capacity_) return uint8_t{0};
    const Signature sig = SignatureOf(frames[0]);
    MutexLock lock(&mu_);
    auto [it, fresh] = sent_.try_emplace(h.receiver.value, Peer{h.epoch, Lru<uint64_t>(capacity_)});
    Peer& peer = it->second;
    if (h.epoch > peer.epoch) {  // a newer view: the server empties its cache
      peer.lru.Clear();
      peer.epoch = h.epoch;
    }
    if (h.epoch < peer.epoch) return uint8_t{0};  // sliced by an older view: sent in full, not kept
    if (!(h.flags & transport::kFlagResend) && peer.lru.Find(sig)) {
      Bytes ref = Bytes::Uninitialized(kReferenceBytes);
      const uint64_t words[3] = {sig.lo, sig.hi, n};
      std::memcpy(ref.data(), words, kReferenceBytes);  // little-endian hosts only (wire_format.md)
      frames[0] = std::move(ref);
      return uint8_t{0x01};
    }
    peer.lru.Put(sig, n, n);  // sent in full: the server keeps it
    return uint8_t{0};
  }

  Status Decode(const transport::Header& h, uint8_t mask, transport::Frames& frames) const override {
    if (mask != 0x01 || !CarriesKeys(h, frames) || frames[0].size() != kReferenceBytes) {
      return Status::Corruption(fmt::format("a reference must be frame 0 of a request, {} bytes (mask {:#04x}, "
                                            "frame 0 of {} bytes)",
                                            kReferenceBytes, mask, frames.empty() ? 0 : frames[0].size()));
    }
    uint64_t words[3];
    std::memcpy(words, frames[0].data(), kReferenceBytes);
    const Signature sig{words[0], words[1]};
    MutexLock lock(&mu_);
    Held& held = HeldFor(h);
    const SharedArray<Key>* keys = h.epoch == held.epoch ? held.lru.Find(sig) : nullptr;
    if (keys == nullptr) {
      return Status::NotFound(fmt::format("no key list of signature {:016x}{:016x} ({} keys) is cached here for "
                                          "routing epoch {}",
                                          sig.hi, sig.lo, words[2], h.epoch.value));
    }
    if (keys->size() != words[2]) {
      return Status::Corruption(
          fmt::format("a reference names {} keys, its cached list holds {}", words[2], keys->size()));
    }
    // A copy: the request's keys are the handler's, and the cached list must stay as it came.
    frames[0] = Bytes::CopyOf(std::span<const std::byte>(reinterpret_cast<const std::byte*>(keys->data()),
                                                         keys->size() * sizeof(Key)));
    return Status::Ok();
  }

  void Received(const transport::Header& h, const transport::Frames& frames) const override {
    if (!CarriesKeys(h, frames) || frames[0].size() % sizeof(Key) != 0) return;
    const uint64_t n = frames[0].size() / sizeof(Key);
    if (n < min_keys_ || n > capacity_) return;
    const Signature sig = SignatureOf(frames[0]);
    MutexLock lock(&mu_);
    Held& held = HeldFor(h);
    if (h.epoch != held.epoch) return;  // a straggler of an older view
    if (held.lru.Find(sig)) return;
    // A copy: the frame may share its buffer with the message's values.
    SharedArray<Key> keys = SharedArray<Key>::Uninitialized(n);
    std::memcpy(keys.data(), frames[0].data(), frames[0].size());
    held.lru.Put(sig, std::move(keys), n);
  }

 private:
  struct Peer {
    Epoch epoch;
    Lru<uint64_t> lru;
  };

  struct Held {
    Epoch epoch;
    Lru<SharedArray<Key>> lru;
  };

  // The receiver's cache of the lists from the sender of `h`: a message of a newer view empties it.
  Held& HeldFor(const transport::Header& h) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Held& held = held_.try_emplace(h.sender.value, Held{h.epoch, Lru<SharedArray<Key>>(capacity_)}).first->second;
    if (h.epoch > held.epoch) {
      held.lru.Clear();
      held.epoch = h.epoch;
    }
    return held;
  }

  const uint64_t min_keys_;
  const uint64_t capacity_;
  mutable Mutex mu_;
  // The sender's side: per server node, what it sent in full at the epoch noted.
  mutable absl::flat_hash_map<uint32_t, Peer> sent_ ABSL_GUARDED_BY(mu_);
  // The receiver's side: per worker node, the lists it sent in full at the epoch noted. One
  // cache per worker, bounded as the worker's memory of it, so that both evict alike.
  mutable absl::flat_hash_map<uint32_t, Held> held_ ABSL_GUARDED_BY(mu_);
};

Status WholeNumber(const std::string& param, double value, double min, double max) {
  if (!(value >= min && value <= max) || value != std::floor(value)) {
    return Status::InvalidArgument(
        fmt::format("filter 'keycache': {} must be a whole number from {} to {}, got {}", param, min, max, value));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const Filter>> MakeKeyCacheFilter(const FilterSpec& spec) {
  double min_keys = 16, capacity = 1 << 23;
  constexpr double kMax = 1ULL << 40;
  for (const auto& [param, value] : spec.params) {
    if (param == "min_keys") {
      PSERVER_RETURN_IF_ERROR(WholeNumber(param, value, 1, kMax));
      min_keys = value;
    } else if (param == "capacity_keys") {
      PSERVER_RETURN_IF_ERROR(WholeNumber(param, value, 1, kMax));
      capacity = value;
    } else {
      return Status::InvalidArgument(
          fmt::format("filter 'keycache' has no param '{}' (it takes min_keys, capacity_keys)", param));
    }
  }
  if (capacity < min_keys) {
    return Status::InvalidArgument(fmt::format(
        "filter 'keycache': capacity_keys ({}) is below min_keys ({}): nothing could be cached", capacity, min_keys));
  }
  return std::shared_ptr<const Filter>(
      std::make_shared<KeyCacheFilter>(static_cast<uint64_t>(min_keys), static_cast<uint64_t>(capacity)));
}

}  // namespace pserver::kv
