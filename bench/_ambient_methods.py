"""Ambient-correction methods run by bench/ambient_bench.py on one design.

Each returns ``{"corrected": cells x genes, "soups": samples x genes or None,
"seconds": float, "latent": array or None, ...}``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from _common import BENCH_DIR, REPO_ROOT, RESULTS_DIR
from _ambient_designs import mean_profiles

RLIB = REPO_ROOT / "build" / "Rlib-seurat5"


def _adata(design):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"sample": pd.Categorical(design.sample, categories=design.samples),
                        "cell_type": design.cell_type},
                       index=[f"c{i}" for i in range(design.observed.shape[0])])
    return ad.AnnData(X=sp.csr_matrix(design.observed, dtype=np.float32), obs=obs,
                      var=pd.DataFrame(index=design.genes.astype(str)))


def pd_categorical(codes: np.ndarray):
    import pandas as pd

    return pd.Categorical([f"l{c}" for c in codes])


def sample_codes(design) -> np.ndarray:
    """Index of each cell's sample in ``design.samples``."""
    pos = {s: i for i, s in enumerate(design.samples)}
    return np.array([pos[s] for s in design.sample])


def none(design, **_):
    return {"corrected": design.observed, "soups": mean_profiles(design), "seconds": 0.0}


def oracle(design, **_):
    """Knows each sample's soup and (realised) fraction f_s: removes exactly f_s N_n counts
    from each cell, min(x_g, lam soup_g) per gene with lam found per cell (SoupX's
    "subtraction" with the true soup and fraction)."""
    Y = design.observed.toarray()
    idx = sample_codes(design)
    target = design.true_fraction[idx] * Y.sum(1)
    soup = design.soups[idx]
    lo, hi = np.zeros(len(Y)), np.full(len(Y), 1.0)
    while True:  # bracket: removed(hi) >= target (or everything removed)
        short = np.minimum(Y, hi[:, None] * soup).sum(1) < target - 1e-9
        if not short.any() or hi.max() > 1e12:
            break
        hi[short] *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        over = np.minimum(Y, mid[:, None] * soup).sum(1) > target
        hi, lo = np.where(over, mid, hi), np.where(over, lo, mid)
    corrected = Y - np.minimum(Y, lo[:, None] * soup)
    return {"corrected": sp.csr_matrix(corrected), "soups": design.soups, "seconds": 0.0}


