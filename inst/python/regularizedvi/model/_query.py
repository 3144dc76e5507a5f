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
