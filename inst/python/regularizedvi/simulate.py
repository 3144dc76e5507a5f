"""Simulated counts with known ground truth: cell types, batches, ambient RNA, dispersion.

Generative process (per batch ``b``, cell ``n`` of type ``k``)::

    profile_k      = base * marker_fold_k                     (normalized to sum 1)
    signal_n       = profile_k * batch_fold_b                 (multiplicative batch effect
                                                               on a subset of genes)
    ambient_b      = mixture of the batch's cell profiles + noise  (normalized)
    mean_n         = L_n * ((1 - c_b) * signal_n / sum(signal_n) + c_b * ambient_b)
    x_ng           ~ NegativeBinomial(mean_ng, theta_g)

Everything true is stored in the returned AnnData: ``obs['cell_type']``, ``obs['batch']``,
``obs['true_library']``, ``obs['true_contamination']``, ``var['true_theta']``,
``var['is_marker']``, ``var['batch_affected']``, ``varm['true_ambient']`` (genes x batches,
columns sum to 1), ``varm['true_profiles']`` (genes x cell types) and
``uns['marker_genes']`` (cell type -> its up-regulated genes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse


def marker_profiles(base: np.ndarray, markers, marker_fold: float) -> np.ndarray:
    """Cell-type expression profiles, types x genes, each row summing to 1: ``base`` (one
    value per gene) with type ``k``'s genes ``markers[k]`` (indices) multiplied by
    ``marker_fold``. Shared by :func:`simulate_counts` and the benchmarks' simulations."""
    profiles = np.tile(base, (len(markers), 1))
    for k, idx in enumerate(markers):
        profiles[k, idx] *= marker_fold
    return profiles / profiles.sum(1, keepdims=True)


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    """``size`` values log-uniform between ``bounds[0]`` and ``bounds[1]`` (one
    ``rng.uniform`` draw), e.g. inverse dispersions per gene."""
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def simulate_counts(
    n_cells: int = 2000,
    n_genes: int = 1000,
    n_cell_types: int = 5,
    n_batches: int = 3,
    contamination: tuple[float, float] = (0.05, 0.25),
    markers_per_type: int = 30,
    marker_fold: float = 8.0,
    batch_affected_fraction: float = 0.1,
    batch_fold_sd: float = 0.7,
    library_log_mean: float = 8.0,
    library_log_sd: float = 0.4,
    theta_range: tuple[float, float] = (1.0, 30.0),
    seed: int = 0,
):
    """Simulate a count AnnData (CSR float32 counts in ``X``) with its ground truth.

    Parameters
    ----------
    n_cells, n_genes, n_cell_types, n_batches
        Sizes. Cell types are spread unevenly (and differently) across batches.
    contamination
        Range of the per-batch ambient fraction ``c_b`` (evenly spaced).
    markers_per_type, marker_fold
        Each type up-regulates its own markers by ``marker_fold``.
    batch_affected_fraction, batch_fold_sd
        Share of genes with a multiplicative batch effect, and its log-scale spread.
    library_log_mean, library_log_sd
        Log-normal total counts per cell (batch means differ by +-0.3).
    theta_range
        Per-gene inverse dispersion, log-uniform in this range.
    seed
        Random seed (everything is reproducible).
    """
    import anndata

    if markers_per_type * n_cell_types > n_genes:
        raise ValueError("markers_per_type * n_cell_types must not exceed n_genes.")
    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean=0.0, sigma=1.5, size=n_genes)
    genes = rng.permutation(n_genes)
    markers = [genes[k * markers_per_type:(k + 1) * markers_per_type] for k in range(n_cell_types)]
    marker_genes = {f"type_{k}": idx for k, idx in enumerate(markers)}
    profiles = np.ascontiguousarray(marker_profiles(base, markers, marker_fold).T)  # genes x types

    batch_of_cell = rng.integers(0, n_batches, n_cells)
    composition = rng.dirichlet(np.full(n_cell_types, 2.0), size=n_batches)
    type_of_cell = np.array([rng.choice(n_cell_types, p=composition[b]) for b in batch_of_cell])

    affected = rng.random(n_genes) < batch_affected_fraction
    batch_fold = np.ones((n_batches, n_genes))
    batch_fold[:, affected] = rng.lognormal(0.0, batch_fold_sd, size=(n_batches, affected.sum()))

    ambient = profiles @ composition.T  # genes x batches: what lysed cells release
    ambient = ambient * rng.lognormal(0.0, 0.3, size=ambient.shape)
    ambient = ambient / ambient.sum(0, keepdims=True)
    c_batch = np.linspace(contamination[0], contamination[1], n_batches)

    lib_shift = np.linspace(-0.3, 0.3, n_batches)
    library = rng.lognormal(library_log_mean + lib_shift[batch_of_cell], library_log_sd)
    theta = log_uniform(rng, theta_range, n_genes)

    signal = profiles[:, type_of_cell].T * batch_fold[batch_of_cell]
    signal = signal / signal.sum(1, keepdims=True)
    c = c_batch[batch_of_cell][:, None]
    mean = library[:, None] * ((1 - c) * signal + c * ambient[:, batch_of_cell].T)
    counts = rng.poisson(rng.gamma(theta[None, :], mean / theta[None, :]))

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{k}" for k in type_of_cell]),
            "batch": pd.Categorical([f"batch_{b}" for b in batch_of_cell]),
            "true_library": library,
            "true_contamination": c[:, 0],
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {
            "true_theta": theta,
            "is_marker": np.isin(np.arange(n_genes), np.concatenate(list(marker_genes.values()))),
            "batch_affected": affected,
        },
        index=[f"gene_{g}" for g in range(n_genes)],
    )
    adata = anndata.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.varm["true_ambient"] = ambient
    adata.varm["true_profiles"] = profiles
    adata.uns["marker_genes"] = {k: var.index[v].tolist() for k, v in marker_genes.items()}
    adata.uns["batch_categories"] = [f"batch_{b}" for b in range(n_batches)]
    # drop genes/cells that came out empty so the data passes the model's input checks
    keep_genes = np.asarray(adata.X.sum(0)).ravel() > 0
    keep_cells = np.asarray(adata.X.sum(1)).ravel() > 0
    return adata[keep_cells, keep_genes].copy()
