// The `pserver` command: launch a local cluster, start single nodes, run benchmarks.
// Thin by design: parse flags, build options, call into the library.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <unistd.h>
#include <vector>

#include "pserver/bench_command.h"
#include "pserver/engine_node.h"
#include "pserver/launch_command.h"
#include "pserver/logging.h"
#include "pserver/node_commands.h"
#include "pserver/train_command.h"

namespace {

std::string SelfExe(const char* argv0) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return argv0;
  buf[n] = '\0';
  return buf;
}

int Main(int argc, char** argv) {
  CLI::App app{"pserver: a parameter server for distributed machine learning"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error or off; the processes this one starts (launch, node, train) "
                 "inherit it")
      ->envname("PSERVER_LOG_LEVEL")
      ->capture_default_str();
  std::function<int()> run;
  pserver::tools::AddSchedulerCommand(app, &run);
  pserver::tools::AddServerCommand(app, &run);
  pserver::tools::AddWorkerCommand(app, &run);
  pserver::tools::AddStatusCommand(app, &run);
  pserver::tools::AddDrainCommand(app, &run);
  pserver::tools::AddCheckpointCommand(app, &run);
  pserver::tools::AddLaunchCommand(app, SelfExe(argv[0]), &run);
  pserver::tools::AddNodeCommand(app, SelfExe(argv[0]), &run);
  pserver::tools::AddChaosCommand(app, SelfExe(argv[0]), &run);
  pserver::tools::AddBenchCommand(app, &run);
  pserver::tools::AddTrainCommand(app, SelfExe(argv[0]), std::vector<std::string>(argv, argv + argc), &run);
  pserver::tools::AddPredictCommand(app, &run);
  pserver::tools::AddGenDataCommand(app, &run);
  CLI11_PARSE(app, argc, argv);
  if (!pserver::SetLogLevel(log_level)) {
    std::fprintf(stderr, "pserver: unknown --log-level '%s'\n", log_level.c_str());
    return 2;
  }
  // Passed on through the environment: `pserver node` execs the scheduler or a server, and
  // `launch` starts them, without a --log-level of their own.
  setenv("PSERVER_LOG_LEVEL", log_level.c_str(), 1);
  return run ? run() : 2;
}

}  // namespace

// Errors are Status values throughout; an exception that still reaches here is a bug. It is
// reported as one with exit status 1 -- never an abort (exit 134) that reads like a crash of
// the input, and never exit 0.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pserver: internal error: uncaught exception: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "pserver: internal error: uncaught exception of unknown type\n");
  }
  return 1;
}
