#!/usr/bin/env bash
# The test command: installs dependencies, builds with warnings as errors, and runs every test
# (unit, integration, fault), ending with ctest's summary line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" -DPSERVER_WERROR=ON
"$root/scripts/check_tests_built.sh"

# Fuzzing under libFuzzer (clang): a build of its own whose code carries coverage
# instrumentation and AddressSanitizer, of the fuzz targets only (and what they link); each runs
# PSERVER_FUZZ_SECONDS (30) seconds over its checked-in corpus (new inputs go to a scratch
# folder; a crashing input is kept in the build folder as crash-*). The GCC build's ctest runs
# the same targets with the standalone driver (label "fuzz"). PSERVER_SKIP_LIBFUZZER=1 skips
# this stage. A failure here is reported before ctest runs, and fails the script after it.
fuzz_failed=0
if [ "${PSERVER_SKIP_LIBFUZZER:-0}" != 1 ]; then
  fuzz_start=$SECONDS
  fuzz_dir="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
  fuzz_targets=(message_fuzz libsvm_fuzz model_fuzz cache_fuzz)
  mkdir -p "$fuzz_dir"
  if cmake -S "$root" -B "$fuzz_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" -DPSERVER_FUZZ_ENGINE=libfuzzer \
      -DPSERVER_BUILD_TESTS=OFF -DPSERVER_BUILD_BENCHMARKS=OFF >"$fuzz_dir/configure.log" 2>&1 &&
    cmake --build "$fuzz_dir" --target "${fuzz_targets[@]}" -j "$(nproc)"; then
    for t in "${fuzz_targets[@]}"; do
      scratch=$(mktemp -d)
      if ! "$fuzz_dir/fuzz/$t" -max_total_time="${PSERVER_FUZZ_SECONDS:-30}" -seed=1 -timeout=10 \
          -rss_limit_mb=2048 -artifact_prefix="$fuzz_dir/crash-$t-" -print_final_stats=1 \
          "$scratch" "$root/fuzz/corpus/$t" >"$fuzz_dir/$t.log" 2>&1; then
        echo "test: libFuzzer found a failure in $t (input: $fuzz_dir/crash-$t-*):"
        tail -n 40 "$fuzz_dir/$t.log"
        fuzz_failed=1
      else
        echo "test: libFuzzer $t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$fuzz_dir/$t.log" | grep -o '[0-9]*$') runs, no failure"
      fi
      rm -rf "$scratch"
    done
  else
    echo "test: the libFuzzer build failed (configure log: $fuzz_dir/configure.log)"
    fuzz_failed=1
  fi
  echo "test: libFuzzer stage took $((SECONDS - fuzz_start)) s"
fi

cd "${BUILD_DIR:-$root/build}"
status=0
ctest --output-on-failure -j 2 "$@" || status=$?
if [ "$fuzz_failed" != 0 ] && [ "$status" = 0 ]; then status=1; fi
exit "$status"
