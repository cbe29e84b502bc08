#include "pserver/engine_node.h"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

namespace pserver::tools {
namespace {

// The variable `name` as an integer in [min, max]; kInvalidArgument naming it otherwise.
Result<int> IntVariable(const GetEnv& getenv, const char* name, int min, int max) {
  const char* text = getenv(name);
  if (text == nullptr) return Status::InvalidArgument(fmt::format("{} is not set", name));
  if (*text == '\0') return Status::InvalidArgument(fmt::format("{} is set but empty", name));
  int value = 0;
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end || value < min || value > max) {
    return Status::InvalidArgument(fmt::format("{}='{}' is not a number from {} to {}", name, text, min, max));
  }
  return value;
}

std::string Variable(const GetEnv& getenv, const char* name) {
  const char* text = getenv(name);
  return text == nullptr ? std::string() : std::string(text);
}

// Rank and size from the two variables; a rank outside the size is refused.
Result<EngineProcess> RankAndSize(const GetEnv& getenv, const char* engine, const char* rank_name,
                                  const char* size_name) {
  EngineProcess p;
  p.engine = engine;
  PSERVER_ASSIGN_OR_RETURN(p.size, IntVariable(getenv, size_name, 1, 1 << 20));
  PSERVER_ASSIGN_OR_RETURN(p.rank, IntVariable(getenv, rank_name, 0, p.size - 1));
  return p;
}

// The first IPv4 address of this host's name that is not a loopback one: what nodes on other
// hosts connect to. kNotFound if the name resolves to none.
Result<std::string> HostAddress() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) {
    return Status::NotFound(fmt::format("gethostname: {}", std::strerror(errno)));
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(name, nullptr, &hints, &found); rc != 0) {
    return Status::NotFound(fmt::format("this host's name '{}' does not resolve: {}", name, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, freeaddrinfo);
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return std::string(text);
  }
  return Status::NotFound(fmt::format("this host's name '{}' resolves only to loopback addresses", name));
}

