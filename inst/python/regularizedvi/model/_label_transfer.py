"""Label transfer from a reference to a query by k nearest neighbours in the latent space.

After scArches-style mapping (:meth:`load_query_data`, then training the query model),
reference and query cells share one latent space. Each query cell takes the labels of its
``k`` nearest reference cells, weighted by a Gaussian kernel of the distance: the weighted
vote share of the winning label is its ``confidence``. A query cell far from every
reference cell (its neighbours further than the reference cells' own neighbours almost
ever are) or without a clear majority is flagged ``unknown``: a cell type the reference
lacks lands there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regularizedvi import _constants as C


def transfer_labels(reference_latent: np.ndarray, reference_labels, query_latent: np.ndarray,
                    k: int = C.LABEL_TRANSFER_NEIGHBOURS, min_confidence: float = C.LABEL_TRANSFER_MIN_CONFIDENCE,
                    max_distance_ratio: float = C.LABEL_TRANSFER_MAX_DISTANCE_RATIO,
                    unknown_label: str = "unknown", query_names=None) -> pd.DataFrame:
    """Transfer ``reference_labels`` to the query cells by weighted ``k``-NN voting.

    Parameters
    ----------
    reference_latent, query_latent
        Cells x dimensions latents of the same model (e.g. a query model's
        :meth:`get_latent_representation` of the reference and of the query data).
    reference_labels
        One label per reference cell (no missing values).
    k
        Reference neighbours per query cell (default 15).
    min_confidence
        Query cells whose winning label has a smaller weighted vote share are flagged
        (default 0.5).
    max_distance_ratio
        Query cells whose mean distance to their ``k`` neighbours exceeds this multiple of
        the 99th percentile of the same distance among reference cells (to their own
        neighbours, themselves excluded) are flagged as far from the reference (default 1.5).
    unknown_label
        The ``label`` of flagged cells.
    query_names
        Index of the result (default 0, 1, ...).

    Returns
    -------
    DataFrame with one row per query cell: ``predicted`` (the winning label), ``label``
    (``predicted``, or ``unknown_label`` when flagged), ``confidence`` (the winning label's
    weighted vote share, in [0, 1]), ``uncertainty`` (1 - confidence), ``distance_ratio``
    and ``unknown`` (flagged).
    """
    from sklearn.neighbors import NearestNeighbors

    reference_latent = np.asarray(reference_latent, dtype=np.float64)
    query_latent = np.asarray(query_latent, dtype=np.float64)
    labels = pd.Series(np.asarray(reference_labels, dtype=object))
    if reference_latent.ndim != 2 or query_latent.ndim != 2 or reference_latent.shape[1] != query_latent.shape[1]:
        raise ValueError(f"reference_latent {reference_latent.shape} and query_latent {query_latent.shape} must be "
                         "cells x dimensions matrices with the same dimensions (latents of the same model).")
    if len(labels) != reference_latent.shape[0]:
        raise ValueError(f"reference_labels has {len(labels)} values for {reference_latent.shape[0]} reference cells.")
    if labels.isna().any():
        raise ValueError(f"reference_labels has {int(labels.isna().sum())} missing value(s): drop those cells "
                         "or give them a label.")
    k = int(min(k, reference_latent.shape[0] - 1))
    if k < 1:
        raise ValueError("label transfer needs at least 2 reference cells.")
    index = NearestNeighbors(n_neighbors=k + 1).fit(reference_latent)
    # the reference's own neighbour distances (first neighbour = the cell itself)
    reference_distance = index.kneighbors(reference_latent)[0][:, 1:].mean(1)
    scale = max(float(np.percentile(reference_distance, 99)), 1e-12)
    distances, neighbours = index.kneighbors(query_latent, n_neighbors=k)
    bandwidth = np.maximum(distances.mean(1, keepdims=True), 1e-12)
    weights = np.exp(-0.5 * (distances / bandwidth) ** 2)
    weights /= weights.sum(1, keepdims=True)
    categories, codes = np.unique(labels.astype(str).to_numpy(), return_inverse=True)
    votes = np.zeros((query_latent.shape[0], categories.size))
    np.add.at(votes, (np.repeat(np.arange(query_latent.shape[0]), k), codes[neighbours].ravel()), weights.ravel())
    winner = votes.argmax(1)
    confidence = np.clip(votes[np.arange(votes.shape[0]), winner], 0.0, 1.0)
    distance_ratio = distances.mean(1) / scale
    unknown = (confidence < min_confidence) | (distance_ratio > max_distance_ratio)
    predicted = categories[winner]
    return pd.DataFrame({
        "predicted": predicted,
        "label": np.where(unknown, unknown_label, predicted),
        "confidence": confidence,
        "uncertainty": 1.0 - confidence,
        "distance_ratio": distance_ratio,
        "unknown": unknown,
    }, index=query_names)
