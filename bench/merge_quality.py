"""Merge integration results of seeds run in separate processes (quality.py --seed-start).

Usage: .venv/bin/python bench/merge_quality.py bench/results/quality_integration_X_s0.json ...
Prints scib-metrics Bio / Batch / Total per method (mean and sd over seeds), the held-out
NLL per cell and training seconds, and writes bench/results/quality_integration_merged.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    runs = [r.get("integration", r) for r in runs]
    records = pd.DataFrame([rec for r in runs for rec in r["metrics_per_seed"]])
    cols = ["Bio conservation", "Batch correction", "Total"]
    grouped = records.groupby("method")[cols]
    table = grouped.mean().round(3).join(grouped.std(ddof=1).round(3), rsuffix=" sd")
    seeds = sorted(records["seed"].unique().tolist())
    print(f"scib-metrics (unscaled), seeds {seeds}:")
    print(table.to_string())
    nll, secs = {}, {}
    for r in runs:
        for name, v in r["heldout_nll"].items():
            nll.setdefault(name, []).extend(v["per_seed"])
        for name, v in r["train_seconds"].items():
            secs.setdefault(name, []).extend(v)
    print("\nheld-out NLL per cell (mean; per seed) and training seconds:")
    for name in nll:
        print(f"  {name:18s} {sum(nll[name]) / len(nll[name]):9.2f}  {[round(x, 2) for x in nll[name]]}"
              f"  train s {[round(s) for s in secs[name]]}")
    write_json("quality_integration_merged.json", {
        "seeds": seeds, "table": table.reset_index().to_dict(orient="records"),
        "heldout_nll": nll, "train_seconds": secs, "sources": paths})


if __name__ == "__main__":
    main(sys.argv[1:])
