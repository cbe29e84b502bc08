#!/usr/bin/env python3
"""Helpers of scripts/bench_linear.sh (issue 5: linear models against liblinear).

  plot_linear.py eval-liblinear --model M --l1 L [--train F] [--test F] [--out J]
      Reads a liblinear model file (-s 6, no bias) and computes, in OUR scale
      (sum_i log(1+exp(-y_i <x_i,w>)) + l1 |w|_1), its objective on --train, and log-loss,
      AUC and accuracy on --test. Writes a JSON object (and prints it).

  plot_linear.py plot --tau-reports R0 R1 ... --kkt-report R --nokkt-report R --out-dir docs
      Draws docs/linear_tau.png (relative objective gap against seconds, one curve per tau)
      and docs/linear_idle.png (worker idle fraction and time against tau; features
      computed per pass with and without the KKT filter).

  plot_linear.py table REPORT...
      Prints a markdown table of the reports' summaries.
"""
import argparse
import json
import math
import sys


def read_liblinear_model(path):
    w = {}
    labels = None
    bias = -1.0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"label"):
                labels = [int(t) for t in line.split()[1:]]
            elif line.startswith(b"bias"):
                bias = float(line.split()[1])
            elif line.strip() == b"w":
                break
        i = 0
        for line in f:
            i += 1
            v = float(line.split()[0])
            if v != 0.0:
                w[str(i).encode()] = v
    if bias >= 0:
        sys.exit("eval-liblinear: models with a bias term are not handled")
    # liblinear's decision value is for its first label; we want it for +1.
    if labels and labels[0] != 1:
        w = {k: -v for k, v in w.items()}
    return w


def margins(path, w):
    """Yields (y, <x, w>) per row of a libsvm file; w maps index bytes -> weight."""
    get = w.get
    with open(path, "rb") as f:
        for line in f:
            toks = line.split()
            if not toks:
                continue
            y = 1 if float(toks[0]) > 0 else -1
            m = 0.0
            for tok in toks[1:]:
                i, _, v = tok.partition(b":")
                x = get(i)
                if x is not None:
                    m += x * float(v)
            yield y, m


def log1pexp(z):
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def auc(scores_labels):
    # Mann-Whitney with ties averaged.
    s = sorted(scores_labels)
    n = len(s)
    pos = sum(1 for _, y in s if y > 0)
    neg = n - pos
    if pos == 0 or neg == 0:
        return float("nan")
    rank_sum = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and s[j + 1][0] == s[i][0]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        rank_sum += avg * sum(1 for k in range(i, j + 1) if s[k][1] > 0)
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def cmd_eval_liblinear(a):
    w = read_liblinear_model(a.model)
    out = {"model": a.model, "l1": a.l1, "nnz": len(w), "l1_norm": sum(abs(v) for v in w.values())}
    if a.train:
        loss = 0.0
        rows = 0
        for y, m in margins(a.train, w):
            loss += log1pexp(-y * m)
            rows += 1
        out["train_rows"] = rows
        out["train_loss"] = loss
        out["objective"] = loss + a.l1 * out["l1_norm"]
    if a.test:
        sl = []
        ll = 0.0
        correct = 0
        for y, m in margins(a.test, w):
            sl.append((m, y))
            ll += log1pexp(-y * m)
            correct += (m > 0) == (y > 0)
        out["test_rows"] = len(sl)
        out["test_logloss"] = ll / len(sl)
        out["test_accuracy"] = correct / len(sl)
        out["test_auc"] = auc(sl)
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def load(path):
    with open(path) as f:
        return json.load(f)


