#include "raw_zmq.h"

#include <fmt/core.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "bench_report.h"
#include "run_span.h"

namespace pserver::bench {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long idle loops sleep in zmq_poll before looking at their stop token again.
constexpr milliseconds kPollSlice{20};

// The kAckBytes frame (push ack, pull request). Sent zero-copy like the payloads.
constexpr char kAck[kAckBytes + 1] = "raw-zmq-ack-----";  // + 1: the literal's NUL, not sent

struct ContextCloser {
  void operator()(void* context) const {
    while (zmq_ctx_term(context) != 0 && zmq_errno() == EINTR) {
    }
  }
};
struct SocketCloser {
  void operator()(void* socket) const { zmq_close(socket); }
};
using ContextPtr = std::unique_ptr<void, ContextCloser>;
using SocketPtr = std::unique_ptr<void, SocketCloser>;

// A context with its one socket. Member order matters: the socket is closed before the
// context is terminated (zmq_ctx_term waits for every socket of its context to close).
struct Endpoint {
  ContextPtr context;
  SocketPtr socket;
};

// Owns one zmq_msg_t. Not copyable or movable: zmq messages must not be memcpy'd.
class Message {
 public:
  Message() { zmq_msg_init(&msg_); }
  // Zero-copy view of `data`, which must stay unchanged and alive until the context the
  // message is sent on has terminated. With no free function zmq makes a "constant" message:
  // no allocation, no reference count.
  Message(const char* data, size_t size) {
    zmq_msg_init_data(&msg_, const_cast<char*>(data), size, nullptr, nullptr);
  }
  ~Message() { zmq_msg_close(&msg_); }
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  zmq_msg_t* get() { return &msg_; }
  size_t size() { return zmq_msg_size(&msg_); }
  bool more() { return zmq_msg_more(&msg_) != 0; }
  const char* data() { return static_cast<const char*>(zmq_msg_data(&msg_)); }

 private:
  zmq_msg_t msg_;
};

Status ZmqError(std::string_view what) {
  const int err = zmq_errno();
  std::string msg = fmt::format("{}: {} (errno {})", what, zmq_strerror(err), err);
  switch (err) {
    case ETERM:
      return Status::Aborted(std::move(msg));
    case EHOSTUNREACH:
    case ECONNREFUSED:
    case EADDRINUSE:
    case EADDRNOTAVAIL:
      return Status::Unavailable(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

Status SetOption(void* socket, int option, int value, std::string_view name) {
  if (zmq_setsockopt(socket, option, &value, sizeof(value)) != 0) {
    return ZmqError(fmt::format("zmq_setsockopt({}={})", name, value));
  }
  return Status::Ok();
}

// A fresh context with one socket of `type`: LINGER 0, both HWMs at `hwm`, sends that block
// for at most `send_timeout`.
Result<Endpoint> MakeEndpoint(int type, int hwm, milliseconds send_timeout) {
  Endpoint ep;
  ep.context.reset(zmq_ctx_new());
  if (ep.context == nullptr) return ZmqError("zmq_ctx_new");
  ep.socket.reset(zmq_socket(ep.context.get(), type));
  if (ep.socket == nullptr) return ZmqError("zmq_socket");
  void* s = ep.socket.get();
  PSERVER_RETURN_IF_ERROR(SetOption(s, ZMQ_LINGER, 0, "ZMQ_LINGER"));
  PSERVER_RETURN_IF_ERROR(SetOption(s, ZMQ_SNDHWM, hwm, "ZMQ_SNDHWM"));
  PSERVER_RETURN_IF_ERROR(SetOption(s, ZMQ_RCVHWM, hwm, "ZMQ_RCVHWM"));
  PSERVER_RETURN_IF_ERROR(
      SetOption(s, ZMQ_SNDTIMEO, static_cast<int>(send_timeout.count()), "ZMQ_SNDTIMEO"));
  return ep;
}

// Binds to an ephemeral loopback TCP port and returns the endpoint to connect to.
Result<std::string> BindLoopback(void* socket) {
  if (zmq_bind(socket, "tcp://127.0.0.1:*") != 0) return ZmqError("zmq_bind(tcp://127.0.0.1:*)");
  char buf[256];
  size_t len = sizeof(buf);
  if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, buf, &len) != 0) {
    return ZmqError("zmq_getsockopt(ZMQ_LAST_ENDPOINT)");
  }
  return std::string(buf);
}

// Waits up to `timeout` for `socket` to have a message. An interrupted wait counts as a
// timeout: every caller loops and re-checks its own deadline.
Status WaitReadable(void* socket, milliseconds timeout) {
  zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&item, 1, static_cast<long>(timeout.count())) < 0 && zmq_errno() != EINTR) {
    return ZmqError("zmq_poll");
  }
  return Status::Ok();
}

