// Fuzz target for the data-cache loader (ReadDataCache, apps/linear/data_cache.h): the input is
// the cache file's bytes, after one mode byte that helps the fuzzer past the cheap checks:
//   bit 0: set the header's payload size (offset 40) to 4R + 8(R+1) + 12E for its R and E
//   bit 1: rewrite the checksum (offset 56) as the file format says: XXH64 of header bytes
//          [0, 56), then chained over labels, offsets, feature ids and values (when the file
//          holds the payload its header announces)
//
// Beyond "no crash, no sanitizer report" it checks, trapping when one breaks:
//   - ReadDataCache accepts or refuses with kCorruption naming the file;
//   - an accepted data set keeps the Dataset invariants (Dataset::FromArrays of its arrays
//     succeeds and gives the same data set);
//   - WriteDataCache of an accepted data set, read again, gives the same data set (bit for bit;
//     non-finite values are refused, as by the libsvm reader: Dataset's invariants).

#include <cstddef>
#include <cstdint>
#include <string>

#include "apps/linear/data_cache.h"
#include "apps/linear/dataset.h"
#include "fuzz/fuzz_util.h"
#include "pserver/checksum.h"

using pserver::StatusCode;
using pserver::fuzz::Check;
namespace linear = pserver::linear;

namespace {

constexpr size_t kHeaderBytes = 64;

uint64_t GetU64(const std::string& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[at + i])) << (8 * i);
  return v;
}

void PutU64(std::string& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}

// The payload size the header's row and entry counts call for; false if it overflows.
bool PayloadSize(uint64_t rows, uint64_t nnz, uint64_t* size) {
  constexpr uint64_t kLimit = uint64_t{1} << 40;
  if (rows >= kLimit || nnz >= kLimit) return false;
  *size = 4 * rows + 8 * (rows + 1) + 12 * nnz;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (bytes.size() >= kHeaderBytes) {
    const uint64_t rows = GetU64(bytes, 16);
    const uint64_t nnz = GetU64(bytes, 24);
    uint64_t payload = 0;
    if (PayloadSize(rows, nnz, &payload)) {
      if (mode & 1) PutU64(bytes, 40, payload);
      if ((mode & 2) && bytes.size() == kHeaderBytes + payload) {
        uint64_t h = pserver::Checksum64(bytes.data(), 56);
        size_t at = kHeaderBytes;
        for (uint64_t len : {4 * rows, 8 * (rows + 1), 8 * nnz, 4 * nnz}) {
          h = pserver::Checksum64(bytes.data() + at, len, h);
          at += len;
        }
        PutU64(bytes, 56, h);
      }
    }
  }
  const pserver::fuzz::ScratchDir& dir = pserver::fuzz::ScratchDir::Get();
  const std::string path = dir.Path("data.cache");
  pserver::fuzz::WriteBytes(path, bytes);
  pserver::Result<linear::Dataset> read = linear::ReadDataCache(path);
  if (!read.ok()) {
    Check(read.status().code() == StatusCode::kCorruption);
    Check(read.status().message().find(path) != std::string::npos);
    return 0;
  }
  const linear::Dataset& d = *read;
  pserver::Result<linear::Dataset> rebuilt =
      linear::Dataset::FromArrays(d.labels(), d.offsets(), d.feature_ids(), d.values());
  Check(rebuilt.ok() && pserver::fuzz::SameData(*rebuilt, d));
  const std::string again = dir.Path("data-again.cache");
  Check(linear::WriteDataCache(d, again).ok());
  pserver::Result<linear::Dataset> reread = linear::ReadDataCache(again);
  Check(reread.ok() && pserver::fuzz::SameData(*reread, d));
  return 0;
}
