"""``RegularizedMultimodalVI``: the multimodal model (MuData in, joint latent out)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import (
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLayerField,
    MuDataNumericalJointObsField,
)
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.data import check_covariates, resolve_covariate_design
from regularizedvi.model._attribution import ModalityAttributionMixin
from regularizedvi.model._outputs import shape_expression
from regularizedvi.model._multimodal_setup import (
    check_mudata,
    default_background,
    default_feature_scaling,
    per_modality,
    resolve_layers,
    resolve_modalities,
)
from regularizedvi.model._save_load import SafeSaveLoadMixin
from regularizedvi.model._training import RegularizedTrainingMixin
from regularizedvi.model._utils import group_log_library_stats, group_mean_profiles, n_cats_per_key
from regularizedvi.module._multimodal import RegularizedMultimodalVAE, modality_key

logger = logging.getLogger(__name__)
MUDATA_FILE = "mdata.h5mu"


class RegularizedMultimodalVI(
    SafeSaveLoadMixin,
    ModalityAttributionMixin,
    RegularizedTrainingMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """regularizedvi for ``M >= 2`` paired modalities (RNA + ATAC, RNA + protein, ...).

    Each modality ``m`` has its own encoder, low-capacity library encoder, batch-free
    softplus decoder and observation model (learned library size, hierarchical dispersion
    prior, optional additive background, optional feature scaling):
    ``mu^(m)_nf = l^(m)_n (rho^(m)_nf + s^(m)_{e,f}) y^(m)_{t,f}``. Every decoder reads the
    joint latent ``z``. Cells lacking a modality (an all-zero row) are masked out of that
    modality's likelihood and still get a latent.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`setup_mudata`.
    n_hidden
        Hidden width, one int or a dict per modality (default 128).
    n_latent
        Latent size ``d_m``, one int or a dict per modality (default 10). Concatenation:
        total ``sum_m d_m``; weighted_mean: all ``d_m`` must be equal (the shared size);
        single_encoder: one shared latent of size ``sum_m d_m``.
    n_layers, dropout_rate
        As in :class:`AmbientRegularizedSCVI` (defaults 1, 0.1).
    latent_mode
        ``"concatenation"`` (default), ``"weighted_mean"`` or ``"single_encoder"``.
    additive_background
        Bool or dict per modality. Default: on, except for ATAC-like modality names
        (``_constants.ATAC_LIKE_MODALITY_NAMES``).
    feature_scaling
        Bool or dict per modality. Default: on for ATAC-like modality names only.
    regularise_background
        Add the Gamma(1, 100) prior on the backgrounds to the loss (default False).

    Examples
    --------
    >>> RegularizedMultimodalVI.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"},
    ...                                      batch_key="sample")
    >>> model = RegularizedMultimodalVI(mdata, n_latent={"rna": 20, "atac": 10})
    >>> model.train()
    >>> z = model.get_latent_representation()
    >>> model.get_modality_attribution()
    """

    _module_cls = RegularizedMultimodalVAE

    def __init__(
        self,
        mdata=None,
        n_hidden: int | dict = C.N_HIDDEN,
        n_latent: int | dict = C.N_LATENT,
        n_layers: int = C.N_LAYERS,
        dropout_rate: float = C.DROPOUT_RATE,
        latent_mode: str = C.MULTIMODAL_LATENT_MODE,
        additive_background: bool | dict | None = None,
        feature_scaling: bool | dict | None = None,
        regularise_background: bool = C.REGULARISE_BACKGROUND,
    ):
        super().__init__(mdata)
        if latent_mode not in C.LATENT_MODES:
            raise ValueError(f"latent_mode must be one of {C.LATENT_MODES}, got {latent_mode!r}.")
        names = self.modality_names
        self._init_kwargs = {
            "n_hidden": n_hidden, "n_latent": n_latent, "n_layers": n_layers, "dropout_rate": dropout_rate,
            "latent_mode": latent_mode, "additive_background": additive_background,
            "feature_scaling": feature_scaling, "regularise_background": regularise_background,
        }
        latent = per_modality(n_latent, names, lambda m: C.N_LATENT, "n_latent", int)
        hidden = per_modality(n_hidden, names, lambda m: C.N_HIDDEN, "n_hidden", int)
        background = per_modality(additive_background, names, default_background, "additive_background", bool)
        scaling = per_modality(feature_scaling, names, default_feature_scaling, "feature_scaling", bool)
        self.additive_background_, self.feature_scaling_ = background, scaling

        manager = self.adata_manager
        library_codes = np.asarray(manager.get_from_registry(K.LIBRARY)).ravel()
        n_library_groups = len(manager.get_state_registry(K.LIBRARY).categorical_mapping)
        ambient_cats = n_cats_per_key(manager, K.AMBIENT)
        ambient_codes = np.asarray(manager.get_from_registry(K.AMBIENT)) if ambient_cats \
            else np.zeros((mdata.n_obs, 0))
        n_input, log_means, log_vars, profiles, ambient_profiles = {}, {}, {}, {}, {}
        for m in names:
            counts = manager.get_from_registry(modality_key(m))
            has = np.asarray(counts.sum(axis=1)).ravel() > 0  # cells that have this modality
            n_input[m] = counts.shape[1]
            means, variances = group_log_library_stats(counts[has], library_codes[has], n_library_groups)
            log_means[m], log_vars[m] = torch.as_tensor(means), torch.as_tensor(variances)
            totals = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
            profiles[m] = torch.as_tensor(totals / max(totals.sum(), 1.0), dtype=torch.float32)
            if background[m]:
                ambient_profiles[m] = group_mean_profiles(counts[has], ambient_codes[has], ambient_cats)
        continuous = manager.get_state_registry(K.CONTINUOUS).get("columns", []) \
            if K.CONTINUOUS in manager.data_registry else []
        scaling_cats = n_cats_per_key(manager, K.FEATURE_SCALING)
        self.module = self._module_cls(
            modality_names=names,
            n_input=n_input,
            library_log_means=log_means,
            library_log_vars=log_vars,
            mean_profiles=profiles,
            n_latent=latent,
            n_hidden=hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            latent_mode=latent_mode,
            n_continuous=len(continuous),
            n_encoder_cats_per_key=n_cats_per_key(manager, K.ENCODER),
            n_nn_cats_per_key=n_cats_per_key(manager, K.NN_CONDITIONING),
            n_ambient_cats_per_key={m: (ambient_cats if background[m] else None) for m in names},
            n_scaling_cats_per_key={m: (scaling_cats if scaling[m] else None) for m in names},
            n_dispersion_groups=len(manager.get_state_registry(K.DISPERSION).categorical_mapping),
            regularise_background=regularise_background,
        )
        for m, prof in ambient_profiles.items():
            self.module.observations[m].init_background(torch.as_tensor(prof, dtype=torch.float32))
        self._model_summary_string = (
            f"RegularizedMultimodalVI: modalities {names}, latent_mode {latent_mode}, n_latent {latent}, "
            f"n_hidden {hidden}, background {background}, feature scaling {scaling}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ registration
    @property
    def modality_names(self) -> list[str]:
        """Model modality names, in latent-slice order."""
        return list(self.adata_manager.registry["setup_args"]["modalities"].keys())

    @classmethod
    def setup_anndata(cls, adata, **kwargs):
        raise TypeError("RegularizedMultimodalVI takes a MuData: use RegularizedMultimodalVI.setup_mudata().")

    @classmethod
    def setup_mudata(
        cls,
        mdata,
        modalities: dict[str, str] | Sequence[str] | None = None,
        layer: str | dict[str, str | None] | None = None,
        batch_key: str | None = None,
        ambient_covariate_keys: list[str] | None = None,
        nn_conditioning_covariate_keys: list[str] | None = None,
        feature_scaling_covariate_keys: list[str] | None = None,
        dispersion_key: str | None = None,
        library_size_key: str | None = None,
        encoder_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs,
    ):
        """Register a MuData: which modalities and layers, and which ``mdata.obs`` columns drive what.

        Parameters
        ----------
        mdata
            MuData whose modalities all list the same cells in the same order (a cell
            lacking a modality has an all-zero row there). Counts may be sparse; they are
            never densified as a whole.
        modalities
            ``{model name: mdata.mod key}`` (e.g. ``{"rna": "rna", "atac": "atac"}``) or a
            list of ``mdata.mod`` keys. At least two. The order is the latent-slice order.
        layer
            Layer with raw counts, one for all modalities or a dict per model name
            (``None``: ``.X``).
        batch_key, ambient_covariate_keys, nn_conditioning_covariate_keys, dispersion_key, \
