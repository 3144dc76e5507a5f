"""User-facing model classes (AnnData in, results out)."""

from regularizedvi.model._ambient_scvi import AmbientRegularizedSCVI
from regularizedvi.model._attribution import plot_modality_attribution
from regularizedvi.model._multimodal import RegularizedMultimodalVI

__all__ = ["AmbientRegularizedSCVI", "RegularizedMultimodalVI", "plot_modality_attribution"]
