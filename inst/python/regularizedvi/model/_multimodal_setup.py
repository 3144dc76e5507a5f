"""Registration of a MuData for :class:`RegularizedMultimodalVI`: checks and fields, and
the checks of its per-modality options."""

from __future__ import annotations

import numpy as np

from regularizedvi import _constants as C


def resolve_modalities(mdata, modalities) -> dict[str, str]:
    """``{model modality name: mdata.mod key}`` from a dict or a list of modality keys."""
    if modalities is None:
        raise ValueError("modalities is required: e.g. modalities={'rna': 'rna', 'atac': 'atac'} "
                         "(model name -> mdata.mod key) or a list of mdata.mod keys.")
    if isinstance(modalities, str):
        raise TypeError("modalities takes a dict or a list of modality names, not one string.")
    mapping = dict(modalities) if isinstance(modalities, dict) else {str(m): str(m) for m in modalities}
    if len(mapping) < 2:
        raise ValueError(f"RegularizedMultimodalVI needs at least 2 modalities, got {list(mapping)}; "
                         "for one modality use AmbientRegularizedSCVI.")
    available = list(mdata.mod.keys())
    for name, mod in mapping.items():
        if not name or "." in name:
            raise ValueError(f"Modality name {name!r} is not allowed (non-empty, without '.').")
        if mod not in mdata.mod:
            raise KeyError(f"modalities: '{mod}' is not a modality of the MuData (available: {available}).")
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"modalities maps two names to the same mdata.mod key: {mapping}.")
    return mapping


def resolve_layers(layer, names) -> dict[str, str | None]:
    """One layer for all modalities (str/None) or a dict per modality name."""
    if isinstance(layer, dict):
        unknown = set(layer) - set(names)
        if unknown:
            raise KeyError(f"layer has keys {sorted(unknown)} that are not modalities ({list(names)}).")
        return {m: layer.get(m) for m in names}
    return {m: layer for m in names}


def check_mudata(mdata, mapping: dict[str, str], layers: dict[str, str | None]) -> dict[str, object]:
    """Clear errors for a non-MuData, a backed one, unpaired cells, empty modalities and
    missing layers. Returns ``{where: counts matrix}`` per modality, for the count checks
    every model runs (:func:`~regularizedvi.data.check_modalities`)."""
    from mudata import MuData

    if not isinstance(mdata, MuData):
        raise TypeError(f"setup_mudata takes a MuData, got {type(mdata).__name__}: build one with "
                        "mudata.MuData({'rna': rna_adata, 'atac': atac_adata}).")
    matrices = {}
    for name, mod in mapping.items():
        adata = mdata.mod[mod]
        if adata.n_obs != mdata.n_obs or not np.array_equal(np.asarray(adata.obs_names),
                                                            np.asarray(mdata.obs_names)):
            shared = len(set(adata.obs_names) & set(mdata.obs_names))
            raise ValueError(
                f"Modality '{mod}' does not have the MuData's cells in the same order ({adata.n_obs} cells, "
                f"{shared} of the MuData's {mdata.n_obs} shared). Every modality must list the same "
                "cells in the same order; give a cell that lacks a modality an all-zero row in it "
                "(it is then masked out of that modality's likelihood)."
            )
        if adata.n_vars == 0:
            raise ValueError(f"Modality '{mod}' has no features (n_vars = 0): drop it from modalities.")
        layer = layers[name]
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"layer '{layer}' is not in mdata['{mod}'].layers "
                           f"(available: {list(adata.layers.keys())}).")
        where = f"mdata['{mod}']." + ("X" if layer is None else f"layers['{layer}']")
        matrices[where] = adata.X if layer is None else adata.layers[layer]
    return matrices


def per_modality(value, names, default, what: str, cast=None) -> dict:
    """Expand a scalar (or ``None`` -> ``default(name)``) or a per-modality dict."""
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise KeyError(f"{what} has keys {sorted(unknown)} that are not modalities ({list(names)}).")
        out = {m: (value[m] if m in value else default(m)) for m in names}
    else:
        out = {m: (default(m) if value is None else value) for m in names}
    return {m: (cast(v) if cast else v) for m, v in out.items()}


def is_atac_like(name: str) -> bool:
    return name.lower() in C.ATAC_LIKE_MODALITY_NAMES


def default_background(name: str) -> bool:
    return C.MULTIMODAL_BACKGROUND_ATAC_LIKE if is_atac_like(name) else C.MULTIMODAL_BACKGROUND_RNA_LIKE


def default_feature_scaling(name: str) -> bool:
    return (C.MULTIMODAL_FEATURE_SCALING_ATAC_LIKE if is_atac_like(name)
            else C.MULTIMODAL_FEATURE_SCALING_RNA_LIKE)


def primary_options(primary, detach_primary, secondary_kl_weight) -> tuple:
    """``(detach_primary, secondary_kl_weight)`` with ``None`` resolved: the ``_constants``
    defaults with a primary modality, ``(False, 1.0)`` without one. Other values pass as
    given: the module checks them (``module._multimodal._checked_primary_options``)."""
    if detach_primary is None:
        detach_primary = C.DETACH_PRIMARY if primary is not None else False
    if secondary_kl_weight is None:
        secondary_kl_weight = C.SECONDARY_KL_WEIGHT if primary is not None else 1.0
    return detach_primary, secondary_kl_weight
