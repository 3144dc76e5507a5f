"""AnnData registration, input checks and the covariate design."""

from regularizedvi.data._validation import check_counts, check_covariates, check_modalities
from regularizedvi.data._align import align_features
from regularizedvi.data._empty_droplets import estimate_ambient_profile
from regularizedvi.data._covariates import CovariateDesign, resolve_covariate_design

__all__ = ["align_features", "estimate_ambient_profile", "check_counts", "check_covariates", "check_modalities", "CovariateDesign", "resolve_covariate_design"]
