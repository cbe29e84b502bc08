// thread_structure_bench: how much of the gap between pserver and raw ZeroMQ on small requests
// comes from the shape of pserver's threads, measured with plain ZeroMQ alone.
//
// Every variant pushes N-byte requests (one message each, 32 in flight) from one client to one
// server over loopback TCP, and the server answers each with a 64-byte ack; each peer has its
// own context, as in `pserver bench`. The variants differ in one thing at a time:
//   bound      the raw ZeroMQ bound of `pserver bench`: one DEALER->ROUTER connection, the
//              client's one thread sends and receives, constant (never freed) payload messages;
//   copy       the same, but each request and each ack is copied into a message ZeroMQ
//              allocates and frees, as pserver's transport does with a message's head;
//   reply_conn copy, with pserver's connections: the server answers over a connection of its
//              own (its DEALER to the client's ROUTER), which the issuing thread reads;
//   structure  reply_conn, with pserver's threads: a client receive thread takes the acks and
//              wakes the issuing thread through a mutex and condition variable when its window
//              is full.
// So copy/bound is the cost of allocated messages, reply_conn/copy that of the second
// connection, structure/reply_conn that of handing each ack to another thread.
// Rounds alternate the variants; each figure is the median of the rounds, with its range.
//
// No wait is unbounded: every receive is a zmq_poll or condition wait with a timeout, and a
// round that stalls for --timeout-ms fails the run with a message naming the variant.
#include <zmq.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "bench_report.h"
#include "pserver/result.h"
#include "run_span.h"

namespace pserver::bench {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kAckBytes = 64;  // a pserver reply header
constexpr int kWindow = 32;

struct Flags {
  size_t bytes = 4096;
  int rounds = 8;
  int duration_ms = 1000;
  int timeout_ms = 10000;
};

enum class Variant { kBound, kCopy, kReplyConnection, kStructure };
constexpr Variant kVariants[] = {Variant::kBound, Variant::kCopy, Variant::kReplyConnection, Variant::kStructure};
constexpr int kNumVariants = 4;
const char* VariantName(Variant v) {
  switch (v) {
    case Variant::kBound: return "bound";
    case Variant::kCopy: return "copy";
    case Variant::kReplyConnection: return "reply_conn";
    case Variant::kStructure: return "structure";
  }
  return "unknown";
}

Status ZmqError(const std::string& what) { return Status::Internal(what + ": " + zmq_strerror(zmq_errno())); }

// One context per peer, its sockets closed before the context terminates.
class Peer {
 public:
  Peer() : context_(zmq_ctx_new()) {}
  ~Peer() {
    for (void* s : sockets_) zmq_close(s);
    if (context_ != nullptr) zmq_ctx_term(context_);
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  Result<void*> Socket(int type) {
    if (context_ == nullptr) return ZmqError("zmq_ctx_new");
    void* s = zmq_socket(context_, type);
    if (s == nullptr) return ZmqError("zmq_socket");
    sockets_.push_back(s);
    const int hwm = 100000, zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    return s;
  }

 private:
  void* context_;
  std::vector<void*> sockets_;
};

Result<std::string> BindAny(void* socket) {
  if (zmq_bind(socket, "tcp://127.0.0.1:*") != 0) return ZmqError("zmq_bind");
  char endpoint[256];
  size_t size = sizeof endpoint;
  if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &size) != 0) return ZmqError("ZMQ_LAST_ENDPOINT");
  return std::string(endpoint);
}

// Sends `size` bytes of `data`: a constant message (no allocation) or an allocated copy.
bool SendBytes(void* socket, const char* data, size_t size, bool copy, int flags) {
  zmq_msg_t m;
  if (copy) {
    zmq_msg_init_size(&m, size);
    std::memcpy(zmq_msg_data(&m), data, size);
  } else {
    zmq_msg_init_data(&m, const_cast<char*>(data), size, nullptr, nullptr);
  }
  if (zmq_msg_send(&m, socket, flags) >= 0) return true;
  zmq_msg_close(&m);
  return false;
}

