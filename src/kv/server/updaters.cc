#include "kv/server/updaters.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <array>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace pserver {
namespace kv {
namespace {

// ---------------------------------------------------------------------------------------------
// Parameters

enum class Bound : uint8_t {
  kNonNegative,  // [0, inf)
  kPositive,     // (0, inf)
  kUnit,         // [0, 1)
  kFlag,         // 0 or 1
};

struct ParamDef {
  std::string_view name;
  double default_value;
  Bound bound;
};

bool InBound(double v, Bound bound) {
  if (!std::isfinite(v)) return false;
  switch (bound) {
    case Bound::kNonNegative: return v >= 0.0;
    case Bound::kPositive: return v > 0.0;
    case Bound::kUnit: return v >= 0.0 && v < 1.0;
    case Bound::kFlag: return v == 0.0 || v == 1.0;
  }
  return false;
}

std::string_view BoundText(Bound bound) {
  switch (bound) {
    case Bound::kNonNegative: return "a finite number >= 0";
    case Bound::kPositive: return "a finite number > 0";
    case Bound::kUnit: return "in [0, 1)";
    case Bound::kFlag: return "0 or 1";
  }
  return "";
}

// Reads spec.params against `defs` (listed in name order): returns the values in the order of
// `defs`, defaults filled in; kInvalidArgument for an unknown name or an out-of-range value.
template <size_t N>
Result<std::array<double, N>> ReadParams(std::string_view rule, const UpdaterSpec& spec,
                                         const std::array<ParamDef, N>& defs) {
  std::array<double, N> values{};
  for (size_t i = 0; i < N; ++i) values[i] = defs[i].default_value;
  for (const auto& [name, value] : spec.params) {
    size_t i = 0;
    while (i < N && defs[i].name != name) ++i;
    if (i == N) {
      std::string known;
      for (const ParamDef& d : defs) {
        if (!known.empty()) known += ", ";
        known += d.name;
      }
      if (known.empty()) known = "none";
      return Status::InvalidArgument(
          fmt::format("updater '{}': unknown parameter '{}' (known: {})", rule, name, known));
    }
    if (!InBound(value, defs[i].bound)) {
      return Status::InvalidArgument(fmt::format("updater '{}': parameter '{}' = {} is out of range (must be {})",
                                                 rule, name, value, BoundText(defs[i].bound)));
    }
    values[i] = value;
  }
  return values;
}

template <typename Rule, typename... Args>
Result<std::unique_ptr<Updater>> Make(Args&&... args) {
  return std::unique_ptr<Updater>(std::make_unique<Rule>(std::forward<Args>(args)...));
}

// ---------------------------------------------------------------------------------------------
// Rule bases. A virtual Apply handles one row and a virtual ApplyBatch a run of rows; the
// per-value loop inside both is a plain, non-virtual template (Derived::Run<T>), inlined into
// the batch loop. Rows of width 1 (a sparse vector) get a loop of their own, in which the
// width is a constant.

template <typename Derived, typename T>
void RunBatch(const Derived& rule, const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<T>> rows) {
  const size_t state_len = size_t{width} * rule.state_per_value();
  const size_t push_len = size_t{width} * rule.push_arity();
  if (width == 1) {
    for (const RowUpdate<T>& r : rows) {
      rule.Run(ctx, std::span<T>(r.value, 1), std::span<T>(r.state, state_len), std::span<const T>(r.push, push_len));
    }
    return;
  }
  for (const RowUpdate<T>& r : rows) {
    rule.Run(ctx, std::span<T>(r.value, width), std::span<T>(r.state, state_len), std::span<const T>(r.push, push_len));
  }
}

template <typename Derived>
class RealUpdater : public Updater {
 public:
  using Updater::Apply;
  using Updater::ApplyBatch;
  void Apply(const UpdateContext& ctx, std::span<float> value, std::span<float> state,
             std::span<const float> push) const final {
    static_cast<const Derived*>(this)->Run(ctx, value, state, push);
  }
  void Apply(const UpdateContext& ctx, std::span<double> value, std::span<double> state,
             std::span<const double> push) const final {
    static_cast<const Derived*>(this)->Run(ctx, value, state, push);
  }
  void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<float>> rows) const final {
    RunBatch(*static_cast<const Derived*>(this), ctx, width, rows);
  }
  void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<double>> rows) const final {
    RunBatch(*static_cast<const Derived*>(this), ctx, width, rows);
  }
};

