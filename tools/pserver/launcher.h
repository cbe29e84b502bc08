// The process supervisor behind `pserver launch`: starts a whole local cluster (one scheduler,
// N servers, M workers) as child processes, forwards their output, and tears everything down.
//
// This is a tool, not library code: it reads no environment variables of its own beyond PATH
// (to find programs), and the CLI builds LaunchOptions from flags.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace pserver::tools {

enum class LaunchRole { kScheduler, kServer, kWorker };

struct LaunchOptions {
  // Cluster shape. REQUIRES: num_servers >= 0, num_workers >= 1.
  int num_servers = 1;
  int num_workers = 1;

  // PROGRAM ARGS... run once per worker. REQUIRES: non-empty.
  std::vector<std::string> worker_argv;
  // Command prefix of the scheduler; RunLaunch appends
  //   --host HOST --port 0 --num-servers N --num-workers M --address-file FILE.
  // The CLI defaults it to {<self exe>, "scheduler"}. REQUIRES: non-empty.
  std::vector<std::string> scheduler_argv;
  // Command prefix of each server; RunLaunch appends --scheduler ADDR --host HOST.
  // The CLI defaults it to {<self exe>, "server"}. REQUIRES: non-empty if num_servers > 0.
  std::vector<std::string> server_argv;

  std::string host = "127.0.0.1";

  // The machine's hardware threads, shared out among the local servers: each server gets
  // PSERVER_APPLY_THREADS = max(1, hardware_threads / num_servers) in its environment (its
  // update rules' apply threads), so that servers on one machine do not each take every core.
  // A PSERVER_APPLY_THREADS already in the launcher's environment is passed on unchanged.
  unsigned hardware_threads = std::thread::hardware_concurrency();

  // Metrics (docs/metrics.md): -1, none; 0, each node serves them on a free port of its own
  // choosing (and logs it); P > 0, the scheduler on P, server i on P+1+i, worker i on
  // P+1+num_servers+i, and a server started again on the port of the one it replaces -- given as
  // PSERVER_METRICS_PORT (-1 without metrics), and listed on `err` once everything started.
  int metrics_port = -1;

  // How long to wait for the scheduler to write its address file.
  std::chrono::milliseconds startup_timeout{30000};
  // At teardown: how long the scheduler and servers get to exit by themselves after the
  // workers succeeded, and how long anything gets between SIGTERM and SIGKILL.
  std::chrono::milliseconds grace{3000};

  // The job keeps replicas (`--replicas K`, K >= 2): a server that dies while the workers run is
  // reported and the cluster goes on (the scheduler fails over to its replicas, or ends the job
  // if it cannot, which the workers then report).
  bool servers_may_die = false;
  // The workers hand a dead worker's work to the others (`pserver train linear`: a live worker
  // reads its data, Node::TakeOver): a worker killed by SIGKILL or SIGTERM, or exiting with
  // kExitDeclaredDead (launch_env.h: it was declared dead while silent), while the workers run is
  // reported and the others go on (the scheduler ends the job if nobody took its work over,
  // which the workers then report). A worker that fails by itself, crashes (a signal other than
  // SIGKILL and SIGTERM) or dies after the scheduler ended the job still stops the launch. A
  // worker stopped (SIGSTOP) `grace` after the scheduler ended the job well was declared dead
  // while alive and its work taken over: it is SIGKILLed, and the launch succeeds.
  bool workers_may_die = false;
  // `--restart` (with servers_may_die): a server that fails while the workers run is started
  // again at once, as a new server (the next index, "server N") that joins the job as any late
  // server does (docs/elasticity.md) and takes a share of the keys back, so the chains return to
  // their length. Not restarted: a server that exited by itself with a failure status within
  // 1 s of its start, or crashed (a signal other than SIGKILL and SIGTERM) that soon: it cannot
  // start, and would fail again; the cluster stops. Nor one drained (it exited 0).
  bool restart_servers = false;
  // With workers_may_die: a worker killed (SIGKILL or SIGTERM) while the workers run is started
  // again at once with the same command and index (PSERVER_RANK_HINT), so that a worker program
  // that keeps its progress can take its predecessor's work over (`pserver worker --slots`;
  // the scheduler admits it as a new worker, under a new node id and rank). A worker killed after
  // it finalized is started again too, and its successor, finding nothing to take over or the
  // job ended, fails the launch: kill workers only while they work (as `pserver chaos` does).
  bool restart_workers = false;
  // The scheduler keeps the job's state in a store (`--store`): a scheduler killed (SIGKILL or
  // SIGTERM) while the workers run is started again with the same command, and resumes the job
  // from the store at its recorded address (docs/durability.md, section 6). One that fails by
  // itself still stops the launch.
  bool restart_scheduler = false;