// Receives one whole multipart message within `timeout`; false on timeout or error. With
// `identity`, the first part (a ROUTER's routing id) is kept there for the reply.
bool ReceiveMessage(void* socket, milliseconds timeout, zmq_msg_t* identity = nullptr) {
  zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
  zmq_msg_t part;
  zmq_msg_init(&part);
  if (zmq_msg_recv(&part, socket, ZMQ_DONTWAIT) < 0) {
    if (zmq_poll(&item, 1, static_cast<long>(timeout.count())) <= 0 || zmq_msg_recv(&part, socket, 0) < 0) {
      zmq_msg_close(&part);
      return false;
    }
  }
  bool ok = true;
  if (identity != nullptr) {
    zmq_msg_move(identity, &part);
    ok = zmq_msg_recv(&part, socket, 0) >= 0;
  }
  while (ok && zmq_msg_more(&part)) ok = zmq_msg_recv(&part, socket, 0) >= 0;
  zmq_msg_close(&part);
  return ok;
}

struct Round {
  double requests_per_sec = 0;
  double cpu_us_per_request = 0;
};

// One round of variant `v`: the server on a thread of its own, the client on this thread (and,
// for kStructure, a receive thread); requests are counted for --duration-ms after a warm-up of
// two windows.
Result<Round> RunRound(const Flags& f, Variant v) {
  const bool copy = v != Variant::kBound;
  const milliseconds timeout(f.timeout_ms);
  std::vector<char> payload(f.bytes, 'p');
  const char ack[kAckBytes] = {};
  Peer server_peer, client_peer;
  PSERVER_ASSIGN_OR_RETURN(void* server_in, server_peer.Socket(ZMQ_ROUTER));
  PSERVER_ASSIGN_OR_RETURN(std::string server_address, BindAny(server_in));
  PSERVER_ASSIGN_OR_RETURN(void* client_out, client_peer.Socket(ZMQ_DEALER));
  if (zmq_connect(client_out, server_address.c_str()) != 0) return ZmqError("zmq_connect");
  // The acks' own connection, server DEALER -> client ROUTER.
  const bool reply_connection = v == Variant::kReplyConnection || v == Variant::kStructure;
  void* client_in = client_out;
  void* server_out = server_in;
  if (reply_connection) {
    PSERVER_ASSIGN_OR_RETURN(client_in, client_peer.Socket(ZMQ_ROUTER));
    PSERVER_ASSIGN_OR_RETURN(std::string client_address, BindAny(client_in));
    PSERVER_ASSIGN_OR_RETURN(server_out, server_peer.Socket(ZMQ_DEALER));
    if (zmq_connect(server_out, client_address.c_str()) != 0) return ZmqError("zmq_connect");
  }

  // The threads are declared after the peers, so they are joined before the sockets close.
  std::jthread server([&](std::stop_token st) {
    while (!st.stop_requested()) {
      zmq_msg_t identity;
      zmq_msg_init(&identity);
      if (!ReceiveMessage(server_in, milliseconds(20), &identity)) {
        zmq_msg_close(&identity);
        continue;
      }
      if (reply_connection) {
        zmq_msg_close(&identity);
        SendBytes(server_out, ack, kAckBytes, copy, 0);
      } else if (zmq_msg_send(&identity, server_out, ZMQ_SNDMORE) < 0) {
        zmq_msg_close(&identity);
      } else {
        SendBytes(server_out, ack, kAckBytes, copy, 0);
      }
    }
  });

  // Acks taken by the client's receive thread (kStructure), or else by the issuing thread.
  struct Acks {
    Mutex mu;
    CondVar acked_cv;
    uint64_t acked ABSL_GUARDED_BY(mu) = 0;
    bool issuer_waits ABSL_GUARDED_BY(mu) = false;
  } acks;
  std::jthread receiver;
  if (v == Variant::kStructure) {
    receiver = std::jthread([&](std::stop_token st) {
      while (!st.stop_requested()) {
        if (!ReceiveMessage(client_in, milliseconds(20), nullptr)) continue;
        MutexLock lock(&acks.mu);
        ++acks.acked;
        if (acks.issuer_waits) acks.acked_cv.Signal();
      }
    });
  }
  // Waits until request `completed + 1` is acked (acks come in order).
  uint64_t issued = 0, completed = 0, counted = 0;
  auto wait_for_next_ack = [&]() -> bool {
    if (v != Variant::kStructure) {
      if (!ReceiveMessage(client_in, timeout, nullptr)) return false;
    } else {
      MutexLock lock(&acks.mu);
      acks.issuer_waits = true;
      const bool ok = acks.acked_cv.WaitFor(&acks.mu, timeout,
                                            [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(acks.mu) { return acks.acked > completed; });
      acks.issuer_waits = false;
      if (!ok) return false;
    }
    ++completed;
    return true;
  };

  Clock::time_point start{}, end{};
  double cpu_start = 0, cpu_end = 0;
  bool measuring = false;
  Status status;
  for (;;) {
    if (issued >= kWindow) {
      if (!wait_for_next_ack()) {
        status = Status::DeadlineExceeded(fmt::format("{}: no ack within {} ms", VariantName(v), f.timeout_ms));
        break;
      }
      if (measuring) ++counted;
    }
    if (!measuring && issued == 2 * kWindow) {
      measuring = true;
      start = Clock::now();
      cpu_start = ProcessCpuSeconds();
    }
    if (measuring && Clock::now() - start >= milliseconds(f.duration_ms)) break;
    if (!SendBytes(client_out, payload.data(), payload.size(), copy, 0)) {
      status = ZmqError(fmt::format("{}: zmq_msg_send", VariantName(v)));
      break;
    }
    ++issued;
  }
  end = Clock::now();
  cpu_end = ProcessCpuSeconds();
  // Drain what is in flight so that no thread is mid-message when the sockets close.
  while (status.ok() && completed < issued && wait_for_next_ack()) {
  }
  server.request_stop();
  server.join();
  if (receiver.joinable()) {
    receiver.request_stop();
    receiver.join();
  }
  PSERVER_RETURN_IF_ERROR(status);
  if (counted == 0) return Status::Internal(fmt::format("{}: no request completed", VariantName(v)));
  const double seconds = std::chrono::duration<double>(end - start).count();
  return Round{counted / seconds, CpuMicrosPerRequest(cpu_end - cpu_start, counted)};
}

Status Run(const Flags& f) {
  std::vector<double> rate[kNumVariants], cpu[kNumVariants];
  for (int r = 0; r < f.rounds; ++r) {
    for (Variant v : kVariants) {
      PSERVER_ASSIGN_OR_RETURN(Round round, RunRound(f, v));
      rate[static_cast<int>(v)].push_back(round.requests_per_sec);
      cpu[static_cast<int>(v)].push_back(round.cpu_us_per_request);
    }
  }
  std::printf("push of %zu bytes, %d in flight, %d rounds of %d ms; median [range]\n", f.bytes, kWindow, f.rounds,
              f.duration_ms);
  std::printf("%-10s %10s %22s %11s %14s\n", "variant", "req/s", "range", "cpu_us/req", "vs previous");
  double previous = 0;
  for (Variant v : kVariants) {
    const Summary s = Summarize(rate[static_cast<int>(v)]);
    const Summary c = Summarize(cpu[static_cast<int>(v)]);
    std::string versus = previous > 0 ? fmt::format("{:.2f}x", s.median / previous) : "-";
    std::printf("%-10s %10.0f %10.0f - %-9.0f %11.1f %14s\n", VariantName(v), s.median, s.min, s.max, c.median,
                versus.c_str());
    previous = s.median;
  }
  return Status::Ok();
}

}  // namespace
}  // namespace pserver::bench

int main(int argc, char** argv) {
  pserver::bench::Flags flags;
  CLI::App app{"Measures, with plain ZeroMQ, what pserver's thread structure costs small requests."};
  app.add_option("--bytes", flags.bytes, "request size")->check(CLI::Range(size_t{1}, size_t{1} << 20))->capture_default_str();
  app.add_option("--rounds", flags.rounds, "rounds (each runs every variant once)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--duration-ms", flags.duration_ms, "measured time per variant and round")
      ->check(CLI::Range(1, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--timeout-ms", flags.timeout_ms, "longest wait for an ack before the run fails")
      ->check(CLI::Range(1, 3600 * 1000))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const pserver::Status status = pserver::bench::Run(flags);
  if (!status.ok()) {
    std::fprintf(stderr, "thread_structure_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
