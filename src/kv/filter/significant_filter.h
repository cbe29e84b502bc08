// The lossy filter "sigmod", significantly modified (docs/filters.md; the paper's filter of the
// same name): a worker pushes only the keys whose accumulated change is significant, and keeps
// the rest -- nothing is lost, only delayed.
//
// Round, once a push at the worker: the change of key k is its pushed row plus what was kept
// back for it; the key goes when the largest magnitude in its row exceeds the threshold and is
// at least `relative` times the largest of the push, and its change is then sent whole and
// forgotten; otherwise the key is left out of the push and its change kept, to join the key's
// next push. The threshold follows a schedule: threshold * decay^n at the worker's n-th push to
// the table. A push that pulls too (push-pull) leaves no key out: every key's change goes.
// KVWorker::PushHeld sends what is kept. A NaN or an infinity is refused (kInvalidArgument).
//
// It only leaves keys out, which the receiver needs no help to read: it never changes a frame
// and is never in a message's trailer.
//
// Params: threshold >= 0 (default 0: any change goes), relative in [0, 1] (default 0),
// decay in (0, 1] (default 1: a fixed threshold).
//
// Thread safety: thread-safe (what it keeps is under a lock).
#pragma once

#include <memory>

#include "kv/filter/filter.h"

namespace pserver::kv {

// The filter for `spec` on `table` (null: checked without one); kInvalidArgument for an unknown
// param, a value out of range, or a table whose values it cannot round (error_feedback.h).
Result<std::shared_ptr<const Filter>> MakeSignificantFilter(const FilterSpec& spec, const TableSpec* table);

}  // namespace pserver::kv
