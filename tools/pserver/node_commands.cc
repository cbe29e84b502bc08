#include "pserver/node_commands.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "pserver/atomic_file.h"
#include "pserver/demo_worker.h"
#include "pserver/pserver.h"

namespace pserver::tools {
namespace {

// Flags every node shares; bound to NodeOptions fields.
struct CommonFlags {
  int64_t heartbeat_interval_ms = 500;
  int64_t heartbeat_timeout_ms = 5000;
  int64_t register_timeout_ms = 60000;
  int64_t send_timeout_ms = 10000;
  int64_t scheduler_grace_ms = 60000;
};

void AddCommonFlags(CLI::App* cmd, NodeOptions* o, CommonFlags* f) {
  cmd->add_option("--host", o->host, "Host (IP or name) this node listens on; peers must reach it")
      ->envname("PSERVER_HOST")
      ->capture_default_str();
  cmd->add_option("--heartbeat-interval-ms", f->heartbeat_interval_ms, "How often nodes tell the scheduler they live")
      ->envname("PSERVER_HEARTBEAT_INTERVAL_MS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--heartbeat-timeout-ms", f->heartbeat_timeout_ms,
                  "A node (or the scheduler) silent this long is declared dead")
      ->envname("PSERVER_HEARTBEAT_TIMEOUT_MS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--register-timeout-ms", f->register_timeout_ms,
                  "How long to wait for the whole cluster to register")
      ->envname("PSERVER_REGISTER_TIMEOUT_MS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--send-timeout-ms", f->send_timeout_ms, "How long a send may block on a peer that does not read")
      ->envname("PSERVER_SEND_TIMEOUT_MS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--metrics-port", o->metrics_port,
                  "Serve Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.md); 0: any free port (logged); "
                  "-1: none")
      ->envname("PSERVER_METRICS_PORT")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd->add_option("--scheduler-grace-ms", f->scheduler_grace_ms,
                  "Servers and workers: how long to wait for a scheduler with a --store to come back once silent")
      ->envname("PSERVER_SCHEDULER_GRACE_MS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

void ApplyCommonFlags(const CommonFlags& f, NodeOptions* o) {
  o->heartbeat_interval = std::chrono::milliseconds(f.heartbeat_interval_ms);
  o->heartbeat_timeout = std::chrono::milliseconds(f.heartbeat_timeout_ms);
  o->register_timeout = std::chrono::milliseconds(f.register_timeout_ms);
  o->send_timeout = std::chrono::milliseconds(f.send_timeout_ms);
  o->scheduler_grace = std::chrono::milliseconds(f.scheduler_grace_ms);
}

void AddSchedulerFlag(CLI::App* cmd, NodeOptions* o) {
  cmd->add_option("--scheduler", o->scheduler_address, "The scheduler's address, tcp://host:port")
      ->envname("PSERVER_SCHEDULER")
      ->required();
  cmd->add_option("--rank-hint", o->rank_hint, "Preferred rank among nodes of this role (-1: any)")
      ->envname("PSERVER_RANK_HINT")
      ->capture_default_str();
}

int Fail(const char* what, const Status& s) {
  std::fprintf(stderr, "pserver %s: %s\n", what, s.ToString().c_str());
  return 1;
}

}  // namespace

void AddSchedulerCommand(CLI::App& app, std::function<int()>* run) {
  auto o = std::make_shared<NodeOptions>();
  auto f = std::make_shared<CommonFlags>();
  auto port = std::make_shared<int>(0);
  auto address_file = std::make_shared<std::string>();
  o->role = Role::kScheduler;
  CLI::App* cmd = app.add_subcommand("scheduler", "Start the scheduler of a job and run it to the end");
  AddCommonFlags(cmd, o.get(), f.get());
  cmd->add_option("--port", *port, "TCP port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--num-servers", o->num_servers, "Servers in the job")
      ->envname("PSERVER_NUM_SERVERS")
      ->check(CLI::Range(1, 4096))
      ->required();
  cmd->add_option("--num-workers", o->num_workers, "Workers in the job")
      ->envname("PSERVER_NUM_WORKERS")
      ->check(CLI::Range(1, 65536))
      ->required();
  cmd->add_option("--address-file", *address_file,
                  "Write the address nodes should register at to this file once listening (removed when the job ends)");
  cmd->add_option("--store", o->store,
                  "Keep the job's state here -- file:DIR or etcd:http://HOST:PORT[/PREFIX] -- so that a scheduler "
                  "started again on it resumes the job (docs/durability.md)")
      ->envname("PSERVER_STORE");
  cmd->add_option("--replicas", o->replicas,
                  "Servers holding each key (1-8): with 2 or more a push is acknowledged once all of them applied it, "
                  "and a server that dies is replaced by the next server of its chains (docs/durability.md)")
      ->envname("PSERVER_REPLICAS")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  auto checkpoint_every = std::make_shared<double>(0);
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir,
                  "Checkpoint the job into this directory every --checkpoint-every seconds (see `pserver checkpoint`)")
      ->envname("PSERVER_CHECKPOINT_DIR");
  cmd->add_option("--checkpoint-every", *checkpoint_every, "Seconds between checkpoints (0: none)")
      ->envname("PSERVER_CHECKPOINT_EVERY")
      ->check(CLI::Range(0.0, 86400.0 * 365))
      ->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      ApplyCommonFlags(*f, o.get());
      o->scheduler_address = fmt::format("tcp://{}:{}", o->host, *port);
      if ((*checkpoint_every > 0) != !o->checkpoint_dir.empty()) {
        return Fail("scheduler", Status::InvalidArgument("--checkpoint-dir and --checkpoint-every go together"));
      }
      if (*checkpoint_every > 0 && *checkpoint_every < 0.01) {
        return Fail("scheduler", Status::InvalidArgument(fmt::format(
                                     "--checkpoint-every {} s: checkpoints at least 0.01 s apart, please", *checkpoint_every)));
      }
      o->checkpoint_interval = std::chrono::milliseconds(static_cast<int64_t>(*checkpoint_every * 1000));
      std::error_code ec;
      if (!o->checkpoint_dir.empty()) {
        o->checkpoint_dir = std::filesystem::absolute(o->checkpoint_dir, ec).lexically_normal().string();
        if (Status s = CheckWritableDirectory(o->checkpoint_dir); !s.ok()) return Fail("scheduler", s);
      }
      Result<std::unique_ptr<Node>> node = Node::Start(*o);
      if (!node.ok()) return Fail("scheduler", node.status());
      std::printf("scheduler listening at %s\n", (*node)->address().c_str());
      std::fflush(stdout);
      if (!address_file->empty()) {
        if (Status s = WriteFileAtomically(*address_file, (*node)->address() + "\n"); !s.ok()) {
          return Fail("scheduler", s);
        }
      }
      Status s = (*node)->Run();
      // The address is the job's: once it ended, no node may find it there.
      if (!address_file->empty()) std::filesystem::remove(*address_file, ec);
      if (!s.ok()) return Fail("scheduler", s);
      std::printf("scheduler: job finished\n");
      return 0;
    };
  });
}