// RealUpdater plus the integer value types.
template <typename Derived>
class AnyTypeUpdater : public RealUpdater<Derived> {
 public:
  using RealUpdater<Derived>::Apply;
  using RealUpdater<Derived>::ApplyBatch;
  bool Supports(ValueType) const final { return true; }
  void Apply(const UpdateContext& ctx, std::span<int32_t> value, std::span<int32_t> state,
             std::span<const int32_t> push) const final {
    static_cast<const Derived*>(this)->Run(ctx, value, state, push);
  }
  void Apply(const UpdateContext& ctx, std::span<int64_t> value, std::span<int64_t> state,
             std::span<const int64_t> push) const final {
    static_cast<const Derived*>(this)->Run(ctx, value, state, push);
  }
  void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int32_t>> rows) const final {
    RunBatch(*static_cast<const Derived*>(this), ctx, width, rows);
  }
  void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int64_t>> rows) const final {
    RunBatch(*static_cast<const Derived*>(this), ctx, width, rows);
  }
};

// ---------------------------------------------------------------------------------------------
// add, assign

class AddUpdater final : public AnyTypeUpdater<AddUpdater> {
 public:
  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T>, std::span<const T> push) const {
    assert(push.size() == value.size());
    const size_t n = value.size();
    T* w = value.data();
    const T* g = push.data();
    if constexpr (std::is_integral_v<T>) {
      // Wraps modulo 2^bits instead of overflowing (signed overflow is undefined).
      using U = std::make_unsigned_t<T>;
      for (size_t i = 0; i < n; ++i) w[i] = static_cast<T>(static_cast<U>(w[i]) + static_cast<U>(g[i]));
    } else {
      for (size_t i = 0; i < n; ++i) w[i] += g[i];
    }
  }
};

class AssignUpdater final : public AnyTypeUpdater<AssignUpdater> {
 public:
  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T>, std::span<const T> push) const {
    assert(push.size() == value.size());
    std::copy(push.begin(), push.end(), value.begin());
  }
};

// ---------------------------------------------------------------------------------------------
// sgd

class SgdUpdater final : public RealUpdater<SgdUpdater> {
 public:
  explicit SgdUpdater(double lr) : lr_(lr) {}

  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T>, std::span<const T> push) const {
    assert(push.size() == value.size());
    const size_t n = value.size();
    T* w = value.data();
    const T* g = push.data();
    const double lr = lr_;
    for (size_t i = 0; i < n; ++i) w[i] = static_cast<T>(static_cast<double>(w[i]) - lr * static_cast<double>(g[i]));
  }

 private:
  double lr_;
};

// sgd with shrink=1: a push is (g, s) per value, and the step is proximal for an L1 penalty
// whose weight the pusher chooses push by push: value = S(value - lr g, lr s), with the soft
// threshold S(a, t) = sign(a) max(|a| - t, 0) -- exactly 0 inside the band, so the model is sparse.
class SgdShrinkUpdater final : public RealUpdater<SgdShrinkUpdater> {
 public:
  explicit SgdShrinkUpdater(double lr) : lr_(lr) {}
  uint32_t push_arity() const override { return 2; }

  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T>, std::span<const T> push) const {
    const size_t n = value.size();
    assert(push.size() == 2 * n);
    for (size_t i = 0; i < n; ++i) {
      const double a = static_cast<double>(value[i]) - lr_ * static_cast<double>(push[i]);
      const double shrunk = std::abs(a) - lr_ * std::max(static_cast<double>(push[n + i]), 0.0);
      value[i] = shrunk > 0 ? static_cast<T>(std::copysign(shrunk, a)) : T(0);
    }
  }

 private:
  double lr_;
};

// ---------------------------------------------------------------------------------------------
// adagrad

class AdagradUpdater final : public RealUpdater<AdagradUpdater> {
 public:
  AdagradUpdater(double lr, double eps) : lr_(lr), eps_(eps) {}
  uint32_t state_per_value() const override { return 1; }

  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    const size_t n = value.size();
    assert(push.size() == n && state.size() == n);
    T* w = value.data();
    T* acc = state.data();
    const T* grad = push.data();
    const double lr = lr_;
    const double eps = eps_;
    for (size_t i = 0; i < n; ++i) {
      const double g = grad[i];
      const double sum = static_cast<double>(acc[i]) + g * g;
      acc[i] = static_cast<T>(sum);
      w[i] = static_cast<T>(static_cast<double>(w[i]) - lr * g / (std::sqrt(sum) + eps));
    }
  }

 private:
  double lr_;
  double eps_;
};

