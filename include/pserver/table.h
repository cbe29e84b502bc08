// Tables: named key-value collections of one job. Each table has its own value type, row width
// and key placement. Tables are declared by name through Node::DeclareTable; every worker that
// declares the same name with the same spec gets the same TableId.
#pragma once

#include <string>

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

struct TableSpec {
  std::string name;                        // non-empty, at most 128 bytes
  ValueType value_type = ValueType::kFloat32;
  // Values per key (1: a vector; d: a matrix/embedding row of d values). Ignored when
  // variable_length is set.
  uint32_t width = 1;
  // Each key carries its own number of values, given by a lengths array in every request.
  bool variable_length = false;
  KeyPlacement placement = KeyPlacement::kHashed;
  KeyRange key_range{0, ~Key{0}};          // used by KeyPlacement::kRange

  friend bool operator==(const TableSpec&, const TableSpec&) = default;
};

}  // namespace pserver