// Runs `body` on its own std::jthread, which takes ownership of `endpoint` and closes it
// (socket, then context) when the body returns, so once Join returns no zero-copy message
// can still point into the caller's buffers. A non-OK result of the body also raises
// `*failed`, so that the coordinating thread can stop early.
// Thread safety: Join and the destructor are for the thread that constructed the object.
class SocketThread {
 public:
  using Body = std::function<Status(std::stop_token, void* socket)>;

  // `failed` is borrowed and must outlive this object.
  SocketThread(Endpoint endpoint, Body body, std::atomic<bool>* failed)
      : thread_([this, ep = std::move(endpoint), body = std::move(body),
                 failed](std::stop_token stop) mutable {
          Endpoint owned = std::move(ep);
          status_ = body(stop, owned.socket.get());
          if (!status_.ok()) failed->store(true);
        }) {}
  SocketThread(const SocketThread&) = delete;
  SocketThread& operator=(const SocketThread&) = delete;

  // Requests stop and waits for the body to return (it polls its stop token every
  // kPollSlice). Returns the body's Status.
  Status Join() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    return status_;
  }

 private:
  Status status_;        // written by the thread; read by Join after the join
  std::jthread thread_;  // last member: started after, and joined before, the others die
};

// Coordination between the measuring thread and the clients.
struct RunControl {
  std::atomic<int> warmed_up{0};       // clients past their warm-up
  std::atomic<bool> measuring{false};  // replies received while set are counted
  std::atomic<bool> failed{false};     // some thread's body returned an error
};

// Server loop: for each [identity][request] received on the ROUTER, sends back
// [identity][reply]. The reply is zero-copy from `reply` (pull, push-pull) or kAck (push).
Status ServeRouter(std::stop_token stop, void* socket, Shape shape, size_t bytes,
                   const std::vector<char>& reply) {
  const size_t request_size = shape == Shape::kPull ? kAckBytes : bytes;
  const char* reply_data = shape == Shape::kPush ? kAck : reply.data();
  const size_t reply_size = shape == Shape::kPush ? kAckBytes : bytes;
  while (!stop.stop_requested()) {
    Message identity;
    if (zmq_msg_recv(identity.get(), socket, ZMQ_DONTWAIT) < 0) {
      if (zmq_errno() == EAGAIN) {
        PSERVER_RETURN_IF_ERROR(WaitReadable(socket, kPollSlice));
        continue;
      }
      if (zmq_errno() == EINTR) continue;
      return ZmqError("raw ZeroMQ server: zmq_msg_recv(identity)");
    }
    // The parts of a multipart message are delivered together, so the body is already here.
    Message request;
    if (!identity.more()) return Status::Corruption("raw ZeroMQ server: request has no body");
    if (zmq_msg_recv(request.get(), socket, ZMQ_DONTWAIT) < 0) {
      return ZmqError("raw ZeroMQ server: zmq_msg_recv(body)");
    }
    if (request.more() || request.size() != request_size) {
      return Status::Corruption(
          fmt::format("raw ZeroMQ server: request of {} bytes{}, expected one frame of {}",
                      request.size(), request.more() ? " with more frames" : "", request_size));
    }
    if (zmq_msg_send(identity.get(), socket, ZMQ_SNDMORE) < 0) {
      // EHOSTUNREACH (ZMQ_ROUTER_MANDATORY): the client has gone, as at shutdown.
      if (zmq_errno() == EHOSTUNREACH) continue;
      return ZmqError("raw ZeroMQ server: zmq_msg_send(identity)");
    }
    Message out(reply_data, reply_size);
    if (zmq_msg_send(out.get(), socket, 0) < 0) {
      return ZmqError("raw ZeroMQ server: zmq_msg_send(reply)");
    }
  }
  return Status::Ok();
}

// Reply buffers of one size for an arithmetic server, recycled: the server thread takes one for
// each pulled row it copies, and ZeroMQ's I/O thread gives it back (Give, a zmq_free_fn) once the
// reply is sent. Thread-safe. Must outlive the context of every message built on its buffers.
class ReplyBuffers {
 public:
  static constexpr size_t kMaxFree = 64;  // more buffers than this are freed on return

  explicit ReplyBuffers(size_t bytes) : bytes_(std::max<size_t>(bytes, 1)) { free_.reserve(kMaxFree); }
  ~ReplyBuffers() {
    for (void* p : free_) ::operator delete(p);
  }
  ReplyBuffers(const ReplyBuffers&) = delete;
  ReplyBuffers& operator=(const ReplyBuffers&) = delete;

  // A buffer of the pool's size, contents unspecified.
  void* Take() ABSL_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (!free_.empty()) {
        void* p = free_.back();
        free_.pop_back();
        return p;
      }
    }
    return ::operator new(bytes_);
  }

  // zmq_free_fn: `hint` is the pool that `data` came from.
  static void Give(void* data, void* hint) { static_cast<ReplyBuffers*>(hint)->Put(data); }

 private:
  void Put(void* p) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (free_.size() < kMaxFree) {
        free_.push_back(p);  // never allocates: reserved
        return;
      }
    }
    ::operator delete(p);
  }

  const size_t bytes_;
  Mutex mu_;
  std::vector<void*> free_ ABSL_GUARDED_BY(mu_);
};

