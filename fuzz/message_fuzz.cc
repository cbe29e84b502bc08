// libFuzzer target for everything a peer's bytes reach before any node logic: the wire
// decoder (header codec, frame table, inline and out-of-line frames) and the control-plane
// body decoders (every frame is tried as each body, the ClusterView of kViewChange and of a
// redirect included).
//
// Beyond "no crash, no ASan report", it checks two properties and traps when they break:
//   - a wire frame sequence that DecodeWire accepts re-encodes to the received header bytes
//     (apart from a control message's value type 0, which reads as float32), keeps every
//     out-of-line frame, in order, without copying, and its payload frames, frame table and
//     padding account for every byte of the head;
//   - a control body that a decoder accepts re-encodes to exactly the received bytes
//     (the encodings are canonical), and kv::ValidateTableSpec never crashes on a decoded spec;
//   - a data message that DecodeWire accepts is undone by the filter chains of
//     docs/wire_format.md section 5.3 (keycache then zstd; lz4; q8 then zstd; fp16) with OK, kCorruption or a
//     key-cache miss (kNotFound) and nothing else; undone, it has no kFlagFiltered and one frame
//     fewer than it came with (the trailer). A pull reply with a copy frame is filled by a
//     sigmod pull=1 chain (as for a part of n keys, n read from the frame) with OK, kCorruption
//     or a copy miss; filled, it holds n rows and no copy frame.
//
// Input layout (see docs/wire_format.md, "Fuzzing"):
//   byte 0          mode bits, to help the fuzzer past the cheap checks:
//                     bit 0: write a valid magic and version into the first frame
//                     bit 1: zero the reserved header bytes
//                     bit 2: set num_frames to the number of frames after the first
//                     bit 3: rebuild the first frame as a well-formed head: its first
//                            kHeaderSize (72) bytes (zero-padded), a frame table naming
//                            each later frame as out of line, then the rest of its bytes as
//                            one inline frame (num_frames set to match; applied before
//                            bits 0-2)
//   then frames     each a 2-byte little-endian length (clamped to what is left) and that many
//                   bytes; the first frame is the header.
//
// The seeds in fuzz/corpus/message_fuzz are written by fuzz/message_corpus.cc with the codec
// itself (rerun it when the wire format changes; ctest's message_corpus test says when).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "cluster/control_messages.h"
#include "kv/filter/filter.h"
#include "kv/table_catalog.h"
#include "transport/message.h"
#include "transport/transport.h"

namespace {

using pserver::transport::Bytes;
namespace transport = pserver::transport;
namespace cluster = pserver::cluster;
namespace kv = pserver::kv;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// An exactly sized heap buffer, so that ASan sees any read past a frame's end.
Bytes Frame(const uint8_t* data, size_t size) {
  return Bytes::CopyOf(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size));
}

bool SameBytes(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

template <typename Decode, typename Encode>
void CheckBody(const Bytes& body, Decode decode, Encode encode) {
  auto decoded = decode(body);
  if (!decoded.ok()) {
    Check(decoded.status().code() == pserver::StatusCode::kCorruption);
    return;
  }
  Check(SameBytes(encode(*decoded), body));
}

template <typename Decode>
void CheckBody(const Bytes& body, Decode decode) {
  CheckBody(body, decode, [](const auto& m) { return cluster::Encode(m); });
}

void CheckControlBodies(const Bytes& body) {
  CheckBody(body, cluster::DecodeRegisterRequest);
  CheckBody(body, cluster::DecodeRegisterReply);
  CheckBody(body, cluster::DecodeClusterView);
  CheckBody(body, cluster::DecodeNodeFailure);
  CheckBody(body, cluster::DecodeTableDeclaration);
  CheckBody(body, cluster::DecodeMigrateOrder);
  CheckBody(body, cluster::DecodeMigrateReport);
  CheckBody(body, cluster::DecodeAdminRequest);
  CheckBody(body, cluster::DecodeTableStats);
  CheckBody(body, cluster::DecodeCheckpointWritten);
  CheckBody(body, kv::DecodeTableSpec, kv::EncodeTableSpec);
  auto spec = kv::DecodeTableSpec(body);
  if (spec.ok()) (void)kv::ValidateTableSpec(*spec);
}

void Put16(Bytes& f, size_t off, uint16_t v) {
  f[off] = static_cast<std::byte>(v & 0xFF);
  f[off + 1] = static_cast<std::byte>(v >> 8);
}

void Put64(Bytes& f, size_t off, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) f[off + i] = static_cast<std::byte>(v >> (8 * i));
}

// See mode bit 3.
Bytes WellFormedHead(const Bytes& first, const transport::Frames& frames) {
  const size_t out_of_line = frames.size() - 1;
  const size_t rest = first.size() > transport::kHeaderSize ? first.size() - transport::kHeaderSize : 0;
  const size_t table = transport::kHeaderSize + 8 * (out_of_line + 1);
  Bytes head(table + (rest + 7) / 8 * 8);  // zero-filled: header padding and inline padding
  // An empty frame's data() is null, which memcpy must not be given even for 0 bytes.
  if (!first.empty()) std::memcpy(head.data(), first.data(), std::min(first.size(), transport::kHeaderSize));
  Put16(head, 22, static_cast<uint16_t>(out_of_line + 1));
  for (size_t i = 0; i < out_of_line; ++i) Put64(head, transport::kHeaderSize + 8 * i, frames[i + 1].size() | transport::kOutOfLine);
  Put64(head, transport::kHeaderSize + 8 * out_of_line, rest);
  if (rest > 0) std::memcpy(head.data() + table, first.data() + transport::kHeaderSize, rest);
  return head;
}

