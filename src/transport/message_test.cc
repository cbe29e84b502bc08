// The message codec (EncodeHeader / DecodeHeader, WireMessage / DecodeWire): everything a peer
// can send must either decode or be refused with kCorruption, never crash.
#include "transport/message.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "transport/transport.h"

namespace pserver::transport {
namespace {

constexpr std::array<MessageType, 19> kAllTypes = {
    MessageType::kRegister,       MessageType::kRegisterReply,       MessageType::kBarrier,
    MessageType::kBarrierRelease, MessageType::kHeartbeat,           MessageType::kHeartbeatAck,
    MessageType::kDeclareTable,   MessageType::kDeclareTableReply,   MessageType::kFinalize,
    MessageType::kShutdown,       MessageType::kNodeFailed,          MessageType::kTableAnnounce,
    MessageType::kTableAnnounceReply, MessageType::kViewChange,      MessageType::kViewChangeReply,
    MessageType::kPush,           MessageType::kPull,                MessageType::kPushPull,
    MessageType::kClock,
};
constexpr std::array<ValueType, 4> kAllValueTypes = {ValueType::kFloat32, ValueType::kFloat64, ValueType::kInt32,
                                                     ValueType::kInt64};

bool IsKnownType(unsigned t) { return (t >= 1 && t <= 20) || (t >= 32 && t <= 37); }

// A header with every field set to something other than its default.
Header SampleHeader() {
  Header h;
  h.type = MessageType::kPushPull;
  h.flags = kFlagReply;
  h.sender = NodeId(3);
  h.receiver = NodeId(5);
  h.table = TableId(1);
  h.value_type = ValueType::kFloat64;
  h.status = 0;
  h.num_frames = 3;
  h.width = 16;
  h.request_id = 42;
  h.epoch = Epoch(7);
  h.clock = 9;
  h.aux = 11;
  h.seq = 12;
  h.part = 13;
  return h;
}

std::vector<std::byte> Encoded(const Header& h) {
  std::vector<std::byte> out(kHeaderSize);
  EncodeHeader(h, out.data());
  return out;
}

// Decodes from an exactly sized heap copy, so that a read past the end is visible to ASan.
Result<Header> DecodeCopy(const std::vector<std::byte>& bytes, size_t len) {
  Bytes copy = Bytes::CopyOf(std::span<const std::byte>(bytes.data(), len));
  return DecodeHeader(copy.data(), copy.size());
}

void ExpectSameHeader(const Header& a, const Header& b) {
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.sender, b.sender);
  EXPECT_EQ(a.receiver, b.receiver);
  EXPECT_EQ(a.table, b.table);
  EXPECT_EQ(a.value_type, b.value_type);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.num_frames, b.num_frames);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.origin, b.origin);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.clock, b.clock);
  EXPECT_EQ(a.aux, b.aux);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.part, b.part);
}

Bytes FrameOf(const std::string& s) { return BytesFromString(s); }

// The wire frames a sender makes of `h` and `payload` (head, then the out-of-line frames).
Frames FramesFor(Header h, Frames payload) {
  h.num_frames = static_cast<uint16_t>(payload.size());
  Message msg;
  msg.header = h;
  msg.frames = std::move(payload);
  return EncodeWire(WireMessage(msg));
}

