"""Protein (ADT) background on real CITE-seq data with confirmed empty droplets
(citeseq_adt_with_empties.h5ad: 87 ADT, 2872 cells + 8005 empties, 4 isotype controls)."""

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import regularizedvi as rv
from conftest import shared_data

EPOCHS = 100


@pytest.fixture(scope="module")
def dsb():
    raw = ad.read_h5ad(shared_data("citeseq_adt_with_empties.h5ad"))
    empty = (raw.obs["droplet"] == "empty").to_numpy()
    isotype = np.array(["sotype" in name for name in raw.var_names])
    return raw, empty, isotype


def _mean_profile(x):
    sums = np.asarray(x.sum(0), dtype=np.float64).ravel()
    return sums / sums.sum()


def _fit(cells, **kwargs):
    rv.set_seed(0)
    adata = cells.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=64, n_latent=10, **kwargs)
    model.train(max_epochs=EPOCHS, enable_progress_bar=False, plan_kwargs={"n_epochs_kl_warmup": None})
    return model, adata


def test_the_empties_profile_is_recovered_from_half_of_them(dsb):
    raw, empty, _ = dsb
    half = empty & (np.random.default_rng(0).random(raw.n_obs) < 0.5)
    profile = rv.estimate_ambient_profile(raw, empty=half).iloc[:, 0].to_numpy()
    held_out = _mean_profile(raw.X[empty & ~half])
    cells_mean = _mean_profile(raw.X[~empty])
    r_estimate = np.corrcoef(profile, held_out)[0, 1]
    r_cells = np.corrcoef(cells_mean, held_out)[0, 1]
    print(f"corr with the other half of the empties: estimate {r_estimate:.3f}, cells' mean {r_cells:.3f}")
    assert r_estimate > 0.99 and r_cells < 0.8
    with pytest.raises(TypeError, match="boolean mask.*== 'empty'"):
        rv.estimate_ambient_profile(raw, empty="droplet")


def test_denoised_protein_loses_the_empties_proteins_and_the_isotypes(dsb):
    raw, empty, isotype = dsb
    profile = rv.estimate_ambient_profile(raw, empty=empty)
    cells = raw[~empty].copy()
    given, adata = _fit(cells, ambient_profile=profile)
    default, _ = _fit(cells)

    x = adata.X
    corrected = given.get_ambient_corrected_counts()
    assert sparse.issparse(corrected) and corrected.nnz <= x.nnz
    assert (corrected.toarray() <= x.toarray() + 1e-4).all()
    removed = 1 - np.asarray(corrected.sum(0)).ravel() / np.asarray(x.sum(0)).ravel()
    top = np.argsort(-profile.iloc[:, 0].to_numpy())[:5]  # the empties' dominant proteins
    fraction = given.get_contamination_fraction()
    removed_default = 1 - np.asarray(default.get_ambient_corrected_counts().sum(0)).ravel() / np.asarray(
        x.sum(0)).ravel()
    print(f"empties given: contamination {fraction.mean():.3f}, removed overall {1 - corrected.sum() / x.sum():.3f}, "
          f"isotypes {removed[isotype].mean():.3f}, empties' top 5 {removed[top].mean():.3f}; "
          f"default (cells' mean profile): isotypes {removed_default[isotype].mean():.3f}")
    assert 0.1 < fraction.mean() < 0.35
    # the isotype controls (no specific target) lose most of their counts, the empties'
    # dominant proteins a large share: both more than the proteins overall
    assert removed[isotype].mean() > 0.4 and removed[isotype].mean() > 2 * (1 - corrected.sum() / x.sum())
    assert removed[top].mean() > 0.2
    # without the empties the background has the cells' mean shape: isotypes barely change
    assert removed_default[isotype].mean() < 0.5 * removed[isotype].mean()

    foreground = given.get_foreground_probability(gene_list=list(cells.var_names[isotype]) + ["CD3_PROT"])
    assert foreground.shape == (cells.n_obs, 5) and ((foreground >= 0) & (foreground <= 1)).all().all()
    assert foreground.iloc[:, :4].to_numpy().mean() < foreground["CD3_PROT"].mean()
