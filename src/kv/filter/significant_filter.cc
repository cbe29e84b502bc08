#include "kv/filter/significant_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <vector>

#include "kv/filter/error_feedback.h"

namespace pserver::kv {
namespace {

using transport::Bytes;

class SignificantFilter final : public Filter {
 public:
  SignificantFilter(double threshold, double relative, double decay)
      : threshold_(threshold), relative_(relative), decay_(decay) {}

  FilterCode code() const override { return FilterCode::kSignificant; }
  std::string_view name() const override { return "sigmod"; }
  bool rounds_pushes() const override { return true; }

  Result<uint8_t> Encode(const transport::Header&, transport::Frames&) const override { return 0; }
  Status Decode(const transport::Header& h, uint8_t, transport::Frames&) const override {
    return Status::Corruption(fmt::format("sigmod never changes a frame, yet a {} says it did", transport::Describe(h)));
  }

  Status Round(Rounding& r) const override {
    return r.value_type == ValueType::kFloat64 ? RoundAs<double>(r) : RoundAs<float>(r);
  }

  void TakeHeld(std::map<Key, std::vector<double>>* held) const override {
    std::lock_guard lock(mu_);
    if (kept_) kept_->TakeInto(held);
  }

 private:
  template <typename T>
  Status RoundAs(Rounding& r) const {
    const size_t n = r.keys.size(), c = r.columns;
    const T* in = reinterpret_cast<const T*>(r.vals.data());
    PSERVER_RETURN_IF_ERROR(CheckFinite(r.keys, in, c, name()));
    std::lock_guard lock(mu_);
    if (!kept_) kept_.emplace(c);
    const double threshold = threshold_ * std::pow(decay_, static_cast<double>(pushes_++));
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
      const bool goes = !r.may_drop || (largest[i] > threshold && largest[i] >= relative_ * push_largest);
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

  const double threshold_, relative_, decay_;
  mutable std::mutex mu_;
  mutable uint64_t pushes_ = 0;
  mutable std::optional<Residuals> kept_;
};

}  // namespace

Result<std::shared_ptr<const Filter>> MakeSignificantFilter(const FilterSpec& spec, const TableSpec* table) {
  double threshold = 0, relative = 0, decay = 1;
  for (const auto& [param, value] : spec.params) {
    if (param == "threshold" && value >= 0) {
      threshold = value;
    } else if (param == "relative" && value >= 0 && value <= 1) {
      relative = value;
    } else if (param == "decay" && value > 0 && value <= 1) {
      decay = value;
    } else if (param == "threshold" || param == "relative" || param == "decay") {
      return Status::InvalidArgument(fmt::format(
          "filter 'sigmod': {} {} is out of range (threshold >= 0, relative in [0, 1], decay in (0, 1])", param, value));
    } else {
      return Status::InvalidArgument(
          fmt::format("filter 'sigmod' has no param '{}' (it takes threshold, relative, decay)", param));
    }
  }
  if (table) PSERVER_RETURN_IF_ERROR(CheckRoundable("sigmod", *table, /*pushes=*/true));
  return std::shared_ptr<const Filter>(std::make_shared<SignificantFilter>(threshold, relative, decay));
}

}  // namespace pserver::kv
