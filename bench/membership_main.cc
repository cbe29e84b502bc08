// What moving a job's state costs on a real cluster -- joins and leaves (docs/elasticity.md) and
// checkpoints (docs/durability.md): a LocalCluster over ZeroMQ on loopback TCP, every node a
// thread of this process.
//
//   growth   servers join one at a time, from --from to --to, while one worker pushes the
//            stored keys round after round; per join: the keys it moved as a fraction of all
//            stored keys (x (N+1): 1.0 is the minimum 1/(N+1)), the most loaded server's rows
//            over the mean, and the longest a push waited while the change ran (the stall);
//            then the servers are drained one at a time back to --from, likewise
//   move     --move-keys keys on two servers, then the one that holds half of them is drained:
//            the time to move them, against copying the same bytes in memory (memcpy, this run)
//   checkpoint --move-keys keys of an AdaGrad table on --from servers, a worker pushing 10,000
//            of them round after round: the time to checkpoint the job, against writing as many
//            bytes as one file (AtomicFileWriter: write, fsync, rename; this run), and the
//            longest push during it against the median push; then a job resumed from it on as
//            many servers: the time to declare the table (every server reads the files and
//            keeps its rows), against reading the files' bytes
//
// Every figure is a median of --repeats runs with its range. Run:
//   build/bench/membership_bench --mode growth --from 2 --to 8 --keys 200000 --repeats 3
//   build/bench/membership_bench --mode move --move-keys 10000000 --repeats 3
//   build/bench/membership_bench --mode checkpoint --from 2 --move-keys 10000000 --repeats 3
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cluster/checkpoint_manifest.h"
#include "cluster/key_placement.h"
#include "cluster/scheduler.h"
#include "kv/local_cluster.h"
#include "kv/node_access.h"
#include "kv/server/kv_server_core.h"
#include "kv/server/table_store.h"
#include "pserver/atomic_file.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "pserver/logging.h"

namespace pserver {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string Range(std::vector<double> v, const char* format = "{:.3f}") {
  if (v.empty()) return "-";
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return fmt::format(fmt::runtime(std::string(format) + " [" + format + ", " + format + "]"), Median(v), *lo, *hi);
}

// Rows of `table` each server holds (its store, through the runtime's data handler).
std::vector<size_t> RowsPerServer(kv::LocalCluster& c, TableId table) {
  std::vector<size_t> rows;
  for (uint32_t i = 0; i < c.num_servers(); ++i) {
    cluster::NodeRuntime* rt = internal::NodeAccess::Runtime(c.server(i));
    if (rt->health().code() != StatusCode::kOk) continue;  // drained: ended its part
    auto core = std::static_pointer_cast<kv::KVServerCore>(rt->AttachDataHandler([] { return nullptr; }));
    Result<kv::RowBatch> all = core->ListRows(table, {});
    rows.push_back(all.ok() ? all->size() : 0);
  }
  return rows;
}

// A worker pushing every key round after round until stopped, timing each push.
struct Pusher {
  struct Sample {
    Clock::time_point start;
    double ms;
  };
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Sample> samples;

  Status Run(Node& worker, TableId table, const std::vector<Key>& keys) {
    KVWorker<float> kv(worker);
    std::vector<float> ones(keys.size(), 1.0f);
    while (!stop.load()) {
      const auto t0 = Clock::now();
      PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::vector<Key>(keys), std::vector<float>(ones)));
      PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
      std::lock_guard lock(mu);
      samples.push_back({t0, std::chrono::duration<double, std::milli>(Clock::now() - t0).count()});
    }
    return Status::Ok();
  }
  // The longest push that overlapped [from, to].
  double LongestDuring(Clock::time_point from, Clock::time_point to) {
    std::lock_guard lock(mu);
    double longest = 0;
    for (const Sample& s : samples) {
      const auto end = s.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(s.ms));
      if (end >= from && s.start <= to) longest = std::max(longest, s.ms);
    }
    return longest;
  }
  double MedianPush() {
    std::lock_guard lock(mu);
    std::vector<double> ms;
    for (const Sample& s : samples) ms.push_back(s.ms);
    return Median(ms);
  }
};

