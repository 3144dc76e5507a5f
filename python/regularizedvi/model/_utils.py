"""Small helpers shared by the model classes."""

from __future__ import annotations

import numpy as np
from scvi.data import AnnDataManager


def n_cats_per_key(manager: AnnDataManager, registry_key: str) -> list[int]:
    """Categories per obs column of a joint categorical field; ``[]`` when unregistered."""
    if registry_key not in manager.data_registry:
        return []
    return [int(n) for n in manager.get_state_registry(registry_key).n_cats_per_key]


def group_log_library_stats(counts, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of log total counts per group (groups without cells: overall stats)."""
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    log_totals = np.log(np.maximum(totals, 1.0))
    means = np.full(n_groups, log_totals.mean(), dtype=np.float32)
    variances = np.full(n_groups, max(log_totals.var(), 1e-4), dtype=np.float32)
    for g in range(n_groups):
        values = log_totals[codes == g]
        if values.size:
            means[g] = values.mean()
            variances[g] = max(values.var(), 1e-4) if values.size > 1 else variances[g]
    return means, variances


def group_mean_profiles(counts, codes: np.ndarray, n_cats_per_key: list[int]) -> np.ndarray:
    """Mean expression profile (rows sum to 1) of the cells of each one-hot column.

    ``codes`` is ``(n_cells, n_keys)``; with no keys, one row for all cells. Categories
    without cells get the overall profile.
    """
    overall = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    overall = overall / max(overall.sum(), 1.0)
    if not n_cats_per_key:
        return overall[None, :]
    rows = []
    codes = np.asarray(codes).reshape(codes.shape[0], -1)
    for key_index, n_cats in enumerate(n_cats_per_key):
        for cat in range(n_cats):
            mask = codes[:, key_index] == cat
            totals = np.asarray(counts[mask].sum(axis=0), dtype=np.float64).ravel() if mask.any() else overall
            rows.append(totals / max(totals.sum(), 1e-12))
    return np.stack(rows)
