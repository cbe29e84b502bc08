// The `pserver bench` sub-command: named cluster workloads, each printed beside a bound
// measured in the same run, with the ratio between them: the raw ZeroMQ bound for the one-key
// workloads (push, pull, pushpull, rtt), a single-thread in-memory flat-array loop over the same
// keys for the sparse ones (sparse_push, sparse_pull), and the 20-byte target for the memory
// figure. Unless --log-level is given, the library's logs are lowered to warn during the run.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace pserver::tools {

void AddBenchCommand(CLI::App& app, std::function<int()>* run);

}  // namespace pserver::tools
