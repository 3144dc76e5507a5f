"""RegularizedMultimodalVI on real paired RNA + ATAC (SNARE-seq adult mouse cortex).

Data: ``../shared/data/snare_cortex_rna.h5ad`` + ``snare_cortex_atac.h5ad`` (10,309 nuclei,
same obs_names; ``obs.library`` 12 libraries = batch, ``obs.cell_type`` 23 types). ATAC: the
``--peaks`` most detected peaks (over all nuclei); ``--cells`` takes a seeded random subset
of nuclei (0 = all). Every model trains ``--epochs`` epochs with ``batch_key = library`` on
one torch thread, one model at a time, and is scored on the same nuclei:

  rv_rna         AmbientRegularizedSCVI on the RNA
  scvi_rna       scvi-tools SCVI on the RNA
  rv_atac        AmbientRegularizedSCVI on the ATAC peaks
                 (NAME:PARTS, e.g. rv_rna:wu0, applies the training-plan parts of a variant)
  joint:VARIANT  RegularizedMultimodalVI (``base`` = defaults; variants in _multimodal_variants.py)
  multivi        scvi-tools MULTIVI (its defaults: lr 1e-4, KL warm-up 50 epochs, early
                 stopping, up to 500 epochs; ``--multivi-epochs`` caps it)
  multivi60      MULTIVI for exactly ``--epochs`` epochs at its defaults otherwise

Scores: 15-NN purity of cell_type, library mixing (normalised entropy of the 30-NN's
libraries), ASW of labels; the slices of a concatenated joint latent (rna / atac) alone;
per-modality reconstruction and KL per cell at the end; with ``--scib`` scib-metrics'
Benchmarker (bio conservation + batch correction, unscaled; pre-integration embedding: PCA
of log-normalised RNA; ``--scib-slices rna`` scores the RNA slice too). One JSON line per (model, seed) is appended to
``bench/results/multimodal_snare/TAG.jsonl``; ``--summary TAG...`` prints the tables.

Usage:
  .venv/bin/python bench/multimodal_snare.py --cells 3500 --models rv_rna joint:base --tag screen
  .venv/bin/python bench/multimodal_snare.py --cells 0 --seeds 0 1 2 --scib --tag full \\
      --models rv_rna scvi_rna rv_atac joint:base joint:poe multivi
  .venv/bin/python bench/multimodal_snare.py --summary screen
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, data_path, environment, pca_embedding, quiet, set_threads  # noqa: E402

OUT_DIR = RESULTS_DIR / "multimodal_snare"
BATCH, LABEL = "library", "cell_type"


# ---------------------------------------------------------------------- data
def load_snare(n_cells: int = 0, n_peaks: int = 10000, cell_seed: int = 0):
    """(rna, atac) AnnData of the same nuclei; atac restricted to the most detected peaks."""
    import anndata as ad

    rna = ad.read_h5ad(data_path("snare_cortex_rna.h5ad"))
    atac = ad.read_h5ad(data_path("snare_cortex_atac.h5ad"))
    assert np.array_equal(rna.obs_names, atac.obs_names)
    detected = np.asarray((atac.X > 0).sum(0)).ravel()
    top = np.sort(np.argsort(-detected, kind="stable")[:n_peaks])
    atac = atac[:, top].copy()
    if n_cells and n_cells < rna.n_obs:
        keep = np.sort(np.random.default_rng(cell_seed).choice(rna.n_obs, n_cells, replace=False))
        rna, atac = rna[keep].copy(), atac[keep].copy()
    for a in (rna, atac):
        for col in (BATCH, LABEL, "cell_class"):
            a.obs[col] = a.obs[col].astype(str).astype("category")
    return rna, atac


def make_mudata(rna, atac):
    from mudata import MuData

    mdata = MuData({"rna": rna.copy(), "atac": atac.copy()})
    mdata.obs = rna.obs[[BATCH, LABEL]].copy().loc[mdata.obs_names]
    return mdata


# ---------------------------------------------------------------------- models
def _timed_train(model, **kwargs) -> float:
    start = time.perf_counter()
    model.train(**kwargs)
    return time.perf_counter() - start


def run_single(kind: str, adata, seed: int, epochs: int, variant: str = "") -> dict:
    """``variant``: training-plan parts of a variant name only (e.g. ``wu0``)."""
    import scvi

    import regularizedvi as rv
    from _multimodal_variants import resolve

    plan = resolve(variant, 1, 1)[1] if variant else {}

    rv.set_seed(seed)
    a = adata.copy()
    if kind == "scvi":
        scvi.model.SCVI.setup_anndata(a, batch_key=BATCH)
        model = scvi.model.SCVI(a)
        secs = _timed_train(model, max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                            plan_kwargs=plan or None)
    else:
        rv.AmbientRegularizedSCVI.setup_anndata(a, batch_key=BATCH)
        model = rv.AmbientRegularizedSCVI(a)
        secs = _timed_train(model, max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                            plan_kwargs=plan or None)
    out = {"latents": {"joint": model.get_latent_representation(a)}, "train_s": secs, "epochs": epochs}
    if kind != "scvi":
        out["terms"] = per_cell_terms(model)
    return out


def per_cell_terms(model) -> dict:
    """Mean per-cell reconstruction and KL terms of a trained regularizedvi model (eval mode)."""
    import torch

    module = model.module
    sums, n = {}, 0
    loader = model._make_data_loader(adata=model.adata, batch_size=512, shuffle=False)
    module.eval()
    with torch.no_grad():
        for tensors in loader:
            _, _, out = module(tensors, loss_kwargs={"kl_weight": 1.0})
            rec = out.reconstruction_loss if isinstance(out.reconstruction_loss, dict) else {"rec": out.reconstruction_loss}
            for key, value in {**rec, **out.kl_local}.items():
                sums[key] = sums.get(key, 0.0) + float(value.sum())
            n += next(iter(rec.values())).shape[0]
    return {k: v / n for k, v in sums.items()}


def run_joint(variant: str, mdata, seed: int, epochs: int, attribution: bool = True) -> dict:
    import regularizedvi as rv
    from _multimodal_variants import build

    rv.set_seed(seed)
    m = mdata.copy()
    rv.RegularizedMultimodalVI.setup_mudata(m, modalities={"rna": "rna", "atac": "atac"}, batch_key=BATCH)
    model, plan_kwargs = build(m, variant, m["rna"].n_vars, m["atac"].n_vars)
    secs = _timed_train(model, max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                        plan_kwargs=plan_kwargs or None)
    latents = {"joint": model.get_latent_representation()}
    if model.module.latent_mode == "concatenation":
        for name in ("rna", "atac"):
            latents[name] = model.get_latent_representation(modality=name)
    out = {"latents": latents, "train_s": secs, "epochs": epochs, "terms": per_cell_terms(model)}
    if attribution:
        start = time.perf_counter()
        table = model.get_modality_attribution(indices=np.arange(min(2000, m.n_obs)))
        out["attribution"] = {"index": list(table.index), "columns": list(table.columns),
                              "values": table.to_numpy().tolist(),
                              "seconds_2000_cells": time.perf_counter() - start}
    if getattr(model.module, "latent_mode", None) == "weighted_mean" and \
            getattr(model.module, "latent_combine", None) is None:
        out["modality_weights"] = model.module.modality_weights().detach().numpy().tolist()
    out["model"] = model
    return out


def run_multivi(mdata, seed: int, max_epochs: int, early_stopping: bool) -> dict:
    import scvi

    import regularizedvi as rv

    rv.set_seed(seed)
    m = mdata.copy()
    scvi.model.MULTIVI.setup_mudata(m, modalities={"rna_layer": "rna", "atac_layer": "atac"}, batch_key=BATCH)
    model = scvi.model.MULTIVI(m)
    secs = _timed_train(model, max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                        early_stopping=early_stopping)
    epochs = int(model.history["elbo_train"].shape[0])
    return {"latents": {"joint": model.get_latent_representation()}, "train_s": secs, "epochs": epochs}


# ---------------------------------------------------------------------- scores
def scores(z, obs, pca=None, scib: bool = False) -> dict:
    from regularizedvi.metrics import batch_mixing_entropy, knn_label_purity, label_silhouette

    out = {"purity15": knn_label_purity(z, obs[LABEL].to_numpy(), k=15),
           "library_mixing": batch_mixing_entropy(z, obs[BATCH].to_numpy(), k=30),
           "asw_label": label_silhouette(z, obs[LABEL].to_numpy())}
    if scib:
        out.update(scib_scores(z, obs, pca))
    return out


def scib_scores(z, obs, pca) -> dict:
    import anndata as ad
    from scib_metrics.benchmark import Benchmarker

    a = ad.AnnData(obs=obs[[BATCH, LABEL]].copy())
    a.obsm["emb"], a.obsm["PCA"] = np.asarray(z, dtype=np.float32), np.asarray(pca, dtype=np.float32)
    bm = Benchmarker(a, batch_key=BATCH, label_key=LABEL, embedding_obsm_keys=["emb"],
                     pre_integrated_embedding_obsm_key="PCA", n_jobs=1, progress_bar=False)
    bm.benchmark()
    df = bm.get_results(min_max_scale=False).drop(index="Metric Type", errors="ignore").astype(float)
    return {f"scib:{k}": float(v) for k, v in df.loc["emb"].items()}


# ---------------------------------------------------------------------- main
def run(args) -> None:
    import logging

    quiet()
    logging.getLogger("scib_metrics").setLevel(logging.ERROR)
    set_threads(1)
    rna, atac = load_snare(args.cells, args.peaks)
    mdata = make_mudata(rna, atac)
    obs = rna.obs
    pca = pca_embedding(rna, 30) if args.scib else None
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{args.tag}.jsonl"
    env = environment()
    print(f"SNARE: {rna.n_obs} nuclei, {rna.n_vars} genes, {atac.n_vars} peaks -> {path}", flush=True)
    for seed in args.seeds:
        for name in args.models:
            t0 = time.perf_counter()
            base, _, variant = name.partition(":")
            if base in ("rv_rna", "scvi_rna", "rv_atac"):  # rv_rna:wu0 = with a plan variant
                res = run_single("scvi" if base.startswith("scvi") else "rv", rna if "rna" in base else atac,
                                 seed, args.epochs, variant)
            elif name.startswith("joint:"):
                res = run_joint(name[6:], mdata, seed, args.epochs, attribution=not args.no_attribution)
            elif name == "multivi":
                res = run_multivi(mdata, seed, args.multivi_epochs, early_stopping=True)
            elif name == "multivi60":
                res = run_multivi(mdata, seed, args.epochs, early_stopping=False)
            else:
                raise SystemExit(f"unknown model {name!r}")
            res.pop("model", None)
            latents = res.pop("latents")
            record = {"model": name, "seed": seed, "cells": int(rna.n_obs), "peaks": int(atac.n_vars),
                      **res, "loadavg": os.getloadavg()[0], "env": env}
            for key, z in latents.items():
                record[key] = scores(z, obs, pca, scib=args.scib and (key == "joint" or key in args.scib_slices))
            with path.open("a") as fh:
                fh.write(json.dumps(record, default=float) + "\n")
            joint = record["joint"]
            extra = "".join(f"  {k} {record[k]['purity15']:.3f}" for k in ("rna", "atac") if k in record)
            bio = f"  scib bio {joint['scib:Bio conservation']:.3f} batch {joint['scib:Batch correction']:.3f}" \
                if "scib:Bio conservation" in joint else ""
            print(f"seed {seed} {name:28s} purity {joint['purity15']:.3f}  mixing {joint['library_mixing']:.3f}  "
                  f"asw {joint['asw_label']:.3f}{extra}{bio}  train {res['train_s']:.0f} s "
                  f"({res['epochs']} ep; {time.perf_counter() - t0:.0f} s all)", flush=True)
            if "terms" in res:
                print("   per cell: " + ", ".join(f"{k} {v:.1f}" for k, v in res["terms"].items()), flush=True)


def summary(tags) -> None:
    rows = []
    for tag in tags:
        for line in (OUT_DIR / f"{tag}.jsonl").read_text().splitlines():
            rows.append(json.loads(line))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cols = [("purity15", "joint"), ("library_mixing", "joint"), ("asw_label", "joint"),
            ("purity15", "rna"), ("purity15", "atac"),
            ("scib:Bio conservation", "joint"), ("scib:Batch correction", "joint"), ("scib:Total", "joint")]
    print("| model | n | " + " | ".join(f"{c}{'' if w == 'joint' else ' (' + w + ' slice)'}" for c, w in cols)
          + " | train s | per-seed purity |")
    print("|---" * (len(cols) + 4) + "|")
    for model in models:
        rs = [r for r in rows if r["model"] == model]
        cells = []
        for c, where in cols:
            vals = [r[where][c] for r in rs if where in r and c in r[where]]
            cells.append(f"{np.mean(vals):.3f}" if vals else "")
        per_seed = ", ".join(f"{r['joint']['purity15']:.3f}" for r in sorted(rs, key=lambda r: r["seed"]))
        print(f"| {model} | {len(rs)} | " + " | ".join(cells)
              + f" | {np.mean([r['train_s'] for r in rs]):.0f} | {per_seed} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=3500, help="random subset of nuclei (0 = all 10,309)")
    parser.add_argument("--peaks", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=["rv_rna", "joint:base"])
    parser.add_argument("--multivi-epochs", type=int, default=500)
    parser.add_argument("--scib", action="store_true")
    parser.add_argument("--scib-slices", nargs="*", default=[], choices=["rna", "atac"],
                        help="with --scib, also score these slices of a concatenated joint latent")
    parser.add_argument("--no-attribution", action="store_true")
    parser.add_argument("--tag", default="screen")
    parser.add_argument("--summary", nargs="+")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        run(args)


if __name__ == "__main__":
    main()
