"""The purpose-driven covariate design: fan-out, exclusivity, defaults, errors."""

import numpy as np
import pytest

import regularizedvi as rv
from regularizedvi.data import _keys as K
from regularizedvi.data import resolve_covariate_design


def test_batch_key_fans_out_to_ambient_dispersion_and_library():
    design = resolve_covariate_design(batch_key="sample", nn_conditioning_covariate_keys=["chem"])
    assert design.ambient_covariate_keys == ["sample"]
    assert design.dispersion_key == "sample"
    assert design.library_size_key == "sample"
    assert design.nn_conditioning_covariate_keys == ["chem"]
    assert design.feature_scaling_covariate_keys == ["chem"]  # follows the decoder's keys
    assert design.encoder_covariate_keys == []


@pytest.mark.parametrize("off", [[], False])
def test_feature_scaling_follows_nn_conditioning_unless_turned_off(simulated, off):
    assert resolve_covariate_design(nn_conditioning_covariate_keys=["a"],
                                    feature_scaling_covariate_keys=["b"]).feature_scaling_covariate_keys == ["b"]
    assert resolve_covariate_design(nn_conditioning_covariate_keys=["a"],
                                    feature_scaling_covariate_keys=off).feature_scaling_covariate_keys == []
    assert resolve_covariate_design(batch_key="a").feature_scaling_covariate_keys == []
    adata = simulated.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    scaled = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4).module.observation
    assert scaled.feature_scaling_raw.shape == (3, adata.n_vars)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"],
                                            feature_scaling_covariate_keys=off)
    single = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4).module.observation
    assert single.feature_scaling_raw.shape == (1, adata.n_vars)


@pytest.mark.parametrize("extra", [{"ambient_covariate_keys": ["a"]}, {"dispersion_key": "a"},
                                   {"library_size_key": "a"}])
def test_batch_key_with_purpose_keys_is_rejected(extra):
    with pytest.raises(ValueError, match="batch_key cannot be combined with"):
        resolve_covariate_design(batch_key="sample", **extra)


def test_dispersion_key_takes_one_column():
    with pytest.raises(TypeError, match="takes one obs column name"):
        resolve_covariate_design(dispersion_key=["a", "b"])


def test_encoder_covariates_warn():
    with pytest.warns(UserWarning, match="no longer batch-free"):
        resolve_covariate_design(encoder_covariate_keys=["sample"])


def test_registered_group_counts(simulated):
    adata = simulated.copy()
    adata.obs["site"] = np.where(np.arange(adata.n_obs) % 2, "s1", "s2")
    rv.AmbientRegularizedSCVI.setup_anndata(
        adata, ambient_covariate_keys=["batch", "site"], dispersion_key="site", library_size_key="batch",
        nn_conditioning_covariate_keys=["site"], feature_scaling_covariate_keys=["batch"],
    )
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    obs = model.module.observation
    assert obs.background_table().shape == (3 + 2, adata.n_vars) and obs.background_log.shape == (3 + 2, 1)
    assert obs.log_theta_mu.shape == (adata.n_vars, 2)
    assert obs.library_log_means.shape == (3,)
    assert obs.feature_scaling_raw.shape == (3, adata.n_vars)
    assert model.module.decoder.body.layers[0][1].in_features == 4 + 2
    assert model.module.encoder.body.layers[0][1].in_features == adata.n_vars


def test_no_keys_gives_one_group_per_component(simulated):
    adata = simulated.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    obs = model.module.observation
    assert obs.background_table().shape == (1, adata.n_vars)
    assert obs.log_theta_mu.shape == (adata.n_vars, 1)
    assert obs.library_log_means.shape == (1,)
    assert K.AMBIENT not in model.adata_manager.data_registry


def test_library_prior_matches_group_statistics(simulated):
    adata = simulated.copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    log_totals = np.log(np.asarray(adata.X.sum(1)).ravel())
    for code, batch in enumerate(adata.obs["batch"].cat.categories):
        values = log_totals[(adata.obs["batch"] == batch).to_numpy()]
        assert model.module.observation.library_log_means[code].item() == pytest.approx(values.mean(), rel=1e-5)
        assert model.module.observation.library_log_vars[code].item() == pytest.approx(values.var(), rel=1e-4)