library_size_key, encoder_covariate_keys, continuous_covariate_keys
            Columns of ``mdata.obs``, as in :meth:`AmbientRegularizedSCVI.setup_anndata`;
            shared by all modalities (each modality has its own parameters per category).
        feature_scaling_covariate_keys
            Columns whose categories get per-feature scaling factors (in the modalities
            with feature scaling on). ``None`` (default): the
            ``nn_conditioning_covariate_keys`` (spec: ``t = k``); ``[]``: one factor per
            feature.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        transferring = "source_registry" in kwargs
        mapping = resolve_modalities(mdata, modalities)
        layers = resolve_layers(layer, list(mapping))
        setup_method_args["setup_args"]["modalities"] = mapping
        check_mudata(mdata, mapping, layers, transferring)
        design = resolve_covariate_design(
            batch_key, ambient_covariate_keys, nn_conditioning_covariate_keys,
            feature_scaling_covariate_keys, dispersion_key, library_size_key,
            encoder_covariate_keys, continuous_covariate_keys,
        )
        check_covariates(mdata.obs, design.categorical_keys(), "setup_mudata (mdata.obs)")
        check_covariates(mdata.obs, design.continuous_covariate_keys, "continuous_covariate_keys",
                         categorical=False)
        fields = [
            MuDataLayerField(modality_key(name), layers[name], mod_key=mod, is_count_data=True,
                             mod_required=True)
            for name, mod in mapping.items()
        ] + [
            MuDataCategoricalJointObsField(K.AMBIENT, design.ambient_covariate_keys or None, mod_key=None),
            MuDataCategoricalJointObsField(K.NN_CONDITIONING, design.nn_conditioning_covariate_keys or None,
                                           mod_key=None),
            MuDataCategoricalJointObsField(K.FEATURE_SCALING, design.feature_scaling_covariate_keys or None,
                                           mod_key=None),
            MuDataCategoricalObsField(K.DISPERSION, design.dispersion_key, mod_key=None),
            MuDataCategoricalObsField(K.LIBRARY, design.library_size_key, mod_key=None),
            MuDataCategoricalJointObsField(K.ENCODER, design.encoder_covariate_keys or None, mod_key=None),
            MuDataNumericalJointObsField(K.CONTINUOUS, design.continuous_covariate_keys or None, mod_key=None),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(mdata, **kwargs)
        cls.register_manager(manager)

    # ------------------------------------------------------------------ save/load hooks
    @staticmethod
    def _feature_names(mdata) -> list[str]:
        """``"modality:feature"`` for every modality of the MuData, in order."""
        return [f"{mod}:{v}" for mod in mdata.mod for v in mdata.mod[mod].var_names]

    def _write_data(self, path: Path) -> None:
        self.adata.write(path / MUDATA_FILE)

    @classmethod
    def _read_adata_for(cls, path: Path, adata):
        if adata is not None:
            return adata
        if (path / MUDATA_FILE).exists():
            import mudata

            return mudata.read_h5mu(path / MUDATA_FILE)
        raise ValueError(f"No MuData given and none saved in '{path}': pass mdata.")

    @classmethod
    def _rebuild(cls, description: dict, adata, extend_categories: bool):
        registry = description["registry"]
        setup_args = dict(registry["setup_args"])
        cls.setup_mudata(adata, source_registry=registry, extend_categories=extend_categories, **setup_args)
        return cls(adata, **description["init_kwargs"])

    def _n_features_total(self) -> int:
        return int(sum(self.module.observations[m].n_features for m in self.modality_names))

    # ------------------------------------------------------------------ outputs
    def _loader(self, adata=None, indices=None, batch_size=None):
        adata = self._validate_anndata(adata)
        self.module.eval()
        return adata, self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size,
                                             shuffle=False)

    def _check_modality(self, modality: str | None) -> str:
        if modality is None:
            return self.modality_names[0]
        if modality not in self.modality_names:
            raise KeyError(f"modality '{modality}' is not one of {self.modality_names}.")
        return modality

    @torch.inference_mode()
    def get_latent_representation(self, adata=None, indices=None, give_mean: bool = True,
                                  batch_size: int | None = None, modality: str | None = None,
                                  **unused) -> np.ndarray:
        """Joint latent (posterior mean, or one draw with ``give_mean=False``), cells x dims.

        With ``modality``: that modality's own latent. Concatenation: its slice of the
        joint latent; weighted_mean: its own posterior before mixing; single_encoder has
        no per-modality latent (error).
        """
        if modality is not None:
            modality = self._check_modality(modality)
            if self.module.latent_mode == "single_encoder":
                raise ValueError("latent_mode='single_encoder' has one shared latent and no per-modality "
                                 "latents; use get_latent_representation() or get_weighted_latent().")
        _, loader = self._loader(adata, indices, batch_size)
        parts = []
        for tensors in loader:
            out = self.module.inference(**self.module._get_inference_input(tensors))
            if modality is None:
                q = out["qz"]
            elif self.module.latent_mode == "weighted_mean":
                q = out["qz_per_modality"][modality]
            else:
                a, b = self.module.latent_slices[modality]
                q = torch.distributions.Normal(out["qz"].loc[:, a:b], out["qz"].scale[:, a:b])
            parts.append((q.loc if give_mean else q.sample()).cpu().numpy())
        return np.concatenate(parts)

    @torch.inference_mode()
    def get_normalized_expression(self, adata=None, indices=None, modality: str | None = None,
                                  feature_list: Sequence[str] | None = None, library_size: float = 1.0,
                                  n_samples: int = 1, batch_size: int | None = None,
                                  return_mean: bool = True, return_numpy: bool | None = None,
                                  n_samples_overall: int | None = None, **unused):
        """Denoised signal of one modality: ``rho^(m)_n / sum_f rho^(m)_nf * library_size``.

        Background and feature scaling are left out; rows sum to ``library_size`` over all
        the modality's features. ``modality`` defaults to the first one. ``n_samples``
        latent draws are averaged when ``return_mean``. Returns a cells x features
        DataFrame, or an array (``return_numpy``, or samples x cells x features when
        ``n_samples > 1`` and not ``return_mean``).
        """
        modality = self._check_modality(modality)
        adata = self._validate_anndata(adata)
        if n_samples_overall is not None:
            pool = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
            indices = np.random.choice(pool, n_samples_overall)
        _, loader = self._loader(adata, indices, batch_size)
        mod_key = self.adata_manager.registry["setup_args"]["modalities"][modality]
        features = np.asarray(adata.mod[mod_key].var_names)
        mask = slice(None) if feature_list is None else np.isin(features, list(feature_list))
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                inf = self.module.inference(**self.module._get_inference_input(tensors))
                rho = self.module.decode_rho(modality, inf["z"], self.module._to(tensors.get(K.NN_CONDITIONING)),
                                             self.module._to(tensors.get(K.CONTINUOUS)))
                draws.append((rho / rho.sum(-1, keepdim=True))[:, mask].cpu().numpy())
            chunks.append(np.stack(draws))
        return shape_expression(chunks, library_size, return_mean, return_numpy, adata, indices,
                                features[mask])

    def differential_expression(self, adata=None, groupby=None, group1=None, group2=None, idx1=None,
                                idx2=None, modality: str | None = None, mode: str = "change",
                                delta: float = 0.25, batch_size: int | None = None, fdr_target: float = 0.05,
                                silent: bool = True, **kwargs) -> pd.DataFrame:
        """Bayesian DE of one modality (default: the first) with scvi-tools' engine.

        Compares :meth:`get_normalized_expression` of the two groups (``mode="change"``
        tests ``|LFC| > delta``; its pseudocounts are estimated from this modality's
        counts, as in scvi-tools). Only the Bayes-factor statistics are returned (no raw
        count summaries). Other arguments as in
        :meth:`scvi.model.SCVI.differential_expression`.
        """
        from functools import partial

        from scvi.model.base._de_core import _de_core

        modality = self._check_modality(modality)
        adata = self._validate_anndata(adata)
        mod_key = self.adata_manager.registry["setup_args"]["modalities"][modality]
        model_fn = partial(self.get_normalized_expression, modality=modality, return_numpy=True,
                           n_samples=1, batch_size=batch_size)
        manager = _ModalityCountsManager(self.get_anndata_manager(adata, required=True), modality_key(modality))
        return _de_core(manager, model_fn, None, groupby, group1,
                        group2, idx1, idx2, False, None, adata.mod[mod_key].var_names, mode, None, None,
                        delta, False, fdr_target, silent, **kwargs)


class _ModalityCountsManager:
    """Read-only view of an AnnDataManager whose ``X`` is one modality's counts (for DE)."""

    def __init__(self, manager: AnnDataManager, registry_key: str):
        self._manager, self._registry_key = manager, registry_key

    def get_from_registry(self, key: str):
        return self._manager.get_from_registry(self._registry_key if key == "X" else key)

    def __getattr__(self, name):
        return getattr(self._manager, name)