// ---------------------------------------------------------------------------------------------
// adam

class AdamUpdater final : public RealUpdater<AdamUpdater> {
 public:
  AdamUpdater(double lr, double beta1, double beta2, double eps) : lr_(lr), b1_(beta1), b2_(beta2), eps_(eps) {}
  uint32_t state_per_value() const override { return 3; }

  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    const size_t n = value.size();
    assert(push.size() == n && state.size() == 3 * n);
    T* w = value.data();
    T* m_state = state.data();
    T* v_state = state.data() + n;
    T* t_state = state.data() + 2 * n;
    const T* grad = push.data();
    const double lr = lr_, b1 = b1_, b2 = b2_, eps = eps_;
    for (size_t i = 0; i < n; ++i) {
      const double g = grad[i];
      const double t = static_cast<double>(t_state[i]) + 1.0;
      const double m = b1 * static_cast<double>(m_state[i]) + (1.0 - b1) * g;
      const double v = b2 * static_cast<double>(v_state[i]) + (1.0 - b2) * g * g;
      const double m_hat = m / (1.0 - std::pow(b1, t));
      const double v_hat = v / (1.0 - std::pow(b2, t));
      t_state[i] = static_cast<T>(t);
      m_state[i] = static_cast<T>(m);
      v_state[i] = static_cast<T>(v);
      w[i] = static_cast<T>(static_cast<double>(w[i]) - lr * m_hat / (std::sqrt(v_hat) + eps));
    }
  }

 private:
  double lr_, b1_, b2_, eps_;
};

// ---------------------------------------------------------------------------------------------
// ftrl

class FtrlUpdater final : public RealUpdater<FtrlUpdater> {
 public:
  FtrlUpdater(double alpha, double beta, double l1, double l2, bool scaled)
      : alpha_(alpha), beta_(beta), l1_(l1), l2_(l2), scaled_(scaled) {}
  uint32_t state_per_value() const override { return 2; }
  uint32_t push_arity() const override { return scaled_ ? 2 : 1; }

  template <typename T>
  void Run(const UpdateContext&, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    const size_t n = value.size();
    assert(push.size() == push_arity() * n && state.size() == 2 * n);
    T* w = value.data();
    T* z_state = state.data();
    T* n_state = state.data() + n;
    const T* grad = push.data();
    const double alpha = alpha_, beta = beta_;
    for (size_t i = 0; i < n; ++i) {
      const double g = grad[i];
      // scaled=1: the penalties are those of the push's scale (the passes its gradients sum).
      const double s = scaled_ ? static_cast<double>(push[n + i]) : 1.0;
      const double scale = s > 0 ? s : 0.0;  // NaN and s < 0 count as 0
      const double l1 = l1_ > 0 ? l1_ * scale : 0.0, l2 = l2_ > 0 ? l2_ * scale : 0.0;
      const double n_old = n_state[i];
      const double n_new = n_old + g * g;
      const double sqrt_n_new = std::sqrt(n_new);
      const double sigma = (sqrt_n_new - std::sqrt(n_old)) / alpha;
      const double z = static_cast<double>(z_state[i]) + g - sigma * static_cast<double>(w[i]);
      z_state[i] = static_cast<T>(z);
      n_state[i] = static_cast<T>(n_new);
      w[i] = std::abs(z) <= l1 ? T(0)
                               : static_cast<T>(-(z - std::copysign(l1, z)) / ((beta + sqrt_n_new) / alpha + l2));
    }
  }

 private:
  double alpha_, beta_, l1_, l2_;
  bool scaled_;
};

// ---------------------------------------------------------------------------------------------
// prox: two layouts of one step. Both keep, per weight, the state (w0, G, U, c) and take the
// step ProxStep on the sums (ProxPush); they differ only in where the weight, its state and its
// push lie in a row.

struct ProxParams {
  double l1, l2, delta;
};

// One push (g, u) of clock ctx.clock into a weight's state: starts a new iteration if the
// stored one (c) is another, accumulates, and returns the new weight -- a function of the
// stored sums only, so that it does not depend on the order of one iteration's pushes.
template <typename T>
T ProxPush(T clock, T w, T& w0, T& big_g, T& big_u, T& c, T g, T u, const ProxParams& p) {
  if (c != clock) {  // the first push of a new iteration
    w0 = w;
    big_g = T(0);
    big_u = T(0);
    c = clock;
  }
  big_g = static_cast<T>(static_cast<double>(big_g) + static_cast<double>(g));
  big_u = static_cast<T>(static_cast<double>(big_u) + static_cast<double>(u));
  return static_cast<T>(ProxStep(w0, big_g, big_u, p.l1, p.l2, p.delta));
}

