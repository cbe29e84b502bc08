#!/usr/bin/env bash
# install_test: `cmake --install` gives a user what docs/install.md promises.
#
#   install_test.sh BUILD_DIR SOURCE_DIR CXX [PYTHON PYTHON_DIR]
#
# Installs BUILD_DIR into a fresh prefix, then, as a user would, with nothing of the build tree:
#   1. every installed header compiles on its own include path (no internal header leaks out);
#   2. examples/cpp, a stand-alone CMake project, finds the package (find_package(pserver)),
#      builds against pserver::pserver, and its workers' sums are exact under the installed
#      `pserver launch` (2 servers, 3 workers);
#   3. the same program built with nothing but `pkg-config --cflags --libs pserver` runs too;
#   4. the package refuses a version it is not (find_package(pserver 99));
#   5. with PYTHON: the Python package, installed in PREFIX/PYTHON_DIR, imports from there and
#      its check worker passes under the installed `pserver launch`.
set -euo pipefail
build=$1 source=$2 cxx=$3 python=${4:-} python_dir=${5:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/pserver_install_test.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fail() { echo "install_test: FAILED: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
for f in bin/pserver include/pserver/pserver.h lib/cmake/pserver/pserverConfig.cmake lib/pkgconfig/pserver.pc; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done
echo "install_test: installed into $prefix"

# 1. Each public header stands alone: a translation unit of its own includes it first.
headers=0
for h in "$prefix"/include/pserver/*.h; do
  echo "#include \"pserver/$(basename "$h")\"" >"$work/header.cc"
  "$cxx" -std=c++20 -fsyntax-only -I"$prefix/include" "$work/header.cc" ||
    fail "the installed pserver/$(basename "$h") does not compile on its own"
  headers=$((headers + 1))
done
echo "install_test: each of $headers installed headers compiles on its own"

run_job() {  # run_job NAME PROGRAM SERVERS WORKERS: the job's sums must be exact on every worker
  local name=$1 program=$2 servers=$3 workers=$4 rc=0
  "$prefix/bin/pserver" launch --servers "$servers" --workers "$workers" -- "$program" 20000 \
    >"$work/$name.log" 2>&1 || rc=$?
  local exact
  exact=$(grep -c "20000 sums of $workers workers' pushes are exact" "$work/$name.log" || true)
  if [ "$rc" != 0 ] || [ "$exact" != "$workers" ]; then
    cat "$work/$name.log"
    fail "$name: pserver launch exited $rc with $exact of $workers workers exact"
  fi
  echo "install_test: $name: $servers servers, $workers workers, every sum exact"
}

# 2. find_package(pserver) from a stand-alone project.
cmake -S "$source/examples/cpp" -B "$work/cmake_example" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "configuring examples/cpp"; }
cmake --build "$work/cmake_example" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "building examples/cpp"; }
run_job find_package "$work/cmake_example/sum_worker" 2 3

# 3. pkg-config alone.
flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs pserver) || fail "pkg-config pserver"
# shellcheck disable=SC2086  # the flags are words
"$cxx" -o "$work/sum_worker_pc" "$source/examples/cpp/sum_worker.cc" $flags || fail "building with pkg-config's flags"
run_job pkg_config "$work/sum_worker_pc" 1 2

# 4. A version the package is not.
mkdir -p "$work/too_new"
cat >"$work/too_new/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(too_new LANGUAGES CXX)
find_package(pserver 99 REQUIRED)
CMAKE
if cmake -S "$work/too_new" -B "$work/too_new/build" -DCMAKE_PREFIX_PATH="$prefix" >"$work/too_new.log" 2>&1; then
  fail "find_package(pserver 99) found version $(grep -o 'set(PACKAGE_VERSION "[^"]*' "$prefix/lib/cmake/pserver/pserverConfigVersion.cmake")"
fi
grep -q "not accepted" "$work/too_new.log" && grep -q "pserverConfig.cmake, version: " "$work/too_new.log" || { cat "$work/too_new.log"; fail "find_package(pserver 99) failed for another reason"; }
echo "install_test: find_package(pserver 99) refused"

if [ -n "$python" ]; then
  [ -x "$python" ] || fail "the Python interpreter '$python' is not a program"
  export PYTHONPATH="$prefix/$python_dir"
  where=$(cd "$work" && "$python" -c 'import pserver; print(pserver.__file__)') || fail "import pserver from $PYTHONPATH"
  case "$where" in "$prefix"/*) ;; *) fail "import pserver found $where, not the installed package";; esac
  rc=0
  "$prefix/bin/pserver" launch --servers 1 --workers 2 -- "$python" "$source/python/tests/check_worker.py" \
    >"$work/python.log" 2>&1 || rc=$?
  passed=$(grep -c "every check passed" "$work/python.log" || true)
  [ "$rc" = 0 ] && [ "$passed" = 2 ] || { cat "$work/python.log"; fail "the installed Python package: exit $rc"; }
  echo "install_test: the Python package imports from $prefix/$python_dir and its checks pass"
fi
echo "install_test: passed"
