"""Small helpers shared by the model classes."""

from __future__ import annotations

import logging
import math
import numbers

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
    """A modality's initial statistics from its counts, read row block by row block.

    Returns ``(library log means, library log variances, mean profile, ambient mean
    profiles)`` as :func:`log_library_stats`, the normalised feature totals and
    :func:`profiles_from_sums` give them, over the cells that have the modality (a
    non-zero row; the others add nothing to the sums and are left out of the library
    statistics and of the category sizes). An on-disk (backed) matrix is read in blocks of
    ``C.BACKED_BLOCK_ROWS`` rows, never whole; an in-memory one is a single block (no copy).
    """
    from regularizedvi.data._backed import row_blocks

    ambient_codes = _codes_2d(ambient_codes)
    totals, overall, per_category = [], 0.0, 0.0
    for start, stop, block in row_blocks(counts):
        totals.append(row_totals(block))
        block_overall, block_per_category = feature_sums(block, ambient_codes[start:stop], ambient_cats)
        overall, per_category = overall + block_overall, per_category + block_per_category
    totals = np.concatenate(totals)
    has = totals > 0
    log_means, log_vars = log_library_stats(totals[has], np.asarray(library_codes).ravel()[has],
                                            n_library_groups)
    profiles = profiles_from_sums(overall, per_category, category_sizes(ambient_codes[has], ambient_cats))
    return log_means, log_vars, overall / max(overall.sum(), 1.0), profiles


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; a float, bool or string is an error, not rounded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_rate(value, name: str) -> float:
    """A dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    """A finite number >= 0 (a weight; 0: off)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
            or float(value) < 0):
        raise ValueError(f"{name} must be a number >= 0 (0: off), got {value!r}.")
    return float(value)


def check_sizes(value, name: str, names: list[str] | None = None) -> int | dict:
    """A positive int, or (``names`` given) a dict of positive ints per modality."""
    if isinstance(value, dict):
        if names is None:
            raise TypeError(f"{name} takes one whole number, got a dict.")
        return {m: positive_int(v, f"{name}[{m!r}]") for m, v in value.items()}
    return positive_int(value, name)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch as scvi-tools does (``scvi.settings.seed = seed``),
    without Lightning's "Seed set to" line (the R functions call this on every fit)."""
    import scvi

    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        scvi.settings.seed = positive_int(seed, "seed", minimum=0)
    finally:
        seed_log.setLevel(level)


def check_indices(indices, n_obs: int) -> None:
    """Cell positions given as ``indices=``: integers in ``[0, n_obs)``; names and boolean
    masks are refused with the conversion to use."""
    values = np.asarray(indices)
    if values.dtype == bool:
        raise TypeError("indices must be cell positions (integers), not a boolean mask: use np.flatnonzero(mask).")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"indices must be cell positions (integers in [0, {n_obs})), not {values.dtype} values "
                        "(for cell names: np.flatnonzero(adata.obs_names.isin(names))).")
    if values.size and (values.min() < 0 or values.max() >= n_obs):
        bad = values[(values < 0) | (values >= n_obs)]
        raise IndexError(f"indices has {bad.size} position(s) outside the data's {n_obs} cells (e.g. {bad[:5].tolist()}).")


def feature_mask(features, gene_list, where: str = "adata.var_names"):
    """Boolean mask over ``features`` of the names in ``gene_list`` (``slice(None)`` when
    ``gene_list`` is None); a single name may be given as a string.

    The mask keeps ``features``' order, not ``gene_list``'s. Names that are not among
    ``features`` are a ValueError naming up to 5 of them and how many, and ``where`` (the
    names to choose from, e.g. ``"adata.var_names"``); so is an empty ``gene_list``.
    """
    if gene_list is None:
        return slice(None)
    names = [gene_list] if isinstance(gene_list, str) else list(gene_list)
    if not names:
        raise ValueError(f"gene_list is empty: give at least one of {where}, or None for all features.")
    features = np.asarray(features)
    known = set(features.tolist())
    unknown = list(dict.fromkeys(n for n in names if n not in known))
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"gene_list has {len(unknown)} name(s) that are not features of the model's data "
                         f"({shown}): names must be among {where}.")
    return np.isin(features, names)
