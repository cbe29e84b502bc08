// Tables: named key-value collections of one job. Each table has its own value type, row width
// and key placement. Tables are declared by name through Node::DeclareTable; every worker that
// declares the same name with the same spec gets the same TableId.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "pserver/result.h"
#include "pserver/types.h"

namespace pserver {

// How a table's keys are spread over the servers' ranges of the 64-bit key space.
enum class KeyPlacement : uint8_t {
  // Keys are mixed by a bijective 64-bit hash before routing: dense small ids and arbitrary
  // ids alike spread evenly. The default.
  kHashed = 0,
  // Keys lie in the declared `key_range`, which is stretched over the whole key space in an
  // order-preserving way; a key outside the range is refused.
  kRange = 1,
  // Keys are routed as they are (use when they are already uniformly spread, e.g. hashes).
  kIdentity = 2,
};

// Where a server keeps a table's rows.
enum class StorageKind : uint8_t {
  // A hash table holding only the keys ever pushed (or pulled): for huge, sparse key spaces.
  kSparse = 0,
  // One contiguous array over the declared `key_range` (REQUIRES placement kRange and a range
  // of at most 2^32 keys): for dense parameters with small, contiguous ids.
  kDense = 1,
};

// The server-side update rule of a table: how a pushed row changes the stored one.
// Built-in rules (params, with their defaults):
//   "add"     value += push                                  (the default; any value type)
//   "assign"  value = push                                   (any value type)
//   "sgd"     value -= lr * push                             lr=0.01 shrink=0
//             shrink=1: push_arity 2, a row's push is its width gradients g, then its width
//             shrinks s; each value = S(value - lr g, lr s),
//             S the soft threshold (a proximal step for an L1 penalty of weight s; s < 0 is 0)
//   "adagrad" n += g^2; value -= lr * g / (sqrt(n) + eps)    lr=0.01 eps=1e-8
//   "adam"    Kingma & Ba with bias correction, per-key step count
//                                                             lr=0.001 beta1=0.9 beta2=0.999 eps=1e-8
//   "ftrl"    FTRL-proximal (McMahan et al. 2013)            alpha=0.05 beta=1 l1=0 l2=0 scaled=0
//             scaled=1: push_arity 2, a row's push is its width gradients g, then its width
//             scales s; each value is computed with penalties l1 s and l2 s (s the passes over
//             the data its gradients sum, so that the model matches the objective at any time)
//   "prox"    the proximal Newton step of delayed block proximal gradient (pserver::ProxStep in
//             pserver/updater.h): pushes carry a gradient and a curvature per weight, which the
//             server sums per iteration (the pusher's clock); the weight becomes the
//             soft-thresholded step from its value at the iteration's start, clamped to a trust
//             region.                                 l1=0 l2=0 delta=1 (trust region) gradient=0
//             gradient=0: every value is a weight; push_arity 2 (width gradients, then width
//             curvatures). gradient=1: a row is (w, G), a weight and the gradient summed in its
//             last iteration, so that pulls return both; width 2 (fixed), push_arity 1, a push
//             row is (g, u). Either way the result does not depend on the order of an
//             iteration's pushes. adaptive=1 (gradient=1 only): each weight has its own trust
//             region instead of delta, from its last two steps (pserver::ProxTrustRegion: at
//             most delta, at least half a step; delta_min=0.1 its growth's floor).
// The rules other than add/assign take float or double tables only. Parameter ranges: lr, beta,
// l1, l2 >= 0; eps, alpha, delta, delta_min > 0; beta1, beta2 in [0, 1); gradient, adaptive, shrink, scaled 0 or 1. An unknown name,
// a value out of range (or not finite), or a width or push_arity the rule does not take makes
// the table's declaration fail with kInvalidArgument. Integer "add" wraps modulo 2^bits. A
// server may register rules of its own under new names (see pserver/updater.h).
struct UpdaterSpec {
  std::string name = "add";
  std::map<std::string, double> params{};  // hyper-parameters; unknown names are refused

  friend bool operator==(const UpdaterSpec&, const UpdaterSpec&) = default;
};

// The value a row has before its first push.
struct InitializerSpec {
  enum class Kind : uint8_t {
    kZero = 0,
    // Uniform in [-scale, scale], a pure function of (seed, key, column): the same on every run,
    // every server and every cluster layout.
    kUniform = 1,
  };
  Kind kind = Kind::kZero;
  double scale = 0.0;
  uint64_t seed = 0;

  friend bool operator==(const InitializerSpec&, const InitializerSpec&) = default;
};

// A communication filter a table's data messages pass through (docs/filters.md): each is
// applied on send and undone on receipt, on pushes, pulls and their replies alike, in both
// directions. Built-in filters (params, with their defaults):
//   "keycache"  lossless: a request's key list the worker sent  min_keys=16
//           the same server before goes as its signature; the  capacity_keys=8388608
//           server puts it back from its cache of lists (LRU,
//           capacity_keys keys per worker), or asks for the keys again when it lacks it; lists of
//           fewer than min_keys keys are sent as they are. Must come first in a chain.
//   "zstd"  lossless: sorted keys as deltas, then each frame compressed  level=1 min_bytes=256
//           by Zstandard (level 1..19), when that makes it smaller; frames under min_bytes
//           are sent as they are
//   "lz4"   lossless: the same with LZ4 (faster, compresses less)      min_bytes=256
// A server that does not know a filter, or one of its params, refuses the table.
struct FilterSpec {
  std::string name;
  std::map<std::string, double> params{};  // unknown names are refused

  friend bool operator==(const FilterSpec&, const FilterSpec&) = default;
};

// Filters from their text form, as command-line flags take them: names separated by commas, each
// with its params after colons -- "zstd:level=3,lz4", "lz4:min_bytes=0" -- or "" / "none" for no
// filters. kInvalidArgument, naming the item, for a malformed item, an unknown filter or param, a
// value out of range, or a filter named twice.
Result<std::vector<FilterSpec>> ParseFilters(std::string_view text);

struct TableSpec {
  std::string name;                        // non-empty, at most 128 bytes
  ValueType value_type = ValueType::kFloat32;
  // Values per key (1: a vector; d: a matrix/embedding row of d values). Ignored when
  // variable_length is set.
  uint32_t width = 1;
  // Each key carries its own number of values, given by a lengths array in every request.
  bool variable_length = false;
  KeyPlacement placement = KeyPlacement::kHashed;
  KeyRange key_range{0, ~Key{0}};          // used by KeyPlacement::kRange and StorageKind::kDense
  StorageKind storage = StorageKind::kSparse;
  UpdaterSpec updater{};
  // Values a push carries per stored value: 1, or 2 for the "prox" rule (gradient, curvature;
  // with gradient=1 it is 1: the push row (g, u) matches the row (w, G)).
  // Workers check pushes against width * push_arity values per key; a server refuses a table
  // whose rule expects another arity.
  uint32_t push_arity = 1;
  InitializerSpec initializer{};
  // Part of the job's state: written in checkpoints and, when servers resume a job, filled from
  // one (docs/durability.md, section 2). false for a job's scratch table -- sums the workers
  // agree through, say -- which no checkpoint holds and which a resumed job starts empty.
  bool checkpointed = true;
  // The filters every data message of the table goes through, in this order on send (and in
  // the reverse order on receipt); at most 8, each name once. Empty: messages go as they are.
  std::vector<FilterSpec> filters{};

  friend bool operator==(const TableSpec&, const TableSpec&) = default;
};

}  // namespace pserver
