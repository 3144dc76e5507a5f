"""scArches-style query mapping: reference weights frozen, new categories learned."""

import numpy as np
import pytest
import torch

import regularizedvi as rv

from conftest import seed_everything
from regularizedvi.model._query import old_positions


def test_old_positions_follow_each_key():
    assert old_positions([2, 3], [3, 4]).tolist() == [0, 1, 3, 4, 5]
    with pytest.raises(ValueError, match="do not extend"):
        old_positions([3], [2])


@pytest.mark.parametrize("style", ["batch_key", "purpose_keys"])
def test_query_with_new_batch(simulated, tmp_path, style):
    ref = simulated[simulated.obs["batch"] != "batch_2"].copy()
    query = simulated[simulated.obs["batch"] == "batch_2"].copy()
    if style == "batch_key":
        setup = {"batch_key": "batch", "nn_conditioning_covariate_keys": ["batch"]}
    else:
        setup = {"ambient_covariate_keys": ["batch"], "dispersion_key": "batch", "library_size_key": "batch",
                 "nn_conditioning_covariate_keys": ["batch"]}
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(ref, **setup)
    reference = rv.AmbientRegularizedSCVI(ref, n_hidden=32, n_latent=5)
    reference.train(max_epochs=5, enable_progress_bar=False)
    reference.save(tmp_path / "ref")
    before = {k: v.clone() for k, v in reference.module.state_dict().items()}

    mapped = rv.AmbientRegularizedSCVI.load_query_data(query, tmp_path / "ref")
    obs = mapped.module.observation
    assert obs.background_log.shape[0] == 3 and obs.log_theta_mu.shape[1] == 3
    mapped.train(max_epochs=3, enable_progress_bar=False)
    after = mapped.module.state_dict()
    # every reference entry is unchanged; the new batch's background and dispersion moved
    assert torch.equal(after["observation.background_log"][:2], before["observation.background_log"])
    assert torch.equal(after["observation.log_theta_mu"][:, :2], before["observation.log_theta_mu"])
    assert torch.equal(after["encoder.mean.weight"], before["encoder.mean.weight"])
    w_new, w_ref = after["decoder.body.layers.0.1.weight"], before["decoder.body.layers.0.1.weight"]
    assert torch.equal(w_new[:, :7], w_ref)
    assert not torch.equal(after["observation.background_log"][2], mapped_init_background(mapped, query))
    assert mapped.get_latent_representation().shape == (query.n_obs, 5)
    # the in-memory reference gives the same surgery as the saved one
    again = rv.AmbientRegularizedSCVI.load_query_data(query.copy(), reference)
    assert again.module.observation.background_log.shape == obs.background_log.shape


def mapped_init_background(model, query):
    from regularizedvi.model._utils import group_mean_profiles

    profiles = group_mean_profiles(query.X, np.zeros((query.n_obs, 1)), [1])
    return torch.log(0.01 * torch.as_tensor(profiles[0], dtype=torch.float32))


def test_query_with_other_genes_is_rejected(simulated, tmp_path):
    ref = simulated[:300].copy()
    rv.AmbientRegularizedSCVI.setup_anndata(ref, batch_key="batch")
    reference = rv.AmbientRegularizedSCVI(ref, n_hidden=16, n_latent=3)
    with pytest.raises(ValueError, match="missing"):
        rv.AmbientRegularizedSCVI.load_query_data(simulated[300:, 5:].copy(), reference)


def test_align_features_pads_and_orders_without_densifying(simulated):
    query = simulated[:50, 10:].copy()
    reference_genes = list(simulated.var_names[:20])[::-1]
    aligned = rv.align_features(query, reference_genes)
    assert list(aligned.var_names) == reference_genes
    assert aligned.var["present_in_query"].sum() == 10
    dense = aligned.X.toarray()
    for j, gene in enumerate(reference_genes):
        expected = query[:, gene].X.toarray().ravel() if gene in query.var_names else np.zeros(50)
        np.testing.assert_array_equal(dense[:, j], expected)
    assert query.n_vars == simulated.n_vars - 10


def test_query_with_only_known_categories_has_nothing_to_train(simulated):
    ref = simulated[:400].copy()
    rv.AmbientRegularizedSCVI.setup_anndata(ref, batch_key="batch")
    reference = rv.AmbientRegularizedSCVI(ref, n_hidden=16, n_latent=3)
    query = simulated[400:600].copy()
    mapped = rv.AmbientRegularizedSCVI.load_query_data(query, reference)
    with pytest.raises(ValueError, match="Nothing to train"):
        mapped.train(max_epochs=1)
    assert mapped.get_latent_representation().shape == (200, 3)


