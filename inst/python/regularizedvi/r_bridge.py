"""Read R single-cell objects from Python (rpy2 + anndata2ri, Python hosting R).

Optional: needs ``pip install 'regularizedvi[r]'`` (rpy2 3.5.17 and anndata2ri 2.0.1 for
R 4.2). rpy2 is imported only when one of these functions runs, so ``import
regularizedvi`` never needs R.

These helpers work where Python hosts R. Inside an R session use the R package's
``as.AnnData()`` instead: rpy2 inside reticulate-hosted Python crashes reticulate < 1.31.
"""

from __future__ import annotations

import os

_INSTALL_HINT = (
    "The R bridge needs rpy2 and anndata2ri: pip install 'regularizedvi[r]' "
    "(and R with the SingleCellExperiment package)."
)


def _modules():
    try:
        import anndata2ri
        import rpy2.robjects as ro
        from rpy2.robjects.conversion import localconverter
    except ImportError as err:  # rpy2/anndata2ri missing, or R itself not found
        raise ImportError(f"{_INSTALL_HINT} ({err})") from err
    return ro, anndata2ri, localconverter


def read_rds(path: str | os.PathLike):
    """Read an ``.rds`` file into an rpy2 R object (for example a SingleCellExperiment)."""
    ro, _, _ = _modules()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such .rds file: '{path}'.")
    ro.r("suppressPackageStartupMessages(requireNamespace('SingleCellExperiment', quietly = TRUE))")
    return ro.r["readRDS"](path)


def sce_to_anndata(obj):
    """Convert an R SingleCellExperiment (rpy2 object) to an AnnData with anndata2ri.

    The first assay becomes ``X`` (sparse stays sparse), the others ``layers``; colData
    becomes ``obs`` (factors as categoricals), rowData ``var``, reducedDims ``obsm``.
    """
    ro, anndata2ri, localconverter = _modules()
    with localconverter(anndata2ri.converter):
        return ro.conversion.get_conversion().rpy2py(obj)


def anndata_to_sce(adata):
    """Convert an AnnData to an R SingleCellExperiment (rpy2 object) with anndata2ri."""
    ro, anndata2ri, localconverter = _modules()
    with localconverter(anndata2ri.converter):
        return ro.conversion.get_conversion().py2rpy(adata)
