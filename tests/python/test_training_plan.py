"""The training plan logs once per epoch, with the same values as scvi-tools' per-step logging."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
from scvi.train import TrainingPlan

import regularizedvi as rv
from regularizedvi import _constants as C
from regularizedvi.model._training import RegularizedTrainingPlan

from conftest import seed_everything


class PerStepLogging(RegularizedTrainingPlan):
    """Same optimiser groups, but scvi-tools' own training / validation steps and logging."""

    training_step = TrainingPlan.training_step
    validation_step = TrainingPlan.validation_step
    on_train_epoch_end = pl.LightningModule.on_train_epoch_end
    on_validation_epoch_end = pl.LightningModule.on_validation_epoch_end


def _history(plan_cls, data_loader, warmup=400):
    adata = rv.simulate_counts(n_cells=400, n_genes=200, n_batches=2, markers_per_type=10, seed=3)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    seed_everything(0)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    model._training_plan_cls = plan_cls
    model.train(max_epochs=3, train_size=0.75, check_val_every_n_epoch=1, batch_size=64,
                enable_progress_bar=False, data_loader=data_loader,
                plan_kwargs=None if warmup == "default" else {"n_epochs_kl_warmup": warmup})
    return model.history


def test_epoch_metrics_equal_scvi_tools_per_step_logging():
    for loader in ("fast", "scvi"):
        ours, reference = _history(RegularizedTrainingPlan, loader), _history(PerStepLogging, loader)
        keys = [k for k in reference if k != "kl_weight"]
        assert {"train_loss", "elbo_train", "elbo_validation", "reconstruction_loss_validation",
                "kl_local_train", "kl_global_validation", "validation_loss"} <= set(keys)
        for key in keys:
            a = ours[key].to_numpy(np.float64).ravel()
            b = reference[key].to_numpy(np.float64).ravel()
            assert len(a) == len(b) == 3, key
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=key)
        # kl_weight: one value per epoch (the weight the epoch used), 0 at the first epoch
        np.testing.assert_allclose(ours["kl_weight"].to_numpy(np.float64).ravel(), [0.0, 1 / 400, 2 / 400], rtol=1e-6)
    # the package's default: no warm-up, the KL weight is 1 from the first step
    default = _history(RegularizedTrainingPlan, "fast", warmup="default")
    assert C.N_EPOCHS_KL_WARMUP is None
    np.testing.assert_allclose(default["kl_weight"].to_numpy(np.float64).ravel(), [1.0, 1.0, 1.0])


def test_training_step_builds_no_validating_distribution(monkeypatch):
    """Argument validation of a torch distribution reads a GPU tensor back to the host (a
    device sync per check); the training step must not do it, for either model."""
    import torch
    from torch.distributions import Distribution

    created = []
    original = Distribution.__init__

    def spy(self, *args, validate_args=None, **kwargs):
        created.append((type(self).__name__, validate_args))
        original(self, *args, validate_args=validate_args, **kwargs)

    adata = rv.simulate_counts(n_cells=200, n_genes=100, n_batches=2, markers_per_type=5, seed=4)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch", feature_scaling_covariate_keys=["batch"])
    seed_everything(0)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4, regularise_background=True)
    from regularizedvi.data._fast_loader import FastDataModule

    dm = FastDataModule(model.adata_manager, batch_size=64)
    dm.setup()
    batch = dm.gather(torch.arange(64))
    monkeypatch.setattr(Distribution, "__init__", spy)
    model.module.train()
    _, _, loss = model.module(batch)
    loss.loss.backward()
    assert created, "the step builds its posteriors as distributions"
    assert all(v is False for _, v in created), created


def test_optimizer_is_fused_adam_with_a_larger_step_for_global_parameters():
    adata = rv.simulate_counts(n_cells=200, n_genes=100, n_batches=2, markers_per_type=5, seed=5)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    seed_everything(0)
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=16, n_latent=4)
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False, loop="lightning")
    optimizer = model.trainer.optimizers[0]
    assert type(optimizer).__name__ == "Adam" and optimizer.defaults["fused"] is True
    network, global_group = optimizer.param_groups
    assert network["lr"] == 1e-3 and global_group["lr"] == 1e-2
    names = {id(p): n for n, p in model.module.named_parameters()}
    assert all("observation" in names[id(p)] for p in global_group["params"])
    assert not any("observation" in names[id(p)] for p in network["params"])


def test_unknown_plan_kwargs_are_refused_before_training():
    import pytest

    adata = rv.simulate_counts(n_cells=60, n_genes=20, n_batches=2, markers_per_type=2, seed=3)
    rv.AmbientRegularizedSCVI.setup_anndata(adata, batch_key="batch")
    model = rv.AmbientRegularizedSCVI(adata, n_hidden=8, n_latent=2)
    with pytest.raises(TypeError, match=r"plan_kwargs has 2 unknown option\(s\): 'learning_rate', "
                                        r"'weight_decy' \(did you mean 'weight_decay'\?\)\. The training plan "
                                        r"takes .*global_lr_multiplier.*n_epochs_kl_warmup"):
        model.train(max_epochs=1, plan_kwargs={"learning_rate": 1e-3, "weight_decy": 0.0, "lr": 1e-3})
    assert not model.is_trained_ and getattr(model, "history_", None) is None
    # every option the plan and the loss take is accepted
    model.train(max_epochs=1, enable_progress_bar=False,
                plan_kwargs={"lr": 2e-3, "global_lr_multiplier": 5.0, "reduce_lr_on_plateau": False})
    assert model.is_trained_
