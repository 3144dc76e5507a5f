"""What a trained model returns: normalized expression, ambient profile, DE, samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.model.base import RNASeqMixin

from regularizedvi.data import _keys as K


def shape_expression(chunks, library_size, return_mean, return_numpy, adata, indices, columns):
    """Stack per-minibatch draws (samples x cells x features) into the returned value.

    The mean over draws when ``return_mean`` (or one draw); an array when asked or when
    draws are kept, else a cells x features DataFrame.
    """
    values = np.concatenate(chunks, axis=1) * library_size
    if return_mean or values.shape[0] == 1:
        values = values.mean(0)
    if return_numpy or values.ndim == 3:
        return values
    names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
    return pd.DataFrame(values, index=names, columns=columns)


class ExpressionOutputsMixin:
    """Outputs of a model whose module has ``inference``/``generative``/``observation``."""

    # ------------------------------------------------------------------ internals
    def _minibatches(self, adata=None, indices=None, batch_size=None):
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size,
                                        shuffle=False)
        self.module.eval()
        return adata, loader

    def _nn_codes_for(self, transform_batch) -> int:
        """Code of category ``transform_batch`` of the first ``nn_conditioning`` column."""
        if K.NN_CONDITIONING not in self.adata_manager.data_registry:
            raise ValueError(
                "transform_batch needs nn_conditioning_covariate_keys: this model's decoder has "
                "no covariate to set."
            )
        state = self.adata_manager.get_state_registry(K.NN_CONDITIONING)
        key = state.field_keys[0]
        mapping = list(state.mappings[key])
        if isinstance(transform_batch, (int, np.integer)) and transform_batch not in mapping:
            return int(transform_batch)
        if transform_batch not in mapping:
            raise ValueError(f"transform_batch '{transform_batch}' is not a category of '{key}': {mapping}.")
        return mapping.index(transform_batch)

    @torch.inference_mode()
    def _posterior_pass(self, tensors, give_mean: bool, nn_code: int | None = None) -> dict:
        module = self.module
        inference_outputs = module.inference(**module._get_inference_input(tensors))
        if give_mean:
            inference_outputs = dict(inference_outputs, z=inference_outputs["qz"].loc,
                                     log_library=inference_outputs["ql"].loc)
        generative_inputs = module._get_generative_input(tensors, inference_outputs)
        if nn_code is not None:
            covs = generative_inputs["nn_covs"].clone()
            covs[:, 0] = nn_code
            generative_inputs["nn_covs"] = covs
        return module.generative(**generative_inputs)

    # ------------------------------------------------------------------ public outputs
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
        **unused,
    ):
        """Denoised expression profile of the biological signal, per cell.

        ``rho_n / sum_g rho_ng * library_size``: the decoder's signal normalized over all
        features, with the ambient background and the technical feature scaling left out.
        Each row (over all features) sums to ``library_size`` (default 1). ``n_samples``
        draws of the latent posterior are averaged when ``return_mean``; with
        ``n_samples=1`` a single draw is used (as in scvi-tools, which differential
        expression relies on). ``transform_batch`` sets the first
        ``nn_conditioning_covariate_keys`` column to that category for every cell (a
        list: the average over categories).

        ``n_samples_overall`` draws that many cells (with replacement) from ``indices``,
        one posterior sample each, as scvi-tools' differential expression expects.

        Returns a cells x genes DataFrame, or an array (``return_numpy=True``; with
        ``n_samples > 1`` and ``return_mean=False`` of shape samples x cells x genes).
        """
        if n_samples_overall is not None:
            pool = np.arange(self._validate_anndata(adata).n_obs) if indices is None else np.asarray(indices)
            indices = np.random.choice(pool, n_samples_overall)
        adata, loader = self._minibatches(adata, indices, batch_size)
        genes = np.asarray(adata.var_names)
        gene_mask = slice(None) if gene_list is None else np.isin(genes, list(gene_list))
        categories = transform_batch if isinstance(transform_batch, (list, tuple)) else [transform_batch]
        codes = [None if c is None else self._nn_codes_for(c) for c in categories]
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                per_category = []
                for code in codes:
                    rho = self._posterior_pass(tensors, give_mean=False, nn_code=code)["rho"]
                    per_category.append(rho / rho.sum(-1, keepdim=True))
                draws.append(torch.stack(per_category).mean(0)[..., gene_mask].cpu().numpy())
            chunks.append(np.stack(draws))
        return shape_expression(chunks, library_size, return_mean, return_numpy, adata, indices,
                                genes[gene_mask])

    def get_ambient_profile(self, normalize: bool = True) -> pd.DataFrame:
        """Learned additive background per feature (rows) and ambient category (columns).

        With ``normalize`` each column sums to 1 (a profile comparable to an empty-droplet
        soup profile); otherwise values are per-cell fractions ``s_{e,g}`` of the library.
        With several ambient keys there is one column per key and category.
        """
        observation = self.module.observation
        if not observation.use_background:
            raise ValueError("This model has no additive background.")
        values = torch.exp(observation.background_log).detach().cpu().numpy().T
        if normalize:
            values = values / values.sum(0, keepdims=True)
        columns = ["all cells"]
        if K.AMBIENT in self.adata_manager.data_registry:
            state = self.adata_manager.get_state_registry(K.AMBIENT)
            keys = list(state.field_keys)
            columns = [
                (str(c) if len(keys) == 1 else f"{key}={c}")
                for key in keys for c in state.mappings[key]
            ]
        return pd.DataFrame(values, index=self.adata.var_names, columns=columns)

    def get_dispersion(self) -> pd.DataFrame:
        """Posterior median inverse dispersion ``theta`` per feature and dispersion group."""
        theta = torch.exp(self.module.observation.log_theta_mu).detach().cpu().numpy()
        groups = self.adata_manager.get_state_registry(K.DISPERSION).categorical_mapping
        return pd.DataFrame(theta, index=self.adata.var_names, columns=[str(g) for g in groups])

    @torch.inference_mode()
    def get_ambient_corrected_counts(self, adata=None, indices=None, batch_size: int | None = None):
        """Observed counts with the expected ambient share removed: ``x * rho / (rho + s)``.

        Uses the posterior mean of each cell. Zeros stay zeros: a sparse input gives a
        sparse CSR result of the same pattern (float32), a dense input a dense array.
        """
        adata, loader = self._minibatches(adata, indices, batch_size)
        observation = self.module.observation
        parts = []
        for tensors in loader:
            rho = self._posterior_pass(tensors, give_mean=True)["rho"]
            background = observation.background(tensors.get(K.AMBIENT))
            share = rho / (rho + background) if background is not None else torch.ones_like(rho)
            x = tensors[K.X].to(share.device)
            parts.append(sparse.csr_matrix((x * share).cpu().numpy().astype(np.float32)))
        result = sparse.vstack(parts, format="csr")
        source = self.adata_manager.get_from_registry(K.X)
        return result if sparse.issparse(source) else result.toarray()

    @torch.inference_mode()
    def posterior_predictive_sample(self, adata=None, indices=None, n_samples: int = 1,
                                    batch_size: int | None = None) -> np.ndarray:
        """Counts drawn from the posterior predictive: cells x genes (x n_samples if > 1)."""
        adata, loader = self._minibatches(adata, indices, batch_size)
        chunks = []
        for tensors in loader:
            draws = []
            for _ in range(n_samples):
                out = self._posterior_pass(tensors, give_mean=False)
                rate = torch.distributions.Gamma(out["theta"], out["theta"] / out["mu"].clamp_min(1e-8)).sample()
                draws.append(torch.poisson(rate).cpu().numpy())
            chunks.append(np.stack(draws, -1))
        samples = np.concatenate(chunks, 0)
        return samples[..., 0] if n_samples == 1 else samples

    def differential_expression(self, adata=None, groupby=None, group1=None, group2=None,
                                idx1=None, idx2=None, mode="change", delta=0.25,
                                batch_size=None, batch_correction=False, **kwargs) -> pd.DataFrame:
        """Bayesian differential expression on the normalized expression (scvi-tools' engine).

        ``mode="change"`` (default; Boyeau et al.) tests ``|LFC| > delta``; ``"vanilla"``
        (Lopez et al.) compares means. Other arguments as in
        :meth:`scvi.model.SCVI.differential_expression`. ``batch_correction`` is not
        available: this model's decoder has no batch to marginalise over.
        """
        if batch_correction:
            raise ValueError("batch_correction=True is not supported: the decoder is batch-free.")
        return RNASeqMixin.differential_expression(
            self, adata=adata, groupby=groupby, group1=group1, group2=group2, idx1=idx1, idx2=idx2,
            mode=mode, delta=delta, batch_size=batch_size, batch_correction=False, **kwargs,
        )
