"""Bring a query AnnData onto a reference model's features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def align_features(adata: AnnData, var_names: Sequence[str]) -> AnnData:
    """A new AnnData with exactly ``var_names`` as features, in that order.

    Features the query lacks become all-zero columns; features the model does not know are
    dropped. Counts come from ``X`` and stay sparse; ``obs`` is copied and the input is
    not modified. ``var['present_in_query']`` marks the features that were there.
    """
    var_names = [str(v) for v in var_names]
    position = {str(g): i for i, g in enumerate(adata.var_names)}
    source_columns = np.array([position.get(g, -1) for g in var_names])
    found = source_columns >= 0
    # A 0/1 selection matrix maps query columns to model columns without densifying.
    selector = sparse.csr_matrix(
        (np.ones(found.sum(), dtype=np.float32), (source_columns[found], np.flatnonzero(found))),
        shape=(adata.n_vars, len(var_names)),
    )
    source = adata.X if sparse.issparse(adata.X) else sparse.csr_matrix(adata.X)
    matrix = sparse.csr_matrix(source @ selector, dtype=np.float32)
    var = pd.DataFrame({"present_in_query": found}, index=var_names)
    return AnnData(matrix, obs=adata.obs.copy(), var=var)
