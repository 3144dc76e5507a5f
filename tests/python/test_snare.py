"""RegularizedMultimodalVI on real paired RNA + ATAC: SNARE-seq adult mouse cortex.

A seeded subset of ``../shared/data/snare_cortex_{rna,atac}.h5ad`` (skipped without it):
1500 of the 10,309 nuclei, the genes with a count in them (1665 of 1677) and the 2000
peaks detected in most of them. Three models train with the documented defaults (``batch_key="library"``, 30 epochs) on the same nuclei: an
RNA-only and an ATAC-only ``AmbientRegularizedSCVI`` and the joint model. The joint latent
must keep the 23 cell types as well as the RNA-only one (within seed noise), clearly better than the
ATAC-only one, and mix the 12 libraries.

Measured on 2 CPU cores, one torch thread (15-NN purity; subset seed 0, training seeds 0/1/2):

  model                                         purity
  RNA-only                                      0.631 / 0.641 / 0.638
  ATAC-only                                     0.120 / 0.117 / 0.118
  joint, RNA the primary modality (default)     0.644 / 0.628 / 0.637
  joint, every decoder reads the whole latent   0.603 / 0.620 / 0.617

i.e. joint - RNA-only between -0.013 and +0.013 (mean -0.001; it was -0.049 to -0.021 before
the primary modality) and joint - ATAC-only about +0.5. ATAC alone is close to chance here
(sum of squared type frequencies: 0.107): 2000 peaks of these shallow nuclei leave a median
of 39 counts per nucleus. The test takes ~30 s (training ~20 s).
"""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import torch
from mudata import MuData

import regularizedvi as rv
from regularizedvi.metrics import batch_mixing_entropy, knn_label_purity

from conftest import shared_data

N_NUCLEI, N_PEAKS, EPOCHS = 1500, 2000, 30
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
# joint >= RNA-only - RNA_MARGIN (worst measured: -0.013; -0.049 with every decoder reading
# the whole latent) and >= ATAC-only + ATAC_MARGIN (worst measured: +0.45).
RNA_MARGIN, ATAC_MARGIN = 0.03, 0.30
# Normalised entropy of the 30 neighbours' libraries. SNARE libraries differ little: random
# neighbourhoods give 0.916 on this subset and a PCA of log-normalised RNA 0.913, so this
# guards against a latent that splits nuclei by library rather than proving a correction.
MIN_MIXING = 0.90


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def snare():
    return load_subset()


def load_subset():
    """(rna, atac) AnnData of the same seeded subset of nuclei; atac = its most detected peaks."""
    rna = anndata.read_h5ad(shared_data("snare_cortex_rna.h5ad"))
    atac = anndata.read_h5ad(shared_data("snare_cortex_atac.h5ad"))
    assert np.array_equal(rna.obs_names, atac.obs_names)
    keep = np.sort(np.random.default_rng(0).choice(rna.n_obs, N_NUCLEI, replace=False))
    rna, atac = rna[keep].copy(), atac[keep].copy()
    rna = rna[:, np.asarray(rna.X.sum(0)).ravel() > 0].copy()  # 12 genes have no count in the subset
    detected = np.asarray((atac.X > 0).sum(0)).ravel()
    atac = atac[:, np.sort(np.argsort(-detected, kind="stable")[:N_PEAKS])].copy()
    for a in (rna, atac):
        for column in ("library", "cell_type"):
            a.obs[column] = a.obs[column].astype(str).astype("category")
    return rna, atac


def single_latent(adata):
    rv.set_seed(0)
    adata = adata.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="library")
    model = rv.AmbientRegularizedSCVI(adata)
    model.train(max_epochs=EPOCHS, **QUIET)
    return model.get_latent_representation()


def joint_latent(rna, atac):
    rv.set_seed(0)
    mdata = MuData({"rna": rna.copy(), "atac": atac.copy()})
    mdata.obs = rna.obs[["library", "cell_type"]].copy()
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="library")
    model = rv.RegularizedMultimodalVI(mdata)
    model.train(max_epochs=EPOCHS, **QUIET)
    return model.get_latent_representation()


def test_snare_joint_latent_keeps_rna_cell_types_and_mixes_libraries(snare):
    rna, atac = snare
    labels, libraries = rna.obs["cell_type"].to_numpy(), rna.obs["library"].to_numpy()
    latents = {"RNA-only": single_latent(rna), "ATAC-only": single_latent(atac), "joint": joint_latent(rna, atac)}
    purity = {name: knn_label_purity(z, labels, k=15) for name, z in latents.items()}
    mixing = {name: batch_mixing_entropy(z, libraries, k=30) for name, z in latents.items()}
    for name in latents:
        print(f"SNARE {name}: 15-NN cell-type purity {purity[name]:.3f}, library mixing {mixing[name]:.3f}")

    assert purity["joint"] > purity["RNA-only"] - RNA_MARGIN, (
        f"joint purity {purity['joint']:.3f} <= RNA-only {purity['RNA-only']:.3f} - {RNA_MARGIN}")
    assert purity["joint"] > purity["ATAC-only"] + ATAC_MARGIN, (
        f"joint purity {purity['joint']:.3f} <= ATAC-only {purity['ATAC-only']:.3f} + {ATAC_MARGIN}")
    for name, value in mixing.items():
        assert value > MIN_MIXING, f"{name} latent: library mixing {value:.3f} <= {MIN_MIXING}"
