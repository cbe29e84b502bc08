#include "pserver/chaos.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "bench_report.h"
#include "pserver/launcher.h"
#include "pserver/node.h"

namespace pserver::tools {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often the cluster's state is asked for while waiting for it to be whole.
constexpr milliseconds kStatusPoll{20};
// Sums of the check workload stay exact in float up to 2^24 (demo_worker.cc).
constexpr double kExactSums = double(1 << 24);
constexpr uint32_t kKeySets = 4;  // demo_worker.cc cycles over 4 key sets

double MillisBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// One round of one worker, from its "progress RANK ROUND START_NS END_NS" line.
struct Round {
  Clock::time_point start, end;
};

std::optional<std::pair<int, Round>> ParseProgress(std::string_view line) {
  constexpr std::string_view kPrefix = "progress ";
  if (line.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  line.remove_prefix(kPrefix.size());
  long long fields[4];
  for (long long& f : fields) {
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), f);
    if (ec != std::errc()) return std::nullopt;
    line.remove_prefix(static_cast<size_t>(end - line.data()));
  }
  if (!line.empty()) return std::nullopt;
  auto at = [](long long ns) { return Clock::time_point(std::chrono::nanoseconds(ns)); };
  return std::make_pair(static_cast<int>(fields[0]), Round{at(fields[2]), at(fields[3])});
}

// What the launcher's hooks (on its thread) tell the chaos thread, and the chaos thread's wish
// to stop the cluster. All under `mu`.
class Shared {
 public:
  void SetAddress(const std::string& address) {
    std::lock_guard lock(mu_);
    address_ = address;
    cv_.notify_all();
  }
  void ServerStarted(int index, pid_t pid) {
    std::lock_guard lock(mu_);
    servers_[index] = pid;
  }
  void WorkerStarted(int index, pid_t pid) {
    std::lock_guard lock(mu_);
    workers_[index] = pid;
  }
  void WorkerExited(int index) {
    std::lock_guard lock(mu_);
    workers_.erase(index);
  }
  size_t live_workers() {
    std::lock_guard lock(mu_);
    return workers_.size();
  }
  // SIGKILLs the live worker `pick` selects from the sorted live indices; its index, or -1 if
  // none is live. Under the lock, as SignalServer.
  int KillWorker(const std::function<size_t(size_t)>& pick) {
    std::lock_guard lock(mu_);
    return SignalPicked(workers_, SIGKILL, pick);
  }
  void SchedulerStarted(pid_t pid) {
    std::lock_guard lock(mu_);
    scheduler_ = pid;
  }
  void SchedulerExited() {
    std::lock_guard lock(mu_);
    scheduler_ = 0;
  }
  // SIGKILLs the scheduler; false if none runs. Under the lock, as SignalServer.
  bool KillScheduler() {
    std::lock_guard lock(mu_);
    if (scheduler_ == 0 || ended_) return false;
    kill(scheduler_, SIGKILL);
    return true;
  }
  size_t live_servers() {
    std::lock_guard lock(mu_);
    return servers_.size();
  }
  void ServerExited(int index, bool by_itself, const std::string& how) {
    std::lock_guard lock(mu_);
    servers_.erase(index);
    exits_[index] = {by_itself, how};
    cv_.notify_all();
  }
  // The rank's progress line; false for any other line (forwarded).
  bool WorkerLine(std::string_view line) {
    std::optional<std::pair<int, Round>> p = ParseProgress(line);
    if (!p) return true;
    std::lock_guard lock(mu_);
    rounds_[p->first].push_back(p->second);
    cv_.notify_all();
    return false;
  }
  void LaunchEnded() {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }

