// A test host of the test's own: a network namespace joined to this one by a veth pair
// (`ip netns add`, `ip link add ... type veth`, Debian's iproute2), with nftables rules that cut
// it off (a partition) or drop a share of its packets (loss) and are taken away again. Needs
// root (CAP_NET_ADMIN); Create says what failed otherwise.
//
// Addresses: this side of the pair is `outside()`, the namespace's side `inside()`, in a /29 of
// 10.231.0.0/16 chosen from the name; `outside_alt()` is a second address on this side, for a
// process whose listening address the namespace can be cut off from alone (CutFrom). Processes run in the namespace through `Exec()`'s prefix
// (`ip netns exec NAME`), which execs the command (its pid is the command's).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "pserver/result.h"

namespace pserver::testing {

class NetnsHost {
 public:
  // `tag`: a few characters that make the names unique on the machine (e.g. the test's pid).
  static Result<std::unique_ptr<NetnsHost>> Create(const std::string& tag) {
    std::unique_ptr<NetnsHost> h(new NetnsHost(tag));
    h->Teardown();  // left over from a run that was killed
    const std::string& ns = h->name_;
    for (const std::string& cmd : {
             fmt::format("ip netns add {}", ns),
             fmt::format("ip link add {} type veth peer name {}", h->outer_link_, h->inner_link_),
             fmt::format("ip link set {} netns {}", h->inner_link_, ns),
             fmt::format("ip addr add {}/29 dev {}", h->outside_, h->outer_link_),
             fmt::format("ip addr add {}/29 dev {}", h->outside_alt_, h->outer_link_),
             fmt::format("ip link set {} up", h->outer_link_),
             fmt::format("ip netns exec {} ip addr add {}/29 dev {}", ns, h->inside_, h->inner_link_),
             fmt::format("ip netns exec {} ip link set {} up", ns, h->inner_link_),
             fmt::format("ip netns exec {} ip link set lo up", ns),
         }) {
      PSERVER_RETURN_IF_ERROR(Shell(cmd));
    }
    h->created_ = true;
    return h;
  }
  ~NetnsHost() {
    if (created_) Teardown();
  }
  NetnsHost(const NetnsHost&) = delete;
  NetnsHost& operator=(const NetnsHost&) = delete;

  const std::string& outside() const { return outside_; }
  const std::string& outside_alt() const { return outside_alt_; }
  const std::string& inside() const { return inside_; }
  // Arguments that run a command inside the namespace.
  std::vector<std::string> Exec() const { return {"/usr/sbin/ip", "netns", "exec", name_}; }

  // Every packet in or out of the namespace's link dropped: nothing reaches it, no connection
  // resets (a partition, as a cut cable or a dead switch port).
  Status Partition() { return Rules("drop", "drop"); }
  // Every packet between the namespace and `address` (this side's) dropped, the rest let through.
  // A process listening at `address` no longer hears the namespace, but the connections it opens
  // itself leave from this side's first address (`outside()`) and pass: an asymmetric partition.
  Status CutFrom(const std::string& address) {
    return Rules(fmt::format("ip saddr {} drop", address), fmt::format("ip daddr {} drop", address));
  }
  // Each packet in or out dropped with probability percent / 100 (TCP sends it again).
  Status Loss(int percent) {
    const std::string verdict = fmt::format("numgen random mod 100 < {} drop", percent);
    return Rules(verdict, verdict);
  }
  // Takes the rules away.
  Status Heal() { return Shell(fmt::format("ip netns exec {} nft delete table inet psfault", name_)); }

 private:
  explicit NetnsHost(const std::string& tag)
      : name_("psf" + tag), outer_link_("psf" + tag + "o"), inner_link_("psf" + tag + "i") {
    const unsigned subnet = static_cast<unsigned>(std::hash<std::string>()(tag) % 8000);
    outside_ = fmt::format("10.231.{}.{}", subnet / 32, subnet % 32 * 8 + 1);
    inside_ = fmt::format("10.231.{}.{}", subnet / 32, subnet % 32 * 8 + 2);
    outside_alt_ = fmt::format("10.231.{}.{}", subnet / 32, subnet % 32 * 8 + 3);
  }

  static Status Shell(const std::string& cmd) {
    const int rc = std::system((cmd + " 2>&1").c_str());
    if (rc != 0) {
      return Status::Unavailable(fmt::format("`{}` failed (status {}): the network-namespace tests need root and "
                                             "iproute2 and nftables",
                                             cmd, rc));
    }
    return Status::Ok();
  }
  // Replaces the namespace's rules: `in` on packets arriving over its link, `out` on those leaving.
  Status Rules(const std::string& in, const std::string& out) {
    (void)std::system(fmt::format("ip netns exec {} nft delete table inet psfault >/dev/null 2>&1", name_).c_str());
    return Shell(fmt::format(
        "echo 'table inet psfault {{ chain in {{ type filter hook input priority 0; policy accept; iifname \"{1}\" {2}; "
        "}}; chain out {{ type filter hook output priority 0; policy accept; oifname \"{1}\" {3}; }}; }}' | "
        "ip netns exec {0} nft -f -",
        name_, inner_link_, in, out));
  }
  void Teardown() {
    (void)std::system(fmt::format("ip netns del {} 2>/dev/null; ip link del {} 2>/dev/null", name_, outer_link_).c_str());
  }

  std::string name_, outer_link_, inner_link_, outside_, inside_, outside_alt_;
  bool created_ = false;
};

}  // namespace pserver::testing
