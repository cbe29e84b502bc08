# Unit tests of src/base and src/transport (and the control-message codec).
#
# These tests use only the header-only testing/test_util.h, so they take the repository root as
# an include path instead of linking pserver_testing (which links the whole stack up to kv): a
# test of a lower layer builds and runs even while an upper layer does not.
pserver_add_test(wire_io_test SOURCES base/wire_io_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(status_test SOURCES base/status_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(atomic_file_test SOURCES base/atomic_file_test.cc DEPS pserver_base LABELS unit)
pserver_add_test(message_test SOURCES transport/message_test.cc DEPS pserver_transport LABELS unit)
pserver_add_test(inproc_transport_test SOURCES transport/inproc/inproc_transport_test.cc
  DEPS pserver_transport LABELS unit)
pserver_add_test(zmq_transport_test SOURCES transport/zmq/zmq_transport_test.cc
  DEPS pserver_transport LABELS unit TIMEOUT 120)
pserver_add_test(control_messages_test SOURCES cluster/control_messages_test.cc
  DEPS pserver_cluster LABELS unit)
foreach(t wire_io_test status_test atomic_file_test message_test inproc_transport_test zmq_transport_test control_messages_test)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR})
endforeach()

# libFuzzer target for the frame and control-body decoders (clang only; see docs/wire_format.md).
# The decoders' sources are compiled into the target itself so that they carry the fuzzer's
# coverage instrumentation; the libraries stay uninstrumented for every other binary.
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  option(PSERVER_BUILD_FUZZERS "Build the libFuzzer targets (clang only)" ON)
  if(PSERVER_BUILD_FUZZERS AND (NOT PSERVER_SANITIZE OR PSERVER_SANITIZE STREQUAL "address"))
    include(CheckCXXSourceCompiles)
    set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer,address")
    set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer,address")
    check_cxx_source_compiles("
      #include <cstddef>
      #include <cstdint>
      extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }"
      PSERVER_HAVE_LIBFUZZER)
    unset(CMAKE_REQUIRED_FLAGS)
    unset(CMAKE_REQUIRED_LINK_OPTIONS)
    if(PSERVER_HAVE_LIBFUZZER)
      add_executable(message_fuzz
        ${PROJECT_SOURCE_DIR}/fuzz/message_fuzz.cc
        base/status.cc
        base/types.cc
        base/wire_io.cc
        transport/message.cc
        transport/transport.cc
        cluster/control_messages.cc)
      target_compile_features(message_fuzz PRIVATE cxx_std_20)
      target_include_directories(message_fuzz PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
      target_compile_options(message_fuzz PRIVATE -fsanitize=fuzzer,address -fno-omit-frame-pointer)
      target_link_options(message_fuzz PRIVATE -fsanitize=fuzzer,address)
      target_link_libraries(message_fuzz PRIVATE fmt::fmt spdlog::spdlog Threads::Threads absl::inlined_vector pserver_warnings)
      # A short, deterministic run (fixed seed and run count) so that ctest catches regressions;
      # real fuzzing runs are started by hand (docs/wire_format.md).
      add_test(NAME message_fuzz_smoke COMMAND message_fuzz -seed=1 -runs=50000)
      set_tests_properties(message_fuzz_smoke PROPERTIES LABELS "unit;fuzz" TIMEOUT 120)
    else()
      message(STATUS "libFuzzer not found (install libclang-rt-dev): message_fuzz is not built")
    endif()
  endif()
endif()
