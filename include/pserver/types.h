// Identities and small value types shared by the whole public API.
//
// Identities are strong types so that a node id cannot be passed where a rank or a table is
// expected. All are trivially copyable value types.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace pserver {

// Parameter keys are 64-bit integers; a request carries them sorted ascending, without duplicates.
using Key = uint64_t;

// The node's part in the job.
enum class Role : uint8_t { kScheduler = 0, kServer = 1, kWorker = 2 };
std::string_view RoleName(Role role);

#define PSERVER_STRONG_ID_(Name, Rep)                                   \
  struct Name {                                                         \
    Rep value = 0;                                                      \
    constexpr Name() = default;                                         \
    constexpr explicit Name(Rep v) : value(v) {}                        \
    friend constexpr auto operator<=>(Name, Name) = default;            \
    friend constexpr bool operator==(Name, Name) = default;             \
  }

// A node's id, given by the scheduler at registration. The scheduler is always id 0.
PSERVER_STRONG_ID_(NodeId, uint32_t);
// A node's index among the nodes of its role: 0..num_servers-1 or 0..num_workers-1.
PSERVER_STRONG_ID_(Rank, uint32_t);
// A table's id, given by the scheduler when the table is declared by name.
PSERVER_STRONG_ID_(TableId, uint32_t);
// A worker's request number: unique and increasing per worker, from 1.
PSERVER_STRONG_ID_(Timestamp, int64_t);
// The version of the cluster's routing (membership and key ranges); grows with each change.
PSERVER_STRONG_ID_(Epoch, uint64_t);
#undef PSERVER_STRONG_ID_

inline constexpr NodeId kSchedulerId{0};

// An inclusive range [first, last] of the 64-bit key space (inclusive so that the whole space,
// [0, 2^64-1], is representable).
struct KeyRange {
  Key first = 0;
  Key last = 0;
  constexpr bool Contains(Key k) const { return first <= k && k <= last; }
  friend constexpr bool operator==(KeyRange, KeyRange) = default;
};

// Which nodes a barrier waits for.
enum class BarrierGroup : uint8_t { kAll = 0, kServers = 1, kWorkers = 2 };

// The element type of a table's values.
enum class ValueType : uint8_t { kFloat32 = 1, kFloat64 = 2, kInt32 = 3, kInt64 = 4 };
std::string_view ValueTypeName(ValueType type);
// Size in bytes of one element; 0 for a value that is not a ValueType.
size_t ValueTypeSize(ValueType type);

template <typename T> struct ValueTypeOf;
template <> struct ValueTypeOf<float> { static constexpr ValueType value = ValueType::kFloat32; };
template <> struct ValueTypeOf<double> { static constexpr ValueType value = ValueType::kFloat64; };
template <> struct ValueTypeOf<int32_t> { static constexpr ValueType value = ValueType::kInt32; };
template <> struct ValueTypeOf<int64_t> { static constexpr ValueType value = ValueType::kInt64; };

}  // namespace pserver

template <> struct std::hash<pserver::NodeId> {
  size_t operator()(pserver::NodeId id) const noexcept { return std::hash<uint32_t>()(id.value); }
};
template <> struct std::hash<pserver::TableId> {
  size_t operator()(pserver::TableId id) const noexcept { return std::hash<uint32_t>()(id.value); }
};
