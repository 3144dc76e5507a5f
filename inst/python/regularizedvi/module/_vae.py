"""Single-modality regularized VAE: the one-modality case of :class:`ModalityVAE`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.module._base import ModalityVAE
from regularizedvi.module._observation import CountObservationModel
from regularizedvi.nn import AmbientScaleEncoder, GaussianEncoder, LibraryEncoder, SoftplusDecoder

# The name of the single model's only modality; its counts are registered under K.X.
SINGLE_MODALITY = K.X


class RegularizedVAE(ModalityVAE):
    """One encoder, library encoder, batch-free softplus decoder and observation model.

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
        ambient_background: str = C.AMBIENT_BACKGROUND,
        ambient_cell_scale: bool = C.AMBIENT_CELL_SCALE,
        native_share_penalty: float = C.NATIVE_SHARE_PENALTY,
        native_share_power: float = C.NATIVE_SHARE_POWER,
        ambient_adversary: float = C.AMBIENT_ADVERSARY,
        n_adversary_labels: int = 0,
    ):
        super().__init__()
        self.modality_names = [SINGLE_MODALITY]
        self.native_share_penalty = float(native_share_penalty)
        self.native_share_power = float(native_share_power)
        self.n_latent = n_latent
        self.n_encoder_cats_per_key = list(n_encoder_cats_per_key)
        self.n_nn_cats_per_key = list(n_nn_cats_per_key)
        self.pinned_decoder_columns: list[int] = []  # query mapping: see pin_decoder_columns
        # Slot 0 of the random streams, as the multimodal module's primary modality.
        self._init_streams([SINGLE_MODALITY])
        with self._seeded_init(SINGLE_MODALITY):
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
                ambient_background=ambient_background,
            )
            use_scale = ambient_cell_scale and self.observation.use_background
            self.ambient_scale_encoder = AmbientScaleEncoder(n_input) if use_scale else None
        self._bind_streams({SINGLE_MODALITY: [self.encoder, self.library_encoder, self.decoder, self.observation,
                                              self.ambient_scale_encoder]})
        self._init_ambient_adversary(ambient_adversary,
                                     n_ambient_cats_per_key if self.observation.use_background else (),
                                     n_adversary_labels)
        if mean_profile is not None:
            background_total = C.BACKGROUND_INIT_FRACTION if self.observation.use_background else 0.0
            self.decoder.init_output(mean_profile * (1 - background_total))

    # ------------------------------------------------------------------ parts
    def _check(self, name: str) -> None:
        if name != SINGLE_MODALITY:
            raise KeyError(f"This module has one modality ({SINGLE_MODALITY!r}), not {name!r}.")

    def counts_key(self, name: str) -> str:
        self._check(name)
        return K.X

    def library_encoder_of(self, name: str):
        self._check(name)
        return self.library_encoder

    def decoder_of(self, name: str):
        self._check(name)
        return self.decoder

    def observation_of(self, name: str):
        self._check(name)
        return self.observation

    def ambient_scale_encoder_of(self, name: str):
        self._check(name)
        return self.ambient_scale_encoder

    # ------------------------------------------------------------------ query mapping
    def _get_inference_input(self, tensors: dict) -> dict:
        inputs = super()._get_inference_input(tensors)
        if self.observation.has_query_scaling_rows:
            inputs["scaling_covs"] = tensors.get(K.FEATURE_SCALING)
        return inputs

    def _encoder_x_logs(self, xs, x_logs, scaling_covs):
        """A query model's z encoder reads ``log1p(x / r)`` (``CountObservationModel.encoder_input``:
        a query category's feature scaling relative to the reference's); unchanged otherwise."""
        if scaling_covs is None or not self.observation.has_query_scaling_rows:
            return x_logs
        return {**x_logs, SINGLE_MODALITY: self.observation.encoder_input(xs[SINGLE_MODALITY], scaling_covs)}

    def query_mapping(self) -> dict | None:
        """What load_query_data set on this module (saved in model.json), or None."""
        rows = (torch.nonzero(self.observation.query_scaling_rows).reshape(-1).tolist()
                if self.observation.has_query_scaling_rows else [])
        pinned = list(self.pinned_decoder_columns)
        return {"scaling_rows": rows, "pinned_decoder_columns": pinned} if rows or pinned else None

    def set_query_mapping(self, mapping: dict | None) -> None:
        """Apply a :meth:`query_mapping` (query scaling rows; pinned decoder columns, kept frozen)."""
        if not mapping:
            return
        self.observation.mark_query_scaling_rows(mapping.get("scaling_rows", []))
        self.pin_decoder_columns(mapping.get("pinned_decoder_columns", []), reset=False)

    def pin_decoder_columns(self, columns, means: dict | None = None, reset: bool = True) -> None:
        """Keep decoder covariate columns ``columns`` (one-hot positions) fixed in training;
        with ``reset``, first set each to the mean of ``means[column]`` (reference columns)."""
        columns = [int(c) for c in columns]
        if not columns:
            return
        body = self.decoder.body
        for block in body.layers:
            linear = block[1]
            start = linear.in_features - body.n_covariates
            if reset:
                with torch.no_grad():
                    for c in columns:
                        ref = torch.as_tensor([start + r for r in means[c]], dtype=torch.long)
                        linear.weight[:, start + c] = linear.weight.index_select(1, ref).mean(1)
            if not linear.weight.requires_grad:  # all frozen already (a reference weight)
                continue
            keep = torch.ones_like(linear.weight)
            keep[:, [start + c for c in columns]] = 0.0
            linear.weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device))
        self.pinned_decoder_columns = sorted(set(self.pinned_decoder_columns) | set(columns))

    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        x_log = x_logs[SINGLE_MODALITY]
        encoder_input = x_log if continuous_covs is None else torch.cat([x_log, continuous_covs], -1)
        return self.encoder(encoder_input, encoder_covs), {}

    def kl_z_terms(self, kl_z):
        return {"kl_divergence_z": kl_z.sum(-1)}

    def covariate_axes(self) -> dict[str, tuple[int, str, int]]:
        """``name -> (axis, registry key, offset)`` of every tensor indexed by categories."""
        axes = self.observation.covariate_axes("observation.")
        for prefix, net, key in (("decoder.body", self.decoder.body, K.NN_CONDITIONING),
                                 ("encoder.body", self.encoder.body, K.ENCODER)):
            axes.update(net.covariate_axes(prefix, key))
        axes.update(self._adversary_axes())
        return axes
