"""User-facing model classes (AnnData in, results out)."""

from regularizedvi.model._ambient_scvi import AmbientRegularizedSCVI
from regularizedvi.model._attribution import plot_modality_attribution
from regularizedvi.model._label_transfer import transfer_labels
from regularizedvi.model._multimodal import RegularizedMultimodalVI
from regularizedvi.model._save_load import load_model, read_model_description
from regularizedvi.model._utils import set_seed

__all__ = ["AmbientRegularizedSCVI", "RegularizedMultimodalVI", "load_model", "plot_modality_attribution",
           "read_model_description", "set_seed", "transfer_labels"]
