"""Safe save/load with bitwise-identical latents, for both set-up styles."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import regularizedvi as rv

from conftest import seed_everything


@pytest.fixture(params=["batch_key", "purpose_keys"])
def small_trained(request, simulated):
    adata = simulated[:600].copy()
    adata.obs["site"] = np.where(np.arange(adata.n_obs) % 2, "s1", "s2")
    if request.param == "batch_key":
        setup = {"batch_key": "batch", "nn_conditioning_covariate_keys": ["site"]}
    else:
        setup = {"ambient_covariate_keys": ["batch", "site"], "dispersion_key": "site",
                 "library_size_key": "batch", "feature_scaling_covariate_keys": ["site"]}
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, **setup)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=32, n_latent=5)
    model.train(max_epochs=3, enable_progress_bar=False)
    return model


def test_round_trip_is_bitwise(small_trained, tmp_path):
    small_trained.save(tmp_path / "m")
    z = small_trained.get_latent_representation()
    fresh = small_trained.adata.copy()
    fresh.obs = fresh.obs[[c for c in fresh.obs.columns if not c.startswith("_scvi")]]
    loaded = rv.AmbientRegularizedSCVI.load(tmp_path / "m", fresh)
    assert np.array_equal(loaded.get_latent_representation(), z)
    for k, v in small_trained.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k])
    assert loaded.is_trained_


def test_saved_files_are_data_not_code(small_trained, tmp_path):
    small_trained.save(tmp_path / "m")
    json.loads((tmp_path / "m" / "model.json").read_text())
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_load_rejects_other_genes_and_unknown_categories(small_trained, tmp_path):
    small_trained.save(tmp_path / "m")
    with pytest.raises(ValueError, match="does not have the model's features"):
        rv.AmbientRegularizedSCVI.load(tmp_path / "m", small_trained.adata[:, :-3].copy())
    other = small_trained.adata.copy()
    other.obs["batch"] = other.obs["batch"].cat.rename_categories(lambda c: c + "_new")
    with pytest.raises(ValueError, match="never saw.*load_query_data"):
        rv.AmbientRegularizedSCVI.load(tmp_path / "m", other)


def test_save_refuses_to_overwrite(small_trained, tmp_path):
    small_trained.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small_trained.save(tmp_path / "m")
    small_trained.save(tmp_path / "m", overwrite=True, save_anndata=True)
    loaded = rv.AmbientRegularizedSCVI.load(tmp_path / "m")
    assert loaded.adata.n_obs == small_trained.adata.n_obs


FORMAT1 = Path(__file__).parent / "data" / "format1_model"


def test_model_saved_in_format_1_loads_with_its_own_layer_rules(tmp_path):
    # written by regularizedvi at commit cd60389 (model file format 1: decoder covariates
    # concatenated before the LayerNorm, gain 1; feature_scaling_covariate_keys=None meant
    # one factor per gene) with tests/python/data/make_format1.py
    adata = rv.simulate_counts(n_cells=300, n_genes=60, n_cell_types=3, n_batches=2, markers_per_type=5, seed=1)
    saved = np.loadtxt(FORMAT1 / "latent_mean.txt")
    model = rv.AmbientRegularizedSCVI.load(FORMAT1, adata.copy())
    assert model.module.observation.feature_scaling_raw.shape == (1, 60)
    np.testing.assert_allclose(model.get_latent_representation(), saved, rtol=1e-5, atol=1e-6)
    # saved again, it stays a format-1 model
    model.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model.json").read_text())["format"] == 1
    again = rv.AmbientRegularizedSCVI.load(tmp_path / "again", adata.copy())
    np.testing.assert_allclose(again.get_latent_representation(), saved, rtol=1e-5, atol=1e-6)
    # read with today's rules the same weights would mean another decoder
    description = json.loads((FORMAT1 / "model.json").read_text())
    description["format"] = 2
    description["registry"]["setup_args"]["feature_scaling_covariate_keys"] = []
    (tmp_path / "as2").mkdir()
    (tmp_path / "as2" / "model.json").write_text(json.dumps(description))
    (tmp_path / "as2" / "weights.pt").write_bytes((FORMAT1 / "weights.pt").read_bytes())
    as2 = rv.AmbientRegularizedSCVI.load(tmp_path / "as2", adata.copy())
    rho_old = model.get_normalized_expression(return_numpy=True)
    rho_new = as2.get_normalized_expression(return_numpy=True)
    assert np.abs(rho_old - rho_new).max() > 1e-3
