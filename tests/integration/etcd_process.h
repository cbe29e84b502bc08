// EtcdProcess: one etcd member (Debian's etcd-server) on loopback for the tests of the
// scheduler's etcd store, its data in a directory of the test's; started again after Kill on the
// same ports and data, as a restarted etcd would be.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/integration/subprocess.h"

namespace pserver::testing {

inline constexpr const char* kEtcd = "/usr/bin/etcd";
// How long etcd may take to start or stop (a hang guard, not a speed assertion).
inline constexpr std::chrono::milliseconds kEtcdGuard{60000};

// A TCP port free at the time of asking (the kernel's choice for port 0).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// One etcd member on loopback, its data in `dir`; Start again after Kill keeps the data.
class EtcdProcess {
 public:
  explicit EtcdProcess(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // Starts etcd and waits until it serves; false (with the reason in `why`) if it does not.
  bool Start(std::string* why) {
    if (!std::filesystem::exists(kEtcd)) {
      *why = std::string(kEtcd) + " is missing: install etcd-server (scripts/setup.sh does)";
      return false;
    }
    if (client_port_ == 0) {
      client_port_ = FreePort();
      peer_port_ = FreePort();
    }
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    auto p = Subprocess::Spawn({kEtcd, "--name", "test", "--data-dir", (dir_ / "etcd").string(), "--listen-client-urls",
                                client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
                                "--initial-advertise-peer-urls", peer, "--initial-cluster", "test=" + peer});
    if (!p.ok()) {
      *why = p.status().ToString();
      return false;
    }
    process_ = std::move(*p);
    if (!process_->WaitForOutput("ready to serve client requests", kEtcdGuard)) {
      *why = "etcd did not start: " + process_->output();
      return false;
    }
    return true;
  }
  void Kill() {
    process_->Signal(SIGKILL);
    process_->WaitExit(kEtcdGuard);
    process_.reset();
  }
  void Signal(int sig) { process_->Signal(sig); }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }

 private:
  std::filesystem::path dir_;
  int client_port_ = 0, peer_port_ = 0;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace pserver::testing
