// The server-side rule of delayed block proximal gradient (DBPG), registered as "dbpg".
//
// A "dbpg" table has rows of width 2: (w, G) -- the weight and the aggregated gradient of the
// iteration that last touched it -- and each push carries (g, u), one worker's gradient and
// diagonal curvature bound for the key in iteration `clock`. The rule accumulates every push of
// one iteration (the pusher's clock) and sets
//
//   w = argmin_x  G (x - w0) + U/2 (x - w0)^2 + l1 |x| + l2/2 x^2,  |x - w0| <= delta
//     = clamp(S(U w0 - G, l1) / (U + l2), w0 - delta, w0 + delta)
//
// where w0 is the weight before the iteration and S the soft threshold, so the result after
// the last push of an iteration does not depend on the order pushes arrive in. Pulling a key
// returns (w, G): workers read the new weight and, for the KKT filter, the full gradient.
//
// State per row: w0, G, U and the iteration (clock + 1; 0 = none), kept beside the row so that
// checkpoints and migration carry it.
//
// Params: l1 >= 0, l2 >= 0, delta > 0 (the trust region; default 5).
//
// Thread safety: immutable; Apply may run concurrently on different rows.
#pragma once

#include <memory>

#include "pserver/updater.h"

namespace pserver::linear {

inline constexpr const char* kDbpgRuleName = "dbpg";

Result<std::unique_ptr<Updater>> MakeDbpgRule(const UpdaterSpec& spec);

// Registers "dbpg" in `registry` (servers of a training job call this).
Status RegisterLinearRules(UpdaterRegistry& registry);

// The closed-form step above, for tests and for the reference solver.
double ProxStep(double w0, double g, double u, double l1, double l2, double delta);

}  // namespace pserver::linear