// dst[j] += the j-th float of `src`, for j < n. `src` points into a received message and need
// not be aligned for float; the loads go through memcpy (GCC makes them plain vector loads).
void AddRow(float* dst, const char* src, size_t n) {
  for (size_t j = 0; j < n; ++j) {
    float v;
    std::memcpy(&v, src + j * sizeof(float), sizeof(float));
    dst[j] += v;
  }
}

// The server of the arithmetic bound (BoundWork::kSum): a row of bytes/4 floats per key, which
// pushes add to and pulls copy from. Owned by the measuring thread, so that its reply buffers
// outlive the server's context. Thread-compatible: Serve runs on one thread.
class RowServer {
 public:
  RowServer(Shape shape, size_t bytes) : shape_(shape), bytes_(bytes), buffers_(bytes) {}

  // For each [identity][key] (a pull) or [identity][key][value] (a push-pull if the server's
  // shape is push-pull, else a push: also a pull cell's initial pushes) received on the ROUTER:
  // adds the value to the key's row, then replies [identity][kAck] to a push and
  // [identity][copy of the row] to a pull or push-pull.
  Status Serve(std::stop_token stop, void* socket) {
    while (!stop.stop_requested()) {
      Message identity;
      if (zmq_msg_recv(identity.get(), socket, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() == EAGAIN) {
          PSERVER_RETURN_IF_ERROR(WaitReadable(socket, kPollSlice));
          continue;
        }
        if (zmq_errno() == EINTR) continue;
        return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_recv(identity)");
      }
      PSERVER_RETURN_IF_ERROR(Handle(socket, identity));
    }
    return Status::Ok();
  }

 private:
  Status Handle(void* socket, Message& identity) {
    // The parts of a multipart message are delivered together, so the rest is already here.
    Message key;
    if (!identity.more()) return Status::Corruption("arithmetic raw ZeroMQ server: request has no key frame");
    if (zmq_msg_recv(key.get(), socket, ZMQ_DONTWAIT) < 0) {
      return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_recv(key)");
    }
    if (key.size() != sizeof(uint64_t)) {
      return Status::Corruption(
          fmt::format("arithmetic raw ZeroMQ server: key frame of {} bytes, expected 8", key.size()));
    }
    uint64_t k;
    std::memcpy(&k, key.data(), sizeof(k));
    bool reply_row = true;
    float* row;
    if (key.more()) {
      Message value;
      if (zmq_msg_recv(value.get(), socket, ZMQ_DONTWAIT) < 0) {
        return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_recv(value)");
      }
      if (value.more() || value.size() != bytes_) {
        return Status::Corruption(
            fmt::format("arithmetic raw ZeroMQ server: value frame of {} bytes{}, expected one of {}", value.size(),
                        value.more() ? " with more frames" : "", bytes_));
      }
      auto [it, fresh] = rows_.try_emplace(k);
      if (fresh) {
        it->second = std::make_unique_for_overwrite<float[]>(width());
        std::memcpy(it->second.get(), value.data(), bytes_);
      } else {
        AddRow(it->second.get(), value.data(), width());
      }
      row = it->second.get();
      reply_row = shape_ == Shape::kPushPull;
    } else {
      auto [it, fresh] = rows_.try_emplace(k);
      if (fresh) it->second = std::make_unique<float[]>(width());  // zeros: never pushed
      row = it->second.get();
    }
    if (zmq_msg_send(identity.get(), socket, ZMQ_SNDMORE) < 0) {
      // EHOSTUNREACH (ZMQ_ROUTER_MANDATORY): the client has gone, as at shutdown.
      if (zmq_errno() == EHOSTUNREACH) return Status::Ok();
      return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_send(identity)");
    }
    if (!reply_row) {
      Message ack(kAck, kAckBytes);
      if (zmq_msg_send(ack.get(), socket, 0) < 0) return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_send(ack)");
      return Status::Ok();
    }
    void* copy = buffers_.Take();
    std::memcpy(copy, row, bytes_);
    zmq_msg_t reply;
    if (zmq_msg_init_data(&reply, copy, bytes_, &ReplyBuffers::Give, &buffers_) != 0) {
      ReplyBuffers::Give(copy, &buffers_);
      return ZmqError("arithmetic raw ZeroMQ server: zmq_msg_init_data");
    }
    const int rc = zmq_msg_send(&reply, socket, 0);
    if (rc < 0) {
      Status s = ZmqError("arithmetic raw ZeroMQ server: zmq_msg_send(row)");
      zmq_msg_close(&reply);  // gives the buffer back
      return s;
    }
    return Status::Ok();
  }

