"""Single-modality regularized VAE: ``inference`` -> ``generative`` -> ``loss``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.distributions import Normal, kl_divergence

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.module._observation import CountObservationModel
from regularizedvi.nn import GaussianEncoder, LibraryEncoder, SoftplusDecoder, one_hot_concat


class RegularizedVAE(BaseModuleClass):
    """Encoders, batch-free softplus decoder and one :class:`CountObservationModel`.

    Minibatch keys are those of :mod:`regularizedvi.data._keys`. Covariates absent from
    a minibatch mean "no such covariate" (a single group where one is needed).
    """

    def __init__(
        self,
        n_input: int,
        library_log_means: torch.Tensor,
        library_log_vars: torch.Tensor,
        mean_profile: torch.Tensor | None = None,
        n_latent: int = C.N_LATENT,
        n_hidden: int = C.N_HIDDEN,
        n_layers: int = C.N_LAYERS,
        dropout_rate: float = C.DROPOUT_RATE,
        n_continuous: int = 0,
        n_encoder_cats_per_key: Sequence[int] = (),
        n_nn_cats_per_key: Sequence[int] = (),
        n_ambient_cats_per_key: Sequence[int] | None = (),
        n_scaling_cats_per_key: Sequence[int] | None = (),
        n_dispersion_groups: int = 1,
        regularise_background: bool = C.REGULARISE_BACKGROUND,
    ):
        super().__init__()
        self.n_latent = n_latent
        self.n_encoder_cats_per_key = list(n_encoder_cats_per_key)
        self.n_nn_cats_per_key = list(n_nn_cats_per_key)
        self.encoder = GaussianEncoder(
            n_input + n_continuous, n_latent, sum(self.n_encoder_cats_per_key),
            n_layers, n_hidden, dropout_rate,
        )
        self.library_encoder = LibraryEncoder(n_input, dropout_rate=dropout_rate)
        self.decoder = SoftplusDecoder(
            n_latent + n_continuous, n_input, sum(self.n_nn_cats_per_key), n_layers, n_hidden
        )
        self.observation = CountObservationModel(
            n_input, n_ambient_cats_per_key, n_scaling_cats_per_key, n_dispersion_groups,
            library_log_means, library_log_vars, regularise_background,
        )
        if mean_profile is not None:
            background_total = C.BACKGROUND_INIT_FRACTION if self.observation.use_background else 0.0
            self.decoder.init_output(mean_profile * (1 - background_total))

    # ------------------------------------------------------------------ inference
    def _get_inference_input(self, tensors: dict) -> dict:
        return {
            "x": tensors[K.X],
            "encoder_covs": tensors.get(K.ENCODER),
            "continuous_covs": tensors.get(K.CONTINUOUS),
        }

    @auto_move_data
    def inference(self, x, encoder_covs=None, continuous_covs=None) -> dict:
        x_log = torch.log1p(x)
        log_total = torch.log(x.sum(-1, keepdim=True).clamp_min(1.0))
        encoder_input = x_log if continuous_covs is None else torch.cat([x_log, continuous_covs], -1)
        qz = self.encoder(encoder_input, one_hot_concat(encoder_covs, self.n_encoder_cats_per_key))
        ql = self.library_encoder(x_log, log_total)
        z = qz.rsample()
        log_library = ql.rsample()
        return {"z": z, "qz": qz, "ql": ql, "log_library": log_library}

    # ------------------------------------------------------------------ generative
    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict:
        return {
            "z": inference_outputs["z"],
            "log_library": inference_outputs["log_library"],
            **K.generative_covariates(tensors),
        }

    @auto_move_data
    def generative(self, z, log_library, dispersion_group, nn_covs=None, continuous_covs=None,
                   ambient_covs=None, scaling_covs=None) -> dict:
        decoder_input = z if continuous_covs is None else torch.cat([z, continuous_covs], -1)
        rho = self.decoder(decoder_input, one_hot_concat(nn_covs, self.n_nn_cats_per_key))
        library = torch.exp(log_library)
        mu = self.observation.mean(rho, library, ambient_covs, scaling_covs)
        dispersion = self.observation.dispersion(dispersion_group, sample=self.training)
        return {"rho": rho, "mu": mu, "theta": dispersion.theta, "dispersion": dispersion}

    # ------------------------------------------------------------------ loss
    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0,
             n_obs: float = 1.0) -> LossOutput:
        """Negative ELBO per cell, plus the global priors once per dataset (``/ n_obs``)."""
        x = tensors[K.X]
        reconstruction = -self.observation.log_likelihood(
            x, generative_outputs["mu"], generative_outputs["dispersion"]
        )
        qz = inference_outputs["qz"]
        kl_z = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale), validate_args=False)).sum(-1)
        library_prior = self.observation.library_prior(tensors[K.LIBRARY])
        kl_l = kl_divergence(inference_outputs["ql"], library_prior).sum(-1)
        kl_global = self.observation.global_penalty()
        loss = torch.mean(reconstruction + kl_weight * (kl_z + kl_l)) + kl_global / n_obs
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local={"kl_divergence_z": kl_z, "kl_divergence_l": kl_l},
            kl_global=kl_global,
        )

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def marginal_ll(self, tensors, n_mc_samples: int = 100, return_mean: bool = False,
                    **unused) -> torch.Tensor:
        """Importance-sampled log p(x) per cell, with q(z) q(l) as the proposal."""
        inference_outputs = self.inference(**self._get_inference_input(tensors))
        qz, ql = inference_outputs["qz"], inference_outputs["ql"]
        library_prior = self.observation.library_prior(tensors[K.LIBRARY].to(qz.loc.device))
        standard = Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale), validate_args=False)
        log_weights = []
        for _ in range(n_mc_samples):
            z, log_l = qz.sample(), ql.sample()
            generative_inputs = self._get_generative_input(tensors, {"z": z, "log_library": log_l})
            out = self.generative(**generative_inputs)
            log_px = self.observation.log_likelihood(
                tensors[K.X].to(z.device), out["mu"], out["dispersion"]
            )
            log_weights.append(
                log_px + standard.log_prob(z).sum(-1) + library_prior.log_prob(log_l).sum(-1)
                - qz.log_prob(z).sum(-1) - ql.log_prob(log_l).sum(-1)
            )
        log_weights = torch.stack(log_weights, 0)
        ll = torch.logsumexp(log_weights, 0) - torch.log(torch.tensor(float(n_mc_samples)))
        return ll.mean() if return_mean else ll

    def covariate_axes(self) -> dict[str, tuple[int, str, int]]:
        """``name -> (axis, registry key, offset)`` of every tensor indexed by categories."""
        axes = self.observation.covariate_axes("observation.")
        for prefix, net, key in (("decoder.body", self.decoder.body, K.NN_CONDITIONING),
                                 ("encoder.body", self.encoder.body, K.ENCODER)):
            axes.update(net.covariate_axes(prefix, key))
        return axes
