// Message filters: what a table's data messages go through on their way between workers and
// servers (docs/filters.md). A table declares its chain in TableSpec::filters; every node builds
// it from the spec (MakeFilterChain), the sender runs Encode on each data message of the table --
// requests and their replies alike -- and the receiver runs Decode before it reads a frame.
//
// On the wire (docs/wire_format.md, section 5.3): a message that some filter changed carries
// the flag kFlagFiltered and one payload frame more, the last, the *filter trailer*: per filter
// that changed it, in the order they ran, its code (u8) and the mask of the payload frames it
// changed (u8, bit i = frame i). Decode undoes them in the reverse order and removes the trailer;
// a code the table's chain does not hold, a mask naming a frame the message lacks, or a frame a
// filter cannot undo is refused with kCorruption naming the table and the filter, and nothing of
// the message is read.
//
// A filter may leave a message, or some of its frames, as they are (a frame too small to gain
// from compression): it is then not in the trailer, and a message no filter changed goes without
// one. Error replies and redirects are never filtered.
//
// Filters may keep state between messages (the key cache: key_cache_filter.h): the receiver runs
// Decode on every data message of the table, filtered or not, so that each filter sees what was
// sent in full too. Decode returns kNotFound for one thing only, a key-cache miss: the message
// referred to a key list this node does not hold; the server answers it with kFlagKeysMissing and
// the worker sends it again with its keys.
//
// Lossy filters (fp16 and q8: quantize_filter.h; sigmod: significant_filter.h) change values, not only their encoding: they
// *round* a push once, at the worker before it is sliced, and a pull reply once, at the server
// (FilterChain::Round), keeping per key what rounding took off to add to the next values of the
// key (error feedback). What they round their Encode then carries exactly; a message that is
// resent goes from the rounded request, so nothing is rounded, or fed back, twice.
//
// Pull replies may leave keys out (sigmod with pull=1: significant_filter.h): the server sends
// only the rows that changed significantly since it last sent them to that worker, and the
// worker puts the others back from its copy of what that server sent it (FilterChain::Fill).
// The copies are versioned: each such reply carries the server's sequence number of its replies
// to the worker, and a worker that missed one (a lost reply, a restart, a reply out of order)
// fills nothing from its copy until the server starts over, which its next pull asks for.
//
// Thread safety: a FilterChain is immutable once made; Encode, Decode, Round and Fill are
// thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string_view>
#include <vector>

#include "pserver/result.h"
#include "pserver/table.h"
#include "transport/message.h"

namespace pserver::kv {

// A filter's code on the wire: its entry in the trailer.
enum class FilterCode : uint8_t {
  kZstd = 1,
  kLz4 = 2,
  kKeyCache = 3,
  kSignificant = 4,  // never on the wire: it leaves keys out, which needs no decoding
  kFp16 = 5,
  kQ8 = 6,
};

// At most this many filters a table.
inline constexpr size_t kMaxFilters = 8;
// A filter changes only the first 8 frames of a message (a data message has at most 4).
inline constexpr size_t kMaxFilteredFrames = 8;

// The values a lossy filter rounds: one push, at the worker, before it is sliced, or one pull
// reply, at the server. Rows of `columns` values, one a key, in the table's (floating) type.
struct Rounding {
  bool reply = false;     // a pull reply, to `peer`; else a push
  NodeId peer;            // a reply's worker: a server keeps error feedback per worker
  bool may_drop = false;  // a plain push or pull: keys may be left out (a push's wait for later)
  bool no_copy = false;   // a reply whose worker holds no copy of this server's (kPullHoldsNoCopy)
  ValueType value_type = ValueType::kFloat32;
  size_t columns = 1;
  SharedArray<Key> keys;  // sorted
  transport::Bytes vals;  // keys.size() * columns values; replaced, never written into
  // A reply that left keys out, or may have: the copy frame its worker fills them back from
  // (significant_filter.h), which the reply carries as its frame 0; else empty.
  transport::Bytes copy_frame;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual FilterCode code() const = 0;
  virtual std::string_view name() const = 0;
  // Transforms some of `frames` (the payload frames of the data message with header `h`) in
  // place and returns the mask of those it changed: 0 when it left the message as it was.
  virtual Result<uint8_t> Encode(const transport::Header& h, transport::Frames& frames) const = 0;
  // Undoes Encode on the frames of `mask`; kCorruption, naming the frame, when one does not hold
  // what Encode makes.
  virtual Status Decode(const transport::Header& h, uint8_t mask, transport::Frames& frames) const = 0;
  // Sees every data message the receiver decoded, once its frames are back as they were sent.
  virtual void Received(const transport::Header& h, const transport::Frames& frames) const {
    (void)h;
    (void)frames;
  }

