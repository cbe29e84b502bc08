#include "kv/filter/significant_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/wire_io.h"
#include "kv/filter/error_feedback.h"

namespace pserver::kv {
namespace {

using transport::Bytes;

// A side's copy of what a server sent a worker: each key's row of the reply's bytes.
class RowCopy : public KeyedRows<std::byte> {
 public:
  void Put(Key key, const std::byte* row) { std::memcpy(Row(Slot(key)), row, width_); }
};

// The copy frame (docs/filters.md, section 2.3): generation, sequence number and row count (u64
// each), then one bit a row of the request's part, set for the rows the reply carries.
constexpr size_t kCopyPrefix = 24;
constexpr size_t kAhead = RowCopy::kPrefetchAhead;
size_t BitmapBytes(uint64_t rows) { return (rows + 7) / 8; }

using base::LoadLE;
using base::StoreLE;

class SignificantFilter final : public Filter {
 public:
  struct Params {
    bool push = true;
    double threshold = 0, relative = 0, decay = 1;
    bool pull = false;
    double pull_threshold = 0, pull_relative = 0;
    uint64_t copy_keys = 0;
    uint64_t held_keys = 0;
    size_t row_bytes = 0;  // of the table's rows (a pull reply's)
  };
  explicit SignificantFilter(const Params& p)
      : p_(p),
        next_generation_(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                                                   .count())) {}

  FilterCode code() const override { return FilterCode::kSignificant; }
  std::string_view name() const override { return "sigmod"; }
  bool rounds_pushes() const override { return p_.push; }
  bool rounds_replies() const override { return p_.pull; }
  bool fills_replies() const override { return p_.pull; }

  Result<uint8_t> Encode(const transport::Header&, transport::Frames&) const override { return 0; }
  Status Decode(const transport::Header& h, uint8_t, transport::Frames&) const override {
    return Status::Corruption(fmt::format("sigmod never changes a frame, yet a {} says it did", transport::Describe(h)));
  }

  Status Round(Rounding& r) const override {
    if (r.reply) return r.value_type == ValueType::kFloat64 ? RoundReplyAs<double>(r) : RoundReplyAs<float>(r);
    return r.value_type == ValueType::kFloat64 ? RoundAs<double>(r) : RoundAs<float>(r);
  }

  void TakeHeld(std::map<Key, std::vector<double>>* held) const override {
    std::lock_guard lock(mu_);
    if (kept_) kept_->TakeInto(held);
  }

  void Forget(NodeId peer) const override {
    std::lock_guard lock(mu_);
    sent_.erase(peer);  // a server's, of a worker
    held_.erase(peer);  // a worker's, of a server
  }

  bool over_bound() const override {
    std::lock_guard lock(mu_);
    return kept_ && kept_->size() > p_.held_keys;
  }

  bool HoldsCopyOf(NodeId server) const override {
    std::lock_guard lock(mu_);
    auto it = held_.find(server);
    return it != held_.end() && it->second.next != 0;
  }

