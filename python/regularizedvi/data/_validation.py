"""Checks of user input, each failing with a message that names the problem and the fix.

Nothing here modifies or densifies the user's data: sparse matrices are read through
their stored values only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from regularizedvi import _constants as C


def _stored_values(matrix) -> np.ndarray:
    if sparse.issparse(matrix):
        return np.asarray(matrix.data)
    if hasattr(matrix, "compute"):  # dask
        matrix = matrix.compute()
    return np.asarray(matrix).ravel()


def check_counts(matrix, where: str = "adata.X", check_empty: bool = True) -> None:
    """Raise ``ValueError`` unless ``matrix`` holds raw counts.

    Checks: finite, non-negative, whole numbers; with ``check_empty`` also no cell and no
    feature with zero total. Backed (on-disk) matrices are checked on their first rows.
    """
    if matrix is None:
        raise ValueError(f"{where} is empty (None): pass the layer that holds raw counts.")
    if getattr(matrix, "shape", (0, 0))[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{where} has shape {matrix.shape}: it needs at least one cell and one feature.")
    values = _stored_values(matrix)
    if values.size > C.COUNT_CHECK_MAX_VALUES:
        rng = np.random.default_rng(0)
        values = values[rng.integers(0, values.size, C.COUNT_CHECK_MAX_VALUES)]
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(
            f"{where} contains NaN or infinite values. Counts must be finite: "
            "fix or remove the affected cells/features before setup."
        )
    if values.size and values.min() < 0:
        raise ValueError(
            f"{where} contains negative values (min {values.min():g}); this looks like scaled or "
            "centred data. Pass raw UMI counts, e.g. `layer='counts'`."
        )
    if values.size and not np.all(values == np.round(values)):
        example = values[values != np.round(values)][0]
        raise ValueError(
            f"{where} contains non-integer values (e.g. {example:g}); it looks normalized or "
            "log-transformed. regularizedvi models raw counts: pass the layer with raw counts, "
            "e.g. `layer='counts'` (keep a copy with `adata.layers['counts'] = adata.X.copy()` "
            "before normalizing)."
        )
    if not check_empty:
        return
    cell_totals = np.asarray(matrix.sum(axis=1)).ravel()
    if (cell_totals == 0).any():
        n = int((cell_totals == 0).sum())
        raise ValueError(
            f"{n} cell(s) have zero total counts in {where}; a cell without counts has no "
            "library size. Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )
    feature_totals = np.asarray(matrix.sum(axis=0)).ravel()
    if (feature_totals == 0).any():
        n = int((feature_totals == 0).sum())
        raise ValueError(
            f"{n} feature(s) have zero total counts in {where}; they carry no information. "
            "Remove them first, e.g. `sc.pp.filter_genes(adata, min_counts=1)`."
        )


def check_covariates(obs: pd.DataFrame, keys: Iterable[str], argument: str, categorical: bool = True) -> None:
    """Raise ``KeyError``/``ValueError`` for missing obs columns or missing values in them."""
    for key in keys:
        if key not in obs.columns:
            available = ", ".join(map(str, list(obs.columns)[:20])) or "(none)"
            raise KeyError(
                f"{argument}: column '{key}' is not in adata.obs. Available columns: {available}."
            )
        column = obs[key]
        if column.isna().any():
            n = int(column.isna().sum())
            raise ValueError(
                f"{argument}: column '{key}' has {n} missing value(s) (NaN). Fill them "
                "(e.g. with an 'unknown' category) or drop those cells before setup."
            )
        if not categorical:
            if not pd.api.types.is_numeric_dtype(column):
                raise ValueError(f"{argument}: column '{key}' must be numeric (continuous covariate).")
            if not np.all(np.isfinite(column.to_numpy(dtype=float))):
                raise ValueError(f"{argument}: column '{key}' has infinite values.")
