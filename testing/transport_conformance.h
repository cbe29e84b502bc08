// The transport conformance suite's factories: one per Transport implementation, so that the
// contract of transport/transport.h is tested once (testing/transport_conformance_test.cc) and
// run over every transport, instead of in a copy per implementation.
//
// A TransportFactory makes the transports of one test and owns what they share (the inproc hub);
// a TransportKind names a factory for the test names. What only one transport does (inproc's
// zero-copy hand-over, ZeroMQ's TCP addresses, raw malformed input) stays in that transport's
// own test file.
//
// Thread safety: a factory is confined to its test's main thread; the transports it makes are
// as thread-safe as Transport says. The factory must outlive the transports it made.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pserver/result.h"
#include "transport/transport.h"

namespace pserver::testing {

// What a conformance test asks of the transports it makes.
struct ConformanceOptions {
  // How long Send may wait for room in the peer's queue (or for a connection).
  std::chrono::milliseconds send_timeout{5000};
  // Queues of very few messages per peer, so that a test can fill them (inproc: 2 messages;
  // ZeroMQ: high-water marks of 1, in front of the kernel's socket buffers).
  bool small_queues = false;
};

class TransportFactory {
 public:
  virtual ~TransportFactory() = default;

  // A new transport, not yet listening or connected. kInternal if it cannot be made.
  virtual Result<std::unique_ptr<transport::Transport>> Make(const ConformanceOptions& options) = 0;
  // An address for Listen that picks a fresh endpoint on every call (a free port, a new name or
  // socket path). The endpoint is free again once the transport listening there is destroyed.
  virtual std::string AnyAddress() = 0;
  // A well-formed address that nobody listens at, now or during the test.
  virtual std::string UnreachableAddress() const = 0;
  // An address that Connect refuses as malformed (kInvalidArgument).
  virtual std::string MalformedAddress() const = 0;
  // Whether Listen at an address another transport of this kind listens at fails with
  // kUnavailable. (ZeroMQ over ipc takes the socket path over instead: it unlinks the file.)
  virtual bool RefusesTakenAddress() const { return true; }
};

struct TransportKind {
  std::string name;  // a test-name suffix: letters, digits and '_' only
  std::function<std::unique_ptr<TransportFactory>()> make;
};

// The in-process transport (transport/inproc), on a hub the factory owns.
TransportKind InprocKind();
// ZeroMQ over loopback TCP ("tcp://127.0.0.1:0").
TransportKind ZmqTcpKind();
// ZeroMQ over Unix-domain sockets (a fresh path under the temp directory per Listen).
TransportKind ZmqIpcKind();
// testing::InterceptingTransport with no faults, holds or rewrites configured, around `inner`'s
// transports: the wrapper must keep every promise of the transport it wraps.
TransportKind InterceptedKind(TransportKind inner);

// Every kind above: inproc, ZeroMQ tcp and ipc, and the intercepting wrapper around inproc and
// around ZeroMQ tcp.
std::vector<TransportKind> AllTransportKinds();

}  // namespace pserver::testing
