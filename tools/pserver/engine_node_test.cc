// Unit tests of `pserver node`'s reading of cluster engines' environments (engine_node.h); the
// whole command runs under a real mpirun, and under a hand-made srun environment, in
// tests/engine/engine_test.sh.
#include "pserver/engine_node.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace pserver::tools {
namespace {

// An environment of the test's own.
GetEnv Env(std::map<std::string, std::string> vars) {
  auto owned = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [owned](const char* name) -> const char* {
    auto it = owned->find(name);
    return it == owned->end() ? nullptr : it->second.c_str();
  };
}

TEST(EngineNodeTest, ReadsOpenMpi) {
  Result<EngineProcess> p = EngineProcessFromEnvironment(
      Env({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "6"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "6"},
           {"OMPI_MCA_ess_base_jobid", "1685520385"},
           // mpirun inside a SLURM allocation: Open MPI's variables win.
           {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_STEP_ID", "0"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->engine, "Open MPI");
  EXPECT_EQ(p->rank, 3);
  EXPECT_EQ(p->size, 6);
  EXPECT_TRUE(p->one_host);
  EXPECT_EQ(p->job_id, "ompi-1685520385");
}

TEST(EngineNodeTest, TwoOpenMpiJobsOfOneJobIdGetTwoAddressFiles) {
  // Open MPI's job id comes from mpirun's pid, which repeats; mpirun's own address does not.
  auto job = [](const char* hnp) {
    return EngineProcessFromEnvironment(Env({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                             {"OMPI_MCA_ess_base_jobid", "77"}, {"OMPI_MCA_orte_hnp_uri", hnp}}));
  };
  Result<EngineProcess> a = job("76.0;tcp://10.0.0.1:46157");
  Result<EngineProcess> b = job("76.0;tcp://10.0.0.1:51234");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->job_id, b->job_id);
  EXPECT_EQ(a->job_id.rfind("ompi-77-", 0), 0u) << a->job_id;
  EXPECT_EQ(*DefaultAddressFile(*a, "/d"), *DefaultAddressFile(*job("76.0;tcp://10.0.0.1:46157"), "/d"));
}

TEST(EngineNodeTest, OpenMpiOverSeveralHostsAndWithoutJobId) {
  Result<EngineProcess> p = EngineProcessFromEnvironment(
      Env({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
           {"PMIX_NAMESPACE", "ns/7"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->one_host);
  EXPECT_EQ(p->job_id, "ompi-ns/7");
  Result<std::string> file = DefaultAddressFile(*p, "/shared");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, "/shared/pserver-ompi-ns_7.address");  // nothing of the id leaves the directory
}

TEST(EngineNodeTest, ReadsAnSrunStep) {
  Result<EngineProcess> p = EngineProcessFromEnvironment(
      Env({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "5"}, {"SLURM_STEP_ID", "2"}, {"SLURM_JOB_ID", "4711"},
           {"SLURM_STEP_NUM_NODES", "1"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->engine, "SLURM");
  EXPECT_EQ(p->rank, 1);
  EXPECT_EQ(p->size, 5);
  EXPECT_TRUE(p->one_host);
  EXPECT_EQ(p->job_id, "slurm-4711.2");
}

TEST(EngineNodeTest, RefusesASlurmBatchScript) {
  Result<EngineProcess> p =
      EngineProcessFromEnvironment(Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "5"}, {"SLURM_JOB_ID", "4711"}}));
  ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("srun pserver node"), std::string::npos) << p.status();
}

TEST(EngineNodeTest, PmiHasNoJobIdSoTheFileMustBeNamed) {
  Result<EngineProcess> p = EngineProcessFromEnvironment(Env({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->engine, "PMI");
  EXPECT_FALSE(p->one_host);
  Result<std::string> file = DefaultAddressFile(*p, ".");
  ASSERT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find("--address-file"), std::string::npos) << file.status();
}

TEST(EngineNodeTest, NamesTheVariableThatIsWrong) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string named;
  };
  const Case cases[] = {
      {{{"OMPI_COMM_WORLD_RANK", "0"}}, "OMPI_COMM_WORLD_SIZE is not set"},
      {{{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", ""}}, "OMPI_COMM_WORLD_SIZE is set but empty"},
      {{{"OMPI_COMM_WORLD_RANK", "x"}, {"OMPI_COMM_WORLD_SIZE", "4"}}, "OMPI_COMM_WORLD_RANK='x'"},
      {{{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}}, "OMPI_COMM_WORLD_RANK='4' is not a number from 0 to 3"},
      {{{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4 "}}, "OMPI_COMM_WORLD_SIZE='4 '"},
      {{{"PMI_RANK", "-1"}, {"PMI_SIZE", "4"}}, "PMI_RANK='-1'"},
      {{{"SLURM_PROCID", "0"}, {"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "0"}}, "SLURM_NTASKS='0'"},
  };
  for (const Case& c : cases) {
    Result<EngineProcess> p = EngineProcessFromEnvironment(Env(c.env));
    ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument) << c.named;
    EXPECT_NE(p.status().message().find(c.named), std::string::npos) << p.status();
  }
}

TEST(EngineNodeTest, SaysWhenNoEngineIsThere) {
  Result<EngineProcess> p = EngineProcessFromEnvironment(Env({{"PATH", "/usr/bin"}}));
  ASSERT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_NE(p.status().message().find("pserver launch"), std::string::npos) << p.status();
}

TEST(EngineNodeTest, RankZeroSchedulesThenServersThenWorkers) {
  EngineProcess p{.engine = "Open MPI", .rank = 0, .size = 6, .one_host = true, .job_id = "j"};
  const Role want_role[] = {Role::kScheduler, Role::kServer, Role::kServer, Role::kWorker, Role::kWorker, Role::kWorker};
  const int want_hint[] = {0, 0, 1, 0, 1, 2};
  for (int rank = 0; rank < 6; ++rank) {
    p.rank = rank;
    Result<NodePlan> plan = PlanNode(p, 2);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->role, want_role[rank]) << "rank " << rank;
    EXPECT_EQ(plan->rank_hint, want_hint[rank]) << "rank " << rank;
    EXPECT_EQ(plan->num_servers, 2);
    EXPECT_EQ(plan->num_workers, 3);
  }
}

TEST(EngineNodeTest, RefusesAJobWithoutAWorker) {
  EngineProcess p{.engine = "SLURM", .rank = 0, .size = 3, .one_host = true, .job_id = "j"};
  Result<NodePlan> plan = PlanNode(p, 2);
  ASSERT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("SLURM started 3 processes: a job with --servers 2 needs at least 4"),
            std::string::npos)
      << plan.status();
  EXPECT_TRUE(PlanNode(p, 1).ok());
}

}  // namespace
}  // namespace pserver::tools