  Status Fill(const transport::Header& h, const SharedArray<Key>& keys, transport::Frames& frames) const override {
    if (frames.size() < 2 || frames[0].empty()) return Status::Ok();  // not left to this filter
    if (h.type != transport::MessageType::kPull) {
      return Status::Corruption(fmt::format("a {} carries a copy frame; only pull replies leave rows out",
                                            transport::Describe(h)));
    }
    const size_t row_bytes = p_.row_bytes;
    if (row_bytes == 0 || uint64_t{h.width} * ValueTypeSize(h.value_type) != row_bytes) {
      return Status::Corruption(fmt::format("a pull reply with a copy frame has rows of width {} of {}; the table's "
                                            "rows are {} bytes",
                                            h.width, ValueTypeName(h.value_type), row_bytes));
    }
    const transport::Bytes& copy = frames[0];
    const size_t n = keys.size();
    if (copy.size() != kCopyPrefix + BitmapBytes(n) || LoadLE<uint64_t>(copy.data() + 16) != n) {
      return Status::Corruption(fmt::format("the copy frame of a pull reply is {} bytes; for {} keys of {} bytes it "
                                            "would be {}",
                                            copy.size(), n, row_bytes, kCopyPrefix + BitmapBytes(n)));
    }
    const uint64_t generation = LoadLE<uint64_t>(copy.data()), seq = LoadLE<uint64_t>(copy.data() + 8);
    const std::byte* bits = copy.data() + kCopyPrefix;
    size_t carried = 0;
    for (size_t b = 0; b < BitmapBytes(n); ++b) carried += std::popcount(std::to_integer<uint8_t>(bits[b]));
    const bool tail_clear = n % 8 == 0 || (std::to_integer<uint8_t>(bits[n / 8]) >> (n % 8)) == 0;
    if (!tail_clear || carried * row_bytes != frames[1].size() || seq == 0) {
      return Status::Corruption(fmt::format("a pull reply's copy frame marks {} of {} rows, and it carries {} bytes of "
                                            "rows of {}",
                                            carried, n, frames[1].size(), row_bytes));
    }
    std::lock_guard lock(mu_);
    Held& held = held_[h.sender];
    // A reply follows the one before it from this server, or starts a newer generation.
    const bool follows = (seq == 1 && generation > held.generation) ||
                         (held.next != 0 && generation == held.generation && seq == held.next);
    if (!follows) {
      const uint64_t expected = held.next;
      held.next = 0;  // this worker's next pull asks the server to start over
      if (carried < n) {
        return Status::NotFound(fmt::format("a reply left {} of {} keys out, and this worker missed a reply of the "
                                            "server's before it (reply {} of generation {}; it expected {} of {})",
                                            n - carried, n, seq, generation, expected, held.generation));
      }
    } else {
      if (seq == 1) held.rows.Clear(row_bytes);
      held.generation = generation;
      held.next = seq + 1;
    }
    transport::Bytes out = transport::Bytes::Uninitialized(n * row_bytes);
    const std::byte* in = frames[1].data();
    for (size_t i = 0; i < n; ++i) {
      if (i + kAhead < n) held.rows.Prefetch(keys[i + kAhead]);
      std::byte* dst = out.data() + i * row_bytes;
      if (std::to_integer<uint8_t>(bits[i / 8]) & (1u << (i % 8))) {
        std::memcpy(dst, in, row_bytes);
        if (follows) held.rows.Put(keys[i], in);
        in += row_bytes;
      } else if (const std::byte* row = held.rows.Find(keys[i])) {
        std::memcpy(dst, row, row_bytes);
      } else {
        held.next = 0;
        return Status::NotFound(fmt::format("a reply left key {} out, and this worker holds no copy of it", keys[i]));
      }
    }
    if (held.rows.size() > p_.copy_keys) {  // over its bound: the next pull starts over
      held.rows.Clear(row_bytes);
      held.next = 0;
    }
    frames[0] = transport::Bytes();
    frames[1] = std::move(out);
    return Status::Ok();
  }

 private:
  // A server's copy of what it last sent one worker, row by row.
  struct Sent {
    uint64_t generation = 0;
    uint64_t seq = 0;  // of the last reply
    RowCopy rows;
  };
  // A worker's copy of what one server sent it.
  struct Held {
    uint64_t generation = 0;
    uint64_t next = 0;  // the sequence number the next reply must have; 0: it holds no copy
    RowCopy rows;
  };

