// Helpers shared by the transport tests -- the conformance suite (testing/transport_conformance_test.cc),
// the implementations' own tests and the intercepting wrapper's -- and by the tests of message
// bodies above them (test-only; header-only so that
// the transport tests link nothing above pserver_transport).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transport/message.h"

namespace pserver::transport::testing {

// An upper bound for waits that should end at once; only reached when the code is broken.
inline constexpr std::chrono::milliseconds kLongWait{30000};

inline constexpr NodeId kA(1);
inline constexpr NodeId kB(2);

inline std::string Text(const Bytes& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }
// The bytes of `s` in an exactly sized heap copy, so that a decoder's read past the end is
// visible to ASan.
inline Bytes ExactCopy(const std::string& s) {
  return Bytes::CopyOf(std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size()));
}

// A push from `from` to `to` with the given request id and payload frames.
inline Message Data(NodeId from, NodeId to, int64_t request_id, Frames frames) {
  Message m;
  m.header.type = MessageType::kPush;
  m.header.sender = from;
  m.header.receiver = to;
  m.header.table = TableId(4);
  m.header.value_type = ValueType::kFloat32;
  m.header.width = 1;
  m.header.request_id = request_id;
  m.frames = std::move(frames);
  return m;
}

// Bytes seed, seed+1, ... (mod 251), so that a shifted or truncated copy is noticed.
inline Bytes Pattern(size_t n, unsigned seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i + seed) % 251);
  return b;
}

inline bool HasPattern(const Bytes& b, size_t n, unsigned seed) {
  if (b.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != static_cast<std::byte>((i + seed) % 251)) return false;
  }
  return true;
}

}  // namespace pserver::transport::testing