  size_t width() const { return bytes_ / sizeof(float); }

  const Shape shape_;
  const size_t bytes_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<float[]>> rows_;
  ReplyBuffers buffers_;
};

// Checks that a pulled row of `bytes` is what an arithmetic server can hold: every float the
// same whole multiple, at least 1, of kPushedValue.
Status CheckPulledRow(const char* data, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  float first;
  std::memcpy(&first, data, sizeof(first));
  const float times = first / kPushedValue;
  if (!(times >= 1) || times != std::floor(times)) {
    return Status::Corruption(fmt::format("arithmetic raw ZeroMQ: pulled a row holding {}, not a whole multiple "
                                          ">= 1 of the pushed value {}",
                                          first, kPushedValue));
  }
  for (size_t j = 1; j < bytes / sizeof(float); ++j) {
    float v;
    std::memcpy(&v, data + j * sizeof(float), sizeof(v));
    if (v != first) {
      return Status::Corruption(
          fmt::format("arithmetic raw ZeroMQ: pulled row holds {} at float 0 but {} at float {}", first, v, j));
    }
  }
  return Status::Ok();
}

// What a client sends (see the file comment). Borrowed buffers, owned by the measuring thread
// so that they outlive every context (messages are zero-copy views of them).
struct ClientData {
  const std::vector<char>* payload;  // the N bytes pushed
  const std::vector<uint64_t>* keys;  // kSum: keys 0..num_servers-1, one key frame each
};

// Sends request number `j` of `shape` without blocking on the first frame. Returns false, having
// sent nothing, if ZeroMQ would block (EAGAIN) or the call was interrupted.
Result<bool> SendRequest(void* socket, const RawZmqOptions& o, Shape shape, uint64_t j, const ClientData& data) {
  if (o.work == BoundWork::kNone) {
    const bool pull = shape == Shape::kPull;
    Message request(pull ? kAck : data.payload->data(), pull ? kAckBytes : o.bytes);
    if (zmq_msg_send(request.get(), socket, ZMQ_DONTWAIT) >= 0) return true;
  } else {
    const uint64_t* key_ptr = &(*data.keys)[j % data.keys->size()];
    Message key(reinterpret_cast<const char*>(key_ptr), sizeof(uint64_t));
    const bool with_value = shape != Shape::kPull;
    if (zmq_msg_send(key.get(), socket, ZMQ_DONTWAIT | (with_value ? ZMQ_SNDMORE : 0)) >= 0) {
      if (!with_value) return true;
      // The rest of a started message goes out whole (under ZMQ_SNDTIMEO).
      Message value(data.payload->data(), o.bytes);
      while (zmq_msg_send(value.get(), socket, 0) < 0) {
        if (zmq_errno() != EINTR) return ZmqError("arithmetic raw ZeroMQ client: zmq_msg_send(value)");
      }
      return true;
    }
  }
  if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) return false;
  return ZmqError("raw ZeroMQ client: zmq_msg_send");
}

// Receives one reply without blocking. Returns true if one was there -- one frame of `size`
// bytes, and with `check_row` a row CheckPulledRow accepts -- and false if none was waiting.
Result<bool> TryReceiveReply(void* socket, size_t size, bool check_row) {
  Message reply;
  if (zmq_msg_recv(reply.get(), socket, ZMQ_DONTWAIT) < 0) {
    if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) return false;
    return ZmqError("raw ZeroMQ client: zmq_msg_recv");
  }
  if (reply.more() || reply.size() != size) {
    return Status::Corruption(fmt::format("raw ZeroMQ client: reply of {} bytes{}, expected one frame of {}",
                                          reply.size(), reply.more() ? " with more frames" : "", size));
  }
  if (check_row) PSERVER_RETURN_IF_ERROR(CheckPulledRow(reply.data(), reply.size()));
  return true;
}

// Receives replies until `*outstanding` is 0, failing if none comes for `timeout`.
Status Drain(void* socket, size_t size, bool check_row, int* outstanding, milliseconds timeout,
             std::string_view what) {
  auto last_reply = Clock::now();
  while (*outstanding > 0) {
    PSERVER_ASSIGN_OR_RETURN(bool got, TryReceiveReply(socket, size, check_row));
    if (got) {
      --*outstanding;
      last_reply = Clock::now();
      continue;
    }
    if (Clock::now() - last_reply >= timeout) {
      return Status::DeadlineExceeded(fmt::format("raw ZeroMQ client: {}: no reply for {} ms with {} outstanding", what,
                                                  timeout.count(), *outstanding));
    }
    PSERVER_RETURN_IF_ERROR(WaitReadable(socket, kPollSlice));
  }
  return Status::Ok();
}