def test_label_transfer_recovers_labels_and_flags_a_type_the_reference_lacks(simulated):
    ref = simulated[(simulated.obs["batch"] != "batch_2") & (simulated.obs["cell_type"] != "type_3")].copy()
    query = simulated[simulated.obs["batch"] == "batch_2"].copy()
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(ref, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    reference = rv.AmbientRegularizedSCVI(ref, n_hidden=32, n_latent=5)
    reference.train(max_epochs=60, enable_progress_bar=False)
    mapped = rv.AmbientRegularizedSCVI.load_query_data(query, reference)
    mapped.train(max_epochs=40, enable_progress_bar=False)
    result = mapped.transfer_labels(ref, "cell_type")
    assert list(result.index) == list(query.obs_names)
    truth = query.obs["cell_type"].astype(str).to_numpy()
    known = truth != "type_3"
    accuracy = (result["predicted"].to_numpy()[known] == truth[known]).mean()
    print("label transfer: accuracy", accuracy, "flagged known", result["unknown"][known].mean(),
          "flagged novel", result["unknown"][~known].mean())
    assert accuracy > 0.95
    assert result["unknown"].to_numpy()[known].mean() < 0.1
    assert result["unknown"].to_numpy()[~known].mean() > 0.9  # a type the reference lacks: "unknown"
    assert set(result.loc[result["unknown"], "label"]) == {"unknown"}
    assert ((result["confidence"] >= 0) & (result["confidence"] <= 1)).all()
    with pytest.raises(KeyError, match="labels_key 'nope'"):
        mapped.transfer_labels(ref, "nope")
    with pytest.raises(ValueError, match="must be cells x dimensions"):
        rv.transfer_labels(np.zeros((5, 3)), ["a"] * 5, np.zeros((2, 4)))


# ---------------------------------------------------------------- query input correction
def _shifted_query(seed: int = 0):
    """Reference = batches 0-1; query = batch 2 with a planted per-gene log-normal factor (sd 1)."""
    import scipy.sparse as sp

    adata = rv.simulate_counts(n_cells=900, n_genes=200, n_batches=3, markers_per_type=10, batch_fold_sd=0.3,
                               seed=seed)
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0.0, 1.0, query.n_vars))
    query.X = sp.csr_matrix(rng.poisson(query.X.toarray() * factor).astype(np.float32))
    return ref, query[np.asarray(query.X.sum(1)).ravel() > 0].copy()


def query_mixing(ref_z, query_z, k: int = 15) -> np.ndarray:
    """Per query cell: share of reference cells among its k joint-latent neighbours / expected
    (as bench/mapping.py)."""
    from sklearn.neighbors import NearestNeighbors

    joint = np.vstack([ref_z, query_z])
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(joint).kneighbors(query_z)
    share = (idx[:, 1:] < len(ref_z)).mean(1)
    return share / (len(ref_z) / (len(joint) - 1))


