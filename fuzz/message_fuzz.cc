// libFuzzer target for everything a peer's bytes reach before any node logic: the frame
// sequence decoder (header codec + frame count) and the control-plane body decoders.
//
// Beyond "no crash, no ASan report", it checks two properties and traps when they break:
//   - a frame sequence that DecodeFrames accepts re-encodes to the received header bytes
//     (apart from a control message's value type 0, which reads as float32) and keeps every
//     payload frame, in order, without copying;
//   - a control body that a decoder accepts re-encodes to exactly the received bytes
//     (the encodings are canonical), and ValidateTableSpec never crashes on a decoded spec.
//
// Input layout (see docs/wire_format.md, "Fuzzing"):
//   byte 0          mode bits, to help the fuzzer past the cheap checks:
//                     bit 0: write a valid magic and version into the first frame
//                     bit 1: zero the reserved header bytes
//                     bit 2: set num_frames to the real number of payload frames
//                     bit 3: cut or zero-pad the first frame to exactly 64 bytes
//   then frames     each a 2-byte little-endian length (clamped to what is left) and that many
//                   bytes; the first frame is the header.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "cluster/control_messages.h"
#include "transport/message.h"
#include "transport/transport.h"

namespace {

using pserver::transport::Bytes;
namespace transport = pserver::transport;
namespace cluster = pserver::cluster;

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

template <typename Decode>
void CheckBody(const Bytes& body, Decode decode) {
  auto decoded = decode(body);
  if (!decoded.ok()) {
    Check(decoded.status().code() == pserver::StatusCode::kCorruption);
    return;
  }
  Check(SameBytes(cluster::Encode(*decoded), body));
}

void CheckControlBodies(const Bytes& body) {
  CheckBody(body, cluster::DecodeRegisterRequest);
  CheckBody(body, cluster::DecodeRegisterReply);
  CheckBody(body, cluster::DecodeNodeFailure);
  CheckBody(body, cluster::DecodeTableSpec);
  auto spec = cluster::DecodeTableSpec(body);
  if (spec.ok()) (void)cluster::ValidateTableSpec(*spec);
}

void Put16(Bytes& f, size_t off, uint16_t v) {
  f[off] = static_cast<std::byte>(v & 0xFF);
  f[off + 1] = static_cast<std::byte>(v >> 8);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::vector<Bytes> frames;
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
    if (mode & 8) {
      Bytes exact(transport::kHeaderSize);
      std::memcpy(exact.data(), header.data(), std::min(header.size(), transport::kHeaderSize));
      header = exact;
    }
    if ((mode & 1) && header.size() >= 6) {
      for (size_t i = 0; i < 4; ++i) header[i] = static_cast<std::byte>(transport::kMagic >> (8 * i));
      Put16(header, 4, transport::kWireVersion);
    }
    if ((mode & 2) && header.size() >= 32) std::memset(header.data() + 28, 0, 4);
    if ((mode & 4) && header.size() >= 24) Put16(header, 22, static_cast<uint16_t>(frames.size() - 1));
  }

  const std::vector<Bytes> sent = frames;
  auto msg = transport::DecodeFrames(std::move(frames));
  if (msg.ok()) {
    Check(sent[0].size() == transport::kHeaderSize);
    Check(msg->header.num_frames == sent.size() - 1 && msg->frames.size() == sent.size() - 1);
    for (size_t i = 0; i < msg->frames.size(); ++i) Check(msg->frames[i].data() == sent[i + 1].data());
    Bytes again(transport::kHeaderSize);
    transport::EncodeHeader(msg->header, again.data());
    if (sent[0][20] == std::byte{0}) {
      Check(!transport::IsDataMessage(msg->header.type));
      again[20] = std::byte{0};
    }
    Check(SameBytes(again, sent[0]));
    (void)transport::Describe(msg->header);
  } else {
    Check(msg.status().code() == pserver::StatusCode::kCorruption);
  }

  // Every frame, header included, is also tried as each kind of control body.
  for (const Bytes& f : sent) CheckControlBodies(f);
  return 0;
}
