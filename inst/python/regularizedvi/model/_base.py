"""What both user classes are built from: one registration path, per-modality count
statistics, checked architecture arguments and the shared mixins.

:class:`AmbientRegularizedSCVI` is the one-modality case (its counts registered under
``X`` of an AnnData), :class:`RegularizedMultimodalVI` the case of several modalities of a
MuData; everything else (outputs, training, save/load, query mapping) is shared.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scvi.data import AnnDataManager
from scvi.data import fields as scvi_fields
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K
from regularizedvi.data import check_covariates, check_modalities, resolve_covariate_design
from regularizedvi.data._covariates import CovariateDesign
from regularizedvi.model._outputs import ModalityOutputsMixin
from regularizedvi.model._save_load import SafeSaveLoadMixin
from regularizedvi.model._training import RegularizedTrainingMixin
from regularizedvi.model._utils import check_nonnegative, count_statistics, n_cats_per_key


# ---------------------------------------------------------------------- registration
def covariate_design(setup_method_args: dict) -> CovariateDesign:
    """The covariate design of a setup method's call: its covariate keys (``batch_key``,
    ``ambient_covariate_keys``, ... ``continuous_covariate_keys``, the arguments of
    :func:`resolve_covariate_design`, which both models' setup methods take under the same
    names), read from ``setup_method_args`` (``cls._get_setup_method_args(**locals())``)."""
    args = setup_method_args["setup_args"]
    names = inspect.signature(resolve_covariate_design).parameters
    return resolve_covariate_design(**{name: args[name] for name in names})


def continuous_columns(manager: AnnDataManager) -> list[str]:
    """The registered continuous covariate columns; ``[]`` when none are registered."""
    if K.CONTINUOUS not in manager.data_registry:
        return []
    return manager.get_state_registry(K.CONTINUOUS).get("columns", [])


def covariate_fields(design: CovariateDesign, mudata: bool) -> list:
    """The scvi-tools fields of a covariate design: ``obs`` columns of an AnnData, or of a
    MuData's global ``obs`` (``mod_key=None``)."""
    if mudata:
        def joint(key, columns):
            return scvi_fields.MuDataCategoricalJointObsField(key, columns, mod_key=None)

        def one(key, column):
            return scvi_fields.MuDataCategoricalObsField(key, column, mod_key=None)

        def numeric(key, columns):
            return scvi_fields.MuDataNumericalJointObsField(key, columns, mod_key=None)
    else:
        joint, one = scvi_fields.CategoricalJointObsField, scvi_fields.CategoricalObsField
        numeric = scvi_fields.NumericalJointObsField
    labels = [one(K.LABELS, design.labels_key)] if design.labels_key else []  # none in earlier files
    return [
        joint(K.AMBIENT, design.ambient_covariate_keys or None),
        joint(K.NN_CONDITIONING, design.nn_conditioning_covariate_keys or None),
        joint(K.FEATURE_SCALING, design.feature_scaling_covariate_keys or None),
        one(K.DISPERSION, design.dispersion_key),
        one(K.LIBRARY, design.library_size_key),
        joint(K.ENCODER, design.encoder_covariate_keys or None),
        numeric(K.CONTINUOUS, design.continuous_covariate_keys or None),
    ] + labels


# Keyword arguments a set-up passes on to scvi-tools (when a query or a loaded model reuses a
# registry); everything else in ``**kwargs`` is a typo of a set-up argument.
TRANSFER_KWARGS = ("source_registry", "extend_categories")


def check_setup_kwargs(kwargs: dict, setup_method_args: dict, method: str) -> None:
    """TypeError naming any keyword argument of ``method`` that is neither a set-up argument
    nor one of :data:`TRANSFER_KWARGS`, with the closest valid names."""
    unknown = [k for k in kwargs if k not in TRANSFER_KWARGS]
    if not unknown:
        return
    valid = list(setup_method_args["setup_args"])
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{method}() got unexpected keyword argument(s) {', '.join(hints)}. "
                    f"Valid arguments: {', '.join(valid)}.")


