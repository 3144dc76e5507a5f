"""Semi-synthetic ambient-RNA designs with exact ground truth (bench/ambient_bench.py).

Real cells of ../shared/data are the clean truth. They are split into pseudo-samples
(ambient groups; per cell type a Dirichlet share per sample, so compositions differ), and
each sample gets counts drawn from a soup of its own at a per-sample fraction of each cell's
counts (per-cell spread around it). The soup is NOT the cells' mean profile: a mixture of the
clean cell-type profiles with weights that differ from the sample's composition
(``mix``: half the sample composition, half a Dirichlet(1) draw), times a gene-wise
log-normal perturbation; or the measured empty-droplet soup of pbmc4k (``soup="empty"``),
perturbed per sample. Since the contamination is added here, clean counts, contamination
counts, each sample's soup and fraction are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from _common import data_path

# name: dataset, label column, cells cap per type, total cells cap, genes, samples,
# per-sample fractions (target share of each cell's observed counts), soup kind, decoder covs
_FACS4 = dict(file="pbmc_facs.h5ad", label="cell_type", per_type=200, n_genes=1000,
              fractions=[0.05, 0.12, 0.22, 0.35], soup="mix")
_PLANTED = dict(samples=[1, 3], n_genes=40, fold=4.0, floor=0.5)
DESIGNS = {
    "facs4": _FACS4,
    "kang4": dict(file="kang_ifnb.h5ad", label="cell_type", per_type=400, n_genes=1000,
                  fractions=[0.02, 0.05, 0.10, 0.20], soup="mix", sample_column="sample_id",
                  condition_column="condition"),
    "snare16": dict(file="snare_cortex_rna.h5ad", label="cell_type", per_type=130, n_genes=1000,
                    fractions=list(np.round(np.linspace(0.02, 0.40, 16), 3)), soup="mix"),
    "pbmc4k3": dict(file="pbmc4k_soupx.h5ad", label="cell_type", per_type=400, n_genes=1000,
                    fractions=[0.08, 0.18, 0.30], soup="empty"),
    "cellbench2": dict(file="cellbench_mixology.h5ad", label="cell_line", per_type=250, n_genes=1000,
                       fractions=[0.15, 0.40], soup="mix"),
    # facs4 with a planted condition: in every cell of samples s1 and s3 ("stim") 40 genes gain
    # Poisson((fold - 1) x their count + floor) counts, the same in every cell type (known exactly)
    "facs4cond": dict(_FACS4, planted_condition=_PLANTED),
    # the same, but each sample's soup mixes the profiles of cells of its own condition
    "facs4condsoup": dict(_FACS4, planted_condition=_PLANTED, soup_by_condition=True),
    "facs8nn": dict(file="pbmc_facs.h5ad", label="cell_type", per_type=200, n_genes=1000,
                    fractions=[0.03, 0.06, 0.09, 0.13, 0.17, 0.21, 0.25, 0.30], soup="mix", nn=True),
}
CELL_SPREAD_SD = 0.3  # per-cell log-normal spread of the contamination fraction
SOUP_PERTURB_SD = 0.3  # gene-wise log-normal perturbation of a mixture soup
EMPTY_PERTURB_SD = 0.2  # per-sample perturbation of the measured empty-droplet soup
EMPTY_PROFILE_COUNTS = 200_000  # counts of the "measured" empty-droplet profile given to methods


@dataclass
class Design:
    name: str
    seed: int
    observed: sp.csr_matrix  # cells x genes, float64 counts
    clean: sp.csr_matrix
    contamination: sp.csr_matrix
    sample: np.ndarray  # str per cell
    cell_type: np.ndarray  # str per cell
    genes: np.ndarray
    samples: list  # sample names (order of soups / fractions)
    soups: np.ndarray  # samples x genes, rows sum to 1 (the truth)
    true_fraction: np.ndarray  # per sample: contamination counts / observed counts
    empty_profiles: np.ndarray | None = None  # samples x genes, a finite-count estimate of the soups
    condition: np.ndarray | None = None  # str per cell: a biological condition that differs between samples
    nn: bool = False
    meta: dict = field(default_factory=dict)


def _select_genes(X: sp.csr_matrix, n_genes: int) -> np.ndarray:
    """Half the genes by mean count (what carries most counts, and most soup), the rest by
    normalised dispersion of log CP10k (markers) among genes in >= 1% of cells."""
    totals = np.asarray(X.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(totals, 1)) @ X
    logn = norm.copy()
    logn.data = np.log1p(logn.data)
    mean = np.asarray(logn.mean(0)).ravel()
    sq = logn.copy()
    sq.data **= 2
    var = np.asarray(sq.mean(0)).ravel() - mean**2
    detected = np.asarray((X > 0).mean(0)).ravel() >= 0.01
    disp = np.where(detected, var / np.maximum(mean, 1e-6), -np.inf)
    # bin by mean, z-score dispersion within bins (Seurat-style), keep the top n
    bins = np.digitize(mean, np.quantile(mean[detected], np.linspace(0, 1, 21)[1:-1]))
    z = np.full_like(disp, -np.inf)
    for b in np.unique(bins[detected]):
        m = detected & (bins == b)
        d = disp[m]
        z[m] = (d - d.mean()) / (d.std() + 1e-9)
    by_mean = list(np.argsort(-np.asarray(X.mean(0)).ravel())[: n_genes // 2])
    chosen = set(by_mean)
    for g in np.argsort(-z):
        if len(chosen) >= n_genes:
            break
        chosen.add(int(g))
    return np.sort(np.fromiter(chosen, int))


def _profiles(X: sp.csr_matrix, labels: np.ndarray, types: list) -> np.ndarray:
    P = np.stack([np.asarray(X[labels == t].sum(0)).ravel() for t in types])
    return P / P.sum(1, keepdims=True)


def make_design(name: str, seed: int) -> Design:
    import anndata as ad

    spec = DESIGNS[name]
    rng = np.random.default_rng(1000 + seed)
    a = ad.read_h5ad(data_path(spec["file"]))
    labels_all = a.obs[spec["label"]].astype(str).to_numpy()
    keep_types = [t for t in np.unique(labels_all) if t != "?" and (labels_all == t).sum() >= 15]
    cells = []
    for t in keep_types:
        idx = np.flatnonzero(labels_all == t)
        cells.append(np.sort(rng.choice(idx, min(spec["per_type"], idx.size), replace=False)))
    cells = np.sort(np.concatenate(cells))
    X = sp.csr_matrix(a.X[cells]).astype(np.float64)
    genes_idx = _select_genes(X, spec["n_genes"])
    empty_soup = None
    if spec["soup"] == "empty":
        empty_soup = a.var["soup_counts"].to_numpy(float)[genes_idx]
    X = sp.csr_matrix(X[:, genes_idx])
    keep = np.asarray(X.sum(1)).ravel() >= 20
    X, cells = X[keep], cells[keep]
    labels = labels_all[cells]
    genes = np.asarray(a.var_names)[genes_idx]
    types = [t for t in keep_types if (labels == t).any()]
    fractions = np.asarray(spec["fractions"], float)
    n_samples = fractions.size
    samples = [f"s{i}" for i in range(n_samples)]

    # sample of each cell: a real sample column, or per type a Dirichlet(2) share per sample
    if "sample_column" in spec:
        real = a.obs[spec["sample_column"]].astype(str).to_numpy()[cells]
        levels = sorted(np.unique(real))
        assert len(levels) == n_samples, (levels, n_samples)
        s_idx = np.array([levels.index(v) for v in real])
    else:
        s_idx = np.empty(labels.size, int)
        for t in types:
            m = np.flatnonzero(labels == t)
            share = rng.dirichlet(np.full(n_samples, 2.0))
            s_idx[m] = rng.choice(n_samples, m.size, p=share)
    condition = None
    if "condition_column" in spec:
        condition = a.obs[spec["condition_column"]].astype(str).to_numpy()[cells]
    elif "planted_condition" in spec:  # a response program in the "stim" samples, part of the clean truth
        pc = spec["planted_condition"]
        stim = np.isin(s_idx, pc["samples"])
        detected = np.flatnonzero(np.asarray((X > 0).mean(0)).ravel() >= 0.05)
        program = rng.choice(detected, pc["n_genes"], replace=False)
        X = X.tolil()
        block = X[np.flatnonzero(stim)][:, program].toarray()
        X[np.ix_(np.flatnonzero(stim), program)] = block + rng.poisson((pc["fold"] - 1) * block + pc["floor"])
        X = sp.csr_matrix(X)
        condition = np.where(stim, "stim", "ctrl")
    P = _profiles(X, labels, types)
    P_by_condition = {}  # soup_by_condition: per condition, its cells' type profiles (pooled where it lacks a type)
    if spec.get("soup_by_condition"):
        for c in np.unique(condition):
            own = condition == c
            P_by_condition[c] = np.stack([_profiles(X[own], labels[own], [t])[0] if (own & (labels == t)).any()
                                          else P[k] for k, t in enumerate(types)])

    soups = []
    for s in range(n_samples):
        if spec["soup"] == "empty":
            base = empty_soup / empty_soup.sum()
            soup = base * np.exp(EMPTY_PERTURB_SD * rng.standard_normal(base.size))
        else:
            comp = np.array([(labels[s_idx == s] == t).mean() for t in types])
            w = 0.5 * comp + 0.5 * rng.dirichlet(np.ones(len(types)))
            Ps = P_by_condition[condition[s_idx == s][0]] if P_by_condition else P
            soup = (w @ Ps) * np.exp(SOUP_PERTURB_SD * rng.standard_normal(P.shape[1]))
        soups.append(soup / soup.sum())
    soups = np.stack(soups)

    clean_totals = np.asarray(X.sum(1)).ravel()
    f_cell = fractions[s_idx] * np.exp(CELL_SPREAD_SD * rng.standard_normal(labels.size) - CELL_SPREAD_SD**2 / 2)
    f_cell = np.clip(f_cell, 0.0, 0.8)
    n_contam = rng.poisson(clean_totals * f_cell / (1 - f_cell))
    rows = []
    for i in range(labels.size):
        rows.append(rng.multinomial(n_contam[i], soups[s_idx[i]]))
    C = sp.csr_matrix(np.stack(rows).astype(np.float64))
    Y = sp.csr_matrix(X + C)
    obs_tot = np.asarray(Y.sum(1)).ravel()
    c_tot = np.asarray(C.sum(1)).ravel()
    true_fraction = np.array([c_tot[s_idx == s].sum() / obs_tot[s_idx == s].sum() for s in range(n_samples)])
    empty_profiles = None
    if spec["soup"] == "empty":
        empty_profiles = np.stack([rng.multinomial(EMPTY_PROFILE_COUNTS, p) for p in soups]).astype(float)
        empty_profiles /= empty_profiles.sum(1, keepdims=True)
    return Design(
        name=name, seed=seed, observed=Y, clean=sp.csr_matrix(X), contamination=C,
        sample=np.array(samples)[s_idx], cell_type=labels, genes=genes, samples=samples,
        soups=soups, true_fraction=true_fraction, empty_profiles=empty_profiles,
        condition=condition,
        nn=bool(spec.get("nn", False)),
        meta={"n_cells": int(labels.size), "n_genes": int(genes.size), "n_types": len(types),
              "n_samples": n_samples, "dataset": spec["file"], "soup": spec["soup"],
              "median_observed_total": float(np.median(obs_tot))},
    )


def mean_profiles(design: Design) -> np.ndarray:
    """Each sample's mean observed profile (what a method without empty droplets can use)."""
    Y = design.observed
    rows = [np.asarray(Y[design.sample == s].sum(0)).ravel() for s in design.samples]
    P = np.stack(rows)
    return P / P.sum(1, keepdims=True)
