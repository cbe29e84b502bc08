// A server's checkpoint file: every table it holds -- the table's spec and its rows with their
// values and update-rule state -- written atomically and read back with every byte checked
// (docs/durability.md, section 2).
//
// Layout (little-endian; version 2: the spec ends with TableSpec::checkpointed; version 1 files,
// whose specs lack it, are refused by their version):
//
//   header   8  magic "PSCKPT\x01\n"
//            4  u32 version (2)
//            4  u32 number of tables
//            8  u64 checksum of the 16 bytes above (Checksum64, seed 0)
//   table    8  u64 n, then n bytes: the spec (kv::EncodeTableSpec)
//   (each)   4  u32 value type, 4 u32 width (0: variable length), 4 u32 state values per value,
//            4  u32 zero
//            8  u64 n, then n bytes: the keys (u64 each, ascending, unique)
//            8  u64 n, then n bytes: the lengths (i32 each; variable length only, else n = 0)
//            8  u64 n, then n bytes: the values
//            8  u64 n, then n bytes: the update-rule state
//            8  u64 checksum of the table's bytes above, seeded with the previous checksum
//   footer   8  magic "PSCKEND\n"
//            8  u64 the last checksum (the header's when there are no tables)
//
// The chain of checksums makes a table moved, dropped or repeated fail as surely as a flipped
// byte; the footer makes a file cut after a whole table fail. Sizes are checked against what is
// left of the file before anything is allocated, so a corrupt length never allocates much.
//
// Thread safety: the functions are thread-safe (distinct files, or one file read by many).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv/server/table_store.h"
#include "pserver/atomic_file.h"
#include "pserver/result.h"
#include "pserver/table.h"

namespace pserver::kv {

inline constexpr uint32_t kCheckpointFileVersion = 2;

// One table of a checkpoint: its spec and the rows the server held.
struct CheckpointTable {
  TableSpec spec;
  RowBatch rows;
};

// What a written file holds, for the checkpoint's manifest.
struct CheckpointFileInfo {
  uint64_t bytes = 0;     // the file's size
  uint64_t checksum = 0;  // the footer's checksum (the whole chain)
  uint64_t rows = 0;      // rows of every table
};

// Writes `tables` through `out` and commits it (fsync, rename, fsync of the directory). On an
// error (a full disk: kUnavailable naming the path) nothing is left under the final path, and a
// file already there (an older checkpoint) is unchanged.
Result<CheckpointFileInfo> WriteCheckpointFile(AtomicFileWriter& out, const std::vector<CheckpointTable>& tables);

// Reads a file written by WriteCheckpointFile. kNotFound if it does not exist; kUnavailable if
// it cannot be read; kCorruption naming the path, the table (its index, and its name once read)
// and the section for every other fault: not a checkpoint, another version, a file cut short
// anywhere, bytes after the footer, a checksum that does not match, a malformed spec, keys not
// ascending, a row layout other than the spec's, or array sizes that do not fit the layout. `info`, when given, is filled as by the
// writer.
Result<std::vector<CheckpointTable>> ReadCheckpointFile(const std::string& path, CheckpointFileInfo* info = nullptr);

}  // namespace pserver::kv