def register_data(model_cls, data, count_fields: list, matrices: dict, design: CovariateDesign,
                  setup_method_args: dict, mudata: bool, **kwargs) -> None:
    """Check and register ``data`` (AnnData or MuData) for ``model_cls``: the counts of
    every modality (``matrices``: ``{where: matrix}``, :func:`check_modalities`), the
    covariate columns, then scvi-tools' fields. ``kwargs`` are those of
    ``AnnDataManager.register_fields`` (``source_registry`` when transferring a set-up)."""
    check_setup_kwargs(kwargs, setup_method_args, "setup_mudata" if mudata else "setup_anndata")
    check_modalities(matrices, transferring="source_registry" in kwargs)
    where = "setup_mudata (mdata.obs)" if mudata else "setup_anndata"
    check_covariates(data.obs, design.categorical_keys(), where)
    check_covariates(data.obs, design.continuous_covariate_keys, "continuous_covariate_keys", categorical=False)
    manager = AnnDataManager(fields=count_fields + covariate_fields(design, mudata),
                             setup_method_args=setup_method_args)
    manager.register_fields(data, **kwargs)
    model_cls.register_manager(manager)


# ---------------------------------------------------------------------- statistics
@dataclass
class ModalityStatistics:
    """A modality's initial statistics (over the cells that have it)."""

    n_features: int
    library_log_means: torch.Tensor
    library_log_vars: torch.Tensor
    mean_profile: torch.Tensor
    ambient_profiles: torch.Tensor  # (ambient one-hot columns or 1, features), rows sum to 1


def modality_statistics(manager: AnnDataManager, registry_key: str) -> ModalityStatistics:
    """:func:`count_statistics` of the counts registered under ``registry_key``."""
    counts = manager.get_from_registry(registry_key)  # on disk for a backed AnnData: read in row blocks
    library_codes = np.asarray(manager.get_from_registry(K.LIBRARY)).ravel()
    n_library_groups = len(manager.get_state_registry(K.LIBRARY).categorical_mapping)
    ambient_cats = n_cats_per_key(manager, K.AMBIENT)
    ambient_codes = (np.asarray(manager.get_from_registry(K.AMBIENT)) if ambient_cats
                     else np.zeros((counts.shape[0], 0)))
    log_means, log_vars, mean_profile, profiles = count_statistics(
        counts, library_codes, n_library_groups, ambient_codes, ambient_cats)
    return ModalityStatistics(
        n_features=int(counts.shape[1]),
        library_log_means=torch.as_tensor(log_means),
        library_log_vars=torch.as_tensor(log_vars),
        mean_profile=torch.as_tensor(mean_profile, dtype=torch.float32),
        ambient_profiles=torch.as_tensor(profiles, dtype=torch.float32),
    )


def ambient_options(ambient_background, ambient_cell_scale, native_share_penalty,
                    native_share_power=C.NATIVE_SHARE_POWER, ambient_adversary=C.AMBIENT_ADVERSARY) -> dict:
    """The checked ambient-background arguments of a model (its ``_init_kwargs`` and module's);
    ``ambient_background`` is one form or (multimodal) a dict of forms per modality."""
    forms = ambient_background.values() if isinstance(ambient_background, dict) else [ambient_background]
    for form in forms:
        if form not in ("profile", "free"):
            raise ValueError(f"ambient_background must be 'profile' or 'free', not {form!r}.")
    penalty = check_nonnegative(native_share_penalty, "native_share_penalty")
    power = float(native_share_power)
    if not np.isfinite(power) or not 0 <= power <= 1:
        raise ValueError(f"native_share_power must be a number in [0, 1], got {native_share_power!r}.")
    adversary = check_nonnegative(ambient_adversary, "ambient_adversary")
    return {"ambient_background": ambient_background, "ambient_cell_scale": bool(ambient_cell_scale),
            "native_share_penalty": penalty, "native_share_power": power, "ambient_adversary": adversary}


def adversary_label_count(manager: AnnDataManager, ambient_adversary: float) -> int:
    """Categories of ``labels_key`` that the ambient adversary reads (0 without the key).
    Warns when the key is registered but the adversary is off: the labels then serve nothing."""
    if K.LABELS not in manager.data_registry:
        return 0
    if not ambient_adversary:
        key = manager.registry["setup_args"].get("labels_key")
        warnings.warn(f"labels_key={key!r} is registered, but ambient_adversary=0: the labels serve the "
                      "ambient adversary alone and are not used. Pass ambient_adversary > 0 (e.g. 20) to use "
                      "them, or set up without labels_key.", UserWarning, stacklevel=3)
        return 0
    return len(manager.get_state_registry(K.LABELS).categorical_mapping)


