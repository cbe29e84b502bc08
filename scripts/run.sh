#!/usr/bin/env bash
# The main job: installs dependencies, builds, fetches the SpamAssassin corpus (6,046 e-mails as
# a bag-of-words libsvm data set) and trains an L1-regularised logistic regression on it with
# the paper's delayed block proximal gradient method on a local cluster -- 1 scheduler,
# 1 server and 2 workers, each its own process -- printing a progress line per pass; then
# scores the held-out e-mails with the trained model.
# Extra arguments go to `pserver train linear` (see `pserver train linear --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
if ! command -v npm >/dev/null || ! command -v python3 >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y -qq --no-install-recommends npm python3
fi
"$root/scripts/build.sh"
"$root/scripts/fetch_spam.sh"
mkdir -p "$root/data/models"
"$build/tools/pserver/pserver" train linear --data "$root/data/spam/train.svm" --l1 1 --tau 4 --max-passes 600 \
  --filters keycache,zstd \
  --servers 1 --workers 2 --model-out "$root/data/models/spam.model" --report "$root/data/models/spam.json" \
  --cache-dir "$root/data/cache" "$@"
echo "held-out e-mails:"
"$build/tools/pserver/pserver" predict --model "$root/data/models/spam.model" --data "$root/data/spam/test.svm"
