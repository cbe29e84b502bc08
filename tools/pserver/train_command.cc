#include "pserver/train_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/linear/data_cache.h"
#include "apps/linear/dbpg.h"
#include "apps/linear/libsvm_reader.h"
#include "apps/linear/model.h"
#include "apps/linear/synthetic.h"
#include "apps/linear/online.h"
#include "pserver/atomic_file.h"
#include "pserver/flag_checks.h"
#include "pserver/launcher.h"
#include "pserver/pserver.h"

namespace pserver::tools {
namespace {

struct TrainFlags {
  std::vector<std::string> data;
  int metrics_port = -1;
  std::string algo = "dbpg";
  double l1 = 1.0;
  double l2 = 0.0;
  int64_t tau = 0;
  uint32_t blocks = 0;
  int max_passes = 100;
  double tol = 1e-4;
  bool no_kkt = false;
  double learning_rate = 0.1;  // sgd / ftrl alpha
  uint32_t minibatch = 1000;
  int servers = 1;
  int workers = 2;
  uint32_t replicas = 1;
  std::string model_out;
  std::string report;
  std::string cache_dir = "data/cache";
  std::string scheduler;
  std::string checkpoint_dir;
  int checkpoint_every = 10;
  std::string resume;
  std::string filters;  // the weight table's, in ParseFilters' form

