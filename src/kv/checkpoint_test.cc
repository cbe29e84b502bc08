// Checkpoints of a running job and jobs resumed from them (docs/durability.md): the scheduler
// orders every server to write its file and writes the manifest; a job resumed from it -- on
// another number of servers -- holds every value bit-identical, and its update-rule state too (the
// same next push gives the same values as in the job that went on); periodic checkpoints; a
// resume without a checkpoint, or with another spec, refuses the table with an error saying so.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "cluster/checkpoint_manifest.h"
#include "cluster/cluster_test_util.h"
#include "cluster/key_placement.h"
#include "cluster/scheduler.h"
#include "kv/node_access.h"
#include "kv/server/checkpoint_file.h"
#include "pserver/atomic_file.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::InprocJob;
using std::chrono::seconds;

// A job over the inproc transport whose servers serve floats (resuming from `resume_from`).
struct Job {
  Job(uint32_t servers, const std::string& resume_from = "", NodeOptions base = pserver::testing::FastHeartbeats())
      : job(base) {
    EXPECT_OK(job.StartScheduler(servers, 1));
    job.RunScheduler();
    std::vector<NodeOptions> options;
    for (uint32_t i = 0; i < servers; ++i) options.push_back(job.OptionsFor(pserver::testing::Server(i)));
    options.push_back(job.OptionsFor(pserver::testing::Worker(0)));
    for (const Status& s : job.StartNodes(options)) EXPECT_OK(s);
    ServerOptions so;
    so.resume_from = resume_from;
    for (uint32_t i = 0; i < servers; ++i) {
      Node* node = job.node(i);
      this->servers.push_back(std::make_unique<KVServer<float>>(*node, so));
      job.Spawn([node] { return node->Run(); });
    }
    worker = job.node(servers);
  }
  cluster::Scheduler& scheduler() { return *internal::NodeAccess::Scheduler(job.scheduler()); }

  InprocJob job;
  std::vector<std::unique_ptr<KVServer<float>>> servers;
  Node* worker = nullptr;
};

std::vector<TableSpec> Specs() {
  TableSpec ada{.name = "ada", .width = 2};
  ada.updater = UpdaterSpec{"adagrad", {{"lr", 0.5}}};
  TableSpec sums{.name = "sums"};
  TableSpec dense{.name = "dense", .placement = KeyPlacement::kRange, .key_range = {0, 999},
                  .storage = StorageKind::kDense};
  return {ada, sums, dense};
}

// The keys of table `t`: random sparse keys, or the dense table's ids.
std::vector<Key> KeysOf(size_t t, uint64_t seed) {
  std::vector<Key> keys;
  if (t == 2) {
    for (Key k = 0; k < 1000; k += 3) keys.push_back(k);
    return keys;
  }
  std::mt19937_64 rng(seed + t);
  for (int i = 0; i < 700; ++i) keys.push_back(rng());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

// Pushes round `r` of seeded gradients to every table.
Status PushRound(KVWorker<float>& kv, const std::vector<TableId>& tables, uint64_t seed, int r) {
  for (size_t t = 0; t < tables.size(); ++t) {
    const std::vector<Key> keys = KeysOf(t, seed);
    const size_t width = Specs()[t].width;
    std::vector<float> g(keys.size() * width);
    for (size_t i = 0; i < g.size(); ++i) {
      g[i] = static_cast<float>(cluster::MixKey(seed ^ (uint64_t(r) << 32) ^ (t << 20) ^ i) % 1000) / 37.0f - 13.0f;
    }
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Push(tables[t], std::vector<Key>(keys), std::move(g)));
    PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
  }
  return Status::Ok();
}

Result<std::vector<std::vector<float>>> PullAll(KVWorker<float>& kv, const std::vector<TableId>& tables, uint64_t seed) {
  std::vector<std::vector<float>> out;
  for (size_t t = 0; t < tables.size(); ++t) {
    SharedArray<float> got;
    PSERVER_ASSIGN_OR_RETURN(Timestamp ts, kv.Pull(tables[t], KeysOf(t, seed), &got));
    PSERVER_RETURN_IF_ERROR(kv.Wait(ts));
    out.emplace_back(got.begin(), got.end());
  }
  return out;
}