  // Lossy filters: whether Round changes pushes, pull replies.
  virtual bool rounds_pushes() const { return false; }
  virtual bool rounds_replies() const { return false; }
  // Rounds `r.vals` (and, with may_drop, may leave keys out), keeping what it took off per key
  // for the next values of the key. kInvalidArgument, naming the key, for a NaN or an infinity;
  // it then changes nothing.
  virtual Status Round(Rounding& r) const {
    (void)r;
    return Status::Ok();
  }
  // Pushes: adds what it keeps back, per key, to *held (rows of the Rounding's columns) and
  // forgets it: the caller sends it.
  virtual void TakeHeld(std::map<Key, std::vector<double>>* held) const { (void)held; }
  // Pushes: whether what it keeps back holds more keys than its bound (param held_keys): the
  // chain then sends it all with the push it rounds.
  virtual bool over_bound() const { return false; }
  // Forgets what it keeps for node `peer`, which left the cluster or was declared dead: a
  // server, for a worker; a worker, for a server.
  virtual void Forget(NodeId peer) const { (void)peer; }

  // Pull replies that leave keys out: whether this filter's do, whether this worker holds a
  // copy of what `server` sent it that the server's next reply can build on, and putting the
  // keys a reply left out back (below, FilterChain::Fill).
  virtual bool fills_replies() const { return false; }
  virtual bool HoldsCopyOf(NodeId server) const {
    (void)server;
    return true;
  }
  virtual Status Fill(const transport::Header& h, const SharedArray<Key>& keys, transport::Frames& frames) const {
    (void)h;
    (void)keys;
    (void)frames;
    return Status::Ok();
  }
};

// A table's filters, in the order they run on send.
class FilterChain {
 public:
  FilterChain() = default;

  bool empty() const { return filters_.empty(); }
  size_t size() const { return filters_.size(); }
  bool rounds_pushes() const { return rounds_pushes_; }
  bool rounds_replies() const { return rounds_replies_; }
  bool fills_replies() const { return fills_replies_; }

  // Runs every filter on `msg` (a data message of the table: a request or a successful reply)
  // and adds the trailer and kFlagFiltered when any changed it. A message with the flag already
  // set is refused (kInternal): it would be filtered twice. A pull to a server of which this
  // worker holds no copy (fills_replies) gets kPullHoldsNoCopy in its aux.
  Status Encode(transport::Message& msg) const;
  // Undoes what the sender's filters did, when the message has kFlagFiltered, and shows every
  // filter the message as sent (Filter::Received). kNotFound: a key-cache miss (above).
  Status Decode(transport::Message& msg) const;
  // Runs the lossy filters' Round, in the chain's order, on a push (rounds_pushes) or a pull
  // reply (rounds_replies). On an error nothing is rounded, nor any state changed. A push after
  // which a filter keeps back more keys than its bound takes everything the filters keep back
  // (TakeHeld), added to its rows unrounded, and new rows for the keys it lacked: the stores
  // empty, and nothing is lost.
  Status Round(Rounding& r) const;
  // What the lossy filters keep back from pushes, summed per key, forgotten by them: the
  // caller pushes it (KVWorker::PushHeld).
  std::map<Key, std::vector<double>> TakeHeld() const;
  // Forgets what the filters keep for node `peer` (Filter::Forget).
  void Forget(NodeId peer) const;
  // A worker, on a successful pull reply (header `h`, frames decoded) to the part of keys `keys`
  // (in the order sent): when frame 0 is a copy frame, puts the rows the server left out back
  // into frame 1 from this worker's copy and empties frame 0. kNotFound when the copy cannot
  // fill them (it missed a reply: IsCopyMiss; the part goes again, and the server starts over);
  // kCorruption when the frames do not hold what the server makes.
  Status Fill(const transport::Header& h, const SharedArray<Key>& keys, transport::Frames& frames) const;

 private:
  friend Result<FilterChain> MakeFilterChain(const TableSpec& spec);
  Status Undo(transport::Message& msg) const;
  template <typename T>
  Status AddHeld(Rounding& r) const;
  std::string table_;
  std::vector<std::shared_ptr<const Filter>> filters_;
  bool rounds_pushes_ = false;
  bool rounds_replies_ = false;
  bool fills_replies_ = false;
};

// The chain `spec.filters` declares; kInvalidArgument naming the table and the filter for an
// unknown filter, an unknown or out-of-range param, a filter named twice, more than kMaxFilters
// filters, a filter after a compressor that is not one, two that quantise, or a lossy filter
// on a table it cannot round (integer or variable-length values; pushes to rule "assign").
Result<FilterChain> MakeFilterChain(const TableSpec& spec);

// Whether Decode's error is a key-cache miss, which the sender mends by sending the keys.
inline bool IsKeyCacheMiss(const Status& s) { return s.code() == StatusCode::kNotFound; }
// Whether Fill's error is a copy miss, which the worker mends by pulling the part again.
inline bool IsCopyMiss(const Status& s) { return s.code() == StatusCode::kNotFound; }

// The names of the built-in filters, for error messages and --help.
std::string_view KnownFilters();

}  // namespace pserver::kv