// A frame of `n` bytes, each its index mod 251 (so that misplaced bytes show).
Bytes Pattern(size_t n) {
  Bytes b = Bytes::Uninitialized(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>(i % 251);
  return b;
}

bool SameContent(const Bytes& a, const Bytes& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

void PutU64(Bytes& b, size_t off, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) b[off + i] = static_cast<std::byte>(v >> (8 * i));
}

// ---------------------------------------------------------------------------------------------
// Layout and round trips

TEST(MessageTest, EncodesDocumentedLayout) {
  Header h;
  h.type = MessageType::kPull;
  h.flags = kFlagReply | kFlagError;
  h.sender = NodeId(0x04030201);
  h.receiver = NodeId(0x08070605);
  h.table = TableId(0x0C0B0A09);
  h.value_type = ValueType::kInt32;
  h.status = static_cast<uint8_t>(StatusCode::kNotFound);
  h.num_frames = 0x0102;
  h.width = 0x11121314;
  h.request_id = 0x2122232425262728;
  h.epoch = Epoch(0x3132333435363738);
  h.clock = 0x4142434445464748;
  h.aux = 0x5152535455565758;
  h.seq = 0x61626364;
  h.part = 0x71727374;
  const std::vector<unsigned> want = {
      'P',  'S',  'R',  'V',                           //  0 magic
      0x0e, 0x00,                                      //  4 version 14
      33,                                              //  6 type kPull
      0x03,                                            //  7 flags reply|error
      0x01, 0x02, 0x03, 0x04,                          //  8 sender
      0x05, 0x06, 0x07, 0x08,                          // 12 receiver
      0x09, 0x0A, 0x0B, 0x0C,                          // 16 table
      3,                                               // 20 value type int32
      2,                                               // 21 status kNotFound
      0x02, 0x01,                                      // 22 num_frames
      0x14, 0x13, 0x12, 0x11,                          // 24 width
      0x00, 0x00, 0x00, 0x00,                          // 28 origin
      0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21,  // 32 request_id
      0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31,  // 40 epoch
      0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41,  // 48 clock
      0x58, 0x57, 0x56, 0x55, 0x54, 0x53, 0x52, 0x51,  // 56 aux
      0x64, 0x63, 0x62, 0x61,                          // 64 seq
      0x74, 0x73, 0x72, 0x71,                          // 68 part
  };
  ASSERT_EQ(want.size(), kHeaderSize);
  std::vector<std::byte> bytes = Encoded(h);
  std::vector<unsigned> got;
  for (std::byte b : bytes) got.push_back(static_cast<unsigned>(b));
  EXPECT_EQ(got, want);
}

TEST(MessageTest, RoundTripsEveryTypeAndFlag) {
  for (MessageType type : kAllTypes) {
    for (uint8_t flags : {uint8_t{0}, uint8_t{kFlagReply}, uint8_t{kFlagError}, uint8_t{kFlagReply | kFlagError}}) {
      Header h = SampleHeader();
      h.type = type;
      h.flags = flags;
      SCOPED_TRACE(Describe(h));
      Result<Header> d = DecodeCopy(Encoded(h), kHeaderSize);
      ASSERT_OK(d);
      ExpectSameHeader(*d, h);
      EXPECT_EQ(d->is_reply(), (flags & kFlagReply) != 0);
      EXPECT_EQ(d->is_error(), (flags & kFlagError) != 0);
    }
  }
}

TEST(MessageTest, CarriesTheOriginOfAFailoverResend) {
  Header h = SampleHeader();
  h.type = MessageType::kPush;
  h.flags = kFlagResend | kFlagFailover;
  h.origin = NodeId(0x0a0b0c0d);
  Result<Header> d = DecodeCopy(Encoded(h), kHeaderSize);
  ASSERT_OK(d);
  ExpectSameHeader(*d, h);
  // An origin without the flag is refused, naming the field.
  h.flags = kFlagResend;
  Result<Header> bad = DecodeCopy(Encoded(h), kHeaderSize);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("origin"), std::string::npos) << bad.status();
}

TEST(MessageTest, RoundTripsEveryValueTypeAndStatus) {
  for (ValueType vt : kAllValueTypes) {
    for (uint8_t status = 0; status <= static_cast<uint8_t>(StatusCode::kInternal); ++status) {
      Header h = SampleHeader();
      h.value_type = vt;
      h.status = status;
      Result<Header> d = DecodeCopy(Encoded(h), kHeaderSize);
      ASSERT_OK(d);
      ExpectSameHeader(*d, h);
    }
  }
}