// The iteration a push belongs to, as stored in c (clock + 1; 0 = never pushed).
template <typename T>
T ProxClock(const UpdateContext& ctx) {
  return static_cast<T>(ctx.clock + 1);
}

// The gradient=0 layout keeps the iteration marks c last, a quarter of a row's state: a resumed
// job's clocks are not the checkpointed job's, so they are set to "no iteration" (0).
template <typename T>
void ForgetProxIterations(std::span<T> state) {
  std::fill(state.begin() + static_cast<ptrdiff_t>(state.size() / 4 * 3), state.end(), T(0));
}

// gradient=0: elementwise over a row of width n. Push: n gradients, then n curvatures. State:
// blocks w0, G, U, c of n values each.
class ProxUpdater final : public RealUpdater<ProxUpdater> {
 public:
  explicit ProxUpdater(const ProxParams& p) : p_(p) {}
  uint32_t push_arity() const override { return 2; }
  uint32_t state_per_value() const override { return 4; }
  void OnResume(std::span<float> state) const override { ForgetProxIterations(state); }
  void OnResume(std::span<double> state) const override { ForgetProxIterations(state); }

  template <typename T>
  void Run(const UpdateContext& ctx, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    const size_t n = value.size();
    assert(push.size() == 2 * n && state.size() == 4 * n);
    T* w = value.data();
    T* w0_state = state.data();
    T* g_state = state.data() + n;
    T* u_state = state.data() + 2 * n;
    T* c_state = state.data() + 3 * n;
    const T* grad = push.data();
    const T* curv = push.data() + n;
    const T clock = ProxClock<T>(ctx);
    for (size_t i = 0; i < n; ++i) {
      w[i] = ProxPush(clock, w[i], w0_state[i], g_state[i], u_state[i], c_state[i], grad[i], curv[i], p_);
    }
  }

 private:
  ProxParams p_;
};

// gradient=1: a row is one weight, (w, G), so that a pull returns the iteration's summed
// gradient beside the weight. Push: (g, u). State: w0, G, U, c.
//
// With adaptive=1 each weight has a trust region of its own, Delta, that follows the steps it
// takes (ProxTrustRegion, from delta at its first iteration) instead of delta. State: w0, G, U,
// c, Delta, and the step of the weight's previous iteration.
class ProxGradientUpdater final : public RealUpdater<ProxGradientUpdater> {
 public:
  // delta_min: the adaptive trust region's (ProxTrustRegion); nullopt: the fixed delta.
  ProxGradientUpdater(const ProxParams& p, std::optional<double> delta_min) : p_(p), delta_min_(delta_min) {}
  uint32_t push_arity() const override { return 1; }
  uint32_t state_per_value() const override { return delta_min_ ? 3 : 2; }  // 6 or 4 per row of width 2
  // A resumed job's clocks are not the checkpointed job's: no iteration is under way (c = 0);
  // each weight keeps its trust region.
  void OnResume(std::span<float> state) const override { Forget(state); }
  void OnResume(std::span<double> state) const override { Forget(state); }
  Status FitsWidth(uint32_t width, bool variable_length) const override {
    if (variable_length) {
      return Status::InvalidArgument("with gradient=1 a row is (w, G): the table needs width 2, not variable-length rows");
    }
    if (width != 2) {
      return Status::InvalidArgument(fmt::format("with gradient=1 a row is (w, G): the table needs width 2, not {}", width));
    }
    return Status::Ok();
  }

  template <typename T>
  void Run(const UpdateContext& ctx, std::span<T> value, std::span<T> state, std::span<const T> push) const {
    // Other widths are refused at declaration (FitsWidth); never touch a row of another shape.
    if (value.size() != 2 || state.size() != 2 * state_per_value() || push.size() != 2) return;
    const T clock = ProxClock<T>(ctx);
    ProxParams p = p_;
    if (delta_min_) {
      T& w0 = state[0];
      T& c = state[3];
      T& trust = state[4];
      T& last_step = state[5];
      if (c != clock) {
        const double step = static_cast<double>(value[0]) - static_cast<double>(w0);
        trust = static_cast<T>(c == T(0) && trust == T(0) ? p_.delta
                                                           : ProxTrustRegion(last_step, step, p_.delta, *delta_min_));
        last_step = static_cast<T>(step);
      }
      p.delta = static_cast<double>(trust);
    }
    value[0] = ProxPush(clock, value[0], state[0], state[1], state[2], state[3], push[0], push[1], p);
    value[1] = state[1];
  }

