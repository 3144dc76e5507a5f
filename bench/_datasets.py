"""Datasets of the multi-dataset quality benchmark (``quality_multi.py``, ``mapping.py``).

Each loader returns a :class:`Dataset`: raw counts in ``adata.X`` (CSR float32), the batch
column (what ``batch_key`` gets), the technology / protocol column (per-technology NLL),
the label column (None: no labels, batch metrics only) and a note of what was done to the
data (gene selection, subsampling). Real data come from ``../shared/data`` by path.

  kang          kang_ifnb: 1556 PBMCs x 1267 genes, batch sample_id (4), labels cell_type (5)
  pbmc_3chem    3 10x chemistries, 2000 HVGs (seurat_v3 on counts), batch = chemistry, no labels
  cellbench     CellBench mixology: 1408 cells, 2000 HVGs, batch = plate / protocol (4 CEL-seq2
                plates + Drop-seq), labels cell_line (genotype, demuxlet)
  snare         SNARE-seq cortex RNA: single-nucleus, 12 libraries, 23 cell types, 1677 genes;
                a seeded random subsample of cells (``--snare-cells``, default 4000)
  sim_plate     simulated: UMI-like 10x batches mixed with plate-like read-count batches
                (``sim_plate.simulate_plate_mix``): deep, strongly overdispersed, few cells
  sim_plate_zi  the same with 30 cells per plate batch and 30% of plate entries zeroed
                (dropouts of full-length protocols: zero inflation)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from _common import data_path


@dataclass
class Dataset:
    name: str
    adata: object
    batch_key: str
    tech_key: str
    label_key: str | None
    note: str = ""
    extra: dict = field(default_factory=dict)


def _drop_empty(adata):
    keep = np.asarray(adata.X.sum(1)).ravel() > 0
    adata = adata[keep].copy()
    genes = np.asarray((adata.X > 0).sum(0)).ravel() > 0
    return adata[:, genes].copy()


def _hvg(adata, n_top: int):
    import scanpy as sc

    sc.pp.filter_genes(adata, min_cells=1)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3")  # deterministic
    return _drop_empty(adata[:, adata.var["highly_variable"].values].copy())


def kang(**_):
    import anndata as ad

    a = ad.read_h5ad(data_path("kang_ifnb.h5ad"))
    a.obs["tech"] = "10x"
    return Dataset("kang", _drop_empty(a), "sample_id", "sample_id", "cell_type", "all cells and genes")


def pbmc_3chem(n_top: int = 2000, **_):
    import anndata as ad

    a = _hvg(ad.read_h5ad(data_path("pbmc_3chem.h5ad")), n_top)
    return Dataset("pbmc_3chem", a, "batch", "batch", None, f"{n_top} HVGs (seurat_v3 on counts)")


def cellbench(n_top: int = 2000, **_):
    import anndata as ad

    a = _hvg(ad.read_h5ad(data_path("cellbench_mixology.h5ad")), n_top)
    return Dataset("cellbench", a, "batch", "protocol", "cell_line",
                   f"{n_top} HVGs (seurat_v3 on counts); batch = 4 CEL-seq2 plates + Drop-seq")


def snare(snare_cells: int = 4000, **_):
    import anndata as ad

    a = ad.read_h5ad(data_path("snare_cortex_rna.h5ad"))
    note = "all 1677 genes"
    if snare_cells and snare_cells < a.n_obs:
        keep = np.sort(np.random.default_rng(0).choice(a.n_obs, snare_cells, replace=False))
        a = a[keep].copy()
        note += f"; {snare_cells} of 10309 nuclei (seeded random subsample)"
    return Dataset("snare", _drop_empty(a), "library", "library", "cell_type", note)


def sim_plate(**_):
    from sim_plate import simulate_plate_mix

    a = simulate_plate_mix(seed=0)
    return Dataset("sim_plate", a, "batch", "tech", "cell_type",
                   "simulated: 3 UMI batches + 3 plate read-count batches (see sim_plate.py)")


def sim_plate_zi(**_):
    from sim_plate import simulate_plate_mix

    a = simulate_plate_mix(seed=0, plate_cells=30, plate_dropout=0.3, plate_depth=60000.0)
    return Dataset("sim_plate_zi", a, "batch", "tech", "cell_type",
                   "simulated: 3 UMI batches + 3 plate batches of 30 cells, 30% zero inflation")


def sim_plate_deep(**_):
    from sim_plate import simulate_plate_mix

    a = simulate_plate_mix(seed=0, plate_cells=25, plate_depth=500000.0, plate_theta=0.3, plate_bias_sd=1.0,
                           plate_dropout=0.1)
    return Dataset("sim_plate_deep", a, "batch", "tech", "cell_type",
                   "simulated: 3 UMI batches + 3 plate batches of 25 cells at ~500k reads, theta ~0.3, "
                   "gene bias sd 1, 10% zero inflation")


LOADERS = {"kang": kang, "pbmc_3chem": pbmc_3chem, "cellbench": cellbench, "snare": snare,
           "sim_plate": sim_plate, "sim_plate_zi": sim_plate_zi,
           "sim_plate_deep": sim_plate_deep}


def load(name: str, **kwargs) -> Dataset:
    if name not in LOADERS:
        raise SystemExit(f"unknown dataset {name!r}; choose from {list(LOADERS)}")
    return LOADERS[name](**kwargs)
