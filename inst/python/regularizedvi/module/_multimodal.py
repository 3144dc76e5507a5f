"""Multimodal regularized VAE: one encoder, decoder and observation model per modality.

Built from the same parts as the single-modality module (:class:`~regularizedvi.nn.GaussianEncoder`,
:class:`~regularizedvi.nn.LibraryEncoder`, :class:`~regularizedvi.nn.SoftplusDecoder`,
:class:`~regularizedvi.module.CountObservationModel`) on the same base,
:class:`~regularizedvi.module._base.ModalityVAE` (generative pass, ELBO, marginal
likelihood). Every decoder reads the joint latent ``z`` (in concatenation mode the primary
modality's decoder its own slice of it); how ``z`` is formed depends
on ``latent_mode`` (see :class:`RegularizedMultimodalVAE`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.module import _streams
from regularizedvi.module._base import ModalityVAE
from regularizedvi.module._observation import CountObservationModel
from regularizedvi.nn import AmbientScaleEncoder, GaussianEncoder, LibraryEncoder, SoftplusDecoder


def modality_key(name: str) -> str:
    """Minibatch / registry key of a modality's counts."""
    return f"{K.X}_{name}"


def _checked_primary_options(primary_modality, detach_primary, secondary_kl_weight) -> tuple[bool, float]:
    """``(detach_primary, secondary_kl_weight)`` checked: the one place for these checks (the
    model only resolves its ``None`` defaults, ``model._multimodal_setup.primary_options``)."""
    if not isinstance(detach_primary, bool):
        raise TypeError(f"detach_primary must be True or False, got {detach_primary!r}.")
    if (isinstance(secondary_kl_weight, bool) or not isinstance(secondary_kl_weight, numbers.Real)
            or not math.isfinite(secondary_kl_weight) or secondary_kl_weight <= 0):
        raise ValueError(f"secondary_kl_weight must be a finite number > 0, got {secondary_kl_weight!r}.")
    if primary_modality is None and (detach_primary or secondary_kl_weight != 1.0):
        raise ValueError("detach_primary and secondary_kl_weight apply to a primary modality (latent_mode="
                         "'concatenation' with primary_modality set); without one leave them at their defaults "
                         f"(got detach_primary={detach_primary!r}, secondary_kl_weight={secondary_kl_weight!r}).")
    return detach_primary, float(secondary_kl_weight)


