"""The ambient adversary (``ambient_adversary=``): a gradient-reversed classifier of the ambient
group on the latent mean. Its effect on contamination is measured on semi-synthetic designs
in bench/ambient_bench.py (bench/README.md); here: the gradient's direction, that it removes
the group from the latent, that it changes nothing when off, errors, save/load and query
surgery."""

import numpy as np
import pytest
import torch

import regularizedvi as rv
from regularizedvi.data import _keys as K

from conftest import seed_everything
from test_multimodal import fresh_copy

QUIET = {"enable_progress_bar": False}


def _model(adata, weight, **setup):
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, **(setup or {"batch_key": "batch"}))
    return rv.AmbientRegularizedSCVI(adata, n_hidden=32, n_latent=5, ambient_adversary=weight)


def test_off_by_default_and_the_other_parts_start_alike(simulated):
    off = _model(simulated.copy(), 0.0)
    on = _model(simulated.copy(), 5.0)
    assert off.module.ambient_adversary_net is None
    assert not any(k.startswith("ambient_adversary_net") for k in off.module.state_dict())
    # built from a seed of its own: every other weight is the same with it or without it
    on_state = on.module.state_dict()
    for name, value in off.module.state_dict().items():
        assert torch.equal(value, on_state[name]), name
    assert on.module.ambient_adversary_net[-1].out_features == 3  # three batches


def test_encoder_gradient_is_reversed_classifier_gradient_is_not(simulated):
    model = _model(simulated.copy(), 2.0)
    module = model.module
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=64, shuffle=False)))
    qz = module.inference(**module._get_inference_input(tensors))["qz"]
    term = module._ambient_adversary_term(tensors, qz).mean()
    encoder_w, classifier_w = module.encoder.mean.weight, module.ambient_adversary_net[0].weight
    g_encoder, g_classifier = torch.autograd.grad(term, [encoder_w, classifier_w], retain_graph=True)
    # the same cross-entropy without the reversal
    codes = tensors[K.AMBIENT][:, 0].long()
    plain = 2.0 * torch.nn.functional.cross_entropy(module.ambient_adversary_net(qz.loc), codes)
    p_encoder, p_classifier = torch.autograd.grad(plain, [encoder_w, classifier_w])
    assert g_encoder.abs().sum() > 0
    torch.testing.assert_close(g_encoder, -p_encoder)
    torch.testing.assert_close(g_classifier, p_classifier)


