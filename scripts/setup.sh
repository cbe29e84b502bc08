#!/usr/bin/env bash
# Installs pserver's build and test dependencies from Debian packages (Debian 12).
# Uses sudo when not run as root. Safe to run again: apt-get skips what is installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev cppzmq-dev libabsl-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libzstd-dev liblz4-dev libxxhash-dev libgtest-dev libgmock-dev libbenchmark-dev
  # the scheduler's store: etcd's JSON gateway over HTTP (cpp-httplib), and etcd for its tests
  libcpp-httplib-dev etcd-server
  iproute2 nftables procps
  # metrics: prometheus-cpp's registry and HTTP endpoint; the Prometheus server for their test
  prometheus-cpp-dev prometheus
  # the Kubernetes manifests' check (tests/engine/engine_test.sh)
  python3-yaml
  # `pserver node` under a real mpirun (tests/engine/engine_test.sh)
  openmpi-bin
  # the Python package (python/): pybind11 and the interpreter's headers; numpy at run time
  pybind11-dev python3-dev python3-numpy
  # clang builds of scripts/test.sh: libFuzzer, ASan+UBSan, TSan (runtimes in libclang-rt-14-dev;
  # llvm's llvm-symbolizer turns the sanitizers' addresses into file:line)
  clang libclang-rt-14-dev llvm
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