  // Where checkpoints go: --checkpoint-dir, else the directory resumed from.
  const std::string& checkpoints() const { return checkpoint_dir.empty() ? resume : checkpoint_dir; }
};

// How long a failing worker waits for the scheduler to end the job after telling it why.
constexpr std::chrono::seconds kReportFailureTimeout{60};
// How long a worker's Finalize waits for the end of the job (see RunTrainWorker).
constexpr std::chrono::hours kJobEndTimeout{24};

int Fail(const Status& s) {
  std::fprintf(stderr, "pserver train: %s\n", s.ToString().c_str());
  return 1;
}

// The JSON summary of the job. `outcome` is its end: a failed job's report says so ("status":
// "failed" and the error), so that it never reads as a complete run.
Status WriteReport(const TrainFlags& f, const std::vector<linear::PassReport>& passes, double seconds,
                   const Status& outcome, bool converged, const std::string& stopped_by) {
  if (f.report.empty()) return Status::Ok();
  const linear::PassReport last = passes.empty() ? linear::PassReport{} : passes.back();
  nlohmann::json j = {{"status", outcome.ok() ? "ok" : "failed"},
                      {"algo", f.algo},          {"objective", last.objective},   {"nnz", last.nnz},
                      {"passes", passes.size()}, {"seconds", seconds},             {"bytes_sent", last.bytes_sent},
                      {"idle_fraction", last.idle_fraction}, {"l1", f.l1}, {"l2", f.l2}, {"tau", f.tau},
                      {"workers", f.workers},    {"servers", f.servers},          {"rows", last.rows},
                      {"filters", f.filters},    {"wire_bytes_sent", last.wire_bytes_sent},
                      {"wire_bytes_received", last.wire_bytes_received}};
  // Passes are counted over the whole training: a resumed job's first is the checkpoint's + 1.
  if (!passes.empty() && passes.front().pass > 1) j["resumed_from_pass"] = passes.front().pass - 1;
  if (!stopped_by.empty()) {
    j["converged"] = converged;
    j["stopped_by"] = stopped_by;
  }
  if (!std::isnan(last.gap)) j["gap"] = last.gap;
  nlohmann::json per_pass = nlohmann::json::array();
  for (const linear::PassReport& p : passes) {
    per_pass.push_back({{"pass", p.pass},
                        {"objective", p.objective},
                        {"nnz", p.nnz},
                        {"seconds", p.seconds},
                        {"bytes_sent", p.bytes_sent},
                        {"wire_bytes_sent", p.wire_bytes_sent},
                        {"wire_bytes_received", p.wire_bytes_received},
                        {"idle_fraction", p.idle_fraction},
                        {"active_features", p.active_features},
                        {"rows", p.rows},
                        {"workers", p.workers}});
    if (!std::isnan(p.gap)) per_pass.back()["gap"] = p.gap;
  }
  j["per_pass"] = per_pass;
  if (!outcome.ok()) j["error"] = outcome.ToString();
  // Invalid UTF-8 (a file name in an error, say) is replaced rather than thrown as type_error.
  const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return WriteFileAtomically(f.report, text).WithContext("cannot write the report");
}

// Checks, before any work, that the model and the report can be written where the flags say
// (any worker may become the lead that writes them, so every worker checks): a missing or
// unwritable directory fails the job in seconds instead of after the last pass.
Status CheckTrainOutputs(const TrainFlags& f) {
  if (!f.model_out.empty()) PSERVER_RETURN_IF_ERROR(CheckWritableOutput(f.model_out).WithContext("--model-out"));
  if (!f.report.empty()) PSERVER_RETURN_IF_ERROR(CheckWritableOutput(f.report).WithContext("--report"));
  // Checkpoints go into --checkpoint-dir, or on into the directory resumed from.
  if (!f.checkpoint_dir.empty()) PSERVER_RETURN_IF_ERROR(CheckWritableDirectory(f.checkpoint_dir).WithContext("--checkpoint-dir"));
  if (!f.resume.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(f.resume, ec)) {
      return Status::NotFound(fmt::format("--resume: {} is no directory (of checkpoints)", f.resume));
    }
    if (f.checkpoint_dir.empty()) PSERVER_RETURN_IF_ERROR(CheckWritableDirectory(f.resume).WithContext("--resume"));
  }
  return Status::Ok();
}

// Checks the --data files before any work: those of linear::CheckInputFiles (each exists, none
// is a directory, none is named twice), and that each is a regular file -- training reads its
// data more than once (the split among workers stats sizes, the data cache hashes the inputs'
// content, the empty-data check below), which a pipe or device cannot give: a device's size is
// 0 and a pipe's content is gone once read. With `scan_for_rows`,
// also that the files hold at least one data row (reading each only up to its first row).
Status CheckTrainInputs(const std::vector<std::string>& data, bool scan_for_rows) {
  PSERVER_RETURN_IF_ERROR(linear::CheckInputFiles(data).WithContext("--data"));
  for (const std::string& path : data) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(
          fmt::format("--data: {}: not a regular file (training reads its data more than once: to split it among "
                      "workers, for the data cache); copy it to a file first",
                      path));
    }
  }
  if (!scan_for_rows) return Status::Ok();
  linear::LibsvmReadOptions scan;
  scan.chunk_bytes = size_t{64} << 10;  // the first row is usually in the first few bytes
  PSERVER_ASSIGN_OR_RETURN(bool any, linear::HasDataRows(data, scan));
  if (!any) {
    return Status::InvalidArgument(fmt::format(
        "no data rows in --data {}: the files are empty or hold only blank and comment lines", fmt::join(data, " ")));
  }
  return Status::Ok();
}

