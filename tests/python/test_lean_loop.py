"""The lean training loop (loop="lean"): bit-for-bit the Lightning run on the CPU, for the
single and the multimodal model, with early stopping, step-wise KL warm-up and a
learning-rate schedule; clear errors where only Lightning can do what is asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import regularizedvi as rv

from conftest import seed_everything

QUIET = {"enable_progress_bar": False, "accelerator": "cpu", "data_loader": "fast"}


def _single(seed_data: int = 3):
    adata = rv.simulate_counts(n_cells=500, n_genes=150, n_batches=2, markers_per_type=15, seed=seed_data)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", nn_conditioning_covariate_keys=["batch"])
    seed_everything(0)
    return rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)


def _multimodal():
    mdata = rv.simulate_multiome(n_cells=200, n_genes=100, n_peaks=120, n_types_a=3, n_types_b=2,
                                 n_batches=2, missing_b_fraction=0.05, seed=0)
    rv.RegularizedMultimodalVI.setup_mudata(mdata, modalities=["rna", "atac"], batch_key="batch")
    seed_everything(0)
    return rv.RegularizedMultimodalVI(mdata, n_hidden=16, n_latent=3)


def _assert_same_run(a, b):
    state_a, state_b = a.module.state_dict(), b.module.state_dict()
    assert state_a.keys() == state_b.keys()
    different = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not different, f"weights differ: {different}"
    assert sorted(a.history_) == sorted(b.history_)
    for name, frame in a.history_.items():
        other = b.history_[name]
        assert list(frame.index) == list(other.index), name
        np.testing.assert_array_equal(frame.values.astype(float), other.values.astype(float), err_msg=name)
    np.testing.assert_array_equal(a.get_latent_representation(), b.get_latent_representation())


CASES = {
    "default": {},
    "early_stopping": {"early_stopping": True, "early_stopping_patience": 2,
                       "early_stopping_min_delta_per_feature": 0.5},
    "step_warmup_val_every_2": {"check_val_every_n_epoch": 2,
                                "plan_kwargs": {"n_epochs_kl_warmup": None, "n_steps_kl_warmup": 15}},
    "lr_on_plateau": {"plan_kwargs": {"reduce_lr_on_plateau": True, "lr_patience": 1, "lr_factor": 0.5,
                                      "lr_threshold": 1e4}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_lean_loop_reproduces_lightning_bitwise(case):
    kwargs = CASES[case]
    runs = {}
    for loop in ("lightning", "lean"):
        model = _single()
        model.train(max_epochs=6, batch_size=64, loop=loop, **QUIET, **kwargs)
        assert model.training_loop_used == loop
        runs[loop] = model
    _assert_same_run(runs["lightning"], runs["lean"])
    n_epochs = len(runs["lean"].history_["train_loss"])
    if case == "early_stopping":
        assert n_epochs < 6  # it did stop early, at the same epoch in both loops
    else:
        assert n_epochs == 6
    if case == "lr_on_plateau":  # never "improving" by 1e4: the step halves every 2 epochs
        lrs = runs["lean"].history_["lr-Adam/pg1"]
        assert list(lrs.index) == [0, 7, 14, 21, 28, 35] and lrs.index.name == "step"
        np.testing.assert_allclose(lrs.values.astype(float).ravel(), [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    assert np.array_equal(runs["lean"].train_indices, runs["lightning"].train_indices)


def test_lean_loop_multimodal_matches_lightning():
    runs = {}
    for loop in ("lightning", "lean"):
        model = _multimodal()
        model.train(max_epochs=3, batch_size=64, loop=loop, **QUIET)
        runs[loop] = model
    _assert_same_run(runs["lightning"], runs["lean"])


def test_lean_loop_max_steps_and_choice():
    model = _single()
    model.train(max_epochs=50, batch_size=64, loop="lean", max_steps=10, **QUIET)
    # 448 training cells = 7 steps per epoch: 10 steps end inside the second epoch
    assert list(model.history_["train_loss"].index) == [0, 1]
    assert model.is_trained_ and model.trainer is None
    auto = _single()
    auto.train(max_epochs=1, **QUIET)
    assert auto.training_loop_used == "lean"
    auto.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu", data_loader="scvi")
    assert auto.training_loop_used == "lightning"  # scvi-tools' loader: Lightning's loop


def test_lean_loop_errors():
    model = _single()
    with pytest.raises(ValueError, match="loop must be one of"):
        model.train(max_epochs=1, loop="fastest", **QUIET)
    with pytest.raises(ValueError, match=r"loop='lean' needs the in-memory data path \('fast' or 'host'\); this run uses the 'scvi' loader"):
        model.train(max_epochs=1, loop="lean", accelerator="cpu", data_loader="scvi", enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"loop='lean' cannot run with: callbacks, gradient_clip_val.*loop='lightning'"):
        model.train(max_epochs=1, loop="lean", callbacks=[], gradient_clip_val=1.0, **QUIET)
    assert not model.is_trained_
    # "auto" with a Lightning-only option trains under Lightning
    model.train(max_epochs=1, gradient_clip_val=1.0, **QUIET)
    assert model.training_loop_used == "lightning"


def test_lean_loop_lr_schedule_needs_validation():
    model = _single()
    with pytest.raises(ValueError, match="reduce_lr_on_plateau monitors 'elbo_validation' but there is no validation set"):
        model.train(max_epochs=2, loop="lean", train_size=1.0, plan_kwargs={"reduce_lr_on_plateau": True}, **QUIET)
    assert not model.is_trained_


@pytest.mark.parametrize("loop", ["lightning", "lean"])
def test_every_train_call_trains_in_train_mode(loop):
    """scvi-tools leaves a trained module in eval mode and Lightning 2.6 keeps it so: a second
    train() (continued training, a query model) must still use dropout and sampled dispersion."""
    model = _single()
    modes = []
    model.module.encoder.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
    for _ in range(2):
        modes.clear()
        model.train(max_epochs=1, train_size=1.0, loop=loop, **QUIET)
        assert modes and all(modes)
        assert not model.module.training  # left in eval mode for inference, as scvi-tools does
