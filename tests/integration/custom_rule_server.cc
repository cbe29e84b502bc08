// custom_rule_server: a server program of the multi-process tests that serves float32 tables
// with a user-defined update rule besides the built-in ones, written against the public API
// only (pserver/pserver.h):
//
//   "scaled_add"   value += k * push      (param k, default 1; float and double tables)
//
// It joins the cluster given by the PSERVER_* environment (pserver/launch_env.h) as a server
// and serves until the job ends. Exit status: 0 the job ended normally; 1 it ended with an
// error; 2 the program could not start (environment, registry, Node::Start).
#include <cstdio>
#include <memory>
#include <span>
#include <string>

#include "pserver/pserver.h"
#include "pserver/updater.h"

namespace {

using namespace pserver;  // NOLINT(google-build-using-namespace): a test program of the API

class ScaledAdd final : public Updater {
 public:
  explicit ScaledAdd(double k) : k_(k) {}
  void Apply(const UpdateContext&, std::span<float> value, std::span<float>, std::span<const float> push) const override {
    for (size_t i = 0; i < value.size(); ++i) value[i] = static_cast<float>(value[i] + k_ * push[i]);
  }
  void Apply(const UpdateContext&, std::span<double> value, std::span<double>,
             std::span<const double> push) const override {
    for (size_t i = 0; i < value.size(); ++i) value[i] += k_ * push[i];
  }

 private:
  double k_;
};

Result<std::unique_ptr<Updater>> MakeScaledAdd(const UpdaterSpec& spec) {
  double k = 1.0;
  for (const auto& [name, value] : spec.params) {
    if (name != "k") return Status::InvalidArgument("updater 'scaled_add': unknown parameter '" + name + "' (known: k)");
    k = value;
  }
  return std::unique_ptr<Updater>(std::make_unique<ScaledAdd>(k));
}

}  // namespace

int main() {
  Result<NodeOptions> options = NodeOptionsFromEnvironment();
  if (!options.ok()) {
    std::fprintf(stderr, "custom_rule_server: %s\n", options.status().ToString().c_str());
    return 2;
  }
  options->role = Role::kServer;
  ServerOptions server_options;
  if (Status s = server_options.updaters.Register("scaled_add", MakeScaledAdd); !s.ok()) {
    std::fprintf(stderr, "custom_rule_server: %s\n", s.ToString().c_str());
    return 2;
  }
  Result<std::unique_ptr<Node>> node = Node::Start(*options);
  if (!node.ok()) {
    std::fprintf(stderr, "custom_rule_server: cannot join the cluster: %s\n", node.status().ToString().c_str());
    return 2;
  }
  std::printf("custom_rule_server: server %u serving\n", (*node)->rank().value);
  std::fflush(stdout);
  Status s;
  {
    KVServer<float> server(**node, server_options);
    s = (*node)->Run();
  }
  if (!s.ok()) {
    std::fprintf(stderr, "custom_rule_server: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("custom_rule_server: job finished\n");
  return 0;
}
