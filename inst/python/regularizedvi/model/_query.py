"""Architectural surgery for query mapping: copy reference weights into a wider model.

Parameters indexed by covariate categories (background rows, dispersion columns,
covariate columns of first-layer weights, ...) grow when the query brings new
categories. Each module lists these axes in ``covariate_axes()``; everything else must
have the same shape in reference and query.
"""

from __future__ import annotations

import numpy as np
import torch


def _n_cats(registry: dict, registry_key: str) -> list[int]:
    fields = registry["field_registries"]
    if registry_key not in fields or not fields[registry_key].get("data_registry"):
        return []
    state = fields[registry_key]["state_registry"]
    if "n_cats_per_key" in state:
        return [int(n) for n in state["n_cats_per_key"]]
    return [len(state["categorical_mapping"])]


def old_positions(old: list[int], new: list[int]) -> torch.Tensor:
    """Where each old one-hot column lands after every key gained categories at its end."""
    if len(old) != len(new) or any(n < o for o, n in zip(old, new)):
        raise ValueError(f"Query categories {new} do not extend the reference's {old}.")
    new_offsets = np.concatenate([[0], np.cumsum(new)[:-1]]).astype(int) if new else []
    positions = [new_off + np.arange(o) for o, new_off in zip(old, new_offsets)]
    return torch.as_tensor(np.concatenate(positions) if positions else np.zeros(0, int), dtype=torch.long)


def copy_reference_weights(model, reference_registry: dict, state: dict, freeze: bool = True) -> None:
    """Copy ``state`` into ``model.module``; with ``freeze``, only new entries stay trainable."""
    module = model.module
    query_registry = model.adata_manager.registry
    axes = module.covariate_axes()
    targets = dict(module.named_parameters())
    targets.update(dict(module.named_buffers()))
    for name, reference in state.items():
        target = targets[name]
        copied = torch.ones_like(target, dtype=torch.bool)
        if target.shape != reference.shape:
            if name not in axes:
                raise ValueError(f"Parameter '{name}' has shape {tuple(target.shape)} in the query "
                                 f"but {tuple(reference.shape)} in the reference.")
            axis, registry_key, prefix = axes[name]
            positions = old_positions(_n_cats(reference_registry, registry_key),
                                      _n_cats(query_registry, registry_key))
            index = torch.cat([torch.arange(prefix), prefix + positions])
            copied = torch.zeros_like(target, dtype=torch.bool)
            copied.index_fill_(axis, index, True)
            with torch.no_grad():
                target.index_copy_(axis, index, reference.to(target.dtype))
        else:
            with torch.no_grad():
                target.copy_(reference)
        if not freeze or not isinstance(target, torch.nn.Parameter):
            continue
        if bool(copied.all()):
            target.requires_grad_(False)
        else:
            keep = (~copied).to(target.dtype)
            target.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device))


def _new_positions(old: list[int], new: list[int]) -> list[int]:
    """One-hot positions of the categories each key gained (at its end)."""
    out, offset = [], 0
    for o, n in zip(old, new):
        out += list(range(offset + o, offset + n))
        offset += n
    return out


def _reference_means(old: list[int], new: list[int]) -> dict[int, list[int]]:
    """For each new one-hot position, the positions of its key's reference categories."""
    means, offset = {}, 0
    for o, n in zip(old, new):
        for c in range(offset + o, offset + n):
            means[c] = list(range(offset, offset + o))
        offset += n
    return means


def carry_query_mapping(model, reference_registry: dict, reference_mapping: dict | None, correct: bool) -> None:
    """Set a single-modality query model's query-mapping state (load_query_data).

    What a reference that was itself a query model had set (``reference_mapping``) is kept,
    moved to the query's category positions. With ``correct`` (the input correction), the
    feature-scaling rows of the query's new categories are marked as query rows: the frozen
    z encoder reads their cells' counts divided by the category's learned scaling relative
    to the reference's, and the rows get the loose ``QUERY_FEATURE_SCALING_PRIOR``; the new
    decoder covariate columns are then pinned at the mean of their key's reference columns
    and kept fixed. Without feature scaling per category or without a new scaling category
    the correction does nothing (the decoder is not pinned either).
    """
    from regularizedvi.data import _keys as K

    module = model.module
    registry = model.adata_manager.registry
    reference_mapping = reference_mapping or {}
    old_s, new_s = _n_cats(reference_registry, K.FEATURE_SCALING), _n_cats(registry, K.FEATURE_SCALING)
    old_d, new_d = _n_cats(reference_registry, K.NN_CONDITIONING), _n_cats(registry, K.NN_CONDITIONING)
    rows = [int(old_positions(old_s, new_s)[r]) for r in reference_mapping.get("scaling_rows", [])]
    pins = [int(old_positions(old_d, new_d)[c]) for c in reference_mapping.get("pinned_decoder_columns", [])]
    new_rows = _new_positions(old_s, new_s) if module.observation.use_feature_scaling else []
    if correct and new_rows:
        rows += new_rows
    module.observation.mark_query_scaling_rows(sorted(rows))
    module.pin_decoder_columns(pins, reset=False)
    if correct and new_rows:
        module.pin_decoder_columns(_new_positions(old_d, new_d), _reference_means(old_d, new_d))
