#include "kv/filter/quantize_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <limits>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/wire_io.h"
#include "kv/filter/error_feedback.h"
#include "pserver/checksum.h"

namespace pserver::kv {

namespace {

// v * 2^k, exactly as ldexp; a multiplication in the range of normal powers of two.
double Scale(double v, int k) {
  if (k < -1022 || k > 1023) return std::ldexp(v, k);
  return v * std::bit_cast<double>(static_cast<uint64_t>(k + 1023) << 52);
}

// x rounded to the nearest integer, half to even (the default rounding), for |x| < 2^51.
double RoundInt(double x) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52: the sum keeps no fraction bits
  return (x + kMagic) - kMagic;
}

// The unbiased exponent of a double: |y| in [2^e, 2^(e+1)) when y is normal.
int ExponentOf(double y) { return static_cast<int>((std::bit_cast<uint64_t>(y) >> 52) & 0x7ff) - 1023; }

// Whether `y` is a half, and then its bits.
bool ExactHalfBits(double y, uint16_t* bits) {
  const uint64_t b = std::bit_cast<uint64_t>(y);
  const auto sign = static_cast<uint16_t>((b >> 48) & 0x8000);
  if ((b << 1) == 0) {
    *bits = sign;
    return true;
  }
  const int e = ExponentOf(y);
  if (e > 15) return false;
  if (e >= -14) {
    if ((b & ((uint64_t{1} << 42) - 1)) != 0) return false;  // more than 10 fraction bits
    *bits = static_cast<uint16_t>(sign | ((e + 15) << 10) | ((b >> 42) & 0x3ff));
    return true;
  }
  const double m = Scale(std::fabs(y), 24);  // a subnormal half: an integer below 1024 times 2^-24
  if (m != RoundInt(m)) return false;
  *bits = static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
  return true;
}

}  // namespace

double RoundToHalf(double y) {
  if (y == 0) return y;
  const int quantum = std::max(ExponentOf(y) - 10, -24);  // 11 significant bits; subnormal below 2^-14
  return Scale(RoundInt(Scale(y, -quantum)), quantum);
}

uint16_t HalfBits(double half) {
  uint16_t bits = 0;
  return ExactHalfBits(half, &bits) ? bits : uint16_t{0x7e00};  // not a half: a NaN, which Decode refuses
}

double HalfValue(uint16_t bits) {
  const int biased = (bits >> 10) & 0x1f;
  const uint64_t mantissa = bits & 0x3ff;
  const double a = biased == 0 ? static_cast<double>(mantissa) * 0x1p-24
                               : std::bit_cast<double>((static_cast<uint64_t>(biased - 15 + 1023) << 52) | (mantissa << 42));
  return (bits & 0x8000) ? -a : a;
}

namespace {

using transport::Bytes;

constexpr int kMaxExponent = 1100;  // beyond any double's: a larger one is refused

using base::LoadLE;
using base::StoreLE;

class QuantizeFilter final : public Filter {
 public:
  QuantizeFilter(Precision precision, bool pushes, bool replies, size_t push_columns, uint64_t held_keys)
      : precision_(precision), pushes_(pushes), replies_(replies), push_columns_(push_columns), held_keys_(held_keys) {}

  FilterCode code() const override { return precision_ == Precision::kFp16 ? FilterCode::kFp16 : FilterCode::kQ8; }
  std::string_view name() const override { return precision_ == Precision::kFp16 ? "fp16" : "q8"; }
  bool rounds_pushes() const override { return pushes_; }
  bool rounds_replies() const override { return replies_; }

  Status Round(Rounding& r) const override {
    return r.value_type == ValueType::kFloat64 ? RoundAs<double>(r) : RoundAs<float>(r);
  }

  void TakeHeld(std::map<Key, std::vector<double>>* held) const override {
    std::lock_guard lock(mu_);
    if (pushed_) pushed_->TakeInto(held);
  }

  void Forget(NodeId peer) const override {
    std::lock_guard lock(mu_);
    replied_.erase(peer);
  }

