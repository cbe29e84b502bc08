// Subprocess: one child process of a multi-process test, with its output captured.
//
// The child's stdout and stderr go to one pipe that a reader thread drains into memory, so a
// child never blocks on a full pipe and the test can wait for a line ("pushing", "listening
// at") instead of sleeping. The child gets stdin from /dev/null, its own process group, and
// PR_SET_PDEATHSIG=SIGKILL, so it dies with the test process. Destroying a Subprocess SIGKILLs
// the child's process group if the child is still running and reaps it: a failed assertion that
// returns early leaves nothing behind.
//
// Every wait takes a timeout; those timeouts are hang guards, not assertions about speed.
//
// Thread safety: drive a Subprocess from one thread (the reader thread is internal).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pserver/result.h"

namespace pserver::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path; not searched in PATH) with argv. The child's environment is this
  // process's without any PSERVER_* variable (so that a developer's shell does not leak into
  // the test), plus `env`. kUnavailable if a system call fails; a program that cannot be
  // executed exits with status 127 and says why in its output.
  static Result<std::unique_ptr<Subprocess>> Spawn(const std::vector<std::string>& argv,
                                                   const std::map<std::string, std::string>& env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // Blocks until the output (from byte `from` on: e.g. output().size() before an event, to see
  // only what came after it) contains `needle`, the output ended (the child and everything that
  // inherited its output exited) or `timeout` passed. True if the needle was seen.
  bool WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout, size_t from = 0);

  // Blocks like WaitForOutput until a complete line of output starts with `prefix`, and returns
  // that line (without its newline); nullopt if none came.
  std::optional<std::string> WaitForLine(std::string_view prefix, std::chrono::milliseconds timeout);

  // Blocks until the child exits (then reaps it) or `timeout` passes. Returns the wait status
  // (as from waitpid), or nullopt on timeout. After the child exited, also waits (at most
  // `timeout` more) for the rest of its output. Returns the same status again once reaped.
  std::optional<int> WaitExit(std::chrono::milliseconds timeout);

  // Sends `sig` to the child (not its group). No effect once the child was reaped.
  void Signal(int sig);

  // Everything the child wrote so far.
  std::string output() const;

 private:
  Subprocess() = default;
  void ReadLoop();
  // The first complete line starting with `prefix`. REQUIRES: mu_ held.
  std::optional<std::string> FindLineLocked(std::string_view prefix) const;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int out_fd_ = -1;             // read end of the child's stdout/stderr pipe
  int stop_fds_[2] = {-1, -1};  // wakes the reader at destruction
  std::optional<int> status_;   // set once reaped

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;  // guarded by mu_
  bool eof_ = false;    // guarded by mu_
  std::thread reader_;
};

// "exit N" or "killed by signal N (NAME)" for a wait status.
std::string DescribeWaitStatus(int status);

// A process of this machine, from /proc.
struct ProcessInfo {
  pid_t pid = 0;
  pid_t ppid = 0;
  char state = '?';     // 'Z' for a zombie
  std::string cmdline;  // arguments joined by spaces
};
// Every process visible in /proc (those that vanish while scanning are skipped).
std::vector<ProcessInfo> ListProcesses();
// The process `pid`, or nullopt if it does not exist.
std::optional<ProcessInfo> FindProcess(pid_t pid);

// The paths of the binaries under test, set by tests/CMakeLists.txt.
std::string PserverBinary();
std::string CheckWorkerBinary();

// A fresh private temp dir (mkdtemp) removed with its contents at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace pserver::testing
