#include "pserver/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pserver/launch_env.h"
#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::tools {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// While waiting for the scheduler's address file, how often to look for it.
constexpr milliseconds kAddressPollInterval{20};
// A child line longer than this is forwarded in pieces, so a child that never writes a
// newline cannot make the launcher buffer without bound.
constexpr size_t kMaxLineBytes = 64 * 1024;
// Reads of one pipe per wakeup (16 KiB each), so a child that floods its output cannot starve
// the others or the reaping.
constexpr int kMaxReadsPerWakeup = 64;
constexpr int kExitInvalidOptions = 2;
constexpr int kExitCannotStart = 127;
// A server that fails by itself sooner than this after its start is not restarted.
constexpr std::chrono::seconds kCrashLoop{1};

// ---------------------------------------------------------------------------------------------
// Signals.

// The write end of the self-pipe of the RunLaunch in progress, or -1. This is the one piece of
// global mutable state: a signal handler can reach nothing else. std::atomic<int> is lock-free,
// so the handler may read it.
std::atomic<int> g_signal_pipe_fd{-1};

constexpr std::array<int, 3> kHandledSignals = {SIGCHLD, SIGINT, SIGTERM};

extern "C" void OnSignal(int sig) {
  const int saved_errno = errno;
  const int fd = g_signal_pipe_fd.load();
  if (fd >= 0) {
    const auto byte = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = write(fd, &byte, 1);  // full pipe: a wakeup is pending anyway
  }
  errno = saved_errno;
}

// Owns the self-pipe and the handlers of kHandledSignals; restores the previous handlers when
// destroyed. At most one may be installed per process.
class SignalPipe {
 public:
  SignalPipe() = default;
  ~SignalPipe();
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;

  Status Install();
  int read_fd() const { return read_fd_; }
  // Returns the signals received since the last call; never blocks.
  std::vector<int> Drain();

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
  bool installed_ = false;
  std::array<struct sigaction, kHandledSignals.size()> old_actions_{};
};

Status SignalPipe::Install() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Status::Internal(std::string("pipe2: ") + std::strerror(errno));
  }
  read_fd_ = fds[0];
  write_fd_ = fds[1];
  int expected = -1;
  if (!g_signal_pipe_fd.compare_exchange_strong(expected, write_fd_)) {
    return Status::Aborted("another RunLaunch is already running in this process");
  }
  installed_ = true;
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  for (size_t i = 0; i < kHandledSignals.size(); ++i) {
    action.sa_flags = SA_RESTART | (kHandledSignals[i] == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigaction(kHandledSignals[i], &action, &old_actions_[i]);
  }
  return Status::Ok();
}

SignalPipe::~SignalPipe() {
  if (installed_) {
    for (size_t i = 0; i < kHandledSignals.size(); ++i) {
      sigaction(kHandledSignals[i], &old_actions_[i], nullptr);
    }
    g_signal_pipe_fd.store(-1);
  }
  if (read_fd_ >= 0) close(read_fd_);
  if (write_fd_ >= 0) close(write_fd_);
}

std::vector<int> SignalPipe::Drain() {
  std::vector<int> signals;
  unsigned char buf[64];
  ssize_t n;
  while ((n = read(read_fd_, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    for (ssize_t i = 0; i < n; ++i) signals.push_back(buf[i]);
  }
  return signals;
}

// ---------------------------------------------------------------------------------------------
// Starting one child process.

std::string ErrnoText(int err) { return std::strerror(err); }

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "unknown signal";
}

// "a b 'c d'": argv as a shell would need it, for messages.
std::string JoinCommand(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& arg : argv) {
    if (!out.empty()) out += ' ';
    const bool plain =
        !arg.empty() && arg.find_first_of(" \t\n'\"\\$*?;&|<>()") == std::string::npos;
    out += plain ? arg : "'" + arg + "'";
  }
  return out;
}

// The path execve should run for `program`, searched in PATH like execvp. Done in the parent
// so that the child, between fork and exec, calls only async-signal-safe functions.
Result<std::string> ResolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path_env = getenv("PATH");
  std::string_view path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  int err = ENOENT;
  while (true) {
    const size_t colon = path.find(':');
    std::string dir(path.substr(0, colon));
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st {};
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
      err = EACCES;
    }
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return Status::NotFound("'" + program + "': " + ErrnoText(err));
}

// The current environment with `extra` (NAME=VALUE entries) added, replacing same-named ones.
std::vector<std::string> BuildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& x) {
      return x.size() > name.size() && x.compare(0, name.size(), name) == 0 &&
             x[name.size()] == '=';
    });
    if (!replaced) env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// What the child reports through its close-on-exec pipe when it cannot exec.
