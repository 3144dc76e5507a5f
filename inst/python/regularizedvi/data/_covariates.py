"""The purpose-driven covariate design (spec, "Covariate design").

``batch_key`` alone fans out to ambient, dispersion and library groups. Purpose-specific
keys and ``batch_key`` are mutually exclusive. With neither, every component has one
group (a single background, one dispersion per feature, one library prior).

Feature scaling follows the decoder's covariates unless told otherwise
(``feature_scaling_covariate_keys=None`` with ``nn_conditioning_covariate_keys`` given:
the spec's ``t = k``). The spec states this default for the multimodal model; it is used
for the single-modality model too, because a category that changes the decoder's output
also needs its per-feature factor there (kang, seeds 0 / 1, this change alone:
scib-metrics total +0.005 / +0.003, bench/README.md). ``[]`` or ``False`` turns it off
(one global factor per feature).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field


def _as_list(keys) -> list[str]:
    if keys is None or keys is False:
        return []
    if isinstance(keys, str):
        return [keys]
    return list(keys)


@dataclass(frozen=True)
class CovariateDesign:
    """Which obs columns drive which model component (resolved, no ``batch_key`` left)."""

    ambient_covariate_keys: list[str] = field(default_factory=list)
    nn_conditioning_covariate_keys: list[str] = field(default_factory=list)
    feature_scaling_covariate_keys: list[str] = field(default_factory=list)
    dispersion_key: str | None = None
    library_size_key: str | None = None
    encoder_covariate_keys: list[str] = field(default_factory=list)
    continuous_covariate_keys: list[str] = field(default_factory=list)
    labels_key: str | None = None

    def categorical_keys(self) -> list[str]:
        keys = (self.ambient_covariate_keys + self.nn_conditioning_covariate_keys
                + self.feature_scaling_covariate_keys + self.encoder_covariate_keys
                + [k for k in (self.dispersion_key, self.library_size_key, self.labels_key) if k])
        return list(dict.fromkeys(keys))


def resolve_covariate_design(
    batch_key: str | None = None,
    ambient_covariate_keys=None,
    nn_conditioning_covariate_keys=None,
    feature_scaling_covariate_keys=None,
    dispersion_key: str | None = None,
    library_size_key: str | None = None,
    encoder_covariate_keys=None,
    continuous_covariate_keys=None,
    labels_key: str | None = None,
) -> CovariateDesign:
    """Apply the spec's fan-out rules and reject contradictory combinations."""
    purpose = {
        "ambient_covariate_keys": ambient_covariate_keys,
        "dispersion_key": dispersion_key,
        "library_size_key": library_size_key,
    }
    given = [name for name, value in purpose.items() if _as_list(value)]
    if batch_key is not None and given:
        raise ValueError(
            f"batch_key cannot be combined with {', '.join(given)}: batch_key is shorthand for "
            "ambient_covariate_keys=[batch_key], dispersion_key=batch_key and "
            "library_size_key=batch_key. Use either batch_key alone or the purpose-specific keys."
        )
    for name, value in (("dispersion_key", dispersion_key), ("library_size_key", library_size_key),
                        ("labels_key", labels_key)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} takes one obs column name (a string), got {value!r}.")
    if batch_key is not None:
        ambient_covariate_keys, dispersion_key, library_size_key = [batch_key], batch_key, batch_key
    if feature_scaling_covariate_keys is None:
        feature_scaling_covariate_keys = nn_conditioning_covariate_keys
    encoder_keys = _as_list(encoder_covariate_keys)
    if encoder_keys:
        warnings.warn(
            f"encoder_covariate_keys={encoder_keys}: the encoder will see these covariates, so "
            "the latent space is no longer batch-free by construction.",
            UserWarning,
            stacklevel=3,
        )
    return CovariateDesign(
        ambient_covariate_keys=_as_list(ambient_covariate_keys),
        nn_conditioning_covariate_keys=_as_list(nn_conditioning_covariate_keys),
        feature_scaling_covariate_keys=_as_list(feature_scaling_covariate_keys),
        dispersion_key=dispersion_key,
        library_size_key=library_size_key,
        encoder_covariate_keys=encoder_keys,
        continuous_covariate_keys=_as_list(continuous_covariate_keys),
        labels_key=labels_key,
    )
