"""Safe save/load with bitwise-identical latents, for both set-up styles."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import regularizedvi as rv
from regularizedvi.module._base import standard_normal_like

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


FORMAT3_MULTIMODAL = Path(__file__).parent / "data" / "format3_multimodal"


def _format3_mudata():
    mdata = rv.simulate_multiome(n_cells=120, n_genes=40, n_peaks=50, n_types_a=3, n_types_b=2, n_batches=2,
                                 missing_b_fraction=0.0, seed=2)
    return mdata


def test_multimodal_model_saved_in_format_3_keeps_decoders_reading_the_whole_latent(tmp_path):
    # written by regularizedvi at commit 9a90a55 (format 3: no primary modality) with
    # tests/python/data/make_format3_multimodal.py
    model = rv.RegularizedMultimodalVI.load(FORMAT3_MULTIMODAL, _format3_mudata())
    assert model.module.primary_modality is None
    assert model.module.native_share_power == 0.5  # format 3's penalty: 0.17 sqrt(N)
    np.testing.assert_allclose(model.get_latent_representation(),
                               np.loadtxt(FORMAT3_MULTIMODAL / "latent_mean.txt"), rtol=1e-5, atol=1e-6)
    z = torch.as_tensor(model.get_latent_representation()[:10], dtype=torch.float32)
    with torch.no_grad():  # the RNA decoder reads the whole latent, as when it was trained
        rho = model.module.decode_rho("rna", z).numpy()
    np.testing.assert_allclose(rho, np.loadtxt(FORMAT3_MULTIMODAL / "rho_rna.txt"), rtol=1e-5, atol=1e-9)
    assert (model.module.detach_primary, model.module.secondary_kl_weight) == (False, 1.0)
    model.save(tmp_path / "again")  # saved again: format 5, the earlier rules recorded
    description = json.loads((tmp_path / "again" / "model.json").read_text())
    assert description["format"] == 5 and description["init_kwargs"]["primary_modality"] is None
    assert description["init_kwargs"]["native_share_power"] == 0.5
    assert description["init_kwargs"]["detach_primary"] is False
    assert description["init_kwargs"]["secondary_kl_weight"] == 1.0
    again = rv.RegularizedMultimodalVI.load(tmp_path / "again", _format3_mudata())
    assert again.module.primary_modality is None


def test_multimodal_primary_modality_default_and_errors():
    mdata = _format3_mudata()
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=8, n_latent={"rna": 3, "atac": 2})
    assert model.module.primary_modality == "rna"
    # the RNA decoder reads the RNA slice (3 dims); the ATAC decoder the whole latent (5)
    assert model.module.decoders["rna"].body.layers[0][1].in_features == 3
    assert model.module.decoders["atac"].body.layers[0][1].in_features == 5
    assert rv.RegularizedMultimodalVI(mdata, n_hidden=8, primary_modality="atac").module.primary_modality == "atac"
    assert rv.RegularizedMultimodalVI(mdata, n_hidden=8, primary_modality=None).module.primary_modality is None
    assert rv.RegularizedMultimodalVI(mdata, n_hidden=8, latent_mode="weighted_mean").module.primary_modality is None
    with pytest.raises(ValueError, match="one of the modalities"):
        rv.RegularizedMultimodalVI(mdata, primary_modality="protein")
    with pytest.raises(ValueError, match="concatenation' only"):
        rv.RegularizedMultimodalVI(mdata, latent_mode="single_encoder", primary_modality="rna")


def test_multimodal_primary_slice_is_trained_by_its_own_likelihood_alone():
    mdata = _format3_mudata()
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")

    def atac_gradient_on_rna_encoder(**kwargs):
        seed_everything(0)
        model = rv.RegularizedMultimodalVI(mdata, n_hidden=8, n_latent={"rna": 3, "atac": 2}, **kwargs)
        module = model.module
        module.train()
        tensors = next(iter(model._make_data_loader(adata=mdata, batch_size=60, shuffle=False)))
        inference, _, out = module(tensors, loss_kwargs={"kl_weight": 1.0})
        out.reconstruction_loss["reconstruction_atac"].sum().backward()
        grads = [p.grad for p in module.encoders["rna"].parameters() if p.grad is not None]
        return sum(float(g.abs().sum()) for g in grads), module, (inference, out)

    detached, module, (inference, out) = atac_gradient_on_rna_encoder()  # the defaults
    assert (module.detach_primary, module.secondary_kl_weight) == (True, 2.0)
    assert detached == 0.0
    shaped, _, _ = atac_gradient_on_rna_encoder(detach_primary=False)
    assert shaped > 0.0
    # the loss weighs the ATAC slice's KL twice; the reported terms are unweighted
    kl = {k: v.detach() for k, v in out.kl_local.items() if k.startswith("kl_divergence_z_")}
    assert set(kl) == {"kl_divergence_z_rna", "kl_divergence_z_atac"}
    qz = inference["qz"]
    kl_dims = kl_divergence(qz, standard_normal_like(qz)).detach()  # cells x (3 RNA + 2 ATAC) dims
    assert torch.equal(kl_dims[:, 3:].sum(-1), kl["kl_divergence_z_atac"])
    assert torch.equal(module._latent_kl(kl_dims, kl), kl["kl_divergence_z_rna"] + 2 * kl["kl_divergence_z_atac"])
    # outside training the ATAC decoder reads the RNA slice as it is
    module.eval()
    z = torch.randn(4, 5, requires_grad=True)
    module.decode_rho("atac", z).sum().backward()
    assert float(z.grad[:, :3].abs().sum()) > 0


def test_multimodal_detach_primary_and_secondary_kl_weight_errors():
    mdata = _format3_mudata()
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    plain = rv.RegularizedMultimodalVI(mdata, n_hidden=8, primary_modality=None)
    assert (plain.module.detach_primary, plain.module.secondary_kl_weight) == (False, 1.0)
    with pytest.raises(ValueError, match="apply to a primary modality"):
        rv.RegularizedMultimodalVI(mdata, primary_modality=None, secondary_kl_weight=2.0)
    with pytest.raises(ValueError, match="apply to a primary modality"):
        rv.RegularizedMultimodalVI(mdata, latent_mode="weighted_mean", detach_primary=True)
    with pytest.raises(ValueError, match="secondary_kl_weight must be a finite number > 0, got 0"):
        rv.RegularizedMultimodalVI(mdata, secondary_kl_weight=0)
    with pytest.raises(TypeError, match="detach_primary must be True or False, got 'yes'"):
        rv.RegularizedMultimodalVI(mdata, detach_primary="yes")


def test_multimodal_latent_kl_weighs_the_latent_slices_not_term_names():
    """The loss's latent KL is found by the latent slices: the primary slice (here the second)
    counts once, every other slice secondary_kl_weight times, however the reported terms are
    named; bit for bit the sum of the reported terms weighed so."""
    module = _multimodal_module(primary_modality="atac", detach_primary=True, secondary_kl_weight=3.0)
    kl_dims = torch.rand(6, 5, generator=torch.Generator().manual_seed(0))
    terms = module.kl_z_terms(kl_dims)
    expected = 3.0 * terms["kl_divergence_z_rna"] + terms["kl_divergence_z_atac"]
    assert torch.equal(module._latent_kl(kl_dims, terms), expected)
    renamed = {"first": terms["kl_divergence_z_rna"], "second": terms["kl_divergence_z_atac"]}
    assert torch.equal(module._latent_kl(kl_dims, renamed), expected)
    plain = _multimodal_module()  # no primary modality: the plain sum of the reported terms
    assert torch.equal(plain._latent_kl(kl_dims, plain.kl_z_terms(kl_dims)),
                       kl_dims[:, :2].sum(-1) + kl_dims[:, 2:].sum(-1))


def _multimodal_module(**kwargs):
    from regularizedvi.module._multimodal import RegularizedMultimodalVAE

    names = ["rna", "atac"]
    return RegularizedMultimodalVAE(names, {"rna": 6, "atac": 5}, {m: torch.zeros(1) for m in names},
                                    {m: torch.ones(1) for m in names}, n_latent={"rna": 2, "atac": 3},
                                    n_hidden={"rna": 4, "atac": 4}, **kwargs)


@pytest.mark.parametrize("options, error, message", [
    ({"primary_modality": "rna", "detach_primary": "yes"}, TypeError,
     "detach_primary must be True or False, got 'yes'"),
    ({"primary_modality": "rna", "detach_primary": 1}, TypeError, "detach_primary must be True or False, got 1"),
    ({"primary_modality": "rna", "secondary_kl_weight": 0}, ValueError,
     "secondary_kl_weight must be a finite number > 0, got 0"),
    ({"primary_modality": "rna", "secondary_kl_weight": float("nan")}, ValueError,
     "secondary_kl_weight must be a finite number > 0, got nan"),
    ({"primary_modality": "rna", "secondary_kl_weight": True}, ValueError,
     "secondary_kl_weight must be a finite number > 0, got True"),
    ({"secondary_kl_weight": 2.0}, ValueError, "apply to a primary modality"),
    ({"detach_primary": True}, ValueError, "apply to a primary modality"),
])
def test_multimodal_primary_options_are_checked_in_one_place(options, error, message):
    """The module checks detach_primary / secondary_kl_weight (it coerced 'yes' to True and took
    0 or nan before); the model resolves its None defaults and leaves the checks to it, so both
    give the same error."""
    with pytest.raises(error, match=re.escape(message)):
        _multimodal_module(**options)
    mdata = _format3_mudata()[:60].copy()
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    model_options = {"primary_modality": None, **options}
    with pytest.raises(error, match=re.escape(message)):
        rv.RegularizedMultimodalVI(mdata, n_hidden=4, n_latent=2, **model_options)
    module = _multimodal_module(primary_modality="rna", detach_primary=True, secondary_kl_weight=2)
    assert (module.detach_primary, module.secondary_kl_weight) == (True, 2.0)
    assert isinstance(module.secondary_kl_weight, float)
