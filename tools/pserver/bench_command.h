// The `pserver bench` sub-command: named cluster workloads, each printed beside the raw
// ZeroMQ bound measured in the same run, with the ratio between them.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace pserver::tools {

void AddBenchCommand(CLI::App& app, std::function<int()>* run);

}  // namespace pserver::tools
