"""Latent-to-modality mapping via decoder attribution (spec section of that name).

``attribution^(m)_j = 1 / (N F_m) sum_{n,f} |d mu^(m)_nf / d z_j|``: how strongly modality
``m``'s decoder (its expected counts ``mu``, library size and corrections included) reacts
to latent dimension ``j``, averaged over cells and features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from regularizedvi import _constants as C
from regularizedvi.data import _keys as K

METHODS = ("jvp", "finite_difference")


class ModalityAttributionMixin:
    """``get_modality_attribution`` / ``get_weighted_latent`` for the multimodal model."""

    def get_modality_attribution(self, adata=None, indices=None, method: str = "jvp",
                                 eps: float = C.ATTRIBUTION_FD_EPS,
                                 batch_size: int = C.ATTRIBUTION_BATCH_SIZE) -> pd.DataFrame:
        """Mean absolute derivative of each decoder's ``mu`` with respect to each latent dim.

        Evaluated at each cell's posterior means (latent and library size), over all
        cells (or ``indices``) and all of the modality's features.

        Parameters
        ----------
        adata, indices
            Cells to average over (default: all registered cells).
        method
            ``"jvp"`` (default): exact, forward-mode autodiff (:func:`torch.func.jvp`), all
            latent directions at once (:func:`torch.func.vmap`) for chunks of cells of
            about ``C.ATTRIBUTION_CHUNK_ENTRIES`` tangent values (dims x cells x
            features; extra memory a few hundred MiB, whatever the data size).
            ``"finite_difference"``:
            central differences ``(mu(z + eps e_j) - mu(z - eps e_j)) / (2 eps)``, for
            checking.
        eps
            Finite-difference step on the latent scale (default 1e-2).
        batch_size
            Cells per minibatch (default 256).

        Returns
        -------
        DataFrame, modalities (rows) x latent dimensions (columns ``z0``, ``z1``, ...).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        module = self.module
        names = list(module.modality_names)
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, shuffle=False)
        was_training = module.training
        module.eval()
        d = module.n_latent
        sums = {m: torch.zeros(d, dtype=torch.float64) for m in names}
        n_cells = 0
        try:
            with torch.no_grad():
                for tensors in loader:
                    out = module.inference(**module._get_inference_input(tensors))
                    z = out["qz"].loc
                    covs = {k: module._to(tensors.get(key)) for k, key in
                            (("nn_covs", K.NN_CONDITIONING), ("continuous_covs", K.CONTINUOUS),
                             ("ambient_covs", K.AMBIENT), ("scaling_covs", K.FEATURE_SCALING))}
                    n_cells += z.shape[0]
                    for m in names:
                        library = torch.exp(out["ql"][m].loc)
                        if method == "jvp":
                            sums[m] += _jvp_sums(module, m, z, library, covs, d)
                        else:
                            sums[m] += _finite_difference_sums(module, m, z, library, covs, d, eps)
        finally:
            module.train(was_training)
        values = np.stack([(sums[m] / (n_cells * module.observations[m].n_features)).numpy() for m in names])
        return pd.DataFrame(values, index=names, columns=[f"z{j}" for j in range(d)])

    def get_weighted_latent(self, modality: str, attribution: pd.DataFrame | None = None, adata=None,
                            indices=None, batch_size: int | None = None) -> np.ndarray:
        """``weighted_z = z * attribution^(m)``: the joint latent seen through one decoder.

        Each latent dimension of the posterior-mean joint latent is multiplied by modality
        ``modality``'s attribution (computed on the same cells when not given), giving a
        modality-specific view of cell state (e.g. for a per-modality UMAP).
        """
        if modality not in self.module.modality_names:
            raise KeyError(f"modality '{modality}' is not one of {self.module.modality_names}.")
        if attribution is None:
            attribution = self.get_modality_attribution(adata=adata, indices=indices)
        z = self.get_latent_representation(adata=adata, indices=indices, batch_size=batch_size)
        return z * attribution.loc[modality].to_numpy()[None, :]


def _jvp_sums(module, m: str, z: torch.Tensor, library: torch.Tensor, covs: dict, d: int) -> torch.Tensor:
    """``sum_{n,f} |d mu^(m)_nf / d z_j|`` for every ``j`` over the cells of ``z``: per chunk of
    cells, one jvp vmapped over the ``d`` unit directions (the decoder runs once on a
    ``(d x cells)`` batch of tangents instead of ``d`` times)."""
    per_chunk = max(1, C.ATTRIBUTION_CHUNK_ENTRIES // (d * module.observation_of(m).n_features))
    sums = torch.zeros(d, dtype=torch.float64)
    for a in range(0, z.shape[0], per_chunk):
        part = {k: (None if v is None else v[a:a + per_chunk]) for k, v in covs.items()}
        lib = library[a:a + per_chunk]

        def mean_of(z_, lib=lib, part=part):
            return module.decode_mean(m, z_, lib, **part)

        cells = z[a:a + per_chunk]
        basis = torch.eye(d, dtype=z.dtype, device=z.device).unsqueeze(1).expand(d, cells.shape[0], d)
        tangents = torch.func.vmap(lambda v: torch.func.jvp(mean_of, (cells,), (v,))[1])(basis)
        sums += tangents.abs().sum((1, 2)).double().cpu()
    return sums


def _finite_difference_sums(module, m: str, z, library, covs: dict, d: int, eps: float) -> torch.Tensor:
    """The same sums from central differences ``(mu(z + eps e_j) - mu(z - eps e_j)) / (2 eps)``."""
    sums = torch.zeros(d, dtype=torch.float64)
    for j in range(d):
        step = torch.zeros_like(z)
        step[:, j] = eps
        tangent = (module.decode_mean(m, z + step, library, **covs)
                   - module.decode_mean(m, z - step, library, **covs)) / (2 * eps)
        sums[j] = tangent.abs().sum().double().cpu()
    return sums


def plot_modality_attribution(attribution: pd.DataFrame, ax=None, normalize: bool = True,
                              cmap: str = "viridis"):
    """Heatmap of a :meth:`get_modality_attribution` table (modalities x latent dims).

    With ``normalize`` each row is divided by its maximum, so modalities with different
    count scales are comparable. Returns the matplotlib Axes.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_modality_attribution needs matplotlib: pip install matplotlib") from err
    values = attribution.to_numpy(dtype=float)
    if normalize:
        values = values / np.maximum(values.max(1, keepdims=True), 1e-300)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.35 * values.shape[1] + 2), 0.6 * values.shape[0] + 1.5))
    image = ax.imshow(values, aspect="auto", cmap=cmap)
    ax.set_yticks(range(values.shape[0]), list(attribution.index))
    ax.set_xticks(range(values.shape[1]), list(attribution.columns), rotation=90)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("decoder")
    ax.figure.colorbar(image, ax=ax, label="attribution / row max" if normalize else "attribution")
    return ax
