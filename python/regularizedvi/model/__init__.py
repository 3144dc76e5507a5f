"""User-facing model classes (AnnData in, results out)."""

from regularizedvi.model._ambient_scvi import AmbientRegularizedSCVI

__all__ = ["AmbientRegularizedSCVI"]
