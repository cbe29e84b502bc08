// The lossy filters "fp16" and "q8" (docs/filters.md): values go as 16-bit floats or as 8-bit
// integers, on pushes and on pull replies, with error feedback.
//
// Round (once a push, at the worker; once a pull reply, at the server) gives each column j of
// the rows (a row: the width * push_arity values a push carries per key, or the width values a
// reply does) a power-of-two scale 2^e_j from its largest magnitude, and rounds each value v to
// the nearest of s * 2^e_j, s an IEEE half (fp16: 11 significant bits, |s| <= 2^15) or an
// integer |s| <= 127 (q8). What it took off, v - rounded, is kept per key -- at the worker for
// its pushes, at a server per worker for its replies -- and added to the next values of the key
// before they are rounded (error feedback): over many pushes the sum sent is the sum pushed, to
// within the last rounding. A reply takes back what was kept for its worker only up to one step
// of the value's own grid (a pull is a fresh read), and a value stored as zero goes as zero,
// dropping what was kept (an L1 model pulled stays sparse); a pull with kFlagExact
// (RequestOptions::exact) is not rounded at all. A value rounded past the type's largest is
// clamped to it. A NaN or an infinity is refused (kInvalidArgument, naming the key);
// a server then answers the pull unrounded.
//
// Encode carries rounded values exactly: frame 1 (the values) becomes the XXH64 checksum of the
// values as they were (u64), the column exponents (int16 each), then the codes (int8, or the
// half's 16 bits), row by row, all little-endian. It picks the exponents again from the frame's
// own maxima -- a part of a push holds a subset of its rows, and powers of two keep those values
// on the grid -- and checks that every value decodes to itself bit for bit; a frame where one
// does not (values the filter did not round) goes as it is, as does one it would not shrink.
// Decode refuses (kCorruption) a frame whose size is not the prefix plus whole rows, an exponent
// out of range, a half that is an infinity or NaN, a value out of the type's range, or values
// whose checksum differs.
//
// Params: push (0 or 1, default 1): round pushes; pull (0 or 1, default 1): round pull replies.
//
// Thread safety: thread-safe (the error feedback is under a lock).
#pragma once

#include <cstdint>
#include <memory>

#include "kv/filter/filter.h"

namespace pserver::kv {

enum class Precision : uint8_t { kFp16, kQ8 };

// The filter for `spec` (its name "fp16" or "q8") on `table` (null: checked without one);
// kInvalidArgument for an unknown param, a value out of range, neither direction on, or a table
// whose values it cannot round (error_feedback.h).
Result<std::shared_ptr<const Filter>> MakeQuantizeFilter(Precision precision, const FilterSpec& spec,
                                                         const TableSpec* table);

// The nearest IEEE half to `y` (|y| <= 2^15), round half to even, as a double; and a half's
// bits for a value that is one, and back. Exposed for tests.
double RoundToHalf(double y);
uint16_t HalfBits(double half);
double HalfValue(uint16_t bits);

}  // namespace pserver::kv