void AddServerCommand(CLI::App& app, std::function<int()>* run) {
  auto o = std::make_shared<NodeOptions>();
  auto f = std::make_shared<CommonFlags>();
  o->role = Role::kServer;
  CLI::App* cmd = app.add_subcommand(
      "server", "Start a server: serves every table with its update rule (the built-in ones: add, assign, sgd, "
                "adagrad, adam, ftrl, prox)");
  AddCommonFlags(cmd, o.get(), f.get());
  AddSchedulerFlag(cmd, o.get());
  auto apply_threads = std::make_shared<uint32_t>(0);
  auto resume = std::make_shared<std::string>();
  cmd->add_option("--resume", *resume,
                  "Fill each table with this server's share of it in the latest complete checkpoint in this directory "
                  "(docs/durability.md)")
      ->envname("PSERVER_RESUME");
  cmd->add_option("--apply-threads", *apply_threads,
                  "Threads that apply a large request's updates, each to its own shard of the keys (0: one per "
                  "hardware thread, at most 4; `pserver launch` shares the machine's threads among its servers)")
      ->envname("PSERVER_APPLY_THREADS")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      ApplyCommonFlags(*f, o.get());
      // SIGTERM is taken by a thread of its own (blocked here, before any other thread starts,
      // so that every thread inherits the mask).
      sigset_t term;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &term, nullptr);
      Result<std::unique_ptr<Node>> node = Node::Start(*o);
      if (!node.ok()) return Fail("server", node.status());
      Node* self = node->get();
      std::jthread on_term([self, term](std::stop_token stop) {
        int seen = 0;
        while (!stop.stop_requested()) {
          timespec wait{0, 200'000'000};
          if (sigtimedwait(&term, nullptr, &wait) != SIGTERM) continue;
          if (++seen > 1) {
            std::fprintf(stderr, "pserver server: second SIGTERM; exiting now\n");
            std::_Exit(143);
          }
          Status asked = self->Leave();
          std::fprintf(stderr, "pserver server: SIGTERM: %s\n",
                       asked.ok() ? "asked the scheduler to drain this server (a second SIGTERM exits at once)"
                                  : ("could not ask the scheduler to drain this server: " + asked.ToString()).c_str());
          std::fflush(stderr);
          if (!asked.ok()) self->Stop();
        }
      });
      // The built-in update rules serve every app (`pserver train linear` uses "prox").
      ServerOptions options;
      options.apply_threads = *apply_threads;
      options.resume_from = *resume;
      KVServer<float> f32(**node, options);
      KVServer<double> f64(**node);
      KVServer<int32_t> i32(**node);
      KVServer<int64_t> i64(**node);
      Status s = (*node)->Run();
      if (!s.ok()) return Fail("server", s);
      return 0;
    };
  });
}