struct ChildFailure {
  int stage;  // kStageSetpgid, kStageDup or kStageExec
  int err;
};
constexpr int kStageSetpgid = 1;
constexpr int kStageDup = 2;
constexpr int kStageExec = 3;

struct ChildSetup {
  const char* path;
  char* const* argv;
  char* const* envp;
  pid_t parent;
  pid_t pgid;  // 0: start a new process group
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
  int report_fd;
};

[[noreturn]] void FailChild(int report_fd, int stage, int err) {
  const ChildFailure failure{stage, err};
  [[maybe_unused]] ssize_t n = write(report_fd, &failure, sizeof(failure));
  _exit(kExitCannotStart);
}

// Runs in the forked child. Only async-signal-safe calls: the parent may have other threads.
[[noreturn]] void ExecChild(const ChildSetup& s) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != s.parent) _exit(kExitCannotStart);  // the launcher died before prctl
  for (int sig : kHandledSignals) signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // The child joins the group itself, before exec: when the parent learns that exec
  // happened, the child is already in the group, so a teardown cannot miss it.
  if (setpgid(0, s.pgid) != 0) FailChild(s.report_fd, kStageSetpgid, errno);
  if (dup2(s.stdin_fd, 0) < 0 || dup2(s.stdout_fd, 1) < 0 || dup2(s.stderr_fd, 2) < 0) {
    FailChild(s.report_fd, kStageDup, errno);
  }
  // Descriptors the embedding process leaked without O_CLOEXEC must not reach the cluster.
  close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  execve(s.path, s.argv, s.envp);
  FailChild(s.report_fd, kStageExec, errno);
}

struct Spawned {
  pid_t pid = -1;  // > 0 whenever a process was forked, even if it then failed to exec
  int stdout_fd = -1;
  int stderr_fd = -1;
  Status status;
};

void CloseAll(std::initializer_list<int> fds) {
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
}

