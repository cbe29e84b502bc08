// Checksums of every file format pserver writes (checkpoints, models, data caches): XXH64 of
// Yann Collet's xxHash (Debian's libxxhash), 64-bit, seeded. A file format chains them where it
// checks sections one by one: the checksum of a section is seeded with the previous one's, so a
// section moved, dropped or repeated fails too.
//
// Thread safety: the function is thread-safe; a Checksum64Stream is thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace pserver {

// XXH64 of `size` bytes at `data`, seeded with `seed`.
uint64_t Checksum64(const void* data, size_t size, uint64_t seed = 0);

// XXH64 of bytes given in pieces: Digest() equals Checksum64 of their concatenation with the
// same seed, and may be called between updates.
class Checksum64Stream {
 public:
  explicit Checksum64Stream(uint64_t seed = 0);
  ~Checksum64Stream();
  Checksum64Stream(const Checksum64Stream&) = delete;
  Checksum64Stream& operator=(const Checksum64Stream&) = delete;

  void Update(const void* data, size_t size);
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace pserver