class RegularizedMultimodalVAE(ModalityVAE):
    """Per-modality encoders and decoders sharing one joint latent space.

    For modality ``m``: ``mu^(m)_nf = l^(m)_n (rho^(m)_nf + s^(m)_{e_n,f}) y^(m)_{t_n,f}`` with
    ``rho^(m) = softplus(f^(m)(z_n, c_n))`` and
    ``x^(m)_nf ~ GammaPoisson(theta^(m)_{f,d_n}, theta^(m)_{f,d_n} / mu^(m)_nf)``.

    Latent modes:

    * ``"concatenation"``: ``z = [z^(1); ...; z^(M)]``, ``z^(m) ~ q(z^(m) | x^(m))``; the KL
      is the sum of one KL per modality. With a ``primary_modality`` ``p``, ``p``'s decoder
      reads its own slice ``z^(p)`` only (every other decoder reads the whole ``z``): what
      explains ``p``'s counts lies in the slice that ``p``'s own encoder infers, as in a
      model of ``p`` alone, and the other slices hold what the other modalities add to it.
      With ``detach_primary``, the other decoders read ``z^(p)`` detached in training, so
      that slice is trained by ``p``'s likelihood alone (an ELBO of ``p`` as in a model of
      ``p`` alone); ``secondary_kl_weight`` multiplies the KL of every other slice, which
      then holds only what the other modalities add at that price.
    * ``"weighted_mean"``: per-modality posteriors over one shared latent of size ``d``
      are mixed with learned scalar weights ``w = softmax(a)`` (renormalised over the
      modalities a cell has): mean ``sum_m w_m mu_m``, variance ``sum_m w_m sigma_m^2``.
      One KL on the mixture.
    * ``"single_encoder"``: one encoder on the concatenated ``log1p`` inputs of all
      modalities; its latent size is ``sum_m d_m``. One KL.

    A cell whose row of modality ``m`` is all zero is taken to lack that modality: its
    reconstruction and library terms for ``m`` are masked out (weight 0), and in
    ``weighted_mean`` mode ``m`` gets no weight in its latent. In the other modes the
    cell still passes its all-zero row through the encoder(s).

    Parameters
    ----------
    modality_names
        Order of the modalities (the order of latent slices in concatenation mode).
    n_input
        Features per modality.
    library_log_means, library_log_vars
        Per modality: per library group, mean / variance of log total counts.
    mean_profiles
        Per modality: average expression profile (sums to 1), the decoder's start.
    n_latent, n_hidden
        Per modality latent size ``d_m`` and hidden width.
    n_ambient_cats_per_key, n_scaling_cats_per_key
        Per modality as in :class:`CountObservationModel` (``None`` switches the term off).
    primary_modality
        Concatenation mode: the modality whose decoder reads only its own latent slice
        (None: every decoder reads the whole latent). Must be None in the other modes.
    detach_primary, secondary_kl_weight
        With a primary modality: the other decoders read its slice detached in training;
        the weight of the other slices' KL in the loss (the reported terms stay unweighted).
    """

    def __init__(
        self,
        modality_names: Sequence[str],
        n_input: dict[str, int],
        library_log_means: dict[str, torch.Tensor],
        library_log_vars: dict[str, torch.Tensor],
        mean_profiles: dict[str, torch.Tensor] | None = None,
        n_latent: dict[str, int] | None = None,
        n_hidden: dict[str, int] | None = None,
        n_layers: int = C.N_LAYERS,
        dropout_rate: float = C.DROPOUT_RATE,
        latent_mode: str = C.MULTIMODAL_LATENT_MODE,
        n_continuous: int = 0,
        n_encoder_cats_per_key: Sequence[int] = (),
        n_nn_cats_per_key: Sequence[int] = (),
        n_ambient_cats_per_key: dict[str, Sequence[int] | None] | None = None,
        n_scaling_cats_per_key: dict[str, Sequence[int] | None] | None = None,
        n_dispersion_groups: int = 1,
        regularise_background: bool = C.REGULARISE_BACKGROUND,
        ambient_background: str | dict = C.AMBIENT_BACKGROUND,
        ambient_cell_scale: bool = C.AMBIENT_CELL_SCALE,
        native_share_penalty: float = C.NATIVE_SHARE_PENALTY,
        native_share_power: float = C.NATIVE_SHARE_POWER,
        primary_modality: str | None = None,
        detach_primary: bool = False,
        secondary_kl_weight: float = 1.0,
        ambient_adversary: float = C.AMBIENT_ADVERSARY,
        n_adversary_labels: int = 0,
    ):
        super().__init__()
        self.native_share_penalty = float(native_share_penalty)
        self.native_share_power = float(native_share_power)
        if latent_mode not in C.LATENT_MODES:
            raise ValueError(f"latent_mode must be one of {C.LATENT_MODES}, got {latent_mode!r}.")
        self.modality_names = list(modality_names)
        names = self.modality_names
        n_latent = n_latent or {m: C.N_LATENT for m in names}
        n_hidden = n_hidden or {m: C.N_HIDDEN for m in names}
        n_ambient_cats_per_key = n_ambient_cats_per_key or {m: () for m in names}
        n_scaling_cats_per_key = n_scaling_cats_per_key or {m: None for m in names}
        self.latent_mode = latent_mode
        self.n_latent_per_modality = {m: int(n_latent[m]) for m in names}
        self.n_encoder_cats_per_key = list(n_encoder_cats_per_key)
        self.n_nn_cats_per_key = list(n_nn_cats_per_key)
        self.n_continuous = n_continuous

        if latent_mode == "weighted_mean":
            sizes = set(self.n_latent_per_modality.values())
            if len(sizes) != 1:
                raise ValueError(
                    f"latent_mode='weighted_mean' mixes the modalities' posteriors into one shared "
                    f"latent, so every modality needs the same latent size; got {self.n_latent_per_modality}. "
                    "Pass one integer n_latent, or use latent_mode='concatenation'."
                )
            self.n_latent = sizes.pop()
        else:
            self.n_latent = sum(self.n_latent_per_modality.values())
        # Where each modality's slice lies in z (concatenation mode only).
        offsets, start = {}, 0
        for m in names:
            offsets[m] = (start, start + self.n_latent_per_modality[m])
            start += self.n_latent_per_modality[m]
        self.latent_slices = offsets
        if primary_modality is not None:
            if latent_mode != "concatenation":
                raise ValueError("primary_modality applies to latent_mode='concatenation' only (the other modes "
                                 f"have one shared latent); got latent_mode={latent_mode!r}.")
            if primary_modality not in names:
                raise ValueError(f"primary_modality must be one of the modalities {names}, got {primary_modality!r}.")
        self.primary_modality = primary_modality
        self.detach_primary, self.secondary_kl_weight = _checked_primary_options(
            primary_modality, detach_primary, secondary_kl_weight)
        decoder_width = {m: (self.n_latent_per_modality[m] if m == primary_modality else self.n_latent)
                         for m in names}

        # Random streams: the primary modality (else the first) in slot 0, as the single
        # module's modality, so that from the same seed its parts start from the same weights
        # and see the same training draws (module._streams).
        lead = primary_modality or names[0]
        self._init_streams([lead] + [m for m in names if m != lead])
        n_enc_cov = sum(self.n_encoder_cats_per_key)
        if latent_mode == "single_encoder":
            with self._seeded_init(None):
                self.joint_encoder = GaussianEncoder(
                    sum(n_input[m] for m in names) + n_continuous, self.n_latent, n_enc_cov,
                    n_layers, max(n_hidden[m] for m in names), dropout_rate,
                )
            self._bind_streams({lead: [self.joint_encoder]})
        self.encoders = nn.ModuleDict()
        if latent_mode == "weighted_mean":
            self.modality_weight_logits = nn.Parameter(torch.zeros(len(names)))
        self.library_encoders = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        self.observations = nn.ModuleDict()
        self.ambient_scale_encoders = nn.ModuleDict()
        # Built modality by modality, each from its own seed and in the single-modality
        # module's order (encoder, library encoder, decoder, observation model, ambient-scale
        # encoder): from the same seed, the slot-0 modality's parts start from the weights
        # that RegularizedVAE draws for it alone (tests/python/test_rna_path_parity.py).
        for m in names:
            with self._seeded_init(m):
                if latent_mode != "single_encoder":
                    size = self.n_latent if latent_mode == "weighted_mean" else self.n_latent_per_modality[m]
                    self.encoders[m] = GaussianEncoder(n_input[m] + n_continuous, size, n_enc_cov, n_layers,
                                                       n_hidden[m], dropout_rate)
                self.library_encoders[m] = LibraryEncoder(n_input[m], dropout_rate=dropout_rate)
                self.decoders[m] = SoftplusDecoder(decoder_width[m] + n_continuous, n_input[m],
                                                   sum(self.n_nn_cats_per_key), n_layers, n_hidden[m])
                self.observations[m] = CountObservationModel(
                    n_input[m], n_ambient_cats_per_key[m], n_scaling_cats_per_key[m], n_dispersion_groups,
                    library_log_means[m], library_log_vars[m], regularise_background,
                    ambient_background=(ambient_background[m] if isinstance(ambient_background, dict)
                                        else ambient_background),
                )
                if ambient_cell_scale and self.observations[m].use_background:
                    self.ambient_scale_encoders[m] = AmbientScaleEncoder(n_input[m])
            self._bind_streams({m: [self.encoders[m] if m in self.encoders else None, self.library_encoders[m],
                                    self.decoders[m], self.observations[m],
                                    self.ambient_scale_encoder_of(m)]})
        # the adversary predicts the ambient groups of the modalities that have a background
        self._init_ambient_adversary(ambient_adversary, next(
            (n_ambient_cats_per_key[m] for m in names if self.observations[m].use_background), ()),
            n_adversary_labels)
        if mean_profiles is not None:
            for m in names:
                background_total = C.BACKGROUND_INIT_FRACTION if self.observations[m].use_background else 0.0
                self.decoders[m].init_output(mean_profiles[m] * (1 - background_total))

    # ------------------------------------------------------------------ parts
    def _check(self, name: str) -> None:
        if name not in self.observations:
            raise KeyError(f"modality {name!r} is not one of {self.modality_names}.")

    def counts_key(self, name: str) -> str:
        self._check(name)
        return modality_key(name)

    def library_encoder_of(self, name: str):
        self._check(name)
        return self.library_encoders[name]

    def decoder_of(self, name: str):
        self._check(name)
        return self.decoders[name]

    def observation_of(self, name: str):
        self._check(name)
        return self.observations[name]

    def _decode_rho(self, name, z, nn_onehot, continuous_covs) -> torch.Tensor:
        primary = self.primary_modality
        if primary is not None:
            a, b = self.latent_slices[primary]
            if name == primary:  # its decoder reads its own slice only
                z = z[..., a:b]
            elif self.detach_primary and self.training:  # reads it, does not shape it
                z = torch.cat([z[..., :a], z[..., a:b].detach(), z[..., b:]], -1)
        return super()._decode_rho(name, z, nn_onehot, continuous_covs)

    def _latent_noise(self, qz: Normal) -> torch.Tensor:
        """Concatenation mode: each modality's latent slice draws its noise from that
        modality's stream; the other modes from the slot-0 modality's."""
        if self.latent_mode != "concatenation":
            return super()._latent_noise(qz)
        slices = self.latent_slices.items()
        return torch.cat([_streams.normal_like(qz.loc[..., a:b], self._stream(m)) for m, (a, b) in slices], -1)

    def _latent_kl(self, kl_z_dims: torch.Tensor, z_terms: dict) -> torch.Tensor:
        """With a primary modality: the KL of its latent slice plus ``secondary_kl_weight``
        times that of every other slice, summed over ``self.latent_slices`` of the
        per-dimension KL (whatever the reported terms are named)."""
        if self.primary_modality is None or self.secondary_kl_weight == 1.0:
            return super()._latent_kl(kl_z_dims, z_terms)
        primary = self.latent_slices[self.primary_modality]
        total = 0
        for a, b in self.latent_slices.values():
            kl = kl_z_dims[..., a:b].sum(-1)
            total = total + (kl if (a, b) == primary else self.secondary_kl_weight * kl)
        return total

    def ambient_scale_encoder_of(self, name: str):
        self._check(name)
        return self.ambient_scale_encoders[name] if name in self.ambient_scale_encoders else None

    def modality_weights(self, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Mixing weights of ``weighted_mean`` mode: ``(M,)`` or, given masks, ``(n, M)``."""
        w = torch.softmax(self.modality_weight_logits, 0)
        if masks is None:
            return w
        w = w * masks
        return w / w.sum(-1, keepdim=True).clamp_min(1e-12)

    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        def with_cont(h):
            return h if continuous_covs is None else torch.cat([h, continuous_covs], -1)

        if self.latent_mode == "single_encoder":
            joint_input = torch.cat([x_logs[m] for m in self.modality_names], -1)
            return self.joint_encoder(with_cont(joint_input), encoder_covs), {}
        per_modality = {m: self.encoders[m](with_cont(x_logs[m]), encoder_covs) for m in self.modality_names}
        locs = [per_modality[m].loc for m in self.modality_names]
        scales = [per_modality[m].scale for m in self.modality_names]
        if self.latent_mode == "concatenation":
            return Normal(torch.cat(locs, -1), torch.cat(scales, -1), validate_args=False), per_modality
        w = self.modality_weights(torch.stack([masks[m] for m in self.modality_names], -1))
        w = w.T.unsqueeze(-1)  # (M, n, 1)
        loc = (w * torch.stack(locs)).sum(0)
        var = (w * torch.stack(scales) ** 2).sum(0)
        return Normal(loc, var.sqrt(), validate_args=False), per_modality

    def kl_z_terms(self, kl_z):
        if self.latent_mode != "concatenation":
            return {"kl_divergence_z": kl_z.sum(-1)}
        return {f"kl_divergence_z_{m}": kl_z[:, a:b].sum(-1) for m, (a, b) in self.latent_slices.items()}

    def covariate_axes(self) -> dict[str, tuple[int, str, int]]:
        """``name -> (axis, registry key, offset)`` of every tensor indexed by categories."""
        axes = {}
        for m in self.modality_names:
            axes.update(self.observations[m].covariate_axes(f"observations.{m}."))
            axes.update(self.decoders[m].body.covariate_axes(f"decoders.{m}.body", K.NN_CONDITIONING))
            if m in self.encoders:
                axes.update(self.encoders[m].body.covariate_axes(f"encoders.{m}.body", K.ENCODER))
        if self.latent_mode == "single_encoder":
            axes.update(self.joint_encoder.body.covariate_axes("joint_encoder.body", K.ENCODER))
        axes.update(self._adversary_axes())
        return axes