// Waits for the scheduler's address in `file` (written whole: tmp + rename) until `timeout`.
Result<std::string> AwaitAddress(const std::string& file, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::ifstream in(file);
    std::string address;
    if (in && std::getline(in, address) && !address.empty()) {
      if (address.rfind("tcp://", 0) != 0) {
        return Status::InvalidArgument(fmt::format("{} holds '{}', not a scheduler's tcp:// address", file, address));
      }
      return address;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::DeadlineExceeded(fmt::format(
          "no scheduler address in {} after {} ms: did rank 0 start `pserver node`, and is this path the "
          "same (shared) file on every host?",
          file, timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polls a file another host writes
  }
}

// Replaces this process with argv (searched in PATH); returns only on failure, with the exit
// status a shell would give (127 not found, 126 not runnable).
int Exec(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  execvp(args[0], args.data());
  const int err = errno;
  std::fprintf(stderr, "pserver node: cannot run '%s': %s\n", argv[0].c_str(), std::strerror(err));
  return err == ENOENT ? 127 : 126;
}

int Fail(const Status& s, int code = 1) {
  std::fprintf(stderr, "pserver node: %s\n", s.ToString().c_str());
  return code;
}

}  // namespace

Result<EngineProcess> EngineProcessFromEnvironment(const GetEnv& getenv) {
  if (getenv("OMPI_COMM_WORLD_RANK") != nullptr) {
    PSERVER_ASSIGN_OR_RETURN(EngineProcess p, RankAndSize(getenv, "Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"));
    const std::string local_size = Variable(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE");
    p.one_host = local_size == std::to_string(p.size);
    p.job_id = Variable(getenv, "OMPI_MCA_ess_base_jobid");
    if (p.job_id.empty()) p.job_id = Variable(getenv, "PMIX_NAMESPACE");
    if (!p.job_id.empty()) {
      // Open MPI derives the job id from mpirun's pid, which repeats; the address mpirun listens
      // at (its port is new each run) tells two jobs of the same id apart.
      p.job_id = "ompi-" + p.job_id;
      const std::string hnp = Variable(getenv, "OMPI_MCA_orte_hnp_uri");
      if (!hnp.empty()) p.job_id += fmt::format("-{:08x}", static_cast<uint32_t>(std::hash<std::string>{}(hnp)));
    }
    return p;
  }
  if (getenv("PMI_RANK") != nullptr) {
    // MPICH's Hydra and others speaking PMI: no job id nor host count in the environment.
    return RankAndSize(getenv, "PMI", "PMI_RANK", "PMI_SIZE");
  }
  if (getenv("SLURM_PROCID") != nullptr) {
    const std::string step = Variable(getenv, "SLURM_STEP_ID");
    if (step.empty()) {
      return Status::InvalidArgument(
          "SLURM_PROCID is set but SLURM_STEP_ID is not: this is a batch script, not a task of `srun`; run "
          "`srun pserver node ...` (docs/cluster_engines.md)");
    }
    PSERVER_ASSIGN_OR_RETURN(EngineProcess p, RankAndSize(getenv, "SLURM", "SLURM_PROCID", "SLURM_NTASKS"));
    p.one_host = Variable(getenv, "SLURM_STEP_NUM_NODES") == "1";
    const std::string job = Variable(getenv, "SLURM_JOB_ID");
    if (!job.empty()) p.job_id = "slurm-" + job + "." + step;
    return p;
  }
  return Status::NotFound(
      "no cluster engine in the environment: `pserver node` runs under mpirun (OMPI_COMM_WORLD_RANK), an MPI "
      "with PMI (PMI_RANK) or srun (SLURM_PROCID); `pserver launch` starts a local cluster by itself");
}

Result<NodePlan> PlanNode(const EngineProcess& process, int num_servers) {
  if (num_servers < 1 || process.size < num_servers + 2) {
    return Status::InvalidArgument(fmt::format(
        "{} started {} processes: a job with --servers {} needs at least {} (a scheduler, the servers and one "
        "worker)",
        process.engine, process.size, num_servers, std::max(num_servers, 1) + 2));
  }
  NodePlan plan;
  plan.num_servers = num_servers;
  plan.num_workers = process.size - 1 - num_servers;
  if (process.rank == 0) {
    plan.role = Role::kScheduler;
  } else if (process.rank <= num_servers) {
    plan.role = Role::kServer;
    plan.rank_hint = process.rank - 1;
  } else {
    plan.role = Role::kWorker;
    plan.rank_hint = process.rank - 1 - num_servers;
  }
  return plan;
}

Result<std::string> DefaultAddressFile(const EngineProcess& process, const std::string& dir) {
  if (process.job_id.empty()) {
    return Status::InvalidArgument(fmt::format(
        "{} gives no job id to name the scheduler's address file after: pass --address-file with a path on "
        "storage every host shares, new for each job",
        process.engine));
  }
  std::string name = "pserver-";
  for (char c : process.job_id) name += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_';
  return (std::filesystem::path(dir) / (name + ".address")).string();
}

void AddNodeCommand(CLI::App& app, const std::string& self_exe, std::function<int()>* run) {
  struct Flags {
    int servers = 1;
    int port = 0;
    std::string host;
    std::string address_file;
    int64_t wait_ms = 120000;
    int metrics_port = -1;
    std::vector<std::string> program;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "node", "One process of a job started by mpirun or srun: rank 0 the scheduler, ranks 1..S the servers, "
              "the rest workers (docs/cluster_engines.md)");
  cmd->add_option("--servers", f->servers, "Servers in the job (the engine's ranks 1..S)")
      ->check(CLI::Range(1, 4096))
      ->required();
  cmd->add_option("--port", f->port, "The scheduler's TCP port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--host", f->host,
                  "The address this node listens on (default: 127.0.0.1 when the engine puts the whole job on one "
                  "host, else this host name's first IPv4 address)")
      ->envname("PSERVER_HOST");
  cmd->add_option("--address-file", f->address_file,
                  "Where the scheduler writes its address for the others (default: pserver-<job id>.address in "
                  "the current directory, which every host must share)");
  cmd->add_option("--wait-ms", f->wait_ms, "How long servers and workers wait for the scheduler's address")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--metrics-port", f->metrics_port,
                  "Serve Prometheus metrics from every node at this port plus its engine rank (0: each on a free "
                  "port it logs; -1: none; docs/metrics.md)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd->add_option("program", f->program, "PROGRAM ARGS... run as each worker (after --); default: `pserver worker`");
  cmd->callback([=] {
    *run = [=]() -> int {
      Result<EngineProcess> process = EngineProcessFromEnvironment(std::getenv);
      if (!process.ok()) return Fail(process.status(), 2);
      Result<NodePlan> plan = PlanNode(*process, f->servers);
      if (!plan.ok()) return Fail(plan.status(), 2);
      std::string file = f->address_file;
      if (file.empty()) {
        Result<std::string> named = DefaultAddressFile(*process, ".");
        if (!named.ok()) return Fail(named.status(), 2);
        file = *named;
      }
      std::error_code ec;
      file = std::filesystem::absolute(file, ec).lexically_normal().string();
      std::string host = f->host;
      if (host.empty()) {
        Result<std::string> found = process->one_host ? Result<std::string>("127.0.0.1") : HostAddress();
        if (!found.ok()) return Fail(Status::NotFound(found.status().message() + "; pass --host"), 2);
        host = *found;
      }

      setenv("PSERVER_ROLE", std::string(RoleName(plan->role)).c_str(), 1);
      setenv("PSERVER_HOST", host.c_str(), 1);
      setenv("PSERVER_NUM_SERVERS", std::to_string(plan->num_servers).c_str(), 1);
      setenv("PSERVER_NUM_WORKERS", std::to_string(plan->num_workers).c_str(), 1);
      if (f->metrics_port < 0) {
        setenv("PSERVER_METRICS_PORT", "-1", 1);  // not one exported for the whole job, taken by every rank
      } else {
        const int64_t port = f->metrics_port == 0 ? 0 : int64_t{f->metrics_port} + process->rank;
        if (port > 65535) {
          return Fail(Status::InvalidArgument(fmt::format("--metrics-port {} + rank {} is past 65535", f->metrics_port,
                                                          process->rank)),
                      2);
        }
        setenv("PSERVER_METRICS_PORT", std::to_string(port).c_str(), 1);
      }
      if (plan->role == Role::kScheduler) {
        std::filesystem::remove(file, ec);  // a file left by an earlier job of the same name
        return Exec({self_exe, "scheduler", "--port", std::to_string(f->port), "--address-file", file});
      }
      setenv("PSERVER_RANK_HINT", std::to_string(plan->rank_hint).c_str(), 1);
      if (plan->role == Role::kServer && process->one_host && std::getenv("PSERVER_APPLY_THREADS") == nullptr) {
        // As `pserver launch` does: the servers of one host share its hardware threads.
        const unsigned share = std::max(1u, std::thread::hardware_concurrency() / static_cast<unsigned>(plan->num_servers));
        setenv("PSERVER_APPLY_THREADS", std::to_string(share).c_str(), 1);
      }
      Result<std::string> address = AwaitAddress(file, std::chrono::milliseconds(f->wait_ms));
      if (!address.ok()) return Fail(address.status());
      setenv("PSERVER_SCHEDULER", address->c_str(), 1);
      if (plan->role == Role::kServer) return Exec({self_exe, "server"});
      return Exec(f->program.empty() ? std::vector<std::string>{self_exe, "worker"} : f->program);
    };
  });
}

}  // namespace pserver::tools
