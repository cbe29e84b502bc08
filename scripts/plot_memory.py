#!/usr/bin/env python3
"""Draws the memory figures of `pserver bench --workloads memory --json F` as an SVG plot.

  plot_memory.py --out docs/memory_per_param.svg RESULTS.json [RESULTS.json ...]

One line per update rule: resident bytes per stored parameter (solid) and the peak while the
table grew (dashed) against the number of keys (log scale), with each rule's target drawn
dotted. Standard library only (the machine has no plotting package).
"""
import argparse
import json
import math
import re

COLOURS = {"sgd": "#1f77b4", "adagrad": "#2ca02c", "adam": "#d62728", "ftrl": "#9467bd"}
NAME = re.compile(r"^(memory|memory_peak)/sparse_(\w+)/(\d+)(M|k)?keys/")


def keys_of(count, unit):
    return int(count) * {"M": 1_000_000, "k": 1000, None: 1}[unit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("results", nargs="+")
    a = ap.parse_args()
    series, targets = {}, {}
    for path in a.results:
        for r in json.load(open(path)):
            m = NAME.match(r["name"])
            if not m:
                continue
            kind, rule, n = m.group(1), m.group(2), keys_of(m.group(3), m.group(4))
            series.setdefault((rule, kind), {})[n] = r["value"]
            if kind == "memory":
                targets[rule] = r["bound"]
    if not series:
        raise SystemExit("no memory results in " + ", ".join(a.results))
    xs = sorted({n for s in series.values() for n in s})
    ymax = max(max(max(s.values()) for s in series.values()), max(targets.values())) * 1.1
    W, H, L, R, T, B = 720, 420, 60, 130, 30, 50
    lo, hi = math.log10(xs[0]) - 0.2, math.log10(xs[-1]) + 0.2
    X = lambda n: L + (math.log10(n) - lo) / (hi - lo) * (W - L - R)
    Y = lambda v: H - B - v / ymax * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle">Resident bytes per stored parameter (solid), peak while '
           'growing (dashed), target (dotted)</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    step = 5 if ymax > 20 else 2
    for v in range(0, int(ymax) + 1, step):
        out.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for n in xs:
        label = f"{n // 1_000_000_000}B" if n >= 1_000_000_000 else f"{n // 1_000_000}M" if n >= 1_000_000 else str(n)
        out.append(f'<text x="{X(n):.1f}" y="{H - B + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">keys stored (log scale)</text>')
    out.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" '
               'text-anchor="middle">bytes per parameter</text>')
    legend_y = T + 10
    for rule in sorted({r for r, _ in series}, key=lambda r: list(COLOURS).index(r) if r in COLOURS else 99):
        colour = COLOURS.get(rule, "black")
        for kind, dash in (("memory", ""), ("memory_peak", ' stroke-dasharray="6 4"')):
            pts = sorted(series.get((rule, kind), {}).items())
            if pts:
                path = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
                for n, v in pts:
                    out.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="3" fill="{colour}"/>')
        if rule in targets:
            out.append(f'<line x1="{L}" y1="{Y(targets[rule]):.1f}" x2="{W - R}" y2="{Y(targets[rule]):.1f}" '
                       f'stroke="{colour}" stroke-dasharray="2 3"/>')
        out.append(f'<line x1="{W - R + 10}" y1="{legend_y}" x2="{W - R + 34}" y2="{legend_y}" stroke="{colour}" '
                   'stroke-width="2"/>')
        out.append(f'<text x="{W - R + 40}" y="{legend_y + 4}">{rule}</text>')
        legend_y += 18
    out.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
