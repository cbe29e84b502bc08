// The `pserver scheduler|server|worker` sub-commands: start one node from flags (with the
// launcher's environment variables as fallback) and run it to the end of the job.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace pserver::tools {

// Each Add* registers a sub-command on `app`; `run` is set to the function that executes it
// once parsing succeeded, returning the process exit code.
void AddSchedulerCommand(CLI::App& app, std::function<int()>* run);
void AddServerCommand(CLI::App& app, std::function<int()>* run);
void AddWorkerCommand(CLI::App& app, std::function<int()>* run);

}  // namespace pserver::tools
