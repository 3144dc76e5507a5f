"""Quality over several datasets: scib-metrics, held-out NLL per cell (overall, per batch and
per technology) and what the fitted models learned (dispersion, library), for PCA,
scvi-tools SCVI and regularizedvi, in the same run (issue 14).

One run = one dataset x models x seeds (x one ``--variant`` of regularizedvi); every
(dataset, model, variant, seed) writes its own ``bench/results/multi/*.json``, so runs can
be split over processes and sessions; ``--table`` assembles whatever is there into one
table per dataset (``bench/results/multi_tables.md`` + ``.json``): mean and sd over seeds,
per-seed totals.

Models (``--models``):
  PCA       50 PCs of log1p CP10k (also the pre-integration embedding of PCR comparison)
  scVI      scvi-tools SCVI(batch_key=<batch>), defaults (ZINB, gene dispersion)
  scVI-enc  SCVI(batch_key, encode_covariates=True) (scArches' set-up for surgery)
  scVI-nb   SCVI with gene_likelihood="nb" (no zero inflation); scVI-nb-gb also dispersion="gene-batch"
  rv+nn     regularizedvi, batch_key + nn_conditioning_covariate_keys = <batch> (the README's
            recipe for technology batches)
  rv        regularizedvi, batch_key alone
  rv+nn+enc rv+nn with the batch also given to the encoder (encoder_covariate_keys)
Protocol: 90% of cells train (split seed 0, the same cells for every model and seed; the
model is trained on them alone, ``train_size=1.0``), the other 10% give the held-out
reconstruction NLL (``get_reconstruction_error(indices=...)``: mean over cells of
-log p(x | z, l), one posterior draw). scib-metrics ``Benchmarker`` default metrics,
``min_max_scale=False``, on the latents of all cells; datasets without labels get the
batch metrics only (labels = one class; bio columns dropped). Epochs: scvi-tools'
heuristic ``min(round(20000 / n_train * 400), 400)`` times ``--epoch-scale``, or
``--epochs``.

Usage (from the repo root):
    .venv/bin/python bench/quality_multi.py --dataset cellbench --models PCA scVI rv+nn rv --seeds 0 1 2
    .venv/bin/python bench/quality_multi.py --dataset sim_plate --models rv+nn --variant covx1 --seeds 0
    .venv/bin/python bench/quality_multi.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, pca_embedding, quiet, set_threads  # noqa: E402

MULTI_DIR = RESULTS_DIR / "multi"
RV_MODELS = {"rv+nn": ("nn",), "rv": (), "rv+nn+enc": ("nn", "enc")}
SCVI_MODELS = {"scVI": {}, "scVI-enc": {"encode_covariates": True}, "scVI-nb": {"gene_likelihood": "nb"},
               "scVI-nb-gb": {"gene_likelihood": "nb", "dispersion": "gene-batch"}}


def split_cells(n: int, seed: int = 0, val_fraction: float = 0.1):
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def heuristic_epochs(n_train: int) -> int:
    return int(min(round(20000 / n_train * 400), 400))


def rv_setup(model: str, batch_key: str, variant_setup: dict | None) -> dict:
    """setup_anndata keywords of a regularizedvi model (variant set-up replaces rv+nn's)."""
    parts = RV_MODELS[model]
    if variant_setup and model == "rv+nn":
        import _variants

        return {k: _variants.for_key(v, batch_key) for k, v in variant_setup.items()}
    setup = {"batch_key": batch_key}
    if "nn" in parts:
        setup["nn_conditioning_covariate_keys"] = [batch_key]
    if "enc" in parts:
        setup["encoder_covariate_keys"] = [batch_key]
    return setup


def fit(model: str, train_adata, batch_key: str, seed: int, epochs: int, n_hidden: int, n_latent: int,
        variant_setup: dict | None = None, threads: int = 1):
    """Train one model on ``train_adata`` (all of it); return (model, seconds)."""
    import scvi

    import regularizedvi as rv

    a = train_adata.copy()
    scvi.settings.seed = seed
    set_threads(threads)
    plan_kwargs = None
    if model in SCVI_MODELS:
        scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
        m = scvi.model.SCVI(a, n_hidden=n_hidden, n_latent=n_latent, **SCVI_MODELS[model])
    else:
        import _variants

        rv.AmbientRegularizedSCVI.setup_anndata(a, **rv_setup(model, batch_key, variant_setup))
        m = rv.AmbientRegularizedSCVI(a, n_hidden=n_hidden, n_latent=n_latent, **_variants.MODEL_KWARGS)
        plan_kwargs = dict(_variants.PLAN_KWARGS) or None
    start = time.perf_counter()
    m.train(max_epochs=epochs, train_size=1.0, batch_size=128, accelerator="cpu",
            enable_progress_bar=False, plan_kwargs=plan_kwargs)
    return m, time.perf_counter() - start


def nll(m, a, idx) -> float:
    if len(idx) == 0:
        return float("nan")
    return float(m.get_reconstruction_error(a, indices=idx, batch_size=256)["reconstruction_loss"])


def learned_state(m, a, val_idx, batch_key: str) -> dict:
    """What the model learned that bears on the fit: theta per dispersion group (median over
    features), the dispersion rate lambda, the library posterior's offset from the observed
    total on held-out cells (per batch), feature-scaling spread."""
    import torch

    out = {}
    mod = m.module
    if hasattr(mod, "observation"):
        obs = mod.observation
        theta = torch.exp(obs.log_theta_mu).detach().cpu().numpy()
        groups = list(m.adata_manager.get_state_registry("dispersion_group").categorical_mapping) \
            if "dispersion_group" in m.adata_manager.data_registry else None
        groups = groups or [f"g{i}" for i in range(theta.shape[1])]
        out["theta_median"] = {str(g): float(np.median(theta[:, i])) for i, g in enumerate(groups)}
        out["theta_q10_q90"] = {str(g): [float(np.quantile(theta[:, i], q)) for q in (0.1, 0.9)]
                                for i, g in enumerate(groups)}
        out["dispersion_rate"] = {str(g): float(v) for g, v in zip(groups, obs.dispersion_rate().detach().cpu())}
        if obs.use_feature_scaling:
            y = obs.feature_scaling_values().detach().cpu().numpy()
            out["feature_scaling_log_sd"] = [float(np.log(r).std()) for r in y]
        try:
            x = a[val_idx].X
            x = torch.as_tensor(x.toarray() if hasattr(x, "toarray") else np.asarray(x), dtype=torch.float32)
            with torch.no_grad():
                ql = mod.library_encoder(torch.log1p(x), torch.log(x.sum(-1, keepdim=True).clamp_min(1.0)))
            offset = (ql.loc - torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))).squeeze(-1).numpy()
            b = a.obs[batch_key].to_numpy()[val_idx]
            out["library_offset_mean"] = {str(g): float(offset[b == g].mean()) for g in np.unique(b)}
        except Exception as error:  # noqa: BLE001 - diagnostics only
            out["library_offset_error"] = repr(error)
    elif hasattr(mod, "px_r"):
        theta = torch.exp(mod.px_r).detach().cpu().numpy()
        out["theta_median"] = {"all" if theta.ndim == 1 else f"b{i}": float(np.median(t))
                               for i, t in enumerate(np.atleast_2d(theta))}
    return out