kv::LocalClusterOptions Options(uint32_t servers) {
  kv::LocalClusterOptions o;
  o.num_servers = servers;
  o.num_workers = 1;
  o.node.heartbeat_timeout = std::chrono::seconds(30);
  return o;
}

std::vector<Key> Keys(size_t n) {
  std::vector<Key> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = cluster::MixKey(i + 1);
  std::sort(keys.begin(), keys.end());
  return keys;
}

struct ChangeFigures {
  std::vector<double> moved_x, balance, stall_ms;
};

Status Growth(uint32_t from, uint32_t to, size_t nkeys, int repeats) {
  const std::vector<Key> keys = Keys(nkeys);
  std::vector<ChangeFigures> joins(to + 1), leaves(to + 1);
  std::vector<double> base_push;
  for (int rep = 0; rep < repeats; ++rep) {
    PSERVER_ASSIGN_OR_RETURN(auto c, kv::LocalCluster::Start(Options(from)));
    TableSpec spec;
    spec.name = "bench";
    PSERVER_ASSIGN_OR_RETURN(TableId table, c->worker(0).DeclareTable(spec));
    Pusher pusher;
    Status pushed;
    std::thread push_thread([&] { pushed = pusher.Run(c->worker(0), table, keys); });
    cluster::Scheduler& sched = *internal::NodeAccess::Scheduler(c->scheduler());
    auto wait_pushes = [&](size_t n) {
      for (;;) {
        {
          std::lock_guard lock(pusher.mu);
          if (pusher.samples.size() >= n) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    };
    wait_pushes(3);
    auto figures = [&](ChangeFigures& f, Clock::time_point t0, Clock::time_point t1, uint64_t moved) {
      const std::vector<size_t> rows = RowsPerServer(*c, table);
      const double total = std::accumulate(rows.begin(), rows.end(), 0.0);
      const double most = static_cast<double>(*std::max_element(rows.begin(), rows.end()));
      f.moved_x.push_back(static_cast<double>(moved) / total);
      f.balance.push_back(most / (total / static_cast<double>(rows.size())));
      f.stall_ms.push_back(pusher.LongestDuring(t0, t1));
    };
    for (uint32_t n = from; n < to; ++n) {
      const uint64_t done = sched.changes_done();
      const auto t0 = Clock::now();
      PSERVER_RETURN_IF_ERROR(c->AddServer().status());
      while (sched.changes_done() == done) std::this_thread::sleep_for(std::chrono::microseconds(200));
      const auto t1 = Clock::now();
      PSERVER_ASSIGN_OR_RETURN(auto reports, sched.ChangeReports(std::chrono::seconds(10)));
      const size_t before = pusher.samples.size();
      wait_pushes(before + 2);
      figures(joins[n + 1], t0, t1, reports.back().copied.rows);
      joins[n + 1].moved_x.back() *= n + 1;  // x (N+1): 1.0 is the minimum
    }
    for (uint32_t n = to; n > from; --n) {
      // Drain the lowest-ranked server still serving.
      uint32_t rank = 0;
      for (uint32_t i = 0; i < c->num_servers(); ++i) {
        if (internal::NodeAccess::Runtime(c->server(i))->health().ok()) {
          rank = c->server(i).rank().value;
          break;
        }
      }
      const auto t0 = Clock::now();
      PSERVER_RETURN_IF_ERROR(sched.Drain(rank, std::chrono::seconds(120)));
      const auto t1 = Clock::now();
      PSERVER_ASSIGN_OR_RETURN(auto reports, sched.ChangeReports(std::chrono::seconds(10)));
      const size_t before = pusher.samples.size();
      wait_pushes(before + 2);
      figures(leaves[n], t0, t1, reports.back().copied.rows);
      leaves[n].moved_x.back() *= n;  // x N: a leaver holds 1/N
    }
    base_push.push_back(pusher.MedianPush());
    pusher.stop = true;
    push_thread.join();
    PSERVER_RETURN_IF_ERROR(pushed);
    PSERVER_RETURN_IF_ERROR(c->RunWorkers([](Node&) { return Status::Ok(); }));
  }
  fmt::print("{} keys, one worker pushing all of them round after round; median push {} ms\n", nkeys,
             Range(base_push));
  fmt::print("| change | moved / minimum | most loaded / mean | longest push during it (ms) |\n|---|---|---|---|\n");
  for (uint32_t n = from + 1; n <= to; ++n) {
    fmt::print("| join to {} servers | {} | {} | {} |\n", n, Range(joins[n].moved_x), Range(joins[n].balance),
               Range(joins[n].stall_ms, "{:.1f}"));
  }
  for (uint32_t n = to; n > from; --n) {
    fmt::print("| drain to {} servers | {} | {} | {} |\n", n - 1, Range(leaves[n].moved_x), Range(leaves[n].balance),
               Range(leaves[n].stall_ms, "{:.1f}"));
  }
  std::vector<double> stalls;
  for (auto* all : {&joins, &leaves}) {
    for (auto& f : *all) stalls.insert(stalls.end(), f.stall_ms.begin(), f.stall_ms.end());
  }
  std::sort(stalls.begin(), stalls.end());
  if (!stalls.empty()) {
    fmt::print("stall over all {} changes: p50 {:.1f} ms, max {:.1f} ms\n", stalls.size(), stalls[stalls.size() / 2],
               stalls.back());
  }
  return Status::Ok();
}

Status Move(size_t nkeys, int repeats) {
  const std::vector<Key> keys = Keys(nkeys * 2);
  std::vector<double> move_ms, copy_ms, rows_moved;
  for (int rep = 0; rep < repeats; ++rep) {
    PSERVER_ASSIGN_OR_RETURN(auto c, kv::LocalCluster::Start(Options(2)));
    TableSpec spec;
    spec.name = "bench";
    PSERVER_ASSIGN_OR_RETURN(TableId table, c->worker(0).DeclareTable(spec));
    {
      KVWorker<float> kv(c->worker(0));
      constexpr size_t kChunk = 1 << 20;
      for (size_t first = 0; first < keys.size(); first += kChunk) {
        const size_t last = std::min(keys.size(), first + kChunk);
        std::vector<Key> part(keys.begin() + static_cast<std::ptrdiff_t>(first), keys.begin() + static_cast<std::ptrdiff_t>(last));
        PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::move(part), std::vector<float>(last - first, 1.0f)));
        PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
      }
    }
    cluster::Scheduler& sched = *internal::NodeAccess::Scheduler(c->scheduler());
    const auto t0 = Clock::now();
    PSERVER_RETURN_IF_ERROR(sched.Drain(1, std::chrono::seconds(600)));
    move_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    PSERVER_ASSIGN_OR_RETURN(auto reports, sched.ChangeReports(std::chrono::seconds(10)));
    rows_moved.push_back(static_cast<double>(reports.back().copied.rows));
    // The bound: copying the moved rows' keys and values once in memory.
    const size_t bytes = reports.back().copied.rows * (sizeof(Key) + sizeof(float));
    std::vector<char> src(bytes, 1), dst(bytes);
    const auto c0 = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    copy_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c0).count());
    if (dst[bytes / 2] != 1) return Status::Internal("memcpy");
    PSERVER_RETURN_IF_ERROR(c->RunWorkers([](Node&) { return Status::Ok(); }));
  }
  std::vector<double> ratio;
  for (size_t i = 0; i < move_ms.size(); ++i) ratio.push_back(move_ms[i] / copy_ms[i]);
  fmt::print("drain of a server holding {} rows (of {} stored): rows moved {}\n", Range(rows_moved, "{:.0f}"),
             keys.size(), Range(rows_moved, "{:.0f}"));
  fmt::print("move {} ms; memcpy of their keys and values {} ms; ratio {}\n", Range(move_ms, "{:.0f}"),
             Range(copy_ms, "{:.1f}"), Range(ratio, "{:.0f}"));
  return Status::Ok();
}

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

