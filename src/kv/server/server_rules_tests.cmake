# Unit tests of the server-side update rules (src/kv/server/updaters.*).
pserver_add_test(updaters_test SOURCES kv/server/updaters_test.cc DEPS pserver_kv LABELS unit)