TEST(MessageTest, RoundTripsExtremeFieldValues) {
  Header max = SampleHeader();
  max.sender = NodeId(std::numeric_limits<uint32_t>::max());
  max.receiver = NodeId(std::numeric_limits<uint32_t>::max());
  max.table = TableId(std::numeric_limits<uint32_t>::max());
  max.num_frames = kMaxFrames;
  max.width = std::numeric_limits<uint32_t>::max();
  max.request_id = std::numeric_limits<int64_t>::max();
  max.epoch = Epoch(std::numeric_limits<uint64_t>::max());
  max.clock = std::numeric_limits<uint64_t>::max();
  max.aux = std::numeric_limits<uint64_t>::max();

  Header min = SampleHeader();
  min.sender = NodeId(0);
  min.receiver = NodeId(0);
  min.table = TableId(0);
  min.num_frames = 0;
  min.width = 0;
  min.request_id = std::numeric_limits<int64_t>::min();
  min.epoch = Epoch(0);
  min.clock = 0;
  min.aux = 0;

  Header minus_one = SampleHeader();
  minus_one.request_id = -1;

  for (const Header& h : {max, min, minus_one}) {
    Result<Header> d = DecodeCopy(Encoded(h), kHeaderSize);
    ASSERT_OK(d);
    ExpectSameHeader(*d, h);
  }
}

TEST(MessageTest, ControlMessageMayOmitValueType) {
  std::vector<std::byte> bytes = Encoded(SampleHeader());
  bytes[6] = static_cast<std::byte>(MessageType::kBarrier);
  bytes[20] = std::byte{0};
  Result<Header> d = DecodeCopy(bytes, kHeaderSize);
  ASSERT_OK(d);
  EXPECT_EQ(d->type, MessageType::kBarrier);
  EXPECT_EQ(d->value_type, ValueType::kFloat32);  // the documented default
}

TEST(MessageTest, RefusesDataMessageWithoutValueType) {
  for (MessageType t : {MessageType::kPush, MessageType::kPull, MessageType::kPushPull, MessageType::kClock}) {
    std::vector<std::byte> bytes = Encoded(SampleHeader());
    bytes[6] = static_cast<std::byte>(t);
    bytes[20] = std::byte{0};
    Result<Header> d = DecodeCopy(bytes, kHeaderSize);
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
    EXPECT_NE(d.status().message().find("value type"), std::string::npos) << d.status();
  }
}

TEST(MessageTest, RefusesWrongVersion) {
  for (uint16_t version : {uint16_t{0}, uint16_t{1}, uint16_t{kWireVersion - 1}, uint16_t{kWireVersion + 1}, uint16_t{0x200}, uint16_t{0xFFFF}}) {
    std::vector<std::byte> bytes = Encoded(SampleHeader());
    bytes[4] = static_cast<std::byte>(version & 0xFF);
    bytes[5] = static_cast<std::byte>(version >> 8);
    Result<Header> d = DecodeCopy(bytes, kHeaderSize);
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
    EXPECT_NE(d.status().message().find("wire version " + std::to_string(version)), std::string::npos)
        << d.status();
  }
}

TEST(MessageTest, RefusesMoreThanMaxFrames) {
  Header h = SampleHeader();
  h.num_frames = kMaxFrames + 1;
  Result<Header> d = DecodeCopy(Encoded(h), kHeaderSize);
  EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
  EXPECT_NE(d.status().message().find("frames"), std::string::npos) << d.status();
}