def scib_scores(adata, batch_key, label_key, key, pre_key="PCA") -> dict:
    from scib_metrics.benchmark import Benchmarker, BioConservation

    obs = adata.obs
    labels = label_key
    bio = None
    if label_key is None:
        obs["__one_label__"] = "all"
        labels = "__one_label__"
        # one bio metric must stay for get_results(); with one label it is trivial and dropped
        bio = BioConservation(isolated_labels=False, nmi_ari_cluster_labels_leiden=False,
                              nmi_ari_cluster_labels_kmeans=False, silhouette_label=False, clisi_knn=True)
    bm = Benchmarker(adata, batch_key=batch_key, label_key=labels, embedding_obsm_keys=[key],
                     pre_integrated_embedding_obsm_key=pre_key, n_jobs=1, progress_bar=False,
                     **({"bio_conservation_metrics": bio} if bio is not None else {}))
    bm.benchmark()
    df = bm.get_results(min_max_scale=False).drop(index="Metric Type", errors="ignore").astype(float)
    row = df.loc[key].to_dict()
    if label_key is None:
        row = {k: v for k, v in row.items() if k not in ("Bio conservation", "Total", "cLISI")}
    return {k: float(v) for k, v in row.items() if np.isfinite(v)}


def result_path(dataset: str, model: str, variant: str, seed: int, size: str) -> Path:
    safe = model.replace("+", "p")
    return MULTI_DIR / f"{dataset}__{safe}__{variant}__{size}__s{seed}.json"


