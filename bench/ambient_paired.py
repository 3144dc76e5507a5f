"""Paired comparison of ambient-bench variants against a base variant, seed by seed.

Reads the JSON of ``ambient_bench.py`` (one or more files; a later record of the same
design / seed / method replaces an earlier one) and, for every variant other than the base,
prints per design: fraction MAE, mean signed fraction error (bias: estimated - true, over
samples), count error and its ratio to the oracle subtraction's (anchor records of the same
seeds, e.g. ``bench/records/ambient/ambient_anchors.json``), marker leakage, the paired
differences (mean and sd over seeds) and the slope of estimated on true fraction (pooled
over seeds and samples: 1 = the spread between samples recovered, 0 = one fraction for all).
Only seeds that both variants ran are compared.

Usage (repo root):
  .venv/bin/python bench/ambient_paired.py bench/records/ambient/ambient_anchors.json \
      bench/records/ambient/ambient_l1p.json --base rv:default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TOLERANCE = 0.002  # count-error change read as "not worse" (about the seed-to-seed sd)


def load(paths) -> dict:
    records = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["records"]:
            records[(r["design"], r["seed"], r["method"])] = r
    return records


def compare(records: dict, base: str, variant: str) -> str:
    designs = list(dict.fromkeys(d for d, _, m in records if m == variant))
    lines = [f"\n### {variant} vs {base} (paired seeds)\n",
             "| design | seeds | frac MAE | bias | count err | /oracle | leakage (clean) | d frac MAE (sd) "
             "| d count err (sd) | slope est~true |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {"mae": [], "mae_base": [], "mae_better": 0, "ce_not_worse": 0, "ce_strict": 0}
    for d in designs:
        seeds = sorted(s for dd, s, m in records if dd == d and m == variant and (d, s, base) in records)
        pairs = [(records[(d, s, base)], records[(d, s, variant)]) for s in seeds]
        oracle = [records[(d, s, "oracle")]["count_error"] for s in seeds if (d, s, "oracle") in records]

        def mean(key, i):
            return float(np.mean([p[i][key] for p in pairs]))

        def bias(i):
            return float(np.mean([np.mean(np.subtract(p[i]["fraction_est"], p[i]["fraction_true"])) for p in pairs]))

        def slope(i):
            est = np.concatenate([p[i]["fraction_est"] for p in pairs])
            true = np.concatenate([p[i]["fraction_true"] for p in pairs])
            return float(np.polyfit(true, est, 1)[0])

        def diff(key):
            x = [p[1][key] - p[0][key] for p in pairs]
            return f"{np.mean(x):+.4f} ({np.std(x, ddof=1) if len(x) > 1 else float('nan'):.4f})"

        o = float(np.mean(oracle)) if len(oracle) == len(seeds) else float("nan")
        ratio = f"{mean('count_error', 0) / o:.2f} -> {mean('count_error', 1) / o:.2f}" if np.isfinite(o) else ""
        clean = float(np.mean([p[1]["leakage_clean"] for p in pairs]))
        lines.append(f"| {d} | {len(seeds)} | {mean('fraction_mae', 0):.3f} -> {mean('fraction_mae', 1):.3f} | "
                     f"{bias(0):+.3f} -> {bias(1):+.3f} | {mean('count_error', 0):.3f} -> {mean('count_error', 1):.3f} | "
                     f"{ratio} | {mean('leakage', 0):.3f} -> {mean('leakage', 1):.3f} ({clean:.3f}) | "
                     f"{diff('fraction_mae')} | {diff('count_error')} | {slope(0):.2f} -> {slope(1):.2f} |")
        summary["mae_base"].append(mean("fraction_mae", 0))
        summary["mae"].append(mean("fraction_mae", 1))
        summary["mae_better"] += mean("fraction_mae", 1) < mean("fraction_mae", 0)
        d_ce = mean("count_error", 1) - mean("count_error", 0)
        summary["ce_strict"] += d_ce <= 0
        summary["ce_not_worse"] += d_ce <= TOLERANCE
    n = len(designs)
    lines.append(f"\nmean frac MAE over designs {np.mean(summary['mae_base']):.3f} -> {np.mean(summary['mae']):.3f}; "
                 f"frac MAE lower on {summary['mae_better']}/{n}; count error not higher on "
                 f"{summary['ce_strict']}/{n} (within +{TOLERANCE}: {summary['ce_not_worse']}/{n})")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+")
    p.add_argument("--base", default="rv:default")
    args = p.parse_args(argv)
    records = load(args.json)
    variants = [m for m in dict.fromkeys(m for _, _, m in records) if m.startswith("rv:") and m != args.base]
    print("\n".join(compare(records, args.base, v) for v in variants))


if __name__ == "__main__":
    main()