  template <typename T>
  Status RoundAs(Rounding& r) const {
    const size_t n = r.keys.size(), c = r.columns;
    const T* in = reinterpret_cast<const T*>(r.vals.data());
    PSERVER_RETURN_IF_ERROR(CheckFinite(r.keys, in, c, name()));
    std::lock_guard lock(mu_);
    if (!kept_) kept_.emplace(c);
    const double threshold = p_.threshold * std::pow(p_.decay, static_cast<double>(pushes_++));
    std::vector<uint32_t> slot(n);
    kept_->Slots(r.keys, slot.data());
    std::vector<double> change(in, in + n * c);
    std::vector<double> largest(n, 0.0);  // per row
    double push_largest = 0;
    for (size_t i = 0; i < n; ++i) {
      const double* row = kept_->Row(slot[i]);
      for (size_t j = 0; j < c; ++j) {
        double& a = change[i * c + j];
        a += row[j];
        largest[i] = std::max(largest[i], std::fabs(a));
      }
      push_largest = std::max(push_largest, largest[i]);
    }
    std::vector<Key> keys;
    std::vector<T> vals;
    keys.reserve(n);
    vals.reserve(n * c);
    for (size_t i = 0; i < n; ++i) {
      const double* a = &change[i * c];
      double* left = kept_->Row(slot[i]);
      const bool goes = !r.may_drop || (largest[i] > threshold && largest[i] >= p_.relative * push_largest);
      for (size_t j = 0; j < c; ++j) {
        if (goes) {
          constexpr double kMax = std::numeric_limits<T>::max();
          vals.push_back(static_cast<T>(std::clamp(a[j], -kMax, kMax)));
          left[j] = a[j] - static_cast<double>(vals.back());  // what the table's type cannot hold waits too
        } else {
          left[j] = a[j];
        }
      }
      if (goes) keys.push_back(r.keys[i]);
    }
    r.keys = SharedArray<Key>(std::move(keys));
    r.vals = transport::AsBytes(SharedArray<T>(std::move(vals)));
    return Status::Ok();
  }

  // A pull reply: the rows that changed significantly since this server last sent them to the
  // worker go; the others are left out, for the worker to fill from its copy.
  template <typename T>
  Status RoundReplyAs(Rounding& r) const {
    if (!r.may_drop) return Status::Ok();  // a push-pull's reply goes whole, and outside the copy
    const size_t n = r.keys.size(), c = r.columns, row_bytes = c * sizeof(T);
    const T* in = reinterpret_cast<const T*>(r.vals.data());
    PSERVER_RETURN_IF_ERROR(CheckFinite(r.keys, in, c, name()));
    std::lock_guard lock(mu_);
    Sent& sent = sent_[r.peer];
    if (r.no_copy || sent.seq == 0 || sent.rows.size() > p_.copy_keys) {  // start over
      sent.generation = next_generation_++;
      sent.seq = 0;
      sent.rows.Clear(row_bytes);
    }
    ++sent.seq;
    transport::Bytes copy = transport::Bytes::Uninitialized(kCopyPrefix + BitmapBytes(n));
    StoreLE<uint64_t>(copy.data(), sent.generation);
    StoreLE<uint64_t>(copy.data() + 8, sent.seq);
    StoreLE<uint64_t>(copy.data() + 16, n);
    std::byte* bits = copy.data() + kCopyPrefix;
    std::memset(bits, 0, BitmapBytes(n));
    std::vector<Key> keys;
    std::vector<T> vals;
    for (size_t i = 0; i < n; ++i) {
      if (i + kAhead < n) sent.rows.Prefetch(r.keys[i + kAhead]);
      const T* row = in + i * c;
      const auto* was = reinterpret_cast<const T*>(sent.rows.Find(r.keys[i]));
      if (was && Unchanged(row, was, c)) continue;
      bits[i / 8] |= std::byte{static_cast<uint8_t>(1u << (i % 8))};
      keys.push_back(r.keys[i]);
      vals.insert(vals.end(), row, row + c);
      sent.rows.Put(r.keys[i], reinterpret_cast<const std::byte*>(row));
    }
    if (keys.size() < n) {
      r.keys = SharedArray<Key>(std::move(keys));
      r.vals = transport::AsBytes(SharedArray<T>(std::move(vals)));
    }
    r.copy_frame = std::move(copy);
    return Status::Ok();
  }

