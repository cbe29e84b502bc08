# Unit tests of src/base and src/transport (and the control-message codec).
#
# These tests use only the header-only testing/test_util.h, so they take the repository root as
# an include path instead of linking pserver_testing (which links the whole stack up to kv): a
# test of a lower layer builds and runs even while an upper layer does not.
pserver_add_test(wire_io_test SOURCES base/wire_io_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(status_test SOURCES base/status_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(atomic_file_test SOURCES base/atomic_file_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(failpoint_test SOURCES base/failpoint_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(checksum_test SOURCES base/checksum_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(mutex_test SOURCES base/mutex_test.cc DEPS pserver_base LABELS unit concurrency)
pserver_add_test(clock_test SOURCES base/clock_test.cc DEPS pserver_base LABELS unit concurrency)
pserver_add_test(message_test SOURCES transport/message_test.cc DEPS pserver_transport LABELS unit)
# What only one transport does; the contract every transport shares is tested once, in
# testing/transport_conformance_test.cc.
pserver_add_test(inproc_transport_test SOURCES transport/inproc/inproc_transport_test.cc
  DEPS pserver_transport LABELS unit concurrency)
pserver_add_test(zmq_transport_test SOURCES transport/zmq/zmq_transport_test.cc
  DEPS pserver_transport LABELS unit concurrency TIMEOUT 120)
pserver_add_test(control_messages_test SOURCES cluster/control_messages_test.cc
  DEPS pserver_cluster LABELS unit)
foreach(t wire_io_test status_test atomic_file_test failpoint_test checksum_test message_test inproc_transport_test zmq_transport_test control_messages_test)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR})
endforeach()

# The fuzz target of the frame and control-body decoders, message_fuzz, lives in fuzz/ with the
# others (fuzz/CMakeLists.txt).
