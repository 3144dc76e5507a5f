"""``train()``: scvi-tools' training loop with this model's defaults."""

from __future__ import annotations

from scvi.train import TrainingPlan
from torch.optim.lr_scheduler import ReduceLROnPlateau

from regularizedvi import _constants as C


class RegularizedTrainingPlan(TrainingPlan):
    """scvi-tools' plan with a larger step for global observation parameters.

    Parameters whose name contains ``observation`` (background, feature scaling,
    dispersion) use ``lr * global_lr_multiplier`` (default 10).
    """

    def __init__(self, module, global_lr_multiplier: float = C.GLOBAL_LR_MULTIPLIER, **kwargs):
        super().__init__(module, **kwargs)
        self.global_lr_multiplier = global_lr_multiplier

    def configure_optimizers(self):
        trainable = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        global_params = [p for n, p in trainable if "observation" in n]
        network_params = [p for n, p in trainable if "observation" not in n]
        groups = [{"params": network_params}]
        if global_params:
            groups.append({"params": global_params, "lr": self.lr * self.global_lr_multiplier})
        optimizer = self.get_optimizer_creator()(groups)
        config = {"optimizer": optimizer}
        if self.reduce_lr_on_plateau:
            scheduler = ReduceLROnPlateau(optimizer, patience=self.lr_patience, factor=self.lr_factor,
                                          threshold=self.lr_threshold, min_lr=self.lr_min,
                                          threshold_mode="abs")
            config["lr_scheduler"] = {"scheduler": scheduler, "monitor": self.lr_scheduler_metric}
        return config


class RegularizedTrainingMixin:
    """Adds the auto-scaled early-stopping threshold and query-mapping defaults."""

    _training_plan_cls = RegularizedTrainingPlan

    def _n_features_total(self) -> int:
        return int(self.summary_stats.n_vars)

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices="auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        batch_size: int = C.BATCH_SIZE,
        early_stopping: bool = False,
        early_stopping_min_delta_per_feature: float = C.EARLY_STOPPING_MIN_DELTA_PER_FEATURE,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train with scvi-tools' loop (PyTorch Lightning); uses a GPU when one is present.

        Parameters
        ----------
        max_epochs
            Default: ``min(round(20000 / n_cells * 400), 400)`` (scvi-tools' heuristic).
        accelerator, devices
            Passed to Lightning; ``"auto"`` picks a GPU when present.
        train_size, validation_size
            Fractions of cells for training / validation (default 0.9 / 0.1).
        batch_size
            Minibatch size (default 128).
        early_stopping
            Stop when the validation ELBO stops improving (default False).
        early_stopping_min_delta_per_feature
            The improvement that counts is ``n_features *`` this (default 0.0002); an
            explicit ``early_stopping_min_delta=`` overrides it (0 means 0).
        plan_kwargs
            Training-plan options (``lr`` default 1e-3, ``weight_decay`` default 1e-6;
            0 for a query model so that frozen reference weights do not decay,
            ``n_epochs_kl_warmup`` default 400, ``global_lr_multiplier`` default 10:
            the step-size factor of background, feature scaling and dispersion).
        **kwargs
            Other arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`
            and of the Lightning trainer.
        """
        kwargs.setdefault(
            "early_stopping_min_delta", self._n_features_total() * early_stopping_min_delta_per_feature
        )
        plan_kwargs = dict(plan_kwargs or {})
        plan_kwargs.setdefault("lr", C.LEARNING_RATE)
        frozen = bool(getattr(self, "_frozen_reference", False))
        plan_kwargs.setdefault("weight_decay", 0.0 if frozen else C.WEIGHT_DECAY)
        plan_kwargs.setdefault("n_epochs_kl_warmup", C.N_EPOCHS_KL_WARMUP)
        if max_epochs is None:
            max_epochs = min(round(20000 / max(self.adata.n_obs, 1) * 400), C.MAX_EPOCHS_CAP)
        return super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            **kwargs,
        )