Result<std::vector<TableId>> DeclareAll(Node& worker) {
  std::vector<TableId> ids;
  for (const TableSpec& spec : Specs()) {
    PSERVER_ASSIGN_OR_RETURN(TableId id, worker.DeclareTable(spec));
    ids.push_back(id);
  }
  return ids;
}

// Bit for bit, so that -0.0 and 0.0, or two NaNs, are told apart too.
void ExpectBitIdentical(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want,
                        const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t t = 0; t < got.size(); ++t) {
    ASSERT_EQ(got[t].size(), want[t].size()) << what << ": table " << Specs()[t].name;
    EXPECT_EQ(std::memcmp(got[t].data(), want[t].data(), got[t].size() * sizeof(float)), 0)
        << what << ": table " << Specs()[t].name << " differs";
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (std::filesystem::temp_directory_path() /
            ("pserver_checkpoint_" + std::string(info->name()) + "_" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CheckpointTest, AJobResumedOnMoreServersHoldsEveryValueAndStateBitIdentical) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::vector<std::vector<float>> at_checkpoint, after_one_more;
  {
    Job a(2);
    Result<std::vector<TableId>> tables = DeclareAll(*a.worker);
    ASSERT_OK(tables);
    KVWorker<float> kv(*a.worker);
    for (int r = 0; r < 5; ++r) ASSERT_OK(PushRound(kv, *tables, seed, r));
    Result<std::string> summary = a.scheduler().Checkpoint(dir_, seconds(60));
    ASSERT_OK(summary);
    EXPECT_NE(summary->find("checkpoint " + cluster::CheckpointDirectory(dir_, 1) + " complete: 2 files"),
              std::string::npos)
        << *summary;
    Result<std::vector<std::vector<float>>> pulled = PullAll(kv, *tables, seed);
    ASSERT_OK(pulled);
    at_checkpoint = std::move(*pulled);
    ASSERT_OK(PushRound(kv, *tables, seed, 5));  // after the checkpoint: not in it
    pulled = PullAll(kv, *tables, seed);
    ASSERT_OK(pulled);
    after_one_more = std::move(*pulled);
    ASSERT_OK(a.worker->Finalize());
  }
  Result<cluster::FoundCheckpoint> found = cluster::LatestCheckpoint(dir_);
  ASSERT_OK(found);
  EXPECT_EQ(found->manifest.files.size(), 2u);

  Job b(3, dir_);
  Result<std::vector<TableId>> tables = DeclareAll(*b.worker);
  ASSERT_OK(tables);
  KVWorker<float> kv(*b.worker);
  Result<std::vector<std::vector<float>>> resumed = PullAll(kv, *tables, seed);
  ASSERT_OK(resumed);
  ExpectBitIdentical(*resumed, at_checkpoint, "values at the checkpoint");
  // The same push as the first job made after its checkpoint: AdaGrad's accumulators came back too.
  ASSERT_OK(PushRound(kv, *tables, seed, 5));
  resumed = PullAll(kv, *tables, seed);
  ASSERT_OK(resumed);
  ExpectBitIdentical(*resumed, after_one_more, "values after one more push");
  ASSERT_OK(b.worker->Finalize());
}

TEST_F(CheckpointTest, APeriodicCheckpointComesWithoutBeingAsked) {
  NodeOptions base = pserver::testing::FastHeartbeats();
  base.checkpoint_dir = dir_;
  base.checkpoint_interval = std::chrono::milliseconds(50);
  Job job(2, "", base);
  Result<std::vector<TableId>> tables = DeclareAll(*job.worker);
  ASSERT_OK(tables);
  KVWorker<float> kv(*job.worker);
  ASSERT_OK(PushRound(kv, *tables, 1, 0));
  // Two more checkpoints begin after the push was answered: the first of them is complete once
  // the second began (they run one at a time), and it holds the pushed rows.
  Result<std::vector<uint64_t>> numbers = cluster::ListCheckpoints(dir_);
  ASSERT_OK(numbers);
  const uint64_t before = numbers->empty() ? 0 : numbers->back();
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  while (numbers.ok() && (numbers->empty() || numbers->back() < before + 2) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a poll of the directory
    numbers = cluster::ListCheckpoints(dir_);
  }
  ASSERT_OK(numbers);
  ASSERT_GE(numbers->back(), before + 2) << "no periodic checkpoints";
  Result<cluster::FoundCheckpoint> found = cluster::LatestCheckpoint(dir_);
  ASSERT_OK(found);
  EXPECT_GE(found->directory, cluster::CheckpointDirectory(dir_, before + 1));
  EXPECT_EQ(found->manifest.files.size(), 2u);
  uint64_t rows = 0;
  for (const auto& f : found->manifest.files) rows += f.rows;
  EXPECT_EQ(rows, KeysOf(0, 1).size() + KeysOf(1, 1).size() + 1000) << "the dense table holds its whole range";
  ASSERT_OK(job.worker->Finalize());
}

// A worker asks for the checkpoint itself (Node::Checkpoint, over its own connection); a scratch
// table (TableSpec::checkpointed false) is left out of it, and a resumed job starts it empty,
// while the other tables come back.
TEST_F(CheckpointTest, AWorkerAsksForACheckpointThatLeavesScratchTablesOut) {
  const uint64_t seed = 7;
  TableSpec scratch{.name = "scratch", .checkpointed = false};
  const std::vector<Key> scratch_keys = {1, 2, 3};
  std::vector<std::vector<float>> at_checkpoint;
  {
    Job a(2);
    Result<std::vector<TableId>> tables = DeclareAll(*a.worker);
    ASSERT_OK(tables);
    Result<TableId> s = a.worker->DeclareTable(scratch);
    ASSERT_OK(s);
    KVWorker<float> kv(*a.worker);
    ASSERT_OK(PushRound(kv, *tables, seed, 0));
    Result<Timestamp> ts = kv.Push(*s, std::vector<Key>(scratch_keys), std::vector<float>{1, 2, 3});
    ASSERT_OK(ts);
    ASSERT_OK(kv.Wait(*ts));
    Result<std::string> summary = a.worker->Checkpoint(dir_, seconds(60));
    ASSERT_OK(summary);
    EXPECT_NE(summary->find(cluster::CheckpointDirectory(dir_, 1) + " complete"), std::string::npos) << *summary;
    Result<std::vector<std::vector<float>>> pulled = PullAll(kv, *tables, seed);
    ASSERT_OK(pulled);
    at_checkpoint = std::move(*pulled);
    ASSERT_OK(a.worker->Finalize());
  }
  Result<cluster::FoundCheckpoint> found = cluster::LatestCheckpoint(dir_);
  ASSERT_OK(found);
  uint64_t rows = 0;
  for (const auto& f : found->manifest.files) rows += f.rows;
  EXPECT_EQ(rows, KeysOf(0, seed).size() + KeysOf(1, seed).size() + 1000) << "only the checkpointed tables' rows";

  Job b(1, dir_);
  Result<std::vector<TableId>> tables = DeclareAll(*b.worker);
  ASSERT_OK(tables);
  Result<TableId> s = b.worker->DeclareTable(scratch);
  ASSERT_OK(s) << "a scratch table is no part of the checkpoint";
  KVWorker<float> kv(*b.worker);
  Result<std::vector<std::vector<float>>> resumed = PullAll(kv, *tables, seed);
  ASSERT_OK(resumed);
  ExpectBitIdentical(*resumed, at_checkpoint, "values at the checkpoint");
  SharedArray<float> got;
  Result<Timestamp> ts = kv.Pull(*s, std::vector<Key>(scratch_keys), &got);
  ASSERT_OK(ts);
  ASSERT_OK(kv.Wait(*ts));
  EXPECT_EQ(std::vector<float>(got.begin(), got.end()), std::vector<float>(3, 0.0f)) << "the scratch table starts empty";
  ASSERT_OK(b.worker->Finalize());
}

TEST_F(CheckpointTest, AMissingDirectoryIsRefusedByName) {
  Job job(1);
  ASSERT_OK(DeclareAll(*job.worker).status());
  Result<std::string> r = job.scheduler().Checkpoint(dir_ + "/absent", seconds(60));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_NE(r.status().message().find(dir_ + "/absent"), std::string::npos) << r.status().ToString();
  ASSERT_OK(job.worker->Finalize());
}

TEST_F(CheckpointTest, ResumingWithoutACheckpointOrWithAnotherSpecRefusesTheTable) {
  {
    Job job(1, dir_);
    Result<TableId> t = job.worker->DeclareTable(Specs()[1]);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("no complete checkpoint in " + dir_), std::string::npos) << t.status().ToString();
    ASSERT_OK(job.worker->Finalize());
  }
  {
    Job job(1);
    ASSERT_OK(DeclareAll(*job.worker).status());
    ASSERT_OK(job.scheduler().Checkpoint(dir_, seconds(60)).status());
    ASSERT_OK(job.worker->Finalize());
  }
  Job job(1, dir_);
  TableSpec other = Specs()[0];
  other.updater = UpdaterSpec{"sgd", {}};
  Result<TableId> t = job.worker->DeclareTable(other);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("holds table 'ada' with another spec"), std::string::npos) << t.status().ToString();
  ASSERT_OK(job.worker->Finalize());
}

