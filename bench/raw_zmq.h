// The raw ZeroMQ bound: what plain, well-used ZeroMQ achieves on the same loopback sockets
// and the same request shapes that `pserver bench` measures, so each pserver figure can be
// printed as a ratio to it in the same run.
//
// "Best plain use of the library" means:
//   - each server is a thread with its own zmq context (hence its own I/O thread, as a
//     separate process would have) and one ROUTER bound on tcp://127.0.0.1:<ephemeral>;
//   - each client is a thread with its own context and ONE DEALER connected to every server;
//     the DEALER's own round-robin spreads requests over the servers, and the client keeps
//     `window` requests in flight in total (not per server);
//   - N-byte payloads are sent zero-copy: zmq_msg_init_data over one preallocated buffer
//     with a null free function (zmq then makes a "constant" message: no allocation, no
//     reference count), reused for every send (legal because nobody writes it); the
//     server replies with the received identity frame plus its payload (for pull and
//     push-pull also zero-copy from a preallocated buffer);
//   - received messages are only inspected (size), never copied out;
//   - SNDHWM/RCVHWM are set well above the window so they never throttle it; LINGER is 0.
//
// Servers and clients are threads of the calling process, each with its own context, which is
// as close to separate processes as ZeroMQ can tell; the kernel's loopback TCP is the same.
//
// The ARITHMETIC bound (BoundWork::kSum) is the same DEALER/ROUTER pair whose servers do the
// work of pserver's sum store, so that pserver can also be compared with plain ZeroMQ doing the
// same arithmetic:
//   - a request is pserver's two frames: a key frame (one uint64 key) and, for push and
//     push-pull, a value frame of N bytes (N/4 floats, every one kPushedValue); a pull is the
//     key frame alone. Client i's request j carries key j % num_servers, which the DEALER's
//     round-robin sends to server j % num_servers;
//   - each server keeps a row of N/4 floats per key (a hash map of rows); a push adds the
//     pushed row into the stored one (a key's first push stores it), a pull copies the stored
//     row into a reply buffer (recycled through a small pool) and sends that, a push-pull does
//     both; a pull of a key never pushed stores and answers a row of zeros;
//   - for pull, each client first pushes its num_servers keys once (as pserver's pull cells
//     push each key before timing), so the pulled rows are stored ones.
//
// No call here throws or blocks without a bound: every wait is a zmq_poll with a timeout or a
// socket call under ZMQ_SNDTIMEO/ZMQ_RCVTIMEO, and a peer that stops answering for `timeout`
// yields kDeadlineExceeded.
//
// Thread safety: the functions are thread-safe (they share no state), but running two
// measurements at once on one machine makes both figures meaningless.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "pserver/result.h"

