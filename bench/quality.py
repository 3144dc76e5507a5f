"""Quality benchmark: scvi-tools SCVI vs regularizedvi on the real datasets in ../shared/data.

Parts (choose with --parts; each writes bench/results/quality_<part><tag>.json):

integration  kang_ifnb.h5ad, batch = obs.sample_id, labels = obs.cell_type. scib-metrics
             Benchmarker with its default metrics, unscaled (min_max_scale=False), for
             PCA, scVI (batch_key=sample_id), regularizedvi (batch_key=sample_id) and
             regularizedvi (batch_key=sample_id + nn_conditioning_covariate_keys=[sample_id]).
             Mean (and sd) over seeds. The same models give the held-out NLL on kang.
heldout      pbmc_3chem.h5ad (2000 HVGs, seurat_v3 on counts), batch = obs.batch: held-out
             reconstruction NLL per cell of scVI vs regularizedvi.
ambient      pbmc4k_soupx.h5ad (one channel): regularizedvi without batch; its background
             profile vs the soup profile measured from empty droplets.

Every model: n_hidden=128, n_latent=10, batch_size=128, the same seeded 90/10 split of
cells (split seed --split-seed, the same for every model and every training seed); the
held-out 10% are never trained on. Held-out NLL = get_reconstruction_error(indices=held-out)
= mean over held-out cells of -log p(x | z) (one posterior sample; scVI uses its default
ZINB likelihood, regularizedvi its NB with additive background).

Usage (from the repo root):
    .venv/bin/python bench/quality.py                        # 400 epochs x 3 seeds, all parts
    .venv/bin/python bench/quality.py --epochs 50 --seeds 1  # quick run
    .venv/bin/python bench/quality.py --parts heldout ambient --seeds 1 --threads 1 --tag _b
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_path, environment, pca_embedding, peak_rss_mib, quiet, set_threads, write_json  # noqa: E402

N_HIDDEN, N_LATENT, BATCH_SIZE = 128, 10, 128
VARIANT_SETUP: dict = {}  # set by --variant (bench/_variants.py): the "regularizedvi+nn" set-up


def split_cells(n: int, seed: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_model(kind: str, adata, seed: int, epochs: int, split, batch_key=None, nn_keys=None,
                threads: int = 2, encoder_keys=None):
    """Train one model on a copy of ``adata``; return (model, its adata, seconds)."""
    import scvi

    import regularizedvi as rv

    a = adata.copy()
    plan_kwargs = {}
    scvi.settings.seed = seed
    set_threads(threads)  # scvi.settings.seed does not touch threads, but be explicit
    if kind == "scvi":
        scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
        model = scvi.model.SCVI(a, n_hidden=N_HIDDEN, n_latent=N_LATENT)
    elif VARIANT_SETUP and nn_keys and not encoder_keys:
        import _variants

        setup = {k: _variants.for_key(v, batch_key) for k, v in VARIANT_SETUP.items()}
        rv.AmbientRegularizedSCVI.setup_anndata(a, **setup)
        model = rv.AmbientRegularizedSCVI(a, n_hidden=N_HIDDEN, n_latent=N_LATENT, **_variants.MODEL_KWARGS)
        plan_kwargs = dict(_variants.PLAN_KWARGS)
    else:
        rv.AmbientRegularizedSCVI.setup_anndata(
            a, batch_key=batch_key, nn_conditioning_covariate_keys=nn_keys,
            encoder_covariate_keys=encoder_keys,
        )
        model = rv.AmbientRegularizedSCVI(a, n_hidden=N_HIDDEN, n_latent=N_LATENT)
    train_idx, val_idx = split
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        accelerator="cpu",
        enable_progress_bar=False,
        datasplitter_kwargs={"external_indexing": [train_idx, val_idx, np.array([], dtype=int)]},
        plan_kwargs=plan_kwargs or None,
    )
    seconds = time.perf_counter() - start
    return model, a, seconds


def heldout_nll(model, a, val_idx) -> float:
    return float(model.get_reconstruction_error(a, indices=val_idx)["reconstruction_loss"])


MODELS = {
    # name: (kind, use nn conditioning on the batch column)
    "scVI": ("scvi", False),
    "regularizedvi": ("rv", False),
    "regularizedvi+nn": ("rv", True),
    # the sample also given to the encoder (encoder_covariate_keys)
    "regularizedvi+nn+enc": ("rv", "encoder"),
}


def scib_table(adata, batch_key, label_key, keys, pre_key):
    from scib_metrics.benchmark import Benchmarker

    bm = Benchmarker(
        adata, batch_key=batch_key, label_key=label_key, embedding_obsm_keys=keys,
        pre_integrated_embedding_obsm_key=pre_key, n_jobs=1, progress_bar=False,
    )
    bm.benchmark()
    df = bm.get_results(min_max_scale=False)
    df = df.drop(index="Metric Type", errors="ignore").astype(float)
    return df


def part_integration(args) -> dict:
    import anndata as ad
    import pandas as pd

    adata = ad.read_h5ad(data_path("kang_ifnb.h5ad"))
    batch_key, label_key = "sample_id", "cell_type"
    split = split_cells(adata.n_obs, args.split_seed)
    pca = pca_embedding(adata)
    per_seed, nll, train_s = [], {m: [] for m in args.models}, {m: [] for m in args.models}
    for seed in args.seed_list:
        scored = ad.AnnData(obs=adata.obs[[batch_key, label_key]].copy())
        scored.obsm["PCA"] = pca
        for name in args.models:
            kind, use_nn = MODELS[name]
            model, a, secs = train_model(
                kind, adata, seed, args.epochs, split, batch_key=batch_key,
                nn_keys=[batch_key] if use_nn else None, threads=args.threads,
                encoder_keys=[batch_key] if use_nn == "encoder" else None,
            )
            scored.obsm[name] = model.get_latent_representation(a)
            nll[name].append(heldout_nll(model, a, split[1]))
            train_s[name].append(secs)
            print(f"[integration] seed {seed} {name}: trained {args.epochs} epochs in {secs:.0f} s, "
                  f"held-out NLL/cell {nll[name][-1]:.2f}", flush=True)
        t0 = time.perf_counter()
        table = scib_table(scored, batch_key, label_key, ["PCA", *args.models], "PCA")
        print(f"[integration] seed {seed}: scib-metrics in {time.perf_counter() - t0:.0f} s", flush=True)
        table["seed"] = seed
        per_seed.append(table)
        print(table[["Bio conservation", "Batch correction", "Total"]].round(3).to_string(), flush=True)
    full = pd.concat(per_seed)
    mean = full.groupby(level=0).mean().drop(columns="seed")
    sd = full.groupby(level=0).std(ddof=1).drop(columns="seed") if len(args.seed_list) > 1 else None
    order = ["PCA", *args.models]
    mean = mean.loc[order]
    print("\n[integration] scib-metrics (unscaled), mean over seeds", args.seed_list)
    print(mean.round(3).T.to_string())
    summary = {
        name: {
            "total": mean.loc[name, "Total"], "bio": mean.loc[name, "Bio conservation"],
            "batch": mean.loc[name, "Batch correction"],
            "total_sd": None if sd is None else sd.loc[name, "Total"],
        }
        for name in order
    }
    heldout = {
        name: {"mean": float(np.mean(v)), "per_seed": v} for name, v in nll.items()
    }
    print("\n[integration] kang held-out reconstruction NLL per cell (mean over seeds):")
    for name, v in heldout.items():
        print(f"  {name:18s} {v['mean']:.3f}   (per seed: {', '.join(f'{x:.2f}' for x in v['per_seed'])})")
    if "scVI" in heldout:
        for name in heldout:
            print(f"  ratio {name} / scVI: {heldout[name]['mean'] / heldout['scVI']['mean']:.4f}")
    return {
        "dataset": "kang_ifnb.h5ad", "batch_key": batch_key, "label_key": label_key,
        "summary": summary, "metrics_mean": mean.T.to_dict(),
        "metrics_per_seed": full.reset_index(names="method").to_dict(orient="records"),
        "heldout_nll": heldout, "train_seconds": train_s,
        "n_cells": adata.n_obs, "n_genes": adata.n_vars, "n_heldout": len(split[1]),
    }


def load_3chem(n_top: int = 2000):
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(data_path("pbmc_3chem.h5ad"))
    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3")  # deterministic
    adata = adata[:, adata.var["highly_variable"].values].copy()
    keep = np.asarray(adata.X.sum(1)).ravel() > 0
    return adata[keep].copy()


def part_heldout(args) -> dict:
    adata = load_3chem()
    batch_key = "batch"
    split = split_cells(adata.n_obs, args.split_seed)
    models = args.heldout_models
    nll, train_s = {m: [] for m in models}, {m: [] for m in models}
    for seed in args.seed_list:
        for name in models:
            kind, use_nn = MODELS[name]
            model, a, secs = train_model(
                kind, adata, seed, args.epochs, split, batch_key=batch_key,
                nn_keys=[batch_key] if use_nn else None, threads=args.threads,
            )
            nll[name].append(heldout_nll(model, a, split[1]))
            train_s[name].append(secs)
            print(f"[heldout] pbmc_3chem seed {seed} {name}: {secs:.0f} s, held-out NLL/cell "
                  f"{nll[name][-1]:.2f}", flush=True)
    heldout = {name: {"mean": float(np.mean(v)), "per_seed": v} for name, v in nll.items()}
    print(f"\n[heldout] pbmc_3chem ({adata.n_obs} cells x {adata.n_vars} HVGs, {len(split[1])} held out)")
    for name, v in heldout.items():
        print(f"  {name:18s} {v['mean']:.3f}")
    if "scVI" in heldout and "regularizedvi" in heldout:
        print(f"  ratio regularizedvi / scVI: {heldout['regularizedvi']['mean'] / heldout['scVI']['mean']:.4f}")
    return {"dataset": "pbmc_3chem.h5ad", "hvg": "scanpy seurat_v3, 2000, on counts",
            "batch_key": batch_key, "heldout_nll": heldout, "train_seconds": train_s,
            "n_cells": adata.n_obs, "n_genes": adata.n_vars, "n_heldout": len(split[1])}


def pearson(x, y) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def part_ambient(args) -> dict:
    import anndata as ad

    adata = ad.read_h5ad(data_path("pbmc4k_soupx.h5ad"))
    totals = np.asarray(adata.X.sum(0)).ravel()
    adata = adata[:, totals >= args.ambient_min_counts].copy()
    adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    split = split_cells(adata.n_obs, args.split_seed)
    out = []
    for seed in args.seed_list:
        model, a, secs = train_model("rv", adata, seed, args.epochs, split, threads=args.threads)
        bg = model.get_ambient_profile(normalize=True).iloc[:, 0].to_numpy(np.float64)
        soup = a.var["soup_fraction"].to_numpy(np.float64)
        gene_totals = np.asarray(a.X.sum(0), dtype=np.float64).ravel()
        mean_profile = gene_totals / gene_totals.sum()
        ok = (soup > 0) & (bg > 0)
        soup_n = soup[ok] / soup[ok].sum()
        bg_n, mean_n = bg[ok] / bg[ok].sum(), mean_profile[ok] / mean_profile[ok].sum()
        lb, ls, lm = np.log(bg_n), np.log(soup_n), np.log(mean_n)
        res = {
            "seed": seed, "train_seconds": secs, "n_genes_used": int(ok.sum()),
            "pearson_log_bg_log_soup": pearson(lb, ls),
            "spearman_bg_soup": spearman(lb, ls),
            "pearson_beyond_mean": pearson(lb - lm, ls - lm),
            "baseline_pearson_log_mean_log_soup": pearson(lm, ls),
            "pearson_log_bg_log_mean": pearson(lb, lm),
            "heldout_nll": heldout_nll(model, a, split[1]),
        }
        out.append(res)
        print(f"[ambient] seed {seed}: {secs:.0f} s; corr(log bg, log soup) {res['pearson_log_bg_log_soup']:.3f}; "
              f"beyond-the-mean corr {res['pearson_beyond_mean']:.3f}; "
              f"(mean profile alone: corr(log mean, log soup) {res['baseline_pearson_log_mean_log_soup']:.3f}; "
              f"corr(log bg, log mean) {res['pearson_log_bg_log_mean']:.3f})", flush=True)
    keys = [k for k in out[0] if k not in ("seed", "n_genes_used")]
    mean = {k: float(np.mean([r[k] for r in out])) for k in keys}
    print("[ambient] mean over seeds:", {k: round(v, 3) for k, v in mean.items()})
    return {"dataset": "pbmc4k_soupx.h5ad", "min_gene_counts": args.ambient_min_counts,
            "n_cells": adata.n_obs, "n_genes": adata.n_vars, "per_seed": out, "mean": mean}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["integration", "heldout", "ambient"],
                        choices=["integration", "heldout", "ambient"])
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3, help="number of training seeds (0, 1, ...)")
    parser.add_argument("--models", nargs="+", default=["scVI", "regularizedvi", "regularizedvi+nn"],
                        choices=list(MODELS), help="models of the integration part")
    parser.add_argument("--seed-start", type=int, default=0,
                        help="first training seed (run seeds in parallel processes, then merge)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--heldout-models", nargs="+", default=["scVI", "regularizedvi"],
                        choices=list(MODELS))
    parser.add_argument("--ambient-min-counts", type=int, default=10,
                        help="keep genes with at least this many counts over all cells")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--variant", default=None,
                        help="exploration: a bench/_variants.py variant of regularizedvi+nn")
    args = parser.parse_args(argv)
    if args.variant:
        import _variants

        VARIANT_SETUP.update(_variants.apply(args.variant))
        print("variant:", args.variant, VARIANT_SETUP, flush=True)
    args.seed_list = list(range(args.seed_start, args.seed_start + args.seeds))
    quiet()
    set_threads(args.threads)
    env = environment()
    print("environment:", env, flush=True)
    for part in args.parts:
        start = time.perf_counter()
        result = {"integration": part_integration, "heldout": part_heldout, "ambient": part_ambient}[part](args)
        result.update({
            "settings": {"epochs": args.epochs, "seeds": args.seed_list, "split_seed": args.split_seed,
                         "n_hidden": N_HIDDEN, "n_latent": N_LATENT, "batch_size": BATCH_SIZE,
                         "threads": args.threads},
            "environment": env, "wall_seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
        })
        path = write_json(f"quality_{part}{args.tag}.json", result)
        print(f"[{part}] done in {result['wall_seconds']:.0f} s -> {path}\n", flush=True)


if __name__ == "__main__":
    main()