def _accuracy(latent, labels, seed=0):
    """Held-out accuracy of a logistic regression predicting ``labels`` from the latent."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    a, b, ya, yb = train_test_split(latent, labels, test_size=0.3, random_state=seed, stratify=labels)
    return LogisticRegression(max_iter=2000).fit(a, ya).score(b, yb)


def test_adversary_keeps_the_group_out_of_the_latent():
    """Batches that differ only in their soup (5-40% contamination, no batch effect on
    expression): without the adversary the latent tells the batches apart within each cell
    type; with it, much less, and the cell types stay apart."""
    adata = rv.simulate_counts(n_cells=1500, n_genes=500, n_batches=3, markers_per_type=25,
                               batch_affected_fraction=0.0, contamination=(0.05, 0.4), seed=1)
    batch, types = adata.obs["batch"].to_numpy(), adata.obs["cell_type"].to_numpy()
    scores = {}
    for weight in (0.0, 10.0):
        model = _model(adata.copy(), weight)
        model.train(max_epochs=60, **QUIET)
        z = model.get_latent_representation()
        within = np.mean([_accuracy(z[types == t], batch[types == t]) for t in np.unique(types)])
        scores[weight] = (within, _accuracy(z, types))
    print(f"\nwithin-type batch accuracy / cell-type accuracy from z: off {scores[0.0]}, adversary 10 {scores[10.0]}")
    (batch_off, type_off), (batch_on, type_on) = scores[0.0], scores[10.0]
    assert batch_off > 0.82  # measured 0.867 (the majority batch of each type: 0.636)
    assert batch_on < batch_off - 0.07  # measured 0.747
    assert type_on > 0.95


@pytest.mark.parametrize("weight, message", [
    (-1.0, "ambient_adversary must be a number >= 0"),
    ("strong", "ambient_adversary must be a number"),
    (True, "ambient_adversary must be a number"),
])
def test_bad_weights_are_refused(simulated, weight, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _model(simulated.copy(), weight)


def test_adversary_needs_two_ambient_groups(simulated):
    with pytest.raises(ValueError, match="no ambient groups.*batch_key= or ambient_covariate_keys="):
        _model(simulated.copy(), 1.0, dispersion_key="batch")
    one = simulated.copy()
    one.obs["one"] = "all"
    with pytest.raises(ValueError, match="one ambient group"):
        _model(one, 1.0, batch_key="one")


def _saved_and_reloaded(build, simulated, tmp_path):
    """Trains ``build(reference cells, 4.0)``, saves it, checks that loading gives the same
    latent bit for bit, and returns the trained reference and the held-out query cells."""
    ref = simulated[simulated.obs["batch"] != "batch_2"].copy()
    query = simulated[simulated.obs["batch"] == "batch_2"].copy()
    reference = build(ref, 4.0)
    reference.train(max_epochs=3, **QUIET)
    reference.save(tmp_path / "ref")
    loaded = rv.AmbientRegularizedSCVI.load(tmp_path / "ref", adata=ref)
    assert loaded.module.ambient_adversary == 4.0
    np.testing.assert_array_equal(loaded.get_latent_representation(), reference.get_latent_representation())
    return reference, query


def test_save_load_and_query_surgery(simulated, tmp_path):
    reference, query = _saved_and_reloaded(_model, simulated, tmp_path)
    head = reference.module.ambient_adversary_net[-1].weight.detach().clone()
    mapped = rv.AmbientRegularizedSCVI.load_query_data(query, tmp_path / "ref")
    new_head = mapped.module.ambient_adversary_net[-1]
    assert new_head.out_features == 3
    mapped.train(max_epochs=2, **QUIET)
    # the reference's rows of the output layer stay as they were; the query's row is learned
    assert torch.equal(new_head.weight[:2].detach(), head)


def test_multimodal_model_takes_it_and_refuses_it_without_a_background():
    mdata = fresh_copy(rv.simulate_multiome(n_cells=300, n_genes=100, n_peaks=150, n_types_a=3, n_types_b=2,
                                            n_batches=2, seed=0))
    seed_everything(0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=32, n_latent=4, ambient_adversary=3.0)
    assert model.module.ambient_adversary_net[0].in_features == model.module.n_latent
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.get_latent_representation()).all()
    with pytest.raises(ValueError, match="no modality with an additive background"):
        rv.RegularizedMultimodalVI(mdata, n_hidden=32, n_latent=4, ambient_adversary=3.0,
                                   additive_background={"rna": False, "atac": False})


# ---------------------------------------------------------------- labels_key (conditioned adversary)
def _labelled(adata, weight, labels="cell_type"):
    seed_everything(0)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", labels_key=labels)
    return rv.AmbientRegularizedSCVI(adata, n_hidden=32, n_latent=5, ambient_adversary=weight)


def test_labels_are_read_beside_the_reversed_latent(simulated):
    model = _labelled(simulated.copy(), 2.0)
    module = model.module
    n_types = simulated.obs["cell_type"].nunique()
    assert module.n_adversary_labels == n_types
    assert module.ambient_adversary_net[0].in_features == module.n_latent + n_types
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=64, shuffle=False)))
    qz = module.inference(**module._get_inference_input(tensors))["qz"]
    term = module._ambient_adversary_term(tensors, qz)
    # by hand: the classifier on [z mean, one-hot label], cross-entropy against the batch
    labels = torch.nn.functional.one_hot(tensors[K.LABELS].long().reshape(-1), n_types).float()
    logits = module.ambient_adversary_net(torch.cat([qz.loc, labels], -1))
    expected = 2.0 * torch.nn.functional.cross_entropy(logits, tensors[K.AMBIENT][:, 0].long(), reduction="none")
    torch.testing.assert_close(term, expected)
    # the labels' columns of the input layer learn as the classifier does (no reversal on data)
    w = module.ambient_adversary_net[0].weight
    g_term, = torch.autograd.grad(term.mean(), [w], retain_graph=True)
    g_hand, = torch.autograd.grad(expected.mean(), [w])
    torch.testing.assert_close(g_term, g_hand)
    assert g_term[:, module.n_latent:].abs().sum() > 0
    # without labels_key the same set-up reads the latent alone
    assert _model(simulated.copy(), 2.0).module.ambient_adversary_net[0].in_features == module.n_latent


def test_labels_without_the_adversary_warn_and_are_not_used(simulated):
    with pytest.warns(UserWarning, match="labels_key='cell_type' is registered, but ambient_adversary=0"):
        model = _labelled(simulated.copy(), 0.0)
    assert model.module.ambient_adversary_net is None and model.module.n_adversary_labels == 0


def test_bad_labels_keys_are_refused(simulated):
    adata = simulated.copy()
    adata.obs["depth"] = np.asarray(adata.X.sum(1)).ravel() / 7.0
    with pytest.raises(ValueError, match="column 'depth' is numeric with non-integer values"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", labels_key="depth")
    with pytest.raises(TypeError, match="labels_key takes one obs column name"):
        rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", labels_key=["cell_type"])


def test_labels_save_load_and_a_query_without_labels(simulated, tmp_path):
    reference, query = _saved_and_reloaded(_labelled, simulated, tmp_path)
    del query.obs["cell_type"]
    with pytest.raises(ValueError, match=r"labels_key='cell_type'.*no obs column 'cell_type'.*'unknown'"):
        rv.AmbientRegularizedSCVI.load_query_data(query, tmp_path / "ref")
    query.obs["cell_type"] = "unknown"
    first = reference.module.ambient_adversary_net[0].weight.detach().clone()
    mapped = rv.AmbientRegularizedSCVI.load_query_data(query, tmp_path / "ref")
    layer = mapped.module.ambient_adversary_net[0]
    assert layer.in_features == first.shape[1] + 1  # the placeholder is a new label
    mapped.train(max_epochs=2, **QUIET)
    # the reference's columns (latent and labels) stay as they were
    assert torch.equal(layer.weight[:, :first.shape[1]].detach(), first)
    assert np.isfinite(mapped.get_latent_representation()).all()


def test_multimodal_model_reads_labels_too():
    mdata = fresh_copy(rv.simulate_multiome(n_cells=300, n_genes=100, n_peaks=150, n_types_a=3, n_types_b=2,
                                            n_batches=2, seed=0))
    mdata.obs["lab"] = np.where(np.arange(mdata.n_obs) % 3 == 0, "x", "y")
    seed_everything(0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch", labels_key="lab")
    model = rv.RegularizedMultimodalVI(mdata, n_hidden=32, n_latent=4, ambient_adversary=3.0)
    assert model.module.ambient_adversary_net[0].in_features == model.module.n_latent + 2
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.get_latent_representation()).all()