int RunTrainWorker(const TrainFlags& f) {
  Result<NodeOptions> opts = NodeOptionsFromEnvironment();
  if (!f.scheduler.empty()) {
    if (!opts.ok()) opts = NodeOptions{};
    opts->scheduler_address = f.scheduler;
  }
  if (!opts.ok()) return Fail(opts.status());
  opts->role = Role::kWorker;
  // A worker joining a running job takes --metrics-port; one the launcher started has its own
  // port in the environment (the flag it was given too is the job's first port).
  if (std::getenv("PSERVER_METRICS_PORT") == nullptr) opts->metrics_port = f.metrics_port;
  if (Status s = CheckTrainOutputs(f); !s.ok()) return Fail(s);
  if (Status s = CheckTrainInputs(f.data, /*scan_for_rows=*/false); !s.ok()) return Fail(s);
  Result<std::unique_ptr<Node>> node = Node::Start(*opts);
  if (!node.ok()) return Fail(node.status());
  Node& n = **node;
  const uint32_t rank = n.rank().value;
  const auto start = std::chrono::steady_clock::now();
  Result<linear::LoadedData> data =
      linear::LoadOrParse(f.data, static_cast<int>(n.rank().value), static_cast<int>(n.num_workers()), f.cache_dir);
  if (!data.ok()) {
    // The job cannot be complete without this worker's data: end it for everyone, saying why.
    (void)n.FinalizeWithError(data.status(), kReportFailureTimeout);
    return Fail(data.status());
  }
  // A cache that cannot be created or written only costs time: LoadOrParse says why and goes on.
  if (!data->warning.empty()) std::fprintf(stderr, "pserver train: warning: %s\n", data->warning.c_str());
  if (data->data.num_rows() == 0) {
    // An empty part is fine while other parts have rows (a file or byte range without any);
    // a job without a single row would write an empty model and call it a success.
    if (Status s = CheckTrainInputs(f.data, /*scan_for_rows=*/true); !s.ok()) {
      (void)n.FinalizeWithError(s, kReportFailureTimeout);
      return Fail(s);
    }
  }
  std::printf("worker %u: %zu rows, %zu non-zeros (%s)\n", n.rank().value, data->data.num_rows(), data->data.nnz(),
              data->from_cache ? "from the cache" : "parsed");
  std::fflush(stdout);
  std::vector<linear::PassReport> passes;  // as every worker agreed on them, even if training fails later
  // The lead -- the lowest-ranked live worker, worker 0 unless it was lost -- speaks for the job.
  auto progress = [&](const linear::PassReport& p) {
    passes.push_back(p);
    if (p.lead != rank) return;
    if (passes.size() == 1 && p.pass > 1) {
      std::printf("resumed after pass %d from the latest complete checkpoint in %s\n", p.pass - 1, f.resume.c_str());
    }
    const std::string gap = std::isnan(p.gap) ? "" : fmt::format("  gap {:.1e}", p.gap);
    std::printf("pass %3d  objective %.8g%s  nnz %llu  %.2fs  sent %.1f MB (wire %.1f up, %.1f down)  idle %.0f%%  "
                "features computed %llu%s\n",
                p.pass, p.objective, gap.c_str(), static_cast<unsigned long long>(p.nnz), p.seconds, p.bytes_sent / 1e6,
                p.wire_bytes_sent / 1e6, p.wire_bytes_received / 1e6,
                100 * p.idle_fraction, static_cast<unsigned long long>(p.active_features),
                p.workers < n.num_workers() ? fmt::format("  ({} of {} workers)", p.workers, n.num_workers()).c_str() : "");
    std::fflush(stdout);
  };
  // A worker that leaves the job leaves its data behind: a live worker reads it and trains on
  // it too (docs/durability.md, section 5). Errors name a worker's data.
  const std::vector<std::string> inputs = f.data;
  const int num_workers = static_cast<int>(n.num_workers());
  linear::DataDescriber describe = [inputs, num_workers](uint32_t part) {
    return linear::DescribePart(inputs, static_cast<int>(part), num_workers);
  };
  linear::ShareLoader load_share = [&f, &describe, rank, num_workers](uint32_t share) -> Result<linear::Dataset> {
    PSERVER_ASSIGN_OR_RETURN(linear::LoadedData lost,
                             linear::LoadOrParse(f.data, static_cast<int>(share), num_workers, f.cache_dir));
    std::printf("worker %u: worker %u left the job; training on its data too (%s): %zu rows\n", rank, share,
                describe(share).c_str(), lost.data.num_rows());
    std::fflush(stdout);
    return std::move(lost.data);
  };
  linear::CheckpointOptions checkpoints;
  checkpoints.dir = f.checkpoints();
  checkpoints.every_passes = f.checkpoint_every;
  checkpoints.resume = !f.resume.empty();
  checkpoints.on_checkpoint = [](int pass, const std::string& summary, double seconds) {
    std::printf("pass %3d  %s (training waited %.3fs)\n", pass, summary.c_str(), seconds);
    std::fflush(stdout);
  };
  bool lead = false;
  bool converged = false;
  std::string stopped_by;
  uint64_t num_features = 0;
  std::vector<std::pair<uint64_t, double>> weights;
  Status trained;
  // The lead's last line about training: which rule stopped it, or how far from converged it is.
  auto say_how_it_ended = [&](bool stopped, const std::string& blocks) {
    std::printf("%s after %zu passes%s: %s\n",
                converged ? "converged" : (stopped ? "warning: stopped" : "warning: not converged"), passes.size(),
                blocks.c_str(), stopped_by.c_str());
    std::fflush(stdout);
  };
  if (f.algo == "dbpg") {
    linear::DbpgOptions o;
    o.l1 = f.l1;
    o.l2 = f.l2;
    o.tau = f.tau;
    o.num_blocks = f.blocks;
    o.filters = *ParseFilters(f.filters);  // checked with the flags
    o.max_passes = f.max_passes;
    o.gap_tol = f.tol;
    o.kkt_filter = !f.no_kkt;
    o.describe_data = describe;
    o.load_share = load_share;
    o.checkpoints = checkpoints;
    Result<linear::DbpgResult> r = linear::TrainDbpg(n, data->data, o, progress);
    trained = r.status();
    if (r.ok()) {
      num_features = r->num_features;
      weights = std::move(r->weights);
      lead = r->lead;
      stopped_by = r->stopped_by;
      converged = r->converged;
      if (lead) say_how_it_ended(r->stopped, fmt::format(" of {} blocks", r->num_blocks));
    }
  } else {
    linear::OnlineOptions o;
    o.rule = f.algo;
    o.l1 = f.l1;
    o.l2 = f.l2;
    o.tau = f.tau;
    o.filters = *ParseFilters(f.filters);
    o.learning_rate = f.learning_rate;
    o.minibatch = f.minibatch;
    o.max_passes = f.max_passes;
    o.gap_tol = f.tol;
    o.rel_tol = f.tol;
    o.describe_data = describe;
    o.load_share = load_share;
    o.checkpoints = checkpoints;
    Result<linear::OnlineResult> r = linear::TrainOnline(n, data->data, o, progress);
    trained = r.status();
    if (r.ok()) {
      num_features = r->num_features;
      weights = std::move(r->weights);
      lead = r->lead;
      stopped_by = r->stopped_by;
      converged = r->converged;
      if (lead) say_how_it_ended(r->stopped, "");
    }
  }
  // A failed job's report comes from the last pass's lead (worker 0 if no pass ended).
  if (!trained.ok()) lead = passes.empty() ? rank == 0 : passes.back().lead == rank;
  // The model is complete only once the job ended well: every worker finished (Finalize fails
  // when the scheduler ended the job without one). So the lead stages it beforehand -- written
  // and synced beside --model-out, the slow part -- and puts it in place only after Finalize
  // returned OK (a rename); a failed job leaves no model, only the report, which records the
  // failure. Finalize waits for the lead's collection and staging of the model on the other
  // workers, so its bound is long: a node that dies ends the wait sooner, through heartbeats.
  std::unique_ptr<AtomicFileWriter> staged_model;
  if (trained.ok() && lead && !f.model_out.empty()) {
    Result<std::unique_ptr<AtomicFileWriter>> staged =
        linear::LinearModel(num_features, std::move(weights)).Stage(f.model_out);
    if (staged.ok()) {
      staged_model = std::move(*staged);
    } else {
      trained = staged.status();
    }
  }
  if (trained.ok()) trained = n.Finalize(kJobEndTimeout);
  if (trained.ok() && staged_model) trained = staged_model->Commit();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!trained.ok()) {
    // Ends the job for every node with this worker's reason (at once if the job already ended).
    (void)n.FinalizeWithError(trained, kReportFailureTimeout);
    staged_model.reset();  // removes the staged file, if the rename did not happen
    if (n.declared_dead()) {
      // It was silent (stopped, cut off) long enough to be declared dead, and the job went on
      // without it: its share is another worker's now (the scheduler ends the job with an
      // error if nobody took it over). Not a failure of the job: leave, saying so.
      std::fprintf(stderr, "pserver train: worker %u was declared dead while it was silent, and the job went on "
                           "without it (%s); leaving\n",
                   rank, trained.ToString().c_str());
      return kExitDeclaredDead;
    }
    if (lead) {
      if (Status s = WriteReport(f, passes, seconds, trained, converged, stopped_by); !s.ok()) {
        std::fprintf(stderr, "pserver train: %s\n", s.ToString().c_str());
      }
    }
    return Fail(trained);
  }
  if (staged_model) std::printf("model written to %s\n", f.model_out.c_str());
  if (lead) {
    if (Status s = WriteReport(f, passes, seconds, trained, converged, stopped_by); !s.ok()) return Fail(s);
  }
  return 0;
}

}  // namespace

