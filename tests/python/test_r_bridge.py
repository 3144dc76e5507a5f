"""R <-> Python bridge tests, with Python hosting R (rpy2 + anndata2ri).

1. SCE -> AnnData -> SCE round trips are exact (kang_ifnb_sce.rds and pbmc_small).
2. The R package's converter (``as.AnnData()``, reticulate inside R) gives the same
   AnnData as anndata2ri. It runs in an ``Rscript`` subprocess that writes an ``.h5ad``:
   rpy2 cannot run inside reticulate-hosted Python (reticulate < 1.31), and reticulate
   inside rpy2-hosted R is the same crashing direction.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

pytest.importorskip("rpy2", reason="rpy2 not installed: pip install 'regularizedvi[r]'")
pytest.importorskip("anndata2ri", reason="anndata2ri not installed: pip install 'regularizedvi[r]'")

ROOT = Path(__file__).resolve().parents[2]
KANG = Path(os.environ.get("REGULARIZEDVI_KANG", ROOT.parent / "shared" / "data" / "kang_ifnb_sce.rds"))
RLIB = ROOT / "build" / "Rlib"

# kang_ifnb_sce.rds comes from a newer Bioconductor (its rowRanges need 'Seqinfo', absent
# with R 4.2): rebuild it from its counts and colData, in R, before any conversion.
REBUILD_KANG = """
function(path) {{
  suppressPackageStartupMessages(library(SingleCellExperiment))
  x <- readRDS(path)
  SingleCellExperiment(assays = list(counts = assay(x, "counts", withDimnames = TRUE)),
                       colData = colData(x))
}}
"""
PBMC_SCE = """
local({
  suppressPackageStartupMessages(library(SingleCellExperiment))
  x <- suppressWarnings(Seurat::as.SingleCellExperiment(SeuratObject::pbmc_small))
  SingleCellExperiment(assays = list(counts = counts(x)), colData = colData(x))
})
"""


@pytest.fixture(scope="module")
def ro():
    from regularizedvi import r_bridge

    try:
        r_bridge._modules()
        import rpy2.robjects as robjects

        robjects.r("suppressPackageStartupMessages(library(SingleCellExperiment))")
    except Exception as err:  # R or SingleCellExperiment missing
        pytest.skip(f"R with SingleCellExperiment not usable from rpy2: {err}")
    return robjects


@pytest.fixture(scope="module")
def kang_sce(ro):
    if not KANG.exists():
        pytest.skip(f"{KANG} not found (set REGULARIZEDVI_KANG)")
    return ro.r(REBUILD_KANG.format())(str(KANG))


@pytest.fixture(scope="module")
def pbmc_sce(ro):
    from rpy2.robjects.packages import isinstalled

    if not isinstalled("Seurat"):
        pytest.skip("R package Seurat not installed")
    return ro.r(PBMC_SCE)


def _assert_same_sparse(a, b):
    a, b = sparse.csr_matrix(a), sparse.csr_matrix(b)
    assert a.shape == b.shape
    assert (a != b).nnz == 0
    assert a.nnz == b.nnz


def _round_trip(ro, sce):
    from regularizedvi import r_bridge

    adata = r_bridge.sce_to_anndata(sce)
    back = r_bridge.anndata_to_sce(adata)
    same = ro.r("""function(orig, back) {
      a <- as(SummarizedExperiment::assay(back, 1), "CsparseMatrix")
      b <- SummarizedExperiment::assay(orig, "counts")
      c(identical(dim(a), dim(b)), identical(dimnames(a), dimnames(b)),
        isTRUE(all(a == b)), sum(a) == sum(b),
        identical(lapply(as.list(SummarizedExperiment::colData(orig)), function(v) if (is.factor(v)) levels(v) else NULL),
                  lapply(as.list(SummarizedExperiment::colData(back)), function(v) if (is.factor(v)) levels(v) else NULL)))
    }""")(sce, back)
    return adata, list(same)


def test_kang_round_trip_exact(ro, kang_sce):
    adata, checks = _round_trip(ro, kang_sce)
    assert adata.shape == (1556, 1267)
    assert sparse.issparse(adata.X)
    assert checks == [True] * 5
    assert list(adata.obs["sample_id"].cat.categories) == ["ctrl101", "ctrl107", "stim101", "stim107"]


def test_pbmc_small_round_trip_exact(ro, pbmc_sce):
    adata, checks = _round_trip(ro, pbmc_sce)
    assert adata.shape == (80, 230)
    assert checks == [True] * 5


def test_helpers_report_missing_rpy2(monkeypatch):
    from regularizedvi import r_bridge

    monkeypatch.setitem(sys.modules, "rpy2", None)
    monkeypatch.setitem(sys.modules, "rpy2.robjects", None)
    with pytest.raises(ImportError, match=r"pip install 'regularizedvi\[r\]'"):
        r_bridge.read_rds("x.rds")


# ---------------------------------------------------------------- R converter vs anndata2ri

R_CONVERT = """
suppressPackageStartupMessages({{ library(SingleCellExperiment); library(regularizedvi) }})
rebuild <- {rebuild}
kang <- rebuild("{kang}")
as.AnnData(kang, obs.columns = TRUE)$write_h5ad("{out}/kang.h5ad")
pbmc <- {pbmc}
as.AnnData(pbmc, obs.columns = TRUE)$write_h5ad("{out}/pbmc_sce.h5ad")
as.AnnData(SeuratObject::pbmc_small, obs.columns = TRUE)$write_h5ad("{out}/pbmc_seurat.h5ad")
"""


@pytest.fixture(scope="module")
def r_converted(tmp_path_factory, ro):
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not found")
    if not KANG.exists():
        pytest.skip(f"{KANG} not found")
    # The R package's Python (reticulate inside R): this one, unless it has NumPy 2, which
    # reticulate < 1.31 cannot use; the NumPy 2 run of the suite names a numpy<2 one.
    r_python = os.environ.get("REGULARIZEDVI_R_PYTHON", sys.executable)
    if r_python == sys.executable and int(np.__version__.split(".")[0]) >= 2:
        pytest.skip("NumPy 2 here and reticulate < 1.31 needs NumPy < 2: set REGULARIZEDVI_R_PYTHON "
                    "to a numpy<2 Python with regularizedvi to run the R converter")
    env = dict(os.environ, RETICULATE_PYTHON=r_python)
    if RLIB.exists():
        env["R_LIBS"] = f"{RLIB}{os.pathsep}{env['R_LIBS']}" if env.get("R_LIBS") else str(RLIB)
    probe = subprocess.run(["Rscript", "-e", "library(regularizedvi)"], env=env, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("R package regularizedvi not installed: run `bash scripts/test_r.sh` first")
    out = tmp_path_factory.mktemp("r_converter")
    script = R_CONVERT.format(rebuild=REBUILD_KANG.strip().replace("{{", "{").replace("}}", "}"),
                              kang=KANG, out=out, pbmc=PBMC_SCE.strip())
    run = subprocess.run(["Rscript", "-e", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _compare(mine, reference, columns=None):
    _assert_same_sparse(mine.X, reference.X)
    assert sparse.isspmatrix_csr(mine.X) or isinstance(mine.X, sparse.csr_array)
    assert list(mine.obs_names) == list(reference.obs_names)
    assert list(mine.var_names) == list(reference.var_names)
    columns = list(reference.obs.columns) if columns is None else columns
    assert set(columns) <= set(mine.obs.columns)
    for col in columns:
        a, b = mine.obs[col], reference.obs[col]
        if isinstance(b.dtype, pd.CategoricalDtype):
            assert isinstance(a.dtype, pd.CategoricalDtype), col
            assert list(a.cat.categories) == list(b.cat.categories), col
            assert np.array_equal(a.cat.codes.to_numpy(), b.cat.codes.to_numpy()), col
        elif pd.api.types.is_numeric_dtype(b.dtype):
            assert np.array_equal(a.to_numpy(dtype=float), b.to_numpy(dtype=float)), col
        else:
            assert list(a.astype(str)) == list(b.astype(str)), col


def test_r_converter_matches_anndata2ri_on_kang(r_converted, kang_sce):
    import anndata

    from regularizedvi import r_bridge

    _compare(anndata.read_h5ad(r_converted / "kang.h5ad"), r_bridge.sce_to_anndata(kang_sce))


def test_r_converter_matches_anndata2ri_on_pbmc_small(r_converted, pbmc_sce):
    import anndata

    from regularizedvi import r_bridge

    reference = r_bridge.sce_to_anndata(pbmc_sce)
    _compare(anndata.read_h5ad(r_converted / "pbmc_sce.h5ad"), reference)
    # Straight from the Seurat object: the same counts, names and metadata
    # (as.SingleCellExperiment adds the 'ident' column).
    from_seurat = anndata.read_h5ad(r_converted / "pbmc_seurat.h5ad")
    _compare(from_seurat, reference, columns=[c for c in reference.obs.columns if c != "ident"])