Status CheckpointCost(uint32_t servers, size_t nkeys, int repeats) {
  const std::vector<Key> keys = Keys(nkeys);
  const std::vector<Key> hot(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(10000, nkeys)));
  TableSpec spec;
  spec.name = "bench";
  spec.updater = UpdaterSpec{"adagrad", {{"lr", 0.1}}};
  std::vector<double> write_ms, raw_write_ms, stall_ms, push_ms, resume_ms, raw_read_ms, mbytes;
  for (int rep = 0; rep < repeats; ++rep) {
    const std::string dir =
        (std::filesystem::temp_directory_path() / fmt::format("pserver_checkpoint_bench_{}_{}", ::getpid(), rep)).string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
      // The scheduler takes Checkpoint's command at its loop's next turn, up to one heartbeat
      // interval later (500 ms by default); `pserver checkpoint` does not wait so. A short
      // interval keeps that wait out of the figure.
      kv::LocalClusterOptions options = Options(servers);
      options.node.heartbeat_interval = std::chrono::milliseconds(5);
      PSERVER_ASSIGN_OR_RETURN(auto c, kv::LocalCluster::Start(options, [](Node& n) {
                                 return std::static_pointer_cast<void>(std::make_shared<KVServer<float>>(n));
                               }));
      PSERVER_ASSIGN_OR_RETURN(TableId table, c->worker(0).DeclareTable(spec));
      {
        KVWorker<float> kv(c->worker(0));
        constexpr size_t kChunk = 1 << 20;
        for (size_t first = 0; first < keys.size(); first += kChunk) {
          const size_t last = std::min(keys.size(), first + kChunk);
          std::vector<Key> part(keys.begin() + static_cast<std::ptrdiff_t>(first),
                                keys.begin() + static_cast<std::ptrdiff_t>(last));
          PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(table, std::move(part), std::vector<float>(last - first, 0.5f)));
          PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
        }
      }
      Pusher pusher;
      Status pushed;
      std::thread push_thread([&] { pushed = pusher.Run(c->worker(0), table, hot); });
      cluster::Scheduler& sched = *internal::NodeAccess::Scheduler(c->scheduler());
      const auto t0 = Clock::now();
      Result<std::string> done = sched.Checkpoint(dir, std::chrono::seconds(1800));
      const auto t1 = Clock::now();
      pusher.stop = true;
      push_thread.join();
      PSERVER_RETURN_IF_ERROR(done.status());
      PSERVER_RETURN_IF_ERROR(pushed);
      write_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      stall_ms.push_back(pusher.LongestDuring(t0, t1));
      push_ms.push_back(pusher.MedianPush());
      PSERVER_RETURN_IF_ERROR(c->RunWorkers([](Node&) { return Status::Ok(); }));
    }
    PSERVER_ASSIGN_OR_RETURN(cluster::FoundCheckpoint found, cluster::LatestCheckpoint(dir));
    uint64_t bytes = 0;
    for (const auto& f : found.manifest.files) bytes += f.bytes;
    mbytes.push_back(static_cast<double>(bytes) / 1e6);
    {  // the bound of the writing: as many bytes, one file, one writer
      const std::string buffer(bytes, 'x');
      const auto t0 = Clock::now();
      PSERVER_RETURN_IF_ERROR(WriteFileAtomically(dir + "/raw.bin", buffer));
      raw_write_ms.push_back(MsSince(t0));
      std::filesystem::remove(dir + "/raw.bin");
    }
    {  // the bound of the reading: every file's bytes, once
      std::vector<char> buffer(size_t{1} << 20);
      const auto t0 = Clock::now();
      for (const auto& f : found.manifest.files) {
        std::ifstream in(found.directory + "/" + f.name, std::ios::binary);
        while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
        }
      }
      raw_read_ms.push_back(MsSince(t0));
    }
    {
      ServerOptions resume;
      resume.resume_from = dir;
      PSERVER_ASSIGN_OR_RETURN(auto c, kv::LocalCluster::Start(Options(servers), [resume](Node& n) {
                                 return std::static_pointer_cast<void>(std::make_shared<KVServer<float>>(n, resume));
                               }));
      const auto t0 = Clock::now();
      PSERVER_ASSIGN_OR_RETURN(TableId table, c->worker(0).DeclareTable(spec));
      resume_ms.push_back(MsSince(t0));
      const std::vector<size_t> rows = RowsPerServer(*c, table);
      if (std::accumulate(rows.begin(), rows.end(), size_t{0}) != keys.size()) {
        return Status::Internal(fmt::format("the resumed job holds {} rows, not {}",
                                            std::accumulate(rows.begin(), rows.end(), size_t{0}), keys.size()));
      }
      PSERVER_RETURN_IF_ERROR(c->RunWorkers([](Node&) { return Status::Ok(); }));
    }
    std::filesystem::remove_all(dir);
  }
  std::vector<double> write_ratio, read_ratio, stall_ratio;
  for (size_t i = 0; i < write_ms.size(); ++i) {
    write_ratio.push_back(write_ms[i] / raw_write_ms[i]);
    read_ratio.push_back(resume_ms[i] / raw_read_ms[i]);
    stall_ratio.push_back(stall_ms[i] / push_ms[i]);
  }
  fmt::print("checkpoint of {} rows (AdaGrad) on {} servers: {} MB\n", keys.size(), servers, Range(mbytes, "{:.1f}"));
  fmt::print("checkpoint {} ms; one file of as many bytes {} ms; ratio {}\n", Range(write_ms, "{:.0f}"),
             Range(raw_write_ms, "{:.0f}"), Range(write_ratio, "{:.2f}"));
  fmt::print("longest push during it {} ms; median push {} ms; ratio {}\n", Range(stall_ms, "{:.1f}"),
             Range(push_ms, "{:.2f}"), Range(stall_ratio, "{:.1f}"));
  fmt::print("resume (declaring the table) {} ms; reading the files {} ms; ratio {}\n", Range(resume_ms, "{:.0f}"),
             Range(raw_read_ms, "{:.0f}"), Range(read_ratio, "{:.2f}"));
  return Status::Ok();
}

}  // namespace
}  // namespace pserver