void AddTrainCommand(CLI::App& app, const std::string& self_exe, const std::vector<std::string>& argv,
                     std::function<int()>* run) {
  CLI::App* train = app.add_subcommand("train", "Train a model on a local cluster (or as a worker of a running job)");
  train->require_subcommand(1);
  auto f = std::make_shared<TrainFlags>();
  CLI::App* cmd = train->add_subcommand(
      "linear", "Sparse logistic regression with L1 (and L2) regularisation: delayed block proximal gradient (dbpg), "
                "or asynchronous minibatch SGD / FTRL-proximal");
  cmd->add_option("--data", f->data, "libsvm files (split across workers by file, or by byte range)")->required();
  cmd->add_option("--algo", f->algo, "dbpg, sgd or ftrl")
      ->check(CLI::IsMember({"dbpg", "sgd", "ftrl"}))
      ->capture_default_str();
  cmd->add_option("--l1", f->l1, "L1 penalty lambda_1")->check(FiniteNumber())->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--l2", f->l2, "L2 penalty lambda_2 (objective term lambda_2 |w|^2)")
      ->check(FiniteNumber())
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--tau", f->tau, "Delay bound: iterations (dbpg) or minibatches (sgd/ftrl) in flight beyond one")
      ->check(CLI::Range(int64_t{0}, int64_t{1000}))
      ->capture_default_str();
  cmd->add_option("--blocks", f->blocks, "dbpg: feature blocks per pass (0: sized by the data and the delay: its non-zeros per worker and per row, "
                  "and 32 per iteration in flight)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--max-passes", f->max_passes, "Passes over the data at most")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--tol", f->tol,
                  "Stop when the duality gap estimate says the objective is within this fraction of the optimum "
                  "(converged); sgd/ftrl also stop when a pass changes the objective by less than this, relatively")
      ->check(FiniteNumber())
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--no-kkt", f->no_kkt, "dbpg: compute and send every feature (no KKT filter)");
  cmd->add_option("--learning-rate", f->learning_rate, "sgd: step size; ftrl: alpha")
      ->check(FiniteNumber())
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--minibatch", f->minibatch, "sgd/ftrl: rows per minibatch")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--servers", f->servers, "Servers of the local cluster")->check(CLI::Range(1, 256))->capture_default_str();
  cmd->add_option("--workers", f->workers, "Workers of the local cluster")->check(CLI::Range(1, 62))->capture_default_str();
  cmd->add_option("--replicas", f->replicas,
                  "Servers holding each parameter (1-8): with 2 or more, training goes on when a server dies "
                  "(docs/durability.md)")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  cmd->add_option("--metrics-port", f->metrics_port,
                  "Serve Prometheus metrics from every node, the training's pass, objective and non-zeros included "
                  "(`pserver launch --metrics-port`; docs/metrics.md)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd->add_option("--model-out", f->model_out, "Write the trained model here");
  cmd->add_option("--filters", f->filters,
                  "Filters of the weight table's messages, e.g. keycache,zstd (lossless) or fp16,keycache,zstd (values rounded to 16 bits with error feedback; also q8, sigmod:threshold=X) (docs/filters.md); none by default")
      ->check(FilterChainText());
  cmd->add_option("--report", f->report, "Write a JSON summary here (objective, nnz, passes, seconds, bytes_sent)");
  cmd->add_option("--cache-dir", f->cache_dir, "Binary cache of the parsed data (empty: none)")->capture_default_str();
  cmd->add_option("--scheduler", f->scheduler, "Join the running job at this scheduler address as a worker")
      ->envname("PSERVER_SCHEDULER");
  cmd->add_option("--checkpoint-dir", f->checkpoint_dir,
                  "Checkpoint the job into this directory (created if missing) every --checkpoint-every passes and "
                  "after pass --max-passes; a killed job goes on with --resume DIR (docs/durability.md)");
  cmd->add_option("--checkpoint-every", f->checkpoint_every, "Passes between checkpoints")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--resume", f->resume,
                  "Resume from the latest complete checkpoint in this directory: the same --data, --algo and penalties; "
                  "--max-passes counts every pass since the start; checkpoints go on into it unless --checkpoint-dir "
                  "says otherwise");
  cmd->callback([=] {
    *run = [=]() {
      if (cmd->count("--checkpoint-every") > 0 && f->checkpoints().empty()) {
        return Fail(Status::InvalidArgument("--checkpoint-every needs --checkpoint-dir (or --resume): where to put them"));
      }
      if (!f->scheduler.empty()) return RunTrainWorker(*f);
      // Every process of the job runs in this directory, so relative paths name the same files.
      if (!f->checkpoint_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(f->checkpoint_dir, ec);
        if (ec) {
          return Fail(Status::Unavailable(
              fmt::format("--checkpoint-dir: cannot create {}: {}", f->checkpoint_dir, ec.message())));
        }
      }
      if (Status s = CheckTrainOutputs(*f); !s.ok()) return Fail(s);
      // Bad or empty inputs fail here, once, before a cluster is started.
      if (Status s = CheckTrainInputs(f->data, /*scan_for_rows=*/true); !s.ok()) return Fail(s);
      LaunchOptions launch;
      launch.num_servers = f->servers;
      launch.num_workers = f->workers;
      launch.worker_argv = {self_exe};
      launch.worker_argv.insert(launch.worker_argv.end(), argv.begin() + 1, argv.end());
      launch.scheduler_argv = {self_exe, "scheduler"};
      if (f->replicas > 1) {
        launch.scheduler_argv.insert(launch.scheduler_argv.end(), {"--replicas", std::to_string(f->replicas)});
        launch.servers_may_die = true;
      }
      launch.workers_may_die = true;  // a lost worker's data is read by another
      launch.server_argv = {self_exe, "server"};
      if (!f->resume.empty()) launch.server_argv.insert(launch.server_argv.end(), {"--resume", f->resume});
      launch.prefix_output = true;
      launch.metrics_port = f->metrics_port;
      return RunLaunch(launch);
    };
  });
}