def ambient_row_names(manager: AnnDataManager) -> list[str]:
    """Names of the background's rows: the ambient categories (``key=category`` with several
    ambient keys), or ``["all cells"]`` without an ambient key."""
    if K.AMBIENT not in manager.data_registry:
        return ["all cells"]
    state = manager.get_state_registry(K.AMBIENT)
    keys = list(state.field_keys)
    return [(str(c) if len(keys) == 1 else f"{key}={c}") for key in keys for c in state.mappings[key]]


def given_ambient_profile(profile, feature_names, row_names: list[str], where: str) -> torch.Tensor:
    """A user's ambient profile (features x ambient categories, e.g. from
    :func:`~regularizedvi.estimate_ambient_profile`) as the background's ``(rows, features)``
    shape: features matched by name (renormalised over the model's), columns by ambient
    category (one column: the same profile for every category)."""
    import pandas as pd

    if not isinstance(profile, pd.DataFrame):
        raise TypeError(f"{where} must be a DataFrame of features (rows) x ambient categories (columns), "
                        f"e.g. from regularizedvi.estimate_ambient_profile(raw); got {type(profile).__name__}.")
    names = [str(f) for f in feature_names]
    index = pd.Index([str(f) for f in profile.index])
    missing = [f for f in names if f not in set(index)]
    if missing:
        raise ValueError(f"{where} lacks {len(missing)} of the model's {len(names)} features (e.g. {missing[:5]}): "
                         "estimate it from the raw matrix of the same run (all its features).")
    columns = [str(c) for c in profile.columns]
    if len(columns) == 1:
        columns = columns * len(row_names)
        values = np.repeat(profile.to_numpy(dtype=np.float64), len(row_names), axis=1)
    else:
        unknown = sorted(set(row_names) - set(columns))
        if unknown:
            raise ValueError(f"{where} has no column for ambient categor{'y' if len(unknown) == 1 else 'ies'} "
                             f"{unknown} (its columns: {columns[:10]}); give one column per category, or one for all.")
        values = profile.to_numpy(dtype=np.float64)[:, [columns.index(r) for r in row_names]]
    values = pd.DataFrame(values, index=index).groupby(level=0).sum().loc[names].to_numpy().T
    if not np.all(np.isfinite(values)) or (values < 0).any() or (values.sum(1) <= 0).any():
        raise ValueError(f"{where} must hold non-negative finite values with a positive total per category.")
    return torch.as_tensor(values / values.sum(1, keepdims=True), dtype=torch.float32)


# ---------------------------------------------------------------------- the base class
class RegularizedModelBase(
    SafeSaveLoadMixin,
    ModalityOutputsMixin,
    RegularizedTrainingMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Shared by both user classes; see the module docstring."""

    def _n_features_total(self) -> int:
        return int(sum(self.module.observation_of(m).n_features for m in self.modality_names))

    def _feature_names_of(self, adata, modality: str):
        """Feature names of ``modality`` in ``adata`` (the model's registered data)."""
        raise NotImplementedError

    def _make_data_loader(self, adata, indices=None, batch_size=None, shuffle=False, data_loader_class=None,
                          **data_loader_kwargs):
        """scvi-tools' minibatch loader for outputs; for a backed AnnData or MuData, one that keeps the
        requested cell order (scvi-tools' sorts each minibatch of a backed AnnData or MuData)."""
        if getattr(adata, "isbacked", False) and data_loader_class is None \
                and set(data_loader_kwargs) <= {"data_and_attributes"}:
            from regularizedvi.data._backed import BackedInferenceLoader

            return BackedInferenceLoader(self.get_anndata_manager(adata, required=True), indices=indices,
                                         batch_size=batch_size, shuffle=shuffle, **data_loader_kwargs)
        return super()._make_data_loader(adata, indices=indices, batch_size=batch_size, shuffle=shuffle,
                                         data_loader_class=data_loader_class, **data_loader_kwargs)
