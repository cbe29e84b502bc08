#include "tests/integration/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace pserver::testing {
namespace {

using Clock = std::chrono::steady_clock;

Status SysError(const std::string& what) { return Status::Unavailable(what + ": " + std::strerror(errno)); }

// Milliseconds left until `deadline`, for poll(): at least 0, at most INT_MAX.
int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left < 0) return 0;
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

Result<std::unique_ptr<Subprocess>> Subprocess::Spawn(const std::vector<std::string>& argv,
                                                      const std::map<std::string, std::string>& env) {
  if (argv.empty()) return Status::InvalidArgument("Spawn needs a program");
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    std::string name(kv.substr(0, kv.find('=')));
    if (name.rfind("PSERVER_", 0) == 0 || env.contains(name)) continue;
    env_strings.emplace_back(kv);
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (std::string& a : args) argp.push_back(a.data());
  argp.push_back(nullptr);

  std::unique_ptr<Subprocess> p(new Subprocess());
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return SysError("pipe2");
  if (pipe2(p->stop_fds_, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return SysError("pipe2");
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) {
    close(out[0]);
    close(out[1]);
    return SysError("open /dev/null");
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(out[0]);
    close(out[1]);
    close(devnull);
    return SysError("fork");
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);  // the test process is already gone
    dup2(devnull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    execve(argp[0], argp.data(), envp.data());
    const char* msg = "Subprocess: execve failed: ";
    (void)!write(STDERR_FILENO, msg, std::strlen(msg));
    const char* why = std::strerror(errno);
    (void)!write(STDERR_FILENO, why, std::strlen(why));
    (void)!write(STDERR_FILENO, "\n", 1);
    _exit(127);
  }
  close(out[1]);
  close(devnull);
  // Also from the parent, so that a kill of the group right after Spawn cannot miss the child.
  setpgid(pid, pid);
  p->pid_ = pid;
  p->out_fd_ = out[0];
  p->pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (p->pidfd_ < 0) return SysError("pidfd_open");  // the destructor kills and reaps the child
  p->reader_ = std::thread([raw = p.get()] { raw->ReadLoop(); });
  return p;
}

void Subprocess::ReadLoop() {
  char buf[4096];
  for (;;) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {stop_fds_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents == 0) continue;
    ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(mu_);
    output_.append(buf, static_cast<size_t>(n));
    cv_.notify_all();
  }
  std::lock_guard lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !status_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    int st = 0;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (reader_.joinable()) {
    (void)!write(stop_fds_[1], "x", 1);
    reader_.join();
  }
  CloseFd(pidfd_);
  CloseFd(out_fd_);
  CloseFd(stop_fds_[0]);
  CloseFd(stop_fds_[1]);
}

bool Subprocess::WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout, size_t from) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return output_.find(needle, from) != std::string::npos || eof_; });
  return output_.find(needle, from) != std::string::npos;
}

std::optional<std::string> Subprocess::FindLineLocked(std::string_view prefix) const {
  for (size_t begin = 0; begin < output_.size();) {
    size_t end = output_.find('\n', begin);
    if (end == std::string::npos) return std::nullopt;  // an incomplete last line
    std::string_view line(output_.data() + begin, end - begin);
    if (line.substr(0, prefix.size()) == prefix) return std::string(line);
    begin = end + 1;
  }
  return std::nullopt;
}

std::optional<std::string> Subprocess::WaitForLine(std::string_view prefix, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return FindLineLocked(prefix).has_value() || eof_; });
  return FindLineLocked(prefix);
}

std::optional<int> Subprocess::WaitExit(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    pollfd fd = {pidfd_, POLLIN, 0};
    int rc = poll(&fd, 1, MillisLeft(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return std::nullopt;  // timed out (or poll failed: treat as not exited)
    break;
  }
  int st = 0;
  while (waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) return std::nullopt;
  }
  status_ = st;
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return eof_; });
  return status_;
}

void Subprocess::Signal(int sig) {
  if (pid_ > 0 && !status_) kill(pid_, sig);
}

std::string Subprocess::output() const {
  std::lock_guard lock(mu_);
  return output_;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + " (SIG" + (name ? name : "?") + ")";
  }
  return "wait status " + std::to_string(status);
}

std::optional<ProcessInfo> FindProcess(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream stat_file(dir + "/stat");
  std::string stat;
  if (!stat_file || !std::getline(stat_file, stat)) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
  size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return std::nullopt;
  std::istringstream rest(stat.substr(close_paren + 1));
  ProcessInfo info;
  info.pid = pid;
  if (!(rest >> info.state >> info.ppid)) return std::nullopt;
  std::ifstream cmd_file(dir + "/cmdline", std::ios::binary);
  std::string cmd((std::istreambuf_iterator<char>(cmd_file)), std::istreambuf_iterator<char>());
  for (char& ch : cmd) {
    if (ch == '\0') ch = ' ';
  }
  info.cmdline = std::move(cmd);
  return info;
}

std::vector<ProcessInfo> ListProcesses() {
  std::vector<ProcessInfo> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (auto info = FindProcess(static_cast<pid_t>(std::stol(name)))) out.push_back(std::move(*info));
  }
  return out;
}

std::string PserverBinary() { return PSERVER_BIN; }
std::string CheckWorkerBinary() { return CHECK_WORKER; }

TempDir::TempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "pserver_test.XXXXXX").string();
  if (mkdtemp(templ.data()) != nullptr) path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

}  // namespace pserver::testing