// Every single-byte change of a validated field: either the new value is legal (and decodes to
// exactly that value) or the header is refused with kCorruption and a message naming the field.
TEST(MessageTest, RefusesEverySingleByteCorruptionOfValidatedFields) {
  struct Field {
    const char* name;
    size_t offset;
    size_t size;
    const char* named_as;  // what the refusal message must contain
  };
  const Field fields[] = {
      {"magic", 0, 4, "magic"},           {"version", 4, 2, "version"},
      {"type", 6, 1, "message type"},     {"flags", 7, 1, "flag"},
      {"value_type", 20, 1, "value type"}, {"status", 21, 1, "status code"},
      {"num_frames", 22, 2, "frames"},    {"origin", 28, 4, "origin"},
  };
  const Header base = SampleHeader();  // a data message, so value type 0 is illegal too
  const std::vector<std::byte> good = Encoded(base);
  int refused = 0, accepted = 0;
  for (const Field& f : fields) {
    for (size_t off = f.offset; off < f.offset + f.size; ++off) {
      for (unsigned v = 0; v < 256; ++v) {
        if (static_cast<std::byte>(v) == good[off]) continue;
        std::vector<std::byte> bytes = good;
        bytes[off] = static_cast<std::byte>(v);
        SCOPED_TRACE(std::string(f.name) + " byte " + std::to_string(off) + " = " + std::to_string(v));
        const unsigned num_frames = static_cast<unsigned>(bytes[22]) | static_cast<unsigned>(bytes[23]) << 8;
        bool legal = false;
        std::string field = f.name;
        if (field == "type") legal = IsKnownType(v);
        if (field == "flags") legal = (v & ~unsigned{kFlagReply | kFlagError | kFlagRedirect | kFlagResend | kFlagFailover | kFlagFiltered | kFlagKeysMissing | kFlagExact}) == 0;
        if (field == "value_type") legal = v >= 1 && v <= 4;
        if (field == "status") legal = v <= static_cast<unsigned>(StatusCode::kInternal);
        if (field == "num_frames") legal = num_frames <= kMaxFrames;
        Result<Header> d = DecodeCopy(bytes, kHeaderSize);
        if (legal) {
          ++accepted;
          ASSERT_OK(d);
          Header want = base;
          if (field == "type") want.type = static_cast<MessageType>(v);
          if (field == "flags") want.flags = static_cast<uint8_t>(v);
          if (field == "value_type") want.value_type = static_cast<ValueType>(v);
          if (field == "status") want.status = static_cast<uint8_t>(v);
          if (field == "num_frames") want.num_frames = static_cast<uint16_t>(num_frames);
          ExpectSameHeader(*d, want);
        } else {
          ++refused;
          ASSERT_FALSE(d.ok());
          EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
          EXPECT_NE(d.status().message().find(f.named_as), std::string::npos) << d.status();
        }
      }
    }
  }
  // magic 4*255 + version 2*255 + origin 4*255 (no failover flag) alone are refused.
  EXPECT_GT(refused, 10 * 255);
  EXPECT_GT(accepted, 0);
}

TEST(MessageTest, CarriesAnyValueInUnvalidatedFields) {
  // The id, width and 64-bit fields carry any value: every single-byte change decodes to it.
  const Header base = SampleHeader();
  const std::vector<std::byte> good = Encoded(base);
  for (size_t off : {8, 11, 12, 15, 16, 19, 24, 27, 32, 39, 40, 47, 48, 55, 56, 63, 64, 67, 68, 71}) {
    std::vector<std::byte> bytes = good;
    bytes[off] = ~bytes[off];
    Result<Header> d = DecodeCopy(bytes, kHeaderSize);
    ASSERT_OK(d);
    EXPECT_EQ(Encoded(*d), bytes) << "offset " << off;
  }
}

TEST(MessageTest, RefusesTruncatedHeaderOfEveryLength) {
  const std::vector<std::byte> good = Encoded(SampleHeader());
  for (size_t len = 0; len < kHeaderSize; ++len) {
    Result<Header> d = DecodeCopy(good, len);
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption) << len;
    EXPECT_NE(d.status().message().find("header is " + std::to_string(len) + " bytes"), std::string::npos)
        << d.status();
  }
  Result<Header> none = DecodeHeader(nullptr, 0);
  EXPECT_EQ(none.status().code(), StatusCode::kCorruption);
}

TEST(MessageTest, RefusesOversizeHeader) {
  for (size_t len : {kHeaderSize + 1, kHeaderSize + 8, 2 * kHeaderSize, size_t{4096}}) {
    std::vector<std::byte> bytes = Encoded(SampleHeader());
    bytes.resize(len);  // a valid header followed by zeros
    Result<Header> d = DecodeCopy(bytes, len);
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption) << len;
    EXPECT_NE(d.status().message().find("header is " + std::to_string(len) + " bytes"), std::string::npos)
        << d.status();
  }
}

