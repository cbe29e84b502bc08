// The key cache ("keycache", docs/filters.md): a worker that sent a request's key list to a
// server before sends its signature instead, and the server puts the list back from its cache.
//
// The signature is the XXH3 128-bit hash of the keys' bytes: a list's name is its content. Only
// lists of at least `min_keys` keys (16 by default) are cached, on both sides.
//
//  - The worker (sender) remembers, per server and routing epoch, the signatures of the lists it
//    sent in full, least recently used first, up to `capacity_keys` keys' worth (8 Mi by default);
//    a list it remembers goes as a reference: frame 0 becomes 24 bytes, the signature (lo, hi)
//    and the key count (u64 each, little-endian), mask 0x01 in the trailer. A resend (kFlagResend)
//    and a part sliced by an older view than the newest the worker sent that server always carry
//    their keys.
//  - The server (receiver) keeps, per worker, every list of at least min_keys keys it receives
//    in full, least recently used first, up to capacity_keys keys -- the worker's memory of it,
//    which it evicts alike (the same lists in the same order, the worker's channel order), so
//    that a reference misses only when the server lost what the worker sent (a request it
//    refused before decoding it, a send that failed). Each cache is tagged with the messages'
//    routing epoch: a message of a newer epoch empties it, and the worker forgets its
//    signatures too, so caches are dropped when the routing view changes. A reference it holds
//    is replaced by a copy of the list; one it lacks is a miss: kNotFound, which the server
//    answers with kFlagKeysMissing and the worker mends by sending the part again with its keys.
//    A reference of another size than 24 bytes, or whose count differs from the cached list's,
//    is refused (kCorruption). A miss never applies anything, and a wrong list is never used (a
//    128-bit collision aside).
//
// It must be the first filter of a chain: the others then see the reference, not the keys.
//
// Thread safety: thread-safe.
#pragma once

#include <memory>

#include "kv/filter/filter.h"

namespace pserver::kv {

// kInvalidArgument for an unknown param or a value out of range (min_keys >= 1; capacity_keys
// >= min_keys; whole numbers).
Result<std::shared_ptr<const Filter>> MakeKeyCacheFilter(const FilterSpec& spec);

}  // namespace pserver::kv