// Client loop: keeps options.window requests in flight on one DEALER connected to every
// server (the DEALER round-robins them over the servers), and counts the replies received
// while `control.measuring` is set into `*counted`. kSum: a pull cell first pushes each key
// once; `*pushes_sent` counts the push and push-pull requests sent; with verify, pulled rows are
// checked and, once stopped, the client waits for every reply.
Status RunDealer(std::stop_token stop, void* socket, const RawZmqOptions& options, const ClientData& data,
                 RunControl& control, uint64_t* counted, uint64_t* pushes_sent) {
  const bool arithmetic = options.work == BoundWork::kSum;
  const bool verify = arithmetic && options.verify;
  const size_t reply_size = options.shape == Shape::kPush ? kAckBytes : options.bytes;
  const bool check_row = verify && options.shape != Shape::kPush;
  int outstanding = 0;
  if (arithmetic && options.shape == Shape::kPull) {
    // Store a row for each key (one per server) before pulling it, as pserver's pull cells do.
    for (uint64_t s = 0; s < data.keys->size(); ++s) {
      PSERVER_ASSIGN_OR_RETURN(bool sent, SendRequest(socket, options, Shape::kPush, s, data));
      if (!sent) return Status::Internal("arithmetic raw ZeroMQ client: an initial push was not accepted");
      ++outstanding;
      ++*pushes_sent;
    }
    PSERVER_RETURN_IF_ERROR(Drain(socket, kAckBytes, false, &outstanding, options.timeout, "initial pushes"));
  }
  uint64_t issued = 0;
  uint64_t received = 0;
  bool warm = false;
  auto note_warm = [&] {
    if (!warm && received >= static_cast<uint64_t>(options.warmup_requests)) {
      warm = true;
      control.warmed_up.fetch_add(1);
    }
  };
  note_warm();
  auto last_reply = Clock::now();
  while (!stop.stop_requested()) {
    while (outstanding < options.window) {
      // EAGAIN cannot happen with HWMs far above the window; if it does, retry after a reply.
      PSERVER_ASSIGN_OR_RETURN(bool sent, SendRequest(socket, options, options.shape, issued, data));
      if (!sent) break;
      ++outstanding;
      ++issued;
      if (arithmetic && options.shape != Shape::kPull) ++*pushes_sent;
    }
    PSERVER_ASSIGN_OR_RETURN(bool got, TryReceiveReply(socket, reply_size, check_row));
    if (got) {
      --outstanding;
      ++received;
      last_reply = Clock::now();
      if (control.measuring.load(std::memory_order_relaxed)) ++*counted;
      note_warm();
      continue;
    }
    if (outstanding > 0 && Clock::now() - last_reply >= options.timeout) {
      return Status::DeadlineExceeded(
          fmt::format("raw ZeroMQ client: no reply from {} server(s) for {} ms with {} request(s) "
                      "outstanding ({} {}-byte requests answered so far)",
                      options.num_servers, options.timeout.count(), outstanding, received,
                      ShapeName(options.shape)));
    }
    PSERVER_RETURN_IF_ERROR(WaitReadable(socket, kPollSlice));
  }
  if (verify) return Drain(socket, reply_size, check_row, &outstanding, options.timeout, "after the run");
  return Status::Ok();
}

Status ValidateOptions(const RawZmqOptions& o) {
  if (o.bytes > kMaxPayloadBytes) {
    return Status::InvalidArgument(
        fmt::format("raw ZeroMQ: bytes={} exceeds the limit of {}", o.bytes, kMaxPayloadBytes));
  }
  if (o.window < 1 || o.window > kMaxWindow) {
    return Status::InvalidArgument(
        fmt::format("raw ZeroMQ: window={} is outside 1..{}", o.window, kMaxWindow));
  }
  if (o.num_clients < 1 || o.num_clients > kMaxPeers || o.num_servers < 1 ||
      o.num_servers > kMaxPeers) {
    return Status::InvalidArgument(
        fmt::format("raw ZeroMQ: num_clients={} and num_servers={} must be in 1..{}", o.num_clients,
                    o.num_servers, kMaxPeers));
  }
  if (o.min_duration.count() < 0 || o.warmup_requests < 0 || o.timeout.count() <= 0) {
    return Status::InvalidArgument(fmt::format(
        "raw ZeroMQ: min_duration={} ms and warmup_requests={} must be >= 0 and timeout={} ms "
        "> 0",
        o.min_duration.count(), o.warmup_requests, o.timeout.count()));
  }
  if (o.work == BoundWork::kSum && (o.bytes == 0 || o.bytes % sizeof(float) != 0)) {
    return Status::InvalidArgument(
        fmt::format("arithmetic raw ZeroMQ: bytes={} must be a positive multiple of 4 (whole floats)", o.bytes));
  }
  return Status::Ok();
}

// Joins every thread of `threads` (requesting stop first); returns the first error.
Status JoinThreads(std::vector<std::unique_ptr<SocketThread>>& threads) {
  Status first;
  for (auto& t : threads) {
    Status s = t->Join();
    if (first.ok()) first = s;
  }
  return first;
}

