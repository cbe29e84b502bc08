// The message: a fixed-layout, versioned binary header plus zero or more raw byte frames
// ("payload frames").
//
// This header and docs/wire_format.md are the one specification of the wire format; keep them
// in step. On the wire a message is one or more transport frames. Wire frame 0, the "head", is
// the header, then a frame table of num_frames little-endian u64 descriptors (bits 0-62: the
// payload frame's length; bit 63: it travels out of line), then the inline payload frames'
// bytes in order, each padded with zeros to a multiple of 8. Each out-of-line payload frame
// follows as its own wire frame, in order. Senders put a payload frame inline when it is at
// most kInlineLimit bytes and the head stays within kMaxHeadSize, so a small message is a
// single wire frame, while a large array is still sent without a copy.
//
// The header is kHeaderSize bytes, little-endian:
//
//   off size field        meaning
//    0   4   magic        kMagic ("PSRV" read as bytes P S R V)
//    4   2   version      kWireVersion
//    6   1   type         MessageType
//    7   1   flags        MessageFlags bits
//    8   4   sender       NodeId of the sender
//   12   4   receiver     NodeId of the receiver
//   16   4   table        TableId (data messages), 0 otherwise
//   20   1   value_type   ValueType of the value frames (data messages), 0 otherwise
//   21   1   status       StatusCode of a reply (kOk unless kFlagError)
//   22   2   num_frames   number of frames after the header
//   24   4   width        values per key; 0 means per-key lengths are carried
//   28   4   origin       kFlagFailover data requests: the server the part was first sent to,
//                         which died (its node id); 0 otherwise
//   32   8   request_id   the sender's timestamp of the request this message belongs to
//   40   8   epoch        routing epoch the sender used
//   48   8   clock        the worker's iteration clock (consistency; 0 when unused)
//   56   8   aux          type-specific (barrier group, pull staleness, ...)
//   64   4   seq          data messages: the sender's sequence number on its channel to the
//                         receiver (1, 2, ...; see cluster/channel_order.h); 0 otherwise
//   68   4   part         data messages: which part of request `request_id` this is (the
//                         sender numbers the parts it sends of one request; a reply echoes it)
//
// Thread-compatible value types; the codec functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/types.h"

