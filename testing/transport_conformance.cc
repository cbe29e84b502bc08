#include "testing/transport_conformance.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "testing/intercepting_transport.h"
#include "transport/inproc/inproc_transport.h"
#include "transport/zmq/zmq_transport.h"

namespace pserver::testing {
namespace {

using transport::Transport;

class InprocFactory final : public TransportFactory {
 public:
  Result<std::unique_ptr<Transport>> Make(const ConformanceOptions& options) override {
    transport::inproc::InprocOptions o;
    o.send_timeout = options.send_timeout;
    if (options.small_queues) o.queue_capacity = 2;
    return std::unique_ptr<Transport>(std::make_unique<transport::inproc::InprocTransport>(&hub_, o));
  }
  std::string AnyAddress() override { return "inproc://0"; }
  std::string UnreachableAddress() const override { return "inproc://nobody-listens-here"; }
  std::string MalformedAddress() const override { return "tcp://127.0.0.1:5555"; }  // not inproc://

 private:
  transport::inproc::InprocHub hub_;  // outlives the transports (the factory outlives them)
};

class ZmqFactory final : public TransportFactory {
 public:
  explicit ZmqFactory(bool ipc) : ipc_(ipc) {}
  // The socket files of the ipc paths handed out stay behind their sockets: removed here.
  ~ZmqFactory() override {
    for (const std::string& path : paths_) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  }

  Result<std::unique_ptr<Transport>> Make(const ConformanceOptions& options) override {
    transport::zmq::ZmqOptions o;
    o.send_timeout = options.send_timeout;
    o.linger = std::chrono::milliseconds(0);  // nothing is left in flight when a test ends
    if (options.small_queues) {
      o.send_hwm = 1;
      o.receive_hwm = 1;
    }
    PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<transport::zmq::ZmqTransport> t, transport::zmq::ZmqTransport::Create(o));
    return std::unique_ptr<Transport>(std::move(t));
  }
  // An ipc path of our own rather than ZeroMQ's "ipc://*", whose directory ZeroMQ removes with the
  // socket, so that a restarted peer can listen at the same address again.
  std::string AnyAddress() override {
    if (!ipc_) return "tcp://127.0.0.1:0";
    paths_.push_back(fmt::format("{}/pserver-conformance-{}-{}.sock", std::filesystem::temp_directory_path().string(),
                                 ::getpid(), next_path_++));
    return "ipc://" + paths_.back();
  }
  // Port 1 is never handed out as an ephemeral port; the directory does not exist.
  std::string UnreachableAddress() const override {
    return ipc_ ? "ipc:///nonexistent-pserver-dir/nobody.sock" : "tcp://127.0.0.1:1";
  }
  std::string MalformedAddress() const override { return "not an address"; }
  bool RefusesTakenAddress() const override { return !ipc_; }

 private:
  const bool ipc_;
  int next_path_ = 1;
  std::vector<std::string> paths_;
};

class InterceptedFactory final : public TransportFactory {
 public:
  explicit InterceptedFactory(std::unique_ptr<TransportFactory> inner) : inner_(std::move(inner)) {}

  Result<std::unique_ptr<Transport>> Make(const ConformanceOptions& options) override {
    PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<Transport> inner, inner_->Make(options));
    return std::unique_ptr<Transport>(std::make_unique<InterceptingTransport>(std::move(inner)));
  }
  std::string AnyAddress() override { return inner_->AnyAddress(); }
  std::string UnreachableAddress() const override { return inner_->UnreachableAddress(); }
  std::string MalformedAddress() const override { return inner_->MalformedAddress(); }
  bool RefusesTakenAddress() const override { return inner_->RefusesTakenAddress(); }

 private:
  const std::unique_ptr<TransportFactory> inner_;
};

}  // namespace

TransportKind InprocKind() {
  return {"Inproc", [] { return std::unique_ptr<TransportFactory>(std::make_unique<InprocFactory>()); }};
}

TransportKind ZmqTcpKind() {
  return {"ZmqTcp", [] { return std::unique_ptr<TransportFactory>(std::make_unique<ZmqFactory>(false)); }};
}

TransportKind ZmqIpcKind() {
  return {"ZmqIpc", [] { return std::unique_ptr<TransportFactory>(std::make_unique<ZmqFactory>(true)); }};
}

TransportKind InterceptedKind(TransportKind inner) {
  auto make_inner = inner.make;
  return {"Intercepted" + inner.name, [make_inner] {
            return std::unique_ptr<TransportFactory>(std::make_unique<InterceptedFactory>(make_inner()));
          }};
}

std::vector<TransportKind> AllTransportKinds() {
  return {InprocKind(), ZmqTcpKind(), ZmqIpcKind(), InterceptedKind(InprocKind()), InterceptedKind(ZmqTcpKind())};
}

}  // namespace pserver::testing
