# Unit tests of the servers' per-table storage: SparseRows, ApplyPool and TableStore (its
# requests; its rows listed, inserted and erased).
pserver_add_test(sparse_rows_test SOURCES kv/server/sparse_rows_test.cc DEPS pserver_kv LABELS unit)
pserver_add_test(apply_pool_test SOURCES kv/server/apply_pool_test.cc DEPS pserver_kv LABELS unit concurrency)
pserver_add_test(table_store_test SOURCES kv/server/table_store_test.cc DEPS pserver_kv LABELS unit)
pserver_add_test(table_store_rows_test SOURCES kv/server/table_store_rows_test.cc DEPS pserver_kv LABELS unit)
foreach(t sparse_rows_test apply_pool_test table_store_test table_store_rows_test)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR})  # testing/test_util.h
endforeach()