  bool over_bound() const override {
    std::lock_guard lock(mu_);
    return pushed_ && pushed_->size() > held_keys_;
  }

  Result<uint8_t> Encode(const transport::Header& h, transport::Frames& frames) const override {
    const size_t columns = Columns(h);
    if (columns == 0 || frames.size() < 2) return 0;
    return h.value_type == ValueType::kFloat64 ? EncodeAs<double>(columns, frames[1])
                                               : EncodeAs<float>(columns, frames[1]);
  }

  Status Decode(const transport::Header& h, uint8_t mask, transport::Frames& frames) const override {
    const size_t columns = Columns(h);
    if (mask != 0b10 || columns == 0) {
      return Status::Corruption(fmt::format("{} names frames {:#04x} of a {}; it changes the values (frame 1) of "
                                            "pushes and pull replies only",
                                            name(), mask, transport::Describe(h)));
    }
    return h.value_type == ValueType::kFloat64 ? DecodeAs<double>(columns, frames[1])
                                               : DecodeAs<float>(columns, frames[1]);
  }

 private:
  // The values per row of frame 1 when this filter handles the message, else 0.
  size_t Columns(const transport::Header& h) const {
    if (h.width == 0 || (h.value_type != ValueType::kFloat32 && h.value_type != ValueType::kFloat64)) return 0;
    if (h.is_reply()) return replies_ && !h.is_error() && transport::Pulls(h.type) ? h.width : 0;
    return pushes_ && transport::Pushes(h.type) ? push_columns_ : 0;
  }

  // The exponent e of a column whose largest magnitude is `max`: every value / 2^e rounds
  // into the code's range.
  int ExponentFor(double max) const {
    if (max == 0) return 0;
    int ex = 0;
    std::frexp(max, &ex);  // max < 2^ex
    return ex - (precision_ == Precision::kFp16 ? 15 : 7);
  }
  double RoundAt(double v, int e) const {
    const double y = Scale(v, -e);
    if (precision_ == Precision::kFp16) return Scale(RoundToHalf(y), e);
    return Scale(std::clamp(RoundInt(y), -127.0, 127.0), e) + 0.0;  // + 0.0: -0 is 0, as 8 bits send it
  }
  // The grid's step at v (column exponent e): 2^e for q8; for fp16 the step of the half at v.
  double StepAt(double v, int e) const {
    if (precision_ == Precision::kQ8) return Scale(1.0, e);
    return Scale(1.0, std::max(ExponentOf(Scale(v, -e)) - 10, -24) + e);
  }
  // `v` in the table's type, at most its largest finite value (a value rounded up past it).
  template <typename T>
  static T ToType(double v) {
    constexpr double kMax = std::numeric_limits<T>::max();
    return static_cast<T>(std::clamp(v, -kMax, kMax));
  }
  size_t CodeBytes() const { return precision_ == Precision::kFp16 ? 2 : 1; }

  template <typename T>
  Status RoundAs(Rounding& r) const {
    const size_t n = r.keys.size(), c = r.columns;
    const T* in = reinterpret_cast<const T*>(r.vals.data());
    PSERVER_RETURN_IF_ERROR(CheckFinite(r.keys, in, c, name()));
    std::lock_guard lock(mu_);
    Residuals& kept = KeptFor(r);
    std::vector<uint32_t> slot(n);
    kept.Slots(r.keys, slot.data());
    // A push rounds its values plus what was kept, on the grid of their maxima. A reply rounds
    // the stored values on their own grid, plus what was kept for the worker up to one step of
    // it: a pull is a fresh read, and what an earlier reply's coarser grid left must not swamp it.
    std::vector<double> acc(in, in + n * c);
    std::vector<double> max(c, 0.0);
    for (size_t i = 0; i < n; ++i) {
      const double* row = kept.Row(slot[i]);
      for (size_t j = 0; j < c; ++j) {
        double& a = acc[i * c + j];
        if (!r.reply) a += row[j];
        max[j] = std::max(max[j], std::fabs(a));
      }
    }
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) exponent[j] = ExponentFor(max[j]);
    Bytes out = Bytes::Uninitialized(n * c * sizeof(T));
    T* o = reinterpret_cast<T*>(out.data());
    for (size_t i = 0; i < n; ++i) {
      double* left = kept.Row(slot[i]);
      for (size_t j = 0; j < c; ++j) {
        double a = acc[i * c + j];
        if (r.reply) {
          if (a == 0) {  // a stored zero reads as zero: a sparse model stays sparse
            o[i * c + j] = T(0);
            left[j] = 0;
            continue;
          }
          const double step = StepAt(a, exponent[j]);
          a += std::clamp(left[j], -step, step);
        }
        const T sent = ToType<T>(RoundAt(a, exponent[j]));
        o[i * c + j] = sent;
        left[j] = a - static_cast<double>(sent);
      }
    }
    r.vals = std::move(out);
    return Status::Ok();
  }

