"""Decoder from the latent space to a non-negative expression signal."""

from __future__ import annotations

import torch
from torch import nn

from regularizedvi import _constants as C
from regularizedvi.nn._layers import MLP


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``x`` such that ``softplus(x) == y`` (for ``y > 0``), stable for small and large y."""
    return y + torch.log(-torch.expm1(-y))


class SoftplusDecoder(nn.Module):
    """``(z, c) -> softplus(f(z, c))``: one non-negative rate per feature.

    Softplus replaces scVI's softmax (spec mod. 4): the signal plus the additive
    background need not lie on the simplex; the library size does the normalising.
    Only the covariates given here (``nn_conditioning_covariate_keys``) reach the
    decoder: it is batch-free by construction.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_covariates: int = 0,
        n_layers: int = C.N_LAYERS,
        n_hidden: int = C.N_HIDDEN,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.body = MLP(n_input, n_hidden, n_covariates, n_layers, n_hidden, dropout_rate)
        self.out = nn.Linear(n_hidden, n_output)

    def init_output(self, mean_fraction: torch.Tensor) -> None:
        """Start every cell at the average expression profile (a fraction per feature)."""
        with torch.no_grad():
            self.out.bias.copy_(inverse_softplus(mean_fraction.clamp_min(1e-12)))
            self.out.weight.mul_(0.1)

    def forward(self, z: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        return nn.functional.softplus(self.out(self.body(z, covariates)))
