"""Scores of an ambient correction against the exact ground truth of a design."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

N_MARKERS = 20


def markers(design, n: int = N_MARKERS) -> dict:
    """Top-``n`` markers per cell type from the CLEAN counts: highest
    log((mean CP10k in type + 0.1) / (max mean CP10k in another type + 0.1)) among genes
    with a type mean of at least 1 CP10k."""
    X = design.clean
    totals = np.asarray(X.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(totals, 1)) @ X
    types = sorted(np.unique(design.cell_type))
    M = np.stack([np.asarray(norm[design.cell_type == t].mean(0)).ravel() for t in types])
    out = {}
    for k, t in enumerate(types):
        other = np.delete(M, k, 0).max(0)
        score = np.log((M[k] + 0.1) / (other + 0.1))
        score[M[k] < 1.0] = -np.inf
        out[t] = np.argsort(-score)[:n]
    return out


def marker_leakage(X, design, marker_sets: dict) -> float:
    """Mean over cell types of: share of the type's marker counts found in cells of other types."""
    X = sp.csr_matrix(X)
    shares = []
    for t, genes in marker_sets.items():
        counts = np.asarray(X[:, genes].sum(1)).ravel()
        total = counts.sum()
        if total > 0:
            shares.append(counts[design.cell_type != t].sum() / total)
    return float(np.mean(shares))


def log_pearson(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    ok = q > 0
    return float(np.corrcoef(np.log(p[ok] + 1e-7), np.log(q[ok]))[0, 1])


def score(design, corrected, marker_sets: dict, soups: np.ndarray | None = None) -> dict:
    """Metrics of one corrected matrix (cells x genes; never more than observed is allowed
    to pass silently: the excess is reported)."""
    Y, clean = design.observed, design.clean
    C = sp.csr_matrix(corrected) if not isinstance(corrected, np.ndarray) else corrected
    obs_tot = np.asarray(Y.sum(1)).ravel()
    cor_tot = np.asarray(C.sum(1)).ravel()
    est = np.array([1 - cor_tot[design.sample == s].sum() / obs_tot[design.sample == s].sum()
                    for s in design.samples])
    diff = sp.csr_matrix(C) - clean if not isinstance(C, np.ndarray) else C - clean.toarray()
    err = float(abs(diff).sum() / clean.sum())
    out = {
        "fraction_est": est.tolist(),
        "fraction_true": design.true_fraction.tolist(),
        "fraction_mae": float(np.mean(np.abs(est - design.true_fraction))),
        "fraction_max": float(np.max(np.abs(est - design.true_fraction))),
        "count_error": err,
        "leakage": marker_leakage(C, design, marker_sets),
    }
    if soups is not None:
        out["soup_logr"] = float(np.mean([log_pearson(soups[i], design.soups[i])
                                          for i in range(len(design.samples))]))
    return out


def latent_scores(latent: np.ndarray, design, k: int = 15) -> dict:
    """kNN purity of cell types and sample-mixing entropy (normalised to [0, 1]) on a latent."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(latent)
    idx = nn.kneighbors(latent, return_distance=False)[:, 1:]
    purity = float((design.cell_type[idx] == design.cell_type[:, None]).mean())
    samples = np.asarray(design.samples)
    pos = {s: i for i, s in enumerate(design.samples)}
    codes = np.array([pos[s] for s in design.sample])
    ent = []
    for row in codes[idx]:
        p = np.bincount(row, minlength=samples.size) / k
        p = p[p > 0]
        ent.append(-(p * np.log(p)).sum())
    mixing = float(np.mean(ent) / np.log(min(samples.size, k)))
    return {"knn_purity": purity, "sample_mixing": mixing}
