"""Encoder-input variants for the mapping benchmark (issue 14), exploration only.

``encscale``: the z encoder of the single-modality module reads the counts with the
technical feature scaling divided out, ``log1p(x_nf / y_{t_n,f})`` instead of
``log1p(x_nf)``, with ``y`` detached (no gradient from the encoder into the scaling);
``encscalend``: the same, not detached. ``y_{t_n}`` is the observation model's per-cell
feature scaling (``feature_scaling_covariate_keys``, by default the nn-conditioning
keys); in scArches-style mapping a query's new category gets its own ``y_t`` row, which
trains, so its learned gene-wise factor corrects what the frozen encoder sees. The
library encoder and the ambient-scale encoder keep reading ``log1p(x)``.

Implemented by wrapping ``RegularizedVAE``'s inference input, ``inference`` and
``latent_posterior`` (the package's own code runs unchanged around the new encoder
input). A module without feature scaling is left as it is.

``encnorm``: the z encoder reads depth-normalised counts instead (:func:`apply_encnorm`).
Only one of the three can be applied in a process.
"""

from __future__ import annotations

import torch


def apply_encscale(detach: bool = True) -> None:
    from regularizedvi.data import _keys as K
    from regularizedvi.module._vae import SINGLE_MODALITY, RegularizedVAE

    if getattr(RegularizedVAE, "_encscale_patched", False) or getattr(RegularizedVAE, "_encnorm_patched", False):
        raise SystemExit("encscale / encscalend / encnorm replace the same encoder input: use one")
    orig_input = RegularizedVAE._get_inference_input
    orig_inference = RegularizedVAE.inference
    orig_posterior = RegularizedVAE.latent_posterior

    def get_inference_input(self, tensors):
        return {**orig_input(self, tensors), "scaling_covs": tensors.get(K.FEATURE_SCALING)}

    def inference(self, xs, encoder_covs=None, continuous_covs=None, scaling_covs=None):
        self.__dict__["_encscale_ctx"] = (xs, scaling_covs)
        try:
            return orig_inference(self, xs, encoder_covs, continuous_covs)
        finally:
            self.__dict__["_encscale_ctx"] = None

    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        ctx = self.__dict__.get("_encscale_ctx")
        if ctx is not None and self.observation.use_feature_scaling:
            xs, codes = ctx
            y = self.observation.feature_scaling(self._to(codes))
            if detach:
                y = y.detach()
            x_logs = {SINGLE_MODALITY: torch.log1p(self._to(xs[SINGLE_MODALITY]) / y)}
        return orig_posterior(self, x_logs, masks, encoder_covs, continuous_covs)

    RegularizedVAE._get_inference_input = get_inference_input
    RegularizedVAE.inference = inference
    RegularizedVAE.latent_posterior = latent_posterior
    RegularizedVAE._encscale_patched = True


def apply_encnorm() -> None:
    """``encnorm``: the z encoder reads depth-normalised counts, ``log1p(x_nf / N_n * C)``
    (``N_n`` the cell's total count, ``C`` the geometric mean of the library groups' mean
    totals at construction, kept as a buffer so that a mapped query uses the reference's)."""
    from regularizedvi.module._vae import SINGLE_MODALITY, RegularizedVAE

    if getattr(RegularizedVAE, "_encscale_patched", False) or getattr(RegularizedVAE, "_encnorm_patched", False):
        raise SystemExit("encscale / encscalend / encnorm replace the same encoder input: use one")
    orig_init = RegularizedVAE.__init__
    orig_inference = RegularizedVAE.inference
    orig_posterior = RegularizedVAE.latent_posterior

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self.register_buffer("encnorm_log_c", self.observation.library_log_means.mean().reshape(1))

    def inference(self, xs, encoder_covs=None, continuous_covs=None, **kw):
        self.__dict__["_encnorm_xs"] = xs
        try:
            return orig_inference(self, xs, encoder_covs, continuous_covs, **kw)
        finally:
            self.__dict__["_encnorm_xs"] = None

    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        xs = self.__dict__.get("_encnorm_xs")
        if xs is not None:
            x = self._to(xs[SINGLE_MODALITY])
            scale = torch.exp(self.encnorm_log_c) / x.sum(-1, keepdim=True).clamp_min(1.0)
            x_logs = {SINGLE_MODALITY: torch.log1p(x * scale)}
        return orig_posterior(self, x_logs, masks, encoder_covs, continuous_covs)

    RegularizedVAE.__init__ = init
    RegularizedVAE.inference = inference
    RegularizedVAE.latent_posterior = latent_posterior
    RegularizedVAE._encnorm_patched = True
