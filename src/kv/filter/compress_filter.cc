#include "kv/filter/compress_filter.h"

#include <fmt/format.h>
#include <lz4.h>
#include <zstd.h>

#include <cmath>
#include <cstring>
#include <span>
#include <string>

#include "base/wire_io.h"
#include "kv/key_deltas.h"
#include "pserver/checksum.h"

namespace pserver::kv {
namespace {

using transport::Bytes;

// Frames above this size go as they are, and a decoded size above it is refused (LZ4's limit).
constexpr uint64_t kMaxFrameBytes = LZ4_MAX_INPUT_SIZE;
constexpr int kMaxZstdLevel = 19;

using base::LoadLE;
using base::StoreLE;

// Frame 0 of a request holds its keys, sorted; a reply's frame 0 is empty.
bool HoldsKeys(const transport::Header& h, size_t frame) {
  return frame == 0 && !h.is_reply() && transport::IsDataMessage(h.type);
}

struct ZstdContexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
ZstdContexts& Zstd() {
  thread_local ZstdContexts contexts;
  return contexts;
}

class CompressFilter final : public Filter {
 public:
  CompressFilter(Codec codec, int level, uint64_t min_bytes) : codec_(codec), level_(level), min_bytes_(min_bytes) {}

  FilterCode code() const override { return codec_ == Codec::kZstd ? FilterCode::kZstd : FilterCode::kLz4; }
  std::string_view name() const override { return codec_ == Codec::kZstd ? "zstd" : "lz4"; }

  Result<uint8_t> Encode(const transport::Header& h, transport::Frames& frames) const override {
    uint8_t mask = 0;
    for (size_t i = 0; i < frames.size() && i < kMaxFilteredFrames; ++i) {
      const Bytes& f = frames[i];
      if (f.size() < min_bytes_ || f.size() > kMaxFrameBytes || f.empty()) continue;
      Bytes input = f;
      const bool keys = HoldsKeys(h, i);
      if (keys && f.size() % sizeof(Key) != 0) continue;  // not keys: changed by a filter before this one
      if (keys) input = EncodeKeyDeltas({reinterpret_cast<const Key*>(f.data()), f.size() / sizeof(Key)});
      const size_t prefix = keys ? 24 : 16;
      const size_t bound = codec_ == Codec::kZstd ? ZSTD_compressBound(input.size())
                                                  : static_cast<size_t>(LZ4_compressBound(static_cast<int>(input.size())));
      if (bound == 0 || input.size() > kMaxFrameBytes) continue;
      Bytes out = Bytes::Uninitialized(prefix + bound);
      PSERVER_ASSIGN_OR_RETURN(size_t packed, Compress(input, out.data() + prefix, bound));
      if (prefix + packed >= f.size()) continue;  // no gain: the frame goes as it is
      StoreLE<uint64_t>(out.data(), keys ? f.size() / sizeof(Key) : f.size());
      if (keys) StoreLE<uint64_t>(out.data() + 8, input.size());
      StoreLE<uint64_t>(out.data() + prefix - 8, Checksum64(f.data(), f.size()));
      frames[i] = Bytes(out.owner(), out.data(), prefix + packed);
      mask |= static_cast<uint8_t>(1u << i);
    }
    return mask;
  }

  Status Decode(const transport::Header& h, uint8_t mask, transport::Frames& frames) const override {
    for (size_t i = 0; i < kMaxFilteredFrames; ++i) {
      if (!(mask & (1u << i))) continue;
      const Bytes& f = frames[i];
      const bool keys = HoldsKeys(h, i);
      const size_t prefix = keys ? 24 : 16;
      if (f.size() < prefix) {
        return Status::Corruption(fmt::format("{} frame {} is {} bytes, shorter than its {}-byte size prefix", name(), i,
                                              f.size(), prefix));
      }
      const uint64_t count = LoadLE<uint64_t>(f.data());
      const uint64_t raw = keys ? LoadLE<uint64_t>(f.data() + 8) : count;
      if (raw > kMaxFrameBytes || (keys && (count > kMaxFrameBytes / sizeof(Key) || raw > 10 * count))) {
        return Status::Corruption(fmt::format("{} frame {} claims {} {}, more than a frame may hold", name(), i,
                                              keys ? count : raw, keys ? "keys" : "bytes"));
      }
      const std::span<const std::byte> packed{f.data() + prefix, f.size() - prefix};
      PSERVER_RETURN_IF_ERROR(CheckStatedSize(packed, raw, i));  // before allocating it
      Bytes out = Bytes::Uninitialized(raw);
      PSERVER_RETURN_IF_ERROR(Decompress(packed, out, i));
      if (keys) {
        Result<SharedArray<Key>> decoded = DecodeKeyDeltas({out.data(), out.size()}, count);
        if (!decoded.ok()) return decoded.status().WithContext(fmt::format("{} frame {} (keys)", name(), i));
        out = transport::AsBytes(*decoded);
      }
      if (Checksum64(out.data(), out.size()) != LoadLE<uint64_t>(f.data() + prefix - 8)) {
        return Status::Corruption(fmt::format("{} frame {} decoded to bytes whose checksum is not the sender's", name(), i));
      }
      frames[i] = std::move(out);
    }
    return Status::Ok();
  }