  Residuals& KeptFor(const Rounding& r) const {
    if (!r.reply) {
      if (!pushed_) pushed_.emplace(r.columns);
      return *pushed_;
    }
    auto it = replied_.find(r.peer);
    if (it == replied_.end()) it = replied_.emplace(r.peer, Residuals(r.columns)).first;
    // Past its bound a reply store starts again: what it kept is at most a step a value, and a
    // pull is a fresh read.
    if (it->second.size() > held_keys_) it->second.Clear();
    return it->second;
  }

  // The frame: the XXH64 checksum of the values as they were (u64), the column exponents
  // (i16 each), then the codes row by row.
  size_t PrefixBytes(size_t c) const { return 8 + 2 * c; }

  template <typename T>
  Result<uint8_t> EncodeAs(size_t c, Bytes& frame) const {
    if (frame.empty() || frame.size() % (c * sizeof(T)) != 0) return 0;
    const size_t n = frame.size() / (c * sizeof(T));
    if (PrefixBytes(c) + n * c * CodeBytes() >= frame.size()) return 0;  // no gain
    const T* in = reinterpret_cast<const T*>(frame.data());
    std::vector<double> max(c, 0.0);
    for (size_t i = 0; i < n * c; ++i) {
      if (!std::isfinite(in[i])) return 0;
      max[i % c] = std::max(max[i % c], std::fabs(static_cast<double>(in[i])));
    }
    Bytes out = Bytes::Uninitialized(PrefixBytes(c) + n * c * CodeBytes());
    StoreLE<uint64_t>(out.data(), Checksum64(frame.data(), frame.size()));
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) {
      exponent[j] = ExponentFor(max[j]);
      StoreLE<uint16_t>(out.data() + 8 + 2 * j, static_cast<uint16_t>(static_cast<int16_t>(exponent[j])));
    }
    std::byte* codes = out.data() + PrefixBytes(c);
    // A value that is not on the grid, or does not come back bit for bit (one this filter did
    // not round), sends the frame as it is.
    for (size_t i = 0; i < n * c; ++i) {
      const double v = in[i];
      const double y = Scale(v, -exponent[i % c]);
      if (Scale(y, exponent[i % c]) != v || std::signbit(y) != std::signbit(v)) return 0;
      if (precision_ == Precision::kFp16) {
        uint16_t bits;
        if (!ExactHalfBits(y, &bits)) return 0;
        StoreLE<uint16_t>(codes + 2 * i, bits);
      } else {
        // -0 too: 8 bits have no sign of zero.
        if (RoundInt(y) != y || std::fabs(y) > 127 || (y == 0 && std::signbit(y))) return 0;
        codes[i] = static_cast<std::byte>(static_cast<int8_t>(y));
      }
    }
    frame = std::move(out);
    return uint8_t{0b10};
  }

  template <typename T>
  Status DecodeAs(size_t c, Bytes& frame) const {
    const size_t row = c * CodeBytes();
    if (frame.size() < PrefixBytes(c) || (frame.size() - PrefixBytes(c)) % row != 0) {
      return Status::Corruption(fmt::format("{} frame 1 is {} bytes, not a checksum, {} exponents and whole rows of "
                                            "{} bytes",
                                            name(), frame.size(), c, row));
    }
    const size_t n = (frame.size() - PrefixBytes(c)) / row;
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) {
      exponent[j] = static_cast<int16_t>(LoadLE<uint16_t>(frame.data() + 8 + 2 * j));
      if (std::abs(exponent[j]) > kMaxExponent) {
        return Status::Corruption(fmt::format("{} frame 1: column {} has exponent {}, beyond any value's", name(), j,
                                              exponent[j]));
      }
    }
    const std::byte* codes = frame.data() + PrefixBytes(c);
    Bytes out = Bytes::Uninitialized(n * c * sizeof(T));
    T* o = reinterpret_cast<T*>(out.data());
    for (size_t i = 0; i < n * c; ++i) {
      double s;
      if (precision_ == Precision::kFp16) {
        const uint16_t bits = LoadLE<uint16_t>(codes + 2 * i);
        if (((bits >> 10) & 0x1f) == 0x1f) {
          return Status::Corruption(fmt::format("fp16 frame 1: value {} is an infinity or NaN", i));
        }
        s = HalfValue(bits);
      } else {
        s = static_cast<int8_t>(std::to_integer<uint8_t>(codes[i]));
      }
      const double v = Scale(s, exponent[i % c]);
      if (!(std::fabs(v) <= static_cast<double>(std::numeric_limits<T>::max()))) {
        return Status::Corruption(fmt::format("{} frame 1: value {} decodes beyond the range of {}", name(), i,
                                              sizeof(T) == 4 ? "float32" : "float64"));
      }
      o[i] = static_cast<T>(v);
    }
    if (Checksum64(out.data(), out.size()) != LoadLE<uint64_t>(frame.data())) {
      return Status::Corruption(fmt::format("{} frame 1 decoded to values whose checksum is not the sender's", name()));
    }
    frame = std::move(out);
    return Status::Ok();
  }

  const Precision precision_;
  const bool pushes_, replies_;
  const size_t push_columns_;  // width * push_arity
  const uint64_t held_keys_;   // the bound on each store's keys
  mutable std::mutex mu_;
  mutable std::optional<Residuals> pushed_;                       // a worker's, of its pushes
  mutable absl::flat_hash_map<NodeId, Residuals> replied_;       // a server's, of its replies to each worker
};

}  // namespace