 private:
  template <typename T>
  void Forget(std::span<T> state) const {
    const size_t stride = 2 * state_per_value();
    for (size_t r = 0; r + stride <= state.size(); r += stride) state[r + 3] = T(0);
  }

  ProxParams p_;
  std::optional<double> delta_min_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Factories

bool IsAddRule(const Updater& updater) { return dynamic_cast<const AddUpdater*>(&updater) != nullptr; }

Result<std::unique_ptr<Updater>> MakeAddUpdater(const UpdaterSpec& spec) {
  PSERVER_RETURN_IF_ERROR(ReadParams("add", spec, std::array<ParamDef, 0>{}).status());
  return Make<AddUpdater>();
}

Result<std::unique_ptr<Updater>> MakeAssignUpdater(const UpdaterSpec& spec) {
  PSERVER_RETURN_IF_ERROR(ReadParams("assign", spec, std::array<ParamDef, 0>{}).status());
  return Make<AssignUpdater>();
}

Result<std::unique_ptr<Updater>> MakeSgdUpdater(const UpdaterSpec& spec) {
  static constexpr std::array<ParamDef, 2> kDefs{{{"lr", 0.01, Bound::kNonNegative}, {"shrink", 0.0, Bound::kFlag}}};
  PSERVER_ASSIGN_OR_RETURN(auto p, ReadParams("sgd", spec, kDefs));
  if (p[1] == 1.0) return Make<SgdShrinkUpdater>(p[0]);
  return Make<SgdUpdater>(p[0]);
}

Result<std::unique_ptr<Updater>> MakeAdagradUpdater(const UpdaterSpec& spec) {
  static constexpr std::array<ParamDef, 2> kDefs{{
      {"eps", 1e-8, Bound::kPositive},
      {"lr", 0.01, Bound::kNonNegative},
  }};
  PSERVER_ASSIGN_OR_RETURN(auto p, ReadParams("adagrad", spec, kDefs));
  return Make<AdagradUpdater>(/*lr=*/p[1], /*eps=*/p[0]);
}

Result<std::unique_ptr<Updater>> MakeAdamUpdater(const UpdaterSpec& spec) {
  static constexpr std::array<ParamDef, 4> kDefs{{
      {"beta1", 0.9, Bound::kUnit},
      {"beta2", 0.999, Bound::kUnit},
      {"eps", 1e-8, Bound::kPositive},
      {"lr", 0.001, Bound::kNonNegative},
  }};
  PSERVER_ASSIGN_OR_RETURN(auto p, ReadParams("adam", spec, kDefs));
  return Make<AdamUpdater>(/*lr=*/p[3], /*beta1=*/p[0], /*beta2=*/p[1], /*eps=*/p[2]);
}

Result<std::unique_ptr<Updater>> MakeFtrlUpdater(const UpdaterSpec& spec) {
  static constexpr std::array<ParamDef, 5> kDefs{{
      {"alpha", 0.05, Bound::kPositive},
      {"beta", 1.0, Bound::kNonNegative},
      {"l1", 0.0, Bound::kNonNegative},
      {"l2", 0.0, Bound::kNonNegative},
      {"scaled", 0.0, Bound::kFlag},
  }};
  PSERVER_ASSIGN_OR_RETURN(auto p, ReadParams("ftrl", spec, kDefs));
  return Make<FtrlUpdater>(/*alpha=*/p[0], /*beta=*/p[1], /*l1=*/p[2], /*l2=*/p[3], /*scaled=*/p[4] == 1.0);
}

Result<std::unique_ptr<Updater>> MakeProxUpdater(const UpdaterSpec& spec) {
  static constexpr std::array<ParamDef, 6> kDefs{{
      {"adaptive", 0.0, Bound::kFlag},
      {"delta", 1.0, Bound::kPositive},
      {"delta_min", 0.1, Bound::kPositive},
      {"gradient", 0.0, Bound::kFlag},
      {"l1", 0.0, Bound::kNonNegative},
      {"l2", 0.0, Bound::kNonNegative},
  }};
  PSERVER_ASSIGN_OR_RETURN(auto p, ReadParams("prox", spec, kDefs));
  const ProxParams params{.l1 = p[4], .l2 = p[5], .delta = p[1]};
  const bool adaptive = p[0] == 1.0, gradient = p[3] == 1.0;
  if (adaptive && !gradient) {
    return Status::InvalidArgument("updater 'prox': adaptive=1 (a trust region per weight) needs gradient=1");
  }
  if (gradient) return Make<ProxGradientUpdater>(params, adaptive ? std::optional<double>(p[2]) : std::nullopt);
  return Make<ProxUpdater>(params);
}

}  // namespace kv

