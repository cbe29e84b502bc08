#include "pserver/launch_command.h"

#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <vector>

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
      opts.startup_timeout = std::chrono::milliseconds(*startup_ms);
      opts.grace = std::chrono::milliseconds(*grace_ms);
      opts.prefix_output = !*no_prefix;
      return RunLaunch(opts);
    };
  });
}

}  // namespace pserver::tools
