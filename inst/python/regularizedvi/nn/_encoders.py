"""Amortised posteriors: a Gaussian latent encoder and a low-capacity library encoder."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal

from regularizedvi import _constants as C
from regularizedvi.nn._layers import MLP


class GaussianEncoder(nn.Module):
    """``x -> Normal(mean(x), var(x))`` over ``n_output`` latent dimensions.

    The input is ``log1p`` of counts (plus any continuous covariates) so that the
    encoder sees a variance-stabilised view; the likelihood always uses raw counts.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_covariates: int = 0,
        n_layers: int = C.N_LAYERS,
        n_hidden: int = C.N_HIDDEN,
        dropout_rate: float = C.DROPOUT_RATE,
        var_eps: float = C.VAR_EPS,
    ):
        super().__init__()
        self.body = MLP(n_input, n_hidden, n_covariates, n_layers, n_hidden, dropout_rate)
        self.mean = nn.Linear(n_hidden, n_output)
        self.log_var = nn.Linear(n_hidden, n_output)
        self.var_eps = var_eps

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> Normal:
        h = self.body(x, covariates)
        var = torch.exp(self.log_var(h)) + self.var_eps
        return Normal(self.mean(h), var.sqrt(), validate_args=False)


class LibraryEncoder(nn.Module):
    """Posterior over log library size, centred on the observed log total count.

    ``q(log l_n) = Normal(log N_n + delta(x_n), sigma(x_n))`` with ``N_n`` the cell's total
    count: the network only learns the departure from the observed total (ambient RNA
    inflates that total), which starts at zero, so training starts at a sensible scale.
    The posterior variance starts small (``LIBRARY_POSTERIOR_INIT_VAR + VAR_EPS`` = 2e-4)
    rather than at 1: a noisy library sample early in training pushes depth into ``z``.
    """

    def __init__(self, n_input: int, n_hidden: int = C.LIBRARY_N_HIDDEN,
                 dropout_rate: float = C.DROPOUT_RATE, var_eps: float = C.VAR_EPS):
        super().__init__()
        self.body = MLP(n_input, n_hidden, 0, 1, n_hidden, dropout_rate)
        self.offset = nn.Linear(n_hidden, 1)
        self.log_var = nn.Linear(n_hidden, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        nn.init.zeros_(self.log_var.weight)
        nn.init.constant_(self.log_var.bias, math.log(C.LIBRARY_POSTERIOR_INIT_VAR))
        self.var_eps = var_eps

    def forward(self, x_log1p: torch.Tensor, log_total: torch.Tensor) -> Normal:
        h = self.body(x_log1p)
        var = torch.exp(self.log_var(h)) + self.var_eps
        return Normal(log_total + self.offset(h), var.sqrt(), validate_args=False)


class AmbientScaleEncoder(nn.Module):
    """Per-cell scale of the ambient background, ``c_n = exp(h(log1p x_n))``.

    The amount of soup a droplet captures varies from cell to cell around its ambient
    group's level; without this scale that spread would have to be carried by ``z``. A
    small network (``n_input -> n_hidden -> 1``) whose last layer starts at zero, so that
    every cell starts at its group's level (``c_n = 1``). Returns ``log c_n``, ``(n, 1)``.
    """

    def __init__(self, n_input: int, n_hidden: int = C.AMBIENT_SCALE_N_HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x_log1p: torch.Tensor) -> torch.Tensor:
        return self.net(x_log1p)