// verify: pulls every key in `keys` from every server at `endpoints` over a DEALER of its own,
// once the clients have stopped and had all their replies. Server s's key k lands at
// s * keys.size() + k.
Result<std::vector<std::vector<float>>> PullEveryRow(const std::vector<std::string>& endpoints,
                                                     const std::vector<uint64_t>& keys, size_t bytes,
                                                     milliseconds timeout) {
  std::vector<std::vector<float>> rows;
  for (const std::string& endpoint : endpoints) {
    PSERVER_ASSIGN_OR_RETURN(Endpoint ep, MakeEndpoint(ZMQ_DEALER, 1000, timeout));
    void* s = ep.socket.get();
    PSERVER_RETURN_IF_ERROR(SetOption(s, ZMQ_RCVTIMEO, static_cast<int>(timeout.count()), "ZMQ_RCVTIMEO"));
    if (zmq_connect(s, endpoint.c_str()) != 0) return ZmqError("zmq_connect(" + endpoint + ")");
    for (const uint64_t& key : keys) {
      Message request(reinterpret_cast<const char*>(&key), sizeof(key));  // `keys` outlives ep
      if (zmq_msg_send(request.get(), s, 0) < 0) return ZmqError("arithmetic raw ZeroMQ check: zmq_msg_send");
      Message reply;
      int rc;
      while ((rc = zmq_msg_recv(reply.get(), s, 0)) < 0 && zmq_errno() == EINTR) {
      }
      if (rc < 0) {
        if (zmq_errno() == EAGAIN) {
          return Status::DeadlineExceeded(
              fmt::format("arithmetic raw ZeroMQ check: no reply from {} within {} ms", endpoint, timeout.count()));
        }
        return ZmqError("arithmetic raw ZeroMQ check: zmq_msg_recv");
      }
      if (reply.more() || reply.size() != bytes) {
        return Status::Corruption(
            fmt::format("arithmetic raw ZeroMQ check: pulled {} bytes, expected {}", reply.size(), bytes));
      }
      std::vector<float>& row = rows.emplace_back(bytes / sizeof(float));
      std::memcpy(row.data(), reply.data(), bytes);
    }
  }
  return rows;
}

// Stops and joins every client, then every server (so servers see the clients go rather
// than the reverse). Returns the first error of a server, else of a client, else OK.
Status JoinAll(std::vector<std::unique_ptr<SocketThread>>& clients,
               std::vector<std::unique_ptr<SocketThread>>& servers) {
  Status client_status = JoinThreads(clients);
  Status server_status = JoinThreads(servers);
  return server_status.ok() ? client_status : server_status;
}

// Sleeps until `deadline`, waking early if some thread failed. Returns whether one failed.
bool SleepUntilOrFailure(Clock::time_point deadline, const RunControl& control) {
  while (!control.failed.load()) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(deadline - now, milliseconds(5)));
  }
  return true;
}

// One REQ round trip of `payload`; returns its duration in microseconds.
Result<double> RoundTripOnce(void* socket, const std::vector<char>& payload, milliseconds timeout) {
  const auto start = Clock::now();
  Message request(payload.data(), payload.size());
  if (zmq_msg_send(request.get(), socket, 0) < 0) {
    if (zmq_errno() == EAGAIN) {
      return Status::DeadlineExceeded(
          fmt::format("raw ZeroMQ round trip: request not accepted within {} ms", timeout.count()));
    }
    return ZmqError("raw ZeroMQ round trip: zmq_msg_send");
  }
  Message reply;
  int rc;
  while ((rc = zmq_msg_recv(reply.get(), socket, 0)) < 0 && zmq_errno() == EINTR) {
  }
  const auto end = Clock::now();
  if (rc < 0) {
    if (zmq_errno() == EAGAIN) {
      return Status::DeadlineExceeded(
          fmt::format("raw ZeroMQ round trip: no echo of a {}-byte request within {} ms",
                      payload.size(), timeout.count()));
    }
    return ZmqError("raw ZeroMQ round trip: zmq_msg_recv");
  }
  if (reply.more() || reply.size() != payload.size()) {
    return Status::Corruption(fmt::format("raw ZeroMQ round trip: echo of {} bytes, expected {}",
                                          reply.size(), payload.size()));
  }
  return std::chrono::duration<double, std::micro>(end - start).count();
}

// Echo server loop on a REP socket: sends each received message back, without copying it.
Status ServeEcho(std::stop_token stop, void* socket) {
  while (!stop.stop_requested()) {
    Message m;
    if (zmq_msg_recv(m.get(), socket, ZMQ_DONTWAIT) < 0) {
      if (zmq_errno() == EAGAIN) {
        PSERVER_RETURN_IF_ERROR(WaitReadable(socket, kPollSlice));
        continue;
      }
      if (zmq_errno() == EINTR) continue;
      return ZmqError("raw ZeroMQ echo server: zmq_msg_recv");
    }
    if (m.more()) return Status::Corruption("raw ZeroMQ echo server: multipart request");
    if (zmq_msg_send(m.get(), socket, 0) < 0) {
      return ZmqError("raw ZeroMQ echo server: zmq_msg_send");
    }
  }
  return Status::Ok();
}

