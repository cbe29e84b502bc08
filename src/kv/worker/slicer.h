// Slicing of a sorted request into one part per server.
//
// A worker's request carries its keys sorted ascending without duplicates. The slicer decides,
// from the table's placement (cluster/key_placement.h) and the ring (cluster/ring.h), which
// keys go to which server, as runs of indices into the request's arrays so that keys and values
// can be sent without copying them key by key -- or, for a hashed request over several servers
// (runs of one or two keys), as each key's server, so that one pass moves every row to its
// server's buffer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "cluster/key_placement.h"
#include "cluster/ring.h"
#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/status.h"
#include "pserver/types.h"

namespace pserver::kv {

// OK if `keys` is strictly ascending. Otherwise InvalidArgument naming the first offending
// position and keys: "duplicate key 42 at index 3" or
// "keys not sorted ascending at index 7: 42 follows 99".
Status CheckSortedUnique(std::span<const Key> keys);

// The indices [begin, end) of a request's key array.
struct IndexRun {
  uint32_t begin = 0;
  uint32_t end = 0;
  friend bool operator==(IndexRun, IndexRun) = default;
};

// Most slices are one run (a request to one server, or a range-placed table).
using IndexRuns = absl::InlinedVector<IndexRun, 1>;

// The part of a request that goes to one server.
struct Slice {
  uint32_t server = 0;         // the server's rank
  IndexRuns runs;              // ascending (key order); consecutive runs never touch
  uint32_t num_keys = 0;       // the total length of runs
};
// The slices of one request, by server. Most requests go to one server: inline.
using Slices = absl::InlinedVector<Slice, 1>;

// Splits `keys` by the owner of each key's routing key (cluster::RoutingKey) on `ring`.
// Returns one Slice per server that receives at least one key, ordered by server rank; an
// empty request gives an empty vector. Within a slice the runs list the key indices in
// ascending order (so each server gets its keys sorted), with consecutive indices merged into
// maximal runs. For kRange and kIdentity a slice has about one run per ring segment it
// touches; for kHashed with several servers the runs are short (one key per run on average
// with many servers), and with one server the whole request is one run.
//
// Cost: O(s log n) for kRange and kIdentity, s being the number of ring segments the request
// touches; O(n) expected for kHashed (one mix and one ring lookup per key, see Ring::Owner).
// Allocates only the result.
//
// REQUIRES: `keys` sorted ascending without duplicates (see CheckSortedUnique); if violated
// the result is unspecified, but no memory outside `keys` is read.
// Returns InvalidArgument if a kRange placement's range is empty (first > last), if a key lies
// outside it (naming the key, its index and the range), or if there are 2^32 keys or more.
//
// `order`, when given, receives for a kHashed request split over several servers the request's
// key indices grouped by slice: the keys of the result's slice s are, in ascending order,
// (*order)[first .. first + num_keys), where `first` sums the num_keys of the slices before s.
// The slices' runs are then left empty (num_keys still counts their keys). Such a request
// would be mostly runs of one or two keys; moving its rows by `order` (GatherByOrder,
// ScatterByOrder) is faster. In every other case (including a kHashed request whose keys all
// go to one server) `order` is left empty and the runs are filled.
// The checks of SliceKeys that depend on the keys and the placement alone: OK when SliceKeys
// would slice `keys` (or any subset of them) under any ring.
Status CheckSliceable(std::span<const Key> keys, const cluster::Placement& placement);

Result<Slices> SliceKeys(std::span<const Key> keys, const cluster::Placement& placement, const cluster::Ring& ring,
                         std::vector<uint32_t>* order = nullptr);

// The index of the first key of `keys` that server `server` does not own on `ring` under
// `placement` (a kRange key outside the declared range counts as not owned), or nullopt when it
// owns them all: the server's check that it may apply a request. REQUIRES: `keys` sorted
// ascending without duplicates. O(s) segment lookups for kRange and kIdentity when owned (s: the
// segments the keys span), O(n) for kHashed.
std::optional<size_t> FirstNotOwned(std::span<const Key> keys, const cluster::Placement& placement,
                                    const cluster::Ring& ring, uint32_t server);

// The maximal runs of consecutive values in ascending `indices`.
IndexRuns RunsOf(std::span<const uint32_t> indices);
// Offsets (in values) of each key's first value in a variable-length request:
// offsets[i] = lens[0] + ... + lens[i-1], for i = 0..lens.size().
std::vector<uint64_t> Offsets(const SharedArray<int32_t>& lens);

// Copies the rows at `runs`' indices (row i at src + i * row) to `dst`, one after another
// (one memcpy per run).
void GatherRows(const std::byte* src, const IndexRuns& runs, size_t row, std::byte* dst);
// The inverse of GatherRows: consecutive rows from `src` go to `runs`' indices in `dst`.
void ScatterRows(const std::byte* src, const IndexRuns& runs, size_t row, std::byte* dst);

// Row p of `dst` becomes row order[p] of `src` (rows of `row` bytes; row i at src + i * row):
// with one slice's part of SliceKeys' `order`, dst receives that slice's rows. No row depends
// on another, so the copies overlap in the CPU.
void GatherByOrder(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* dst);
// The inverse: row p of `src` goes to row order[p] of `out`.
void ScatterByOrder(const std::byte* src, std::span<const uint32_t> order, size_t row, std::byte* out);

}  // namespace pserver::kv