namespace pserver::transport {

inline constexpr uint32_t kMagic = 0x56525350;  // "PSRV" little-endian
inline constexpr uint16_t kWireVersion = 14;
inline constexpr size_t kHeaderSize = 72;
inline constexpr uint16_t kMaxFrames = 4096;
// Payload frames up to this many bytes travel inside the head (copied once, on send).
inline constexpr size_t kInlineLimit = 8192;
// A sender inlines frames only while the head stays within this many bytes.
inline constexpr size_t kMaxHeadSize = 65536;
// Bit 63 of a frame-table descriptor: the payload frame is a wire frame of its own.
inline constexpr uint64_t kOutOfLine = uint64_t{1} << 63;

enum class MessageType : uint8_t {
  // Control plane (bodies encoded by cluster/control_messages.h).
  kRegister = 1,          // node -> scheduler: I exist, here is my address
  kRegisterReply = 2,     // scheduler -> node: your id and the cluster view
  kBarrier = 3,           // node -> scheduler: entering barrier of group `aux`
  kBarrierRelease = 4,    // scheduler -> node: barrier `aux` complete (or failed, kFlagError)
  kHeartbeat = 5,         // node -> scheduler
  kHeartbeatAck = 6,      // scheduler -> node
  kDeclareTable = 7,      // worker -> scheduler: table name and spec
  kDeclareTableReply = 8, // scheduler -> worker: table id (or an error)
  kFinalize = 9,          // worker -> scheduler: this worker is done (kFlagError: it failed)
  kShutdown = 10,         // scheduler -> all: the job is over (kFlagError: aborted)
  kNodeFailed = 11,       // scheduler -> all: a node was declared dead
  kTableAnnounce = 12,    // scheduler -> server: a newly declared table (header.table) and its spec
  kTableAnnounceReply = 13,  // server -> scheduler: the server took the spec (or refused it)
  kViewChange = 14,       // scheduler -> node: a new cluster view (routing epoch), body ClusterView
  kViewChangeReply = 15,  // node -> scheduler: the node routes by that view now (header.epoch)
  // Scheduler -> server: a step of a membership change (request_id: the change, aux: the
  // phase); body cluster::MigrateOrder. Answered with kMigrateReply (body MigrateReport).
  kMigrate = 16,
  kMigrateReply = 17,
  kNodeLeft = 18,         // scheduler -> all: a node left the job on purpose (body NodeFailure)
  // Anyone -> scheduler: status, drain or leave (body cluster::AdminRequest); answered with
  // kAdminReply (body text) at the address the request names, or at the member that asked.
  kAdmin = 19,
  kAdminReply = 20,
  // Data plane.
  kPush = 32,
  kPull = 33,
  kPushPull = 34,
  kClock = 35,            // worker -> server: the worker's iteration clock advanced to header.clock
  // Server -> server: rows handed over in a membership change (kv/server/migration.h); the
  // reply says they are stored.
  kMigrateRows = 36,
  // Server -> server: the owner of keys sends their rows (values and rule state, after the
  // pushes it applied) and the pushes they include to a replica of its chain
  // (kv/server/kv_server_replication.cc); the reply says the replica stored them.
  kReplicate = 37,
};
inline constexpr bool IsDataMessage(MessageType t) { return static_cast<uint8_t>(t) >= 32; }
// Whether a data request carries values to apply (push, push-pull) or asks for values (pull,
// push-pull).
inline constexpr bool Pushes(MessageType t) { return t == MessageType::kPush || t == MessageType::kPushPull; }
inline constexpr bool Pulls(MessageType t) { return t == MessageType::kPull || t == MessageType::kPushPull; }
const char* MessageTypeName(MessageType t);

enum MessageFlags : uint8_t {
  kFlagReply = 1 << 0,  // a reply to a request with the same request_id
  kFlagError = 1 << 1,  // the request failed: `status` holds the code, frame 0 the message
  // A data reply: the server does not own every key of the request under its view (epoch in
  // the header); nothing was applied. Frame 0 holds the server's view (a ClusterView body).
  kFlagRedirect = 1 << 2,
  // A data request: a part the worker re-sliced and sent again after a redirect (never applied
  // anywhere before; see kv/server/kv_server_core.h).
  kFlagResend = 1 << 3,
  // A data request: a part the worker sent again because the server it went to (header.origin)
  // died before answering; it may have been applied there, and reached its replicas, so the new
  // owner applies it only if its replica of the dead server's pushes lacks it.
  kFlagFailover = 1 << 4,
  // A data message some of the table's filters changed: its last payload frame is the filter
  // trailer, which the kv layer reads and removes (kv/filter/filter.h).
  kFlagFiltered = 1 << 5,
  // A data reply: the request referred to a key list the server's key cache lacks (a filter,
  // kv/filter/key_cache_filter.h); nothing was applied, and the worker sends the part again
  // with its keys.
  kFlagKeysMissing = 1 << 6,
  // A data request that pulls: the server answers with the values as it holds them, not
  // rounded by the table's lossy filters (kv/filter/quantize_filter.h).
  kFlagExact = 1 << 7,
};

// The aux of a pull request: bits 0-62 the staleness it admits plus one (0: any); bit 63 says
// that the worker holds no copy of what this server sent it, so a reply that leaves keys out
// must start over (kv/filter/significant_filter.h).
inline constexpr uint64_t kPullHoldsNoCopy = uint64_t{1} << 63;

struct Header {
  MessageType type = MessageType::kHeartbeat;
  uint8_t flags = 0;
  NodeId sender;
  NodeId receiver;
  TableId table;
  ValueType value_type = ValueType::kFloat32;
  uint8_t status = 0;
  uint16_t num_frames = 0;
  uint32_t width = 0;
  NodeId origin;  // kFlagFailover only
  int64_t request_id = 0;
  Epoch epoch;
  uint64_t clock = 0;
  uint64_t aux = 0;
  uint32_t seq = 0;
  uint32_t part = 0;

