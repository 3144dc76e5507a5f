"""regularizedvi: regularized scVI with ambient background, dispersion prior,
batch-free decoder and learned library size.

Importing this package changes no global setting (torch, numpy, logging levels).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from regularizedvi.data import align_features, estimate_ambient_profile
from regularizedvi.model import (
    AmbientRegularizedSCVI,
    RegularizedMultimodalVI,
    load_model,
    plot_modality_attribution,
    read_model_description,
    set_seed,
    transfer_labels,
)
from regularizedvi.simulate import simulate_counts
from regularizedvi.simulate_multiome import simulate_multiome

try:
    __version__ = version("regularizedvi")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "align_features",
    "estimate_ambient_profile",
    "AmbientRegularizedSCVI",
    "RegularizedMultimodalVI",
    "load_model",
    "plot_modality_attribution",
    "read_model_description",
    "set_seed",
    "transfer_labels",
    "simulate_counts",
    "simulate_multiome",
    "__version__",
]