// ---------------------------------------------------------------------------------------------
// Wire form: head (header, frame table, inline frames) and out-of-line frames

TEST(MessageTest, SmallMessageIsOneWireFrame) {
  Bytes keys = AsBytes(SharedArray<uint64_t>(std::vector<uint64_t>{1, 2, 3}));
  Bytes vals = Pattern(4096);
  Bytes lens;  // empty frame
  Frames frames = FramesFor(SampleHeader(), {keys, vals, lens});
  ASSERT_EQ(frames.size(), 1u);
  // header, 3 descriptors, keys (24 bytes), values (4096), nothing for the empty frame
  EXPECT_EQ(frames[0].size(), kHeaderSize + 3 * 8 + 24 + 4096);
  Result<Message> m = DecodeWire(frames);
  ASSERT_OK(m);
  Header want = SampleHeader();
  want.num_frames = 3;
  ExpectSameHeader(m->header, want);
  ASSERT_EQ(m->frames.size(), 3u);
  EXPECT_TRUE(SameContent(m->frames[0], keys));
  EXPECT_TRUE(SameContent(m->frames[1], vals));
  EXPECT_TRUE(m->frames[2].empty());
  // Inline frames are views into the head, 8-byte aligned, sharing its owner.
  for (const Bytes& f : {m->frames[0], m->frames[1]}) {
    EXPECT_EQ(f.owner(), frames[0].owner());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data()) % 8, 0u);
  }
}

TEST(MessageTest, InlineFramesArePaddedToEightBytes) {
  Frames frames = FramesFor(SampleHeader(), {FrameOf("abc"), FrameOf("defghijkl")});
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].size(), kHeaderSize + 2 * 8 + 8 + 16);
  Result<Message> m = DecodeWire(frames);
  ASSERT_OK(m);
  EXPECT_TRUE(SameContent(m->frames[0], FrameOf("abc")));
  EXPECT_TRUE(SameContent(m->frames[1], FrameOf("defghijkl")));
}

TEST(MessageTest, LargeFrameTravelsOutOfLineWithoutCopy) {
  Bytes keys = AsBytes(SharedArray<uint64_t>(std::vector<uint64_t>{7}));
  Bytes big = Pattern(kInlineLimit + 1);
  Bytes lens = FrameOf("len!");
  Frames frames = FramesFor(SampleHeader(), {keys, big, lens});
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[1].data(), big.data());
  Result<Message> m = DecodeWire(frames);
  ASSERT_OK(m);
  ASSERT_EQ(m->frames.size(), 3u);
  EXPECT_TRUE(SameContent(m->frames[0], keys));
  EXPECT_EQ(m->frames[1].data(), big.data());
  EXPECT_EQ(m->frames[1].owner(), big.owner());
  EXPECT_TRUE(SameContent(m->frames[2], lens));
  // A frame of exactly the limit still goes inline.
  EXPECT_EQ(FramesFor(SampleHeader(), {Pattern(kInlineLimit)}).size(), 1u);
}

TEST(MessageTest, HeadStopsGrowingAtItsCap) {
  Frames payload(10, Pattern(kInlineLimit));
  Frames frames = FramesFor(SampleHeader(), payload);
  // 64 + 80 + 7 * 8192 fits in 64 KiB; an eighth frame would not.
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_LE(frames[0].size(), kMaxHeadSize);
  Result<Message> m = DecodeWire(frames);
  ASSERT_OK(m);
  ASSERT_EQ(m->frames.size(), 10u);
  for (const Bytes& f : m->frames) EXPECT_TRUE(SameContent(f, payload[0]));
  for (size_t i = 7; i < 10; ++i) EXPECT_EQ(m->frames[i].data(), payload[i].data()) << i;
}

TEST(MessageTest, DecodeWireAcceptsHeaderOnly) {
  Header h = SampleHeader();
  h.type = MessageType::kHeartbeat;
  Frames frames = FramesFor(h, {});
  ASSERT_EQ(frames[0].size(), kHeaderSize);
  Result<Message> m = DecodeWire(frames);
  ASSERT_OK(m);
  EXPECT_EQ(m->header.type, MessageType::kHeartbeat);
  EXPECT_EQ(m->header.num_frames, 0);
  EXPECT_TRUE(m->frames.empty());
}