Result<std::shared_ptr<const Filter>> MakeQuantizeFilter(Precision precision, const FilterSpec& spec,
                                                         const TableSpec* table) {
  double pushes = 1, replies = 1;
  uint64_t held_keys = static_cast<uint64_t>(kDefaultHeldKeys);
  for (const auto& [param, value] : spec.params) {
    PSERVER_ASSIGN_OR_RETURN(bool bound, ReadHeldKeys(spec.name, param, value, &held_keys));
    if (bound) continue;
    double* slot = param == "push" ? &pushes : param == "pull" ? &replies : nullptr;
    if (!slot) return Status::InvalidArgument(fmt::format("filter '{}' has no param '{}' (it takes push, pull, held_keys)", spec.name, param));
    if (value != 0 && value != 1) {
      return Status::InvalidArgument(fmt::format("filter '{}': {} must be 0 or 1, got {}", spec.name, param, value));
    }
    *slot = value;
  }
  if (pushes == 0 && replies == 0) {
    return Status::InvalidArgument(fmt::format("filter '{}' with push=0 and pull=0 would do nothing", spec.name));
  }
  if (table) {
    PSERVER_RETURN_IF_ERROR(CheckRoundable(spec.name, *table, /*pushes=*/false));
    if (Status s = CheckRoundable(spec.name, *table, pushes == 1); !s.ok()) {  // the rule's: pull replies may do
      return Status::InvalidArgument(fmt::format("{} (set push=0 to round pull replies only)", s.message()));
    }
  }
  const size_t push_columns = table ? size_t{table->width} * table->push_arity : 1;
  return std::shared_ptr<const Filter>(
      std::make_shared<QuantizeFilter>(precision, pushes == 1, replies == 1, push_columns, held_keys));
}

}  // namespace pserver::kv
