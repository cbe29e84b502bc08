// Updater: a server-side update rule -- how a pushed row changes a stored row.
//
// Every table names its rule in TableSpec::updater (see pserver/table.h for the built-in ones).
// A rule may keep per-value state (AdaGrad's sum of squares, Adam's moments, FTRL's z and n);
// the state of a key lives beside its value in the server's storage, so that replication,
// migration and checkpoints carry it with the value.
//
// A user-defined rule implements this interface and is registered with the servers under a
// name (UpdaterRegistry, passed to KVServer through ServerOptions); tables then name it like a
// built-in one.
//
// A server applies a request's rows in batches (ApplyBatch: one call per run of rows); the
// default ApplyBatch calls Apply once per row, so a rule only has to implement Apply. A rule
// may override ApplyBatch with a tight loop (the built-in ones do); both must then give the
// same results.
//
// Thread safety: Apply and ApplyBatch are const and may be called from several threads at once
// for different keys; an Updater must not keep mutable state of its own (all state goes into
// `state`).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "pserver/result.h"
#include "pserver/table.h"
#include "pserver/types.h"

namespace pserver {

// What a rule may know about the push it applies.
struct UpdateContext {
  NodeId sender;        // the pushing worker's node
  Timestamp timestamp;  // the worker's request number
  uint64_t clock = 0;   // the worker's iteration clock when it pushed (see KVWorkerBase::Clock)
};

// One row of a batch (Updater::ApplyBatch): a key's stored value (width values), its state
// (width * state_per_value() values) and its pushed values (width * push_arity() values), laid
// out as Apply's spans are. Several entries of one batch may name the same row (a key pushed
// twice in a request).
template <typename T>
struct RowUpdate {
  T* value;
  T* state;
  const T* push;
};

class Updater {
 public:
  virtual ~Updater() = default;

  // Values pushed per stored value (1; the "prox" rule takes 2: gradient then curvature; with
  // gradient=1 it takes 1, a push row (g, u) per stored row (w, G)).
  virtual uint32_t push_arity() const { return 1; }
  // State values kept per stored value, initialised to zero when a key is first stored. The
  // rule chooses their layout within a row's state (the elementwise built-in rules keep state_per_value()
  // consecutive blocks of width values, like a push); storage only keeps and moves them.
  virtual uint32_t state_per_value() const { return 0; }
  // Whether tables of `type` can use this rule (only add and assign take integers).
  virtual bool Supports(ValueType type) const { return type == ValueType::kFloat32 || type == ValueType::kFloat64; }
  // Whether tables with rows of `width` values (or, if `variable_length`, rows of each key's own
  // length; `width` is then meaningless) can use this rule. Ok by default: most rules work
  // value by value and take any width. A rule whose row has a fixed layout (the "prox" rule
  // with gradient=1 takes rows (w, G) of width 2) returns kInvalidArgument saying what it
  // needs; the table's declaration then fails with that error, naming the table and the rule.
  virtual Status FitsWidth(uint32_t /*width*/, bool /*variable_length*/) const { return Status::Ok(); }

  // Applies one pushed row. `value` and `state` are the key's stored row (width values) and
  // its state (width * state_per_value()); `push` holds width * push_arity() values, laid out
  // as push_arity() consecutive blocks of width values. The row's width is value.size() (so
  // variable-length rows work alike).
  // REQUIRES: state.size() == value.size() * state_per_value() and push.size() ==
  // value.size() * push_arity(); the server checks pushes before calling (a rule does not).
  virtual void Apply(const UpdateContext& ctx, std::span<float> value, std::span<float> state,
                     std::span<const float> push) const = 0;
  virtual void Apply(const UpdateContext& ctx, std::span<double> value, std::span<double> state,
                     std::span<const double> push) const = 0;
  // Integer tables: only rules whose Supports() accepts them are ever called with these.
  virtual void Apply(const UpdateContext&, std::span<int32_t>, std::span<int32_t>, std::span<const int32_t>) const {}
  virtual void Apply(const UpdateContext&, std::span<int64_t>, std::span<int64_t>, std::span<const int64_t>) const {}

  // Applies a batch of pushed rows of `width` values each, in order: the same as calling
  // Apply(ctx, {value, width}, {state, width * state_per_value()}, {push, width * push_arity()})
  // for rows[0], rows[1], ... in turn (an entry sees the effect of the earlier ones on its row).
  // The default does exactly that; a rule overrides it to save a virtual call per row.
  // REQUIRES: as for Apply, for every entry.
  virtual void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<float>> rows) const;
  virtual void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<double>> rows) const;
  virtual void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int32_t>> rows) const;
  virtual void ApplyBatch(const UpdateContext& ctx, uint32_t width, std::span<const RowUpdate<int64_t>> rows) const;

  // Called on each row's state (width * state_per_value() values) when a server fills a table
  // from a checkpoint, for a job resumed from it: a rule whose state refers to the job's clocks
  // forgets that there, since the resumed job's clocks are not the checkpointed job's ("prox"
  // keeps the iteration its sums belong to: it marks them as of no iteration, so the next push
  // begins one). The default does nothing.
  virtual void OnResume(std::span<float> /*state*/) const {}
  virtual void OnResume(std::span<double> /*state*/) const {}
};

// The proximal Newton step of delayed block proximal gradient, in closed form: for a weight
// that was w0 when the iteration began, with the iteration's summed gradient g and (diagonal)
// curvature u, the minimiser of
//   g*(x - w0) + (u/2)*(x - w0)^2 + l1*|x| + (l2/2)*x^2   subject to |x - w0| <= delta,
// i.e. clamp(S(u*w0 - g, l1) / (u + l2), w0 - delta, w0 + delta) with the soft threshold
// S(a, l1) = sign(a) * max(|a| - l1, 0); w0 itself (no step) if u + l2 <= 0 or is NaN.
// The built-in "prox" rule takes this step on each push (see pserver/table.h); a solver or a
// test may call it to reproduce the servers' arithmetic.
// REQUIRES: l1 >= 0, l2 >= 0, delta > 0 (the rule's parameter ranges).
double ProxStep(double w0, double g, double u, double l1, double l2, double delta);

// The trust region of a weight's next iteration under the "prox" rule's adaptive=1, from its
// last two steps: a weight that turned back (`step` against `previous_step`) overshot, and may
// move at most half its last step; otherwise it may move twice its last step plus delta_min,
// at most delta.
double ProxTrustRegion(double previous_step, double step, double delta, double delta_min);

// Builds a rule from a table's UpdaterSpec. kInvalidArgument, naming the rule and the
// parameter, for an unknown or out-of-range parameter. Servers build each table's rule when
// the table is declared, so a bad rule fails the worker's DeclareTable with this error.
using UpdaterFactory = std::function<Result<std::unique_ptr<Updater>>(const UpdaterSpec& spec)>;

// The rules a server knows: the built-in ones plus those registered. A value type; copy it
// into ServerOptions.
class UpdaterRegistry {
 public:
  // The built-in rules only.
  UpdaterRegistry();

  // Adds a rule. kInvalidArgument if `name` is empty or already taken (built-ins included), or
  // if `factory` is empty.
  Status Register(const std::string& name, UpdaterFactory factory);

  // Builds the rule a table names. kNotFound for an unknown name; the factory's error otherwise
  // (kInternal if it returns a null rule).
  Result<std::unique_ptr<Updater>> Create(const UpdaterSpec& spec) const;

  bool Contains(const std::string& name) const { return factories_.contains(name); }

 private:
  std::map<std::string, UpdaterFactory> factories_;
};

}  // namespace pserver
