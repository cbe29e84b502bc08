#include "kv/filter/quantize_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kv/filter/error_feedback.h"

namespace pserver::kv {

double RoundToHalf(double y) {
  if (y == 0) return y;
  int ex = 0;
  std::frexp(y, &ex);  // |y| = m * 2^ex, m in [0.5, 1): 11 significant bits step by 2^(ex - 11)
  const int quantum = std::max(ex - 11, -24);  // below 2^-14 the half is subnormal: steps of 2^-24
  return std::ldexp(std::nearbyint(std::ldexp(y, -quantum)), quantum);
}

uint16_t HalfBits(double half) {
  const uint16_t sign = std::signbit(half) ? 0x8000 : 0;
  const double a = std::fabs(half);
  if (a == 0) return sign;
  int ex = 0;
  const double m = std::frexp(a, &ex);  // a = 1.f * 2^(ex - 1)
  const int biased = ex - 1 + 15;
  if (biased <= 0) return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::ldexp(a, 24)));
  return static_cast<uint16_t>(sign | (biased << 10) | static_cast<uint16_t>(std::ldexp(m * 2 - 1, 10)));
}

double HalfValue(uint16_t bits) {
  const int biased = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  const double a = biased == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, biased - 25);
  return (bits & 0x8000) ? -a : a;
}

namespace {

using transport::Bytes;

constexpr int kMaxExponent = 1100;  // beyond any double's: a larger one is refused

void PutU16(std::byte* at, uint16_t v) {
  at[0] = static_cast<std::byte>(v);
  at[1] = static_cast<std::byte>(v >> 8);
}
uint16_t GetU16(const std::byte* at) {
  return static_cast<uint16_t>(std::to_integer<uint16_t>(at[0]) | (std::to_integer<uint16_t>(at[1]) << 8));
}

class QuantizeFilter final : public Filter {
 public:
  QuantizeFilter(Precision precision, bool pushes, bool replies, size_t push_columns)
      : precision_(precision), pushes_(pushes), replies_(replies), push_columns_(push_columns) {}

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
    const double y = std::ldexp(v, -e);
    if (precision_ == Precision::kFp16) return std::ldexp(RoundToHalf(y), e);
    return std::ldexp(std::clamp(std::nearbyint(y), -127.0, 127.0), e) + 0.0;  // + 0.0: -0 is 0, as 8 bits send it
  }
  size_t CodeBytes() const { return precision_ == Precision::kFp16 ? 2 : 1; }