// The client side of MeasureRawZmqRoundTrip, on the calling thread.
Result<LatencyResult> RunRoundTrips(const std::string& server, const std::vector<char>& payload,
                                    milliseconds min_duration, int warmup, milliseconds timeout) {
  PSERVER_ASSIGN_OR_RETURN(Endpoint client, MakeEndpoint(ZMQ_REQ, 1000, timeout));
  void* s = client.socket.get();
  PSERVER_RETURN_IF_ERROR(
      SetOption(s, ZMQ_RCVTIMEO, static_cast<int>(timeout.count()), "ZMQ_RCVTIMEO"));
  if (zmq_connect(s, server.c_str()) != 0) return ZmqError("zmq_connect(" + server + ")");
  for (int i = 0; i < warmup; ++i) {
    PSERVER_ASSIGN_OR_RETURN(double us, RoundTripOnce(s, payload, timeout));
    (void)us;
  }
  std::vector<double> samples;
  double sum = 0;
  const auto start = Clock::now();
  do {
    PSERVER_ASSIGN_OR_RETURN(double us, RoundTripOnce(s, payload, timeout));
    samples.push_back(us);
    sum += us;
  } while (Clock::now() - start < min_duration);
  LatencyResult r;
  r.samples = samples.size();
  r.mean_us = sum / static_cast<double>(samples.size());
  r.p50_us = Percentile(samples, 50);
  r.p99_us = Percentile(samples, 99);
  return r;
}

}  // namespace

std::string_view BoundName(BoundWork work) { return work == BoundWork::kSum ? "raw_zmq_arith" : "raw_zmq"; }

std::string_view ShapeName(Shape shape) {
  switch (shape) {
    case Shape::kPush:
      return "push";
    case Shape::kPull:
      return "pull";
    case Shape::kPushPull:
      return "pushpull";
  }
  return "unknown-shape";
}

uint64_t PayloadBytesPerRequest(Shape shape, size_t bytes) {
  return shape == Shape::kPushPull ? 2 * uint64_t{bytes} : uint64_t{bytes};
}