@pytest.fixture(scope="module")
def shifted_mapping():
    import scvi

    ref, query = _shifted_query(0)
    scvi.settings.seed = 0
    rv.AmbientRegularizedSCVI.setup_anndata(ref, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    reference = rv.AmbientRegularizedSCVI(ref, n_hidden=32, n_latent=5)
    reference.train(max_epochs=40, enable_progress_bar=False)
    # the frozen encoder on the raw query counts: an uncorrected query model before training
    raw = rv.AmbientRegularizedSCVI.load_query_data(query.copy(), reference, input_correction=False)
    mapped = {}
    for correct in (True, False):
        scvi.settings.seed = 0
        model = rv.AmbientRegularizedSCVI.load_query_data(query.copy(), reference, input_correction=correct)
        model.train(max_epochs=60, enable_progress_bar=False, plan_kwargs={"weight_decay": 0.0})
        mapped[correct] = model
    return ref, query, reference, raw.get_latent_representation(), mapped


def test_input_correction_keeps_reference_cells_and_moves_the_query(shifted_mapping):
    ref, query, reference, raw_z, mapped = shifted_mapping
    on, off = mapped[True], mapped[False]
    assert on.module.query_mapping() == {"scaling_rows": [2], "pinned_decoder_columns": [2]}
    # (a) reference cells through the query model: the reference latent, bit for bit
    ref_z = reference.get_latent_representation()
    np.testing.assert_array_equal(on.get_latent_representation(ref), ref_z)
    table = on.module.observation.input_log_ratio().detach()
    assert torch.equal(table[:2], torch.zeros_like(table[:2])) and table[2].abs().mean() > 0.1
    # (b) the query latent moves with the correction, not without
    assert np.abs(on.get_latent_representation() - raw_z).mean() > 0.02
    np.testing.assert_array_equal(off.get_latent_representation(), raw_z)
    # pinned decoder: the new covariate column is the reference columns' mean after training
    for block in on.module.decoder.body.layers:
        w = block[1].weight.detach()
        start = w.shape[1] - 3
        torch.testing.assert_close(w[:, start + 2], w[:, start:start + 2].mean(1), rtol=0, atol=1e-6)
    # (c) query->reference mixing: seed 0 +0.15; seeds 0-5 gained +0.03 to +0.15
    mix_on = query_mixing(ref_z, on.get_latent_representation()).mean()
    mix_off = query_mixing(ref_z, off.get_latent_representation()).mean()
    print("mixing with / without the input correction", mix_on, mix_off)
    assert mix_on > mix_off + 0.05


def test_input_correction_off_maps_as_before(shifted_mapping):
    ref, query, reference, raw_z, mapped = shifted_mapping
    off = mapped[False]
    obs = off.module.observation
    assert off.module.query_mapping() is None and not obs.query_scaling_rows.any()
    assert "scaling_covs" not in off.module._get_inference_input({"X": torch.zeros(1, 200)})
    y = obs.feature_scaling_values()
    expected = -(199.0 * torch.log(y) - 200.0 * y + 200.0 * np.log(200.0) - torch.lgamma(torch.tensor(200.0))).sum()
    torch.testing.assert_close(off.module.observation._feature_scaling_log_prior(), -expected)
    w = off.module.decoder.body.layers[0][1].weight.detach()  # the new decoder column trained freely
    assert not torch.allclose(w[:, -1], w[:, -3:-1].mean(1), atol=1e-4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        rv.AmbientRegularizedSCVI.load_query_data(query.copy(), reference, input_corection=False)
    with pytest.raises(TypeError, match="input_correction must be True or False, got 'no'"):
        rv.AmbientRegularizedSCVI.load_query_data(query.copy(), reference, input_correction="no")


def test_saved_query_model_keeps_its_input_correction(shifted_mapping, tmp_path):
    import json

    ref, query, reference, raw_z, mapped = shifted_mapping
    on = mapped[True]
    on.save(tmp_path / "query")
    saved = json.loads((tmp_path / "query" / "model.json").read_text())
    assert saved["query_mapping"] == {"scaling_rows": [2], "pinned_decoder_columns": [2]}
    loaded = rv.AmbientRegularizedSCVI.load(tmp_path / "query", adata=query.copy())
    assert loaded.module.query_mapping() == on.module.query_mapping()
    np.testing.assert_array_equal(loaded.get_latent_representation(), on.get_latent_representation())
    mapped[False].save(tmp_path / "plain")
    assert "query_mapping" not in json.loads((tmp_path / "plain" / "model.json").read_text())
    # mapping again onto the saved query model keeps its query row (and the reference cells' latent)
    again = rv.AmbientRegularizedSCVI.load_query_data(query.copy(), tmp_path / "query")
    assert again.module.query_mapping() == on.module.query_mapping()
    np.testing.assert_array_equal(again.get_latent_representation(ref), reference.get_latent_representation())


def test_query_mapping_state_follows_the_class_flag_alone(simulated, tmp_path, monkeypatch):
    """``supports_query_input_correction`` is the one switch for query-mapping state: saving writes it,
    loading applies it, and a class without the flag neither writes nor reads it, whatever its
    module has."""
    import json

    adata = simulated[:200].copy()
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=3)
    model.module.pin_decoder_columns([1], reset=False)
    state = {"scaling_rows": [], "pinned_decoder_columns": [1]}
    model.save(tmp_path / "flag")
    assert json.loads((tmp_path / "flag" / "model.json").read_text())["query_mapping"] == state
    assert rv.AmbientRegularizedSCVI.load(tmp_path / "flag", adata=adata).module.query_mapping() == state
    monkeypatch.setattr(rv.AmbientRegularizedSCVI, "supports_query_input_correction", False)
    model.save(tmp_path / "no_flag")
    assert "query_mapping" not in json.loads((tmp_path / "no_flag" / "model.json").read_text())
    assert rv.AmbientRegularizedSCVI.load(tmp_path / "flag", adata=adata).module.query_mapping() is None


def test_multimodal_query_refuses_the_input_correction_it_does_not_have():
    """RegularizedMultimodalVI maps without the input correction: its default and False map
    alike, an explicit True is refused (it was silently ignored)."""
    mdata = rv.simulate_multiome(n_cells=90, n_genes=30, n_peaks=40, n_types_a=2, n_types_b=2, n_batches=2,
                                 missing_b_fraction=0.0, seed=3)
    ref, query = mdata[mdata.obs["batch"] != "batch_1"].copy(), mdata[mdata.obs["batch"] == "batch_1"].copy()
    rv.RegularizedMultimodalVI.setup_mudata(ref, modalities=["rna", "atac"], batch_key="batch",
                                            nn_conditioning_covariate_keys=["batch"])
    seed_everything(0)
    reference = rv.RegularizedMultimodalVI(ref, n_hidden=8, n_latent=2)
    default = rv.RegularizedMultimodalVI.load_query_data(query.copy(), reference)
    off = rv.RegularizedMultimodalVI.load_query_data(query.copy(), reference, input_correction=False)
    for key, value in default.module.state_dict().items():
        assert torch.equal(value, off.module.state_dict()[key]), key
    with pytest.raises(ValueError, match=r"input_correction=True does not apply to RegularizedMultimodalVI: "
                                         r"the multimodal model maps a query without the input correction"):
        rv.RegularizedMultimodalVI.load_query_data(query.copy(), reference, input_correction=True)
    with pytest.raises(TypeError, match="input_correction must be True or False, got 1"):
        rv.RegularizedMultimodalVI.load_query_data(query.copy(), reference, input_correction=1)