// The chains the seeds were filtered by (message_corpus.cc), with a small key cache, shared by
// every input as a server's are by every request.
void CheckFilters(const transport::Message& msg) {
  static const auto* chains = [] {
    auto* out = new std::vector<kv::FilterChain>;
    pserver::TableSpec spec;
    spec.name = "fuzz";
    spec.filters = {{"keycache", {{"capacity_keys", 4096}}}, {"zstd", {{"min_bytes", 0}}}};
    out->push_back(*kv::MakeFilterChain(spec));
    spec.filters = {{"lz4", {{"min_bytes", 0}}}};
    out->push_back(*kv::MakeFilterChain(spec));
    spec.filters = {{"q8", {}}, {"zstd", {{"min_bytes", 0}}}};
    out->push_back(*kv::MakeFilterChain(spec));
    spec.filters = {{"fp16", {}}};
    out->push_back(*kv::MakeFilterChain(spec));
    return out;
  }();
  static const auto* copies = [] {
    pserver::TableSpec spec;
    spec.name = "fuzz";
    spec.filters = {{"sigmod", {{"push", 0}, {"pull", 1}}}};
    return new kv::FilterChain(*kv::MakeFilterChain(spec));
  }();
  if (transport::Pulls(msg.header.type) && msg.header.is_reply() && !msg.header.is_error() &&
      msg.frames.size() >= 2 && msg.frames[0].size() >= 24) {
    uint64_t n = 0;
    std::memcpy(&n, msg.frames[0].data() + 16, 8);  // little-endian hosts only, as the fuzzer runs
    if (n <= 65536) {
      std::vector<pserver::Key> keys(n);
      for (uint64_t i = 0; i < n; ++i) keys[i] = 7 * i;
      transport::Frames frames = msg.frames;
      const pserver::Status s = copies->Fill(msg.header, pserver::SharedArray<pserver::Key>(std::move(keys)), frames);
      if (s.ok()) {
        Check(frames[0].empty() && frames[1].size() == n * sizeof(float));
      } else {
        Check(s.code() == pserver::StatusCode::kCorruption || kv::IsCopyMiss(s));
      }
    }
  }
  for (const kv::FilterChain& chain : *chains) {
    transport::Message m = msg;
    const pserver::Status s = chain.Decode(m);
    if (s.ok()) {
      Check(!(m.header.flags & transport::kFlagFiltered));
      Check(m.frames.size() + ((msg.header.flags & transport::kFlagFiltered) ? 1 : 0) == msg.frames.size());
    } else {
      Check(s.code() == pserver::StatusCode::kCorruption || kv::IsKeyCacheMiss(s));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  transport::Frames frames;
  size_t pos = 1;
  while (pos < size && frames.size() <= transport::kMaxFrames + 1) {
    size_t len = data[pos];
    if (pos + 1 < size) len |= size_t{data[pos + 1]} << 8;
    pos += 2;
    if (pos > size) pos = size;
    if (len > size - pos) len = size - pos;
    frames.push_back(Frame(data + pos, len));
    pos += len;
  }

  if (!frames.empty()) {
    Bytes& header = frames[0];
    if (mode & 8) header = WellFormedHead(header, frames);
    if ((mode & 1) && header.size() >= 6) {
      for (size_t i = 0; i < 4; ++i) header[i] = static_cast<std::byte>(transport::kMagic >> (8 * i));
      Put16(header, 4, transport::kWireVersion);
    }
    if ((mode & 2) && header.size() >= 32) std::memset(header.data() + 28, 0, 4);
    if ((mode & 4) && header.size() >= 24 && !(mode & 8)) {
      Put16(header, 22, static_cast<uint16_t>(frames.size() - 1));
    }
  }

  const transport::Frames sent = frames;
  auto msg = transport::DecodeWire(std::move(frames));
  if (msg.ok()) {
    Check(sent[0].size() >= transport::kHeaderSize && msg->frames.size() == msg->header.num_frames);
    Bytes again(transport::kHeaderSize);
    transport::EncodeHeader(msg->header, again.data());
    if (sent[0][20] == std::byte{0}) {
      Check(!transport::IsDataMessage(msg->header.type));
      again[20] = std::byte{0};
    }
    Check(SameBytes(again, Bytes::CopyOf(sent[0].span().first(transport::kHeaderSize))));
    size_t next_wire = 1, head_bytes = transport::kHeaderSize + 8 * msg->frames.size();
    for (const Bytes& f : msg->frames) {
      if (next_wire < sent.size() && f.data() == sent[next_wire].data() && f.size() == sent[next_wire].size()) {
        ++next_wire;  // (empty frames match either way: they add no bytes)
      } else {
        head_bytes += (f.size() + 7) / 8 * 8;
      }
    }
    Check(next_wire == sent.size() && head_bytes == sent[0].size());
    (void)transport::Describe(msg->header);
    if (transport::IsDataMessage(msg->header.type)) CheckFilters(*msg);
  } else {
    Check(msg.status().code() == pserver::StatusCode::kCorruption);
  }

  // Every frame, header included, is also tried as each kind of control body.
  for (const Bytes& f : sent) CheckControlBodies(f);
  return 0;
}
