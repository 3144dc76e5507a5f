"""Checks of user input, each failing with a message that names the problem and the fix.

Nothing here modifies or densifies the user's data: sparse matrices are read through
their stored values only, and on-disk (backed) matrices in blocks of rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from regularizedvi import _constants as C
from regularizedvi.data._backed import check_backed_layout, is_backed_matrix, n_stored_values, row_blocks


def _stored_values(matrix) -> np.ndarray:
    if sparse.issparse(matrix):
        return np.asarray(matrix.data)
    if hasattr(matrix, "compute"):  # dask
        matrix = matrix.compute()
    return np.asarray(matrix).ravel()


def check_counts(matrix, where: str = "adata.X") -> tuple[np.ndarray, np.ndarray]:
    """Raise ``ValueError`` unless ``matrix`` holds raw counts; return its totals.

    Checks: at least one cell and one feature; finite, non-negative, whole numbers (on
    every stored value, or on a seeded sample of ``C.COUNT_CHECK_MAX_VALUES`` of them
    when there are more), and finite totals. Returns ``(cell totals, feature totals)``
    (float64, exact). A backed (on-disk) matrix is read in blocks of
    ``C.BACKED_BLOCK_ROWS`` consecutive rows, never whole, with the same checks and
    messages as in memory (the sample is spread over the blocks in proportion to their
    stored values); an on-disk CSC matrix is refused (rewrite it as CSR).
    """
    if matrix is None:
        raise ValueError(f"{where} is empty (None): pass the layer that holds raw counts.")
    shape = getattr(matrix, "shape", (0, 0))
    if shape[0] == 0:
        raise ValueError(f"{where} has no cells (shape {tuple(shape)}): there is nothing to fit. "
                         "Check the subsetting that produced it.")
    if shape[1] == 0:
        raise ValueError(f"{where} has no features (shape {tuple(shape)}): it needs at least one gene.")
    if is_backed_matrix(matrix):
        check_backed_layout(matrix, where)
    n_values = n_stored_values(matrix)
    sample_fraction = min(1.0, C.COUNT_CHECK_MAX_VALUES / max(n_values, 1))
    rng = np.random.default_rng(0)
    non_finite = False
    minimum = None
    non_integer = None
    cell_totals, feature_totals = [], np.zeros(matrix.shape[1], dtype=np.float64)
    for _, _, block in row_blocks(matrix):
        values = _stored_values(block)
        if sample_fraction < 1.0:  # in memory (one block) the same draw as a whole-matrix sample
            values = values[rng.integers(0, values.size, round(values.size * sample_fraction))]
        if values.size:
            non_finite |= not np.all(np.isfinite(values))
            minimum = values.min() if minimum is None else min(minimum, values.min())
            if non_integer is None and not np.all(values == np.round(values)):
                non_integer = values[values != np.round(values)][0]
        cell_totals.append(np.asarray(block.sum(axis=1), dtype=np.float64).ravel())
        feature_totals += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
    cell_totals = np.concatenate(cell_totals)
    # a value left out of the sample still shows in the exact totals
    non_finite |= not (np.all(np.isfinite(cell_totals)) and np.all(np.isfinite(feature_totals)))
    if non_finite:
        raise ValueError(
            f"{where} contains NaN or infinite values. Counts must be finite: "
            "fix or remove the affected cells/features before setup."
        )
    if minimum is not None and minimum < 0:
        raise ValueError(
            f"{where} contains negative values (min {minimum:g}); this looks like scaled or "
            "centred data. Pass raw UMI counts, e.g. `layer='counts'`."
        )
    if non_integer is not None:
        raise ValueError(
            f"{where} contains non-integer values (e.g. {non_integer:g}); it looks normalized or "
            "log-transformed. regularizedvi models raw counts: pass the layer with raw counts, "
            "e.g. `layer='counts'` (keep a copy with `adata.layers['counts'] = adata.X.copy()` "
            "before normalizing)."
        )
    return cell_totals, feature_totals


def check_modalities(matrices: dict[str, object], transferring: bool = False) -> None:
    """The checks of a model's counts, one matrix per modality (``{where: matrix}``).

    Every matrix must hold counts (:func:`check_counts`). Unless ``transferring`` (a query
    or a saved model's data, checked against the reference instead): a cell without
    counts in every modality has no library size (error); a modality without any count is
    an error; features with zero total counts only warn (subsetting cells or choosing
    features on part of the data leaves some; the model learns them as unexpressed and
    gives them finite outputs).
    """
    any_counts = None
    for where, matrix in matrices.items():
        cell_totals, feature_totals = check_counts(matrix, where)
        any_counts = cell_totals > 0 if any_counts is None else any_counts | (cell_totals > 0)
        if transferring:
            continue
        if (feature_totals == 0).all():
            raise ValueError(f"{where} is all zeros: no cell has a count there.")
        n_empty = int((feature_totals == 0).sum())
        if n_empty:
            warnings.warn(
                f"{n_empty} of {feature_totals.size} feature(s) have zero total counts in {where}; they "
                "carry no information (the model learns them as unexpressed). Remove them first "
                "(e.g. `sc.pp.filter_genes(adata, min_counts=1)`) unless you need them in the outputs.",
                UserWarning, stacklevel=4,
            )
    if transferring or any_counts is None or any_counts.all():
        return
    n = int((~any_counts).sum())
    where = " and ".join(matrices)
    raise ValueError(
        f"{n} cell(s) have zero total counts in {where}; a cell without counts has no library "
        "size. Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
    )


def check_covariates(obs: pd.DataFrame, keys: Iterable[str], argument: str, categorical: bool = True) -> None:
    """Raise ``KeyError``/``ValueError`` for missing obs columns or missing values in them."""
    for key in keys:
        if key not in obs.columns:
            available = ", ".join(map(str, list(obs.columns)[:20])) or "(none)"
            raise KeyError(
                f"{argument}: column '{key}' is not in adata.obs. Available columns: {available}."
            )
        if "." in str(key):
            fixed = str(key).replace(".", "_")
            raise ValueError(
                f"{argument}: column name '{key}' contains '.', which scvi-tools' registry cannot hold. "
                f"Copy the column under a name without dots: adata.obs['{fixed}'] = adata.obs['{key}'] "
                f"(R: object${fixed} <- object${key}), and pass '{fixed}'."
            )
        column = obs[key]
        if column.isna().any():
            n = int(column.isna().sum())
            raise ValueError(
                f"{argument}: column '{key}' has {n} missing value(s) (NaN). Fill them "
                "(e.g. with an 'unknown' category) or drop those cells before setup."
            )
        if categorical:
            _check_not_continuous(column, key, argument)
        else:
            if not pd.api.types.is_numeric_dtype(column):
                raise ValueError(f"{argument}: column '{key}' must be numeric (continuous covariate).")
            if not np.all(np.isfinite(column.to_numpy(dtype=float))):
                raise ValueError(f"{argument}: column '{key}' has infinite values.")


def _check_not_continuous(column: pd.Series, key: str, argument: str) -> None:
    """Refuse a numeric column that looks continuous as a categorical covariate.

    A numeric (not categorical, not boolean) column is taken for a measurement when it has
    non-integer values or more distinct values than ``C.MAX_NUMERIC_CATEGORIES`` or than
    half of the cells (fewer than two cells per group on average): each
    value would become a group of its own (e.g. ``nCount_RNA`` as a batch gives one
    ambient profile per handful of cells). A categorical or string column is always
    accepted, so a numeric code that really is a category passes once converted.
    """
    if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(column) \
            or not pd.api.types.is_numeric_dtype(column):
        return
    values = column.to_numpy(dtype=float)
    n_distinct = int(pd.unique(values).size)
    fractional = not np.all(values == np.round(values))
    if fractional or n_distinct > min(C.MAX_NUMERIC_CATEGORIES, values.size / 2):
        what = "non-integer values" if fractional else f"{n_distinct} distinct values"
        raise ValueError(
            f"{argument}: column '{key}' is numeric with {what} in {values.size} cells: it looks like a "
            "continuous measurement, and as a categorical covariate every value would be a group of its "
            f"own. If it really is a category, convert it explicitly: adata.obs['{key}'] = "
            f"adata.obs['{key}'].astype('category') (R: object${key} <- factor(object${key})); for a "
            "continuous effect use continuous_covariate_keys."
        )
