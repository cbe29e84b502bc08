// `pserver chaos`: kills servers (or the scheduler, or workers) of a running local cluster, again
// and again, and checks that nothing acknowledged was lost and nothing applied twice.
//
// It launches a cluster (RunLaunch) with replicas and `restart_servers`, whose workers run the
// built-in check workload (demo_worker.h: several pushes in flight per round, every round's sums
// checked exactly, so one update lost or applied twice fails its worker). Then, `kills` times:
// it waits until the cluster is whole (every server serving, its replicas in sync, no membership
// change running or waiting: JobStatus as JSON), waits a random time, SIGKILLs a random server
// (or, with Faults::kStop, SIGSTOPs it, and SIGCONTs it once failed over from), and measures
//   recovery: from the kill until every worker has finished a round it started after the kill
//             (each round touches every server's keys, so it needs the dead server's keys served
//             by their heir), and
//   restored: from the kill until the cluster is whole again (the replacement server, started
//             by the launcher, joined and every chain is back to its length).
// The random choices come from `seed`, printed first, so a run can be repeated (the moments the
// cluster becomes whole are the system's, not the seed's).
//
// Kills wait for the cluster to be whole because with K replicas a second death before the
// chains are restored can take every copy of a range (docs/durability.md): that is a failure
// beyond what K = 2 survives, not one the job should.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace pserver::tools {

struct ChaosOptions {
  int num_servers = 3;  // REQUIRES: >= 2
  int num_workers = 2;  // REQUIRES: >= 1
  uint32_t replicas = 2;  // REQUIRES: 2 <= replicas <= num_servers
  int kills = 20;         // REQUIRES: >= 1
  // How a server is taken out: SIGKILL (its connections reset: seen at once), SIGSTOP (it goes
  // silent without dying, like a partitioned machine: found by heartbeats, then continued once
  // failed over from, when it must learn that it was replaced and exit without serving), or
  // either, drawn for each kill.
  enum class Faults { kKill, kStop, kMixed } faults = Faults::kKill;
  // Whom the kills hit: servers; the scheduler (which then keeps the job's state in a file store
  // and is started again by the launcher: it must resume the job, docs/durability.md section 6);
  // workers (the launcher starts a worker again in the dead one's place, which takes its work
  // over and checks what it left: the workers run the check workload's slot mode); or any of
  // them, the scheduler and each worker as likely as each server. The scheduler and workers are
  // only SIGKILLed.
  enum class Victims { kServers, kScheduler, kWorkers, kAny } victims = Victims::kServers;
  // With stops: the nodes' heartbeat timeout (their interval a tenth of it).
  std::chrono::milliseconds heartbeat_timeout{1000};
  uint64_t seed = 0;
  // After the cluster is whole, the next kill comes after a delay drawn uniformly from
  // [0, max_gap].
  std::chrono::milliseconds max_gap{300};
  // The check workload: keys per round and pushes in flight per worker and round.
  uint32_t keys = 1000;
  uint32_t pushes = 4;
  // A kill not recovered from, or a cluster not whole again, within this fails the run.
  std::chrono::milliseconds timeout{60000};
  // The `pserver` executable the cluster runs, and the log level its processes get.
  std::string self_exe;
  std::string node_log_level = "warn";
  std::FILE* out = stdout;
  std::FILE* err = stderr;
};

// Runs it and returns the exit status of `pserver chaos`: 0 when every kill was recovered from,
// every worker checked every round exactly and the job ended well; 1 otherwise (a line on `err`
// says why: a worker's wrong sum names the round, the key, what it held and what was expected);
// 2 for invalid options. Prints a line per kill and a summary (medians and ranges) on `out`.
int RunChaos(const ChaosOptions& options);

}  // namespace pserver::tools
