// The lossy filter "sigmod", significantly modified (docs/filters.md; the paper's filter of the
// same name), on pushes and on pull replies.
//
// Pushes (push=1, the default): a worker pushes only the keys whose accumulated change is
// significant, and keeps the rest -- nothing is lost, only delayed. Round, once a push at the
// worker: the change of key k is its pushed row plus what was kept back for it; the key goes
// when the largest magnitude in its row exceeds the threshold and is at least `relative` times
// the largest of the push, and its change is then sent whole and forgotten; otherwise the key
// is left out of the push and its change kept, to join the key's next push. The threshold
// follows a schedule: threshold * decay^n at the worker's n-th push to the table. A push-pull
// leaves no key out. KVWorker::PushHeld sends what is kept; past held_keys keys the chain sends
// it with the next plain push (filter.h).
//
// Pull replies (pull=1): a server sends a worker only the rows of a kPull that changed since it
// last sent them to that worker -- bytes not the same, and (with pull_threshold T or
// pull_relative R) some value further than max(T, R |last sent|) from the value last sent --
// and the worker puts the others back from its copy of what that server sent it (Fill). The
// server numbers its replies to each worker (a generation, then 1, 2, ...) and each carries a
// copy frame (docs/wire_format.md, 5.3): generation, number, and a bit a key of the part for
// the rows it carries. The worker fills only a reply that follows the last one it read from
// that server, or starts a newer generation; any other that leaves a row out is a copy miss
// (kNotFound): the part is pulled again and the worker's pulls say kPullHoldsNoCopy until the
// server starts a new generation, whose first reply carries every row. So a lost or reordered
// reply costs a round trip, never a wrong value. Each side keeps at most copy_keys rows a peer
// (past it, it starts over) and forgets a peer that left. The copy holds the rows as sent: a
// quantiser after sigmod rounds them first, and a row left out keeps that rounding.
//
// Neither changes a frame in the filter trailer's sense: sigmod never names itself there.
// A NaN or an infinity is refused (kInvalidArgument), and nothing is changed.
//
// Params: push (0 or 1, default 1), threshold >= 0 (default 0: any change goes), relative in
// [0, 1] (default 0), decay in (0, 1] (default 1: a fixed threshold), held_keys (default
// 4,194,304); pull (0 or 1, default 0), pull_threshold >= 0 (default 0: only rows whose bytes
// are unchanged are left out), pull_relative in [0, 1] (default 0), copy_keys (default
// 8,388,608).
//
// Thread safety: thread-safe (its state is under a lock).
#pragma once

#include <memory>

#include "kv/filter/filter.h"

namespace pserver::kv {

// The filter for `spec` on `table` (null: checked without one); kInvalidArgument for an unknown
// param, a value out of range, or a table whose values it cannot round (error_feedback.h).
Result<std::shared_ptr<const Filter>> MakeSignificantFilter(const FilterSpec& spec, const TableSpec* table);

}  // namespace pserver::kv