TEST(MessageTest, DecodeWireAcceptsMaxFrames) {
  Frames payload(kMaxFrames);
  Result<Message> m = DecodeWire(FramesFor(SampleHeader(), payload));
  ASSERT_OK(m);
  EXPECT_EQ(m->frames.size(), size_t{kMaxFrames});
}

TEST(MessageTest, DecodeWireRefusesEmptySequence) {
  Result<Message> m = DecodeWire({});
  EXPECT_EQ(m.status().code(), StatusCode::kCorruption);
}

// Decodes `frames` and expects kCorruption with `what` in the message.
void ExpectRefused(Frames frames, const std::string& what) {
  Result<Message> m = DecodeWire(std::move(frames));
  EXPECT_EQ(m.status().code(), StatusCode::kCorruption) << what;
  EXPECT_NE(m.status().message().find(what), std::string::npos) << m.status();
}

TEST(MessageTest, DecodeWireRefusesFrameTableMismatches) {
  const Bytes big = Pattern(kInlineLimit + 8);
  const Frames good = FramesFor(SampleHeader(), {FrameOf("abc"), big});  // head + 1
  ASSERT_EQ(good.size(), 2u);
  ASSERT_OK(DecodeWire(good));

  Frames missing = {good[0]};
  ExpectRefused(missing, "out of line but only 1 wire frames arrived");
  Frames extra = good;
  extra.push_back(FrameOf("x"));
  ExpectRefused(extra, "frame table names 1 out-of-line frames, 2 arrived");
  Frames resized = good;
  resized[1] = Pattern(kInlineLimit + 7);
  ExpectRefused(resized, "its table entry says");

  // The head must end exactly after its inline frames.
  Frames longer = good;
  longer[0] = Bytes(good[0].size() + 8);
  std::memcpy(longer[0].data(), good[0].data(), good[0].size());
  ExpectRefused(longer, "head has 8 bytes after its inline frames");
  Frames shorter = good;
  shorter[0] = Bytes::CopyOf(good[0].span().first(good[0].size() - 8));
  ExpectRefused(shorter, "overruns");
  // Too short even for the table.
  Frames no_table = {Bytes::CopyOf(good[0].span().first(kHeaderSize + 8)), good[1]};
  ExpectRefused(no_table, "too short for its 2-entry frame table");
  // An inline length that runs past the head (even one near 2^63).
  Frames huge = good;
  huge[0] = Bytes::CopyOf(good[0].span());
  PutU64(huge[0], kHeaderSize, (uint64_t{1} << 63) - 1);
  ExpectRefused(huge, "overruns");
  // Padding after an inline frame must be zero.
  Frames dirty = good;
  dirty[0] = Bytes::CopyOf(good[0].span());
  dirty[0][kHeaderSize + 2 * 8 + 3] = std::byte{1};
  ExpectRefused(dirty, "padding after inline frame 0 is not zero");
}

TEST(MessageTest, DecodeWireRefusesFrameCountBeyondTable) {
  Header h = SampleHeader();
  Frames frames = FramesFor(h, {FrameOf("a"), FrameOf("b"), FrameOf("c")});  // announces 3
  frames[0][22] = std::byte{4};  // now announces 4: the table runs into the inline data
  EXPECT_EQ(DecodeWire(frames).status().code(), StatusCode::kCorruption);
}

TEST(MessageTest, DecodeWireRefusesBadHeaderFrame) {
  Frames frames = FramesFor(SampleHeader(), {Pattern(kInlineLimit + 1)});
  Frames garbage = frames;
  garbage[0] = FrameOf("not a header");
  EXPECT_EQ(DecodeWire(garbage).status().code(), StatusCode::kCorruption);
  Frames swapped = {frames[1], frames[0]};  // payload first
  EXPECT_EQ(DecodeWire(swapped).status().code(), StatusCode::kCorruption);
}