namespace pserver::bench {

// The request/reply shape of one request. N is RawZmqOptions::bytes.
enum class Shape {
  kPush,      // client sends N bytes; the server replies a kAckBytes ack
  kPull,      // client sends a kAckBytes request; the server replies N bytes
  kPushPull,  // N bytes both ways
};

// Size of the small frame in each direction that carries no payload (push ack, pull request).
inline constexpr size_t kAckBytes = 16;

// Limits on RawZmqOptions, to keep a typo from allocating the machine away.
inline constexpr size_t kMaxPayloadBytes = size_t{1} << 30;
inline constexpr int kMaxWindow = 1 << 16;
inline constexpr int kMaxPeers = 256;  // per side: clients, servers

// "push", "pull" or "pushpull".
std::string_view ShapeName(Shape shape);

// What the bound's servers do with a request.
enum class BoundWork {
  kNone,  // plain: one frame each way, nothing stored, constant replies
  kSum,   // arithmetic: key + value frames, rows stored, pushes added, pulls copied (file comment)
};

// "raw_zmq" or "raw_zmq_arith": the bound's name in reports.
std::string_view BoundName(BoundWork work);

// The value of every float an arithmetic client pushes, so a stored row is a whole multiple of it.
inline constexpr float kPushedValue = 1.0f;

// Payload bytes one request of `shape` moves, counting the N-byte payload in each direction
// that carries one: N for push and pull, 2N for push-pull. The kAckBytes frames are not
// counted. ThroughputResult::bytes_per_sec uses this; the pserver side should too, so that
// ratios of byte rates equal ratios of request rates.
uint64_t PayloadBytesPerRequest(Shape shape, size_t bytes);

struct RawZmqOptions {
  Shape shape = Shape::kPush;
  size_t bytes = 4096;  // N; REQUIRES: <= kMaxPayloadBytes
  int window = 32;      // requests in flight per client, over all servers; REQUIRES: 1..kMaxWindow
  int num_clients = 1;  // REQUIRES: 1..kMaxPeers
  int num_servers = 1;  // REQUIRES: 1..kMaxPeers
  // Completed requests are counted over one common window of at least this length, which
  // starts once every client has finished its warm-up. REQUIRES: >= 0.
  std::chrono::milliseconds min_duration{1000};
  // Replies each client receives before counting starts (connection setup, TCP slow start,
  // first-touch of buffers). REQUIRES: >= 0.
  int warmup_requests = 64;
  // Longest a client waits for the next reply while it has requests outstanding, and
  // longest the warm-up may take, before the measurement fails with kDeadlineExceeded.
  // REQUIRES: > 0.
  std::chrono::milliseconds timeout{10000};
  // kSum REQUIRES: bytes a positive multiple of 4 (whole floats).
  BoundWork work = BoundWork::kNone;
  // kSum only (ignored for kNone); slower, for tests. Every client checks each pulled row
  // (all its floats equal, a whole multiple >= 1 of kPushedValue) and, once stopped, waits for
  // the replies to all its requests; then one more DEALER pulls every key 0..num_servers-1 from
  // every server into ThroughputResult::pulled_rows, before the servers stop.
  bool verify = false;
};

struct ThroughputResult {
  double requests_per_sec = 0;  // requests / seconds, summed over all clients
  double bytes_per_sec = 0;     // requests_per_sec * PayloadBytesPerRequest(shape, bytes)
  uint64_t requests = 0;        // replies received inside the measured window, all clients
  double seconds = 0;           // length of the measured window (steady_clock)
  double cpu_seconds = 0;       // CPU time of the whole process (all threads) over that window
  // BoundWork::kSum with verify only (else 0 and empty):
  uint64_t pushes_sent = 0;  // push and push-pull requests all clients sent, warm-up included
  // The rows pulled after every client had its replies: server s's key k at s * num_servers + k.
  // Their element-wise sum is pushes_sent * kPushedValue in every element.
  std::vector<std::vector<float>> pulled_rows;
};

// Starts options.num_servers servers and options.num_clients clients as threads (see the file
// comment), warms up, measures for at least min_duration, stops and joins every thread.
// Blocks for about warm-up + min_duration; at most about 2 * timeout + min_duration.
// Returns kInvalidArgument for options outside their REQUIRES, kDeadlineExceeded if a client
// waited `timeout` for a reply or warm-up did not finish within `timeout`, kCorruption if a
// reply or request had an unexpected size or frame count (or, with verify, a pulled row was not
// a uniform whole multiple of kPushedValue), kUnavailable or kInternal if ZeroMQ failed
// (the message names the call and errno text).
Result<ThroughputResult> MeasureRawZmqThroughput(const RawZmqOptions& options);

struct LatencyResult {
  double p50_us = 0;  // nearest-rank percentiles of the per-request round-trip time
  double p99_us = 0;
  double mean_us = 0;
  uint64_t samples = 0;  // round trips recorded (after warm-up)
};

// One in-flight round trip: a REQ client sends `bytes` (zero-copy), a REP server in its own
// thread and context echoes the received message back without copying it. The first `warmup`
// round trips are discarded; the rest are timed one by one with steady_clock until
// min_duration has passed (at least one sample is always taken).
// Blocks for about min_duration; a round trip that takes longer than `timeout` fails the call
// with kDeadlineExceeded. Other codes as for MeasureRawZmqThroughput.
Result<LatencyResult> MeasureRawZmqRoundTrip(
    size_t bytes, std::chrono::milliseconds min_duration, int warmup,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

}  // namespace pserver::bench
