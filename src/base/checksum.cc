#include "pserver/checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace pserver {

uint64_t Checksum64(const void* data, size_t size, uint64_t seed) { return XXH64(data, size, seed); }

struct Checksum64Stream::State {
  XXH64_state_t xxh;
};

Checksum64Stream::Checksum64Stream(uint64_t seed) : state_(std::make_unique<State>()) {
  (void)XXH64_reset(&state_->xxh, seed);
}

Checksum64Stream::~Checksum64Stream() = default;

void Checksum64Stream::Update(const void* data, size_t size) { (void)XXH64_update(&state_->xxh, data, size); }

uint64_t Checksum64Stream::Digest() const { return XXH64_digest(&state_->xxh); }

}  // namespace pserver
