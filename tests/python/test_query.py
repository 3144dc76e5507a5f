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
