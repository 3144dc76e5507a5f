"""Plain torch building blocks: they know nothing of AnnData or of the likelihood."""

from regularizedvi.nn._layers import MLP, one_hot_concat
from regularizedvi.nn._encoders import AmbientScaleEncoder, GaussianEncoder, LibraryEncoder
from regularizedvi.nn._decoders import SoftplusDecoder

__all__ = ["MLP", "one_hot_concat", "AmbientScaleEncoder", "GaussianEncoder", "LibraryEncoder", "SoftplusDecoder"]