def cmd_plot(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = [load(p) for p in a.tau_reports]
    reps.sort(key=lambda r: r["tau"])
    best = min(min(p["objective"] for p in r["per_pass"]) for r in reps)
    if a.best is not None:
        best = min(best, a.best)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in reps:
        xs, ys = [], []
        for p in r["per_pass"]:
            gap = (p["objective"] - best) / abs(best)
            if gap > 0:
                xs.append(p["seconds"])
                ys.append(gap)
        ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.3,
                label="tau = %d (%d passes, %.1f s)" % (r["tau"], r["passes"], r["seconds"]))
    ax.set_yscale("log")
    ax.set_xlabel("seconds of training (after the data is read)")
    ax.set_ylabel("(objective - best) / best")
    ax.set_title(a.title or "DBPG, L1 logistic regression: objective against time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out_dir + "/linear_tau.png")
    print("wrote", a.out_dir + "/linear_tau.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    taus = [r["tau"] for r in reps]
    ax1.plot(taus, [100 * r["idle_fraction"] for r in reps], marker="o", label="worker idle %")
    ax1.set_xlabel("tau (delay bound)")
    ax1.set_ylabel("worker idle time, % of wall time")
    ax1.set_xscale("symlog", linthresh=1)
    ax1.set_xticks(taus)
    ax1.set_xticklabels([str(t) for t in taus])
    ax1.grid(True, alpha=0.3)
    ax1b = ax1.twinx()
    ax1b.plot(taus, [r["seconds"] for r in reps], marker="s", color="tab:red", label="seconds")
    ax1b.set_ylabel("seconds to stop (tol)", color="tab:red")
    ax1.set_title("idle fraction and run time against tau")
    if a.kkt_report and a.nokkt_report:
        for path, lab in ((a.kkt_report, "with KKT filter"), (a.nokkt_report, "without the filter (option no-kkt)")):
            r = load(path)
            ax2.plot([p["pass"] for p in r["per_pass"]], [p["active_features"] for p in r["per_pass"]],
                     marker=".", markersize=3, label=lab)
        ax2.set_ylim(bottom=0)
        ax2.set_xlabel("pass")
        ax2.set_ylabel("features computed in the pass (both workers)")
        ax2.set_title("KKT filter: features computed per pass")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out_dir + "/linear_idle.png")
    print("wrote", a.out_dir + "/linear_idle.png")


def cmd_table(a):
    print("| report | tau | kkt | passes | seconds | objective | nnz | bytes_sent | idle | features computed (sum over passes) |")
    print("|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|")
    for path in a.reports:
        r = load(path)
        feats = sum(p["active_features"] for p in r["per_pass"])
        print("| %s | %s | %s | %d | %.2f | %.6f | %d | %d | %.1f %% | %d |" % (
            path, r.get("tau"), "no" if "nokkt" in path else "yes", r["passes"], r["seconds"],
            r["objective"], r["nnz"], r["bytes_sent"], 100 * r["idle_fraction"], feats))


def cmd_reach(a):
    """First pass whose objective is within --rel of --target; prints JSON."""
    r = load(a.report)
    out = {"report": a.report, "target": a.target, "rel": a.rel}
    for p in r["per_pass"]:
        if p["objective"] <= a.target * (1 + a.rel):
            out.update(pass_=p["pass"], seconds=p["seconds"], objective=p["objective"])
            break
    else:
        out.update(pass_=None)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval-liblinear")
    e.add_argument("--model", required=True)
    e.add_argument("--l1", type=float, required=True)
    e.add_argument("--train")
    e.add_argument("--test")
    e.add_argument("--out")
    p = sub.add_parser("plot")
    p.add_argument("--tau-reports", nargs="+", required=True)
    p.add_argument("--kkt-report")
    p.add_argument("--nokkt-report")
    p.add_argument("--best", type=float)
    p.add_argument("--title")
    p.add_argument("--out-dir", default="docs")
    t = sub.add_parser("table")
    t.add_argument("reports", nargs="+")
    r = sub.add_parser("reach")
    r.add_argument("--report", required=True)
    r.add_argument("--target", type=float, required=True)
    r.add_argument("--rel", type=float, default=1e-3)
    a = ap.parse_args()
    {"eval-liblinear": cmd_eval_liblinear, "plot": cmd_plot, "table": cmd_table,
     "reach": cmd_reach}[a.cmd](a)


if __name__ == "__main__":
    main()
