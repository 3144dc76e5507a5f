"""The single-modality and the multimodal model give the same outputs by construction.

Every check runs on both classes (one shared outputs mixin, module base and registration
path); the RNA-like modality of the multimodal model plays the single model's part.
"""

import numpy as np
import pytest
import torch
from scipy import sparse

import regularizedvi as rv
from conftest import seed_everything

MODELS = ["single", "multimodal"]


def _fit(kind):
    seed_everything(0)
    mdata = rv.simulate_multiome(n_cells=300, n_genes=120, n_peaks=150, n_batches=2, seed=4)
    if kind == "single":
        data = mdata.mod["rna"].copy()
        data.obs["batch"] = mdata.obs["batch"].to_numpy()
        rv.AmbientRegularizedSCVI.setup_anndata(data, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
        model = rv.AmbientRegularizedSCVI(data, n_hidden=32, n_latent=4)
        modality, counts = None, data.X
    else:
        rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch",
                                                nn_conditioning_covariate_keys=["batch"])
        model = rv.RegularizedMultimodalVI(mdata, n_hidden=32, n_latent=4)
        modality, counts = "rna", mdata.mod["rna"].X
    model.train(max_epochs=40, enable_progress_bar=False)
    return model, modality, sparse.csr_matrix(counts)


@pytest.fixture(scope="module", params=MODELS)
def fitted(request):
    return _fit(request.param)


def test_transform_batch_changes_the_output(fitted):
    model, modality, _ = fitted
    idx = np.arange(30)
    torch.manual_seed(0)
    a = model.get_normalized_expression(indices=idx, transform_batch="batch_0", modality=modality,
                                        return_numpy=True)
    torch.manual_seed(0)
    b = model.get_normalized_expression(indices=idx, transform_batch="batch_1", modality=modality,
                                        return_numpy=True)
    assert not np.allclose(a, b, rtol=1e-3)
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="not a category"):
        model.get_normalized_expression(transform_batch="batch_9", modality=modality)


def test_ambient_profile_columns_sum_to_one(fitted):
    model, modality, _ = fitted
    profile = model.get_ambient_profile(modality=modality)
    assert list(profile.columns) == ["batch_0", "batch_1"]
    np.testing.assert_allclose(profile.sum(0).to_numpy(), 1.0, rtol=1e-5)
    assert (model.get_dispersion(modality=modality).to_numpy() > 0).all()


def test_corrected_counts_sparse_and_at_most_observed(fitted):
    model, modality, counts = fitted
    corrected = model.get_ambient_corrected_counts(modality=modality)
    assert sparse.issparse(corrected) and corrected.shape == counts.shape
    assert (corrected - counts).max() <= 1e-4
    assert ((corrected != 0).multiply(counts == 0)).nnz == 0  # zeros stay zeros
    assert 0 < 1 - corrected.sum() / counts.sum() < 0.5


def test_marginal_ll_is_at_least_the_elbo(fitted):
    model, _, _ = fitted
    idx = np.arange(100)
    elbo = float(model.get_elbo(indices=idx))  # scvi-tools returns the ELBO, a negative number
    marginal = float(model.get_marginal_ll(indices=idx, n_mc_samples=30))
    assert np.isfinite([elbo, marginal]).all()
    assert marginal >= elbo - 1.0


def test_de_and_samples_per_modality(fitted):
    model, modality, counts = fitted
    de = model.differential_expression(idx1=np.arange(50), idx2=np.arange(50, 120), modality=modality)
    assert {"proba_de", "lfc_mean", "raw_mean1", "non_zeros_proportion2"} <= set(de.columns)
    genes = list(de.index[:3])
    names = list(model.get_normalized_expression(indices=[0], modality=modality).columns)
    assert all(g in names for g in genes)
    np.testing.assert_allclose(de.loc[names, "raw_mean1"].to_numpy(),
                               np.asarray(counts[:50].mean(0)).ravel(), rtol=1e-6)
    assert "_scvi_raw_norm_scaling" not in model.adata.obs
    samples = model.posterior_predictive_sample(indices=np.arange(20), modality=modality)
    assert samples.shape == (20, counts.shape[1])


def test_typos_and_unknown_modalities_raise(fitted):
    model, modality, _ = fitted
    with pytest.raises(TypeError, match="transform_bath"):
        model.get_normalized_expression(transform_bath="batch_0")
    with pytest.raises(TypeError, match="n_mc_sample"):
        model.get_marginal_ll(n_mc_sample=3)
    with pytest.raises(KeyError, match="modality 'protein' is not one of"):
        model.get_ambient_profile(modality="protein")


def test_save_load_gives_the_same_latent(fitted, tmp_path):
    model, _, _ = fitted
    model.save(tmp_path / "m")
    loaded = rv.load_model(tmp_path / "m", model.adata)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())


def test_contamination_and_ambient_counts(fitted):
    model, modality, counts = fitted
    fraction = model.get_contamination_fraction(modality=modality)
    assert list(fraction.index) == list(model.adata.obs_names)
    assert ((fraction >= 0) & (fraction <= 1)).all() and fraction.mean() > 0
    ambient = model.get_ambient_counts(modality=modality)
    corrected = model.get_ambient_corrected_counts(modality=modality)
    assert sparse.issparse(ambient) and ambient.min() >= 0
    np.testing.assert_allclose((ambient + corrected).toarray(), counts.toarray(), rtol=1e-5, atol=1e-4)
    if modality is not None:  # a modality without background: no contamination, nothing removed
        assert (model.get_contamination_fraction(modality="atac") == 0).all()
        assert model.get_ambient_counts(modality="atac").nnz == 0
