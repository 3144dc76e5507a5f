"""Query-only encoder-input correction for scArches-style mapping (issue 14), exploration.

The reference model is trained exactly as the package does today (nothing is patched
before or during reference training). After ``load_query_data``, :func:`attach` makes the
frozen z encoder of the *query* model read

    ``log1p(x_nf / r_{n,f})``,   ``log r_n = sum_k onehot_k(t_n) @ log r_k``,

where, for feature-scaling key ``k`` and category ``t``,

* ``log r_{k,t} = 0`` for a reference category (its cells' input is unchanged, bit for bit);
* ``log r_{k,t} = log y_{k,t} - mean_{t' in reference} log y_{k,t'}`` for a category new in
  the query: the query category's learned feature scaling relative to the geometric mean
  of the reference categories' scalings (frozen, so a constant).

``level`` (optional, one value per new row): a constant added to the new rows' ``log r``
(``qdepth`` in mapping_queryonly.py: the query category's mean log total count minus the
mean of the reference library groups' ``library_log_means``, so that the encoder sees the
query at the reference's depth). ``use_y=False`` leaves only that level.

``shape=True`` also removes the mean over features of ``log r_{k,t}`` (the correction is a
gene-wise shape only; the overall level stays with the library, as in the label-based
oracle of ``mapping_diag.py``). ``y`` is not detached: the query's new rows of
``feature_scaling_raw`` get gradients through the decoder's mean (as before) *and* the
encoder input. The library encoder and the ambient-scale encoder keep reading ``log1p(x)``.

Why ``y_t / ybar_ref``: in the reference, ``y`` absorbs the per-category gene-wise
technical factor while the encoder saw raw counts of every reference category, i.e. inputs
whose factors average (geometrically) to ``ybar_ref``. A query category whose factor is
``g * ybar_ref`` should enter the encoder divided by ``g``. With the pinned decoder (new
decoder columns = mean of the reference's), ``y_t`` has to carry the query's shift alone,
which makes ``y_t / ybar_ref`` its estimate.

Implemented per instance (``module._get_inference_input`` / ``inference`` /
``latent_posterior`` bound to the query model's module only), so no other model in the
process changes.
"""

from __future__ import annotations

import types

import numpy as np
import torch


def _n_cats(model, key) -> list[int]:
    from regularizedvi.model._query import _n_cats as n_cats

    return n_cats(model.adata_manager.registry, key)


def log_ratio_table(module, n_ref: list[int], n_all: list[int], shape: bool, use_y: bool = True,
                    level: torch.Tensor | None = None) -> torch.Tensor:
    """``(scaling rows, features)`` table of ``log r``: 0 on reference rows (a constant
    zero, no graph), ``log y_t - mean_ref log y`` on new rows (graph into ``y``)."""
    obs = module.observation
    log_y = torch.log(obs.feature_scaling_values())
    rows, offset = [], 0
    for a, b in zip(n_ref, n_all):
        block = log_y[offset:offset + b]
        ref_mean = block[:a].mean(0, keepdim=True).detach()
        new = block[a:] - ref_mean
        if shape:
            new = new - new.mean(-1, keepdim=True)
        if not use_y:
            new = torch.zeros_like(new).detach()
        rows += [torch.zeros_like(block[:a]).detach(), new]
        offset += b
    table = torch.cat(rows, 0)
    return table if level is None else table + level.to(table)


def attach(query_model, reference_model, shape: bool = False, use_y: bool = True,
           level: torch.Tensor | None = None) -> bool:
    """Give ``query_model``'s module the query-only input correction; False (nothing done)
    when the set-up has no per-category feature scaling or the query adds no category."""
    from regularizedvi.data import _keys as K
    from regularizedvi.module._vae import SINGLE_MODALITY
    from regularizedvi.nn import one_hot_concat

    module = query_model.module
    obs = module.observation
    if not (obs.use_feature_scaling and obs.n_scaling_cats_per_key):
        return False
    n_ref, n_all = _n_cats(reference_model, K.FEATURE_SCALING), list(obs.n_scaling_cats_per_key)
    if n_ref == n_all:
        return False
    cls = type(module)

    def get_inference_input(self, tensors):
        return {**cls._get_inference_input(self, tensors), "scaling_covs": tensors.get(K.FEATURE_SCALING)}

    def inference(self, xs, encoder_covs=None, continuous_covs=None, scaling_covs=None):
        self.__dict__["_qin_ctx"] = (xs, scaling_covs)
        try:
            return cls.inference(self, xs, encoder_covs, continuous_covs)
        finally:
            self.__dict__["_qin_ctx"] = None

    def latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs):
        ctx = self.__dict__.get("_qin_ctx")
        if ctx is not None and ctx[1] is not None:
            xs, codes = ctx
            table = log_ratio_table(self, n_ref, n_all, shape, use_y, level)
            log_r = one_hot_concat(self._to(codes), n_all) @ table
            x = self._to(xs[SINGLE_MODALITY])
            x_logs = {**x_logs, SINGLE_MODALITY: torch.log1p(x * torch.exp(-log_r))}
        return cls.latent_posterior(self, x_logs, masks, encoder_covs, continuous_covs)

    module._get_inference_input = types.MethodType(get_inference_input, module)
    module.inference = types.MethodType(inference, module)
    module.latent_posterior = types.MethodType(latent_posterior, module)
    module._qin_info = {"n_ref": n_ref, "n_all": n_all, "shape": shape, "use_y": use_y, "level": level}
    return True


def new_row_log_ratio(query_model) -> np.ndarray:
    """The learned ``log r`` of the new rows (for diagnostics)."""
    info = query_model.module._qin_info
    with torch.no_grad():
        table = log_ratio_table(query_model.module, info["n_ref"], info["n_all"], info["shape"], info["use_y"],
                                info["level"])
    keep = np.concatenate([np.r_[np.zeros(a, bool), np.ones(b - a, bool)]
                           for a, b in zip(info["n_ref"], info["n_all"])])
    return table.numpy()[keep]


def depth_level(query_model, reference_model, adata) -> torch.Tensor:
    """Per scaling row: mean log total count of the query's cells of that category minus
    the mean of the reference's ``library_log_means`` (0 on reference rows). One scaling
    key assumed (the bench's set-ups)."""
    from regularizedvi.data import _keys as K

    obs = query_model.module.observation
    (n_all,) = obs.n_scaling_cats_per_key
    (n_ref,) = _n_cats(reference_model, K.FEATURE_SCALING)
    ref_log = float(reference_model.module.observation.library_log_means.mean())
    codes = query_model.adata_manager.get_from_registry(K.FEATURE_SCALING)
    codes = np.asarray(codes).reshape(-1).astype(int)
    log_total = np.log(np.asarray(adata.X.sum(1)).ravel())
    level = torch.zeros(n_all, 1)
    for t in range(n_ref, n_all):
        if (codes == t).any():
            level[t] = float(log_total[codes == t].mean()) - ref_log
    return level
