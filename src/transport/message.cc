#include "transport/message.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <random>

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

constexpr size_t Padded(size_t n) { return (n + 7) & ~size_t{7}; }

bool KnownType(uint8_t t) {
  return (t >= 1 && t <= 20) || (t >= 32 && t <= 37);
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
    case MessageType::kViewChange: return "view-change";
    case MessageType::kViewChangeReply: return "view-change-reply";
    case MessageType::kMigrate: return "migrate";
    case MessageType::kMigrateReply: return "migrate-reply";
    case MessageType::kNodeLeft: return "node-left";
    case MessageType::kAdmin: return "admin";
    case MessageType::kAdminReply: return "admin-reply";
    case MessageType::kPush: return "push";
    case MessageType::kPull: return "pull";
    case MessageType::kPushPull: return "push-pull";
    case MessageType::kClock: return "clock";
    case MessageType::kMigrateRows: return "migrate-rows";
    case MessageType::kReplicate: return "replicate";
  }
  return "unknown";
}

ConnectionId ConnectionId::Random() {
  std::random_device rd;
  ConnectionId id;
  do {
    id.hi = (uint64_t{rd()} << 32) | rd();
    id.lo = (uint64_t{rd()} << 32) | rd();
  } while (id.anonymous());
  return id;
}

std::string ConnectionId::ShortString() const {
  if (anonymous()) return "anonymous";
  return fmt::format("{:08x}", static_cast<uint32_t>(hi >> 32));
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
  Put<uint32_t>(out, 28, h.origin.value);
  Put<uint64_t>(out, 32, static_cast<uint64_t>(h.request_id));
  Put<uint64_t>(out, 40, h.epoch.value);
  Put<uint64_t>(out, 48, h.clock);
  Put<uint64_t>(out, 56, h.aux);
  Put<uint32_t>(out, 64, h.seq);
  Put<uint32_t>(out, 68, h.part);
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
  if (h.flags & ~(kFlagReply | kFlagError | kFlagRedirect | kFlagResend | kFlagFailover | kFlagFiltered | kFlagKeysMissing |
                  kFlagExact)) {
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
  h.origin = NodeId(Get<uint32_t>(in, 28));
  if (h.origin.value != 0 && !(h.flags & kFlagFailover)) {
    return Status::Corruption(fmt::format("origin {} without the failover flag", h.origin.value));
  }
  h.request_id = static_cast<int64_t>(Get<uint64_t>(in, 32));
  h.epoch = Epoch(Get<uint64_t>(in, 40));
  h.clock = Get<uint64_t>(in, 48);
  h.aux = Get<uint64_t>(in, 56);
  h.seq = Get<uint32_t>(in, 64);
  h.part = Get<uint32_t>(in, 68);
  return h;
}

WireMessage::WireMessage(const Message& msg) : msg_(msg) {
  head_size_ = kHeaderSize + 8 * msg.frames.size();
  for (const Bytes& f : msg.frames) {
    if (f.size() <= kInlineLimit && head_size_ + Padded(f.size()) <= kMaxHeadSize) {
      head_size_ += Padded(f.size());
    } else {
      out_of_line_.push_back(&f);
    }
  }
}

void WireMessage::EncodeHead(std::byte* out) const {
  EncodeHeader(msg_.header, out);
  std::byte* table = out + kHeaderSize;
  std::byte* data = table + 8 * msg_.frames.size();
  size_t next_out = 0;
  for (size_t i = 0; i < msg_.frames.size(); ++i) {
    const Bytes& f = msg_.frames[i];
    const bool out_of_line = next_out < out_of_line_.size() && out_of_line_[next_out] == &f;
    Put<uint64_t>(table, 8 * i, f.size() | (out_of_line ? kOutOfLine : 0));
    if (out_of_line) {
      ++next_out;
      continue;
    }
    if (f.size() > 0) std::memcpy(data, f.data(), f.size());
    std::memset(data + f.size(), 0, Padded(f.size()) - f.size());
    data += Padded(f.size());
  }
}

Frames EncodeWire(const WireMessage& wire) {
  Frames frames;
  frames.reserve(wire.out_of_line().size() + 1);
  frames.push_back(Bytes::Uninitialized(wire.head_size()));
  wire.EncodeHead(frames[0].data());
  for (const Bytes* f : wire.out_of_line()) frames.push_back(*f);
  return frames;
}

Result<Message> DecodeWire(Frames wire) {
  if (wire.empty()) return Status::Corruption("empty frame sequence");
  const Bytes& head = wire[0];
  PSERVER_ASSIGN_OR_RETURN(Header h, DecodeHeader(head.data(), std::min(head.size(), kHeaderSize)));
  const size_t table_end = kHeaderSize + 8 * size_t{h.num_frames};
  if (head.size() < table_end) {
    return Status::Corruption(fmt::format("{}: head is {} bytes, too short for its {}-entry frame table",
                                          Describe(h), head.size(), h.num_frames));
  }
  Message msg;
  msg.header = h;
  msg.frames.reserve(h.num_frames);
  size_t offset = table_end;  // of the next inline frame in the head
  size_t next_wire = 1;       // index of the next out-of-line frame in `wire`
  for (size_t i = 0; i < h.num_frames; ++i) {
    const uint64_t entry = Get<uint64_t>(head.data(), kHeaderSize + 8 * i);
    const uint64_t size = entry & ~kOutOfLine;
    if (entry & kOutOfLine) {
      if (next_wire >= wire.size()) {
        return Status::Corruption(fmt::format("{}: frame {} is out of line but only {} wire frames arrived",
                                              Describe(h), i, wire.size()));
      }
      if (wire[next_wire].size() != size) {
        return Status::Corruption(fmt::format("{}: frame {} is {} bytes, its table entry says {}", Describe(h), i,
                                              wire[next_wire].size(), size));
      }
      msg.frames.push_back(std::move(wire[next_wire++]));
      continue;
    }
    if (Padded(size) > head.size() - offset) {
      return Status::Corruption(fmt::format("{}: inline frame {} of {} bytes overruns the {}-byte head",
                                            Describe(h), i, size, head.size()));
    }
    for (size_t pad = offset + size; pad < offset + Padded(size); ++pad) {
      if (head[pad] != std::byte{0}) {
        return Status::Corruption(fmt::format("{}: padding after inline frame {} is not zero", Describe(h), i));
      }
    }
    msg.frames.push_back(size == 0 ? Bytes() : head.Slice(offset, offset + size));
    offset += Padded(size);
  }
  if (offset != head.size()) {
    return Status::Corruption(fmt::format("{}: head has {} bytes after its inline frames", Describe(h),
                                          head.size() - offset));
  }
  if (next_wire != wire.size()) {
    return Status::Corruption(fmt::format("{}: frame table names {} out-of-line frames, {} arrived", Describe(h),
                                          next_wire - 1, wire.size() - 1));
  }
  return msg;
}

std::string Describe(const Header& h) {
  return fmt::format("{}{}{}{} from node {} to node {} table {} req {} ({} frames)", MessageTypeName(h.type),
                     h.is_reply() ? " reply" : "", h.is_error() ? " error" : "",
                     h.is_redirect() ? " redirect" : "", h.sender.value, h.receiver.value, h.table.value,
                     h.request_id, h.num_frames);
}

}  // namespace pserver::transport
