"""Simulated paired two-modality data where each modality carries a different partition.

Built from :func:`regularizedvi.simulate.simulate_counts`: modality A ("rna") is one
simulation with ``n_types_a`` cell types (partition P1); modality B ("atac") is a second,
independent simulation with ``n_types_b`` types (partition P2), whose cells are paired with
A's cells within the same batch at random. P1 and P2 are therefore independent given the
batch: only a model that reads both modalities can separate both partitions.

The returned MuData has ``mdata.obs['p1']``, ``['p2']`` and ``['batch']``; each modality
keeps the ground truth columns of ``simulate_counts`` (``obs['true_library']``,
``var['true_theta']``, ...). Optionally a fraction of cells lose modality B (all-zero row,
flagged in ``obs['has_b']``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regularizedvi.simulate import simulate_counts


def simulate_multiome(
    n_cells: int = 1000,
    n_genes: int = 300,
    n_peaks: int = 400,
    n_types_a: int = 4,
    n_types_b: int = 3,
    n_batches: int = 2,
    missing_b_fraction: float = 0.0,
    modality_names: tuple[str, str] = ("rna", "atac"),
    seed: int = 0,
):
    """Simulate a MuData with modalities A (partition P1) and B (partition P2).

    Parameters
    ----------
    n_cells, n_genes, n_peaks
        Cells, and features of A and of B (features left empty are dropped).
    n_types_a, n_types_b
        Number of types of P1 (in A) and of P2 (in B).
    n_batches
        Batches, shared by both modalities (each has its own ambient and batch effects).
    missing_b_fraction
        Fraction of cells whose B row is set to zero (cells without modality B).
    modality_names
        Names of the two modalities in ``mdata.mod``.
    seed
        Random seed (everything is reproducible).
    """
    from mudata import MuData

    rng = np.random.default_rng(seed)
    a = simulate_counts(n_cells=n_cells, n_genes=n_genes, n_cell_types=n_types_a, n_batches=n_batches,
                        markers_per_type=max(5, n_genes // (3 * n_types_a)), seed=seed)
    # B: a larger pool (ATAC-like: more features, fewer counts per feature), then paired.
    b_pool = simulate_counts(n_cells=4 * n_cells, n_genes=n_peaks, n_cell_types=n_types_b,
                             n_batches=n_batches, markers_per_type=max(5, n_peaks // (3 * n_types_b)),
                             library_log_mean=7.5, theta_range=(2.0, 50.0), seed=seed + 1000)
    pick = np.empty(a.n_obs, dtype=int)
    for batch in a.obs["batch"].cat.categories:
        cells = np.flatnonzero(a.obs["batch"].to_numpy() == batch)
        pool = np.flatnonzero(b_pool.obs["batch"].to_numpy() == batch)
        if len(pool) < len(cells):
            raise RuntimeError("not enough simulated B cells in a batch; increase n_cells")
        pick[cells] = rng.choice(pool, len(cells), replace=False)
    b = b_pool[pick].copy()
    b.obs_names = a.obs_names
    if missing_b_fraction > 0:
        missing = rng.random(b.n_obs) < missing_b_fraction
        x = b.X.tolil()
        x[np.flatnonzero(missing)] = 0
        b.X = x.tocsr()
        b.X.eliminate_zeros()
    else:
        missing = np.zeros(b.n_obs, dtype=bool)
    b = b[:, np.asarray(b.X.sum(0)).ravel() > 0].copy()
    b.var_names = [f"peak_{i}" for i in range(b.n_vars)]
    obs = pd.DataFrame(
        {
            "p1": a.obs["cell_type"].astype(str).str.replace("type", "P1").to_numpy(),
            "p2": b.obs["cell_type"].astype(str).str.replace("type", "P2").to_numpy(),
            "batch": a.obs["batch"].to_numpy(),
            "has_b": ~missing,
        },
        index=a.obs_names,
    )
    for col in ("p1", "p2", "batch"):
        obs[col] = pd.Categorical(obs[col])
    mdata = MuData({modality_names[0]: a, modality_names[1]: b})
    mdata.obs = obs.loc[mdata.obs_names]
    return mdata
