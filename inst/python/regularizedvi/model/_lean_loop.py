"""A lean training loop for the in-memory data paths: the step, without Lightning's machinery.

On a GPU, a training step of this model is a few milliseconds of kernels, and Lightning's
loop, hooks and logging add more than that on the host (bench/profile_gpu.py). This loop
does what :class:`~regularizedvi.model._training.RegularizedTrainingPlan` does under
Lightning, and nothing else: the same data module, plan (optimizer, parameter groups, KL
warm-up, loss arguments), order of steps and random draws, and the same epoch metrics in
``model.history_``: on the CPU it reproduces a Lightning run bit for bit (tested).

On a CUDA device the whole step (forward, backward, optimizer) of a full minibatch is
captured once as a CUDA graph, after ``CUDA_GRAPH_WARMUP_STEPS`` ordinary steps, and
replayed (:class:`_GraphedStep`): one launch instead of hundreds of kernels issued from
Python. A partial last minibatch runs eagerly. If capture fails, training goes on eagerly
(logged). The steps are the same computation; the random draws come from the same
generator in another order, so a graphed run is not bitwise equal to an eager one.

Supported options: those of ``train()`` plus ``early_stopping_*``,
``check_val_every_n_epoch``, ``enable_progress_bar`` and ``max_steps``;
``reduce_lr_on_plateau`` runs eagerly (no CUDA graph). Anything else is a Lightning option:
``loop="auto"`` then uses Lightning, ``loop="lean"`` raises.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch
from scvi.train._trainingplans import _compute_kl_weight

from regularizedvi import _constants as C

logger = logging.getLogger(__name__)

LEAN_OPTIONS = frozenset({
    "early_stopping_monitor", "early_stopping_min_delta", "early_stopping_patience",
    "early_stopping_mode", "early_stopping_warmup_epochs", "check_val_every_n_epoch",
    "enable_progress_bar", "progress_bar_refresh_rate", "max_steps", "simple_progress_bar",
})
_METRICS = ("reconstruction_loss", "kl_local", "kl_global")


def unsupported_options(kwargs: dict) -> list[str]:
    """Training options (other than ``train()``'s own) that only Lightning provides."""
    return sorted(k for k, v in kwargs.items() if k not in LEAN_OPTIONS and v is not None)


class _EpochSums:
    """Per-epoch sums of one mode, kept on the device: ``[reconstruction, kl_local,
    kl_global, loss x cells]`` plus host counts of cells and minibatches."""

    def __init__(self, device):
        self.values = torch.zeros(4, device=device)
        self.cells = 0
        self.batches = 0

    @staticmethod
    def step_values(loss_output) -> torch.Tensor:
        n = loss_output.n_obs_minibatch
        return torch.stack([
            loss_output.reconstruction_loss_sum.detach(), loss_output.kl_local_sum.detach(),
            loss_output.kl_global_sum.detach(), loss_output.loss.detach() * n,
        ])

    def metrics(self, mode: str, n_total: int) -> dict[str, float]:
        """scvi-tools' epoch metrics (``elbo_*``, ``reconstruction_loss_*``, ...), in its
        float32 arithmetic: per cell for the local terms, per minibatch for kl_global."""
        rec, kl_local, kl_global, loss_sum = self.values.cpu().unbind()  # one read per epoch
        cells = torch.tensor(float(self.cells))
        rec, kl_local = rec / cells, kl_local / cells
        kl_global = kl_global / torch.tensor(float(self.batches))
        elbo = rec + kl_local + (1 / max(n_total, 1)) * kl_global
        loss_name = "train_loss" if mode == "train" else "validation_loss"
        out = {loss_name: loss_sum / self.cells, f"elbo_{mode}": elbo}
        out.update({f"{name}_{mode}": value for name, value in zip(_METRICS, (rec, kl_local, kl_global))})
        return {k: float(v) for k, v in out.items()}


class _EarlyStopping:
    """Lightning's ``EarlyStopping`` rule as scvi-tools configures it (with warm-up epochs)."""

    def __init__(self, monitor: str, min_delta: float, patience: int, mode: str, warmup_epochs: int):
        if mode not in ("min", "max"):
            raise ValueError(f"early_stopping_mode must be 'min' or 'max', not {mode!r}")
        self.monitor, self.patience, self.mode, self.warmup = monitor, patience, mode, warmup_epochs
        self.min_delta = abs(min_delta) if mode == "max" else -abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.checks = 0
        self.reason = None

    def should_stop(self, metrics: dict[str, float]) -> bool:
        if self.monitor not in metrics:
            return False
        self.checks += 1
        if self.checks <= self.warmup:
            return False
        current = metrics[self.monitor]
        if not math.isfinite(current):
            self.reason = f"Monitored metric {self.monitor} = {current} is not finite."
            return True
        shifted = current - self.min_delta
        if (shifted < self.best) if self.mode == "min" else (shifted > self.best):
            self.best, self.wait = current, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.reason = (f"Monitored metric {self.monitor} did not improve in the last {self.wait} "
                           f"records. Best score: {self.best:.3f}. Signaling Trainer to stop.")
            return True
        return False


class _GraphedStep:
    """One training step on a full minibatch, captured as a CUDA graph.

    Static buffers hold the minibatch and the KL weight; a replay runs forward, backward,
    the (capturable, fused) optimizer step and adds the step's metric sums to ``acc``.
    Capture records kernels without running them: the step of the batch used for the
    capture is done by the first replay.
    """

    def __init__(self, module, optimizer, batch: dict, loss_kwargs: dict):
        device = next(module.parameters()).device
        self.static = {k: v.clone() for k, v in batch.items()}
        self.kl_weight = torch.zeros((), device=device)
        self.acc = torch.zeros(4, device=device)
        kwargs = dict(loss_kwargs)
        if "kl_weight" in kwargs:
            kwargs["kl_weight"] = self.kl_weight
        self.batch_size = _n_cells(batch)
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            _, _, out = module(self.static, loss_kwargs=kwargs)
            out.loss.backward()
            optimizer.step()
            self.acc.add_(_EpochSums.step_values(out))

    def accepts(self, batch: dict) -> bool:
        return _n_cells(batch) == self.batch_size

    def __call__(self, batch: dict, kl_weight: float, sums: "_EpochSums") -> None:
        for key, value in batch.items():
            self.static[key].copy_(value)
        self.kl_weight.fill_(kl_weight)
        self.graph.replay()
        sums.cells += self.batch_size
        sums.batches += 1

    def flush(self, sums: "_EpochSums") -> None:
        """Move the replays' metric sums into ``sums`` (once per epoch)."""
        sums.values.add_(self.acc)
        self.acc.zero_()


def _n_cells(batch: dict) -> int:
    return next(iter(batch.values())).shape[0]


def _capturable_optimizer(optimizer) -> None:
    """Switch Adam's state to device tensors (``capturable``) before any step."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True


class LeanLoop:
    """Trains ``model.module`` on a fast data module; fills ``history_`` like scvi-tools."""

    def __init__(self, model, datamodule, plan, device, max_epochs: int, early_stopping: bool = False,
                 early_stopping_monitor: str = "elbo_validation", early_stopping_min_delta: float = 0.0,
                 early_stopping_patience: int = 45, early_stopping_mode: str = "min",
                 early_stopping_warmup_epochs: int = 0, check_val_every_n_epoch: int | None = None,
                 enable_progress_bar: bool = True, max_steps: int | None = None,
                 cuda_graphs: bool | None = None, progress_bar_refresh_rate=None, simple_progress_bar=None):
        # progress_bar_refresh_rate / simple_progress_bar: Lightning progress-bar styles; the
        # lean loop has one bar (enable_progress_bar) and accepts them for compatibility
        self.model, self.dm, self.plan, self.device = model, datamodule, plan, torch.device(device)
        self.max_epochs = int(max_epochs)
        self.max_steps = None if max_steps in (None, -1) else int(max_steps)
        self.stopper = (_EarlyStopping(early_stopping_monitor, early_stopping_min_delta, early_stopping_patience,
                                       early_stopping_mode, early_stopping_warmup_epochs)
                        if early_stopping else None)
        needs_val = early_stopping or plan.reduce_lr_on_plateau
        self.val_every = check_val_every_n_epoch or (1 if needs_val else None)
        self.progress = enable_progress_bar
        cuda_graphs = C.CUDA_GRAPH_TRAINING if cuda_graphs is None else cuda_graphs
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda" and not plan.reduce_lr_on_plateau
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.captured = False
        self.step_history: dict[str, list[tuple[int, float]]] = {}

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        module, plan, dm = self.model.module, self.plan, self.dm
        module.to(self.device)
        dm.setup("fit")
        plan.n_obs_training = dm.n_train
        plan.n_obs_validation = dm.n_val
        config = plan.configure_optimizers()
        optimizer = config["optimizer"]
        scheduler = config.get("lr_scheduler", {}).get("scheduler")
        if self.cuda_graphs:
            _capturable_optimizer(optimizer)
        train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
        if scheduler is not None and "validation" in plan.lr_scheduler_metric and val_loader is None:
            raise ValueError(f"reduce_lr_on_plateau monitors {plan.lr_scheduler_metric!r} but there is no "
                             "validation set: give train_size < 1 or lr_scheduler_metric='elbo_train'.")
        graphed, step, completed = None, 0, False
        full = min(dm.batch_size, dm.n_train)
        bar = _progress(self.max_epochs, self.progress)
        try:
            for epoch in range(self.max_epochs):
                module.train()
                sums = _EpochSums(self.device)
                if scheduler is not None:  # as Lightning's LearningRateMonitor: at epoch start
                    self._record_lr(optimizer, step)
                for batch in _prefetched(train_loader, self.device):
                    kl = _compute_kl_weight(epoch, step, plan.n_epochs_kl_warmup, plan.n_steps_kl_warmup,
                                            plan.max_kl_weight, plan.min_kl_weight)
                    if (graphed is None and self.cuda_graphs and step >= C.CUDA_GRAPH_WARMUP_STEPS
                            and _n_cells(batch) == full):  # capture a full minibatch, not a last partial one
                        graphed = self._capture(module, optimizer, batch)
                    if graphed is not None and graphed.accepts(batch):
                        graphed(batch, kl, sums)
                    elif self.cuda_graphs and graphed is None:
                        self._side_stream_step(module, optimizer, batch, kl, sums)
                    else:
                        self._eager_step(module, optimizer, batch, kl, sums)
                    step += 1
                    if self.max_steps is not None and step >= self.max_steps:
                        break
                if graphed is not None:
                    graphed.flush(sums)
                self._record(epoch, sums.metrics("train", dm.n_train))
                self._record(epoch, {"kl_weight": float(np.float32(_compute_kl_weight(
                    epoch, step, plan.n_epochs_kl_warmup, plan.n_steps_kl_warmup,
                    plan.max_kl_weight, plan.min_kl_weight)))})
                metrics = self._last(epoch)
                if val_loader is not None and self.val_every and (epoch + 1) % self.val_every == 0:
                    val = self._validate(module, val_loader, dm.n_val, kl)
                    self._record(epoch, val)
                    metrics.update(val)
                bar.update(1)
                bar.set_postfix(train_loss=f"{metrics['train_loss']:.1f}")
                if scheduler is not None:
                    scheduler.step(metrics[plan.lr_scheduler_metric])
                if self.stopper is not None and self.stopper.should_stop(metrics):
                    print(self.stopper.reason)
                    break
                if self.max_steps is not None and step >= self.max_steps:
                    break
            completed = True
        except KeyboardInterrupt:  # as Lightning: an interrupted run keeps what it has learnt
            logger.warning("Training interrupted after %d steps; the model keeps its current weights.", step)
            completed = True
        finally:
            bar.close()
            optimizer.zero_grad(set_to_none=True)  # releases gradients held in a graph's memory
            del graphed
            self._finish(completed)

    def _capture(self, module, optimizer, batch) -> _GraphedStep | None:
        try:
            graphed = _GraphedStep(module, optimizer, batch, self.plan.loss_kwargs)
        except Exception as err:  # noqa: BLE001 - anything in capture: train eagerly instead
            logger.warning("CUDA graph capture failed (%s: %s); training continues without it.",
                           type(err).__name__, err)
            optimizer.zero_grad(set_to_none=True)
            self.cuda_graphs = False
            return None
        logger.info("Training step captured as a CUDA graph (minibatch of %d cells).", graphed.batch_size)
        self.captured = True
        return graphed

    def _side_stream_step(self, module, optimizer, batch, kl, sums) -> None:
        """An eager step before capture, on a side stream (CUDA graphs' warm-up rule)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._eager_step(module, optimizer, batch, kl, sums)
        torch.cuda.current_stream().wait_stream(stream)

    def _eager_step(self, module, optimizer, batch, kl: float, sums: _EpochSums) -> None:
        loss_kwargs = dict(self.plan.loss_kwargs)
        if "kl_weight" in loss_kwargs:
            loss_kwargs["kl_weight"] = kl
        optimizer.zero_grad(set_to_none=True)
        _, _, out = module(batch, loss_kwargs=loss_kwargs)
        out.loss.backward()
        optimizer.step()
        sums.values.add_(_EpochSums.step_values(out))
        sums.cells += int(out.n_obs_minibatch)
        sums.batches += 1

    @torch.no_grad()
    def _validate(self, module, loader, n_val: int, kl: float) -> dict[str, float]:
        """Validation metrics; the loss uses the last training step's KL weight (as under Lightning)."""
        module.eval()
        sums = _EpochSums(self.device)
        loss_kwargs = dict(self.plan.loss_kwargs)
        if "kl_weight" in loss_kwargs:
            loss_kwargs["kl_weight"] = kl
        for batch in loader:
            _, _, out = module(batch, loss_kwargs=loss_kwargs)
            sums.values.add_(_EpochSums.step_values(out))
            sums.cells += int(out.n_obs_minibatch)
            sums.batches += 1
        module.train()
        return sums.metrics("validation", n_val)

    # ------------------------------------------------------------------ history
    def _record(self, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.history.setdefault(name, []).append((epoch, value))

    def _record_lr(self, optimizer, step: int) -> None:
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            name = f"lr-{type(optimizer).__name__}" + (f"/pg{i + 1}" if len(groups) > 1 else "")
            self.step_history.setdefault(name, []).append((step, float(group["lr"])))

    def _last(self, epoch: int) -> dict[str, float]:
        return {name: rows[-1][1] for name, rows in self.history.items() if rows[-1][0] == epoch}

    def _finish(self, completed: bool) -> None:
        """History and split indices in any case; marked trained unless training failed."""
        model, dm = self.model, self.dm
        history = {}
        for index_name, records in (("epoch", self.history), ("step", self.step_history)):
            for name, rows in records.items():
                frame = pd.DataFrame({name: [v for _, v in rows]}, index=[i for i, _ in rows], dtype=object)
                frame.index.name = index_name
                history[name] = frame
        model.history_ = history
        model.train_indices, model.validation_indices, model.test_indices = dm.train_idx, dm.val_idx, dm.test_idx
        dm.teardown("fit")
        model.module.eval()
        model.is_trained_ = bool(completed or getattr(model, "is_trained_", False))
        model.trainer = None
        model.cuda_graph_used = self.captured


def _prefetched(loader, device: torch.device):
    """The loader's minibatches; on a CUDA device each is gathered on a side stream while
    the previous step runs (the gather's kernels overlap the step's instead of queueing
    behind them)."""
    if device.type != "cuda":
        yield from loader
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    batches = iter(loader)

    def fetch():
        side.wait_stream(main)  # the gather reads nothing the step writes; keeps order simple
        with torch.cuda.stream(side):
            batch = next(batches, None)
        if batch is None:
            return None
        ready = torch.cuda.Event()
        ready.record(side)
        return batch, ready

    upcoming = fetch()
    while upcoming is not None:
        batch, ready = upcoming
        upcoming = fetch()
        main.wait_event(ready)
        for tensor in batch.values():
            tensor.record_stream(main)  # memory made on the side stream, used on the main one
        yield batch


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Epoch", unit="epoch", disable=not enabled, leave=True)
