"""regularizedvi: regularized scVI with ambient background, dispersion prior,
batch-free decoder and learned library size.

Importing this package changes no global setting (torch, numpy, logging levels).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from regularizedvi.model import AmbientRegularizedSCVI
from regularizedvi.simulate import simulate_counts

try:
    __version__ = version("regularizedvi")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["AmbientRegularizedSCVI", "simulate_counts", "__version__"]
