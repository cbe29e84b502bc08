// The `pserver launch` sub-command (flags -> LaunchOptions -> RunLaunch) and `pserver chaos`
// (flags -> ChaosOptions -> RunChaos), which launches a cluster the same way and kills its servers.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace pserver::tools {

// `self_exe` is this program's path, used to start the scheduler and servers (and the
// built-in worker when no PROGRAM is given).
void AddLaunchCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run);
void AddChaosCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run);

}  // namespace pserver::tools