def soupx(design, soup_source: str = "mean", **_):
    """SoupX autoEstCont with the true cell types as clusters, channel by channel; soup = each
    sample's mean observed profile ("mean") or its measured empty-droplet profile ("empty")."""
    import pandas as pd
    from scipy.io import mmread, mmwrite

    soups = mean_profiles(design) if soup_source == "mean" else design.empty_profiles
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS_DIR, prefix="soupx_") as tmp:
        tmp = Path(tmp)
        mmwrite(str(tmp / "counts.mtx"), sp.csc_matrix(design.observed.T))
        (tmp / "genes.txt").write_text("\n".join(map(str, design.genes)) + "\n")
        pd.DataFrame({"cell": [f"c{i}" for i in range(design.observed.shape[0])],
                      "sample": design.sample, "cluster": design.cell_type}).to_csv(tmp / "cells.csv", index=False)
        for s, p in zip(design.samples, soups):
            pd.DataFrame({"soup": p}).to_csv(tmp / f"soup_{s}.csv", index=False)
        env = dict(os.environ, R_LIBS=str(RLIB))
        start = time.perf_counter()
        run = subprocess.run(["Rscript", str(BENCH_DIR / "ambient_soupx.R"), str(tmp)], env=env,
                             capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            raise RuntimeError(f"SoupX failed:\n{run.stderr[-3000:]}")
        corrected = sp.csr_matrix(mmread(str(tmp / "corrected.mtx")).T)
        rho = pd.read_csv(tmp / "rho.csv").set_index("sample")["rho"]
    return {"corrected": corrected, "soups": soups, "seconds": seconds,
            "rho": [float(rho.get(s, np.nan)) for s in design.samples]}


def scar(design, soup_source: str = "mean", seed: int = 0, epochs: int | None = None, **_):
    """scvi-tools' SCAR, one model per sample (its ambient profile is one vector), defaults;
    corrected = get_denoised_counts() (its API) and the posterior-share variant
    x * native / (native + ambient) reported as ``corrected_share``."""
    import scvi
    import torch

    soups = mean_profiles(design) if soup_source == "mean" else design.empty_profiles
    a_all = _adata(design)
    denoised = np.zeros(design.observed.shape, dtype=np.float32)
    share = np.zeros(design.observed.shape, dtype=np.float32)
    noise = np.zeros(design.observed.shape[0])
    start = time.perf_counter()
    for s, p in zip(design.samples, soups):
        rows = np.flatnonzero(design.sample == s)
        a = a_all[rows].copy()
        scvi.settings.seed = seed
        scvi.external.SCAR.setup_anndata(a)
        model = scvi.external.SCAR(a, ambient_profile=p.astype(np.float32))
        model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
        denoised[rows] = model.get_denoised_counts()
        module = model.module
        module.eval()
        x = torch.as_tensor(a.X.toarray())
        with torch.no_grad():
            inf = module.inference(x, torch.zeros(x.shape[0], 1))
            gen = module.generative(inf["z"] if "z" in inf else inf["qz"].loc, inf["library"],
                                    torch.zeros(x.shape[0], 1))
            native = gen["px"].scale if hasattr(gen["px"], "scale") and gen["px"].scale is not None \
                else gen["px"].probs
            amb = gen["pamb_scale"]
            share[rows] = (x * native / (native + amb).clamp_min(1e-12)).numpy()
            noise[rows] = (amb.sum(-1) / (native + amb).sum(-1)).numpy()
    seconds = time.perf_counter() - start
    return {"corrected": sp.csr_matrix(denoised), "corrected_share": sp.csr_matrix(share),
            "soups": soups, "seconds": seconds}


def regularizedvi(design, variant: str = "default", seed: int = 0, epochs: int | None = None,
                  heldout: np.ndarray | None = None, **_):
    """``AmbientRegularizedSCVI`` as documented (``batch_key="sample"``, decoder covariates
    ``nn_conditioning_covariate_keys=["sample"]`` in the designs that have them), with a
    bench variant (bench/_ambient_variants.py) applied."""
    import scvi

    import _ambient_variants as V

    a = _adata(design)
    spec = V.build(variant)
    seed = seed + spec.model_seed_offset  # the design keeps its own seed
    scvi.settings.seed = seed
    setup = {"batch_key": "sample"}
    if design.nn:
        setup["nn_conditioning_covariate_keys"] = ["sample"]
    setup.update(spec.setup_kwargs)
    first_seconds = 0.0
    if spec.adv_labels:  # the adversary's labels (the package's labels_key)
        latent = None
        if spec.adv_labels.startswith("zclu"):  # two stages: clusters of a default model's latent
            first = regularizedvi(design, "default", seed=seed, epochs=epochs, heldout=heldout)
            latent, first_seconds = first["latent"], first["seconds"]
            scvi.settings.seed = seed
        a.obs[V.ADV_LABEL] = pd_categorical(V.adversary_labels(design, spec.adv_labels, seed, latent))
        setup["labels_key"] = V.ADV_LABEL
    spec.model_cls.setup_anndata(a, **setup)
    model_kwargs = dict(spec.model_kwargs)
    if spec.measured or spec.truesoup:
        import pandas as pd

        if spec.measured and design.empty_profiles is None:
            raise ValueError(f"design {design.name} has no empty-droplet profile")
        shapes = design.soups if spec.truesoup else design.empty_profiles
        model_kwargs["ambient_profile"] = pd.DataFrame(shapes.T, index=a.var_names, columns=list(design.samples))
    model = spec.model_cls(a, **model_kwargs)
    spec.after_init(model, design)
    train_kwargs = dict(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                        plan_kwargs=spec.plan_kwargs or None)
    if heldout is not None:
        train_idx = np.setdiff1d(np.arange(a.n_obs), heldout)
        train_kwargs["datasplitter_kwargs"] = {"external_indexing": [train_idx, heldout, np.array([], int)]}
    start = time.perf_counter()
    model.train(**train_kwargs)
    seconds = time.perf_counter() - start + first_seconds
    corrected = model.get_ambient_corrected_counts()
    out = {"corrected": corrected, "seconds": seconds,
           "latent": model.get_latent_representation(), "epochs": int(model.history["elbo_train"].shape[0])
           if getattr(model, "history", None) is not None and "elbo_train" in model.history else None}
    if heldout is not None:
        out["heldout_nll"] = float(model.get_reconstruction_error(a, indices=heldout)["reconstruction_loss"])
    out.update(spec.report(model, design))
    return out


def scvi_heldout(design, seed: int = 0, epochs: int | None = None, heldout=None, **_):
    """scvi-tools SCVI (batch_key=sample) held-out reconstruction NLL: the anchor of the NLL check."""
    import scvi

    a = _adata(design)
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(a, batch_key="sample")
    model = scvi.model.SCVI(a)
    train_idx = np.setdiff1d(np.arange(a.n_obs), heldout)
    start = time.perf_counter()
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False,
                datasplitter_kwargs={"external_indexing": [train_idx, heldout, np.array([], int)]})
    seconds = time.perf_counter() - start
    return {"heldout_nll": float(model.get_reconstruction_error(a, indices=heldout)["reconstruction_loss"]),
            "seconds": seconds, "latent": model.get_latent_representation()}
