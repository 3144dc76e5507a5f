"""Small, dependency-light scores of a latent space (used by the demo, tests and bench).

All take an embedding ``(n_cells, n_dims)`` and per-cell labels. For the full
scib-metrics suite see ``bench/``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors


def _neighbours(embedding: np.ndarray, k: int) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
    return nn.kneighbors(embedding, return_distance=False)[:, 1:]


def knn_label_purity(embedding, labels, k: int = 15) -> float:
    """Mean fraction of each cell's k nearest neighbours that share its label (1 = pure)."""
    labels = np.asarray(labels)
    idx = _neighbours(np.asarray(embedding), k)
    return float((labels[idx] == labels[:, None]).mean())


def batch_mixing_entropy(embedding, batches, k: int = 30) -> float:
    """Mean entropy of batch labels among each cell's k neighbours, divided by its maximum.

    1 means neighbourhoods mix batches in proportion; 0 means every neighbourhood is one batch.
    """
    batches = np.asarray(batches)
    categories = np.unique(batches)
    if len(categories) < 2:
        return 1.0
    idx = _neighbours(np.asarray(embedding), k)
    counts = np.stack([(batches[idx] == c).sum(1) for c in categories], 1) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(counts > 0, counts * np.log(counts), 0.0), 1)
    return float(entropy.mean() / np.log(len(categories)))


def label_silhouette(embedding, labels, seed: int = 0, max_cells: int = 5000) -> float:
    """Silhouette width of labels, rescaled to [0, 1] (scib's "ASW label" convention)."""
    embedding, labels = np.asarray(embedding), np.asarray(labels)
    if len(labels) > max_cells:
        keep = np.random.default_rng(seed).choice(len(labels), max_cells, replace=False)
        embedding, labels = embedding[keep], labels[keep]
    return float((silhouette_score(embedding, labels) + 1) / 2)


def pca_embedding(counts, n_components: int = 10, seed: int = 0) -> np.ndarray:
    """PCA of log1p(counts per 10k): the usual baseline. Densifies a copy; small data only."""
    from sklearn.decomposition import PCA

    x = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    return PCA(n_components=n_components, random_state=seed).fit_transform(x)
