// `pserver node`: one process of a job started by a cluster engine -- `mpirun` (Open MPI, or an
// MPI with PMI such as MPICH's Hydra) or SLURM's `srun` -- becomes its node of a pserver cluster
// with no other set-up:
//
//   mpirun -np 6 pserver node --servers 2 [-- PROGRAM ARGS...]
//
// The engine's rank decides the role: rank 0 the scheduler, ranks 1..S the servers, the rest
// the workers (PROGRAM with the environment `pserver launch` gives, or the built-in worker).
// The scheduler writes its address to a file that every rank reads: by default
// pserver-<engine job id>.address in the current directory, which must be the same (shared)
// directory on every host. Each process then execs `pserver scheduler|server|worker` (or
// PROGRAM) in its place, so the engine sees and signals the node itself (docs/cluster_engines.md).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "pserver/result.h"
#include "pserver/types.h"

namespace pserver::tools {

// This process's place in its engine's job, read from the engine's environment.
struct EngineProcess {
  std::string engine;   // "Open MPI", "PMI" or "SLURM"
  int rank = 0;         // 0 .. size-1
  int size = 0;
  bool one_host = false;  // the engine says every process of the job runs on this host
  std::string job_id;   // unique to the job (and SLURM step); empty where the engine gives none
};

// getenv's signature, so tests can give an environment of their own.
using GetEnv = std::function<const char*(const char*)>;

// Open MPI's OMPI_COMM_WORLD_* first (mpirun inside a SLURM allocation also carries the
// allocation's SLURM_* variables), then PMI_RANK/PMI_SIZE, then an srun step's SLURM_PROCID,
// SLURM_NTASKS and SLURM_STEP_ID (a batch script itself has no step: it is refused).
// kNotFound when no engine's variables are there; kInvalidArgument naming a variable that is
// missing or not a number in range.
Result<EngineProcess> EngineProcessFromEnvironment(const GetEnv& getenv);

// A node's role in a job of `process.size` processes with `num_servers` servers.
struct NodePlan {
  Role role = Role::kScheduler;
  int rank_hint = 0;  // index among the nodes of its role
  int num_servers = 0;
  int num_workers = 0;
};

// kInvalidArgument when the job is too small for a scheduler, `num_servers` servers and at
// least one worker.
Result<NodePlan> PlanNode(const EngineProcess& process, int num_servers);

// The default address file: <dir>/pserver-<job id>.address, the id reduced to [A-Za-z0-9._-].
// kInvalidArgument when the engine gives no job id (then --address-file must name one).
Result<std::string> DefaultAddressFile(const EngineProcess& process, const std::string& dir);

void AddNodeCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run);

}  // namespace pserver::tools
