// The built-in server-side update rules (see the list above UpdaterSpec in pserver/table.h).
//
// Each Make* function is the UpdaterFactory of one built-in rule: it validates the spec's
// params and returns the rule, or kInvalidArgument naming the rule and the parameter
// ("updater 'adam': unknown parameter 'lr2' (known: beta1, beta2, eps, lr)"). The
// UpdaterRegistry constructor (defined in updaters.cc) registers them under their names.
//
// Numerics: the floating-point rules compute each value's update in double and store the
// results (value and state) in the table's type, so a float table rounds once per push.
//
// State layout: a rule with state_per_value() == s keeps, for a row of width values, s
// consecutive blocks of width values (block k holds state variable k of every value), the
// same layout as a push of arity s -- except "prox" with gradient=1, whose rows hold one weight
// each (below). All state starts at zero (the storage zero-fills it).
//
// Batches: every rule implements ApplyBatch as a loop over Apply's own non-virtual per-value
// code (one virtual call per batch; rows of width 1 get a loop of their own), so a batch gives
// exactly the values and states that Apply row by row gives.
//
// Thread safety: the rules are immutable after construction; Apply and ApplyBatch may run
// concurrently on different rows.
#pragma once

#include <memory>
#include <string>

#include "pserver/result.h"
#include "pserver/status.h"
#include "pserver/table.h"
#include "pserver/updater.h"

namespace pserver::kv {

// "add": value += push. Any value type; integers wrap modulo 2^bits. No params.
Result<std::unique_ptr<Updater>> MakeAddUpdater(const UpdaterSpec& spec);

// Whether `updater` is the built-in "add" rule (so that storage may fuse its step with a copy:
// TableStore's large rows write old + push into a fresh buffer in one pass).
bool IsAddRule(const Updater& updater);

// "assign": value = push. Any value type. No params.
Result<std::unique_ptr<Updater>> MakeAssignUpdater(const UpdaterSpec& spec);

// "sgd": value -= lr * g. Params: lr >= 0 (default 0.01).
Result<std::unique_ptr<Updater>> MakeSgdUpdater(const UpdaterSpec& spec);

// "adagrad": state n; n += g^2; value -= lr * g / (sqrt(n) + eps).
// Params: lr >= 0 (default 0.01), eps > 0 (default 1e-8).
Result<std::unique_ptr<Updater>> MakeAdagradUpdater(const UpdaterSpec& spec);

// "adam" (Kingma & Ba 2015, with bias correction): state m, v, t (the value's step count).
//   t += 1; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   value -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
// Params: lr >= 0 (default 0.001), beta1 and beta2 in [0, 1) (defaults 0.9, 0.999),
// eps > 0 (default 1e-8).
// t is stored in the table's type: exact up to 2^24 steps per value in a float table (2^53 in
// double); past that it stops growing, which is harmless: the bias corrections 1 - b^t are
// then 1 to float precision unless a beta lies within about 1e-6 of 1.
Result<std::unique_ptr<Updater>> MakeAdamUpdater(const UpdaterSpec& spec);

// "ftrl": FTRL-proximal (McMahan et al. 2013), per coordinate. State z, n.
//   sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma * value; n += g^2;
//   value = |z| <= l1 ? 0 : -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2).
// Params: alpha > 0 (default 0.05), beta >= 0 (default 1), l1 >= 0, l2 >= 0 (defaults 0),
// scaled 0 or 1 (default 0). scaled=1: push_arity 2, a push is (g, s) per value and the value
// is computed with l1 * s and l2 * s (s < 0 or NaN counts as 0): the pusher says how many times the
// objective's penalty the gradients summed so far stand for (a pass over the data sums the
// loss's gradient once), so that the model at any moment is regularised as its data; a push
// with g = 0 only recomputes the value with the new s.
Result<std::unique_ptr<Updater>> MakeFtrlUpdater(const UpdaterSpec& spec);

// "prox": the proximal Newton step of delayed block proximal gradient (L1/L2-regularised
// objectives, e.g. sparse logistic regression). Each weight keeps the state w0, G, U, c: the
// weight at the start of the current iteration, the gradient and curvature accumulated in it,
// and the iteration's clock + 1 (0: never pushed).
// On a push (g, u) with clock ctx.clock: if ctx.clock + 1 != c a new iteration starts (w0 = the
// weight, G = U = 0, c = ctx.clock + 1). Then G += g, U += u, and the weight becomes
// ProxStep(w0, G, U, l1, l2, delta) (pserver/updater.h): the minimiser of
//   G*(x - w0) + (U/2)*(x - w0)^2 + l1*|x| + (l2/2)*x^2   subject to |x - w0| <= delta,
// i.e. x = clamp(S(U*w0 - G, l1) / (U + l2), w0 - delta, w0 + delta) with the soft threshold
// S(a, l1) = sign(a) * max(|a| - l1, 0); w0 if U + l2 <= 0 (no step without curvature).
// Several pushes with the same clock therefore give the step for their summed gradient and
// curvature, whatever their order. Pushes of different clocks must not interleave on a key
// (DBPG guarantees it: a key's block is revisited only after its previous iteration ended); a
// late push of an older clock would start a new iteration. c is stored in the table's type,
// so clocks must stay below 2^24 for float tables (2^53 for double).
// Two layouts (param gradient):
//   gradient=0 (default): elementwise over a row of any width n, every value a weight.
//     push_arity 2: a push row holds n gradients, then n (diagonal) curvatures.
//     State: 4 blocks of n values (w0, G, U, c of every value).
//   gradient=1: a row is one weight and its iteration's gradient, (w, G), so that a pull
//     returns both (DBPG's KKT filter needs G). Width exactly 2, fixed length (FitsWidth
//     refuses others); push_arity 1: a push row is (g, u). State: w0, G, U, c
//     (state_per_value 2, 4 values per row). The weight is the same as gradient=0 gives for
//     the same pushes.
// Params: l1 >= 0, l2 >= 0 (defaults 0), delta > 0 (default 1), gradient 0 or 1 (default 0).
Result<std::unique_ptr<Updater>> MakeProxUpdater(const UpdaterSpec& spec);

}  // namespace pserver::kv