Result<ThroughputResult> MeasureRawZmqThroughput(const RawZmqOptions& options) {
  PSERVER_RETURN_IF_ERROR(ValidateOptions(options));
  const RawZmqOptions o = options;
  // Far above what can be queued: each client has at most `window` requests in flight.
  const int hwm = std::max(1000, 4 * o.window * o.num_clients);

  // Declared before the threads so that they outlive them: zero-copy messages point into
  // these buffers until each thread has closed its context (SocketThread).
  const bool arithmetic = o.work == BoundWork::kSum;
  std::vector<char> payload(o.bytes, 'p');  // client sends (push, push-pull)
  if (arithmetic) {
    for (size_t i = 0; i + sizeof(float) <= o.bytes; i += sizeof(float)) {
      std::memcpy(payload.data() + i, &kPushedValue, sizeof(float));
    }
  }
  const std::vector<char> reply(o.bytes, 'r');  // plain servers reply (pull, push-pull)
  std::vector<uint64_t> keys(static_cast<size_t>(o.num_servers));  // kSum: key s for server s
  for (size_t s = 0; s < keys.size(); ++s) keys[s] = s;
  const ClientData client_data{&payload, &keys};
  std::vector<std::unique_ptr<RowServer>> row_servers;  // kSum: each server's rows
  RunControl control;
  std::vector<uint64_t> counted(o.num_clients, 0);  // slot i written only by client i
  std::vector<uint64_t> pushes(o.num_clients, 0);   // slot i written only by client i
  std::vector<std::unique_ptr<SocketThread>> servers;
  std::vector<std::unique_ptr<SocketThread>> clients;

  std::vector<std::string> endpoints;
  for (int i = 0; i < o.num_servers; ++i) {
    PSERVER_ASSIGN_OR_RETURN(Endpoint ep, MakeEndpoint(ZMQ_ROUTER, hwm, o.timeout));
    PSERVER_RETURN_IF_ERROR(
        SetOption(ep.socket.get(), ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY"));
    PSERVER_ASSIGN_OR_RETURN(std::string endpoint, BindLoopback(ep.socket.get()));
    endpoints.push_back(std::move(endpoint));
    if (arithmetic) {
      RowServer* rows = row_servers.emplace_back(std::make_unique<RowServer>(o.shape, o.bytes)).get();
      servers.push_back(std::make_unique<SocketThread>(
          std::move(ep), [rows](std::stop_token stop, void* socket) { return rows->Serve(stop, socket); },
          &control.failed));
      continue;
    }
    servers.push_back(std::make_unique<SocketThread>(
        std::move(ep),
        [&reply, shape = o.shape, bytes = o.bytes](std::stop_token stop, void* socket) {
          return ServeRouter(stop, socket, shape, bytes, reply);
        },
        &control.failed));
  }
  for (int i = 0; i < o.num_clients; ++i) {
    PSERVER_ASSIGN_OR_RETURN(Endpoint ep, MakeEndpoint(ZMQ_DEALER, hwm, o.timeout));
    for (const std::string& endpoint : endpoints) {
      if (zmq_connect(ep.socket.get(), endpoint.c_str()) != 0) {
        return ZmqError("raw ZeroMQ client: zmq_connect(" + endpoint + ")");
      }
    }
    uint64_t* slot = &counted[static_cast<size_t>(i)];
    uint64_t* pushes_slot = &pushes[static_cast<size_t>(i)];
    clients.push_back(std::make_unique<SocketThread>(
        std::move(ep),
        [&o, &client_data, &control, slot, pushes_slot](std::stop_token stop, void* socket) {
          return RunDealer(stop, socket, o, client_data, control, slot, pushes_slot);
        },
        &control.failed));
  }

  // Every early exit below stops the threads and returns the error that caused it.
  auto stop_all_after_failure = [&]() -> Status {
    Status s = JoinAll(clients, servers);
    return s.ok() ? Status::Internal("raw ZeroMQ: a thread failed but reported no error") : s;
  };
  const auto warmup_deadline = Clock::now() + o.timeout;
  while (control.warmed_up.load() < o.num_clients) {
    if (control.failed.load()) return stop_all_after_failure();
    if (Clock::now() >= warmup_deadline) {
      const int warmed = control.warmed_up.load();
      PSERVER_RETURN_IF_ERROR(JoinAll(clients, servers));
      return Status::DeadlineExceeded(
          fmt::format("raw ZeroMQ warm-up: only {} of {} clients received {} replies within {} ms",
                      warmed, o.num_clients, o.warmup_requests, o.timeout.count()));
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  const auto start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  control.measuring.store(true);
  const bool failed = SleepUntilOrFailure(start + o.min_duration, control);
  control.measuring.store(false);
  const auto end = Clock::now();
  const double cpu_end = ProcessCpuSeconds();
  if (failed) return stop_all_after_failure();

  ThroughputResult r;
  if (arithmetic && o.verify) {
    // The clients have had every reply once joined, so every push is in the rows pulled here.
    Status status = JoinThreads(clients);
    if (status.ok()) {
      Result<std::vector<std::vector<float>>> rows = PullEveryRow(endpoints, keys, o.bytes, o.timeout);
      if (rows.ok()) {
        r.pulled_rows = std::move(*rows);
      } else {
        status = rows.status();
      }
    }
    Status server_status = JoinThreads(servers);
    PSERVER_RETURN_IF_ERROR(server_status);  // a server's error explains a client's
    PSERVER_RETURN_IF_ERROR(status);
    for (uint64_t p : pushes) r.pushes_sent += p;
  } else {
    PSERVER_RETURN_IF_ERROR(JoinAll(clients, servers));
  }
  for (uint64_t c : counted) r.requests += c;
  r.seconds = std::chrono::duration<double>(end - start).count();
  r.cpu_seconds = cpu_end - cpu_start;
  if (r.seconds > 0) {
    r.requests_per_sec = static_cast<double>(r.requests) / r.seconds;
    r.bytes_per_sec =
        r.requests_per_sec * static_cast<double>(PayloadBytesPerRequest(o.shape, o.bytes));
  }
  return r;
}

Result<LatencyResult> MeasureRawZmqRoundTrip(size_t bytes, milliseconds min_duration, int warmup,
                                             milliseconds timeout) {
  if (bytes > kMaxPayloadBytes || min_duration.count() < 0 || warmup < 0 || timeout.count() <= 0) {
    return Status::InvalidArgument(
        fmt::format("raw ZeroMQ round trip: bytes={} (max {}), min_duration={} ms, warmup={}, "
                    "timeout={} ms: need min_duration >= 0, warmup >= 0, timeout > 0",
                    bytes, kMaxPayloadBytes, min_duration.count(), warmup, timeout.count()));
  }
  const std::vector<char> payload(bytes, 'e');  // outlives the client's context
  std::atomic<bool> failed{false};
  PSERVER_ASSIGN_OR_RETURN(Endpoint server_ep, MakeEndpoint(ZMQ_REP, 1000, timeout));
  PSERVER_ASSIGN_OR_RETURN(std::string endpoint, BindLoopback(server_ep.socket.get()));
  SocketThread server(std::move(server_ep), ServeEcho, &failed);
  Result<LatencyResult> result = RunRoundTrips(endpoint, payload, min_duration, warmup, timeout);
  Status server_status = server.Join();
  if (!server_status.ok()) return server_status;  // the cause of any client-side timeout
  return result;
}

}  // namespace pserver::bench