def run(args) -> None:
    import anndata as ad

    import _datasets

    ds = _datasets.load(args.dataset, snare_cells=args.snare_cells)
    adata = ds.adata
    train_idx, val_idx = split_cells(adata.n_obs, 0)
    epochs = args.epochs or max(1, int(round(heuristic_epochs(len(train_idx)) * args.epoch_scale)))
    size = f"h{args.n_hidden}l{args.n_latent}e{epochs}"
    print(f"[{ds.name}] {adata.n_obs} cells x {adata.n_vars} features; {ds.note}; {epochs} epochs; "
          f"variant {args.variant}", flush=True)
    variant_setup = None
    if args.variant != "base":
        import _variants

        variant_setup = _variants.apply(args.variant)
    scored = ad.AnnData(obs=adata.obs[[c for c in {ds.batch_key, ds.label_key, ds.tech_key} if c]].copy())
    scored.obsm["PCA"] = pca_embedding(adata)
    batches = adata.obs[ds.batch_key].to_numpy()
    techs = adata.obs[ds.tech_key].to_numpy()
    train_adata = adata[train_idx].copy()
    for seed in args.seeds:
        for model in args.models:
            path = result_path(ds.name, model, "base" if model in ("PCA", *SCVI_MODELS) else args.variant,
                               0 if model == "PCA" else seed, "pca" if model == "PCA" else size)  # PCA: no seed
            if path.exists() and not args.overwrite:
                print(f"  {path.name} exists; skipped", flush=True)
                continue
            record = {"dataset": ds.name, "model": model, "variant": args.variant, "seed": seed,
                      "epochs": epochs, "n_hidden": args.n_hidden, "n_latent": args.n_latent,
                      "n_cells": adata.n_obs, "n_features": adata.n_vars, "note": ds.note}
            if model == "PCA":
                key = "PCA"
            else:
                m, secs = fit(model, train_adata, ds.batch_key, seed, epochs, args.n_hidden, args.n_latent,
                              variant_setup, args.threads)
                full = adata.copy()
                scored.obsm[model] = m.get_latent_representation(full)
                key = model
                record["train_seconds"] = secs
                record["nll"] = nll(m, full, val_idx)
                record["nll_per_batch"] = {str(b): nll(m, full, val_idx[batches[val_idx] == b])
                                           for b in np.unique(batches)}
                record["nll_per_tech"] = {str(t): nll(m, full, val_idx[techs[val_idx] == t])
                                          for t in np.unique(techs)}
                record["learned"] = learned_state(m, full, val_idx, ds.batch_key)
                print(f"  seed {seed} {model}: {secs:.0f} s, held-out NLL {record['nll']:.2f} per tech "
                      f"{ {k: round(v, 1) for k, v in record['nll_per_tech'].items()} }", flush=True)
            t0 = time.perf_counter()
            record["scib"] = scib_scores(scored, ds.batch_key, ds.label_key, key)
            print(f"  seed {seed} {model}: scib {time.perf_counter() - t0:.0f} s "
                  f"{ {k: round(v, 3) for k, v in record['scib'].items() if k in ('Bio conservation', 'Batch correction', 'Total')} }",
                  flush=True)
            record["environment"] = environment()
            MULTI_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1, default=float))