// ---------------------------------------------------------------------------------------------
// ProxStep (declared in pserver/updater.h)

double ProxTrustRegion(double previous_step, double step, double delta, double delta_min) {
  // Never 0 (not even in a float table's state, where 0 would read as "never pushed").
  if (step * previous_step < 0) return std::max(std::abs(step) / 2, double{std::numeric_limits<float>::min()});
  return std::min(delta, 2 * std::abs(step) + delta_min);
}

double ProxStep(double w0, double g, double u, double l1, double l2, double delta) {
  const double curvature = u + l2;
  if (!(curvature > 0.0)) return w0;  // no curvature (or NaN): no step
  const double a = u * w0 - g;
  const double shrunk = std::abs(a) - l1;  // the soft threshold S(a, l1)
  const double x = shrunk > 0.0 ? std::copysign(shrunk, a) / curvature : 0.0;
  return std::clamp(x, w0 - delta, w0 + delta);
}

// ---------------------------------------------------------------------------------------------
// Updater's default ApplyBatch (declared in pserver/updater.h): one Apply per row.

namespace {
template <typename T>
void ApplyEach(const Updater& rule, const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<T>> rows) {
  const size_t state_len = size_t{width} * rule.state_per_value();
  const size_t push_len = size_t{width} * rule.push_arity();
  for (const RowUpdate<T>& r : rows) {
    rule.Apply(ctx, std::span<T>(r.value, width), std::span<T>(r.state, state_len), std::span<const T>(r.push, push_len));
  }
}
}  // namespace

void Updater::ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<float>> rows) const {
  ApplyEach(*this, ctx, width, rows);
}
void Updater::ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<double>> rows) const {
  ApplyEach(*this, ctx, width, rows);
}
void Updater::ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int32_t>> rows) const {
  ApplyEach(*this, ctx, width, rows);
}
void Updater::ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int64_t>> rows) const {
  ApplyEach(*this, ctx, width, rows);
}

// ---------------------------------------------------------------------------------------------
// UpdaterRegistry (declared in pserver/updater.h)

UpdaterRegistry::UpdaterRegistry() {
  factories_.emplace("add", kv::MakeAddUpdater);
  factories_.emplace("assign", kv::MakeAssignUpdater);
  factories_.emplace("sgd", kv::MakeSgdUpdater);
  factories_.emplace("adagrad", kv::MakeAdagradUpdater);
  factories_.emplace("adam", kv::MakeAdamUpdater);
  factories_.emplace("ftrl", kv::MakeFtrlUpdater);
  factories_.emplace("prox", kv::MakeProxUpdater);
}

Status UpdaterRegistry::Register(const std::string& name, UpdaterFactory factory) {
  if (name.empty()) return Status::InvalidArgument("updater name must not be empty");
  if (!factory) return Status::InvalidArgument(fmt::format("updater '{}': the factory is empty", name));
  if (factories_.contains(name)) {
    return Status::InvalidArgument(fmt::format("updater '{}' is already registered", name));
  }
  factories_.emplace(name, std::move(factory));
  return Status::Ok();
}

Result<std::unique_ptr<Updater>> UpdaterRegistry::Create(const UpdaterSpec& spec) const {
  auto it = factories_.find(spec.name);
  if (it == factories_.end()) {
    std::string known;
    for (const auto& [name, factory] : factories_) {
      if (!known.empty()) known += ", ";
      known += name;
    }
    return Status::NotFound(fmt::format("unknown updater '{}' (known: {})", spec.name, known));
  }
  Result<std::unique_ptr<Updater>> made = it->second(spec);
  if (made.ok() && *made == nullptr) {
    return Status::Internal(fmt::format("updater '{}': the factory returned no rule", spec.name));
  }
  return made;
}

}  // namespace pserver