  bool is_reply() const { return flags & kFlagReply; }
  bool is_error() const { return flags & kFlagError; }
  bool is_redirect() const { return flags & kFlagRedirect; }
};

using Bytes = SharedArray<std::byte>;

// Views a typed array as bytes, sharing ownership (no copy).
template <typename T>
Bytes AsBytes(const SharedArray<T>& a) {
  return Bytes(a.owner(), reinterpret_cast<std::byte*>(a.data()), a.size_bytes());
}
Bytes BytesFromString(std::string s);

// A message's frames, or a wire frame sequence. Data messages have three payload frames (keys,
// values, lengths), and a received one is mostly a head alone or a head and one large array:
// inline, so that neither costs an allocation.
using Frames = absl::InlinedVector<Bytes, 3>;

// The identity of the connection a message arrived on, as the transport saw it: 16 bytes the
// sending transport presents when it connects (its own random ConnectionId, or the one its
// Connect was given), never a header field. The zero value means "anonymous": a connection that
// presented no pserver identity (a raw ZeroMQ socket, a foreign program). Until the transport is
// authenticated (CURVE), an identity is a bearer secret: whoever learns it can present it.
struct ConnectionId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  bool anonymous() const { return hi == 0 && lo == 0; }
  friend bool operator==(const ConnectionId&, const ConnectionId&) = default;
  // 128 bits from std::random_device; never the anonymous value.
  static ConnectionId Random();
  // A short form for logs: the first 8 hex digits (enough to tell connections apart, too few
  // to present the identity).
  std::string ShortString() const;
};

struct Message {
  Header header;
  Frames frames;  // header.num_frames is set from frames.size() when sending
  ConnectionId origin;  // set by Transport::Receive; ignored by Send
};

// Writes the header's kHeaderSize bytes to `out`.
void EncodeHeader(const Header& h, std::byte* out);

// Decodes and validates a header. kCorruption, naming the field, when the size, magic,
// version, type, value type, status or flag bits are wrong, or an origin comes without kFlagFailover.
Result<Header> DecodeHeader(const std::byte* data, size_t size);

// The wire form of a message being sent: which payload frames go inline and how big the
// head is. Borrows `msg`, which must outlive it and stay unchanged. Sets nothing in `msg`:
// the caller sets msg.header.num_frames first.
class WireMessage {
 public:
  explicit WireMessage(const Message& msg);

  // Bytes of wire frame 0.
  size_t head_size() const { return head_size_; }
  // Writes wire frame 0 (head_size() bytes) to `out`.
  void EncodeHead(std::byte* out) const;
  // The payload frames that follow the head as wire frames of their own, in order.
  const absl::InlinedVector<const Bytes*, 4>& out_of_line() const { return out_of_line_; }
  const Message& message() const { return msg_; }

 private:
  const Message& msg_;
  size_t head_size_ = 0;
  absl::InlinedVector<const Bytes*, 4> out_of_line_;
};

// The whole wire frame sequence of `msg` (a new head, then the out-of-line frames, shared):
// for transports that hand frames over in memory, and for tests.
Frames EncodeWire(const WireMessage& wire);

// Decodes a received wire frame sequence into a Message: checks the header, the frame table
// against the head's size and the out-of-line frames, and returns the payload frames in order
// (inline ones as views into the head, sharing its owner: no copy). kCorruption, naming what
// is wrong, otherwise.
Result<Message> DecodeWire(Frames wire);

// One line for logs: "push reply from 3 to 5 table 1 req 42 (2 frames)".
std::string Describe(const Header& h);

}  // namespace pserver::transport