 private:
  // A stated size the compressed bytes cannot hold is refused before it is allocated: a
  // Zstandard frame records its content size; an LZ4 block expands at most 255 times (plus a few
  // bytes).
  Status CheckStatedSize(std::span<const std::byte> packed, uint64_t raw, size_t frame) const {
    const uint64_t most = codec_ == Codec::kZstd ? ZSTD_getFrameContentSize(packed.data(), packed.size())
                                                 : 255 * uint64_t{packed.size()} + 64;
    if (codec_ == Codec::kZstd ? most != raw : raw > most) {
      return Status::Corruption(fmt::format("{} frame {} states {} bytes, which its {} compressed bytes do not hold",
                                            name(), frame, raw, packed.size()));
    }
    return Status::Ok();
  }

  Result<size_t> Compress(const Bytes& in, std::byte* out, size_t cap) const {
    if (codec_ == Codec::kZstd) {
      if (Zstd().c == nullptr) return Status::Internal("zstd: no compression context (out of memory)");
      const size_t n = ZSTD_compressCCtx(Zstd().c, out, cap, in.data(), in.size(), level_);
      if (ZSTD_isError(n)) return Status::Internal(fmt::format("zstd could not compress: {}", ZSTD_getErrorName(n)));
      return n;
    }
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out),
                                       static_cast<int>(in.size()), static_cast<int>(cap));
    if (n <= 0) return Status::Internal("lz4 could not compress a frame");
    return static_cast<size_t>(n);
  }

  Status Decompress(std::span<const std::byte> in, const Bytes& out, size_t frame) const {
    size_t got = 0;
    if (codec_ == Codec::kZstd) {
      if (Zstd().d == nullptr) return Status::Internal("zstd: no decompression context (out of memory)");
      got = ZSTD_decompressDCtx(Zstd().d, out.data(), out.size(), in.data(), in.size());
      if (ZSTD_isError(got)) {
        return Status::Corruption(fmt::format("zstd frame {} does not decompress: {}", frame, ZSTD_getErrorName(got)));
      }
    } else {
      const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()),
                                        static_cast<int>(in.size()), static_cast<int>(out.size()));
      if (n < 0) return Status::Corruption(fmt::format("lz4 frame {} does not decompress", frame));
      got = static_cast<size_t>(n);
    }
    if (got != out.size()) {
      return Status::Corruption(
          fmt::format("{} frame {} decompressed to {} bytes, its prefix says {}", name(), frame, got, out.size()));
    }
    return Status::Ok();
  }

  const Codec codec_;
  const int level_;
  const uint64_t min_bytes_;
};

}  // namespace

Result<std::shared_ptr<const Filter>> MakeCompressFilter(Codec codec, const FilterSpec& spec) {
  double level = 1, min_bytes = 256;
  for (const auto& [param, value] : spec.params) {
    if (param == "level" && codec == Codec::kZstd) {
      if (!(value >= 1 && value <= kMaxZstdLevel) || value != std::floor(value)) {
        return Status::InvalidArgument(
            fmt::format("filter 'zstd': level must be a whole number from 1 to {}, got {}", kMaxZstdLevel, value));
      }
      level = value;
    } else if (param == "min_bytes") {
      if (!(value >= 0 && value <= static_cast<double>(kMaxFrameBytes)) || value != std::floor(value)) {
        return Status::InvalidArgument(fmt::format("filter '{}': min_bytes must be a whole number of bytes from 0 to {}, "
                                                   "got {}",
                                                   spec.name, kMaxFrameBytes, value));
      }
      min_bytes = value;
    } else {
      return Status::InvalidArgument(fmt::format("filter '{}' has no param '{}' (it takes {})", spec.name, param,
                                                 codec == Codec::kZstd ? "level, min_bytes" : "min_bytes"));
    }
  }
  return std::shared_ptr<const Filter>(
      std::make_shared<CompressFilter>(codec, static_cast<int>(level), static_cast<uint64_t>(min_bytes)));
}

}  // namespace pserver::kv
