#include "pserver/launch_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "pserver/chaos.h"
#include "pserver/launcher.h"

namespace pserver::tools {

void AddLaunchCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run) {
  auto o = std::make_shared<LaunchOptions>();
  auto program = std::make_shared<std::vector<std::string>>();
  auto scheduler_flags = std::make_shared<std::vector<std::string>>();
  auto server_flags = std::make_shared<std::vector<std::string>>();
  auto startup_ms = std::make_shared<int64_t>(30000);
  auto grace_ms = std::make_shared<int64_t>(3000);
  auto no_prefix = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Start a whole local cluster -- a scheduler, N servers and M copies of PROGRAM as workers, each a process -- "
      "forward their output prefixed with role and rank, and exit with the workers' status. Without PROGRAM the "
      "workers run the built-in check workload (`pserver worker`). Everything is torn down when any process "
      "fails or on Ctrl-C.");
  cmd->add_option("--servers", o->num_servers, "Number of server processes")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--workers", o->num_workers, "Number of worker processes")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--host", o->host, "Loopback or local address every node listens on")->capture_default_str();
  cmd->add_option("--startup-timeout-ms", *startup_ms, "How long to wait for the scheduler to start")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--grace-ms", *grace_ms, "How long processes get to exit before SIGTERM, and SIGTERM before SIGKILL")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--scheduler-flag", *scheduler_flags, "Extra flag passed to the scheduler (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--server-flag", *server_flags, "Extra flag passed to every server (repeatable)")
      ->allow_extra_args(false);
  auto resume = std::make_shared<std::string>();
  auto checkpoint_dir = std::make_shared<std::string>();
  auto checkpoint_every = std::make_shared<double>(0);
  cmd->add_option("--resume", *resume,
                  "Servers start from the latest complete checkpoint in this directory (`pserver server --resume`)");
  cmd->add_option("--checkpoint-dir", *checkpoint_dir,
                  "The scheduler checkpoints the job into this directory every --checkpoint-every seconds");
  cmd->add_option("--checkpoint-every", *checkpoint_every, "Seconds between checkpoints (0: none)")
      ->check(CLI::Range(0.0, 86400.0 * 365))
      ->capture_default_str();
  auto replicas = std::make_shared<uint32_t>(1);
  cmd->add_option("--replicas", *replicas,
                  "Servers holding each key (1-8; `pserver scheduler --replicas`): with 2 or more the job goes on "
                  "when a server dies")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  auto store = std::make_shared<std::string>();
  cmd->add_option("--store", *store,
                  "The scheduler keeps the job's state here (file:DIR or etcd:http://HOST:PORT[/PREFIX]; `pserver "
                  "scheduler --store`)");
  cmd->add_flag("--restart", o->restart_servers,
                "Start what dies again: with --replicas 2 or more a server (as a new server that joins the job and "
                "takes a share of the keys back), with --store the scheduler (it resumes the job)");
  cmd->add_option("--metrics-port", o->metrics_port,
                  "Serve Prometheus metrics from every node (docs/metrics.md): the scheduler on this port, then the "
                  "servers and the workers on the next ones, in order (listed at start); 0: each on a free port it "
                  "logs; -1: none")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd->add_flag("--no-prefix", *no_prefix, "Do not prefix forwarded output lines");
  cmd->add_option("program", *program, "PROGRAM ARGS... run as each worker (after --)");
  cmd->callback([=] {
    *run = [=]() {
      LaunchOptions opts = *o;
      opts.worker_argv = program->empty() ? std::vector<std::string>{self_exe, "worker"} : *program;
      opts.scheduler_argv = {self_exe, "scheduler"};
      opts.scheduler_argv.insert(opts.scheduler_argv.end(), scheduler_flags->begin(), scheduler_flags->end());
      opts.server_argv = {self_exe, "server"};
      opts.server_argv.insert(opts.server_argv.end(), server_flags->begin(), server_flags->end());
      // Paths made absolute here, so that every process reads them alike.
      auto absolute = [](const std::string& p) { return std::filesystem::absolute(p).lexically_normal().string(); };
      if (!resume->empty()) opts.server_argv.insert(opts.server_argv.end(), {"--resume", absolute(*resume)});
      if (!checkpoint_dir->empty() || *checkpoint_every > 0) {
        opts.scheduler_argv.insert(opts.scheduler_argv.end(),
                                   {"--checkpoint-dir", checkpoint_dir->empty() ? "" : absolute(*checkpoint_dir),
                                    "--checkpoint-every", fmt::format("{}", *checkpoint_every)});
      }
      if (*replicas > 1) {
        opts.scheduler_argv.insert(opts.scheduler_argv.end(), {"--replicas", fmt::format("{}", *replicas)});
        opts.servers_may_die = true;
      }
      if (!store->empty()) {
        // A file store's directory made absolute, so that a scheduler started again finds it.
        const std::string url = store->rfind("file:", 0) == 0 ? "file:" + absolute(store->substr(5)) : *store;
        opts.scheduler_argv.insert(opts.scheduler_argv.end(), {"--store", url});
      }
      const bool restart = opts.restart_servers;
      opts.restart_servers = restart && opts.servers_may_die;
      opts.restart_scheduler = restart && !store->empty();
      if (restart && !opts.restart_servers && !opts.restart_scheduler) {
        std::fprintf(stderr, "launch: --restart needs --replicas 2 or more (to start servers again: without replicas a "
                             "dead server's keys are lost) or --store (to start the scheduler again)\n");
        return 2;
      }
      opts.startup_timeout = std::chrono::milliseconds(*startup_ms);
      opts.grace = std::chrono::milliseconds(*grace_ms);
      opts.prefix_output = !*no_prefix;
      return RunLaunch(opts);
    };
  });
}

void AddChaosCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run) {
  auto o = std::make_shared<ChaosOptions>();
  auto seed = std::make_shared<std::optional<uint64_t>>();
  auto max_gap_ms = std::make_shared<int64_t>(o->max_gap.count());
  auto timeout_ms = std::make_shared<int64_t>(o->timeout.count());
  CLI::App* cmd = app.add_subcommand(
      "chaos",
      "Run a local cluster with replicas whose workers push known values and check every sum, SIGKILL a random "
      "server N times at random moments (each restarted, joining as a new server), and check that no update was "
      "lost or applied twice; prints the recovery time of each kill and their median and range "
      "(docs/durability.md)");
  cmd->add_option("--kills", o->kills, "Servers to kill, one after another")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--servers", o->num_servers, "Server processes")->check(CLI::Range(2, 64))->capture_default_str();
  cmd->add_option("--workers", o->num_workers, "Worker processes")->check(CLI::Range(1, 64))->capture_default_str();
  cmd->add_option("--replicas", o->replicas, "Servers holding each key (2 to --servers)")
      ->check(CLI::Range(2, 8))
      ->capture_default_str();
  cmd->add_option("--seed", *seed, "Seed of the kills' moments and victims and of the keys (default: random, printed)");
  cmd->add_option("--max-gap-ms", *max_gap_ms,
                  "A kill comes a random time up to this long after the cluster is whole again")
      ->check(CLI::Range(int64_t{0}, int64_t{3600000}))
      ->capture_default_str();
  cmd->add_option("--keys", o->keys, "Keys per round of the check workload")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--pushes", o->pushes, "Pushes in flight per worker and round")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--timeout-ms", *timeout_ms,
                  "A kill not recovered from, or a cluster not whole again, within this fails the run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  const std::map<std::string, ChaosOptions::Faults> faults = {
      {"kill", ChaosOptions::Faults::kKill}, {"stop", ChaosOptions::Faults::kStop}, {"mixed", ChaosOptions::Faults::kMixed}};
  cmd->add_option("--faults", o->faults,
                  "kill: SIGKILL each victim; stop: SIGSTOP it (a silent server, found by heartbeats), then SIGCONT it "
                  "once failed over from (it must exit, replaced); mixed: either, drawn by the seed")
      ->transform(CLI::CheckedTransformer(faults, CLI::ignore_case))
      ->capture_default_str();
  const std::map<std::string, ChaosOptions::Victims> victims = {{"servers", ChaosOptions::Victims::kServers},
                                                                 {"scheduler", ChaosOptions::Victims::kScheduler},
                                                                 {"workers", ChaosOptions::Victims::kWorkers},
                                                                 {"any", ChaosOptions::Victims::kAny}};
  cmd->add_option("--victims", o->victims,
                  "servers: kill servers; scheduler: kill the scheduler (it keeps the job's state in a store and is "
                  "started again: it must resume the job); workers: kill workers (each is started again and takes "
                  "its predecessor's work over, checking what it left); any: any of them, the scheduler and each "
                  "worker as likely as each server")
      ->transform(CLI::CheckedTransformer(victims, CLI::ignore_case))
      ->capture_default_str();
  auto heartbeat_ms = std::make_shared<int64_t>(o->heartbeat_timeout.count());
  cmd->add_option("--heartbeat-timeout-ms", *heartbeat_ms,
                  "With stops: the nodes' heartbeat timeout, which finds a stopped server (interval: a tenth)")
      ->check(CLI::Range(int64_t{1000}, int64_t{600000}))
      ->capture_default_str();
  cmd->add_option("--node-log-level", o->node_log_level, "Log level of the cluster's processes")
      ->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      ChaosOptions opts = *o;
      opts.seed = seed->has_value() ? **seed : std::random_device()();
      opts.max_gap = std::chrono::milliseconds(*max_gap_ms);
      opts.timeout = std::chrono::milliseconds(*timeout_ms);
      opts.heartbeat_timeout = std::chrono::milliseconds(*heartbeat_ms);
      opts.self_exe = self_exe;
      return RunChaos(opts);
    };
  });
}

}  // namespace pserver::tools