void AddWorkerCommand(CLI::App& app, std::function<int()>* run) {
  auto o = std::make_shared<NodeOptions>();
  auto f = std::make_shared<CommonFlags>();
  auto demo = std::make_shared<DemoOptions>();
  o->role = Role::kWorker;
  CLI::App* cmd = app.add_subcommand(
      "worker", "Start a worker running the built-in check workload: rounds of push/pull of known values to random "
                "sparse keys, verifying every pulled sum");
  AddCommonFlags(cmd, o.get(), f.get());
  AddSchedulerFlag(cmd, o.get());
  cmd->add_option("--keys", demo->keys, "Keys per request")->check(CLI::Range(1, 10000000))->capture_default_str();
  cmd->add_option("--width", demo->width, "Values per key")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--rounds", demo->rounds, "Push/pull rounds")->check(CLI::Range(1, 1000000))->capture_default_str();
  cmd->add_option("--pushes", demo->pushes, "Pushes of the round's keys in flight at once per round")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--seed", demo->seed, "Seed of the key sets (the same on every worker)")->capture_default_str();
  cmd->add_flag("--progress-times", demo->progress_times,
                "Print 'progress RANK ROUND START_NS END_NS' (monotonic clock) for each round instead of its summary");
  cmd->add_option("--stop-file", demo->stop_file,
                  "Stop after the round in which worker 0 finds this file (before --rounds; every worker does the "
                  "same rounds; with --slots, each worker after the round in which it finds it)");
  cmd->add_option("--slots", demo->slots,
                  "Slot mode (workers may die and be started again): each worker adds to its own value of each key "
                  "(its slot: --rank-hint, which the launcher sets) and checks only that, with no barriers; a "
                  "worker started in a dead one's slot takes its work over and checks what it left (needs "
                  "--state-dir and --stop-file)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--state-dir", demo->state_dir,
                  "Slot mode: the directory where each slot's worker notes what it pushed, for its successor")
      ->check(CLI::ExistingDirectory);
  cmd->callback([=] {
    *run = [=]() {
      ApplyCommonFlags(*f, o.get());
      demo->slot = o->rank_hint;
      if (demo->slots > 0 && (demo->state_dir.empty() || demo->stop_file.empty())) {
        return Fail("worker", Status::InvalidArgument("--slots needs --state-dir and --stop-file"));
      }
      Result<std::unique_ptr<Node>> node = Node::Start(*o);
      if (!node.ok()) return Fail("worker", node.status());
      Status s = RunDemoWorker(**node, *demo);
      if (!s.ok()) return Fail("worker", s);
      return 0;
    };
  });
}