  template <typename T>
  Status RoundAs(Rounding& r) const {
    const size_t n = r.keys.size(), c = r.columns;
    const T* in = reinterpret_cast<const T*>(r.vals.data());
    for (size_t i = 0; i < n * c; ++i) {
      if (!std::isfinite(in[i])) {
        return Status::InvalidArgument(fmt::format("key {} holds {}: {} rounds finite values only", r.keys[i / c],
                                                   in[i], name()));
      }
    }
    std::lock_guard lock(mu_);
    Residuals& kept = KeptFor(r);
    std::vector<double> acc(in, in + n * c);
    std::vector<double> max(c, 0.0);
    for (size_t i = 0; i < n; ++i) {
      const double* row = kept.Find(r.keys[i]);
      for (size_t j = 0; j < c; ++j) {
        double& a = acc[i * c + j];
        if (row) a += row[j];
        max[j] = std::max(max[j], std::fabs(a));
      }
    }
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) exponent[j] = ExponentFor(max[j]);
    Bytes out = Bytes::Uninitialized(n * c * sizeof(T));
    T* o = reinterpret_cast<T*>(out.data());
    std::vector<double> left(c);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < c; ++j) {
        const double a = acc[i * c + j];
        const T sent = static_cast<T>(RoundAt(a, exponent[j]));
        o[i * c + j] = sent;
        left[j] = a - static_cast<double>(sent);
      }
      kept.Set(r.keys[i], left.data());
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
    return it->second;
  }

  template <typename T>
  Result<uint8_t> EncodeAs(size_t c, Bytes& frame) const {
    if (frame.empty() || frame.size() % (c * sizeof(T)) != 0) return 0;
    const size_t n = frame.size() / (c * sizeof(T));
    if (2 * c + n * c * CodeBytes() >= frame.size()) return 0;  // no gain
    const T* in = reinterpret_cast<const T*>(frame.data());
    std::vector<double> max(c, 0.0);
    for (size_t i = 0; i < n * c; ++i) {
      if (!std::isfinite(in[i])) return 0;
      max[i % c] = std::max(max[i % c], std::fabs(static_cast<double>(in[i])));
    }
    Bytes out = Bytes::Uninitialized(2 * c + n * c * CodeBytes());
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) {
      exponent[j] = ExponentFor(max[j]);
      PutU16(out.data() + 2 * j, static_cast<uint16_t>(static_cast<int16_t>(exponent[j])));
    }
    std::byte* codes = out.data() + 2 * c;
    for (size_t i = 0; i < n * c; ++i) {
      const double v = in[i];
      const double y = std::ldexp(v, -exponent[i % c]);
      if (precision_ == Precision::kFp16) {
        if (RoundToHalf(y) != y) return 0;  // not a value this filter rounded: the frame goes as it is
        PutU16(codes + 2 * i, HalfBits(y));
      } else {
        if (y != std::nearbyint(y) || std::fabs(y) > 127 || std::signbit(y) != (y < 0)) return 0;  // -0 too
        codes[i] = static_cast<std::byte>(static_cast<int8_t>(y));
      }
    }
    frame = std::move(out);
    return uint8_t{0b10};
  }

  template <typename T>
  Status DecodeAs(size_t c, Bytes& frame) const {
    const size_t row = c * CodeBytes();
    if (frame.size() < 2 * c || (frame.size() - 2 * c) % row != 0) {
      return Status::Corruption(fmt::format("{} frame 1 is {} bytes, not {} exponents and whole rows of {} bytes",
                                            name(), frame.size(), c, row));
    }
    const size_t n = (frame.size() - 2 * c) / row;
    std::vector<int> exponent(c);
    for (size_t j = 0; j < c; ++j) {
      exponent[j] = static_cast<int16_t>(GetU16(frame.data() + 2 * j));
      if (std::abs(exponent[j]) > kMaxExponent) {
        return Status::Corruption(fmt::format("{} frame 1: column {} has exponent {}, beyond any value's", name(), j,
                                              exponent[j]));
      }
    }
    const std::byte* codes = frame.data() + 2 * c;
    Bytes out = Bytes::Uninitialized(n * c * sizeof(T));
    T* o = reinterpret_cast<T*>(out.data());
    for (size_t i = 0; i < n * c; ++i) {
      double s;
      if (precision_ == Precision::kFp16) {
        const uint16_t bits = GetU16(codes + 2 * i);
        if (((bits >> 10) & 0x1f) == 0x1f) {
          return Status::Corruption(fmt::format("fp16 frame 1: value {} is an infinity or NaN", i));
        }
        s = HalfValue(bits);
      } else {
        s = static_cast<int8_t>(std::to_integer<uint8_t>(codes[i]));
      }
      const T v = static_cast<T>(std::ldexp(s, exponent[i % c]));
      if (!std::isfinite(v)) {
        return Status::Corruption(fmt::format("{} frame 1: value {} decodes beyond the range of {}", name(), i,
                                              sizeof(T) == 4 ? "float32" : "float64"));
      }
      o[i] = v;
    }
    frame = std::move(out);
    return Status::Ok();
  }

  const Precision precision_;
  const bool pushes_, replies_;
  const size_t push_columns_;  // width * push_arity
  mutable std::mutex mu_;
  mutable std::optional<Residuals> pushed_;                       // a worker's, of its pushes
  mutable absl::flat_hash_map<NodeId, Residuals> replied_;       // a server's, of its replies to each worker
};

}  // namespace

Result<std::shared_ptr<const Filter>> MakeQuantizeFilter(Precision precision, const FilterSpec& spec,
                                                         const TableSpec* table) {
  double pushes = 1, replies = 1;
  for (const auto& [param, value] : spec.params) {
    double* slot = param == "push" ? &pushes : param == "pull" ? &replies : nullptr;
    if (!slot) return Status::InvalidArgument(fmt::format("filter '{}' has no param '{}' (it takes push, pull)", spec.name, param));
    if (value != 0 && value != 1) {
      return Status::InvalidArgument(fmt::format("filter '{}': {} must be 0 or 1, got {}", spec.name, param, value));
    }
    *slot = value;
  }
  if (pushes == 0 && replies == 0) {
    return Status::InvalidArgument(fmt::format("filter '{}' with push=0 and pull=0 would do nothing", spec.name));
  }
  if (table) {
    if (Status s = CheckRoundable(spec.name, *table, pushes == 1); !s.ok()) {
      return replies == 1 && pushes == 1 && (table->updater.name == "assign" || table->updater.name == "ftrl")
                 ? Status::InvalidArgument(fmt::format("{} (set push=0 to round pull replies only)", s.message()))
                 : s;
    }
  }
  const size_t push_columns = table ? size_t{table->width} * table->push_arity : 1;
  return std::shared_ptr<const Filter>(
      std::make_shared<QuantizeFilter>(precision, pushes == 1, replies == 1, push_columns));
}

}  // namespace pserver::kv
