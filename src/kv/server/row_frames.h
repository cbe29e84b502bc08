// Rows of a table (RowBatch) as the first four frames of a server-to-server message -- keys,
// values, lengths (variable length), rule states; header.value_type, header.width (0: variable
// length) and header.aux (the rule's state values per value) describe them. Membership changes
// (kMigrateRows) and replication (kReplicate) move rows so.
#pragma once

#include <cstddef>

#include "kv/server/table_store.h"
#include "pserver/result.h"
#include "transport/message.h"

namespace pserver::kv {

// Appends the four frames of `rows` to `m` and sets its header's value type, width and aux.
void AppendRowFrames(const RowBatch& rows, transport::Message* m);
// The rows of frames 0..3 of `m` (sharing its buffers), checked for what a batch must be
// before InsertRows checks the rest; kCorruption naming `what` otherwise.
Result<RowBatch> RowFramesOf(const transport::Message& m, const char* what);
// Rows first..last of `all`, as a batch of their own (sharing its buffers).
RowBatch SliceRows(const RowBatch& all, size_t first, size_t last);

}  // namespace pserver::kv
