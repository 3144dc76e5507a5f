"""Names under which each AnnData field is registered (the keys of a minibatch)."""

X = "X"
AMBIENT = "ambient_covs"
NN_CONDITIONING = "nn_conditioning_covs"
FEATURE_SCALING = "feature_scaling_covs"
DISPERSION = "dispersion_group"
LIBRARY = "library_group"
ENCODER = "encoder_covs"
CONTINUOUS = "continuous_covs"
LABELS = "adversary_labels"  # read by the ambient adversary alone


def stored_positions(key: str) -> str:
    """The minibatch key of the flat positions of the stored values of counts field ``key``
    in its dense block (passed by the CPU fast loader; the CPU likelihood then need not scan
    the block for its nonzeros)."""
    return f"{key}_stored_positions"


def generative_covariates(tensors: dict) -> dict:
    """The covariates a decoder and observation model read from a minibatch."""
    return {
        "nn_covs": tensors.get(NN_CONDITIONING),
        "continuous_covs": tensors.get(CONTINUOUS),
        "ambient_covs": tensors.get(AMBIENT),
        "scaling_covs": tensors.get(FEATURE_SCALING),
        "dispersion_group": tensors[DISPERSION],
    }
