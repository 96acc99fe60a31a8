#!/usr/bin/env python3
"""Plots the CSV written by `cargo bench --bench load -- --sweep ... --csv FILE` as SVG files.

    python3 scripts/plot_benchmarks.py docs/benchmarks/sweep.csv docs/benchmarks/

Writes validate-latency.svg and login-latency.svg (p50/p99 latency against concurrency),
throughput-vs-concurrency.svg, and throughput-vs-cost.svg (Login and Signup requests/s against
the machine's bcrypt limit, per cost).
"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.hashsalt"] = "identity"  # stable ids: the SVG changes only when the data do
plt.rcParams["svg.fonttype"] = "none"


def load(path):
    rows = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[(row["sweep"], row["scenario"])].append(row)
    return rows


def by(rows, key):
    return sorted(rows, key=lambda r: float(r[key]))


def latency_plot(rows, scenarios, title, out):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for scenario in scenarios:
        data = by(rows.get(("concurrency", scenario), []), "concurrency")
        if not data:
            continue
        x = [int(r["concurrency"]) for r in data]
        for q, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            ax.plot(x, [float(r[q]) for r in data], style, label=f"{scenario} {q[:3]}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def throughput_concurrency_plot(rows, out):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for scenario in ("echo", "ValidateToken repeated", "ValidateToken new tokens"):
        data = by(rows.get(("concurrency", scenario), []), "concurrency")
        if data:
            ax.plot([int(r["concurrency"]) for r in data], [float(r["rps"]) for r in data], "-o", label=scenario)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("requests/s")
    ax.set_title("ValidateToken throughput against a bare tonic echo")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def cost_plot(rows, out):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for scenario, style in (("bcrypt limit", "k--"), ("Login", "-o"), ("Signup", "-s")):
        data = by(rows.get(("cost", scenario), []), "cost")
        if data:
            ax.plot([int(r["cost"]) for r in data], [float(r["rps"]) for r in data], style, label=scenario)
    ax.set_yscale("log")
    ax.set_xlabel("bcrypt cost")
    ax.set_ylabel("requests/s")
    ax.set_title("Login and Signup throughput against the bcrypt limit (cores / verify time)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    latency_plot(rows, ("echo", "ValidateToken repeated", "ValidateToken new tokens"),
                 "ValidateToken latency against concurrency", out / "validate-latency.svg")
    latency_plot(rows, ("Login",), "Login latency against concurrency (excess shed)", out / "login-latency.svg")
    throughput_concurrency_plot(rows, out / "throughput-vs-concurrency.svg")
    cost_plot(rows, out / "throughput-vs-cost.svg")
    print(f"wrote plots to {out}")


if __name__ == "__main__":
    main()
