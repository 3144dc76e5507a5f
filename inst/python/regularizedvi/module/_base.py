"""What the single-modality and the multimodal modules share.

A regularizedvi module is a set of modalities (one for :class:`RegularizedVAE`, two or
more for :class:`RegularizedMultimodalVAE`), each with its own library encoder, batch-free
softplus decoder and :class:`~regularizedvi.module.CountObservationModel`, reading one
latent ``z``. :class:`ModalityVAE` holds everything that follows from that: the library
posteriors, the generative pass, the ELBO and the importance-sampled marginal likelihood,
all keyed by modality name. A subclass says only how the latent posterior is formed from
the modalities (:meth:`latent_posterior`), how its KL is reported (:meth:`kl_z_terms`) and
where its parts live (:meth:`counts_key`, :meth:`library_encoder_of`,
:meth:`decoder_of`, :meth:`observation_of`).

A cell whose row of a modality is all zero lacks that modality: its reconstruction and
library terms for it are masked out.
"""

from __future__ import annotations

import math

import torch
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn
from torch.distributions import Normal, kl_divergence

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.module import _streams
from regularizedvi.nn import one_hot_concat


def standard_normal_like(q: Normal) -> Normal:
    return Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale), validate_args=False)


class _ReverseGradient(torch.autograd.Function):
    """Identity in the forward pass; the gradient's sign flipped in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class ModalityVAE(BaseModuleClass):
    """Base class of the modules: modality-keyed inference, generative pass, loss, marginal LL.

    Subclasses set ``modality_names``, ``n_encoder_cats_per_key``, ``n_nn_cats_per_key``,
    ``n_latent``, ``native_share_penalty`` and ``native_share_power`` and implement the methods named in the module
    docstring (and :meth:`ambient_scale_encoder_of`). A modality with an ambient background
    adds two per-cell terms to the loss (:meth:`_ambient_penalties`), reported in
    ``kl_local``; with the ambient adversary on (:meth:`_init_ambient_adversary`) a third,
    ``ambient_adversary``.

    :meth:`loss` reads four hooks that a subclass (e.g. a benchmark variant) may override;
    here they give the ELBO itself: :meth:`_reconstruction_weight` (1.0),
    :meth:`_library_prior` (the observation model's), :meth:`_latent_kl` (the sum of the
    :meth:`kl_z_terms`) and :meth:`_extra_penalties` (none).
    """

    modality_names: list[str]

    # ------------------------------------------------------------------ per-modality parts
    def counts_key(self, name: str) -> str:
        raise NotImplementedError

    def library_encoder_of(self, name: str):
        raise NotImplementedError

    def decoder_of(self, name: str):
        raise NotImplementedError

    def observation_of(self, name: str):
        raise NotImplementedError

    def ambient_scale_encoder_of(self, name: str):
        """The modality's :class:`~regularizedvi.nn.AmbientScaleEncoder`, or None."""
        raise NotImplementedError

    def latent_posterior(self, x_logs: dict, masks: dict, encoder_covs, continuous_covs):
        """``(q(z), per-modality posteriors or {})`` from the modalities' ``log1p`` counts."""
        raise NotImplementedError

    def kl_z_terms(self, kl_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latent KL (cells x dims) as the named per-cell terms reported in ``kl_local``."""
        raise NotImplementedError

    def _term_name(self, base: str, name: str) -> str:
        """``base`` for a one-modality module, ``base_<modality>`` otherwise."""
        return base if len(self.modality_names) == 1 else f"{base}_{name}"

    # ------------------------------------------------------------------ random streams
    def _init_streams(self, slots: list[str]) -> None:
        """Seed the modalities' random streams (:mod:`regularizedvi.module._streams`) from one
        draw of torch's global generator; ``slots[i]`` is the modality in slot ``i``. Call
        before building any part."""
        self._stream_base = _streams.module_seed()
        self._stream_slots = {m: i for i, m in enumerate(slots)}
        self._slot0 = slots[0]
        self.random_streams = {m: _streams.RandomStream(_streams.stream_seed(self._stream_base, i, _streams.TRAINING))
                               for m, i in self._stream_slots.items()}

    def _seeded_init(self, name: str | None):
        """Context in which modality ``name``'s parts are built (None: shared parts)."""
        slot = _streams.SHARED_SLOT if name is None else self._stream_slots[name]
        return _streams.seeded_init(_streams.stream_seed(self._stream_base, slot, _streams.INIT))

    def _bind_streams(self, parts: dict) -> None:
        """``parts``: modality -> the modules that draw from its stream in training."""
        for m, modules in parts.items():
            for part in modules:
                if part is not None:
                    _streams.bind(part, self.random_streams[m])

    def _init_ambient_adversary(self, weight: float, n_cats_per_key, n_labels: int = 0) -> None:
        """The ambient adversary (``C.AMBIENT_ADVERSARY``): with ``weight`` > 0, a classifier
        ``n_latent (+ n_labels) -> C.AMBIENT_ADVERSARY_N_HIDDEN -> sum(n_cats_per_key)`` (one
        block of logits per ambient key) on the latent mean, built from a seed of its own so
        that the other parts start from the same weights with it or without it. With
        ``n_labels`` > 0 it also reads each cell's label (``labels_key``, one-hot, not behind
        the reversal): it can then predict the group from the label alone where the groups'
        cell-type compositions differ, so that the encoder has to hide only what tells the
        groups apart within a label. Call after :meth:`_init_streams`; ``self.n_latent`` must
        be set. ``weight`` is checked by the model (``model._base.ambient_options``)."""
        weight = float(weight)
        self.ambient_adversary = weight
        self.n_adversary_cats_per_key = [int(n) for n in (n_cats_per_key or ())] if weight else []
        self.n_adversary_labels = int(n_labels) if weight else 0
        self.ambient_adversary_net = None
        if not weight:
            return
        if not any(n >= 2 for n in self.n_adversary_cats_per_key):
            raise ValueError(
                f"ambient_adversary={weight:g} keeps the ambient group out of the latent, but this set-up has "
                f"{'no ambient groups' if not self.n_adversary_cats_per_key else 'one ambient group'}"
                " (or no modality with an additive background). Register the groups with batch_key= or "
                "ambient_covariate_keys= in setup, or leave ambient_adversary=0.")
        seed = _streams.stream_seed(self._stream_base, _streams.ADVERSARY_SLOT, _streams.INIT)
        with _streams.seeded_init(seed):
            width = C.AMBIENT_ADVERSARY_N_HIDDEN
            self.ambient_adversary_net = nn.Sequential(
                nn.Linear(self.n_latent + self.n_adversary_labels, width), nn.ReLU(),
                nn.Linear(width, sum(self.n_adversary_cats_per_key)))

    def _adversary_axes(self) -> dict[str, tuple[int, str, int]]:
        """The adversary's output layer, indexed by ambient categories, and the label columns
        of its input layer, indexed by labels (query surgery)."""
        if self.ambient_adversary_net is None:
            return {}
        axes = {f"ambient_adversary_net.2.{p}": (0, K.AMBIENT, 0) for p in ("weight", "bias")}
        if self.n_adversary_labels:
            axes["ambient_adversary_net.0.weight"] = (1, K.LABELS, self.n_latent)
        return axes

    def _ambient_adversary_term(self, tensors, qz: Normal) -> torch.Tensor | None:
        """Per cell, ``ambient_adversary`` x the adversary's cross-entropy (summed over ambient
        keys) on the latent mean seen through a gradient reversal (beside the cell's one-hot
        label with ``labels_key``): one loss in which the classifier learns to predict the
        group while the encoder learns to hide it."""
        net = self.ambient_adversary_net
        if net is None:
            return None
        codes = self._to(tensors[K.AMBIENT]).long()
        inputs = _ReverseGradient.apply(qz.loc)
        if self.n_adversary_labels:
            labels = self._to(tensors[K.LABELS]).long().reshape(-1)
            inputs = torch.cat([inputs, nn.functional.one_hot(labels, self.n_adversary_labels).to(inputs.dtype)], -1)
        logits = net(inputs)
        ce, start = 0.0, 0
        for k, n in enumerate(self.n_adversary_cats_per_key):
            ce = ce + nn.functional.cross_entropy(logits[:, start:start + n], codes[:, k], reduction="none")
            start += n
        return self.ambient_adversary * ce

    def _stream(self, name: str):
        """Modality ``name``'s random stream in training; None (torch's global generator) in
        evaluation mode."""
        return self.random_streams[name] if self.training else None

    def _latent_noise(self, qz: Normal) -> torch.Tensor:
        """The standard normal ``eps`` of ``z = loc + eps * scale``: from the slot-0
        modality's stream (a subclass with latent slices draws each from its modality's)."""
        return _streams.normal_like(qz.loc, self._stream(self._slot0))

    # ------------------------------------------------------------------ helpers
    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _to(self, t):
        return None if t is None else t.to(self._device)

    # ------------------------------------------------------------------ inference
    def _get_inference_input(self, tensors: dict) -> dict:
        return {
            "xs": {m: tensors[self.counts_key(m)] for m in self.modality_names},
            "encoder_covs": tensors.get(K.ENCODER),
            "continuous_covs": tensors.get(K.CONTINUOUS),
        }

    def _encoder_x_logs(self, xs: dict, x_logs: dict, scaling_covs) -> dict:
        """What the latent encoder reads: the ``log1p`` counts (a query-mapping hook; the
        library and ambient-scale encoders always read ``x_logs``)."""
        return x_logs

    def inference(self, xs: dict, encoder_covs=None, continuous_covs=None, scaling_covs=None) -> dict:
        """``scaling_covs``: feature-scaling codes, passed only for the query-mapping input
        correction (:meth:`_encoder_x_logs`)."""
        xs = {m: self._to(x) for m, x in xs.items()}
        continuous_covs = self._to(continuous_covs)
        encoder_covs = one_hot_concat(self._to(encoder_covs), self.n_encoder_cats_per_key)
        x_logs = {m: torch.log1p(x) for m, x in xs.items()}
        total_counts = {m: x.sum(-1) for m, x in xs.items()}
        masks = {m: (total_counts[m] > 0).to(x.dtype) for m, x in xs.items()}
        encoder_logs = self._encoder_x_logs(xs, x_logs, self._to(scaling_covs))
        qz, qz_per_modality = self.latent_posterior(encoder_logs, masks, encoder_covs, continuous_covs)
        ql = {m: self.library_encoder_of(m)(x_logs[m], torch.log(total_counts[m].unsqueeze(-1).clamp_min(1.0)))
              for m in self.modality_names}
        z = _streams.reparameterise(qz, self._latent_noise(qz))
        log_library = {m: _streams.rsample(ql[m], self._stream(m)) for m in self.modality_names}
        log_ambient_scale = {m: net(x_logs[m]) for m in self.modality_names
                             if (net := self.ambient_scale_encoder_of(m)) is not None}
        return {"z": z, "qz": qz, "qz_per_modality": qz_per_modality, "ql": ql,
                "log_library": log_library, "masks": masks, "log_ambient_scale": log_ambient_scale,
                "total_counts": total_counts}

    # ------------------------------------------------------------------ generative
    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict:
        return {
            "z": inference_outputs["z"],
            "log_library": inference_outputs["log_library"],
            "log_ambient_scale": inference_outputs.get("log_ambient_scale"),
            **K.generative_covariates(tensors),
        }

    def decode_rho(self, name: str, z, nn_covs=None, continuous_covs=None) -> torch.Tensor:
        """Decoder signal ``rho`` of modality ``name`` (``nn_covs``: integer codes)."""
        return self._decode_rho(name, z, one_hot_concat(nn_covs, self.n_nn_cats_per_key), continuous_covs)

    def _decode_rho(self, name, z, nn_onehot, continuous_covs) -> torch.Tensor:
        decoder_input = z if continuous_covs is None else torch.cat([z, continuous_covs], -1)
        return self.decoder_of(name)(decoder_input, nn_onehot)

    def decode_mean(self, name: str, z, library, nn_covs=None, continuous_covs=None, ambient_covs=None,
                    scaling_covs=None) -> torch.Tensor:
        """Expected counts ``mu = l (rho + s) y`` of modality ``name``; ``library``: ``(n, 1)``.
        The background is at its group's level, without the per-cell scale (its derivative
        with respect to ``z``, which the attribution reads, does not depend on it)."""
        rho = self.decode_rho(name, z, nn_covs, continuous_covs)
        return self.observation_of(name).mean(rho, library, ambient_covs, scaling_covs)

    def generative(self, z, log_library: dict, dispersion_group, nn_covs=None, continuous_covs=None,
                   ambient_covs=None, scaling_covs=None, log_ambient_scale: dict | None = None) -> dict:
        """Per modality: ``rho``, the per-cell ``background`` (``c_n s_{e_n}``, None without
        one) and feature ``scaling`` (None without), ``mu = l (rho + background) scaling``,
        the per-cell dispersion (drawn from its posterior in training, the posterior median
        otherwise) and ``theta``."""
        nn_onehot = one_hot_concat(self._to(nn_covs), self.n_nn_cats_per_key)
        continuous_covs, dispersion_group = self._to(continuous_covs), self._to(dispersion_group)
        ambient_covs, scaling_covs = self._to(ambient_covs), self._to(scaling_covs)
        log_ambient_scale = log_ambient_scale or {}
        out = {"rho": {}, "mu": {}, "background": {}, "scaling": {}, "dispersion": {}, "theta": {}}
        for m in self.modality_names:
            observation = self.observation_of(m)
            rho = self._decode_rho(m, z, nn_onehot, continuous_covs)
            scale = torch.exp(log_ambient_scale[m]) if m in log_ambient_scale else None
            background = observation.background(ambient_covs, scale)
            scaling = observation.feature_scaling(scaling_covs)
            out["rho"][m], out["background"][m], out["scaling"][m] = rho, background, scaling
            out["mu"][m] = observation.mean_from(rho, torch.exp(log_library[m]), background, scaling)
            dispersion = observation.dispersion(dispersion_group, sample=self.training)
            out["dispersion"][m] = dispersion
            out["theta"][m] = dispersion.theta
        return out

    # ------------------------------------------------------------------ loss
    def _log_likelihood(self, tensors: dict, name: str, generative_outputs: dict) -> torch.Tensor:
        key = self.counts_key(name)
        x = self._to(tensors[key])
        return self.observation_of(name).log_likelihood(x, generative_outputs["mu"][name],
                                                        generative_outputs["dispersion"][name],
                                                        positions=tensors.get(K.stored_positions(key)))

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0,
             n_obs: float = 1.0) -> LossOutput:
        """Negative ELBO per cell (missing modalities masked), plus the global priors once
        per dataset (``/ n_obs``)."""
        masks = inference_outputs["masks"]
        library_codes = self._to(tensors[K.LIBRARY])
        reconstruction, kl_local = {}, {}
        total_reconstruction = kl_l_total = 0.0
        penalties = 0.0
        for m in self.modality_names:
            rec = -self._log_likelihood(tensors, m, generative_outputs) * masks[m]
            reconstruction[self._term_name("reconstruction", m)] = rec
            weight = self._reconstruction_weight(m)
            total_reconstruction = total_reconstruction + (rec if weight == 1.0 else weight * rec)
            prior = self._library_prior(m, library_codes)
            if prior is not None:
                kl_l = kl_divergence(inference_outputs["ql"][m], prior).sum(-1) * masks[m]
                kl_local[self._term_name("kl_divergence_l", m)] = kl_l
                kl_l_total = kl_l_total + kl_l
            for name, term in self._ambient_penalties(tensors, m, inference_outputs, generative_outputs).items():
                kl_local[self._term_name(name, m)] = term * masks[m]
                penalties = penalties + term * masks[m]
        qz = inference_outputs["qz"]
        kl_z_dims = kl_divergence(qz, standard_normal_like(qz))
        z_terms = self.kl_z_terms(kl_z_dims)
        kl_local.update(z_terms)
        kl_z = self._latent_kl(kl_z_dims, z_terms)
        extra = self._extra_penalties(tensors, inference_outputs, generative_outputs, kl_weight, kl_local)
        if extra is not None:
            penalties = penalties + extra
        adversary = self._ambient_adversary_term(tensors, qz)
        if adversary is not None:
            kl_local["ambient_adversary"] = adversary
            penalties = penalties + adversary
        kl_global = sum(self.observation_of(m).global_penalty() for m in self.modality_names)
        loss = torch.mean(total_reconstruction + kl_weight * (kl_z + kl_l_total) + penalties) + kl_global / n_obs
        if len(reconstruction) == 1:
            reconstruction = next(iter(reconstruction.values()))
        return LossOutput(loss=loss, reconstruction_loss=reconstruction, kl_local=kl_local,
                          kl_global=kl_global)

    # loss hooks: what :meth:`loss` weighs and adds; the defaults give the ELBO
    def _reconstruction_weight(self, name: str) -> float:
        """Weight of modality ``name``'s reconstruction term in the loss (the reported term
        stays unweighted): 1.0."""
        return 1.0

    def _library_prior(self, name: str, library_codes) -> Normal | None:
        """Prior of modality ``name``'s log library size in the loss: the observation
        model's; ``None`` would leave out that modality's library KL."""
        return self.observation_of(name).library_prior(library_codes)

    def _latent_kl(self, kl_z_dims: torch.Tensor, z_terms: dict) -> torch.Tensor:
        """Per-cell latent KL in the loss, from the per-dimension KL ``kl_z_dims`` (cells x
        latent dimensions) and the reported :meth:`kl_z_terms` of it: their sum."""
        return sum(z_terms.values())

    def _extra_penalties(self, tensors, inference_outputs, generative_outputs, kl_weight,
                         kl_local: dict) -> torch.Tensor | None:
        """Further per-cell terms added to the loss (an override reports them in
        ``kl_local``): none."""
        return None

    def _ambient_penalties(self, tensors, name, inference_outputs, generative_outputs) -> dict:
        """Per-cell terms of the ambient background of modality ``name`` (none without one):
        the native-share penalty ``K N_n^p sum_f rho_nf`` (see
        ``C.NATIVE_SHARE_PENALTY``, ``C.NATIVE_SHARE_POWER``; ``N_n`` the cell's total count, from the inference's
        ``total_counts``) and the LogNormal(0, ``C.AMBIENT_SCALE_SD``) prior of the per-cell
        background scale."""
        terms = {}
        if not self.observation_of(name).use_background:
            return terms
        if self.native_share_penalty:
            totals = inference_outputs["total_counts"][name]
            terms["native_share_penalty"] = (self.native_share_penalty * totals.pow(self.native_share_power)
                                             * generative_outputs["rho"][name].sum(-1))
        log_scale = inference_outputs.get("log_ambient_scale", {}).get(name)
        if log_scale is not None:
            terms["ambient_scale_penalty"] = 0.5 * (log_scale.squeeze(-1) / C.AMBIENT_SCALE_SD) ** 2
        return terms

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def marginal_ll(self, tensors, n_mc_samples: int = 100, return_mean: bool = False) -> torch.Tensor:
        """Importance-sampled ``log p(x)`` per cell (all its modalities), with ``q(z) q(l)``
        as the proposal: ``logsumexp_k [log p(x, z_k, l_k) - log q(z_k, l_k)] - log K``."""
        inference_outputs = self.inference(**self._get_inference_input(tensors))
        qz, ql, masks = inference_outputs["qz"], inference_outputs["ql"], inference_outputs["masks"]
        library_codes = self._to(tensors[K.LIBRARY])
        priors = {m: self.observation_of(m).library_prior(library_codes) for m in self.modality_names}
        standard = standard_normal_like(qz)
        log_weights = []
        for _ in range(int(n_mc_samples)):
            z = qz.sample()
            log_l = {m: ql[m].sample() for m in self.modality_names}
            out = self.generative(**self._get_generative_input(
                tensors, {"z": z, "log_library": log_l, "log_ambient_scale": inference_outputs["log_ambient_scale"]}))
            log_w = standard.log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
            for m in self.modality_names:
                log_w = log_w + masks[m] * (self._log_likelihood(tensors, m, out)
                                            + priors[m].log_prob(log_l[m]).sum(-1)
                                            - ql[m].log_prob(log_l[m]).sum(-1))
            log_weights.append(log_w)
        ll = torch.logsumexp(torch.stack(log_weights), 0) - math.log(int(n_mc_samples))
        return ll.mean() if return_mean else ll
