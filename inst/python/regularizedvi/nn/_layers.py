"""Fully connected stacks with LayerNorm and dropout on each layer's input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from regularizedvi import _constants as C


def one_hot_concat(codes: torch.Tensor | None, n_cats_per_key: Sequence[int]) -> torch.Tensor | None:
    """Concatenated one-hot encoding of several integer-coded covariates.

    ``codes`` is ``(n_cells, n_keys)``; the result is ``(n_cells, sum(n_cats_per_key))``
    with exactly one 1 per key. ``None`` when there are no keys.
    """
    if codes is None or len(n_cats_per_key) == 0:
        return None
    codes = codes.long()
    parts = [
        nn.functional.one_hot(codes[:, i], n).to(torch.get_default_dtype())
        for i, n in enumerate(n_cats_per_key)
    ]
    return torch.cat(parts, dim=-1)


class FeatureDropout(nn.Module):
    """Dropout (inverted: kept values scaled by ``1 / keep rate``), with a faster CPU mask.

    On the CPU torch draws each Bernoulli from its Mersenne Twister, one at a time (~10 ns
    per value: 2-4 ms per 128 x 2000 input). Here each value's keep decision is one 16-bit
    integer of numpy's PCG64 raw output (four per 64-bit draw, ~0.2 ms per 128 x 2000),
    seeded by one draw from its modality's random stream (``stream``, set by the module:
    ``regularizedvi.module._streams``; torch's global generator without one), so seeded runs
    repeat: a value is kept when its integer is at least a threshold, so the keep rate is
    ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.0999908) and kept values are scaled by
    the inverse of that rate (unbiased). Elsewhere (CUDA: a fused kernel, which a CUDA graph
    can capture) it is ``nn.functional.dropout``.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate must be in [0, 1), not {p}")
        self.p = float(p)
        kept_values = round((1.0 - self.p) * 65536)  # of the 65536 values of an int16
        self._threshold = np.int16(32768 - kept_values)
        self._scale = np.float32(65536 / kept_values)
        self.stream = None  # a RandomStream, bound by the module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        seed = int(torch.randint(0, 2**62, (1,))) if self.stream is None else self.stream.seed()
        n = x.numel()
        draws = np.random.PCG64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
        mask = (draws >= self._threshold).astype(np.float32)
        mask *= self._scale
        return x * torch.from_numpy(mask).view(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """``n_layers`` of Dropout -> Linear -> LayerNorm -> (+ covariates) -> activation.

    Dropout acts on each layer's input (feature-level masking, spec mod. 6) and LayerNorm
    replaces BatchNorm so a cell's representation never depends on its minibatch.
    Categorical covariates (one-hot) enter every layer, as in scVI, through their own
    columns of the layer's weight, but are added *after* the LayerNorm: a category then
    shifts each hidden unit by the same amount in every cell, which is what scVI's
    BatchNorm (per unit, over cells) leaves of its injected batch. Normalised together with
    the layer's input, the shift would be re-centred and rescaled by each cell's own
    statistics, tying the covariate's effect to the cell's state (kang, seeds 0 / 1, this
    change alone: scib-metrics total +0.008 / +0.006, bench/README.md). The covariate
    columns are stored at ``1 / covariate_gain`` of their effect (default
    ``COVARIATE_WEIGHT_GAIN`` = 3) so that the optimizer moves them faster.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_covariates: int = 0,
        n_layers: int = 1,
        n_hidden: int = 128,
        dropout_rate: float = 0.1,
        use_layer_norm: bool = True,
        activation: type[nn.Module] = nn.ReLU,
        covariate_gain: float = C.COVARIATE_WEIGHT_GAIN,
    ):
        super().__init__()
        self.covariate_gain = float(covariate_gain)
        # models saved before covariates moved after the norm (model file format 1) run
        # with the old rule: see use_covariates_before_norm()
        self.covariates_before_norm = False
        sizes = [n_input] + [n_hidden] * (n_layers - 1) + [n_output]
        self.n_covariates = n_covariates
        self.layers = nn.ModuleList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            block = [
                FeatureDropout(dropout_rate) if dropout_rate > 0 else nn.Identity(),
                nn.Linear(n_in + n_covariates, n_out),
                nn.LayerNorm(n_out, elementwise_affine=False) if use_layer_norm else nn.Identity(),
                activation(),
            ]
            self.layers.append(nn.Sequential(*block))
            if n_covariates:
                with torch.no_grad():  # the same initial effect as an ordinary column
                    block[1].weight[:, n_in:].div_(self.covariate_gain)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.layers:
            dropout, linear, norm, act = block
            h = dropout(x)
            if self.n_covariates and self.covariates_before_norm:
                x = act(norm(linear(torch.cat([h, covariates], dim=-1))))  # gain 1 there
            elif self.n_covariates:
                n_in = linear.in_features - self.n_covariates
                weight = linear.weight
                pre = norm(nn.functional.linear(h, weight[:, :n_in], linear.bias))
                x = act(pre + covariates @ (self.covariate_gain * weight[:, n_in:]).T)
            else:
                x = act(norm(linear(h)))
        return x

    def use_covariates_before_norm(self) -> None:
        """The layers of regularizedvi's model file format 1: covariates concatenated to each
        layer's input and normalised with it, plain weights (gain 1)."""
        self.covariates_before_norm, self.covariate_gain = True, 1.0

    def covariate_axes(self, prefix: str, registry_key: str) -> dict[str, tuple[int, str, int]]:
        """Covariate columns of each layer's weight (they follow the layer's own inputs)."""
        if not self.n_covariates:
            return {}
        return {
            f"{prefix}.layers.{i}.1.weight": (1, registry_key, block[1].in_features - self.n_covariates)
            for i, block in enumerate(self.layers)
        }
