"""The ambient profile measured from empty droplets of a raw (unfiltered) count matrix.

A 10x run records many more barcodes than cells: droplets without a cell hold only the
ambient RNA ("soup") they captured, a few to a hundred UMIs each. Their pooled counts
estimate the soup's profile, as SoupX and CellBender do. regularizedvi can then start its
background from that profile and learn only how much of it each cell carries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from regularizedvi import _constants as C
from regularizedvi.data._backed import row_blocks


def estimate_ambient_profile(raw, groupby: str | None = None, layer: str | None = None,
                             min_counts: int = C.EMPTY_DROPLET_MIN_COUNTS,
                             max_counts: int = C.EMPTY_DROPLET_MAX_COUNTS,
                             min_droplets: int = C.EMPTY_DROPLET_MIN_DROPLETS, empty=None) -> pd.DataFrame:
    """Soup profile of each channel from the empty droplets of a raw count matrix.

    Parameters
    ----------
    raw
        AnnData of every barcode of the run(s) (cell-containing and empty droplets, e.g.
        10x's ``raw_feature_bc_matrix``), raw counts; may be backed (read in row blocks).
    groupby
        Column of ``raw.obs`` with each droplet's ambient group (channel / sample), as the
        model's ``batch_key`` / ``ambient_covariate_keys``; ``None``: one profile.
    layer
        Layer with the counts (default ``X``).
    min_counts, max_counts
        Droplets with a total count in ``[min_counts, max_counts]`` are taken as empty
        (defaults 1 and 100 UMIs; cells have hundreds to tens of thousands).
    min_droplets
        Fewer empty droplets than this in a group is an error: the matrix looks filtered
        (cells only) there (default 100).
    empty
        Optional boolean mask (or ``raw.obs`` column name) of the droplets known to be empty,
        e.g. from hashing or genotypes (CITE-seq protein counts of empty droplets are in the
        hundreds); replaces the count range.

    Returns
    -------
    DataFrame, features (rows, ``raw.var_names``) x groups (columns), each column summing to
    1. ``.attrs["n_empty_droplets"]`` / ``.attrs["empty_counts"]``: droplets and UMIs used
    per group. Give it to a model as ``ambient_profile=`` (features are matched by name).
    """
    matrix = raw.X if layer is None else raw.layers[layer]
    if not 0 <= min_counts <= max_counts:
        raise ValueError(f"Need 0 <= min_counts <= max_counts, got {min_counts} and {max_counts}.")
    if groupby is None:
        groups = pd.Categorical(np.zeros(raw.n_obs, dtype=int), categories=[0])
        names = ["all droplets"]
    else:
        if groupby not in raw.obs:
            raise KeyError(f"groupby '{groupby}' is not a column of raw.obs (columns: {list(raw.obs.columns)[:20]}).")
        groups = pd.Categorical(raw.obs[groupby])
        names = [str(c) for c in groups.categories]
    codes = np.asarray(groups.codes)
    totals = np.concatenate([np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
                             for _, _, block in row_blocks(matrix)])
    if empty is None:
        empty = (totals >= min_counts) & (totals <= max_counts)
        what = f"with {min_counts}-{max_counts} counts"
    else:
        values = np.asarray(raw.obs[empty] if isinstance(empty, str) else empty).ravel()
        if values.dtype != bool:
            raise TypeError(f"empty must be a boolean mask (or the name of a boolean obs column), not of dtype "
                            f"{values.dtype}: compare first, e.g. empty=raw.obs['droplet'] == 'empty'.")
        empty = values
        if empty.size != raw.n_obs:
            raise ValueError(f"empty has {empty.size} values for {raw.n_obs} droplets.")
        what = "marked empty"
    sums = np.zeros((len(names), raw.n_vars))
    for start, stop, block in row_blocks(matrix):
        rows = np.flatnonzero(empty[start:stop])
        if rows.size == 0:
            continue
        indicator = sparse.csr_matrix((np.ones(rows.size), (codes[start:stop][rows], rows)),
                                      shape=(len(names), stop - start))
        part = indicator @ block
        sums += part.toarray() if sparse.issparse(part) else np.asarray(part)
    n_empty = np.bincount(codes[empty], minlength=len(names))
    for name, n, total in zip(names, n_empty, sums.sum(1)):
        if n < min_droplets or total == 0:
            raise ValueError(
                f"Only {n} droplet(s) {what} in {name!r} "
                f"(median total of its barcodes: {np.median(totals[codes == names.index(name)]):.0f}): this "
                "looks like a filtered matrix (cells only). Pass the raw (unfiltered) matrix with every "
                "barcode, e.g. 10x's raw_feature_bc_matrix.h5 (scanpy.read_10x_h5), or adjust max_counts."
            )
    profile = pd.DataFrame((sums / sums.sum(1, keepdims=True)).T, index=raw.var_names, columns=names)
    profile.attrs["n_empty_droplets"] = dict(zip(names, n_empty.tolist()))
    profile.attrs["empty_counts"] = dict(zip(names, sums.sum(1).tolist()))
    return profile
