// The `pserver train linear` and `pserver predict` sub-commands.
//
// `train linear` without --scheduler (and without PSERVER_SCHEDULER in the environment) starts
// a local cluster with `pserver launch` machinery -- a scheduler, --servers servers and
// --workers copies of itself as workers -- and exits with the workers' status. With a
// scheduler address it is one worker of a running job: it reads its part of the data, trains
// (rank 0 prints a progress line per pass) and rank 0 writes the model and the report.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace pserver::tools {

// `self_exe` starts the cluster's processes; `argv` is the command line (re-run by workers).
void AddTrainCommand(CLI::App& app, const std::string& self_exe, const std::vector<std::string>& argv,
                     std::function<int()>* run);
void AddPredictCommand(CLI::App& app, std::function<int()>* run);
// `pserver gen-data`: the seeded synthetic data generator (apps/linear/synthetic.h).
void AddGenDataCommand(CLI::App& app, std::function<int()>* run);

}  // namespace pserver::tools