void AddStatusCommand(CLI::App& app, std::function<int()>* run) {
  auto address = std::make_shared<std::string>();
  auto host = std::make_shared<std::string>("127.0.0.1");
  auto timeout_ms = std::make_shared<int64_t>(10000);
  CLI::App* cmd = app.add_subcommand(
      "status", "Print a running job's state: epoch, servers and workers with their state and key-space share, the "
                "membership change running, the tables");
  cmd->add_option("--scheduler", *address, "The scheduler's address, tcp://host:port")
      ->envname("PSERVER_SCHEDULER")
      ->required();
  cmd->add_option("--host", *host, "Host this command listens on for the answer; the scheduler must reach it")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", *timeout_ms, "How long to wait for the answer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print the state as one JSON object (fields: docs/elasticity.md, section 5)");
  cmd->callback([=] {
    *run = [=]() {
      Result<std::string> status = JobStatus(*address, std::chrono::milliseconds(*timeout_ms), *host,
                                             *json ? StatusFormat::kJson : StatusFormat::kText);
      if (!status.ok()) return Fail("status", status.status());
      std::fputs(status->c_str(), stdout);
      return 0;
    };
  });
}

void AddDrainCommand(CLI::App& app, std::function<int()>* run) {
  auto address = std::make_shared<std::string>();
  auto host = std::make_shared<std::string>("127.0.0.1");
  auto node = std::make_shared<uint32_t>(0);
  auto timeout_ms = std::make_shared<int64_t>(600000);
  CLI::App* cmd = app.add_subcommand(
      "drain", "Move a server's keys to the other servers of a running job, then let it exit (the last server is "
               "never drained)");
  cmd->add_option("--scheduler", *address, "The scheduler's address, tcp://host:port")
      ->envname("PSERVER_SCHEDULER")
      ->required();
  cmd->add_option("--node", *node, "The server's node id, as `pserver status` shows it")->required();
  cmd->add_option("--host", *host, "Host this command listens on for the answer; the scheduler must reach it")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", *timeout_ms, "How long to wait for the drain to complete")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      Result<std::string> done = DrainServer(*address, NodeId(*node), std::chrono::milliseconds(*timeout_ms), *host);
      if (!done.ok()) return Fail("drain", done.status());
      std::printf("%s\n", done->c_str());
      return 0;
    };
  });
}

void AddCheckpointCommand(CLI::App& app, std::function<int()>* run) {
  auto address = std::make_shared<std::string>();
  auto host = std::make_shared<std::string>("127.0.0.1");
  auto dir = std::make_shared<std::string>();
  auto timeout_ms = std::make_shared<int64_t>(1800000);
  CLI::App* cmd = app.add_subcommand(
      "checkpoint", "Checkpoint a running job: every server writes its tables (values and update-rule state) into a "
                    "new directory DIR/ckpt-N, and the scheduler a manifest that completes it (docs/durability.md)");
  cmd->add_option("--scheduler", *address, "The scheduler's address, tcp://host:port")
      ->envname("PSERVER_SCHEDULER")
      ->required();
  cmd->add_option("--dir", *dir, "The directory of checkpoints (it must exist; servers and scheduler must reach it)")
      ->required();
  cmd->add_option("--host", *host, "Host this command listens on for the answer; the scheduler must reach it")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", *timeout_ms, "How long to wait for the checkpoint to complete")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      Result<std::string> done = CheckpointJob(*address, *dir, std::chrono::milliseconds(*timeout_ms), *host);
      if (!done.ok()) return Fail("checkpoint", done.status());
      std::printf("%s\n", done->c_str());
      return 0;
    };
  });
}

}  // namespace pserver::tools
