"""``train()``: scvi-tools' training loop with this model's defaults."""

from __future__ import annotations

import logging

import torch
from scvi.train import TrainingPlan
from scvi.train._trainingplans import _compute_kl_weight
from torch.optim.lr_scheduler import ReduceLROnPlateau

from regularizedvi import _constants as C
from regularizedvi.model._utils import positive_int

logger = logging.getLogger(__name__)
LOOPS = ("auto", "lean", "lightning")


class RegularizedTrainingPlan(TrainingPlan):
    """scvi-tools' plan with a larger step for global observation parameters.

    Parameters whose name contains ``observation`` (background, feature scaling,
    dispersion) use ``lr * global_lr_multiplier`` (default 10).

    Metrics are the same as scvi-tools' (``train_loss``, ``elbo_*``,
    ``reconstruction_loss_*``, ``kl_local_*``, ``kl_global_*`` per epoch, plus ``kl_weight``
    once per epoch) but are accumulated on the device during the epoch and logged once at
    its end: Lightning's ``log`` costs ~1.5 ms per call, six calls per step, which was
    more than half of a GPU training step (bench/profile_gpu.py).
    """

    def __init__(self, module, global_lr_multiplier: float = C.GLOBAL_LR_MULTIPLIER, **kwargs):
        super().__init__(module, **kwargs)
        self.global_lr_multiplier = global_lr_multiplier
        self._loss_sums: dict[str, tuple[torch.Tensor, int]] = {}

    def on_train_epoch_start(self):
        # Lightning 2.6 keeps each submodule's mode as it finds it, and scvi-tools leaves a
        # trained module in eval mode: without this a second train() call (continued
        # training, a query model) would run without dropout or sampled dispersion.
        self.module.train()

    def training_step(self, batch, batch_idx):
        if "kl_weight" in self.loss_kwargs:
            # a Python number: scvi-tools' ``kl_weight`` property builds a host tensor and
            # copies it to the device every step
            self.loss_kwargs["kl_weight"] = _compute_kl_weight(
                self.current_epoch, self.global_step, self.n_epochs_kl_warmup, self.n_steps_kl_warmup,
                self.max_kl_weight, self.min_kl_weight)
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._accumulate(loss_output, self.train_metrics, "train")
        return loss_output.loss

    def validation_step(self, batch, batch_idx):
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._accumulate(loss_output, self.val_metrics, "validation")

    @torch.no_grad()
    def _accumulate(self, loss_output, metrics, mode: str) -> None:
        n_obs = loss_output.n_obs_minibatch
        metrics[f"elbo_{mode}"].update(  # updates the reconstruction / kl components too
            reconstruction_loss=loss_output.reconstruction_loss_sum,
            kl_local=loss_output.kl_local_sum,
            kl_global=loss_output.kl_global_sum,
            n_obs_minibatch=n_obs,
        )
        # (sum of loss x cells on the device, cells as a Python int): no tensor made from a
        # host number per step
        loss_sum, cells = self._loss_sums.get(mode, (0.0, 0))
        self._loss_sums[mode] = (loss_output.loss.detach() * n_obs + loss_sum, cells + int(n_obs))

    def _log_epoch(self, metrics, mode: str, loss_name: str) -> None:
        sums = self._loss_sums.pop(mode, None)
        if sums is None:
            return
        loss_sum, cells = sums
        self.log(loss_name, loss_sum / cells, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        values = {name: metric.compute() for name, metric in metrics.items()}  # synced across ranks
        for name, value in values.items():
            self.log(name, value, on_step=False, on_epoch=True)
        for metric in metrics.values():
            metric.reset()
        if mode == "train" and "kl_weight" in self.loss_kwargs:
            self.log("kl_weight", float(self.kl_weight), on_step=False, on_epoch=True)

    def on_train_epoch_end(self):
        self._log_epoch(self.train_metrics, "train", "train_loss")

    def on_validation_epoch_end(self):
        self._log_epoch(self.val_metrics, "validation", "validation_loss")

    def _optimizer_creator_fn(self, optimizer_cls):
        """scvi-tools' Adam / AdamW with the same arguments, as a fused kernel where torch
        has one for the parameters' device (CPU, CUDA): one pass over each tensor instead
        of a Python loop over parameters (CPU, 128/10 model: 1.1 vs 8.0 ms per step)."""

        def create(params):
            params = list(params)
            kwargs = {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}
            if C.FUSED_OPTIMIZER:
                try:
                    return optimizer_cls(params, fused=True, **kwargs)
                except (RuntimeError, TypeError, ValueError):
                    pass  # no fused kernel for this device / dtype: the default implementation
            return optimizer_cls(params, **kwargs)

        return create

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


def check_accelerator(accelerator) -> None:
    """A clear error for a GPU request PyTorch cannot serve (Lightning's says only "No
    supported gpu backend found!")."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(
            f"accelerator={accelerator!r} was requested, but PyTorch {torch.__version__} ({build}) sees no "
            "CUDA GPU on this machine. Use accelerator='cpu' (or 'auto', which takes a GPU when there is "
            "one), or install a CUDA build of torch on a machine with an NVIDIA GPU (README, 'GPU')."
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"accelerator={accelerator!r} was requested, but PyTorch sees no Apple GPU (MPS); "
                         "use accelerator='cpu' or 'auto'.")


def check_plan_kwargs(plan_cls, module, plan_kwargs: dict) -> None:
    """A TypeError for a ``plan_kwargs`` name that neither the training plan nor the module's
    ``loss()`` takes, before any data are prepared (scvi-tools would hand it to ``loss()``
    and fail at the first step, naming ``loss()``)."""
    import difflib
    import inspect

    def named(fn):
        return {n for n, p in inspect.signature(fn).parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    known = set(named(module.loss)) - {"tensors", "inference_outputs", "generative_outputs"}
    for cls in plan_cls.__mro__:
        if issubclass(cls, TrainingPlan) and "__init__" in cls.__dict__:
            known |= named(cls.__dict__["__init__"]) - {"self", "module"}
    unknown = [k for k in plan_kwargs if k not in known]
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        shown = ", ".join(f"{k!r}" + (f" (did you mean {hints[k][0]!r}?)" if hints[k] else "") for k in unknown)
        raise TypeError(f"plan_kwargs has {len(unknown)} unknown option(s): {shown}. The training plan takes "
                        f"{', '.join(sorted(known))}.")


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
        data_loader: str = C.DATA_LOADER,
        loop: str = C.TRAINING_LOOP,
        **kwargs,
    ):
        """Train with scvi-tools' loop (PyTorch Lightning) or a lean one; uses a GPU when present.

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
            ``n_epochs_kl_warmup`` default None: no KL warm-up, an int warms up over that
            many epochs; ``global_lr_multiplier`` default 10: the step-size factor of
            background, feature scaling and dispersion; the other options of
            :class:`scvi.train.TrainingPlan`). A name the plan does not take is a TypeError.
        data_loader
            ``"fast"``: counts held once in memory as CSR tensors on the training device,
            minibatches gathered and densified there
            (``regularizedvi.data._fast_loader.FastDataModule``); ``"host"``: the same
            tensors kept in host memory, each minibatch densified on the host and copied to
            the GPU while the previous step runs (data larger than the GPU's memory; on a
            CPU the same as ``"fast"``); ``"backed"``: for an AnnData opened with
            ``anndata.read_h5ad(path, backed="r")`` (data larger than memory), the counts
            are streamed from the file in blocks of consecutive rows: one sequential read
            of the matrix per epoch (another when validation runs, e.g. with early
            stopping), cells shuffled within groups of blocks rather than over the whole
            data (``regularizedvi.data._backed.BackedDataModule``); ``"scvi"``: scvi-tools'
            AnnData loader; ``"auto"`` (default): backed for a backed AnnData, otherwise
            fast when the tensors fit in half of the GPU's free memory (of the host's
            available memory on a CPU), host when they fit in half of the host's available
            memory, scvi-tools' loader otherwise and whenever a loader-specific argument
            (``datasplitter_kwargs``, ``load_sparse_tensor``, ``datamodule``) is given
            (``regularizedvi.data._loader_choice``). The split (sizes, seeded permutation)
            is the same every way; the path taken is logged and kept in
            ``model.data_loader_used``.
        loop
            ``"lightning"``: scvi-tools' Trainer (PyTorch Lightning; ``model.trainer`` is
            kept). ``"lean"``: the same steps, random draws and epoch metrics
            (``model.history_``) in a plain loop (``regularizedvi.model._lean_loop``),
            on the in-memory data paths (fast, host) only; on a GPU each full minibatch's step is replayed
            as a CUDA graph. It accepts early stopping, ``check_val_every_n_epoch``,
            ``max_steps``, ``enable_progress_bar`` and ``plan_kwargs``; other Lightning
            options (callbacks, loggers, strategies, precision...) raise. ``"auto"``
            (default): lean with an in-memory data path on a single device when no other
            Lightning option is given, Lightning otherwise. On the CPU both loops give
            the same model bit for bit, at about the same speed (within a few %,
            bench/speed_paired.py); on a GPU the lean loop is several times faster
            (bench/README.md). The loop used is kept in ``model.training_loop_used``;
            with the lean loop ``model.trainer`` is None.
        **kwargs
            Other arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`
            and of the Lightning trainer.
        """
        if max_epochs is not None:
            max_epochs = positive_int(max_epochs, "max_epochs")
        batch_size = positive_int(batch_size, "batch_size")
        check_accelerator(accelerator)
        kwargs.setdefault(
            "early_stopping_min_delta", self._n_features_total() * early_stopping_min_delta_per_feature
        )
        plan_kwargs = dict(plan_kwargs or {})
        plan_kwargs.setdefault("lr", C.LEARNING_RATE)
        frozen = bool(getattr(self, "_frozen_reference", False))
        plan_kwargs.setdefault("weight_decay", 0.0 if frozen else C.WEIGHT_DECAY)
        plan_kwargs.setdefault("n_epochs_kl_warmup", C.N_EPOCHS_KL_WARMUP)
        check_plan_kwargs(self._training_plan_cls, self.module, plan_kwargs)
        if not any(p.requires_grad for p in self.module.parameters()):
            raise ValueError(
                "Nothing to train: every parameter is a frozen reference weight (the query brings "
                "no new categories). Embed it directly with get_latent_representation()."
            )
        if max_epochs is None:
            max_epochs = min(round(20000 / max(self.adata.n_obs, 1) * 400), C.MAX_EPOCHS_CAP)
        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, not {loop!r}")
        choice = self._choose_data_loader(data_loader, accelerator, devices, kwargs)
        self.data_loader_used = choice
        if choice in ("fast", "host", "backed"):
            from scvi import settings
            from scvi.model._utils import parse_device_args

            from regularizedvi.data._backed import BackedDataModule
            from regularizedvi.data._fast_loader import FastDataModule

            _, lightning_devices, device = parse_device_args(accelerator=accelerator, devices=devices,
                                                             return_device="torch")
            split = {"train_size": train_size, "validation_size": validation_size,
                     "batch_size": batch_size or settings.batch_size,
                     "shuffle_set_split": kwargs.pop("shuffle_set_split", True), "device": device}
            if choice == "backed":
                datamodule = BackedDataModule(self.adata_manager, **split)
            else:
                datamodule = FastDataModule(self.adata_manager, storage="host" if choice == "host" else "device",
                                            **split)
            monitor = kwargs.get("early_stopping_monitor", "elbo_validation")
            if kwargs.get("early_stopping", early_stopping) and datamodule.n_val == 0 and "valid" in monitor:
                raise ValueError("Can't run Early Stopping with validation monitor with no validation set")
            if self._use_lean_loop(loop, choice, devices, lightning_devices, kwargs):
                return self._train_lean(datamodule, device, max_epochs, early_stopping, plan_kwargs, kwargs)
            kwargs["datamodule"] = datamodule
        elif loop == "lean":
            raise ValueError(f"loop='lean' needs the in-memory data path ('fast' or 'host'); this run uses the "
                             f"{choice!r} loader.")
        self.training_loop_used = "lightning"
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

    @staticmethod
    def _use_lean_loop(loop: str, choice: str, devices, lightning_devices, kwargs: dict) -> bool:
        """Whether this run takes the lean loop (raises for an impossible ``loop="lean"``);
        ``lightning_devices`` as resolved by scvi-tools' ``parse_device_args``."""
        from regularizedvi.model._lean_loop import unsupported_options

        if loop == "lightning":
            return False
        single = lightning_devices in ("auto", 1, "1") or (
            isinstance(lightning_devices, (list, tuple)) and len(lightning_devices) == 1)
        problems = unsupported_options(kwargs)
        if not single:
            problems.append(f"devices={devices!r} (several devices: Lightning's DDP)")
        if choice not in ("fast", "host"):
            problems.append(f"the {choice!r} data loader")
        if loop == "lean" and problems:
            raise ValueError(f"loop='lean' cannot run with: {', '.join(problems)}. Use loop='lightning'.")
        return not problems

    def _train_lean(self, datamodule, device, max_epochs, early_stopping, plan_kwargs, kwargs):
        from regularizedvi.model._lean_loop import LEAN_OPTIONS, LeanLoop

        plan = self._training_plan_cls(self.module, **plan_kwargs)
        # Lightning options left at None mean "not used": they do not reach the lean loop
        options = {k: v for k, v in kwargs.items() if k in LEAN_OPTIONS or v is not None}
        LeanLoop(self, datamodule, plan, device, max_epochs, early_stopping=early_stopping, **options).run()
        self.training_loop_used = "lean"
        logger.info("Training loop: lean%s.", " with CUDA graphs" if torch.device(device).type == "cuda" else "")

    def _choose_data_loader(self, data_loader: str, accelerator, devices, kwargs: dict) -> str:
        from regularizedvi.data._loader_choice import choose_data_loader

        return choose_data_loader(self.adata_manager, data_loader, accelerator, devices, kwargs)
