"""Small helpers shared by the model classes."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scvi.data import AnnDataManager


def n_cats_per_key(manager: AnnDataManager, registry_key: str) -> list[int]:
    """Categories per obs column of a joint categorical field; ``[]`` when unregistered."""
    if registry_key not in manager.data_registry:
        return []
    return [int(n) for n in manager.get_state_registry(registry_key).n_cats_per_key]


def row_totals(counts) -> np.ndarray:
    """Total count of each row (cell), float64."""
    return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()


def log_library_stats(totals: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of log total counts per group (groups without cells: overall stats)."""
    log_totals = np.log(np.maximum(totals, 1.0))
    means = np.full(n_groups, log_totals.mean(), dtype=np.float32)
    variances = np.full(n_groups, max(log_totals.var(), 1e-4), dtype=np.float32)
    for g in range(n_groups):
        values = log_totals[codes == g]
        if values.size:
            means[g] = values.mean()
            variances[g] = max(values.var(), 1e-4) if values.size > 1 else variances[g]
    return means, variances


def group_log_library_stats(counts, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of log total counts per group (groups without cells: overall stats)."""
    return log_library_stats(row_totals(counts), codes, n_groups)


def _codes_2d(codes) -> np.ndarray:
    codes = np.asarray(codes)
    return codes[:, None] if codes.ndim == 1 else codes


def feature_sums(counts, codes: np.ndarray, n_cats_per_key: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature totals of all rows, and of the rows of each one-hot column (float64).

    Returns ``(overall, per_category)``: ``(n_features,)`` and ``(sum(n_cats_per_key),
    n_features)``. Sums over row blocks add up to the sums over the whole matrix. The
    per-category products run over ``C.STATISTICS_BLOCK_ROWS`` rows at a time: scipy
    casts float32 counts to float64 for the product, so only a block is ever copied.
    """
    from regularizedvi import _constants as C

    overall = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    n_rows = counts.shape[0]
    codes = _codes_2d(codes)
    per_category = np.zeros((sum(n_cats_per_key), overall.size))
    step = C.STATISTICS_BLOCK_ROWS
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        block = counts[start:stop]
        offset = 0
        for key_index, n_cats in enumerate(n_cats_per_key):
            # indicator (categories x rows) @ counts: every category's totals in one product
            indicator = sp.csr_matrix(
                (np.ones(stop - start), (codes[start:stop, key_index].astype(np.int64), np.arange(stop - start))),
                shape=(n_cats, stop - start),
            )
            sums = indicator @ block
            per_category[offset:offset + n_cats] += sums.toarray() if sp.issparse(sums) else np.asarray(sums)
            offset += n_cats
    return overall, per_category


def category_sizes(codes: np.ndarray, n_cats_per_key: list[int]) -> np.ndarray:
    """Cells in each one-hot column (the rows of :func:`feature_sums`' ``per_category``)."""
    codes = _codes_2d(codes)
    sizes = [np.bincount(codes[:, k].astype(np.int64), minlength=n)[:n] for k, n in enumerate(n_cats_per_key)]
    return np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)


def profiles_from_sums(overall: np.ndarray, per_category: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean profiles (rows sum to 1) from :func:`feature_sums`; categories without cells
    (``sizes == 0``) get the overall profile; with no categories, one overall row."""
    overall = overall / max(overall.sum(), 1.0)
    if per_category.shape[0] == 0:
        return overall[None, :]
    rows = [totals / max(totals.sum(), 1e-12) if n else overall for totals, n in zip(per_category, sizes)]
    return np.stack(rows)


def group_mean_profiles(counts, codes: np.ndarray, n_cats_per_key: list[int]) -> np.ndarray:
    """Mean expression profile (rows sum to 1) of the cells of each one-hot column.

    ``codes`` is ``(n_cells, n_keys)``; with no keys, one row for all cells. Categories
    without cells get the overall profile.
    """
    overall, per_category = feature_sums(counts, codes, n_cats_per_key)
    return profiles_from_sums(overall, per_category, category_sizes(codes, n_cats_per_key))


def count_statistics(counts, library_codes: np.ndarray, n_library_groups: int, ambient_codes: np.ndarray,
                     ambient_cats: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A model's initial statistics from its counts, read row block by row block.

    Returns ``(library log means, library log variances, mean profile, ambient mean
    profiles)`` as :func:`group_log_library_stats`, the normalised feature totals and
    :func:`group_mean_profiles` give them. An on-disk (backed) matrix is read in blocks of
    ``C.BACKED_BLOCK_ROWS`` rows, never whole; an in-memory one is a single block.
    """
    from regularizedvi.data._backed import row_blocks

    ambient_codes = _codes_2d(ambient_codes)
    totals, overall, per_category = [], 0.0, 0.0
    for start, stop, block in row_blocks(counts):
        totals.append(row_totals(block))
        block_overall, block_per_category = feature_sums(block, ambient_codes[start:stop], ambient_cats)
        overall, per_category = overall + block_overall, per_category + block_per_category
    log_means, log_vars = log_library_stats(np.concatenate(totals), np.asarray(library_codes).ravel(),
                                            n_library_groups)
    profiles = profiles_from_sums(overall, per_category, category_sizes(ambient_codes, ambient_cats))
    return log_means, log_vars, overall / max(overall.sum(), 1.0), profiles
