#include "apps/linear/dbpg_rule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace pserver::linear {

double ProxStep(double w0, double g, double u, double l1, double l2, double delta) {
  const double curvature = u + l2;
  if (!(curvature > 0)) return w0;
  const double a = u * w0 - g;
  const double shrunk = a > l1 ? a - l1 : (a < -l1 ? a + l1 : 0.0);
  return std::clamp(shrunk / curvature, w0 - delta, w0 + delta);
}

namespace {

class DbpgRule final : public Updater {
 public:
  DbpgRule(double l1, double l2, double delta) : l1_(l1), l2_(l2), delta_(delta) {}

  uint32_t state_per_value() const override { return 2; }  // 4 state values per row of width 2

  void Apply(const UpdateContext& ctx, std::span<float> value, std::span<float> state,
             std::span<const float> push) const override {
    Step(ctx, value, state, push);
  }
  void Apply(const UpdateContext& ctx, std::span<double> value, std::span<double> state,
             std::span<const double> push) const override {
    Step(ctx, value, state, push);
  }

 private:
  template <typename T>
  void Step(const UpdateContext& ctx, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    if (value.size() != 2 || state.size() < 4 || push.size() != 2) return;  // refused at declaration
    const double iteration = static_cast<double>(ctx.clock) + 1;
    if (static_cast<double>(state[3]) != iteration) {  // first push of a new iteration
      state[0] = value[0];
      state[1] = 0;
      state[2] = 0;
      state[3] = static_cast<T>(iteration);
    }
    state[1] = static_cast<T>(static_cast<double>(state[1]) + push[0]);
    state[2] = static_cast<T>(static_cast<double>(state[2]) + push[1]);
    value[0] = static_cast<T>(ProxStep(state[0], state[1], state[2], l1_, l2_, delta_));
    value[1] = state[1];
  }

  double l1_, l2_, delta_;
};

}  // namespace

Result<std::unique_ptr<Updater>> MakeDbpgRule(const UpdaterSpec& spec) {
  double l1 = 0, l2 = 0, delta = 5;
  for (const auto& [name, v] : spec.params) {
    double* target = name == "l1" ? &l1 : name == "l2" ? &l2 : name == "delta" ? &delta : nullptr;
    if (target == nullptr) {
      return Status::InvalidArgument(
          fmt::format("updater 'dbpg': unknown parameter '{}' (known: delta, l1, l2)", name));
    }
    if (!std::isfinite(v) || v < 0 || (target == &delta && v == 0)) {
      return Status::InvalidArgument(fmt::format("updater 'dbpg': parameter '{}' = {} is out of range", name, v));
    }
    *target = v;
  }
  return std::unique_ptr<Updater>(std::make_unique<DbpgRule>(l1, l2, delta));
}

Status RegisterLinearRules(UpdaterRegistry& registry) {
  if (registry.Contains(kDbpgRuleName)) return Status::Ok();
  return registry.Register(kDbpgRuleName, MakeDbpgRule);
}

}  // namespace pserver::linear
