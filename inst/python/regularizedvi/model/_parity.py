"""The single-modality model beside one modality of the multimodal model (issue 16).

How AmbientRegularizedSCVI's parts are named inside RegularizedMultimodalVI, and the two
models set up, built and (optionally) trained, each right after seeding with the same seed.
This is what ``tests/python/test_rna_path_parity.py`` and ``bench/multimodal_rna_parity.py``
compare; it is not part of the public API.
"""

from __future__ import annotations

from regularizedvi.model._utils import set_seed

# single-model part -> the multimodal model's per-modality container of that part
PART_CONTAINERS = {"encoder.": "encoders", "library_encoder.": "library_encoders",
                   "decoder.": "decoders", "observation.": "observations",
                   "ambient_scale_encoder.": "ambient_scale_encoders"}


def joint_name(single_name: str, modality: str) -> str | None:
    """The multimodal module's name of the single module's parameter or buffer
    ``single_name`` for ``modality`` (``encoder.x`` -> ``encoders.<modality>.x``); None for
    a name outside the mapped parts."""
    for prefix, container in PART_CONTAINERS.items():
        if single_name.startswith(prefix):
            return f"{container}.{modality}.{single_name[len(prefix):]}"
    return None


def modality_state(joint, modality: str) -> dict:
    """The multimodal module's parameters and buffers of ``modality`` (by name)."""
    return {k: v for k, v in joint.module.state_dict().items() if k.split(".")[1:2] == [modality]}


def seeded_pair(adata, mdata, seed: int, setup: dict, joint_setup: dict, model_kwargs: dict | None = None,
                joint_kwargs: dict | None = None, train_kwargs: dict | None = None, after=None):
    """``(single, joint)``: AmbientRegularizedSCVI on ``adata`` and RegularizedMultimodalVI
    on ``mdata``. For each in turn: :func:`set_seed` ``(seed)``, ``setup_anndata(adata,
    **setup)`` / ``setup_mudata(mdata, **joint_setup)``, the model with ``model_kwargs`` (both)
    and ``joint_kwargs`` (the multimodal one), then ``train(**train_kwargs)`` when given, then
    ``after(model)`` when given (before the next :func:`set_seed`: what it draws from torch's
    global generator is what the model left there)."""
    from regularizedvi.model._ambient_scvi import AmbientRegularizedSCVI
    from regularizedvi.model._multimodal import RegularizedMultimodalVI

    model_kwargs = model_kwargs or {}
    models = []
    for build in (lambda: (AmbientRegularizedSCVI.setup_anndata(adata, **setup),
                           AmbientRegularizedSCVI(adata, **model_kwargs))[1],
                  lambda: (RegularizedMultimodalVI.setup_mudata(mdata, **joint_setup),
                           RegularizedMultimodalVI(mdata, **model_kwargs, **(joint_kwargs or {})))[1]):
        set_seed(seed)
        model = build()
        if train_kwargs is not None:
            model.train(**train_kwargs)
        if after is not None:
            after(model)
        models.append(model)
    return tuple(models)
