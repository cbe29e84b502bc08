#include "transport/message.h"

#include <fmt/format.h>

#include <cstring>

namespace pserver::transport {
namespace {

template <typename U>
void Put(std::byte* out, size_t off, U v) {
  for (size_t i = 0; i < sizeof(U); ++i) out[off + i] = static_cast<std::byte>(static_cast<uint64_t>(v) >> (8 * i));
}

template <typename U>
U Get(const std::byte* in, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) v |= static_cast<uint64_t>(in[off + i]) << (8 * i);
  return static_cast<U>(v);
}

bool KnownType(uint8_t t) {
  return (t >= 1 && t <= 13) || (t >= 32 && t <= 35);
}

}  // namespace

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kRegister: return "register";
    case MessageType::kRegisterReply: return "register-reply";
    case MessageType::kBarrier: return "barrier";
    case MessageType::kBarrierRelease: return "barrier-release";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kHeartbeatAck: return "heartbeat-ack";
    case MessageType::kDeclareTable: return "declare-table";
    case MessageType::kDeclareTableReply: return "declare-table-reply";
    case MessageType::kFinalize: return "finalize";
    case MessageType::kShutdown: return "shutdown";
    case MessageType::kNodeFailed: return "node-failed";
    case MessageType::kTableAnnounce: return "table-announce";
    case MessageType::kTableAnnounceReply: return "table-announce-reply";
    case MessageType::kPush: return "push";
    case MessageType::kPull: return "pull";
    case MessageType::kPushPull: return "push-pull";
    case MessageType::kClock: return "clock";
  }
  return "unknown";
}

Bytes BytesFromString(std::string s) {
  auto holder = std::make_shared<std::string>(std::move(s));
  auto* p = reinterpret_cast<std::byte*>(holder->data());
  size_t n = holder->size();
  return Bytes(std::move(holder), p, n);
}

void EncodeHeader(const Header& h, std::byte* out) {
  Put<uint32_t>(out, 0, kMagic);
  Put<uint16_t>(out, 4, kWireVersion);
  Put<uint8_t>(out, 6, static_cast<uint8_t>(h.type));
  Put<uint8_t>(out, 7, h.flags);
  Put<uint32_t>(out, 8, h.sender.value);
  Put<uint32_t>(out, 12, h.receiver.value);
  Put<uint32_t>(out, 16, h.table.value);
  Put<uint8_t>(out, 20, static_cast<uint8_t>(h.value_type));
  Put<uint8_t>(out, 21, h.status);
  Put<uint16_t>(out, 22, h.num_frames);
  Put<uint32_t>(out, 24, h.width);
  Put<uint32_t>(out, 28, 0);
  Put<uint64_t>(out, 32, static_cast<uint64_t>(h.request_id));
  Put<uint64_t>(out, 40, h.epoch.value);
  Put<uint64_t>(out, 48, h.clock);
  Put<uint64_t>(out, 56, h.aux);
}

Result<Header> DecodeHeader(const std::byte* in, size_t size) {
  if (size != kHeaderSize) {
    return Status::Corruption(fmt::format("header is {} bytes, expected {}", size, kHeaderSize));
  }
  if (uint32_t magic = Get<uint32_t>(in, 0); magic != kMagic) {
    return Status::Corruption(fmt::format("bad magic {:#010x}", magic));
  }
  if (uint16_t version = Get<uint16_t>(in, 4); version != kWireVersion) {
    return Status::Corruption(fmt::format("wire version {} (this build speaks {})", version, kWireVersion));
  }
  Header h;
  uint8_t type = Get<uint8_t>(in, 6);
  if (!KnownType(type)) return Status::Corruption(fmt::format("unknown message type {}", type));
  h.type = static_cast<MessageType>(type);
  h.flags = Get<uint8_t>(in, 7);
  if (h.flags & ~(kFlagReply | kFlagError)) {
    return Status::Corruption(fmt::format("unknown flag bits {:#04x}", h.flags));
  }
  h.sender = NodeId(Get<uint32_t>(in, 8));
  h.receiver = NodeId(Get<uint32_t>(in, 12));
  h.table = TableId(Get<uint32_t>(in, 16));
  uint8_t vt = Get<uint8_t>(in, 20);
  if (vt != 0 && ValueTypeSize(static_cast<ValueType>(vt)) == 0) {
    return Status::Corruption(fmt::format("unknown value type {}", vt));
  }
  h.value_type = vt == 0 ? ValueType::kFloat32 : static_cast<ValueType>(vt);
  if (IsDataMessage(h.type) && vt == 0) return Status::Corruption("data message without a value type");
  h.status = Get<uint8_t>(in, 21);
  if (h.status > static_cast<uint8_t>(StatusCode::kInternal)) {
    return Status::Corruption(fmt::format("unknown status code {}", h.status));
  }
  h.num_frames = Get<uint16_t>(in, 22);
  if (h.num_frames > kMaxFrames) {
    return Status::Corruption(fmt::format("{} frames, at most {} allowed", h.num_frames, kMaxFrames));
  }
  h.width = Get<uint32_t>(in, 24);
  if (Get<uint32_t>(in, 28) != 0) return Status::Corruption("reserved header bytes are not zero");
  h.request_id = static_cast<int64_t>(Get<uint64_t>(in, 32));
  h.epoch = Epoch(Get<uint64_t>(in, 40));
  h.clock = Get<uint64_t>(in, 48);
  h.aux = Get<uint64_t>(in, 56);
  return h;
}

std::string Describe(const Header& h) {
  return fmt::format("{}{}{} from node {} to node {} table {} req {} ({} frames)", MessageTypeName(h.type),
                     h.is_reply() ? " reply" : "", h.is_error() ? " error" : "", h.sender.value,
                     h.receiver.value, h.table.value, h.request_id, h.num_frames);
}

}  // namespace pserver::transport
