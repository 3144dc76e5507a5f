"""Safe save/load with bitwise-identical latents, for both set-up styles."""

import json

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