  // Waits up to `timeout` for the scheduler's address; empty if none came or the launch ended.
  std::string WaitAddress(milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !address_.empty() || ended_; });
    return ended_ ? "" : address_;
  }
  // Sleeps `d` unless the launch ends first; false then.
  bool Pause(Clock::duration d) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, d, [&] { return ended_; });
  }
  // Waits until each of `workers` workers (by rank, or by slot) finished a round it started after `after`, and
  // returns the last of their ends; nullopt if the launch ended or `deadline` passed first.
  std::optional<Clock::time_point> WaitRoundsAfter(Clock::time_point after, int workers, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    std::optional<Clock::time_point> last;
    cv_.wait_until(lock, deadline, [&] {
      if (ended_) return true;
      Clock::time_point latest = after;
      for (int w = 0; w < workers; ++w) {
        const std::vector<Round>& rounds = rounds_[w];
        // Rounds come in order: the first that started after `after`.
        auto it = std::partition_point(rounds.begin(), rounds.end(), [&](const Round& r) { return r.start <= after; });
        if (it == rounds.end()) return false;
        latest = std::max(latest, it->end);
      }
      last = latest;
      return true;
    });
    return ended_ ? std::nullopt : last;
  }
  // Sends `sig` to the live server `pick` selects from the sorted live indices; its index, or -1
  // if none is live. Under the lock: the launcher reaps a server only after ServerExited
  // returned (LaunchOptions::on_exit), so a server still listed has its pid.
  int SignalServer(int sig, const std::function<size_t(size_t)>& pick) {
    std::lock_guard lock(mu_);
    return SignalPicked(servers_, sig, pick);
  }
  // Sends `sig` to server `index` if it is still live; whether it was.
  bool SignalServerAt(int index, int sig) {
    std::lock_guard lock(mu_);
    auto it = servers_.find(index);
    if (it == servers_.end()) return false;
    kill(it->second, sig);
    return true;
  }
  // Waits until server `index` exited and returns how (by_itself, description); nullopt if
  // `deadline` passed or the launch ended first.
  std::optional<std::pair<bool, std::string>> WaitServerGone(int index, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return exits_.contains(index) || ended_; });
    if (!exits_.contains(index)) return std::nullopt;
    return exits_[index];
  }
  bool ended() {
    std::lock_guard lock(mu_);
    return ended_;
  }
  size_t rounds_done() {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [w, rounds] : rounds_) n += rounds.size();
    return n;
  }

 private:
  // Sends `sig` to the process of `live` (index -> pid) that `pick` selects; its index, or -1
  // if none is live or the launch ended. REQUIRES: mu_ held.
  int SignalPicked(const std::map<int, pid_t>& live, int sig, const std::function<size_t(size_t)>& pick) {
    if (live.empty() || ended_) return -1;
    auto it = live.begin();
    std::advance(it, static_cast<long>(pick(live.size())));
    kill(it->second, sig);
    return it->first;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::string address_;
  std::map<int, pid_t> servers_;  // live servers by launch index
  std::map<int, pid_t> workers_;  // live workers by launch index (their slot)
  pid_t scheduler_ = 0;           // the live scheduler, 0 between one's death and the next's start
  std::map<int, std::pair<bool, std::string>> exits_;  // servers gone: by itself?, how
  std::map<int, std::vector<Round>> rounds_;
  bool ended_ = false;
};

// Whether the job's state (JobStatus as JSON) shows `servers` servers serving with their
// replicas in sync and no membership change running or waiting; else what is missing. Throws
// nlohmann::json::exception when a field is missing or of another type.
std::string NotWhole(const nlohmann::json& doc, int servers) {
  if (!doc.at("change_running").is_null()) return "a membership change runs";
  if (doc.at("changes_waiting").get<size_t>() > 0) return "membership changes wait";
  int whole = 0;
  for (const nlohmann::json& m : doc.at("members")) {
    const std::string state = m.at("state").get<std::string>();
    if (m.at("role") != "server" || state == "dead" || state == "left") continue;
    const std::string name = m.at("name").get<std::string>();
    if (state != "serving") return fmt::format("{} is {}", name, state);
    if (!m.value("replicas_in_sync", false)) return fmt::format("{}'s replicas are syncing", name);
    ++whole;
  }
  if (whole != servers) return fmt::format("{} of {} servers serve", whole, servers);
  return "";
}

class ChaosRun {
 public:
  explicit ChaosRun(const ChaosOptions& o) : o_(o), rng_(o.seed) {}

