# Unit and in-process tests of src/cluster and src/kv (and of the in-process cluster, kv/local_cluster.h).
# cluster/cluster_test_util.h holds their shared helpers (an inproc job, an observing transport).
# The label "concurrency" marks the tests whose threads share state: scripts/test.sh runs them
# under ThreadSanitizer.
pserver_add_test(scheduler_test SOURCES cluster/scheduler_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(node_runtime_test SOURCES cluster/node_runtime_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(launch_env_test SOURCES cluster/launch_env_test.cc DEPS pserver_testing LABELS unit)
pserver_add_test(checkpoint_manifest_test SOURCES cluster/checkpoint_manifest_test.cc DEPS pserver_testing LABELS unit)
pserver_add_test(kv_server_core_test SOURCES kv/server/kv_server_core_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(consistency_test SOURCES kv/worker/consistency_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(kv_worker_test SOURCES kv/worker/kv_worker_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(table_catalog_test SOURCES kv/table_catalog_test.cc DEPS pserver_testing LABELS unit)
pserver_add_test(view_change_test SOURCES kv/view_change_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(membership_test SOURCES kv/membership_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(replication_test SOURCES kv/replication_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(checkpoint_file_test SOURCES kv/server/checkpoint_file_test.cc DEPS pserver_testing LABELS unit)
pserver_add_test(checkpoint_test SOURCES kv/checkpoint_test.cc DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(local_cluster_test SOURCES kv/local_cluster_test.cc
                 DEPS pserver_testing LABELS unit concurrency)
pserver_add_test(filtered_cluster_test SOURCES kv/filter/filtered_cluster_test.cc
                 DEPS pserver_testing LABELS unit concurrency)
# Every node's /metrics over HTTP, counters checked against what the workers did (docs/metrics.md).
pserver_add_test(metrics_test SOURCES kv/metrics_test.cc DEPS pserver_testing LABELS unit)
