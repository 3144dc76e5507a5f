"""Ambient RNA correction against exact ground truth: regularizedvi vs SoupX vs scvi-tools' SCAR.

Semi-synthetic designs (bench/_ambient_designs.py): real cells of ../shared/data are the
clean truth, split into pseudo-samples, each contaminated from a soup of its own (not the
cells' mean profile) at 2-45% of its counts. Every method sees only the contaminated counts
(and the sample of each cell; SoupX also the true cell types as clusters):

  none         no correction
  oracle       knows each sample's soup and fraction: x - f_s N_n soup_s, clipped at 0
  soupx        SoupX 1.6.2 autoEstCont + adjustCounts per sample, soup = sample mean profile
  soupx_empty  ... soup = the measured empty-droplet profile (designs that have one)
  scar         scvi-tools SCAR per sample, ambient profile = sample mean profile,
               get_denoised_counts(); "scar_share" = x * native / (native + ambient)
  scar_empty   ... ambient profile = the empty-droplet profile
  rv:VARIANT   AmbientRegularizedSCVI(batch_key="sample"; + nn_conditioning=sample in
               *nn designs), defaults, model.train(); corrected = get_ambient_corrected_counts();
               VARIANT from bench/_ambient_variants.py ("default" = the package as it is)

Metrics: per-sample contamination fraction (1 - corrected / observed total) vs the truth
(mean abs error, max), corrected-count error sum|corrected - clean| / sum clean, marker
leakage (share of each type's top-20 clean markers' counts in cells of other types), the
soup profile's log-Pearson with the true soup, seconds, kNN purity / sample mixing of the
latent, and with --heldout the held-out NLL of 10% of cells (rv variants and scvi SCVI).

Usage (repo root):
  .venv/bin/python bench/ambient_bench.py --designs facs4 kang4 --seeds 0 1 2 \
      --methods none oracle soupx scar rv --variants default --tag _main
  .venv/bin/python bench/ambient_bench.py --table bench/results/ambient_main.json [...]
Results are appended to bench/results/ambient<tag>.json as they come (a rerun skips what is
there); the table is printed and written to bench/results/ambient<tag>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, quiet, set_threads  # noqa: E402

HELDOUT_FRACTION = 0.1


def run_one(method: str, design, seed: int, epochs, heldout):
    import _ambient_methods as M

    if method.startswith("rv:"):
        return M.regularizedvi(design, variant=method[3:], seed=seed, epochs=epochs, heldout=heldout)
    if method == "scvi":
        return M.scvi_heldout(design, seed=seed, epochs=epochs, heldout=heldout)
    base, _, source = method.partition("_")
    fn = {"none": M.none, "oracle": M.oracle, "soupx": M.soupx, "scar": M.scar}[base]
    return fn(design, soup_source=source or "mean", seed=seed, epochs=epochs)


def expand_methods(methods, variants, design) -> list[str]:
    out = []
    for m in methods:
        if m == "rv":
            out += [f"rv:{v}" for v in variants if "empty" not in v or design.empty_profiles is not None]
        elif m.endswith("_empty") and design.empty_profiles is None:
            continue
        else:
            out.append(m)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--designs", nargs="+", default=["facs4", "kang4", "snare16", "pbmc4k3", "cellbench2", "facs8nn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+",
                   default=["none", "oracle", "soupx", "soupx_empty", "scar", "scar_empty", "rv"])
    p.add_argument("--variants", nargs="+", default=["default"])
    p.add_argument("--epochs", type=int, default=None, help="max_epochs of every model (default: each tool's own)")
    p.add_argument("--heldout", action="store_true", help="hold out 10%% of cells (rv and scvi): NLL check")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    p.add_argument("--table", nargs="*", default=None, help="only print the table of these JSON files")
    args = p.parse_args(argv)
    if args.table is not None:
        records = [r for f in args.table for r in json.loads(Path(f).read_text())["records"]]
        print(table(records))
        return
    quiet()
    set_threads(args.threads)
    from _ambient_designs import make_design
    from _ambient_metrics import latent_scores, marker_leakage, markers, score

    path = RESULTS_DIR / f"ambient{args.tag}.json"
    store = json.loads(path.read_text()) if path.exists() else {"environment": environment(), "records": []}
    done = {(r["design"], r["seed"], r["method"]) for r in store["records"]}
    for name in args.designs:
        for seed in args.seeds:
            design = make_design(name, seed)
            marker_sets = markers(design)
            base = {"design": name, "seed": seed, **design.meta,
                    "leakage_clean": marker_leakage(design.clean, design, marker_sets),
                    "leakage_observed": marker_leakage(design.observed, design, marker_sets)}
            heldout = None
            if args.heldout:
                rng = np.random.default_rng(seed)
                n = design.observed.shape[0]
                heldout = np.sort(rng.choice(n, int(round(HELDOUT_FRACTION * n)), replace=False))
            methods = expand_methods(args.methods, args.variants, design) + (["scvi"] if args.heldout else [])
            for method in dict.fromkeys(methods):  # "scvi" once, also when named in --methods
                if (name, seed, method) in done:
                    continue
                start = time.perf_counter()
                out = run_one(method, design, seed, args.epochs, heldout)
                rec = dict(base, method=method, seconds=out.get("seconds", time.perf_counter() - start))
                if "corrected" in out:
                    rec.update(score(design, out["corrected"], marker_sets, out.get("soups")))
                for extra in ("heldout_nll", "rho", "epochs"):
                    if out.get(extra) is not None:
                        rec[extra] = out[extra]
                if out.get("latent") is not None:
                    rec.update(latent_scores(out["latent"], design))
                store["records"].append(rec)
                if "corrected_share" in out:
                    share = dict(base, method=method.replace("scar", "scar_share"), seconds=rec["seconds"])
                    share.update(score(design, out["corrected_share"], marker_sets, out.get("soups")))
                    store["records"].append(share)
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(store, indent=1, default=float))
                print(f"{name} seed {seed} {method:28s} " + "  ".join(
                    f"{k} {rec[k]:.3f}" for k in ("fraction_mae", "fraction_max", "count_error", "leakage",
                                                  "heldout_nll", "seconds") if k in rec), flush=True)
    text = table(store["records"])
    print(text)
    (RESULTS_DIR / f"ambient{args.tag}.md").write_text(text + "\n")


def table(records) -> str:
    """One row per design x method: means over seeds (fraction max: the max over seeds)."""
    import pandas as pd

    df = pd.DataFrame(records)
    lines = []
    for name, d in df.groupby("design", sort=False):
        agg = {}
        for method, m in d.groupby("method", sort=False):
            row = {"seeds": len(m)}
            for k in ("fraction_mae", "count_error", "leakage", "soup_logr", "seconds", "knn_purity",
                      "sample_mixing", "heldout_nll"):
                if k in m and m[k].notna().any():
                    row[k] = m[k].mean()
            if "fraction_max" in m and m["fraction_max"].notna().any():
                row["fraction_max"] = m["fraction_max"].max()
            agg[method] = row
        def ref(method):
            return agg.get(method, {}).get("count_error", np.nan)
        lines.append(f"\n### {name}: {d['n_cells'].iloc[0]} cells x {d['n_genes'].iloc[0]} genes, "
                     f"{d['n_types'].iloc[0]} types, {d['n_samples'].iloc[0]} samples, seeds "
                     f"{sorted(d['seed'].unique())}; leakage clean {d['leakage_clean'].mean():.3f}, "
                     f"contaminated {d['leakage_observed'].mean():.3f}\n")
        lines.append("| method | seeds | frac MAE | frac max | count err | /oracle | /SoupX | /SCAR | leakage "
                     "| soup logr | kNN purity | mixing | held-out NLL | s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for method, r in agg.items():
            def f(k, fmt="{:.3f}"):
                return fmt.format(r[k]) if k in r and np.isfinite(r[k]) else ""
            ce = r.get("count_error", np.nan)
            ratios = [f"{ce / ref(x):.2f}" if np.isfinite(ce) and np.isfinite(ref(x)) else ""
                      for x in ("oracle", "soupx", "scar")]
            lines.append(f"| {method} | {r['seeds']} | {f('fraction_mae')} | {f('fraction_max')} | "
                         f"{f('count_error')} | {' | '.join(ratios)} | {f('leakage')} | {f('soup_logr')} | "
                         f"{f('knn_purity')} | {f('sample_mixing')} | {f('heldout_nll', '{:.1f}')} | "
                         f"{f('seconds', '{:.0f}')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