// ---------------------------------------------------------------------------------------------
// Names and helpers

TEST(MessageTest, NamesEveryType) {
  for (MessageType t : kAllTypes) EXPECT_STRNE(MessageTypeName(t), "unknown");
  EXPECT_STREQ(MessageTypeName(MessageType::kPush), "push");
  EXPECT_STREQ(MessageTypeName(MessageType::kRegisterReply), "register-reply");
  EXPECT_STREQ(MessageTypeName(MessageType::kTableAnnounce), "table-announce");
  EXPECT_STREQ(MessageTypeName(MessageType::kTableAnnounceReply), "table-announce-reply");
  EXPECT_STREQ(MessageTypeName(MessageType::kClock), "clock");
  EXPECT_STREQ(MessageTypeName(static_cast<MessageType>(200)), "unknown");
  EXPECT_TRUE(IsDataMessage(MessageType::kPull));
  EXPECT_FALSE(IsDataMessage(MessageType::kNodeFailed));
  EXPECT_FALSE(IsDataMessage(MessageType::kTableAnnounce));
  EXPECT_FALSE(IsDataMessage(MessageType::kTableAnnounceReply));
  EXPECT_TRUE(IsDataMessage(MessageType::kClock));
}

TEST(MessageTest, DescribeNamesTypeFlagsAndEnds) {
  Header h = SampleHeader();
  h.type = MessageType::kPush;
  h.flags = kFlagReply | kFlagError;
  h.num_frames = 2;
  EXPECT_EQ(Describe(h), "push reply error from node 3 to node 5 table 1 req 42 (2 frames)");
}

TEST(MessageTest, AsBytesSharesOwner) {
  SharedArray<float> a(std::vector<float>{1, 2, 3});
  Bytes b = AsBytes(a);
  EXPECT_EQ(b.owner(), a.owner());
  EXPECT_EQ(static_cast<void*>(b.data()), static_cast<void*>(a.data()));
  EXPECT_EQ(b.size(), 12u);
  Bytes s = BytesFromString(std::string("abc"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s.data()), s.size()), "abc");
}

// ---------------------------------------------------------------------------------------------
// Random mutations of valid messages

// A valid frame sequence with a random header and 0..5 random payload frames.
Frames RandomMessage(std::mt19937_64& rng) {
  Header h;
  h.type = kAllTypes[rng() % kAllTypes.size()];
  h.flags = static_cast<uint8_t>(rng() % 4);
  h.sender = NodeId(static_cast<uint32_t>(rng()));
  h.receiver = NodeId(static_cast<uint32_t>(rng()));
  h.table = TableId(static_cast<uint32_t>(rng()));
  h.value_type = kAllValueTypes[rng() % kAllValueTypes.size()];
  h.status = static_cast<uint8_t>(rng() % 8);
  h.width = static_cast<uint32_t>(rng());
  h.request_id = static_cast<int64_t>(rng());
  h.epoch = Epoch(rng());
  h.clock = rng();
  h.aux = rng();
  Frames payload(rng() % 6);
  for (Bytes& f : payload) {
    if (rng() % 8 == 0) {  // out of line
      f = Bytes(kInlineLimit + 1 + rng() % 64);
      f[0] = static_cast<std::byte>(rng());
      continue;
    }
    f = Bytes(rng() % 33);
    for (std::byte& b : f) b = static_cast<std::byte>(rng());
  }
  return FramesFor(h, std::move(payload));
}

