// A checkpoint's directory and its manifest (docs/durability.md, section 2).
//
// A checkpoint of a job is a directory DIR/ckpt-NNNNNN (N counting up from 1) holding one file
// per server (kv/server/checkpoint_file.h) and, written last by the scheduler once every server
// wrote its file, MANIFEST: the manifest makes the checkpoint complete; a directory without a
// valid one (a checkpoint that failed or was cut short) is never used. The manifest is text:
//
//   pserver checkpoint 1
//   epoch 12
//   file server-0.psckpt bytes 1234 rows 56 checksum 0123456789abcdef
//   ...                                          (one line per server file)
//   end 89abcdef01234567                         (Checksum64 of every byte before this line)
//
// Thread safety: the functions are thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::cluster {

struct CheckpointManifest {
  struct File {
    std::string name;  // within the checkpoint's directory; no '/'
    uint64_t bytes = 0;
    uint64_t rows = 0;
    uint64_t checksum = 0;
    friend bool operator==(const File&, const File&) = default;
  };
  uint64_t epoch = 0;  // the routing epoch when the servers were asked
  std::vector<File> files;
  friend bool operator==(const CheckpointManifest&, const CheckpointManifest&) = default;
};

inline constexpr const char* kManifestName = "MANIFEST";

// The manifest's text.
std::string EncodeManifest(const CheckpointManifest& m);
// kCorruption naming `where` and the line for text that is not a manifest of this version,
// whose end checksum does not match, or with a file name holding '/' or listed twice.
Result<CheckpointManifest> ParseManifest(const std::string& text, const std::string& where);

// The directory of checkpoint `n` in `dir`: dir/ckpt-00000n.
std::string CheckpointDirectory(const std::string& dir, uint64_t n);
// The numbers of the checkpoint directories in `dir` (complete or not), ascending; empty if
// `dir` does not exist. kUnavailable if it cannot be listed.
Result<std::vector<uint64_t>> ListCheckpoints(const std::string& dir);

// The latest complete checkpoint in `dir`: its directory and manifest. Checkpoints without a
// manifest are passed over (logged); a manifest that exists but does not parse is an error
// (kCorruption naming it), never skipped silently. kNotFound naming `dir` if there is none.
struct FoundCheckpoint {
  std::string directory;
  CheckpointManifest manifest;
};
Result<FoundCheckpoint> LatestCheckpoint(const std::string& dir);

}  // namespace pserver::cluster