int main(int argc, char** argv) {
  CLI::App app{"membership_bench: what joins, leaves and checkpoints cost on a local cluster"};
  std::string mode = "growth";
  uint32_t from = 2, to = 8;
  size_t keys = 200000, move_keys = 10000000;
  int repeats = 3;
  app.add_option("--mode", mode, "growth, move or checkpoint")->check(CLI::IsMember({"growth", "move", "checkpoint"}));
  app.add_option("--from", from, "Servers at the start (growth), servers (checkpoint)")->check(CLI::Range(1, 64));
  app.add_option("--to", to, "Servers at the largest (growth)")->check(CLI::Range(2, 64));
  app.add_option("--keys", keys, "Keys stored (growth)")->check(CLI::Range(1000, 100000000));
  app.add_option("--move-keys", move_keys, "Keys the drained server holds (move), keys stored (checkpoint)")->check(CLI::Range(1000, 100000000));
  app.add_option("--repeats", repeats, "Runs (median and range reported)")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  pserver::SetLogLevel(std::getenv("PSERVER_BENCH_LOG") ? std::getenv("PSERVER_BENCH_LOG") : "warn");
  pserver::Status s = mode == "growth" ? pserver::Growth(from, std::max(to, from + 1), keys, repeats)
                      : mode == "move" ? pserver::Move(move_keys, repeats)
                                       : pserver::CheckpointCost(from, move_keys, repeats);
  if (!s.ok()) {
    fmt::print(stderr, "membership_bench: {}\n", s.ToString());
    return 1;
  }
  return 0;
}