  // The chaos thread: returns "" when every kill was made and recovered from, else why not.
  std::string Drive(const std::string& stop_file) {
    const std::string address = shared_.WaitAddress(o_.timeout);
    if (address.empty()) return "the scheduler did not start";
    address_ = address;
    // The workers' first round: every worker runs.
    if (!shared_.WaitRoundsAfter(Clock::time_point(), o_.num_workers, Clock::now() + o_.timeout)) {
      return "the workers did not finish a first round";
    }
    // The last server kill, whose restoration the next WaitWhole measures (none: nothing to restore).
    bool server_killed = false;
    Clock::time_point killed;
    for (int k = 1; k <= o_.kills; ++k) {
      if (std::string why = WaitWhole(server_killed ? &killed : nullptr); !why.empty()) return why;
      const auto gap = milliseconds(std::uniform_int_distribution<int64_t>(0, o_.max_gap.count())(rng_));
      const bool stop = o_.faults == ChaosOptions::Faults::kStop ||
                        (o_.faults == ChaosOptions::Faults::kMixed && std::bernoulli_distribution(0.5)(rng_));
      // kAny: the scheduler and each worker as likely as each server.
      enum class Victim { kServer, kScheduler, kWorker } victim = Victim::kServer;
      if (o_.victims == ChaosOptions::Victims::kScheduler) victim = Victim::kScheduler;
      if (o_.victims == ChaosOptions::Victims::kWorkers) victim = Victim::kWorker;
      if (o_.victims == ChaosOptions::Victims::kAny) {
        const size_t workers = shared_.live_workers();
        const size_t draw = std::uniform_int_distribution<size_t>(0, shared_.live_servers() + workers)(rng_);
        victim = draw == 0 ? Victim::kScheduler : draw <= workers ? Victim::kWorker : Victim::kServer;
      }
      if (!shared_.Pause(gap)) return "the job ended";
      const Clock::time_point at = Clock::now();
      if (victim == Victim::kWorker) {
        const int worker =
            shared_.KillWorker([&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); });
        if (worker < 0) return "no worker to kill";
        server_killed = false;  // the servers' chains were not touched: nothing to restore
        // Its successor (the launcher starts it at once) took its work over and finished a round.
        std::optional<Clock::time_point> progressing = shared_.WaitRoundsAfter(at, o_.num_workers, at + o_.timeout);
        if (!progressing) {
          if (shared_.ended()) return "the job ended";
          return fmt::format("kill {}: the workers did not all finish a round within {} ms of worker {}'s SIGKILL", k,
                             o_.timeout.count(), worker);
        }
        worker_recoveries_.push_back(MillisBetween(at, *progressing));
        std::fprintf(o_.out, "chaos: kill %d/%d: worker %d SIGKILLed %lld ms after the cluster was whole; its "
                     "successor took its work over and every worker is progressing again after %.1f ms\n",
                     k, o_.kills, worker, static_cast<long long>(gap.count()), MillisBetween(at, *progressing));
        std::fflush(o_.out);
        continue;
      }
      const bool scheduler = victim == Victim::kScheduler;
      if (scheduler) {
        if (!shared_.KillScheduler()) return "no scheduler to kill";
        server_killed = false;  // the servers' chains were not touched: nothing to restore
        std::optional<Clock::time_point> progressing = shared_.WaitRoundsAfter(at, o_.num_workers, at + o_.timeout);
        if (!progressing) {
          if (shared_.ended()) return "the job ended";
          return fmt::format("kill {}: the workers did not all finish a round within {} ms of the scheduler's SIGKILL",
                             k, o_.timeout.count());
        }
        scheduler_recoveries_.push_back(MillisBetween(at, *progressing));
        std::fprintf(o_.out, "chaos: kill %d/%d: the scheduler SIGKILLed %lld ms after the cluster was whole, started "
                     "again on its store; every worker progressing again after %.1f ms\n",
                     k, o_.kills, static_cast<long long>(gap.count()), MillisBetween(at, *progressing));
        std::fflush(o_.out);
        continue;
      }
      const int server = shared_.SignalServer(
          stop ? SIGSTOP : SIGKILL, [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); });
      if (server < 0) return "no server left to kill";
      killed = at;
      server_killed = true;
      std::optional<Clock::time_point> progressing = shared_.WaitRoundsAfter(at, o_.num_workers, at + o_.timeout);
      if (!progressing) {
        if (stop) shared_.SignalServerAt(server, SIGCONT);  // so that the teardown can end it
        if (shared_.ended()) return "the job ended";
        return fmt::format("kill {}: the workers did not all finish a round within {} ms of server {}'s {}", k,
                           o_.timeout.count(), server, stop ? "SIGSTOP" : "SIGKILL");
      }
      (stop ? stop_recoveries_ : recoveries_).push_back(MillisBetween(at, *progressing));
      std::fprintf(o_.out, "chaos: kill %d/%d: server %d %s %lld ms after the cluster was whole; every worker "
                   "progressing again after %.1f ms\n",
                   k, o_.kills, server, stop ? "SIGSTOPped" : "SIGKILLed", static_cast<long long>(gap.count()),
                   MillisBetween(at, *progressing));
      if (stop) {
        // Healed: it must find itself cut off (declared dead, or the scheduler silent) and exit
        // (the launcher then starts a server in its place).
        shared_.SignalServerAt(server, SIGCONT);
        const std::optional<std::pair<bool, std::string>> gone = shared_.WaitServerGone(server, Clock::now() + o_.timeout);
        if (!gone) {
          if (shared_.ended()) return "the job ended";
          return fmt::format("kill {}: server {}, continued after it was failed over from, did not exit within {} ms",
                             k, server, o_.timeout.count());
        }
        if (!gone->first) {
          return fmt::format("kill {}: server {}, continued after it was failed over from, {} instead of exiting",
                             k, server, gone->second);
        }
        std::fprintf(o_.out, "chaos: server %d, continued, found itself cut off from the job and %s\n", server,
                     gone->second.c_str());
      }
      std::fflush(o_.out);
    }
    if (std::string why = WaitWhole(server_killed ? &killed : nullptr); !why.empty()) return why;
    // The workers stop at the round in which they find this file: unwritten, they would go on.
    std::ofstream stop(stop_file);
    if (!(stop << "stop\n").flush()) return fmt::format("cannot write the workers' stop file {}", stop_file);
    return "";
  }

  // Waits until the cluster is whole; records how long after `*killed` (when given) it became so.
  std::string WaitWhole(const Clock::time_point* killed) {
    const auto deadline = Clock::now() + o_.timeout;
    std::string why = "no answer";
    while (Clock::now() < deadline) {
      // Asked again after a short wait: a request the scheduler died with is never answered, and
      // waiting long for it would count as restoration time.
      Result<std::string> status = JobStatus(address_, milliseconds(500), "127.0.0.1", StatusFormat::kJson);
      if (status.ok()) {
        nlohmann::json doc = nlohmann::json::parse(*status, nullptr, /*allow_exceptions=*/false);
        try {
          why = doc.is_discarded() ? "its state did not parse" : NotWhole(doc, o_.num_servers);
        } catch (const nlohmann::json::exception& e) {  // a field missing or of another type
          return fmt::format("the scheduler's state is not what chaos reads: {}", e.what());
        }
        if (why.empty()) {
          if (killed != nullptr) {
            restorations_.push_back(MillisBetween(*killed, Clock::now()));
            std::fprintf(o_.out, "chaos: the cluster is whole again %.1f ms after the kill\n", restorations_.back());
          }
          return "";
        }
      } else {
        why = status.status().ToString();
      }
      if (!shared_.Pause(kStatusPoll)) return "the job ended";
    }
    return fmt::format("the cluster was not whole again within {} ms: {}", o_.timeout.count(), why);
  }

  Shared& shared() { return shared_; }
  const std::vector<double>& recoveries() const { return recoveries_; }
  const std::vector<double>& stop_recoveries() const { return stop_recoveries_; }
  const std::vector<double>& restorations() const { return restorations_; }
  const std::vector<double>& scheduler_recoveries() const { return scheduler_recoveries_; }
  const std::vector<double>& worker_recoveries() const { return worker_recoveries_; }

 private:
  const ChaosOptions& o_;
  std::mt19937_64 rng_;
  Shared shared_;
  std::string address_;
  std::vector<double> recoveries_;       // ms, SIGKILL -> every worker progressing
  std::vector<double> stop_recoveries_;  // ms, SIGSTOP -> every worker progressing
  std::vector<double> restorations_;  // ms, kill -> the cluster whole again
  std::vector<double> scheduler_recoveries_;  // ms, the scheduler's SIGKILL -> every worker progressing
  std::vector<double> worker_recoveries_;     // ms, a worker's SIGKILL -> every worker (its successor too) progressing
};

