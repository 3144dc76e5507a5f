"""AnnData registration, input checks and the covariate design."""

from regularizedvi.data._validation import check_counts, check_covariates
from regularizedvi.data._covariates import CovariateDesign, resolve_covariate_design

__all__ = ["check_counts", "check_covariates", "CovariateDesign", "resolve_covariate_design"]
