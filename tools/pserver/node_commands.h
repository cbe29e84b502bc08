// The `pserver scheduler|server|worker` sub-commands: start one node from flags (with the
// launcher's environment variables as fallback) and run it to the end of the job. A server
// started while a job runs joins it; SIGTERM asks the scheduler to drain it (a second SIGTERM
// ends it at once, exit 143). And `pserver status|drain|checkpoint`: ask a running job's
// scheduler.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace pserver::tools {

// Each Add* registers a sub-command on `app`; `run` is set to the function that executes it
// once parsing succeeded, returning the process exit code.
void AddSchedulerCommand(CLI::App& app, std::function<int()>* run);
void AddServerCommand(CLI::App& app, std::function<int()>* run);
void AddWorkerCommand(CLI::App& app, std::function<int()>* run);
void AddStatusCommand(CLI::App& app, std::function<int()>* run);
void AddDrainCommand(CLI::App& app, std::function<int()>* run);
void AddCheckpointCommand(CLI::App& app, std::function<int()>* run);

}  // namespace pserver::tools