void Mutate(std::mt19937_64& rng, Frames& frames) {
  auto header_byte = [&](size_t i) -> std::byte& { return frames[0][i % frames[0].size()]; };
  switch (rng() % 10) {
    case 0:  // flip one bit of the header
      if (!frames.empty() && !frames[0].empty()) header_byte(rng()) ^= static_cast<std::byte>(1u << (rng() % 8));
      break;
    case 1:  // set one header byte
      if (!frames.empty() && !frames[0].empty()) header_byte(rng()) = static_cast<std::byte>(rng());
      break;
    case 2:  // truncate the header
      if (!frames.empty()) frames[0] = Bytes::CopyOf(frames[0].span().first(rng() % (frames[0].size() + 1)));
      break;
    case 3: {  // extend the header
      if (frames.empty()) break;
      Bytes longer(frames[0].size() + 1 + rng() % 8);
      // An empty frame's data() is null, which memcpy must not be given even for 0 bytes.
      if (!frames[0].empty()) std::memcpy(longer.data(), frames[0].data(), frames[0].size());
      frames[0] = longer;
      break;
    }
    case 4:  // drop a frame
      if (!frames.empty()) frames.erase(frames.begin() + static_cast<std::ptrdiff_t>(rng() % frames.size()));
      break;
    case 5:  // add a frame
      frames.insert(frames.begin() + static_cast<std::ptrdiff_t>(rng() % (frames.size() + 1)), Bytes(rng() % 70));
      break;
    case 6: {  // a random header
      Bytes random(kHeaderSize);
      for (std::byte& b : random) b = static_cast<std::byte>(rng());
      if (frames.empty()) frames.push_back(random); else frames[0] = random;
      break;
    }
    case 7:  // a random frame count
      if (!frames.empty() && frames[0].size() >= 24) {
        uint16_t n = static_cast<uint16_t>(rng());
        frames[0][22] = static_cast<std::byte>(n & 0xFF);
        frames[0][23] = static_cast<std::byte>(n >> 8);
      }
      break;
    case 8:  // swap two frames
      if (frames.size() >= 2) std::swap(frames[rng() % frames.size()], frames[rng() % frames.size()]);
      break;
    default:  // nothing left
      if (rng() % 16 == 0) frames.clear();
      break;
  }
}

TEST(MessageTest, RandomMutationsNeverCrashAndDecodeOrRefuse) {
  std::mt19937_64 rng(pserver::testing::TestSeed());
  int decoded = 0, refused = 0;
  for (int i = 0; i < 100000; ++i) {
    Frames frames = RandomMessage(rng);
    // Each frame gets its own buffer so that mutating one message cannot touch another.
    frames[0] = Bytes::CopyOf(frames[0].span());
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < mutations; ++m) Mutate(rng, frames);
    const Frames sent = frames;
    Result<Message> msg = DecodeWire(std::move(frames));
    if (!msg.ok()) {
      ++refused;
      ASSERT_EQ(msg.status().code(), StatusCode::kCorruption) << "iteration " << i << ": " << msg.status();
      ASSERT_FALSE(msg.status().message().empty());
      continue;
    }
    ++decoded;
    // What decodes is exactly what was sent: a header that re-encodes to the head's first
    // bytes (a control message's value type 0 reads as float32); every out-of-line wire frame,
    // uncopied and in order; and payload that, with the frame table and padding, accounts for
    // every byte of the head.
    ASSERT_EQ(msg->frames.size(), msg->header.num_frames) << "iteration " << i;
    std::vector<std::byte> again = Encoded(msg->header);
    ASSERT_GE(sent[0].size(), kHeaderSize);
    if (sent[0][20] == std::byte{0}) again[20] = std::byte{0};
    ASSERT_TRUE(std::equal(again.begin(), again.end(), sent[0].begin())) << "iteration " << i;
    size_t next_wire = 1, head_bytes = kHeaderSize + 8 * msg->frames.size();
    for (const Bytes& f : msg->frames) {
      // (Empty frames match either way: they add no bytes.)
      if (next_wire < sent.size() && f.data() == sent[next_wire].data() && f.size() == sent[next_wire].size()) {
        ++next_wire;
      } else {
        head_bytes += (f.size() + 7) / 8 * 8;
      }
    }
    ASSERT_EQ(next_wire, sent.size()) << "iteration " << i;
    ASSERT_EQ(head_bytes, sent[0].size()) << "iteration " << i;
  }
  std::printf("[ mutated  ] %d decoded, %d refused\n", decoded, refused);
  EXPECT_GT(decoded, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace pserver::transport