namespace {

// One score per line, written atomically.
Status WriteScores(const std::string& path, const std::vector<double>& scores) {
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, AtomicFileWriter::Open(path));
  std::string text;
  for (double s : scores) {
    fmt::format_to(std::back_inserter(text), "{:.9g}\n", s);
    if (text.size() >= (size_t{1} << 20)) {
      PSERVER_RETURN_IF_ERROR(out->Append(text));
      text.clear();
    }
  }
  PSERVER_RETURN_IF_ERROR(out->Append(text));
  return out->Commit();
}

}  // namespace

void AddPredictCommand(CLI::App& app, std::function<int()>* run) {
  auto model = std::make_shared<std::string>();
  auto data = std::make_shared<std::vector<std::string>>();
  auto scores_out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("predict", "Score libsvm data with a trained linear model; print log-loss, AUC "
                                                "and accuracy");
  cmd->add_option("--model", *model, "Model file written by `pserver train linear --model-out`")->required();
  cmd->add_option("--data", *data, "libsvm files to score")->required();
  cmd->add_option("--scores-out", *scores_out, "Write one score (the margin <x, w>) per row here");
  cmd->callback([=] {
    *run = [=]() {
      if (!scores_out->empty()) {
        if (Status s = CheckWritableOutput(*scores_out).WithContext("--scores-out"); !s.ok()) {
          std::fprintf(stderr, "pserver predict: %s\n", s.ToString().c_str());
          return 1;
        }
      }
      Result<linear::LinearModel> m = linear::LinearModel::Load(*model);
      if (!m.ok()) {
        std::fprintf(stderr, "pserver predict: %s\n", m.status().ToString().c_str());
        return 1;
      }
      Result<linear::Dataset> d = linear::ReadPart(*data, 0, 1);
      if (!d.ok()) {
        std::fprintf(stderr, "pserver predict: %s\n", d.status().ToString().c_str());
        return 1;
      }
      if (d->num_rows() == 0) {  // metrics of nothing (AUC 0) would read as a result
        std::fprintf(stderr, "pserver predict: no rows in %s: nothing to score\n", fmt::format("{}", fmt::join(*data, " ")).c_str());
        return 1;
      }
      const std::vector<double> scores = m->Scores(*d);
      if (!scores_out->empty()) {
        // Atomic: a failed write (a full disk) leaves nothing under the name, not a short file.
        if (Status s = WriteScores(*scores_out, scores); !s.ok()) {
          std::fprintf(stderr, "pserver predict: %s\n", s.ToString().c_str());
          return 1;
        }
      }
      const linear::Metrics metrics = linear::Evaluate(scores, d->labels());
      std::printf("rows %zu  log-loss %.6f  AUC %.6f  accuracy %.6f  (model: %zu non-zero weights)\n", metrics.rows,
                  metrics.log_loss, metrics.auc, metrics.accuracy, m->weights().size());
      return 0;
    };
  });
}