// Forks and execs argv with env, stdin from stdin_fd, stdout and stderr into new pipes whose
// non-blocking read ends are returned. Blocks only until the child has exec'd or failed.
Spawned SpawnProcess(std::vector<std::string> argv, std::vector<std::string> env, pid_t pgid,
                     int stdin_fd) {
  Spawned result;
  Result<std::string> path = ResolveProgram(argv[0]);
  if (!path.ok()) {
    result.status = path.status();
    return result;
  }
  int out[2] = {-1, -1}, err[2] = {-1, -1}, report[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0) {
    result.status = Status::Internal("pipe2: " + ErrnoText(errno));
    CloseAll({out[0], out[1], err[0], err[1], report[0], report[1]});
    return result;
  }
  std::vector<char*> c_argv = CStrings(argv);
  std::vector<char*> c_env = CStrings(env);
  const ChildSetup setup{path->c_str(), c_argv.data(), c_env.data(), getpid(), pgid,
                         stdin_fd,      out[1],        err[1],       report[1]};
  // Block our signals across fork so no handler runs in the child before it resets them.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : kHandledSignals) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  const pid_t pid = fork();
  if (pid == 0) ExecChild(setup);
  const int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  CloseAll({out[1], err[1], report[1]});
  if (pid < 0) {
    CloseAll({out[0], err[0], report[0]});
    result.status = Status::Internal("fork: " + ErrnoText(fork_errno));
    return result;
  }
  result.pid = pid;
  ChildFailure failure{};
  ssize_t n;
  do {
    n = read(report[0], &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(failure))) {
    CloseAll({out[0], err[0]});
    const char* what = failure.stage == kStageSetpgid ? "setpgid: "
                       : failure.stage == kStageDup   ? "dup2: "
                                                      : "";
    result.status = Status::Unavailable("'" + argv[0] + "': " + what + ErrnoText(failure.err));
    return result;
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  result.stdout_fd = out[0];
  result.stderr_fd = err[0];
  return result;
}

// ---------------------------------------------------------------------------------------------
// Children and their output.

using Role = LaunchRole;

// How a child ended: an exit status, or the signal that killed it.
struct ExitInfo {
  bool signaled = false;
  int value = 0;
  bool lost = false;  // reaped by someone else (ECHILD); status unknown

  bool ok() const { return !signaled && value == 0 && !lost; }
  // Killed from outside (SIGKILL, SIGTERM), not crashed.
  bool killed() const { return signaled && (value == SIGKILL || value == SIGTERM); }
  int ExitCode() const { return lost ? 1 : signaled ? 128 + value : value; }
  std::string Describe() const {
    if (lost) return "was reaped by someone else";
    return signaled ? "killed by signal " + std::to_string(value) + " (" + SignalName(value) + ")"
                    : "exited with status " + std::to_string(value);
  }
};

// One output pipe of a child; whole lines go to `sink`, each in one write.
struct LineStream {
  int fd = -1;
  std::FILE* sink = nullptr;
  std::string partial;  // bytes after the last newline
  std::function<bool(std::string_view)> keep;  // empty: forward every line
};

struct Child {
  Role role = Role::kWorker;
  int index = 0;       // within its role, in start order
  std::string name;    // "scheduler", "server 0", "worker 1"
  std::string prefix;  // "[worker 1] " or ""
  pid_t pid = -1;
  Clock::time_point started;
  std::optional<ExitInfo> exit;
  std::array<LineStream, 2> streams;  // stdout, stderr
  bool killed_after_the_end = false;  // a stopped worker the launcher killed once the job ended well
};

// Whether process `pid` is stopped (SIGSTOP: state T in /proc/PID/stat).
bool IsStopped(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const size_t comm_end = stat.rfind(')');  // the command name may hold spaces and parentheses
  return comm_end != std::string::npos && comm_end + 2 < stat.size() && stat[comm_end + 2] == 'T';
}

void WriteLine(const LineStream& stream, const std::string& prefix, std::string_view line) {
  if (stream.keep && !stream.keep(line)) return;
  std::string buf;
  buf.reserve(prefix.size() + line.size() + 1);
  buf.append(prefix).append(line).push_back('\n');
  std::fwrite(buf.data(), 1, buf.size(), stream.sink);
}

void ForwardLines(LineStream& stream, const std::string& prefix, std::string_view data) {
  stream.partial.append(data);
  size_t start = 0;
  for (size_t nl; (nl = stream.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
    WriteLine(stream, prefix, std::string_view(stream.partial).substr(start, nl - start));
  }
  stream.partial.erase(0, start);
  if (stream.partial.size() >= kMaxLineBytes) {
    WriteLine(stream, prefix, stream.partial);
    stream.partial.clear();
  }
}

void CloseStream(LineStream& stream, const std::string& prefix) {
  if (!stream.partial.empty()) WriteLine(stream, prefix, stream.partial);
  stream.partial.clear();
  if (stream.fd >= 0) close(stream.fd);
  stream.fd = -1;
}

// Reads what is available now (up to a bound); at EOF or on error, forwards the last partial
// line and closes.
void ReadStream(LineStream& stream, const std::string& prefix) {
  char buf[16384];
  for (int reads = 0; stream.fd >= 0 && reads < kMaxReadsPerWakeup; ++reads) {
    const ssize_t n = read(stream.fd, buf, sizeof(buf));
    if (n > 0) {
      ForwardLines(stream, prefix, std::string_view(buf, static_cast<size_t>(n)));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n == 0 || errno != EAGAIN) CloseStream(stream, prefix);
      break;
    }
  }
  std::fflush(stream.sink);
}

// Observes whether `pid` has exited. With keep_zombie the child is left unreaped (WNOWAIT).
std::optional<ExitInfo> PollExit(pid_t pid, bool keep_zombie) {
  siginfo_t info{};
  const int flags = WEXITED | WNOHANG | (keep_zombie ? WNOWAIT : 0);
  int rc;
  do {
    rc = waitid(P_PID, static_cast<id_t>(pid), &info, flags);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return ExitInfo{false, 0, /*lost=*/true};  // ECHILD
  if (info.si_pid == 0) return std::nullopt;
  return ExitInfo{info.si_code != CLD_EXITED, info.si_status};
}

void ReapBlocking(pid_t pid) {
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// ---------------------------------------------------------------------------------------------
// The supervisor.

// Runs one launch. Confined to the calling thread.
//
// The scheduler is the leader of the children's process group and is kept as a zombie (observed
// with WNOWAIT) until the very end, so the group id cannot be recycled while we may still
// signal it: teardown can always signal the whole group, including grandchildren.
class Launcher {
 public:
  Launcher(const LaunchOptions& options, SignalPipe& signals) : opt_(options), signals_(signals) {}
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Returns the exit code documented at RunLaunch.
  int Run();

 private:
  enum class Phase { kWaitingForAddress, kRunning, kDraining, kTerminating, kKilling };

  Status Setup();
  void Teardown();
  std::vector<std::string> RoleEnvironment(Role role, int rank) const;
  // The metrics port of a node (LaunchOptions::metrics_port).
  int MetricsPort(Role role, int index) const;
  bool Start(Role role, int rank, std::vector<std::string> argv);
  bool StartServer();
  void StartServersAndWorkers();
  void PollOnce();
  bool HasDeadline() const;
  int PollTimeoutMs() const;
  void HandleLauncherSignal(int sig);
  void ReapChildren();
  void OnChildExit(Child& child);
  void CheckAllWorkersDone();
  void CheckAddressFile();
  void OnDeadline();
  void Stop(const std::string& reason, int exit_code);
  void SignalGroup(int sig);
  bool AllExited() const;
  void DrainOutput(Clock::time_point deadline);
  void Message(const std::string& text);
  std::string SchedulerCommand() const;

  const LaunchOptions& opt_;
  SignalPipe& signals_;
  std::string tmp_dir_;
  std::string address_file_;
  std::vector<std::string> scheduler_command_;  // as started (a restart runs it again)
  int scheduler_restarts_ = 0;                  // schedulers to start again after this poll
  std::string address_;  // the scheduler's, once read from address_file_
  int null_fd_ = -1;
  pid_t group_ = 0;  // the scheduler's pid, leader of the children's process group
  std::vector<Child> children_;
  int next_server_ = 0;         // the index of the next server started
  int servers_to_restart_ = 0;  // failed servers found by the reaping under way
  // Metrics ports of servers started again (by index), and those of the servers they replace.
  std::map<int, int> restarted_server_ports_;
  std::deque<int> released_server_ports_;
  std::vector<int> workers_to_restart_;  // indices of killed workers found by the reaping under way
  Phase phase_ = Phase::kWaitingForAddress;
  Clock::time_point deadline_;    // of the current phase, see HasDeadline()
  std::string early_exit_;        // the first scheduler/server to exit 0 while workers ran
  std::optional<int> exit_code_;  // set by the first failure; unset means success
};

std::string ValidateOptions(const LaunchOptions& o) {
  if (o.num_workers < 1) return "--workers must be at least 1";
  if (o.num_servers < 0) return "--servers must not be negative";
  if (o.worker_argv.empty() || o.worker_argv[0].empty()) return "no worker program given";
  if (o.scheduler_argv.empty() || o.scheduler_argv[0].empty()) return "no scheduler command";
  if (o.num_servers > 0 && (o.server_argv.empty() || o.server_argv[0].empty())) {
    return "no server command";
  }
  if (o.startup_timeout.count() <= 0) return "startup timeout must be positive";
  if (o.grace.count() < 0) return "grace must not be negative";
  if (o.restart_workers && !o.workers_may_die) return "restarting workers needs workers that may die";
  if (o.out == nullptr || o.err == nullptr) return "no output streams";
  if (o.metrics_port < -1) return "--metrics-port must be -1 (none), 0 (free ports) or a first port";
  if (o.metrics_port > 0 && int64_t{o.metrics_port} + o.num_servers + o.num_workers > 65535) {
    return "--metrics-port " + std::to_string(o.metrics_port) + ": the job's " +
           std::to_string(1 + o.num_servers + o.num_workers) + " ports from there go past 65535";
  }
  return "";
}

int Launcher::Run() {
  if (const Status s = Setup(); !s.ok()) {
    Message(s.message());
    Teardown();
    return 1;
  }
  scheduler_command_ = opt_.scheduler_argv;
  scheduler_command_.insert(scheduler_command_.end(), {"--host", opt_.host, "--port", "0", "--num-servers",
                                                       std::to_string(opt_.num_servers), "--num-workers",
                                                       std::to_string(opt_.num_workers), "--address-file",
                                                       address_file_});
  deadline_ = Clock::now() + opt_.startup_timeout;
  Start(Role::kScheduler, 0, scheduler_command_);
  while (!AllExited()) PollOnce();
  Teardown();
  return exit_code_.value_or(0);
}

Status Launcher::Setup() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string templ = (base / "pserver-launch.XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) {
    return Status::Internal("cannot create a temp dir in " + base.string() + ": " +
                            ErrnoText(errno));
  }
  tmp_dir_ = templ;
  address_file_ = tmp_dir_ + "/scheduler.addr";
  null_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd_ < 0) return Status::Internal("cannot open /dev/null: " + ErrnoText(errno));
  return Status::Ok();
}

void Launcher::Teardown() {
  if (group_ > 0) {
    // Every child has exited; this catches grandchildren left in the group, then releases
    // the group id by reaping its leader.
    killpg(group_, SIGKILL);
    ReapBlocking(group_);
    group_ = 0;
  }
  DrainOutput(Clock::now() + opt_.grace);
  if (null_fd_ >= 0) close(null_fd_);
  null_fd_ = -1;
  if (!tmp_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(tmp_dir_, ec);
  }
  std::fflush(opt_.out);
  std::fflush(opt_.err);
}

std::vector<std::string> Launcher::RoleEnvironment(Role role, int rank) const {
  static constexpr std::array<const char*, 3> kRoleNames = {"scheduler", "server", "worker"};
  std::vector<std::string> vars = {
      std::string("PSERVER_ROLE=") + kRoleNames[static_cast<size_t>(role)],
      "PSERVER_NUM_SERVERS=" + std::to_string(opt_.num_servers),
      "PSERVER_NUM_WORKERS=" + std::to_string(opt_.num_workers),
      "PSERVER_HOST=" + opt_.host,
  };
  if (role != Role::kScheduler) {
    vars.push_back("PSERVER_SCHEDULER=" + address_);
    vars.push_back("PSERVER_RANK_HINT=" + std::to_string(rank));
  }
  // Without metrics, -1: a PSERVER_METRICS_PORT exported in the launcher's environment would have
  // every node bind the same port.
  vars.push_back("PSERVER_METRICS_PORT=" + std::to_string(MetricsPort(role, rank)));
  if (role == Role::kServer && getenv("PSERVER_APPLY_THREADS") == nullptr) {
    const unsigned share = std::max(1u, opt_.hardware_threads / static_cast<unsigned>(std::max(1, opt_.num_servers)));
    vars.push_back("PSERVER_APPLY_THREADS=" + std::to_string(share));
  }
  return BuildEnvironment(vars);
}

// Starts one child and records it. On failure stops the cluster and returns false.
bool Launcher::Start(Role role, int rank, std::vector<std::string> argv) {
  Child child;
  child.role = role;
  child.index = rank;
  child.started = Clock::now();
  child.name = role == Role::kScheduler ? "scheduler"
               : role == Role::kServer  ? "server " + std::to_string(rank)
                                        : "worker " + std::to_string(rank);
  if (opt_.prefix_output) child.prefix = "[" + child.name + "] ";
  Spawned spawned = SpawnProcess(std::move(argv), RoleEnvironment(role, rank), group_, null_fd_);
  child.pid = spawned.pid;
  child.streams[0] = {spawned.stdout_fd, opt_.out, {}, {}};
  child.streams[1] = {spawned.stderr_fd, opt_.err, {}, {}};
  if (role == Role::kWorker && opt_.on_worker_line) {
    child.streams[0].keep = [this, rank](std::string_view line) { return opt_.on_worker_line(rank, line); };
  }
  if (child.pid > 0 && opt_.on_start) opt_.on_start(role, rank, child.pid);
  const std::string name = child.name;
  // The first scheduler leads the group; one started again joins it (the leader, a zombie, is
  // reaped only at teardown, so the group id stays its).
  if (role == Role::kScheduler && child.pid > 0 && group_ == 0) group_ = child.pid;
  if (child.pid > 0) children_.push_back(std::move(child));
  if (spawned.status.ok()) return true;
  Stop("cannot start " + name + ": " + spawned.status.message(),
       spawned.status.code() == StatusCode::kInternal ? 1 : kExitCannotStart);
  return false;
}

std::string Launcher::SchedulerCommand() const { return JoinCommand(opt_.scheduler_argv); }

bool Launcher::StartServer() {
  if (next_server_ >= opt_.num_servers && !released_server_ports_.empty()) {
    restarted_server_ports_[next_server_] = released_server_ports_.front();
    released_server_ports_.pop_front();
  }
  std::vector<std::string> argv = opt_.server_argv;
  argv.insert(argv.end(), {"--scheduler", address_, "--host", opt_.host});
  return Start(Role::kServer, next_server_++, std::move(argv));
}

int Launcher::MetricsPort(Role role, int index) const {
  if (opt_.metrics_port <= 0) return opt_.metrics_port;
  switch (role) {
    case Role::kScheduler: return opt_.metrics_port;
    case Role::kWorker: return opt_.metrics_port + 1 + opt_.num_servers + index;
    case Role::kServer:
      if (index < opt_.num_servers) return opt_.metrics_port + 1 + index;
      // A server started again: the port of the one it replaces (StartServer).
      if (auto it = restarted_server_ports_.find(index); it != restarted_server_ports_.end()) return it->second;
  }
  return -1;
}

void Launcher::StartServersAndWorkers() {
  for (int i = 0; i < opt_.num_servers; ++i) {
    if (!StartServer()) return;
  }
  for (int i = 0; i < opt_.num_workers; ++i) {
    if (!Start(Role::kWorker, i, opt_.worker_argv)) return;
  }
  if (opt_.metrics_port > 0) {
    const auto range = [](int first, int n) {
      return n == 1 ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(first + n - 1);
    };
    std::string where = "metrics at http://" + opt_.host + ":PORT/metrics: scheduler " +
                        std::to_string(MetricsPort(Role::kScheduler, 0));
    if (opt_.num_servers > 0) where += ", servers " + range(MetricsPort(Role::kServer, 0), opt_.num_servers);
    where += ", workers " + range(MetricsPort(Role::kWorker, 0), opt_.num_workers) + " (by index)";
    Message(where);
  } else if (opt_.metrics_port == 0) {
    Message("metrics: each node serves them on a free port and logs where");
  }
}

bool Launcher::HasDeadline() const {
  if (phase_ == Phase::kRunning) return !early_exit_.empty();
  return phase_ != Phase::kKilling;
}

int Launcher::PollTimeoutMs() const {
  if (!HasDeadline()) return -1;  // SIGCHLD or output wakes us
  auto wait = std::chrono::ceil<milliseconds>(deadline_ - Clock::now());
  if (phase_ == Phase::kWaitingForAddress) wait = std::min(wait, kAddressPollInterval);
  return static_cast<int>(std::max<milliseconds::rep>(wait.count(), 0));
}

void Launcher::PollOnce() {
  std::vector<pollfd> fds = {{signals_.read_fd(), POLLIN, 0}};
  std::vector<LineStream*> streams = {nullptr};
  std::vector<const Child*> owners = {nullptr};
  for (Child& child : children_) {
    for (LineStream& stream : child.streams) {
      if (stream.fd < 0) continue;
      fds.push_back({stream.fd, POLLIN, 0});
      streams.push_back(&stream);
      owners.push_back(&child);
    }
  }
  if (poll(fds.data(), fds.size(), PollTimeoutMs()) < 0 && errno != EINTR) {
    Stop("poll: " + ErrnoText(errno), 1);
  }
  for (size_t i = 1; i < fds.size(); ++i) {
    if (fds[i].revents != 0) ReadStream(*streams[i], owners[i]->prefix);
  }
  for (int sig : signals_.Drain()) {
    if (sig != SIGCHLD) HandleLauncherSignal(sig);
  }
  ReapChildren();  // every round, not only on SIGCHLD: cheap, and no wakeup can be missed
  if (phase_ == Phase::kWaitingForAddress) CheckAddressFile();
  if (HasDeadline() && Clock::now() >= deadline_) OnDeadline();
}

void Launcher::HandleLauncherSignal(int sig) {
  if (phase_ == Phase::kTerminating) {
    Message("received " + SignalName(sig) + " again; sending SIGKILL");
    SignalGroup(SIGKILL);
    phase_ = Phase::kKilling;
  } else if (phase_ != Phase::kKilling) {
    Stop("received " + SignalName(sig), 128 + sig);
  }
}

void Launcher::ReapChildren() {
  for (Child& child : children_) {
    if (child.exit) continue;
    child.exit = PollExit(child.pid, /*keep_zombie=*/true);
    if (!child.exit) continue;
    // Without its zombie leader the group id may be recycled: never signal it again.
    if (child.exit->lost && child.pid == group_) group_ = 0;
    // The hook hears of the exit while the child is a zombie, so that its pid cannot have been
    // taken by another process yet; then it is reaped (but the group's leader: see the class).
    if (opt_.on_exit) {
      opt_.on_exit(child.role, child.index, !child.exit->signaled && !child.exit->lost,
                   child.exit->Describe());
    }
    if (child.pid != group_ && !child.exit->lost) ReapBlocking(child.pid);
    OnChildExit(child);
  }
  // Started only now: starting appends to children_, which the loop above walks.
  for (int i = std::exchange(scheduler_restarts_, 0); i > 0 && phase_ == Phase::kRunning; --i) {
    if (!Start(Role::kScheduler, 0, scheduler_command_)) break;
  }
  const int restarts = std::exchange(servers_to_restart_, 0);
  for (int i = 0; i < restarts && phase_ == Phase::kRunning; ++i) {
    if (!StartServer()) break;
  }
  for (int index : std::exchange(workers_to_restart_, {})) {
    if (phase_ != Phase::kRunning || !Start(Role::kWorker, index, opt_.worker_argv)) break;
  }
  CheckAllWorkersDone();
}

void Launcher::OnChildExit(Child& child) {
  // The child is gone, so its pipes hold all it wrote: forward that before talking about it.
  for (LineStream& stream : child.streams) ReadStream(stream, child.prefix);
  const ExitInfo& exit = *child.exit;
  const bool stopping = phase_ == Phase::kTerminating || phase_ == Phase::kKilling;
  if (stopping) return;
  if (phase_ == Phase::kDraining) {
    if (!exit.ok()) Message(child.name + " " + exit.Describe() + " after the workers finished");
  } else if (child.role == Role::kWorker) {
    // Only a worker killed from outside, or declared dead while silent, while the job runs is the
    // others' to take over: one that crashed (another signal) or failed by itself failed, and
    // one that dies after the job ended may be the lead, before its model is in place.
    const bool declared_dead = !exit.signaled && !exit.lost && exit.value == kExitDeclaredDead;
    if (child.killed_after_the_end) {
      Message(child.name + " " + exit.Describe());
    } else if (exit.killed() && opt_.workers_may_die && opt_.restart_workers && early_exit_.empty()) {
      Message(child.name + " " + exit.Describe() + " while the workers run; starting it again, to take its work over");
      workers_to_restart_.push_back(child.index);
    } else if (!exit.ok() && (exit.killed() || declared_dead) && opt_.workers_may_die && early_exit_.empty()) {
      Message(child.name + " " +
              (declared_dead ? "left: the scheduler had declared it dead while it was silent" : exit.Describe()) +
              " while the workers run; the others take over its work");
    } else if (!exit.ok()) {
      Stop(child.name + " " + exit.Describe() + (early_exit_.empty() ? "" : " after the job ended"), exit.ExitCode());
    }
  } else if (phase_ == Phase::kWaitingForAddress) {
    Stop(child.name + " " + exit.Describe() + " before writing its address to " + address_file_, 1);
  } else if (child.role == Role::kScheduler && opt_.restart_scheduler && exit.killed()) {
    Message(child.name + " " + exit.Describe() + " while the workers run; starting it again: it resumes the job from "
            "its store");
    scheduler_restarts_++;
  } else if (!exit.ok() && child.role == Role::kServer && opt_.servers_may_die) {
    const std::string what = child.name + " " + exit.Describe() + " while the workers run";
    const auto lived = Clock::now() - child.started;
    if (!opt_.restart_servers) {
      Message(what + "; its replicas take its keys");
    } else if (!exit.killed() && lived < kCrashLoop) {
      Stop(what + ", " + std::to_string(std::chrono::duration_cast<milliseconds>(lived).count()) +
               " ms after it started: not restarted, it would fail again",
           1);
    } else {
      Message(what + "; its replicas take its keys; starting server " +
              std::to_string(next_server_ + servers_to_restart_) + " in its place");
      ++servers_to_restart_;
      if (const int port = MetricsPort(Role::kServer, child.index); port > 0) released_server_ports_.push_back(port);
    }
  } else if (!exit.ok()) {
    Stop(child.name + " " + exit.Describe() + " before the workers finished", 1);
  } else if (child.role == Role::kServer) {
    // Nothing to say: a server exits 0 while worker processes run either because it was drained
    // (`pserver drain`, SIGTERM: its keys moved to the others first, and it and the scheduler
    // say so) or because the job ended and the workers' processes are still on their way out.
  } else if (early_exit_.empty()) {
    // The real scheduler exits once every worker has finalized, which can be before the last
    // worker process has exited: give the workers `grace` before calling it a failure.
    early_exit_ = child.name;
    deadline_ = Clock::now() + opt_.grace;
  }
}

void Launcher::CheckAllWorkersDone() {
  if (phase_ != Phase::kRunning) return;
  bool one_finished = false;
  for (const Child& child : children_) {
    if (child.role != Role::kWorker) continue;
    if (!child.exit) return;
    one_finished = one_finished || child.exit->ok();
  }
  // Only reached with every worker exited 0 -- a failure would have left kRunning -- or, with
  // workers_may_die, killed: a job whose every worker was killed did not finish its work.
  if (!one_finished) {
    Stop("every worker was killed before it finished", 1);
    return;
  }
  // The scheduler and servers normally finish by themselves once the workers have finalized.
  phase_ = Phase::kDraining;
  deadline_ = Clock::now() + opt_.grace;
}

void Launcher::CheckAddressFile() {
  std::ifstream in(address_file_);
  if (!in) return;  // not yet written
  std::string address;
  std::getline(in, address);
  while (!address.empty() && std::isspace(static_cast<unsigned char>(address.back()))) {
    address.pop_back();
  }
  if (address.empty()) {
    Stop("the scheduler wrote an empty address to " + address_file_, 1);
    return;
  }
  address_ = std::move(address);
  phase_ = Phase::kRunning;
  if (opt_.on_scheduler_address) opt_.on_scheduler_address(address_);
  StartServersAndWorkers();
}

void Launcher::OnDeadline() {
  const std::string grace = std::to_string(opt_.grace.count()) + " ms";
  switch (phase_) {
    case Phase::kWaitingForAddress:
      Stop("timed out after " + std::to_string(opt_.startup_timeout.count()) +
               " ms waiting for the scheduler to write its address to " + address_file_ +
               " (scheduler command: " + SchedulerCommand() + ")",
           1);
      break;
    case Phase::kDraining:
      Message("scheduler or servers still running " + grace +
              " after the workers finished; sending SIGTERM");
      SignalGroup(SIGTERM);
      phase_ = Phase::kTerminating;
      deadline_ = Clock::now() + opt_.grace;
      break;
    case Phase::kTerminating:
      Message("processes still running " + grace + " after SIGTERM; sending SIGKILL");
      SignalGroup(SIGKILL);
      phase_ = Phase::kKilling;
      break;
    case Phase::kRunning:
      if (opt_.workers_may_die) {
        // The scheduler ended the job well, so every worker finished or had its work taken
        // over: one that is stopped was declared dead while alive and has no part in the job any
        // more. One that runs may still be finishing (the lead putting its model in place): it
        // is waited for as below.
        bool running = false;
        for (Child& c : children_) {
          if (c.role != Role::kWorker || c.exit || c.killed_after_the_end) continue;
          if (!IsStopped(c.pid)) {
            running = true;
            continue;
          }
          Message(c.name + " is stopped " + grace + " after the job ended well: it was declared dead and its work "
                  "taken over; killing it");
          c.killed_after_the_end = true;
          ::kill(c.pid, SIGKILL);
        }
        if (!running) {
          deadline_ = Clock::now() + opt_.grace;
          break;
        }
      }
      Stop(early_exit_ + " exited with status 0 but workers were still running " + grace + " later",
           1);
      break;
    case Phase::kKilling:
      break;
  }
}

void Launcher::Stop(const std::string& reason, int exit_code) {
  if (phase_ == Phase::kTerminating || phase_ == Phase::kKilling) return;
  exit_code_ = exit_code;
  Message(reason + "; stopping the cluster");
  SignalGroup(SIGTERM);
  SignalGroup(SIGCONT);  // a stopped process acts on SIGTERM only once continued
  phase_ = Phase::kTerminating;
  deadline_ = Clock::now() + opt_.grace;
}

void Launcher::SignalGroup(int sig) {
  if (group_ > 0) killpg(group_, sig);
}

bool Launcher::AllExited() const {
  return std::all_of(children_.begin(), children_.end(),
                     [](const Child& child) { return child.exit.has_value(); });
}

// Forwards what is left in the pipes. Every child has exited, so this waits only for
// grandchildren that may still hold a pipe open, and at most until `deadline`.
void Launcher::DrainOutput(Clock::time_point deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::pair<LineStream*, const Child*>> owners;
    for (Child& child : children_) {
      for (LineStream& stream : child.streams) {
        if (stream.fd < 0) continue;
        fds.push_back({stream.fd, POLLIN, 0});
        owners.emplace_back(&stream, &child);
      }
    }
    const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    if (fds.empty() || left <= 0) break;
    if (poll(fds.data(), fds.size(), static_cast<int>(left)) < 0 && errno != EINTR) break;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) ReadStream(*owners[i].first, owners[i].second->prefix);
    }
  }
  for (Child& child : children_) {
    for (LineStream& stream : child.streams) CloseStream(stream, child.prefix);
  }
}

void Launcher::Message(const std::string& text) {
  std::fflush(opt_.out);
  std::fprintf(opt_.err, "launch: %s\n", text.c_str());
  std::fflush(opt_.err);
}

}  // namespace

void StopLaunch() { OnSignal(SIGTERM); }

int RunLaunch(const LaunchOptions& options) {
  if (const std::string problem = ValidateOptions(options); !problem.empty()) {
    std::fprintf(options.err != nullptr ? options.err : stderr, "launch: invalid options: %s\n",
                 problem.c_str());
    return kExitInvalidOptions;
  }
  SignalPipe signals;
  if (const Status s = signals.Install(); !s.ok()) {
    std::fprintf(options.err, "launch: %s\n", s.message().c_str());
    return 1;
  }
  Launcher launcher(options, signals);
  return launcher.Run();
}

}  // namespace pserver::tools