COLS = ("Bio conservation", "Batch correction", "Total")


def table(args) -> None:
    import pandas as pd

    rows = [json.loads(p.read_text()) for p in sorted(MULTI_DIR.glob("*.json"))]
    if args.table_filter:
        rows = [r for r in rows if all(f in json.dumps([r["dataset"], r["model"], r["variant"]]) for f in args.table_filter)]
    out_md, out_json = [], {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        recs = []
        for r in (r for r in rows if r["dataset"] == dataset):
            label = r["model"] if r["model"] in ("PCA", *SCVI_MODELS) or r["variant"] == "base" \
                else f"{r['model']}[{r['variant']}]"
            if r["model"] != "PCA" and (r["n_hidden"], r["n_latent"]) != (128, 10):
                label += f" {r['n_hidden']}/{r['n_latent']}"
            if r["model"] != "PCA":
                label += f" e{r['epochs']}"
            rec = {"model": label, "seed": r["seed"], **{c: r["scib"].get(c, np.nan) for c in COLS},
                   "NLL": r.get("nll", np.nan)}
            for t, v in (r.get("nll_per_tech") or {}).items():
                if len(r.get("nll_per_tech")) > 1 and len(r.get("nll_per_tech")) < 5:
                    rec[f"NLL {t}"] = v
            recs.append(rec)
        df = pd.DataFrame(recs)
        num = [c for c in df.columns if c not in ("model", "seed")]
        g = df.groupby("model", sort=False)
        mean, sd = g[num].mean(), g[num].std(ddof=1)
        seeds = g["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s)))
        per_seed = g.apply(lambda d: " / ".join(f"{v:.3f}" for v in d.sort_values("seed")["Total"]
                                                if np.isfinite(v)) or " / ".join(
            f"{v:.3f}" for v in d.sort_values("seed")["Batch correction"]))
        lines = [f"### {dataset}", "", "| model | seeds | " + " | ".join(num) + " | per-seed total |",
                 "|---|---|" + "---|" * len(num) + "---|"]
        for model in mean.index:
            cells = []
            for c in num:
                m, s = mean.loc[model, c], sd.loc[model, c]
                fmt = "{:.1f}" if c.startswith("NLL") else "{:.3f}"
                cells.append("" if not np.isfinite(m) else fmt.format(m) + (f" ({fmt.format(s)})" if np.isfinite(s) else ""))
            lines.append(f"| {model} | {seeds[model]} | " + " | ".join(cells) + f" | {per_seed[model]} |")
        out_md.append("\n".join(lines))
        out_json[dataset] = {"mean": mean.to_dict(orient="index"), "sd": sd.to_dict(orient="index"),
                             "records": recs}
    text = "\n\n".join(out_md)
    print(text)
    (RESULTS_DIR / "multi_tables.md").write_text(text + "\n")
    (RESULTS_DIR / "multi_tables.json").write_text(json.dumps(out_json, indent=1, default=float))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="kang")
    p.add_argument("--models", nargs="+", default=["PCA", "scVI", "rv+nn", "rv"],
                   choices=["PCA", *SCVI_MODELS, *RV_MODELS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--epoch-scale", type=float, default=1.0)
    p.add_argument("--n-hidden", type=int, default=128)
    p.add_argument("--n-latent", type=int, default=10)
    p.add_argument("--variant", default="base", help="bench/_variants.py variant of the regularizedvi models")
    p.add_argument("--snare-cells", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--table", action="store_true", help="assemble the tables from bench/results/multi")
    p.add_argument("--table-filter", nargs="*", default=None)
    args = p.parse_args(argv)
    quiet()
    set_threads(args.threads)
    if args.table:
        table(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