void AddGenDataCommand(CLI::App& app, std::function<int()>* run) {
  auto o = std::make_shared<linear::SyntheticOptions>();
  auto out = std::make_shared<std::string>();
  auto files = std::make_shared<int>(1);
  CLI::App* cmd = app.add_subcommand(
      "gen-data", "Write a seeded synthetic click-style data set in libsvm format: power-law feature frequencies, "
                  "labels drawn from a known sparse logistic model (the same output for the same flags)");
  cmd->add_option("--out", *out, "Output file (with --files N > 1: OUT.0 ... OUT.N-1)")->required();
  cmd->add_option("--rows", o->num_rows, "Examples")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--features", o->num_features, "Feature ids 1..FEATURES")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--nnz-per-row", o->nnz_per_row, "Mean distinct features per example")
      ->check(FiniteNumber())
      ->check(CLI::Range(1.0, 1e6))
      ->capture_default_str();
  cmd->add_option("--zipf", o->zipf_exponent, "Power-law exponent of feature frequencies (0: uniform)")
      ->check(FiniteNumber())
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--weight-density", o->weight_density, "Share of features with a non-zero true weight")
      ->check(FiniteNumber())
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  cmd->add_option("--files", *files, "Split the rows over this many files")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->callback([=] {
    *run = [=]() {
      Result<linear::SyntheticData> gen = linear::SyntheticData::Create(*o);
      if (!gen.ok()) {
        std::fprintf(stderr, "pserver gen-data: %s\n", gen.status().ToString().c_str());
        return 2;
      }
      const uint64_t per_file = (o->num_rows + *files - 1) / *files;
      for (int i = 0; i < *files; ++i) {
        const uint64_t first = per_file * i;
        const uint64_t count = first >= o->num_rows ? 0 : std::min(per_file, o->num_rows - first);
        const std::string path = *files == 1 ? *out : fmt::format("{}.{}", *out, i);
        if (Status s = gen->WriteLibsvm(path, first, count); !s.ok()) {
          std::fprintf(stderr, "pserver gen-data: %s\n", s.ToString().c_str());
          return 1;
        }
        std::printf("wrote %llu rows to %s\n", static_cast<unsigned long long>(count), path.c_str());
      }
      return 0;
    };
  });
}

}  // namespace pserver::tools