TEST_F(CheckpointTest, ACheckpointWithoutTheTableOrWithAKeyTwiceIsRefused) {
  {
    Job job(2);
    ASSERT_OK(DeclareAll(*job.worker).status());
    ASSERT_OK(job.scheduler().Checkpoint(dir_, seconds(60)).status());
    ASSERT_OK(job.worker->Finalize());
  }
  {
    Job job(2, dir_);
    Result<TableId> t = job.worker->DeclareTable(TableSpec{.name = "other"});
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("holds no table 'other' (it holds 'ada', 'dense', 'sums')"), std::string::npos)
        << t.status().ToString();
    ASSERT_OK(job.worker->Finalize());
  }
  // A checkpoint made by hand whose two files both hold key 5 of table 'sums'.
  const std::string bad = dir_ + "/bad";
  const std::string directory = cluster::CheckpointDirectory(bad, 1);
  std::filesystem::create_directories(directory);
  cluster::CheckpointManifest manifest;
  for (const char* name : {"server-0.psckpt", "server-1.psckpt"}) {
    CheckpointTable t;
    t.spec = Specs()[1];
    t.rows.width = 1;
    t.rows.keys = SharedArray<Key>(std::vector<Key>{5});
    t.rows.values = transport::AsBytes(SharedArray<float>(std::vector<float>{1.0f}));
    Result<std::unique_ptr<AtomicFileWriter>> out = AtomicFileWriter::Open(directory + "/" + name);
    ASSERT_OK(out);
    Result<CheckpointFileInfo> info = WriteCheckpointFile(**out, {t});
    ASSERT_OK(info);
    manifest.files.push_back({name, info->bytes, info->rows, info->checksum});
  }
  ASSERT_OK(WriteFileAtomically(directory + "/" + cluster::kManifestName, cluster::EncodeManifest(manifest)));
  Job job(1, bad);
  Result<TableId> t = job.worker->DeclareTable(Specs()[1]);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("key 5 is in two of its files"), std::string::npos)
      << t.status().ToString();
  ASSERT_OK(job.worker->Finalize());
}

}  // namespace
}  // namespace pserver::kv