std::string Validate(const ChaosOptions& o) {
  if (o.num_servers < 2) return "--servers must be at least 2";
  if (o.num_workers < 1) return "--workers must be at least 1";
  if (o.replicas < 2 || o.replicas > static_cast<uint32_t>(o.num_servers)) {
    return "--replicas must be at least 2 and at most --servers";
  }
  if (o.kills < 1) return "--kills must be at least 1";
  if (o.victims != ChaosOptions::Victims::kServers && o.faults != ChaosOptions::Faults::kKill) {
    return "--victims scheduler, workers or any goes with --faults kill";
  }
  if (o.self_exe.empty()) return "no pserver executable";
  return "";
}

std::string Describe(const std::vector<double>& ms) {
  const bench::Summary s = bench::Summarize(ms);
  return fmt::format("median {:.1f} ms, min {:.1f}, max {:.1f}", s.median, s.min, s.max);
}

}  // namespace

int RunChaos(const ChaosOptions& o) {
  if (const std::string problem = Validate(o); !problem.empty()) {
    std::fprintf(o.err, "chaos: invalid options: %s\n", problem.c_str());
    return 2;
  }
  std::string dir = (std::filesystem::temp_directory_path() / "pserver-chaos.XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    std::fprintf(o.err, "chaos: cannot create a temp dir: %s\n", std::strerror(errno));
    return 1;
  }
  const std::string stop_file = dir + "/stop";
  // Workers that may be killed run the check workload's slot mode: each checks its own values,
  // and its successor what it left (demo_worker.h).
  const bool worker_victims = o.victims == ChaosOptions::Victims::kWorkers || o.victims == ChaosOptions::Victims::kAny;
  const std::string state_dir = dir + "/workers";
  if (worker_victims && !std::filesystem::create_directory(state_dir)) {
    std::fprintf(o.err, "chaos: cannot create %s\n", state_dir.c_str());
    return 1;
  }
  // As many rounds as keep every sum exact; the run ends at the stop file long before.
  const double per_round = worker_victims ? double(o.pushes) : double(o.num_workers) * (o.num_workers + 1) / 2 * o.pushes;
  const auto rounds = static_cast<uint32_t>(std::min(1e6, std::floor(kExactSums / per_round) * kKeySets));
  ChaosRun run(o);
  LaunchOptions launch;
  launch.num_servers = o.num_servers;
  launch.num_workers = o.num_workers;
  const std::vector<std::string> node = {o.self_exe, "--log-level", o.node_log_level};
  // A stopped server is found by heartbeats: they go faster when servers are stopped.
  std::vector<std::string> heartbeats;
  if (o.faults != ChaosOptions::Faults::kKill) {
    heartbeats = {"--heartbeat-interval-ms", std::to_string(std::max<int64_t>(1, o.heartbeat_timeout.count() / 10)),
                  "--heartbeat-timeout-ms", std::to_string(o.heartbeat_timeout.count())};
  }
  auto command = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = node;
    argv.push_back(args[0]);
    argv.insert(argv.end(), heartbeats.begin(), heartbeats.end());
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return argv;
  };
  launch.scheduler_argv = command({"scheduler", "--replicas", std::to_string(o.replicas)});
  if (o.victims == ChaosOptions::Victims::kScheduler || o.victims == ChaosOptions::Victims::kAny) {
    // Killed, it is started again and resumes the job from its store.
    launch.scheduler_argv.insert(launch.scheduler_argv.end(), {"--store", "file:" + dir + "/store"});
    launch.restart_scheduler = true;
  }
  launch.server_argv = command({"server"});
  launch.worker_argv = command(
                            {"worker", "--keys", std::to_string(o.keys), "--pushes", std::to_string(o.pushes),
                             "--rounds", std::to_string(rounds), "--seed", std::to_string(o.seed), "--stop-file",
                             stop_file, "--progress-times"});
  if (worker_victims) {
    launch.worker_argv.insert(launch.worker_argv.end(),
                              {"--slots", std::to_string(o.num_workers), "--state-dir", state_dir});
    launch.workers_may_die = true;
    launch.restart_workers = true;
  }
  const char* faults = o.faults == ChaosOptions::Faults::kKill   ? "SIGKILL"
                       : o.faults == ChaosOptions::Faults::kStop ? "SIGSTOP (then SIGCONT once failed over from)"
                                                                 : "SIGKILL or SIGSTOP";
  launch.servers_may_die = true;
  launch.restart_servers = true;
  launch.out = o.out;
  launch.err = o.err;
  const char* victims = o.victims == ChaosOptions::Victims::kServers     ? "random servers"
                        : o.victims == ChaosOptions::Victims::kScheduler ? "the scheduler (started again on its store)"
                        : o.victims == ChaosOptions::Victims::kWorkers
                            ? "random workers (each started again, to take its work over)"
                            : "random servers, workers or the scheduler";
  std::fprintf(o.out, "chaos: %d kills (%s) of %s of %d servers (--replicas %u), %d workers checking every round's "
               "sums; seed %llu\n",
               o.kills, faults, victims, o.num_servers, o.replicas, o.num_workers,
               static_cast<unsigned long long>(o.seed));
  std::fflush(o.out);
  Shared& shared = run.shared();
  launch.on_scheduler_address = [&](const std::string& address) { shared.SetAddress(address); };
  launch.on_start = [&](LaunchRole role, int index, pid_t pid) {
    if (role == LaunchRole::kServer) shared.ServerStarted(index, pid);
    if (role == LaunchRole::kWorker) shared.WorkerStarted(index, pid);
    if (role == LaunchRole::kScheduler) shared.SchedulerStarted(pid);
  };
  launch.on_exit = [&](LaunchRole role, int index, bool by_itself, const std::string& how) {
    if (role == LaunchRole::kServer) shared.ServerExited(index, by_itself, how);
    if (role == LaunchRole::kWorker) shared.WorkerExited(index);
    if (role == LaunchRole::kScheduler) shared.SchedulerExited();
  };
  launch.on_worker_line = [&](int, std::string_view line) { return shared.WorkerLine(line); };

  std::string failure;
  std::thread chaos([&] {
    failure = run.Drive(stop_file);
    // A failed drive stops the cluster as Ctrl-C would; the launch then ends non-zero.
    if (!failure.empty()) StopLaunch();
  });
  const int launched = RunLaunch(launch);
  shared.LaunchEnded();
  chaos.join();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  const size_t rounds_done = shared.rounds_done();
  if (!failure.empty() || launched != 0) {
    std::fprintf(o.err, "chaos: FAILED after %zu kills (seed %llu): %s\n",
                 run.recoveries().size() + run.stop_recoveries().size() + run.scheduler_recoveries().size() +
                     run.worker_recoveries().size(),
                 static_cast<unsigned long long>(o.seed),
                 !failure.empty() && failure != "the job ended" ? failure.c_str()
                 : launched != 0 ? fmt::format("the cluster ended with status {} (its error is above)", launched).c_str()
                                 : "the workers finished before every kill was made");
    return 1;
  }
  std::fprintf(o.out,
               "chaos: %d kills, seed %llu: 0 updates lost, 0 applied twice (%zu worker rounds of %u pushes "
               "checked exactly)\n",
               o.kills, static_cast<unsigned long long>(o.seed), rounds_done, o.pushes);
  if (!run.restorations().empty()) {
    std::fprintf(o.out, "chaos: restored after %zu server kills (kill -> replacement joined, chains whole): %s\n",
                 run.restorations().size(), Describe(run.restorations()).c_str());
  }
  if (!run.recoveries().empty()) {
    std::fprintf(o.out, "chaos: recovery from %zu SIGKILLs (kill -> every worker progressing): %s\n",
                 run.recoveries().size(), Describe(run.recoveries()).c_str());
  }
  if (!run.scheduler_recoveries().empty()) {
    std::fprintf(o.out, "chaos: recovery from %zu SIGKILLs of the scheduler (kill -> every worker progressing): %s\n",
                 run.scheduler_recoveries().size(), Describe(run.scheduler_recoveries()).c_str());
  }
  if (!run.worker_recoveries().empty()) {
    std::fprintf(o.out, "chaos: recovery from %zu SIGKILLs of workers (kill -> its successor and every other worker "
                 "progressing): %s\n",
                 run.worker_recoveries().size(), Describe(run.worker_recoveries()).c_str());
  }
  if (!run.stop_recoveries().empty()) {
    std::fprintf(o.out, "chaos: recovery from %zu SIGSTOPs (stop -> every worker progressing; heartbeat timeout %lld "
                 "ms): %s\n",
                 run.stop_recoveries().size(), static_cast<long long>(o.heartbeat_timeout.count()),
                 Describe(run.stop_recoveries()).c_str());
  }
  std::fflush(o.out);
  return 0;
}

}  // namespace pserver::tools
