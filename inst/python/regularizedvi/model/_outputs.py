"""What a trained model returns, for any of its modalities.

One mixin for both model classes: every method takes ``modality=`` (default: the model's
first modality; the single-modality model has one), so the single and the multimodal
model give the same outputs by construction. It relies on the module interface of
:class:`~regularizedvi.module._base.ModalityVAE` and on the model's
``_feature_names_of(adata, modality)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from regularizedvi.data import _keys as K
from regularizedvi.model._utils import check_indices, feature_mask


def shape_expression(chunks, library_size, return_mean, return_numpy, names, columns):
    """Stack per-minibatch draws (samples x cells x features) into the returned value.

    The mean over draws when ``return_mean`` (or one draw); an array when asked or when
    draws are kept, else a cells x features DataFrame.
    """
    values = np.concatenate(chunks, axis=1) * library_size
    if return_mean or values.shape[0] == 1:
        values = values.mean(0)
    if return_numpy or values.ndim == 3:
        return values
    return pd.DataFrame(values, index=names, columns=columns)


def raw_count_statistics(counts, idx1: np.ndarray, idx2: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature summaries of the observed counts of two groups of cells (boolean masks).

    The columns scvi-tools' DE reports next to its Bayes factors: mean counts
    (``raw_mean1/2``), fraction of cells with a count (``non_zeros_proportion1/2``) and
    mean of counts scaled to each cell's total x 1e4 (``raw_normalized_mean1/2``). Sparse
    counts stay sparse; nothing is written to the AnnData.
    """
    out = {}
    for suffix, idx in (("1", idx1), ("2", idx2)):
        rows = counts[np.flatnonzero(idx)]
        n = max(rows.shape[0], 1)
        totals = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
        scale = 1e4 / np.maximum(totals, 1.0)
        if sparse.issparse(rows):
            rows = sparse.csr_matrix(rows)
            normalized = sparse.diags(scale) @ rows
            nonzero = np.asarray((rows > 0).sum(axis=0)).ravel()
        else:
            rows = np.asarray(rows)
            normalized = rows * scale[:, None]
            nonzero = (rows > 0).sum(axis=0)
        out[f"raw_mean{suffix}"] = np.asarray(rows.sum(axis=0), dtype=np.float64).ravel() / n
        out[f"non_zeros_proportion{suffix}"] = np.asarray(nonzero, dtype=np.float64).ravel() / n
        out[f"raw_normalized_mean{suffix}"] = np.asarray(normalized.sum(axis=0), dtype=np.float64).ravel() / n
    return out


def _is_sparse(matrix) -> bool:
    """In-memory scipy sparse, or a sparse matrix of a backed AnnData."""
    from anndata.abc import CSCDataset, CSRDataset

    return sparse.issparse(matrix) or isinstance(matrix, (CSRDataset, CSCDataset))


class _ModalityCountsView:
    """An AnnDataManager whose ``X`` is one modality's counts (what scvi-tools' DE reads)."""

    def __init__(self, manager, registry_key: str):
        self._manager, self._registry_key = manager, registry_key

    def get_from_registry(self, key: str):
        return self._manager.get_from_registry(self._registry_key if key == K.X else key)

    def __getattr__(self, name):
        return getattr(self._manager, name)