  // Hooks for a program that drives the running cluster (`pserver chaos`); each may be empty.
  // All are called on RunLaunch's thread, so they must be quick and must not call RunLaunch.
  // The scheduler's address, once it wrote it.
  std::function<void(const std::string& address)> on_scheduler_address;
  // A scheduler, server or worker process started (`index`: its place in start order within its
  // role; a restarted server gets a new one, a restarted scheduler is index 0 again, a restarted
  // worker its predecessor's) and, later,
  // exited: `by_itself` when it exited with a
  // status (not by a signal), `how` says how ("exited with status 1", "killed by signal 9
  // (SIGKILL)"). on_exit runs before the child is reaped: until it returns, its pid is taken.
  std::function<void(LaunchRole role, int index, pid_t pid)> on_start;
  std::function<void(LaunchRole role, int index, bool by_itself, const std::string& how)> on_exit;
  // A whole line a worker wrote to stdout, before it is forwarded; false: do not forward it.
  std::function<bool(int index, std::string_view line)> on_worker_line;

  // Prefix each forwarded line with "[scheduler] ", "[server I] " or "[worker I] ".
  bool prefix_output = true;
  // Where forwarded output goes: children's stdout lines to `out`; their stderr lines and the
  // launcher's own "launch: ..." messages to `err`. Borrowed; must outlive RunLaunch. Tests
  // point these at temporary files.
  std::FILE* out = stdout;
  std::FILE* err = stderr;
};

// Runs the cluster to completion and returns the exit code `pserver launch` should exit with:
//   0        every worker exited with status 0 (how the scheduler and servers ended, e.g. by
//            SIGTERM after `grace`, does not change this);
//   S        the first worker to fail exited with status S, or 128+SIG if killed by SIG;
//   1        the scheduler or a server failed (non-zero status or signal) before all workers
//            finished, or the scheduler exited with status 0 and workers were still running
//            `grace` later (a server that exits 0 meanwhile was drained: not a failure);
//            the scheduler did not write its address within startup_timeout; or a system call
//            failed;
//   2        invalid options (nothing was started);
//   127      a program could not be started (not found, not executable);
//   130/143  the launcher received SIGINT/SIGTERM (a second one escalates to SIGKILL).
// Every failure is explained by one "launch: ..." line on options.err.
//
// Sequence: makes a private temp dir; starts the scheduler and waits for its address file;
// starts the servers, then the workers, all with PSERVER_ROLE, PSERVER_SCHEDULER,
// PSERVER_NUM_SERVERS, PSERVER_NUM_WORKERS, PSERVER_HOST, PSERVER_RANK_HINT (index within
// the role, in launch order) and, with metrics, PSERVER_METRICS_PORT added to the environment; forwards output line by line; reaps
// children as they exit. Children get stdin from /dev/null, share one new process group
// (teardown signals the group, so grandchildren go too) and are SIGKILLed by the kernel if the
// calling thread dies (PR_SET_PDEATHSIG). If the launcher itself is SIGKILLed, only its direct
// children are covered: a grandchild that a cluster process started is not.
//
// Blocks until every child has been reaped and the temp dir removed: no child process, zombie
// or group member outlives the call. Single-threaded inside; no timers other than the
// documented timeouts (and a 20 ms poll of the address file while waiting for it).
//
// Not reentrant and not thread-safe: it installs process-wide handlers for SIGCHLD, SIGINT and
// SIGTERM for its duration (restoring the previous ones on return), so at most one call may run
// in a process at a time; a concurrent call fails with exit code 1.
int RunLaunch(const LaunchOptions& options);

// Asks the RunLaunch in progress to stop the cluster as SIGTERM would (exit code 143). Callable
// from any thread; does nothing when no RunLaunch runs.
void StopLaunch();

}  // namespace pserver::tools
