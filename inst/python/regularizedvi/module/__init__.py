"""The probabilistic models: inference, generative process and loss."""

from regularizedvi.module._observation import CountObservationModel, negative_binomial_log_prob
from regularizedvi.module._vae import RegularizedVAE

__all__ = ["CountObservationModel", "RegularizedVAE", "negative_binomial_log_prob"]