class ModalityOutputsMixin:
    """Latent, normalized expression, background, dispersion, samples and DE per modality."""

    # ------------------------------------------------------------------ modalities
    @property
    def modality_names(self) -> list[str]:
        """The model's modalities, in latent-slice order (one for the single model)."""
        return list(self.module.modality_names)

    def _modality(self, modality: str | None) -> str:
        if modality is None:
            return self.modality_names[0]
        if modality not in self.modality_names:
            raise KeyError(f"modality '{modality}' is not one of this model's modalities {self.modality_names}.")
        return modality

    def _minibatches(self, adata=None, indices=None, batch_size=None):
        adata = self._validate_anndata(adata)
        if indices is not None:
            check_indices(indices, adata.n_obs)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, shuffle=False)
        self.module.eval()
        return adata, loader

    def _feature_names_hint(self, modality: str) -> str:
        """Where a user reads the feature names of ``modality`` (for error messages)."""
        return "adata.var_names"

    def _features_and_mask(self, adata, name: str, gene_list):
        """The modality's feature names and the mask of ``gene_list`` over them (all when
        None; unknown names are an error, see :func:`feature_mask`)."""
        features = np.asarray(self._feature_names_of(adata, name))
        return features, feature_mask(features, gene_list, self._feature_names_hint(name))

    def _cell_names(self, adata, indices):  # indices already checked by _minibatches
        return adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]

    def _nn_code_for(self, transform_batch) -> int:
        """Code of category ``transform_batch`` of the first ``nn_conditioning`` column."""
        if K.NN_CONDITIONING not in self.adata_manager.data_registry:
            raise ValueError(
                "transform_batch needs nn_conditioning_covariate_keys: this model's decoder has "
                "no covariate to set."
            )
        state = self.adata_manager.get_state_registry(K.NN_CONDITIONING)
        key = state.field_keys[0]
        mapping = list(state.mappings[key])
        if transform_batch in mapping:
            return mapping.index(transform_batch)
        if isinstance(transform_batch, (int, np.integer)) and 0 <= transform_batch < len(mapping):
            return int(transform_batch)
        raise ValueError(f"transform_batch {transform_batch!r} is not a category of '{key}': {mapping}.")

    @torch.inference_mode()
    def _posterior_pass(self, tensors, give_mean: bool, nn_code: int | None = None) -> tuple[dict, dict]:
        """``(inference, generative)`` outputs of one minibatch; ``give_mean`` uses the
        posterior means of ``z`` and the library sizes; ``nn_code`` sets the first decoder
        covariate of every cell."""
        module = self.module
        inference_outputs = module.inference(**module._get_inference_input(tensors))
        if give_mean:
            inference_outputs = dict(inference_outputs, z=inference_outputs["qz"].loc,
                                     log_library={m: q.loc for m, q in inference_outputs["ql"].items()})
        generative_inputs = module._get_generative_input(tensors, inference_outputs)
        if nn_code is not None:
            covs = generative_inputs["nn_covs"].clone()
            covs[:, 0] = nn_code
            generative_inputs["nn_covs"] = covs
        return inference_outputs, module.generative(**generative_inputs)

    # ------------------------------------------------------------------ latent
    @torch.inference_mode()
    def get_latent_representation(self, adata=None, indices=None, give_mean: bool = True,
                                  batch_size: int | None = None, modality: str | None = None) -> np.ndarray:
        """Latent representation, cells x dimensions: the posterior mean (or one draw with
        ``give_mean=False``).

        With ``modality`` (multimodal model): that modality's own latent. Concatenation:
        its slice of the joint latent; weighted_mean: its own posterior before mixing;
        single_encoder has no per-modality latent (error). The single model's only
        modality is its whole latent.
        """
        name = None if modality is None else self._modality(modality)
        mode = getattr(self.module, "latent_mode", None)
        if name is not None and mode == "single_encoder":
            raise ValueError("latent_mode='single_encoder' has one shared latent and no per-modality "
                             "latents; use get_latent_representation() or get_weighted_latent().")
        _, loader = self._minibatches(adata, indices, batch_size)
        parts = []
        for tensors in loader:
            out = self.module.inference(**self.module._get_inference_input(tensors))
            q = out["qz"]
            if name is not None and mode == "weighted_mean":
                q = out["qz_per_modality"][name]
            elif name is not None and mode == "concatenation":
                a, b = self.module.latent_slices[name]
                q = torch.distributions.Normal(q.loc[:, a:b], q.scale[:, a:b])
            parts.append((q.loc if give_mean else q.sample()).cpu().numpy())
        return np.concatenate(parts)

    def transfer_labels(self, reference, labels_key: str, adata=None, batch_size: int | None = None,
                        **kwargs) -> pd.DataFrame:
        """Labels of ``reference``'s cells transferred to ``adata``'s (default: this model's
        data) by weighted k-NN in this model's latent space.

        Typically called on a query model from :meth:`load_query_data` after training it:
        ``reference`` (the reference AnnData / MuData, with ``labels_key`` in its ``obs``)
        and the query are embedded by the same model. Returns one row per query cell, as
        :func:`regularizedvi.transfer_labels` (``predicted``, ``label`` with low-confidence
        cells ``"unknown"``, ``confidence``, ...); ``kwargs`` (``k``, ``min_confidence``,
        ``max_distance_ratio``, ``unknown_label``) go there.
        """
        from regularizedvi.model._label_transfer import transfer_labels

        if labels_key not in reference.obs:
            raise KeyError(f"labels_key '{labels_key}' is not a column of the reference's obs "
                           f"(columns: {list(reference.obs.columns)[:20]}).")
        query = self._validate_anndata(adata)
        return transfer_labels(
            self.get_latent_representation(reference, batch_size=batch_size), reference.obs[labels_key].to_numpy(),
            self.get_latent_representation(query, batch_size=batch_size), query_names=query.obs_names, **kwargs)

    # ------------------------------------------------------------------ expression
    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata=None,
        indices: Sequence[int] | None = None,
        transform_batch=None,
        gene_list: Sequence[str] | None = None,
        library_size: float = 1.0,
        n_samples: int = 1,
        batch_size: int | None = None,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        n_samples_overall: int | None = None,
        modality: str | None = None,
    ):
        """Denoised expression profile of the biological signal, per cell, of one modality.

        ``rho_n / sum_f rho_nf * library_size``: the decoder's signal normalized over all
        the modality's features, with the ambient background and the technical feature
        scaling left out. Each row (over all features) sums to ``library_size`` (default
        1). ``n_samples`` draws of the latent posterior are averaged when ``return_mean``;
        with ``n_samples=1`` a single draw is used (as in scvi-tools, which differential
        expression relies on). ``transform_batch`` sets the first
        ``nn_conditioning_covariate_keys`` column to that category for every cell (a
        list: the average over categories). ``gene_list``: the features (genes, peaks,
        proteins) to return, in the modality's feature order (not ``gene_list``'s); a
        name that is not one of the modality's features is a ValueError.

        ``n_samples_overall`` draws that many cells (with replacement) from ``indices``,
        one posterior sample each, as scvi-tools' differential expression expects.

        Returns a cells x features DataFrame, or an array (``return_numpy=True``; with
        ``n_samples > 1`` and ``return_mean=False`` of shape samples x cells x features).
        """
        name = self._modality(modality)
        if n_samples_overall is not None:
            pool = np.arange(self._validate_anndata(adata).n_obs) if indices is None else np.asarray(indices)
            indices = np.random.choice(pool, n_samples_overall)
        adata, loader = self._minibatches(adata, indices, batch_size)
        features, mask = self._features_and_mask(adata, name, gene_list)
        categories = transform_batch if isinstance(transform_batch, (list, tuple)) else [transform_batch]
        codes = [None if c is None else self._nn_code_for(c) for c in categories]
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                per_category = []
                for code in codes:
                    rho = self._posterior_pass(tensors, give_mean=False, nn_code=code)[1]["rho"][name]
                    per_category.append(rho / rho.sum(-1, keepdim=True))
                draws.append(torch.stack(per_category).mean(0)[..., mask].cpu().numpy())
            chunks.append(np.stack(draws))
        return shape_expression(chunks, library_size, return_mean, return_numpy,
                                self._cell_names(adata, indices), features[mask])

    def get_ambient_profile(self, normalize: bool = True, modality: str | None = None) -> pd.DataFrame:
        """Learned additive background per feature (rows) and ambient category (columns).

        With ``normalize`` each column sums to 1 (a profile comparable to an empty-droplet
        soup profile); otherwise values are per-cell fractions ``s_{e,f}`` of the library.
        With several ambient keys there is one column per key and category.
        """
        name = self._modality(modality)
        observation = self.module.observation_of(name)
        if not observation.use_background:
            raise ValueError(f"Modality '{name}' of this model has no additive background.")
        values = observation.background_table().detach().cpu().numpy().T
        if normalize:
            values = values / values.sum(0, keepdims=True)
        from regularizedvi.model._base import ambient_row_names

        return pd.DataFrame(values, index=self._feature_names_of(self.adata, name),
                            columns=ambient_row_names(self.adata_manager))

    def get_dispersion(self, modality: str | None = None) -> pd.DataFrame:
        """Posterior median inverse dispersion ``theta`` per feature and dispersion group."""
        name = self._modality(modality)
        theta = torch.exp(self.module.observation_of(name).log_theta_mu).detach().cpu().numpy()
        groups = self.adata_manager.get_state_registry(K.DISPERSION).categorical_mapping
        return pd.DataFrame(theta, index=self._feature_names_of(self.adata, name),
                            columns=[str(g) for g in groups])

    def _ambient_shares(self, adata, indices, batch_size, modality):
        """Per minibatch: ``(counts, ambient share s / (rho + s), background s y, signal rho y)``
        at each cell's posterior mean (``None`` for the last three of a modality without
        background); ``s`` is the cell's background (with its per-cell scale)."""
        name = self._modality(modality)
        adata, loader = self._minibatches(adata, indices, batch_size)
        key = self.module.counts_key(name)
        for tensors in loader:
            out = self._posterior_pass(tensors, give_mean=True)[1]
            rho, background, scaling = out["rho"][name], out["background"][name], out["scaling"][name]
            x = tensors[key].to(rho.device)
            if background is None:
                yield x, None, None, rho
                continue
            scaling = 1.0 if scaling is None else scaling
            yield x, background / (rho + background), background * scaling, rho * scaling

    def _stack_counts(self, parts, adata, modality):
        result = sparse.vstack(parts, format="csr")
        source = self.get_anndata_manager(self._validate_anndata(adata), required=True).get_from_registry(
            self.module.counts_key(self._modality(modality)))
        return result if _is_sparse(source) else result.toarray()

    @torch.inference_mode()
    def get_ambient_corrected_counts(self, adata=None, indices=None, batch_size: int | None = None,
                                     modality: str | None = None):
        """Observed counts with their expected ambient part removed: ``x * rho / (rho + s)``.

        Each observed count is split, in expectation, between the cell's own signal
        ``rho`` and the background ``s`` of its ambient group, at the cell's posterior mean
        (a posterior mean, not a sample: corrected counts are not whole numbers). Zeros
        stay zeros, nothing exceeds the observed count: a sparse input gives a sparse CSR
        result of the same pattern (float32), a dense input a dense array. A modality
        without background comes back unchanged (as float32).
        """
        parts = []
        for x, share, _, _ in self._ambient_shares(adata, indices, batch_size, modality):
            kept = x if share is None else x * (1.0 - share)
            parts.append(sparse.csr_matrix(kept.cpu().numpy().astype(np.float32)))
        return self._stack_counts(parts, adata, modality)

    @torch.inference_mode()
    def get_ambient_counts(self, adata=None, indices=None, batch_size: int | None = None,
                           modality: str | None = None):
        """The expected ambient part of each observed count, ``x * s / (rho + s)``: the
        observed counts minus :meth:`get_ambient_corrected_counts` (sparse like the input;
        all zero for a modality without background)."""
        parts = []
        for x, share, _, _ in self._ambient_shares(adata, indices, batch_size, modality):
            ambient = torch.zeros_like(x) if share is None else x * share
            parts.append(sparse.csr_matrix(ambient.cpu().numpy().astype(np.float32)))
        return self._stack_counts(parts, adata, modality)

    @torch.inference_mode()
    def get_foreground_probability(self, adata=None, indices=None, gene_list: Sequence[str] | None = None,
                                   batch_size: int | None = None, modality: str | None = None) -> pd.DataFrame:
        """Per cell and feature, the probability that a count comes from the cell itself
        rather than from the background: ``rho / (rho + s)`` at the cell's posterior mean
        (totalVI's protein foreground probability; 1 for a modality without background).
        A dense cells x features DataFrame: choose ``gene_list`` / ``indices`` on large data
        (columns in the modality's feature order, not ``gene_list``'s; a name that is not
        one of the modality's features is a ValueError)."""
        name = self._modality(modality)
        adata = self._validate_anndata(adata)
        features, mask = self._features_and_mask(adata, name, gene_list)
        parts = []
        for x, share, _, _ in self._ambient_shares(adata, indices, batch_size, modality):
            values = torch.ones_like(x) if share is None else 1.0 - share
            parts.append(values[:, mask].cpu().numpy())
        return pd.DataFrame(np.concatenate(parts), index=self._cell_names(adata, indices), columns=features[mask])

    @torch.inference_mode()
    def get_contamination_fraction(self, adata=None, indices=None, batch_size: int | None = None,
                                   modality: str | None = None) -> pd.Series:
        """Expected background share of each cell's counts, in [0, 1]:
        ``sum_f s_{e,f} y_f / sum_f (rho_nf + s_{e,f}) y_f`` at the cell's posterior mean
        (``l_n`` cancels). Exactly 0 for a modality without background. Returns a Series
        indexed by cell name."""
        values = []
        for x, _, background, signal in self._ambient_shares(adata, indices, batch_size, modality):
            if background is None:
                values.append(np.zeros(x.shape[0]))
                continue
            ambient = background.expand_as(signal).sum(-1)
            values.append((ambient / (ambient + signal.sum(-1))).clamp(0.0, 1.0).cpu().numpy())
        adata = self._validate_anndata(adata)
        return pd.Series(np.concatenate(values), index=self._cell_names(adata, indices),
                         name="contamination_fraction")

    @torch.inference_mode()
    def posterior_predictive_sample(self, adata=None, indices=None, n_samples: int = 1,
                                    batch_size: int | None = None, modality: str | None = None) -> np.ndarray:
        """Counts of one modality drawn from the posterior predictive: cells x features
        (x n_samples if > 1)."""
        name = self._modality(modality)
        adata, loader = self._minibatches(adata, indices, batch_size)
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                out = self._posterior_pass(tensors, give_mean=False)[1]
                theta, mu = out["theta"][name], out["mu"][name]
                rate = torch.distributions.Gamma(theta, theta / mu.clamp_min(1e-8)).sample()
                draws.append(torch.poisson(rate).cpu().numpy())
            chunks.append(np.stack(draws, -1))
        samples = np.concatenate(chunks, 0)
        return samples[..., 0] if n_samples == 1 else samples

    # ------------------------------------------------------------------ differential expression
    def differential_expression(self, adata=None, groupby=None, group1=None, group2=None, idx1=None,
                                idx2=None, mode: str = "change", delta: float = 0.25,
                                batch_size: int | None = None, all_stats: bool = True,
                                batch_correction: bool = False, fdr_target: float = 0.05,
                                silent: bool = True, modality: str | None = None, **kwargs) -> pd.DataFrame:
        """Bayesian differential expression of one modality with scvi-tools' engine.

        Compares :meth:`get_normalized_expression` of two groups of cells (``groupby`` /
        ``group1`` / ``group2``, or index arrays ``idx1`` / ``idx2``). ``mode="change"``
        (default; Boyeau et al.) gives the probability that ``|LFC| > delta``,
        ``"vanilla"`` (Lopez et al.) compares means. With ``all_stats`` the observed
        counts' summaries of both groups are added (:func:`raw_count_statistics`).
        Further keywords (``n_samples``, ``pseudocounts``, ...) go to scvi-tools'
        ``DifferentialComputation.get_bayes_factors``. ``batch_correction`` is not
        available: the decoder has no batch to marginalise over (use ``transform_batch``
        of :meth:`get_normalized_expression` for decoder covariates).
        """
        from scvi.model.base._de_core import _de_core

        if batch_correction:
            raise ValueError("batch_correction=True is not supported: the decoder is batch-free.")
        name = self._modality(modality)
        adata = self._validate_anndata(adata)
        key = self.module.counts_key(name)
        manager = _ModalityCountsView(self.get_anndata_manager(adata, required=True), key)
        model_fn = partial(self.get_normalized_expression, return_numpy=True, n_samples=1,
                           batch_size=batch_size, modality=name)

        def stats_fn(view, cells1, cells2):
            return raw_count_statistics(view.get_from_registry(K.X), cells1, cells2)

        with warnings.catch_warnings():
            # pandas' FutureWarning on Index.format, raised inside scvi-tools' DE on every call
            warnings.filterwarnings("ignore", message=".*Index.format is deprecated.*", category=FutureWarning)
            return _de_core(manager, model_fn, None, groupby, group1, group2, idx1, idx2, all_stats,
                            stats_fn, pd.Index(self._feature_names_of(adata, name)), mode, None, None, delta,
                            False, fdr_target, silent, **kwargs)