  // Whether a row may be left out: every value as it was sent, or within its threshold of it.
  template <typename T>
  bool Unchanged(const T* now, const T* was, size_t c) const {
    if (std::memcmp(now, was, c * sizeof(T)) == 0) return true;
    if (p_.pull_threshold == 0 && p_.pull_relative == 0) return false;
    for (size_t j = 0; j < c; ++j) {
      const double d = std::fabs(static_cast<double>(now[j]) - static_cast<double>(was[j]));
      if (d > std::max(p_.pull_threshold, p_.pull_relative * std::fabs(static_cast<double>(was[j])))) return false;
    }
    return true;
  }

  const Params p_;
  mutable std::mutex mu_;
  mutable uint64_t pushes_ = 0;
  mutable std::optional<Residuals> kept_;                    // a worker's, of its pushes
  mutable uint64_t next_generation_;                         // a server's: of its next start over
  mutable absl::flat_hash_map<NodeId, Sent> sent_;           // a server's, per worker
  mutable absl::flat_hash_map<NodeId, Held> held_;           // a worker's, per server
};

}  // namespace

Result<std::shared_ptr<const Filter>> MakeSignificantFilter(const FilterSpec& spec, const TableSpec* table) {
  SignificantFilter::Params p;
  double push = 1, pull = 0, copy_keys = 8388608;
  p.held_keys = static_cast<uint64_t>(kDefaultHeldKeys);
  for (const auto& [param, value] : spec.params) {
    PSERVER_ASSIGN_OR_RETURN(bool bound, ReadHeldKeys("sigmod", param, value, &p.held_keys));
    if (bound) continue;
    const bool flag = param == "push" || param == "pull";
    const bool at_least_zero = param == "threshold" || param == "pull_threshold";
    const bool fraction = param == "relative" || param == "pull_relative";
    if (flag && (value == 0 || value == 1)) {
      (param == "push" ? push : pull) = value;
    } else if (at_least_zero && value >= 0) {
      (param == "threshold" ? p.threshold : p.pull_threshold) = value;
    } else if (fraction && value >= 0 && value <= 1) {
      (param == "relative" ? p.relative : p.pull_relative) = value;
    } else if (param == "decay" && value > 0 && value <= 1) {
      p.decay = value;
    } else if (param == "copy_keys" && value >= 1 && value <= kMaxStoreKeys && value == std::floor(value)) {
      copy_keys = value;
    } else if (flag || at_least_zero || fraction || param == "decay" || param == "copy_keys") {
      return Status::InvalidArgument(fmt::format(
          "filter 'sigmod': {} {} is out of range (push and pull 0 or 1, threshold and pull_threshold >= 0, relative "
          "and pull_relative in [0, 1], decay in (0, 1], copy_keys a whole number from 1 to 2^31)",
          param, value));
    } else {
      return Status::InvalidArgument(fmt::format("filter 'sigmod' has no param '{}' (it takes push, threshold, "
                                                 "relative, decay, held_keys, pull, pull_threshold, pull_relative, "
                                                 "copy_keys)",
                                                 param));
    }
  }
  if (push == 0 && pull == 0) {
    return Status::InvalidArgument("filter 'sigmod' with push=0 and pull=0 would do nothing");
  }
  p.push = push == 1;
  p.pull = pull == 1;
  if (table) p.row_bytes = size_t{table->width} * ValueTypeSize(table->value_type);
  p.copy_keys = static_cast<uint64_t>(copy_keys);
  if (table) {
    PSERVER_RETURN_IF_ERROR(CheckRoundable("sigmod", *table, /*pushes=*/false));
    if (Status s = CheckRoundable("sigmod", *table, p.push); !s.ok()) {
      return Status::InvalidArgument(fmt::format("{} (sigmod:push=0:pull=1 filters pull replies only)", s.message()));
    }
  }
  return std::shared_ptr<const Filter>(std::make_shared<SignificantFilter>(p));
}

}  // namespace pserver::kv
